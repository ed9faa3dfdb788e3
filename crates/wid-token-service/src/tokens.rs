//! Minting wid's tokens, and recognising them when they come back as bearer tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use wid_api::tokens::{AccessTokenClaims, FederatedIdentity, IdTokenClaims, TokenKind, WidClaims};
use wid_iam::{Caller, FederatedCaller, Vouch};
use wid_jose::signer::TokenType;
use wid_store::{ServiceAccountRow, StoreError};

use crate::App;
use crate::error::ApiError;

/// Access and federated tokens live an hour, as Google's do.
pub const ACCESS_TOKEN_LIFETIME_SECS: i64 = 3600;
/// ID tokens: `exp = iat + 3600`, as Google's.
pub const ID_TOKEN_LIFETIME_SECS: i64 = 3600;
/// The scopes that let a token call IAM (spec 3.1).
const IAM_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/iam",
    "https://www.googleapis.com/auth/cloud-platform",
];

/// Tolerated clock difference when checking wid's own tokens.
const OWN_TOKEN_SKEW_SECS: i64 = 30;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh token id: 128 random bits in hex.
pub fn new_token_id() -> String {
    wid_runtime::secrets::random_hex::<16>()
}

/// A minted token with what the audit trail and the answer need.
pub struct Minted {
    pub token: String,
    pub jti: String,
    pub exp: i64,
}

/// Runs an RSA signature on the blocking pool: at a quarter of a millisecond each, a burst of
/// them must not stall the async workers.
pub async fn sign_off_thread<T>(
    sign: impl FnOnce() -> Result<T, wid_jose::JoseError> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
{
    tokio::task::spawn_blocking(sign)
        .await
        .map_err(|e| ApiError::Internal(format!("signing task: {e}")))?
        .map_err(|e| ApiError::Internal(format!("signing: {e}")))
}

/// The `principal://` name of a federated identity.
pub fn principal_of(identity: &FederatedIdentity) -> String {
    wid_iam::member::principal_name(
        &identity.project_number,
        &identity.pool_id,
        &identity.subject,
    )
}

fn caller_of(identity: FederatedIdentity) -> FederatedCaller {
    let vouch = match (identity.clusters.is_empty(), identity.shared_cluster) {
        (true, _) => Vouch::Provider,
        (false, true) => Vouch::SharedCluster,
        (false, false) => Vouch::IsolatedCluster,
    };
    FederatedCaller {
        vouch,
        project_number: identity.project_number,
        pool_id: identity.pool_id,
        subject: identity.subject,
        groups: identity.groups,
        attributes: identity.attributes,
        namespace: identity.namespace,
        clusters: identity.clusters,
        service_account_uid: identity.service_account_uid,
        pod: identity.pod,
    }
}

impl App {
    /// The issuer of everything wid signs.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn sign_access(&self, claims: &AccessTokenClaims) -> Result<String, ApiError> {
        // ES256 signs in microseconds: no need to leave the async worker.
        self.keys
            .current()
            .access
            .sign_jwt(TokenType::AccessToken, claims)
            .map_err(|e| ApiError::Internal(format!("signing: {e}")))
    }

    /// A federated access token for `identity`.
    pub fn mint_federated(
        &self,
        identity: FederatedIdentity,
        scope: &str,
        now: i64,
    ) -> Result<Minted, ApiError> {
        let jti = new_token_id();
        let exp = now + ACCESS_TOKEN_LIFETIME_SECS;
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: principal_of(&identity),
            aud: self.issuer.clone(),
            iat: now,
            exp,
            jti: jti.clone(),
            scope: scope.to_owned(),
            client_id: format!("{}/{}", identity.project_number, identity.pool_id),
            wid: WidClaims {
                kind: Some(TokenKind::Federated),
                federated: Some(identity),
                ..WidClaims::default()
            },
        };
        Ok(Minted {
            token: self.sign_access(&claims)?,
            jti,
            exp,
        })
    }

    /// An access token for a service account, asked for by `actor`.
    /// `key`: the account's key the actor proved itself with (a JWT-bearer grant), if any.
    pub fn mint_access(
        &self,
        account: &ServiceAccountRow,
        scopes: &[String],
        lifetime: i64,
        (actor, key): (&Caller, Option<&str>),
        now: i64,
    ) -> Result<Minted, ApiError> {
        let jti = new_token_id();
        let exp = now + lifetime;
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: account.unique_id.clone(),
            aud: self.issuer.clone(),
            iat: now,
            exp,
            jti: jti.clone(),
            scope: scopes.join(" "),
            client_id: account.unique_id.clone(),
            wid: WidClaims {
                kind: Some(TokenKind::ServiceAccount),
                email: Some(account.email.clone()),
                act: Some(actor.to_string()),
                federated: None,
                key: key.map(str::to_owned),
            },
        };
        Ok(Minted {
            token: self.sign_access(&claims)?,
            jti,
            exp,
        })
    }

    /// An RS256 ID token for a service account. RSA signing takes a quarter of a millisecond, so
    /// it runs on the blocking pool to keep a burst from stalling the async workers.
    pub async fn mint_id_token(
        &self,
        account: &ServiceAccountRow,
        audience: &str,
        include_email: bool,
        email_azp: bool,
        now: i64,
    ) -> Result<Minted, ApiError> {
        let claims = IdTokenClaims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            azp: if email_azp {
                account.email.clone()
            } else {
                account.unique_id.clone()
            },
            sub: account.unique_id.clone(),
            iat: now,
            exp: now + ID_TOKEN_LIFETIME_SECS,
            email: include_email.then(|| account.email.clone()),
            email_verified: include_email.then_some(true),
        };
        let key = self.keys.current().id.clone();
        let token = sign_off_thread(move || key.sign_jwt(TokenType::Jwt, &claims)).await?;
        // Google's ID tokens carry no jti; the audit names this one by an id of its own.
        Ok(Minted {
            token,
            jti: new_token_id(),
            exp: now + ID_TOKEN_LIFETIME_SECS,
        })
    }

    /// Checks a wid access token (federated or service-account): signature by a published key,
    /// issuer, audience and times. Returns its claims.
    pub async fn verify_access_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<AccessTokenClaims, String> {
        // Clients present one token for up to an hour: verify its signature once.
        let claims = match self.verified_tokens.get(&token.to_owned()) {
            Some(claims) => claims,
            None => {
                let claims = self
                    .keys
                    .verify_fresh(&self.store, |keys| verify_access_signature(keys, token))
                    .await?;
                if claims.aud != claims.iss || !self.is_own_issuer(&claims.iss).await {
                    return Err("issued by another token service".into());
                }
                self.verified_tokens.put(token.to_owned(), claims.clone());
                claims
            }
        };
        if now > claims.exp + OWN_TOKEN_SKEW_SECS {
            return Err("expired".into());
        }
        if claims.iat > now + OWN_TOKEN_SKEW_SECS {
            return Err("issued in the future".into());
        }
        Ok(claims)
    }

    /// Whether `iss` is this service's: this replica's issuer, or another replica's.
    pub async fn is_own_issuer(&self, iss: &str) -> bool {
        iss == self.issuer || self.store.is_issuer(iss).await.unwrap_or(false)
    }

    /// Whether what vouched for a token still stands: a service-account token dies with its
    /// account (deleted or disabled); a federated token with its pool, provider or cluster. An
    /// error only when the database cannot tell (503): a token is never taken for dead, nor
    /// for live, for want of the database.
    pub async fn token_is_live(&self, claims: &AccessTokenClaims) -> Result<bool, StoreError> {
        match (&claims.wid.kind, &claims.wid.federated) {
            (Some(TokenKind::ServiceAccount), _) => {
                let account = live(
                    self.store.get_service_account(&claims.sub).await,
                    |account| {
                        !account.disabled && Some(&account.email) == claims.wid.email.as_ref()
                    },
                )?;
                match &claims.wid.key {
                    Some(key) if account => {
                        live(self.store.get_account_key(&claims.sub, key).await, |key| {
                            key.is_usable(now())
                        })
                    }
                    _ => Ok(account),
                }
            }
            (Some(TokenKind::Federated), Some(identity)) => self.provider_is_live(identity).await,
            _ => Ok(false),
        }
    }

    /// `projects/P/locations/L/clusters/C` or `projects/N/locations/global/workloadIdentityPools/POOL/providers/P`.
    async fn provider_is_live(&self, identity: &FederatedIdentity) -> Result<bool, StoreError> {
        let parts: Vec<&str> = identity.provider.split('/').collect();
        match parts.as_slice() {
            ["projects", project, "locations", location, "clusters", name] => live(
                self.store.list_clusters(project, location).await,
                |clusters| {
                    clusters.iter().any(|c| {
                        c.name == *name
                            && identity
                                .provider_uid
                                .as_ref()
                                .is_none_or(|uid| *uid == c.uid)
                    })
                },
            ),
            [
                "projects",
                number,
                "locations",
                "global",
                "workloadIdentityPools",
                pool,
                "providers",
                id,
            ] => {
                let pool_live = live(self.store.get_pool(number, pool).await, |p| !p.disabled)?;
                Ok(pool_live
                    && live(self.store.get_provider(number, pool, id).await, |p| {
                        !p.disabled
                    })?)
            }
            _ => Ok(false),
        }
    }

    /// The caller a wid access token stands for, if the token is live and carries a scope that
    /// reaches IAM (`iam` or `cloud-platform`).
    pub async fn caller_of_token(
        &self,
        token: &str,
    ) -> Result<(Caller, AccessTokenClaims), ApiError> {
        let claims = self
            .verify_access_token(token, now())
            .await
            .map_err(|_| ApiError::InvalidCredentials)?;
        if !self.token_is_live(&claims).await? {
            return Err(ApiError::InvalidCredentials);
        }
        let reaches_iam = claims.scope.split(' ').any(|s| IAM_SCOPES.contains(&s));
        if !reaches_iam {
            return Err(ApiError::InsufficientScope);
        }
        let caller = match (&claims.wid.kind, &claims.wid.federated, &claims.wid.email) {
            (Some(TokenKind::Federated), Some(identity), _) => {
                Caller::Federated(caller_of(identity.clone()))
            }
            (Some(TokenKind::ServiceAccount), _, Some(email)) => {
                Caller::ServiceAccount(email.clone())
            }
            _ => return Err(ApiError::InvalidCredentials),
        };
        Ok((caller, claims))
    }
}

/// What a lookup says of a token's voucher: `alive` of what was found; dead if it is gone (or
/// unreadable: fail closed); an error only if the database could not be asked.
fn live<T>(
    found: Result<T, StoreError>,
    alive: impl FnOnce(T) -> bool,
) -> Result<bool, StoreError> {
    match found {
        Ok(value) => Ok(alive(value)),
        Err(e) if e.is_unavailable() => Err(e),
        Err(_) => Ok(false),
    }
}

/// The signature and type checks of a wid access token, against `keys`.
fn verify_access_signature(
    keys: &crate::keys::KeySet,
    token: &str,
) -> Result<AccessTokenClaims, String> {
    // Only access-token keys: a signature by any other key (an ID-token key, or the signBlob
    // key a caller can drive) never makes an access token.
    let verified = wid_jose::verify(token, &keys.access_keys.jwks).map_err(|e| e.to_string())?;
    if verified.alg != wid_jose::Algorithm::Es256
        || verified.header.typ.as_deref() != Some("at+jwt")
    {
        return Err("not a wid access token".into());
    }
    serde_json::from_value(serde_json::Value::Object(verified.claims))
        .map_err(|e| format!("bad claims: {e}"))
}
