//! `GET /api/events`: the store's events (`queue::Event`) as server-sent events, in commit
//! order, from where the client asks, then live.
//!
//! Each client gets a task of its own that reads the store's `events` tree and feeds a
//! bounded channel the response body drains. The task reads only what is on disk, wakes when
//! the commit thread publishes a sync, and never makes the worker or the store wait: a client
//! that falls [`BUFFER`] events behind is sent a last `lagged` event naming where to resume,
//! and its stream ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warp::reply::Response;
use warp::sse::Event as Sse;
use warp::Reply;

use super::error::ApiError;
use super::{AppState, Request};
use crate::metrics::Metrics;
use crate::model::{ContainerId, InvalidValue};
use crate::queue::{JobStore, QueueError, StoredEvent};

/// Events a client may have unread before it is cut with `lagged`.
pub const BUFFER: usize = 1024;
/// Events read from the store at a time.
const READ_CHUNK: usize = 256;
/// A feed at most this many events behind reads them on the reactor: a live tail's newest
/// events are in sled's cache, a read of them takes microseconds (as `GET /api/jobs/<id>`'s
/// does); a feed further behind (catching up from an old `since`) reads on the blocking pool.
const INLINE_READ: u64 = 64;
/// A comment this often on an idle stream, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Which events a client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Only {
    /// Those of this job.
    job: Option<Uuid>,
    /// Those of this container.
    container: Option<ContainerId>,
}

impl Only {
    /// Whether `event` passes.
    fn passes(&self, event: &StoredEvent) -> Result<bool, QueueError> {
        if *self == Self::default() {
            return Ok(true);
        }
        let head = event.head().map_err(|why| {
            QueueError::Corrupt(format!("event {} does not decode: {why}", event.seq))
        })?;
        Ok(self.job.is_none_or(|j| head.job_id == Some(j))
            && self.container.is_none_or(|c| head.container_id == Some(c)))
    }
}

/// `GET /api/events[?since=N][&job=ID][&container=ID]`, or with `Last-Event-ID: N`.
///
/// # Errors
/// 400 for a malformed `since`, `Last-Event-ID`, `job` or `container`; 404 for `job=` a job
/// that does not exist (when no starting point is given, the stream starts at its first
/// event).
pub fn stream(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let params = req.params()?;
    let only = Only {
        job: params.get("job").map(|j| parse_job(j)).transpose()?,
        container: params
            .get("container")
            .map(|c| {
                c.parse()
                    .map_err(|e: InvalidValue| ApiError::invalid_field("container", e.0))
            })
            .transpose()?,
    };
    let after = match resume_point(req, params.get("since").map(String::as_str))? {
        Some(n) => n,
        None => match only.job {
            Some(job) => first_event_of(&state.store, job)?,
            None => state.store.last_event(),
        },
    };
    let (tx, rx) = mpsc::channel(BUFFER + 1);
    let feed = Feed {
        store: state.store.clone(),
        metrics: state.metrics.clone(),
        only,
        tx,
        shutdown: state.shutdown.clone(),
    };
    state.feeds.spawn(feed.run(after));
    let body = warp::sse::keep_alive()
        .interval(KEEP_ALIVE)
        .stream(Receiver(rx));
    Ok(warp::sse::reply(body).into_response())
}

fn parse_job(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid_field("job", format!("{raw:?} is not a job ID (a UUID)")))
}

/// Where the client resumes: after `Last-Event-ID` (an `EventSource` reconnecting sends it),
/// else after `?since=`; `None` when neither is given.
fn resume_point(req: &Request, since: Option<&str>) -> Result<Option<u64>, ApiError> {
    let header = req.headers.get("last-event-id").map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_header",
                    "Last-Event-ID must be an event number (a non-negative integer)",
                )
            })
    });
    if let Some(n) = header {
        return n.map(Some);
    }
    since
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                ApiError::invalid_field(
                    "since",
                    format!("since {s:?} is not an event number (a non-negative integer)"),
                )
            })
        })
        .transpose()
}

/// The number just before job `id`'s first event, so its whole history is sent.
fn first_event_of(store: &JobStore, id: Uuid) -> Result<u64, ApiError> {
    let job = store
        .get(id)?
        .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))?;
    // A job stored before events existed has none: start with what comes now.
    Ok(job
        .first_event
        .map_or_else(|| store.last_event(), |f| f.saturating_sub(1)))
}

/// One client's reader: from the store into its channel.
struct Feed {
    store: JobStore,
    metrics: Arc<Metrics>,
    only: Only,
    tx: mpsc::Sender<Sse>,
    shutdown: CancellationToken,
}

impl Feed {
    /// Sends every event after `after`, then each as it reaches the disk, until the client
    /// goes, falls [`BUFFER`] behind, or the daemon stops.
    async fn run(self, mut after: u64) {
        let _open = self.metrics.stream_opened();
        if let Err(e) = self.feed(&mut after).await {
            tracing::warn!(error = %e, after, "event stream ended by a store error");
        }
    }

    async fn feed(&self, after: &mut u64) -> Result<(), QueueError> {
        let mut synced = self.store.watch_events();
        if let Some(oldest) = self.store.events_pruned_after(*after)? {
            let data = json!({"since": *after, "oldest": oldest,
                "error": format!("events {} to {} are no longer kept (they go with their jobs); the stream goes on from {oldest}", *after + 1, oldest - 1)});
            if !self.send(notice("truncated", oldest - 1, &data)).await {
                return Ok(());
            }
            *after = oldest - 1;
        }
        loop {
            synced.borrow_and_update();
            let events = self.read_after(*after).await?;
            if events.is_empty() {
                tokio::select! {
                    changed = synced.changed() => if changed.is_err() { return Ok(()) },
                    () = self.tx.closed() => return Ok(()),
                    () = self.shutdown.cancelled() => return Ok(()),
                }
                continue;
            }
            for event in events {
                if self.only.passes(&event)? {
                    if self.tx.capacity() <= 1 {
                        let resume = event.seq - 1;
                        let data = json!({"since": resume,
                            "error": format!("this client fell {BUFFER} events behind; resume with since={resume}")});
                        self.metrics.observe_lagged();
                        self.send(notice("lagged", resume, &data)).await;
                        return Ok(());
                    }
                    if !self.send(sse(&event)).await {
                        return Ok(());
                    }
                }
                *after = event.seq;
            }
        }
    }

    /// The next events after `after` that are on disk.
    async fn read_after(&self, after: u64) -> Result<Vec<StoredEvent>, QueueError> {
        if self.store.last_event().saturating_sub(after) <= INLINE_READ {
            return self.store.events_after(after, READ_CHUNK);
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.events_after(after, READ_CHUNK))
            .await
            .map_err(|e| QueueError::Storage(format!("event read panicked: {e}")))?
    }

    /// Queues `event` for the client; false once the client has gone.
    async fn send(&self, event: Sse) -> bool {
        self.tx.send(event).await.is_ok()
    }
}

/// A stored event as SSE: `id:` its number, `event:` its type, `data:` its JSON.
fn sse(event: &StoredEvent) -> Sse {
    Sse::default()
        .id(event.seq.to_string())
        .event(event.kind.as_str())
        .data(String::from_utf8_lossy(&event.json))
}

/// A message of the stream itself (`truncated`, `lagged`), with the number to resume after.
fn notice(name: &str, id: u64, data: &serde_json::Value) -> Sse {
    Sse::default()
        .id(id.to_string())
        .event(name)
        .data(data.to_string())
}

/// The response body's side of a client's channel.
struct Receiver(mpsc::Receiver<Sse>);

impl Stream for Receiver {
    type Item = Result<Sse, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}
