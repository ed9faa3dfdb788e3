//! The one entry point of every request, read top to bottom: the operation is decided once
//! ([`routes::route`]), a public operation is answered, an authenticated one identifies its
//! caller once, before its body is read, then runs; every failure becomes its reply in
//! [`ApiError::into_response`]; one log line per request.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument;

use crate::App;
use crate::error::ApiError;
use crate::http::{Input, decode_body, ok, parse_query, read_body};
use crate::routes::{Authenticated, OAuth, Operation, Public, route};
use wid_iam::Caller;

/// The token service's router: every path goes through [`handle`].
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let id = request_id(request.headers());
    let span = tracing::info_span!("request", id = id.to_str().unwrap_or("-"));
    app.handle(request, id).instrument(span).await
}

/// The request's id: the caller's `X-Request-Id` when it is a short token of safe characters
/// (a proxy's, to follow one request through both logs), else a new one. Logged with every line
/// of the request and returned in the answer.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|v| {
            let b = v.as_bytes();
            (1..=64).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&wid_runtime::secrets::random_hex::<8>())
                .unwrap_or(HeaderValue::from_static("-"))
        })
}

impl App {
    async fn handle(&self, request: Request, id: HeaderValue) -> Response {
        let started = Instant::now();
        let method = request.method().clone();
        // The path only: query strings may carry tokens, and logs never do.
        let path = request.uri().path().to_owned();
        let (api_method, result) = self.dispatch(request).await;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
        let status = response.status().as_u16();
        let latency = started.elapsed();
        self.metrics
            .request(api_method, status, latency.as_secs_f64());
        response.headers_mut().insert("x-request-id", id);
        tracing::info!(
            method = %method,
            path = %path,
            api_method,
            status,
            latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        response
    }
}

fn json<T: Serialize>(result: Result<T, ApiError>) -> Result<Response, ApiError> {
    result.map(|v| ok(&v))
}

fn empty(result: Result<(), ApiError>) -> Result<Response, ApiError> {
    result.map(|()| ok(&serde_json::json!({})))
}

/// Clients whose HTTP stack cannot send PATCH (Google's Java clients) POST with
/// `X-HTTP-Method-Override` instead, and Google honours it.
fn method_of(parts: &Parts) -> Method {
    let overridden = (parts.method == Method::POST)
        .then(|| parts.headers.get("x-http-method-override"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok())
        .filter(|m| [Method::GET, Method::PATCH, Method::PUT, Method::DELETE].contains(m));
    overridden.unwrap_or_else(|| parts.method.clone())
}

/// Whether `path` is STS's, whose clients parse OAuth-shaped errors only.
fn is_sts(path: &str) -> bool {
    path == "/v1/token" || path == "/v1/introspect"
}

/// The request's body, size-bounded, its `Content-Encoding` undone.
async fn body_of(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    decode_body(encoding, read_body(body).await?)
}

impl App {
    /// The request's API method (for the metrics) and its answer.
    async fn dispatch(&self, request: Request<Body>) -> (&'static str, Result<Response, ApiError>) {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let operation = match route(&method_of(&parts), path) {
            Ok(operation) => operation,
            Err(e) if is_sts(path) => return ("unknown", Err(e.oauth_shaped())),
            Err(e) => return ("unknown", Err(e)),
        };
        let api_method = operation.method_name();
        (api_method, self.run(operation, parts, body).await)
    }

    async fn run(
        &self,
        operation: Operation,
        parts: Parts,
        body: Body,
    ) -> Result<Response, ApiError> {
        let query = parse_query(parts.uri.query())?;
        match operation {
            Operation::Public(op) => self.public(op, &parts, query, body).await,
            Operation::Authenticated(op) => {
                // Authenticate before reading a body, so strangers cannot make us buffer one.
                let caller = self.identify(&op, &parts.headers).await?;
                let body = body_of(&parts.headers, body).await?;
                self.authenticated(op, &caller, &Input { query, body })
                    .await
            }
        }
    }

    /// The caller of an authenticated operation; a refused attempt at a credential is a denial
    /// the audit trail must show.
    async fn identify(&self, op: &Authenticated, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let refused = match self.authenticate(headers).await {
            Ok(caller) => return Ok(caller),
            Err(e) => e,
        };
        if let Authenticated::Credentials(account, verb) = op {
            self.audit_unauthenticated(*verb, &account.account, &refused)
                .await;
        }
        Err(refused)
    }

    async fn public(
        &self,
        op: Public,
        parts: &Parts,
        query: Vec<(String, String)>,
        body: Body,
    ) -> Result<Response, ApiError> {
        match op {
            Public::Healthz => Ok(ok(&serde_json::json!({ "status": "ok" }))),
            Public::Readyz => Ok(self.readiness()),
            Public::Metrics => Ok(self.metrics.response(&self.store)),
            Public::Jwks => Ok(self.jwks_document()),
            Public::PemCerts => Ok(self.pem_document()),
            Public::OpenIdConfiguration => Ok(ok(&self.openid_configuration())),
            Public::AccountKeys { format, account } => self.account_keys(&format, &account).await,
            Public::OAuth(op) => self
                .oauth(op, parts, query, body)
                .await
                .map_err(ApiError::oauth_shaped),
        }
    }

    /// STS and tokeninfo, whose clients read OAuth-shaped errors.
    async fn oauth(
        &self,
        op: OAuth,
        parts: &Parts,
        mut params: Vec<(String, String)>,
        body: Body,
    ) -> Result<Response, ApiError> {
        let body = body_of(&parts.headers, body).await?;
        match op {
            // A Basic client credential (gcloud sends one) is accepted and ignored.
            OAuth::Exchange => {
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                json(self.exchange(content_type, &body).await)
            }
            OAuth::Introspect => json(self.introspect(&body).await),
            OAuth::KeyGrant => json(self.key_grant(&body).await),
            OAuth::TokenInfo { posted } => {
                if posted {
                    params.extend(
                        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
                            .unwrap_or_default(),
                    );
                }
                json(self.tokeninfo(&params).await)
            }
        }
    }

    async fn authenticated(
        &self,
        op: Authenticated,
        caller: &Caller,
        input: &Input,
    ) -> Result<Response, ApiError> {
        use Authenticated as A;
        match op {
            A::ListSigningKeys => json(self.list_signing_keys(caller)),
            A::RotateSigningKeys => json(self.rotate_signing_keys(caller, input.json()?).await),
            A::ListAuditEvents => json(self.list_audit_events(caller, input.query("limit")).await),
            A::CreateProject => json(self.create_project(caller, input.json()?).await),
            A::ListProjects => json(self.list_projects(caller).await),
            A::GetProject(p) => json(self.get_project(caller, &p).await),
            A::UpdateProject(p) => json(self.update_project(caller, &p, input).await),
            A::CreateKey(a) => json(self.create_key(caller, &a, input.json()?).await),
            A::UploadKey(a) => json(self.upload_key(caller, &a, input.json()?).await),
            A::ListKeys(a) => json(self.list_keys(caller, &a, input).await),
            A::GetKey(k) => json(self.get_key(caller, &k, input).await),
            A::DeleteKey(k) => empty(self.delete_key(caller, &k).await),
            A::DisableKey(k) => {
                input.empty_object()?;
                empty(self.set_key_disabled(caller, &k, true).await)
            }
            A::EnableKey(k) => {
                input.empty_object()?;
                empty(self.set_key_disabled(caller, &k, false).await)
            }
            A::ProjectPolicy(p, verb) => json(self.project_policy(caller, &p, verb, input).await),
            A::CreateServiceAccount(p) => {
                json(self.create_service_account(caller, &p, input.json()?).await)
            }
            A::ListServiceAccounts(p) => json(self.list_service_accounts(caller, &p, input).await),
            A::GetServiceAccount(a) => json(self.get_service_account(caller, &a).await),
            A::PatchServiceAccount(a) => {
                json(self.patch_service_account(caller, &a, input.json()?).await)
            }
            A::ReplaceServiceAccount(a) => json(
                self.replace_service_account(caller, &a, input.json()?)
                    .await,
            ),
            A::DeleteServiceAccount(a) => empty(self.delete_service_account(caller, &a).await),
            A::DisableServiceAccount(a) => {
                input.empty_object()?;
                empty(self.set_service_account_disabled(caller, &a, true).await)
            }
            A::EnableServiceAccount(a) => {
                input.empty_object()?;
                empty(self.set_service_account_disabled(caller, &a, false).await)
            }
            A::AccountPolicy(a, verb) => json(self.account_policy(caller, &a, verb, input).await),
            A::Credentials(a, verb) => json(self.credentials_call(caller, &a, verb, input).await),
            A::CreatePool(l) => json(self.create_pool(caller, &l, input).await),
            A::ListPools(l) => json(self.list_pools(caller, &l).await),
            A::GetPool(p) => json(self.get_pool(caller, &p).await),
            A::UpdatePool(p) => json(self.update_pool(caller, &p, input).await),
            A::DeletePool(p) => json(self.delete_pool(caller, &p).await),
            A::CreateProvider(p) => json(self.create_provider(caller, &p, input).await),
            A::ListProviders(p) => json(self.list_providers(caller, &p).await),
            A::GetProvider(p) => json(self.get_provider(caller, &p).await),
            A::UpdateProvider(p) => json(self.update_provider(caller, &p, input).await),
            A::DeleteProvider(p) => json(self.delete_provider(caller, &p).await),
            // Every operation finished before it was returned.
            A::GetOperation(name) => Ok(ok(&serde_json::json!({ "name": name, "done": true }))),
            A::RegisterCluster(l) => json(self.register_cluster(caller, &l, input.json()?).await),
            A::ListClusters(l) => json(self.list_clusters(caller, &l).await),
            A::GetCluster(c) => json(self.get_cluster(caller, &c).await),
            A::DeleteCluster(c) => empty(self.delete_cluster(caller, &c).await),
        }
    }
}
