//! The Security Token Service: `POST /v1/token` (RFC 8693) and `POST /v1/introspect`
//! (RFC 7662), as `sts.googleapis.com` answers them.
//!
//! A subject token is checked against the provider its audience names: a registered cluster
//! (`identitynamespace:P.svc.id.goog:ISSUER`, GKE's form) or a pool's OIDC provider
//! (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/P`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wid_api::bounds;
use wid_api::sts::{
    ExchangeRequest, ExchangeResponse, GRANT_TYPE_TOKEN_EXCHANGE, IntrospectResponse,
    TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
};
use wid_api::tokens::FederatedIdentity;
use wid_iam::member::{MAX_SUBJECT_BYTES, gke_subject, isolated_gke_subject};
use wid_iam::{expr, names};
use wid_jose::claims::{TimeRules, check_times};
use wid_jose::{JoseError, Jwk, Jwks};
use wid_store::{ClusterRow, KeySetOwner, KsaUidRow, ProviderRow, Store, StoreError};

use crate::App;
use crate::audit::Event;
use crate::error::ApiError;
use crate::tokens::{Minted, now, principal_of};

const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const SUBJECT_RULES: TimeRules = TimeRules {
    skew: 60,
    max_lifetime: 48 * 3600,
};
/// An issuer's keys are fetched again for an unknown `kid` at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

const AUDIENCE_HELP: &str = "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider, or identitynamespace:PROJECT.svc.id.goog:ISSUER for a registered cluster.";
const TARGET_HELP: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";

fn oauth(error: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        error,
        description: description.into(),
    }
}

fn invalid_grant(description: impl Into<String>) -> ApiError {
    oauth("invalid_grant", description)
}

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

/// Which audience form a request used.
enum Audience<'a> {
    /// GKE: the pool `P.svc.id.goog` and the cluster's issuer.
    IdentityNamespace { pool: &'a str, issuer: &'a str },
    /// A pool's provider.
    Provider {
        project_number: &'a str,
        pool: &'a str,
        provider: &'a str,
    },
}

/// Parses the audience, splitting GKE's form at the first `:` after the prefix.
fn parse_audience(audience: &str) -> Option<Audience<'_>> {
    if let Some(rest) = audience.strip_prefix("identitynamespace:") {
        let (pool, issuer) = rest.split_once(':')?;
        return (!pool.is_empty() && !issuer.is_empty())
            .then_some(Audience::IdentityNamespace { pool, issuer });
    }
    let path = audience
        .strip_prefix("//iam.googleapis.com/")
        .or_else(|| audience.strip_prefix("https://iam.googleapis.com/"))?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [
            "projects",
            n,
            "locations",
            "global",
            "workloadIdentityPools",
            pool,
            "providers",
            provider,
        ] if !n.is_empty() && !pool.is_empty() && !provider.is_empty() => {
            Some(Audience::Provider {
                project_number: n,
                pool,
                provider,
            })
        }
        _ => None,
    }
}

/// Refuses a form field longer than wid accepts (see [`bounds`]).
fn too_long(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(oauth(
            "invalid_request",
            format!(
                "The \"{field}\" parameter is {} bytes long; at most {max} are accepted.",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Whether two spellings name one issuer (see [`names::canonical_issuer`]).
fn same_issuer(a: &str, b: &str) -> bool {
    names::canonical_issuer(a) == names::canonical_issuer(b)
}

/// What a cluster's token says of its KSA.
#[derive(Debug, PartialEq, Eq)]
struct KsaClaims<'a> {
    namespace: &'a str,
    name: &'a str,
    /// Only when the token's `kubernetes.io` claims name the same KSA as its `sub`.
    uid: Option<&'a str>,
    /// `NAME (UID)` of the pod the token is bound to.
    pod: Option<(&'a str, &'a str)>,
}

/// Reads the KSA of a cluster's token: `sub` is `system:serviceaccount:NAMESPACE:NAME`. The uid
/// of its `kubernetes.io` claims is taken only beside the names it belongs to: when those claims
/// name the same KSA as `sub`, and the uid is shaped like one. Otherwise it is left out, and the
/// token satisfies no uid member: a uid vouches for nothing on its own.
fn ksa_claims<'a>(claims: &'a Map<String, Value>, sub: &'a str) -> Result<KsaClaims<'a>, String> {
    let (namespace, name) = sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| {
            names::is_kubernetes_namespace(ns) && names::is_kubernetes_service_account(name)
        })
        .ok_or_else(|| {
            format!("The subject '{sub}' is not a Kubernetes service account (system:serviceaccount:NAMESPACE:NAME).")
        })?;
    let k8s = claims.get("kubernetes.io");
    let text = |value: Option<&'a Value>| value.and_then(Value::as_str);
    let account = k8s.and_then(|k| k.get("serviceaccount"));
    let names_agree = text(k8s.and_then(|k| k.get("namespace"))) == Some(namespace)
        && text(account.and_then(|a| a.get("name"))) == Some(name);
    let uid = text(account.and_then(|a| a.get("uid")))
        .filter(|u| names::is_kubernetes_uid(u))
        .filter(|_| names_agree);
    // Shaped like a pod's name and uid, or left out: it goes into the federated token.
    let pod = k8s
        .and_then(|k| k.get("pod"))
        .and_then(|p| Some((p.get("name")?.as_str()?, p.get("uid")?.as_str()?)))
        .filter(|(name, uid)| {
            names::is_kubernetes_service_account(name) && names::is_kubernetes_uid(uid)
        });
    Ok(KsaClaims {
        namespace,
        name,
        uid,
        pod,
    })
}

/// Whether the token's `aud` (a string or an array) holds one of `accepted`.
fn audience_accepted(claims: &Map<String, Value>, accepted: &[String]) -> Result<(), String> {
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => return Err("the token has no 'aud' claim".into()),
    };
    if auds.iter().any(|a| accepted.iter().any(|x| x == a)) {
        Ok(())
    } else {
        Err(format!(
            "The audience in ID Token {auds:?} does not match the expected audience {accepted:?}."
        ))
    }
}

/// A refusal of a provider or cluster: its name, the subject if its token was verified, and why.
type Refused = (String, Option<String>, ApiError);

/// Why an exchange was refused, and whether that was audited already.
enum Refusal {
    Early(ApiError),
    Audited(ApiError),
}

/// Where a provider's or cluster's keys come from.
struct KeySource {
    owner: KeySetOwner,
    issuer: String,
    uploaded: Option<String>,
    discovered: Option<String>,
}

impl<S: Store> App<S> {
    /// `POST /v1/token`.
    pub(crate) async fn exchange(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<ExchangeResponse, ApiError> {
        match self.exchange_checked(content_type, body).await {
            Ok(answer) => Ok(answer),
            // Refusals of the request itself (before any provider was found) are audited too.
            Err(Refusal::Early(e)) => {
                let reason = e.to_string();
                self.audit(Event {
                    action: "token_exchange",
                    caller: None,
                    provider: "",
                    target: "",
                    token_id: "",
                    pod: "",
                    outcome: Err(&reason),
                })
                .await;
                Err(e)
            }
            Err(Refusal::Audited(e)) => Err(e),
        }
    }

    async fn exchange_checked(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<ExchangeResponse, Refusal> {
        let early = Refusal::Early;
        let request = if content_type.is_some_and(|c| c.starts_with("application/json")) {
            wid_api::json::from_slice::<ExchangeRequest>(body)
                .map_err(|e| {
                    oauth(
                        "invalid_request",
                        format!("The request body is not valid JSON: {e}"),
                    )
                })
                .map_err(early)?
        } else {
            ExchangeRequest::from_form(body)
                .map_err(|e| oauth("invalid_request", e))
                .map_err(early)?
        };
        if request.grant_type.is_empty() {
            return Err(early(oauth(
                "invalid_request",
                "The \"grant_type\" parameter is missing.",
            )));
        }
        if request.grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
            return Err(early(oauth(
                "unsupported_grant_type",
                format!("Invalid value for \"grant_type\": expected {GRANT_TYPE_TOKEN_EXCHANGE}."),
            )));
        }
        if !request.requested_token_type.is_empty()
            && request.requested_token_type != TOKEN_TYPE_ACCESS_TOKEN
        {
            return Err(early(oauth(
                "invalid_request",
                format!(
                    "Invalid value for \"requested_token_type\": expected {TOKEN_TYPE_ACCESS_TOKEN}."
                ),
            )));
        }
        if ![TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN].contains(&request.subject_token_type.as_str()) {
            return Err(early(oauth(
                "invalid_request",
                format!(
                    "Invalid value for \"subject_token_type\": expected {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}."
                ),
            )));
        }
        // google-auth sends the token file's content as read, trailing newline included.
        let subject_token = request.subject_token.trim();
        if subject_token.is_empty() {
            return Err(early(oauth(
                "invalid_request",
                "The \"subject_token\" parameter is missing.",
            )));
        }
        too_long(
            "audience",
            &request.audience,
            bounds::MAX_STS_AUDIENCE_BYTES,
        )
        .map_err(early)?;
        too_long("scope", &request.scope, bounds::MAX_SCOPE_BYTES).map_err(early)?;
        let audience = parse_audience(request.audience.trim())
            .ok_or_else(|| oauth("invalid_request", AUDIENCE_HELP))
            .map_err(early)?;
        let scope = if request.scope.trim().is_empty() {
            DEFAULT_SCOPE.to_owned()
        } else {
            request.scope.trim().to_owned()
        };
        let outcome = match audience {
            Audience::IdentityNamespace { pool, issuer } => {
                self.exchange_for_cluster(pool, issuer, subject_token).await
            }
            Audience::Provider {
                project_number,
                pool,
                provider,
            } => {
                self.exchange_for_provider(project_number, pool, provider, subject_token)
                    .await
            }
        };
        let (identity, provider_name) = match outcome {
            Ok(found) => found,
            Err((provider, caller, e)) => {
                let reason = e.to_string();
                self.audit(Event {
                    action: "token_exchange",
                    caller: caller.as_deref(),
                    provider: &provider,
                    target: "",
                    token_id: "",
                    pod: "",
                    outcome: Err(&reason),
                })
                .await;
                return Err(Refusal::Audited(e));
            }
        };
        let principal = principal_of(&identity);
        let pod = identity.pod.clone().unwrap_or_default();
        let Minted { token, jti, exp } = self
            .mint_federated(identity, &scope, now())
            .map_err(early)?;
        self.audit(Event {
            action: "token_exchange",
            caller: Some(&principal),
            provider: &provider_name,
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
            scope,
        })
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
    ) -> Result<(FederatedIdentity, String), Refused> {
        let fail = |provider: &str, e: ApiError| (provider.to_owned(), None, e);
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
        let caller = |e: ApiError| (provider.clone(), Some(sub.clone()), e);
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
        Ok((identity, provider))
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
    ) -> Result<(FederatedIdentity, String), Refused> {
        let name = format!(
            "projects/{project_number}/locations/global/workloadIdentityPools/{pool_id}/providers/{provider_id}"
        );
        let fail = |e: ApiError| (name.clone(), None, e);
        let target = || fail(oauth("invalid_target", TARGET_HELP));
        let pool = match self.store.get_pool(project_number, pool_id).await {
            Ok(p) => p,
            Err(StoreError::NotFound) => return Err(target()),
            Err(e) => return Err(fail(e.into())),
        };
        let provider: ProviderRow = match self
            .store
            .get_provider(project_number, pool_id, provider_id)
            .await
        {
            Ok(p) => p,
            Err(StoreError::NotFound) => return Err(target()),
            Err(e) => return Err(fail(e.into())),
        };
        if pool.disabled || provider.disabled {
            return Err(target());
        }
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
        let caller = |e: ApiError| (name.clone(), Some(sub.clone()), e);
        let allowed: Vec<String> =
            serde_json::from_str(&provider.allowed_audiences_json).unwrap_or_default();
        let accepted = if allowed.is_empty() {
            vec![
                format!("//iam.googleapis.com/{name}"),
                format!("https://iam.googleapis.com/{name}"),
            ]
        } else {
            allowed
        };
        audience_accepted(&claims, &accepted).map_err(|e| caller(invalid_grant(e)))?;

        let assertion = Value::Object(claims);
        let mapping: BTreeMap<String, String> =
            serde_json::from_str(&provider.attribute_mapping_json).unwrap_or_default();
        let mut subject = None;
        let mut groups = Vec::new();
        let mut attributes = BTreeMap::new();
        for (key, text) in &mapping {
            let value = expr::parse(text)
                .and_then(|e| expr::eval(&e, &BTreeMap::from([("assertion", &assertion)])));
            match (key.as_str(), value) {
                ("google.subject", Ok(Value::String(s))) => subject = Some(s),
                ("google.subject", Ok(other)) => {
                    return Err(caller(invalid_grant(format!(
                        "The attribute mapping for google.subject gave {other}, not a string."
                    ))));
                }
                ("google.subject", Err(e)) => {
                    return Err(caller(invalid_grant(format!(
                        "The attribute mapping for google.subject failed: {e}."
                    ))));
                }
                ("google.groups", Ok(Value::Array(items))) => {
                    groups = items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                }
                ("google.groups", Ok(Value::String(s))) => groups = vec![s],
                (key, Ok(value)) => {
                    if let Some(name) = key.strip_prefix("attribute.") {
                        let text = match value {
                            Value::String(s) => s,
                            Value::Null => continue,
                            other => other.to_string(),
                        };
                        attributes.insert(name.to_owned(), text);
                    }
                }
                // An attribute whose expression fails is left unset, as Google does.
                (_, Err(_)) => {}
            }
        }
        let mapped: usize = groups.iter().map(String::len).sum::<usize>()
            + attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if mapped > bounds::MAX_MAPPED_ATTRIBUTE_BYTES {
            return Err(caller(invalid_grant(format!(
                "The attribute mapping made {mapped} bytes of groups and attributes; at most {} are accepted.",
                bounds::MAX_MAPPED_ATTRIBUTE_BYTES
            ))));
        }
        let subject = subject.ok_or_else(|| {
            caller(invalid_grant(
                "The attribute mapping did not produce google.subject.",
            ))
        })?;
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
            return Err(caller(invalid_grant(format!(
                "The mapped google.subject is {} bytes; it must be 1 to {MAX_SUBJECT_BYTES}.",
                subject.len()
            ))));
        }
        if !provider.attribute_condition.is_empty() {
            let google = serde_json::json!({ "subject": subject, "groups": groups });
            let attribute = serde_json::to_value(&attributes).unwrap_or_default();
            let vars = BTreeMap::from([
                ("assertion", &assertion),
                ("google", &google),
                ("attribute", &attribute),
            ]);
            let holds =
                expr::parse(&provider.attribute_condition).is_ok_and(|e| expr::holds(&e, &vars));
            if !holds {
                return Err((
                    name.clone(),
                    Some(subject.clone()),
                    oauth(
                        "unauthorized_client",
                        "The given credential is rejected by the attribute condition.",
                    ),
                ));
            }
        }
        let identity = FederatedIdentity {
            project_number: project_number.to_owned(),
            pool_id: pool_id.to_owned(),
            provider: name.clone(),
            provider_uid: None,
            subject,
            groups,
            attributes,
            namespace: None,
            shared_cluster: false,
            clusters: Vec::new(),
            service_account_uid: None,
            pod: None,
        };
        Ok((identity, name))
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
        let claims = match self.verify_access_token(&token, now()) {
            Ok(claims) if self.token_is_live(&claims).await => claims,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        assert!(matches!(
            parse_audience(
                "identitynamespace:p.svc.id.goog:https://container.googleapis.com/v1/projects/p/locations/l/clusters/c"
            ),
            Some(Audience::IdentityNamespace {
                pool: "p.svc.id.goog",
                issuer: "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c"
            })
        ));
        assert!(matches!(
            parse_audience(
                "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/prov"
            ),
            Some(Audience::Provider {
                project_number: "123",
                pool: "pool",
                provider: "prov"
            })
        ));
        for bad in [
            "",
            "identitynamespace:",
            "identitynamespace:p.svc.id.goog",
            "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool",
            "//iam.googleapis.com/locations/global/workforcePools/p/providers/x",
            "https://example.com",
        ] {
            assert!(parse_audience(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_uid_is_taken_only_beside_its_names() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let sub = "system:serviceaccount:ns1:ksa1";
        let full = claims(serde_json::json!({"kubernetes.io": {"namespace": "ns1",
            "serviceaccount": {"name": "ksa1", "uid": "U"}, "pod": {"name": "p", "uid": "P"}}}));
        assert_eq!(
            ksa_claims(&full, sub),
            Ok(KsaClaims {
                namespace: "ns1",
                name: "ksa1",
                uid: Some("U"),
                pod: Some(("p", "P"))
            })
        );
        // A uid beside another KSA's names, beside none, or not shaped like one, is left out;
        // the KSA is still the one `sub` names.
        for other in [
            serde_json::json!({"namespace": "other", "serviceaccount": {"name": "ksa1", "uid": "U"}}),
            serde_json::json!({"namespace": "ns1", "serviceaccount": {"name": "other", "uid": "U"}}),
            serde_json::json!({"namespace": 1, "serviceaccount": {"name": "ksa1", "uid": "U"}}),
            serde_json::json!({"serviceaccount": {"uid": "U"}}),
            serde_json::json!({"namespace": "ns1", "serviceaccount": {"name": "ksa1", "uid": 7}}),
            serde_json::json!({"namespace": "ns1", "serviceaccount": {"name": "ksa1", "uid": "a b"}}),
        ] {
            let c = claims(serde_json::json!({"kubernetes.io": other}));
            let ksa = ksa_claims(&c, sub).expect("the token names a KSA");
            assert_eq!(
                (ksa.namespace, ksa.name, ksa.uid),
                ("ns1", "ksa1", None),
                "{c:?}"
            );
        }
        // A pod claim not shaped like a pod's is left out of the federated token.
        let big = claims(
            serde_json::json!({"kubernetes.io": {"pod": {"name": "p".repeat(20_000), "uid": "P"}}}),
        );
        assert_eq!(ksa_claims(&big, sub).map(|k| k.pod), Ok(None));
        assert!(ksa_claims(&full, "system:serviceaccount:ns1").is_err());
        assert!(ksa_claims(&full, "alice").is_err());
    }

    #[test]
    fn token_audiences_may_be_arrays() {
        let accepted = vec!["p.svc.id.goog".to_owned()];
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(
            audience_accepted(
                &claims(serde_json::json!({"aud": ["x", "p.svc.id.goog"]})),
                &accepted
            )
            .is_ok()
        );
        assert!(
            audience_accepted(
                &claims(serde_json::json!({"aud": "p.svc.id.goog"})),
                &accepted
            )
            .is_ok()
        );
        assert!(audience_accepted(&claims(serde_json::json!({"aud": ["x"]})), &accepted).is_err());
        assert!(audience_accepted(&claims(serde_json::json!({})), &accepted).is_err());
    }
}
