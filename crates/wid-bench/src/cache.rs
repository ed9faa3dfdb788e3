//! `wid-bench cache`: the agent's hot path, a fresh token found in its cache, as lookups per
//! second, beside the lookup of the cache it replaced (a mutex over a map of slots, each behind
//! a read lock), measured in the same run on the same cores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use wid_agent::cache::TokenCache;
use wid_agent::pods::{GSA_ANNOTATION, Pod};
use wid_agent::tokens::TokenKey;
use wid_agent::upstream::{Minted, now};

/// The lookup of the replaced cache, as it was: one mutex over the slot map, then the slot's read
/// lock and a clone of the token.
#[derive(Default)]
struct SlotMap(Mutex<HashMap<String, (String, Slot)>>);

/// A slot of the replaced cache: the token of one key, if fetched.
type Slot = Arc<RwLock<Option<Minted>>>;

impl SlotMap {
    fn fresh(&self, key: &str) -> Option<Minted> {
        let slot = self.0.lock().ok()?.get(key).map(|(_, s)| s.clone())?;
        let value = slot.read().ok()?.clone();
        value.filter(|m| m.expires_at - now() > 900)
    }
}

/// The key of pod `i`'s access token with the default scopes.
fn token_key(i: usize) -> TokenKey {
    let pod = Pod {
        ip: std::net::IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]),
        namespace: "ns".into(),
        name: format!("app-{i}"),
        uid: format!("uid-{i}"),
        service_account_name: "app".into(),
        annotations: [(
            GSA_ANNOTATION.to_owned(),
            "app@p.iam.gserviceaccount.com".to_owned(),
        )]
        .into_iter()
        .collect(),
    };
    TokenKey::access(Arc::new(pod), &[])
}

fn token(i: usize) -> Minted {
    // About the size of a wid access token.
    Minted {
        token: format!("{i:06}{}", "t".repeat(700)),
        expires_at: now() + 3600,
    }
}

/// Lookups per second of `lookup` over `keys` keys (by index) with `threads` threads for
/// `seconds`.
fn rate(
    threads: usize,
    seconds: f64,
    keys: usize,
    lookup: Arc<dyn Fn(usize) -> bool + Send + Sync>,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stop, count, lookup) = (stop.clone(), count.clone(), lookup.clone());
            std::thread::spawn(move || {
                let mut i = t * 7919;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1024 {
                        i = (i + 7919) % keys;
                        if lookup(i) {
                            n += 1;
                        }
                    }
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

pub async fn run(seconds: f64) -> anyhow::Result<()> {
    let keys: Arc<Vec<String>> = Arc::new(
        (0..1000)
            .map(|i| format!("uid-{i}|ns/app|app@p.iam.gserviceaccount.com|https://www.googleapis.com/auth/cloud-platform"))
            .collect(),
    );
    // The agent's keys of the same tokens: a pod each, the default scopes.
    let token_keys: Arc<Vec<TokenKey>> = Arc::new((0..keys.len()).map(token_key).collect());
    let cache: TokenCache<TokenKey> = TokenCache::default();
    let slots = SlotMap::default();
    for (i, key) in keys.iter().enumerate() {
        let owner = format!("uid-{i}");
        let minted = token(i);
        cache
            .get(&token_keys[i], async move { Ok(minted) })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        slots
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(key.clone(), (owner, Arc::new(RwLock::new(Some(token(i))))));
    }
    let (cache, slots) = (Arc::new(cache), Arc::new(slots));
    println!("lookup|threads|lookups/s|ns per lookup|vs the replaced cache");
    for threads in [1, 2] {
        let old = rate(threads, seconds, keys.len(), {
            let (slots, keys) = (slots.clone(), keys.clone());
            Arc::new(move |i| slots.fresh(&keys[i]).is_some())
        });
        let new = rate(threads, seconds, keys.len(), {
            let (cache, token_keys) = (cache.clone(), token_keys.clone());
            Arc::new(move |i| cache.fresh(&token_keys[i]).is_some())
        });
        let ns = |r: f64| 1e9 * threads as f64 / r;
        println!(
            "replaced (mutex + slot lock)|{threads}|{old:.0}|{:.0}|",
            ns(old)
        );
        println!(
            "moka (TokenCache::fresh)|{threads}|{new:.0}|{:.0}|{:.2}x",
            ns(new),
            new / old
        );
    }
    Ok(())
}
