//! HTTPS (issue 14): the API served over TLS with a lab CA made by `scripts/make-lab-certs.sh`,
//! reached through the real client binary and through curl; what a client that does not trust
//! the server, or speaks plain HTTP to the TLS port, is told, while the server goes on; and a
//! stop with HTTPS connections open. The daemon runs in process on a fake host
//! (`common::in_process`); `tests/tls_root.rs` runs the real `serve` off loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::certs::LabCerts;
use common::in_process::{self, Daemon, Opts, DEFAULT};
use common::serve::BIN;
use common::CREATE_5;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The token every daemon here wants.
const TOKEN: &str = "tls-test-token";

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cm-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A file holding [`TOKEN`], for `--token-file`.
    fn token_file(&self) -> PathBuf {
        let p = self.path("token");
        std::fs::write(&p, TOKEN).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A reqwest client that trusts only `ca` and sends [`TOKEN`]; 5 s per request at most.
fn trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .default_headers(auth)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// An HTTPS daemon serving `certs`' pair, wanting [`TOKEN`]; its `http` trusts `certs`' CA.
async fn https_daemon(certs: &LabCerts, opts: Opts) -> Daemon {
    let mut d = in_process::start(Opts {
        tls: Some(certs.server_tls()),
        token: Some(TOKEN),
        ..opts
    })
    .await;
    assert!(d.base.starts_with("https://127.0.0.1:"), "{}", d.base);
    d.http = trusting(&certs.ca);
    d
}

/// Runs the client binary with `args` and `env` only (none of the caller's CREEPY_MEOW_*);
/// returns its exit code, stdout and stderr.
async fn client(args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("CREEPY_MEOW_TOKEN")
        .env_remove("CREEPY_MEOW_CACERT")
        .env_remove("CREEPY_MEOW_SERVER")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("run the client");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Runs curl with `args`; returns its exit code and stdout.
async fn curl(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new("curl")
        .args(args)
        .output()
        .await
        .expect("run curl (scripts/install-deps.sh installs it)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A failed command's stderr is one sentence on one line, `creepy-meow: ...`, not a dump of an
/// error's debug form.
fn one_sentence(stderr: &str) -> &str {
    let line = stderr.trim_end();
    assert!(!line.contains('\n'), "more than one line: {stderr}");
    assert!(!line.contains(" { "), "a debug dump: {stderr}");
    line.strip_prefix("creepy-meow: ")
        .unwrap_or_else(|| panic!("not the client's error line: {stderr}"))
}

#[tokio::test]
async fn the_client_and_curl_reach_an_https_server_through_the_lab_ca() {
    let dir = Scratch::new("reach");
    let certs = LabCerts::make(&dir.path("certs"), "server", &["127.0.0.1", "localhost"]);
    let d = https_daemon(&certs, DEFAULT).await;
    let token = dir.token_file();
    let (token, ca) = (token.to_str().unwrap(), certs.ca.to_str().unwrap());

    let mut args = CREATE_5.to_vec();
    args.extend_from_slice(&["--server", &d.base, "--token-file", token, "--cacert", ca]);
    let (code, out, err) = client(&args, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    // The CA through the environment, as `--cacert` would give it.
    let (code, out, err) = client(
        &["list", "--json", "--server", &d.base, "--token-file", token],
        &[("CREEPY_MEOW_CACERT", &certs.ca)],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["containers_id"], serde_json::json!([5]), "{out}");

    let list = format!("{}/api/container/list", d.base);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (code, out) = curl(&["-sS", "--cacert", ca, "-H", &bearer, &list]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["containers_id"],
        serde_json::json!([5])
    );
    // TLS does not stand in for the token.
    let (code, out) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        ca,
        &list,
    ])
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "401"));
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_server_refuses_it_in_one_sentence() {
    let dir = Scratch::new("refuse");
    let certs = LabCerts::make(&dir.path("certs"), "server", &["127.0.0.1"]);
    let stranger = LabCerts::make(&dir.path("other-lab"), "server", &["127.0.0.1"]);
    let d = https_daemon(&certs, DEFAULT).await;
    let token = dir.token_file();
    // `create` of container 5 with `--cacert FILE` when given.
    let create = |cacert: Option<&str>| {
        let mut args = CREATE_5.to_vec();
        args.extend_from_slice(&["--server", &d.base, "--token-file", token.to_str().unwrap()]);
        args.extend(cacert.iter().flat_map(|ca| ["--cacert", ca]));
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            client(&args, &[]).await
        }
    };

    // The system's roots do not know the lab CA.
    let (code, _, err) = create(None).await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        one_sentence(&err),
        format!(
            "cannot trust the server at {}: no CA this client trusts signed its certificate (pass --cacert FILE (or set CREEPY_MEOW_CACERT) with the CA that signed it)",
            d.base
        )
    );
    // Another lab's CA does not either.
    let (code, _, err) = create(stranger.ca.to_str()).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        one_sentence(&err).ends_with("(the CA in --cacert did not sign it)"),
        "{err}"
    );
    // A CA file that is no CA is the operator's mistake (exit 2), said before any request.
    for (file, want) in [
        (
            "/nonexistent/ca.pem",
            "cannot read the CA file /nonexistent/ca.pem",
        ),
        (certs.key.to_str().unwrap(), "holds no PEM certificate"),
    ] {
        let (code, _, err) = create(Some(file)).await;
        assert_eq!(code, Some(2), "{err}");
        assert!(one_sentence(&err).contains(want), "{err}");
    }
    let (code, _) = curl(&["-sS", "-o", "/dev/null", &format!("{}/healthz", d.base)]).await;
    assert_eq!(
        code,
        Some(60),
        "curl: peer certificate cannot be authenticated"
    );
    // Nothing reached the API: no job was made.
    let (s, jobs) = d.get("/api/jobs").await;
    assert_eq!(
        (s, jobs["jobs"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_by_name() {
    let dir = Scratch::new("name");
    let certs = LabCerts::make(&dir.path("certs"), "named", &["node1.lab"]);
    let d = https_daemon(&certs, DEFAULT).await;
    let ca = certs.ca.to_str().unwrap();
    let (code, _, err) = client(&["jobs", "--server", &d.base, "--cacert", ca], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        one_sentence(&err),
        format!(
            "cannot trust the server at {}: its certificate is not issued for that name (connect by a name or address the certificate lists)",
            d.base
        )
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_closed_and_the_server_goes_on() {
    let dir = Scratch::new("plain");
    let certs = LabCerts::make(&dir.path("certs"), "server", &["127.0.0.1"]);
    let d = https_daemon(&certs, DEFAULT).await;
    let addr = d.base.strip_prefix("https://").unwrap().to_string();
    let plain = format!("http://{addr}");
    // A client that connects and never says anything holds its own connection only: the next
    // one is served (within the trusting client's 5 s, half the server's handshake timeout).
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (s, body) = d.get("/healthz").await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("ok")));

    let (code, _, err) = client(&["jobs", "--server", &plain], &[]).await;
    assert_eq!(code, Some(1), "{err}");
    let said = one_sentence(&err);
    assert!(
        said.starts_with(&format!("the request to {plain} failed: ")),
        "{err}"
    );
    assert!(
        said.ends_with("(if it serves HTTPS, use an https:// URL)"),
        "{err}"
    );
    let (code, _) = curl(&["-sS", &format!("{plain}/healthz")]).await;
    assert_ne!(code, Some(0), "curl over plain HTTP got an answer");
    // By hand: the server closes without an HTTP answer.
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // HTTPS is served as before, the silent client still connected.
    let ca = certs.ca.to_str().unwrap();
    let (code, out, err) = client(
        &[
            "jobs",
            "--server",
            &d.base,
            "--cacert",
            ca,
            "--token-file",
            dir.token_file().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    drop(silent);
}

#[tokio::test]
async fn a_stop_closes_open_https_connections_and_returns() {
    let dir = Scratch::new("stop");
    let certs = LabCerts::make(&dir.path("certs"), "server", &["127.0.0.1"]);
    let d = https_daemon(
        &certs,
        Opts {
            paused: true,
            ..DEFAULT
        },
    )
    .await;
    // A keep-alive connection left idle in the client's pool, and one that never shakes hands.
    let (s, _) = d.get("/api/queue").await;
    assert_eq!(s, StatusCode::OK);
    let addr = d.base.strip_prefix("https://").unwrap().to_string();
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), d.stop())
        .await
        .expect("the daemon stops with HTTPS connections open");
}

#[tokio::test]
async fn without_system_roots_https_says_so_and_plain_http_needs_none() {
    let dir = Scratch::new("roots");
    let certs = LabCerts::make(&dir.path("certs"), "server", &["127.0.0.1"]);
    let https = https_daemon(&certs, DEFAULT).await;
    let plain = in_process::start(DEFAULT).await;
    // rustls-native-certs reads these instead of the system's bundle: here, nothing.
    let empty = dir.path("no-roots");
    std::fs::create_dir_all(&empty).unwrap();
    let no_roots: [(&str, &Path); 2] = [
        ("SSL_CERT_FILE", Path::new("/dev/null")),
        ("SSL_CERT_DIR", &empty),
    ];
    let (code, _, err) = client(&["jobs", "--server", &https.base], &no_roots).await;
    assert_eq!(code, Some(2), "{err}");
    let said = one_sentence(&err);
    assert!(
        said.starts_with(&format!("cannot check the certificate of {}: ", https.base)),
        "{err}"
    );
    assert!(said.ends_with("or pass --cacert FILE)"), "{err}");
    // --cacert alone is enough, and plain HTTP needs no CA at all.
    let ca = certs.ca.to_str().unwrap();
    let token = dir.token_file();
    let args = [
        "jobs",
        "--server",
        &https.base,
        "--cacert",
        ca,
        "--token-file",
        token.to_str().unwrap(),
    ];
    let (code, _, err) = client(&args, &no_roots).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = client(&["jobs", "--server", &plain.base], &no_roots).await;
    assert_eq!(code, Some(0), "{err}");
}
