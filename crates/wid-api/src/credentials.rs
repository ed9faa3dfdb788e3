//! The IAM Service Account Credentials API (`iamcredentials.googleapis.com` v1).
//!
//! Requests tolerate unknown fields and booleans sent as strings: Node's google-auth-library
//! adds `useEmailAzp`, and Python's `_client` sends `"includeEmail": "true"`.

use serde::{Deserialize, Deserializer, Serialize};

/// A boolean, or the strings `"true"` and `"false"`.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
        Null(()),
    }
    match Option::<Flag>::deserialize(d)? {
        None | Some(Flag::Null(())) => Ok(false),
        Some(Flag::Bool(b)) => Ok(b),
        Some(Flag::Text(t)) if t.eq_ignore_ascii_case("true") => Ok(true),
        Some(Flag::Text(t)) if t.eq_ignore_ascii_case("false") || t.is_empty() => Ok(false),
        Some(Flag::Text(t)) => Err(serde::de::Error::custom(format!(
            "expected a boolean, not \"{t}\""
        ))),
    }
}

/// `delegates` arrives as an array, as JSON `null` (google-auth), or not at all (Go).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateAccessTokenRequest {
    #[serde(default)]
    pub delegates: Option<Vec<String>>,
    #[serde(default)]
    pub scope: Option<Vec<String>>,
    #[serde(default)]
    pub lifetime: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateAccessTokenResponse {
    pub access_token: String,
    /// `YYYY-MM-DDTHH:MM:SSZ`: Python parses it with a strict format.
    pub expire_time: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateIdTokenRequest {
    #[serde(default)]
    pub delegates: Option<Vec<String>>,
    #[serde(default)]
    pub audience: String,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub include_email: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub organization_number_included: bool,
    /// Node's google-auth-library sets it: `azp` becomes the account's email.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub use_email_azp: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GenerateIdTokenResponse {
    pub token: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignBlobRequest {
    #[serde(default)]
    pub delegates: Option<Vec<String>>,
    /// Standard base64.
    #[serde(default)]
    pub payload: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignBlobResponse {
    pub key_id: String,
    pub signed_blob: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignJwtRequest {
    #[serde(default)]
    pub delegates: Option<Vec<String>>,
    /// The JWT claims set, as a JSON string.
    #[serde(default)]
    pub payload: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignJwtResponse {
    pub key_id: String,
    pub signed_jwt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_token_requests_of_every_client() {
        let node: GenerateIdTokenRequest = serde_json::from_str(
            r#"{"delegates":[],"audience":"a","includeEmail":true,"useEmailAzp":true}"#,
        )
        .expect("node");
        assert!(node.include_email && node.use_email_azp);
        let python: GenerateIdTokenRequest =
            serde_json::from_str(r#"{"audience":"a","includeEmail":"true","useEmailAzp":"true"}"#)
                .expect("python");
        assert!(python.include_email && python.use_email_azp);
        let plain: GenerateIdTokenRequest =
            serde_json::from_str(r#"{"audience":"a","delegates":null}"#).expect("plain");
        assert!(!plain.include_email);
        assert!(
            serde_json::from_str::<GenerateIdTokenRequest>(
                r#"{"audience":"a","includeEmail":"maybe"}"#
            )
            .is_err()
        );
    }
}
