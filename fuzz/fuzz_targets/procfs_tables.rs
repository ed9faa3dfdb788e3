//! The `/proc` parsers of caller attestation on arbitrary text: a process's `cgroup` file and a
//! network namespace's TCP socket table. A pod's processes choose their own cgroup names only
//! within what kubelet allows, but the parsers must not panic on anything, and a UID they
//! return must be one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(uid) = wid_procfs::pod_uid_of_cgroup(text) {
        assert_eq!(uid.len(), 36);
    }
    for local in [
        "127.0.0.1:80",
        "10.4.0.7:41234",
        "[::ffff:10.4.0.7]:41234",
        "[fd00::1]:80",
    ] {
        let local = local.parse().expect("address");
        let _ = wid_procfs::socket_table_has(text, local, local);
    }
});
