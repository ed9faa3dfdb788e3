//! `wid metadata serve`'s flags, resolved into the agent's settings (and `wid dev`'s node, as
//! those flags default it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, FromArgMatches};
use wid_agent::Config;
use wid_agent::federation::{Federation, ProviderName};
use wid_agent::node::{NodeIdentity, Pods};
use wid_agent::pods::Pod;
use wid_agent::upstream::KsaIssuer;

/// Where the agent is and what it reports about its node and cluster.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Project id of the cluster.
    #[arg(long, env = "WID_PROJECT")]
    pub project: Option<String>,
    /// Its numeric project number; default: learnt from STS (the principal of the first
    /// federated token, by introspection).
    #[arg(long, env = "WID_PROJECT_NUMBER")]
    pub project_number: Option<String>,
    /// The cluster's name as registered (`wid iam clusters register NAME`), reported to pods as
    /// instance/attributes/cluster-name.
    #[arg(long, env = "WID_CLUSTER_NAME", default_value = "dev")]
    pub cluster_name: String,
    /// The cluster's location as registered (--location), reported as cluster-location.
    #[arg(long, env = "WID_CLUSTER_LOCATION", default_value = "local")]
    pub cluster_location: String,
    /// The uid `wid iam clusters register` printed, reported as cluster-uid (empty if not given).
    #[arg(long, env = "WID_CLUSTER_UID", default_value = "")]
    pub cluster_uid: String,
    /// The node's zone (instance/zone).
    #[arg(long, env = "WID_ZONE", default_value = "local-a")]
    pub zone: String,
    /// The node's host name (instance/hostname); default the machine's.
    #[arg(long, env = "WID_HOSTNAME")]
    pub hostname: Option<String>,
    /// The node's numeric id (instance/id).
    #[arg(long, env = "WID_INSTANCE_ID", default_value = "1000000000000000001")]
    pub instance_id: String,
    /// Seconds each upstream call may take.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub upstream_timeout_seconds: u64,
    /// The admin listener: /healthz, /readyz and Prometheus /metrics.
    #[arg(long, env = "WID_METADATA_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = 16_384)]
    pub max_connections: usize,
    /// Requests of one pod in flight at once; more get a 429.
    #[arg(long, default_value_t = 1024)]
    pub max_requests_per_pod: usize,
    /// Time a client has to send a whole request head, and to take a reply.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub head_timeout_ms: u64,
    /// Long-polls (wait_for_change) of one pod held at once; more get a 429.
    #[arg(long, default_value_t = 64)]
    pub max_long_polls_per_pod: usize,
    /// Upstream calls per second, node-wide (bursts of ten times as many).
    #[arg(long, default_value_t = 100.0)]
    pub upstream_per_second: f64,
    /// Upstream calls per second of one pod, within the node's (bursts of ten times as many):
    /// one pod's excess never spends another's turn.
    #[arg(long, default_value_t = 10.0)]
    pub upstream_per_pod_per_second: f64,
    /// How long a request from an address no pod has yet is held for the pod to appear.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub pod_wait_ms: u64,
    /// Do not fetch a new pod's access token before it asks (by default, pods whose service
    /// account is annotated with an IAM service account get one as they appear, so that their
    /// first request is answered from the cache).
    #[arg(long, env = "WID_NO_TOKEN_PREFETCH")]
    pub no_token_prefetch: bool,
    /// Threads serving the metadata port, each with its own socket; default one per core.
    #[arg(long, env = "WID_METADATA_THREADS")]
    pub serve_threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct MetadataServeArgs {
    /// Address to listen on (where the node's 169.254.169.254:80 traffic is redirected).
    #[arg(long, env = "WID_METADATA_ADDR", default_value = "127.0.0.1:8988")]
    pub addr: SocketAddr,
    /// The pods of this node from a JSON file, reloaded when it changes, instead of from the
    /// Kubernetes API.
    #[arg(long, env = "WID_PODS", conflicts_with = "kubeconfig")]
    pub pods: Option<PathBuf>,
    /// The Kubernetes API server to watch; default KUBECONFIG's (or ~/.kube/config's), else the
    /// in-cluster service account. (Not read from KUBECONFIG by the flag itself: an exported
    /// KUBECONFIG must not stop a pods-file agent from starting.)
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: only its pods are watched (the downward API's spec.nodeName).
    #[arg(long, env = "WID_NODE_NAME")]
    pub node_name: Option<String>,
    /// The node taint the agent removes once it answers for the node's pods (empty: none).
    #[arg(
        long,
        env = "WID_READY_TAINT",
        default_value = "wid.dev/agent-not-ready"
    )]
    pub ready_taint: Option<String>,
    /// The STS base URL [default: Google's, https://sts.googleapis.com, with
    /// --workload-identity-provider; else a local token service's, http://127.0.0.1:8080].
    #[arg(long, env = "WID_STS_URL", requires = "iamcredentials_url")]
    pub sts_url: Option<String>,
    /// The IAM Credentials base URL [default: Google's,
    /// https://iamcredentials.googleapis.com, with --workload-identity-provider; else
    /// http://127.0.0.1:8080].
    /// (Both URLs or neither: a federated token of one STS is for its own IAM Credentials.)
    #[arg(long, env = "WID_IAMCREDENTIALS_URL", requires = "sts_url")]
    pub iamcredentials_url: Option<String>,
    /// Workload Identity Federation: the pods are members of this pool's OIDC provider,
    /// projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER (on
    /// Google Cloud, or a wid token service), rather than of GKE's pool PROJECT.svc.id.goog.
    /// KSAs are then principal://iam.googleapis.com/projects/NUMBER/locations/global/
    /// workloadIdentityPools/POOL/subject/system:serviceaccount:NS:KSA.
    #[arg(long, env = "WID_WORKLOAD_IDENTITY_PROVIDER", value_name = "NAME", value_parser = ProviderName::parse)]
    pub workload_identity_provider: Option<ProviderName>,
    /// With --workload-identity-provider: the audience of the KSA tokens, for a provider
    /// configured with allowed audiences [default: the provider's name,
    /// //iam.googleapis.com/projects/...].
    #[arg(
        long,
        env = "WID_KSA_TOKEN_AUDIENCE",
        requires = "workload_identity_provider"
    )]
    pub ksa_token_audience: Option<String>,
    /// CA certificates (PEM) trusted for STS and IAM Credentials besides the system's: a test
    /// server's, or a token service's behind an internal CA.
    #[arg(long, env = "WID_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// The node's own addresses: where host-network pods' requests come from. With
    /// --attest-callers, a request from them is a host-network pod's own (told by the pod of the
    /// process that holds its socket), or else the node identity's.
    #[arg(
        long = "node-address",
        env = "WID_NODE_ADDRESSES",
        value_delimiter = ','
    )]
    pub node_addresses: Vec<std::net::IpAddr>,
    /// The identity of host-network callers, as NAMESPACE/KSA; without it they are refused.
    #[arg(long, env = "WID_NODE_IDENTITY", requires = "node_addresses")]
    pub node_identity: Option<String>,
    /// The IAM service account the node identity's KSA is annotated with.
    #[arg(long, env = "WID_NODE_GCP_SERVICE_ACCOUNT", requires = "node_identity")]
    pub node_gcp_service_account: Option<String>,
    /// With --pods: the cluster issuer's private key the agent signs KSA tokens with (PKCS#8
    /// DER, mode 0600), made on first start; default `agent-issuer.pk8` in `wid dev`'s data
    /// directory (--data-dir), the key `wid dev` registers its cluster with. On Kubernetes, KSA
    /// tokens come from the TokenRequest API instead.
    #[arg(long, env = "WID_ISSUER_KEY", requires = "pods")]
    pub issuer_key: Option<PathBuf>,
    /// With --pods: the issuer URL of the KSA tokens the agent signs; default `wid dev`'s,
    /// `https://kubernetes.PROJECT.wid.local`.
    #[arg(long, env = "WID_ISSUER_URI", requires = "pods")]
    pub issuer_uri: Option<String>,
    /// With --pods and no --issuer-key: `wid dev`'s data directory, whose issuer key the agent
    /// uses, so that an agent alone answers for the cluster `wid dev` registered.
    #[arg(long, env = "WID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Writes the issuer's JWKS here, for `wid iam clusters register --jwk-json-path`.
    #[arg(long)]
    pub jwks_out: Option<PathBuf>,
    /// Confirm each connection from the kernel before answering it as a pod's: its far end must
    /// be a socket in the network namespace of that pod's processes (found by their cgroup), so
    /// a pod index that is behind can never hand one pod's identity to another. Needs the host's
    /// process table (`hostPID: true`, or --proc-root) and root.
    #[arg(long, env = "WID_ATTEST_CALLERS", conflicts_with = "pods")]
    pub attest_callers: bool,
    /// The host's /proc, for --attest-callers.
    #[arg(long, env = "WID_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The node cloud's own metadata service (for example http://169.254.169.254, reached from
    /// the node's network): requests that are not for Google's metadata API (AWS's /latest/...,
    /// Azure's /metadata/...) are relayed to it unchanged. Never Google's paths, never a request
    /// with X-Forwarded-For or a body. Without it such requests are refused.
    #[arg(long, env = "WID_PASSTHROUGH", value_name = "URL", value_parser = wid_agent::passthrough::base_url)]
    pub passthrough: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub log: crate::LogArgs,
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Where the agent buys tokens and which pool its pods are members of.
pub(crate) struct UpstreamSettings {
    pub sts_url: String,
    pub iamcredentials_url: String,
    pub ca_file: Option<PathBuf>,
    pub federation: Federation,
}

pub(crate) fn agent_config(
    addr: SocketAddr,
    upstream: UpstreamSettings,
    node: &NodeArgs,
    project: &str,
    number: Option<&str>,
) -> Config {
    Config {
        addr,
        project_id: project.to_owned(),
        project_number: number.map(str::to_owned),
        federation: upstream.federation,
        cluster_name: node.cluster_name.clone(),
        cluster_location: node.cluster_location.clone(),
        cluster_uid: node.cluster_uid.clone(),
        zone: node.zone.clone(),
        hostname: node.hostname.clone().unwrap_or_else(hostname),
        instance_id: node.instance_id.clone(),
        sts_url: upstream.sts_url,
        iamcredentials_url: upstream.iamcredentials_url,
        ca_file: upstream.ca_file,
        upstream_timeout: Duration::from_secs(node.upstream_timeout_seconds),
        admin_addr: node.admin_addr,
        max_connections: node.max_connections.max(1),
        header_read_timeout: Duration::from_millis(node.head_timeout_ms),
        max_requests_per_pod: node.max_requests_per_pod,
        max_long_polls_per_pod: node.max_long_polls_per_pod,
        upstream_per_second: node.upstream_per_second,
        upstream_per_pod_per_second: node.upstream_per_pod_per_second,
        pod_wait: Duration::from_millis(node.pod_wait_ms),
        attest_callers: None,
        passthrough: None,
        prefetch_tokens: !node.no_token_prefetch,
        serve_threads: node.serve_threads.filter(|n| *n > 0).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
    }
}

/// Google's STS and IAM Credentials.
const GOOGLE_STS: &str = "https://sts.googleapis.com";
const GOOGLE_IAMCREDENTIALS: &str = "https://iamcredentials.googleapis.com";
/// A token service on this machine, `wid iam serve`'s default address.
const LOCAL_TOKEN_SERVICE: &str = "http://127.0.0.1:8080";

/// The upstream of `args`: a provider's pool on Google's endpoints unless told otherwise, or
/// GKE's pool of `project` on a local token service unless told otherwise.
fn upstream_settings(args: &MetadataServeArgs, project: &str) -> UpstreamSettings {
    let (federation, sts, iam) = match &args.workload_identity_provider {
        Some(name) => (
            Federation::provider(name.clone(), args.ksa_token_audience.clone()),
            GOOGLE_STS,
            GOOGLE_IAMCREDENTIALS,
        ),
        None => (
            Federation::Gke {
                project_id: project.to_owned(),
            },
            LOCAL_TOKEN_SERVICE,
            LOCAL_TOKEN_SERVICE,
        ),
    };
    UpstreamSettings {
        sts_url: args.sts_url.clone().unwrap_or_else(|| sts.to_owned()),
        iamcredentials_url: args
            .iamcredentials_url
            .clone()
            .unwrap_or_else(|| iam.to_owned()),
        ca_file: args.ca_file.clone(),
        federation,
    }
}

/// The project's number: --project-number's, or the provider's (both, only if they agree).
fn project_number(args: &MetadataServeArgs) -> anyhow::Result<Option<String>> {
    let given = args.node.project_number.clone();
    let Some(name) = &args.workload_identity_provider else {
        return Ok(given);
    };
    match given {
        Some(number) if number != name.project_number => bail!(
            "--project-number {number} is not the number in --workload-identity-provider ({}); give one or the other",
            name.project_number
        ),
        _ => Ok(Some(name.project_number.clone())),
    }
}

/// Raises the open-files limit for thousands of connections, and says what it got.
pub(crate) fn raise_open_files() {
    match wid_runtime::serve::raise_open_files_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

/// `wid metadata serve`: its flags resolved into the agent's settings, then the agent run.
/// `dev_data_dir`: `wid dev`'s data directory when --data-dir is not given.
pub async fn metadata_serve(args: MetadataServeArgs, dev_data_dir: PathBuf) -> anyhow::Result<()> {
    raise_open_files();
    // With a pods file the agent stands in for `wid dev`'s node by default; on Kubernetes the
    // project is the cluster's, and there is no sensible default.
    let project = match (&args.node.project, &args.pods) {
        (Some(project), _) => project.clone(),
        (None, Some(_)) => wid_dev::DEV_PROJECT.to_owned(),
        (None, None) => bail!("--project (or WID_PROJECT) is required"),
    };
    let node = node_identity(&args)?;
    let upstream = upstream_settings(&args, &project);
    tracing::info!(sts = %upstream.sts_url, iamcredentials = %upstream.iamcredentials_url, pool = %upstream.federation.pool(), "upstream");
    // Plain HTTP is for loopback; elsewhere it is allowed (a token service on a private
    // network) but said, since KSA tokens and federated tokens then cross it in clear.
    for url in [&upstream.sts_url, &upstream.iamcredentials_url] {
        if url.starts_with("http://") && wid_iam::names::may_fetch(url, false).is_err() {
            tracing::warn!(%url, "tokens cross the network in clear to this upstream: give it an https:// URL");
        }
    }
    let config = Config {
        attest_callers: args.attest_callers.then(|| args.proc_root.clone()),
        passthrough: args.passthrough.clone(),
        // Without a number, the agent learns it from STS's introspection of the first federated
        // token.
        ..agent_config(
            args.addr,
            upstream,
            &args.node,
            &project,
            project_number(&args)?.as_deref(),
        )
    };
    let pods = pods(&args, &project, dev_data_dir).await?;
    wid_agent::node::run(config, pods, node, wid_runtime::serve::shutdown_signal())
        .await
        .map_err(|e| wid_cli::report::if_in_use(e.into(), "--addr"))
}

/// The identity of host-network callers (`--node-identity NAMESPACE/KSA`), if any.
fn node_identity(args: &MetadataServeArgs) -> anyhow::Result<Option<NodeIdentity>> {
    if args.node_addresses.is_empty() {
        return Ok(None);
    }
    let Some(identity) = &args.node_identity else {
        // The node's addresses alone: with --attest-callers a host-network pod is told by its
        // socket's owner; a process of no pod is refused.
        return Ok(Some(NodeIdentity {
            addresses: args.node_addresses.clone(),
            pod: None,
        }));
    };
    let Some((namespace, ksa)) = identity
        .split_once('/')
        .filter(|(ns, ksa)| !ns.is_empty() && !ksa.is_empty() && !ksa.contains('/'))
    else {
        bail!("--node-identity must be NAMESPACE/KSA, not {identity:?}");
    };
    let pod = Pod::node_identity(
        args.node_addresses[0],
        namespace,
        ksa,
        args.node_gcp_service_account.as_deref(),
    );
    Ok(Some(NodeIdentity {
        addresses: args.node_addresses.clone(),
        pod: Some(Arc::new(pod)),
    }))
}

/// Where the pods come from: the pods file and the issuer key that signs their KSA tokens, or
/// the API server of the cluster (and its issuer).
async fn pods(
    args: &MetadataServeArgs,
    project: &str,
    dev_data_dir: PathBuf,
) -> anyhow::Result<Pods> {
    if let Some(path) = &args.pods {
        let key = args.issuer_key.clone().unwrap_or_else(|| {
            wid_dev::issuer_key_path(args.data_dir.as_deref().unwrap_or(&dev_data_dir))
        });
        let issuer_uri = args
            .issuer_uri
            .clone()
            .unwrap_or_else(|| wid_dev::issuer_uri(project));
        tracing::info!(issuer = %issuer_uri, key = %key.display(), project = %project, "signing the pods' KSA tokens (the token service must know this issuer: `wid dev` with this data directory registers it, or `wid iam clusters register --jwk-json-path` with --jwks-out's file)");
        let issuer = KsaIssuer::open(&key, issuer_uri)?;
        if let Some(out) = &args.jwks_out {
            std::fs::write(out, issuer.jwks_json())
                .with_context(|| format!("writing {}", out.display()))?;
        }
        return Ok(Pods::File {
            path: path.clone(),
            issuer: Box::new(issuer),
        });
    }
    let node_name = args
        .node_name
        .clone()
        .context("--node-name (or WID_NODE_NAME, from the downward API) is required on Kubernetes; or give --pods FILE")?;
    let server = wid_kube::ApiServer::find(args.kubeconfig.as_deref()).await?;
    let issuer = server.issuer_uri().await?;
    Ok(Pods::Kubernetes {
        server,
        issuer,
        node_name,
        ready_taint: args.ready_taint.clone().filter(|t| !t.is_empty()),
    })
}

/// `wid dev`'s node: the settings of `wid metadata serve` as its flags default them (and their
/// environment variables set them), with the dev project and cluster.
pub(crate) fn dev_node(project: &str) -> anyhow::Result<NodeArgs> {
    let defaults = NodeArgs::augment_args(clap::Command::new("wid-dev"))
        .try_get_matches_from(["wid-dev"])
        .and_then(|matches| NodeArgs::from_arg_matches(&matches))
        .context("the node settings' defaults")?;
    Ok(NodeArgs {
        project: Some(project.to_owned()),
        cluster_name: "dev".into(),
        cluster_location: "local".into(),
        ..defaults
    })
}
