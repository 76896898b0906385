//! `creepy-meow events`: tails `GET /api/events`, one line per event (or its JSON with
//! `--json`), resuming by itself after a `lagged` cut or a broken connection. With `--job` it
//! ends with the job, and exits as `job --wait` does.

use std::process::ExitCode;

use serde_json::Value;

use super::client::{api_fail, connect};
use super::fail;
use crate::cli::EventsArgs;
use crate::client::events::ServerEvent;
use crate::client::ClientError;

/// Runs until interrupted, until the server cannot be reached, or (with `--job`) until the
/// job has ended: exit 0 if it succeeded, 1 if not.
pub async fn run(args: EventsArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(j) = &args.job {
        query.push(("job", j.clone()));
    }
    if let Some(c) = args.container {
        query.push(("container", c.to_string()));
    }
    let mut since = args.since;
    loop {
        query.retain(|(k, _)| *k != "since");
        if let Some(n) = since {
            query.push(("since", n.to_string()));
        }
        let mut stream = match client.events(&query).await {
            Ok(s) => s,
            Err(e @ ClientError::Api { .. }) => return api_fail(e),
            Err(e) => return fail(1, e),
        };
        loop {
            match stream.next().await {
                Ok(Some(event)) => {
                    since = event.id.or(since);
                    show(&event, args.client.json);
                    if let Some(code) = args.job.as_ref().and_then(|_| job_end(&event)) {
                        return code;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("creepy-meow: {e}; resuming");
                    break;
                }
            }
        }
    }
}

/// The exit code, when `event` says a job ended.
fn job_end(event: &ServerEvent) -> Option<ExitCode> {
    if event.event != "job" {
        return None;
    }
    match event.json().get("state").and_then(Value::as_str)? {
        "succeeded" => Some(ExitCode::SUCCESS),
        "failed" | "cancelled" => Some(ExitCode::from(1)),
        _ => None,
    }
}

/// Prints `event`: its JSON with `json`, else one line; the stream's own notices go to
/// stderr.
fn show(event: &ServerEvent, json: bool) {
    let data = event.json();
    match event.event.as_str() {
        "truncated" | "lagged" => {
            let why = data.get("error").and_then(Value::as_str).unwrap_or("");
            eprintln!("creepy-meow: {}: {why}", event.event);
        }
        _ if json => println!("{}", event.data),
        kind => println!("{}", line(kind, &data)),
    }
}

/// `#<seq> <time> <type> <what>`, for a person.
fn line(kind: &str, data: &Value) -> String {
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or("");
    let seq = data.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let container = data
        .get("container_id")
        .and_then(Value::as_u64)
        .map(|c| format!(" container{c}"))
        .unwrap_or_default();
    let job = text("job_id");
    let short_job = job.get(..8).unwrap_or(job);
    let what = match kind {
        "job" => format!(
            "{} job {short_job}{container}: {}",
            text("job_kind"),
            text("state")
        ),
        "step" => format!(
            "{} job {short_job}{container}: {} {}",
            text("job_kind"),
            text("step"),
            text("state")
        ),
        "container" => format!(
            "{}: {}, desired {}",
            container.trim(),
            text("state"),
            text("desired")
        ),
        "health" => format!("{}: health {}", container.trim(), text("state")),
        "reconcile" => format!(
            "{}: drift {}, repair job {short_job}",
            container.trim(),
            text("state")
        ),
        other => format!("{other}: {data}"),
    };
    let error = match (text("error"), text("detail")) {
        ("", "") => String::new(),
        ("", e) | (e, _) => format!(" ({e})"),
    };
    format!("#{seq} {} {what}{error}", text("at"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_line_names_job_container_step_and_error() {
        let data = serde_json::json!({"seq": 9, "type": "step", "at": "2026-11-29T22:00:00Z",
            "job_id": "0123456789abcdef", "container_id": 5, "job_kind": "create",
            "step": "create_veth", "state": "failed", "error": "EEXIST"});
        assert_eq!(
            line("step", &data),
            "#9 2026-11-29T22:00:00Z create job 01234567 container5: create_veth failed (EEXIST)"
        );
    }
}
