//! The wid node agent: the GKE metadata server for any node.
//!
//! It answers the GCE metadata API ([`wid_gce`] decides every protocol rule), finds the calling
//! pod by the request's source address ([`pods`]), and hands the pod tokens of the IAM service
//! account its KSA is annotated with, through the token flow of [`upstream`] and the cache of
//! [`cache`]. It holds no key of the token service and no database: the token service is the
//! only minting authority. The one key it holds is the cluster's own KSA issuer key (this
//! issue's stand-in for the Kubernetes TokenRequest API).
//!
//! Errors follow GKE's metadata server: IAM's status with its message shape, 503 when the
//! upstream cannot be reached, 403 for a caller that is no known pod, never a 500 for a known
//! condition.

pub mod attest;
pub mod cache;
mod conn;
pub mod kubernetes;
pub mod limits;
pub mod metrics;
pub mod pod_index;
pub mod pods;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use tokio::net::TcpListener;
use wid_gce::{Account, Outcome, Reply, View};

use wid_runtime::connections::canonical_ip;

use crate::cache::TokenCache;
use crate::pods::{Caller, Pod, Resolver};
use crate::upstream::{KsaTokens, Minted, Upstream, UpstreamError, now};

/// The resolved settings of the agent.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub project_id: String,
    /// The project's number; when not given, learnt from STS's introspection of the first
    /// federated token (see `Agent::learn_project_number`).
    pub project_number: Option<String>,
    pub cluster_name: String,
    pub cluster_location: String,
    pub cluster_uid: String,
    /// The node's zone, and its name and numeric id as `instance/*` reports them.
    pub zone: String,
    pub hostname: String,
    pub instance_id: String,
    pub sts_url: String,
    pub iamcredentials_url: String,
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
}

impl Config {
    fn pool(&self) -> String {
        format!("{}.svc.id.goog", self.project_id)
    }
}

/// Where refusals of a pod are reported, besides the log and the answer (Kubernetes Events).
pub trait Denials: Send + Sync + 'static {
    /// `reason` is a short CamelCase word, as Kubernetes events have.
    fn denied(&self, namespace: &str, name: &str, uid: &str, reason: &'static str, message: &str);
}

/// Attestations (blocking reads of `/proc`) in progress at once, node-wide; more wait their turn.
const MAX_ATTESTATIONS: usize = 8;

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
    ksa: KsaTokens,
    denials: Option<Arc<dyn Denials>>,
    project_number: std::sync::OnceLock<String>,
    upstream: Upstream,
    access_tokens: TokenCache,
    id_tokens: TokenCache,
    /// The federated tokens (IAM scope) that buy a pod's service-account tokens: one exchange
    /// serves its access token and every ID token audience until it nears expiry.
    impersonating: TokenCache,
    metrics: metrics::Metrics,
    per_pod: limits::PerPod,
    held_per_pod: limits::PerPod,
    budget: limits::Budget,
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
    #[error("cannot attest callers")]
    Attest(#[from] attest::AttestorError),
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
        let upstream = Upstream::new(
            &config.sts_url,
            &config.iamcredentials_url,
            config.upstream_timeout,
        )?;
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
            .map(std::sync::OnceLock::from)
            .unwrap_or_default();
        let agent = Arc::new(Agent {
            config,
            resolver,
            attestor,
            attestations: Arc::new(tokio::sync::Semaphore::new(MAX_ATTESTATIONS)),
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
            refusal_log: wid_runtime::log_limit::LogLimit::new(Duration::from_secs(60)),
        });
        Ok(MetadataServer { agent, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.listener.local_addr())
    }

    /// A handle that can forget departed pods' tokens from another task.
    pub fn pod_forgetter(&self) -> impl Fn(&[String]) + Send + Sync + 'static {
        let agent = self.agent.clone();
        move |uids: &[String]| {
            agent.access_tokens.retain_owners(uids);
            agent.id_tokens.retain_owners(uids);
            agent.impersonating.retain_owners(uids);
            agent.ksa.retain_owners(uids);
            agent.budget.forget_idle_pods();
        }
    }

    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr();
        let config = &self.agent.config;

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
                    wid_runtime::serve::serve(admin, router, std::future::pending()).await
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
/// are boxed so that the future of every request stays small: hyper moves it into place per
/// request, and the hot path (a cached token) never waits.
enum Answer {
    Now(Reply),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>),
    /// A long-poll: `reply` once `wait` is over, holding one of the pod's long-poll slots.
    Hold {
        reply: Reply,
        wait: Duration,
        slot: tokio::sync::OwnedSemaphorePermit,
    },
    /// The project's number is not known yet: learn it with this pod's identity, then answer.
    NeedProjectNumber(Arc<Pod>),
    /// No pod has the caller's address yet: wait (bounded) for the resolver to learn of it, as
    /// it does in a pod's first moments, then answer again.
    WaitForPod(IpAddr),
    /// The connection is not confirmed as this pod's yet (`--attest-callers`): confirm it, then
    /// answer again.
    Attest(Arc<Pod>),
}

/// An IAM Credentials call made for a pod's service account.
#[derive(Clone, Copy)]
enum IamCall<'a> {
    AccessToken(&'a [String]),
    IdToken(&'a str),
}

/// What the kernel said of a connection and the pod the index proposed for it.
enum Attested {
    Confirmed,
    /// Not that pod's, and meanwhile the index names someone else at the address: ask again.
    IndexChanged,
    Refused(Reply),
}

/// The answer to a request. With `may_wait`, a caller the resolver does not know yet is
/// [`Answer::WaitForPod`] when the resolver can still learn of it; without, it is refused.
/// `attested` is the UID of the pod the connection was confirmed to come from, if any.
fn answer(
    agent: &Arc<Agent>,
    peer: SocketAddr,
    gce: &wid_gce::Request<'_>,
    attested: Option<&str>,
    may_wait: bool,
) -> Answer {
    if let Some(reply) = wid_gce::precheck(gce) {
        return Answer::Now(reply);
    }
    let ip = canonical_ip(peer.ip());
    let pod = match agent.resolver.resolve(ip) {
        Caller::Pod(pod) => pod,
        Caller::Unknown if may_wait && agent.resolver.changes().is_some() => {
            return Answer::WaitForPod(ip);
        }
        Caller::Unknown => {
            if let Some(left_out) = agent.refusal_log.admit(&format!("unknown|{ip}")) {
                tracing::info!(%ip, "request from an address that is no known pod{}", wid_runtime::log_limit::left_out_note(left_out));
            }
            // Asked again after the bounded wait for the pod (`may_wait` is false only then).
            let waited = if agent.resolver.changes().is_some() {
                format!(
                    " It waited {} ms for a pod with that address to appear on this node.",
                    agent.config.pod_wait.as_millis()
                )
            } else {
                String::new()
            };
            return Answer::Now(Reply::text(
                403,
                format!(
                    "The metadata server knows no pod at {ip}: it answers only the pods of its node, each with its own identity.{waited}\n"
                ),
            ));
        }
        Caller::Ambiguous(pods) => {
            if let Some(left_out) = agent.refusal_log.admit(&format!("ambiguous|{ip}")) {
                tracing::warn!(%ip, pods = ?pods, "two live pods have one address; both refused{}", wid_runtime::log_limit::left_out_note(left_out));
            }
            if let Some(denials) = &agent.denials {
                for pod in &pods {
                    if let Some((namespace, name)) = pod.split_once('/') {
                        denials.denied(
                            namespace,
                            name,
                            "",
                            "WorkloadIdentityAmbiguousAddress",
                            &format!("The metadata server refuses requests from {ip}: the pods {} all have that address.", pods.join(", ")),
                        );
                    }
                }
            }
            return Answer::Now(Reply::text(
                503,
                format!(
                    "Unable to identify the caller: the pods {} all have the address {ip}; the metadata server answers none of them until only one does. Retry shortly.\n",
                    pods.join(", ")
                ),
            ));
        }
    };
    if agent.attestor.is_some() && attested != Some(pod.uid.as_str()) {
        return Answer::Attest(pod);
    }
    if agent.project_number.get().is_none() {
        return Answer::NeedProjectNumber(pod);
    }
    // Fairness: one pod's flood is refused without touching the others' slots. The slot is held
    // until the answer is complete.
    let Some(slot) = agent.per_pod.try_acquire(ip) else {
        return Answer::Now(Reply::text(
            429,
            format!("Too many concurrent requests from {ip}; retry with backoff.\n"),
        ));
    };
    // The hot path: a token, decided without building the pod's tree.
    let outcome = match wid_gce::token_fast_path(gce, agent.email(&pod).as_ref()) {
        Some(token) => token,
        None => wid_gce::answer(gce, &agent.view(&pod)),
    };
    let agent = agent.clone();
    match outcome {
        Outcome::Reply(reply) => Answer::Now(reply),
        Outcome::Token { scopes, .. } => {
            let key = agent.access_key(&pod, &scopes);
            // One lookup, no fetch machinery.
            if let Some(minted) = agent.access_tokens.fresh(&key) {
                agent.metrics.cache(cache::Source::Hit);
                return Answer::Now(Agent::token_answer(&minted));
            }
            Answer::Later(Box::pin(async move {
                let response = agent.token(&pod, key, scopes).await;
                drop(slot);
                response
            }))
        }
        // The tree of a pod does not change while it lives: hold, then answer the same.
        Outcome::Hold { reply, wait } => {
            // A held long-poll counts against the pod's long-poll slots, not its request slots:
            // a pod may keep many open, never enough to take the node's connections.
            drop(slot);
            match agent.held_per_pod.try_acquire(ip) {
                Some(slot) => Answer::Hold { reply, wait, slot },
                None => Answer::Now(Reply::text(
                    429,
                    format!("Too many long-polls open from {ip}; retry with backoff.\n"),
                )),
            }
        }
        Outcome::Identity {
            audience, format, ..
        } => Answer::Later(Box::pin(async move {
            let response = agent.identity(&pod, audience, format).await;
            drop(slot);
            response
        })),
    }
}

/// The answer when attestation itself failed, not the caller.
fn unconfirmed() -> Reply {
    Reply::text(503, "Unable to confirm the caller; retry.\n")
}

/// The message GKE appends to IAM's refusals, pointing at the binding.
const BINDING_HINT: &str = "This error could be caused by a missing IAM policy binding on the target IAM service account.\nFor more information, refer to the Workload Identity documentation:\n\thttps://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity#authenticating_to\n";

fn upstream_error(what: &str, e: UpstreamError) -> Reply {
    match e {
        UpstreamError::Refused {
            service,
            status,
            reason,
            message,
        } => {
            let mut body = format!("{what}; {service} returned {status} {reason}: {message}\n");
            if status == 403 {
                body.push_str(BINDING_HINT);
            }
            // IAM's and STS's refusals pass through; anything else is our upstream being wrong.
            let status = if matches!(status, 400 | 401 | 403 | 404 | 429) {
                status
            } else {
                502
            };
            Reply::text(status, body)
        }
        UpstreamError::Unavailable(reason) => Reply::text(
            503,
            format!("{what}: the token service is unavailable ({reason}); retry\n"),
        ),
        // Nothing was asked: the pod is told so, and that it may retry.
        UpstreamError::Throttled(limits::Exhausted::Pod) => Reply::text(
            429,
            format!(
                "{what}: too many token requests from this pod reach the token service; retry with backoff\n"
            ),
        ),
        UpstreamError::Throttled(limits::Exhausted::Node) => Reply::text(
            503,
            format!(
                "{what}: the metadata server's calls to the token service are at their limit; retry shortly\n"
            ),
        ),
    }
}

impl Agent {
    /// Waits until the resolver knows something of `ip` (a pod, or that it is ambiguous), or
    /// until the configured bound: a new pod's first requests are held, not refused, while the
    /// watch catches up.
    async fn wait_for_pod(&self, ip: IpAddr) {
        self.metrics.pod_wait();
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        self.wait_while(ip, |caller| *caller == Caller::Unknown, deadline)
            .await;
    }

    /// Waits, until `deadline`, while what the resolver says of `ip` is `unchanged`.
    async fn wait_while(
        &self,
        ip: IpAddr,
        unchanged: impl Fn(&Caller) -> bool,
        deadline: tokio::time::Instant,
    ) {
        // Subscribe before looking, so that a change between the two is not missed.
        let Some(mut changes) = self.resolver.changes() else {
            // Nothing can change: the wait is the whole bound.
            tokio::time::sleep_until(deadline).await;
            return;
        };
        while unchanged(&self.resolver.resolve(ip)) {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }

    /// Confirms from the kernel that the connection with `ends` is `pod`'s. When it is not, the
    /// index may be behind (the pod gone and its address already another's), or the process
    /// table (a scan of it is at most [`attest::MIN_RESCAN`] old): the answer waits, bounded
    /// by the pod wait, for the index to change its mind, looking again meanwhile, and is
    /// refused if neither settles it.
    async fn attest(&self, pod: Arc<Pod>, ends: attest::Ends) -> Attested {
        let Some(attestor) = self.attestor.clone() else {
            return Attested::Confirmed;
        };
        let peer = ends.pod;
        let ip = canonical_ip(peer.ip());
        let same_pod = |caller: &Caller| matches!(caller, Caller::Pod(p) if p.uid == pod.uid);
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        let mut held = false;
        let error = loop {
            let Ok(permit) = self.attestations.clone().acquire_owned().await else {
                return Attested::Refused(unconfirmed());
            };
            let confirm = {
                let (attestor, pod) = (attestor.clone(), pod.clone());
                move || {
                    let _permit = permit;
                    attestor.confirm(&pod, ends)
                }
            };
            let error = match tokio::task::spawn_blocking(confirm).await {
                Ok(Ok(())) => return Attested::Confirmed,
                Ok(Err(error)) => error,
                Err(join) => {
                    tracing::error!(error = %join, "caller attestation did not complete");
                    return Attested::Refused(unconfirmed());
                }
            };
            if !held {
                self.metrics.pod_wait();
                held = true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break error;
            }
            self.wait_while(ip, same_pod, deadline.min(now + attest::MIN_RESCAN))
                .await;
            if !same_pod(&self.resolver.resolve(ip)) {
                return Attested::IndexChanged;
            }
        };
        tracing::warn!(%peer, error = %error, "a connection not confirmed as its pod's was refused");
        self.metrics.attestation_refused();
        if let Some(denials) = &self.denials {
            denials.denied(
                &pod.namespace,
                &pod.name,
                &pod.uid,
                "WorkloadIdentityUnconfirmedCaller",
                &format!("The metadata server refused a request from {ip}: {error}."),
            );
        }
        Attested::Refused(Reply::text(
            503,
            format!(
                "Unable to confirm the caller: {error}; the metadata server answers a pod's address only from that pod.\n"
            ),
        ))
    }

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
                "the token service refused a pod's token",
            ),
            UpstreamError::Unavailable(_) => (
                "unavailable".to_owned(),
                "the token service could not be reached for a pod's token",
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
            let reason = match status {
                403 => "WorkloadIdentityDenied",
                404 => "WorkloadIdentityUnknownAccount",
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

    /// Learns the project's number the way any client could: a federated token for `pod`, and
    /// STS's introspection of it, whose principal names the project by number. The token is the
    /// one the pod's service-account tokens are then bought with (cached), not one more exchange.
    async fn learn_project_number(self: &Arc<Self>, pod: &Arc<Pod>) -> Result<(), UpstreamError> {
        if self.project_number.get().is_some() {
            return Ok(());
        }
        let (federated, _) = self.impersonating_token(pod).await?;
        let principal = self.upstream.introspect_principal(&federated.token).await?;
        let number = principal
            .split("/projects/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                UpstreamError::Unavailable(format!(
                    "STS's principal {principal:?} names no project number"
                ))
            })?;
        tracing::info!(
            project_number = number,
            "learnt the project's number from STS"
        );
        let _ = self.project_number.set(number.to_owned());
        Ok(())
    }

    fn principal(&self, pod: &Pod) -> String {
        let subject = wid_iam::member::gke_subject(&pod.namespace, &pod.service_account_name);
        wid_iam::member::principal_name(self.project_number(), &self.config.pool(), &subject)
    }

    /// What `email` reports for the pod.
    fn email<'a>(&self, pod: &'a Pod) -> std::borrow::Cow<'a, str> {
        match pod.gsa() {
            Some(gsa) => std::borrow::Cow::Borrowed(gsa),
            None if pod.principal_as_email() => std::borrow::Cow::Owned(self.principal(pod)),
            None => std::borrow::Cow::Owned(self.config.pool()),
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

    /// The STS audience of this cluster's KSAs, GKE's form.
    fn sts_audience(&self) -> String {
        format!(
            "identitynamespace:{}:{}",
            self.config.pool(),
            self.ksa.issuer()
        )
    }

    /// Times an upstream call made for `pod` and counts its outcome, once the budgets give it a
    /// turn (never longer than a call may take); a call they refuse is not made.
    async fn timed(
        &self,
        pod: &Pod,
        call: impl std::future::Future<Output = Result<Minted, UpstreamError>>,
    ) -> Result<Minted, UpstreamError> {
        if let Err(exhausted) = self.budget.turn(&pod.uid).await {
            self.metrics.throttled(exhausted);
            return Err(UpstreamError::Throttled(exhausted));
        }
        let started = std::time::Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(UpstreamError::Refused { .. }) => "refused",
            Err(UpstreamError::Unavailable(_) | UpstreamError::Throttled(_)) => "unavailable",
        };
        self.metrics.upstream(outcome, started.elapsed());
        result
    }

    /// `call` for the service account `gsa`, with the pod's federated token of
    /// [`Self::impersonating_token`]. A cached federated token the token service no longer takes
    /// (401: signed with keys it no longer has, or its cluster registered anew, say) is dropped and exchanged anew, once.
    async fn as_service_account(
        self: &Arc<Self>,
        pod: &Arc<Pod>,
        gsa: &str,
        call: IamCall<'_>,
    ) -> Result<Minted, UpstreamError> {
        let mut exchanged_anew = false;
        loop {
            let (federated, source) = self.impersonating_token(pod).await?;
            let answer = match call {
                IamCall::AccessToken(scopes) => {
                    self.timed(
                        pod,
                        self.upstream.access_token(&federated.token, gsa, scopes),
                    )
                    .await
                }
                IamCall::IdToken(audience) => {
                    self.timed(pod, self.upstream.id_token(&federated.token, gsa, audience))
                        .await
                }
            };
            match answer {
                // Only a token from the cache can have gone bad meanwhile; a fresh one refused
                // is refused.
                Err(UpstreamError::Refused { status: 401, .. })
                    if !exchanged_anew && source != cache::Source::Miss =>
                {
                    self.impersonating
                        .forget(&Self::impersonating_key(pod), &federated.token);
                    exchanged_anew = true;
                }
                answer => return answer,
            }
        }
    }

    fn impersonating_key(pod: &Pod) -> String {
        format!("{}|{}/{}", pod.uid, pod.namespace, pod.service_account_name)
    }

    /// The federated token with the IAM scope that GKE's flow exchanges for the pod's
    /// service-account tokens, cached per pod and KSA: one exchange serves its access token and
    /// all its ID tokens.
    async fn impersonating_token(
        self: &Arc<Self>,
        pod: &Arc<Pod>,
    ) -> Result<(Minted, cache::Source), UpstreamError> {
        let key = Self::impersonating_key(pod);
        let (agent, pod_for_fetch) = (self.clone(), pod.clone());
        let fetch = move || {
            let (agent, pod) = (agent.clone(), pod_for_fetch.clone());
            async move {
                agent
                    .federated(&pod, &["https://www.googleapis.com/auth/iam".to_owned()])
                    .await
            }
        };
        self.impersonating.get(&key, &pod.uid, fetch).await
    }

    /// A federated token for the pod's KSA.
    async fn federated(&self, pod: &Pod, scopes: &[String]) -> Result<Minted, UpstreamError> {
        let ksa_token = self.ksa.token(pod, &self.config.pool()).await?;
        self.timed(
            pod,
            self.upstream
                .exchange(&self.sts_audience(), &ksa_token, scopes),
        )
        .await
    }

    /// The answer of the token endpoint for a minted token.
    fn token_answer(minted: &Minted) -> Reply {
        // Tokens are base64url and dots: nothing to escape, so format, don't build a tree.
        let body = format!(
            "{{\"access_token\":\"{}\",\"expires_in\":{},\"token_type\":\"Bearer\"}}",
            minted.token,
            (minted.expires_at - now()).max(1)
        );
        Reply::json(body)
    }

    /// The cache key of a pod's access token: the pod (its uid, so that a reused address never
    /// finds a departed pod's token), its KSA and service account, and the scopes.
    fn access_key(&self, pod: &Pod, scopes: &[String]) -> String {
        let scopes = if scopes.is_empty() {
            DEFAULT_SCOPES.join(" ")
        } else {
            scopes.join(" ")
        };
        format!(
            "{}|{}/{}|{}|{scopes}",
            pod.uid,
            pod.namespace,
            pod.service_account_name,
            pod.gsa().unwrap_or(""),
        )
    }

    async fn token(self: &Arc<Self>, pod: &Arc<Pod>, key: String, scopes: Vec<String>) -> Reply {
        let scopes = if scopes.is_empty() {
            DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            scopes
        };
        let gsa = pod.gsa().map(str::to_owned);
        let (agent, pod_for_fetch, scopes_for_fetch) = (self.clone(), pod.clone(), scopes.clone());
        let fetch = move || {
            let (agent, pod, scopes, gsa) = (
                agent.clone(),
                pod_for_fetch.clone(),
                scopes_for_fetch.clone(),
                gsa.clone(),
            );
            async move {
                match gsa {
                    // GKE's impersonation: exchange with the IAM scope, then generateAccessToken.
                    Some(gsa) => {
                        agent
                            .as_service_account(&pod, &gsa, IamCall::AccessToken(&scopes))
                            .await
                    }
                    // Workload Identity Federation for GKE: the federated token itself.
                    None => agent.federated(&pod, &scopes).await,
                }
            }
        };
        match self.access_tokens.get(&key, &pod.uid, fetch).await {
            Ok((minted, source)) => {
                self.metrics.cache(source);
                Self::token_answer(&minted)
            }
            Err(e) => {
                self.report(pod, &e);
                upstream_error("Unable to generate access token", e)
            }
        }
    }

    async fn identity(
        self: &Arc<Self>,
        pod: &Arc<Pod>,
        audience: String,
        format: wid_gce::IdFormat,
    ) -> Reply {
        let Some(gsa) = pod.gsa().map(str::to_owned) else {
            return Reply::text(
                404,
                format!(
                    "Your Kubernetes service account ({}/{}) is not annotated with a target Google service account, which is a requirement for retrieving Identity Tokens using Workload Identity.\nPlease add the iam.gke.io/gcp-service-account=[GSA_NAME]@[PROJECT_ID] annotation to your Kubernetes service account.\nRefer to https://cloud.google.com/kubernetes-engine/docs/how-to/workload-identity\n",
                    pod.namespace, pod.service_account_name
                ),
            );
        };
        let key = format!(
            "{}|{}/{}|{gsa}|{audience}|{format:?}",
            pod.uid, pod.namespace, pod.service_account_name
        );
        let (agent, pod_for_fetch) = (self.clone(), pod.clone());
        let fetch = move || {
            let (agent, pod, gsa, audience) = (
                agent.clone(),
                pod_for_fetch.clone(),
                gsa.clone(),
                audience.clone(),
            );
            async move {
                agent
                    .as_service_account(&pod, &gsa, IamCall::IdToken(&audience))
                    .await
            }
        };
        match self.id_tokens.get(&key, &pod.uid, fetch).await {
            Ok((minted, source)) => {
                self.metrics.cache(source);
                Reply::text(200, minted.token)
            }
            Err(e) => {
                self.report(pod, &e);
                upstream_error("Failed to generate identity token", e)
            }
        }
    }
}
