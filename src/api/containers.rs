//! `/api/container/*`: create (202 + job; 200 for a retry with its `Idempotency-Key`), list,
//! info, destroy, start, stop, restart (202 + job, the same).

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::request::{parse_create, BodyFormat};
use super::{idempotency, json_reply, off_reactor, AppState, Request};
use crate::model::ContainerId;
use crate::queue::{ContainerRecordState, JobStore, Lifecycle, Origin};
use crate::reconcile::classify::Health;
use time::format_description::well_known::Rfc3339;

fn parse_id(raw: &str) -> Result<ContainerId, ApiError> {
    raw.parse()
        .map_err(|e: crate::model::InvalidValue| ApiError::invalid_field("id", e.0))
}

/// `POST /api/container/create`.
pub async fn create(
    state: &AppState,
    req: &Request,
    format: BodyFormat,
    body: &[u8],
) -> Result<Response, ApiError> {
    let spec = parse_create(format, body)?;
    let key = idempotency::key(req, || serde_json::to_string(&spec).unwrap_or_default())?;
    state.engine.check_request(&spec)?;
    // Cluster mode: the ID and address become this server's cluster-wide while the job is
    // queued, held back until they are (issue 16, `cluster/gate.rs`).
    let done = match &state.cluster {
        Some(cluster) => super::cluster::create(state, cluster, spec.clone(), key).await?,
        None => state.store.enqueue_create_keyed(spec.clone(), key).await?,
    };
    let job = &done.job;
    tracing::info!(job_id = %job.id, container_id = %spec.id, vlan = %spec.vlan, ip = %spec.ip, replayed = done.replayed, "create accepted");
    state.control.wake_worker();
    state.control.job_changed();
    let mut extra = json!({ "vlan": spec.vlan, "ip": spec.ip });
    if let Some(gw) = spec.gateway {
        extra["gateway"] = json!(gw);
    }
    if let Some(t) = &spec.template {
        extra["template"] = json!(t);
    }
    Ok(idempotency::answer(&done, extra))
}

/// `GET /api/container/list`: the IDs of containers that exist (created and not destroyed).
/// Served from the store's cache while no write changed the records; otherwise the store reads
/// every record, on the blocking pool. With `?detail=1`, each container with its record state,
/// desired state and health (as the last reconcile pass found it).
pub async fn list(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let params = req.params()?;
    match params.get("detail").map(String::as_str) {
        None | Some("0") => {}
        Some("1") => return list_detail(state).await,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "detail",
                format!("detail must be 0 or 1, not {other:?}"),
            ))
        }
    }
    let ids = match state.store.cached_listed() {
        Some(ids) => ids,
        None => off_reactor(state, JobStore::listed).await?,
    };
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "containers_id": &*ids }),
    ))
}

async fn list_detail(state: &AppState) -> Result<Response, ApiError> {
    let records = off_reactor(state, JobStore::records).await?;
    let last = state.reconciler.last();
    let containers: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r.state != ContainerRecordState::Creating)
        .map(|r| {
            let health = last.as_ref().and_then(|l| l.health.get(&r.id));
            json!({
                "id": r.id,
                "record_state": r.state,
                "desired_state": r.desired,
                "health": health.map(Health::as_str),
            })
        })
        .collect();
    let checked_at = last.map(|l| l.finished_at);
    let checked_at = checked_at.and_then(|t| t.format(&Rfc3339).ok());
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "containers": containers, "health_checked_at": checked_at }),
    ))
}

/// `GET /api/container/info/<ID>`: the record joined with what LXC and the kernel show now,
/// and its health against its desired state.
pub async fn info(state: &AppState, raw: &str) -> Result<Response, ApiError> {
    let id = parse_id(raw)?;
    let Some(rec) = state.store.container(id)? else {
        return Err(ApiError::not_found(format!(
            "container {id} does not exist"
        )));
    };
    let (obs, health, veth) = state
        .reconciler
        .inspect(&rec)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let lxc_state = match (obs.config, obs.pid) {
        (false, _) => "ABSENT",
        (true, Some(_)) => "RUNNING",
        (true, None) => "STOPPED",
    };
    // A job holding the record is changing the container: its health is not judged meanwhile.
    let judged = rec.job_id.is_none() && rec.state != ContainerRecordState::Leftover;
    let (health, problems) = match (&health, judged) {
        (_, false) => (None, Vec::new()),
        (Health::Degraded(p), true) => (Some(health.as_str()), p.clone()),
        (h, true) => (Some(h.as_str()), Vec::new()),
    };
    let body = json!({
        "id": rec.id,
        "name": id.container_name(),
        "vlan": rec.vlan,
        "ip": rec.ip,
        "gateway": rec.gateway,
        "record_state": rec.state,
        "desired_state": rec.desired,
        "health": health,
        "problems": problems,
        "job_id": rec.job_id,
        "state": lxc_state,
        "pid": obs.pid,
        "mtu": veth.as_ref().map(|l| l.mtu),
        "host_veth": veth.map(|l| l.name),
        "bridge": rec.vlan.bridge_name(),
    });
    Ok(json_reply(StatusCode::OK, &body))
}

/// `POST /api/container/<ID>/start|stop|restart`: 202 + job, like a create.
pub async fn lifecycle(
    state: &AppState,
    req: &Request,
    raw: &str,
    op: Lifecycle,
) -> Result<Response, ApiError> {
    let id = parse_id(raw)?;
    let key = idempotency::key(req, String::new)?;
    let done = state
        .store
        .enqueue_lifecycle_keyed(id, op, Origin::Operator, key)
        .await?;
    let job = &done.job;
    tracing::info!(job_id = %job.id, container_id = %id, kind = job.kind.as_str(), replayed = done.replayed, "job accepted");
    state.control.wake_worker();
    state.control.job_changed();
    Ok(idempotency::answer(&done, json!({})))
}

/// `DELETE /api/container/<ID>`.
pub async fn destroy(state: &AppState, req: &Request, raw: &str) -> Result<Response, ApiError> {
    let id = parse_id(raw)?;
    let key = idempotency::key(req, String::new)?;
    let done = state.store.enqueue_destroy_keyed(id, key).await?;
    tracing::info!(job_id = %done.job.id, container_id = %id, replayed = done.replayed, "destroy accepted");
    state.control.wake_worker();
    state.control.job_changed();
    Ok(idempotency::answer(&done, json!({})))
}
