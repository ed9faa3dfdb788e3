//! The connections a listener serves, by peer address: the cap on them, and who makes room when
//! it is reached.
//!
//! Every served connection holds a [`Lease`]. When the cap is reached, a new connection does not
//! simply wait for one to end: the table asks an idle connection to close (one that is answering
//! nothing: between requests, or still sending a head), first one of an address its server
//! marked a stranger (no pod has it), then one of the address holding the most connections. So
//! an address that holds many connections, pod or not, never keeps another from being served,
//! and one busy address may still use every connection while nobody else needs one.
//!
//! The table also bounds the bytes of request heads still arriving: at most
//! [`HEAD_BYTES_PER_ADDRESS`] per address and [`HEAD_BYTES`] in all, so that connections that
//! trickle large heads cannot make the server hold much, whoever opens them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// Bytes of unfinished request heads one address may have the server hold.
pub const HEAD_BYTES_PER_ADDRESS: usize = 1024 * 1024;
/// The same for every address together.
pub const HEAD_BYTES: usize = 16 * 1024 * 1024;

/// What a connection says of itself, and how it is asked to close.
#[derive(Default)]
struct State {
    /// Bytes of an unfinished request head it holds.
    head_bytes: AtomicUsize,
    /// Answering nothing: it may be closed to make room.
    idle: AtomicBool,
    /// Its address is no known client of the server (no pod): its idle time goes first.
    stranger: AtomicBool,
    shed: Notify,
}

/// One address's connections, and the bytes of unfinished heads they hold.
#[derive(Default)]
struct Holder {
    leases: HashMap<u64, Arc<State>>,
    head_bytes: usize,
}

/// Every address's connections, and the bytes of unfinished heads of them all.
#[derive(Default)]
struct Registry {
    by_ip: HashMap<IpAddr, Holder>,
    head_bytes: usize,
}

#[derive(Default)]
struct Inner {
    registry: Mutex<Registry>,
    count: AtomicUsize,
    next_id: AtomicU64,
    /// Notified whenever a connection ends.
    freed: Notify,
}

/// The table of one listener's connections.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
    max: usize,
}

/// One served connection's place in its table; it leaves the table when dropped.
pub struct Lease {
    inner: Arc<Inner>,
    ip: IpAddr,
    id: u64,
    state: Arc<State>,
}

/// A peer's address as one: IPv4 peers can arrive as IPv4-mapped IPv6 addresses on a dual-stack
/// listener.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Table {
    pub fn new(max: usize) -> Table {
        Table {
            inner: Arc::default(),
            max: max.max(1),
        }
    }

    /// Connections served now.
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a connection from `ip`, if one is free.
    fn try_admit(&self, ip: IpAddr) -> Option<Lease> {
        let ip = canonical_ip(ip);
        let mut registry = lock(&self.inner.registry);
        if self.inner.count.load(Ordering::Acquire) >= self.max {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(State::default());
        registry
            .by_ip
            .entry(ip)
            .or_default()
            .leases
            .insert(id, state.clone());
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            inner: self.inner.clone(),
            ip,
            id,
            state,
        })
    }

    /// A place for a connection from `ip`: at once if one is free, else once an idle connection
    /// asked to make room (see the module's documentation) or any other has ended.
    pub async fn admit(&self, ip: IpAddr) -> Lease {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so that an end between the two is not missed.
            freed.as_mut().enable();
            if let Some(lease) = self.try_admit(ip) {
                return lease;
            }
            self.shed_one();
            // A connection asked may have just become busy: ask again after a while.
            let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
        }
    }

    /// Asks one idle connection to close: a stranger's, else one of the address with the most.
    /// Returns whether one was asked.
    fn shed_one(&self) -> bool {
        let registry = lock(&self.inner.registry);
        let by_ip = &registry.by_ip;
        let idle = |state: &&Arc<State>| state.idle.load(Ordering::Acquire);
        let stranger = by_ip
            .values()
            .flat_map(|h| h.leases.values())
            .find(|s| idle(s) && s.stranger.load(Ordering::Acquire));
        let chosen = stranger.or_else(|| {
            let mut holders: Vec<&Holder> = by_ip.values().collect();
            holders.sort_by_key(|h| std::cmp::Reverse(h.leases.len()));
            holders
                .into_iter()
                .find_map(|h| h.leases.values().find(idle))
        });
        match chosen {
            Some(state) => {
                // Asked once: it is idle no more as far as shedding goes.
                state.idle.store(false, Ordering::Release);
                state.shed.notify_one();
                true
            }
            None => false,
        }
    }

    /// Resolves once every connection has ended, or after `bound`.
    pub async fn drained(&self, bound: Duration) {
        let all_gone = async {
            loop {
                let freed = self.inner.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if self.is_empty() {
                    return;
                }
                freed.await;
            }
        };
        let _ = tokio::time::timeout(bound, all_gone).await;
    }
}

impl Lease {
    /// Says whether the connection is answering nothing (and may be closed to make room).
    pub fn set_idle(&self, idle: bool) {
        self.state.idle.store(idle, Ordering::Release);
    }

    /// Says whether the connection's address is no known client: its idle time goes first.
    pub fn set_stranger(&self, stranger: bool) {
        self.state.stranger.store(stranger, Ordering::Release);
    }

    /// Resolves when the table asks this connection to close to make room.
    pub async fn shed(&self) {
        self.state.shed.notified().await;
    }

    /// Connections from this connection's address, itself included.
    pub fn peers(&self) -> usize {
        lock(&self.inner.registry)
            .by_ip
            .get(&self.ip)
            .map_or(0, |h| h.leases.len())
    }

    /// Connections from this connection's address admitted before it and still open. A cap on
    /// an address compares this, not [`Lease::peers`]: connections admitted at once would each
    /// count the others and all close, where only those past the cap should.
    pub fn earlier_peers(&self) -> usize {
        lock(&self.inner.registry)
            .by_ip
            .get(&self.ip)
            .map_or(0, |h| h.leases.keys().filter(|id| **id < self.id).count())
    }

    /// Says that the connection holds `bytes` of an unfinished request head (0 once it is
    /// complete); false, with nothing counted, when that would take its address or the server
    /// past their bound: the connection should then close.
    pub fn hold_head(&self, bytes: usize) -> bool {
        let mut registry = lock(&self.inner.registry);
        let total = registry.head_bytes;
        let Some(holder) = registry.by_ip.get_mut(&self.ip) else {
            return false;
        };
        let held = self.state.head_bytes.load(Ordering::Acquire);
        let (address, all) = (holder.head_bytes - held + bytes, total - held + bytes);
        if bytes > held && (address > HEAD_BYTES_PER_ADDRESS || all > HEAD_BYTES) {
            return false;
        }
        holder.head_bytes = address;
        registry.head_bytes = all;
        self.state.head_bytes.store(bytes, Ordering::Release);
        true
    }

    /// The peer's address, IPv4-mapped addresses as IPv4.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut registry = lock(&self.inner.registry);
            let held = self.state.head_bytes.load(Ordering::Acquire);
            if let Some(holder) = registry.by_ip.get_mut(&self.ip) {
                holder.leases.remove(&self.id);
                holder.head_bytes -= held;
                if holder.leases.is_empty() {
                    registry.by_ip.remove(&self.ip);
                }
            }
            registry.head_bytes -= held;
            self.inner.count.fetch_sub(1, Ordering::AcqRel);
        }
        self.inner.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn the_biggest_holder_makes_room() {
        let table = Table::new(4);
        let hog: Vec<Lease> = (0..3)
            .map(|_| table.try_admit(ip(1)).expect("hog"))
            .collect();
        let other = table.try_admit(ip(2)).expect("other");
        assert!(table.try_admit(ip(3)).is_none(), "full");
        for lease in &hog {
            lease.set_idle(true);
        }
        other.set_idle(true);
        assert!(table.shed_one());
        // The hog's connection was asked, not the other's.
        let asked = hog
            .iter()
            .filter(|l| !l.state.idle.load(Ordering::Acquire))
            .count();
        assert_eq!(asked, 1);
        assert!(other.state.idle.load(Ordering::Acquire));
        // Strangers go before anyone, however few they hold.
        other.set_stranger(true);
        assert!(table.shed_one());
        assert!(
            !other.state.idle.load(Ordering::Acquire),
            "the stranger was asked"
        );
        // Nothing idle: nobody is asked.
        for lease in &hog {
            lease.set_idle(false);
        }
        assert!(!table.shed_one());
    }

    #[tokio::test]
    async fn a_new_connection_gets_the_place_an_idle_one_leaves() {
        let table = Table::new(2);
        let (a, b) = (
            table.try_admit(ip(1)).expect("a"),
            table.try_admit(ip(1)).expect("b"),
        );
        a.set_idle(true);
        // The served side of `a`: closes when asked.
        let served = tokio::spawn(async move {
            a.shed().await;
            drop(a);
        });
        let newcomer = tokio::time::timeout(Duration::from_secs(5), table.admit(ip(9)))
            .await
            .expect("admitted within the bound");
        assert_eq!(newcomer.ip(), ip(9));
        served.await.expect("served");
        assert_eq!(b.peers(), 1);
        assert_eq!(table.len(), 2);
        drop((b, newcomer));
        table.drained(Duration::from_secs(1)).await;
        assert!(table.is_empty());
    }

    #[test]
    fn unfinished_heads_are_bounded_per_address() {
        let table = Table::new(1000);
        let leases: Vec<Lease> = (0..100)
            .map(|_| table.try_admit(ip(1)).expect("lease"))
            .collect();
        let per = 16 * 1024;
        let held = leases.iter().take_while(|l| l.hold_head(per)).count();
        assert_eq!(held, HEAD_BYTES_PER_ADDRESS / per, "the address's bound");
        // Another address is not affected; a finished head gives its bytes back.
        let other = table.try_admit(ip(2)).expect("other");
        assert!(other.hold_head(per));
        assert!(leases[0].hold_head(0));
        assert!(leases[held].hold_head(per));
        // Gone connections give theirs back too.
        drop(leases);
        let again = table.try_admit(ip(1)).expect("again");
        assert!(again.hold_head(HEAD_BYTES_PER_ADDRESS));
        drop((again, other));
        // And every address together.
        let many: Vec<Lease> = (10..40)
            .map(|i| table.try_admit(ip(i)).expect("lease"))
            .collect();
        let held = many
            .iter()
            .filter(|l| l.hold_head(HEAD_BYTES_PER_ADDRESS))
            .count();
        assert_eq!(held, HEAD_BYTES / HEAD_BYTES_PER_ADDRESS);
    }

    #[test]
    fn mapped_addresses_count_as_ipv4() {
        let table = Table::new(4);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let a = table.try_admit(mapped).expect("a");
        let b = table.try_admit(ip(1)).expect("b");
        assert_eq!(a.peers(), 2);
        assert_eq!((a.earlier_peers(), b.earlier_peers()), (0, 1));
    }
}
