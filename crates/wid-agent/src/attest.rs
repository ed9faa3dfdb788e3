//! Kernel attestation of callers (`--attest-callers`): before a connection is answered as a
//! pod's, the agent confirms from the kernel that the connection starts in that pod.
//!
//! Every IP-based peer trusts its pod index: if the index is behind (a pod gone and its address
//! already given to a new one), the new pod is answered with the old one's identity. Here the
//! index only proposes a pod; the kernel decides. The pod's processes are found by their cgroup
//! (kubelet names it after the pod's UID), and the connection must be an open socket in one of
//! their network namespaces, from the pod's address and port to what the pod dialled
//! (`/proc/PID/net/tcp`). No other pod on the node shares those namespaces.
//!
//! The agent needs the host's process table for this: `hostPID: true` in the DaemonSet (or the
//! host's `/proc` mounted and given as `--proc-root`) and root, as a host-network agent has.
//! Confirmation is per connection and pod, so keep-alive requests pay for it once; the file
//! reads are blocking and run off the serving threads, a bounded number at a time.
//!
//! Host-network callers share the node's addresses: the connection is attributed by the
//! process that holds its socket ([`Attestor::owner_of`]): a host-network pod's process makes it
//! that pod's, a process of no pod the node's (its identity, if one is configured).
//!
//! Not covered: static pods (their cgroup is named after a hash of their manifest, not the
//! mirror pod's UID: refused), and sandboxed runtimes (gVisor, Kata) whose sockets are not in
//! the host kernel's tables (refused): run such nodes without attestation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::pods::Pod;

/// A new scan of the process table is made at most this often: a caller whose pod has no
/// process cannot make the agent walk `/proc` at will.
pub const MIN_RESCAN: Duration = Duration::from_millis(250);

/// The two ends of a connection as the pod's kernel sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The pod's address and port: the connection's peer.
    pub pod: SocketAddr,
    /// What the pod dialled: the original destination before the node's DNAT (169.254.169.254:80),
    /// or the agent's own address when there was none.
    pub dialled: SocketAddr,
}

/// Confirms callers against the kernel's view under a `/proc`.
pub struct Attestor {
    proc_root: PathBuf,
    /// The agent's own network namespace, the host's (the agent runs on the host network): a
    /// pod's process there (a runtime's monitor in the pod's cgroup, a host-network pod) says
    /// nothing about the pod's network.
    host_network: Option<(u64, u64)>,
    scan: Mutex<Scan>,
}

/// The pods' processes, by pod UID, as of the last walk of the process table.
#[derive(Default)]
struct Scan {
    at: Option<Instant>,
    pids: HashMap<String, Vec<u32>>,
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

/// Who holds a connection made on the host's own network (a host-network caller's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Processes of the pod with this UID: a host-network pod's.
    Pod(String),
    /// Processes of no pod: the node's own.
    Node,
    /// No one the agent can name, and why: no process on the host's network holds it, its
    /// holders are more than one pod (or pods and the node), a holder is under kubelet's pods
    /// in no pod named by a UID (a static pod), or a holder's cgroup cannot be read.
    Unknown(&'static str),
}

/// Why the process table cannot serve for attestation.
#[derive(Debug, thiserror::Error)]
pub enum AttestorError {
    #[error("cannot read the process table at {path}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the process table at {path} lists no process: give the host's /proc")]
    Empty { path: PathBuf },
    #[error(
        "cannot read the sockets of process 1 under {path}: the agent needs root (or CAP_SYS_PTRACE) to read other processes' network tables"
    )]
    NotPermitted {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the process table at {path} is a pod's own (its first process is in pod {uid}): the agent needs the host's (hostPID: true, or the host's /proc as --proc-root)"
    )]
    PodsOwn { path: PathBuf, uid: String },
}

impl Attestor {
    /// Checks that `proc_root` is a process table the agent can read, and the host's: when its
    /// first process is in a pod, the agent sees only its own pod's processes and would refuse
    /// every other pod.
    pub fn new(proc_root: impl Into<PathBuf>) -> Result<Attestor, AttestorError> {
        let proc_root = proc_root.into();
        let mut entries =
            std::fs::read_dir(&proc_root).map_err(|source| AttestorError::Unreadable {
                path: proc_root.clone(),
                source,
            })?;
        let any_process = entries.any(|entry| {
            entry.is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        });
        if !any_process {
            return Err(AttestorError::Empty { path: proc_root });
        }
        if proc_root.join("1").exists()
            && let Err(source) = std::fs::read_to_string(proc_root.join("1/net/tcp"))
        {
            return Err(AttestorError::NotPermitted {
                path: proc_root,
                source,
            });
        }
        if let Some(uid) = read_cgroup(&proc_root, 1) {
            return Err(AttestorError::PodsOwn {
                path: proc_root,
                uid,
            });
        }
        Ok(Attestor {
            host_network: namespace_id(Path::new("/proc/self/ns/net")),
            proc_root,
            scan: Mutex::new(Scan::default()),
        })
    }

    /// Confirms that the connection with `ends` starts in `pod`. Blocking: reads `/proc`.
    pub fn confirm(&self, pod: &Pod, ends: Ends) -> Result<(), Unconfirmed> {
        let name = || format!("{}/{} ({})", pod.namespace, pod.name, pod.uid);
        if pod.uid.is_empty() {
            return Err(Unconfirmed::NoUid {
                pod: format!("{}/{}", pod.namespace, pod.name),
            });
        }
        let mut found_any = false;
        for rescanned in [false, true] {
            let pids = self.pids_of(&pod.uid, rescanned);
            found_any |= !pids.is_empty();
            if self.any_namespace_has(&pod.uid, &pids, ends) {
                return Ok(());
            }
        }
        Err(if found_any {
            Unconfirmed::OtherNamespace {
                pod: name(),
                peer: ends.pod,
            }
        } else {
            Unconfirmed::NoProcess { pod: name() }
        })
    }

    /// Who holds the connection with `ends`, made on the host's network: its socket's inode
    /// from the agent's own tables (the host's), then every process on the host's network whose
    /// descriptor is that socket, and their cgroups, which must agree. Blocking: reads `/proc`.
    /// A process counts only if it still holds the socket after its cgroup was read, so a pid
    /// that died and was reused meanwhile counts for nothing.
    pub fn owner_of(&self, ends: Ends) -> Owner {
        let Some(inode) = host_socket_inode(ends) else {
            return Owner::Unknown("no process on the node's network holds it");
        };
        let Some(pids) = self.pids() else {
            return Owner::Unknown("the process table cannot be read");
        };
        let mut owner = None;
        for pid in pids {
            let process = self.proc_root.join(pid.to_string());
            let on_host = self.host_network.is_none()
                || namespace_id(&process.join("ns/net")) == self.host_network;
            if !on_host || !holds(&process, inode) {
                continue;
            }
            let cgroup = std::fs::read_to_string(process.join("cgroup"));
            if !holds(&process, inode) {
                continue;
            }
            let this = match cgroup.map(|c| wid_procfs::cgroup_owner(&c)) {
                Ok(wid_procfs::CgroupOwner::Pod(uid)) => Owner::Pod(uid),
                Ok(wid_procfs::CgroupOwner::Node) => Owner::Node,
                Ok(wid_procfs::CgroupOwner::UnknownPod) => {
                    return Owner::Unknown(
                        "it is held by a pod's process with no pod UID (a static pod)",
                    );
                }
                Err(_) => return Owner::Unknown("a holder's cgroup cannot be read"),
            };
            match &owner {
                Some(seen) if *seen != this => {
                    return Owner::Unknown("it is held by processes of more than one owner");
                }
                _ => owner = Some(this),
            }
        }
        owner.unwrap_or(Owner::Unknown("no process on the node's network holds it"))
    }

    /// Whether one of the network namespaces of `pids` (one process each, the host's left out)
    /// holds the connection. A process is the pod's only if its cgroup still says so after its
    /// tables were read: a pid that died and was reused meanwhile counts for nothing.
    fn any_namespace_has(&self, uid: &str, pids: &[u32], ends: Ends) -> bool {
        let mut seen: Vec<(u64, u64)> = Vec::new();
        for &pid in pids {
            let process = self.proc_root.join(pid.to_string());
            if let Some(namespace) = namespace_id(&process.join("ns/net")) {
                if Some(namespace) == self.host_network || seen.contains(&namespace) {
                    continue;
                }
                seen.push(namespace);
            }
            if tables_have(&process, ends)
                && read_cgroup(&self.proc_root, pid).as_deref() == Some(uid)
            {
                return true;
            }
        }
        false
    }

    /// The processes of the pod with `uid`: from the last scan, or, with `rescan`, from a new
    /// one unless the last is younger than [`MIN_RESCAN`]. Scans run one at a time.
    fn pids_of(&self, uid: &str, rescan: bool) -> Vec<u32> {
        let mut scan = self
            .scan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = scan.at.is_some_and(|at| at.elapsed() < MIN_RESCAN);
        if (rescan || scan.at.is_none()) && !fresh {
            *scan = Scan {
                at: Some(Instant::now()),
                pids: self.walk(),
            };
        }
        scan.pids.get(uid).cloned().unwrap_or_default()
    }

    fn walk(&self) -> HashMap<String, Vec<u32>> {
        let mut pods: HashMap<String, Vec<u32>> = HashMap::new();
        for pid in self.pids().into_iter().flatten() {
            if let Some(uid) = read_cgroup(&self.proc_root, pid) {
                pods.entry(uid).or_default().push(pid);
            }
        }
        pods
    }

    /// The pids of the process table; `None` when it cannot be read.
    fn pids(&self) -> Option<impl Iterator<Item = u32>> {
        let entries = std::fs::read_dir(&self.proc_root).ok()?;
        Some(
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
        )
    }
}

/// Whether the socket tables of `process`'s network namespace hold the connection: both
/// tables, since an IPv4 connection may be on an IPv6 socket.
fn tables_have(process: &Path, ends: Ends) -> bool {
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(process.join("net").join(table))
            .is_ok_and(|table| wid_procfs::socket_table_has(&table, ends.pod, ends.dialled))
    })
}

/// A network namespace's identity: the device and inode of its `ns/net` file.
/// The inode of the connection's socket in the agent's own network namespace (the host's).
fn host_socket_inode(ends: Ends) -> Option<u64> {
    ["tcp", "tcp6"].iter().find_map(|table| {
        let table = std::fs::read_to_string(Path::new("/proc/self/net").join(table)).ok()?;
        wid_procfs::socket_inode(&table, ends.pod, ends.dialled)
    })
}

/// Whether `process` has a descriptor open on the socket `inode`.
fn holds(process: &Path, inode: u64) -> bool {
    let Ok(descriptors) = std::fs::read_dir(process.join("fd")) else {
        return false;
    };
    descriptors.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| {
            link.to_str()
                .is_some_and(|l| wid_procfs::is_socket_link(l, inode))
        })
    })
}

fn namespace_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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

    /// A process of pod `uid` in a process table at `root`, whose network is this test's own
    /// (`net` is the real `/proc/self/net`), so the kernel's socket tables are read; its
    /// `ns/net` is left out, so that it is not taken for the host's.
    fn process(root: &Path, pid: u32, uid: &str) {
        let process = root.join(pid.to_string());
        std::fs::create_dir_all(&process).expect("mkdir");
        std::fs::write(
            process.join("cgroup"),
            format!("0::/kubepods/besteffort/pod{uid}/c0\n"),
        )
        .expect("cgroup");
        std::os::unix::fs::symlink("/proc/self/net", process.join("net")).expect("symlink");
    }

    struct Connection {
        ends: Ends,
        _client: std::net::TcpStream,
        _server: std::net::TcpStream,
    }

    fn connect() -> Connection {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let dialled = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(dialled).expect("connect");
        let (server, peer) = listener.accept().expect("accept");
        Connection {
            ends: Ends { pod: peer, dialled },
            _client: client,
            _server: server,
        }
    }

    #[test]
    fn a_connection_from_the_pods_namespace_is_confirmed() {
        let root = tempfile::tempdir().expect("tempdir");
        process(root.path(), 4242, UID_A);
        let attestor = Attestor::new(root.path()).expect("attestor");
        let connection = connect();
        attestor
            .confirm(&pod(UID_A), connection.ends)
            .expect("confirmed");

        // Another pod, with no process here: refused, whatever the index says.
        let refused = attestor.confirm(&pod(UID_B), connection.ends);
        assert!(
            matches!(refused, Err(Unconfirmed::NoProcess { .. })),
            "{refused:?}"
        );

        // The right source, but dialled elsewhere: not this connection.
        let elsewhere = Ends {
            dialled: "169.254.169.254:80".parse().expect("addr"),
            ..connection.ends
        };
        let refused = attestor.confirm(&pod(UID_A), elsewhere);
        assert!(
            matches!(refused, Err(Unconfirmed::OtherNamespace { .. })),
            "{refused:?}"
        );
        // No UID, no confirmation.
        assert!(matches!(
            attestor.confirm(&pod(""), connection.ends),
            Err(Unconfirmed::NoUid { .. })
        ));
    }

    #[test]
    fn a_pods_process_on_the_host_network_is_passed_over() {
        let root = tempfile::tempdir().expect("tempdir");
        // The pod's first process is on the host's network (the agent's own, here); the
        // connection is in its other process's network, which is the same here, so the first
        // one is passed over and the second, whose namespace is unknown, confirms.
        process(root.path(), 100, UID_A);
        std::fs::create_dir_all(root.path().join("100/ns")).expect("mkdir");
        std::os::unix::fs::symlink("/proc/self/ns/net", root.path().join("100/ns/net"))
            .expect("symlink");
        let attestor = Attestor::new(root.path()).expect("attestor");
        let connection = connect();
        let refused = attestor.confirm(&pod(UID_A), connection.ends);
        assert!(
            matches!(refused, Err(Unconfirmed::OtherNamespace { .. })),
            "{refused:?}"
        );
        process(root.path(), 200, UID_A);
        let attestor = Attestor::new(root.path()).expect("attestor");
        attestor
            .confirm(&pod(UID_A), connection.ends)
            .expect("confirmed by the second process");
    }

    #[test]
    fn a_process_that_left_the_pod_counts_for_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        process(root.path(), 4242, UID_A);
        let attestor = Attestor::new(root.path()).expect("attestor");
        let connection = connect();
        attestor
            .confirm(&pod(UID_A), connection.ends)
            .expect("confirmed");
        // The pid is now another pod's (reused): pod A has no process left.
        std::fs::write(
            root.path().join("4242/cgroup"),
            format!("0::/kubepods/besteffort/pod{UID_B}/c0\n"),
        )
        .expect("cgroup");
        assert!(attestor.confirm(&pod(UID_A), connection.ends).is_err());
    }

    #[test]
    fn a_table_that_is_not_the_hosts_is_refused_at_start() {
        assert!(matches!(
            Attestor::new("/nonexistent/proc"),
            Err(AttestorError::Unreadable { .. })
        ));
        let root = tempfile::tempdir().expect("tempdir");
        process(root.path(), 1, UID_A);
        assert!(matches!(
            Attestor::new(root.path()),
            Err(AttestorError::PodsOwn { .. })
        ));
    }
}
