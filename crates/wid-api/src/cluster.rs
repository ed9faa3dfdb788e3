//! wid's own resource: a Kubernetes cluster registered as a provider of its project's GKE
//! workload identity pool `PROJECT.svc.id.goog`. Served at
//! `/v1/projects/{P}/locations/{L}/clusters[/{NAME}]`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// `projects/{P}/locations/{L}/clusters/{NAME}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default)]
    pub issuer_uri: String,
    /// The cluster's service-account JWKS as a JSON string, when uploaded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_json: String,
    /// True when wid follows the issuer's OIDC discovery for the keys.
    #[serde(default)]
    pub discover: bool,
    /// An isolated cluster's Kubernetes service accounts are members of their own, not shared
    /// with same-named ones in the project's other clusters.
    #[serde(default)]
    pub isolated: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload_identity_pool: String,
    /// How to write a KSA of this cluster as an IAM member.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub member_format: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub create_time: String,
    /// When the discovered keys were last fetched (RFC 3339), if discovery is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks_fetch_time: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
}
