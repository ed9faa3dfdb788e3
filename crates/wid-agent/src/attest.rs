//! Kernel attestation of callers (`--attest-callers`): before a connection is answered as a
//! pod's, the agent confirms from the kernel that the connection starts in that pod.
//!
//! Every IP-based peer trusts its pod index: if the index is behind (a pod gone and its address
//! already given to a new one), the new pod is answered with the old one's identity. Here the
//! index only proposes a pod; the kernel decides. The pod's processes are found by their cgroup
//! (kubelet names it after the pod's UID), and the connection's far end, the pod's address and
//! port, must be a socket in their network namespace (`/proc/PID/net/tcp`), which no other pod
//! on the node shares. A connection that is not is refused, whatever the index says.
//!
//! The agent needs the host's process table for this: `hostPID: true` in the DaemonSet (or the
//! host's `/proc` mounted and given as `--proc-root`) and root, as a host-network agent has.
//! Confirmation is per connection and pod, so keep-alive requests pay for it once; the file
//! reads are blocking and run off the serving threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::pods::Pod;

/// Confirms callers against the kernel's view under a `/proc`.
pub struct Attestor {
    proc_root: PathBuf,
    /// One live process of each pod, by pod UID: found by a scan of the process table, checked
    /// again before each use since processes come and go.
    pids: Mutex<HashMap<String, u32>>,
}

/// Why a connection could not be confirmed as the pod's.
#[derive(Debug, thiserror::Error)]
pub enum Unconfirmed {
    #[error("no process of pod {pod} runs on this node")]
    NoProcess { pod: String },
    #[error("the connection from {peer} does not start in the network namespace of pod {pod}")]
    OtherNamespace { pod: String, peer: SocketAddr },
    #[error("pod {pod} has no UID to confirm it by")]
    NoUid { pod: String },
}

impl Attestor {
    /// Checks that `proc_root` is a process table this agent can read: its own entry must be
    /// there (with `hostPID`, the host's `/proc` holds every process of the node).
    pub fn new(proc_root: impl Into<PathBuf>) -> std::io::Result<Attestor> {
        let proc_root = proc_root.into();
        std::fs::read_dir(&proc_root)?;
        Ok(Attestor {
            proc_root,
            pids: Mutex::new(HashMap::new()),
        })
    }

    /// Confirms that the connection from `peer` starts in `pod`. Blocking: reads `/proc`.
    pub fn confirm(&self, pod: &Pod, peer: SocketAddr) -> Result<(), Unconfirmed> {
        let name = || format!("{}/{} ({})", pod.namespace, pod.name, pod.uid);
        if pod.uid.is_empty() {
            return Err(Unconfirmed::NoUid {
                pod: format!("{}/{}", pod.namespace, pod.name),
            });
        }
        let Some(pid) = self.pid_of(&pod.uid) else {
            return Err(Unconfirmed::NoProcess { pod: name() });
        };
        let in_namespace = ["tcp", "tcp6"].iter().any(|table| {
            let path = self.proc_root.join(pid.to_string()).join("net").join(table);
            std::fs::read_to_string(path)
                .is_ok_and(|table| wid_procfs::socket_table_has(&table, peer))
        });
        if in_namespace {
            Ok(())
        } else {
            Err(Unconfirmed::OtherNamespace { pod: name(), peer })
        }
    }

    /// A live process of the pod with `uid`: the remembered one if it is still the pod's, else
    /// the first found by a scan of the whole table (which refreshes every pod's entry).
    fn pid_of(&self, uid: &str) -> Option<u32> {
        let remembered = self.lock().get(uid).copied();
        if let Some(pid) = remembered
            && self.pod_of_process(pid).as_deref() == Some(uid)
        {
            return Some(pid);
        }
        let scanned = self.scan();
        let pid = scanned.get(uid).copied();
        *self.lock() = scanned;
        pid
    }

    fn pod_of_process(&self, pid: u32) -> Option<String> {
        read_cgroup(&self.proc_root, pid)
    }

    fn scan(&self) -> HashMap<String, u32> {
        let mut pods = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return pods;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(uid) = read_cgroup(&self.proc_root, pid) {
                pods.entry(uid).or_insert(pid);
            }
        }
        pods
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // The map is a cache: one left half-written by a panic is still a valid cache.
        self.pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn read_cgroup(proc_root: &Path, pid: u32) -> Option<String> {
    let cgroup = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    wid_procfs::pod_uid_of_cgroup(&cgroup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const UID_A: &str = "0a000000-0000-4000-8000-00000000000a";
    const UID_B: &str = "0b000000-0000-4000-8000-00000000000b";

    fn pod(uid: &str) -> Pod {
        Pod {
            ip: "127.0.0.1".parse().expect("ip"),
            namespace: "ns".into(),
            name: "p".into(),
            uid: uid.into(),
            service_account_name: "default".into(),
            annotations: BTreeMap::new(),
        }
    }

    /// A process table of one process of pod A whose network namespace is this test's own
    /// (its `net` is the real `/proc/self/net`), so the real socket tables are read.
    fn table_with_pod_a() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let process = root.path().join("4242");
        std::fs::create_dir(&process).expect("mkdir");
        std::fs::write(
            process.join("cgroup"),
            format!("0::/kubepods/besteffort/pod{UID_A}/c0\n"),
        )
        .expect("cgroup");
        std::os::unix::fs::symlink("/proc/self/net", process.join("net")).expect("symlink");
        root
    }

    #[test]
    fn a_connection_from_the_pods_namespace_is_confirmed() {
        let root = table_with_pod_a();
        let attestor = Attestor::new(root.path()).expect("attestor");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (_server, peer) = listener.accept().expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        attestor.confirm(&pod(UID_A), peer).expect("confirmed");

        // Another pod, with no process here: refused, whatever the index says.
        let refused = attestor.confirm(&pod(UID_B), peer);
        assert!(
            matches!(refused, Err(Unconfirmed::NoProcess { .. })),
            "{refused:?}"
        );
        // A port with no socket in pod A's namespace: refused.
        drop(client);
        let gone: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let refused = attestor.confirm(&pod(UID_A), gone);
        assert!(
            matches!(refused, Err(Unconfirmed::OtherNamespace { .. })),
            "{refused:?}"
        );
        // No UID, no confirmation.
        assert!(matches!(
            attestor.confirm(&pod(""), peer),
            Err(Unconfirmed::NoUid { .. })
        ));
    }

    #[test]
    fn a_process_that_left_the_pod_is_looked_up_again() {
        let root = table_with_pod_a();
        let attestor = Attestor::new(root.path()).expect("attestor");
        assert_eq!(attestor.pid_of(UID_A), Some(4242));
        // The process is now another pod's (its pid reused): pod A has none left.
        std::fs::write(
            root.path().join("4242/cgroup"),
            format!("0::/kubepods/besteffort/pod{UID_B}/c0\n"),
        )
        .expect("cgroup");
        assert_eq!(attestor.pid_of(UID_A), None);
        assert_eq!(attestor.pid_of(UID_B), Some(4242));
    }

    #[test]
    fn an_unreadable_table_is_refused_at_start() {
        assert!(Attestor::new("/nonexistent/proc").is_err());
    }
}
