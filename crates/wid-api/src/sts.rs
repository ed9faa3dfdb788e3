//! The Security Token Service (RFC 8693 token exchange, RFC 7662 introspection) as Google's
//! `sts.googleapis.com` speaks it: form-encoded requests, OAuth-shaped errors.

use serde::{Deserialize, Serialize};

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// A token-exchange request, from either body encoding: the form with snake_case keys that
/// google-auth, gcloud, Go and Rust send, or the JSON with camelCase keys that discovery-based
/// clients send. Unknown fields are ignored, as RFC 6749 asks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ExchangeRequest {
    #[serde(default, alias = "grantType")]
    pub grant_type: String,
    #[serde(default)]
    pub audience: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default, alias = "requestedTokenType")]
    pub requested_token_type: String,
    #[serde(default, alias = "subjectToken")]
    pub subject_token: String,
    #[serde(default, alias = "subjectTokenType")]
    pub subject_token_type: String,
    #[serde(default)]
    pub options: String,
}

impl ExchangeRequest {
    /// Parses a form body. Repeated fields keep their first value.
    pub fn from_form(body: &[u8]) -> Result<ExchangeRequest, String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
            format!("the body is not a valid form (application/x-www-form-urlencoded): {e}")
        })?;
        let mut request = ExchangeRequest::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "grant_type" => &mut request.grant_type,
                "audience" => &mut request.audience,
                "scope" => &mut request.scope,
                "requested_token_type" => &mut request.requested_token_type,
                "subject_token" => &mut request.subject_token,
                "subject_token_type" => &mut request.subject_token_type,
                "options" => &mut request.options,
                _ => continue,
            };
            if slot.is_empty() {
                *slot = value;
            }
        }
        Ok(request)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExchangeResponse {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    /// An integer: Go and Rust clients reject a string, and Python crashes without it.
    pub expires_in: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

/// RFC 6749 section 5.2 error body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// RFC 7662 introspection answer; times are int64 rendered as strings, as Google's STS does.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IntrospectResponse {
    pub active: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iat: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exp: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_in_any_order_with_extras() {
        let r = ExchangeRequest::from_form(
            b"subject_token=a.b.c%0A&audience=identitynamespace%3Ap.svc.id.goog%3Ahttps%3A%2F%2Fk8s&extra=1&grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&scope=a+b",
        )
        .expect("form");
        assert_eq!(r.subject_token, "a.b.c\n");
        assert_eq!(r.audience, "identitynamespace:p.svc.id.goog:https://k8s");
        assert_eq!(r.grant_type, GRANT_TYPE_TOKEN_EXCHANGE);
        assert_eq!(r.scope, "a b");
        // Lenient like other servers: a stray '%' stays literal.
        assert_eq!(
            ExchangeRequest::from_form(b"audience=%zz").map(|r| r.audience),
            Ok("%zz".to_owned())
        );
    }
}
