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
//! Durability: an acknowledged write has been committed (SQLite: `synchronous=FULL` in WAL mode;
//! PostgreSQL: the server's commit), so it survives a kill -9 of the process. SQLite's audit
//! batches alone commit without a disk sync ([`Store::append_audit_batch`]).

mod account_keys;
mod admin;
mod audit;
pub mod cache;
mod changes;
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
    /// A shared database that gave no answer in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the database could not be reached (as opposed to refusing what was asked): the
    /// request may succeed later, or at another replica.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // Class 08: connection exceptions; 57P0x: the server shutting down or starting;
                // 53300: too many connections.
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08") || code.starts_with("57P") || code == "53300"
                }),
                _ => false,
            },
            _ => false,
        }
    }
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
/// The cache is coherent because every write goes through a store: this process's, or another
/// replica's, which tells this one ([`changes`]).
#[derive(Clone)]
pub struct Store {
    db: db::Db,
    cache: std::sync::Arc<cache::Cache>,
    changes: std::sync::Arc<Changes>,
}

/// How other replicas' writes reach this one.
struct Changes {
    /// The database to listen on (PostgreSQL); none with SQLite, which has one writer.
    url: Option<String>,
    /// This replica's name in its notifications, which it ignores (its own writes cleared its
    /// cache already).
    me: String,
    keys: tokio::sync::watch::Sender<u64>,
}

impl Store {
    fn new(db: db::Db, coherence: cache::Coherence, url: Option<String>) -> Store {
        Store {
            db,
            cache: std::sync::Arc::new(cache::Cache::new(coherence)),
            changes: std::sync::Arc::new(Changes {
                url,
                me: wid_runtime::secrets::random_hex::<8>(),
                keys: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// The SQLite database at `path`, created if missing and migrated.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        let db = db::Db::sqlite(path).await?;
        Ok(Store::new(db, cache::Coherence::Local, None))
    }

    /// The PostgreSQL database at `url`, migrated. Other replicas write it too: their writes
    /// reach this one once [`Store::follow_changes`] runs.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        let db = db::Db::postgres(url).await?;
        Ok(Store::new(
            db,
            cache::Coherence::Shared,
            Some(url.to_owned()),
        ))
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect
    }

    /// Whether the database answers (with PostgreSQL, as of the last heartbeat).
    pub fn reachable(&self) -> bool {
        self.cache.reachable()
    }

    /// What the cache did, for the metrics.
    pub fn cache_counts(&self) -> &cache::CacheCounts {
        &self.cache.counts
    }

    /// The pool's connections: (open, idle).
    pub fn pool_connections(&self) -> (u32, usize) {
        (self.db.pool.size(), self.db.pool.num_idle())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.db.pool.close().await;
    }

    /// Runs a write of rows the cache may hold, then clears the cache here and at every other
    /// replica.
    async fn write<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        self.write_and_tell(changes::ROWS, write).await
    }

    /// Runs a write of `what` ([`changes::ROWS`] or [`changes::KEYS`]), then tells every
    /// replica. A failed write may have half-happened (its commit unanswered): nothing cached is
    /// answered until read again.
    async fn write_and_tell<T>(
        &self,
        what: &str,
        write: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = self.cache.bounded(write).await;
        self.tell(what, result.is_ok()).await;
        result
    }

    /// After a write of `what` that `succeeded` (or failed, so may have half-happened): this
    /// replica's cache, then every other's.
    async fn tell(&self, what: &str, succeeded: bool) {
        match succeeded {
            true => self.cache.invalidate(),
            false => self.cache.distrust(),
        }
        if self.cache.coherence() == cache::Coherence::Shared {
            self.notify(what).await;
        }
    }
}

#[cfg(test)]
mod tests;
