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
use wid_store::{ProjectRow, ServiceAccountRow, StoreError};

use crate::App;
use crate::audit::Event;
use crate::auth::Resource;
use crate::error::ApiError;
use crate::http::Input;
use crate::routes::AccountName;
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

    /// What a success issues, as the metrics name it.
    fn issued_kind(self) -> &'static str {
        match self {
            CredentialsVerb::GenerateAccessToken => "access_token",
            CredentialsVerb::GenerateIdToken => "id_token",
            CredentialsVerb::SignBlob => "signed_blob",
            CredentialsVerb::SignJwt => "signed_jwt",
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

/// What a credentials call gave: the answer, the id of what it issued (a token's `jti`, or the
/// signing key's), and the target account's email, for the audit trail.
struct Issued {
    answer: Value,
    token_id: String,
    target: String,
}

impl Issued {
    fn new(
        answer: &impl serde::Serialize,
        token_id: String,
        target: String,
    ) -> Result<Issued, ApiError> {
        let answer = serde_json::to_value(answer).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Issued {
            answer,
            token_id,
            target,
        })
    }
}

/// The scopes (blank ones dropped; at least one, within the bound) and lifetime (an hour at
/// most, the default) a generateAccessToken request asks for.
fn access_token_terms(
    request: &GenerateAccessTokenRequest,
) -> Result<(Vec<String>, i64), ApiError> {
    let scopes: Vec<String> = request
        .scope
        .iter()
        .flatten()
        .filter(|s| !s.trim().is_empty())
        .cloned()
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
            format!("The scopes take {joined} bytes; at most {MAX_SCOPE_BYTES} are accepted."),
        ));
    }
    let lifetime = match request.lifetime.as_deref() {
        None | Some("") => MAX_LIFETIME_SECS,
        Some(text) => parse_lifetime(text)
            .filter(|l| (1..=MAX_LIFETIME_SECS).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "lifetime",
                    format!(
                        "The lifetime '{text}' is invalid: it must be a duration such as \"3600s\", at most {MAX_LIFETIME_SECS}s."
                    ),
                )
            })?,
    };
    Ok((scopes, lifetime))
}

/// An ID token's audience: given, and within the bound.
fn check_id_token_audience(audience: &str) -> Result<(), ApiError> {
    if audience.trim().is_empty() {
        return Err(ApiError::invalid("audience", "The audience is required."));
    }
    if audience.len() > MAX_AUDIENCE_BYTES {
        return Err(ApiError::invalid(
            "audience",
            format!(
                "The audience is {} bytes long; at most {MAX_AUDIENCE_BYTES} are accepted.",
                audience.len()
            ),
        ));
    }
    Ok(())
}

/// A signJwt payload: a JSON object, no claim twice (nor twice but for case: Go's readers take
/// `EXP` for `exp`), and an `exp`, if any, an integer at most 12 hours ahead of `now`. The
/// claims are checked as serde reads them (the last of a key twice, keys as spelt); a verifier
/// that keeps the first, or matches keys without case, would see other claims.
fn check_sign_jwt_claims(payload: &str, now: i64) -> Result<(), ApiError> {
    let claims: serde_json::Map<String, Value> = serde_json::from_str(payload).map_err(|_| {
        ApiError::invalid(
            "payload",
            "The payload must be a JSON object (the JWT claims set) as a string.",
        )
    })?;
    wid_api::json::check_unique_keys_ignoring_case(payload.as_bytes()).map_err(|e| {
        ApiError::invalid(
            "payload",
            format!("The payload must not repeat a claim: {e}."),
        )
    })?;
    if let Some(exp) = claims.get("exp") {
        let exp = exp
            .as_i64()
            .ok_or_else(|| ApiError::invalid("payload", "The 'exp' claim must be an integer."))?;
        if exp > now + MAX_SIGN_JWT_AHEAD_SECS {
            return Err(ApiError::invalid(
                "payload",
                format!(
                    "The 'exp' claim may be at most {MAX_SIGN_JWT_AHEAD_SECS} seconds in the future."
                ),
            ));
        }
    }
    Ok(())
}

impl App {
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

    /// Runs an IAM Credentials verb for `caller` on the account `name` names, and records the
    /// outcome in the audit trail.
    pub(crate) async fn credentials_call(
        &self,
        caller: &Caller,
        name: &AccountName,
        verb: CredentialsVerb,
        input: &Input,
    ) -> Result<Value, ApiError> {
        let result = self.issue(caller, name, verb, input).await;
        if result.is_ok() {
            self.metrics.issued(verb.issued_kind());
        }
        let caller_name = caller.to_string();
        let pod = match caller {
            Caller::Federated(federated) => federated.pod.as_deref().unwrap_or(""),
            _ => "",
        };
        let (target, token_id, failure) = match &result {
            Ok(issued) => (issued.target.as_str(), issued.token_id.as_str(), None),
            Err(e) => (name.account.as_str(), "", Some(e.to_string())),
        };
        self.audit(Event {
            action: verb.action(),
            caller: Some(&caller_name),
            provider: "",
            target,
            token_id,
            pod,
            outcome: failure.as_deref().map_or(Ok(()), Err),
        })
        .await;
        result.map(|issued| issued.answer)
    }

    async fn issue(
        &self,
        caller: &Caller,
        name: &AccountName,
        verb: CredentialsVerb,
        input: &Input,
    ) -> Result<Issued, ApiError> {
        if name.project != "-" {
            return Err(ApiError::invalid(
                "name",
                format!(
                    "The project must be '-': use projects/-/serviceAccounts/{}.",
                    name.account
                ),
            ));
        }
        let account = name.account.as_str();
        match verb {
            CredentialsVerb::GenerateAccessToken => {
                self.generate_access_token(caller, account, input.json()?)
                    .await
            }
            CredentialsVerb::GenerateIdToken => {
                self.generate_id_token(caller, account, input.json()?).await
            }
            CredentialsVerb::SignBlob => self.sign_blob(caller, account, input.json()?).await,
            CredentialsVerb::SignJwt => self.sign_jwt(caller, account, input.json()?).await,
        }
    }

    async fn generate_access_token(
        &self,
        caller: &Caller,
        account: &str,
        request: GenerateAccessTokenRequest,
    ) -> Result<Issued, ApiError> {
        let (scopes, lifetime) = access_token_terms(&request)?;
        let permission = CredentialsVerb::GenerateAccessToken.permission();
        let target = self
            .authorized_target(caller, account, request.delegates.as_deref(), permission)
            .await?;
        let Minted { token, jti, exp } =
            self.mint_access(&target, &scopes, lifetime, (caller, None), now())?;
        let answer = GenerateAccessTokenResponse {
            access_token: token,
            expire_time: wid_api::time::rfc3339(exp),
        };
        Issued::new(&answer, jti, target.email)
    }

    async fn generate_id_token(
        &self,
        caller: &Caller,
        account: &str,
        request: GenerateIdTokenRequest,
    ) -> Result<Issued, ApiError> {
        check_id_token_audience(&request.audience)?;
        let permission = CredentialsVerb::GenerateIdToken.permission();
        let target = self
            .authorized_target(caller, account, request.delegates.as_deref(), permission)
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
        Issued::new(&answer, minted.jti, target.email)
    }

    async fn sign_blob(
        &self,
        caller: &Caller,
        account: &str,
        request: SignBlobRequest,
    ) -> Result<Issued, ApiError> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(request.payload.trim())
            .map_err(|_| ApiError::invalid("payload", "The payload must be standard base64."))?;
        let permission = CredentialsVerb::SignBlob.permission();
        let target = self
            .authorized_target(caller, account, request.delegates.as_deref(), permission)
            .await?;
        let key = self.keys.current().account.clone();
        let kid = key.kid().to_owned();
        let signature = crate::tokens::sign_off_thread(move || key.sign(&payload)).await?;
        let answer = SignBlobResponse {
            key_id: kid.clone(),
            signed_blob: base64::engine::general_purpose::STANDARD.encode(signature),
        };
        Issued::new(&answer, format!("blob:{kid}"), target.email)
    }

    async fn sign_jwt(
        &self,
        caller: &Caller,
        account: &str,
        request: SignJwtRequest,
    ) -> Result<Issued, ApiError> {
        check_sign_jwt_claims(&request.payload, now())?;
        let permission = CredentialsVerb::SignJwt.permission();
        let target = self
            .authorized_target(caller, account, request.delegates.as_deref(), permission)
            .await?;
        let key = self.keys.current().account.clone();
        let kid = key.kid().to_owned();
        let payload = request.payload.into_bytes();
        let jwt =
            crate::tokens::sign_off_thread(move || key.sign_jws_payload(TokenType::Jwt, &payload))
                .await?;
        let answer = SignJwtResponse {
            key_id: kid.clone(),
            signed_jwt: jwt,
        };
        Issued::new(&answer, format!("jwt:{kid}"), target.email)
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

    #[test]
    fn access_token_terms_default_and_bound() {
        let request = |scope: Vec<&str>, lifetime: Option<&str>| GenerateAccessTokenRequest {
            scope: Some(scope.into_iter().map(str::to_owned).collect()),
            lifetime: lifetime.map(str::to_owned),
            ..GenerateAccessTokenRequest::default()
        };
        let (scopes, lifetime) =
            access_token_terms(&request(vec!["a", " ", "b"], None)).expect("valid");
        assert_eq!(
            (scopes, lifetime),
            (vec!["a".to_owned(), "b".to_owned()], 3600)
        );
        assert!(
            access_token_terms(&request(vec![" "], None)).is_err(),
            "no scope"
        );
        assert!(access_token_terms(&request(vec!["a"], Some("3601s"))).is_err());
        assert!(access_token_terms(&request(vec!["a"], Some("0s"))).is_err());
        let long = "s".repeat(MAX_SCOPE_BYTES);
        assert!(access_token_terms(&request(vec![long.as_str()], None)).is_err());
    }

    #[test]
    fn sign_jwt_claims_are_checked() {
        assert!(check_sign_jwt_claims(r#"{"sub": "x", "exp": 100}"#, 0).is_ok());
        assert!(
            check_sign_jwt_claims(r#"{"exp": 43201}"#, 0).is_err(),
            "over 12 h"
        );
        assert!(check_sign_jwt_claims(r#"{"exp": "100"}"#, 0).is_err());
        assert!(check_sign_jwt_claims(r#"{"exp": 1, "EXP": 2}"#, 0).is_err());
        assert!(check_sign_jwt_claims("[1]", 0).is_err());
        assert!(check_id_token_audience("").is_err());
        assert!(check_id_token_audience(&"a".repeat(MAX_AUDIENCE_BYTES + 1)).is_err());
    }
}
