//! The Security Token Service: `POST /v1/token` (RFC 8693) and `POST /v1/introspect`
//! (RFC 7662), as `sts.googleapis.com` answers them.
//!
//! A subject token is checked against the provider its audience names: a registered cluster
//! (`identitynamespace:P.svc.id.goog:ISSUER`, GKE's form) or a pool's OIDC provider
//! (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/P`).

pub(crate) mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wid_api::sts::{ExchangeResponse, IntrospectResponse, TOKEN_TYPE_ACCESS_TOKEN};
use wid_api::tokens::FederatedIdentity;
use wid_iam::member::{gke_subject, isolated_gke_subject};
use wid_iam::names;
use wid_jose::claims::check_times;
use wid_jose::{JoseError, Jwk, Jwks};
use wid_store::{ClusterRow, KeySetOwner, KsaUidRow, ProviderRow, StoreError};

use self::rules::{
    Audience, ExchangeTerms, KsaClaims, SUBJECT_RULES, TARGET_HELP, audience_accepted,
    condition_holds, exchange_terms, invalid_grant, ksa_claims, map_attributes, oauth, same_issuer,
};
use crate::App;
use crate::audit::Event;
use crate::error::ApiError;
use crate::tokens::{Minted, now, principal_of};

/// An issuer's keys are fetched again for an unknown `kid` at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Rate limit on key re-fetches, per issuer.
#[derive(Default)]
pub struct RefetchGate(Mutex<HashMap<String, Instant>>);

impl RefetchGate {
    fn allow(&self, issuer: &str) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match last.get(issuer) {
            Some(t) if now.duration_since(*t) < REFETCH_INTERVAL => false,
            _ => {
                last.insert(issuer.to_owned(), now);
                true
            }
        }
    }
}

/// A refusal by a provider or cluster, as the audit trail records it.
struct Refused {
    /// The provider's or cluster's name (its issuer when none was found).
    provider: String,
    /// The subject, once the token was verified.
    subject: Option<String>,
    error: ApiError,
}

impl Refused {
    fn by(provider: &str, error: ApiError) -> Refused {
        Refused {
            provider: provider.to_owned(),
            subject: None,
            error,
        }
    }
}

/// What an exchange established: the federated identity, and the provider that vouched for it.
struct Exchanged {
    identity: FederatedIdentity,
    provider: String,
}

/// Where a provider's or cluster's keys come from.
struct KeySource {
    owner: KeySetOwner,
    issuer: String,
    uploaded: Option<String>,
    discovered: Option<String>,
}

impl App {
    /// `POST /v1/token`: the request checked, the subject token verified by the provider its
    /// audience names, a federated token minted; every outcome audited.
    pub(crate) async fn exchange(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<ExchangeResponse, ApiError> {
        let terms = match exchange_terms(content_type, body) {
            Ok(terms) => terms,
            Err(e) => {
                self.audit_refused(None, "", &e).await;
                return Err(e);
            }
        };
        let exchanged = match self.exchange_for(&terms).await {
            Ok(exchanged) => exchanged,
            Err(refused) => {
                self.audit_refused(
                    refused.subject.as_deref(),
                    &refused.provider,
                    &refused.error,
                )
                .await;
                return Err(refused.error);
            }
        };
        let principal = principal_of(&exchanged.identity);
        let pod = exchanged.identity.pod.clone().unwrap_or_default();
        let minted = self.mint_federated(exchanged.identity, &terms.scope, now());
        let Minted { token, jti, exp } = match minted {
            Ok(minted) => minted,
            Err(e) => {
                self.audit_refused(None, "", &e).await;
                return Err(e);
            }
        };
        self.metrics.issued("federated_access_token");
        self.audit(Event {
            action: "token_exchange",
            caller: Some(&principal),
            provider: &exchanged.provider,
            target: "",
            token_id: &jti,
            pod: &pod,
            outcome: Ok(()),
        })
        .await;
        Ok(ExchangeResponse {
            access_token: token,
            issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: (exp - now()).max(1),
            scope: terms.scope,
        })
    }

    /// Records a refused exchange: by whom, once the token was verified, and which provider
    /// refused it.
    async fn audit_refused(&self, caller: Option<&str>, provider: &str, error: &ApiError) {
        let reason = error.to_string();
        self.audit(Event {
            action: "token_exchange",
            caller,
            provider,
            target: "",
            token_id: "",
            pod: "",
            outcome: Err(&reason),
        })
        .await;
    }

    /// The provider or cluster the audience names, and what it makes of the subject token.
    async fn exchange_for(&self, terms: &ExchangeTerms) -> Result<Exchanged, Refused> {
        let token = terms.subject_token.as_str();
        match terms.audience() {
            Some(Audience::IdentityNamespace { pool, issuer }) => {
                self.exchange_for_cluster(pool, issuer, token).await
            }
            Some(Audience::Provider {
                project_number,
                pool,
                provider,
            }) => {
                self.exchange_for_provider(project_number, pool, provider, token)
                    .await
            }
            None => Err(Refused::by(
                &terms.audience,
                oauth("invalid_target", TARGET_HELP),
            )),
        }
    }

    /// Verifies `token` with the source's keys, fetching them again once when the `kid` is
    /// unknown and the keys come from discovery (the issuer may have rotated).
    async fn verify_subject(
        &self,
        source: &KeySource,
        token: &str,
    ) -> Result<Map<String, Value>, ApiError> {
        let keys = |text: Option<&String>| -> Vec<Jwk> {
            text.and_then(|t| Jwks::parse(t).ok())
                .map(|j| j.keys)
                .unwrap_or_default()
        };
        let first = keys(source.uploaded.as_ref().or(source.discovered.as_ref()));
        let verified = match wid_jose::verify(token, &first) {
            Err(JoseError::UnknownKid(_))
                if source.uploaded.is_none() && self.refetch_gate.allow(&source.issuer) =>
            {
                match self.refresh_keys(&source.owner, &source.issuer).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(issuer = %source.issuer, error = %e, "key re-fetch for an unknown kid failed")
                    }
                }
                let fresh = self.discovered_keys(&source.owner).await?;
                wid_jose::verify(token, &keys(fresh.as_ref()))
            }
            other => other,
        };
        let verified = verified
            .map_err(|e| invalid_grant(format!("The subject token could not be verified: {e}.")))?;
        let claims = verified.claims;
        match claims.get("iss").and_then(Value::as_str) {
            Some(iss) if same_issuer(iss, &source.issuer) => {}
            Some(iss) => {
                return Err(invalid_grant(format!(
                    "The issuer of the subject token '{iss}' is not the provider's issuer '{}'.",
                    source.issuer
                )));
            }
            None => return Err(invalid_grant("The subject token has no 'iss' claim.")),
        }
        check_times(&claims, now(), SUBJECT_RULES)
            .map_err(|e| invalid_grant(format!("The subject token is not valid now: {e}.")))?;
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(invalid_grant("The subject token has no 'sub' claim."));
        }
        Ok(claims)
    }

    async fn discovered_keys(&self, owner: &KeySetOwner) -> Result<Option<String>, ApiError> {
        Ok(match owner {
            KeySetOwner::Cluster {
                project_id,
                location,
                name,
            } => {
                self.store
                    .get_cluster(project_id, location, name)
                    .await?
                    .discovered_jwks_json
            }
            KeySetOwner::Provider {
                project_number,
                pool_id,
                provider_id,
            } => {
                self.store
                    .get_provider(project_number, pool_id, provider_id)
                    .await?
                    .discovered_jwks_json
            }
        })
    }

    /// GKE's form: the cluster of project P with this issuer.
    async fn exchange_for_cluster(
        &self,
        pool: &str,
        issuer: &str,
        token: &str,
    ) -> Result<Exchanged, Refused> {
        let fail = Refused::by;
        let project_id = pool
            .strip_suffix(names::GKE_POOL_SUFFIX)
            .ok_or_else(|| fail(issuer, oauth("invalid_target", TARGET_HELP)))?;
        // The store finds projects by number too; a pool is named by the project's id only, so
        // `NUMBER.svc.id.goog` names no pool.
        let project = self
            .store
            .get_project(project_id)
            .await
            .ok()
            .filter(|p| p.project_id == project_id)
            .ok_or_else(|| fail(issuer, oauth("invalid_target", TARGET_HELP)))?;
        let clusters = self
            .store
            .list_clusters(&project.project_id, "-")
            .await
            .map_err(|e| fail(issuer, e.into()))?;
        let cluster: ClusterRow = clusters
            .into_iter()
            .find(|c| same_issuer(&c.issuer_uri, issuer))
            .ok_or_else(|| fail(issuer, oauth("invalid_target", TARGET_HELP)))?;
        let provider = format!(
            "projects/{}/locations/{}/clusters/{}",
            cluster.project_id, cluster.location, cluster.name
        );
        let source = KeySource {
            owner: KeySetOwner::Cluster {
                project_id: cluster.project_id.clone(),
                location: cluster.location.clone(),
                name: cluster.name.clone(),
            },
            issuer: cluster.issuer_uri.clone(),
            uploaded: cluster.jwks_json.clone(),
            discovered: cluster.discovered_jwks_json.clone(),
        };
        let claims = self
            .verify_subject(&source, token)
            .await
            .map_err(|e| fail(&provider, e))?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let caller = |error: ApiError| Refused {
            provider: provider.clone(),
            subject: Some(sub.clone()),
            error,
        };
        audience_accepted(&claims, &[pool.to_owned()]).map_err(|e| caller(invalid_grant(e)))?;
        let ksa = ksa_claims(&claims, &sub).map_err(|e| caller(invalid_grant(e)))?;
        let shared = !cluster.isolated;
        let uid = match ksa.uid {
            Some(uid) if shared => self
                .uid_if_unambiguous(&cluster, &ksa, uid)
                .await
                .map_err(caller)?,
            _ => None,
        };
        let subject = if shared {
            gke_subject(ksa.namespace, ksa.name)
        } else {
            isolated_gke_subject(&cluster.location, &cluster.name, ksa.namespace, ksa.name)
        };
        let identity = FederatedIdentity {
            project_number: project.project_number.clone(),
            pool_id: pool.to_owned(),
            provider: provider.clone(),
            provider_uid: Some(cluster.uid.clone()),
            subject,
            groups: Vec::new(),
            attributes: BTreeMap::new(),
            // What the pool's selectors may trust of the claims: only shared clusters' (see
            // `wid_iam::member`).
            namespace: shared.then(|| ksa.namespace.to_owned()),
            service_account_uid: uid.map(str::to_owned),
            shared_cluster: shared,
            clusters: vec![
                names::canonical_issuer(&cluster.issuer_uri),
                format!(
                    "https://container.googleapis.com/v1/projects/{}/locations/{}/clusters/{}",
                    cluster.project_id, cluster.location, cluster.name
                ),
            ],
            // The pod the KSA token is bound to (TokenRequest and projected tokens name it), for
            // the audit trail: an address reused by another pod stays told apart.
            pod: ksa
                .pod
                .map(|(pod, uid)| format!("{}/{pod} ({uid})", ksa.namespace)),
        };
        Ok(Exchanged { identity, provider })
    }

    /// Records that the KSA of a shared cluster's token presented `uid`, and returns it if that
    /// KSA is the only one that ever did in the project; `None` when another cluster or KSA
    /// presented it too. A uid member so names one KSA of one cluster, as a Kubernetes uid does,
    /// although every shared cluster may speak for every namespace and name: a uid presented by
    /// two is ambiguous and names neither, whichever came first.
    async fn uid_if_unambiguous<'u>(
        &self,
        cluster: &ClusterRow,
        ksa: &KsaClaims<'_>,
        uid: &'u str,
    ) -> Result<Option<&'u str>, ApiError> {
        let presenter = KsaUidRow {
            project_id: cluster.project_id.clone(),
            uid: uid.to_owned(),
            cluster_uid: cluster.uid.clone(),
            namespace: ksa.namespace.to_owned(),
            name: ksa.name.to_owned(),
            first_seen: crate::iam::now_rfc3339(),
        };
        let presenters = self.store.present_service_account_uid(&presenter).await?;
        if presenters.len() <= 1 {
            return Ok(Some(uid));
        }
        if let Some(left_out) = self
            .log_limit
            .admit(&format!("uid|{}|{uid}", cluster.project_id))
        {
            let all: Vec<String> = presenters
                .iter()
                .map(|p| {
                    format!(
                        "{}/{} of cluster uid {}",
                        p.namespace, p.name, p.cluster_uid
                    )
                })
                .collect();
            tracing::warn!(project = %cluster.project_id, uid, presenters = ?all,
                "clusters' tokens presented one service-account uid for several service accounts; it names none of them until the clusters that presented it wrongly are deleted{}",
                wid_runtime::log_limit::left_out_note(left_out));
        }
        Ok(None)
    }

    /// The generic form: a pool's OIDC provider, its audiences, mapping and condition.
    async fn exchange_for_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
        token: &str,
    ) -> Result<Exchanged, Refused> {
        let name = format!(
            "projects/{project_number}/locations/global/workloadIdentityPools/{pool_id}/providers/{provider_id}"
        );
        let fail = |e: ApiError| Refused::by(&name, e);
        let provider = self
            .live_provider(project_number, pool_id, provider_id)
            .await
            .map_err(fail)?;
        let source = KeySource {
            owner: KeySetOwner::Provider {
                project_number: project_number.to_owned(),
                pool_id: pool_id.to_owned(),
                provider_id: provider_id.to_owned(),
            },
            issuer: provider.issuer_uri.clone(),
            uploaded: provider.jwks_json.clone(),
            discovered: provider.discovered_jwks_json.clone(),
        };
        let claims = self.verify_subject(&source, token).await.map_err(fail)?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let refused = |subject: &str, error: ApiError| Refused {
            provider: name.clone(),
            subject: Some(subject.to_owned()),
            error,
        };
        let allowed = provider.allowed_audiences.clone();
        let accepted = if allowed.is_empty() {
            vec![
                format!("//iam.googleapis.com/{name}"),
                format!("https://iam.googleapis.com/{name}"),
            ]
        } else {
            allowed
        };
        audience_accepted(&claims, &accepted).map_err(|e| refused(&sub, invalid_grant(e)))?;
        let assertion = Value::Object(claims);
        let mapped = map_attributes(&provider.attribute_mapping, &assertion)
            .map_err(|e| refused(&sub, invalid_grant(e)))?;
        if !condition_holds(&provider.attribute_condition, &assertion, &mapped) {
            return Err(refused(
                &mapped.subject,
                oauth(
                    "unauthorized_client",
                    "The given credential is rejected by the attribute condition.",
                ),
            ));
        }
        let identity = FederatedIdentity {
            project_number: project_number.to_owned(),
            pool_id: pool_id.to_owned(),
            provider: name.clone(),
            provider_uid: None,
            subject: mapped.subject,
            groups: mapped.groups,
            attributes: mapped.attributes,
            namespace: None,
            shared_cluster: false,
            clusters: Vec::new(),
            service_account_uid: None,
            pod: None,
        };
        Ok(Exchanged {
            identity,
            provider: name,
        })
    }

    /// A provider that takes tokens: it and its pool exist and are enabled.
    async fn live_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<ProviderRow, ApiError> {
        let target = || oauth("invalid_target", TARGET_HELP);
        let pool = match self.store.get_pool(project_number, pool_id).await {
            Err(StoreError::NotFound) => return Err(target()),
            other => other?,
        };
        let provider = match self
            .store
            .get_provider(project_number, pool_id, provider_id)
            .await
        {
            Err(StoreError::NotFound) => return Err(target()),
            other => other?,
        };
        if pool.disabled || provider.disabled {
            return Err(target());
        }
        Ok(provider)
    }

    /// `POST /v1/introspect`: whether a wid access token is active, and whose it is.
    pub(crate) async fn introspect(&self, body: &[u8]) -> Result<IntrospectResponse, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
            oauth(
                "invalid_request",
                format!("The body is not a valid form: {e}"),
            )
        })?;
        let token = pairs
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.trim().to_owned())
            .ok_or_else(|| oauth("invalid_request", "The \"token\" parameter is missing."))?;
        let verified = self.verify_access_token(&token, now()).await.ok();
        let claims = match verified {
            Some(claims) if self.token_is_live(&claims).await? => claims,
            _ => {
                return Ok(IntrospectResponse {
                    active: false,
                    ..IntrospectResponse::default()
                });
            }
        };
        let username = match (&claims.wid.federated, &claims.wid.email) {
            (Some(identity), _) => principal_of(identity),
            (None, Some(email)) => email.clone(),
            (None, None) => claims.sub.clone(),
        };
        Ok(IntrospectResponse {
            active: true,
            client_id: claims.client_id,
            iss: claims.iss,
            iat: claims.iat.to_string(),
            exp: claims.exp.to_string(),
            scope: claims.scope,
            sub: claims.sub,
            username,
        })
    }
}
