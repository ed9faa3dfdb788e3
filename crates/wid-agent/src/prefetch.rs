//! Tokens ready before the first request. When a pod whose service account is annotated with an
//! IAM service account appears on the node (known by its address, its service account's
//! annotations read), the agent buys its access token with the default scopes, which every
//! client asks for first, in the background. The pod's first `token` request is then a cache
//! hit instead of an exchange and an IAM Credentials call.
//!
//! The fetch is the one a request would start: the same cache entry (a request meanwhile waits
//! for it rather than making its own calls), the same budgets (the pod's and the node's; a
//! prefetch that would wait past the bound is dropped), the same refusals reported as the
//! pod's Events. Pods of no annotated account are left alone: nothing says they will ask.
//! A pod is fetched for once per life; one that has finished is no longer indexed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::Agent;
use crate::pods::Pod;
use crate::tokens::TokenKey;
use crate::upstream::UpstreamError;

/// Prefetches in flight at once: a node's worth of pods appearing together (an agent's start)
/// is fetched a few at a time, so that requests meanwhile find upstream calls free.
const AT_ONCE: usize = 4;

/// The pods already fetched for, and the turns of those in flight.
pub(crate) struct Prefetches {
    seen: Mutex<HashSet<String>>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl Default for Prefetches {
    fn default() -> Self {
        Prefetches {
            seen: Mutex::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        }
    }
}

impl Prefetches {
    /// Forgets pods that are gone (`live`: the uids of those left).
    pub(crate) fn retain(&self, live: &HashSet<&str>) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|uid| live.contains(uid.as_str()));
    }

    /// Whether the pod `uid` is still on the node, as far as the last change said.
    fn is_seen(&self, uid: &str) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uid)
    }

    /// Whether `pod` is new here (and so now seen).
    fn first_sight(&self, pod: &Pod) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pod.uid.clone())
    }
}

/// Fetches ahead for the resolver's new pods after each of its changes (a pod indexed, its
/// service account's annotations read), until the agent is dropped; resolvers without a change
/// feed are told of changes by `MetadataServer::pods_changed` instead.
pub(crate) async fn follow(agent: Arc<Agent>) {
    let Some(mut changes) = agent.resolver.changes() else {
        return;
    };
    let agent = Arc::downgrade(&agent);
    loop {
        match agent.upgrade() {
            Some(agent) => agent.prefetch_new_pods(),
            None => return,
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

impl Agent {
    /// Starts fetching the access tokens of the resolver's pods not fetched for before.
    pub(crate) fn prefetch_new_pods(self: &Arc<Self>) {
        for pod in self.resolver.pods() {
            if pod.gsa().is_some() && self.prefetches.first_sight(&pod) {
                tokio::spawn(self.clone().prefetch(pod));
            }
        }
    }

    async fn prefetch(self: Arc<Self>, pod: Arc<Pod>) {
        let Ok(_turn) = self.prefetches.turns.clone().acquire_owned().await else {
            return;
        };
        // Gone while it waited its turn: nothing to fetch for.
        if !self.prefetches.is_seen(&pod.uid) {
            return;
        }
        let key = TokenKey::access(pod.clone(), &[]);
        if self.access_tokens.fresh(&key).is_some() {
            return;
        }
        let fetch = self.clone().fetch_access_token(pod.clone(), Vec::new());
        let outcome = match self.access_tokens.get(&key, fetch).await {
            Ok(_) => "ok",
            Err(error) => {
                self.report(&pod, &error);
                match error {
                    UpstreamError::Refused { .. } => "refused",
                    UpstreamError::Unavailable(_) => "unavailable",
                    UpstreamError::Throttled(_) => "throttled",
                }
            }
        };
        tracing::debug!(pod = %format!("{}/{}", pod.namespace, pod.name), outcome, "access token fetched ahead");
        self.metrics.prefetch(outcome);
    }
}
