//! The `Idempotency-Key` request header: read and checked here, and the answer to a request
//! that made a job — `202` for a job made now, `200` with `Idempotent-Replayed: true` and the
//! job's current state for a retry that found the job its key made before.

use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::{json_reply, Request};
use crate::queue::{Enqueued, IdempotencyKey};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The answer's header on a replay.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key.
const MAX_LEN: usize = 255;

/// The request's idempotency key, if it sent one, fingerprinted with `request()` (what the
/// request asks, as parsed: the same create sent as a form or as JSON matches; made only when
/// there is a key).
///
/// # Errors
/// 400 `invalid_header` when the key is empty, longer than 255 bytes, not printable ASCII, or
/// sent twice.
pub fn key(
    req: &Request,
    request: impl FnOnce() -> String,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        ApiError::bad_request(
            "invalid_header",
            format!("Idempotency-Key: {why}; send 1 to {MAX_LEN} printable ASCII characters"),
        )
    };
    if values.next().is_some() {
        return Err(invalid("sent more than once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_LEN {
        return Err(invalid(&format!("{} bytes", bytes.len())));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(invalid("not printable ASCII"));
    }
    Ok(Some(IdempotencyKey {
        key: String::from_utf8_lossy(bytes).into_owned(),
        fingerprint: format!(
            "{} {} {}",
            req.method,
            req.path.trim_end_matches('/'),
            request()
        ),
    }))
}

/// The answer to a request that made (or found again) a job: `Location: /api/jobs/<id>` and
/// the job's essentials (`id`: its container's, when it has one), with `extra` fields.
pub fn answer(done: &Enqueued, extra: serde_json::Value) -> Response {
    let job = &done.job;
    let location = format!("/api/jobs/{}", job.id);
    let mut body = json!({
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "location": location,
    });
    if let Some(id) = job.container_id {
        body["id"] = json!(id);
    }
    if let (Some(b), serde_json::Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    let status = if done.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = json_reply(status, &body);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if done.replayed {
        resp.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::{HeaderMap, Method};

    fn req(keys: &[&[u8]]) -> Request {
        let mut headers = HeaderMap::new();
        for k in keys {
            headers.append(HEADER, HeaderValue::from_bytes(k).unwrap());
        }
        Request {
            method: Method::POST,
            path: "/api/container/create/".into(),
            query: String::new(),
            headers,
        }
    }

    #[test]
    fn a_key_is_1_to_255_printable_ascii_characters_sent_once() {
        let x = || "x".to_string();
        assert_eq!(key(&req(&[]), x).unwrap(), None);
        let k = key(&req(&[b"retry-7 a"]), || "{\"id\":5}".into())
            .unwrap()
            .unwrap();
        assert_eq!(k.key, "retry-7 a");
        assert_eq!(k.fingerprint, "POST /api/container/create {\"id\":5}");
        assert!(key(&req(&[&[b'a'; 255]]), x).is_ok());
        for bad in [&[b'a'; 256][..], b"caf\xc3\xa9", b"tab\there"] {
            let e = key(&req(&[bad]), x).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (400, "invalid_header"),
                "{bad:?}"
            );
        }
        let e = key(&req(&[b"a", b"b"]), x).unwrap_err();
        assert_eq!(e.code, "invalid_header");
    }
}
