//! The HTTP API on warp: validate, enqueue, answer `202` with the job; read jobs, containers,
//! queue state and metrics. Handlers never block: the only slow thing a create waits for is
//! the group-committed flush, which runs on its own thread.
//!
//! Routing is one list of paths (`Endpoint`) and one match over method and endpoint
//! (`dispatch`), so every answer — also for unknown paths, wrong methods and oversized bodies —
//! is the same JSON error shape. `server.rs` accepts the connections (plain or TLS) and hands
//! each request to these routes.

pub mod auth;
mod cluster;
mod containers;
pub mod error;
mod events;
mod idempotency;
mod images;
mod jobs;
mod reconcile;
pub mod request;
mod server;

pub use server::serve;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use serde_json::json;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::queue::{JobStore, Lifecycle, QueueError};
use crate::worker::QueueControl;
use error::{with_retry_after, ApiError};

/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024;

/// What the handlers share.
pub struct AppState {
    /// The durable job store.
    pub store: JobStore,
    /// The engine, for validation and for reading the host.
    pub engine: Engine,
    /// Pause/resume and change signals.
    pub control: QueueControl,
    /// Bearer token every endpoint but `/healthz` needs, when set.
    pub token: Option<String>,
    /// Step timings.
    pub metrics: Arc<Metrics>,
    /// Reconcile passes on demand, and the last report.
    pub reconciler: Arc<crate::reconcile::Reconciler>,
    /// Fires when the daemon stops: ends the event streams, so the server can close.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The event streams' feeds, waited for at shutdown (each holds the store open).
    pub feeds: tokio_util::task::TaskTracker,
    /// Cluster mode's membership and reservations; `None`: this server is alone.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The whole API as one filter.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query, headers, body| {
                let state = state.clone();
                async move {
                    let req = Request {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                    };
                    match dispatch(&state, &req, Box::pin(body)).await {
                        Ok(resp) => resp,
                        Err(e) => e.into_response(),
                    }
                }
            },
        )
        .or_else(|_| async {
            Ok::<_, Infallible>((ApiError::not_found("no such endpoint").into_response(),))
        })
}

/// The parts of a request the handlers read.
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers.
    pub headers: HeaderMap,
}

impl Request {
    /// The query parameters.
    ///
    /// # Errors
    /// 400 `malformed_query` for a query that cannot be decoded: its percent-escapes are not
    /// UTF-8 (`serde_urlencoded` alone would turn them into U+FFFD and carry on).
    pub fn params(&self) -> Result<HashMap<String, String>, ApiError> {
        let malformed = |why: String| {
            ApiError::bad_request(
                "malformed_query",
                format!("the query string cannot be read: {why}"),
            )
        };
        if std::str::from_utf8(&percent_decode(self.query.as_bytes())).is_err() {
            return Err(malformed("it is not UTF-8 once decoded".into()));
        }
        serde_urlencoded::from_str(&self.query).map_err(|e| malformed(e.to_string()))
    }
}

/// The bytes `raw` stands for: `%XX` escapes decoded, anything else (a stray `%` too) kept as
/// is, as `application/x-www-form-urlencoded` parsing does. The separators `&`, `=` are ASCII,
/// so the whole is UTF-8 exactly when every name and value is.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escape = raw.get(i + 1..i + 3).filter(|_| raw[i] == b'%');
        match escape.and_then(|h| Some(hex(h[0])? * 16 + hex(h[1])?)) {
            Some(byte) => {
                out.push(byte as u8);
                i += 3;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    out
}

type Body = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// Reads the body, refusing more than [`MAX_BODY`] bytes whatever Content-Length claims.
async fn read_body(mut body: Body) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("malformed_body", format!("the body cannot be read: {e}"))
        })?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {} KiB", MAX_BODY / 1024),
            ));
        }
        out.extend_from_slice(chunk.chunk());
    }
    Ok(out)
}

/// JSON with a status.
pub fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Runs a store read that scans many records on the blocking pool, so the reactor keeps
/// serving.
async fn off_reactor<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&JobStore) -> Result<T, QueueError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|e| ApiError::internal(format!("store read panicked: {e}")))?
        .map_err(ApiError::from)
}

async fn dispatch(
    state: &AppState,
    req: &Request,
    body: impl Stream<Item = Result<impl Buf + Send, warp::Error>> + Send + 'static,
) -> Result<Response, ApiError> {
    let body: Body = Box::pin(body.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining()))));
    let path = req.path.trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = &req.method;
    let endpoint = Endpoint::of(&segs);
    if (m, &endpoint) == (&Method::GET, &Some(Endpoint::Healthz)) {
        return Ok(healthz(state));
    }
    auth::check(state.token.as_deref(), &req.headers)?;
    let Some(endpoint) = endpoint else {
        return Err(ApiError::not_found(format!("no endpoint at {}", req.path)));
    };
    match (m.clone(), endpoint) {
        (Method::POST, Endpoint::Create) => {
            let format = request::BodyFormat::from_content_type(
                req.headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
            )?;
            let bytes = read_body(body).await?;
            containers::create(state, req, format, &bytes).await
        }
        (Method::GET, Endpoint::List) => containers::list(state, req).await,
        (Method::GET, Endpoint::Info(id)) => containers::info(state, id).await,
        (Method::DELETE, Endpoint::Container(id)) => containers::destroy(state, req, id).await,
        (Method::POST, Endpoint::Lifecycle(id, op)) => {
            containers::lifecycle(state, req, id, op).await
        }
        (Method::GET, Endpoint::Images) => images::list(state).await,
        (Method::POST, Endpoint::BuildImage(name)) => images::build(state, req, name).await,
        (Method::GET, Endpoint::Reconcile) => reconcile::last(state),
        (Method::POST, Endpoint::Reconcile) => reconcile::run(state).await,
        (Method::GET, Endpoint::Jobs) => jobs::list(state, req).await,
        (Method::GET, Endpoint::Job(id)) => jobs::get(state, id),
        (Method::GET, Endpoint::Wait(id)) => jobs::wait(state, id, req).await,
        (Method::DELETE, Endpoint::Job(id)) => jobs::cancel(state, id).await,
        (Method::GET, Endpoint::Queue) => jobs::queue_status(state).await,
        (Method::POST, Endpoint::Pause) => {
            state.control.pause();
            jobs::queue_status(state).await
        }
        (Method::POST, Endpoint::Resume) => {
            state.control.resume();
            jobs::queue_status(state).await
        }
        (Method::GET, Endpoint::Metrics) => jobs::metrics(state).await,
        (Method::GET, Endpoint::Events) => events::stream(state, req),
        (Method::GET, Endpoint::ClusterHosts) => cluster::hosts(state).await,
        (Method::GET, Endpoint::ClusterContainers) => cluster::containers(state).await,
        // A known path asked with a method it does not answer.
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not allowed on {}", req.path),
        )),
    }
}

/// `GET /healthz`: `ok`, or `degraded` while a cluster member cannot reach etcd (or was
/// refused membership): it still serves everything but creates.
///
/// While the store cannot write it answers 503 `storage_unavailable` with the reason: nothing
/// can be accepted, and a load balancer should look elsewhere (issue 17).
fn healthz(state: &AppState) -> Response {
    let fabric = state.engine.fabric().mode();
    let mut body = json!({"status": "ok", "fabric": fabric});
    if let Some(c) = &state.cluster {
        if !c.standing().is_connected() {
            body["status"] = json!("degraded");
        }
        body["cluster"] = cluster::standing_json(c);
    }
    match state.store.unavailable() {
        None => json_reply(StatusCode::OK, &body),
        Some(reason) => {
            body["status"] = json!("storage_unavailable");
            body["error"] = json!(reason);
            with_retry_after(json_reply(StatusCode::SERVICE_UNAVAILABLE, &body))
        }
    }
}

/// Every path the API serves: the one list of routes. [`dispatch`] matches a method with
/// one of these; a path here asked with another method is a 405, a path not here a 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'p> {
    Healthz,
    Metrics,
    Create,
    List,
    Info(&'p str),
    Container(&'p str),
    Lifecycle(&'p str, Lifecycle),
    Images,
    BuildImage(&'p str),
    Reconcile,
    Jobs,
    Job(&'p str),
    Wait(&'p str),
    Queue,
    Pause,
    Resume,
    Events,
    ClusterHosts,
    ClusterContainers,
}

impl<'p> Endpoint<'p> {
    /// The endpoint at these path segments, if any.
    fn of(segs: &[&'p str]) -> Option<Self> {
        Some(match *segs {
            ["healthz"] => Self::Healthz,
            ["metrics"] => Self::Metrics,
            ["api", "container", "create"] => Self::Create,
            ["api", "container", "list"] => Self::List,
            ["api", "container", "info", id] => Self::Info(id),
            ["api", "container", id] => Self::Container(id),
            ["api", "container", id, "start"] => Self::Lifecycle(id, Lifecycle::Start),
            ["api", "container", id, "stop"] => Self::Lifecycle(id, Lifecycle::Stop),
            ["api", "container", id, "restart"] => Self::Lifecycle(id, Lifecycle::Restart),
            ["api", "images"] => Self::Images,
            ["api", "images", name, "build"] => Self::BuildImage(name),
            ["api", "reconcile"] => Self::Reconcile,
            ["api", "jobs"] => Self::Jobs,
            ["api", "jobs", id] => Self::Job(id),
            ["api", "jobs", id, "wait"] => Self::Wait(id),
            ["api", "queue"] => Self::Queue,
            ["api", "queue", "pause"] => Self::Pause,
            ["api", "queue", "resume"] => Self::Resume,
            ["api", "events"] => Self::Events,
            ["api", "cluster", "hosts"] => Self::ClusterHosts,
            ["api", "cluster", "containers"] => Self::ClusterContainers,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Request {
        Request {
            method: Method::GET,
            path: "/api/jobs".into(),
            query: q.into(),
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn a_query_is_read_as_forms_are() {
        let p = query("state=failed&limit=5&note=a%20b+c&odd=%zz%")
            .params()
            .unwrap();
        assert_eq!(p["state"], "failed");
        assert_eq!(p["limit"], "5");
        assert_eq!(p["note"], "a b c");
        assert_eq!(p["odd"], "%zz%");
        assert_eq!(query("note=%C3%A9").params().unwrap()["note"], "\u{e9}");
    }

    #[test]
    fn a_query_that_is_not_utf8_once_decoded_is_malformed() {
        for q in ["state=%FF", "limit=%C3%28", "%80=1", "note=%C3"] {
            let e = query(q).params().unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "malformed_query"), "{q}");
        }
    }
}
