//! Rate limits for log lines that a caller can cause again and again (a refusal, a stale token
//! served while the upstream is away): the first of each kind is logged at once, then at most one
//! per interval, saying how many were left out meanwhile. A flood costs a line a minute, not a
//! line a request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Kinds tracked at once; past this many, those quiet for an interval are forgotten, and new
/// ones while all are busy count as one.
const MAX_KINDS: usize = 4096;
const OTHER: &str = "\0other";

pub struct LogLimit {
    interval: Duration,
    /// By kind: when its last line was logged, and how many were left out since.
    kinds: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LogLimit {
    pub fn new(interval: Duration) -> LogLimit {
        LogLimit {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(left_out)` when a line of `kind` is to be logged now, with the number of lines of
    /// that kind left out since the last one; `None` when it is to be left out.
    pub fn admit(&self, kind: &str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((last, left_out)) = kinds.get_mut(kind) {
            if now.duration_since(*last) < self.interval {
                *left_out += 1;
                return None;
            }
            let n = *left_out;
            *last = now;
            *left_out = 0;
            return Some(n);
        }
        if kinds.len() >= MAX_KINDS {
            let interval = self.interval;
            kinds.retain(|k, (last, _)| k == OTHER || now.duration_since(*last) < interval);
            // Still full: a flood of new kinds; they share one kind rather than reset the others.
            if kinds.len() >= MAX_KINDS {
                return self.admit_other(&mut kinds, now);
            }
        }
        kinds.insert(kind.to_owned(), (now, 0));
        Some(0)
    }

    fn admit_other(
        &self,
        kinds: &mut HashMap<String, (Instant, u64)>,
        now: Instant,
    ) -> Option<u64> {
        match kinds.get_mut(OTHER) {
            Some((last, left_out)) if now.duration_since(*last) < self.interval => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                kinds.insert(OTHER.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// ` (and N more like it in the last minute)`, or nothing: the tail of a rate-limited line.
pub fn left_out_note(left_out: u64) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(" (and {left_out} more like it since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_and_interval() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.admit_at("a", t0), Some(0));
        for i in 1..=99 {
            assert_eq!(limit.admit_at("a", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(limit.admit_at("b", t0), Some(0), "kinds are apart");
        assert_eq!(limit.admit_at("a", t0 + Duration::from_secs(60)), Some(99));
        assert_eq!(limit.admit_at("a", t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn kinds_are_bounded() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_KINDS * 3) {
            limit.admit_at(&format!("k{i}"), t0);
        }
        assert!(limit.kinds.lock().map(|k| k.len()).unwrap_or(0) <= MAX_KINDS + 1);
        // A kind seen before the flood is still limited: the flood did not reset it.
        assert_eq!(limit.admit_at("k0", t0 + Duration::from_secs(1)), None);
        // New kinds during the flood share one line an interval.
        let admitted = (0..100)
            .filter(|i| {
                limit
                    .admit_at(&format!("new{i}"), t0 + Duration::from_secs(2))
                    .is_some()
            })
            .count();
        assert!(admitted <= 1, "{admitted}");
    }
}
