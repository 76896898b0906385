//! A minimal HTTP/1.1 keep-alive client and a closed-loop load generator, over plain TCP or
//! TLS ([`Transport`]).
//!
//! Why not `reqwest`: the load generator shares two cores with the daemon, and every cycle it
//! spends is taken from the server it measures. This client writes one request, reads the
//! status line, the headers and a `Content-Length` body (warp always sends one for the JSON
//! replies measured here), and nothing more. Over TLS it is rustls (tokio-rustls), as the
//! daemon's side; the handshake happens once per connection, when it opens.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A connection's byte stream, plain or TLS, boxed so one [`Conn`] serves both.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// How the bench reaches the daemon on the lab's `127.0.0.1`.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP to this port.
    Plain(u16),
    /// HTTPS to this port, trusting the one CA of the [`TlsClient`].
    Tls(u16, TlsClient),
}

impl Transport {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Plain(p) | Self::Tls(p, _) => *p,
        }
    }

    /// `http` or `https`, for reports.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Plain(_) => "http",
            Self::Tls(..) => "https",
        }
    }
}

/// A TLS client that trusts one CA (a lab's) and checks the server's certificate names
/// `127.0.0.1`.
#[derive(Clone)]
pub struct TlsClient {
    /// rustls's client configuration, shared by every connection.
    connector: TlsConnector,
}

impl TlsClient {
    /// Trusts the CA certificates in the PEM file `ca`.
    pub fn trusting(ca: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
            roots
                .add(cert.expect("a CA certificate"))
                .expect("a usable CA");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// The client side of the handshake on `tcp`, checking the certificate names `127.0.0.1`.
    async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        self.connector.connect(name, tcp).await
    }
}

/// One connection, reused for every request.
pub struct Conn {
    /// The connection, plain or TLS.
    stream: Box<dyn Io>,
    /// Bytes read and not yet consumed (the next answer's start, after a pipelined read).
    buf: Vec<u8>,
}

/// A request to make.
#[derive(Debug, Clone)]
pub struct Req {
    /// `GET`, `POST`, …
    pub method: &'static str,
    /// Path with query.
    pub path: String,
    /// Form body (`application/x-www-form-urlencoded`), if any.
    pub form: Option<String>,
    /// An `Idempotency-Key` header, if any.
    pub key: Option<String>,
}

impl Req {
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET",
            path: path.into(),
            form: None,
            key: None,
        }
    }

    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self {
            method: "DELETE",
            path: path.into(),
            form: None,
            key: None,
        }
    }

    /// `POST path` with a form body.
    pub fn post_form(path: impl Into<String>, form: String) -> Self {
        Self {
            method: "POST",
            path: path.into(),
            form: Some(form),
            key: None,
        }
    }

    /// The same request with `Idempotency-Key: key`.
    pub fn with_key(mut self, key: String) -> Self {
        self.key = Some(key);
        self
    }
}

impl Conn {
    /// Connects to `addr` in plain HTTP, with Nagle off.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(Box::new(stream)))
    }

    /// Connects to the daemon over `transport`, with Nagle off; over TLS, after the handshake.
    pub async fn open(transport: &Transport) -> std::io::Result<Self> {
        let addr = daemon_addr(transport.port());
        let Transport::Tls(_, tls) = transport else {
            return Self::connect(addr).await;
        };
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self::over(Box::new(tls.handshake(tcp).await?)))
    }

    fn over(stream: Box<dyn Io>) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends `req`, returns the status and the body.
    pub async fn send(&mut self, req: &Req) -> std::io::Result<(u16, Vec<u8>)> {
        let body = req.form.as_deref().unwrap_or("");
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
            req.method,
            req.path,
            body.len()
        );
        if req.form.is_some() {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        if let Some(key) = &req.key {
            head.push_str(&format!("Idempotency-Key: {key}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        self.stream.write_all(head.as_bytes()).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head"))?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .ok_or_else(|| bad("no Content-Length"))?;
                let total = end + 4 + len;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The daemon's address inside the lab.
pub fn daemon_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One request on a fresh connection, for the odd call outside a load.
pub async fn once(port: u16, req: &Req) -> std::io::Result<(u16, Vec<u8>)> {
    once_over(&Transport::Plain(port), req).await
}

/// [`once`] over `transport`.
pub async fn once_over(transport: &Transport, req: &Req) -> std::io::Result<(u16, Vec<u8>)> {
    Conn::open(transport).await?.send(req).await
}

/// The TLS version and cipher suite a connection over `transport` negotiates ("plain HTTP"
/// without TLS), for the report.
pub async fn tls_session(transport: &Transport) -> String {
    let Transport::Tls(port, tls) = transport else {
        return "plain HTTP".into();
    };
    let tcp = TcpStream::connect(daemon_addr(*port))
        .await
        .expect("connect");
    let stream = tls.handshake(tcp).await.expect("TLS handshake");
    let session = stream.get_ref().1;
    format!(
        "{:?}, {:?}",
        session.protocol_version().expect("a version"),
        session.negotiated_cipher_suite().expect("a suite").suite()
    )
}

/// `once`, decoded as JSON, panicking on a transport error or an unexpected status.
pub async fn json(port: u16, req: &Req, want: u16) -> serde_json::Value {
    let (status, body) = once(port, req)
        .await
        .unwrap_or_else(|e| panic!("{req:?}: {e}"));
    assert_eq!(status, want, "{req:?}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{req:?}: {e}"))
}

/// What a load run measured.
pub struct LoadResult {
    /// Latency of every request answered with the expected status.
    pub latencies: Vec<Duration>,
    /// Requests answered with another status, or failed.
    pub errors: u64,
    /// From the start to the last answer.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Good answers per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` connections, each sending its next request as soon as the previous is answered
/// (closed loop), until `duration` has passed. `make(n)` builds the n-th request of the run
/// (numbered across all clients); an answer other than `want` counts as an error.
pub async fn load(
    port: u16,
    clients: usize,
    duration: Duration,
    want: u16,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> LoadResult {
    load_over(&Transport::Plain(port), clients, duration, want, make).await
}

/// [`load`] over `transport`. A connection opens (over TLS: shakes hands) once, inside the
/// timed window but outside any request's latency, and again only after an error.
pub async fn load_over(
    transport: &Transport,
    clients: usize,
    duration: Duration,
    want: u16,
    make: Arc<dyn Fn(u64) -> Req + Send + Sync>,
) -> LoadResult {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, make, transport) = (next.clone(), make.clone(), transport.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut conn = Conn::open(&transport).await.expect("connect");
            while Instant::now() < deadline {
                let req = make(next.fetch_add(1, Ordering::Relaxed));
                let t0 = Instant::now();
                match conn.send(&req).await {
                    Ok((s, _)) if s == want => lat.push(t0.elapsed()),
                    Ok((s, b)) => {
                        if errors == 0 {
                            eprintln!("{req:?} -> {s}: {}", String::from_utf8_lossy(&b));
                        }
                        errors += 1;
                    }
                    Err(e) => {
                        eprintln!("{req:?}: {e}");
                        errors += 1;
                        conn = Conn::open(&transport).await.expect("reconnect");
                    }
                }
            }
            (lat, errors, Instant::now())
        }));
    }
    let mut out = LoadResult {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    let mut last = start;
    for t in tasks {
        let (lat, errors, ended) = t.await.expect("load task");
        out.latencies.extend(lat);
        out.errors += errors;
        last = last.max(ended);
    }
    out.elapsed = last - start;
    out
}
