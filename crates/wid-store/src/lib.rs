//! The storage of the wid token service: [`Store`], one layer of SQL and row mapping over a
//! database ([`db`]: its dialect and its connection; SQLite embedded by default), with a
//! read-through cache of the lookups the token path makes ([`cache`]).
//!
//! The store is deliberately dumb: it keeps rows and enforces uniqueness and optimistic
//! concurrency (compare-and-swap on etags and versions), and knows nothing of IAM rules, which
//! the service applies before it writes. Each operation is written once, in the module of its
//! resource. What it stores as JSON is read back typed; a corrupt value is an error
//! ([`StoreError::Corrupt`]), never read as empty.
//!
//! Durability: an acknowledged write has been committed with `synchronous=FULL` in WAL mode, so
//! it survives a kill -9 of the process (and a power loss).

mod audit;
mod cache;
mod clusters;
pub mod db;
mod keys;
mod pools;
mod projects;
mod rows;

use std::path::Path;

pub use db::Dialect;
pub use rows::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// The etag a compare-and-swap expected was not the current one.
    #[error("concurrent change")]
    Aborted,
    /// Stored data that does not read as what was stored.
    #[error("the stored {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which resource a discovered key set belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySetOwner {
    Provider {
        project_number: String,
        pool_id: String,
        provider_id: String,
    },
    Cluster {
        project_id: String,
        location: String,
        name: String,
    },
}

/// A resource whose keys wid fetches through its issuer's OIDC discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryTarget {
    pub owner: KeySetOwner,
    pub issuer_uri: String,
    pub jwks_fetch_time: Option<String>,
}

/// The etag of a resource whose policy was never set (Google's "ACAB").
pub const NO_POLICY_ETAG: &str = "ACAB";

/// Everything the token service keeps; clones share the database and the cache.
///
/// The cache is coherent because every write goes through this store and the database has one
/// writer process (SQLite mode).
#[derive(Clone)]
pub struct Store {
    db: db::Db,
    cache: std::sync::Arc<cache::Cache>,
}

impl Store {
    /// The SQLite database at `path`, created if missing and migrated.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        Ok(Store {
            db: db::Db::sqlite(path).await?,
            cache: std::sync::Arc::default(),
        })
    }

    /// The PostgreSQL database at `url`, migrated. Other replicas write it too, so nothing read
    /// is cached.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        Ok(Store {
            db: db::Db::postgres(url).await?,
            cache: std::sync::Arc::new(cache::Cache::disabled()),
        })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.db.pool.close().await;
    }

    /// Runs a write, then clears the cache (also after a failure: it may have half-happened).
    async fn write<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        let result = write.await;
        self.cache.invalidate();
        result
    }
}

#[cfg(test)]
mod tests;
