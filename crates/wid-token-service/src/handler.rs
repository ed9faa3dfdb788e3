//! The one entry point of every request: route, authenticate, read the body, dispatch to the
//! resource's rules, render, and log one line.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wid_store::Store;

use crate::App;
use crate::error::ApiError;
use crate::http::{decode_body, ok, parse_json, parse_query, query_value, read_body};
use crate::routes::{AccountVerb, Route, route};

/// The token service's router: every path goes through [`handle`].
pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    Router::new().fallback(handle::<S>).with_state(app)
}

async fn handle<S: Store>(State(app): State<Arc<App<S>>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // The path only: query strings may carry tokens, and logs never do.
    let path = request.uri().path().to_owned();
    let response = match app.dispatch(request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    tracing::info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

fn json<T: Serialize>(result: Result<T, ApiError>) -> Result<Response, ApiError> {
    result.map(|v| ok(&v))
}

fn empty(result: Result<(), ApiError>) -> Result<Response, ApiError> {
    result.map(|()| ok(&serde_json::json!({})))
}

impl<S: Store> App<S> {
    async fn dispatch(&self, request: Request<Body>) -> Result<Response, ApiError> {
        let (mut parts, body) = request.into_parts();
        // Clients whose HTTP stack cannot send PATCH (Google's Java clients) POST with this
        // header instead, and Google honours it.
        if parts.method == Method::POST {
            let overridden = parts
                .headers
                .get("x-http-method-override")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Method::from_bytes(v.trim().to_ascii_uppercase().as_bytes()).ok());
            if let Some(m) = overridden
                .filter(|m| [Method::GET, Method::PATCH, Method::PUT, Method::DELETE].contains(m))
            {
                parts.method = m;
            }
        }
        let path = parts.uri.path();
        let route = match route(&parts.method, path) {
            Ok(route) => route,
            // STS clients parse OAuth errors only.
            Err(e) if path == "/v1/token" || path == "/v1/introspect" => {
                return Err(e.oauth_shaped());
            }
            Err(e) => return Err(e),
        };
        let query = parse_query(parts.uri.query())?;
        let content_type = parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // The endpoints that need no credentials: the OAuth ones and the public documents.
        match &route {
            Route::Healthz => return Ok(ok(&serde_json::json!({ "status": "ok" }))),
            Route::Jwks => return Ok(self.jwks_document()),
            Route::PemCerts => return Ok(self.pem_document()),
            Route::OpenIdConfiguration => return Ok(ok(&self.openid_configuration())),
            Route::AccountKeys { format, account } => {
                return self.account_keys(format, account).await;
            }
            Route::Token | Route::Introspect | Route::TokenInfo => {
                let encoding = parts
                    .headers
                    .get(axum::http::header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok());
                let body = match read_body(body).await.and_then(|b| decode_body(encoding, b)) {
                    Ok(body) => body,
                    Err(e) => return Err(e.oauth_shaped()),
                };
                let answer = match route {
                    // A Basic client credential (gcloud sends one) is accepted and ignored.
                    Route::Token => json(self.exchange(content_type.as_deref(), &body).await),
                    Route::Introspect => json(self.introspect(&body).await),
                    _ => {
                        let mut params = query.clone();
                        if parts.method == Method::POST {
                            params.extend(
                                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
                                    .unwrap_or_default(),
                            );
                        }
                        json(self.tokeninfo(&params).await)
                    }
                };
                return answer.map_err(ApiError::oauth_shaped);
            }
            _ => {}
        }
        // Authenticate before reading a body, so strangers cannot make us buffer one.
        let caller = match self.authenticate(&parts.headers).await {
            Ok(caller) => caller,
            Err(e) => {
                // A refused attempt at a credential is a denial the audit trail must show.
                if let Route::ServiceAccountVerb {
                    account,
                    verb: AccountVerb::Credentials(verb),
                    ..
                } = &route
                {
                    self.audit_unauthenticated(*verb, account, &e).await;
                }
                return Err(e);
            }
        };
        let encoding = parts
            .headers
            .get(axum::http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let body = decode_body(encoding, read_body(body).await?)?;
        let q = |name: &str| query_value(&query, name);
        let m = &parts.method;
        match route {
            Route::Healthz
            | Route::Jwks
            | Route::PemCerts
            | Route::OpenIdConfiguration
            | Route::AccountKeys { .. }
            | Route::Token
            | Route::Introspect
            | Route::TokenInfo => Err(ApiError::Internal(
                "public route reached the authenticated dispatch".into(),
            )),
            Route::SigningKeys => json(self.list_signing_keys(&caller)),
            Route::RotateSigningKeys => {
                json(self.rotate_signing_keys(&caller, parse_json(&body)?).await)
            }
            Route::AuditEvents => json(self.list_audit_events(&caller, q("limit")).await),
            Route::Projects if m == Method::POST => {
                json(self.create_project(&caller, parse_json(&body)?).await)
            }
            Route::Projects => json(self.list_projects(&caller).await),
            Route::Project(p) => json(self.get_project(&caller, &p).await),
            Route::ProjectPolicy(p, verb) => {
                json(self.project_policy(&caller, &p, verb, &query, &body).await)
            }
            Route::ServiceAccounts(p) if m == Method::POST => json(
                self.create_service_account(&caller, &p, parse_json(&body)?)
                    .await,
            ),
            Route::ServiceAccounts(p) => json(
                self.list_service_accounts(&caller, &p, q("pageSize"), q("pageToken"))
                    .await,
            ),
            Route::ServiceAccount { project, account } => match *m {
                Method::PATCH => json(
                    self.update_service_account(
                        &caller,
                        &project,
                        &account,
                        parse_json(&body)?,
                        false,
                    )
                    .await,
                ),
                Method::PUT => {
                    let whole: wid_api::iam::ServiceAccount = parse_json(&body)?;
                    let request = wid_api::iam::PatchServiceAccountRequest {
                        service_account: Some(whole),
                        update_mask: None,
                    };
                    json(
                        self.update_service_account(&caller, &project, &account, request, true)
                            .await,
                    )
                }
                Method::DELETE => empty(
                    self.delete_service_account(&caller, &project, &account)
                        .await,
                ),
                _ => json(self.get_service_account(&caller, &project, &account).await),
            },
            Route::ServiceAccountVerb {
                project,
                account,
                verb,
            } => match verb {
                AccountVerb::Disable | AccountVerb::Enable => {
                    // The body is `{}`; anything in it is refused as Google refuses unknown fields.
                    let fields: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
                    if let Some(name) = fields.keys().next() {
                        return Err(ApiError::invalid(
                            name,
                            format!(
                                "Invalid JSON payload received. Unknown name \"{name}\": this method takes an empty body."
                            ),
                        ));
                    }
                    empty(
                        self.set_service_account_disabled(
                            &caller,
                            &project,
                            &account,
                            verb == AccountVerb::Disable,
                        )
                        .await,
                    )
                }
                AccountVerb::Credentials(verb) => json(
                    self.credentials_call(&caller, &project, &account, verb, &body)
                        .await,
                ),
                AccountVerb::Policy(verb) => json(
                    self.account_policy(&caller, &project, &account, verb, &query, &body)
                        .await,
                ),
            },
            Route::Pools { project, location } if m == Method::POST => json(
                self.create_pool(
                    &caller,
                    &project,
                    &location,
                    q("workloadIdentityPoolId"),
                    parse_json(&body)?,
                )
                .await,
            ),
            Route::Pools { project, location } => {
                json(self.list_pools(&caller, &project, &location).await)
            }
            Route::Pool {
                project,
                location,
                pool,
            } => match *m {
                Method::PATCH => json(
                    self.update_pool(
                        &caller,
                        &project,
                        &location,
                        &pool,
                        q("updateMask"),
                        parse_json(&body)?,
                    )
                    .await,
                ),
                Method::DELETE => json(self.delete_pool(&caller, &project, &location, &pool).await),
                _ => json(self.get_pool(&caller, &project, &location, &pool).await),
            },
            Route::Providers {
                project,
                location,
                pool,
            } if m == Method::POST => json(
                self.create_provider(
                    &caller,
                    &project,
                    &location,
                    &pool,
                    q("workloadIdentityPoolProviderId"),
                    parse_json(&body)?,
                )
                .await,
            ),
            Route::Providers {
                project,
                location,
                pool,
            } => json(
                self.list_providers(&caller, &project, &location, &pool)
                    .await,
            ),
            Route::Provider {
                project,
                location,
                pool,
                provider,
            } => match *m {
                Method::PATCH => json(
                    self.update_provider(
                        &caller,
                        &project,
                        &location,
                        &pool,
                        &provider,
                        q("updateMask"),
                        parse_json(&body)?,
                    )
                    .await,
                ),
                Method::DELETE => json(
                    self.delete_provider(&caller, &project, &location, &pool, &provider)
                        .await,
                ),
                _ => json(
                    self.get_provider(&caller, &project, &location, &pool, &provider)
                        .await,
                ),
            },
            // Every operation finished before it was returned.
            Route::Operation(name) => Ok(ok(&serde_json::json!({ "name": name, "done": true }))),
            Route::Clusters { project, location } if m == Method::POST => json(
                self.register_cluster(&caller, &project, &location, parse_json(&body)?)
                    .await,
            ),
            Route::Clusters { project, location } => {
                json(self.list_clusters(&caller, &project, &location).await)
            }
            Route::Cluster {
                project,
                location,
                name,
            } => match *m {
                Method::DELETE => empty(
                    self.delete_cluster(&caller, &project, &location, &name)
                        .await,
                ),
                _ => json(self.get_cluster(&caller, &project, &location, &name).await),
            },
        }
    }
}
