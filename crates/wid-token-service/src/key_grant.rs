//! The OAuth2 token endpoint (`POST /token`, what Google serves at `oauth2.googleapis.com/token`)
//! for service-account keys: the RFC 7523 JWT-bearer grant. The assertion is signed with one of
//! the account's keys (`iss` its email, `kid` the key's id when the client sends one); `scope`
//! asks for an access token, `target_audience` for an ID token. Errors are OAuth's, in Google's
//! words. Every grant, given or refused, is in the audit trail with the key's name.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use wid_iam::Caller;
use wid_store::{AccountKeyRow, ServiceAccountRow, StoreError};

use crate::App;
use crate::audit::Event;
use crate::error::ApiError;
use crate::sts::rules::{invalid_grant, oauth};
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

/// A use of a key, for the audit trail: `key_grant` or `key_self_signed`, the account's email,
/// and the key (none for a grant refused before one was found).
struct KeyUse<'a> {
    action: &'static str,
    email: &'a str,
    key: Option<&'a AccountKeyRow>,
}

/// The account a key's JWT names: its `iss` (empty when there is none).
fn issuer(claims: &Map<String, Value>) -> String {
    claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
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
    if !short_lived(claims, now) {
        return Err(invalid_grant(BAD_TIMES));
    }
    // Domain-wide delegation (a `sub` other than the account) is Google Workspace's, not wid's.
    if !matches!(text("sub"), "") && text("sub") != text("iss") {
        return Err(oauth(
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        ));
    }
    let (scope, audience) = (text("scope").trim(), text("target_audience").trim());
    let invalid_scope = || {
        oauth(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )
    };
    // The bounds of IAM Credentials' own requests: a token too large to be taken back is none.
    if scope.len() > wid_api::bounds::MAX_SCOPE_BYTES
        || audience.len() > wid_api::bounds::MAX_AUDIENCE_BYTES
    {
        return Err(invalid_scope());
    }
    match (scope, audience) {
        ("", "") => Err(invalid_scope()),
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
        let email = issuer(&unverified.claims);
        let kid = unverified.header.kid.clone().unwrap_or_default();
        // The cheap checks of what is asked before any key is looked up.
        let own = format!("{}/token", self.issuer.trim_end_matches('/'));
        let found = match terms(&unverified.claims, &own, now()) {
            Ok(asked) => self
                .signing_key_of(&email, &kid, &assertion)
                .await
                .map(|(account, key)| (asked, account, key)),
            Err(e) => Err(e),
        };
        let (asked, account, key) = match found {
            Ok(found) => found,
            Err(e) => {
                let used = KeyUse {
                    action: "key_grant",
                    email: &email,
                    key: None,
                };
                self.audit_key_use(used, "", Err(&e.to_string())).await;
                return Err(e);
            }
        };
        let result = self.grant(&account, &key, asked).await;
        let (token_id, failure) = match &result {
            Ok((_, jti)) => (jti.as_str(), None),
            Err(e) => ("", Some(e.to_string())),
        };
        let outcome = failure.as_deref().map_or(Ok(()), Err);
        let used = KeyUse {
            action: "key_grant",
            email: &email,
            key: Some(&key),
        };
        self.audit_key_use(used, token_id, outcome).await;
        if result.is_ok() {
            self.record_use(&key).await;
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
        // A `kid` names the one key to try; without one, each of the account's (at most
        // MAX_KEYS_PER_ACCOUNT) in turn.
        let candidates: Vec<&AccountKeyRow> = keys
            .iter()
            .filter(|k| kid.is_empty() || k.key_id == kid)
            .collect();
        for key in candidates.into_iter().filter(|k| k.is_usable(now)) {
            let jwk = crate::iam::certificates::rsa_jwk(&key.certificate_pem, &key.key_id)?;
            if wid_jose::jws::verify_with_key(assertion, &jwk).is_ok() {
                return Ok((account, key.clone()));
            }
        }
        Err(invalid_grant(BAD_SIGNATURE))
    }

    /// The token a verified assertion asks for: the answer, and the audit's token id.
    async fn grant(
        &self,
        account: &ServiceAccountRow,
        key: &AccountKeyRow,
        asked: Asked,
    ) -> Result<(Value, String), ApiError> {
        let now = now();
        match asked {
            Asked::AccessToken(scopes) => {
                let actor = Caller::ServiceAccount(account.email.clone());
                // No longer than the key that bought it.
                let lifetime = ACCESS_TOKEN_LIFETIME_SECS.min(key.valid_before - now);
                let minted =
                    self.mint_access(account, &scopes, lifetime, (&actor, Some(&key.key_id)), now)?;
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

    /// Keeps the key's last use, for clean-up by use: at most once a minute, so that a client
    /// calling with self-signed JWTs does not write at every request.
    async fn record_use(&self, key: &AccountKeyRow) {
        let now = now();
        if key.last_used.is_some_and(|used| now - used < 60) {
            return;
        }
        if let Err(e) = self.store.touch_account_key(&key.key_id, now).await {
            tracing::warn!(error = %e, key = %key.key_id, "cannot record a key's use");
        }
    }

    /// The trail's record of a key's use (or of a grant refused before a key was found): the
    /// account, and the key by its resource name as the provider that vouched for the caller.
    async fn audit_key_use(&self, used: KeyUse<'_>, token_id: &str, outcome: Result<(), &str>) {
        let caller = format!("serviceAccount:{}", used.email);
        let key_name = used.key.map_or_else(String::new, |k| {
            format!(
                "projects/-/serviceAccounts/{}/keys/{}",
                used.email, k.key_id
            )
        });
        self.audit(Event {
            action: used.action,
            caller: used.key.is_some().then_some(caller.as_str()),
            provider: &key_name,
            target: used.email,
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
    !text("iss").is_empty()
        && text("iss") == text("sub")
        && (audience_ok || scope_ok)
        && short_lived(claims, now)
}

/// Whether a JWT's `iat` and `exp` make it short-lived and current at `now`: issued no later
/// than the clock skew ahead, living an hour at most, not yet expired (within the skew). In
/// checked arithmetic: times near `i64`'s ends are refused, never wrapped into acceptance.
fn short_lived(claims: &Map<String, Value>, now: i64) -> bool {
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let (Some(iat), Some(exp)) = (number("iat"), number("exp")) else {
        return false;
    };
    let lifetime = exp.checked_sub(iat);
    let expired = exp.checked_add(CLOCK_SKEW).is_none_or(|end| end <= now);
    let future = now
        .checked_add(CLOCK_SKEW)
        .is_none_or(|latest| iat > latest);
    lifetime.is_some_and(|l| (1..=MAX_ASSERTION_LIFETIME).contains(&l)) && !expired && !future
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
        let email = issuer(&parsed.claims);
        let kid = parsed.header.kid.clone().unwrap_or_default();
        match self.signing_key_of(&email, &kid, token).await {
            Ok((account, key)) => {
                let used = KeyUse {
                    action: "key_self_signed",
                    email: &account.email,
                    key: Some(&key),
                };
                self.audit_key_use(used, "", Ok(())).await;
                self.record_use(&key).await;
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
            json!({"iat": -1000, "exp": i64::MAX - 500}),
            json!({"iat": i64::MIN, "exp": i64::MAX}),
            json!({"iat": now, "exp": i64::MAX}),
        ] {
            let mut c = good(json!({"scope": "a"}));
            c.extend(claims(times));
            assert!(
                refused(c)
                    .starts_with("invalid_grant: Invalid JWT: Token must be a short-lived token")
            );
        }
        assert!(refused(good(json!({}))).starts_with("invalid_scope"));
        assert!(refused(good(json!({"scope": "  "}))).starts_with("invalid_scope"));
        assert!(refused(good(json!({"scope": "s".repeat(20_000)}))).starts_with("invalid_scope"));
        let delegated = good(
            json!({"scope": "a", "iss": "a@p.iam.gserviceaccount.com", "sub": "user@example.com"}),
        );
        assert!(refused(delegated).starts_with("unauthorized_client"));
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
            json!({"aud": own, "iat": -1000, "exp": i64::MAX - 500}),
            json!({"aud": own, "iat": i64::MIN, "exp": i64::MAX}),
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
