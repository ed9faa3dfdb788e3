//! The calls of the token flow ([`crate::tokens`] decides which): a Kubernetes service-account
//! token for the caller's KSA ([`KsaTokens`]: signed with a cluster issuer key the agent holds,
//! whose JWKS the token service trusts through `wid iam clusters register`, or from the
//! TokenRequest API), STS's exchange and introspection, and IAM Credentials.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wid_jose::Algorithm;
use wid_jose::signer::{SigningKey, TokenType};

use crate::pods::Pod;

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A token and when it expires (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub expires_at: i64,
}

/// Why the upstream refused or could not be reached; rendered as GKE renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The upstream answered with an error: its status, reason phrase and message.
    Refused {
        service: &'static str,
        status: u16,
        reason: String,
        message: String,
    },
    /// It could not be reached or answered nonsense.
    Unavailable(String),
    /// The agent's own budget of upstream calls allowed none now: nothing was asked upstream.
    Throttled(crate::limits::Exhausted),
}

impl UpstreamError {
    /// Whether asking again later may succeed with the same answer upstream: the upstream was
    /// away, or not asked at all. A cached token is served through these, never through a
    /// refusal.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            // A quota spent (STS's is per project and minute) says nothing of the token asked for.
            UpstreamError::Unavailable(_)
                | UpstreamError::Throttled(_)
                | UpstreamError::Refused { status: 429, .. }
        )
    }
}

/// For the operator's log; pods get GKE's rendering (`crate::upstream_error`).
impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Refused {
                service,
                status,
                message,
                ..
            } => write!(f, "{service} returned {status}: {message}"),
            UpstreamError::Unavailable(reason) => write!(f, "unavailable: {reason}"),
            UpstreamError::Throttled(budget) => write!(f, "not asked: {budget}"),
        }
    }
}

/// The longest a token from upstream is taken to live (IAM's longest, with an organisation
/// policy): a larger `expires_in` is an upstream's mistake, not a reason to overflow.
const MAX_LIFETIME: i64 = 12 * 3600;

/// A service account's email or id as one path segment: it comes from a KSA's annotation, which
/// must not choose another path on IAM's host than its account's.
fn path_segment(email: &str) -> percent_encoding::PercentEncode<'_> {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'@')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_');
    percent_encoding::utf8_percent_encode(email, SEGMENT)
}

/// Issues KSA tokens as the cluster's API server would, with a key the agent holds.
pub struct KsaIssuer {
    key: SigningKey,
    pub issuer: String,
}

/// Why an issuer key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IssuerKeyError {
    #[error(transparent)]
    File(#[from] wid_runtime::private_files::PrivateFileError),
    #[error("{0} is not an RS256 PKCS#8 key")]
    NotAKey(String),
    #[error("cannot make a key: {0}")]
    Generate(#[from] wid_jose::JoseError),
}

impl KsaIssuer {
    pub fn new(key: SigningKey, issuer: String) -> KsaIssuer {
        KsaIssuer { key, issuer }
    }

    /// A fresh RS256 key.
    pub fn generate_key() -> Result<SigningKey, wid_jose::JoseError> {
        SigningKey::generate(Algorithm::Rs256)
    }

    /// The issuer `issuer` with the key in `path` (PKCS#8 DER), made there on first use (mode
    /// 0600; a missing directory is made private too, an existing one is the operator's). A key
    /// of another user, or readable by others, is refused: a key someone else wrote is one they
    /// know.
    pub fn open(path: &std::path::Path, issuer: String) -> Result<KsaIssuer, IssuerKeyError> {
        use wid_runtime::private_files;
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            private_files::ensure_private_dir(dir)?;
        }
        let key = if path.exists() {
            // Owner and mode checked on the handle read.
            let der = private_files::read_private(path)?;
            SigningKey::from_pkcs8(Algorithm::Rs256, &der)
                .map_err(|_| IssuerKeyError::NotAKey(path.display().to_string()))?
        } else {
            let key = KsaIssuer::generate_key()?;
            private_files::write_new_private(path, key.pkcs8())?;
            key
        };
        Ok(KsaIssuer::new(key, issuer))
    }

    /// The JWKS the token service needs to trust this issuer.
    pub fn jwks_json(&self) -> String {
        json!({ "keys": [self.key.public_jwk()] }).to_string()
    }

    /// A ten-minute token for the pod's KSA with audience `audience` (the pool).
    pub fn token(&self, pod: &Pod, audience: &str) -> Result<String, wid_jose::JoseError> {
        let now = now();
        let claims = json!({
            "iss": self.issuer,
            "sub": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account_name),
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "kubernetes.io": {
                "namespace": pod.namespace,
                "pod": {"name": pod.name, "uid": pod.uid},
                "serviceaccount": {"name": pod.service_account_name},
            },
        });
        self.key.sign_jwt(TokenType::Jwt, &claims)
    }
}

/// Where the agent's KSA tokens come from.
pub enum KsaTokens {
    /// Signed by the agent with a cluster issuer key it holds (`wid dev`, and clusters whose
    /// issuer is the agent's).
    Issuer(Box<KsaIssuer>),
    /// The Kubernetes TokenRequest API.
    TokenRequest(crate::kubernetes::TokenRequests),
}

impl KsaTokens {
    /// The issuer URL of the KSA tokens.
    pub fn issuer(&self) -> &str {
        match self {
            KsaTokens::Issuer(issuer) => &issuer.issuer,
            KsaTokens::TokenRequest(requests) => requests.issuer(),
        }
    }

    /// A KSA token of the pod for `audience`.
    pub async fn token(&self, pod: &Arc<Pod>, audience: &str) -> Result<String, UpstreamError> {
        match self {
            KsaTokens::Issuer(issuer) => issuer
                .token(pod, audience)
                .map_err(|e| UpstreamError::Unavailable(format!("cannot sign the KSA token: {e}"))),
            KsaTokens::TokenRequest(requests) => requests.token(pod, audience).await,
        }
    }

    /// Forgets what is cached for pods that are gone.
    pub fn retain_owners(&self, live: &[String]) {
        if let KsaTokens::TokenRequest(requests) = self {
            requests.retain_owners(live);
        }
    }
}

/// The HTTP client of STS and IAM Credentials.
pub struct Upstream {
    http: reqwest::Client,
    sts_url: String,
    iamcredentials_url: String,
}

fn reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason().map(str::to_owned))
        .unwrap_or_default()
}

/// Why the upstream's HTTP client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("the CA file")]
    CaFile(#[from] wid_runtime::tls::TlsError),
    #[error("cannot build the HTTP client")]
    Http(#[from] reqwest::Error),
}

/// The CA certificates of a PEM file, for reqwest.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<reqwest::Certificate>, UpstreamConfigError> {
    wid_runtime::tls::ca_certificates(path)?
        .iter()
        .map(|der| reqwest::Certificate::from_der(der).map_err(UpstreamConfigError::Http))
        .collect()
}

/// Every cause of an HTTP client's error, outermost first: reqwest's own text says only that
/// sending failed, the cause (a refused connection, an untrusted certificate) is further in.
pub(crate) fn causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What the operator can do about a call that failed before any answer.
fn unreachable(service: &str, error: &reqwest::Error) -> String {
    let detail = causes(error);
    let hint = if detail.contains("certificate") || detail.contains("TLS") || detail.contains("tls")
    {
        " (the upstream's certificate is not trusted: the system's CAs and --ca-file's are)"
    } else {
        ""
    };
    format!("{service} unreachable: {detail}{hint}")
}

impl Upstream {
    /// The client of `config`'s STS and IAM Credentials, trusting the system's CAs and those of
    /// its CA file.
    pub fn new(config: &crate::Config) -> Result<Upstream, UpstreamConfigError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.upstream_timeout)
            .connect_timeout(config.upstream_timeout)
            // A redirect would carry a KSA token or a federated token to where the operator did
            // not point the agent; Google's endpoints never redirect these calls.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wid-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            builder = builder.tls_certs_merge(read_ca_file(path)?);
        }
        Ok(Upstream {
            http: builder.build()?,
            sts_url: config.sts_url.trim_end_matches('/').to_owned(),
            iamcredentials_url: config.iamcredentials_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn send(
        &self,
        service: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, UpstreamError> {
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(unreachable(service, &e)))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        if status >= 500 {
            return Err(UpstreamError::Unavailable(format!(
                "{service} answered {status}"
            )));
        }
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                let (e, d) = (
                    body["error"].as_str()?,
                    body["error_description"].as_str().unwrap_or_default(),
                );
                Some(format!("{e}: {d}"))
            })
            .unwrap_or_else(|| body.to_string());
        Err(UpstreamError::Refused {
            service,
            status,
            reason: reason(status),
            message,
        })
    }

    /// RFC 8693 exchange of a KSA token for a federated token.
    pub async fn exchange(
        &self,
        audience: &str,
        subject_token: &str,
        scopes: &[String],
    ) -> Result<Minted, UpstreamError> {
        let scope = scopes.join(" ");
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", audience),
            ("scope", scope.as_str()),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token", subject_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ];
        let body = self
            .send(
                "STS",
                self.http
                    .post(format!("{}/v1/token", self.sts_url))
                    .form(&form),
            )
            .await?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| UpstreamError::Unavailable("STS answered without a token".into()))?;
        let expires_in = body["expires_in"]
            .as_i64()
            .ok_or_else(|| UpstreamError::Unavailable("STS answered without expires_in".into()))?;
        Ok(Minted {
            token: token.to_owned(),
            expires_at: now().saturating_add(expires_in.clamp(0, MAX_LIFETIME)),
        })
    }

    /// The principal a federated token stands for, from STS's introspection (RFC 7662, as
    /// `sts.googleapis.com/v1/introspect` answers): `principal://iam.googleapis.com/projects/N/...`.
    pub async fn introspect_principal(&self, token: &str) -> Result<String, UpstreamError> {
        let body = self
            .send(
                "STS",
                self.http
                    .post(format!("{}/v1/introspect", self.sts_url))
                    .form(&[("token", token)]),
            )
            .await?;
        body["username"]
            .as_str()
            .filter(|_| body["active"] == true)
            .map(str::to_owned)
            .ok_or_else(|| {
                UpstreamError::Unavailable("STS introspection named no principal".into())
            })
    }

    /// generateAccessToken for `email` with the federated token.
    pub async fn access_token(
        &self,
        federated: &str,
        email: &str,
        scopes: &[String],
    ) -> Result<Minted, UpstreamError> {
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            self.iamcredentials_url,
            path_segment(email)
        );
        let body = json!({ "scope": scopes, "lifetime": "3600s" });
        let answer = self
            .send(
                "IAM",
                self.http.post(url).bearer_auth(federated).json(&body),
            )
            .await?;
        let token = answer["accessToken"]
            .as_str()
            .ok_or_else(|| UpstreamError::Unavailable("IAM answered without a token".into()))?;
        let expires_at = answer["expireTime"]
            .as_str()
            .and_then(wid_api::time::parse_rfc3339)
            .ok_or_else(|| {
                UpstreamError::Unavailable("IAM answered without a valid expireTime".into())
            })?;
        Ok(Minted {
            token: token.to_owned(),
            expires_at,
        })
    }

    /// generateIdToken for `email` with the federated token.
    pub async fn id_token(
        &self,
        federated: &str,
        email: &str,
        audience: &str,
    ) -> Result<Minted, UpstreamError> {
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:generateIdToken",
            self.iamcredentials_url,
            path_segment(email)
        );
        let body = json!({ "audience": audience, "includeEmail": true });
        let answer = self
            .send(
                "IAM",
                self.http.post(url).bearer_auth(federated).json(&body),
            )
            .await?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| UpstreamError::Unavailable("IAM answered without a token".into()))?;
        let exp = wid_jose::jws::parse(token)
            .ok()
            .and_then(|p| p.claims.get("exp").and_then(Value::as_i64))
            .ok_or_else(|| {
                UpstreamError::Unavailable("IAM answered an ID token without exp".into())
            })?;
        Ok(Minted {
            token: token.to_owned(),
            expires_at: exp,
        })
    }
}
