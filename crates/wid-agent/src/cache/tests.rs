//! The cache's contract: coalesced misses, refresh ahead, stale only while the upstream is away,
//! and bounded holdings that follow the pods.

use std::sync::atomic::AtomicUsize;

use super::*;

/// A key of the tests: a name, and the pod it is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key(String, String);

impl CacheKey for Key {
    fn owner(&self) -> &str {
        &self.1
    }

    fn weight(&self) -> usize {
        self.0.len()
    }
}

fn key(name: &str, owner: &str) -> Key {
    Key(name.to_owned(), owner.to_owned())
}

type Cache = TokenCache<Key>;

fn minted(n: usize, lifetime: i64) -> Minted {
    Minted {
        token: format!("t{n}"),
        expires_at: now() + lifetime,
    }
}

#[tokio::test]
async fn concurrent_misses_make_one_call() {
    let cache = Arc::new(Cache::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, calls) = (cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let fetch = async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Ok(minted(n, 3600))
            };
            cache.get(&key("k", "pod"), fetch).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("token").0.token, "t0");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn old_tokens_are_replaced_and_stale_ones_served_on_error() {
    let cache = Cache::default();
    // A token with 200 s left is never served: a new one is fetched.
    cache
        .get(&key("k", "pod"), async { Ok(minted(1, 200)) })
        .await
        .expect("first");
    let (second, source) = cache
        .get(&key("k", "pod"), async { Ok(minted(2, 3600)) })
        .await
        .expect("second");
    assert_eq!((second.token.as_str(), source), ("t2", Source::Miss));
    // Upstream down with a 200-s token cached: served stale rather than failing.
    let cache = Cache::default();
    cache
        .get(&key("k", "pod"), async { Ok(minted(1, 200)) })
        .await
        .expect("first");
    let (stale, source) = cache
        .get(&key("k", "pod"), async {
            Err(UpstreamError::Unavailable("down".into()))
        })
        .await
        .expect("stale");
    assert_eq!((stale.token.as_str(), source), ("t1", Source::Stale));
    // The upstream refuses (a binding removed, a cluster gone): the cached token is neither
    // served nor kept.
    let refused = async {
        Err(UpstreamError::Refused {
            service: "STS",
            status: 400,
            reason: "Bad Request".into(),
            message: "invalid_grant".into(),
        })
    };
    assert!(cache.get(&key("k", "pod"), refused).await.is_err());
    assert!(
        cache
            .get(&key("k", "pod"), async {
                Err(UpstreamError::Unavailable("down".into()))
            })
            .await
            .is_err(),
        "the refused token was dropped"
    );
    // Nothing cached and upstream down: the error.
    let empty = Cache::default();
    assert!(
        empty
            .get(&key("k", "pod"), async {
                Err(UpstreamError::Unavailable("down".into()))
            })
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tokens_near_expiry_are_refreshed_in_the_background() {
    let cache = Cache::default();
    // 600 s left: served at once, and a refresh starts behind it.
    cache
        .get(&key("k", "pod"), async { Ok(minted(1, 600)) })
        .await
        .expect("first");
    let (served, source) = cache
        .get(&key("k", "pod"), async { Ok(minted(2, 3600)) })
        .await
        .expect("second");
    assert_eq!((served.token.as_str(), source), ("t1", Source::Hit));
    // Bounded wait for the background refresh to land.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (now_served, _) = cache
            .get(&key("k", "pod"), async { Ok(minted(3, 3600)) })
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
    let cache = Cache::default();
    cache
        .get(&key("a", "uid-a"), async { Ok(minted(1, 3600)) })
        .await
        .expect("a");
    cache
        .get(&key("b", "uid-b"), async { Ok(minted(2, 3600)) })
        .await
        .expect("b");
    cache.retain_owners(&["uid-b".to_owned()]);
    assert_eq!(cache.tokens(), 1);
}

fn refused() -> UpstreamError {
    UpstreamError::Refused {
        service: "IAM",
        status: 403,
        reason: "Forbidden".into(),
        message: "no".into(),
    }
}

/// A fetch that fails leaves nothing behind, however many keys a pod tries.
#[tokio::test]
async fn failed_fetches_leave_nothing() {
    let cache = Cache::default();
    for i in 0..2_000 {
        let name = format!("pod-a|{}", "x".repeat(8_000) + &i.to_string());
        let fail = async move {
            if i % 2 == 0 {
                Err(refused())
            } else {
                Err(UpstreamError::Unavailable("down".into()))
            }
        };
        assert!(cache.get(&key(&name, "pod-a"), fail).await.is_err());
    }
    assert_eq!(cache.tokens(), 0);
    assert_eq!(cache.usage_of("pod-a"), (0, 0));
    assert!(
        lock(&cache.0.inflight).is_empty(),
        "in-flight turns outlived their fetches"
    );
}

/// One pod keeps at most its share; others are not affected, and the pod's
/// excess tokens are still served.
#[tokio::test]
async fn a_pod_keeps_at_most_its_share() {
    let bounds = Bounds {
        per_pod_entries: 8,
        per_pod_bytes: 64 * 1024,
        node_bytes: 1024 * 1024,
    };
    let cache = Cache::new(bounds);
    for i in 0..100 {
        let (token, _) = cache
            .get(&key(&format!("a|{i}"), "pod-a"), async move {
                Ok(minted(i, 3600))
            })
            .await
            .expect("served even when not kept");
        assert_eq!(token.token, format!("t{i}"));
    }
    assert_eq!(cache.usage_of("pod-a").0, 8);
    cache
        .get(&key("b|0", "pod-b"), async { Ok(minted(0, 3600)) })
        .await
        .expect("b");
    assert_eq!(cache.usage_of("pod-b").0, 1);
    assert_eq!(cache.tokens(), 9);
    // A kept token is replaced in place when renewed, whatever the pod's count.
    cache.forget(&key("a|0", "pod-a"), "t0");
    cache
        .get(&key("a|0", "pod-a"), async { Ok(minted(1000, 3600)) })
        .await
        .expect("renewed");
    assert_eq!(
        cache
            .fresh(&key("a|0", "pod-a"))
            .map(|m| m.token)
            .as_deref(),
        Some("t1000")
    );
    // Bytes bound a pod too: tokens of 16 KiB, four fit in 64 KiB.
    let big = Cache::new(bounds);
    for i in 0..10 {
        big.get(&key(&format!("k{i}"), "pod-a"), async move {
            Ok(Minted {
                token: "t".repeat(16 * 1024),
                expires_at: now() + 3600,
            })
        })
        .await
        .expect("big");
    }
    let (entries, bytes) = big.usage_of("pod-a");
    assert!(
        entries == 3 && bytes <= 64 * 1024,
        "{entries} tokens, {bytes} bytes"
    );
}

/// The node-wide bound holds whatever the pods.
#[tokio::test]
async fn the_node_bound_holds() {
    let cache = Cache::new(Bounds {
        per_pod_entries: 1000,
        per_pod_bytes: 1024 * 1024,
        node_bytes: 64 * 1024,
    });
    for pod in 0..200 {
        let owner = format!("pod-{pod}");
        cache
            .get(&key(&format!("{owner}|k"), &owner), async {
                Ok(Minted {
                    token: "t".repeat(1024),
                    expires_at: now() + 3600,
                })
            })
            .await
            .expect("token");
    }
    cache.0.tokens.run_pending_tasks();
    assert!(
        cache.0.tokens.weighted_size() <= 64 * 1024,
        "{} bytes",
        cache.0.tokens.weighted_size()
    );
    let counted: usize = lock(&cache.0.usage).values().map(|u| u.bytes).sum();
    assert_eq!(
        counted as u64,
        cache.0.tokens.weighted_size(),
        "usage follows evictions"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever the sequence of fetches (kept, refused, away), forgets and departures, what each
    /// pod is counted for is what the cache holds for it, and no fetch leaves a turn behind.
    #[test]
    fn usage_follows_the_tokens(ops in proptest::collection::vec((0u8..5, 0usize..4, 0usize..6), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let cache = Cache::new(Bounds { per_pod_entries: 3, per_pod_bytes: 4096, node_bytes: 1 << 20 });
            for (n, (op, pod, slot)) in ops.into_iter().enumerate() {
                let owner = format!("pod-{pod}");
                let k = key(&format!("{owner}|{slot}"), &owner);
                match op {
                    0 | 1 => { let _ = cache.get(&k, async move { Ok(minted(n, 3600)) }).await; }
                    2 => { let _ = cache.get(&k, async { Err(refused()) }).await; }
                    3 => cache.forget(&k, &format!("t{}", n.saturating_sub(1))),
                    _ => cache.retain_owners(&["pod-0".to_owned(), "pod-1".to_owned()]),
                }
            }
            cache.0.tokens.run_pending_tasks();
            let mut held: HashMap<String, (usize, usize)> = HashMap::new();
            for (_, entry) in cache.0.tokens.iter() {
                let h = held.entry(entry.owner.clone()).or_default();
                h.0 += 1;
                h.1 += entry.weight;
            }
            let counted: HashMap<String, (usize, usize)> = lock(&cache.0.usage)
                .iter()
                .map(|(k, u)| (k.clone(), (u.entries, u.bytes)))
                .collect();
            assert_eq!(held, counted);
            assert!(counted.values().all(|(n, b)| *n <= 3 && *b <= 4096));
            assert!(lock(&cache.0.inflight).is_empty());
        });
    }
}
