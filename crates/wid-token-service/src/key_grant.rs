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
        let (account, key) = match self.signing_key_of(&email, &kid, &assertion).await {
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
    pub(crate) async fn signing_key_of(
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

/// The audiences a self-signed JWT may name: this service's base URL, or the Google API a
/// client thinks it calls (the endpoint override keeps the audience it would have used).
const SELF_SIGNED_AUDIENCES: [&str; 3] = [
    "https://iam.googleapis.com/",
    "https://iamcredentials.googleapis.com/",
    "https://sts.googleapis.com/",
];
/// Scopes a self-signed JWT may carry instead of an audience (google-auth's
/// `always_use_jwt_access`).
const SELF_SIGNED_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/iam",
];

/// Whether the claims of a self-signed JWT are acceptable at `now`: `iss` = `sub` (the
/// account), an audience of this service's (`own_base`) or of the API the client thinks it
/// calls, or a cloud-platform scope, and a life of an hour at most. Pure.
fn self_signed_terms(claims: &Map<String, Value>, own_base: &str, now: i64) -> bool {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let aud = text("aud");
    let audience_ok = !aud.is_empty()
        && (aud.trim_end_matches('/') == own_base.trim_end_matches('/')
            || SELF_SIGNED_AUDIENCES.contains(&aud));
    let scope_ok = text("scope")
        .split_whitespace()
        .any(|s| SELF_SIGNED_SCOPES.contains(&s));
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let times_ok = match (number("iat"), number("exp")) {
        (Some(iat), Some(exp)) => {
            iat < exp
                && exp - iat <= MAX_ASSERTION_LIFETIME
                && iat <= now + CLOCK_SKEW
                && now < exp + CLOCK_SKEW
        }
        _ => false,
    };
    !text("iss").is_empty() && text("iss") == text("sub") && (audience_ok || scope_ok) && times_ok
}

impl App {
    /// The caller of a self-signed JWT (a JWT an account signed with one of its own keys, as
    /// Google's APIs take them in place of an access token); `None` when `token` is no such
    /// JWT, or its key or terms do not hold.
    pub(crate) async fn self_signed_caller(&self, token: &str) -> Result<Option<Caller>, ApiError> {
        let Ok(parsed) = wid_jose::jws::parse(token) else {
            return Ok(None);
        };
        if !self_signed_terms(&parsed.claims, &self.issuer, now()) {
            return Ok(None);
        }
        let email = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kid = parsed.header.kid.clone().unwrap_or_default();
        match self.signing_key_of(&email, &kid, token).await {
            Ok((account, key)) => {
                let key_name = format!(
                    "projects/-/serviceAccounts/{}/keys/{}",
                    account.email, key.key_id
                );
                let caller = format!("serviceAccount:{}", account.email);
                self.audit(Event {
                    action: "key_self_signed",
                    caller: Some(&caller),
                    provider: &key_name,
                    target: &account.email,
                    token_id: "",
                    pod: "",
                    outcome: Ok(()),
                })
                .await;
                if let Err(e) = self.store.touch_account_key(&key.key_id, now()).await {
                    tracing::warn!(error = %e, key = %key.key_id, "cannot record a key's use");
                }
                Ok(Some(Caller::ServiceAccount(account.email)))
            }
            Err(ApiError::Unavailable(reason)) => Err(ApiError::Unavailable(reason)),
            Err(_) => Ok(None),
        }
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
    fn self_signed_jwts_name_their_account_an_audience_or_scope_and_live_an_hour() {
        let own = "https://wid.example";
        let now = 1_800_000_000;
        let base = json!({"iss": "a@p.iam.gserviceaccount.com", "sub": "a@p.iam.gserviceaccount.com",
            "iat": now, "exp": now + 3600});
        let with = |extra: Value| {
            let mut c = claims(base.clone());
            c.extend(claims(extra));
            c
        };
        for good in [
            json!({"aud": "https://wid.example/"}),
            json!({"aud": "https://iam.googleapis.com/"}),
            json!({"scope": "https://www.googleapis.com/auth/cloud-platform"}),
        ] {
            assert!(self_signed_terms(&with(good.clone()), own, now), "{good}");
        }
        for bad in [
            json!({}),
            json!({"aud": "https://elsewhere.example/"}),
            json!({"scope": "https://www.googleapis.com/auth/devstorage.read_only"}),
            json!({"aud": own, "sub": "b@p.iam.gserviceaccount.com"}),
            json!({"aud": own, "exp": now + 7200}),
            json!({"aud": own, "iat": now - 7200, "exp": now - 3600}),
        ] {
            assert!(!self_signed_terms(&with(bad.clone()), own, now), "{bad}");
        }
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
