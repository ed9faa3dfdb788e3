//! Service-account keys (`projects.serviceAccounts.keys`), in the shape of IAM v1, and the key
//! file Google's clients read.

use serde::{Deserialize, Serialize};

/// A service-account key. `privateKeyData` only in the create response, `publicKeyData` only
/// in a get that asks for it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountKey {
    /// `projects/PROJECT/serviceAccounts/EMAIL/keys/KEY_ID`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key_type: String,
    pub key_algorithm: String,
    /// Base64 of the key file (`TYPE_GOOGLE_CREDENTIALS_FILE`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key_data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key_data: String,
    pub valid_after_time: String,
    pub valid_before_time: String,
    /// `GOOGLE_PROVIDED` or `USER_PROVIDED`.
    pub key_origin: String,
    /// `USER_MANAGED`: wid has no system-managed keys per account.
    pub key_type: String,
    #[serde(default, skip_serializing_if = "crate::iam::is_false")]
    pub disabled: bool,
    /// wid: when the key last proved its account (a grant or a self-signed JWT), if ever.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_use_time: String,
}

/// Body of `POST …/keys`. gcloud sends only `privateKeyType`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateServiceAccountKeyRequest {
    #[serde(default)]
    pub private_key_type: String,
    #[serde(default)]
    pub key_algorithm: String,
}

/// Body of `POST …/keys:upload`: base64 of a PEM X.509 certificate of the public key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadServiceAccountKeyRequest {
    #[serde(default)]
    pub public_key_data: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListServiceAccountKeysResponse {
    #[serde(default)]
    pub keys: Vec<ServiceAccountKey>,
}

/// The key file (`TYPE_GOOGLE_CREDENTIALS_FILE`), field for field as Google writes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    pub private_key_id: String,
    pub private_key: String,
    pub client_email: String,
    pub client_id: String,
    pub auth_uri: String,
    pub token_uri: String,
    pub auth_provider_x509_cert_url: String,
    pub client_x509_cert_url: String,
    pub universe_domain: String,
}
