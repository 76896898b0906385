//! Turning a create request body into a [`CreateSpec`], form-encoded (the original tool's
//! `curl --data "id=5&vlan=2&ip=192.168.2.5/24"`) or JSON, with an error that names the field.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;
use crate::model::{ContainerId, Ipv4Cidr, VlanId};
use crate::spec::CreateSpec;

/// Fields a create request may carry.
const FIELDS: [&str; 5] = ["id", "vlan", "ip", "gateway", "template"];

/// The body formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded` (curl --data's default).
    Form,
    /// `application/json`.
    Json,
}

impl BodyFormat {
    /// The format named by a Content-Type header.
    ///
    /// # Errors
    /// 415 for any other content type.
    pub fn from_content_type(ct: Option<&str>) -> Result<Self, ApiError> {
        let mime = ct
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-www-form-urlencoded" => Ok(Self::Form),
            "application/json" => Ok(Self::Json),
            _ => Err(ApiError::new(
                warp::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {:?} is not supported; send application/x-www-form-urlencoded or application/json",
                    ct.unwrap_or("(none)")
                ),
            )),
        }
    }
}

/// Reads the fields as text, refusing unknown and repeated ones.
fn fields(format: BodyFormat, body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = match format {
        BodyFormat::Form => serde_urlencoded::from_bytes(body).map_err(|e| {
            ApiError::bad_request(
                "malformed_body",
                format!("the form body cannot be read: {e}"),
            )
        })?,
        BodyFormat::Json => json_pairs(body)?,
    };
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if !FIELDS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                "unknown_field",
                format!("unknown field {k:?}; allowed: {}", FIELDS.join(", ")),
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_request(
                "duplicate_field",
                format!("field {k:?} is given twice"),
            ));
        }
    }
    Ok(out)
}

fn json_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "malformed_body",
            format!("the JSON body cannot be read: {e}"),
        )
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "malformed_body",
            "the JSON body must be an object",
        ));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            other => Err(ApiError::bad_request(
                "malformed_body",
                format!("field {k:?} must be a number or a string, not {other}"),
            )),
        })
        .collect()
}

fn required<'a>(
    fields: &'a BTreeMap<String, String>,
    name: &'static str,
    example: &str,
) -> Result<&'a str, ApiError> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError {
            field: Some(name),
            ..ApiError::bad_request(
                "missing_field",
                format!("field {name:?} is required, like {name}={example}"),
            )
        })
}

/// Parses a create request body.
///
/// # Errors
/// 400 naming the field for missing, unknown, repeated or invalid fields; 400 for a body that
/// cannot be read at all.
pub fn parse_create(format: BodyFormat, body: &[u8]) -> Result<CreateSpec, ApiError> {
    let f = fields(format, body)?;
    let id: ContainerId = required(&f, "id", "5")?
        .parse()
        .map_err(|e: crate::model::InvalidValue| ApiError::invalid_field("id", e.0))?;
    let vlan: VlanId = required(&f, "vlan", "2")?
        .parse()
        .map_err(|e: crate::model::InvalidValue| ApiError::invalid_field("vlan", e.0))?;
    let ip: Ipv4Cidr = required(&f, "ip", "192.168.2.5/24")?
        .parse()
        .map_err(|e: crate::model::InvalidValue| ApiError::invalid_field("ip", e.0))?;
    let gateway = match f.get("gateway").map(|g| g.trim()).filter(|g| !g.is_empty()) {
        None => None,
        Some(g) => Some(g.parse().map_err(|_| {
            ApiError::invalid_field("gateway", format!("gateway {g:?} is not an IPv4 address"))
        })?),
    };
    // Whether the server offers it is the engine's check (`Engine::check_request`).
    let template = f
        .get("template")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(CreateSpec {
        id,
        vlan,
        ip,
        gateway,
        template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_curl_body_parses() {
        let s = parse_create(BodyFormat::Form, b"id=5&vlan=2&ip=192.168.2.5/24").unwrap();
        assert_eq!(
            (s.id.get(), s.vlan.get(), s.ip.to_string()),
            (5, 2, "192.168.2.5/24".into())
        );
        // curl does not percent-encode the slash; an encoded one parses too.
        let s = parse_create(BodyFormat::Form, b"id=5&vlan=2&ip=192.168.2.5%2F24").unwrap();
        assert_eq!(s.ip.prefix, 24);
    }

    #[test]
    fn json_with_numbers_and_a_gateway_parses() {
        let body = br#"{"id":7,"vlan":3,"ip":"192.168.3.7/24","gateway":"192.168.3.1"}"#;
        let s = parse_create(BodyFormat::Json, body).unwrap();
        assert_eq!(s.gateway, Some("192.168.3.1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str, Option<&str>); 7] = [
            (b"vlan=2&ip=192.168.2.5/24", "missing_field", Some("id")),
            (
                b"id=5&vlan=2&ip=192.168.2.5/24&color=red",
                "unknown_field",
                None,
            ),
            (
                b"id=x&vlan=2&ip=192.168.2.5/24",
                "invalid_field",
                Some("id"),
            ),
            (
                b"id=10000000&vlan=2&ip=192.168.2.5/24",
                "invalid_field",
                Some("id"),
            ),
            (
                b"id=5&vlan=300&ip=192.168.2.5/24",
                "invalid_field",
                Some("vlan"),
            ),
            (b"id=5&vlan=2&ip=192.168.2.5", "invalid_field", Some("ip")),
            (
                b"id=5&id=6&vlan=2&ip=192.168.2.5/24",
                "duplicate_field",
                None,
            ),
        ];
        for (body, code, field) in cases {
            let e = parse_create(BodyFormat::Form, body).unwrap_err();
            assert_eq!(
                (e.code, e.field),
                (code, field),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(e.status, 400);
        }
        let e = parse_create(BodyFormat::Json, b"[1,2]").unwrap_err();
        assert_eq!(e.code, "malformed_body");
        let e = parse_create(BodyFormat::Json, br#"{"id":true}"#).unwrap_err();
        assert_eq!(e.code, "malformed_body");
    }

    #[test]
    fn only_form_and_json_are_accepted() {
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("text/plain"))
                .unwrap_err()
                .status,
            415
        );
        assert_eq!(BodyFormat::from_content_type(None).unwrap_err().status, 415);
    }
}
