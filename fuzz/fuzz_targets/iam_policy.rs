//! `Policy::validate` of bindings built from the fuzz input, then `is_allowed` of every known
//! permission for a fixed set of callers over the validated policy. Only absence of panics is
//! checked.
//!
//! Input layout: the first byte picks the policy version (biased towards 3, the only version
//! that allows conditions); the rest is UTF-8 text, one binding per line:
//!
//! ```text
//! ROLE|MEMBER,MEMBER,...|CONDITION
//! ```
//!
//! The condition is present only when the second `|` is (it may itself contain `|`). A ROLE that
//! is a single digit stands for the digit-th supported role, so valid policies are easy to reach.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use wid_iam::policy::{RawBinding, RequestContext};
use wid_iam::roles::{ALL_PERMISSIONS, Role};
use wid_iam::{Caller, FederatedCaller, Policy, Vouch, is_allowed};

static CALLERS: LazyLock<Vec<Caller>> = LazyLock::new(|| {
    vec![
        Caller::Federated(FederatedCaller {
            project_number: "123".into(),
            pool_id: "my-proj.svc.id.goog".into(),
            subject: "ns/ns1/sa/ksa1".into(),
            groups: vec!["admins".into()],
            attributes: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            namespace: Some("ns1".into()),
            clusters: vec!["https://issuer.example.com".into()],
            service_account_uid: Some("uid-1".into()),
            vouch: Vouch::SharedCluster,
            pod: None,
        }),
        Caller::User("alice@example.com".into()),
        Caller::ServiceAccount("sa@my-proj.iam.gserviceaccount.com".into()),
        Caller::BootstrapAdmin,
    ]
});

const RESOURCES: &[&str] = &[
    "projects/my-proj/serviceAccounts/sa@my-proj.iam.gserviceaccount.com",
    "projects/my-proj",
    "",
];

fn version(byte: u8) -> i64 {
    match byte % 8 {
        0 => 0,
        1 => 1,
        2..=5 => 3,
        6 => 2,
        _ => i64::from(byte as i8) << 40,
    }
}

fn binding(line: &str) -> RawBinding {
    let mut fields = line.splitn(3, '|');
    let role = fields.next().unwrap_or_default();
    let role = match role.as_bytes() {
        [d @ b'0'..=b'9'] => Role::ALL
            .get(usize::from(d - b'0'))
            .map_or(role, |r| r.name())
            .to_owned(),
        _ => role.to_owned(),
    };
    let members = match fields.next() {
        None | Some("") => Vec::new(),
        Some(list) => list.split(',').map(str::to_owned).collect(),
    };
    RawBinding {
        role,
        members,
        condition: fields.next().map(str::to_owned),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let raw: Vec<RawBinding> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').map(binding).collect()
    };
    let policy = match Policy::validate(version(first), &raw) {
        Ok(policy) => policy,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // What setIamPolicy stores is read back by getIamPolicy and may be sent back as is.
    let _ = Policy::validate(policy.version, &policy.to_raw());
    let policies = [&policy, &policy];
    for caller in CALLERS.iter() {
        for resource_name in RESOURCES {
            let ctx = RequestContext { resource_name };
            for permission in ALL_PERMISSIONS.iter().copied().chain(["", "iam.bogus"]) {
                let _ = is_allowed(&policies[..1], caller, permission, &ctx);
            }
            let _ = is_allowed(
                &policies,
                caller,
                "iam.serviceAccounts.getAccessToken",
                &ctx,
            );
        }
    }
});
