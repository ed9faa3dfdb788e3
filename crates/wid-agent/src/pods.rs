//! Who is calling: a pod, found by the request's source address.
//!
//! [`Resolver`] is the seam: the static resolver (a pods file, reloaded when it changes), the
//! fixed one of `wid dev`, the Kubernetes watch's ([`crate::kubernetes::KubeResolver`]), and the
//! node identity of host-network callers in front of any of them. An address no pod has is
//! refused: never a silent fallback to another identity.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// The UID of the node identity's stand-in pod starts so: no pod of the API server has one.
pub const NODE_UID_PREFIX: &str = "node:";

/// The annotation that names a KSA's IAM service account.
pub const GSA_ANNOTATION: &str = "iam.gke.io/gcp-service-account";
/// The annotation that makes `email` return the principal identifier.
pub const PRINCIPAL_EMAIL_ANNOTATION: &str = "iam.gke.io/return-principal-id-as-email";

/// A pod as the agent needs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub ip: IpAddr,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default = "default_ksa")]
    pub service_account_name: String,
    /// The KSA's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_ksa() -> String {
    "default".to_owned()
}

impl Pod {
    /// The annotated IAM service account, if any.
    pub fn gsa(&self) -> Option<&str> {
        self.annotations
            .get(GSA_ANNOTATION)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn principal_as_email(&self) -> bool {
        self.annotations
            .get(PRINCIPAL_EMAIL_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodsFile {
    pods: Vec<Pod>,
}

type PodsByIp = HashMap<IpAddr, Arc<Pod>>;

/// Who is behind a source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Pod(Arc<Pod>),
    /// No pod has the address, or not yet.
    Unknown,
    /// More than one live pod has it (`namespace/name` of each): refused until one is gone,
    /// since answering would hand one pod's identity to the other.
    Ambiguous(Vec<String>),
}

#[cfg(test)]
impl Caller {
    pub fn pod(self) -> Option<Arc<Pod>> {
        match self {
            Caller::Pod(pod) => Some(pod),
            Caller::Unknown | Caller::Ambiguous(_) => None,
        }
    }
}

impl From<Option<Arc<Pod>>> for Caller {
    fn from(pod: Option<Arc<Pod>>) -> Caller {
        pod.map_or(Caller::Unknown, Caller::Pod)
    }
}

/// Finds the pod behind a source address.
pub trait Resolver: Send + Sync + 'static {
    fn resolve(&self, ip: IpAddr) -> Caller;

    /// Changes whenever an answer of [`Resolver::resolve`] may have changed, for requests that
    /// wait for a pod not known yet (a pod's first seconds); `None` when waiting cannot help.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Whether the resolver knows the node's pods yet (readiness).
    fn ready(&self) -> bool {
        true
    }

    /// How many addresses it answers for (ambiguous ones included), for the metrics.
    fn addresses(&self) -> usize;

    /// The pods it answers for now (a pod with two addresses may be there twice), whose tokens
    /// may be fetched before they ask.
    fn pods(&self) -> Vec<Arc<Pod>> {
        Vec::new()
    }

    /// Whether `ip` is one of the node's own addresses, shared by its host-network pods and its
    /// processes of no pod.
    fn is_node_address(&self, _ip: IpAddr) -> bool {
        false
    }

    /// The live host-network pod of the node with `uid` (or the node identity, by its uid).
    fn host_network_pod(&self, _uid: &str) -> Option<Arc<Pod>> {
        None
    }

    /// The identity of the node's processes of no pod, if one is configured.
    fn node_identity(&self) -> Option<Arc<Pod>> {
        None
    }
}

/// One pod for every caller from one address (`wid dev`'s loopback pod).
pub struct FixedResolver {
    pub pod: Arc<Pod>,
}

impl Resolver for FixedResolver {
    fn resolve(&self, ip: IpAddr) -> Caller {
        (ip == self.pod.ip).then(|| self.pod.clone()).into()
    }

    fn addresses(&self) -> usize {
        1
    }
}

/// Host-network callers, whose source address is the node's own: they get the node identity (a
/// KSA the operator names, with the annotations the operator gives it) only when one is
/// configured; without it they are refused like any address that is no pod. A pod that has the
/// address itself (listed in the pods file) comes first. With attestation, the agent asks the
/// kernel whose the connection is instead ([`Resolver::is_node_address`]).
pub struct WithNodeIdentity<R> {
    pub pods: R,
    /// The node's addresses.
    pub addresses: Vec<IpAddr>,
    /// The identity host-network callers get; its `ip` is the first address.
    pub node: Option<Arc<Pod>>,
}

impl Pod {
    /// The node identity's pod: `namespace/ksa`, named `host-network`, with a uid of its own so
    /// that its tokens are cached apart from every pod's.
    pub fn node_identity(
        address: IpAddr,
        namespace: &str,
        service_account_name: &str,
        gsa: Option<&str>,
    ) -> Pod {
        Pod {
            ip: address,
            namespace: namespace.to_owned(),
            name: "host-network".to_owned(),
            uid: format!("{NODE_UID_PREFIX}{namespace}/{service_account_name}"),
            service_account_name: service_account_name.to_owned(),
            annotations: gsa
                .map(|gsa| BTreeMap::from([(GSA_ANNOTATION.to_owned(), gsa.to_owned())]))
                .unwrap_or_default(),
        }
    }
}

impl<R: Resolver> Resolver for WithNodeIdentity<R> {
    fn resolve(&self, ip: IpAddr) -> Caller {
        match self.pods.resolve(ip) {
            Caller::Unknown if self.addresses.contains(&ip) => self.node.clone().into(),
            caller => caller,
        }
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.pods.changes()
    }

    fn ready(&self) -> bool {
        self.pods.ready()
    }

    fn addresses(&self) -> usize {
        self.pods.addresses() + self.addresses.len()
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.pods()
    }

    fn is_node_address(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip)
    }

    fn host_network_pod(&self, uid: &str) -> Option<Arc<Pod>> {
        match &self.node {
            Some(node) if node.uid == uid => Some(node.clone()),
            _ => self.pods.host_network_pod(uid),
        }
    }

    fn node_identity(&self) -> Option<Arc<Pod>> {
        self.node.clone()
    }
}

impl<R: Resolver + ?Sized> Resolver for Arc<R> {
    fn resolve(&self, ip: IpAddr) -> Caller {
        (**self).resolve(ip)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        (**self).changes()
    }

    fn ready(&self) -> bool {
        (**self).ready()
    }

    fn addresses(&self) -> usize {
        (**self).addresses()
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        (**self).pods()
    }

    fn is_node_address(&self, ip: IpAddr) -> bool {
        (**self).is_node_address(ip)
    }

    fn host_network_pod(&self, uid: &str) -> Option<Arc<Pod>> {
        (**self).host_network_pod(uid)
    }

    fn node_identity(&self) -> Option<Arc<Pod>> {
        (**self).node_identity()
    }
}

/// Pods from a JSON file (`{"pods": [{"ip", "namespace", "name", "uid", "serviceAccountName",
/// "annotations"}]}`), read again when its modification time changes. A file that does not
/// parse leaves the previous pods in place, and says so in the log.
pub struct StaticResolver {
    path: PathBuf,
    /// The file's modification time when last read, and the pods it held.
    state: RwLock<(Option<SystemTime>, Arc<PodsByIp>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a pods file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: two pods have the address {ip}")]
    Duplicate { path: String, ip: IpAddr },
}

fn load(path: &Path) -> Result<HashMap<IpAddr, Arc<Pod>>, PodsError> {
    let text = std::fs::read_to_string(path).map_err(|source| PodsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let file: PodsFile = serde_json::from_str(&text).map_err(|source| PodsError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    let mut pods = HashMap::new();
    for pod in file.pods {
        let ip = pod.ip;
        // Two pods with one address cannot be told apart: refuse the file rather than guess.
        if pods.insert(ip, Arc::new(pod)).is_some() {
            return Err(PodsError::Duplicate {
                path: path.display().to_string(),
                ip,
            });
        }
    }
    Ok(pods)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl StaticResolver {
    /// Loads the file; it must parse at start.
    pub fn open(path: &Path) -> Result<Arc<StaticResolver>, PodsError> {
        let pods = load(path)?;
        Ok(Arc::new(StaticResolver {
            path: path.to_owned(),
            state: RwLock::new((modified(path), Arc::new(pods))),
        }))
    }

    /// Reads the file again if it changed; returns whether the pods changed.
    pub fn reload_if_changed(&self) -> bool {
        let now = modified(&self.path);
        let seen = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        if now == seen {
            return false;
        }
        match load(&self.path) {
            Ok(pods) => {
                tracing::info!(path = %self.path.display(), pods = pods.len(), "pods file reloaded");
                *self
                    .state
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (now, Arc::new(pods));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "pods file not reloaded; keeping the previous pods");
                self.state
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0 = now;
                false
            }
        }
    }

    /// The uids of the pods now known.
    pub fn uids(&self) -> Vec<String> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .values()
            .map(|p| p.uid.clone())
            .collect()
    }

    /// Watches the file, polling its modification time; calls `on_change` after a reload.
    pub async fn watch(self: Arc<Self>, on_change: impl Fn(&[String]) + Send + 'static) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.reload_if_changed() {
                on_change(&self.uids());
            }
        }
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, ip: IpAddr) -> Caller {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .get(&ip)
            .cloned()
            .into()
    }

    fn addresses(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .len()
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_network_callers_get_the_node_identity_only_when_configured() {
        let pod = Arc::new(Pod {
            ip: "10.0.0.5".parse().expect("ip"),
            namespace: "team".into(),
            name: "p".into(),
            uid: "u".into(),
            service_account_name: "app".into(),
            annotations: BTreeMap::new(),
        });
        let node_ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let without = FixedResolver { pod: pod.clone() };
        assert!(
            without.resolve(node_ip) == Caller::Unknown,
            "no node identity configured"
        );
        let node = Pod::node_identity(
            node_ip,
            "kube-system",
            "node-agent",
            Some("node@p.iam.gserviceaccount.com"),
        );
        let with = WithNodeIdentity {
            pods: FixedResolver { pod: pod.clone() },
            addresses: vec![node_ip],
            node: Some(Arc::new(node)),
        };
        let got = with.resolve(node_ip).pod().expect("the node identity");
        assert_eq!(
            (
                got.namespace.as_str(),
                got.service_account_name.as_str(),
                got.gsa()
            ),
            (
                "kube-system",
                "node-agent",
                Some("node@p.iam.gserviceaccount.com")
            )
        );
        assert_ne!(got.uid, pod.uid, "cached apart from every pod");
        assert_eq!(
            with.resolve(pod.ip),
            Caller::Pod(pod),
            "pods are still themselves"
        );
        assert_eq!(
            with.resolve("10.0.0.9".parse().expect("ip")),
            Caller::Unknown
        );
    }

    #[test]
    fn pods_files_load_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pods.json");
        let pods = |gsa: &str| {
            format!(
                r#"{{"pods": [{{"ip": "127.0.0.2", "namespace": "ns1", "name": "p1", "uid": "u1", "serviceAccountName": "ksa1", "annotations": {{"iam.gke.io/gcp-service-account": "{gsa}"}}}}]}}"#
            )
        };
        std::fs::write(&path, pods("a@p.iam.gserviceaccount.com")).expect("write");
        let resolver = StaticResolver::open(&path).expect("open");
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(
            resolver
                .resolve(ip)
                .pod()
                .and_then(|p| p.gsa().map(str::to_owned))
                .as_deref(),
            Some("a@p.iam.gserviceaccount.com")
        );
        assert_eq!(
            resolver.resolve("127.0.0.3".parse().expect("ip")),
            Caller::Unknown
        );
        // A later modification time is a change.
        std::fs::write(&path, pods("b@p.iam.gserviceaccount.com")).expect("write");
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later))
            .expect("touch");
        assert!(resolver.reload_if_changed());
        assert_eq!(
            resolver
                .resolve(ip)
                .pod()
                .and_then(|p| p.gsa().map(str::to_owned))
                .as_deref(),
            Some("b@p.iam.gserviceaccount.com")
        );
        // A broken file keeps the old pods.
        std::fs::write(&path, "{not json").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(later + Duration::from_secs(5)))
            .expect("touch");
        assert!(!resolver.reload_if_changed());
        assert!(resolver.resolve(ip).pod().is_some());
        // Two pods on one address are refused.
        let dup = r#"{"pods": [{"ip": "127.0.0.2", "namespace": "a", "name": "a"}, {"ip": "127.0.0.2", "namespace": "b", "name": "b"}]}"#;
        std::fs::write(&path, dup).expect("write");
        assert!(matches!(
            StaticResolver::open(&path),
            Err(PodsError::Duplicate { .. })
        ));
    }
}
