//! The OAuth2 token endpoint (`POST /token`, what Google serves at `oauth2.googleapis.com/token`)
//! for service-account keys: the RFC 7523 JWT-bearer grant. The assertion is signed with one of
//! the account's keys (`iss` its email, `kid` the key's id when the client sends one); `scope`
//! asks for an access token, `target_audience` for an ID token. Errors are OAuth's, in Google's
//! words. Every grant, given or refused, is in the audit trail with the key's name.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use wid_iam::Caller;
use wid_jose::jwk::Jwk;
use wid_store::{AccountKeyRow, ServiceAccountRow, StoreError};

use crate::App;
use crate::audit::Event;
use crate::error::ApiError;
use crate::tokens::{ACCESS_TOKEN_LIFETIME_SECS, now};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The audience every client puts in its assertion (Python's and Node's google-auth, whatever
/// the key file's `token_uri`); this service's own `/token` is taken too.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The longest an assertion may live, and how far its clock may be off.
const MAX_ASSERTION_LIFETIME: i64 = 3600;
const CLOCK_SKEW: i64 = 300;

const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIMES: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

#[derive(Deserialize)]
struct GrantForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    assertion: String,
}

fn oauth(error: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        error,
        description: description.into(),
    }
}

fn invalid_grant(description: impl Into<String>) -> ApiError {
    oauth("invalid_grant", description)
}

/// What an assertion asks for.
enum Asked {
    AccessToken(Vec<String>),
    IdToken(String),
}

/// The form's assertion, if the form is a JWT-bearer grant.
fn assertion_of(body: &[u8]) -> Result<String, ApiError> {
    let form: GrantForm = serde_urlencoded::from_bytes(body)
        .map_err(|_| oauth("invalid_request", "The request body is not a form."))?;
    if form.grant_type != JWT_BEARER {
        return Err(oauth(
            "unsupported_grant_type",
            format!("Invalid grant_type: {}", form.grant_type),
        ));
    }
    if form.assertion.is_empty() {
        return Err(oauth(
            "invalid_request",
            "Missing required parameter: assertion",
        ));
    }
    Ok(form.assertion)
}

/// The claims' terms, checked as Google checks them: the audience, the times, and what is
/// asked for. Pure.
fn terms(claims: &Map<String, Value>, own_token_uri: &str, now: i64) -> Result<Asked, ApiError> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let aud = text("aud");
    if aud != GOOGLE_TOKEN_URI && aud != own_token_uri {
        return Err(invalid_grant(format!(
            "Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URI}"
        )));
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let (Some(iat), Some(exp)) = (number("iat"), number("exp")) else {
        return Err(invalid_grant(BAD_TIMES));
    };
    if exp <= iat
        || exp - iat > MAX_ASSERTION_LIFETIME
        || iat > now + CLOCK_SKEW
        || exp < now - CLOCK_SKEW
    {
        return Err(invalid_grant(BAD_TIMES));
    }
    match (text("scope"), text("target_audience")) {
        ("", "") => Err(oauth(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )),
        (scope, "") => Ok(Asked::AccessToken(
            scope.split_whitespace().map(str::to_owned).collect(),
        )),
        (_, audience) => Ok(Asked::IdToken(audience.to_owned())),
    }
}

impl App {
    /// `POST /token`.
    pub(crate) async fn key_grant(&self, body: &[u8]) -> Result<Value, ApiError> {
        let assertion = assertion_of(body)?;
        let unverified = wid_jose::jws::parse(&assertion)
            .map_err(|e| invalid_grant(format!("Invalid JWT: {e}")))?;
        let email = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kid = unverified.header.kid.clone().unwrap_or_default();
        let (account, key) = match self.grant_key(&email, &kid, &assertion).await {
            Ok(found) => found,
            Err(e) => {
                self.audit_grant(&email, None, "", Err(&e.to_string()))
                    .await;
                return Err(e);
            }
        };
        let result = self.grant(&account, &key, &assertion).await;
        let (token_id, failure) = match &result {
            Ok((_, jti)) => (jti.as_str(), None),
            Err(e) => ("", Some(e.to_string())),
        };
        let outcome = failure.as_deref().map_or(Ok(()), Err);
        self.audit_grant(&email, Some(&key), token_id, outcome)
            .await;
        if result.is_ok()
            && let Err(e) = self.store.touch_account_key(&key.key_id, now()).await
        {
            tracing::warn!(error = %e, key = %key.key_id, "cannot record a key's use");
        }
        result.map(|(answer, _)| answer)
    }

    /// The account `email` and its usable key that signed `assertion`: the one its `kid` names,
    /// or else each in turn (Node's client sends no `kid`).
    async fn grant_key(
        &self,
        email: &str,
        kid: &str,
        assertion: &str,
    ) -> Result<(ServiceAccountRow, AccountKeyRow), ApiError> {
        let account = match self.store.get_service_account(email).await {
            Err(StoreError::NotFound) => {
                return Err(invalid_grant("Invalid grant: account not found"));
            }
            other => other?,
        };
        if account.disabled || email.is_empty() {
            return Err(invalid_grant("Invalid grant: account not found"));
        }
        let keys = self.store.list_account_keys(&account.unique_id).await?;
        let now = now();
        let named: Vec<&AccountKeyRow> = keys.iter().filter(|k| k.key_id == kid).collect();
        let candidates: Vec<&AccountKeyRow> = if named.is_empty() {
            keys.iter().collect()
        } else {
            named
        };
        for key in candidates.into_iter().filter(|k| k.is_usable(now)) {
            let jwk = crate::iam::certificates::rsa_jwk(&key.certificate_pem, &key.key_id)?;
            let jwk: Jwk =
                serde_json::from_value(jwk).map_err(|e| ApiError::Internal(e.to_string()))?;
            if wid_jose::jws::verify_with_key(assertion, &jwk).is_ok() {
                return Ok((account, key.clone()));
            }
        }
        Err(invalid_grant(BAD_SIGNATURE))
    }

    /// The token the verified `assertion` asks for: the answer, and the audit's token id.
    async fn grant(
        &self,
        account: &ServiceAccountRow,
        key: &AccountKeyRow,
        assertion: &str,
    ) -> Result<(Value, String), ApiError> {
        let claims = wid_jose::jws::parse(assertion)
            .map_err(|e| invalid_grant(format!("Invalid JWT: {e}")))?
            .claims;
        let own = format!("{}/token", self.issuer.trim_end_matches('/'));
        let now = now();
        match terms(&claims, &own, now)? {
            Asked::AccessToken(scopes) => {
                let actor = Caller::ServiceAccount(account.email.clone());
                let minted = self.mint_access(
                    account,
                    &scopes,
                    ACCESS_TOKEN_LIFETIME_SECS,
                    (&actor, Some(&key.key_id)),
                    now,
                )?;
                let answer = json!({
                    "access_token": minted.token,
                    "expires_in": minted.exp - now,
                    "token_type": "Bearer",
                });
                Ok((answer, minted.jti))
            }
            Asked::IdToken(audience) => {
                let minted = self
                    .mint_id_token(account, &audience, true, true, now)
                    .await?;
                Ok((json!({ "id_token": minted.token }), minted.jti))
            }
        }
    }

    /// The trail's record of a grant: the account, and the key by its resource name.
    async fn audit_grant(
        &self,
        email: &str,
        key: Option<&AccountKeyRow>,
        token_id: &str,
        outcome: Result<(), &str>,
    ) {
        let caller = format!("serviceAccount:{email}");
        let key_name = key.map_or_else(String::new, |k| {
            format!("projects/-/serviceAccounts/{email}/keys/{}", k.key_id)
        });
        self.audit(Event {
            action: "key_grant",
            caller: key.is_some().then_some(caller.as_str()),
            provider: &key_name,
            target: email,
            token_id,
            pod: "",
            outcome,
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn terms_are_checked_as_google_checks_them() {
        let own = "https://wid.example/token";
        let now = 1_800_000_000;
        let good = |extra: Value| {
            let mut c = claims(json!({"aud": GOOGLE_TOKEN_URI, "iat": now, "exp": now + 3600}));
            c.extend(claims(extra));
            c
        };
        assert!(
            matches!(terms(&good(json!({"scope": "a b"})), own, now), Ok(Asked::AccessToken(s)) if s == ["a", "b"])
        );
        assert!(
            matches!(terms(&good(json!({"target_audience": "https://x"})), own, now), Ok(Asked::IdToken(a)) if a == "https://x")
        );
        let mut ours = good(json!({"scope": "a"}));
        ours.insert("aud".into(), json!(own));
        assert!(
            terms(&ours, own, now).is_ok(),
            "this service's own token URI"
        );
        let refused = |c: Map<String, Value>| match terms(&c, own, now) {
            Err(ApiError::OAuth { error, description }) => format!("{error}: {description}"),
            _ => "accepted".into(),
        };
        let mut wrong_aud = good(json!({"scope": "a"}));
        wrong_aud.insert("aud".into(), json!("https://elsewhere/token"));
        assert!(refused(wrong_aud).contains("Failed audience check"));
        for times in [
            json!({"iat": now, "exp": now + 3601}),
            json!({"iat": now + 600, "exp": now + 1200}),
            json!({"iat": now - 7200, "exp": now - 3700}),
            json!({"iat": now, "exp": now}),
            json!({"iat": "now", "exp": now + 60}),
        ] {
            let mut c = good(json!({"scope": "a"}));
            c.extend(claims(times));
            assert!(
                refused(c)
                    .starts_with("invalid_grant: Invalid JWT: Token must be a short-lived token")
            );
        }
        assert!(refused(good(json!({}))).starts_with("invalid_scope"));
    }

    #[test]
    fn only_a_jwt_bearer_form_is_a_grant() {
        let refused = |body: &str| match assertion_of(body.as_bytes()) {
            Err(ApiError::OAuth { error, .. }) => error,
            _ => "accepted",
        };
        assert_eq!(
            refused("grant_type=client_credentials&assertion=x"),
            "unsupported_grant_type"
        );
        assert_eq!(
            refused(&format!("grant_type={JWT_BEARER}")),
            "invalid_request"
        );
        assert_eq!(
            refused(&format!(
                "grant_type={}&assertion=a.b.c",
                JWT_BEARER.replace(':', "%3A")
            )),
            "accepted"
        );
    }
}
