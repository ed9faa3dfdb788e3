//! Google's REST paths and methods, turned into the one [`Operation`] a request asks for by a
//! pure function, so that routing and its errors are tested without a server. Custom methods
//! (`…/{sa}:getIamPolicy`) share their path segment with a resource id, which path routers cannot
//! split; this parser does.
//!
//! A request is decided once: its path names a [`Place`], and the place and the method name the
//! operation ([`Place::operation`]); the methods a place allows (`405`'s `Allow`) are those for
//! which it names one. Operations anyone may call ([`Public`]) and those of an authenticated
//! caller ([`Authenticated`]) are different types, so that no public operation can reach the
//! authenticated dispatch, nor the reverse.

use axum::http::Method;

use crate::credentials::CredentialsVerb;
use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyVerb {
    GetIamPolicy,
    SetIamPolicy,
    TestIamPermissions,
}

/// A service account as a path names it: its project (`-` for any) and its email or unique id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountName {
    pub project: String,
    pub account: String,
}

/// A service-account key: `projects/P/serviceAccounts/A/keys/KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName {
    pub account: AccountName,
    pub key: String,
}

/// Where workload identity pools or clusters of a project are: `projects/P/locations/L`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocationName {
    pub project: String,
    pub location: String,
}

/// `projects/P/locations/L/workloadIdentityPools/POOL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolName {
    pub parent: LocationName,
    pub pool: String,
}

/// `…/workloadIdentityPools/POOL/providers/PROVIDER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderName {
    pub pool: PoolName,
    pub provider: String,
}

/// `projects/P/locations/L/clusters/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterName {
    pub parent: LocationName,
    pub name: String,
}

/// What a request can ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Public(Public),
    Authenticated(Authenticated),
}

/// Operations that need no credential of the service: the caller's credential is what they
/// examine (STS, tokeninfo), or what they answer is public.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Public {
    /// Alive: answers while the process serves.
    Healthz,
    /// Ready: the database answers and the keys are loaded; 503 otherwise.
    Readyz,
    /// Prometheus metrics (counts only: nothing of any caller).
    Metrics,
    /// Operations on a token the request carries, answered in OAuth's error shape.
    OAuth(OAuth),
    /// `/oauth2/v3/certs`.
    Jwks,
    /// `/oauth2/v1/certs`.
    PemCerts,
    /// `/.well-known/openid-configuration`.
    OpenIdConfiguration,
    /// `/service_accounts/v1/metadata/{jwk|x509}/{EMAIL}`.
    AccountKeys { format: String, account: String },
}

/// STS and tokeninfo: their clients read OAuth-shaped errors only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuth {
    /// STS `POST /v1/token`.
    Exchange,
    /// The OAuth2 token endpoint `POST /token`: service-account keys' JWT-bearer grants.
    KeyGrant,
    /// STS `POST /v1/introspect`.
    Introspect,
    /// `/tokeninfo`; POSTed parameters are read as well as the query's.
    TokenInfo { posted: bool },
}

/// Operations of an authenticated caller: the admin API and IAM Credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticated {
    ListSigningKeys,
    RotateSigningKeys,
    ListAuditEvents,
    CreateProject,
    ListProjects,
    GetProject(String),
    /// PATCH: wid's key policy of the project.
    UpdateProject(String),
    ProjectPolicy(String, PolicyVerb),
    CreateServiceAccount(String),
    ListServiceAccounts(String),
    GetServiceAccount(AccountName),
    /// PATCH, with an update mask.
    PatchServiceAccount(AccountName),
    /// PUT: the whole resource.
    ReplaceServiceAccount(AccountName),
    DeleteServiceAccount(AccountName),
    DisableServiceAccount(AccountName),
    EnableServiceAccount(AccountName),
    AccountPolicy(AccountName, PolicyVerb),
    CreateKey(AccountName),
    UploadKey(AccountName),
    ListKeys(AccountName),
    GetKey(KeyName),
    DeleteKey(KeyName),
    DisableKey(KeyName),
    EnableKey(KeyName),
    /// IAM Credentials: generateAccessToken, generateIdToken, signBlob, signJwt.
    Credentials(AccountName, CredentialsVerb),
    CreatePool(LocationName),
    ListPools(LocationName),
    GetPool(PoolName),
    UpdatePool(PoolName),
    DeletePool(PoolName),
    CreateProvider(PoolName),
    ListProviders(PoolName),
    GetProvider(ProviderName),
    UpdateProvider(ProviderName),
    DeleteProvider(ProviderName),
    /// `…/operations/{id}` under a pool or provider: every operation is done when returned.
    GetOperation(String),
    RegisterCluster(LocationName),
    ListClusters(LocationName),
    GetCluster(ClusterName),
    DeleteCluster(ClusterName),
}

impl Operation {
    /// The API method's name, as the metrics label requests: a fixed set.
    pub fn method_name(&self) -> &'static str {
        match self {
            Operation::Public(op) => op.method_name(),
            Operation::Authenticated(op) => op.method_name(),
        }
    }
}

impl Public {
    fn method_name(&self) -> &'static str {
        match self {
            Public::Healthz => "healthz",
            Public::Readyz => "readyz",
            Public::Metrics => "metrics",
            Public::OAuth(OAuth::Exchange) => "sts.token",
            Public::OAuth(OAuth::KeyGrant) => "oauth2.token",
            Public::OAuth(OAuth::Introspect) => "sts.introspect",
            Public::OAuth(OAuth::TokenInfo { .. }) => "tokeninfo",
            Public::Jwks => "certs.jwk",
            Public::PemCerts => "certs.pem",
            Public::OpenIdConfiguration => "openid-configuration",
            Public::AccountKeys { .. } => "serviceAccounts.metadata",
        }
    }
}

impl Authenticated {
    fn method_name(&self) -> &'static str {
        use Authenticated as A;
        let policy = |verb: &PolicyVerb, get, set, test| match verb {
            PolicyVerb::GetIamPolicy => get,
            PolicyVerb::SetIamPolicy => set,
            PolicyVerb::TestIamPermissions => test,
        };
        match self {
            A::ListSigningKeys => "signingKeys.list",
            A::RotateSigningKeys => "signingKeys.rotate",
            A::ListAuditEvents => "auditEvents.list",
            A::CreateProject => "projects.create",
            A::ListProjects => "projects.list",
            A::GetProject(_) => "projects.get",
            A::ProjectPolicy(_, verb) => policy(
                verb,
                "projects.getIamPolicy",
                "projects.setIamPolicy",
                "projects.testIamPermissions",
            ),
            A::CreateServiceAccount(_) => "serviceAccounts.create",
            A::ListServiceAccounts(_) => "serviceAccounts.list",
            A::GetServiceAccount(_) => "serviceAccounts.get",
            A::PatchServiceAccount(_) => "serviceAccounts.patch",
            A::ReplaceServiceAccount(_) => "serviceAccounts.update",
            A::DeleteServiceAccount(_) => "serviceAccounts.delete",
            A::DisableServiceAccount(_) => "serviceAccounts.disable",
            A::EnableServiceAccount(_) => "serviceAccounts.enable",
            A::UpdateProject(_) => "projects.patch",
            A::CreateKey(_) => "serviceAccounts.keys.create",
            A::UploadKey(_) => "serviceAccounts.keys.upload",
            A::ListKeys(_) => "serviceAccounts.keys.list",
            A::GetKey(_) => "serviceAccounts.keys.get",
            A::DeleteKey(_) => "serviceAccounts.keys.delete",
            A::DisableKey(_) => "serviceAccounts.keys.disable",
            A::EnableKey(_) => "serviceAccounts.keys.enable",
            A::AccountPolicy(_, verb) => policy(
                verb,
                "serviceAccounts.getIamPolicy",
                "serviceAccounts.setIamPolicy",
                "serviceAccounts.testIamPermissions",
            ),
            A::Credentials(_, verb) => match verb {
                CredentialsVerb::GenerateAccessToken => "iamcredentials.generateAccessToken",
                CredentialsVerb::GenerateIdToken => "iamcredentials.generateIdToken",
                CredentialsVerb::SignBlob => "iamcredentials.signBlob",
                CredentialsVerb::SignJwt => "iamcredentials.signJwt",
            },
            A::CreatePool(_) => "workloadIdentityPools.create",
            A::ListPools(_) => "workloadIdentityPools.list",
            A::GetPool(_) => "workloadIdentityPools.get",
            A::UpdatePool(_) => "workloadIdentityPools.patch",
            A::DeletePool(_) => "workloadIdentityPools.delete",
            A::CreateProvider(_) => "workloadIdentityPools.providers.create",
            A::ListProviders(_) => "workloadIdentityPools.providers.list",
            A::GetProvider(_) => "workloadIdentityPools.providers.get",
            A::UpdateProvider(_) => "workloadIdentityPools.providers.patch",
            A::DeleteProvider(_) => "workloadIdentityPools.providers.delete",
            A::GetOperation(_) => "operations.get",
            A::RegisterCluster(_) => "clusters.register",
            A::ListClusters(_) => "clusters.list",
            A::GetCluster(_) => "clusters.get",
            A::DeleteCluster(_) => "clusters.delete",
        }
    }
}

/// What a path names, before its method says what to do there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Healthz,
    Readyz,
    Metrics,
    Token,
    KeyGrant,
    Introspect,
    TokenInfo,
    Jwks,
    PemCerts,
    OpenIdConfiguration,
    AccountKeys { format: String, account: String },
    SigningKeys,
    RotateSigningKeys,
    AuditEvents,
    Projects,
    Project(String),
    ProjectPolicy(String, PolicyVerb),
    ServiceAccounts(String),
    ServiceAccount(AccountName),
    AccountDisable(AccountName),
    AccountEnable(AccountName),
    AccountPolicy(AccountName, PolicyVerb),
    AccountCredentials(AccountName, CredentialsVerb),
    KeysOfAccount(AccountName),
    AccountKeysUpload(AccountName),
    AccountKey(KeyName),
    AccountKeyDisable(KeyName),
    AccountKeyEnable(KeyName),
    Pools(LocationName),
    Pool(PoolName),
    Providers(PoolName),
    Provider(ProviderName),
    Operation(String),
    Clusters(LocationName),
    Cluster(ClusterName),
}

/// Every method a place may allow, in the order `Allow` lists them.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PATCH,
    Method::PUT,
    Method::DELETE,
];

impl Place {
    /// The operation `method` asks for here, if it is one this place has. HEAD is GET without a
    /// body (hyper drops the body).
    pub fn operation(&self, method: &Method) -> Option<Operation> {
        use Authenticated as A;
        use Public as P;
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let (get, post, patch, put, delete) = (
            *method == Method::GET,
            *method == Method::POST,
            *method == Method::PATCH,
            *method == Method::PUT,
            *method == Method::DELETE,
        );
        let public = |op| Some(Operation::Public(op));
        let authenticated = |op| Some(Operation::Authenticated(op));
        match self.clone() {
            Place::Healthz if get => public(P::Healthz),
            Place::Readyz if get => public(P::Readyz),
            Place::Metrics if get => public(P::Metrics),
            Place::Token if post => public(P::OAuth(OAuth::Exchange)),
            Place::KeyGrant if post => public(P::OAuth(OAuth::KeyGrant)),
            Place::Introspect if post => public(P::OAuth(OAuth::Introspect)),
            Place::TokenInfo if get || post => public(P::OAuth(OAuth::TokenInfo { posted: post })),
            Place::Jwks if get => public(P::Jwks),
            Place::PemCerts if get => public(P::PemCerts),
            Place::OpenIdConfiguration if get => public(P::OpenIdConfiguration),
            Place::AccountKeys { format, account } if get => {
                public(P::AccountKeys { format, account })
            }
            Place::SigningKeys if get => authenticated(A::ListSigningKeys),
            Place::RotateSigningKeys if post => authenticated(A::RotateSigningKeys),
            Place::AuditEvents if get => authenticated(A::ListAuditEvents),
            Place::Projects if get => authenticated(A::ListProjects),
            Place::Projects if post => authenticated(A::CreateProject),
            Place::Project(p) if get => authenticated(A::GetProject(p)),
            Place::Project(p) if patch => authenticated(A::UpdateProject(p)),
            Place::ProjectPolicy(p, verb) if post => authenticated(A::ProjectPolicy(p, verb)),
            Place::ServiceAccounts(p) if get => authenticated(A::ListServiceAccounts(p)),
            Place::ServiceAccounts(p) if post => authenticated(A::CreateServiceAccount(p)),
            Place::ServiceAccount(a) if get => authenticated(A::GetServiceAccount(a)),
            Place::ServiceAccount(a) if patch => authenticated(A::PatchServiceAccount(a)),
            Place::ServiceAccount(a) if put => authenticated(A::ReplaceServiceAccount(a)),
            Place::ServiceAccount(a) if delete => authenticated(A::DeleteServiceAccount(a)),
            Place::AccountDisable(a) if post => authenticated(A::DisableServiceAccount(a)),
            Place::AccountEnable(a) if post => authenticated(A::EnableServiceAccount(a)),
            Place::AccountPolicy(a, verb) if post => authenticated(A::AccountPolicy(a, verb)),
            Place::AccountCredentials(a, verb) if post => authenticated(A::Credentials(a, verb)),
            Place::KeysOfAccount(a) if get => authenticated(A::ListKeys(a)),
            Place::KeysOfAccount(a) if post => authenticated(A::CreateKey(a)),
            Place::AccountKeysUpload(a) if post => authenticated(A::UploadKey(a)),
            Place::AccountKey(k) if get => authenticated(A::GetKey(k)),
            Place::AccountKey(k) if delete => authenticated(A::DeleteKey(k)),
            Place::AccountKeyDisable(k) if post => authenticated(A::DisableKey(k)),
            Place::AccountKeyEnable(k) if post => authenticated(A::EnableKey(k)),
            Place::Pools(l) if get => authenticated(A::ListPools(l)),
            Place::Pools(l) if post => authenticated(A::CreatePool(l)),
            Place::Pool(p) if get => authenticated(A::GetPool(p)),
            Place::Pool(p) if patch => authenticated(A::UpdatePool(p)),
            Place::Pool(p) if delete => authenticated(A::DeletePool(p)),
            Place::Providers(p) if get => authenticated(A::ListProviders(p)),
            Place::Providers(p) if post => authenticated(A::CreateProvider(p)),
            Place::Provider(p) if get => authenticated(A::GetProvider(p)),
            Place::Provider(p) if patch => authenticated(A::UpdateProvider(p)),
            Place::Provider(p) if delete => authenticated(A::DeleteProvider(p)),
            Place::Operation(name) if get => authenticated(A::GetOperation(name)),
            Place::Clusters(l) if get => authenticated(A::ListClusters(l)),
            Place::Clusters(l) if post => authenticated(A::RegisterCluster(l)),
            Place::Cluster(c) if get => authenticated(A::GetCluster(c)),
            Place::Cluster(c) if delete => authenticated(A::DeleteCluster(c)),
            _ => None,
        }
    }

    /// The methods this place answers, as `Allow` lists them.
    pub fn allowed(&self) -> Vec<&'static str> {
        METHODS
            .iter()
            .filter(|m| self.operation(m).is_some())
            .map(Method::as_str)
            .collect()
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound(format!(
        "The requested URL {path} was not found on this server."
    ))
}

/// The operation of a request's method and path (without its query).
pub fn route(method: &Method, path: &str) -> Result<Operation, ApiError> {
    let place = parse(path).ok_or_else(|| not_found(path))?;
    place.operation(method).ok_or_else(|| {
        let allow = place.allowed().join(", ");
        ApiError::MethodNotAllowed {
            message: format!("Method {method} is not supported on {path}; use {allow}."),
            allow,
        }
    })
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

/// What a custom verb on a service account names.
fn account_place(account: AccountName, verb: &str) -> Option<Place> {
    Some(match verb {
        "disable" => Place::AccountDisable(account),
        "enable" => Place::AccountEnable(account),
        "generateAccessToken" => {
            Place::AccountCredentials(account, CredentialsVerb::GenerateAccessToken)
        }
        "generateIdToken" => Place::AccountCredentials(account, CredentialsVerb::GenerateIdToken),
        "signBlob" => Place::AccountCredentials(account, CredentialsVerb::SignBlob),
        "signJwt" => Place::AccountCredentials(account, CredentialsVerb::SignJwt),
        other => Place::AccountPolicy(account, policy_verb(other)?),
    })
}

/// The place of a path outside `/v1/`.
fn document(path: &str) -> Option<Place> {
    Some(match path {
        "/healthz" => Place::Healthz,
        "/readyz" => Place::Readyz,
        "/metrics" => Place::Metrics,
        "/token" => Place::KeyGrant,
        "/tokeninfo" | "/oauth2/v3/tokeninfo" => Place::TokenInfo,
        "/oauth2/v3/certs" => Place::Jwks,
        "/oauth2/v1/certs" => Place::PemCerts,
        "/.well-known/openid-configuration" => Place::OpenIdConfiguration,
        _ => {
            let rest = path.strip_prefix("/service_accounts/v1/metadata/")?;
            let (format, account) = rest.split_once('/')?;
            Place::AccountKeys {
                format: decode(format)?,
                account: decode(account)?,
            }
        }
    })
}

/// The segments of a `/v1/` path, decoded, and its custom verb (`…/{id}:verb`), if any.
fn segments(path: &str) -> Option<(Vec<String>, Option<&str>)> {
    let raw: Vec<&str> = path.strip_prefix("/v1/")?.split('/').collect();
    // A trailing custom verb belongs to the last segment: `{id}:verb`.
    let (last, verb) = match raw.last()?.rsplit_once(':') {
        Some((id, verb)) if !verb.is_empty() && verb.bytes().all(|b| b.is_ascii_alphabetic()) => {
            (id, Some(verb))
        }
        _ => (*raw.last()?, None),
    };
    let mut segments = raw[..raw.len() - 1]
        .iter()
        .map(|s| decode(s))
        .collect::<Option<Vec<String>>>()?;
    segments.push(decode(last)?);
    Some((segments, verb))
}

fn parse(path: &str) -> Option<Place> {
    if !path.starts_with("/v1/") {
        return document(path);
    }
    let (segments, verb) = segments(path)?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let o = |x: &str| x.to_owned();
    let location = |p: &str, l: &str| LocationName {
        project: o(p),
        location: o(l),
    };
    let pool = |p: &str, l: &str, pool: &str| PoolName {
        parent: location(p, l),
        pool: o(pool),
    };
    let place = match (s.as_slice(), verb) {
        (["token"], None) => Place::Token,
        (["introspect"], None) => Place::Introspect,
        (["signingKeys"], None) => Place::SigningKeys,
        (["signingKeys"], Some("rotate")) => Place::RotateSigningKeys,
        (["auditEvents"], None) => Place::AuditEvents,
        (["projects"], None) => Place::Projects,
        (["projects", p], None) => Place::Project(o(p)),
        (["projects", p], Some(v)) => Place::ProjectPolicy(o(p), policy_verb(v)?),
        (["projects", p, "serviceAccounts"], None) => Place::ServiceAccounts(o(p)),
        (["projects", p, "serviceAccounts", a], verb) => {
            let account = AccountName {
                project: o(p),
                account: o(a),
            };
            match verb {
                None => Place::ServiceAccount(account),
                Some(verb) => account_place(account, verb)?,
            }
        }
        (["projects", p, "serviceAccounts", a, "keys"], verb) => {
            let account = AccountName {
                project: o(p),
                account: o(a),
            };
            match verb {
                None => Place::KeysOfAccount(account),
                Some("upload") => Place::AccountKeysUpload(account),
                Some(_) => return None,
            }
        }
        (["projects", p, "serviceAccounts", a, "keys", k], verb) => {
            let key = KeyName {
                account: AccountName {
                    project: o(p),
                    account: o(a),
                },
                key: o(k),
            };
            match verb {
                None => Place::AccountKey(key),
                Some("disable") => Place::AccountKeyDisable(key),
                Some("enable") => Place::AccountKeyEnable(key),
                Some(_) => return None,
            }
        }
        (["projects", p, "locations", l, "workloadIdentityPools"], None) => {
            Place::Pools(location(p, l))
        }
        (["projects", p, "locations", l, "workloadIdentityPools", id], None) => {
            Place::Pool(pool(p, l, id))
        }
        (
            [
                "projects",
                p,
                "locations",
                l,
                "workloadIdentityPools",
                id,
                "providers",
            ],
            None,
        ) => Place::Providers(pool(p, l, id)),
        (
            [
                "projects",
                p,
                "locations",
                l,
                "workloadIdentityPools",
                id,
                "providers",
                provider,
            ],
            None,
        ) => Place::Provider(ProviderName {
            pool: pool(p, l, id),
            provider: o(provider),
        }),
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
        ) => Place::Operation(s.join("/")),
        (["projects", p, "locations", l, "clusters"], None) => Place::Clusters(location(p, l)),
        (["projects", p, "locations", l, "clusters", n], None) => Place::Cluster(ClusterName {
            parent: location(p, l),
            name: o(n),
        }),
        _ => return None,
    };
    Some(place)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Result<Operation, ApiError> {
        route(&Method::GET, path)
    }

    fn account(project: &str, account: &str) -> AccountName {
        AccountName {
            project: project.into(),
            account: account.into(),
        }
    }

    #[test]
    fn google_paths() {
        assert_eq!(
            get("/v1/projects/p/serviceAccounts/a%40p.iam.gserviceaccount.com").ok(),
            Some(Operation::Authenticated(Authenticated::GetServiceAccount(
                account("p", "a@p.iam.gserviceaccount.com")
            )))
        );
        assert_eq!(
            route(
                &Method::POST,
                "/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:getIamPolicy"
            )
            .ok(),
            Some(Operation::Authenticated(Authenticated::AccountPolicy(
                account("-", "a@p.iam.gserviceaccount.com"),
                PolicyVerb::GetIamPolicy
            )))
        );
        assert_eq!(
            route(&Method::POST, "/v1/projects/p/serviceAccounts/123:disable").ok(),
            Some(Operation::Authenticated(
                Authenticated::DisableServiceAccount(account("p", "123"))
            ))
        );
        assert_eq!(
            route(
                &Method::DELETE,
                "/v1/projects/123/locations/global/workloadIdentityPools/pool-1/providers/prov-1"
            )
            .ok(),
            Some(Operation::Authenticated(Authenticated::DeleteProvider(
                ProviderName {
                    pool: PoolName {
                        parent: LocationName {
                            project: "123".into(),
                            location: "global".into()
                        },
                        pool: "pool-1".into()
                    },
                    provider: "prov-1".into()
                }
            )))
        );
        assert!(matches!(
            get("/v1/projects/123/locations/global/workloadIdentityPools/pool-1/operations/abc"),
            Ok(Operation::Authenticated(Authenticated::GetOperation(_)))
        ));
        assert_eq!(
            route(&Method::HEAD, "/oauth2/v3/certs").ok(),
            Some(Operation::Public(Public::Jwks))
        );
        assert_eq!(
            route(&Method::POST, "/tokeninfo").ok(),
            Some(Operation::Public(Public::OAuth(OAuth::TokenInfo {
                posted: true
            })))
        );
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
        let Err(ApiError::MethodNotAllowed { allow, .. }) =
            route(&Method::DELETE, "/v1/projects/p/serviceAccounts")
        else {
            panic!("DELETE of a collection is not allowed");
        };
        assert_eq!(allow, "GET, POST");
        let Err(ApiError::MethodNotAllowed { allow, .. }) =
            get("/v1/projects/p/serviceAccounts/a:disable")
        else {
            panic!("GET of a custom verb is not allowed");
        };
        assert_eq!(allow, "POST");
        let Err(ApiError::MethodNotAllowed { allow, .. }) =
            route(&Method::POST, "/v1/projects/p/serviceAccounts/a")
        else {
            panic!("POST of an account is not allowed");
        };
        assert_eq!(allow, "GET, PATCH, PUT, DELETE");
    }

    /// Every place answers at least one method, and each of its operations is public or
    /// authenticated as its kind says: no place mixes the two.
    #[test]
    fn each_place_is_public_or_authenticated_throughout() {
        let paths = [
            "/healthz",
            "/tokeninfo",
            "/oauth2/v3/certs",
            "/oauth2/v1/certs",
            "/.well-known/openid-configuration",
            "/service_accounts/v1/metadata/jwk/a@p.iam.gserviceaccount.com",
            "/v1/token",
            "/v1/introspect",
            "/v1/signingKeys",
            "/v1/signingKeys:rotate",
            "/v1/auditEvents",
            "/v1/projects",
            "/v1/projects/p",
            "/v1/projects/p:getIamPolicy",
            "/v1/projects/p/serviceAccounts",
            "/v1/projects/p/serviceAccounts/a",
            "/v1/projects/p/serviceAccounts/a:signJwt",
            "/v1/projects/p/locations/global/workloadIdentityPools/x/providers/y",
            "/v1/projects/p/locations/l/clusters/c",
        ];
        for path in paths {
            let place = parse(path).expect(path);
            let kinds: Vec<bool> = METHODS
                .iter()
                .filter_map(|m| place.operation(m))
                .map(|op| matches!(op, Operation::Public(_)))
                .collect();
            assert!(!kinds.is_empty(), "{path} answers nothing");
            assert!(kinds.iter().all(|k| *k == kinds[0]), "{path} mixes kinds");
        }
    }
}
