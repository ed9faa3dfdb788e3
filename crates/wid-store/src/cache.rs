//! The read-through cache of the lookups the token-issuing path makes: an exchange or an
//! issuance reads a project, an account, two policies and the clusters, and without a cache
//! every one is a database round trip.
//!
//! Coherence rests on one invariant: **every write goes through [`crate::Store`]**. A write
//! clears the cache after it commits and bumps a generation; a read caches what it read only if
//! no write happened meanwhile (the generation is unchanged), so a value read before a commit is
//! never kept after it.
//!
//! With SQLite this process is the only writer, and that is the whole story. With PostgreSQL
//! other replicas write too ([`Coherence::Shared`]): their writes reach this one as
//! notifications ([`crate::changes`]), each clearing the cache as a local write does. An entry
//! is answered only while those notifications are known to arrive (the listener heard its own
//! heartbeat lately), only if it was read since the listener's session began (a new session may
//! have missed some: that is the resync), and only for [`SHARED_TTL`] (a safety net for a lost
//! notification). An entry too old for any of these is still the answer while the database
//! cannot be reached, for [`OUTAGE_GRACE`]: issuance of what a replica knows outlives an outage.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wid_runtime::memo::Memo;

use crate::{ClusterRow, KsaUidRow, PolicyRow, PoolRow, ProjectRow, ProviderRow, Result};
use crate::{ServiceAccountRow, StoreError};

/// Entries beyond this many per map clear the map (the working set is far smaller).
const MAX_ENTRIES: usize = 50_000;
/// The longest an entry is answered with PostgreSQL, however quiet the notifications.
pub const SHARED_TTL: Duration = Duration::from_secs(30);
/// How long an entry still answers while the database is unreachable.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(300);
/// The bound on one read or write of a shared database: past it the database is taken as
/// unreachable for this request (a dropped route would otherwise hang it for minutes).
pub const SHARED_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Who writes the database besides this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coherence {
    /// Nobody (SQLite): the cache is exact.
    Local,
    /// Other replicas (PostgreSQL): their writes arrive as notifications.
    Shared,
}

#[derive(Clone)]
pub(crate) struct Entry<V> {
    value: V,
    read_at: Instant,
    session: u64,
}

type Map<K, V> = Memo<K, Entry<V>>;

/// What the cache did, for the metrics.
#[derive(Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries answered only because the database could not be reached.
    pub stale_answers: AtomicU64,
    /// Clears, by local writes or other replicas' notifications.
    pub invalidations: AtomicU64,
    /// Reads and writes that failed for want of the database.
    pub database_errors: AtomicU64,
}

pub(crate) struct Cache {
    coherence: Coherence,
    generation: AtomicU64,
    /// The listener's session (Shared): entries read in an earlier one are not answered.
    session: AtomicU64,
    /// Whether other replicas' writes are known to reach this one now (Shared).
    listening: AtomicBool,
    /// Whether the database failed to answer the last heartbeat (Shared).
    unreachable: AtomicBool,
    pub counts: CacheCounts,
    pub projects: Map<String, Option<ProjectRow>>,
    pub accounts: Map<String, Option<ServiceAccountRow>>,
    pub policies: Map<String, Option<PolicyRow>>,
    pub clusters: Map<(String, String), Vec<ClusterRow>>,
    pub pools: Map<(String, String), Option<PoolRow>>,
    pub providers: Map<(String, String, String), Option<ProviderRow>>,
    /// The KSAs that presented a uid, by project and uid.
    pub ksa_uids: Map<(String, String), Vec<KsaUidRow>>,
    /// Whether a digest is a bootstrap admin credential's.
    pub admin_credentials: Map<String, bool>,
    /// Whether an issuer is a replica's.
    pub issuers: Map<String, bool>,
}

impl Cache {
    pub fn new(coherence: Coherence) -> Cache {
        Cache {
            coherence,
            generation: AtomicU64::new(0),
            session: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            counts: CacheCounts::default(),
            projects: Map::new(MAX_ENTRIES),
            accounts: Map::new(MAX_ENTRIES),
            policies: Map::new(MAX_ENTRIES),
            clusters: Map::new(MAX_ENTRIES),
            pools: Map::new(MAX_ENTRIES),
            providers: Map::new(MAX_ENTRIES),
            ksa_uids: Map::new(MAX_ENTRIES),
            admin_credentials: Map::new(MAX_ENTRIES),
            issuers: Map::new(MAX_ENTRIES),
        }
    }

    pub fn coherence(&self) -> Coherence {
        self.coherence
    }

    /// Forgets everything (after a write, here or at another replica).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.counts.invalidations.fetch_add(1, Ordering::Relaxed);
        self.projects.clear();
        self.accounts.clear();
        self.policies.clear();
        self.clusters.clear();
        self.pools.clear();
        self.providers.clear();
        self.ksa_uids.clear();
        self.admin_credentials.clear();
        self.issuers.clear();
    }

    /// After a write that failed: it may or may not have happened, so nothing is answered from
    /// the cache until read again; what is kept still serves an outage.
    pub fn distrust(&self) {
        match self.coherence {
            // Nothing outlives the process's own database: forget it all.
            Coherence::Local => self.invalidate(),
            Coherence::Shared => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.session.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The listener began a new session: it may have missed notifications meanwhile.
    pub fn resync(&self) {
        self.session.fetch_add(1, Ordering::SeqCst);
        self.counts.invalidations.fetch_add(1, Ordering::Relaxed);
        self.listening.store(true, Ordering::SeqCst);
    }

    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }

    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Whether the database answered the last heartbeat (always, with SQLite).
    pub fn reachable(&self) -> bool {
        !self.unreachable.load(Ordering::SeqCst)
    }

    /// Whether an entry read now would be answered from the cache.
    #[cfg(test)]
    pub fn answerable_now(&self) -> bool {
        self.answerable(&Entry {
            value: (),
            read_at: Instant::now(),
            session: self.session.load(Ordering::SeqCst),
        })
    }

    fn answerable<V>(&self, entry: &Entry<V>) -> bool {
        match self.coherence {
            Coherence::Local => true,
            Coherence::Shared => {
                self.listening.load(Ordering::SeqCst)
                    && entry.session == self.session.load(Ordering::SeqCst)
                    && entry.read_at.elapsed() < SHARED_TTL
            }
        }
    }

    /// Reads through `map`: a cached value, or `load`'s, kept if no write happened meanwhile; a
    /// cached value too old to answer otherwise, while the database cannot be reached.
    pub async fn read<K: Eq + Hash, V: Clone>(
        &self,
        map: &Map<K, V>,
        key: K,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V> {
        let cached = map.get(&key);
        if let Some(entry) = &cached
            && self.answerable(entry)
        {
            self.counts.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(entry.value.clone());
        }
        let outage_answer = |cached: Option<Entry<V>>| {
            let entry = cached.filter(|e| e.read_at.elapsed() < OUTAGE_GRACE)?;
            self.counts.stale_answers.fetch_add(1, Ordering::Relaxed);
            Some(entry.value)
        };
        // Known down: no request waits for a timeout to learn it again.
        if !self.reachable()
            && let Some(value) = outage_answer(cached.clone())
        {
            return Ok(value);
        }
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        let before = self.generation.load(Ordering::SeqCst);
        let session = self.session.load(Ordering::SeqCst);
        match self.bounded(load).await {
            Ok(value) => {
                if self.generation.load(Ordering::SeqCst) == before {
                    let read_at = Instant::now();
                    let entry = Entry {
                        value: value.clone(),
                        read_at,
                        session,
                    };
                    map.put(key, entry);
                }
                Ok(value)
            }
            Err(e) if e.is_unavailable() => outage_answer(cached).ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// `work`, within [`SHARED_QUERY_TIMEOUT`] with a shared database.
    pub async fn bounded<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let result = match self.coherence {
            Coherence::Local => work.await,
            Coherence::Shared => tokio::time::timeout(SHARED_QUERY_TIMEOUT, work)
                .await
                .unwrap_or(Err(StoreError::Unavailable(format!(
                    "no answer within {} s",
                    SHARED_QUERY_TIMEOUT.as_secs()
                )))),
        };
        if let Err(e) = &result
            && e.is_unavailable()
        {
            self.counts.database_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Keeps `value` as `map`'s answer for `key`.
    pub fn put<K: Eq + Hash, V: Clone>(&self, map: &Map<K, V>, key: K, value: V) {
        let entry = Entry {
            value,
            read_at: Instant::now(),
            session: self.session.load(Ordering::SeqCst),
        };
        map.put(key, entry);
    }

    /// `map`'s answer for `key`, if it may be given without asking the database.
    pub fn get<K: Eq + Hash, V: Clone>(&self, map: &Map<K, V>, key: &K) -> Option<V> {
        map.get(key)
            .filter(|e| {
                self.answerable(e) || (!self.reachable() && e.read_at.elapsed() < OUTAGE_GRACE)
            })
            .map(|e| e.value)
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
