//! Pure parsers of the Linux `/proc` files behind the agent's caller attestation: a process's
//! `cgroup` file (which pod the process belongs to), its network namespace's TCP socket
//! tables, `net/tcp` and `net/tcp6` (whether a connection starts there, and its socket's
//! inode), and its descriptors' links (which process holds that socket). No I/O: the agent reads
//! the files, these functions decide, and they take any bytes without panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The UID of the pod whose cgroup a process is in, from its `/proc/PID/cgroup`, or `None` for
/// a process outside every pod (the node's own daemons).
///
/// kubelet names a pod's cgroup after its UID with either cgroup driver: `pod<UID>` under
/// cgroupfs (`/kubepods/burstable/pod1b4e…/<container>`), and
/// `kubepods-<qos>-pod<UID with underscores>.slice` under systemd. The UID comes back with
/// dashes, as the API server writes it.
pub fn pod_uid_of_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        // `hierarchy-ID:controllers:path`; the path may itself hold colons.
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(pod_uid_of_segment)
    })
}

/// What a process's `/proc/PID/cgroup` says of where it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupOwner {
    /// In the cgroup of the pod with this UID.
    Pod(String),
    /// Under kubelet's pods (`kubepods`) but in no pod named by a UID: a static pod's (named
    /// after its manifest's hash), or a layout not known here. Never the node's own.
    UnknownPod,
    /// Outside every pod: the node's own daemons.
    Node,
}

/// Where a process runs, from its `/proc/PID/cgroup`: a pod, kubelet's pods without a pod
/// UID, or outside them.
pub fn cgroup_owner(cgroup: &str) -> CgroupOwner {
    if let Some(uid) = pod_uid_of_cgroup(cgroup) {
        return CgroupOwner::Pod(uid);
    }
    let under_kubepods = cgroup.lines().any(|line| {
        line.splitn(3, ':')
            .nth(2)
            .is_some_and(|path| path.split('/').any(|s| s.starts_with("kubepods")))
    });
    if under_kubepods {
        CgroupOwner::UnknownPod
    } else {
        CgroupOwner::Node
    }
}

fn pod_uid_of_segment(segment: &str) -> Option<String> {
    let uid = match segment.strip_suffix(".slice") {
        // systemd: the last `-pod…` part of the slice's name.
        Some(slice) => slice.rsplit_once("-pod")?.1,
        None => segment.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A Kubernetes UID: an RFC 4122 UUID in its 36-character text form.
fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Whether a TCP socket table (`/proc/PID/net/tcp` or `net/tcp6`: the sockets of that process's
/// network namespace) holds an open connection from `local` to `remote`.
///
/// The agent sees a pod's connection from the pod's address and port; the pod's own end of it
/// is a socket with that local end, connected to what the pod dialled (169.254.169.254:80 before
/// the node's DNAT, or the agent's own address), in the pod's network namespace and in no other
/// on the node. Only an open connection counts (established, or closing from the pod's side):
/// a socket left in TIME_WAIT, a listener or a server's accepted socket with the same local end
/// is someone else's. IPv4 ends of an IPv6 socket (`::ffff:a.b.c.d`) count as IPv4.
pub fn socket_table_has(table: &str, local: SocketAddr, remote: SocketAddr) -> bool {
    open_socket(table, local, remote).is_some()
}

/// The inode of the open connection from `local` to `remote` in a TCP socket table (as
/// [`socket_table_has`] finds it): the number in the `socket:[INODE]` link of the descriptor of
/// the process that holds it (`/proc/PID/fd/N`), so that a host-network caller's process, and
/// so its pod, can be found. `None` when the table has no such connection.
pub fn socket_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let line = open_socket(table, local, remote)?;
    // sl, local, remote, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode.
    line.split_whitespace().nth(9)?.parse().ok()
}

/// The line of the open connection from `local` to `remote`.
fn open_socket(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<&str> {
    let want = (
        (local.ip().to_canonical(), local.port()),
        (remote.ip().to_canonical(), remote.port()),
    );
    table.lines().skip(1).find(|line| {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local_field), Some(remote_field), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        OPEN.contains(&state)
            && parse_endpoint(local_field).is_some_and(|found| found == want.0)
            && parse_endpoint(remote_field).is_some_and(|found| found == want.1)
    })
}

/// Whether a descriptor's link (`/proc/PID/fd/N`, read with readlink) is the socket `inode`.
pub fn is_socket_link(link: &str, inode: u64) -> bool {
    link.strip_prefix("socket:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
        == Some(inode)
}

/// The state column of a connection the pod holds open: `TCP_ESTABLISHED` (1), and the pod
/// closing it, `TCP_FIN_WAIT1` (4) and `TCP_FIN_WAIT2` (5).
const OPEN: [&str; 3] = ["01", "04", "05"];

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each 32-bit
/// word of the address as a native-endian number, so the word's bytes in native order are the
/// address's bytes in network order; the port is printed as a plain number.
fn parse_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = [0u8; 16];
    let words = match address.len() {
        8 => 1,
        32 => 4,
        _ => return None,
    };
    for word in 0..words {
        let hex = address.get(word * 8..word * 8 + 8)?;
        let value = u32::from_str_radix(hex, 16).ok()?;
        bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_ne_bytes());
    }
    let ip = if words == 1 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical()
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    #[test]
    fn pods_by_either_cgroup_driver() {
        let cgroupfs = format!(
            "12:pids:/kubepods/burstable/pod{UID}/0a1b2c\n0::/kubepods/burstable/pod{UID}/0a1b2c\n"
        );
        assert_eq!(pod_uid_of_cgroup(&cgroupfs).as_deref(), Some(UID));
        let systemd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-0a1b.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(pod_uid_of_cgroup(&systemd).as_deref(), Some(UID));
        let guaranteed = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/crio-1.scope",
            UID.replace('-', "_")
        );
        assert_eq!(pod_uid_of_cgroup(&guaranteed).as_deref(), Some(UID));
    }

    #[test]
    fn processes_outside_pods() {
        for cgroup in [
            "0::/\n",
            "0::/system.slice/kubelet.service\n",
            "0::/kubepods.slice/kubepods-besteffort.slice\n",
            "0::/kubepods/podnot-a-uid/x\n",
            "4:memory:/process_api/1fbeb81587d9a1006a5017cb9c97da23\n",
            "",
            "garbage without colons",
        ] {
            assert_eq!(pod_uid_of_cgroup(cgroup), None, "{cgroup:?}");
        }
    }

    #[test]
    fn a_process_is_a_pods_a_static_pods_or_the_nodes() {
        let pod = format!("0::/kubepods/burstable/pod{UID}/0a1b2c\n");
        assert_eq!(cgroup_owner(&pod), CgroupOwner::Pod(UID.into()));
        for static_pod in [
            "0::/kubepods/burstable/pod1fbeb81587d9a1006a5017cb9c97da23/0a1b\n",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1fbeb81587d9a1006a5017cb9c97da23.slice/x\n",
            "0::/kubepods.slice/kubepods-besteffort.slice\n",
        ] {
            assert_eq!(
                cgroup_owner(static_pod),
                CgroupOwner::UnknownPod,
                "{static_pod}"
            );
        }
        for node in [
            "0::/\n",
            "0::/system.slice/kubelet.service\n",
            "0::/user.slice/user-0.slice\n",
        ] {
            assert_eq!(cgroup_owner(node), CgroupOwner::Node, "{node}");
        }
    }

    // Lines as the kernel prints them (x86_64, little-endian), header first.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0C00007F:A3B2 FEA9FEA9:0050 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0C00007F:A3B3 FEA9FEA9:0050 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1
   3: 0C00007F:A3B4 FEA9FEA9:0050 05 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 20 4 30 10 -1
   4: 0C00007F:1F90 0D00007F:A3B2 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000D00007F:C001 0000000000000000FFFF0000FEA9FEA9:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
";

    fn at(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn open_connections_by_both_ends() {
        let metadata = at("169.254.169.254:80");
        // 127.0.0.12:41906 connected to 169.254.169.254:80.
        assert!(socket_table_has(TCP, at("127.0.0.12:41906"), metadata));
        assert!(!socket_table_has(
            TCP,
            at("127.0.0.12:41906"),
            at("169.254.169.254:81")
        ));
        assert!(!socket_table_has(TCP, at("127.0.0.13:41906"), metadata));
        // Closing from the pod's side still counts; TIME_WAIT (06) is a connection that was.
        assert!(socket_table_has(TCP, at("127.0.0.12:41908"), metadata));
        assert!(!socket_table_has(TCP, at("127.0.0.12:41907"), metadata));
        // A listener, or a server's accepted socket with the same local end, is no client's.
        assert!(!socket_table_has(
            TCP,
            at("127.0.0.1:8080"),
            at("0.0.0.0:0")
        ));
        assert!(!socket_table_has(TCP, at("127.0.0.12:8080"), metadata));
        // An IPv4 connection on an IPv6 socket, either way round.
        assert!(socket_table_has(TCP6, at("127.0.0.13:49153"), metadata));
        assert!(socket_table_has(
            TCP6,
            at("[::ffff:127.0.0.13]:49153"),
            at("[::ffff:169.254.169.254]:80")
        ));
        assert!(!socket_table_has(TCP6, at("[::1]:80"), at("[::]:0")));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn the_inode_of_an_open_connection_names_its_holders_descriptor() {
        let metadata = at("169.254.169.254:80");
        assert_eq!(socket_inode(TCP, at("127.0.0.12:41906"), metadata), Some(2));
        assert_eq!(socket_inode(TCP, at("127.0.0.12:41908"), metadata), Some(5));
        assert_eq!(socket_inode(TCP, at("127.0.0.12:41907"), metadata), None);
        assert_eq!(
            socket_inode(TCP6, at("127.0.0.13:49153"), metadata),
            Some(3)
        );
        assert!(is_socket_link("socket:[2]", 2));
        for link in [
            "socket:[22]",
            "socket:[2",
            "pipe:[2]",
            "/dev/null",
            "socket:[]",
            "",
        ] {
            assert!(!is_socket_link(link, 2), "{link:?}");
        }
    }

    #[test]
    fn bad_tables_hold_nothing() {
        for table in [
            "",
            "header only\n",
            "h\n 0: zz:zz 0:0 01\n",
            "h\n 0: 0100007F 0:0 01\n",
            "h\n 0: 0100007F:FFFFF 0:0 01\n",
        ] {
            let local = at("127.0.0.1:80");
            assert!(!socket_table_has(table, local, local), "{table:?}");
            assert_eq!(socket_inode(table, local, local), None, "{table:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_input_is_safe(table in ".{0,300}", cgroup in ".{0,300}") {
            let _ = socket_table_has(&table, at("127.0.0.1:80"), at("169.254.169.254:80"));
            let _ = socket_inode(&table, at("127.0.0.1:80"), at("169.254.169.254:80"));
            let _ = is_socket_link(&table, 1);
            let _ = pod_uid_of_cgroup(&cgroup);
            let _ = cgroup_owner(&cgroup);
        }
    }
}
