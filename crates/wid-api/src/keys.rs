//! wid's admin resources for its signing keys and audit records.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningKeyInfo {
    pub kid: String,
    /// `id_token`, `access_token` or `account_signing`.
    pub purpose: String,
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
    /// `RS256` (the ID-token and account-signing keys), `ES256` (the access-token key), a
    /// purpose (`id_token`, `access_token`, `account_signing`), or empty for all.
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
    /// `namespace/name (uid)` of the pod a token exchange was for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListAuditEventsResponse {
    #[serde(default)]
    pub events: Vec<AuditEvent>,
}
