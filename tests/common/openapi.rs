//! Checks real API responses against docs/openapi.json: the operation must exist, the status
//! must be documented for it, every header documented for that answer must be present, and a
//! JSON body must match the documented schema.

use std::collections::HashMap;
use std::sync::OnceLock;

use reqwest::header::HeaderMap;
use serde_json::{json, Value};

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json"))
            .expect("valid JSON")
    })
}

/// The documented path template matching `path`, literal segments preferred over parameters.
fn template(path: &str) -> Option<&'static str> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut best: Option<(&str, usize)> = None;
    for t in spec()["paths"].as_object().unwrap().keys() {
        let tsegs: Vec<&str> = t.split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let params = tsegs.iter().filter(|s| s.starts_with('{')).count();
        let fits = tsegs
            .iter()
            .zip(&segs)
            .all(|(t, s)| t.starts_with('{') || t == s);
        if fits && best.is_none_or(|(_, p)| params < p) {
            best = Some((t.as_str(), params));
        }
    }
    best.map(|(t, _)| t)
}

/// Follows a local `$ref`.
fn resolve(v: &'static Value) -> &'static Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(
            spec()
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}")),
        ),
        None => v,
    }
}

/// The validator of `schema_ref`, compiled once per test binary (compiling one takes about a
/// millisecond; an event stream test checks thousands of events).
fn validator(schema_ref: &str) -> std::sync::Arc<jsonschema::Validator> {
    type Cache = std::sync::Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(v) = cache.lock().unwrap().get(schema_ref) {
        return v.clone();
    }
    let mut root = spec().clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$ref"] = json!(schema_ref);
    let compiled = std::sync::Arc::new(
        jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {schema_ref}: {e}")),
    );
    cache
        .lock()
        .unwrap()
        .insert(schema_ref.to_string(), compiled.clone());
    compiled
}

fn validate(schema_ref: &str, body: &Value, what: &str) {
    let validator = validator(schema_ref);
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match docs/openapi.json: {errors:?}\nbody: {body}"
    );
}

/// Panics unless every header the document promises for this response is present.
fn documented_headers(resp: &Value, headers: &HeaderMap, what: &str) {
    for name in resp["headers"]
        .as_object()
        .into_iter()
        .flat_map(|h| h.keys())
    {
        assert!(
            headers.contains_key(name.as_str()),
            "{what}: header {name} is documented but missing; got {headers:?}"
        );
    }
}

/// Panics unless the response is what the document says `method path` answers.
pub fn conform(method: &str, path: &str, status: u16, headers: &HeaderMap, body: &Value) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let what = format!("{} {path} -> {status}", method.to_uppercase());
    let error_schema = "#/components/schemas/Error";
    let Some(t) = template(path) else {
        assert_eq!(status, 404, "{what}: undocumented path");
        return validate(error_schema, body, &what);
    };
    let Some(op) = spec()["paths"][t].get(method) else {
        assert_eq!(status, 405, "{what}: undocumented method");
        return validate(error_schema, body, &what);
    };
    let resp = op["responses"]
        .get(status.to_string())
        .map(resolve)
        .unwrap_or_else(|| panic!("{what}: status not documented for {t}"));
    documented_headers(resp, headers, &what);
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let content = resp["content"]
        .get(mime)
        .unwrap_or_else(|| panic!("{what}: content type {mime} not documented"));
    if mime == "application/json" {
        let ptr = format!(
            "/paths/{}/{method}/responses/{status}",
            t.replace('~', "~0").replace('/', "~1")
        );
        let schema_ref = match content["schema"].get("$ref").and_then(Value::as_str) {
            Some(r) => r.to_string(),
            None if op["responses"][status.to_string()].get("$ref").is_some() => {
                format!(
                    "{}/content/application~1json/schema",
                    op["responses"][status.to_string()]["$ref"]
                        .as_str()
                        .unwrap()
                )
            }
            None => format!("#{ptr}/content/application~1json/schema"),
        };
        validate(&schema_ref, body, &what);
    }
}

/// Panics unless an event of `GET /api/events` named `name` carries data of the documented
/// schema: `Event` for `job`, `step` and `container`, `StreamNotice` for `truncated` and
/// `lagged`.
pub fn conform_event(name: &str, data: &Value) {
    let schema = match name {
        "job" | "step" | "container" | "health" | "reconcile" => "#/components/schemas/Event",
        "truncated" | "lagged" => "#/components/schemas/StreamNotice",
        other => panic!("event {other:?} is not documented"),
    };
    validate(schema, data, &format!("event {name}"));
    if let Some(kind) = data.get("type") {
        assert_eq!(kind, name, "an event's type is its SSE name");
    }
}
