//! API errors: one type, one JSON shape (`{"error": sentence, "code": word, ...}`), and the
//! status each kind earns. A client's mistake is never a 500.

use serde_json::json;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::Reply;

use crate::cluster::ClusterError;
use crate::engine::EngineError;
use crate::queue::{Conflict, QueueError};

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable word.
    pub code: &'static str,
    /// A sentence for a person.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<&'static str>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 for a bad value of `field`.
    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_field", message)
        }
    }

    /// 400 for a malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 `storage_unavailable`: the job store cannot write now; logged.
    pub fn storage_unavailable(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::warn!(error = %message, "answered 503: the job store cannot write");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            message,
        )
    }

    /// 500 for our own faults (storage, host), logged.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "internal error answered with 500");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        let mut resp =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp = with_retry_after(resp);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// `resp` with `Retry-After: 5`, the pause every 503 asks for (the store probes its disk every
/// second, a full queue drains in seconds).
pub fn with_retry_after(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    resp
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Conflict(c @ Conflict::BeingAccepted(_)) => {
                Self::new(StatusCode::CONFLICT, "not_cancellable", c.to_string())
            }
            QueueError::Conflict(c) => Self::new(StatusCode::CONFLICT, "conflict", c.to_string()),
            QueueError::NotFound(m) => Self::not_found(m),
            QueueError::QueueFull { max } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("the queue is full ({max} jobs waiting); retry later"),
            ),
            e @ QueueError::KeyReused { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                e.to_string(),
            ),
            e @ QueueError::NotCancellable { .. } => {
                Self::new(StatusCode::CONFLICT, "not_cancellable", e.to_string())
            }
            // A storage fault is the machine's, not a bug: the request may succeed once the
            // disk takes writes again (issue 17), and nothing of it was kept.
            QueueError::Unavailable(m) | QueueError::Storage(m) | QueueError::ReadOnly(m) => {
                Self::storage_unavailable(m)
            }
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Held(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ClusterError::Unavailable(m) | ClusterError::Refused(m) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("the cluster's etcd cannot be reached (creates are refused until it answers): {m}"),
            ),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid { field, message } => Self::invalid_field(field.as_str(), message),
            EngineError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            other => Self::internal(other.to_string()),
        }
    }
}
