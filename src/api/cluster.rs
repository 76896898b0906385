//! `/api/cluster/*`: the members (`hosts`) and every reserved container, read from etcd; and
//! a create in cluster mode: its reservation beside its local enqueue.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::{json_reply, AppState};
use crate::cluster::gate::Refusal;
use crate::cluster::{Cluster, ClusterError, Member, Standing};
use crate::model::HostId;
use crate::queue::{Enqueued, IdempotencyKey};
use crate::spec::CreateSpec;

/// Accepts a create of `spec` in cluster mode: its reservation and its local enqueue at once
/// (`cluster/gate.rs`), counting the cluster's refusals. A server refused membership reserves
/// nothing.
///
/// # Errors
/// 409 when another server holds the ID or address; 503 `cluster_unavailable` when etcd does
/// not answer in time or this server is not a member; the store's own refusals.
pub async fn create(
    state: &AppState,
    cluster: &Arc<Cluster>,
    spec: CreateSpec,
    key: Option<IdempotencyKey>,
) -> Result<Enqueued, ApiError> {
    if let Standing::Refused(why) = cluster.standing() {
        return Err(refused(state, cluster, &spec, ClusterError::Refused(why)));
    }
    match cluster
        .accept_create(&state.store, &state.control, spec.clone(), key)
        .await
    {
        Ok(done) => Ok(done),
        Err(Refusal::Store(e)) => Err(e.into()),
        Err(Refusal::Cluster(e)) => Err(refused(state, cluster, &spec, e)),
    }
}

/// Counts and logs the cluster's refusal `e` of `spec`, as the API's answer.
fn refused(state: &AppState, cluster: &Cluster, spec: &CreateSpec, e: ClusterError) -> ApiError {
    let reason = match &e {
        ClusterError::Held(_) => "held",
        ClusterError::Unavailable(why) => {
            // Until the next keep-alive gets through: /healthz says so at once.
            cluster.mark_unavailable(why);
            "unavailable"
        }
        ClusterError::Refused(_) => "unavailable",
    };
    state.metrics.observe_cluster_refusal(reason);
    tracing::info!(container_id = %spec.id, error = %e, "create refused by the cluster");
    ApiError::from(e)
}

fn cluster_of(state: &AppState) -> Result<&Arc<Cluster>, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this server runs alone: cluster views need serve --etcd",
        )
    })
}

/// The standing as JSON, for `/healthz` and the views.
pub fn standing_json(cluster: &Cluster) -> serde_json::Value {
    let (state, detail) = match cluster.standing() {
        Standing::Connected => ("connected", None),
        Standing::Joining => ("joining", None),
        Standing::Unavailable(why) => ("unavailable", Some(why)),
        Standing::Refused(why) => ("refused", Some(why)),
    };
    json!({
        "name": cluster.keys().name(),
        "host_id": cluster.host_id(),
        "node": cluster.node(),
        "state": state,
        "detail": detail,
    })
}

/// `GET /api/cluster/hosts`: the live members (lease alive), and the servers that hold
/// reservations but whose lease has expired (down or cut off: they keep their containers).
pub async fn hosts(state: &AppState) -> Result<Response, ApiError> {
    let cluster = cluster_of(state)?;
    let (members, _) = cluster.read_members().await?;
    let mut holding: BTreeMap<HostId, usize> = BTreeMap::new();
    for r in cluster.reserved().await? {
        *holding.entry(r.host_id).or_default() += 1;
    }
    let mut hosts: Vec<serde_json::Value> = members
        .values()
        .map(|m| member_json(m, holding.get(&m.host_id).copied().unwrap_or(0)))
        .collect();
    for (host, n) in holding.iter().filter(|(h, _)| !members.contains_key(h)) {
        hosts.push(json!({ "host_id": host, "lease": "expired", "containers": n }));
    }
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "cluster": standing_json(cluster), "hosts": hosts }),
    ))
}

fn member_json(m: &Member, containers: usize) -> serde_json::Value {
    let at = m
        .registered_at
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    json!({
        "host_id": m.host_id,
        "node": m.node,
        "underlay": m.underlay,
        "vlans": m.vlans,
        "api_url": m.api_url,
        "registered_at": at,
        "lease": "alive",
        "containers": containers,
    })
}

/// `GET /api/cluster/containers`: every container reserved in the cluster, by ID.
pub async fn containers(state: &AppState) -> Result<Response, ApiError> {
    let cluster = cluster_of(state)?;
    let mut out = cluster.reserved().await?;
    out.sort_by_key(|r| r.id);
    let containers: Vec<serde_json::Value> = out
        .iter()
        .map(|r| json!({ "id": r.id, "vlan": r.vlan, "ip": r.ip, "host_id": r.host_id }))
        .collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "count": containers.len(), "containers": containers }),
    ))
}
