//! The token service in process: its router on a temporary SQLite database, driven without a
//! socket, through the one request path (route, identify, dispatch, errors) that the
//! end-to-end tests reach only over HTTP.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wid_jose::signer::{SigningKey, TokenType};

use super::*;

const ISSUER: &str = "https://k8s.in-process.example.com";
const EMAIL: &str = "runner@proj-a.iam.gserviceaccount.com";

/// The router of a service on a fresh data directory, its admin token, and the directory.
struct Service {
    router: axum::Router,
    admin: String,
    _dir: tempfile::TempDir,
}

/// An answer: status, `Allow`, and the body as JSON (`Null` when it is not JSON).
struct Answer {
    status: StatusCode,
    allow: Option<String>,
    body: Value,
}

impl Service {
    async fn start() -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().join("data"),
            jwks_refresh_interval: Duration::from_secs(3600),
            discovery_timeout: Duration::from_secs(5),
            issuer: None,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            admin_addr: None,
            tls: None,
            insecure_listen: false,
            database: None,
            admin_token_file: None,
        };
        let bound = "127.0.0.1:8080".parse().expect("addr");
        let (app, _lock) = App::open(config, bound).await.expect("open");
        let admin = app.admin_token.clone();
        Service {
            router: handler::router(app),
            admin,
            _dir: dir,
        }
    }

    async fn send(&self, method: Method, uri: &str, token: Option<&str>, body: Body) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            allow,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn admin(&self, method: Method, uri: &str, body: Value) -> Answer {
        let body = Body::from(body.to_string());
        self.send(method, uri, Some(&self.admin.clone()), body)
            .await
    }

    /// A form POSTed to STS.
    async fn exchange(&self, form: &[(&str, &str)]) -> Answer {
        let body = serde_urlencoded::to_string(form).expect("form");
        let request = Request::post("/v1/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            allow: None,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

/// A project, an account, a cluster whose tokens `key` signs, and the binding of its KSA
/// `default/app` to the account.
async fn setup(service: &Service, key: &SigningKey) {
    let created = |a: Answer| assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    created(
        service
            .admin(
                Method::POST,
                "/v1/projects",
                json!({"projectId": "proj-a", "projectNumber": "123456789012"}),
            )
            .await,
    );
    created(
        service
            .admin(
                Method::POST,
                "/v1/projects/proj-a/serviceAccounts",
                json!({"accountId": "runner"}),
            )
            .await,
    );
    let jwks = json!({"keys": [key.public_jwk()]}).to_string();
    created(
        service
            .admin(
                Method::POST,
                "/v1/projects/proj-a/locations/l/clusters",
                json!({"clusterName": "c", "issuerUri": ISSUER, "jwksJson": jwks}),
            )
            .await,
    );
    let policy = json!({"policy": {"bindings": [{"role": "roles/iam.workloadIdentityUser",
        "members": ["serviceAccount:proj-a.svc.id.goog[default/app]"]}]}});
    created(
        service
            .admin(
                Method::POST,
                &format!("/v1/projects/-/serviceAccounts/{EMAIL}:setIamPolicy"),
                policy,
            )
            .await,
    );
}

fn ksa_token(key: &SigningKey, namespace: &str, name: &str) -> String {
    let now = tokens::now();
    let claims = json!({"iss": ISSUER, "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": ["proj-a.svc.id.goog"], "iat": now, "nbf": now, "exp": now + 600});
    key.sign_jws_payload(TokenType::Jwt, claims.to_string().as_bytes())
        .expect("sign")
}

fn exchange_form(subject: &str) -> Vec<(&str, &str)> {
    vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "audience",
            "identitynamespace:proj-a.svc.id.goog:https://k8s.in-process.example.com",
        ),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("subject_token", subject),
        ("scope", "https://www.googleapis.com/auth/cloud-platform"),
    ]
}

#[tokio::test]
async fn requests_are_decided_and_refused_in_one_place() {
    let service = Service::start().await;
    // No credential: 401 in Google's shape, before any body is read.
    let refused = service
        .send(Method::GET, "/v1/projects", None, Body::empty())
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["error"]["status"], "UNAUTHENTICATED");
    // A known path with another method: 405 and what it allows.
    let wrong = service
        .admin(Method::DELETE, "/v1/projects", Value::Null)
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.allow.as_deref(), Some("GET, POST"));
    // STS's errors are OAuth's, whatever went wrong.
    let wrong = service
        .send(Method::GET, "/v1/token", None, Body::empty())
        .await;
    assert_eq!(wrong.body["error"], "invalid_request", "{}", wrong.body);
    let unknown = service
        .admin(Method::GET, "/v1/nothing/here", Value::Null)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // Public documents need nothing.
    let certs = service
        .send(Method::GET, "/oauth2/v3/certs", None, Body::empty())
        .await;
    assert_eq!(certs.status, StatusCode::OK);
    assert!(certs.body["keys"].as_array().is_some_and(|k| !k.is_empty()));
}

#[tokio::test]
async fn a_bound_ksa_buys_tokens_and_an_unbound_one_is_refused() {
    let service = Service::start().await;
    let key = SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    setup(&service, &key).await;
    let subject = ksa_token(&key, "default", "app");
    let exchanged = service.exchange(&exchange_form(&subject)).await;
    assert_eq!(exchanged.status, StatusCode::OK, "{}", exchanged.body);
    let federated = exchanged.body["access_token"].as_str().expect("token");
    let uri = format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken");
    let body = json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]});
    let access = service
        .send(
            Method::POST,
            &uri,
            Some(federated),
            Body::from(body.to_string()),
        )
        .await;
    assert_eq!(access.status, StatusCode::OK, "{}", access.body);
    assert!(access.body["accessToken"].as_str().is_some());
    // Another KSA of the cluster exchanges, but is not bound.
    let other = ksa_token(&key, "default", "other");
    let exchanged = service.exchange(&exchange_form(&other)).await;
    let federated = exchanged.body["access_token"].as_str().expect("token");
    let denied = service
        .send(
            Method::POST,
            &uri,
            Some(federated),
            Body::from(body.to_string()),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.body["error"]["status"], "PERMISSION_DENIED");
    // A token of another issuer's key: invalid_grant, as Google's STS words it.
    let stranger = SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    let forged = ksa_token(&stranger, "default", "app");
    let refused = service.exchange(&exchange_form(&forged)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["error"], "invalid_grant", "{}", refused.body);
}

#[tokio::test]
async fn policies_compare_and_swap_on_their_etag() {
    let service = Service::start().await;
    let key = SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    setup(&service, &key).await;
    let uri = format!("/v1/projects/-/serviceAccounts/{EMAIL}");
    let read = service
        .admin(Method::POST, &format!("{uri}:getIamPolicy"), json!({}))
        .await;
    let etag = read.body["etag"].as_str().expect("etag").to_owned();
    let set = |etag: String| json!({"policy": {"etag": etag, "bindings": []}});
    let first = service
        .admin(
            Method::POST,
            &format!("{uri}:setIamPolicy"),
            set(etag.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let stale = service
        .admin(Method::POST, &format!("{uri}:setIamPolicy"), set(etag))
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(stale.body["error"]["status"], "ABORTED");
}
