//! getIamPolicy, setIamPolicy and testIamPermissions, for service accounts and projects.

use wid_api::iam::{
    Binding, Expr, GetIamPolicyRequest, Policy as WirePolicy, SetIamPolicyRequest,
    TestIamPermissionsRequest, TestIamPermissionsResponse,
};
use wid_iam::policy::{RawBinding, RequestContext};
use wid_iam::roles::{
    PROJECT_GET_IAM_POLICY, PROJECT_SET_IAM_POLICY, SA_GET_IAM_POLICY, SA_SET_IAM_POLICY,
};
use wid_iam::{Caller, Policy};
use wid_store::{NO_POLICY_ETAG, PolicyRow, ProjectRow, ServiceAccountRow, StoreError};

use crate::App;
use crate::auth::{Resource, resource_name};
use crate::error::ApiError;
use crate::http::Input;
use crate::routes::{AccountName, PolicyVerb};

/// At most this many permissions in one testIamPermissions call (Google's bound).
const MAX_TESTED_PERMISSIONS: usize = 100;

pub(crate) fn account_key(sa: &ServiceAccountRow) -> String {
    format!("sa/{}", sa.unique_id)
}

pub(crate) fn project_key(p: &ProjectRow) -> String {
    format!("project/{}", p.project_number)
}

fn to_raw(wire: &WirePolicy) -> Vec<RawBinding> {
    wire.bindings
        .iter()
        .map(|b| RawBinding {
            role: b.role.clone(),
            members: b.members.clone(),
            condition: b.condition.as_ref().map(|c| c.expression.clone()),
        })
        .collect()
}

/// Parses and validates a policy as stored.
pub(crate) fn decode_stored(json: &str) -> Result<Policy, String> {
    let wire: WirePolicy = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Policy::validate(wire.version.unwrap_or(1), &to_raw(&wire)).map_err(|e| e.to_string())
}

/// The stored policy with its etag, as getIamPolicy answers. Conditions are rendered whatever
/// version was asked for: dropping them would silently widen what the policy appears to grant.
fn render(stored: Option<&WirePolicy>, etag: Option<String>) -> WirePolicy {
    let mut out = stored.cloned().unwrap_or_default();
    out.audit_configs = None;
    if out.bindings.is_empty() {
        out.version = None;
    }
    out.etag = Some(etag.unwrap_or_else(|| NO_POLICY_ETAG.to_owned()));
    out
}

/// The wire form of a validated policy, keeping each binding's condition title and description.
fn normalised(policy: &Policy, request: &WirePolicy) -> WirePolicy {
    let bindings = policy
        .to_raw()
        .into_iter()
        .map(|rb| {
            let condition = rb.condition.map(|expression| {
                request
                    .bindings
                    .iter()
                    .filter_map(|b| b.condition.as_ref())
                    .find(|c| c.expression == expression)
                    .cloned()
                    .unwrap_or(Expr {
                        expression,
                        ..Expr::default()
                    })
            });
            Binding {
                role: rb.role,
                members: rb.members,
                condition,
            }
        })
        .collect();
    WirePolicy {
        version: Some(policy.version),
        bindings,
        audit_configs: None,
        etag: None,
    }
}

/// `service.resource.verb`, each part letters, digits and underscores.
fn is_well_formed_permission(p: &str) -> bool {
    let parts: Vec<&str> = p.split('.').collect();
    parts.len() >= 3
        && p.len() <= 256
        && parts
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// The subject of a policy call: whose policy, and the permissions that guard it.
struct Target<'a> {
    key: String,
    resource: Resource<'a>,
    get: &'static str,
    set: &'static str,
}

impl App {
    pub(crate) async fn account_policy(
        &self,
        caller: &Caller,
        name: &AccountName,
        verb: PolicyVerb,
        input: &Input,
    ) -> Result<serde_json::Value, ApiError> {
        let permission = match verb {
            PolicyVerb::SetIamPolicy => SA_SET_IAM_POLICY,
            _ => SA_GET_IAM_POLICY,
        };
        let (owner, sa) = self.account(name, permission).await?;
        let target = Target {
            key: account_key(&sa),
            resource: Resource::ServiceAccount(&owner, &sa),
            get: SA_GET_IAM_POLICY,
            set: SA_SET_IAM_POLICY,
        };
        self.policy_call(caller, &target, verb, input).await
    }

    pub(crate) async fn project_policy(
        &self,
        caller: &Caller,
        project: &str,
        verb: PolicyVerb,
        input: &Input,
    ) -> Result<serde_json::Value, ApiError> {
        let owner = self.project(project).await?;
        let target = Target {
            key: project_key(&owner),
            resource: Resource::Project(&owner),
            get: PROJECT_GET_IAM_POLICY,
            set: PROJECT_SET_IAM_POLICY,
        };
        self.policy_call(caller, &target, verb, input).await
    }

    async fn policy_call(
        &self,
        caller: &Caller,
        target: &Target<'_>,
        verb: PolicyVerb,
        input: &Input,
    ) -> Result<serde_json::Value, ApiError> {
        let value = match verb {
            PolicyVerb::GetIamPolicy => {
                let request: GetIamPolicyRequest = input.json()?;
                let from_query = input.query("options.requestedPolicyVersion");
                let requested = match from_query {
                    Some(v) => Some(v.parse::<i64>().map_err(|_| {
                        ApiError::invalid(
                            "options.requestedPolicyVersion",
                            format!("'{v}' is not a policy version."),
                        )
                    })?),
                    None => request.options.and_then(|o| o.requested_policy_version),
                };
                if let Some(v) = requested.filter(|v| ![0, 1, 3].contains(v)) {
                    return Err(ApiError::invalid(
                        "options.requestedPolicyVersion",
                        format!(
                            "Invalid requested policy version {v}: only versions 0, 1 and 3 are supported."
                        ),
                    ));
                }
                self.require(caller, target.get, &target.resource).await?;
                serde_json::to_value(self.read_policy(&target.key).await?)
            }
            PolicyVerb::SetIamPolicy => {
                let request: SetIamPolicyRequest = input.json()?;
                self.require(caller, target.set, &target.resource).await?;
                serde_json::to_value(self.write_policy(caller, &target.key, request).await?)
            }
            PolicyVerb::TestIamPermissions => {
                let request: TestIamPermissionsRequest = input.json()?;
                serde_json::to_value(
                    self.test_permissions(caller, &target.resource, request)
                        .await?,
                )
            }
        };
        value.map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// After a service account is deleted, rewrites every binding that names it to Google's
    /// `deleted:serviceAccount:EMAIL?uid=ID` form, so that an account created later with the same
    /// email does not inherit the old grants.
    pub(crate) async fn retire_member(&self, email: &str, unique_id: &str) -> Result<(), ApiError> {
        let old = format!("serviceAccount:{email}");
        let new = format!("deleted:serviceAccount:{email}?uid={unique_id}");
        for (key, _) in self.store.list_policies().await? {
            // A concurrent setIamPolicy may win the compare-and-swap; read again and retry.
            for _ in 0..10 {
                let Some(row) = self.store.get_policy(&key).await? else {
                    break;
                };
                let mut wire: WirePolicy = serde_json::from_str(&row.policy_json)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let mut changed = false;
                for member in wire.bindings.iter_mut().flat_map(|b| b.members.iter_mut()) {
                    if member.eq_ignore_ascii_case(&old) {
                        member.clone_from(&new);
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
                let next = PolicyRow {
                    etag: crate::iam::new_etag(),
                    policy_json: serde_json::to_string(&wire)
                        .map_err(|e| ApiError::Internal(e.to_string()))?,
                };
                match self.store.set_policy(&key, Some(&row.etag), &next).await {
                    Ok(()) => break,
                    Err(StoreError::Aborted) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn read_policy(&self, key: &str) -> Result<WirePolicy, ApiError> {
        let row = self.store.get_policy(key).await?;
        let stored = match &row {
            Some(r) => Some(
                serde_json::from_str::<WirePolicy>(&r.policy_json)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
            None => None,
        };
        Ok(render(stored.as_ref(), row.map(|r| r.etag)))
    }

    async fn write_policy(
        &self,
        caller: &Caller,
        key: &str,
        request: SetIamPolicyRequest,
    ) -> Result<WirePolicy, ApiError> {
        let wire = request.policy.ok_or_else(|| {
            ApiError::invalid(
                "policy",
                "The request has no policy; send {\"policy\": {...}}.",
            )
        })?;
        if let Some(mask) = request.update_mask.as_deref() {
            for field in mask.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                if ![
                    "bindings",
                    "etag",
                    "version",
                    "auditConfigs",
                    "audit_configs",
                ]
                .contains(&field)
                {
                    return Err(ApiError::invalid(
                        "updateMask",
                        format!("updateMask names unknown field '{field}'."),
                    ));
                }
            }
        }
        let policy = Policy::validate(wire.version.unwrap_or(1), &to_raw(&wire))
            .map_err(|e| ApiError::invalid("policy", e.to_string()))?;
        let stored = normalised(&policy, &wire);
        let row = PolicyRow {
            etag: crate::iam::new_etag(),
            policy_json: serde_json::to_string(&stored)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        };
        let expected = wire
            .etag
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(crate::iam::canonical_etag);
        let expected = expected.as_deref();
        match self.store.set_policy(key, expected, &row).await {
            Ok(()) => {}
            Err(StoreError::Aborted) => {
                let current = self
                    .store
                    .get_policy(key)
                    .await?
                    .map_or_else(|| NO_POLICY_ETAG.to_owned(), |r| r.etag);
                return Err(ApiError::Aborted(format!(
                    "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. The request's ETag '{}' did not match the current policy's ETag '{current}'.",
                    expected.unwrap_or_default()
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(caller = %caller, resource = key, bindings = stored.bindings.len(), "IAM policy set");
        Ok(render(Some(&stored), Some(row.etag)))
    }

    async fn test_permissions(
        &self,
        caller: &Caller,
        resource: &Resource<'_>,
        request: TestIamPermissionsRequest,
    ) -> Result<TestIamPermissionsResponse, ApiError> {
        if request.permissions.len() > MAX_TESTED_PERMISSIONS {
            return Err(ApiError::invalid(
                "permissions",
                format!("At most {MAX_TESTED_PERMISSIONS} permissions may be tested at once."),
            ));
        }
        // Permissions wid does not know are simply not granted, as Google answers; only
        // wildcards and malformed names are refused.
        for p in &request.permissions {
            if p.contains('*') {
                return Err(ApiError::invalid(
                    "permissions",
                    format!("Permission {p} is invalid: wildcards are not allowed."),
                ));
            }
            if !is_well_formed_permission(p) {
                return Err(ApiError::invalid(
                    "permissions",
                    format!(
                        "Permission {p} is invalid: permissions look like service.resource.verb."
                    ),
                ));
            }
        }
        let policies = self.effective_policies(resource).await?;
        let refs: Vec<&Policy> = policies.iter().collect();
        let name = resource_name(resource);
        let ctx = RequestContext {
            resource_name: &name,
        };
        let permissions = request
            .permissions
            .into_iter()
            .filter(|p| wid_iam::is_allowed(&refs, caller, p, &ctx))
            .collect();
        Ok(TestIamPermissionsResponse { permissions })
    }
}
