//! `Member::parse` on arbitrary UTF-8, and `Member::matches` of every member that parses against a
//! fixed set of callers (a federated KSA of a shared cluster, one of an isolated cluster, a user,
//! a service account and the bootstrap admin). Only absence of panics is checked.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use wid_iam::{Caller, FederatedCaller, Member};

static CALLERS: LazyLock<Vec<Caller>> = LazyLock::new(|| {
    vec![
        Caller::Federated(FederatedCaller {
            project_number: "123456789012".into(),
            pool_id: "my-proj.svc.id.goog".into(),
            subject: "ns/ns1/sa/ksa1".into(),
            groups: vec!["admins".into(), "dev@example.com".into()],
            attributes: BTreeMap::from([
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "a/b".to_owned()),
            ]),
            namespace: Some("ns1".into()),
            clusters: vec!["https://container.googleapis.com/v1/projects/p/locations/l/clusters/c".into()],
            service_account_uid: Some("0a1b2c3d-0000-4000-8000-000000000000".into()),
            pod: None,
        }),
        Caller::Federated(FederatedCaller {
            project_number: "1".into(),
            pool_id: "p.svc.id.goog".into(),
            subject: "locations/us-east1/clusters/prod/ns/ns1/sa/ksa1".into(),
            ..Default::default()
        }),
        Caller::User("alice@example.com".into()),
        Caller::ServiceAccount("sa@my-proj.iam.gserviceaccount.com".into()),
        Caller::BootstrapAdmin,
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Member::parse(text) {
        Ok(member) => {
            for caller in CALLERS.iter() {
                let _ = member.matches(caller);
                let _ = caller.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
