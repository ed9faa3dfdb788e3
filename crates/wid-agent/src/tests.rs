//! The agent in process: a fixed resolver (one pod at 127.0.0.1) and a fake upstream that
//! speaks STS's and IAM Credentials' wire protocol, counts its calls and refuses or fails when
//! told, for the paths the end-to-end tests reach only through the real token service: one
//! upstream call for concurrent misses, IAM's refusals in GKE's words, the token service away,
//! a KSA without an account, an address that is no pod.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::pods::{FixedResolver, GSA_ANNOTATION, Pod};
use crate::upstream::{KsaIssuer, KsaTokens};
use crate::{Config, MetadataServer};

const GSA: &str = "app@proj-a.iam.gserviceaccount.com";

/// What the fake upstream answers.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Grant = 0,
    /// IAM Credentials refuses: 403 PERMISSION_DENIED.
    Deny = 1,
    /// Everything answers 503.
    Down = 2,
    /// Everything answers a redirect to `/elsewhere`.
    Redirect = 3,
}

#[derive(Default)]
struct Upstream {
    mode: AtomicU8,
    exchanges: AtomicUsize,
    access_tokens: AtomicUsize,
    /// Calls that followed a redirect.
    redirected: AtomicUsize,
    /// Every path asked, in order.
    paths: std::sync::Mutex<Vec<String>>,
}

impl Upstream {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Deny,
            2 => Mode::Down,
            3 => Mode::Redirect,
            _ => Mode::Grant,
        }
    }
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response {
    let content_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
    (status, content_type, body.to_string()).into_response()
}

async fn upstream(State(state): State<Arc<Upstream>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if let Ok(mut paths) = state.paths.lock() {
        paths.push(path.clone());
    }
    if path == "/elsewhere" {
        state.redirected.fetch_add(1, Ordering::SeqCst);
    } else if state.mode() == Mode::Redirect {
        return (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")]).into_response();
    }
    // A little latency, so that concurrent misses overlap.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if state.mode() == Mode::Down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let expire = wid_api::time::rfc3339(crate::upstream::now() + 3600);
    if path == "/v1/token" {
        let n = state.exchanges.fetch_add(1, Ordering::SeqCst);
        return json_reply(
            StatusCode::OK,
            &json!({"access_token": format!("federated-{n}"), "expires_in": 3600,
            "token_type": "Bearer", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
        );
    }
    if state.mode() == Mode::Deny {
        let error = json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."}});
        return json_reply(StatusCode::FORBIDDEN, &error);
    }
    if path.ends_with(":generateAccessToken") {
        let n = state.access_tokens.fetch_add(1, Ordering::SeqCst);
        return json_reply(
            StatusCode::OK,
            &json!({"accessToken": format!("access-{n}"), "expireTime": expire}),
        );
    }
    if path.ends_with(":generateIdToken") {
        return json_reply(StatusCode::OK, &json!({"token": "a.b.c"}));
    }
    StatusCode::NOT_FOUND.into_response()
}

/// An agent for one pod at 127.0.0.1 (annotated with `gsa`, if any), in front of the fake
/// upstream, and that upstream.
struct Node {
    base: String,
    upstream: Arc<Upstream>,
}

async fn node(gsa: Option<&str>) -> Node {
    node_with(gsa, |_| {}).await
}

/// [`node`], with `configure` applied to the agent's settings.
async fn node_with(gsa: Option<&str>, configure: impl FnOnce(&mut Config)) -> Node {
    let state = Arc::new(Upstream::default());
    let router = axum::Router::new()
        .fallback(upstream)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let pod = Pod {
        ip: "127.0.0.1".parse().expect("ip"),
        namespace: "default".into(),
        name: "app-1".into(),
        uid: "00000000-0000-4000-8000-000000000001".into(),
        service_account_name: "app".into(),
        annotations: gsa
            .map(|gsa| (GSA_ANNOTATION.to_owned(), gsa.to_owned()))
            .into_iter()
            .collect(),
    };
    let key = KsaIssuer::generate_key().expect("key");
    let ksa = KsaTokens::Issuer(Box::new(KsaIssuer::new(
        key,
        "https://k8s.example.com".into(),
    )));
    let resolver = Arc::new(FixedResolver { pod: Arc::new(pod) });
    let mut config = config(&url);
    configure(&mut config);
    let server = MetadataServer::start(config, resolver, ksa, None)
        .await
        .expect("start");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    tokio::spawn(server.serve(std::future::pending()));
    Node {
        base,
        upstream: state,
    }
}

fn config(upstream: &str) -> Config {
    Config {
        addr: "127.0.0.1:0".parse().expect("addr"),
        project_id: "proj-a".into(),
        project_number: Some("123456789012".into()),
        federation: crate::federation::Federation::Gke {
            project_id: "proj-a".into(),
        },
        cluster_name: "c".into(),
        cluster_location: "l".into(),
        cluster_uid: String::new(),
        zone: "z".into(),
        hostname: "node".into(),
        instance_id: "1".into(),
        sts_url: upstream.into(),
        iamcredentials_url: upstream.into(),
        ca_file: None,
        upstream_timeout: Duration::from_secs(5),
        admin_addr: None,
        max_connections: 64,
        header_read_timeout: Duration::from_secs(5),
        max_requests_per_pod: 64,
        max_long_polls_per_pod: 8,
        upstream_per_second: 100.0,
        upstream_per_pod_per_second: 100.0,
        serve_threads: 1,
        pod_wait: Duration::from_millis(100),
        attest_callers: None,
        passthrough: None,
        prefetch_tokens: false,
    }
}

/// GETs `path` of the metadata server from `from`: status and body.
async fn get(base: &str, from: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().ok())
        .build()
        .expect("client");
    let response = client
        .get(format!("{base}/computeMetadata/v1/{path}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

const TOKEN: &str = "instance/service-accounts/default/token";

#[tokio::test]
async fn concurrent_first_requests_make_one_upstream_call_each() {
    let node = node(Some(GSA)).await;
    let requests = (0..20).map(|_| get(&node.base, "127.0.0.1", TOKEN));
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"access_token\":\"access-0\""), "{body}");
    }
    assert_eq!(node.upstream.exchanges.load(Ordering::SeqCst), 1);
    assert_eq!(node.upstream.access_tokens.load(Ordering::SeqCst), 1);
    // Then from the cache, with the upstream away.
    node.upstream.set(Mode::Down);
    let (status, body) = get(&node.base, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.upstream.access_tokens.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refusals_and_outages_are_told_as_gke_tells_them() {
    let node = node(Some(GSA)).await;
    node.upstream.set(Mode::Deny);
    let (status, body) = get(&node.base, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.starts_with("Unable to generate access token; IAM returned 403 Forbidden: Permission 'iam.serviceAccounts.getAccessToken' denied")
            && body.contains("missing IAM policy binding"),
        "{body}"
    );
    node.upstream.set(Mode::Down);
    let scoped = format!("{TOKEN}?scopes=https://www.googleapis.com/auth/devstorage.read_only");
    let (status, body) = get(&node.base, "127.0.0.1", &scoped).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("Unable to generate access token: IAM answered 503")
            && body.ends_with("; retry\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_ksa_without_an_account_gets_the_federated_token_and_no_id_token() {
    let node = node(None).await;
    let (status, body) = get(&node.base, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"access_token\":\"federated-0\""), "{body}");
    let (status, body) = get(
        &node.base,
        "127.0.0.1",
        "instance/service-accounts/default/identity?audience=x",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("is not annotated"), "{body}");
    let (_, email) = get(
        &node.base,
        "127.0.0.1",
        "instance/service-accounts/default/email",
    )
    .await;
    assert_eq!(email, "proj-a.svc.id.goog");
}

#[tokio::test]
async fn an_address_that_is_no_pod_is_refused_and_costs_nothing_upstream() {
    let node = node(Some(GSA)).await;
    let (status, body) = get(&node.base, "127.0.0.2", TOKEN).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("knows no pod at 127.0.0.2"), "{body}");
    assert_eq!(node.upstream.exchanges.load(Ordering::SeqCst), 0);
}

/// A redirect from upstream is not followed: it would carry the pod's KSA token (or federated
/// token) where the operator did not point the agent.
#[tokio::test]
async fn redirects_from_upstream_are_not_followed() {
    let node = node(Some(GSA)).await;
    node.upstream.set(Mode::Redirect);
    let (status, body) = get(&node.base, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(node.upstream.redirected.load(Ordering::SeqCst), 0);
}

/// An annotation is one path segment of IAM Credentials' URL, whatever it holds.
#[tokio::test]
async fn an_annotation_is_one_path_segment() {
    let node = node(Some("a/../b?x#y@proj-a.iam.gserviceaccount.com")).await;
    let (status, body) = get(&node.base, "127.0.0.1", TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let paths = node
        .upstream
        .paths
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    assert!(
        paths.contains(&"/v1/projects/-/serviceAccounts/a%2F..%2Fb%3Fx%23y@proj-a.iam.gserviceaccount.com:generateAccessToken".to_owned()),
        "{paths:?}"
    );
}

mod passthrough;
