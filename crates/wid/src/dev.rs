//! `wid dev`: the token service and the metadata server on loopback, bootstrapped through the
//! admin API as any client would (a project, a service account, a cluster whose issuer is the
//! agent's, a binding), and the lines that point Google's clients, gcloud and `wid iam` at them.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use wid_agent::MetadataServer;
use wid_agent::pods::{Caller, FixedResolver, GSA_ANNOTATION, Pod, Resolver, StaticResolver};
use wid_agent::upstream::{KsaIssuer, KsaTokens};
use wid_api::cluster::Cluster;
use wid_api::iam::ServiceAccount;
use wid_api::project::Project;
use wid_cli::admin::{Admin, add_binding};
use wid_cli::client::{CallError, Client};

use crate::node::{
    DEV_PROJECT, agent_config, dev_issuer_key, dev_issuer_uri, dev_node, issuer_key,
};
use crate::{LogArgs, report};

pub const LONG_ABOUT: &str = "\
The token service and the metadata server in one process on loopback, bootstrapped for a laptop \
or CI: the project wid-dev, the service account dev-runner@wid-dev.iam.gserviceaccount.com, a \
cluster `dev` whose KSA tokens the agent signs, and the binding of its KSA default/default to \
that account. Callers from 127.0.0.1 are the pod default/wid-dev of that KSA unless --pods \
says otherwise.

It prints, on standard output, the lines to paste in any shell of this machine (Google's \
clients, gcloud with a configuration of its own, `wid iam`), then stays in the foreground, \
logging to standard error, until Ctrl-C (SIGINT) or SIGTERM. A second start with the same data \
directory finds everything in place; delete the directory to start afresh.";

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the metadata server listens (port 0: a free port, printed).
    #[arg(long, default_value = "127.0.0.1:8988")]
    pub metadata_addr: SocketAddr,
    /// Where the token service listens (port 0: a free port, printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub iam_addr: SocketAddr,
    /// wid dev's state, made with mode 0700: the database, the admin token, the agent's issuer
    /// key, and a gcloud configuration of its own; delete it to start afresh [default:
    /// $XDG_DATA_HOME/wid/dev or ~/.local/share/wid/dev].
    #[arg(long, env = "WID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The pods of the node as a JSON file, reloaded when it changes, instead of the one
    /// loopback pod default/default.
    #[arg(long)]
    pub pods: Option<PathBuf>,
    /// The dev project.
    #[arg(long, default_value = DEV_PROJECT)]
    pub project: String,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The account the loopback pod's KSA is bound to.
const DEV_ACCOUNT: &str = "dev-runner";
const WORKLOAD_IDENTITY_USER: &str = "roles/iam.workloadIdentityUser";
/// The dev cluster, as registered.
const DEV_CLUSTER: &str = "dev";
const DEV_LOCATION: &str = "local";
/// The address every client on this machine calls from.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub async fn run(args: DevArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    crate::node::raise_open_files();
    // The metadata address is bound once the bootstrap is done; a taken one is told before
    // anything is made.
    if args.metadata_addr.port() != 0 {
        std::net::TcpListener::bind(args.metadata_addr)
            .map(drop)
            .with_context(|| format!("cannot listen on {}", args.metadata_addr))
            .map_err(|e| in_use(e, &data_dir, "--metadata-addr"))?;
    }
    let service = wid_token_service::TokenService::start(wid_token_service::Config {
        addr: args.iam_addr,
        data_dir: data_dir.clone(),
        jwks_refresh_interval: Duration::from_secs(3600),
        discovery_timeout: Duration::from_secs(10),
        issuer: None,
        audit_retention: wid_token_service::DEFAULT_AUDIT_RETENTION,
        admin_addr: None,
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
    let client = Client::new(&base, Some(&token_file))?;
    let issuer = KsaIssuer::new(
        issuer_key(&dev_issuer_key(&data_dir))?,
        dev_issuer_uri(&args.project),
    );
    let dev = bootstrap(&Admin::new(&client), &args.project, &issuer)
        .await
        .context("bootstrapping the dev project")?;

    let (resolver, watched) = resolver(args.pods.as_deref(), &dev.email)?;
    let config = agent_config(
        args.metadata_addr,
        &base,
        &base,
        &dev_node(&args.project, &dev.number)?,
        &args.project,
        Some(&dev.number),
    );
    let server = MetadataServer::start(
        config,
        resolver.clone(),
        KsaTokens::Issuer(Box::new(issuer)),
        None,
    )
    .await
    .map_err(|e| report::if_in_use(e.into(), "--metadata-addr"))?;
    if let Some(pods) = watched {
        tokio::spawn(pods.watch(server.pod_forgetter()));
    }
    let gcloud = gcloud_config(&data_dir)?;
    let lines = Banner {
        iam: &base,
        metadata: server.local_addr()?,
        project: &args.project,
        data_dir: &data_dir,
        gcloud: &gcloud,
        token_file: &token_file,
        loopback: loopback_caller(resolver.as_ref(), args.pods.as_deref(), &dev),
        // The loopback pod is the bound KSA itself unless a pods file names others.
        bound: (args.pods.is_some() && dev.bound).then_some(dev.email.as_str()),
        unset: overriding_variables(|name| std::env::var_os(name).is_some()),
    };
    wid_cli::output::emit(&lines.render());
    let md_task = tokio::spawn(server.serve(stopped(stop_rx)));
    wid_runtime::serve::shutdown_signal().await;
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
        return error.context(report::Hint(format!(
            "wid dev (or wid iam serve) already runs with the data directory {}: paste the lines it printed, or stop it first",
            data_dir.display()
        )));
    }
    report::if_in_use(error, flag)
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

/// What the bootstrap made or found.
struct Bootstrapped {
    number: String,
    /// The account the loopback KSA default/default is annotated with.
    email: String,
    /// That KSA as a member.
    member: String,
    /// Whether the member is bound to the account (it is unless a user removed it).
    bound: bool,
}

/// Makes, idempotently, the dev project, its account, and the cluster whose issuer signs the
/// agent's KSA tokens; binds default/default to the account when it makes the account (later,
/// the binding is the user's to remove, and stays removed). It reads before it writes, so that
/// neither a first start nor a restart asks for anything that is not there.
async fn bootstrap(
    admin: &Admin<'_>,
    project: &str,
    issuer: &KsaIssuer,
) -> Result<Bootstrapped, CallError> {
    let number = match admin
        .projects()
        .await?
        .into_iter()
        .find(|p| p.project_id == project)
    {
        Some(found) => found.project_number,
        None => {
            let new = Project {
                project_id: project.to_owned(),
                ..Project::default()
            };
            admin.create_project(&new).await?.project_number
        }
    };
    let email = format!("{DEV_ACCOUNT}@{project}.iam.gserviceaccount.com");
    let made = !admin
        .service_accounts(project)
        .await?
        .iter()
        .any(|a| a.email == email);
    if made {
        let account = ServiceAccount {
            display_name: "wid dev workloads".into(),
            ..ServiceAccount::default()
        };
        admin
            .create_service_account(project, DEV_ACCOUNT, &account)
            .await?;
    }
    register_cluster(admin, project, issuer).await?;
    let member = format!("serviceAccount:{project}.svc.id.goog[default/default]");
    let mut policy = admin.iam_policy(&email).await?;
    let bound = if made {
        if add_binding(&mut policy, &member, WORKLOAD_IDENTITY_USER, None) {
            admin.set_iam_policy(&email, &policy).await?;
        }
        true
    } else {
        policy.bindings.iter().any(|b| {
            b.role == WORKLOAD_IDENTITY_USER && b.condition.is_none() && b.members.contains(&member)
        })
    };
    Ok(Bootstrapped {
        number,
        email,
        member,
        bound,
    })
}

/// Registers the dev cluster with the agent's issuer and keys, unless it is registered so
/// already; a cluster of another key (a data directory whose key was replaced) is registered
/// again.
async fn register_cluster(
    admin: &Admin<'_>,
    project: &str,
    issuer: &KsaIssuer,
) -> Result<(), CallError> {
    let wanted = Cluster {
        cluster_name: DEV_CLUSTER.into(),
        issuer_uri: issuer.issuer.clone(),
        jwks_json: issuer.jwks_json(),
        ..Cluster::default()
    };
    let registered = admin
        .clusters(project, DEV_LOCATION)
        .await?
        .into_iter()
        .find(|c| c.cluster_name == DEV_CLUSTER);
    if let Some(cluster) = registered {
        if same_keys(&cluster, &wanted) {
            return Ok(());
        }
        admin
            .delete_cluster(project, DEV_LOCATION, DEV_CLUSTER)
            .await?;
    }
    admin
        .register_cluster(project, DEV_LOCATION, &wanted)
        .await?;
    Ok(())
}

/// Whether a registered cluster has the issuer, keys and sharing that `wanted` asks for (the
/// JWKS compared as JSON, not as text).
fn same_keys(registered: &Cluster, wanted: &Cluster) -> bool {
    let keys = |c: &Cluster| serde_json::from_str::<serde_json::Value>(&c.jwks_json).ok();
    registered.issuer_uri == wanted.issuer_uri
        && registered.isolated == wanted.isolated
        && !registered.discover
        && keys(registered).is_some()
        && keys(registered) == keys(wanted)
}

/// The pods: the file's, or the one loopback pod of KSA default/default annotated with `email`.
#[allow(clippy::type_complexity)]
fn resolver(
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

/// A gcloud configuration directory of wid dev's own, for `CLOUDSDK_CONFIG`: the user's own
/// holds state that wins over any metadata server (an active account of theirs, `core/account`,
/// a cached "not on GCE"), and stays as it is.
fn gcloud_config(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("gcloud");
    wid_runtime::private_files::ensure_private_dir(&dir)?;
    // gcloud keeps for ten minutes whether it found a metadata server (the file `gce`, "True"
    // or "False"); a "False" from a run while wid dev was down would outlive this start. Without
    // the file, gcloud asks the metadata server again.
    match std::fs::remove_file(dir.join("gce")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("removing gcloud's cache {}/gce", dir.display()));
        }
    }
    Ok(dir)
}

/// Variables of the user's shell that would make gcloud or google-auth use other credentials
/// than the metadata server's, or none: an account, a token or key file, impersonation, or the
/// metadata check turned off.
const OVERRIDING: &[&str] = &[
    "GOOGLE_APPLICATION_CREDENTIALS",
    "NO_GCE_CHECK",
    "CLOUDSDK_CORE_ACCOUNT",
    "CLOUDSDK_CORE_PROJECT",
    "CLOUDSDK_CORE_CHECK_GCE_METADATA",
    "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT",
    "CLOUDSDK_AUTH_DISABLE_CREDENTIALS",
    "CLOUDSDK_AUTH_AUTHORIZATION_TOKEN_FILE",
];

/// Those of [`OVERRIDING`] that are set.
fn overriding_variables(is_set: impl Fn(&str) -> bool) -> Vec<&'static str> {
    OVERRIDING.iter().copied().filter(|v| is_set(v)).collect()
}

/// Who the callers from 127.0.0.1 are, in words.
fn loopback_caller(resolver: &dyn Resolver, pods: Option<&Path>, dev: &Bootstrapped) -> String {
    let from = match pods {
        Some(path) => format!(" of {}", path.display()),
        None => String::new(),
    };
    match resolver.resolve(LOOPBACK) {
        Caller::Pod(pod) => format!(
            "Callers from 127.0.0.1 are the pod {}/{}{from}, KSA {}/{}, {}.",
            pod.namespace,
            pod.name,
            pod.namespace,
            pod.service_account_name,
            account_of(&pod, dev)
        ),
        Caller::Unknown => format!(
            "No pod{from} has the address 127.0.0.1: clients on this machine are refused until one has (the file is read again when it changes)."
        ),
        Caller::Ambiguous(pods) => format!(
            "Several pods{from} have the address 127.0.0.1 ({}): clients on this machine are refused.",
            pods.join(", ")
        ),
    }
}

/// The account a pod's tokens are for, and whether wid dev knows it bound.
fn account_of(pod: &Pod, dev: &Bootstrapped) -> String {
    let dev_ksa = pod.namespace == "default" && pod.service_account_name == "default";
    match pod.gsa() {
        Some(gsa) if gsa == dev.email && dev_ksa && dev.bound => format!("bound to {gsa}"),
        Some(gsa) if gsa == dev.email && dev_ksa => format!(
            "annotated with {gsa} but no longer bound to it: tokens are refused until `wid iam service-accounts add-iam-policy-binding {gsa} --role {WORKLOAD_IDENTITY_USER} --member '{}'`",
            dev.member
        ),
        Some(gsa) => format!(
            "annotated with {gsa} (bind it with `wid iam service-accounts add-iam-policy-binding`)"
        ),
        None => "not annotated: it gets the federated token itself".to_owned(),
    }
}

/// What `wid dev` prints on standard output once it answers: comments, and shell lines that
/// work in any directory of any shell of this machine.
struct Banner<'a> {
    iam: &'a str,
    metadata: SocketAddr,
    project: &'a str,
    data_dir: &'a Path,
    gcloud: &'a Path,
    token_file: &'a Path,
    loopback: String,
    /// The account wid dev binds default/default to, when that is worth saying.
    bound: Option<&'a str>,
    unset: Vec<&'static str>,
}

impl Banner<'_> {
    fn render(&self) -> String {
        let md = self.metadata;
        let mut out = format!(
            "# wid dev: the token service is at {}, the metadata server at http://{md}; its state is in {}.\n",
            self.iam,
            self.data_dir.display()
        );
        out += &format!("# {}\n", self.loopback);
        if let Some(bound) = self.bound {
            out += &format!(
                "# KSA default/default is bound to {bound}; `wid iam` changes bindings live.\n"
            );
        }
        out += "# For Google's clients and gcloud (a gcloud configuration of wid dev's own: yours is left as it is):\n";
        if !self.unset.is_empty() {
            out += &format!("unset {}\n", self.unset.join(" "));
        }
        out += &format!(
            "export GCE_METADATA_HOST={md} GCE_METADATA_IP={md} GCE_METADATA_ROOT={md} GOOGLE_CLOUD_PROJECT={} CLOUDSDK_CONFIG={}\n",
            sh_quote(self.project),
            sh_quote(&self.gcloud.to_string_lossy())
        );
        out += "# For `wid iam ...`:\n";
        out += &format!(
            "export WID_ENDPOINT={} WID_TOKEN_FILE={}\n",
            self.iam,
            sh_quote(&self.token_file.to_string_lossy())
        );
        out += "# wid dev runs until Ctrl-C; logs go to standard error (--log warn quiets them).\n";
        out
    }
}

/// `text` as one shell word: as it is when it has nothing the shell reads specially, else in
/// single quotes.
fn sh_quote(text: &str) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&b));
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banner(unset: Vec<&'static str>, data_dir: &Path) -> String {
        let gcloud = data_dir.join("gcloud");
        let token = data_dir.join("admin-token");
        Banner {
            iam: "http://127.0.0.1:8080",
            metadata: "127.0.0.1:8988".parse().expect("address"),
            project: "wid-dev",
            data_dir,
            gcloud: &gcloud,
            token_file: &token,
            loopback: "Callers from 127.0.0.1 are the pod default/wid-dev.".into(),
            bound: Some("dev-runner@wid-dev.iam.gserviceaccount.com"),
            unset,
        }
        .render()
    }

    #[test]
    fn the_banner_is_comments_and_shell_lines() {
        let out = banner(vec![], Path::new("/home/a/wid"));
        for line in out.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("export "),
                "{line}"
            );
        }
        assert!(out.contains(
            "\nexport GCE_METADATA_HOST=127.0.0.1:8988 GCE_METADATA_IP=127.0.0.1:8988 GCE_METADATA_ROOT=127.0.0.1:8988 GOOGLE_CLOUD_PROJECT=wid-dev CLOUDSDK_CONFIG=/home/a/wid/gcloud\n"
        ));
        assert!(out.contains(
            "\nexport WID_ENDPOINT=http://127.0.0.1:8080 WID_TOKEN_FILE=/home/a/wid/admin-token\n"
        ));
    }

    #[test]
    fn overriding_variables_are_unset_before_the_exports() {
        let set = overriding_variables(|v| {
            matches!(
                v,
                "CLOUDSDK_CORE_ACCOUNT" | "GOOGLE_APPLICATION_CREDENTIALS"
            )
        });
        let out = banner(set, Path::new("/w"));
        let unset = out.find("unset GOOGLE_APPLICATION_CREDENTIALS CLOUDSDK_CORE_ACCOUNT\n");
        let export = out.find("export GCE_METADATA_HOST=");
        assert!(unset.is_some() && unset < export, "{out}");
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        let out = banner(vec![], Path::new("/home/a b/it's"));
        assert!(
            out.contains(r"CLOUDSDK_CONFIG='/home/a b/it'\''s/gcloud'"),
            "{out}"
        );
        assert_eq!(sh_quote("/plain/path-1.2"), "/plain/path-1.2");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn the_loopback_caller_is_told_as_it_is() {
        let email = "dev-runner@wid-dev.iam.gserviceaccount.com";
        let mut dev = Bootstrapped {
            number: "1".into(),
            email: email.into(),
            member: "serviceAccount:wid-dev.svc.id.goog[default/default]".into(),
            bound: true,
        };
        let (fixed, _) = resolver(None, email).expect("resolver");
        let told = loopback_caller(fixed.as_ref(), None, &dev);
        assert!(
            told.contains("pod default/wid-dev, KSA default/default, bound to dev-runner"),
            "{told}"
        );
        dev.bound = false;
        let told = loopback_caller(fixed.as_ref(), None, &dev);
        assert!(
            told.contains("no longer bound") && told.contains("add-iam-policy-binding"),
            "{told}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pods.json");
        std::fs::write(
            &file,
            r#"{"pods": [{"ip": "10.0.0.5", "namespace": "a", "name": "p"}]}"#,
        )
        .expect("write");
        let (pods, _) = resolver(Some(&file), email).expect("resolver");
        let told = loopback_caller(pods.as_ref(), Some(&file), &dev);
        assert!(
            told.starts_with("No pod of ") && told.contains("127.0.0.1"),
            "{told}"
        );
        std::fs::write(
            &file,
            r#"{"pods": [{"ip": "127.0.0.1", "namespace": "a", "name": "p", "serviceAccountName": "k"}]}"#,
        )
        .expect("write");
        let (pods, _) = resolver(Some(&file), email).expect("resolver");
        let told = loopback_caller(pods.as_ref(), Some(&file), &dev);
        assert!(
            told.contains("the pod a/p of ") && told.contains("KSA a/k, not annotated"),
            "{told}"
        );
    }

    #[test]
    fn a_cluster_is_registered_again_only_for_other_keys() {
        let wanted = Cluster {
            cluster_name: "dev".into(),
            issuer_uri: "https://kubernetes.wid-dev.wid.local".into(),
            jwks_json: r#"{"keys": [{"kid": "a"}]}"#.into(),
            ..Cluster::default()
        };
        let spaced = Cluster {
            jwks_json: r#"{ "keys":[ {"kid":"a"} ] }"#.into(),
            uid: "u".into(),
            ..wanted.clone()
        };
        assert!(same_keys(&spaced, &wanted));
        let rotated = Cluster {
            jwks_json: r#"{"keys": [{"kid": "b"}]}"#.into(),
            ..wanted.clone()
        };
        assert!(!same_keys(&rotated, &wanted));
        let isolated = Cluster {
            isolated: true,
            ..wanted.clone()
        };
        assert!(!same_keys(&isolated, &wanted));
    }
}
