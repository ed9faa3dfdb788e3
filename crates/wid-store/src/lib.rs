//! The storage of the wid token service.
//!
//! [`Store`] is the one interface the service uses; [`SqliteStore`] is the embedded
//! implementation (a PostgreSQL one follows for high availability, behind the same trait).
//! Stores are deliberately dumb: they keep rows and enforce uniqueness and optimistic concurrency
//! (compare-and-swap on etags), and know nothing of IAM rules, which the service applies before
//! it writes.
//!
//! Durability: an acknowledged write has been committed with `synchronous=FULL` in WAL mode, so
//! it survives a kill -9 of the process (and a power loss).

mod cached;
mod rows;
mod sqlite;

use std::future::Future;

pub use cached::CachedStore;
pub use rows::*;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// The etag a compare-and-swap expected was not the current one.
    #[error("concurrent change")]
    Aborted,
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

/// Everything the token service keeps.
pub trait Store: Clone + Send + Sync + 'static {
    fn create_project(&self, row: &ProjectRow) -> impl Future<Output = Result<()>> + Send;
    /// A project by id or by number.
    fn get_project(&self, id_or_number: &str) -> impl Future<Output = Result<ProjectRow>> + Send;
    fn list_projects(&self) -> impl Future<Output = Result<Vec<ProjectRow>>> + Send;

    /// Fails with AlreadyExists on a taken email or a unique id ever used before.
    fn create_service_account(
        &self,
        row: &ServiceAccountRow,
    ) -> impl Future<Output = Result<()>> + Send;
    /// A service account by email or unique id.
    fn get_service_account(
        &self,
        email_or_unique_id: &str,
    ) -> impl Future<Output = Result<ServiceAccountRow>> + Send;
    fn list_service_accounts(
        &self,
        project_id: &str,
    ) -> impl Future<Output = Result<Vec<ServiceAccountRow>>> + Send;
    /// Replaces the mutable fields when the stored etag is `expected_etag`.
    fn update_service_account(
        &self,
        row: &ServiceAccountRow,
        expected_etag: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the account and its policy, and retires its unique id.
    fn delete_service_account(&self, unique_id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The stored policy of a resource, if one was ever set.
    fn get_policy(&self, resource: &str) -> impl Future<Output = Result<Option<PolicyRow>>> + Send;
    /// Stores `policy` when the current etag is `expected_etag` (`None`: unconditionally;
    /// `Some(NO_POLICY_ETAG)`: only if no policy was ever set). Aborted otherwise.
    fn set_policy(
        &self,
        resource: &str,
        expected_etag: Option<&str>,
        policy: &PolicyRow,
    ) -> impl Future<Output = Result<()>> + Send;

    fn create_pool(&self, row: &PoolRow) -> impl Future<Output = Result<()>> + Send;
    fn get_pool(
        &self,
        project_number: &str,
        pool_id: &str,
    ) -> impl Future<Output = Result<PoolRow>> + Send;
    fn list_pools(&self, project_number: &str)
    -> impl Future<Output = Result<Vec<PoolRow>>> + Send;
    /// Replaces the pool's mutable fields when its stored version is `row.version`, and bumps it.
    fn update_pool(&self, row: &PoolRow) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the pool and its providers.
    fn delete_pool(
        &self,
        project_number: &str,
        pool_id: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    fn create_provider(&self, row: &ProviderRow) -> impl Future<Output = Result<()>> + Send;
    fn get_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> impl Future<Output = Result<ProviderRow>> + Send;
    fn list_providers(
        &self,
        project_number: &str,
        pool_id: &str,
    ) -> impl Future<Output = Result<Vec<ProviderRow>>> + Send;
    /// Replaces the provider's mutable fields when its stored version is `row.version`, and bumps
    /// it. The discovered keys are kept, unless `forget_discovered_keys` (the key source changed).
    fn update_provider(
        &self,
        row: &ProviderRow,
        forget_discovered_keys: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Fails with AlreadyExists on a taken name or an issuer already registered in the project.
    fn create_cluster(&self, row: &ClusterRow) -> impl Future<Output = Result<()>> + Send;
    fn get_cluster(
        &self,
        project_id: &str,
        location: &str,
        name: &str,
    ) -> impl Future<Output = Result<ClusterRow>> + Send;
    /// The clusters of a project; of one location when `location` is not `-`.
    fn list_clusters(
        &self,
        project_id: &str,
        location: &str,
    ) -> impl Future<Output = Result<Vec<ClusterRow>>> + Send;
    /// Deletes the cluster and the uids its KSAs presented.
    fn delete_cluster(
        &self,
        project_id: &str,
        location: &str,
        name: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records that the KSA of `row` presented the uid `row.uid`, and returns every KSA that
    /// ever presented it in the project, that one included.
    fn present_service_account_uid(
        &self,
        row: &KsaUidRow,
    ) -> impl Future<Output = Result<Vec<KsaUidRow>>> + Send;

    /// Providers and clusters without uploaded keys.
    fn list_discovery_targets(&self) -> impl Future<Output = Result<Vec<DiscoveryTarget>>> + Send;
    /// Stores keys fetched from `issuer_uri`, unless the owner's issuer changed meanwhile or it
    /// has uploaded keys (then NotFound).
    fn set_discovered_jwks(
        &self,
        owner: &KeySetOwner,
        issuer_uri: &str,
        jwks_json: &str,
        fetch_time: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every signing key, active and published.
    fn list_signing_keys(&self) -> impl Future<Output = Result<Vec<SigningKeyRow>>> + Send;
    /// Adds a key as the active one of its purpose; AlreadyExists if one is active.
    fn insert_signing_key(&self, row: &SigningKeyRow) -> impl Future<Output = Result<()>> + Send;
    /// In one transaction: the active key of `row.purpose` stops signing at `rotate_time` and
    /// stays published until `retire_time`, and `row` becomes the active key.
    fn rotate_signing_key(
        &self,
        row: &SigningKeyRow,
        rotate_time: i64,
        retire_time: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the keys whose retire time has passed; returns how many.
    fn delete_retired_signing_keys(&self, now: i64) -> impl Future<Output = Result<u64>> + Send;

    /// Appends several records in one transaction (one disk sync).
    fn append_audit_batch(&self, rows: &[AuditRow]) -> impl Future<Output = Result<()>> + Send;
    /// The newest `limit` records, newest first.
    fn list_audit(&self, limit: u32) -> impl Future<Output = Result<Vec<AuditRow>>> + Send;
    /// Deletes the records older than `time` (RFC 3339); returns how much that was.
    fn delete_audit_before(&self, time: &str) -> impl Future<Output = Result<AuditSize>> + Send;
    fn audit_size(&self) -> impl Future<Output = Result<AuditSize>> + Send;

    /// Every stored policy, by resource key.
    fn list_policies(&self) -> impl Future<Output = Result<Vec<(String, PolicyRow)>>> + Send;
}

/// The etag of a resource whose policy was never set (Google's "ACAB").
pub const NO_POLICY_ETAG: &str = "ACAB";

#[cfg(test)]
mod tests;
