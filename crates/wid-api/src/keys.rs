//! wid's admin resources for its signing keys and audit records.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyInfo {
    pub kid: String,
    pub algorithm: String,
    /// `ACTIVE` (signs new tokens) or `PUBLISHED` (rotated out, verifying until it retires).
    pub state: String,
    pub create_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rotate_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retire_time: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListSigningKeysResponse {
    #[serde(default)]
    pub keys: Vec<SigningKeyInfo>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSigningKeysRequest {
    /// `RS256`, `ES256`, or empty for both.
    #[serde(default)]
    pub algorithm: String,
}

/// One audit record: who did what with which identity, never the token itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub time: String,
    /// `token_exchange`, `generate_access_token`, `generate_id_token`, `sign_blob`, `sign_jwt`.
    pub action: String,
    pub caller: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_id: String,
    /// `GRANTED` or `DENIED`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListAuditEventsResponse {
    #[serde(default)]
    pub events: Vec<AuditEvent>,
}
