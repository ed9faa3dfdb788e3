//! A pod's tokens: what each is cached under ([`TokenKey`]), and how a missing one is bought
//! upstream, as GKE's metadata server buys it. A KSA with an annotated service account gets
//! that account's tokens: one STS exchange for a federated token with IAM's scope (cached per
//! pod), then IAM Credentials' generateAccessToken or generateIdToken. A KSA without one gets
//! the federated token itself (Workload Identity Federation for GKE).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use wid_gce::{IdFormat, Reply};

use crate::cache::{self, CacheKey};
use crate::pods::Pod;
use crate::upstream::{Minted, UpstreamError, now};
use crate::{Agent, replies};

/// What a cached token is for: the pod (its uid, so that a reused address never finds a
/// departed pod's token), its KSA and the account the KSA is annotated with, and what was asked.
#[derive(Clone, Debug)]
pub struct TokenKey {
    pod: Arc<Pod>,
    asked: Asked,
}

/// What a pod asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Asked {
    /// An access token with these scopes (space-separated).
    AccessToken(String),
    IdToken {
        audience: String,
        format: IdFormat,
    },
    /// The federated token with IAM's scope that buys the pod's service-account tokens.
    Impersonating,
    /// A KSA token for this audience.
    KsaToken(String),
}

impl TokenKey {
    pub fn new(pod: Arc<Pod>, asked: Asked) -> TokenKey {
        TokenKey { pod, asked }
    }

    /// The pod's access token with `scopes` (the default ones when none are named).
    pub fn access(pod: Arc<Pod>, scopes: &[String]) -> TokenKey {
        let scopes = if scopes.is_empty() {
            crate::DEFAULT_SCOPES.join(" ")
        } else {
            scopes.join(" ")
        };
        TokenKey::new(pod, Asked::AccessToken(scopes))
    }

    /// Who the token is for, as far as the key tells tokens apart.
    fn identity(&self) -> (&str, &str, &str, Option<&str>) {
        let pod = &self.pod;
        (
            &pod.uid,
            &pod.namespace,
            &pod.service_account_name,
            pod.gsa(),
        )
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &TokenKey) -> bool {
        self.identity() == other.identity() && self.asked == other.asked
    }
}

impl Eq for TokenKey {}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
        self.asked.hash(state);
    }
}

impl CacheKey for TokenKey {
    fn owner(&self) -> &str {
        &self.pod.uid
    }

    fn weight(&self) -> usize {
        let (uid, namespace, ksa, gsa) = self.identity();
        let asked = match &self.asked {
            Asked::AccessToken(scopes) => scopes.len(),
            Asked::IdToken { audience, .. } | Asked::KsaToken(audience) => audience.len(),
            Asked::Impersonating => 0,
        };
        uid.len() + namespace.len() + ksa.len() + gsa.map_or(0, str::len) + asked
    }
}

/// An IAM Credentials call made for a pod's service account.
#[derive(Clone, Copy)]
enum IamCall<'a> {
    AccessToken(&'a [String]),
    IdToken(&'a str),
}

impl Agent {
    /// The token endpoint's answer for `pod` (its cache key made by the caller, who looked it up
    /// first): from the cache, or bought upstream.
    pub(crate) async fn token(
        self: Arc<Self>,
        pod: Arc<Pod>,
        key: TokenKey,
        scopes: Vec<String>,
    ) -> Reply {
        let fetch = self.clone().fetch_access_token(pod.clone(), scopes);
        match self.access_tokens.get(&key, fetch).await {
            Ok((minted, source)) => {
                self.metrics.cache(source);
                token_answer(&minted)
            }
            Err(e) => {
                self.report(&pod, &e);
                replies::upstream(replies::ACCESS_TOKEN, e)
            }
        }
    }

    /// The identity endpoint's answer for `pod`.
    pub(crate) async fn identity(
        self: Arc<Self>,
        pod: Arc<Pod>,
        audience: String,
        format: IdFormat,
    ) -> Reply {
        let Some(gsa) = pod.gsa().map(str::to_owned) else {
            return replies::not_annotated(&pod);
        };
        let asked = Asked::IdToken {
            audience: audience.clone(),
            format,
        };
        let key = TokenKey::new(pod.clone(), asked);
        let fetch = self.clone().fetch_id_token(pod.clone(), gsa, audience);
        match self.id_tokens.get(&key, fetch).await {
            Ok((minted, source)) => {
                self.metrics.cache(source);
                Reply::text(200, minted.token)
            }
            Err(e) => {
                self.report(&pod, &e);
                replies::upstream(replies::ID_TOKEN, e)
            }
        }
    }

    /// An access token of the pod's annotated account (GKE's impersonation), or the federated
    /// token itself for a KSA without one.
    pub(crate) async fn fetch_access_token(
        self: Arc<Self>,
        pod: Arc<Pod>,
        scopes: Vec<String>,
    ) -> Result<Minted, UpstreamError> {
        let scopes = if scopes.is_empty() {
            crate::DEFAULT_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        } else {
            scopes
        };
        match pod.gsa() {
            Some(gsa) => {
                self.as_service_account(&pod, gsa, IamCall::AccessToken(&scopes))
                    .await
            }
            None => self.federated(&pod, false, &scopes).await,
        }
    }

    async fn fetch_id_token(
        self: Arc<Self>,
        pod: Arc<Pod>,
        gsa: String,
        audience: String,
    ) -> Result<Minted, UpstreamError> {
        self.as_service_account(&pod, &gsa, IamCall::IdToken(&audience))
            .await
    }

    async fn fetch_impersonating(self: Arc<Self>, pod: Arc<Pod>) -> Result<Minted, UpstreamError> {
        self.federated(&pod, true, &[]).await
    }

    /// `call` for the service account `gsa`, with the pod's federated token of
    /// [`Self::impersonating_token`]. A cached federated token the token service no longer takes
    /// (401: signed with keys it no longer has, or its cluster registered anew, say) is dropped
    /// and exchanged anew, once; a fresh one refused is refused.
    async fn as_service_account(
        self: &Arc<Self>,
        pod: &Arc<Pod>,
        gsa: &str,
        call: IamCall<'_>,
    ) -> Result<Minted, UpstreamError> {
        let (federated, source) = self.impersonating_token(pod).await?;
        match self.iam_call(pod, &federated, gsa, call).await {
            Err(UpstreamError::Refused { status: 401, .. }) if source != cache::Source::Miss => {
                let key = TokenKey::new(pod.clone(), Asked::Impersonating);
                self.impersonating.forget(&key, &federated.token);
                let (federated, _) = self.impersonating_token(pod).await?;
                self.iam_call(pod, &federated, gsa, call).await
            }
            answer => answer,
        }
    }

    async fn iam_call(
        &self,
        pod: &Pod,
        federated: &Minted,
        gsa: &str,
        call: IamCall<'_>,
    ) -> Result<Minted, UpstreamError> {
        let token = &federated.token;
        match call {
            IamCall::AccessToken(scopes) => {
                self.timed(pod, self.upstream.access_token(token, gsa, scopes))
                    .await
            }
            IamCall::IdToken(audience) => {
                self.timed(pod, self.upstream.id_token(token, gsa, audience))
                    .await
            }
        }
    }

    /// The federated token with IAM's scope that GKE's flow exchanges for the pod's
    /// service-account tokens, cached per pod and KSA: one exchange serves its access token and
    /// all its ID tokens.
    pub(crate) async fn impersonating_token(
        self: &Arc<Self>,
        pod: &Arc<Pod>,
    ) -> Result<(Minted, cache::Source), UpstreamError> {
        let key = TokenKey::new(pod.clone(), Asked::Impersonating);
        let fetch = self.clone().fetch_impersonating(pod.clone());
        self.impersonating.get(&key, fetch).await
    }

    /// A federated token for the pod's KSA: one that buys its service-account tokens
    /// (`impersonating`), or one it uses itself with the scopes it `asked`.
    async fn federated(
        &self,
        pod: &Arc<Pod>,
        impersonating: bool,
        asked: &[String],
    ) -> Result<Minted, UpstreamError> {
        let federation = &self.config.federation;
        let ksa_token = self.ksa.token(pod, &federation.ksa_audience()).await?;
        let audience = federation.sts_audience(self.ksa.issuer());
        let scopes = federation.exchange_scopes(impersonating, asked);
        let exchange = self.upstream.exchange(&audience, &ksa_token, &scopes);
        self.timed(pod, exchange).await
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
}

/// The answer of the token endpoint for a minted token.
pub(crate) fn token_answer(minted: &Minted) -> Reply {
    // Tokens are base64url and dots: nothing to escape, so format, don't build a tree.
    let body = format!(
        "{{\"access_token\":\"{}\",\"expires_in\":{},\"token_type\":\"Bearer\"}}",
        minted.token,
        (minted.expires_at - now()).max(1)
    );
    Reply::json(body)
}
