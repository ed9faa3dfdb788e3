//! The rules of an exchange that need no I/O, as pure functions: what a request asks for
//! ([`exchange_terms`]), which provider its audience names ([`parse_audience`]), whether a
//! verified token's audience is accepted ([`audience_accepted`]), which KSA a cluster's token
//! names ([`ksa_claims`]), and what a provider's attribute mapping and condition make of a
//! token ([`map_attributes`], [`condition_holds`]). Errors are OAuth's, as STS answers them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use wid_api::bounds;
use wid_api::sts::{
    ExchangeRequest, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT,
};
use wid_iam::member::MAX_SUBJECT_BYTES;
use wid_iam::{expr, names};
use wid_jose::claims::TimeRules;

use crate::error::ApiError;

const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How far a subject token's times may be off, and how long it may live.
pub(super) const SUBJECT_RULES: TimeRules = TimeRules {
    skew: 60,
    max_lifetime: 48 * 3600,
};

const AUDIENCE_HELP: &str = "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider, or identitynamespace:PROJECT.svc.id.goog:ISSUER for a registered cluster.";
pub(super) const TARGET_HELP: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";

/// An error in OAuth's shape, as STS and the OAuth2 token endpoint answer.
pub(crate) fn oauth(error: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        error,
        description: description.into(),
    }
}

pub(crate) fn invalid_grant(description: impl Into<String>) -> ApiError {
    oauth("invalid_grant", description)
}

/// Which audience form a request used.
pub(super) enum Audience<'a> {
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
pub(super) fn parse_audience(audience: &str) -> Option<Audience<'_>> {
    if let Some(rest) = audience.strip_prefix("identitynamespace:") {
        let (pool, issuer) = rest.split_once(':')?;
        return (!pool.is_empty() && !issuer.is_empty())
            .then_some(Audience::IdentityNamespace { pool, issuer });
    }
    let path = audience
        .strip_prefix("//iam.googleapis.com/")
        .or_else(|| audience.strip_prefix("https://iam.googleapis.com/"))?;
    let (project_number, pool, provider) = wid_iam::names::split_provider_name(path)?;
    Some(Audience::Provider {
        project_number,
        pool,
        provider,
    })
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
pub(super) fn same_issuer(a: &str, b: &str) -> bool {
    names::canonical_issuer(a) == names::canonical_issuer(b)
}

/// What a cluster's token says of its KSA.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct KsaClaims<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Only when the token's `kubernetes.io` claims name the same KSA as its `sub`.
    pub uid: Option<&'a str>,
    /// `NAME (UID)` of the pod the token is bound to.
    pub pod: Option<(&'a str, &'a str)>,
}

/// Reads the KSA of a cluster's token: `sub` is `system:serviceaccount:NAMESPACE:NAME`. The uid
/// of its `kubernetes.io` claims is taken only beside the names it belongs to: when those claims
/// name the same KSA as `sub`, and the uid is shaped like one. Otherwise it is left out, and the
/// token satisfies no uid member: a uid vouches for nothing on its own.
pub(super) fn ksa_claims<'a>(
    claims: &'a Map<String, Value>,
    sub: &'a str,
) -> Result<KsaClaims<'a>, String> {
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
pub(super) fn audience_accepted(
    claims: &Map<String, Value>,
    accepted: &[String],
) -> Result<(), String> {
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

/// What an exchange request asks for, checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ExchangeTerms {
    pub audience: String,
    /// Trimmed: google-auth sends the token file's content as read, trailing newline included.
    pub subject_token: String,
    /// The scope asked for, or cloud-platform.
    pub scope: String,
}

impl ExchangeTerms {
    /// The provider the audience names (checked when the terms were).
    pub fn audience(&self) -> Option<Audience<'_>> {
        parse_audience(&self.audience)
    }
}

/// Reads and checks an exchange request (a form, or JSON as some clients send): the grant and
/// token types RFC 8693 and STS require, a subject token, bounded fields, an audience of a form
/// STS knows.
pub(super) fn exchange_terms(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ExchangeTerms, ApiError> {
    let invalid = |description: String| oauth("invalid_request", description);
    let request = if content_type.is_some_and(|c| c.starts_with("application/json")) {
        wid_api::json::from_slice::<ExchangeRequest>(body)
            .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?
    } else {
        ExchangeRequest::from_form(body).map_err(invalid)?
    };
    if request.grant_type.is_empty() {
        return Err(invalid("The \"grant_type\" parameter is missing.".into()));
    }
    if request.grant_type != GRANT_TYPE_TOKEN_EXCHANGE {
        return Err(oauth(
            "unsupported_grant_type",
            format!("Invalid value for \"grant_type\": expected {GRANT_TYPE_TOKEN_EXCHANGE}."),
        ));
    }
    if !request.requested_token_type.is_empty()
        && request.requested_token_type != TOKEN_TYPE_ACCESS_TOKEN
    {
        return Err(invalid(format!(
            "Invalid value for \"requested_token_type\": expected {TOKEN_TYPE_ACCESS_TOKEN}."
        )));
    }
    if ![TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN].contains(&request.subject_token_type.as_str()) {
        return Err(invalid(format!(
            "Invalid value for \"subject_token_type\": expected {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}."
        )));
    }
    let subject_token = request.subject_token.trim();
    if subject_token.is_empty() {
        return Err(invalid(
            "The \"subject_token\" parameter is missing.".into(),
        ));
    }
    too_long(
        "audience",
        &request.audience,
        bounds::MAX_STS_AUDIENCE_BYTES,
    )?;
    too_long("scope", &request.scope, bounds::MAX_SCOPE_BYTES)?;
    let audience = request.audience.trim();
    if parse_audience(audience).is_none() {
        return Err(invalid(AUDIENCE_HELP.into()));
    }
    let scope = match request.scope.trim() {
        "" => DEFAULT_SCOPE,
        scope => scope,
    };
    Ok(ExchangeTerms {
        audience: audience.to_owned(),
        subject_token: subject_token.to_owned(),
        scope: scope.to_owned(),
    })
}

/// What a provider's attribute mapping made of a token.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Mapped {
    pub subject: String,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

/// Applies a provider's attribute mapping to a verified token's claims (`assertion`), as
/// Google does: `google.subject` must give a string (1 to 127 bytes), `google.groups` a list or
/// a string, `attribute.NAME` anything (a string as it is, others as JSON, null left out); an
/// attribute whose expression fails is left unset. What it makes is bounded.
pub(super) fn map_attributes(
    mapping: &BTreeMap<String, String>,
    assertion: &Value,
) -> Result<Mapped, String> {
    let mut subject = None;
    let mut mapped = Mapped::default();
    let vars = BTreeMap::from([("assertion", assertion)]);
    for (key, text) in mapping {
        let value = expr::parse(text).and_then(|e| expr::eval(&e, &vars));
        match (key.as_str(), value) {
            ("google.subject", Ok(Value::String(s))) => subject = Some(s),
            ("google.subject", Ok(other)) => {
                return Err(format!(
                    "The attribute mapping for google.subject gave {other}, not a string."
                ));
            }
            ("google.subject", Err(e)) => {
                return Err(format!(
                    "The attribute mapping for google.subject failed: {e}."
                ));
            }
            ("google.groups", Ok(Value::Array(items))) => {
                mapped.groups = items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
            }
            ("google.groups", Ok(Value::String(s))) => mapped.groups = vec![s],
            (key, Ok(value)) => {
                let Some(name) = key.strip_prefix("attribute.") else {
                    continue;
                };
                let text = match value {
                    Value::String(s) => s,
                    Value::Null => continue,
                    other => other.to_string(),
                };
                mapped.attributes.insert(name.to_owned(), text);
            }
            (_, Err(_)) => {}
        }
    }
    let size: usize = mapped.groups.iter().map(String::len).sum::<usize>()
        + mapped
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > bounds::MAX_MAPPED_ATTRIBUTE_BYTES {
        return Err(format!(
            "The attribute mapping made {size} bytes of groups and attributes; at most {} are accepted.",
            bounds::MAX_MAPPED_ATTRIBUTE_BYTES
        ));
    }
    let subject =
        subject.ok_or("The attribute mapping did not produce google.subject.".to_owned())?;
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "The mapped google.subject is {} bytes; it must be 1 to {MAX_SUBJECT_BYTES}.",
            subject.len()
        ));
    }
    mapped.subject = subject;
    Ok(mapped)
}

/// Whether a provider's attribute condition holds for a token and what its mapping made; an
/// empty condition always does, one outside the supported subset never (fail closed).
pub(super) fn condition_holds(condition: &str, assertion: &Value, mapped: &Mapped) -> bool {
    if condition.is_empty() {
        return true;
    }
    let google = serde_json::json!({ "subject": mapped.subject, "groups": mapped.groups });
    let attribute = serde_json::to_value(&mapped.attributes).unwrap_or_default();
    let vars = BTreeMap::from([
        ("assertion", assertion),
        ("google", &google),
        ("attribute", &attribute),
    ]);
    expr::parse(condition).is_ok_and(|e| expr::holds(&e, &vars))
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

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs)
            .expect("form")
            .into_bytes()
    }

    const PROVIDER: &str =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x";

    fn error_of(result: Result<ExchangeTerms, ApiError>) -> &'static str {
        match result {
            Err(ApiError::OAuth { error, .. }) => error,
            other => panic!("not an OAuth refusal: {other:?}"),
        }
    }

    #[test]
    fn exchange_requests_are_checked() {
        let good = [
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("audience", PROVIDER),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("subject_token", "t.t.t\n"),
        ];
        let terms = exchange_terms(None, &form(&good)).expect("valid");
        assert_eq!(
            terms,
            ExchangeTerms {
                audience: PROVIDER.into(),
                subject_token: "t.t.t".into(),
                scope: DEFAULT_SCOPE.into()
            }
        );
        let json = serde_json::json!({"grantType": GRANT_TYPE_TOKEN_EXCHANGE, "audience": PROVIDER,
            "subjectTokenType": TOKEN_TYPE_JWT, "subjectToken": "t", "scope": "s"});
        let from_json = exchange_terms(Some("application/json"), json.to_string().as_bytes());
        assert_eq!(from_json.map(|t| t.scope).ok(), Some("s".to_owned()));
        let with = |key: &str, value: &str| {
            let mut pairs: Vec<(&str, &str)> =
                good.iter().copied().filter(|(k, _)| *k != key).collect();
            pairs.push((key, value));
            exchange_terms(None, &form(&pairs))
        };
        assert_eq!(
            error_of(with("grant_type", "password")),
            "unsupported_grant_type"
        );
        assert_eq!(error_of(with("grant_type", "")), "invalid_request");
        assert_eq!(error_of(with("subject_token_type", "x")), "invalid_request");
        assert_eq!(
            error_of(with("requested_token_type", "x")),
            "invalid_request"
        );
        assert_eq!(error_of(with("subject_token", " ")), "invalid_request");
        assert_eq!(
            error_of(with("audience", "https://example.com")),
            "invalid_request"
        );
        let long = "s".repeat(bounds::MAX_SCOPE_BYTES + 1);
        assert_eq!(error_of(with("scope", &long)), "invalid_request");
        assert_eq!(
            error_of(exchange_terms(Some("application/json"), b"{")),
            "invalid_request"
        );
    }

    fn mapping(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn attribute_mappings_and_conditions() {
        let assertion = serde_json::json!({"sub": "alice", "groups": ["a", "b"], "team": 7,
            "nothing": null});
        let rules = mapping(&[
            ("google.subject", "assertion.sub"),
            ("google.groups", "assertion.groups"),
            ("attribute.team", "assertion.team"),
            ("attribute.none", "assertion.nothing"),
            ("attribute.broken", "assertion.missing.deeper"),
        ]);
        let mapped = map_attributes(&rules, &assertion).expect("maps");
        assert_eq!(mapped.subject, "alice");
        assert_eq!(mapped.groups, vec!["a", "b"]);
        assert_eq!(
            mapped.attributes,
            BTreeMap::from([("team".to_owned(), "7".to_owned())]),
            "null and failing attributes are left unset"
        );
        assert!(condition_holds("", &assertion, &mapped));
        assert!(condition_holds(
            "attribute.team == '7'",
            &assertion,
            &mapped
        ));
        assert!(!condition_holds(
            "google.subject == 'bob'",
            &assertion,
            &mapped
        ));
        assert!(
            !condition_holds("request.time < timestamp('2030')", &assertion, &mapped),
            "outside the subset: fails closed"
        );
        for bad in [
            mapping(&[("attribute.x", "assertion.sub")]),
            mapping(&[("google.subject", "assertion.team")]),
            mapping(&[("google.subject", "assertion.missing")]),
        ] {
            assert!(map_attributes(&bad, &assertion).is_err(), "{bad:?}");
        }
        let huge =
            serde_json::json!({"sub": "a", "big": "x".repeat(bounds::MAX_MAPPED_ATTRIBUTE_BYTES)});
        let rules = mapping(&[
            ("google.subject", "assertion.sub"),
            ("attribute.big", "assertion.big"),
        ]);
        assert!(map_attributes(&rules, &huge).is_err(), "bounded");
    }
}
