//! Projects, in the shape of Cloud Resource Manager v1.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Project {
    #[serde(default)]
    pub project_id: String,
    /// A decimal string, as Resource Manager renders int64 values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project_number: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lifecycle_state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub create_time: String,
    /// wid: the fixed GKE workload identity pool of the project, `PROJECT.svc.id.goog`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload_identity_pool: String,
    /// wid: whether service-account keys may be created or uploaded here (off by default, as
    /// Google enforces for new organisations).
    #[serde(default, skip_serializing_if = "crate::iam::is_false")]
    pub allow_service_account_keys: bool,
    /// wid: the longest validity of a key, as a protobuf Duration (`"7776000s"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_max_lifetime: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListProjectsResponse {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<Project>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}
