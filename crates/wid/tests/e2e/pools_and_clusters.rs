//! Workload identity pools, OIDC providers and registered clusters, with a real OIDC issuer on
//! loopback for discovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Api, Server};
use axum::routing::get;
use serde_json::{Value, json};

const JWKS: &str = r#"{"keys":[{"kty":"RSA","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB","kid":"key-1","alg":"RS256","use":"sig"}]}"#;

/// An OIDC issuer on loopback that counts its JWKS fetches and can name the wrong issuer.
struct Issuer {
    url: String,
    jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn issuer(claims_issuer: Option<&str>) -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let named = claims_issuer.map_or_else(|| url.clone(), str::to_owned);
    let jwks_fetches = Arc::new(AtomicUsize::new(0));
    let count = jwks_fetches.clone();
    let jwks_uri = format!("{url}/openid/v1/jwks");
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let doc = json!({"issuer": named, "jwks_uri": jwks_uri, "id_token_signing_alg_values_supported": ["RS256"]});
                async move { ([("content-type", "application/json")], doc.to_string()) }
            }),
        )
        .route(
            "/openid/v1/jwks",
            get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                async { ([("content-type", "application/json")], JWKS) }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Issuer {
        url,
        jwks_fetches,
        task,
    }
}

async fn setup() -> (tempfile::TempDir, Server, Api) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(&dir.path().join("data"), &["--jwks-refresh-seconds", "1"]);
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    (dir, server, api)
}

const POOLS: &str = "/v1/projects/proj-a/locations/global/workloadIdentityPools";

fn operation_response(answer: &crate::support::Answer, type_name: &str) -> Value {
    let op = answer.ok();
    assert_eq!(op["done"], true, "{op}");
    assert!(
        op["name"]
            .as_str()
            .is_some_and(|n| n.contains("/operations/")),
        "{op}"
    );
    assert_eq!(
        op["response"]["@type"],
        format!("type.googleapis.com/google.iam.v1.{type_name}")
    );
    op["response"].clone()
}

#[tokio::test]
async fn pools_crud() {
    let (_dir, _server, api) = setup().await;
    let created = api
        .post(
            &format!("{POOLS}?workloadIdentityPoolId=pool-one"),
            json!({"displayName": "One", "disabled": false}),
        )
        .await;
    let pool = operation_response(&created, "WorkloadIdentityPool");
    assert_eq!(
        pool["name"],
        "projects/111111111111/locations/global/workloadIdentityPools/pool-one"
    );
    assert_eq!(pool["state"], "ACTIVE");
    assert_eq!(
        api.get(&format!("{POOLS}/pool-one")).await.ok()["displayName"],
        "One"
    );
    // The project number addresses the same pools.
    let by_number = api
        .get("/v1/projects/111111111111/locations/global/workloadIdentityPools")
        .await;
    // The project's fixed GKE pool, then the created one.
    assert_eq!(
        by_number.ok()["workloadIdentityPools"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        by_number.body["workloadIdentityPools"][0]["name"],
        "projects/111111111111/locations/global/workloadIdentityPools/proj-a.svc.id.goog"
    );

    api.post(
        &format!("{POOLS}?workloadIdentityPoolId=pool-one"),
        json!({}),
    )
    .await
    .expect_error(409, "ALREADY_EXISTS");
    for bad in ["abc", "gcp-pool", "Pool-one", "-pool", "pool_one", ""] {
        api.post(&format!("{POOLS}?workloadIdentityPoolId={bad}"), json!({}))
            .await
            .expect_error(400, "INVALID_ARGUMENT");
    }
    api.post("/v1/projects/proj-a/locations/us-east1/workloadIdentityPools?workloadIdentityPoolId=pool-two", json!({}))
        .await
        .expect_error(400, "INVALID_ARGUMENT");

    let patched = api
        .call(
            "PATCH",
            &format!("{POOLS}/pool-one?updateMask=disabled"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(
        operation_response(&patched, "WorkloadIdentityPool")["disabled"],
        true
    );
    api.call(
        "PATCH",
        &format!("{POOLS}/pool-one"),
        Some(json!({"disabled": false})),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");

    // The GKE pool exists without being created.
    let gke = api.get(&format!("{POOLS}/proj-a.svc.id.goog")).await;
    assert_eq!(
        gke.ok()["name"],
        "projects/111111111111/locations/global/workloadIdentityPools/proj-a.svc.id.goog"
    );

    let deleted = api.call("DELETE", &format!("{POOLS}/pool-one"), None).await;
    assert_eq!(
        operation_response(&deleted, "WorkloadIdentityPool")["state"],
        "DELETED"
    );
    api.get(&format!("{POOLS}/pool-one"))
        .await
        .expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn oidc_providers() {
    let (_dir, _server, api) = setup().await;
    api.post(
        &format!("{POOLS}?workloadIdentityPoolId=pool-one"),
        json!({}),
    )
    .await
    .ok();
    let providers = format!("{POOLS}/pool-one/providers");
    let body = json!({"oidc": {"issuerUri": "https://issuer.example.com", "jwksJson": JWKS, "allowedAudiences": ["aud-1"]}});
    let created = api
        .post(
            &format!("{providers}?workloadIdentityPoolProviderId=prov-one"),
            body.clone(),
        )
        .await;
    let provider = operation_response(&created, "WorkloadIdentityPoolProvider");
    assert_eq!(
        provider["attributeMapping"],
        json!({"google.subject": "assertion.sub"}),
        "the default mapping"
    );
    assert_eq!(provider["oidc"]["jwksJson"], JWKS);
    api.post(
        &format!("{providers}?workloadIdentityPoolProviderId=prov-one"),
        body,
    )
    .await
    .expect_error(409, "ALREADY_EXISTS");

    let bad_bodies = [
        (json!({}), "oidc"),
        (json!({"oidc": {"issuerUri": "ftp://x"}}), "issuer"),
        (
            json!({"oidc": {"issuerUri": "https://i.example.com", "jwksJson": "{\"keys\": []}"}}),
            "JWKS",
        ),
        (
            json!({"oidc": {"issuerUri": "https://i.example.com", "jwksJson": "{\"keys\": [{\"kty\": \"oct\", \"k\": \"x\"}]}"}}),
            "oct",
        ),
        (
            json!({"oidc": {"issuerUri": "https://i.example.com"}, "attributeMapping": {"attribute.ns": "assertion.ns"}}),
            "google.subject",
        ),
        (
            json!({"oidc": {"issuerUri": "https://i.example.com"}, "attributeMapping": {"google.subject": "assertion.sub +"}}),
            "google.subject",
        ),
        (
            json!({"oidc": {"issuerUri": "https://i.example.com"}, "attributeMapping": {"google.subject": "assertion.sub", "attribute.Bad": "x"}}),
            "attribute.Bad",
        ),
        (
            json!({"oidc": {"issuerUri": "https://i.example.com"}, "attributeCondition": "assertion.sub =="}),
            "condition",
        ),
        (json!({"aws": {"accountId": "1"}}), "aws"),
    ];
    for (body, needle) in bad_bodies {
        let answer = api
            .post(
                &format!("{providers}?workloadIdentityPoolProviderId=prov-two"),
                body.clone(),
            )
            .await;
        let message = answer.expect_error(400, "INVALID_ARGUMENT");
        assert!(message.contains(needle), "{body}: {message}");
    }
    // A documented-subset condition and a custom mapping are accepted.
    let good = json!({
        "oidc": {"issuerUri": "https://k8s.example.com"},
        "attributeMapping": {"google.subject": "assertion.sub", "attribute.namespace": "assertion['kubernetes.io'].namespace"},
        "attributeCondition": "assertion['kubernetes.io'].namespace in ['prod', 'staging'] && !assertion.sub.startsWith('system:serviceaccount:kube-system:')",
    });
    api.post(
        &format!("{providers}?workloadIdentityPoolProviderId=prov-two"),
        good,
    )
    .await
    .ok();

    let updated = api
        .call(
            "PATCH",
            &format!("{providers}/prov-one?updateMask=disabled,oidc.allowedAudiences"),
            Some(json!({"disabled": true, "oidc": {"allowedAudiences": ["aud-2", "aud-3"]}})),
        )
        .await;
    let updated = operation_response(&updated, "WorkloadIdentityPoolProvider");
    assert_eq!(updated["disabled"], true);
    assert_eq!(
        updated["oidc"]["allowedAudiences"],
        json!(["aud-2", "aud-3"])
    );
    assert_eq!(
        updated["oidc"]["issuerUri"], "https://issuer.example.com",
        "unmasked fields stay"
    );

    let list = api.get(&providers).await;
    assert_eq!(
        list.ok()["workloadIdentityPoolProviders"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // The GKE pool's providers are clusters.
    api.post(
        &format!("{POOLS}/proj-a.svc.id.goog/providers?workloadIdentityPoolProviderId=prov-one"),
        json!({"oidc": {"issuerUri": "https://x.example.com"}}),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");

    // Deleting the pool takes its providers.
    api.call("DELETE", &format!("{providers}/prov-two"), None)
        .await
        .ok();
    api.call("DELETE", &format!("{POOLS}/pool-one"), None)
        .await
        .ok();
    api.post(
        &format!("{POOLS}?workloadIdentityPoolId=pool-one"),
        json!({}),
    )
    .await
    .ok();
    assert_eq!(api.get(&providers).await.ok(), &json!({}));
}

const CLUSTERS: &str = "/v1/projects/proj-a/locations/europe-west1/clusters";

#[tokio::test]
async fn clusters_with_uploaded_keys() {
    let (_dir, _server, api) = setup().await;
    let cluster = api
        .post(CLUSTERS, json!({"clusterName": "prod", "issuerUri": "https://k8s.prod.example.com", "jwksJson": JWKS}))
        .await
        .ok()
        .clone();
    assert_eq!(
        cluster["name"],
        "projects/proj-a/locations/europe-west1/clusters/prod"
    );
    assert_eq!(cluster["workloadIdentityPool"], "proj-a.svc.id.goog");
    assert_eq!(
        cluster["memberFormat"],
        "serviceAccount:proj-a.svc.id.goog[NAMESPACE/KSA]"
    );
    assert_eq!(cluster["isolated"], false);
    assert_eq!(cluster["uid"].as_str().map(str::len), Some(36));

    let isolated = api
        .post(CLUSTERS, json!({"clusterName": "lab", "issuerUri": "https://k8s.lab.example.com", "jwksJson": JWKS, "isolated": true}))
        .await
        .ok()
        .clone();
    assert_eq!(
        isolated["memberFormat"],
        "serviceAccount:proj-a.svc.id.goog[europe-west1/lab/NAMESPACE/KSA]"
    );

    api.post(
        CLUSTERS,
        json!({"clusterName": "prod", "issuerUri": "https://other.example.com", "jwksJson": JWKS}),
    )
    .await
    .expect_error(409, "ALREADY_EXISTS");
    api.post(CLUSTERS, json!({"clusterName": "prod-2", "issuerUri": "https://k8s.prod.example.com", "jwksJson": JWKS}))
        .await
        .expect_error(409, "ALREADY_EXISTS");
    for bad in [
        json!({"clusterName": "c1", "issuerUri": "https://c1.example.com"}),
        json!({"clusterName": "c1", "issuerUri": "https://c1.example.com", "jwksJson": JWKS, "discover": true}),
        json!({"clusterName": "C1", "issuerUri": "https://c1.example.com", "jwksJson": JWKS}),
        json!({"clusterName": "c1", "issuerUri": "not a url", "jwksJson": JWKS}),
        json!({"clusterName": "c1", "issuerUri": "https://c1.example.com", "jwksJson": "{}"}),
    ] {
        api.post(CLUSTERS, bad)
            .await
            .expect_error(400, "INVALID_ARGUMENT");
    }
    // Registered clusters are the (read-only) providers of the GKE pool.
    let gke = api
        .get(&format!("{POOLS}/proj-a.svc.id.goog/providers"))
        .await;
    let providers = gke.ok()["workloadIdentityPoolProviders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(providers.len(), 2);
    assert!(
        providers
            .iter()
            .any(|p| p["oidc"]["issuerUri"] == "https://k8s.prod.example.com")
    );
    let uid = cluster["uid"].as_str().expect("uid");
    let one = api
        .get(&format!("{POOLS}/proj-a.svc.id.goog/providers/{uid}"))
        .await;
    assert_eq!(
        one.ok()["oidc"]["allowedAudiences"],
        json!(["proj-a.svc.id.goog"])
    );
    api.call("DELETE", &format!("{POOLS}/proj-a.svc.id.goog"), None)
        .await
        .expect_error(400, "FAILED_PRECONDITION");
    // Plain http:// issuers only on loopback.
    let plain = api
        .post(CLUSTERS, json!({"clusterName": "plain", "issuerUri": "http://k8s.example.com", "jwksJson": JWKS}))
        .await;
    assert!(
        plain
            .expect_error(400, "INVALID_ARGUMENT")
            .contains("loopback")
    );
    let all = api.get("/v1/projects/proj-a/locations/-/clusters").await;
    assert_eq!(all.ok()["clusters"].as_array().map(Vec::len), Some(2));
    api.call("DELETE", &format!("{CLUSTERS}/lab"), None)
        .await
        .ok();
    api.get(&format!("{CLUSTERS}/lab"))
        .await
        .expect_error(404, "NOT_FOUND");
    assert_eq!(
        api.get(CLUSTERS).await.ok()["clusters"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn clusters_with_discovered_keys_stay_fresh() {
    let (_dir, _server, api) = setup().await;
    let good = issuer(None).await;
    let cluster = api
        .post(
            CLUSTERS,
            json!({"clusterName": "disc", "issuerUri": good.url, "discover": true}),
        )
        .await;
    assert_eq!(cluster.ok()["discover"], true);
    assert!(
        cluster.body["jwksFetchTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    // The refresher (every second here) fetches the keys again: bounded wait for two more.
    let deadline = Instant::now() + Duration::from_secs(20);
    while good.jwks_fetches.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "discovered keys were not refreshed within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An issuer whose discovery names another issuer, or none at all: refused, nothing stored.
    let liar = issuer(Some("https://somebody-else.example.com")).await;
    let answer = api
        .post(
            CLUSTERS,
            json!({"clusterName": "liar", "issuerUri": liar.url, "discover": true}),
        )
        .await;
    // The client hears that discovery failed, not what the issuer answered: that is the log's.
    let message = answer.expect_error(400, "FAILED_PRECONDITION");
    assert!(!message.contains("somebody-else"), "{message}");
    assert!(message.contains("log has the detail"), "{message}");
    assert!(_server.log().contains("somebody-else"));
    let answer = api
        .post(CLUSTERS, json!({"clusterName": "gone", "issuerUri": format!("http://{}", crate::support::CLOSED), "discover": true}))
        .await;
    answer.expect_error(400, "FAILED_PRECONDITION");
    assert_eq!(
        api.get(CLUSTERS).await.ok()["clusters"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn providers_without_keys_use_discovery() {
    let (_dir, _server, api) = setup().await;
    let good = issuer(None).await;
    api.post(
        &format!("{POOLS}?workloadIdentityPoolId=pool-one"),
        json!({}),
    )
    .await
    .ok();
    api.post(
        &format!("{POOLS}/pool-one/providers?workloadIdentityPoolProviderId=prov-one"),
        json!({"oidc": {"issuerUri": good.url}}),
    )
    .await
    .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while good.jwks_fetches.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the provider's keys were not fetched through discovery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An OIDC issuer over HTTPS with a certificate of `ca`, naming itself the issuer and
/// `jwks_uri` (default: its own `/openid/v1/jwks`, which it serves) in its discovery document.
async fn https_issuer(
    ca: &crate::support::tls::TestCa,
    jwks_uri: Option<String>,
) -> (String, tokio::task::JoinHandle<()>) {
    // The document names the server's URL, known only once it listens.
    let base = Arc::new(std::sync::OnceLock::<String>::new());
    let named = base.clone();
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let issuer = named.get().cloned().unwrap_or_default();
                let keys = jwks_uri
                    .clone()
                    .unwrap_or_else(|| format!("{issuer}/openid/v1/jwks"));
                let doc = json!({"issuer": issuer, "jwks_uri": keys});
                async move { ([("content-type", "application/json")], doc.to_string()) }
            }),
        )
        .route(
            "/openid/v1/jwks",
            get(|| async { ([("content-type", "application/json")], JWKS) }),
        );
    let (url, task) = crate::support::tls::serve_https(router, ca.server_cert()).await;
    let _ = base.set(url.clone());
    (url, task)
}

/// A plain-HTTP server on loopback that counts what it is asked, answering with `router`.
async fn counted_http(
    router: axum::Router,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            count.fetch_add(1, Ordering::SeqCst);
            async move { next.run(request).await }
        },
    ));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (url, hits, task)
}

/// Keys come over TLS from an https issuer, whatever its discovery document or
/// a redirect says; a registration's failure says nothing of what was answered; size and time
/// are bounded.
#[tokio::test]
async fn discovery_never_steps_down_to_plain_http_nor_tells_what_it_saw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = crate::support::tls::TestCa::new();
    let ca_file = ca.write_pem(dir.path());
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &["--discovery-timeout-seconds", "2"],
        &[("SSL_CERT_FILE", ca_file.as_os_str())],
    );
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    let register = |name: &str, issuer: &str| {
        let api = api.clone();
        let body = json!({"clusterName": name, "issuerUri": issuer, "discover": true});
        async move { api.post(CLUSTERS, body).await }
    };

    // A plain-HTTP key server on loopback, and an https issuer pointing its jwks_uri there.
    let keys = axum::Router::new().route(
        "/openid/v1/jwks",
        get(|| async { ([("content-type", "application/json")], JWKS) }),
    );
    let (plain, plain_hits, _plain_task) = counted_http(keys).await;
    let (https_down, task) = https_issuer(&ca, Some(format!("{plain}/openid/v1/jwks"))).await;
    let refused = register("downgrade", &https_down).await;
    let message = refused.expect_error(400, "FAILED_PRECONDITION").to_owned();
    assert!(message.contains("log has the detail"), "{message}");
    assert_eq!(
        plain_hits.load(Ordering::SeqCst),
        0,
        "the plain-HTTP jwks_uri was fetched"
    );
    assert!(
        server.log().contains("jwks_uri wid does not fetch"),
        "{}",
        server.log()
    );
    task.abort();

    // An https discovery URL that redirects to plain HTTP: not followed.
    let target = format!("{plain}/.well-known/openid-configuration");
    let redirecting = axum::Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    let (https_redirect, redirect_task) =
        crate::support::tls::serve_https(redirecting, ca.server_cert()).await;
    register("redirect", &https_redirect)
        .await
        .expect_error(400, "FAILED_PRECONDITION");
    assert_eq!(
        plain_hits.load(Ordering::SeqCst),
        0,
        "a redirect to plain HTTP was followed"
    );
    // Nor from a loopback issuer that goes through https on the way: http → https → http.
    let via = https_redirect.clone();
    let first_hop = axum::Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            let via = format!("{via}/.well-known/openid-configuration");
            async move { axum::response::Redirect::temporary(&via) }
        }),
    );
    let (loopback_issuer, _hops, _hop_task) = counted_http(first_hop).await;
    register("via-tls", &loopback_issuer)
        .await
        .expect_error(400, "FAILED_PRECONDITION");
    assert_eq!(
        plain_hits.load(Ordering::SeqCst),
        0,
        "http → https → http was followed"
    );
    assert!(
        server.log().contains("redirect refused"),
        "{}",
        server.log()
    );
    redirect_task.abort();

    // The same https issuer with its keys over TLS is registered: the CA is trusted, the rule is
    // what refused the others.
    let (https_good, _good_task) = https_issuer(&ca, None).await;
    register("good", &https_good).await.ok();

    // A loopback "issuer" that is something else (the token service's own admin API, which
    // answers 401; a path that is not found): the same generic refusal, whatever was answered.
    let own = server.base();
    let mut messages = Vec::new();
    for (name, issuer) in [
        ("own-api", format!("{own}/v1")),
        ("own-health", format!("{own}/healthz")),
    ] {
        messages.push(
            register(name, &issuer)
                .await
                .expect_error(400, "FAILED_PRECONDITION")
                .to_owned(),
        );
    }
    for message in &messages {
        assert!(
            !message.contains("401") && !message.contains("JSON") && !message.contains("HTTP"),
            "{message}"
        );
    }
    // One message for both, but for the issuer it names.
    assert_eq!(
        messages[0].replace(&format!("{own}/v1"), ""),
        messages[1].replace(&format!("{own}/healthz"), "")
    );

    // An issuer that never answers costs the discovery timeout, not more.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_url = format!(
        "http://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let started = Instant::now();
    register("silent", &silent_url)
        .await
        .expect_error(400, "FAILED_PRECONDITION");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);

    // A discovery document larger than 1 MiB is refused.
    let big = "x".repeat(2 * 1024 * 1024);
    let (huge, _huge_hits, _huge_task) = counted_http(axum::Router::new().route(
        "/.well-known/openid-configuration",
        get(move || {
            let big = big.clone();
            async move { big }
        }),
    ))
    .await;
    register("huge", &huge)
        .await
        .expect_error(400, "FAILED_PRECONDITION");
    assert!(server.log().contains("larger than"), "{}", server.log());
}
