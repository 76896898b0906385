//! HTTPS off loopback with the real `serve` (issue 14), on two simulated servers: server 1's
//! daemon listens on its underlay address with a lab certificate and a token, and server 2 —
//! the client binary and curl — reaches it across the lab's switch; a SIGTERM lets a request in
//! flight over TLS finish. Then what `serve` refuses before it touches anything (plain HTTP off
//! loopback, bad certificate files: exit 2, one sentence), and the lab waiver
//! `--insecure-plain-http`, which serves with a warning.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::certs::LabCerts;
use common::daemon::serve_on;
use common::serve::{Launch, Process, BIN, STOP_TIMEOUT};
use common::{Lab, Server};
use serde_json::Value;

/// The port the daemons listen on, on server 1's underlay address.
const PORT: u16 = 8443;
/// The token server 1's daemon wants.
const TOKEN: &str = "root-tls-token";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts `serve` on `server` listening on `addr` with `flags`, and waits until `/healthz`
/// answers `url`'s scheme through curl from `from`, with `curl_flags` (`--cacert`).
fn start(
    server: &Server,
    from: &Server,
    addr: &str,
    flags: &[String],
    curl_flags: &[&str],
) -> Process {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // The waits' debug line tells a test its request is in the handler, not only sent.
    let serve = serve_on(server, &["--log-format", "json"])
        .listen(addr)
        .flags(&flags)
        .env("RUST_LOG", "info,creepy_meow::api::jobs=debug");
    let process = serve.spawn(Launch::OnServer(server));
    let scheme = if flags.contains(&"--tls-cert") {
        "https"
    } else {
        "http"
    };
    let ready = process.wait_ready(Duration::from_secs(20), Duration::from_millis(50), |path| {
        let url = format!("{scheme}://{addr}{path}");
        let mut args = vec!["-sf".to_string()];
        args.extend(curl_flags.iter().map(|f| f.to_string()));
        args.push(url);
        let curl = from.cmd("curl", args);
        async move {
            let out = tokio::process::Command::from(curl).output().await;
            out.map(|o| o.status.success()).unwrap_or(false)
        }
    });
    common::runtime().block_on(ready);
    process
}

/// The daemon's log lines at `level` (JSON), each as its message and fields.
fn logged(process: &Process, level: &str) -> Vec<Value> {
    process
        .own_log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["level"] == level)
        .map(|l| l["fields"].clone())
        .collect()
}

/// `serve` with `args` after `--host-id 1 --vlans 2` and a data dir under the server's, run to
/// its end: for the refusals, which come before it touches anything.
fn serve_once(server: &Server, args: &[&str]) -> Output {
    let data = server.dir.join("refused-data");
    let mut all = vec!["serve", "--host-id", "1", "--vlans", "2", "--data-dir"];
    all.push(data.to_str().unwrap());
    all.extend_from_slice(args);
    server.run(BIN, all)
}

/// Checks that `out` is an exit 2 with one line, `creepy-meow: <want>...`.
fn refused(out: &Output, want: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("creepy-meow: {want}")), "{err}");
}

#[test]
fn https_off_loopback_with_a_token_serves_another_server_and_stops_gracefully() {
    common::require_root();
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let ip = s1.underlay_ip.to_string();
    let addr = format!("{ip}:{PORT}");
    let certs = LabCerts::make(&lab.dir().join("certs"), "server", &[&ip]);
    let token = lab.dir().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let ca = certs.ca.to_str().unwrap();
    let mut flags = certs.serve_flags();
    flags.extend([
        "--token-file".into(),
        token.display().to_string(),
        "--paused".into(),
    ]);
    let mut daemon = start(s1, s2, &addr, &flags, &["--cacert", ca]);
    let serving = logged(&daemon, "INFO");
    let serving = serving
        .iter()
        .find(|f| f["message"] == "serving")
        .expect("serving logged");
    assert_eq!(
        (serving["scheme"].as_str(), serving["addr"].as_str()),
        (Some("https"), Some(&*addr))
    );
    assert_eq!(logged(&daemon, "WARN"), Vec::<Value>::new());

    // The client binary on server 2 queues a create on server 1 (paused: it waits there).
    let base = format!("https://{addr}");
    let tok = token.to_str().unwrap();
    let client = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &base, "--cacert", ca, "--token-file", tok]);
        s2.run(BIN, all)
    };
    let out = client(&[&common::CREATE_5[..], &["--no-wait", "--json"]].concat());
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let accepted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = accepted["job_id"].as_str().expect("job_id").to_string();
    // curl with the CA and the token sees it; without the CA it refuses the server.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let jobs = s2.run_ok(
        "curl",
        [
            "-sS",
            "--cacert",
            ca,
            "-H",
            &bearer,
            &format!("{base}/api/jobs"),
        ],
    );
    assert!(jobs.contains(&job), "{jobs}");
    let untrusted = s2.run("curl", ["-sS", &format!("{base}/healthz")]);
    assert_eq!(
        untrusted.status.code(),
        Some(60),
        "{}",
        text(&untrusted.stderr)
    );
    // Plain HTTP to the TLS port gets no answer; the server goes on.
    let plain = s2.run("curl", ["-sS", &format!("http://{addr}/healthz")]);
    assert!(!plain.status.success(), "{}", text(&plain.stdout));
    let out = client(&["jobs", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // SIGTERM while a wait is in flight over TLS: the request is answered before the exit.
    let wait = format!("{base}/api/jobs/{job}/wait?timeout=5");
    let mut curl = s2.cmd("curl", ["-sS", "-v", "--cacert", ca, "-H", &bearer, &wait]);
    curl.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut curl = s2.spawn_cmd(curl);
    let sent = BufReader::new(curl.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("> GET /api/jobs/"));
    assert!(sent, "curl never sent its request");
    // Sent is not read: a SIGTERM before the server parsed it would find the connection idle
    // and close it (hyper's graceful shutdown), which is not what this checks.
    common::eventually("the wait is in its handler", STOP_TIMEOUT, || {
        daemon.own_log().contains("waiting for a job to end")
    });
    let status = daemon
        .sigterm(STOP_TIMEOUT)
        .expect("the daemon stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", daemon.own_log());
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "the wait in flight was cut: {out:?}");
    let answered: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answered["state"], "queued", "{answered}");
}

#[test]
fn off_loopback_plain_http_and_bad_certificates_are_refused_and_the_lab_waiver_warns() {
    common::require_root();
    let lab = Lab::new(2);
    let (s1, s2) = (lab.server(1), lab.server(2));
    let ip = s1.underlay_ip.to_string();
    let addr = format!("{ip}:{PORT}");
    let token = lab.dir().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let tok = token.to_str().unwrap();

    // `serve` on the underlay with the token, and `tls` flags.
    let serve = |tls: &[&str]| {
        let mut args = vec!["--listen", &addr, "--token-file", tok];
        args.extend_from_slice(tls);
        serve_once(s1, &args)
    };
    refused(
        &serve(&[]),
        &format!("refusing to listen on {addr} without TLS: pass --tls-cert FILE --tls-key FILE (or --insecure-plain-http)"),
    );
    let certs = LabCerts::make(&lab.dir().join("certs"), "server", &[&ip]);
    let other = LabCerts::make(&lab.dir().join("certs"), "other", &[&ip]);
    let (cert, key) = (certs.cert.to_str().unwrap(), other.key.to_str().unwrap());
    refused(
        &serve(&["--tls-cert", cert, "--tls-key", key]),
        &format!("the TLS key {key} does not belong to the certificate {cert}"),
    );
    refused(
        &serve(&["--tls-cert", tok, "--tls-key", key]),
        &format!("the TLS certificate file {tok} holds no PEM certificate"),
    );
    assert!(
        !s1.dir.join("refused-data").exists(),
        "a refused serve made its data dir"
    );

    // A lab that says so gets plain HTTP without a token off loopback, with a warning each.
    let waived = [
        "--insecure-plain-http".to_string(),
        "--insecure-no-auth".to_string(),
    ];
    let daemon = start(s1, s2, &addr, &waived, &[]);
    let warned: Vec<String> = logged(&daemon, "WARN")
        .iter()
        .filter_map(|f| f["message"].as_str().map(String::from))
        // Only the exposure warnings: a machine may warn of other things (no overlayfs).
        .filter(|m| m.contains("off loopback"))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(
        warned[0].starts_with(&format!("serving plain HTTP on {addr}, off loopback")),
        "{warned:?}"
    );
    assert!(
        warned[1].starts_with(&format!(
            "serving without authentication on {addr}, off loopback"
        )),
        "{warned:?}"
    );
    let list = s2.run_ok(
        "curl",
        ["-sS", &format!("http://{addr}/api/container/list")],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["containers_id"],
        serde_json::json!([])
    );
}
