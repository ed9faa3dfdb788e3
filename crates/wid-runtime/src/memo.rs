//! A small concurrent map for memoising lookups: reads share a lock, a full map is cleared
//! rather than evicted entry by entry (the working sets it serves are far below the bound).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};

pub struct Memo<K, V> {
    map: RwLock<HashMap<K, V>>,
    max_entries: usize,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub fn new(max_entries: usize) -> Self {
        Memo {
            map: RwLock::new(HashMap::new()),
            max_entries,
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub fn put(&self, key: K, value: V) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.max_entries {
            map.clear();
        }
        map.insert(key, value);
    }

    pub fn clear(&self) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Memo;

    #[test]
    fn bounded() {
        let memo = Memo::new(2);
        memo.put(1, "a");
        memo.put(2, "b");
        assert_eq!(memo.get(&1), Some("a"));
        memo.put(3, "c");
        assert_eq!(memo.get(&1), None, "a full map starts over");
        assert_eq!(memo.get(&3), Some("c"));
    }
}
