//! `/api/jobs*`, `/api/queue*` and `/metrics`.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use super::{json_reply, off_reactor, AppState, Request};
use crate::metrics::Snapshot;
use crate::queue::JobState;

/// Longest `wait` a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// `wait` without `?timeout=`.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// `GET /api/jobs` without `?limit=`.
const DEFAULT_LIMIT: usize = 100;

fn parse_job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid_field("job_id", format!("{raw:?} is not a job ID (a UUID)")))
}

fn job_json(state: &AppState, id: Uuid) -> Result<(serde_json::Value, bool), ApiError> {
    let job = state
        .store
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))?;
    let done = job.state.is_terminal();
    let value = serde_json::to_value(&job).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((value, done))
}

/// `GET /api/jobs/<id>`.
pub fn get(state: &AppState, raw: &str) -> Result<Response, ApiError> {
    let (job, _) = job_json(state, parse_job_id(raw)?)?;
    Ok(json_reply(StatusCode::OK, &job))
}

/// How long `wait` waits: [`DEFAULT_WAIT`] without `?timeout=`, never more than [`MAX_WAIT`].
///
/// # Errors
/// 400 `invalid_field` for a timeout that is not a non-negative number of seconds.
fn wait_timeout(raw: Option<&str>) -> Result<Duration, ApiError> {
    let Some(t) = raw else {
        return Ok(DEFAULT_WAIT);
    };
    let seconds = t
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "timeout",
                format!("timeout {t:?} is not a number of seconds"),
            )
        })?;
    // Capped before the conversion: `Duration::from_secs_f64` panics on values past u64 seconds
    // (`?timeout=1e300`).
    Ok(Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64())))
}

/// `GET /api/jobs/<id>/wait?timeout=S`: answers when the job finishes or the timeout passes.
pub async fn wait(state: &AppState, raw: &str, req: &Request) -> Result<Response, ApiError> {
    let id = parse_job_id(raw)?;
    let timeout = wait_timeout(req.params()?.get("timeout").map(String::as_str))?;
    tracing::debug!(job_id = %id, timeout_ms = timeout.as_millis() as u64, "waiting for a job to end");
    let mut changes = state.control.changes();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        changes.borrow_and_update();
        let (job, done) = job_json(state, id)?;
        if done {
            return Ok(json_reply(StatusCode::OK, &job));
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(json_reply(StatusCode::OK, &job));
        }
    }
}

/// `GET /api/jobs?state=S&limit=N`, newest first.
pub async fn list(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let params = req.params()?;
    let filter = match params.get("state") {
        None => None,
        Some(s) => Some(serde_json::from_value::<JobState>(json!(s)).map_err(|_| {
            ApiError::invalid_field(
                "state",
                format!("state {s:?} is not one of queued, running, succeeded, failed, cancelled"),
            )
        })?),
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "limit",
                    format!("limit {l:?} must be a whole number from 1 to 10000"),
                )
            })?,
    };
    let jobs = off_reactor(state, move |store| store.list(filter, limit)).await?;
    Ok(json_reply(StatusCode::OK, &json!({ "jobs": jobs })))
}

/// `DELETE /api/jobs/<id>`: cancels a job that has not started.
pub async fn cancel(state: &AppState, raw: &str) -> Result<Response, ApiError> {
    let job = state.store.cancel(parse_job_id(raw)?).await?;
    state.control.job_changed();
    let value = serde_json::to_value(&job).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json_reply(StatusCode::OK, &value))
}

/// `GET /api/queue` (and the answer of pause/resume).
pub async fn queue_status(state: &AppState) -> Result<Response, ApiError> {
    // Queued first, running second: a job moves from queued to running, so one the worker
    // takes between the two reads is counted in one of them, never in neither (a client
    // waiting for 0 and 0 would otherwise see an idle queue while the job runs).
    let queued = state.store.queued_count()?;
    let running = off_reactor(state, |store| store.running()).await?.len();
    let body = json!({
        "paused": state.control.is_paused(),
        "queued": queued,
        "running": running,
    });
    Ok(json_reply(StatusCode::OK, &body))
}

/// `GET /metrics`.
pub async fn metrics(state: &AppState) -> Result<Response, ApiError> {
    let snap = Snapshot {
        jobs: off_reactor(state, |store| store.counts_by_state()).await?,
        queued: state.store.queued_count()?,
        paused: state.control.is_paused(),
        cluster: state.cluster.as_ref().map(|c| {
            let others = c.members().keys().filter(|&&h| h != c.host_id()).count();
            (c.standing().is_connected(), others)
        }),
    };
    let text = state.metrics.render(&snap);
    Ok(warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_defaults_to_30_seconds_and_caps_at_60() {
        assert_eq!(wait_timeout(None), Ok(Duration::from_secs(30)));
        assert_eq!(wait_timeout(Some("0")), Ok(Duration::ZERO));
        assert_eq!(wait_timeout(Some("0.25")), Ok(Duration::from_millis(250)));
        assert_eq!(wait_timeout(Some("60")), Ok(Duration::from_secs(60)));
        for over in ["60.5", "61", "3600", "1e300"] {
            assert_eq!(
                wait_timeout(Some(over)),
                Ok(Duration::from_secs(60)),
                "{over}"
            );
        }
    }

    #[test]
    fn a_wait_timeout_that_is_not_seconds_names_the_field() {
        for bad in ["", "-1", "soon", "NaN", "inf", "1s"] {
            let e = wait_timeout(Some(bad)).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code, e.field),
                (400, "invalid_field", Some("timeout")),
                "{bad:?}"
            );
        }
    }
}
