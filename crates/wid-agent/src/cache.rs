//! The token cache: per identity and scopes (access tokens) or identity, audience and format
//! (ID tokens).
//!
//! - A served token always has more than [`MIN_REMAINING`] seconds left, so that no client
//!   refreshes on every call; `expires_in` counts down from the token's real expiry.
//! - Concurrent misses of one key wait for one upstream call (a turn per key, held only while
//!   that key is being fetched).
//! - A token with less than [`REFRESH_AHEAD`] left is refreshed in the background while the
//!   cached one is served.
//! - When the upstream is away (or the agent's own budget says not now), the cached token is
//!   served until its hard expiry (stale if error), and background refreshes back off; when it
//!   refuses, the token is dropped.
//!
//! What a pod can make the agent hold is bounded. Only tokens are kept: a fetch that fails
//! leaves nothing behind. The tokens are in a moka cache, bounded in bytes node-wide
//! ([`Bounds::node_bytes`], least useful first) and each expiring with its token; a pod holds at
//! most [`Bounds::per_pod_entries`] tokens and [`Bounds::per_pod_bytes`] bytes, past which a new
//! token is served but not kept (its next request asks again, within the pod's upstream budget).
//!
//! The hot path (a fresh token) is one lookup in moka's concurrent map, with no lock of ours and
//! none held across an await. Keys are typed ([`CacheKey`]: what the token is for, and the pod
//! it is counted against); a fetch is a future handed in with the request, awaited on a miss,
//! spawned for a refresh ahead of expiry, dropped unpolled otherwise.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use wid_runtime::log_limit::{LogLimit, left_out_note};

use crate::upstream::{Minted, UpstreamError, now};

/// A token is not served with this little time left, unless the upstream fails.
pub const MIN_REMAINING: i64 = 300;
/// Below this much time left, a background refresh starts.
pub const REFRESH_AHEAD: i64 = 900;
/// After a failed background refresh, wait this long before the next.
const RETRY_AFTER: i64 = 30;
/// What moka and this file keep per token besides its key and value, roughly.
const ENTRY_OVERHEAD: usize = 160;

/// How much the cache may hold.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Tokens one pod may have kept.
    pub per_pod_entries: usize,
    /// Bytes (keys and tokens) one pod may have kept.
    pub per_pod_bytes: usize,
    /// Bytes the whole cache may hold.
    pub node_bytes: u64,
}

impl Default for Bounds {
    /// A pod's usual set is an access token or two and a few ID token audiences; 64 tokens of
    /// the largest kind (a 2 KiB audience and its token) fit in 256 KiB.
    fn default() -> Self {
        Bounds {
            per_pod_entries: 64,
            per_pod_bytes: 256 * 1024,
            node_bytes: 16 * 1024 * 1024,
        }
    }
}

impl Bounds {
    /// For the caches of one token per pod and KSA (the federated token that buys the others,
    /// the KSA token): a few per pod, 4 MiB in all.
    pub fn one_per_pod() -> Bounds {
        Bounds {
            per_pod_entries: 8,
            per_pod_bytes: 64 * 1024,
            node_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What a cache key must tell: the pod a token is counted against, and roughly how many bytes
/// the key takes.
pub trait CacheKey: Clone + Eq + Hash + Send + Sync + 'static {
    /// The uid of the pod the token is fetched for.
    fn owner(&self) -> &str;
    /// The key's size in bytes, as counted against its pod and the node.
    fn weight(&self) -> usize;
}

struct Entry {
    minted: Minted,
    /// The pod uid it was fetched for.
    owner: String,
    /// Its weight, in bytes, as counted against its pod and the node.
    weight: usize,
    refreshing: AtomicBool,
    retry_at: AtomicI64,
}

/// What one pod has kept.
#[derive(Default)]
struct Usage {
    entries: usize,
    bytes: usize,
}

/// What the cache did, for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
    Stale,
}

/// The token cache; clones share it.
pub struct TokenCache<K>(Arc<Inner<K>>);

impl<K> Clone for TokenCache<K> {
    fn clone(&self) -> Self {
        TokenCache(self.0.clone())
    }
}

/// The turns of keys being fetched, dropped when the last waiter is done.
type Inflight<K> = Arc<Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>>;

struct Inner<K> {
    tokens: Cache<K, Arc<Entry>>,
    /// Per pod uid; kept in step with `tokens` by its eviction listener.
    usage: Arc<Mutex<HashMap<String, Usage>>>,
    inflight: Inflight<K>,
    bounds: Bounds,
    stale_log: LogLimit,
}

impl<K: CacheKey> Default for TokenCache<K> {
    fn default() -> Self {
        TokenCache::new(Bounds::default())
    }
}

/// Expiry of each entry at its token's hard expiry, so that memory follows the tokens in use.
struct AtTokenExpiry;

impl AtTokenExpiry {
    fn left(entry: &Entry) -> Option<Duration> {
        Some(Duration::from_secs(
            u64::try_from(entry.minted.expires_at - now()).unwrap_or(0),
        ))
    }
}

impl<K> moka::Expiry<K, Arc<Entry>> for AtTokenExpiry {
    fn expire_after_create(&self, _: &K, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Self::left(entry)
    }

    fn expire_after_update(
        &self,
        _: &K,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Self::left(entry)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: CacheKey> TokenCache<K> {
    pub fn new(bounds: Bounds) -> TokenCache<K> {
        let usage: Arc<Mutex<HashMap<String, Usage>>> = Arc::default();
        let released = usage.clone();
        let tokens = Cache::builder()
            .max_capacity(bounds.node_bytes)
            .weigher(|_, entry: &Arc<Entry>| u32::try_from(entry.weight).unwrap_or(u32::MAX))
            .expire_after(AtTokenExpiry)
            // Whatever removed an entry (replaced, expired, evicted, forgotten), its pod has it
            // no more.
            .eviction_listener(move |_, entry: Arc<Entry>, _| {
                let mut usage = lock(&released);
                if let Some(pod) = usage.get_mut(&entry.owner) {
                    pod.entries = pod.entries.saturating_sub(1);
                    pod.bytes = pod.bytes.saturating_sub(entry.weight);
                    if pod.entries == 0 {
                        usage.remove(&entry.owner);
                    }
                }
            })
            .build();
        TokenCache(Arc::new(Inner {
            tokens,
            usage,
            inflight: Arc::default(),
            bounds,
            stale_log: LogLimit::new(Duration::from_secs(60)),
        }))
    }

    /// Keeps `minted` under `key` for its pod, unless that pod already holds all it may (a token
    /// that replaces one of its own always may).
    fn keep(&self, key: &K, minted: Minted) {
        let owner = key.owner();
        let weight = key.weight() + owner.len() + minted.token.len() + ENTRY_OVERHEAD;
        let replacing = self
            .0
            .tokens
            .get(key)
            .is_some_and(|entry| entry.owner == owner);
        {
            let mut usage = lock(&self.0.usage);
            let pod = usage.entry(owner.to_owned()).or_default();
            let full = pod.entries >= self.0.bounds.per_pod_entries
                || pod.bytes + weight > self.0.bounds.per_pod_bytes;
            if full && !replacing {
                if pod.entries == 0 {
                    usage.remove(owner);
                }
                return;
            }
            pod.entries += 1;
            pod.bytes += weight;
        }
        // The listener takes the replaced entry off the pod's count.
        self.0.tokens.insert(
            key.clone(),
            Arc::new(Entry {
                minted,
                owner: owner.to_owned(),
                weight,
                refreshing: AtomicBool::new(false),
                retry_at: AtomicI64::new(0),
            }),
        );
    }

    /// Waits for the turn to fetch `key`: one fetch of a key at a time.
    async fn turn(&self, key: &K) -> Turn<K> {
        let mutex = lock(&self.0.inflight)
            .entry(key.clone())
            .or_default()
            .clone();
        Turn {
            guard: Some(mutex.lock_owned().await),
            inflight: self.0.inflight.clone(),
            key: key.clone(),
        }
    }

    /// Forgets the tokens of pods that are gone.
    pub fn retain_owners(&self, live: &[String]) {
        let live: HashSet<&str> = live.iter().map(String::as_str).collect();
        for (key, entry) in self.0.tokens.iter() {
            if !live.contains(entry.owner.as_str()) {
                self.0.tokens.invalidate(key.as_ref());
            }
        }
    }

    /// Forgets the token of `key` if it is still `token` (the upstream no longer accepts it):
    /// the next `get` fetches anew, once for all its concurrent callers, whoever forgot it.
    pub fn forget(&self, key: &K, token: &str) {
        self.0
            .tokens
            .entry(key.clone())
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().minted.token == token => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// How many tokens are kept (as of now: expired and removed ones are settled first).
    pub fn tokens(&self) -> usize {
        self.0.tokens.run_pending_tasks();
        usize::try_from(self.0.tokens.entry_count()).unwrap_or(usize::MAX)
    }

    /// How many tokens and bytes the pod `owner` has kept.
    #[cfg(test)]
    fn usage_of(&self, owner: &str) -> (usize, usize) {
        lock(&self.0.usage)
            .get(owner)
            .map_or((0, 0), |u| (u.entries, u.bytes))
    }

    /// A cached token that is fresh enough to serve as it is (more than [`REFRESH_AHEAD`] left),
    /// without touching the fetch machinery: the hot path.
    pub fn fresh(&self, key: &K) -> Option<Minted> {
        let entry = self.0.tokens.get(key)?;
        (entry.minted.expires_at - now() > REFRESH_AHEAD).then(|| entry.minted.clone())
    }

    /// The token for `key`, from the cache or from `fetch`: awaited on a miss, spawned to
    /// refresh a token near its expiry (while the cached one is served), else dropped unpolled.
    pub async fn get<F>(&self, key: &K, fetch: F) -> Result<(Minted, Source), UpstreamError>
    where
        F: Future<Output = Result<Minted, UpstreamError>> + Send + 'static,
    {
        let at = now();
        if let Some(cached) = self.0.tokens.get(key) {
            let left = cached.minted.expires_at - at;
            if left > MIN_REMAINING {
                if left < REFRESH_AHEAD
                    && at >= cached.retry_at.load(Ordering::Relaxed)
                    && !cached.refreshing.swap(true, Ordering::AcqRel)
                {
                    let cache = self.clone();
                    tokio::spawn(cache.refresh(key.clone(), fetch));
                }
                return Ok((cached.minted.clone(), Source::Hit));
            }
        }
        // A miss: the first caller fetches, the others wait for it and read its result.
        let _turn = self.turn(key).await;
        let current = self.0.tokens.get(key);
        if let Some(cached) = &current
            && cached.minted.expires_at - now() > MIN_REMAINING
        {
            return Ok((cached.minted.clone(), Source::Hit));
        }
        match fetch.await {
            Ok(minted) => {
                self.keep(key, minted.clone());
                Ok((minted, Source::Miss))
            }
            // Stale if the upstream is away, never if it refuses: a token it no longer gives is
            // not served, nor used to buy others.
            Err(e) if e.is_transient() => match current {
                Some(cached) if cached.minted.expires_at > now() => {
                    if let Some(left_out) = self.0.stale_log.admit("stale") {
                        tracing::warn!(error = %e, "the upstream failed; serving cached tokens until they expire{}", left_out_note(left_out));
                    }
                    Ok((cached.minted.clone(), Source::Stale))
                }
                _ => Err(e),
            },
            Err(e) => {
                self.0.tokens.invalidate(key);
                Err(e)
            }
        }
    }

    async fn refresh<F>(self, key: K, fetch: F)
    where
        F: Future<Output = Result<Minted, UpstreamError>>,
    {
        let _turn = self.turn(&key).await;
        match fetch.await {
            Ok(minted) => {
                self.keep(&key, minted);
            }
            Err(e) if e.is_transient() => {
                if let Some(left_out) = self.0.stale_log.admit("refresh") {
                    tracing::warn!(error = %e, "background token refreshes failed; backing off{}", left_out_note(left_out));
                }
                if let Some(cached) = self.0.tokens.get(&key) {
                    cached
                        .retry_at
                        .store(now() + RETRY_AFTER, Ordering::Relaxed);
                    cached.refreshing.store(false, Ordering::Release);
                }
            }
            // Refused: the cached token is no longer served; the next request asks again and
            // hears the refusal.
            Err(e) => {
                tracing::info!(error = %e, "the upstream refused to renew a token; it is dropped");
                self.0.tokens.invalidate(&key);
            }
        }
    }
}

/// The turn to fetch one key; the last one done with a key removes its entry, so that nothing
/// of a fetch outlives it.
struct Turn<K: CacheKey> {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    inflight: Inflight<K>,
    key: K,
}

impl<K: CacheKey> Drop for Turn<K> {
    fn drop(&mut self) {
        let mut inflight = lock(&self.inflight);
        // The map's reference and this turn's: nobody else waits for the key.
        if inflight
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            inflight.remove(&self.key);
        }
        // Released under the map's lock, so that a newcomer finds either this mutex or none.
        self.guard.take();
    }
}

#[cfg(test)]
mod tests;
