//! The rules of each IAM resource, as methods on [`App`](crate::App). Each method checks its
//! input and the caller's permission before anything is written, so a refused request changes
//! nothing.

pub(crate) mod account_keys;
pub(crate) mod certificates;
pub(crate) mod clusters;
pub(crate) mod policies;
pub(crate) mod pools;
pub(crate) mod projects;
pub(crate) mod providers;
pub(crate) mod service_accounts;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

/// Now, as the store keeps times.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    wid_api::time::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// A fresh opaque etag: base64 of 8 random bytes, shaped like Google's. Etags are bytes in
/// Google's APIs, and gcloud hands them back in the URL-safe alphabet; drawing etags whose
/// encoding has no `+` or `/` makes both alphabets spell them alike.
pub(crate) fn new_etag() -> String {
    loop {
        let etag = base64::engine::general_purpose::STANDARD
            .encode(wid_runtime::secrets::random_bytes::<8>());
        if !etag.contains(['+', '/']) {
            return etag;
        }
    }
}

/// An etag as a client sent it, in the standard alphabet with padding, whichever base64
/// alphabet and padding the client used.
pub(crate) fn canonical_etag(etag: &str) -> String {
    let mut out: String = etag
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// Checks a free-text field's length in characters.
pub(crate) fn check_len(
    field: &str,
    value: &str,
    max: usize,
) -> Result<(), crate::error::ApiError> {
    if value.chars().count() > max {
        return Err(crate::error::ApiError::invalid(
            field,
            format!("{field} must be at most {max} characters."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_read_alike_in_both_alphabets() {
        for _ in 0..200 {
            let e = new_etag();
            assert!(!e.contains(['+', '/']));
            assert_eq!(canonical_etag(&e), e);
        }
        assert_eq!(canonical_etag("PBMw-Juk9P8="), "PBMw+Juk9P8=");
        assert_eq!(canonical_etag("PBMw-Juk9P8"), "PBMw+Juk9P8=");
        assert_eq!(canonical_etag("ACAB"), "ACAB");
    }
}
