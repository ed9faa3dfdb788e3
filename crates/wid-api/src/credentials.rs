//! The IAM Service Account Credentials API (`iamcredentials.googleapis.com` v1).

use serde::{Deserialize, Serialize};

/// `delegates` arrives as an array, as JSON `null` (google-auth), or not at all (Go).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateIdTokenRequest {
    #[serde(default)]
    pub delegates: Option<Vec<String>>,
    #[serde(default)]
    pub audience: String,
    #[serde(default)]
    pub include_email: bool,
    #[serde(default)]
    pub organization_number_included: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GenerateIdTokenResponse {
    pub token: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
