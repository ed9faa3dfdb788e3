//! The token service's admin operations as typed calls, on wid-api's wire types: what `wid iam`
//! runs and what `wid dev` bootstraps with. Paths and bodies are written here once.

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wid_api::cluster::{Cluster, ListClustersResponse};
use wid_api::iam::{Binding, Expr, ListServiceAccountsResponse, Policy, ServiceAccount};
use wid_api::project::{ListProjectsResponse, Project};

use crate::client::{CallError, Client, segment};

/// The path of a service account given by email or unique id: under its project when the email
/// names it, else under `projects/-`.
pub fn account_path(account: &str) -> String {
    let project = wid_iam::names::parse_service_account_email(account).map_or("-", |(_, p)| p);
    format!(
        "/v1/projects/{}/serviceAccounts/{}",
        segment(project),
        segment(account)
    )
}

/// The registered clusters of a project in a location (`-`: every location).
pub fn clusters_path(project: &str, location: &str) -> String {
    format!(
        "/v1/projects/{}/locations/{}/clusters",
        segment(project),
        segment(location)
    )
}

/// Typed admin calls over a [`Client`] that carries an admin credential.
pub struct Admin<'c> {
    client: &'c Client,
}

impl<'c> Admin<'c> {
    pub fn new(client: &'c Client) -> Admin<'c> {
        Admin { client }
    }

    /// Calls `method path` and reads the answer as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<T, CallError> {
        let value = self.client.call(method, path, query, body).await?;
        serde_json::from_value(value).map_err(|e| CallError::Protocol {
            endpoint: self.client.base().to_owned(),
            detail: format!("a {path} that is not what wid serves: {e}"),
        })
    }

    /// Sets a project's key policy (`allowServiceAccountKeys`, `keyMaxLifetime`).
    pub async fn update_project(
        &self,
        project: &str,
        settings: &Project,
    ) -> Result<Project, CallError> {
        let path = format!("/v1/projects/{}", segment(project));
        let body = serde_json::to_value(settings).unwrap_or_default();
        self.call(Method::PATCH, &path, &[], Some(&body)).await
    }

    pub async fn projects(&self) -> Result<Vec<Project>, CallError> {
        let list: ListProjectsResponse = self.call(Method::GET, "/v1/projects", &[], None).await?;
        Ok(list.projects)
    }

    /// Every service account of a project, page after page.
    pub async fn service_accounts(&self, project: &str) -> Result<Vec<ServiceAccount>, CallError> {
        let path = format!("/v1/projects/{}/serviceAccounts", segment(project));
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let query = [("pageSize", "100"), ("pageToken", token.as_str())];
            let page: ListServiceAccountsResponse =
                self.call(Method::GET, &path, &query, None).await?;
            all.extend(page.accounts);
            match page.next_page_token {
                Some(next) if !next.is_empty() => token = next,
                _ => return Ok(all),
            }
        }
    }

    pub async fn create_project(&self, project: &Project) -> Result<Project, CallError> {
        let body = to_json(project);
        self.call(Method::POST, "/v1/projects", &[], Some(&body))
            .await
    }

    pub async fn project(&self, project: &str) -> Result<Project, CallError> {
        let path = format!("/v1/projects/{}", segment(project));
        self.call(Method::GET, &path, &[], None).await
    }

    pub async fn create_service_account(
        &self,
        project: &str,
        account_id: &str,
        account: &ServiceAccount,
    ) -> Result<ServiceAccount, CallError> {
        let path = format!("/v1/projects/{}/serviceAccounts", segment(project));
        let body = json!({ "accountId": account_id, "serviceAccount": to_json(account) });
        self.call(Method::POST, &path, &[], Some(&body)).await
    }

    /// The account's IAM policy, conditions included (version 3).
    pub async fn iam_policy(&self, account: &str) -> Result<Policy, CallError> {
        let path = format!("{}:getIamPolicy", account_path(account));
        let query = [("options.requestedPolicyVersion", "3")];
        self.call(Method::POST, &path, &query, None).await
    }

    /// Replaces the account's IAM policy; its etag guards against concurrent changes.
    pub async fn set_iam_policy(
        &self,
        account: &str,
        policy: &Policy,
    ) -> Result<Policy, CallError> {
        let path = format!("{}:setIamPolicy", account_path(account));
        let body = json!({ "policy": to_json(policy) });
        self.call(Method::POST, &path, &[], Some(&body)).await
    }

    pub async fn clusters(&self, project: &str, location: &str) -> Result<Vec<Cluster>, CallError> {
        let list: ListClustersResponse = self
            .call(Method::GET, &clusters_path(project, location), &[], None)
            .await?;
        Ok(list.clusters)
    }

    /// Registers `cluster` (its name, issuer, keys and isolation) in `location`.
    pub async fn register_cluster(
        &self,
        project: &str,
        location: &str,
        cluster: &Cluster,
    ) -> Result<Cluster, CallError> {
        let body = to_json(cluster);
        self.call(
            Method::POST,
            &clusters_path(project, location),
            &[],
            Some(&body),
        )
        .await
    }

    pub async fn delete_cluster(
        &self,
        project: &str,
        location: &str,
        name: &str,
    ) -> Result<(), CallError> {
        let path = format!("{}/{}", clusters_path(project, location), segment(name));
        self.client.call(Method::DELETE, &path, &[], None).await?;
        Ok(())
    }
}

/// A wire type as JSON; they serialise without fail (strings, numbers and maps of them).
fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn same_condition(binding: &Binding, condition: Option<&Expr>) -> bool {
    binding.condition.as_ref().map(|c| &c.expression) == condition.map(|c| &c.expression)
}

/// Adds `member` to the binding of `role` with `condition` (conditions compared by their
/// expression), creating the binding if needed; a condition anywhere makes the policy version 3,
/// as gcloud does. Returns whether the member was not there before.
pub fn add_binding(policy: &mut Policy, member: &str, role: &str, condition: Option<Expr>) -> bool {
    let added = match policy
        .bindings
        .iter_mut()
        .find(|b| b.role == role && same_condition(b, condition.as_ref()))
    {
        Some(binding) if binding.members.iter().any(|m| m == member) => false,
        Some(binding) => {
            binding.members.push(member.to_owned());
            true
        }
        None => {
            policy.bindings.push(Binding {
                role: role.to_owned(),
                members: vec![member.to_owned()],
                condition,
            });
            true
        }
    };
    let conditional = policy.bindings.iter().any(|b| b.condition.is_some());
    policy.version = Some(if conditional { 3 } else { 1 });
    added
}

/// Removes `member` from `role`'s binding with `condition` (any condition with `all`), and the
/// bindings left empty. Returns whether anything was removed.
pub fn remove_binding(
    policy: &mut Policy,
    member: &str,
    role: &str,
    condition: Option<&Expr>,
    all: bool,
) -> bool {
    let mut removed = false;
    for binding in policy
        .bindings
        .iter_mut()
        .filter(|b| b.role == role && (all || same_condition(b, condition)))
    {
        let before = binding.members.len();
        binding.members.retain(|m| m != member);
        removed |= binding.members.len() != before;
    }
    policy.bindings.retain(|b| !b.members.is_empty());
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_added_once_and_removed() {
        let mut policy = Policy {
            etag: Some("ACAB".into()),
            ..Policy::default()
        };
        assert!(add_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            None
        ));
        assert!(!add_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            None
        ));
        assert_eq!(
            to_json(&policy),
            json!({ "version": 1, "etag": "ACAB",
                    "bindings": [{ "role": "roles/viewer", "members": ["user:a@b.co"] }] })
        );
        assert!(remove_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            None,
            false
        ));
        assert!(policy.bindings.is_empty());
        assert!(!remove_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            None,
            false
        ));
    }

    #[test]
    fn a_condition_is_a_binding_of_its_own_and_makes_version_3() {
        let mut policy = Policy::default();
        let condition = Expr {
            expression: "true".into(),
            ..Expr::default()
        };
        add_binding(&mut policy, "user:a@b.co", "roles/viewer", None);
        add_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            Some(condition.clone()),
        );
        assert_eq!(policy.bindings.len(), 2);
        assert_eq!(policy.version, Some(3));
        assert!(remove_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            Some(&condition),
            false
        ));
        assert_eq!(policy.bindings.len(), 1);
        assert!(policy.bindings[0].condition.is_none());
        add_binding(&mut policy, "user:a@b.co", "roles/viewer", Some(condition));
        assert!(remove_binding(
            &mut policy,
            "user:a@b.co",
            "roles/viewer",
            None,
            true
        ));
        assert!(
            policy.bindings.is_empty(),
            "--all removes every condition's"
        );
    }

    #[test]
    fn account_paths() {
        assert_eq!(
            account_path("a-sa@p1.iam.gserviceaccount.com"),
            "/v1/projects/p1/serviceAccounts/a-sa@p1.iam.gserviceaccount.com"
        );
        assert_eq!(account_path("123"), "/v1/projects/-/serviceAccounts/123");
    }
}
