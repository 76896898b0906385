//! The client's side of `GET /api/events`: a `text/event-stream` parser, a stream of
//! [`ServerEvent`]s, and a job view kept current from them (so `create` and the other job
//! commands show progress without polling).

use futures::StreamExt;
use serde_json::Value;

use super::{ApiClient, ClientError, JobView, StepView};

/// One event as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEvent {
    /// Its `id:` (the event number), if it had one.
    pub id: Option<u64>,
    /// Its `event:` (`job`, `step`, `container`, `truncated`, `lagged`); `message` if none.
    pub event: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

impl ServerEvent {
    /// `data` as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// An incremental `text/event-stream` parser (the HTML standard's rules: fields up to `:`,
/// one optional space after it, comments start with `:`, a blank line ends an event).
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    id: Option<u64>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds `chunk`; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        self.partial.extend_from_slice(chunk);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(e) = self.dispatch() {
                    out.push(e);
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "" => {} // a comment: the keep-alive
                "id" => self.id = value.parse().ok(),
                "event" => self.event = Some(value.to_string()),
                "data" => self.data.push(value.to_string()),
                _ => {}
            }
        }
        out
    }

    fn dispatch(&mut self) -> Option<ServerEvent> {
        let event = self.event.take();
        let id = self.id.take();
        if self.data.is_empty() {
            return None;
        }
        Some(ServerEvent {
            id,
            event: event.unwrap_or_else(|| "message".into()),
            data: std::mem::take(&mut self.data).join("\n"),
        })
    }
}

/// An open event stream.
pub struct EventStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: std::collections::VecDeque<ServerEvent>,
    base: String,
}

impl EventStream {
    /// The next event; `None` once the server ended the stream.
    ///
    /// # Errors
    /// [`ClientError::Other`] when the connection breaks.
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, ClientError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.ready.extend(self.parser.push(&chunk)),
                Some(Err(e)) => {
                    return Err(ClientError::Other(format!(
                        "the event stream from {} broke: {e}",
                        self.base
                    )))
                }
                None => return Ok(None),
            }
        }
    }
}

impl ApiClient {
    /// Opens `GET /api/events` with `query` (`job`, `container`, `since`).
    ///
    /// # Errors
    /// See [`ClientError`]; an API error (such as a 404 from a server without events) as
    /// [`ClientError::Api`].
    pub async fn events(&self, query: &[(&str, String)]) -> Result<EventStream, ClientError> {
        let req = self
            .stream_request(reqwest::Method::GET, "/api/events")
            .query(query)
            .header("accept", "text/event-stream");
        let resp = self.response(req).await?;
        Ok(EventStream {
            body: resp.bytes_stream().boxed(),
            parser: SseParser::default(),
            ready: Default::default(),
            base: self.base.clone(),
        })
    }

    /// Follows job `id` to its end from its events, calling `on_change` whenever it changed.
    /// Resumes after a broken stream; falls back to [`Self::follow_waiting`] when the server
    /// has no event stream or it cannot be opened again.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn follow(
        &self,
        id: &str,
        mut on_change: impl FnMut(&JobView),
    ) -> Result<JobView, ClientError> {
        let mut job = self.job(id).await?;
        if job.is_finished() {
            on_change(&job);
            return Ok(job);
        }
        // The stream starts at the job's first event: replay it over a view of no progress.
        job.state = "queued".into();
        job.steps.iter_mut().for_each(StepView::reset);
        let mut query = vec![("job", id.to_string())];
        let mut last: Option<u64> = None;
        loop {
            if let Some(n) = last {
                query.retain(|(k, _)| *k != "since");
                query.push(("since", n.to_string()));
            }
            let Ok(mut stream) = self.events(&query).await else {
                return self.follow_waiting(id, on_change).await;
            };
            while let Ok(Some(event)) = stream.next().await {
                last = event.id.or(last);
                if job.apply(&event) {
                    on_change(&job);
                }
                if job.is_finished() {
                    return self.job(id).await;
                }
            }
            // The stream ended (the server stopped, or this client lagged): resume after the
            // last event seen; a server that is gone sends us to the fallback.
        }
    }

    /// Follows job `id` with `GET /api/jobs/<id>/wait`, for a server without event streams:
    /// only the job's end is seen.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn follow_waiting(
        &self,
        id: &str,
        mut on_change: impl FnMut(&JobView),
    ) -> Result<JobView, ClientError> {
        loop {
            let path = format!("/api/jobs/{id}/wait?timeout=30");
            let job: JobView = self.send(self.request(reqwest::Method::GET, &path)).await?;
            on_change(&job);
            if job.is_finished() {
                return Ok(job);
            }
        }
    }
}

impl StepView {
    fn pending(name: &str) -> Self {
        Self {
            name: name.to_string(),
            state: "pending".into(),
            started_at: None,
            finished_at: None,
            error: None,
            undo_error: None,
        }
    }

    fn reset(&mut self) {
        *self = Self::pending(&self.name);
    }
}

impl JobView {
    /// Applies a `job` or `step` event of this job; returns whether the view changed.
    pub fn apply(&mut self, event: &ServerEvent) -> bool {
        let data = event.json();
        let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
        if text("job_id").as_deref() != Some(self.id.as_str()) {
            return false;
        }
        let Some(state) = text("state") else {
            return false;
        };
        match event.event.as_str() {
            "job" => {
                if state == "queued" {
                    // Queued again after an interruption: its steps start over.
                    self.steps.iter_mut().for_each(StepView::reset);
                }
                self.state = state;
                self.error = text("error");
                true
            }
            "step" => {
                let Some(name) = text("step") else {
                    return false;
                };
                let idx = match self.steps.iter().position(|s| s.name == name) {
                    Some(i) => i,
                    None => {
                        self.steps.push(StepView::pending(&name));
                        self.steps.len() - 1
                    }
                };
                let step = &mut self.steps[idx];
                let at = text("at");
                match state.as_str() {
                    "running" => step.started_at = at,
                    "done" | "failed" => step.finished_at = at,
                    "undo_failed" => {
                        step.undo_error = text("error");
                        return true;
                    }
                    "undoing" => return false,
                    _ => {}
                }
                if state == "failed" {
                    step.error = text("error");
                }
                step.state = state;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_parse_whole() {
        let text = b": keep-alive\n\nid: 7\nevent: step\ndata: {\"a\":1}\n\nid:8\nevent:job\ndata:x\ndata:y\r\n\r\n";
        for cut in 0..text.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&text[..cut]);
            got.extend(p.push(&text[cut..]));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].id, Some(7));
            assert_eq!(
                (got[0].event.as_str(), got[0].data.as_str()),
                ("step", "{\"a\":1}")
            );
            assert_eq!((got[1].id, got[1].data.as_str()), (Some(8), "x\ny"));
        }
    }

    fn view() -> JobView {
        JobView {
            id: "j1".into(),
            kind: "create".into(),
            container_id: Some(5),
            state: "queued".into(),
            steps: vec![StepView::pending("create_container")],
            error: None,
        }
    }

    fn event(kind: &str, data: Value) -> ServerEvent {
        ServerEvent {
            id: Some(1),
            event: kind.into(),
            data: data.to_string(),
        }
    }

    #[test]
    fn a_view_follows_its_own_events_only() {
        let mut job = view();
        assert!(!job.apply(&event(
            "job",
            serde_json::json!({"job_id": "j2", "state": "running"})
        )));
        assert!(job.apply(&event(
            "job",
            serde_json::json!({"job_id": "j1", "state": "running"})
        )));
        let failed = serde_json::json!({"job_id": "j1", "step": "create_container", "state": "failed", "error": "boom"});
        assert!(job.apply(&event("step", failed)));
        assert_eq!(job.steps[0].error.as_deref(), Some("boom"));
        let undone =
            serde_json::json!({"job_id": "j1", "step": "create_container", "state": "undone"});
        assert!(job.apply(&event("step", undone)));
        assert_eq!(job.steps[0].state, "undone");
        let end = serde_json::json!({"job_id": "j1", "state": "failed", "error": "boom"});
        assert!(job.apply(&event("job", end)));
        assert!(job.is_finished());
        let requeued = serde_json::json!({"job_id": "j1", "state": "queued"});
        job.apply(&event("job", requeued));
        assert_eq!(job.steps[0].state, "pending");
    }
}
