//! Rows as the store keeps them. Times are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRow {
    pub project_id: String,
    pub project_number: String,
    pub display_name: String,
    pub create_time: String,
    /// Whether service-account keys may be created or uploaded in the project (off by default).
    pub allow_service_account_keys: bool,
    /// The longest validity of a key, in seconds (0 while keys are not allowed).
    pub key_max_lifetime_seconds: i64,
}

impl AccountKeyRow {
    /// Whether the key proves its account at `now`: enabled and within its validity.
    pub fn is_usable(&self, now: i64) -> bool {
        !self.disabled && self.valid_after <= now && now < self.valid_before
    }
}

/// A service-account key: its public half only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountKeyRow {
    /// 40 hex digits.
    pub key_id: String,
    pub account_unique_id: String,
    /// The self-signed X.509 certificate of the public key (PEM).
    pub certificate_pem: String,
    /// SHA-256 (hex) of the public key's DER SubjectPublicKeyInfo: unique among all keys.
    pub public_key_sha256: String,
    /// `GOOGLE_PROVIDED` or `USER_PROVIDED`.
    pub key_origin: String,
    pub key_algorithm: String,
    /// Unix seconds.
    pub valid_after: i64,
    pub valid_before: i64,
    pub disabled: bool,
    /// Unix seconds of its last use, if any.
    pub last_used: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRow {
    pub unique_id: String,
    pub project_id: String,
    pub account_id: String,
    pub email: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
    pub etag: String,
    pub create_time: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRow {
    pub etag: String,
    /// The wire Policy without its etag.
    pub policy_json: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRow {
    pub project_number: String,
    pub pool_id: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
    pub create_time: String,
    /// Bumped by every update; an update names the version it read.
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRow {
    pub project_number: String,
    pub pool_id: String,
    pub provider_id: String,
    pub display_name: String,
    pub description: String,
    pub disabled: bool,
    /// Attribute name to expression.
    pub attribute_mapping: BTreeMap<String, String>,
    pub attribute_condition: String,
    pub issuer_uri: String,
    pub allowed_audiences: Vec<String>,
    /// The uploaded JWKS; `None` when keys come from discovery.
    pub jwks_json: Option<String>,
    pub discovered_jwks_json: Option<String>,
    pub jwks_fetch_time: Option<String>,
    pub create_time: String,
    /// Bumped by every update; an update names the version it read.
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRow {
    pub project_id: String,
    pub location: String,
    pub name: String,
    pub uid: String,
    pub issuer_uri: String,
    /// The uploaded JWKS; `None` when keys come from discovery.
    pub jwks_json: Option<String>,
    pub discovered_jwks_json: Option<String>,
    pub jwks_fetch_time: Option<String>,
    pub isolated: bool,
    pub create_time: String,
}

/// A Kubernetes service account that presented a uid: the cluster whose token carried it, and the
/// namespace and name that token's subject named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KsaUidRow {
    pub project_id: String,
    pub uid: String,
    /// The uid of the registered cluster whose token presented it.
    pub cluster_uid: String,
    pub namespace: String,
    pub name: String,
    pub first_seen: String,
}

impl KsaUidRow {
    /// Whether two rows are presentations by one KSA (the time aside).
    pub fn same_presenter(&self, other: &KsaUidRow) -> bool {
        (
            &self.project_id,
            &self.uid,
            &self.cluster_uid,
            &self.namespace,
            &self.name,
        ) == (
            &other.project_id,
            &other.uid,
            &other.cluster_uid,
            &other.namespace,
            &other.name,
        )
    }
}

/// A signing key. Times are Unix seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    /// What the key signs: `id_token`, `access_token` or `account_signing`.
    pub purpose: String,
    pub algorithm: String,
    /// PKCS#8 DER; a secret.
    pub private_pkcs8: Vec<u8>,
    pub create_time: i64,
    /// When it stopped signing; `None` while active.
    pub rotate_time: Option<i64>,
    /// When it stops being published.
    pub retire_time: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("purpose", &self.purpose)
            .field("algorithm", &self.algorithm)
            .field("create_time", &self.create_time)
            .field("rotate_time", &self.rotate_time)
            .field("retire_time", &self.retire_time)
            .finish_non_exhaustive()
    }
}

/// How much the audit trail holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditSize {
    pub records: u64,
    /// The bytes of the records' text fields.
    pub bytes: u64,
}

impl AuditSize {
    /// The size of `rows`, counted as the store counts what it holds.
    pub fn of(rows: &[AuditRow]) -> AuditSize {
        let bytes = |r: &AuditRow| {
            [
                &r.time,
                &r.action,
                &r.caller,
                &r.provider,
                &r.target,
                &r.token_id,
                &r.outcome,
                &r.reason,
                &r.pod,
            ]
            .iter()
            .map(|f| f.len() as u64)
            .sum::<u64>()
        };
        AuditSize {
            records: rows.len() as u64,
            bytes: rows.iter().map(bytes).sum(),
        }
    }
}

/// An audit record; never holds a token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRow {
    pub time: String,
    pub action: String,
    pub caller: String,
    pub provider: String,
    pub target: String,
    pub token_id: String,
    pub outcome: String,
    pub reason: String,
    /// `namespace/name (uid)` of the pod a token exchange was for; empty otherwise.
    pub pod: String,
}
