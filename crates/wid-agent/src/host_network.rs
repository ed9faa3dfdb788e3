//! Callers on the node's own address, with `--attest-callers`. Host-network pods share the
//! node's addresses with each other and with the node's own processes, so an address names none
//! of them: the process that holds the connection's socket does ([`attest::Attestor::owner_of`]).
//! A host-network pod's process gets its pod's identity; a process of no pod gets the node
//! identity, or is refused without one. Without attestation the node's addresses get the node
//! identity, whoever calls (`pods::WithNodeIdentity`).

use std::sync::Arc;

use wid_gce::Reply;

use crate::attest::{self, Owner};
use crate::pods::Pod;
use crate::{Agent, replies};

impl Agent {
    /// The pod whose process holds the connection from `ends`, made on the node's network: a
    /// host-network pod of the node (waited for, bounded by the pod wait, while the index
    /// learns of it or of its service account), or for a process of no pod the node identity.
    pub(crate) async fn on_the_host(&self, ends: attest::Ends) -> Result<Arc<Pod>, Reply> {
        let ip = wid_runtime::connections::canonical_ip(ends.pod.ip());
        let why = match self.owner_of(ends).await? {
            Owner::Pod(uid) => match self.host_network_pod(&uid).await {
                Some(pod) => return Ok(pod),
                None => format!(
                    "the connection from {} is held by a process of pod {uid}, which is no host-network pod of this node",
                    ends.pod
                ),
            },
            Owner::Node => {
                return self
                    .resolver
                    .node_identity()
                    .ok_or_else(|| replies::unknown_caller(ip, None));
            }
            Owner::Unknown(why) => format!("the connection from {}: {why}", ends.pod),
        };
        tracing::warn!(peer = %ends.pod, %why, "a caller on the node's address was refused");
        self.metrics.attestation_refused();
        Err(replies::unconfirmed_caller(&why))
    }

    /// Who holds the connection, read on a blocking thread, a few at a time.
    async fn owner_of(&self, ends: attest::Ends) -> Result<Owner, Reply> {
        let Some(attestor) = self.attestor.clone() else {
            return Err(replies::attestation_failed());
        };
        let Ok(permit) = self.host_attributions.clone().acquire_owned().await else {
            return Err(replies::attestation_failed());
        };
        let owner = move || {
            let _permit = permit;
            attestor.owner_of(ends)
        };
        tokio::task::spawn_blocking(owner).await.map_err(|join| {
            tracing::error!(error = %join, "caller attestation did not complete");
            replies::attestation_failed()
        })
    }

    /// The live host-network pod `uid` of the node, once the index knows it (bounded by the
    /// pod wait: a pod's first requests come as the watch delivers it).
    async fn host_network_pod(&self, uid: &str) -> Option<Arc<Pod>> {
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        self.wait_until(|| self.resolver.host_network_pod(uid).is_some(), deadline)
            .await;
        self.resolver.host_network_pod(uid)
    }
}
