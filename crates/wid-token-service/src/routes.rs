//! Google's REST paths, parsed into a typed [`Route`] by a pure function, so that routing and
//! its errors are tested without a server. Custom methods (`…/{sa}:getIamPolicy`) share their
//! path segment with a resource id, which path routers cannot split; this parser does.

use axum::http::Method;

use crate::credentials::CredentialsVerb;
use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyVerb {
    GetIamPolicy,
    SetIamPolicy,
    TestIamPermissions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountVerb {
    Policy(PolicyVerb),
    Disable,
    Enable,
    /// IAM Credentials: generateAccessToken, generateIdToken, signBlob, signJwt.
    Credentials(CredentialsVerb),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Healthz,
    /// STS `POST /v1/token`.
    Token,
    /// STS `POST /v1/introspect`.
    Introspect,
    /// `/tokeninfo`.
    TokenInfo,
    /// `/oauth2/v3/certs`.
    Jwks,
    /// `/oauth2/v1/certs`.
    PemCerts,
    /// `/.well-known/openid-configuration`.
    OpenIdConfiguration,
    /// `/service_accounts/v1/metadata/{jwk|x509}/{EMAIL}`.
    AccountKeys {
        format: String,
        account: String,
    },
    /// `GET /v1/signingKeys`.
    SigningKeys,
    /// `POST /v1/signingKeys:rotate`.
    RotateSigningKeys,
    /// `GET /v1/auditEvents`.
    AuditEvents,
    Projects,
    Project(String),
    ProjectPolicy(String, PolicyVerb),
    ServiceAccounts(String),
    ServiceAccount {
        project: String,
        account: String,
    },
    ServiceAccountVerb {
        project: String,
        account: String,
        verb: AccountVerb,
    },
    Pools {
        project: String,
        location: String,
    },
    Pool {
        project: String,
        location: String,
        pool: String,
    },
    Providers {
        project: String,
        location: String,
        pool: String,
    },
    Provider {
        project: String,
        location: String,
        pool: String,
        provider: String,
    },
    /// `…/operations/{id}` under a pool or provider: every operation is done when returned.
    Operation(String),
    Clusters {
        project: String,
        location: String,
    },
    Cluster {
        project: String,
        location: String,
        name: String,
    },
}

impl Route {
    /// The methods each route answers.
    pub fn allowed(&self) -> &'static [Method] {
        const GET: &[Method] = &[Method::GET];
        const POST: &[Method] = &[Method::POST];
        const LIST_CREATE: &[Method] = &[Method::GET, Method::POST];
        const RESOURCE: &[Method] = &[Method::GET, Method::PATCH, Method::DELETE];
        match self {
            Route::Healthz
            | Route::Project(_)
            | Route::Operation(_)
            | Route::Jwks
            | Route::PemCerts
            | Route::OpenIdConfiguration
            | Route::AccountKeys { .. }
            | Route::SigningKeys
            | Route::AuditEvents => GET,
            Route::TokenInfo => &[Method::GET, Method::POST],
            Route::ProjectPolicy(..)
            | Route::ServiceAccountVerb { .. }
            | Route::Token
            | Route::Introspect
            | Route::RotateSigningKeys => POST,
            Route::Projects
            | Route::ServiceAccounts(_)
            | Route::Pools { .. }
            | Route::Providers { .. }
            | Route::Clusters { .. } => LIST_CREATE,
            Route::ServiceAccount { .. } => {
                &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE]
            }
            Route::Pool { .. } | Route::Provider { .. } => RESOURCE,
            Route::Cluster { .. } => &[Method::GET, Method::DELETE],
        }
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound(format!(
        "The requested URL {path} was not found on this server."
    ))
}

fn decode(segment: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty() && !decoded.contains('/')).then(|| decoded.into_owned())
}

fn policy_verb(verb: &str) -> Option<PolicyVerb> {
    match verb {
        "getIamPolicy" => Some(PolicyVerb::GetIamPolicy),
        "setIamPolicy" => Some(PolicyVerb::SetIamPolicy),
        "testIamPermissions" => Some(PolicyVerb::TestIamPermissions),
        _ => None,
    }
}

/// Parses a request path (without its query) into a route and checks the method.
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let route = parse(path).ok_or_else(|| not_found(path))?;
    let allowed = route.allowed();
    // HEAD is GET without a body; hyper drops the body for us.
    let method_ok =
        allowed.contains(method) || (*method == Method::HEAD && allowed.contains(&Method::GET));
    if !method_ok {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::MethodNotAllowed {
            message: format!("Method {method} is not supported on {path}; use {allow}."),
            allow,
        });
    }
    Ok(route)
}

fn parse(path: &str) -> Option<Route> {
    match path {
        "/healthz" => return Some(Route::Healthz),
        "/tokeninfo" | "/oauth2/v3/tokeninfo" => return Some(Route::TokenInfo),
        "/oauth2/v3/certs" => return Some(Route::Jwks),
        "/oauth2/v1/certs" => return Some(Route::PemCerts),
        "/.well-known/openid-configuration" => return Some(Route::OpenIdConfiguration),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/service_accounts/v1/metadata/") {
        let (format, account) = rest.split_once('/')?;
        return Some(Route::AccountKeys {
            format: decode(format)?,
            account: decode(account)?,
        });
    }
    let raw: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    // A trailing custom verb belongs to the last segment: `{id}:verb`.
    let (last, verb) = match raw.last()?.rsplit_once(':') {
        Some((id, verb)) if !verb.is_empty() && verb.bytes().all(|b| b.is_ascii_alphabetic()) => {
            (id, Some(verb))
        }
        _ => (*raw.last()?, None),
    };
    let mut segs = raw[..raw.len() - 1]
        .iter()
        .map(|s| decode(s))
        .collect::<Option<Vec<String>>>()?;
    segs.push(decode(last)?);
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let o = |x: &str| x.to_owned();
    let route = match (s.as_slice(), verb) {
        (["token"], None) => Route::Token,
        (["introspect"], None) => Route::Introspect,
        (["signingKeys"], None) => Route::SigningKeys,
        (["signingKeys"], Some("rotate")) => Route::RotateSigningKeys,
        (["auditEvents"], None) => Route::AuditEvents,
        (["projects"], None) => Route::Projects,
        (["projects", p], None) => Route::Project(o(p)),
        (["projects", p], Some(v)) => Route::ProjectPolicy(o(p), policy_verb(v)?),
        (["projects", p, "serviceAccounts"], None) => Route::ServiceAccounts(o(p)),
        (["projects", p, "serviceAccounts", a], None) => Route::ServiceAccount {
            project: o(p),
            account: o(a),
        },
        (["projects", p, "serviceAccounts", a], Some(v)) => Route::ServiceAccountVerb {
            project: o(p),
            account: o(a),
            verb: match v {
                "disable" => AccountVerb::Disable,
                "enable" => AccountVerb::Enable,
                "generateAccessToken" => {
                    AccountVerb::Credentials(CredentialsVerb::GenerateAccessToken)
                }
                "generateIdToken" => AccountVerb::Credentials(CredentialsVerb::GenerateIdToken),
                "signBlob" => AccountVerb::Credentials(CredentialsVerb::SignBlob),
                "signJwt" => AccountVerb::Credentials(CredentialsVerb::SignJwt),
                other => AccountVerb::Policy(policy_verb(other)?),
            },
        },
        (["projects", p, "locations", l, "workloadIdentityPools"], None) => Route::Pools {
            project: o(p),
            location: o(l),
        },
        (["projects", p, "locations", l, "workloadIdentityPools", pool], None) => Route::Pool {
            project: o(p),
            location: o(l),
            pool: o(pool),
        },
        (
            [
                "projects",
                p,
                "locations",
                l,
                "workloadIdentityPools",
                pool,
                "providers",
            ],
            None,
        ) => Route::Providers {
            project: o(p),
            location: o(l),
            pool: o(pool),
        },
        (
            [
                "projects",
                p,
                "locations",
                l,
                "workloadIdentityPools",
                pool,
                "providers",
                prov,
            ],
            None,
        ) => Route::Provider {
            project: o(p),
            location: o(l),
            pool: o(pool),
            provider: o(prov),
        },
        (
            [
                "projects",
                _,
                "locations",
                _,
                "workloadIdentityPools",
                ..,
                "operations",
                _,
            ],
            None,
        ) => Route::Operation(s.join("/")),
        (["projects", p, "locations", l, "clusters"], None) => Route::Clusters {
            project: o(p),
            location: o(l),
        },
        (["projects", p, "locations", l, "clusters", n], None) => Route::Cluster {
            project: o(p),
            location: o(l),
            name: o(n),
        },
        _ => return None,
    };
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Result<Route, ApiError> {
        route(&Method::GET, path)
    }

    #[test]
    fn google_paths() {
        assert_eq!(
            get("/v1/projects/p/serviceAccounts/a%40p.iam.gserviceaccount.com").ok(),
            Some(Route::ServiceAccount {
                project: "p".into(),
                account: "a@p.iam.gserviceaccount.com".into()
            })
        );
        assert_eq!(
            route(
                &Method::POST,
                "/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:getIamPolicy"
            )
            .ok(),
            Some(Route::ServiceAccountVerb {
                project: "-".into(),
                account: "a@p.iam.gserviceaccount.com".into(),
                verb: AccountVerb::Policy(PolicyVerb::GetIamPolicy)
            })
        );
        assert_eq!(
            route(&Method::POST, "/v1/projects/p/serviceAccounts/123:disable").ok(),
            Some(Route::ServiceAccountVerb {
                project: "p".into(),
                account: "123".into(),
                verb: AccountVerb::Disable
            })
        );
        assert_eq!(
            get("/v1/projects/123/locations/global/workloadIdentityPools/pool-1/providers/prov-1")
                .ok(),
            Some(Route::Provider {
                project: "123".into(),
                location: "global".into(),
                pool: "pool-1".into(),
                provider: "prov-1".into()
            })
        );
        assert!(matches!(
            get("/v1/projects/123/locations/global/workloadIdentityPools/pool-1/operations/abc"),
            Ok(Route::Operation(_))
        ));
    }

    #[test]
    fn unknown_paths_and_methods() {
        for bad in [
            "/",
            "/v2/projects",
            "/v1/projects/p/serviceAccounts/a:bogus",
            "/v1/projects/p/x",
            "/v1/projects//serviceAccounts",
            "/v1/projects/p%2Fq",
        ] {
            assert!(matches!(get(bad), Err(ApiError::NotFound(_))), "{bad}");
        }
        assert!(matches!(
            route(&Method::DELETE, "/v1/projects/p/serviceAccounts"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            get("/v1/projects/p/serviceAccounts/a:disable"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
    }
}
