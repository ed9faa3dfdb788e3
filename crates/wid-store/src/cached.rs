//! A read-through cache in front of a [`Store`], for the token-issuing path: an exchange or an
//! issuance reads a project, an account, two policies and the clusters, and without a cache
//! every one is a database round trip.
//!
//! Coherence rests on one invariant: **every write goes through this wrapper** (the embedded
//! store has one writer, this process). A write clears the cache after it commits and bumps a
//! generation; a read caches what it read only if no write happened meanwhile (the generation is
//! unchanged), so a value read before a commit is never kept after it.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wid_runtime::memo::Memo;

use crate::*;

/// Entries beyond this many per map clear the map (the working set is far smaller).
const MAX_ENTRIES: usize = 50_000;

type Map<K, V> = Memo<K, V>;

struct Maps {
    projects: Map<String, Option<ProjectRow>>,
    accounts: Map<String, Option<ServiceAccountRow>>,
    policies: Map<String, Option<PolicyRow>>,
    clusters: Map<(String, String), Vec<ClusterRow>>,
    pools: Map<(String, String), Option<PoolRow>>,
    providers: Map<(String, String, String), Option<ProviderRow>>,
    /// The KSAs that presented a uid, by project and uid.
    ksa_uids: Map<(String, String), Vec<KsaUidRow>>,
}

/// A [`Store`] with a read-through cache of the lookups the token path makes.
#[derive(Clone)]
pub struct CachedStore<S> {
    inner: S,
    generation: Arc<AtomicU64>,
    maps: Arc<Maps>,
}

impl<S: Store> CachedStore<S> {
    pub fn new(inner: S) -> Self {
        CachedStore {
            inner,
            generation: Arc::new(AtomicU64::new(0)),
            maps: Arc::new(Maps {
                projects: Map::new(MAX_ENTRIES),
                accounts: Map::new(MAX_ENTRIES),
                policies: Map::new(MAX_ENTRIES),
                clusters: Map::new(MAX_ENTRIES),
                pools: Map::new(MAX_ENTRIES),
                providers: Map::new(MAX_ENTRIES),
                ksa_uids: Map::new(MAX_ENTRIES),
            }),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let m = &self.maps;
        m.projects.clear();
        m.accounts.clear();
        m.policies.clear();
        m.clusters.clear();
        m.pools.clear();
        m.providers.clear();
        m.ksa_uids.clear();
    }

    /// Runs a write, then invalidates (also after a failure: it may have half-happened).
    async fn write<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        let result = f.await;
        self.invalidate();
        result
    }

    /// Reads through `map`: a cached value, or `load`'s, kept if no write happened meanwhile.
    async fn read<K: Eq + Hash, V: Clone>(
        &self,
        map: &Map<K, V>,
        key: K,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V> {
        if let Some(v) = map.get(&key) {
            return Ok(v);
        }
        let before = self.generation.load(Ordering::SeqCst);
        let value = load.await?;
        if self.generation.load(Ordering::SeqCst) == before {
            map.put(key, value.clone());
        }
        Ok(value)
    }
}

fn found<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl<S: Store> Store for CachedStore<S> {
    async fn create_project(&self, row: &ProjectRow) -> Result<()> {
        self.write(self.inner.create_project(row)).await
    }
    async fn get_project(&self, id_or_number: &str) -> Result<ProjectRow> {
        self.read(&self.maps.projects, id_or_number.to_owned(), async {
            found(self.inner.get_project(id_or_number).await)
        })
        .await?
        .ok_or(StoreError::NotFound)
    }
    async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        self.inner.list_projects().await
    }
    async fn create_service_account(&self, row: &ServiceAccountRow) -> Result<()> {
        self.write(self.inner.create_service_account(row)).await
    }
    async fn get_service_account(&self, email_or_unique_id: &str) -> Result<ServiceAccountRow> {
        self.read(&self.maps.accounts, email_or_unique_id.to_owned(), async {
            found(self.inner.get_service_account(email_or_unique_id).await)
        })
        .await?
        .ok_or(StoreError::NotFound)
    }
    async fn list_service_accounts(&self, project_id: &str) -> Result<Vec<ServiceAccountRow>> {
        self.inner.list_service_accounts(project_id).await
    }
    async fn update_service_account(
        &self,
        row: &ServiceAccountRow,
        expected_etag: &str,
    ) -> Result<()> {
        self.write(self.inner.update_service_account(row, expected_etag))
            .await
    }
    async fn delete_service_account(&self, unique_id: &str) -> Result<()> {
        self.write(self.inner.delete_service_account(unique_id))
            .await
    }
    async fn get_policy(&self, resource: &str) -> Result<Option<PolicyRow>> {
        self.read(
            &self.maps.policies,
            resource.to_owned(),
            self.inner.get_policy(resource),
        )
        .await
    }
    async fn set_policy(
        &self,
        resource: &str,
        expected_etag: Option<&str>,
        policy: &PolicyRow,
    ) -> Result<()> {
        self.write(self.inner.set_policy(resource, expected_etag, policy))
            .await
    }
    async fn create_pool(&self, row: &PoolRow) -> Result<()> {
        self.write(self.inner.create_pool(row)).await
    }
    async fn get_pool(&self, project_number: &str, pool_id: &str) -> Result<PoolRow> {
        let key = (project_number.to_owned(), pool_id.to_owned());
        self.read(&self.maps.pools, key, async {
            found(self.inner.get_pool(project_number, pool_id).await)
        })
        .await?
        .ok_or(StoreError::NotFound)
    }
    async fn list_pools(&self, project_number: &str) -> Result<Vec<PoolRow>> {
        self.inner.list_pools(project_number).await
    }
    async fn update_pool(&self, row: &PoolRow) -> Result<()> {
        self.write(self.inner.update_pool(row)).await
    }
    async fn delete_pool(&self, project_number: &str, pool_id: &str) -> Result<()> {
        self.write(self.inner.delete_pool(project_number, pool_id))
            .await
    }
    async fn create_provider(&self, row: &ProviderRow) -> Result<()> {
        self.write(self.inner.create_provider(row)).await
    }
    async fn get_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<ProviderRow> {
        let key = (
            project_number.to_owned(),
            pool_id.to_owned(),
            provider_id.to_owned(),
        );
        self.read(&self.maps.providers, key, async {
            found(
                self.inner
                    .get_provider(project_number, pool_id, provider_id)
                    .await,
            )
        })
        .await?
        .ok_or(StoreError::NotFound)
    }
    async fn list_providers(
        &self,
        project_number: &str,
        pool_id: &str,
    ) -> Result<Vec<ProviderRow>> {
        self.inner.list_providers(project_number, pool_id).await
    }
    async fn update_provider(&self, row: &ProviderRow, forget_discovered_keys: bool) -> Result<()> {
        self.write(self.inner.update_provider(row, forget_discovered_keys))
            .await
    }
    async fn delete_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<()> {
        self.write(
            self.inner
                .delete_provider(project_number, pool_id, provider_id),
        )
        .await
    }
    async fn create_cluster(&self, row: &ClusterRow) -> Result<()> {
        self.write(self.inner.create_cluster(row)).await
    }
    async fn get_cluster(
        &self,
        project_id: &str,
        location: &str,
        name: &str,
    ) -> Result<ClusterRow> {
        self.inner.get_cluster(project_id, location, name).await
    }
    async fn list_clusters(&self, project_id: &str, location: &str) -> Result<Vec<ClusterRow>> {
        let key = (project_id.to_owned(), location.to_owned());
        self.read(
            &self.maps.clusters,
            key,
            self.inner.list_clusters(project_id, location),
        )
        .await
    }
    async fn delete_cluster(&self, project_id: &str, location: &str, name: &str) -> Result<()> {
        self.write(self.inner.delete_cluster(project_id, location, name))
            .await
    }
    async fn present_service_account_uid(&self, row: &KsaUidRow) -> Result<Vec<KsaUidRow>> {
        // A presenter seen before adds nothing: its answer is what was read then, kept until a
        // write (a new presenter of any uid, a cluster deleted) clears the cache.
        let key = (row.project_id.clone(), row.uid.clone());
        if let Some(known) = self.maps.ksa_uids.get(&key)
            && known.iter().any(|k| k.same_presenter(row))
        {
            return Ok(known);
        }
        let presenters = self
            .write(self.inner.present_service_account_uid(row))
            .await?;
        self.maps.ksa_uids.put(key, presenters.clone());
        Ok(presenters)
    }
    async fn list_discovery_targets(&self) -> Result<Vec<DiscoveryTarget>> {
        self.inner.list_discovery_targets().await
    }
    async fn set_discovered_jwks(
        &self,
        owner: &KeySetOwner,
        issuer_uri: &str,
        jwks_json: &str,
        fetch_time: &str,
    ) -> Result<()> {
        self.write(
            self.inner
                .set_discovered_jwks(owner, issuer_uri, jwks_json, fetch_time),
        )
        .await
    }
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        self.inner.list_signing_keys().await
    }
    async fn insert_signing_key(&self, row: &SigningKeyRow) -> Result<()> {
        self.inner.insert_signing_key(row).await
    }
    async fn rotate_signing_key(
        &self,
        row: &SigningKeyRow,
        rotate_time: i64,
        retire_time: i64,
    ) -> Result<()> {
        self.inner
            .rotate_signing_key(row, rotate_time, retire_time)
            .await
    }
    async fn delete_retired_signing_keys(&self, now: i64) -> Result<u64> {
        self.inner.delete_retired_signing_keys(now).await
    }
    async fn append_audit_batch(&self, rows: &[AuditRow]) -> Result<()> {
        self.inner.append_audit_batch(rows).await
    }
    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRow>> {
        self.inner.list_audit(limit).await
    }
    async fn delete_audit_before(&self, time: &str) -> Result<AuditSize> {
        self.inner.delete_audit_before(time).await
    }
    async fn audit_size(&self) -> Result<AuditSize> {
        self.inner.audit_size().await
    }
    async fn list_policies(&self) -> Result<Vec<(String, PolicyRow)>> {
        self.inner.list_policies().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_invalidate_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CachedStore::new(
            SqliteStore::open(&dir.path().join("db"))
                .await
                .expect("open"),
        );
        assert_eq!(store.get_policy("sa/1").await.expect("get"), None);
        let row = PolicyRow {
            etag: "e1".into(),
            policy_json: "{}".into(),
        };
        store.set_policy("sa/1", None, &row).await.expect("set");
        assert_eq!(
            store.get_policy("sa/1").await.expect("get"),
            Some(row.clone()),
            "the cached miss was dropped"
        );
        let next = PolicyRow {
            etag: "e2".into(),
            policy_json: "{}".into(),
        };
        store
            .set_policy("sa/1", Some("e1"), &next)
            .await
            .expect("set");
        assert_eq!(store.get_policy("sa/1").await.expect("get"), Some(next));
    }
}
