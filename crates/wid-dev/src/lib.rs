//! `wid dev`: the token service and the metadata server in one process on loopback,
//! bootstrapped through the admin API as any client would ([`bootstrap`]: a project, a service
//! account, a cluster whose issuer is the agent's, a binding), and the lines that point Google's
//! clients, gcloud and `wid iam` at them ([`banner`]).

mod banner;
pub use banner::sh_quote;
mod bootstrap;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use wid_agent::MetadataServer;
use wid_agent::pods::{FixedResolver, GSA_ANNOTATION, Pod, Resolver, StaticResolver};
use wid_agent::upstream::{KsaIssuer, KsaTokens};
use wid_cli::admin::Admin;
use wid_cli::client::Client;

use crate::banner::{Banner, gcloud_config, loopback_caller, overriding_variables};
use crate::bootstrap::{DEV_CLUSTER, DEV_LOCATION, bootstrap};

/// The project `wid dev` makes, and an agent with a pods file serves by default.
pub const DEV_PROJECT: &str = "wid-dev";

/// The issuer of the KSA tokens of `wid dev`'s cluster (and of an agent with a pods file).
pub fn issuer_uri(project: &str) -> String {
    format!("https://kubernetes.{project}.wid.local")
}

/// The file of the cluster issuer key in `wid dev`'s data directory.
pub fn issuer_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("agent-issuer.pk8")
}

/// The address every client on this machine calls from.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What `wid dev` runs with.
pub struct Config {
    /// Where the metadata server listens (port 0: a free one, printed).
    pub metadata_addr: SocketAddr,
    /// Where the token service listens (port 0: a free one, printed).
    pub iam_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The node's pods from a file, instead of the one loopback pod.
    pub pods: Option<PathBuf>,
    pub project: String,
    /// The agent's settings as `wid metadata serve`'s flags default them; its address, project
    /// and token service are `wid dev`'s.
    pub agent: wid_agent::Config,
}

/// Runs `wid dev` until `shutdown` resolves: the token service, the bootstrap, the metadata
/// server, then the lines to paste on standard output.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let Config {
        metadata_addr,
        iam_addr,
        data_dir,
        pods,
        project,
        agent,
    } = config;
    // The metadata address is bound once the bootstrap is done; a taken one is told before
    // anything is made.
    if metadata_addr.port() != 0 {
        std::net::TcpListener::bind(metadata_addr)
            .map(drop)
            .with_context(|| format!("cannot listen on {}", metadata_addr))
            .map_err(|e| in_use(e, &data_dir, "--metadata-addr"))?;
    }
    let service = wid_token_service::TokenService::start(wid_token_service::Config {
        addr: iam_addr,
        data_dir: data_dir.clone(),
        jwks_refresh_interval: Duration::from_secs(3600),
        discovery_timeout: Duration::from_secs(10),
        issuer: None,
        audit_retention: wid_token_service::DEFAULT_AUDIT_RETENTION,
        admin_addr: None,
        tls: None,
        insecure_listen: false,
        database: None,
        admin_token_file: None,
    })
    .await
    .map_err(|e| in_use(e.into(), &data_dir, "--iam-addr"))?;
    // Absolute from here on: the printed lines are pasted in other shells, in other directories.
    let data_dir = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    let base = format!("http://{}", service.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let iam_task = tokio::spawn(service.serve(stopped(stop_rx.clone())));

    let token_file = data_dir.join(wid_token_service::ADMIN_TOKEN_FILE);
    let client = Client::new(&base, Some(&token_file), None)?;
    let issuer = KsaIssuer::open(&issuer_key_path(&data_dir), issuer_uri(&project))?;
    let dev = bootstrap(&Admin::new(&client), &project, &issuer)
        .await
        .context("bootstrapping the dev project")?;

    let (resolver, watched) = resolver(pods.as_deref(), &dev.email)?;
    let config = wid_agent::Config {
        addr: metadata_addr,
        project_id: project.clone(),
        project_number: Some(dev.number.clone()),
        cluster_name: DEV_CLUSTER.into(),
        cluster_location: DEV_LOCATION.into(),
        sts_url: base.clone(),
        iamcredentials_url: base.clone(),
        ..agent
    };
    let server = MetadataServer::start(
        config,
        resolver.clone(),
        KsaTokens::Issuer(Box::new(issuer)),
        None,
    )
    .await
    .map_err(|e| wid_cli::report::if_in_use(e.into(), "--metadata-addr"))?;
    if let Some(pods) = watched {
        tokio::spawn(pods.watch(server.pods_changed()));
    }
    let gcloud = gcloud_config(&data_dir)?;
    let lines = Banner {
        iam: &base,
        metadata: server.local_addr()?,
        project: &project,
        data_dir: &data_dir,
        gcloud: &gcloud,
        token_file: &token_file,
        loopback: loopback_caller(resolver.as_ref(), pods.as_deref(), &dev),
        // The loopback pod is the bound KSA itself unless a pods file names others.
        bound: (pods.is_some() && dev.bound).then_some(dev.email.as_str()),
        unset: overriding_variables(|name| std::env::var_os(name).is_some()),
    };
    wid_cli::output::emit(&lines.render());
    let md_task = tokio::spawn(server.serve(stopped(stop_rx)));
    shutdown.await;
    let _ = stop_tx.send(true);
    let (iam, md) = tokio::join!(iam_task, md_task);
    iam??;
    md??;
    tracing::info!("wid dev stopped");
    Ok(())
}

/// `error`, told as a `wid dev` already running with this data directory when one is (it holds
/// the directory's lock), else with the hint to move `flag` when its address is taken.
fn in_use(error: anyhow::Error, data_dir: &Path, flag: &str) -> anyhow::Error {
    if served_elsewhere(data_dir) {
        return error.context(wid_cli::report::Hint(format!(
            "wid dev (or wid iam serve) already runs with the data directory {}: paste the lines it printed, or stop it first",
            data_dir.display()
        )));
    }
    wid_cli::report::if_in_use(error, flag)
}

/// Whether another process holds the lock of the data directory.
fn served_elsewhere(data_dir: &Path) -> bool {
    let lock = data_dir.join(wid_token_service::LOCK_FILE);
    std::fs::File::open(lock)
        .is_ok_and(|file| matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The pods: the file's, or the one loopback pod of KSA default/default annotated with `email`.
#[allow(clippy::type_complexity)]
pub(crate) fn resolver(
    pods: Option<&Path>,
    email: &str,
) -> anyhow::Result<(Arc<dyn Resolver>, Option<Arc<StaticResolver>>)> {
    Ok(match pods {
        Some(path) => {
            let pods = StaticResolver::open(path)?;
            (pods.clone(), Some(pods))
        }
        None => {
            let pod = Pod {
                ip: LOOPBACK,
                namespace: "default".into(),
                name: "wid-dev".into(),
                uid: "00000000-0000-4000-8000-000000000001".into(),
                service_account_name: "default".into(),
                annotations: [(GSA_ANNOTATION.to_owned(), email.to_owned())]
                    .into_iter()
                    .collect(),
            };
            (Arc::new(FixedResolver { pod: Arc::new(pod) }), None)
        }
    })
}
