//! Request and response plumbing: bodies with a size limit, JSON parsing that names the bad
//! field, query strings, and JSON responses.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies are refused above this size.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

pub fn ok(value: &impl Serialize) -> Response {
    json_response(StatusCode::OK, value)
}

/// An oversized body is read and dropped up to this size before the refusal is sent, so that
/// the client, still sending, gets the answer instead of a reset connection.
const MAX_DRAINED_BYTES: usize = 16 * MAX_BODY_BYTES;

/// Reads a body of at most [`MAX_BODY_BYTES`].
pub async fn read_body(mut body: Body) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || ApiError::InvalidArgument {
        field: None,
        message: format!("Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."),
    };
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::InvalidArgument {
            field: None,
            message: format!("Cannot read the request body: {e}"),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > MAX_DRAINED_BYTES {
            return Err(too_large());
        }
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(kept.into())
}

/// Undoes the request's `Content-Encoding`: Google's Java clients gzip request bodies by
/// default. The size limit applies to the decoded body.
pub fn decode_body(
    encoding: Option<&str>,
    body: axum::body::Bytes,
) -> Result<axum::body::Bytes, ApiError> {
    use std::io::Read;
    match encoding.map(str::trim).filter(|e| !e.is_empty()) {
        None | Some("identity") => Ok(body),
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => {
            let mut out = Vec::new();
            let limit = u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX) + 1;
            flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::InvalidArgument {
                    field: None,
                    message: format!("Cannot decode the gzip request body: {e}"),
                })?;
            if out.len() > MAX_BODY_BYTES {
                return Err(ApiError::InvalidArgument {
                    field: None,
                    message: format!(
                        "Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."
                    ),
                });
            }
            Ok(out.into())
        }
        Some(other) => Err(ApiError::InvalidArgument {
            field: None,
            message: format!(
                "Content-Encoding '{other}' is not supported; send the body plain or gzip-compressed."
            ),
        }),
    }
}

/// Parses a JSON body; an empty body is `{}`, as for gcloud's body-less POSTs. Errors name the
/// field at fault, as Google's "Invalid JSON payload received" errors do. A key twice in any
/// object is refused: serde derive refuses a struct field twice, but map fields (bindings,
/// attribute mappings, bare objects) would keep the last value silently.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // The typed parse first, for its errors that name the field; then the keys.
    let value = parse_typed(bytes)?;
    wid_api::json::check_unique_keys(bytes).map_err(|e| ApiError::InvalidArgument {
        field: None,
        message: format!("Invalid JSON payload received. {e}"),
    })?;
    Ok(value)
}

fn parse_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("Invalid JSON payload received. {inner}")
        } else {
            format!("Invalid JSON payload received at '{path}': {inner}")
        };
        ApiError::InvalidArgument {
            field: (path != ".").then_some(path),
            message,
        }
    })
}

/// The query string as pairs; a malformed one is refused.
pub fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or_default()).map_err(|e| ApiError::InvalidArgument {
        field: None,
        message: format!("Invalid query string: {e}"),
    })
}

/// The value of query parameter `name`, if given.
pub fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// What a request carries besides its operation: its query and its body (decoded).
pub struct Input {
    pub query: Vec<(String, String)>,
    pub body: axum::body::Bytes,
}

impl Input {
    /// The value of query parameter `name`, if given.
    pub fn query(&self, name: &str) -> Option<&str> {
        query_value(&self.query, name)
    }

    /// Every value of a repeated query parameter (`?keyTypes=A&keyTypes=B`).
    pub fn query_all(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON of type `T` ([`parse_json`]).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_json(&self.body)
    }

    /// The body of a method that takes none but `{}`: anything in it is refused, as Google
    /// refuses unknown fields.
    pub fn empty_object(&self) -> Result<(), ApiError> {
        let fields: serde_json::Map<String, serde_json::Value> = self.json()?;
        match fields.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::invalid(
                name,
                format!(
                    "Invalid JSON payload received. Unknown name \"{name}\": this method takes an empty body."
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        display_name: String,
    }

    fn message(r: Result<Outer, ApiError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(v) => panic!("parsed {v:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert!(
            message(parse_json(br#"{"inner": {"displayName": 5}}"#)).contains("inner.displayName")
        );
        assert!(message(parse_json(br#"{"inner": {"bogus": 1}}"#)).contains("bogus"));
        assert!(message(parse_json(b"{not json")).contains("Invalid JSON payload"));
        assert!(parse_json::<Outer>(b"  ").is_ok());
    }

    /// serde derive refuses a struct field twice, but not a key twice inside a map field.
    #[test]
    fn duplicate_keys_are_refused_in_map_fields_too() {
        type Mapping = std::collections::BTreeMap<String, String>;
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Provider {
            mapping: Mapping,
        }
        let ok: Result<Provider, _> = parse_json(br#"{"mapping": {"a": "1", "b": "2"}}"#);
        assert!(ok.is_ok());
        for body in [
            &br#"{"mapping": {"google.subject": "assertion.sub", "google.subject": "'admin'"}}"#[..],
            br#"{"mapping": {"a": "1", "\u0061": "2"}}"#,
        ] {
            let error = parse_json::<Provider>(body)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(
                error
                    .as_ref()
                    .is_err_and(|e| e.contains("Invalid JSON payload received")
                        && e.contains("duplicate key")),
                "{error:?}"
            );
        }
        let map: Result<serde_json::Map<String, serde_json::Value>, _> =
            parse_json(br#"{"etag": "a", "etag": "b"}"#);
        assert!(map.is_err());
    }
}
