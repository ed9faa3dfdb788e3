//! The claims of the tokens wid issues. Access and federated tokens are self-contained ES256
//! JWTs (`typ: at+jwt`, RFC 9068) that a resource server verifies offline from the JWKS; ID
//! tokens are RS256 JWTs with the claims Google's carry for service accounts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a wid access token stands for.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Issued by STS to a federated identity.
    Federated,
    /// Issued by generateAccessToken for a service account.
    ServiceAccount,
}

/// Claims of wid access tokens (federated and service-account).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AccessTokenClaims {
    pub iss: String,
    /// The principal: `principal://…` for federated tokens, the account's unique id otherwise.
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// A unique id: what audit records name instead of the token.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    /// RFC 9068 wants it: who the token was issued to (the account's unique id, or the pool).
    pub client_id: String,
    pub wid: WidClaims,
}

/// wid's own claims inside an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct WidClaims {
    pub kind: Option<TokenKind>,
    /// Service-account tokens: the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Service-account tokens: who asked for it (the caller principal), for audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<String>,
    /// Federated tokens: the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated: Option<FederatedIdentity>,
    /// Service-account tokens bought with one of the account's keys (a JWT-bearer grant): the
    /// key's id, so that the token dies with the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The identity a token exchange established.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FederatedIdentity {
    pub project_number: String,
    pub pool_id: String,
    /// The provider (`projects/N/…/providers/P`) or cluster (`projects/P/locations/L/clusters/C`)
    /// that vouched for it.
    pub provider: String,
    /// The uid of the cluster that vouched for it: a cluster deleted and registered again under
    /// its name (new keys, after a leak say) does not revive the tokens the old one vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_uid: Option<String>,
    /// `google.subject`.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Set only for KSAs of shared clusters, whose namespaces and uids the pool's selectors may
    /// trust. Absent means not shared: a cluster's token from before this field is taken as an
    /// isolated cluster's, the side that grants least.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_cluster: bool,
    /// The cluster's names, for `principalSet://…/kubernetes.cluster/URL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_uid: Option<String>,
    /// The pod the KSA token was bound to, as `NAMESPACE/NAME (UID)`: carried so that the audit
    /// records of what the token is then used for (generateAccessToken, generateIdToken) name
    /// the pod too. Never used to authorize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// Claims of an ID token for a service account, as Google issues them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdTokenClaims {
    pub iss: String,
    /// A string, never an array: google-auth refuses array audiences.
    pub aud: String,
    pub azp: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}
