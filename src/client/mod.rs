//! The HTTP client behind the `create`, `destroy`, `start`, `stop`, `restart`, `list`, `info`,
//! `reconcile`, `jobs` and `job` subcommands: one sentence for every way a call can fail, never
//! a stack trace. `render.rs` shows a job's steps live; `tables.rs` the rest; `tls.rs` what an
//! `https://` server's certificate is checked against and the sentences when that fails.

pub mod events;
pub mod render;
pub mod tables;
pub mod tls;

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Why a call failed, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there.
    #[error("cannot reach the creepy-meow server at {0}: is `creepy-meow serve` running? (set --server or CREEPY_MEOW_SERVER)")]
    Unreachable(String),
    /// No answer in time.
    #[error("the server at {0} did not answer in time")]
    Timeout(String),
    /// The TLS handshake failed: most often a certificate this client does not trust. Never
    /// retried: another try meets the same certificate.
    #[error("{0}")]
    Tls(String),
    /// What the command was given cannot be used: a server URL that is not http(s), a CA file
    /// that cannot be read.
    #[error("{0}")]
    Setup(String),
    /// 401.
    #[error("the server refused the token: {0} (pass --token-file or set CREEPY_MEOW_TOKEN)")]
    Unauthorized(String),
    /// Any other 4xx/5xx, with the server's sentence.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's machine word.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// Anything else (bad URL, unreadable answer).
    #[error("{0}")]
    Other(String),
}

/// A step as the API reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct StepView {
    /// Step name.
    pub name: String,
    /// pending, running, done, failed, undone.
    pub state: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Why its undo failed.
    pub undo_error: Option<String>,
}

/// A job as the API reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct JobView {
    /// Job ID.
    pub id: String,
    /// create, destroy, start, stop, restart, repair or build_image.
    pub kind: String,
    /// The container; none for an image build.
    #[serde(default)]
    pub container_id: Option<u64>,
    /// queued, running, succeeded, failed, cancelled.
    pub state: String,
    /// The steps.
    #[serde(default)]
    pub steps: Vec<StepView>,
    /// Why it failed.
    pub error: Option<String>,
}

impl JobView {
    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// How many times a request that makes a job is sent when its answer is lost.
pub const JOB_TRIES: u32 = 3;
/// The pause before the second try; it doubles before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long an answer may stay silent before the client calls it broken: an event stream's
/// server sends a keep-alive comment every 15 s; a `/wait` the client asks for lasts 30 s.
const SILENCE: Duration = Duration::from_secs(45);
/// How long a request other than an event stream may take, whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// A client of one server.
pub struct ApiClient {
    /// The HTTP client, with its TLS trust (built once: an `https://` server without
    /// `--cacert` means reading the system's roots).
    http: reqwest::Client,
    /// The server's URL, without a trailing slash.
    base: String,
    /// The bearer token, if any.
    token: Option<String>,
    /// Whether `--cacert` replaced the system's roots (for the sentence when trust fails).
    with_ca: bool,
}

impl ApiClient {
    /// A client for `base` (such as `http://127.0.0.1:8080`, or `https://...`), sending `token`
    /// if given. An `https://` server's certificate is checked against the CAs in `ca_file`
    /// only, when given, else against the system's roots.
    ///
    /// # Errors
    /// [`ClientError::Setup`] when `base` is not an http(s) URL or `ca_file` holds no CA.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Setup(format!(
                "the server {base:?} is not an http:// or https:// URL"
            )));
        }
        let only_cas = match ca_file {
            Some(path) => Some(tls::read_ca(path).map_err(ClientError::Setup)?),
            // Plain HTTP trusts no CA: the system's roots are not loaded (a machine without
            // them still reaches its daemon, and no command pays for reading them).
            None if base.starts_with("http://") => Some(Vec::new()),
            None => None,
        };
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(SILENCE);
        let builder = match only_cas {
            Some(cas) => builder.tls_certs_only(cas),
            None => builder,
        };
        let http = builder.build().map_err(|e| {
            ClientError::Setup(format!(
                "cannot check the certificate of {base}: {} (install the system's CA certificates, package ca-certificates, or pass --cacert FILE)",
                tls::innermost(&e)
            ))
        })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            with_ca: ca_file.is_some(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.stream_request(method, path).timeout(REQUEST_TIMEOUT)
    }

    /// A request whose answer may last (an event stream): no limit on the whole, only on
    /// silence.
    fn stream_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.request(method, format!("{}{path}", self.base)))
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// What a request that got no answer tells the person at the terminal.
    fn failed(&self, e: &reqwest::Error) -> ClientError {
        if let Some(tls) = tls::rustls_cause(e) {
            return ClientError::Tls(tls::sentence(&self.base, tls, self.with_ca));
        }
        if e.is_connect() {
            return ClientError::Unreachable(self.base.clone());
        }
        if e.is_timeout() {
            return ClientError::Timeout(self.base.clone());
        }
        // reqwest's own words name only the URL; the innermost cause says what happened.
        let cause = tls::innermost(e);
        let hint = if self.base.starts_with("http://") {
            " (if it serves HTTPS, use an https:// URL)"
        } else {
            ""
        };
        ClientError::Other(format!(
            "the request to {} failed: {cause}{hint}",
            self.base
        ))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.response(req).await?;
        let body: Value = resp.json().await.map_err(|e| {
            ClientError::Other(format!("the server sent an answer that is not JSON: {e}"))
        })?;
        serde_json::from_value(body)
            .map_err(|e| ClientError::Other(format!("unexpected answer from the server: {e}")))
    }

    /// Sends `req`; a successful answer is returned as it is, any other becomes its error.
    async fn response(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| self.failed(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized(text("error")));
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            code: text("code"),
            message: text("error"),
        })
    }

    /// `POST /api/container/create` (form-encoded, as the original tool's clients send it).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn create(
        &self,
        id: u64,
        vlan: u64,
        ip: &str,
        gateway: Option<&str>,
        template: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut form = vec![
            ("id", id.to_string()),
            ("vlan", vlan.to_string()),
            ("ip", ip.to_string()),
        ];
        if let Some(g) = gateway {
            form.push(("gateway", g.to_string()));
        }
        if let Some(t) = template {
            form.push(("template", t.to_string()));
        }
        self.send_job(
            self.request(reqwest::Method::POST, "/api/container/create")
                .form(&form),
        )
        .await
    }

    /// `DELETE /api/container/<ID>`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn destroy(&self, id: u64) -> Result<Value, ClientError> {
        self.send_job(self.request(reqwest::Method::DELETE, &format!("/api/container/{id}")))
            .await
    }

    /// `POST /api/container/<ID>/<verb>`, where `verb` is `start`, `stop` or `restart`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn lifecycle(&self, id: u64, verb: &str) -> Result<Value, ClientError> {
        let path = format!("/api/container/{id}/{verb}");
        self.send_job(self.request(reqwest::Method::POST, &path))
            .await
    }

    /// `POST /api/images/<template>/build`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn build_image(&self, template: &str) -> Result<Value, ClientError> {
        let path = format!("/api/images/{template}/build");
        self.send_job(self.request(reqwest::Method::POST, &path))
            .await
    }

    /// Sends `req`, which makes a job, with a fresh `Idempotency-Key`; when the answer is lost
    /// on the way (no connection, a timeout, a broken answer) it is sent again with the same
    /// key, [`JOB_TRIES`] times at most: the server answers the job the first try made, never
    /// a second job.
    async fn send_job(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let req = req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        let mut pause = RETRY_PAUSE;
        for _ in 1..JOB_TRIES {
            let Some(this) = req.try_clone() else { break };
            match self.send(this).await {
                Err(
                    ClientError::Unreachable(_) | ClientError::Timeout(_) | ClientError::Other(_),
                ) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                answer => return answer,
            }
        }
        self.send(req).await
    }

    /// `POST` of any API path, without a body, as JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::POST, path)).await
    }

    /// `GET` of any API path, as JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `GET /api/jobs/<id>` as a [`JobView`].
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.send(self.request(reqwest::Method::GET, &format!("/api/jobs/{id}")))
            .await
    }
}
