//! Who is calling, decided once per request. [`Agent::identify`] answers at once in the usual
//! case (a pod the index knows, on a connection already confirmed, with the project's number
//! known) and says otherwise what is left to settle; [`Agent::settle`] settles it in one step,
//! in order: a pod not seen yet is waited for (bounded: its first requests are held while the
//! watch catches up, not refused), a connection is confirmed from the kernel as the pod's
//! (`--attest-callers`), and the project's number is learnt with the pod's identity. An index
//! that changes its mind about the address meanwhile gets one more look, no more.

use std::net::IpAddr;
use std::sync::Arc;

use wid_gce::Reply;

use crate::pods::{Caller, Pod};
use crate::upstream::UpstreamError;
use crate::{Agent, attest, replies};

/// What [`Agent::identify`] could tell without waiting.
pub(crate) enum Identified {
    Pod(Arc<Pod>),
    Refused(Reply),
    /// Something to settle first ([`Agent::settle`]).
    Unsettled(Unsettled),
}

/// What is left to settle before a caller is answered.
pub(crate) enum Unsettled {
    /// No pod has the address yet, and the index may still learn of one.
    NotYetKnown,
    /// The index names this pod; the kernel is yet to confirm the connection is its.
    Unconfirmed(Arc<Pod>),
    /// The project's number is yet to be learnt (with this pod's identity).
    NoProjectNumber(Arc<Pod>),
    /// A caller on the node's own address (`--attest-callers`): whose the connection is, a
    /// host-network pod's or the node's, is yet to be read from the kernel.
    OnTheHost,
}

/// What the kernel said of a connection and the pod the index proposed for it.
enum Attested {
    Confirmed,
    /// Not that pod's, and meanwhile the index names someone else at the address: ask again.
    IndexChanged,
    Refused(Reply),
}

impl Agent {
    /// The caller at `ip` as far as can be told at once. `attested` is the uid of the pod this
    /// connection was confirmed to come from, if any.
    pub(crate) fn identify(&self, ip: IpAddr, attested: Option<&str>) -> Identified {
        if self.attestor.is_some() && self.resolver.is_node_address(ip) {
            return self.identify_on_the_host(attested);
        }
        let pod = match self.resolver.resolve(ip) {
            Caller::Pod(pod) => pod,
            Caller::Unknown if self.resolver.changes().is_some() => {
                return Identified::Unsettled(Unsettled::NotYetKnown);
            }
            caller => return Identified::Refused(self.refuse(ip, caller, false)),
        };
        if self.attestor.is_some() && attested != Some(pod.uid.as_str()) {
            Identified::Unsettled(Unsettled::Unconfirmed(pod))
        } else if self.project_number.get().is_none() {
            Identified::Unsettled(Unsettled::NoProjectNumber(pod))
        } else {
            Identified::Pod(pod)
        }
    }

    /// A caller on the node's own address, with attestation: the pod (or the node identity)
    /// this connection was attributed to, or the attribution still to make.
    fn identify_on_the_host(&self, attested: Option<&str>) -> Identified {
        match attested.and_then(|uid| self.resolver.host_network_pod(uid)) {
            Some(pod) if self.project_number.get().is_some() => Identified::Pod(pod),
            Some(pod) => Identified::Unsettled(Unsettled::NoProjectNumber(pod)),
            None => Identified::Unsettled(Unsettled::OnTheHost),
        }
    }

    /// Settles what `identify` left, for the connection from `ends`; `attested` is updated when
    /// the connection is confirmed as a pod's.
    pub(crate) async fn settle(
        self: &Arc<Self>,
        unsettled: Unsettled,
        ends: attest::Ends,
        attested: &mut Option<String>,
    ) -> Result<Arc<Pod>, Reply> {
        let ip = wid_runtime::connections::canonical_ip(ends.pod.ip());
        let mut pod = match unsettled {
            Unsettled::NotYetKnown => self.waited_for(ip).await?,
            Unsettled::OnTheHost => {
                let pod = self.on_the_host(ends).await?;
                *attested = Some(pod.uid.clone());
                pod
            }
            Unsettled::Unconfirmed(pod) | Unsettled::NoProjectNumber(pod) => pod,
        };
        if self.attestor.is_some() && attested.as_deref() != Some(pod.uid.as_str()) {
            pod = self.confirmed(pod, ends).await?;
            *attested = Some(pod.uid.clone());
        }
        if self.project_number.get().is_none() {
            self.learn_project_number(&pod).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot learn the project's number from STS (is --project right, and the cluster registered in it?)");
                replies::no_project_number(e)
            })?;
        }
        Ok(pod)
    }

    /// The pod at `ip`, once the index has had its bounded time to learn of it.
    async fn waited_for(&self, ip: IpAddr) -> Result<Arc<Pod>, Reply> {
        let can_learn = self.resolver.changes().is_some();
        let waits = can_learn && self.resolver.resolve(ip) == Caller::Unknown;
        if waits {
            self.wait_for_pod(ip).await;
        }
        match self.resolver.resolve(ip) {
            Caller::Pod(pod) => Ok(pod),
            caller => Err(self.refuse(ip, caller, can_learn)),
        }
    }

    /// `pod`, confirmed from the kernel as the one behind the connection; when the index moves
    /// the address to another pod meanwhile, that pod, confirmed in turn.
    async fn confirmed(
        self: &Arc<Self>,
        pod: Arc<Pod>,
        ends: attest::Ends,
    ) -> Result<Arc<Pod>, Reply> {
        let ip = wid_runtime::connections::canonical_ip(ends.pod.ip());
        match self.attest(pod.clone(), ends).await {
            Attested::Confirmed => return Ok(pod),
            Attested::Refused(reply) => return Err(reply),
            // The address is changing hands: its new pod may not be known yet.
            Attested::IndexChanged => {}
        }
        let pod = self.waited_for(ip).await?;
        match self.attest(pod.clone(), ends).await {
            Attested::Confirmed => Ok(pod),
            Attested::Refused(reply) => Err(reply),
            Attested::IndexChanged => Err(replies::changing_hands()),
        }
    }

    /// The refusal of a caller that is no single pod (logged, once per address and minute), and
    /// for a shared address an event on each pod. `waited`: after the bounded wait for a pod.
    fn refuse(&self, ip: IpAddr, caller: Caller, waited: bool) -> Reply {
        match caller {
            Caller::Ambiguous(pods) => {
                if let Some(left_out) = self.refusal_log.admit(&format!("ambiguous|{ip}")) {
                    tracing::warn!(%ip, pods = ?pods, "two live pods have one address; both refused{}", wid_runtime::log_limit::left_out_note(left_out));
                }
                self.report_shared_address(ip, &pods);
                replies::shared_address(ip, &pods)
            }
            Caller::Unknown | Caller::Pod(_) => {
                if let Some(left_out) = self.refusal_log.admit(&format!("unknown|{ip}")) {
                    tracing::info!(%ip, "request from an address that is no known pod{}", wid_runtime::log_limit::left_out_note(left_out));
                }
                replies::unknown_caller(ip, waited.then_some(self.config.pod_wait))
            }
        }
    }

    /// An event on each pod that shares `ip`.
    fn report_shared_address(&self, ip: IpAddr, pods: &[String]) {
        let Some(denials) = &self.denials else {
            return;
        };
        let message = format!(
            "The metadata server refuses requests from {ip}: the pods {} all have that address.",
            pods.join(", ")
        );
        for pod in pods {
            if let Some((namespace, name)) = pod.split_once('/') {
                denials.denied(
                    namespace,
                    name,
                    "",
                    "WorkloadIdentityAmbiguousAddress",
                    &message,
                );
            }
        }
    }

    /// Waits until the resolver knows something of `ip` (a pod, or that it is ambiguous), or
    /// until the configured bound.
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
        self.wait_until(|| !unchanged(&self.resolver.resolve(ip)), deadline)
            .await;
    }

    /// Waits, until `deadline`, for `settled` to hold, looking again at each change of the
    /// resolver.
    pub(crate) async fn wait_until(
        &self,
        settled: impl Fn() -> bool,
        deadline: tokio::time::Instant,
    ) {
        // Subscribe before looking, so that a change between the two is not missed.
        let Some(mut changes) = self.resolver.changes() else {
            // Nothing can change: the wait is the whole bound.
            tokio::time::sleep_until(deadline).await;
            return;
        };
        while !settled() {
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
        let ip = wid_runtime::connections::canonical_ip(ends.pod.ip());
        let same_pod = |caller: &Caller| matches!(caller, Caller::Pod(p) if p.uid == pod.uid);
        let deadline = tokio::time::Instant::now() + self.config.pod_wait;
        let mut held = false;
        let error = loop {
            let error = match self.confirm(&attestor, &pod, ends).await {
                Ok(()) => return Attested::Confirmed,
                Err(Some(error)) => error,
                Err(None) => return Attested::Refused(replies::attestation_failed()),
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
        self.report_unconfirmed(&pod, ends, &error);
        Attested::Refused(replies::unconfirmed_caller(&error))
    }

    /// One look at the kernel's tables, on a blocking thread, at most a few at a time: `Ok`
    /// when the connection is the pod's, else why not (`None`: the look itself failed).
    async fn confirm(
        &self,
        attestor: &Arc<attest::Attestor>,
        pod: &Arc<Pod>,
        ends: attest::Ends,
    ) -> Result<(), Option<String>> {
        let Ok(permit) = self.attestations.clone().acquire_owned().await else {
            return Err(None);
        };
        let (attestor, pod) = (attestor.clone(), pod.clone());
        let confirm = move || {
            let _permit = permit;
            attestor.confirm(&pod, ends)
        };
        match tokio::task::spawn_blocking(confirm).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Some(error.to_string())),
            Err(join) => {
                tracing::error!(error = %join, "caller attestation did not complete");
                Err(None)
            }
        }
    }

    /// A connection refused as not its pod's: a log line, a metric, an event on the pod.
    fn report_unconfirmed(&self, pod: &Pod, ends: attest::Ends, error: &str) {
        let peer = ends.pod;
        tracing::warn!(%peer, error = %error, "a connection not confirmed as its pod's was refused");
        self.metrics.attestation_refused();
        if let Some(denials) = &self.denials {
            let ip = wid_runtime::connections::canonical_ip(peer.ip());
            denials.denied(
                &pod.namespace,
                &pod.name,
                &pod.uid,
                "WorkloadIdentityUnconfirmedCaller",
                &format!("The metadata server refused a request from {ip}: {error}."),
            );
        }
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
}
