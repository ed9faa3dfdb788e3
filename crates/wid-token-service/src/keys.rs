//! The signing keys: one active key per purpose (RS256 ID tokens, ES256 access and federated
//! tokens, RS256 signBlob/signJwt), plus rotated-out keys that stay published until every token
//! they signed has expired.
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

/// What a key signs. Keys of different purposes never verify each other's tokens, so a
/// signature obtained for one kind (signBlob, say) can never pass as another (an ID token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// RS256 ID tokens; published at `/oauth2/v3/certs` and `/oauth2/v1/certs`.
    IdToken,
    /// ES256 access and federated tokens; published there too, for offline verification.
    AccessToken,
    /// RS256 signatures of signBlob and signJwt; published only per account, at
    /// `/service_accounts/v1/metadata/{jwk,x509}/EMAIL`.
    AccountSigning,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [
        Purpose::IdToken,
        Purpose::AccessToken,
        Purpose::AccountSigning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Purpose::IdToken => "id_token",
            Purpose::AccessToken => "access_token",
            Purpose::AccountSigning => "account_signing",
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Purpose::IdToken | Purpose::AccountSigning => Algorithm::Rs256,
            Purpose::AccessToken => Algorithm::Es256,
        }
    }

    fn parse(name: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The published keys of one purpose, and their documents rendered once.
pub struct Published {
    pub keys: Vec<Arc<SigningKey>>,
    pub jwks: Vec<Jwk>,
}

/// An immutable view of the keys.
pub struct KeySet {
    pub id: Arc<SigningKey>,
    pub access: Arc<SigningKey>,
    pub account: Arc<SigningKey>,
    pub id_keys: Published,
    pub access_keys: Published,
    pub account_keys: Published,
    pub rows: Vec<SigningKeyRow>,
    /// `/oauth2/v3/certs`: ID-token and access-token keys.
    pub jwks_json: Vec<u8>,
    /// `/oauth2/v1/certs`: the same kids, as X.509 PEM.
    pub pem_map_json: Vec<u8>,
    /// The per-account documents: account-signing keys only.
    pub account_jwks_json: Vec<u8>,
    pub account_pem_map_json: Vec<u8>,
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

/// The keys, shared by all requests.
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    /// When a token's unknown key last made the ring reload (seconds since the epoch).
    last_unknown_reload: std::sync::atomic::AtomicI64,
    /// The service's name in certificates.
    issuer: String,
}

impl KeyRing {
    /// Loads the keys, generating an active key of each purpose that has none.
    pub async fn open(store: &Store, issuer: &str, now: i64) -> Result<KeyRing, KeyError> {
        for purpose in Purpose::ALL {
            let rows = store.list_signing_keys().await?;
            let has_active = rows
                .iter()
                .any(|r| r.purpose == purpose.name() && r.rotate_time.is_none());
            if !has_active {
                let row = new_row(purpose, now)?;
                match store.insert_signing_key(&row).await {
                    // Another replica made one meanwhile.
                    Ok(()) | Err(StoreError::AlreadyExists) => {}
                    Err(e) => return Err(e.into()),
                }
                tracing::info!(kid = %row.kid, purpose = purpose.name(), "generated a signing key");
            }
        }
        let set = build(store.list_signing_keys().await?, issuer)?;
        Ok(KeyRing {
            current: RwLock::new(Arc::new(set)),
            last_unknown_reload: std::sync::atomic::AtomicI64::new(0),
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
    pub async fn reload(&self, store: &Store) -> Result<(), KeyError> {
        let set = build(store.list_signing_keys().await?, &self.issuer)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// `verify` against the current keys, and once more after a reload if it failed: the token
    /// may be signed by a key another replica made a moment ago (its notification still on its
    /// way).
    pub async fn verify_fresh<T, E>(
        &self,
        store: &Store,
        verify: impl Fn(&KeySet) -> Result<T, E>,
    ) -> Result<T, E> {
        match verify(&self.current()) {
            Err(_) if self.reload_if_due(store).await => verify(&self.current()),
            verified => verified,
        }
    }

    /// Reloads for a token whose key is unknown here; at most once a second, so that tokens
    /// signed by strangers cannot make every request a database read. Whether it reloaded.
    async fn reload_if_due(&self, store: &Store) -> bool {
        if store.dialect() == wid_store::Dialect::Sqlite {
            return false;
        }
        let now = crate::tokens::now();
        let last = self
            .last_unknown_reload
            .swap(now, std::sync::atomic::Ordering::SeqCst);
        now > last && self.reload(store).await.is_ok()
    }

    /// Rotates the keys of `purposes`: new keys sign from now on; the old ones stay published
    /// until every token they signed has expired.
    pub async fn rotate(
        &self,
        store: &Store,
        purposes: &[Purpose],
        now: i64,
    ) -> Result<(), KeyError> {
        for purpose in purposes {
            let row = new_row(*purpose, now)?;
            let rotated = store
                .rotate_signing_key(
                    &row,
                    now,
                    now + MAX_SIGNED_LIFETIME_SECS + RETIRE_MARGIN_SECS,
                )
                .await;
            match rotated {
                Ok(()) => {
                    tracing::info!(kid = %row.kid, purpose = purpose.name(), "rotated the signing key")
                }
                // A rotation at another replica at the same moment won; its key is as new.
                Err(StoreError::AlreadyExists) => {
                    tracing::info!(
                        purpose = purpose.name(),
                        "another replica rotated the signing key at the same moment"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.reload(store).await
    }

    /// Deletes keys past their retire time; reloads when any went.
    pub async fn retire(&self, store: &Store, now: i64) -> Result<u64, KeyError> {
        let retired = store.delete_retired_signing_keys(now).await?;
        if retired > 0 {
            tracing::info!(retired, "retired signing keys");
            self.reload(store).await?;
        }
        Ok(retired)
    }
}

fn new_row(purpose: Purpose, now: i64) -> Result<SigningKeyRow, KeyError> {
    let alg = purpose.algorithm();
    let key = SigningKey::generate(alg).map_err(|source| KeyError::Key {
        kid: "new".into(),
        source,
    })?;
    Ok(SigningKeyRow {
        kid: key.kid().to_owned(),
        purpose: purpose.name().to_owned(),
        algorithm: alg.name().to_owned(),
        private_pkcs8: key.pkcs8().to_vec(),
        create_time: now,
        rotate_time: None,
        retire_time: None,
    })
}

fn build(rows: Vec<SigningKeyRow>, issuer: &str) -> Result<KeySet, KeyError> {
    let mut by_purpose: [Vec<(Arc<SigningKey>, &SigningKeyRow)>; 3] =
        [Vec::new(), Vec::new(), Vec::new()];
    for row in &rows {
        let (Some(purpose), Some(alg)) = (
            Purpose::parse(&row.purpose),
            Algorithm::parse(&row.algorithm),
        ) else {
            tracing::warn!(kid = %row.kid, purpose = %row.purpose, "skipping a key of an unknown purpose or algorithm");
            continue;
        };
        let key =
            SigningKey::from_pkcs8(alg, &row.private_pkcs8).map_err(|source| KeyError::Key {
                kid: row.kid.clone(),
                source,
            })?;
        by_purpose[purpose as usize].push((Arc::new(key), row));
    }
    let active = |i: usize, name: &'static str| {
        by_purpose[i]
            .iter()
            .find(|(_, row)| row.rotate_time.is_none())
            .map(|(k, _)| k.clone())
            .ok_or(KeyError::NoActiveKey(name))
    };
    let published = |i: usize| Published {
        keys: by_purpose[i].iter().map(|(k, _)| k.clone()).collect(),
        jwks: by_purpose[i]
            .iter()
            .map(|(k, _)| k.public_jwk().clone())
            .collect(),
    };
    // A certificate's validity covers its key's whole published life.
    let pem = |entries: &[&(Arc<SigningKey>, &SigningKeyRow)]| -> Result<Vec<u8>, KeyError> {
        let mut map = BTreeMap::new();
        for (key, row) in entries {
            let not_after = row
                .retire_time
                .unwrap_or(row.create_time + 10 * 365 * 86_400);
            let cert = key
                .certificate_pem(issuer, row.create_time - 3600, not_after)
                .map_err(|source| KeyError::Key {
                    kid: row.kid.clone(),
                    source,
                })?;
            map.insert(key.kid().to_owned(), cert);
        }
        Ok(serde_json::to_vec(&map).unwrap_or_default())
    };
    let public: Vec<&(Arc<SigningKey>, &SigningKeyRow)> = by_purpose[Purpose::IdToken as usize]
        .iter()
        .chain(&by_purpose[Purpose::AccessToken as usize])
        .collect();
    let account: Vec<&(Arc<SigningKey>, &SigningKeyRow)> = by_purpose
        [Purpose::AccountSigning as usize]
        .iter()
        .collect();
    let jwks_of = |entries: &[&(Arc<SigningKey>, &SigningKeyRow)]| {
        json!({ "keys": entries.iter().map(|(k, _)| k.public_jwk()).collect::<Vec<_>>() })
            .to_string()
            .into_bytes()
    };
    Ok(KeySet {
        id: active(Purpose::IdToken as usize, "ID-token")?,
        access: active(Purpose::AccessToken as usize, "access-token")?,
        account: active(Purpose::AccountSigning as usize, "account-signing")?,
        jwks_json: jwks_of(&public),
        pem_map_json: pem(&public)?,
        account_jwks_json: jwks_of(&account),
        account_pem_map_json: pem(&account)?,
        id_keys: published(Purpose::IdToken as usize),
        access_keys: published(Purpose::AccessToken as usize),
        account_keys: published(Purpose::AccountSigning as usize),
        rows,
    })
}

/// The admin view of a key.
pub fn info(row: &SigningKeyRow) -> SigningKeyInfo {
    let time = |t: i64| wid_api::time::rfc3339(t);
    SigningKeyInfo {
        kid: row.kid.clone(),
        purpose: row.purpose.clone(),
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

impl crate::App {
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
        let purposes = match request.algorithm.as_str() {
            "" => Purpose::ALL.to_vec(),
            "RS256" => vec![Purpose::IdToken, Purpose::AccountSigning],
            "ES256" => vec![Purpose::AccessToken],
            name => vec![Purpose::parse(name).ok_or_else(|| {
                crate::error::ApiError::invalid(
                    "algorithm",
                    format!("Unknown key kind '{name}': use RS256, ES256, id_token, access_token or account_signing."),
                )
            })?],
        };
        self.keys
            .rotate(&self.store, &purposes, crate::tokens::now())
            .await
            .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?;
        self.list_signing_keys(caller)
    }
}
