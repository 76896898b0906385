//! `/api/images`: the images containers are cloned from, and building a new version (202 +
//! job).

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use super::{idempotency, json_reply, AppState, Request};

/// `GET /api/images`: how containers are made here (`overlay`, `copy`, or `off`), and every
/// template offered with its image versions (size on disk, clones).
pub async fn list(state: &AppState) -> Result<Response, ApiError> {
    let Some(images) = state.engine.images() else {
        return Ok(json_reply(
            StatusCode::OK,
            &json!({ "clone": "off", "fallback_reason": null, "images": [] }),
        ));
    };
    let report = images
        .report()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the images: {e}")))?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "clone": images.clone_mode(),
            "fallback_reason": images.fallback(),
            "images": report,
        }),
    ))
}

/// `POST /api/images/<name>/build`: queues a build of a new version of template `name`'s
/// image. 404 for a template not offered, 409 while a build of it is pending or when images
/// are off (`serve --clone=off`).
pub async fn build(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    if state.engine.images().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "images_off",
            "images are off on this server (serve --clone=off): containers are made by their template",
        ));
    }
    let templates = state.engine.host().lxc.templates();
    if let Err(why) = templates.resolve(Some(name)) {
        return Err(ApiError::not_found(why));
    }
    let key = idempotency::key(req, String::new)?;
    let done = state
        .store
        .enqueue_build_image_keyed(name.to_string(), key)
        .await?;
    state.control.wake_worker();
    state.control.job_changed();
    Ok(idempotency::answer(&done, json!({ "template": name })))
}
