//! A fake of Google's STS and IAM Credentials for wid's tests, over TLS with a test CA: one
//! workload identity pool with one OIDC provider, the service accounts its principals may
//! impersonate, and nothing else. As strict as Google where the agent meets it (the form, the
//! audience, the subject token, the Bearer token's scopes, the permission, the bodies), with
//! Google's error shapes and texts. It records every request, for tests to read
//! (`/_fake/requests`); its configuration can be replaced while it runs (`/_fake/config`).

pub mod credentials;
pub mod sts;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wid_jose::signer::{SigningKey, TokenType};

use crate::credentials::{GoogleError, Method};

/// The pool's provider and who may impersonate which account.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// `projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub provider: String,
    /// The `iss` of the subject tokens.
    pub issuer_uri: String,
    /// The issuer's keys, a JWK set as JSON text (as a provider's `oidc.jwksJson`).
    pub jwks_json: String,
    /// The audiences accepted; none: the provider's own name.
    #[serde(default)]
    pub allowed_audiences: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Each account's members granted `roles/iam.workloadIdentityUser`: `principal://...` or
    /// `principalSet://.../POOL/*`.
    #[serde(default)]
    pub service_accounts: BTreeMap<String, Vec<String>>,
}

impl Config {
    /// `projects/NUMBER/locations/global/workloadIdentityPools/POOL`.
    pub fn pool_path(&self) -> String {
        self.provider
            .split_once("/providers/")
            .map_or_else(String::new, |(pool, _)| pool.to_owned())
    }

    /// The principal of a subject of the pool.
    pub fn principal(&self, subject: &str) -> String {
        format!(
            "principal://iam.googleapis.com/{}/subject/{subject}",
            self.pool_path()
        )
    }
}

/// A federated token STS issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Federated {
    pub principal: String,
    pub scopes: Vec<String>,
    pub expires_at: i64,
}

struct Shared {
    config: Mutex<Config>,
    federated: Mutex<HashMap<String, Federated>>,
    requests: Mutex<Vec<Value>>,
    /// Signs the ID tokens, as Google's keys do.
    key: SigningKey,
}

impl Shared {
    fn config(&self) -> Config {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, entry: Value) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A running fake: its base URL (the same for STS and IAM Credentials) and its CA.
pub struct GoogleFake {
    url: String,
    ca_pem: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl GoogleFake {
    /// A fake on a loopback port of its own.
    pub async fn start(config: Config) -> GoogleFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        GoogleFake::start_on(listener, config, &[])
    }

    /// A fake on `listener`, its certificate valid for loopback and `names`.
    pub fn start_on(
        listener: tokio::net::TcpListener,
        config: Config,
        names: &[String],
    ) -> GoogleFake {
        let ca = tls::TestCa::new();
        let mut names = names.to_vec();
        if let Ok(addr) = listener.local_addr() {
            names.push(addr.ip().to_string());
        }
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            federated: Mutex::default(),
            requests: Mutex::default(),
            key: SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key"),
        });
        let url = tls::base_url(&listener);
        let task =
            tls::serve_https_on(listener, router(shared.clone()), ca.server_cert_for(&names));
        GoogleFake {
            url,
            ca_pem: ca.cert_pem,
            shared,
            task,
        }
    }

    /// `https://HOST:PORT`: STS's and IAM Credentials' base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the fake's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Changes the configuration; tokens issued stay valid.
    pub fn update(&self, change: impl FnOnce(&mut Config)) {
        change(
            &mut self
                .shared
                .config
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// Every request so far, oldest first (see [`router`]).
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for GoogleFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// STS (`/v1/token`, `/v1/introspect`), IAM Credentials (`/v1/projects/-/serviceAccounts/...`),
/// the ID tokens' keys (`/oauth2/v3/certs`), and the fake's own control (`/_fake/...`).
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/token", post(token))
        .route("/v1/introspect", post(introspect))
        .route(
            "/v1/projects/{project}/serviceAccounts/{name}",
            post(credentials),
        )
        .route("/oauth2/v3/certs", get(certs))
        .route("/_fake/requests", get(requests))
        .route("/_fake/config", post(set_config))
        .with_state(shared)
}

fn json_reply(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(e: &sts::OAuthError) -> Response {
    json_reply(
        400,
        &json!({"error": e.error, "error_description": e.description}),
    )
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The fields of a body: a form with snake_case names (what Google's auth libraries send), or
/// JSON with camelCase ones (REST clients generated from the discovery document); refused in
/// STS's words when it is neither.
fn form(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, sts::OAuthError> {
    let unreadable = || sts::OAuthError {
        error: "invalid_request",
        description:
            "Invalid request body: expected application/x-www-form-urlencoded or application/json."
                .into(),
    };
    let pairs: Vec<(String, String)> = if is_form(headers) {
        serde_urlencoded::from_bytes(body).map_err(|_| unreadable())?
    } else if is_json(headers) {
        let object: serde_json::Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| unreadable())?;
        object
            .into_iter()
            .map(|(name, value)| {
                (
                    sts::snake_case(&name),
                    value.as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    } else {
        return Err(unreadable());
    };
    sts::fields(&pairs)
}

async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let config = shared.config();
    let fields = form(&headers, &body);
    let outcome = fields
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|fields| sts::exchange(&config, fields, now()));
    let mut recorded = fields.unwrap_or_default();
    recorded.remove("subject_token");
    let claims = outcome
        .as_ref()
        .ok()
        .map(|g| Value::Object(g.claims.clone()));
    let reply = match outcome {
        Ok(grant) => {
            let token = format!("ya29.d.fake-{}", wid_runtime::secrets::random_token());
            let scope = grant.scopes.join(" ");
            shared
                .federated
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    token.clone(),
                    Federated {
                        principal: grant.principal,
                        scopes: grant.scopes,
                        expires_at: now() + 3600,
                    },
                );
            json_reply(
                200,
                &json!({
                    "access_token": token,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "scope": scope,
                }),
            )
        }
        Err(e) => oauth_error(&e),
    };
    shared.record(json!({"path": "/v1/token", "fields": recorded, "subject": claims, "status": reply.status().as_u16()}));
    reply
}

/// RFC 7662 as STS answers it: the principal of a live federated token.
async fn introspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let fields = match form(&headers, &body) {
        Ok(fields) => fields,
        Err(e) => return oauth_error(&e),
    };
    let token = fields
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let found = shared
        .federated
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(token)
        .cloned()
        .filter(|f| f.expires_at > now());
    match found {
        Some(f) => json_reply(
            200,
            &json!({
                "active": true,
                "scope": f.scopes.join(" "),
                "exp": f.expires_at.to_string(),
                "username": f.principal,
            }),
        ),
        None => json_reply(200, &json!({"active": false})),
    }
}

async fn credentials(
    State(shared): State<Arc<Shared>>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let answer = generate(&shared, &project, &name, &headers, &body);
    let (status, reply) = match answer {
        Ok(body) => (200, body),
        Err(GoogleError { code, body }) => (code, body),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.record(json!({"path": format!("/v1/projects/{project}/serviceAccounts/{name}"), "body": request, "status": status}));
    json_reply(status, &reply)
}

/// One IAM Credentials call, read top to bottom: the method, the caller, the permission, the
/// body, the token.
fn generate(
    shared: &Shared,
    project: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, GoogleError> {
    let (email, method) = credentials::route(project, name)?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let lookup = |token: &str| {
        shared
            .federated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    };
    let caller = credentials::caller(authorization, lookup, now())?;
    credentials::authorize(&shared.config(), &caller, &email, method)?;
    let body: Value = serde_json::from_slice(body).map_err(|_| {
        credentials::google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
            None,
        )
    })?;
    match method {
        Method::AccessToken => {
            let (_scopes, lifetime) = credentials::access_token_request(&body)?;
            Ok(json!({
                "accessToken": format!("ya29.c.fake-{}", wid_runtime::secrets::random_token()),
                "expireTime": wid_api::time::rfc3339(now() + lifetime),
            }))
        }
        Method::IdToken => {
            let (audience, include_email) = credentials::id_token_request(&body)?;
            Ok(json!({"token": id_token(&shared.key, &email, &audience, include_email)}))
        }
    }
}

/// An ID token of `email` for `audience`, shaped as Google's.
fn id_token(key: &SigningKey, email: &str, audience: &str, include_email: bool) -> String {
    let unique_id = email.bytes().fold(1_000_000_007_u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    }) % 10_u64.pow(19);
    let now = now();
    let mut claims = json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": format!("1{unique_id:019}"),
        "sub": format!("1{unique_id:019}"),
        "iat": now,
        "exp": now + 3600,
    });
    if include_email {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(true);
    }
    key.sign_jwt(TokenType::Jwt, &claims).expect("sign")
}

async fn certs(State(shared): State<Arc<Shared>>) -> Response {
    json_reply(200, &json!({"keys": [shared.key.public_jwk()]}))
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    let all = shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    json_reply(200, &Value::Array(all))
}

async fn set_config(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Config>(&body) {
        Ok(config) => {
            *shared.config.lock().unwrap_or_else(PoisonError::into_inner) = config;
            json_reply(200, &json!({}))
        }
        Err(e) => json_reply(400, &json!({"error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests;
