//! `wid iam clusters ...`: clusters registered as providers of their project's GKE pool.

use anyhow::{Context, bail};
use wid_api::cluster::Cluster;

use super::{CLUSTER_COLUMNS, Cli, items};
use crate::admin::clusters_path;
use crate::args::{ClusterKeys, ClustersCommand};

/// The issuer and uploaded keys of a cluster to register: `--jwk-json-path`'s file; the API
/// server's issuer and keys with `--kubeconfig`; with `--discover` and no `--issuer-uri`, the
/// issuer of the API server `kubectl` would use (the token service fetches the keys).
async fn cluster_keys(
    issuer_uri: Option<String>,
    keys: &ClusterKeys,
) -> anyhow::Result<(String, String)> {
    if keys.kubeconfig.is_none() && !(keys.discover && issuer_uri.is_none()) {
        let Some(issuer_uri) = issuer_uri else {
            bail!(
                "--issuer-uri is required with --jwk-json-path (--kubeconfig and --discover read it from the cluster's API server)"
            );
        };
        let jwks_json = match &keys.jwk_json_path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => String::new(),
        };
        return Ok((issuer_uri, jwks_json));
    }
    let server = wid_kube::ApiServer::find(keys.kubeconfig.as_deref())
        .await
        .context(
            "the cluster's issuer is read from its API server: set KUBECONFIG, give --issuer-uri, or use --kubeconfig FILE instead of --discover",
        )?;
    eprintln!(
        "Reading the cluster's issuer from the API server at {}.",
        server.url()
    );
    let (read_uri, jwks_json) = if keys.kubeconfig.is_some() {
        let issuer = server.issuer().await?;
        (issuer.uri, issuer.jwks_json)
    } else {
        (server.issuer_uri().await?, String::new())
    };
    if let Some(given) = issuer_uri.filter(|given| *given != read_uri) {
        bail!("the cluster's API server names its issuer {read_uri}, not {given}");
    }
    Ok((read_uri, jwks_json))
}

impl Cli {
    pub(super) async fn clusters(&self, command: ClustersCommand) -> anyhow::Result<()> {
        match command {
            ClustersCommand::Register {
                name,
                project,
                location,
                issuer_uri,
                keys,
                isolated,
            } => {
                let (issuer_uri, jwks_json) = cluster_keys(issuer_uri, &keys).await?;
                let cluster = Cluster {
                    cluster_name: name.clone(),
                    issuer_uri,
                    jwks_json,
                    discover: keys.discover,
                    isolated,
                    ..Cluster::default()
                };
                let cluster = self
                    .admin()
                    .register_cluster(project.id()?, &location, &cluster)
                    .await?;
                eprintln!("Registered cluster [{name}] in [{location}].");
                self.print_typed(&cluster);
            }
            ClustersCommand::List { project, location } => {
                let list = self.get(&clusters_path(project.id()?, &location)).await?;
                self.print_list(&items(&list, "clusters"), CLUSTER_COLUMNS);
            }
            ClustersCommand::Describe {
                name,
                project,
                location,
            } => {
                self.describe(&clusters_path(project.id()?, &location), &name)
                    .await?;
            }
            ClustersCommand::Delete {
                name,
                project,
                location,
            } => {
                self.admin()
                    .delete_cluster(project.id()?, &location, &name)
                    .await?;
                eprintln!("Deleted cluster [{name}] in [{location}].");
            }
        }
        Ok(())
    }
}
