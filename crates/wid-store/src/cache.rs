//! The read-through cache of the lookups the token-issuing path makes: an exchange or an
//! issuance reads a project, an account, two policies and the clusters, and without a cache
//! every one is a database round trip.
//!
//! Coherence rests on one invariant: **every write goes through [`crate::Store`]** (the embedded
//! store has one writer, this process). A write clears the cache after it commits and bumps a
//! generation; a read caches what it read only if no write happened meanwhile (the generation is
//! unchanged), so a value read before a commit is never kept after it.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use wid_runtime::memo::Memo;

use crate::{ClusterRow, KsaUidRow, PolicyRow, PoolRow, ProjectRow, ProviderRow, Result};
use crate::{ServiceAccountRow, StoreError};

/// Entries beyond this many per map clear the map (the working set is far smaller).
const MAX_ENTRIES: usize = 50_000;

type Map<K, V> = Memo<K, V>;

pub(crate) struct Cache {
    /// Off where other processes write the same database (PostgreSQL's replicas): what this one
    /// cached could outlive their writes.
    enabled: bool,
    generation: AtomicU64,
    pub projects: Map<String, Option<ProjectRow>>,
    pub accounts: Map<String, Option<ServiceAccountRow>>,
    pub policies: Map<String, Option<PolicyRow>>,
    pub clusters: Map<(String, String), Vec<ClusterRow>>,
    pub pools: Map<(String, String), Option<PoolRow>>,
    pub providers: Map<(String, String, String), Option<ProviderRow>>,
    /// The KSAs that presented a uid, by project and uid.
    pub ksa_uids: Map<(String, String), Vec<KsaUidRow>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: true,
            generation: AtomicU64::new(0),
            projects: Map::new(MAX_ENTRIES),
            accounts: Map::new(MAX_ENTRIES),
            policies: Map::new(MAX_ENTRIES),
            clusters: Map::new(MAX_ENTRIES),
            pools: Map::new(MAX_ENTRIES),
            providers: Map::new(MAX_ENTRIES),
            ksa_uids: Map::new(MAX_ENTRIES),
        }
    }
}

impl Cache {
    /// A cache that keeps nothing: every read goes to the database.
    pub fn disabled() -> Cache {
        Cache {
            enabled: false,
            ..Cache::default()
        }
    }

    /// Whether anything read is kept.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Forgets everything (after a write).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.projects.clear();
        self.accounts.clear();
        self.policies.clear();
        self.clusters.clear();
        self.pools.clear();
        self.providers.clear();
        self.ksa_uids.clear();
    }

    /// Reads through `map`: a cached value, or `load`'s, kept if no write happened meanwhile.
    pub async fn read<K: Eq + Hash, V: Clone>(
        &self,
        map: &Map<K, V>,
        key: K,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V> {
        if !self.enabled {
            return load.await;
        }
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

/// A lookup's answer with "not found" as `None`, so that a miss is cached too.
pub(crate) fn found<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
