//! Fairness and budgets: one busy pod cannot take every request slot of the node, and the node
//! cannot flood the token service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
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

/// A token bucket for upstream calls: `rate` per second, bursts of `burst`.
pub struct Budget {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub fn new(rate: f64, burst: f64) -> Budget {
        Budget {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// How long to wait before the next call may go (zero when it may go now); the call is
    /// counted either way.
    pub fn reserve(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() * self.rate;
        state.0 = (state.0 + refill).min(self.burst) - 1.0;
        state.1 = now;
        if state.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.0 / self.rate)
        }
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

    #[test]
    fn budget_spreads_bursts() {
        let budget = Budget::new(10.0, 3.0);
        for _ in 0..3 {
            assert_eq!(budget.reserve(), Duration::ZERO);
        }
        let wait = budget.reserve();
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(110),
            "{wait:?}"
        );
    }
}
