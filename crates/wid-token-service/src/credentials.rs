//! The IAM Service Account Credentials API: generateAccessToken, generateIdToken, signBlob and
//! signJwt, on `/v1/projects/-/serviceAccounts/{EMAIL or UNIQUE_ID}:{method}`.
//!
//! Authorisation follows the target account's IAM policy (and its project's), by permission;
//! a delegation chain is checked link by link: the caller needs `implicitDelegation` on the first
//! delegate, each delegate on the next, and the last one the method's permission on the target.

use base64::Engine;
use serde_json::Value;
use wid_api::bounds::{MAX_AUDIENCE_BYTES, MAX_SCOPE_BYTES};
use wid_api::credentials::{
    GenerateAccessTokenRequest, GenerateAccessTokenResponse, GenerateIdTokenRequest,
    GenerateIdTokenResponse, SignBlobRequest, SignBlobResponse, SignJwtRequest, SignJwtResponse,
};
use wid_iam::Caller;
use wid_iam::roles::{
    SA_GET_ACCESS_TOKEN, SA_GET_OPENID_TOKEN, SA_IMPLICIT_DELEGATION, SA_SIGN_BLOB, SA_SIGN_JWT,
};
use wid_jose::signer::TokenType;
use wid_store::{ProjectRow, ServiceAccountRow, Store, StoreError};

use crate::App;
use crate::audit::Event;
use crate::auth::Resource;
use crate::error::ApiError;
use crate::http::parse_json;
use crate::tokens::{Minted, now};

/// The longest access token: an hour, as Google's without an organisation policy.
const MAX_LIFETIME_SECS: i64 = 3600;
/// signJwt: `exp` at most this far ahead.
const MAX_SIGN_JWT_AHEAD_SECS: i64 = 12 * 3600;
/// At most this many delegates.
const MAX_DELEGATES: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsVerb {
    GenerateAccessToken,
    GenerateIdToken,
    SignBlob,
    SignJwt,
}

impl CredentialsVerb {
    fn permission(self) -> &'static str {
        match self {
            CredentialsVerb::GenerateAccessToken => SA_GET_ACCESS_TOKEN,
            CredentialsVerb::GenerateIdToken => SA_GET_OPENID_TOKEN,
            CredentialsVerb::SignBlob => SA_SIGN_BLOB,
            CredentialsVerb::SignJwt => SA_SIGN_JWT,
        }
    }

    fn action(self) -> &'static str {
        match self {
            CredentialsVerb::GenerateAccessToken => "generate_access_token",
            CredentialsVerb::GenerateIdToken => "generate_id_token",
            CredentialsVerb::SignBlob => "sign_blob",
            CredentialsVerb::SignJwt => "sign_jwt",
        }
    }
}

/// `"3600s"` or `"1800.5s"` (protobuf Duration) to whole seconds, rounded up.
fn parse_lifetime(text: &str) -> Option<i64> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || whole.len() > 12 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    Some(if fraction.bytes().any(|b| b != b'0') {
        seconds + 1
    } else {
        seconds
    })
}

/// The account named by a `projects/-/serviceAccounts/X` delegate.
fn delegate_id(delegate: &str) -> Option<&str> {
    delegate
        .strip_prefix("projects/-/serviceAccounts/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

impl<S: Store> App<S> {
    async fn credentials_target(
        &self,
        account: &str,
    ) -> Result<(ProjectRow, ServiceAccountRow), ApiError> {
        let row = match self.store.get_service_account(account).await {
            Err(StoreError::NotFound) => {
                return Err(ApiError::NotFound(format!(
                    "Service account projects/-/serviceAccounts/{account} does not exist."
                )));
            }
            other => other?,
        };
        let project = self.store.get_project(&row.project_id).await?;
        Ok((project, row))
    }

    /// Checks the chain caller → delegates… → target; returns the denial reason for the audit.
    async fn authorize_chain(
        &self,
        caller: &Caller,
        delegates: &[String],
        target: (&ProjectRow, &ServiceAccountRow),
        permission: &'static str,
    ) -> Result<(), ApiError> {
        if delegates.len() > MAX_DELEGATES {
            return Err(ApiError::invalid(
                "delegates",
                format!("At most {MAX_DELEGATES} delegates are allowed."),
            ));
        }
        let mut links: Vec<(ProjectRow, ServiceAccountRow)> = Vec::new();
        for d in delegates {
            let id = delegate_id(d).ok_or_else(|| {
                ApiError::invalid(
                    "delegates",
                    format!("Delegate '{d}' is not of the form projects/-/serviceAccounts/EMAIL."),
                )
            })?;
            let (project, account) = match self.credentials_target(id).await {
                Ok(found) => found,
                // A missing delegate is a denial on it, as for any link.
                Err(ApiError::NotFound(_)) => {
                    return Err(ApiError::PermissionDenied {
                        permission: SA_IMPLICIT_DELEGATION,
                    });
                }
                Err(e) => return Err(e),
            };
            if account.disabled {
                return Err(ApiError::PermissionDenied {
                    permission: SA_IMPLICIT_DELEGATION,
                });
            }
            links.push((project, account));
        }
        let mut current = caller.clone();
        for (project, account) in &links {
            self.require(
                &current,
                SA_IMPLICIT_DELEGATION,
                &Resource::ServiceAccount(project, account),
            )
            .await?;
            current = Caller::ServiceAccount(account.email.clone());
        }
        self.require(
            &current,
            permission,
            &Resource::ServiceAccount(target.0, target.1),
        )
        .await
    }

    /// Records a credentials call refused before its caller was known.
    pub(crate) async fn audit_unauthenticated(
        &self,
        verb: CredentialsVerb,
        account: &str,
        error: &ApiError,
    ) {
        let reason = error.to_string();
        self.audit(Event {
            action: verb.action(),
            caller: None,
            provider: "",
            target: account,
            token_id: "",
            pod: "",
            outcome: Err(&reason),
        })
        .await;
    }

    pub(crate) async fn credentials_call(
        &self,
        caller: &Caller,
        project: &str,
        account: &str,
        verb: CredentialsVerb,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let result = self
            .credentials_inner(caller, project, account, verb, body)
            .await;
        let caller_name = caller.to_string();
        let pod = match caller {
            Caller::Federated(federated) => federated.pod.as_deref().unwrap_or(""),
            _ => "",
        };
        match &result {
            Ok((_, token_id, target)) => {
                self.audit(Event {
                    action: verb.action(),
                    caller: Some(&caller_name),
                    provider: "",
                    target,
                    token_id,
                    pod,
                    outcome: Ok(()),
                })
                .await;
            }
            Err(e) => {
                let reason = e.to_string();
                self.audit(Event {
                    action: verb.action(),
                    caller: Some(&caller_name),
                    provider: "",
                    target: account,
                    token_id: "",
                    pod,
                    outcome: Err(&reason),
                })
                .await;
            }
        }
        result.map(|(value, _, _)| value)
    }

    /// Returns the answer, the issued token's id, and the target's email.
    async fn credentials_inner(
        &self,
        caller: &Caller,
        project: &str,
        account: &str,
        verb: CredentialsVerb,
        body: &[u8],
    ) -> Result<(Value, String, String), ApiError> {
        if project != "-" {
            return Err(ApiError::invalid(
                "name",
                format!("The project must be '-': use projects/-/serviceAccounts/{account}."),
            ));
        }
        let to_value =
            |v: Result<Value, serde_json::Error>| v.map_err(|e| ApiError::Internal(e.to_string()));
        match verb {
            CredentialsVerb::GenerateAccessToken => {
                let request: GenerateAccessTokenRequest = parse_json(body)?;
                let scopes: Vec<String> = request
                    .scope
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| !s.trim().is_empty())
                    .collect();
                if scopes.is_empty() {
                    return Err(ApiError::invalid(
                        "scope",
                        "Scope required: name at least one OAuth scope.",
                    ));
                }
                let joined = scopes.iter().map(|s| s.len() + 1).sum::<usize>();
                if joined > MAX_SCOPE_BYTES {
                    return Err(ApiError::invalid(
                        "scope",
                        format!(
                            "The scopes take {joined} bytes; at most {MAX_SCOPE_BYTES} are accepted."
                        ),
                    ));
                }
                let lifetime = match request.lifetime.as_deref() {
                    None | Some("") => MAX_LIFETIME_SECS,
                    Some(text) => parse_lifetime(text).filter(|l| (1..=MAX_LIFETIME_SECS).contains(l)).ok_or_else(|| {
                        ApiError::invalid(
                            "lifetime",
                            format!("The lifetime '{text}' is invalid: it must be a duration such as \"3600s\", at most {MAX_LIFETIME_SECS}s."),
                        )
                    })?,
                };
                let target = self
                    .authorized_target(
                        caller,
                        account,
                        request.delegates.as_deref(),
                        verb.permission(),
                    )
                    .await?;
                let now = now();
                let Minted { token, jti, exp } =
                    self.mint_access(&target, &scopes, lifetime, caller, now)?;
                let answer = GenerateAccessTokenResponse {
                    access_token: token,
                    expire_time: wid_api::time::rfc3339(exp),
                };
                Ok((to_value(serde_json::to_value(answer))?, jti, target.email))
            }
            CredentialsVerb::GenerateIdToken => {
                let request: GenerateIdTokenRequest = parse_json(body)?;
                if request.audience.trim().is_empty() {
                    return Err(ApiError::invalid("audience", "The audience is required."));
                }
                if request.audience.len() > MAX_AUDIENCE_BYTES {
                    return Err(ApiError::invalid(
                        "audience",
                        format!(
                            "The audience is {} bytes long; at most {MAX_AUDIENCE_BYTES} are accepted.",
                            request.audience.len()
                        ),
                    ));
                }
                let target = self
                    .authorized_target(
                        caller,
                        account,
                        request.delegates.as_deref(),
                        verb.permission(),
                    )
                    .await?;
                let minted = self
                    .mint_id_token(
                        &target,
                        &request.audience,
                        request.include_email,
                        request.use_email_azp,
                        now(),
                    )
                    .await?;
                let answer = GenerateIdTokenResponse {
                    token: minted.token,
                };
                let id = minted.jti;
                Ok((to_value(serde_json::to_value(answer))?, id, target.email))
            }
            CredentialsVerb::SignBlob => {
                let request: SignBlobRequest = parse_json(body)?;
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(request.payload.trim())
                    .map_err(|_| {
                        ApiError::invalid("payload", "The payload must be standard base64.")
                    })?;
                let target = self
                    .authorized_target(
                        caller,
                        account,
                        request.delegates.as_deref(),
                        verb.permission(),
                    )
                    .await?;
                let key = self.keys.current().account.clone();
                let kid = key.kid().to_owned();
                let signature = crate::tokens::sign_off_thread(move || key.sign(&payload)).await?;
                let answer = SignBlobResponse {
                    key_id: kid.clone(),
                    signed_blob: base64::engine::general_purpose::STANDARD.encode(signature),
                };
                Ok((
                    to_value(serde_json::to_value(answer))?,
                    format!("blob:{kid}"),
                    target.email,
                ))
            }
            CredentialsVerb::SignJwt => {
                let request: SignJwtRequest = parse_json(body)?;
                let claims: serde_json::Map<String, Value> = serde_json::from_str(&request.payload)
                    .map_err(|_| {
                        ApiError::invalid(
                            "payload",
                            "The payload must be a JSON object (the JWT claims set) as a string.",
                        )
                    })?;
                // The claims are checked here as serde reads them (the last of a key twice,
                // keys as spelt); a verifier that keeps the first, or matches keys without case,
                // would see other claims, say a later `exp` as `EXP`.
                wid_api::json::check_unique_keys_ignoring_case(request.payload.as_bytes())
                    .map_err(|e| {
                        ApiError::invalid(
                            "payload",
                            format!("The payload must not repeat a claim: {e}."),
                        )
                    })?;
                let now = now();
                if let Some(exp) = claims.get("exp") {
                    let exp = exp.as_i64().ok_or_else(|| {
                        ApiError::invalid("payload", "The 'exp' claim must be an integer.")
                    })?;
                    if exp > now + MAX_SIGN_JWT_AHEAD_SECS {
                        return Err(ApiError::invalid(
                            "payload",
                            format!(
                                "The 'exp' claim may be at most {MAX_SIGN_JWT_AHEAD_SECS} seconds in the future."
                            ),
                        ));
                    }
                }
                let target = self
                    .authorized_target(
                        caller,
                        account,
                        request.delegates.as_deref(),
                        verb.permission(),
                    )
                    .await?;
                let key = self.keys.current().account.clone();
                let kid = key.kid().to_owned();
                let payload = request.payload.into_bytes();
                let jwt = crate::tokens::sign_off_thread(move || {
                    key.sign_jws_payload(TokenType::Jwt, &payload)
                })
                .await?;
                let answer = SignJwtResponse {
                    key_id: kid.clone(),
                    signed_jwt: jwt,
                };
                Ok((
                    to_value(serde_json::to_value(answer))?,
                    format!("jwt:{kid}"),
                    target.email,
                ))
            }
        }
    }

    /// The target account once the caller may act on it: it exists (404 otherwise), the
    /// delegation chain holds, and, told only to callers that passed, it is enabled.
    async fn authorized_target(
        &self,
        caller: &Caller,
        account: &str,
        delegates: Option<&[String]>,
        permission: &'static str,
    ) -> Result<ServiceAccountRow, ApiError> {
        let (owner, target) = self.credentials_target(account).await?;
        self.authorize_chain(
            caller,
            delegates.unwrap_or_default(),
            (&owner, &target),
            permission,
        )
        .await?;
        Self::check_enabled(&target)?;
        Ok(target)
    }

    /// Refuses a disabled target; called after authorisation, so that only callers allowed on
    /// the account learn its state.
    fn check_enabled(target: &ServiceAccountRow) -> Result<(), ApiError> {
        if target.disabled {
            return Err(ApiError::FailedPrecondition(format!(
                "The service account projects/-/serviceAccounts/{} is disabled.",
                target.email
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("3600s"), Some(3600));
        assert_eq!(parse_lifetime("1800.5s"), Some(1801));
        assert_eq!(parse_lifetime("1800.000s"), Some(1800));
        for bad in ["", "s", "3600", "-1s", "1e3s", "1.1234567890s", "abc s"] {
            assert_eq!(parse_lifetime(bad), None, "{bad}");
        }
        assert_eq!(delegate_id("projects/-/serviceAccounts/a@b"), Some("a@b"));
        assert_eq!(delegate_id("projects/p/serviceAccounts/a@b"), None);
    }
}
