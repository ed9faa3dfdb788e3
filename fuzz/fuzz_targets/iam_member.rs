//! `Member::parse` on arbitrary UTF-8, and `Member::matches` of every member that parses against a
//! fixed set of callers (a federated KSA of a shared cluster, one of an isolated cluster, a user,
//! a service account and the bootstrap admin). Besides the absence of panics, one property: a KSA
//! of an isolated cluster, however much its token claimed, is matched by no member but its own
//! subject and its cluster's selector.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use wid_iam::member::PoolSelector;
use wid_iam::{Caller, FederatedCaller, Member, Vouch};

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
            clusters: vec![
                "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c".into(),
            ],
            service_account_uid: Some("0a1b2c3d-0000-4000-8000-000000000000".into()),
            vouch: Vouch::SharedCluster,
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

const ISOLATED_SUBJECT: &str = "locations/l/clusters/lab/ns/ns1/sa/ksa1";
const ISOLATED_CLUSTER: &str = "https://lab.example.com";

/// An isolated cluster's KSA whose token claimed everything a selector could look at.
static ISOLATED: LazyLock<Caller> = LazyLock::new(|| {
    Caller::Federated(FederatedCaller {
        project_number: "123456789012".into(),
        pool_id: "my-proj.svc.id.goog".into(),
        subject: ISOLATED_SUBJECT.into(),
        groups: vec!["admins".into()],
        attributes: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
        namespace: Some("ns1".into()),
        clusters: vec![ISOLATED_CLUSTER.into()],
        service_account_uid: Some("0a1b2c3d-0000-4000-8000-000000000000".into()),
        vouch: Vouch::IsolatedCluster,
        pod: None,
    })
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
            if member.matches(&ISOLATED) {
                let own = match &member {
                    Member::PoolSubject { subject, .. } => subject == ISOLATED_SUBJECT,
                    Member::PoolSet {
                        selector: PoolSelector::Cluster(url),
                        ..
                    } => url == ISOLATED_CLUSTER,
                    Member::AllUsers | Member::AllAuthenticatedUsers => true,
                    _ => false,
                };
                assert!(own, "{text:?} names an isolated cluster's KSA");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
