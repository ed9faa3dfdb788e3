//! Fairness and budgets: one busy pod cannot take every request slot of the node, and the node
//! cannot flood the token service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests of one pod in flight at once; the next ones get a 429 at once.
pub struct PerPod {
    max: usize,
    slots: RwLock<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl PerPod {
    pub fn new(max: usize) -> PerPod {
        PerPod {
            max,
            slots: RwLock::new(HashMap::new()),
        }
    }

    /// A slot for a request of the pod at `ip`, if it has one free.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<OwnedSemaphorePermit> {
        let known = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .cloned();
        let semaphore = match known {
            Some(s) => s,
            None => {
                let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
                // Forget idle pods now and then, so the map follows the node's pods.
                if slots.len() > 4096 {
                    slots.retain(|_, s| s.available_permits() < self.max);
                }
                slots
                    .entry(ip)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
                    .clone()
            }
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// Which budget of upstream calls had no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The calling pod's own.
    Pod,
    /// The node's, shared by its pods.
    Node,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Exhausted::Pod => "the pod's budget of calls to the token service is spent for now",
            Exhausted::Node => "the node's budget of calls to the token service is spent for now",
        })
    }
}

/// The budgets of upstream calls: each pod's (keyed by pod uid) within the node's, both GCRA
/// rate limiters (governor). A call waits for a turn of its pod, then of the node, at most
/// `max_wait` in all; a call refused is never made, and the budget that refused it is not
/// charged (one the node's budget refuses has spent its pod's turn), so that a flood leaves no
/// debt behind it. A pod's rate is a fraction of the node's: one pod alone cannot
/// spend the node's budget, and another pod's first token never waits for its excess.
pub struct Budget {
    node: governor::DefaultDirectRateLimiter,
    pods: governor::DefaultKeyedRateLimiter<String>,
    max_wait: Duration,
}

/// A quota of `rate` calls per second with bursts of `burst`.
fn quota(rate: f64, burst: f64) -> governor::Quota {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let burst = std::num::NonZeroU32::new(burst.clamp(1.0, f64::from(u32::MAX)) as u32)
        .unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::with_period(period)
        .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Budget {
    /// `node` and `pod` are (calls per second, burst).
    pub fn new(node: (f64, f64), pod: (f64, f64), max_wait: Duration) -> Budget {
        Budget {
            node: governor::RateLimiter::direct(quota(node.0, node.1)),
            pods: governor::RateLimiter::keyed(quota(pod.0, pod.1)),
            max_wait,
        }
    }

    /// Waits for a turn of `pod` and of the node. A call that would wait longer than the bound
    /// is refused at once, uncharged by the budget that refused it.
    pub async fn turn(&self, pod: &str) -> Result<(), Exhausted> {
        let deadline = Instant::now() + self.max_wait;
        let pod = pod.to_owned();
        wait_for(|| self.pods.check_key(&pod), deadline, Exhausted::Pod).await?;
        wait_for(|| self.node.check(), deadline, Exhausted::Node).await
    }

    /// Forgets the state of pods whose budgets are full again (departed ones among them).
    pub fn forget_idle_pods(&self) {
        self.pods.retain_recent();
        self.pods.shrink_to_fit();
    }
}

/// Retries `check` until it passes, or refuses when its next cell would come after `deadline`.
async fn wait_for(
    check: impl Fn() -> Result<(), governor::NotUntil<Instant>>,
    deadline: Instant,
    exhausted: Exhausted,
) -> Result<(), Exhausted> {
    loop {
        let now = Instant::now();
        let wait = match check() {
            Ok(()) => return Ok(()),
            Err(not_until) => not_until.wait_time_from(now),
        };
        if now + wait > deadline {
            return Err(exhausted);
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pod_slots() {
        let limits = PerPod::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limits.try_acquire(a).expect("1");
        let _second = limits.try_acquire(a).expect("2");
        assert!(limits.try_acquire(a).is_none(), "a busy pod is capped");
        assert!(
            limits.try_acquire(b).is_some(),
            "another pod is not affected"
        );
        drop(first);
        assert!(limits.try_acquire(a).is_some());
    }

    #[tokio::test]
    async fn refused_calls_cost_nothing_and_pods_are_apart() {
        // Pods: 10/s, bursts of 5; the node: 1000/s, bursts of 20.
        let budget = Budget::new((1000.0, 20.0), (10.0, 5.0), Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(budget.turn("a").await, Ok(()));
        }
        // Pod a's excess: refused at once, a thousand times...
        for _ in 0..1000 {
            assert_eq!(budget.turn("a").await, Err(Exhausted::Pod));
        }
        // ...yet another pod's first calls go, and a itself is back within one period.
        assert_eq!(budget.turn("b").await, Ok(()));
        tokio::time::sleep(Duration::from_millis(110)).await;
        assert_eq!(budget.turn("a").await, Ok(()), "the refusals left no debt");
    }

    #[tokio::test]
    async fn calls_wait_their_turn_within_the_bound() {
        let budget = Budget::new((1000.0, 100.0), (20.0, 1.0), Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(budget.turn("a").await, Ok(()));
        assert_eq!(budget.turn("a").await, Ok(()), "waited for the next cell");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        // The node's own bound.
        let node = Budget::new((1.0, 2.0), (1000.0, 1000.0), Duration::ZERO);
        assert_eq!(node.turn("a").await, Ok(()));
        assert_eq!(node.turn("b").await, Ok(()));
        assert_eq!(node.turn("c").await, Err(Exhausted::Node));
    }
}
