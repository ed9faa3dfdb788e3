//! IAM binding members, and the callers they match.
//!
//! A member string is parsed once into [`Member`], which says what it denotes rather than how it
//! was written. Two spellings of one Kubernetes service account, the GKE form
//! `serviceAccount:P.svc.id.goog[NS/KSA]` and
//! `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P.svc.id.goog/subject/ns/NS/sa/KSA`,
//! become the same [`Member::PoolSubject`], so a policy matches a caller whichever form it uses.
//!
//! Isolated clusters. A KSA of a cluster registered with `--isolated` has the subject
//! `locations/LOCATION/clusters/CLUSTER/ns/NS/sa/KSA` in the project's pool; its members are
//! `principal://…/P.svc.id.goog/subject/locations/L/clusters/C/ns/NS/sa/KSA` and the short GKE-style
//! alias `serviceAccount:P.svc.id.goog[L/C/NS/KSA]`.
//!
//! What each form trusts, and from whom ([`Vouch`] says who vouched for a caller):
//! - a subject (`principal://…/subject/S`, `serviceAccount:P.svc.id.goog[…]`) is the identity STS
//!   built: for a cluster from the `sub` of a token its keys signed, for a provider from its
//!   mapping; isolated clusters' subjects carry their cluster, so they never alias another's;
//! - `/namespace/NS` and `/kubernetes.serviceaccount.uid/UID` trust the claims of shared clusters
//!   only, every shared cluster of the project alike (GKE's identity sameness): the namespace of
//!   `sub`, and the uid of a token whose `kubernetes.io` namespace and name agree with its `sub`;
//! - `/kubernetes.cluster/URL` names one registered cluster, shared or isolated: wid's own record,
//!   no claim;
//! - `/*` is every identity of the pool but those of isolated clusters; `/group/G` and
//!   `/attribute.NAME/VALUE` are what a provider's attribute mapping made of its tokens, and no
//!   cluster has them.
//!
//! An isolated cluster's KSA is thus named only by its own subject and by its cluster.

use std::collections::BTreeMap;
use std::fmt;

use crate::names::{
    GKE_POOL_SUFFIX, is_email, is_kubernetes_namespace, is_kubernetes_service_account,
};

const PRINCIPAL_PREFIX: &str = "principal://iam.googleapis.com/";
const PRINCIPAL_SET_PREFIX: &str = "principalSet://iam.googleapis.com/";

/// At most this many bytes in `google.subject` (Google's limit).
pub const MAX_SUBJECT_BYTES: usize = 127;

/// A workload identity pool named by a member. The GKE legacy form names the pool without a
/// project number; pool ids of the form `P.svc.id.goog` are unique, so the id alone suffices.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolRef {
    pub project_number: Option<String>,
    pub pool_id: String,
}

/// What a `principalSet://` selects inside its pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolSelector {
    /// `/*`: every identity of the pool.
    All,
    /// `/group/G`: identities whose `google.groups` contain G.
    Group(String),
    /// `/attribute.NAME/VALUE`: identities whose custom attribute NAME equals VALUE.
    Attribute { name: String, value: String },
    /// `/namespace/NS`: every KSA of namespace NS in the project's shared clusters.
    Namespace(String),
    /// `/kubernetes.cluster/URL`: every KSA of the cluster with that issuer URL (in its canonical
    /// form, see [`crate::names::canonical_issuer`]) or GKE-style resource URL.
    Cluster(String),
    /// `/kubernetes.serviceaccount.uid/UID`: the KSA with that uid.
    ServiceAccountUid(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    AllUsers,
    AllAuthenticatedUsers,
    User(String),
    ServiceAccount(String),
    Group(String),
    Domain(String),
    /// One federated identity: a pool and its `google.subject`.
    PoolSubject {
        pool: PoolRef,
        subject: String,
    },
    /// A set of federated identities.
    PoolSet {
        pool: PoolRef,
        selector: PoolSelector,
    },
    /// `deleted:KIND:EMAIL?uid=ID`: a principal that was deleted. It matches nobody, not even a
    /// later principal with the same email.
    Deleted(String),
}

/// Why a member string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid member '{member}': {reason}")]
pub struct MemberError {
    pub member: String,
    pub reason: String,
}

fn err(member: &str, reason: impl Into<String>) -> MemberError {
    MemberError {
        member: member.to_owned(),
        reason: reason.into(),
    }
}

impl Member {
    /// Parses a member string as IAM accepts it.
    pub fn parse(s: &str) -> Result<Member, MemberError> {
        match s {
            "allUsers" => return Ok(Member::AllUsers),
            "allAuthenticatedUsers" => return Ok(Member::AllAuthenticatedUsers),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix(PRINCIPAL_PREFIX) {
            return parse_principal(s, rest);
        }
        if let Some(rest) = s.strip_prefix("deleted:") {
            let (inner, uid) = rest
                .rsplit_once("?uid=")
                .ok_or_else(|| err(s, "a deleted principal is deleted:KIND:EMAIL?uid=ID"))?;
            let kind_ok = matches!(
                Member::parse(inner)?,
                Member::User(_) | Member::ServiceAccount(_) | Member::Group(_)
            );
            if !kind_ok || uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    s,
                    "a deleted principal is deleted:user|serviceAccount|group:EMAIL?uid=ID",
                ));
            }
            return Ok(Member::Deleted(s.to_owned()));
        }
        if let Some(rest) = s.strip_prefix(PRINCIPAL_SET_PREFIX) {
            return parse_principal_set(s, rest);
        }
        let Some((kind, value)) = s.split_once(':') else {
            return Err(err(
                s,
                "expected 'user:', 'serviceAccount:', 'group:', 'domain:', 'principal://', 'principalSet://', 'allUsers' or 'allAuthenticatedUsers'",
            ));
        };
        let email = |make: fn(String) -> Member| {
            if is_email(value) {
                Ok(make(value.to_ascii_lowercase()))
            } else {
                Err(err(s, "not a valid email address"))
            }
        };
        match kind {
            "user" => email(Member::User),
            "group" => email(Member::Group),
            "serviceAccount" => match parse_gke_ksa(s, value)? {
                Some(member) => Ok(member),
                None => email(Member::ServiceAccount),
            },
            "domain" => {
                let ok = value.contains('.')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if ok {
                    Ok(Member::Domain(value.to_ascii_lowercase()))
                } else {
                    Err(err(s, "not a valid domain"))
                }
            }
            _ => Err(err(s, format!("unknown member type '{kind}'"))),
        }
    }
}

/// `P.svc.id.goog[NS/KSA]` or, for an isolated cluster, `P.svc.id.goog[L/C/NS/KSA]`.
/// Returns `None` when `value` is not of this form at all (then it is an email).
fn parse_gke_ksa(whole: &str, value: &str) -> Result<Option<Member>, MemberError> {
    let Some((pool, rest)) = value.split_once('[') else {
        return Ok(None);
    };
    if !pool.ends_with(GKE_POOL_SUFFIX) || pool.len() == GKE_POOL_SUFFIX.len() {
        return Err(err(
            whole,
            "the part before '[' must be a workload identity pool PROJECT.svc.id.goog",
        ));
    }
    let inner = rest
        .strip_suffix(']')
        .ok_or_else(|| err(whole, "missing closing ']'"))?;
    let parts: Vec<&str> = inner.split('/').collect();
    let subject = match parts.as_slice() {
        [ns, ksa] => ksa_subject(whole, None, ns, ksa)?,
        [location, cluster, ns, ksa] => ksa_subject(whole, Some((location, cluster)), ns, ksa)?,
        _ => {
            return Err(err(
                whole,
                "expected [NAMESPACE/KSA], or [LOCATION/CLUSTER/NAMESPACE/KSA] for an isolated cluster",
            ));
        }
    };
    Ok(Some(Member::PoolSubject {
        pool: PoolRef {
            project_number: None,
            pool_id: pool.to_owned(),
        },
        subject,
    }))
}

fn ksa_subject(
    whole: &str,
    cluster: Option<(&str, &str)>,
    ns: &str,
    ksa: &str,
) -> Result<String, MemberError> {
    if !is_kubernetes_namespace(ns) {
        return Err(err(
            whole,
            format!("'{ns}' is not a valid Kubernetes namespace"),
        ));
    }
    if !is_kubernetes_service_account(ksa) {
        return Err(err(
            whole,
            format!("'{ksa}' is not a valid Kubernetes service account name"),
        ));
    }
    Ok(match cluster {
        None => gke_subject(ns, ksa),
        Some((location, name)) => {
            crate::names::validate_cluster_segment("location", location)
                .map_err(|r| err(whole, r))?;
            crate::names::validate_cluster_segment("cluster name", name)
                .map_err(|r| err(whole, r))?;
            isolated_gke_subject(location, name, ns, ksa)
        }
    })
}

/// The `principal://` identifier of one identity of a pool.
pub fn principal_name(project_number: &str, pool_id: &str, subject: &str) -> String {
    format!(
        "{PRINCIPAL_PREFIX}projects/{project_number}/locations/global/workloadIdentityPools/{pool_id}/subject/{subject}"
    )
}

/// The `google.subject` of a KSA of a shared cluster: `ns/NS/sa/KSA`.
pub fn gke_subject(namespace: &str, ksa: &str) -> String {
    format!("ns/{namespace}/sa/{ksa}")
}

/// The `google.subject` of a KSA of an isolated cluster.
pub fn isolated_gke_subject(location: &str, cluster: &str, namespace: &str, ksa: &str) -> String {
    format!("locations/{location}/clusters/{cluster}/ns/{namespace}/sa/{ksa}")
}

/// `projects/N/locations/global/workloadIdentityPools/POOL/` then the rest.
fn split_pool_path<'a>(whole: &str, rest: &'a str) -> Result<(PoolRef, &'a str), MemberError> {
    let shape = "expected projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL/...";
    let rest = rest
        .strip_prefix("projects/")
        .ok_or_else(|| err(whole, shape))?;
    let (number, rest) = rest.split_once('/').ok_or_else(|| err(whole, shape))?;
    if crate::names::validate_project_number(number).is_err() {
        return Err(err(whole, format!("'{number}' is not a project number")));
    }
    let rest = rest
        .strip_prefix("locations/global/workloadIdentityPools/")
        .ok_or_else(|| err(whole, shape))?;
    let (pool, rest) = rest.split_once('/').ok_or_else(|| err(whole, shape))?;
    let pool_ok = !pool.is_empty()
        && pool.len() <= 63
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !pool_ok {
        return Err(err(
            whole,
            format!("'{pool}' is not a workload identity pool id"),
        ));
    }
    Ok((
        PoolRef {
            project_number: Some(number.to_owned()),
            pool_id: pool.to_owned(),
        },
        rest,
    ))
}

fn parse_principal(whole: &str, rest: &str) -> Result<Member, MemberError> {
    let (pool, rest) = split_pool_path(whole, rest)?;
    if let Some(subject) = rest.strip_prefix("subject/") {
        if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
            return Err(err(
                whole,
                format!("the subject must be 1 to {MAX_SUBJECT_BYTES} bytes"),
            ));
        }
        return Ok(Member::PoolSubject {
            pool,
            subject: subject.to_owned(),
        });
    }
    if let Some(uid) = rest.strip_prefix("kubernetes.serviceaccount.uid/") {
        return selector(whole, pool, uid, PoolSelector::ServiceAccountUid);
    }
    Err(err(
        whole,
        "expected .../subject/SUBJECT or .../kubernetes.serviceaccount.uid/UID",
    ))
}

fn selector(
    whole: &str,
    pool: PoolRef,
    value: &str,
    make: fn(String) -> PoolSelector,
) -> Result<Member, MemberError> {
    if value.is_empty() {
        return Err(err(whole, "the value after the last '/' is empty"));
    }
    Ok(Member::PoolSet {
        pool,
        selector: make(value.to_owned()),
    })
}

fn parse_principal_set(whole: &str, rest: &str) -> Result<Member, MemberError> {
    let (pool, rest) = split_pool_path(whole, rest)?;
    if rest == "*" {
        return Ok(Member::PoolSet {
            pool,
            selector: PoolSelector::All,
        });
    }
    if let Some(group) = rest.strip_prefix("group/") {
        return selector(whole, pool, group, PoolSelector::Group);
    }
    if let Some(ns) = rest.strip_prefix("namespace/") {
        if !is_kubernetes_namespace(ns) {
            return Err(err(
                whole,
                format!("'{ns}' is not a valid Kubernetes namespace"),
            ));
        }
        return selector(whole, pool, ns, PoolSelector::Namespace);
    }
    if let Some(url) = rest.strip_prefix("kubernetes.cluster/") {
        let url = crate::names::canonical_issuer(url);
        return selector(whole, pool, &url, PoolSelector::Cluster);
    }
    if let Some(uid) = rest.strip_prefix("kubernetes.serviceaccount.uid/") {
        return selector(whole, pool, uid, PoolSelector::ServiceAccountUid);
    }
    if let Some(attr) = rest.strip_prefix("attribute.") {
        let (name, value) = attr
            .split_once('/')
            .ok_or_else(|| err(whole, "expected attribute.NAME/VALUE"))?;
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !name_ok || value.is_empty() {
            return Err(err(
                whole,
                "expected attribute.NAME/VALUE with NAME of [a-z0-9_]",
            ));
        }
        return Ok(Member::PoolSet {
            pool,
            selector: PoolSelector::Attribute {
                name: name.to_owned(),
                value: value.to_owned(),
            },
        });
    }
    Err(err(
        whole,
        "expected .../POOL/*, /group/G, /attribute.NAME/VALUE, /namespace/NS, /kubernetes.cluster/URL or /kubernetes.serviceaccount.uid/UID",
    ))
}

/// Who vouched for a federated caller, which decides the selectors that may match it (see the
/// module's documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Vouch {
    /// A pool's OIDC provider: its attribute mapping made every attribute.
    Provider,
    /// A shared cluster of the project's GKE pool: trusted, as every shared cluster is, with its
    /// KSAs' namespaces and uids.
    SharedCluster,
    /// An isolated cluster: trusted with nothing beyond its own KSAs' subjects. The default,
    /// as the one that grants least.
    #[default]
    IsolatedCluster,
}

/// A federated caller: the identity a token exchange established.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FederatedCaller {
    pub vouch: Vouch,
    pub project_number: String,
    pub pool_id: String,
    /// `google.subject`.
    pub subject: String,
    /// `google.groups`.
    pub groups: Vec<String>,
    /// Custom attributes, by name without the `attribute.` prefix.
    pub attributes: BTreeMap<String, String>,
    /// The KSA's namespace (shared clusters only).
    pub namespace: Option<String>,
    /// The names of the KSA's cluster: its canonical issuer URL and its GKE-style resource URL
    /// `https://container.googleapis.com/v1/projects/P/locations/L/clusters/C`.
    pub clusters: Vec<String>,
    /// The KSA's uid, when the token carried one that agrees with its subject (shared clusters
    /// only).
    pub service_account_uid: Option<String>,
    /// The pod the KSA token was bound to, for audit records only: no binding can name a pod.
    pub pod: Option<String>,
}

/// Who is calling, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The bearer of the bootstrap admin token: allowed everything.
    BootstrapAdmin,
    User(String),
    ServiceAccount(String),
    Federated(FederatedCaller),
}

impl fmt::Display for Caller {
    /// The caller as audit records and logs name it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::BootstrapAdmin => f.write_str("bootstrap-admin"),
            Caller::User(email) => write!(f, "user:{email}"),
            Caller::ServiceAccount(email) => write!(f, "serviceAccount:{email}"),
            Caller::Federated(fc) => f.write_str(&principal_name(
                &fc.project_number,
                &fc.pool_id,
                &fc.subject,
            )),
        }
    }
}

impl PoolRef {
    fn covers(&self, caller: &FederatedCaller) -> bool {
        self.pool_id == caller.pool_id
            && self
                .project_number
                .as_ref()
                .is_none_or(|n| *n == caller.project_number)
    }
}

impl Member {
    /// Whether this member denotes `caller`. `group:` members never match: wid has no
    /// directory of users' groups, and failing closed is the safe side.
    pub fn matches(&self, caller: &Caller) -> bool {
        match (self, caller) {
            (_, Caller::BootstrapAdmin) => false,
            (Member::AllUsers | Member::AllAuthenticatedUsers, _) => true,
            (Member::User(m), Caller::User(c)) => m.eq_ignore_ascii_case(c),
            (Member::ServiceAccount(m), Caller::ServiceAccount(c)) => m.eq_ignore_ascii_case(c),
            (Member::Domain(d), Caller::User(c) | Caller::ServiceAccount(c)) => c
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(d)),
            (Member::PoolSubject { pool, subject }, Caller::Federated(fc)) => {
                pool.covers(fc) && *subject == fc.subject
            }
            (Member::PoolSet { pool, selector }, Caller::Federated(fc)) => {
                pool.covers(fc) && selector.selects(fc)
            }
            _ => false,
        }
    }
}

impl PoolSelector {
    /// Whether this selector takes in `caller`, trusting of its claims only what the one who
    /// vouched for it may say (the module's documentation has the table).
    fn selects(&self, caller: &FederatedCaller) -> bool {
        let shared = caller.vouch == Vouch::SharedCluster;
        match self {
            PoolSelector::All => caller.vouch != Vouch::IsolatedCluster,
            PoolSelector::Group(g) => {
                caller.vouch == Vouch::Provider && caller.groups.iter().any(|cg| cg == g)
            }
            PoolSelector::Attribute { name, value } => {
                caller.vouch == Vouch::Provider
                    && caller.attributes.get(name).is_some_and(|v| v == value)
            }
            PoolSelector::Namespace(ns) => {
                shared && caller.namespace.as_deref() == Some(ns.as_str())
            }
            PoolSelector::Cluster(url) => {
                caller.vouch != Vouch::Provider && caller.clusters.iter().any(|c| c == url)
            }
            PoolSelector::ServiceAccountUid(uid) => {
                shared && caller.service_account_uid.as_deref() == Some(uid.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ksa_caller(pool: &str, number: &str, subject: &str) -> Caller {
        Caller::Federated(FederatedCaller {
            project_number: number.into(),
            pool_id: pool.into(),
            subject: subject.into(),
            namespace: Some("ns1".into()),
            vouch: Vouch::SharedCluster,
            ..Default::default()
        })
    }

    #[test]
    fn gke_and_principal_forms_are_one_identity() {
        let legacy = Member::parse("serviceAccount:my-proj.svc.id.goog[ns1/ksa1]").expect("legacy");
        let principal = Member::parse(
            "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/my-proj.svc.id.goog/subject/ns/ns1/sa/ksa1",
        )
        .expect("principal");
        let caller = ksa_caller("my-proj.svc.id.goog", "123", "ns/ns1/sa/ksa1");
        assert!(legacy.matches(&caller));
        assert!(principal.matches(&caller));
        // Another project number never matches the principal:// form.
        assert!(!principal.matches(&ksa_caller("my-proj.svc.id.goog", "999", "ns/ns1/sa/ksa1")));
        assert!(!legacy.matches(&ksa_caller("my-proj.svc.id.goog", "123", "ns/ns1/sa/ksa2")));
    }

    #[test]
    fn isolated_cluster_forms() {
        let legacy = Member::parse("serviceAccount:p.svc.id.goog[us-east1/prod/ns1/ksa1]")
            .expect("isolated");
        assert_eq!(
            legacy,
            Member::PoolSubject {
                pool: PoolRef {
                    project_number: None,
                    pool_id: "p.svc.id.goog".into()
                },
                subject: "locations/us-east1/clusters/prod/ns/ns1/sa/ksa1".into()
            }
        );
        let shared = ksa_caller("p.svc.id.goog", "1", "ns/ns1/sa/ksa1");
        assert!(!legacy.matches(&shared));
    }

    #[test]
    fn principal_sets() {
        let ns = Member::parse(
            "principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p.svc.id.goog/namespace/ns1",
        )
        .expect("ns");
        assert!(ns.matches(&ksa_caller("p.svc.id.goog", "123", "ns/ns1/sa/x")));
        let all = Member::parse(
            "principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool-a/*",
        )
        .expect("all");
        assert!(all.matches(&ksa_caller("pool-a", "123", "anything")));
        assert!(!all.matches(&ksa_caller("pool-b", "123", "anything")));
        assert!(Member::parse("principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/p/attribute.env/prod").is_ok());
    }

    /// Every selector form of iam-sts-protocol.md 3.6, naming `value` where it takes one.
    fn every_form(pool: &str, number: &str, value: &str) -> Vec<String> {
        let base = format!(
            "iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/{pool}"
        );
        let mut forms = vec![format!("principalSet://{base}/*")];
        for rest in [
            format!("group/{value}"),
            format!("attribute.a/{value}"),
            format!("namespace/{value}"),
            format!("kubernetes.serviceaccount.uid/{value}"),
            format!("kubernetes.cluster/https://{value}.example"),
        ] {
            forms.push(format!("principalSet://{base}/{rest}"));
        }
        forms.push(format!(
            "principal://{base}/kubernetes.serviceaccount.uid/{value}"
        ));
        forms.push(format!("principal://{base}/subject/ns/{value}/sa/{value}"));
        forms.push(format!("serviceAccount:{pool}[{value}/{value}]"));
        forms
    }

    proptest::proptest! {
        /// Whatever its token claimed, a KSA of an isolated cluster is named by no member of the
        /// shared pool: only its own subject and its cluster's selector.
        #[test]
        fn isolated_clusters_claim_nothing_in_the_shared_pool(
            value in "[a-z][a-z0-9]{0,8}",
            ns in "[a-z][a-z0-9]{0,8}",
        ) {
            let cluster = format!("https://{value}.example");
            let caller = Caller::Federated(FederatedCaller {
                project_number: "123".into(),
                pool_id: "p.svc.id.goog".into(),
                subject: isolated_gke_subject("l", "c", &ns, &value),
                groups: vec![value.clone()],
                attributes: BTreeMap::from([("a".to_owned(), value.clone())]),
                namespace: Some(value.clone()),
                clusters: vec![cluster.clone()],
                service_account_uid: Some(value.clone()),
                vouch: Vouch::IsolatedCluster,
                pod: None,
            });
            for form in every_form("p.svc.id.goog", "123", &value) {
                let member = Member::parse(&form).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                let named = form.ends_with(&format!("kubernetes.cluster/{cluster}"));
                proptest::prop_assert_eq!(member.matches(&caller), named, "{}", form);
            }
            let own = Member::parse(&format!("serviceAccount:p.svc.id.goog[l/c/{ns}/{value}]"))
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert!(own.matches(&caller));
        }

        /// A shared cluster's KSA is named by its subject, its namespace, its uid, its cluster
        /// and the whole pool; never by groups or attributes, which only providers map.
        #[test]
        fn shared_clusters_are_trusted_with_namespaces_and_uids(value in "[a-z][a-z0-9]{0,8}") {
            let caller = Caller::Federated(FederatedCaller {
                project_number: "123".into(),
                pool_id: "p.svc.id.goog".into(),
                subject: gke_subject(&value, &value),
                groups: vec![value.clone()],
                attributes: BTreeMap::from([("a".to_owned(), value.clone())]),
                namespace: Some(value.clone()),
                clusters: vec![format!("https://{value}.example")],
                service_account_uid: Some(value.clone()),
                vouch: Vouch::SharedCluster,
                pod: None,
            });
            for form in every_form("p.svc.id.goog", "123", &value) {
                let member = Member::parse(&form).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                let expected = !(form.contains("/group/") || form.contains("/attribute."));
                proptest::prop_assert_eq!(member.matches(&caller), expected, "{}", form);
                // Another pool, or the same pool of another project number, never.
                let other = Member::parse(&form.replace("/123/", "/124/"))
                    .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                if form.starts_with("principal") {
                    proptest::prop_assert!(!other.matches(&caller), "{}", form);
                }
            }
        }
    }

    #[test]
    fn cluster_selectors_compare_canonical_issuers() {
        let m = Member::parse("principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p.svc.id.goog/kubernetes.cluster/https://K1.example/")
            .expect("cluster");
        let caller = Caller::Federated(FederatedCaller {
            project_number: "1".into(),
            pool_id: "p.svc.id.goog".into(),
            clusters: vec!["https://k1.example".into()],
            vouch: Vouch::SharedCluster,
            ..Default::default()
        });
        assert!(m.matches(&caller));
    }

    #[test]
    fn malformed_members_are_refused() {
        for bad in [
            "",
            "alice@example.com",
            "user:",
            "user:not-an-email",
            "robot:x@y.z",
            "serviceAccount:p.svc.id.goog[ns1]",
            "serviceAccount:p.svc.id.goog[ns1/ksa1",
            "serviceAccount:p.svc.id.goog[NS/ksa]",
            "serviceAccount:x[ns/ksa]",
            "principal://iam.googleapis.com/projects/abc/locations/global/workloadIdentityPools/p/subject/x",
            "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/",
            "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/bogus/x",
            "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/attribute.Bad/x",
        ] {
            assert!(Member::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn deleted_principals_match_nobody() {
        let m = Member::parse("deleted:serviceAccount:a-sa@p.iam.gserviceaccount.com?uid=123")
            .expect("deleted");
        assert!(!m.matches(&Caller::ServiceAccount(
            "a-sa@p.iam.gserviceaccount.com".into()
        )));
        assert!(Member::parse("deleted:serviceAccount:a-sa@p.iam.gserviceaccount.com").is_err());
        assert!(Member::parse("deleted:allUsers?uid=1").is_err());
    }

    #[test]
    fn emails_match_case_insensitively() {
        let m = Member::parse("user:Alice@Example.com").expect("user");
        assert!(m.matches(&Caller::User("alice@example.com".into())));
        assert!(!m.matches(&Caller::ServiceAccount("alice@example.com".into())));
        assert!(
            !Member::parse("group:g@example.com")
                .expect("group")
                .matches(&Caller::User("g@example.com".into()))
        );
    }
}
