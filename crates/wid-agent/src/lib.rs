//! The wid node agent: the GKE metadata server for any node.
//!
//! A request takes one path, read top to bottom in [`conn`]: [`wid_gce::precheck`] applies
//! the protocol's rules that need no caller; [`Agent::identify`] names the calling pod by the
//! request's source address ([`pods`]) at once in the usual case, and [`Agent::settle`] settles
//! the slow cases in one step ([`identify`]); [`Agent::respond`] answers the pod: a fresh
//! cached token at once, or a token bought upstream ([`tokens`], [`upstream`], cached in
//! [`cache`]). Every refusal is rendered in [`replies`], in GKE's words.
//!
//! It holds no key of the token service and no database: the token service is the only minting
//! authority. The one key it may hold is a cluster's own KSA issuer key (`wid dev`, and nodes
//! given a pods file); on Kubernetes, KSA tokens come from the TokenRequest API.

pub mod attest;
pub mod cache;
mod conn;
pub mod federation;
mod host_network;
mod identify;
pub mod kubernetes;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod passthrough;
pub mod pod_index;
pub mod pods;
mod prefetch;
mod replies;
pub mod tokens;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use tokio::net::TcpListener;
use wid_gce::{Account, Outcome, Reply, View};

use crate::cache::TokenCache;
use crate::pods::{Pod, Resolver};
use crate::tokens::TokenKey;
use crate::upstream::{KsaTokens, Upstream, UpstreamError};

/// The resolved settings of the agent.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub project_id: String,
    /// The project's number; when not given (nor named by a provider of [`Config::federation`]),
    /// learnt from STS's introspection of the first federated token (see
    /// `Agent::learn_project_number`).
    pub project_number: Option<String>,
    /// The pool the node's pods are members of, and so how STS is asked.
    pub federation: federation::Federation,
    pub cluster_name: String,
    pub cluster_location: String,
    pub cluster_uid: String,
    /// The node's zone, and its name and numeric id as `instance/*` reports them.
    pub zone: String,
    pub hostname: String,
    pub instance_id: String,
    pub sts_url: String,
    pub iamcredentials_url: String,
    /// CA certificates (PEM) trusted for the upstream besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// The bound on every upstream call.
    pub upstream_timeout: Duration,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`), if any.
    pub admin_addr: Option<SocketAddr>,
    /// Connections served at once.
    pub max_connections: usize,
    /// A connection that sends no full request head in this time is closed.
    pub header_read_timeout: Duration,
    /// Requests of one pod in flight at once (fairness between pods).
    pub max_requests_per_pod: usize,
    /// Long-polls (`wait_for_change`) of one pod held at once.
    pub max_long_polls_per_pod: usize,
    /// Upstream calls per second, node-wide (bursts of ten times as many).
    pub upstream_per_second: f64,
    /// Upstream calls per second of one pod (bursts of ten times as many), within the node's.
    pub upstream_per_pod_per_second: f64,
    /// Threads serving the metadata port, each with its own socket and runtime.
    pub serve_threads: usize,
    /// How long a request from an address no pod has yet is held for the pod to appear.
    pub pod_wait: Duration,
    /// Kernel attestation of callers ([`attest`]), with the host's process table at this path.
    pub attest_callers: Option<std::path::PathBuf>,
    /// The node's own metadata service (another cloud's), to which requests that are not for
    /// Google's API are relayed ([`passthrough`]); without it they are refused.
    pub passthrough: Option<String>,
    /// Whether a new pod's access token is fetched before it asks ([`prefetch`]).
    pub prefetch_tokens: bool,
}

/// Where refusals of a pod are reported, besides the log and the answer (Kubernetes Events).
pub trait Denials: Send + Sync + 'static {
    /// `reason` is a short CamelCase word, as Kubernetes events have.
    fn denied(&self, namespace: &str, name: &str, uid: &str, reason: &'static str, message: &str);
}

/// Attestations (blocking reads of `/proc`) in progress at once, node-wide; more wait their turn.
const MAX_ATTESTATIONS: usize = 8;
/// Host-network callers' attributions at once, node-wide: fewer, as each walks more of `/proc`.
const MAX_HOST_ATTRIBUTIONS: usize = 2;

/// The scopes a token has when the caller names none.
pub const DEFAULT_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];

struct Agent {
    config: Config,
    resolver: Arc<dyn Resolver>,
    attestor: Option<Arc<attest::Attestor>>,
    /// Attestations in progress at once: each holds a blocking thread reading `/proc`.
    attestations: Arc<tokio::sync::Semaphore>,
    /// The same for host-network callers (a walk of every process's descriptors each): apart,
    /// so that host-network callers never hold up pods' attestations.
    host_attributions: Arc<tokio::sync::Semaphore>,
    ksa: KsaTokens,
    denials: Option<Arc<dyn Denials>>,
    project_number: std::sync::OnceLock<String>,
    upstream: Upstream,
    access_tokens: TokenCache<TokenKey>,
    id_tokens: TokenCache<TokenKey>,
    /// The federated tokens (IAM scope) that buy a pod's service-account tokens: one exchange
    /// serves its access token and every ID token audience until it nears expiry.
    impersonating: TokenCache<TokenKey>,
    metrics: metrics::Metrics,
    per_pod: limits::PerPod,
    held_per_pod: limits::PerPod,
    budget: limits::Budget,
    passthrough: Option<Arc<passthrough::Passthrough>>,
    prefetches: prefetch::Prefetches,
    /// Log lines a pod's requests can cause again and again, one per kind and minute.
    refusal_log: wid_runtime::log_limit::LogLimit,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamConfigError),
    #[error("cannot attest callers")]
    Attest(#[from] attest::AttestorError),
    #[error(transparent)]
    Passthrough(#[from] passthrough::PassthroughError),
}

/// A started agent: its listener is bound.
pub struct MetadataServer {
    agent: Arc<Agent>,
    listener: wid_runtime::serve::ThreadedListener,
}

impl MetadataServer {
    pub async fn start(
        config: Config,
        resolver: Arc<dyn Resolver>,
        ksa: KsaTokens,
        denials: Option<Arc<dyn Denials>>,
    ) -> Result<MetadataServer, StartError> {
        let attestor = match &config.attest_callers {
            Some(path) => {
                let attestor = attest::Attestor::new(path)?;
                tracing::info!(proc_root = %path.display(), "attesting callers: a connection is answered as a pod's only once the kernel shows it is in that pod's network");
                Some(Arc::new(attestor))
            }
            None => None,
        };
        let listener =
            wid_runtime::serve::ThreadedListener::bind(config.addr, config.serve_threads).map_err(
                |source| StartError::Bind {
                    addr: config.addr,
                    source,
                },
            )?;
        let upstream = Upstream::new(&config)?;
        let passthrough = match &config.passthrough {
            Some(base) => Some(Arc::new(passthrough::Passthrough::new(
                base,
                config.upstream_timeout,
            )?)),
            None => None,
        };
        let per_pod = limits::PerPod::new(config.max_requests_per_pod.max(1));
        let held_per_pod = limits::PerPod::new(config.max_long_polls_per_pod.max(1));
        let burst = |rate: f64| (rate * 10.0).max(1.0);
        let (node, pod) = (
            config.upstream_per_second.max(0.1),
            config.upstream_per_pod_per_second.max(0.1),
        );
        let budget = limits::Budget::new(
            (node, burst(node)),
            (pod, burst(pod)),
            config.upstream_timeout,
        );
        let project_number = config
            .project_number
            .clone()
            .or_else(|| config.federation.project_number().map(str::to_owned))
            .map(std::sync::OnceLock::from)
            .unwrap_or_default();
        let agent = Arc::new(Agent {
            config,
            resolver,
            attestor,
            attestations: Arc::new(tokio::sync::Semaphore::new(MAX_ATTESTATIONS)),
            host_attributions: Arc::new(tokio::sync::Semaphore::new(MAX_HOST_ATTRIBUTIONS)),
            ksa,
            denials,
            project_number,
            upstream,
            access_tokens: TokenCache::default(),
            id_tokens: TokenCache::default(),
            impersonating: TokenCache::new(cache::Bounds::one_per_pod()),
            metrics: metrics::Metrics::default(),
            per_pod,
            held_per_pod,
            budget,
            passthrough,
            prefetches: prefetch::Prefetches::default(),
            refusal_log: wid_runtime::log_limit::LogLimit::new(Duration::from_secs(60)),
        });
        Ok(MetadataServer { agent, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.listener.local_addr())
    }

    /// A handle to tell the agent, from another task, the uids of the pods left after each
    /// change: departed pods' tokens are forgotten, new pods' fetched ahead
    /// (`Config::prefetch_tokens`).
    pub fn pods_changed(&self) -> impl Fn(&[String]) + Send + Sync + 'static {
        let agent = self.agent.clone();
        move |uids: &[String]| {
            agent.access_tokens.retain_owners(uids);
            agent.id_tokens.retain_owners(uids);
            agent.impersonating.retain_owners(uids);
            agent.ksa.retain_owners(uids);
            agent.budget.forget_idle_pods();
            agent
                .prefetches
                .retain(&uids.iter().map(String::as_str).collect());
            // A resolver with a change feed is followed by `prefetch::follow` instead.
            if agent.config.prefetch_tokens && agent.resolver.changes().is_none() {
                agent.prefetch_new_pods();
            }
        }
    }

    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr();
        let config = &self.agent.config;
        if config.prefetch_tokens {
            tokio::spawn(prefetch::follow(self.agent.clone()));
        }

        if let Some(admin_addr) = config.admin_addr {
            let admin = TcpListener::bind(admin_addr).await?;
            tracing::info!(addr = %admin.local_addr()?, "metadata admin listener (healthz, readyz, metrics)");
            let router = Router::new()
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                .route("/readyz", axum::routing::get(readyz))
                .route("/metrics", axum::routing::get(render_metrics))
                .with_state(self.agent.clone());
            tokio::spawn(async move {
                if let Err(e) =
                    wid_runtime::serve::serve(admin, router, None, std::future::pending()).await
                {
                    tracing::error!(error = %e, "the admin listener stopped");
                }
            });
        }
        let max_connections = config.max_connections;
        tracing::info!(%addr, max_connections, threads = config.serve_threads, "metadata server listening");
        let connections = conn::MetadataConnections { agent: self.agent };
        self.listener
            .serve(connections, max_connections, shutdown)
            .await
    }
}

/// Ready once the resolver knows the node's pods: before, every pod's request would wait.
async fn readyz(State(agent): State<Arc<Agent>>) -> (axum::http::StatusCode, &'static str) {
    if agent.resolver.ready() {
        (axum::http::StatusCode::OK, "ok\n")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the pods of this node are not known yet\n",
        )
    }
}

async fn render_metrics(State(agent): State<Arc<Agent>>) -> Response {
    agent.metrics.holding(
        agent.resolver.addresses(),
        agent.resolver.ready(),
        agent.access_tokens.tokens() + agent.id_tokens.tokens() + agent.impersonating.tokens(),
    );
    wid_runtime::openmetrics::response(&agent.metrics.registry)
}

/// An answer decided at once, or one that waits (upstream calls, long-polls). The waiting kinds
/// are boxed so that the future of every request stays small: the hot path (a cached token)
/// never waits.
enum Answer {
    Now(Reply),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>),
    /// A long-poll: `reply` once `wait` is over, holding one of the pod's long-poll slots.
    Hold {
        reply: Reply,
        wait: Duration,
        slot: tokio::sync::OwnedSemaphorePermit,
    },
}

impl Agent {
    /// The answer to `request` of `pod`, identified, calling from `ip`. A fresh cached token is
    /// answered here, without building the pod's tree or awaiting anything: the hot path.
    fn respond(
        self: &Arc<Self>,
        ip: IpAddr,
        pod: Arc<Pod>,
        request: &wid_gce::Request<'_>,
    ) -> Answer {
        // Fairness: one pod's flood is refused without touching the others' slots. The slot is
        // held until the answer is complete.
        let Some(slot) = self.per_pod.try_acquire(ip) else {
            return Answer::Now(replies::too_many_requests(ip));
        };
        let outcome = match wid_gce::token_fast_path(request, self.email(&pod).as_ref()) {
            Some(token) => token,
            None => wid_gce::answer(request, &self.view(&pod)),
        };
        let agent = self.clone();
        match outcome {
            Outcome::Reply(reply) => Answer::Now(reply),
            Outcome::Token { scopes, .. } => {
                let key = TokenKey::access(pod.clone(), &scopes);
                if let Some(minted) = self.access_tokens.fresh(&key) {
                    self.metrics.cache(cache::Source::Hit);
                    return Answer::Now(tokens::token_answer(&minted));
                }
                Answer::Later(Box::pin(async move {
                    let reply = agent.token(pod, key, scopes).await;
                    drop(slot);
                    reply
                }))
            }
            // The tree of a pod does not change while it lives: hold, then answer the same. A
            // held long-poll counts against the pod's long-poll slots, not its request slots: a
            // pod may keep many open, never enough to take the node's connections.
            Outcome::Hold { reply, wait } => match self.held_per_pod.try_acquire(ip) {
                Some(slot) => Answer::Hold { reply, wait, slot },
                None => Answer::Now(replies::too_many_long_polls(ip)),
            },
            Outcome::Identity {
                audience, format, ..
            } => Answer::Later(Box::pin(async move {
                let reply = agent.identity(pod, audience, format).await;
                drop(slot);
                reply
            })),
        }
    }
}

impl Agent {
    /// Reports IAM's and STS's refusals of a pod (a KSA not bound, an annotation naming an
    /// account that does not exist) where its owner looks: the pod's events.
    fn report(&self, pod: &Pod, error: &UpstreamError) {
        // The operator's view too: a wrong --project or an unregistered cluster shows here
        // first, as STS's refusals of every pod. One line per pod and kind a minute: a pod's
        // retries are not the operator's reading.
        // Of the node's condition one line for all pods, of a pod's one line for that pod.
        let (kind, what) = match error {
            UpstreamError::Refused { status, .. } => (
                format!("refused {status}|{}", pod.uid),
                "the upstream refused a pod's token",
            ),
            UpstreamError::Unavailable(_) => (
                "unavailable".to_owned(),
                "the upstream could not be reached for a pod's token",
            ),
            UpstreamError::Throttled(limits::Exhausted::Pod) => (
                format!("pod budget|{}", pod.uid),
                "a pod's token was not asked for: its budget of upstream calls is spent",
            ),
            UpstreamError::Throttled(limits::Exhausted::Node) => (
                "node budget".to_owned(),
                "a pod's token was not asked for: the node's budget of upstream calls is spent",
            ),
        };
        if let Some(left_out) = self.refusal_log.admit(&kind) {
            let note = wid_runtime::log_limit::left_out_note(left_out);
            tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), error = %error, "{what}{note}");
        }
        let Some(denials) = &self.denials else {
            return;
        };
        if let UpstreamError::Refused {
            service,
            status,
            message,
            ..
        } = error
        {
            let reason = match (*service, status) {
                // STS's refusals of the exchange: an audience or issuer the provider does not
                // accept, a provider disabled or gone.
                ("STS", 400) => "WorkloadIdentityRefused",
                (_, 403) => "WorkloadIdentityDenied",
                ("IAM", 404) => "WorkloadIdentityUnknownAccount",
                _ => return,
            };
            let account = pod.gsa().unwrap_or("the workload identity pool");
            denials.denied(
                &pod.namespace,
                &pod.name,
                &pod.uid,
                reason,
                &format!(
                    "Kubernetes service account {}/{} cannot get tokens for {account}: {service} returned {status}: {message}",
                    pod.namespace, pod.service_account_name
                ),
            );
        }
    }

    /// The project's number, once configured or learnt; empty before (never reported: `answer`
    /// learns it first).
    fn project_number(&self) -> &str {
        self.project_number.get().map_or("", String::as_str)
    }

    fn principal(&self, pod: &Pod) -> String {
        self.config.federation.principal(
            self.project_number(),
            &pod.namespace,
            &pod.service_account_name,
        )
    }

    /// What `email` reports for the pod.
    fn email<'a>(&self, pod: &'a Pod) -> std::borrow::Cow<'a, str> {
        match pod.gsa() {
            Some(gsa) => std::borrow::Cow::Borrowed(gsa),
            None if pod.principal_as_email() => std::borrow::Cow::Owned(self.principal(pod)),
            None => std::borrow::Cow::Owned(self.config.federation.pool()),
        }
    }

    fn view(&self, pod: &Pod) -> View {
        let c = &self.config;
        let email = self.email(pod).into_owned();
        View {
            project_id: c.project_id.clone(),
            project_number: self.project_number().to_owned(),
            zone: c.zone.clone(),
            hostname: c.hostname.clone(),
            instance_id: c.instance_id.clone(),
            cluster_name: c.cluster_name.clone(),
            cluster_location: c.cluster_location.clone(),
            cluster_uid: c.cluster_uid.clone(),
            account: Account {
                email,
                scopes: DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
