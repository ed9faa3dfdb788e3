//! The token cache: per identity and scopes (access tokens) or identity, audience and format
//! (ID tokens).
//!
//! - A served token always has more than [`MIN_REMAINING`] seconds left, so that no client
//!   refreshes on every call; `expires_in` counts down from the token's real expiry.
//! - Concurrent misses of one key wait for one upstream call (a per-key async mutex).
//! - A token with less than [`REFRESH_AHEAD`] left is refreshed in the background while the
//!   cached one is served.
//! - When the upstream fails, the cached token is served until its hard expiry (stale if
//!   error), and background refreshes back off.
//!
//! The hot path (a fresh token) takes one short read lock and no lock across an await.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::upstream::{Minted, UpstreamError, now};

/// A token is not served with this little time left, unless the upstream fails.
pub const MIN_REMAINING: i64 = 300;
/// Below this much time left, a background refresh starts.
pub const REFRESH_AHEAD: i64 = 900;
/// After a failed background refresh, wait this long before the next.
const RETRY_AFTER: i64 = 30;

#[derive(Default)]
struct Slot {
    value: RwLock<Option<Minted>>,
    fetch: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
    retry_at: AtomicI64,
}

impl Slot {
    fn read(&self) -> Option<Minted> {
        self.value
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, minted: Minted) {
        *self.value.write().unwrap_or_else(PoisonError::into_inner) = Some(minted);
    }

    /// Drops the token, if it is still `token` (when given): one the upstream no longer takes,
    /// or no longer gives.
    fn clear(&self, token: Option<&str>) {
        let mut value = self.value.write().unwrap_or_else(PoisonError::into_inner);
        if token.is_none_or(|token| value.as_ref().is_some_and(|m| m.token == token)) {
            *value = None;
        }
    }
}

/// What the cache did, for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
    Stale,
}

#[derive(Default)]
pub struct TokenCache {
    /// Slots by key, with the pod uid that owns them (dropped when the pod goes).
    slots: Mutex<HashMap<String, (String, Arc<Slot>)>>,
}

impl TokenCache {
    fn slot(&self, key: &str, owner: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .entry(key.to_owned())
            .or_insert_with(|| (owner.to_owned(), Arc::new(Slot::default())))
            .1
            .clone()
    }

    /// Forgets the tokens of pods that are gone.
    pub fn retain_owners(&self, live: &[String]) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (owner, _)| live.contains(owner));
    }

    /// Forgets the token of `key` if it is still `token` (the upstream no longer accepts it):
    /// the next `get` fetches anew, once for all its concurrent callers, whoever forgot it.
    pub fn forget(&self, key: &str, token: &str) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|(_, s)| s.clone());
        if let Some(slot) = slot {
            slot.clear(Some(token));
        }
    }

    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys hold a token (a slot whose fetch failed holds none).
    pub fn tokens(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|(_, slot)| slot.read().is_some())
            .count()
    }

    /// A cached token that is fresh enough to serve as it is (more than [`REFRESH_AHEAD`] left),
    /// without touching the fetch machinery: the hot path.
    pub fn fresh(&self, key: &str) -> Option<Minted> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|(_, s)| s.clone())?;
        slot.read().filter(|m| m.expires_at - now() > REFRESH_AHEAD)
    }

    /// The token for `key`, from the cache or from `fetch`.
    pub async fn get<F, Fut>(
        &self,
        key: &str,
        owner: &str,
        fetch: F,
    ) -> Result<(Minted, Source), UpstreamError>
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Minted, UpstreamError>> + Send + 'static,
    {
        let slot = self.slot(key, owner);
        let at = now();
        if let Some(cached) = slot.read() {
            let left = cached.expires_at - at;
            if left > MIN_REMAINING {
                if left < REFRESH_AHEAD
                    && at >= slot.retry_at.load(Ordering::Relaxed)
                    && !slot.refreshing.swap(true, Ordering::AcqRel)
                {
                    tokio::spawn(refresh(slot.clone(), fetch));
                }
                return Ok((cached, Source::Hit));
            }
        }
        // A miss: the first caller fetches, the others wait for it and read its result.
        let _turn = slot.fetch.lock().await;
        if let Some(cached) = slot.read()
            && cached.expires_at - now() > MIN_REMAINING
        {
            return Ok((cached, Source::Hit));
        }
        match fetch().await {
            Ok(minted) => {
                slot.store(minted.clone());
                Ok((minted, Source::Miss))
            }
            // Stale if the upstream is away, never if it refuses: a token it no longer gives is
            // not served, nor used to buy others.
            Err(e @ UpstreamError::Unavailable(_)) => match slot.read() {
                Some(cached) if cached.expires_at > now() => {
                    tracing::warn!(error = ?e, "upstream failed; serving the cached token until it expires");
                    Ok((cached, Source::Stale))
                }
                _ => Err(e),
            },
            Err(e) => {
                slot.clear(None);
                Err(e)
            }
        }
    }
}

async fn refresh<F, Fut>(slot: Arc<Slot>, fetch: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Minted, UpstreamError>>,
{
    {
        let _turn = slot.fetch.lock().await;
        match fetch().await {
            Ok(minted) => slot.store(minted),
            Err(e @ UpstreamError::Unavailable(_)) => {
                tracing::warn!(error = ?e, "background token refresh failed; backing off");
                slot.retry_at.store(now() + RETRY_AFTER, Ordering::Relaxed);
            }
            // Refused: the cached token is no longer served; the next request asks again and
            // hears the refusal.
            Err(e) => {
                tracing::warn!(error = ?e, "the upstream refused to renew a token; it is dropped");
                slot.clear(None);
            }
        }
    }
    slot.refreshing.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn minted(n: usize, lifetime: i64) -> Minted {
        Minted {
            token: format!("t{n}"),
            expires_at: now() + lifetime,
        }
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                let fetch = move || {
                    let calls = calls.clone();
                    async move {
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok(minted(n, 3600))
                    }
                };
                cache.get("k", "pod", fetch).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("token").0.token, "t0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn old_tokens_are_replaced_and_stale_ones_served_on_error() {
        let cache = TokenCache::default();
        // A token with 200 s left is never served: a new one is fetched.
        cache
            .get("k", "pod", || async { Ok(minted(1, 200)) })
            .await
            .expect("first");
        let (second, source) = cache
            .get("k", "pod", || async { Ok(minted(2, 3600)) })
            .await
            .expect("second");
        assert_eq!((second.token.as_str(), source), ("t2", Source::Miss));
        // Upstream down with a 200-s token cached: served stale rather than failing.
        let cache = TokenCache::default();
        cache
            .get("k", "pod", || async { Ok(minted(1, 200)) })
            .await
            .expect("first");
        let (stale, source) = cache
            .get("k", "pod", || async {
                Err(UpstreamError::Unavailable("down".into()))
            })
            .await
            .expect("stale");
        assert_eq!((stale.token.as_str(), source), ("t1", Source::Stale));
        // The upstream refuses (a binding removed, a cluster gone): the cached token is neither
        // served nor kept.
        let refused = || async {
            Err(UpstreamError::Refused {
                service: "STS",
                status: 400,
                reason: "Bad Request".into(),
                message: "invalid_grant".into(),
            })
        };
        assert!(cache.get("k", "pod", refused).await.is_err());
        assert!(
            cache
                .get("k", "pod", || async {
                    Err(UpstreamError::Unavailable("down".into()))
                })
                .await
                .is_err(),
            "the refused token was dropped"
        );
        // Nothing cached and upstream down: the error.
        let empty = TokenCache::default();
        assert!(
            empty
                .get("k", "pod", || async {
                    Err(UpstreamError::Unavailable("down".into()))
                })
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn tokens_near_expiry_are_refreshed_in_the_background() {
        let cache = TokenCache::default();
        // 600 s left: served at once, and a refresh starts behind it.
        cache
            .get("k", "pod", || async { Ok(minted(1, 600)) })
            .await
            .expect("first");
        let (served, source) = cache
            .get("k", "pod", || async { Ok(minted(2, 3600)) })
            .await
            .expect("second");
        assert_eq!((served.token.as_str(), source), ("t1", Source::Hit));
        // Bounded wait for the background refresh to land.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (now_served, _) = cache
                .get("k", "pod", || async { Ok(minted(3, 3600)) })
                .await
                .expect("third");
            if now_served.token == "t2" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the background refresh never landed"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn departed_pods_are_forgotten() {
        let cache = TokenCache::default();
        cache
            .get("a", "uid-a", || async { Ok(minted(1, 3600)) })
            .await
            .expect("a");
        cache
            .get("b", "uid-b", || async { Ok(minted(2, 3600)) })
            .await
            .expect("b");
        cache.retain_owners(&["uid-b".to_owned()]);
        assert_eq!(cache.len(), 1);
    }
}
