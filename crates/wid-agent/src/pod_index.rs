//! The pods of one node by address, as a Kubernetes watch reports them, and the annotations of
//! the service accounts they use: pure, no I/O, so every rule is tested without an API server.
//!
//! Rules (metadata-api.md section 10, peers.md sections 4 and 5):
//! - a pod is known from the moment it has an address, `Pending` included, until it is deleted or
//!   reaches `Succeeded`/`Failed` (its address may already be another pod's);
//! - host-network pods are never indexed by address: they share the node's;
//! - two live pods with one address are [`Caller::Ambiguous`], never one of them;
//! - a pod whose service account's annotations are not known yet is not known either: answering
//!   before would hand out the federated identity where a service account was meant (a silent
//!   fallback);
//! - a re-list (after `410 Gone`) applies what it lists at once and drops what it did not list
//!   only when it is complete, so a reused address never resolves to the departed pod: the old
//!   and the new pod are ambiguous until the list ends.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::pods::{Caller, Pod};

/// What the index keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account_name: String,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// Not `Succeeded` or `Failed`.
    pub live: bool,
}

type Key = (String, String);

#[derive(Default)]
pub struct PodIndex {
    pods: HashMap<Key, PodRecord>,
    /// Keys listed so far by a re-list in progress.
    relisting: Option<HashSet<Key>>,
    /// Annotations of the service accounts in use, by namespace and name.
    service_accounts: HashMap<Key, BTreeMap<String, String>>,
}

/// The answers of the index, built once per change and read without locks on the hot path.
pub type Snapshot = HashMap<IpAddr, Caller>;

impl PodIndex {
    pub fn apply(&mut self, pod: PodRecord) {
        let key = (pod.namespace.clone(), pod.name.clone());
        if let Some(seen) = &mut self.relisting {
            seen.insert(key.clone());
        }
        self.pods.insert(key, pod);
    }

    pub fn delete(&mut self, namespace: &str, name: &str) {
        self.pods.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// A full listing begins (the first, or one after the watch expired).
    pub fn begin_relist(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The listing is complete: pods it did not list are gone.
    pub fn end_relist(&mut self) {
        if let Some(seen) = self.relisting.take() {
            self.pods.retain(|key, _| seen.contains(key));
        }
    }

    /// Records a service account's annotations; whether they are new or changed.
    pub fn set_service_account(
        &mut self,
        namespace: &str,
        name: &str,
        annotations: BTreeMap<String, String>,
    ) -> bool {
        let previous = self
            .service_accounts
            .insert((namespace.to_owned(), name.to_owned()), annotations.clone());
        previous.as_ref() != Some(&annotations)
    }

    /// The service accounts the node's live pods use.
    pub fn service_accounts_in_use(&self) -> BTreeSet<Key> {
        self.pods
            .values()
            .filter(|p| p.live)
            .map(|p| (p.namespace.clone(), p.service_account_name.clone()))
            .collect()
    }

    /// Forgets the annotations of service accounts no pod on the node uses any more (memory
    /// follows the node's pods, not the cluster's service accounts), and returns those in use
    /// whose annotations are not known yet: one walk of the pods for both.
    pub fn settle_service_accounts(&mut self) -> BTreeSet<Key> {
        let mut in_use = self.service_accounts_in_use();
        self.service_accounts.retain(|key, _| in_use.contains(key));
        in_use.retain(|key| !self.service_accounts.contains_key(key));
        in_use
    }

    /// The uids of the pods on the node, for dropping departed pods' tokens.
    pub fn uids(&self) -> Vec<String> {
        self.pods.values().map(|p| p.uid.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut by_ip: HashMap<IpAddr, Vec<&PodRecord>> = HashMap::new();
        for pod in self.pods.values().filter(|p| p.live && !p.host_network) {
            for ip in &pod.ips {
                by_ip.entry(*ip).or_default().push(pod);
            }
        }
        by_ip
            .into_iter()
            .filter_map(|(ip, pods)| {
                let caller = match pods.as_slice() {
                    [pod] => Caller::Pod(self.pod(pod, ip)?),
                    several => {
                        let mut names: Vec<String> = several
                            .iter()
                            .map(|p| format!("{}/{}", p.namespace, p.name))
                            .collect();
                        names.sort();
                        Caller::Ambiguous(names)
                    }
                };
                Some((ip, caller))
            })
            .collect()
    }

    /// The live host-network pods by uid: they share the node's addresses, so only the owner
    /// of a connection's socket tells them apart (`--attest-callers`).
    pub fn host_network_pods(&self) -> HashMap<String, Arc<Pod>> {
        self.pods
            .values()
            .filter(|p| p.live && p.host_network && !p.uid.is_empty())
            .filter_map(|p| {
                let ip = p.ips.first().copied()?;
                Some((p.uid.clone(), self.pod(p, ip)?))
            })
            .collect()
    }

    /// `record` answered from `ip`, once its service account's annotations are known.
    fn pod(&self, record: &PodRecord, ip: IpAddr) -> Option<Arc<Pod>> {
        let annotations = self.service_accounts.get(&(
            record.namespace.clone(),
            record.service_account_name.clone(),
        ))?;
        Some(Arc::new(Pod {
            ip,
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            uid: record.uid.clone(),
            service_account_name: record.service_account_name.clone(),
            annotations: annotations.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::GSA_ANNOTATION;

    fn pod(name: &str, ip: &str, ksa: &str) -> PodRecord {
        PodRecord {
            namespace: "team".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            service_account_name: ksa.into(),
            ips: vec![ip.parse().expect("ip")],
            host_network: false,
            live: true,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn known(index: &PodIndex, at: &str) -> Option<String> {
        match index.snapshot().get(&ip(at)) {
            Some(Caller::Pod(p)) => Some(p.uid.clone()),
            Some(Caller::Ambiguous(names)) => Some(format!("ambiguous {names:?}")),
            _ => None,
        }
    }

    fn annotated(index: &mut PodIndex, ksa: &str, gsa: &str) {
        index.set_service_account(
            "team",
            ksa,
            BTreeMap::from([(GSA_ANNOTATION.to_owned(), gsa.to_owned())]),
        );
    }

    #[test]
    fn a_pod_is_known_once_its_service_account_is() {
        let mut index = PodIndex::default();
        index.apply(pod("a", "10.0.0.5", "app"));
        assert_eq!(
            known(&index, "10.0.0.5"),
            None,
            "its KSA's annotations are not in yet"
        );
        assert_eq!(
            index.settle_service_accounts(),
            BTreeSet::from([("team".to_owned(), "app".to_owned())])
        );
        annotated(&mut index, "app", "app@p.iam.gserviceaccount.com");
        let snapshot = index.snapshot();
        let Some(Caller::Pod(found)) = snapshot.get(&ip("10.0.0.5")) else {
            panic!("pod a should resolve: {snapshot:?}");
        };
        assert_eq!(found.gsa(), Some("app@p.iam.gserviceaccount.com"));
        assert!(index.settle_service_accounts().is_empty());
    }

    #[test]
    fn pending_pods_count_and_finished_or_host_network_ones_do_not() {
        let mut index = PodIndex::default();
        annotated(&mut index, "app", "a@p.iam.gserviceaccount.com");
        index.apply(pod("pending", "10.0.0.5", "app"));
        assert_eq!(known(&index, "10.0.0.5").as_deref(), Some("uid-pending"));
        index.apply(PodRecord {
            live: false,
            ..pod("pending", "10.0.0.5", "app")
        });
        assert_eq!(
            known(&index, "10.0.0.5"),
            None,
            "a finished pod never resolves"
        );
        index.apply(PodRecord {
            host_network: true,
            ..pod("host", "10.0.0.1", "app")
        });
        assert_eq!(
            known(&index, "10.0.0.1"),
            None,
            "host-network pods share the node's address"
        );
    }

    #[test]
    fn host_network_pods_are_found_by_uid_while_they_live_and_their_ksa_is_known() {
        let mut index = PodIndex::default();
        annotated(&mut index, "app", "a@p.iam.gserviceaccount.com");
        let host = |name: &str, ksa: &str| PodRecord {
            host_network: true,
            ..pod(name, "10.0.0.1", ksa)
        };
        index.apply(host("h1", "app"));
        index.apply(host("h2", "app"));
        index.apply(host("unknown-ksa", "other"));
        index.apply(PodRecord {
            live: false,
            ..host("done", "app")
        });
        index.apply(pod("regular", "10.0.0.5", "app"));
        let found = index.host_network_pods();
        let mut uids: Vec<&str> = found.keys().map(String::as_str).collect();
        uids.sort_unstable();
        assert_eq!(
            uids,
            ["uid-h1", "uid-h2"],
            "two pods on one address, each its own"
        );
        assert_eq!(found["uid-h1"].gsa(), Some("a@p.iam.gserviceaccount.com"));
        assert_eq!(found["uid-h1"].ip, ip("10.0.0.1"));
    }

    #[test]
    fn two_live_pods_with_one_address_are_ambiguous_until_one_goes() {
        let mut index = PodIndex::default();
        annotated(&mut index, "app", "a@p.iam.gserviceaccount.com");
        annotated(&mut index, "other", "b@p.iam.gserviceaccount.com");
        index.apply(pod("a", "10.0.0.5", "app"));
        index.apply(pod("b", "10.0.0.5", "other"));
        assert_eq!(
            known(&index, "10.0.0.5").as_deref(),
            Some("ambiguous [\"team/a\", \"team/b\"]")
        );
        index.delete("team", "a");
        assert_eq!(known(&index, "10.0.0.5").as_deref(), Some("uid-b"));
    }

    #[test]
    fn a_relist_never_lets_a_reused_address_resolve_to_the_departed_pod() {
        let mut index = PodIndex::default();
        annotated(&mut index, "app", "a@p.iam.gserviceaccount.com");
        annotated(&mut index, "other", "b@p.iam.gserviceaccount.com");
        index.apply(pod("old", "10.0.0.5", "app"));
        // The watch expired while "old" was deleted and "new" took its address.
        index.begin_relist();
        index.apply(pod("new", "10.0.0.5", "other"));
        assert!(
            known(&index, "10.0.0.5").is_some_and(|k| k.starts_with("ambiguous")),
            "mid-list: refused, not the old pod"
        );
        index.end_relist();
        assert_eq!(known(&index, "10.0.0.5").as_deref(), Some("uid-new"));
        assert_eq!(index.uids(), vec!["uid-new".to_owned()]);
    }

    #[test]
    fn service_accounts_follow_the_pods_of_the_node() {
        let mut index = PodIndex::default();
        annotated(&mut index, "app", "a@p.iam.gserviceaccount.com");
        annotated(&mut index, "gone", "g@p.iam.gserviceaccount.com");
        index.apply(pod("a", "10.0.0.5", "app"));
        index.settle_service_accounts();
        assert_eq!(index.service_accounts.len(), 1);
        index.delete("team", "a");
        index.settle_service_accounts();
        assert!(index.service_accounts.is_empty());
        assert!(index.is_empty());
    }
}
