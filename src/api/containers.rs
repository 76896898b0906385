//! `/api/container/*`: create (202 + job), list, info, destroy (202 + job).

use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_create, BodyFormat};
use super::{json_reply, off_reactor, AppState};
use crate::model::ContainerId;
use crate::queue::{Job, JobStore};

fn parse_id(raw: &str) -> Result<ContainerId, ApiError> {
    raw.parse()
        .map_err(|e: crate::model::InvalidValue| ApiError::invalid_field("id", e.0))
}

/// 202 with `Location: /api/jobs/<id>` and the job's essentials.
fn accepted(job: &Job, extra: serde_json::Value) -> Response {
    let location = format!("/api/jobs/{}", job.id);
    let mut body = json!({
        "job_id": job.id,
        "kind": job.kind,
        "id": job.container_id,
        "state": job.state,
        "location": location,
    });
    if let (Some(b), serde_json::Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    let mut resp = json_reply(StatusCode::ACCEPTED, &body);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `POST /api/container/create`.
pub async fn create(
    state: &AppState,
    format: BodyFormat,
    body: &[u8],
) -> Result<Response, ApiError> {
    let spec = parse_create(format, body)?;
    state.engine.check_request(&spec)?;
    let job = state.store.enqueue_create(spec.clone()).await?;
    tracing::info!(job_id = %job.id, container_id = %spec.id, vlan = %spec.vlan, ip = %spec.ip, "create accepted");
    state.control.wake_worker();
    state.control.job_changed();
    let mut extra = json!({ "vlan": spec.vlan, "ip": spec.ip });
    if let Some(gw) = spec.gateway {
        extra["gateway"] = json!(gw);
    }
    Ok(accepted(&job, extra))
}

/// `GET /api/container/list`: the IDs of containers that exist (created and not destroyed).
/// Served from the store's cache while no write changed the records; otherwise the store reads
/// every record, on the blocking pool.
pub async fn list(state: &AppState) -> Result<Response, ApiError> {
    let ids = match state.store.cached_listed() {
        Some(ids) => ids,
        None => off_reactor(state, JobStore::listed).await?,
    };
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "containers_id": &*ids }),
    ))
}

/// `GET /api/container/info/<ID>`: the record joined with what LXC and the kernel show.
pub async fn info(state: &AppState, raw: &str) -> Result<Response, ApiError> {
    let id = parse_id(raw)?;
    let Some(rec) = state.store.container(id)? else {
        return Err(ApiError::not_found(format!(
            "container {id} does not exist"
        )));
    };
    let facts = state.engine.inspect(id).await?;
    let body = json!({
        "id": rec.id,
        "name": id.container_name(),
        "vlan": rec.vlan,
        "ip": rec.ip,
        "gateway": rec.gateway,
        "record_state": rec.state,
        "job_id": rec.job_id,
        "state": facts.as_ref().map_or("ABSENT", |f| f.state.as_str()),
        "pid": facts.as_ref().and_then(|f| f.pid),
        "mtu": facts.as_ref().and_then(|f| f.mtu),
        "host_veth": facts.as_ref().and_then(|f| f.host_veth.clone()),
        "bridge": rec.vlan.bridge_name(),
    });
    Ok(json_reply(StatusCode::OK, &body))
}

/// `DELETE /api/container/<ID>`.
pub async fn destroy(state: &AppState, raw: &str) -> Result<Response, ApiError> {
    let id = parse_id(raw)?;
    let job = state.store.enqueue_destroy(id).await?;
    tracing::info!(job_id = %job.id, container_id = %id, "destroy accepted");
    state.control.wake_worker();
    state.control.job_changed();
    Ok(accepted(&job, json!({})))
}
