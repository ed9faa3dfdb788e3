//! One node's agent, from its settings to its last connection: the pods it answers for (a pods
//! file, or the Kubernetes API), their KSA tokens, the node identity of host-network callers,
//! and departed pods' tokens forgotten.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::kubernetes::{KubeResolver, PodEvents, TokenRequests};
use crate::pods::{Pod, Resolver, StaticResolver, WithNodeIdentity};
use crate::upstream::{KsaIssuer, KsaTokens};
use crate::{Config, Denials, MetadataServer, StartError};

/// Where the agent learns its node's pods, and their KSA tokens.
pub enum Pods {
    /// A pods file, read again when it changes; KSA tokens signed with `issuer`.
    File {
        path: PathBuf,
        issuer: Box<KsaIssuer>,
    },
    /// The node's pods from the Kubernetes API; KSA tokens from TokenRequest. The taint, if
    /// any, is removed from the node once its pods are known.
    Kubernetes {
        server: wid_kube::ApiServer,
        /// The issuer of the cluster's service-account tokens.
        issuer: String,
        node_name: String,
        ready_taint: Option<String>,
    },
}

/// Host-network callers: the node's addresses, and the identity of its processes of no pod
/// (answered as this pod; refused without one).
pub struct NodeIdentity {
    pub addresses: Vec<IpAddr>,
    pub pod: Option<Arc<Pod>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Pods(#[from] crate::pods::PodsError),
    #[error("serving the metadata port: {0}")]
    Serve(#[from] std::io::Error),
}

/// Runs the agent of a node until `shutdown` resolves.
pub async fn run(
    config: Config,
    pods: Pods,
    node: Option<NodeIdentity>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let node_uid = node
        .as_ref()
        .and_then(|n| n.pod.as_ref())
        .map(|pod| pod.uid.clone());
    let with_node = |pods: Arc<dyn Resolver>| -> Arc<dyn Resolver> {
        match &node {
            Some(node) => Arc::new(WithNodeIdentity {
                pods,
                addresses: node.addresses.clone(),
                node: node.pod.clone(),
            }),
            None => pods,
        }
    };
    let server = match pods {
        Pods::File { path, issuer } => {
            let pods = StaticResolver::open(&path)?;
            let ksa = KsaTokens::Issuer(issuer);
            let server = MetadataServer::start(config, with_node(pods.clone()), ksa, None).await?;
            tokio::spawn(pods.watch(departed_pods(&server, node_uid)));
            server
        }
        Pods::Kubernetes {
            server,
            issuer,
            node_name,
            ready_taint,
        } => {
            let client = server.client().clone();
            tracing::info!(%issuer, node = %node_name, "watching this node's pods");
            let resolver = KubeResolver::new();
            let ksa = KsaTokens::TokenRequest(TokenRequests::new(client.clone(), issuer));
            let events: Arc<dyn Denials> =
                Arc::new(PodEvents::new(client.clone(), node_name.clone()));
            let server =
                MetadataServer::start(config, with_node(resolver.clone()), ksa, Some(events))
                    .await?;
            let forget = departed_pods(&server, node_uid);
            tokio::spawn(resolver.watch_pods(client, node_name, ready_taint, forget));
            server
        }
    };
    server.serve(shutdown).await?;
    Ok(())
}

/// Tells the agent, after each change of its pods, which are left (the node identity stays), so
/// that departed pods' tokens are dropped.
fn departed_pods(
    server: &MetadataServer,
    node_uid: Option<String>,
) -> impl Fn(&[String]) + Send + Sync + 'static {
    let forget = server.pods_changed();
    move |uids| {
        let mut live = uids.to_vec();
        live.extend(node_uid.clone());
        forget(&live)
    }
}
