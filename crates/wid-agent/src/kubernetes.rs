//! The agent as a Kubernetes node agent: the pods of its node from one watch (`spec.nodeName`),
//! the annotations of just the service accounts they use, and KSA tokens from the TokenRequest
//! API. The rules live in [`crate::pod_index`]; this is their I/O.
//!
//! With the API server down, the last known pods keep being answered (the watch retries with
//! backoff); a request from an address not known yet waits, bounded, for the watch to deliver
//! its pod (see [`crate::Agent`]'s `wait_for_pod`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod as KubePod, ServiceAccount};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::cache::TokenCache;
use crate::pod_index::{PodIndex, PodRecord, Snapshot};
use crate::pods::{Caller, Pod, Resolver};
use crate::tokens::{Asked, TokenKey};
use crate::upstream::{Minted, UpstreamError};

/// How often the annotations of the service accounts in use are read again, so that a changed
/// `iam.gke.io/gcp-service-account` takes effect without a pod restart.
const SERVICE_ACCOUNT_REFRESH: Duration = Duration::from_secs(60);

/// Pods of this node by address, from the watch.
pub struct KubeResolver {
    index: Mutex<PodIndex>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// The live host-network pods by uid, published with the snapshot.
    host_network: RwLock<Arc<std::collections::HashMap<String, Arc<Pod>>>>,
    changes: tokio::sync::watch::Sender<u64>,
    ready: AtomicBool,
    /// Service accounts being read now.
    fetching: Mutex<HashSet<(String, String)>>,
}

impl Resolver for KubeResolver {
    fn resolve(&self, ip: IpAddr) -> Caller {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .cloned()
            .unwrap_or(Caller::Unknown)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn addresses(&self) -> usize {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn host_network_pod(&self, uid: &str) -> Option<Arc<Pod>> {
        self.host_network
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned()
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|caller| match caller {
                Caller::Pod(pod) => Some(pod.clone()),
                Caller::Unknown | Caller::Ambiguous(_) => None,
            })
            .collect()
    }
}

/// What the index keeps of a watched pod; `None` for an object without a name.
fn record(pod: &KubePod) -> Option<PodRecord> {
    let metadata = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().filter_map(|ip| ip.ip.parse().ok()).collect())
        .unwrap_or_default();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .filter(|ip| !ips.contains(ip))
    {
        ips.push(ip);
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    Some(PodRecord {
        namespace: metadata.namespace.clone()?,
        name: metadata.name.clone()?,
        uid: metadata.uid.clone().unwrap_or_default(),
        service_account_name: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned()),
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        live: !matches!(phase, "Succeeded" | "Failed"),
    })
}

impl KubeResolver {
    pub fn new() -> Arc<KubeResolver> {
        let (changes, _) = tokio::sync::watch::channel(0);
        Arc::new(KubeResolver {
            index: Mutex::new(PodIndex::default()),
            snapshot: RwLock::new(Arc::new(Snapshot::new())),
            host_network: RwLock::default(),
            changes,
            ready: AtomicBool::new(false),
            fetching: Mutex::new(HashSet::new()),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, PodIndex> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, index: &PodIndex) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(index.snapshot());
        *self
            .host_network
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(index.host_network_pods());
        self.changes.send_modify(|version| *version += 1);
    }

    /// Watches the pods of `node` until the process ends; `forget` is told the uids of the
    /// node's pods after each change, so that departed pods' tokens are dropped.
    /// Once the node's pods are known, removes the node taint `ready_taint` (if any), so that
    /// pods which tolerate nothing are scheduled only onto nodes whose agent answers.
    pub async fn watch_pods(
        self: Arc<Self>,
        client: Client,
        node: String,
        ready_taint: Option<String>,
        forget: impl Fn(&[String]) + Send + Sync + 'static,
    ) {
        let config = watcher::Config::default()
            .fields(&format!("spec.nodeName={node}"))
            // Re-lists may come from the API server's watch cache: one watcher per node must not
            // turn an API server restart into thousands of quorum reads.
            .any_semantic();
        let mut events = watcher::watcher(Api::<KubePod>::all(client.clone()), config)
            .default_backoff()
            .boxed();
        let refresher = tokio::spawn(self.clone().refresh_service_accounts(client.clone()));
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "the pod watch failed; the last known pods are still answered, retrying");
                    continue;
                }
            };
            let (missing, uids) = {
                let mut index = self.index();
                match event {
                    Event::Init => index.begin_relist(),
                    Event::InitApply(pod) | Event::Apply(pod) => {
                        if let Some(record) = record(&pod) {
                            index.apply(record);
                        }
                    }
                    Event::InitDone => {
                        index.end_relist();
                        if !self.ready.swap(true, Ordering::AcqRel) {
                            tracing::info!(%node, pods = index.len(), "the pods of this node are known");
                            if let Some(taint) = ready_taint.clone() {
                                tokio::spawn(remove_taint(client.clone(), node.clone(), taint));
                            }
                        }
                    }
                    Event::Delete(pod) => {
                        if let (Some(namespace), Some(name)) = (
                            pod.metadata.namespace.as_deref(),
                            pod.metadata.name.as_deref(),
                        ) {
                            index.delete(namespace, name);
                        }
                    }
                }
                let missing = index.settle_service_accounts();
                self.publish(&index);
                (missing, index.uids())
            };
            forget(&uids);
            for (namespace, name) in missing {
                self.fetch_service_account(client.clone(), namespace, name);
            }
        }
        refresher.abort();
    }

    /// Reads a service account's annotations in the background, retrying until it succeeds or
    /// no pod of the node uses it any more; its pods are held until then.
    fn fetch_service_account(self: &Arc<Self>, client: Client, namespace: String, name: String) {
        let key = (namespace.clone(), name.clone());
        if !self
            .fetching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            return;
        }
        let resolver = self.clone();
        tokio::spawn(async move {
            let api = Api::<ServiceAccount>::namespaced(client, &namespace);
            let mut backoff = Duration::from_millis(200);
            loop {
                match api.get_opt(&name).await {
                    Ok(found) => {
                        if found.is_none() {
                            tracing::warn!(%namespace, %name, "a pod's service account does not exist; its pods get the federated identity");
                        }
                        let annotations = annotations(found.as_ref());
                        let mut index = resolver.index();
                        index.set_service_account(&namespace, &name, annotations);
                        resolver.publish(&index);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%namespace, %name, error = %e, "cannot read a service account; retrying");
                        if !resolver.index().service_accounts_in_use().contains(&key) {
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            resolver
                .fetching
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
    }

    async fn refresh_service_accounts(self: Arc<Self>, client: Client) {
        let mut tick = tokio::time::interval(SERVICE_ACCOUNT_REFRESH);
        tick.tick().await;
        loop {
            tick.tick().await;
            let in_use = self.index().service_accounts_in_use();
            for (namespace, name) in in_use {
                let api = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
                if let Ok(found) = api.get_opt(&name).await {
                    // Most reads change nothing: no new snapshot, no wake-up of held requests.
                    let mut index = self.index();
                    if index.set_service_account(&namespace, &name, annotations(found.as_ref())) {
                        self.publish(&index);
                    }
                }
            }
        }
    }
}

/// Removes the taint `key` from `node`, retrying (conflicts at once, errors with backoff) until
/// it is gone. A merge patch replaces the whole list of taints, so it carries the node's
/// resourceVersion: a taint another controller adds meanwhile is never lost.
async fn remove_taint(client: Client, node: String, key: String) {
    use kube::api::{Patch, PatchParams};
    let api = Api::<Node>::all(client);
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = async {
            let current = api.get(&node).await?;
            let taints = current
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if !taints.iter().any(|t| t.key == key) {
                return Ok::<(), kube::Error>(());
            }
            let remaining: Vec<_> = taints.into_iter().filter(|t| t.key != key).collect();
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "spec": {"taints": remaining},
            });
            api.patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                tracing::info!(%node, taint = %key, "removed the node's not-ready taint");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => {
                tracing::warn!(%node, taint = %key, error = %e, "cannot remove the node's not-ready taint; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Kubernetes Events on a pod for each refusal, at most one per pod and reason a minute, so that
/// `kubectl describe pod` says why its tokens are refused without flooding the API server.
pub struct PodEvents {
    client: Client,
    node: String,
    last: Mutex<HashMap<(String, String, &'static str), tokio::time::Instant>>,
}

/// Events of one pod and reason closer together than this are dropped.
const EVENT_INTERVAL: Duration = Duration::from_secs(60);

impl PodEvents {
    pub fn new(client: Client, node: String) -> PodEvents {
        PodEvents {
            client,
            node,
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl crate::Denials for PodEvents {
    fn denied(&self, namespace: &str, name: &str, uid: &str, reason: &'static str, message: &str) {
        let now = tokio::time::Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (namespace.to_owned(), name.to_owned(), reason);
            if last
                .get(&key)
                .is_some_and(|at| now.duration_since(*at) < EVENT_INTERVAL)
            {
                return;
            }
            // Forget old entries now and then: the map follows the node's pods.
            if last.len() > 4096 {
                last.retain(|_, at| now.duration_since(*at) < EVENT_INTERVAL);
            }
            last.insert(key, now);
        }
        let stamp = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let event = k8s_openapi::api::core::v1::Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                uid: (!uid.is_empty()).then(|| uid.to_owned()),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some("Warning".into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("wid-metadata".into()),
                host: Some(self.node.clone()),
            }),
            reporting_component: Some("wid.dev/metadata".into()),
            reporting_instance: Some(self.node.clone()),
            first_timestamp: Some(stamp.clone()),
            last_timestamp: Some(stamp),
            count: Some(1),
            ..Default::default()
        };
        let api =
            Api::<k8s_openapi::api::core::v1::Event>::namespaced(self.client.clone(), namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&Default::default(), &event).await {
                tracing::debug!(error = %e, "cannot post a pod event");
            }
        });
    }
}

fn annotations(sa: Option<&ServiceAccount>) -> BTreeMap<String, String> {
    sa.and_then(|sa| sa.metadata.annotations.clone())
        .unwrap_or_default()
}

/// A token of the pod's KSA for `audience`, bound to the pod, asked of the TokenRequest API.
/// The node identity is no pod (its processes are the node's): its token is bound to nothing,
/// and lives its short life.
async fn request_token(
    client: Client,
    pod: Arc<Pod>,
    audience: String,
) -> Result<Minted, UpstreamError> {
    let bound_to_pod = !pod.uid.starts_with(crate::pods::NODE_UID_PREFIX);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience],
            expiration_seconds: Some(KSA_TOKEN_SECONDS),
            bound_object_ref: bound_to_pod.then(|| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                uid: Some(pod.uid.clone()),
            }),
        },
        ..TokenRequest::default()
    };
    let (namespace, ksa) = (&pod.namespace, &pod.service_account_name);
    let api = Api::<ServiceAccount>::namespaced(client, namespace);
    let answer = api
        .create_token_request(ksa, &Default::default(), &request)
        .await
        .map_err(|e| {
            UpstreamError::Unavailable(format!(
                "the Kubernetes API server did not issue a token for {namespace}/{ksa}: {e}"
            ))
        })?;
    let Some(status) = answer.status else {
        return Err(UpstreamError::Unavailable(
            "the Kubernetes API server answered a TokenRequest without a token".into(),
        ));
    };
    Ok(Minted {
        expires_at: status.expiration_timestamp.0.as_second(),
        token: status.token,
    })
}

/// KSA tokens from the TokenRequest API: audience the pool, bound to the pod, short-lived, in the
/// agent's token cache per pod (one request for concurrent misses, renewed ahead of expiry,
/// served while the API server is away).
pub struct TokenRequests {
    client: Client,
    issuer: String,
    /// By pod and audience.
    cache: TokenCache<TokenKey>,
}

/// Lifetime asked of the API server (its minimum is ten minutes); the cache renews a token from
/// fifteen minutes before it expires.
const KSA_TOKEN_SECONDS: i64 = 3600;

impl TokenRequests {
    pub fn new(client: Client, issuer: String) -> TokenRequests {
        TokenRequests {
            client,
            issuer,
            cache: TokenCache::new(crate::cache::Bounds::one_per_pod()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A KSA token of `pod` for `audience`: from the cache, or a TokenRequest.
    pub async fn token(&self, pod: &Arc<Pod>, audience: &str) -> Result<String, UpstreamError> {
        let key = TokenKey::new(pod.clone(), Asked::KsaToken(audience.to_owned()));
        let fetch = request_token(self.client.clone(), pod.clone(), audience.to_owned());
        let (minted, _) = self.cache.get(&key, fetch).await?;
        Ok(minted.token)
    }

    /// Forgets the tokens of pods that are gone.
    pub fn retain_owners(&self, live: &[String]) {
        self.cache.retain_owners(live);
    }
}
