//! Reading `GET /api/events` in the API tests: a stream through reqwest (headers and all,
//! checked against docs/openapi.json), and a raw HTTP/1.0 reader whose socket can be made to
//! read nothing, for a client that falls behind.

use std::collections::VecDeque;
use std::time::Duration;

use creepy_meow::client::events::{ServerEvent, SseParser};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::in_process::Daemon;
use super::openapi;

/// How long a test waits for the next event before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// An open event stream.
pub struct Tail {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: VecDeque<ServerEvent>,
}

/// Opens `/api/events?<query>`, with `Last-Event-ID: <n>` if given; the answer must be a
/// documented 200 `text/event-stream`.
pub async fn open(d: &Daemon, query: &str, last_event_id: Option<u64>) -> Tail {
    let mut req = d.http.get(d.url(&format!("/api/events?{query}")));
    if let Some(n) = last_event_id {
        req = req.header("Last-Event-ID", n.to_string());
    }
    let resp = req.send().await.expect("open the event stream");
    let status = resp.status().as_u16();
    openapi::conform("get", "/api/events", status, resp.headers(), &Value::Null);
    assert_eq!(status, 200);
    Tail {
        body: resp.bytes_stream().boxed(),
        parser: SseParser::default(),
        ready: VecDeque::new(),
    }
}

impl Tail {
    /// The next event (its data checked against the document); `None` when the stream ended.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                openapi::conform_event(&e.event, &e.json());
                return Some(e);
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("an event in time");
            match chunk {
                Some(Ok(bytes)) => self.ready.extend(self.parser.push(&bytes)),
                Some(Err(e)) => panic!("the event stream broke: {e}"),
                None => return None,
            }
        }
    }

    /// Events until (and with) the one for which `last` is true.
    pub async fn until(&mut self, last: impl Fn(&ServerEvent) -> bool) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            let done = last(&e);
            out.push(e);
            if done {
                return out;
            }
        }
        panic!("the stream ended before the awaited event; got {out:?}");
    }
}

/// Whether `e` says job `job` ended.
pub fn ends_job(e: &ServerEvent, job: &str) -> bool {
    let d = e.json();
    e.event == "job"
        && d["job_id"] == job
        && matches!(
            d["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
}

/// A client that asks for `/api/events?<query>` over HTTP/1.0 (so the body ends with the
/// connection) with a receive buffer of 4 KiB, and reads nothing until told.
pub struct Sleeper(tokio::net::TcpStream);

impl Sleeper {
    /// Connects to `d` and sends the request.
    pub async fn connect(d: &Daemon, query: &str) -> Self {
        let addr: std::net::SocketAddr = d.base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.expect("connect");
        let req = format!("GET /api/events?{query} HTTP/1.0\r\nHost: test\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        Self(stream)
    }

    /// Reads everything until the server closes; returns the events.
    pub async fn wake(mut self) -> Vec<ServerEvent> {
        let mut raw = Vec::new();
        tokio::time::timeout(PATIENCE, self.0.read_to_end(&mut raw))
            .await
            .expect("the server ends the stream")
            .expect("read");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        SseParser::default().push(body.as_bytes())
    }
}
