//! Event delivery (issue 14): how long an event takes from its commit to a client of
//! `GET /api/events`, with 1 client (the baseline) and with 100, in the same run.
//!
//! A daemon started `--paused` (so no LXC runs) is fed a steady load from one connection: a
//! create, then the cancel of its job, `CMBENCH_EVENTS_RATE` pairs a second (default 100: 200
//! events a second) for `CMBENCH_EVENTS_SECS` seconds (default 5). Each stream client reads
//! raw HTTP/1.0 and parses SSE with the client's own parser; an event's latency is the wall
//! clock when the client has parsed it minus the event's `at` (taken in the daemon as the
//! transaction that commits it is built; the same clock). So it covers the commit, the group
//! commit's flush and `fdatasync` (events are sent only once on disk), the feed's read and the
//! client's parse — all on the machine's two cores, the 100 clients on one of them.
//!
//! Target: p99 ≤ 5 ms at 100 stream clients.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use creepy_meow::client::events::SseParser;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::daemon::{Daemon, PORT};
use common::http::{daemon_addr, Conn, Req};
use common::lab::Lab;
use common::stats::{ms, ratio, verdict, Summary};

const BENCH: &str = "events";

fn main() {
    let lab = Lab::new();
    lab.enter();
    let secs = common::env_usize("CMBENCH_EVENTS_SECS", 5) as u64;
    let rate = common::env_usize("CMBENCH_EVENTS_RATE", 100) as u64;
    common::runtime().block_on(run(&lab, Duration::from_secs(secs), rate));
}

/// One stream client: reads events until `until`; returns each one's commit → parsed latency.
async fn reader(until: Instant) -> Vec<Duration> {
    let mut tcp = tokio::net::TcpStream::connect(daemon_addr(PORT))
        .await
        .expect("connect");
    tcp.write_all(b"GET /api/events HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .expect("request");
    let (mut parser, mut head, mut out) = (SseParser::default(), Vec::new(), Vec::new());
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), tcp.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        let mut bytes = &chunk[..n];
        if head.len() < 4 || !head.ends_with(b"\r\n\r\n") {
            // Still in the answer's head: keep it apart from the body.
            let mut split = None;
            for (i, b) in bytes.iter().enumerate() {
                head.push(*b);
                if head.ends_with(b"\r\n\r\n") {
                    split = Some(i + 1);
                    break;
                }
            }
            let Some(at) = split else { continue };
            bytes = &bytes[at..];
        }
        let now = OffsetDateTime::now_utc();
        for event in parser.push(bytes) {
            let data = event.json();
            let at = data["at"].as_str().expect("an event has at");
            let at = OffsetDateTime::parse(at, &Rfc3339).expect("RFC 3339");
            out.push(Duration::try_from(now - at).unwrap_or(Duration::ZERO));
        }
    }
    out
}

/// Creates and cancels at `rate` pairs a second for `dur`; returns the create's latencies.
async fn feed(dur: Duration, rate: u64) -> Vec<Duration> {
    let mut conn = Conn::connect(daemon_addr(PORT)).await.expect("connect");
    let every = Duration::from_secs(1) / rate as u32;
    let start = Instant::now();
    let mut accepts = Vec::new();
    let mut next = start;
    let mut id = 0u32;
    while start.elapsed() < dur {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        id = id % 9000 + 1;
        let t0 = Instant::now();
        let (s, body) = conn
            .send(&Req::post_form(
                "/api/container/create",
                common::create_form(id, 2),
            ))
            .await
            .expect("create");
        assert_eq!(s, 202, "{}", String::from_utf8_lossy(&body));
        accepts.push(t0.elapsed());
        let job: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let job = job["job_id"].as_str().expect("job_id");
        let (s, _) = conn
            .send(&Req::delete(format!("/api/jobs/{job}")))
            .await
            .expect("cancel");
        assert_eq!(s, 200);
    }
    accepts
}

/// One level: a fresh daemon, `clients` readers, the load; (latencies, events each client
/// should have had, accept latencies).
async fn level(
    lab: &Lab,
    clients: usize,
    dur: Duration,
    rate: u64,
) -> (Vec<Duration>, usize, Summary) {
    let data = lab.path(&format!("data-{clients}"));
    let lxc = lab.path(&format!("lxc-{clients}"));
    let daemon = Daemon::start(&data, &lxc, &["--paused"]).await;
    // Readers stop a second after the load, so the last events reach them.
    let until = Instant::now() + dur + Duration::from_secs(2);
    let readers: Vec<_> = (0..clients).map(|_| tokio::spawn(reader(until))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepts = feed(dur, rate).await;
    let mut all = Vec::new();
    let mut each = usize::MAX;
    for r in readers {
        let got = r.await.expect("reader");
        each = each.min(got.len());
        all.extend(got);
    }
    drop(daemon);
    (all, each, Summary::of(&accepts))
}

async fn run(lab: &Lab, dur: Duration, rate: u64) {
    let started = time::OffsetDateTime::now_utc();
    let (base, base_each, base_acc) = level(lab, 1, dur, rate).await;
    let (many, many_each, many_acc) = level(lab, 100, dur, rate).await;
    let (b, m) = (Summary::of(&base), Summary::of(&many));
    let expected = (2 * rate * dur.as_secs()) as usize;
    let mut text = format!(
        "## Event delivery (issue 14)\n\n{started} UTC; a `--paused` daemon fed {rate} creates + cancels a second for {} s (≈ {expected} events); latency = parsed by the client − the event's `at`.\n\n",
        dur.as_secs()
    );
    text.push_str("| stream clients | events per client (fewest) | p50 | p99 | max | p99 vs 1 client | create accept p50 / p99 |\n|---|---|---|---|---|---|---|\n");
    for (n, s, each, acc) in [
        (1, &b, base_each, &base_acc),
        (100, &m, many_each, &many_acc),
    ] {
        text.push_str(&format!(
            "| {n} | {each} | {} | {} | {} | {} | {} / {} |\n",
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            ratio(s.p99, b.p99),
            ms(acc.p50),
            ms(acc.p99)
        ));
    }
    text.push_str(&format!(
        "\nTarget: p99 ≤ 5 ms at 100 stream clients: **{}** ({}).\n",
        verdict(m.p99 <= Duration::from_millis(5)),
        ms(m.p99)
    ));
    common::emit(BENCH, &text);
}
