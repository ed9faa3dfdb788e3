//! `google.longrunning.Operation`. wid finishes every mutation before it answers, so each
//! Operation it returns is already `done`; gcloud then skips polling.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub name: String,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

impl Operation {
    /// A finished operation whose `response` is `resource` tagged with its proto type name.
    pub fn done(name: String, type_name: &str, resource: &impl Serialize) -> Self {
        let mut response = serde_json::to_value(resource).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut response {
            map.insert(
                "@type".to_owned(),
                serde_json::Value::String(format!("type.googleapis.com/{type_name}")),
            );
        }
        Operation {
            name,
            done: true,
            response: Some(response),
        }
    }
}
