//! `/api/reconcile`: the last reconcile pass's report, or a pass run now.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use super::{json_reply, AppState};
use crate::reconcile::{ReconcileError, Report};

/// `GET /api/reconcile`: the last pass (when, what drifted, the jobs that repair it, what is
/// foreign).
pub fn last(state: &AppState) -> Result<Response, ApiError> {
    match state.reconciler.last() {
        Some(report) => Ok(report_reply(&report)),
        None => Err(ApiError::not_found("no reconcile pass has run yet")),
    }
}

/// `POST /api/reconcile`: runs a pass now (after the one under way, if any) and answers its
/// report; repairs it queues show in `/api/jobs`.
pub async fn run(state: &AppState) -> Result<Response, ApiError> {
    let report = state.reconciler.pass().await.map_err(|e| match e {
        // A store that cannot write is the same 503 here as anywhere.
        ReconcileError::Store(e) => ApiError::from(e),
        e => ApiError::internal(format!("the reconcile pass failed: {e}")),
    })?;
    Ok(report_reply(&report))
}

fn report_reply(report: &Report) -> Response {
    match serde_json::to_value(report) {
        Ok(body) => json_reply(StatusCode::OK, &body),
        Err(e) => ApiError::internal(format!("cannot encode the report: {e}")).into_response(),
    }
}
