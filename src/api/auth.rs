//! Bearer-token check, in constant time so the comparison leaks nothing of the token.

use warp::http::{HeaderMap, StatusCode};

use super::error::ApiError;

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `Authorization: Bearer <token>` when a token is configured.
///
/// # Errors
/// 401 when the header is missing or the token is wrong.
pub fn check(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(warp::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs a token: send Authorization: Bearer <token>",
        )),
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is wrong",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let mut h = HeaderMap::new();
        assert!(check(None, &h).is_ok());
        assert_eq!(check(Some("s3cret"), &h).unwrap_err().status, 401);
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            check(Some("s3cret"), &h).unwrap_err().message,
            "the token is wrong"
        );
        h.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert!(check(Some("s3cret"), &h).is_ok());
    }
}
