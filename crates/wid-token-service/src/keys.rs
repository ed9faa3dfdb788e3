//! The signing keys: one active RS256 key (ID tokens, signBlob, signJwt) and one active ES256
//! key (access and federated tokens), plus rotated-out keys that stay published until every
//! token they signed has expired.
//!
//! Keys live in the store (the database file is private to the service's user) and are parsed
//! once into a [`KeySet`] snapshot that requests read without waiting; a rotation or retirement
//! builds a new snapshot and swaps it in.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::json;
use wid_api::keys::SigningKeyInfo;
use wid_jose::signer::SigningKey;
use wid_jose::{Algorithm, Jwk};
use wid_store::{SigningKeyRow, Store, StoreError};

/// The longest life of anything wid signs: signJwt accepts `exp` up to 12 h ahead.
pub const MAX_SIGNED_LIFETIME_SECS: i64 = 12 * 3600;
/// A rotated-out key stays published this long past the longest token life, for clock skew and
/// verifiers' caches.
pub const RETIRE_MARGIN_SECS: i64 = 15 * 60;

/// An immutable view of the keys.
pub struct KeySet {
    pub rs256: Arc<SigningKey>,
    pub es256: Arc<SigningKey>,
    /// Every published key (active and rotated-out), for verification and the key documents.
    pub published: Vec<Arc<SigningKey>>,
    pub rows: Vec<SigningKeyRow>,
    /// `/oauth2/v3/certs`, rendered once.
    pub jwks_json: Vec<u8>,
    /// `/oauth2/v1/certs`, rendered once: kid → X.509 PEM, RS256 keys only.
    pub pem_map_json: Vec<u8>,
}

impl KeySet {
    pub fn public_jwks(&self) -> Vec<Jwk> {
        self.published
            .iter()
            .map(|k| k.public_jwk().clone())
            .collect()
    }

    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.published.iter().find(|k| k.kid() == kid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("key {kid}: {source}")]
    Key {
        kid: String,
        source: wid_jose::JoseError,
    },
    #[error("no active {0} key")]
    NoActiveKey(&'static str),
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Algorithm::parse(name)
}

/// The keys, shared by all requests.
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    /// The service's name in certificates.
    issuer: String,
}

impl KeyRing {
    /// Loads the keys, generating an active key of each algorithm that has none.
    pub async fn open<S: Store>(store: &S, issuer: &str, now: i64) -> Result<KeyRing, KeyError> {
        for alg in [Algorithm::Rs256, Algorithm::Es256] {
            let rows = store.list_signing_keys().await?;
            let has_active = rows
                .iter()
                .any(|r| r.algorithm == alg.name() && r.rotate_time.is_none());
            if !has_active {
                let row = new_row(alg, now)?;
                match store.insert_signing_key(&row).await {
                    // Another replica made one meanwhile.
                    Ok(()) | Err(StoreError::AlreadyExists) => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(kid = %row.kid, algorithm = alg.name(), "generated a signing key");
            }
        }
        let set = build(store.list_signing_keys().await?, issuer)?;
        Ok(KeyRing {
            current: RwLock::new(Arc::new(set)),
            issuer: issuer.to_owned(),
        })
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reloads from the store.
    pub async fn reload<S: Store>(&self, store: &S) -> Result<(), KeyError> {
        let set = build(store.list_signing_keys().await?, &self.issuer)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// Rotates the keys of `algorithms`: new keys sign from now on; the old ones stay published
    /// until every token they signed has expired.
    pub async fn rotate<S: Store>(
        &self,
        store: &S,
        algorithms: &[Algorithm],
        now: i64,
    ) -> Result<(), KeyError> {
        for alg in algorithms {
            let row = new_row(*alg, now)?;
            store
                .rotate_signing_key(
                    &row,
                    now,
                    now + MAX_SIGNED_LIFETIME_SECS + RETIRE_MARGIN_SECS,
                )
                .await?;
            tracing::info!(kid = %row.kid, algorithm = alg.name(), "rotated the signing key");
        }
        self.reload(store).await
    }

    /// Deletes keys past their retire time; reloads when any went.
    pub async fn retire<S: Store>(&self, store: &S, now: i64) -> Result<u64, KeyError> {
        let retired = store.delete_retired_signing_keys(now).await?;
        if retired > 0 {
            tracing::info!(retired, "retired signing keys");
            self.reload(store).await?;
        }
        Ok(retired)
    }
}

fn new_row(alg: Algorithm, now: i64) -> Result<SigningKeyRow, KeyError> {
    let key = SigningKey::generate(alg).map_err(|source| KeyError::Key {
        kid: "new".into(),
        source,
    })?;
    Ok(SigningKeyRow {
        kid: key.kid().to_owned(),
        algorithm: alg.name().to_owned(),
        private_pkcs8: key.pkcs8().to_vec(),
        create_time: now,
        rotate_time: None,
        retire_time: None,
    })
}

fn build(rows: Vec<SigningKeyRow>, issuer: &str) -> Result<KeySet, KeyError> {
    let mut published = Vec::new();
    let (mut rs256, mut es256) = (None, None);
    let mut pem_map = BTreeMap::new();
    for row in &rows {
        let Some(alg) = algorithm(&row.algorithm) else {
            tracing::warn!(kid = %row.kid, algorithm = %row.algorithm, "skipping a key of an unknown algorithm");
            continue;
        };
        let key = Arc::new(
            SigningKey::from_pkcs8(alg, &row.private_pkcs8).map_err(|source| KeyError::Key {
                kid: row.kid.clone(),
                source,
            })?,
        );
        if alg == Algorithm::Rs256 {
            // The certificate's validity covers the key's whole published life.
            let not_after = row
                .retire_time
                .unwrap_or(row.create_time + 10 * 365 * 86_400);
            let pem = key
                .certificate_pem(issuer, row.create_time - 3600, not_after)
                .map_err(|source| KeyError::Key {
                    kid: row.kid.clone(),
                    source,
                })?;
            pem_map.insert(key.kid().to_owned(), pem);
        }
        if row.rotate_time.is_none() {
            match alg {
                Algorithm::Rs256 => rs256 = Some(key.clone()),
                Algorithm::Es256 => es256 = Some(key.clone()),
            }
        }
        published.push(key);
    }
    let jwks = json!({ "keys": published.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() });
    Ok(KeySet {
        rs256: rs256.ok_or(KeyError::NoActiveKey("RS256"))?,
        es256: es256.ok_or(KeyError::NoActiveKey("ES256"))?,
        published,
        rows,
        jwks_json: jwks.to_string().into_bytes(),
        pem_map_json: serde_json::to_vec(&pem_map).unwrap_or_default(),
    })
}

/// The admin view of a key.
pub fn info(row: &SigningKeyRow) -> SigningKeyInfo {
    let time = |t: i64| wid_api::time::rfc3339(t);
    SigningKeyInfo {
        kid: row.kid.clone(),
        algorithm: row.algorithm.clone(),
        state: if row.rotate_time.is_none() {
            "ACTIVE"
        } else {
            "PUBLISHED"
        }
        .to_owned(),
        create_time: time(row.create_time),
        rotate_time: row.rotate_time.map(time).unwrap_or_default(),
        retire_time: row.retire_time.map(time).unwrap_or_default(),
    }
}

impl<S: Store> crate::App<S> {
    /// Keys and audit are the service's own, above any project: only the bootstrap admin.
    pub(crate) fn require_service_admin(
        caller: &wid_iam::Caller,
        permission: &'static str,
    ) -> Result<(), crate::error::ApiError> {
        if *caller == wid_iam::Caller::BootstrapAdmin {
            Ok(())
        } else {
            Err(crate::error::ApiError::PermissionDenied { permission })
        }
    }

    pub(crate) fn list_signing_keys(
        &self,
        caller: &wid_iam::Caller,
    ) -> Result<wid_api::keys::ListSigningKeysResponse, crate::error::ApiError> {
        Self::require_service_admin(caller, "wid.signingKeys.list")?;
        let keys = self.keys.current().rows.iter().map(info).collect();
        Ok(wid_api::keys::ListSigningKeysResponse { keys })
    }

    pub(crate) async fn rotate_signing_keys(
        &self,
        caller: &wid_iam::Caller,
        request: wid_api::keys::RotateSigningKeysRequest,
    ) -> Result<wid_api::keys::ListSigningKeysResponse, crate::error::ApiError> {
        Self::require_service_admin(caller, "wid.signingKeys.rotate")?;
        let algorithms = match request.algorithm.as_str() {
            "" => vec![Algorithm::Rs256, Algorithm::Es256],
            name => vec![Algorithm::parse(name).ok_or_else(|| {
                crate::error::ApiError::invalid(
                    "algorithm",
                    format!("Unknown algorithm '{name}': use RS256 or ES256."),
                )
            })?],
        };
        self.keys
            .rotate(&self.store, &algorithms, crate::tokens::now())
            .await
            .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?;
        self.list_signing_keys(caller)
    }
}
