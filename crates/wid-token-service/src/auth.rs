//! Authentication (who is calling) and authorisation (may they).
//!
//! Nothing is open: every API request carries `Authorization: Bearer TOKEN`. Today the only
//! credential is the bootstrap admin token from the data directory; the token-issuing half of the
//! service adds wid-issued access tokens, whose principals are then authorised by IAM policy
//! through [`App::require`], the one authorisation check.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use wid_iam::policy::RequestContext;
use wid_iam::{Caller, Policy};
use wid_store::{ProjectRow, ServiceAccountRow};

use crate::App;
use crate::error::ApiError;

/// Compares without an early exit, so response timing says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The resource a permission is checked on; it inherits its project's policy.
pub enum Resource<'a> {
    Project(&'a ProjectRow),
    ServiceAccount(&'a ProjectRow, &'a ServiceAccountRow),
}

impl App {
    /// The caller named by the request's bearer token: the bootstrap admin token, or a wid
    /// access token (federated or service-account).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value = headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::MissingCredentials)?;
        let value = value.to_str().map_err(|_| ApiError::InvalidCredentials)?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or(ApiError::InvalidCredentials)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::InvalidCredentials);
        }
        let token = token.trim();
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(Caller::BootstrapAdmin);
        }
        // Another replica's bootstrap secret: known here by its digest. wid's own tokens are
        // JWTs, with dots; the secrets have none.
        if !token.contains('.') && self.store.is_admin_credential(&digest(token)).await? {
            return Ok(Caller::BootstrapAdmin);
        }
        match self.caller_of_token(token).await {
            Ok((caller, _)) => Ok(caller),
            // Not one of wid's tokens: perhaps a JWT an account signed with its own key.
            Err(ApiError::InvalidCredentials) => self
                .self_signed_caller(token)
                .await?
                .ok_or(ApiError::InvalidCredentials),
            Err(e) => Err(e),
        }
    }

    /// The validated policy stored under `key`, or an empty one.
    pub(crate) async fn load_policy(
        &self,
        key: &str,
    ) -> Result<(Policy, Option<String>), ApiError> {
        let Some(row) = self.store.get_policy(key).await? else {
            return Ok((Policy::default(), None));
        };
        // Etags are unique per stored version, so a parse is good for as long as the etag is.
        if let Some(policy) = self.parsed_policies.get(&row.etag) {
            return Ok(((*policy).clone(), Some(row.etag)));
        }
        let policy = crate::iam::policies::decode_stored(&row.policy_json).unwrap_or_else(|e| {
            tracing::error!(resource = key, error = %e, "stored policy does not validate; treating it as empty");
            Policy::default()
        });
        self.parsed_policies
            .put(row.etag.clone(), std::sync::Arc::new(policy.clone()));
        Ok((policy, Some(row.etag)))
    }

    /// The policies that apply to `resource`, its own first.
    pub(crate) async fn effective_policies(
        &self,
        resource: &Resource<'_>,
    ) -> Result<Vec<Policy>, ApiError> {
        let mut policies = Vec::new();
        if let Resource::ServiceAccount(_, sa) = resource {
            policies.push(
                self.load_policy(&crate::iam::policies::account_key(sa))
                    .await?
                    .0,
            );
        }
        let project = match resource {
            Resource::Project(p) | Resource::ServiceAccount(p, _) => p,
        };
        policies.push(
            self.load_policy(&crate::iam::policies::project_key(project))
                .await?
                .0,
        );
        Ok(policies)
    }

    /// Fails with PERMISSION_DENIED unless `caller` holds `permission` on `resource`.
    pub async fn require(
        &self,
        caller: &Caller,
        permission: &'static str,
        resource: &Resource<'_>,
    ) -> Result<(), ApiError> {
        if *caller == Caller::BootstrapAdmin {
            return Ok(());
        }
        let policies = self.effective_policies(resource).await?;
        let refs: Vec<&Policy> = policies.iter().collect();
        let name = resource_name(resource);
        if wid_iam::is_allowed(
            &refs,
            caller,
            permission,
            &RequestContext {
                resource_name: &name,
            },
        ) {
            Ok(())
        } else {
            tracing::info!(caller = %caller, permission, resource = %name, "permission denied");
            Err(ApiError::PermissionDenied { permission })
        }
    }
}

pub fn resource_name(resource: &Resource<'_>) -> String {
    match resource {
        Resource::Project(p) => format!("projects/{}", p.project_id),
        Resource::ServiceAccount(p, sa) => {
            format!("projects/{}/serviceAccounts/{}", p.project_id, sa.email)
        }
    }
}

/// The SHA-256 of `bytes`, in hex: what the database keeps of a bootstrap admin secret, and of
/// a service-account key's public key (its fingerprint).
pub(crate) fn digest(bytes: impl AsRef<[u8]>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
