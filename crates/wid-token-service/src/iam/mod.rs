//! The rules of each IAM resource, as methods on [`App`](crate::App). Each method checks its
//! input and the caller's permission before anything is written, so a refused request changes
//! nothing.

pub(crate) mod clusters;
pub(crate) mod policies;
pub(crate) mod pools;
pub(crate) mod projects;
pub(crate) mod service_accounts;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

/// Now, as the store keeps times.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    wid_api::time::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A fresh opaque etag: base64 of 8 random bytes, shaped like Google's.
pub(crate) fn new_etag() -> String {
    base64::engine::general_purpose::STANDARD.encode(wid_runtime::secrets::random_bytes::<8>())
}

/// Checks a free-text field's length in characters.
pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), crate::error::ApiError> {
    if value.chars().count() > max {
        return Err(crate::error::ApiError::invalid(
            field,
            format!("{field} must be at most {max} characters."),
        ));
    }
    Ok(())
}
