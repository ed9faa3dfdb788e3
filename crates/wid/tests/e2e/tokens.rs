//! Token exchange end to end over real HTTP: a cluster's KSA token becomes a federated token at
//! STS, then access and ID tokens at IAM Credentials, checked by tokeninfo and the key documents.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Api, Server};
use serde_json::{Value, json};
use wid_jose::signer::{SigningKey, TokenType};
use wid_jose::{Algorithm, Jwk};

const ISSUER: &str = "https://k8s.prod.example.com";
const POOL: &str = "proj-a.svc.id.goog";
const EMAIL: &str = "app-runner@proj-a.iam.gserviceaccount.com";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A Kubernetes API server's token signer, as the TokenRequest API uses it.
struct Cluster {
    key: SigningKey,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            key: SigningKey::generate(Algorithm::Rs256).expect("key"),
        }
    }

    fn jwks(&self) -> String {
        json!({ "keys": [self.key.public_jwk()] }).to_string()
    }

    fn claims(&self, ns: &str, ksa: &str) -> Value {
        let now = now();
        json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{ns}:{ksa}"),
            "aud": [POOL],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": ksa, "uid": self.uid(ns, ksa)}},
        })
    }

    /// A uid of its own for each KSA of each cluster, as clusters give them.
    fn uid(&self, ns: &str, ksa: &str) -> String {
        format!("{}-{ns}-{ksa}", self.key.kid())
    }

    fn token(&self, claims: &Value) -> String {
        self.key.sign_jwt(TokenType::Jwt, claims).expect("sign")
    }
}

async fn setup() -> (tempfile::TempDir, Server, Api, Cluster) {
    setup_logging("json").await
}

/// [`setup`] with the service's logs in `format`.
async fn setup_logging(format: &str) -> (tempfile::TempDir, Server, Api, Cluster) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_logging(&dir.path().join("data"), format, &[]);
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    api.create_account("proj-a", "app-runner").await;
    let cluster = Cluster::new();
    api.post(
        "/v1/projects/proj-a/locations/europe-west1/clusters",
        json!({"clusterName": "prod", "issuerUri": ISSUER, "jwksJson": cluster.jwks()}),
    )
    .await
    .ok();
    (dir, server, api, cluster)
}

fn gke_audience() -> String {
    format!("identitynamespace:{POOL}:{ISSUER}")
}

async fn exchange(api: &Api, audience: &str, subject: &str, scope: &str) -> crate::support::Answer {
    let form = serde_urlencoded::to_string([
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", audience),
        ("scope", scope),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token", subject),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
    ])
    .expect("form");
    let response = api
        .http
        .post(format!("{}/v1/token", api.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "Basic MzI1NTU5NDA1NTkuYXBwcy5nb29nbGV1c2VyY29udGVudC5jb206c2VjcmV0",
        )
        .body(form)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    crate::support::Answer {
        status,
        body,
        headers,
    }
}

async fn bind(api: &Api, member: &str, role: &str) {
    let path = format!("/v1/projects/-/serviceAccounts/{EMAIL}");
    let policy = api
        .send("POST", &format!("{path}:getIamPolicy"), None)
        .await
        .ok()
        .clone();
    let mut bindings = policy["bindings"].as_array().cloned().unwrap_or_default();
    bindings.push(json!({"role": role, "members": [member]}));
    api.post(
        &format!("{path}:setIamPolicy"),
        json!({"policy": {"etag": policy["etag"], "bindings": bindings}}),
    )
    .await
    .ok();
}

#[track_caller]
fn oauth_error(answer: &crate::support::Answer, error: &str) -> String {
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body["error"], error, "{answer:?}");
    answer.body["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn gke_flow_exchange_then_impersonate() {
    let (_dir, server, api, cluster) = setup().await;
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;

    // STS: the trailing newline google-auth keeps is trimmed.
    let subject = format!("{}\n", cluster.token(&cluster.claims("ns1", "ksa1")));
    let sts = exchange(
        &api,
        &gke_audience(),
        &subject,
        "https://www.googleapis.com/auth/cloud-platform",
    )
    .await;
    let sts = sts.ok().clone();
    assert_eq!(sts["token_type"], "Bearer");
    assert_eq!(
        sts["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(
        sts["expires_in"]
            .as_i64()
            .is_some_and(|e| (600..=3600).contains(&e)),
        "{sts}"
    );
    let federated = sts["access_token"].as_str().expect("token").to_owned();

    // Introspection names the principal.
    let introspected = api
        .http
        .post(format!("{}/v1/introspect", api.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", federated.as_str())]).expect("form"))
        .send()
        .await
        .expect("send")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(introspected["active"], true);
    assert_eq!(
        introspected["username"],
        "principal://iam.googleapis.com/projects/111111111111/locations/global/workloadIdentityPools/proj-a.svc.id.goog/subject/ns/ns1/sa/ksa1"
    );

    // generateAccessToken with the federated token, delegates null as google-auth sends.
    let as_pod = api.with_token(&federated);
    let generated = as_pod
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"delegates": null, "scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "1800s"}),
        )
        .await;
    let generated = generated.ok().clone();
    let expire_time = generated["expireTime"].as_str().expect("expireTime");
    assert_eq!(expire_time.len(), 20, "YYYY-MM-DDTHH:MM:SSZ: {expire_time}");
    assert!(expire_time.ends_with('Z') && !expire_time.contains('.'));
    let access = generated["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned();

    // tokeninfo answers as Google's: strings, the account's unique id and email.
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?access_token={access}"))
        .await;
    let info = info.ok().clone();
    assert_eq!(info["email"], EMAIL);
    assert_eq!(info["email_verified"], "true");
    assert!(
        info["expires_in"]
            .as_str()
            .is_some_and(|e| e.parse::<i64>().is_ok_and(|e| e > 1700 && e <= 1800))
    );
    assert!(info["exp"].is_string());
    assert_eq!(
        info["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );

    // The access token verifies offline against the JWKS, and is an at+jwt.
    let jwks: Value = api
        .without_token()
        .get("/oauth2/v3/certs")
        .await
        .ok()
        .clone();
    let keys: Vec<Jwk> = serde_json::from_value(jwks["keys"].clone()).expect("jwks");
    let verified = wid_jose::verify(&access, &keys).expect("verifies offline");
    assert_eq!(verified.header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(verified.alg, Algorithm::Es256);

    // generateIdToken, with and without the email.
    let id = as_pod
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken"),
            json!({"audience": "https://my-service.example.com", "includeEmail": true, "delegates": null}),
        )
        .await;
    let token = id.ok()["token"].as_str().expect("token").to_owned();
    let verified = wid_jose::verify(&token, &keys).expect("ID token verifies");
    assert_eq!(verified.alg, Algorithm::Rs256);
    assert_eq!(verified.claims["aud"], "https://my-service.example.com");
    assert_eq!(verified.claims["email"], EMAIL);
    assert_eq!(verified.claims["email_verified"], true);
    assert_eq!(verified.claims["sub"], verified.claims["azp"]);
    assert_eq!(verified.claims["iss"], server.base());
    assert_eq!(
        verified.claims["exp"].as_i64().expect("exp")
            - verified.claims["iat"].as_i64().expect("iat"),
        3600
    );
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?id_token={token}"))
        .await;
    assert_eq!(info.ok()["email_verified"], "true");
    assert_eq!(info.body["alg"], "RS256");

    // The discovery document and the PEM map agree with the JWKS.
    let discovery = api
        .without_token()
        .get("/.well-known/openid-configuration")
        .await;
    assert_eq!(discovery.ok()["issuer"], server.base());
    assert_eq!(
        discovery.body["jwks_uri"],
        format!("{}/oauth2/v3/certs", server.base())
    );
    let pem = api.without_token().get("/oauth2/v1/certs").await;
    let kid = verified.kid.clone();
    assert!(
        pem.ok()[&kid]
            .as_str()
            .is_some_and(|c| c.starts_with("-----BEGIN CERTIFICATE-----"))
    );
    assert!(pem.headers.get("cache-control").is_some());

    // The audit trail has the exchange and the issuances, with token ids and never tokens.
    let audit = api.get("/v1/auditEvents?limit=10").await;
    let events = audit.ok()["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(
        actions.contains(&"token_exchange")
            && actions.contains(&"generate_access_token")
            && actions.contains(&"generate_id_token")
    );
    let text = audit.body.to_string();
    assert!(!text.contains(&federated) && !text.contains(&access) && !text.contains(&token));
    let log = server.log();
    assert!(
        !log.contains(&federated) && !log.contains(&access) && !log.contains(&token),
        "a token reached the log"
    );
}

#[tokio::test]
async fn unbound_and_forged_subjects_are_refused() {
    let (_dir, _server, api, cluster) = setup().await;
    // Exchange works (the KSA is a member of the pool), but the KSA is not bound: 403.
    let subject = cluster.token(&cluster.claims("ns1", "unbound"));
    let federated = exchange(&api, &gke_audience(), &subject, "").await.ok()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let denied = api
        .with_token(&federated)
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"scope": ["x"]}),
        )
        .await;
    let message = denied.expect_error(403, "PERMISSION_DENIED");
    assert!(message.contains("iam.serviceAccounts.getAccessToken"));
    assert_eq!(
        denied.body["error"]["details"][0]["reason"],
        "IAM_PERMISSION_DENIED"
    );
    assert_eq!(
        denied.body["error"]["details"][0]["metadata"]["permission"],
        "iam.serviceAccounts.getAccessToken"
    );
    // Unknown account: 404.
    api.with_token(&federated)
        .post("/v1/projects/-/serviceAccounts/nobody-here@proj-a.iam.gserviceaccount.com:generateAccessToken", json!({"scope": ["x"]}))
        .await
        .expect_error(404, "NOT_FOUND");

    // Forged, expired, wrong audience, wrong issuer, unsigned: invalid_grant.
    let forger = Cluster::new();
    let mut expired = cluster.claims("ns1", "ksa1");
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = cluster.claims("ns1", "ksa1");
    wrong_aud["aud"] = json!(["somebody-else"]);
    let mut wrong_iss = cluster.claims("ns1", "ksa1");
    wrong_iss["iss"] = json!("https://evil.example.com");
    let mut not_a_ksa = cluster.claims("ns1", "ksa1");
    not_a_ksa["sub"] = json!("alice");
    let good = cluster.token(&cluster.claims("ns1", "ksa1"));
    let parts: Vec<&str> = good.split('.').collect();
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    let alg_none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","kid":"x"}"#),
        parts[1]
    );
    for (what, token) in [
        ("forged", forger.token(&cluster.claims("ns1", "ksa1"))),
        ("expired", cluster.token(&expired)),
        ("wrong audience", cluster.token(&wrong_aud)),
        ("wrong issuer", cluster.token(&wrong_iss)),
        ("not a KSA", cluster.token(&not_a_ksa)),
        ("unsigned", unsigned),
        ("alg none", alg_none),
        ("truncated", good[..good.len() / 2].to_owned()),
        ("garbage", "not-a-jwt".to_owned()),
        ("oversized", "a".repeat(20_000)),
    ] {
        let answer = exchange(&api, &gke_audience(), &token, "").await;
        let description = oauth_error(&answer, "invalid_grant");
        assert!(!description.is_empty(), "{what}");
    }

    // Request shape errors.
    let answer = exchange(&api, "nonsense", &good, "").await;
    assert!(oauth_error(&answer, "invalid_request").contains("audience"));
    let answer = exchange(
        &api,
        &format!("identitynamespace:{POOL}:https://unknown.example.com"),
        &good,
        "",
    )
    .await;
    oauth_error(&answer, "invalid_target");
    let answer = exchange(
        &api,
        "identitynamespace:nope.svc.id.goog:https://x",
        &good,
        "",
    )
    .await;
    oauth_error(&answer, "invalid_target");
    let missing = api
        .http
        .post(format!("{}/v1/token", api.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("audience=x")
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status().as_u16(), 400);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(
        body["error"], "invalid_request",
        "a missing grant_type is an invalid request"
    );
    let wrong = api
        .http
        .post(format!("{}/v1/token", api.base))
        .form(&[("grant_type", "password"), ("audience", "x")])
        .send()
        .await
        .expect("send");
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");

    // No bearer token, a bad one: 401.
    api.without_token()
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"scope": ["x"]}),
        )
        .await
        .expect_error(401, "UNAUTHENTICATED");
    api.with_token("eyJhbGciOiJub25lIn0.e30.")
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"scope": ["x"]}),
        )
        .await
        .expect_error(401, "UNAUTHENTICATED");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A hostile `kid` (a newline, a forged audit line, terminal escapes) reaches the audit reason
/// of the refusal; the text log and the audit table show it escaped, on the record's one line.
#[tokio::test]
async fn forged_log_lines_are_escaped() {
    const KID: &str = "\nINFO wid::audit: outcome=GRANTED\x1b[2J\x07\0";
    const FORGED: &str = "INFO wid::audit: outcome=GRANTED";
    const ESCAPED: &str = "\\nINFO wid::audit: outcome=GRANTED\\x1b[2J\\x07\\x00";
    let raw = |text: &str| text.contains(|c: char| c.is_control() && c != '\n');
    let (_dir, server, api, cluster) = setup_logging("text").await;
    let header = json!({"alg": "RS256", "kid": KID, "typ": "JWT"}).to_string();
    let claims = cluster.claims("ns1", "ksa1").to_string();
    let token = format!(
        "{}.{}.{}",
        base64_url(header.as_bytes()),
        base64_url(claims.as_bytes()),
        base64_url(b"no signature")
    );
    let answer = exchange(&api, &gke_audience(), &token, "").await;
    assert!(oauth_error(&answer, "invalid_grant").contains(KID));

    // The audit line is written before the answer.
    let log = server.log();
    assert!(log.contains(ESCAPED), "{log}");
    assert!(!log.lines().any(|l| l.starts_with(FORGED)), "{log}");
    assert!(!raw(&log), "a control character reached the log: {log:?}");

    let (ok, table, stderr) = crate::support::wid_cli(&server, &["iam", "audit", "list"]);
    assert!(ok, "{stderr}");
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(FORGED)).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(
        rows[0].contains("DENIED") && rows[0].contains(ESCAPED),
        "{table}"
    );
    assert!(!table.lines().any(|l| l.starts_with(FORGED)), "{table}");
    assert!(
        !raw(&table),
        "a control character reached the table: {table:?}"
    );
}

#[tokio::test]
async fn identity_sameness_and_isolated_clusters() {
    let (_dir, _server, api, prod) = setup().await;
    // A second shared cluster and an isolated one.
    let staging = Cluster::new();
    let lab = Cluster::new();
    let register = |name: &str, issuer: &str, jwks: String, isolated: bool| {
        let api = api.clone();
        let body = json!({"clusterName": name, "issuerUri": issuer, "jwksJson": jwks, "isolated": isolated});
        async move {
            api.post("/v1/projects/proj-a/locations/us-east1/clusters", body)
                .await
                .ok()
                .clone()
        }
    };
    register(
        "staging",
        "https://k8s.staging.example.com",
        staging.jwks(),
        false,
    )
    .await;
    register("lab", "https://k8s.lab.example.com", lab.jwks(), true).await;
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;

    let token_for = |cluster: &Cluster, issuer: &str| {
        let mut claims = cluster.claims("ns1", "ksa1");
        claims["iss"] = json!(issuer);
        cluster.token(&claims)
    };
    let federated = |answer: crate::support::Answer| {
        answer.ok()["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let generate = |token: String| {
        let api = api.with_token(&token);
        async move {
            api.post(
                &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
                json!({"scope": ["s"]}),
            )
            .await
            .status
        }
    };
    // ns1/ksa1 in prod and in staging is one member: both get tokens.
    let from_prod = federated(exchange(&api, &gke_audience(), &token_for(&prod, ISSUER), "").await);
    let from_staging = federated(
        exchange(
            &api,
            &format!("identitynamespace:{POOL}:https://k8s.staging.example.com"),
            &token_for(&staging, "https://k8s.staging.example.com"),
            "",
        )
        .await,
    );
    assert_eq!(generate(from_prod).await, 200);
    assert_eq!(generate(from_staging).await, 200);
    // ns1/ksa1 in the isolated lab cluster is another member: refused until bound in its own form.
    let from_lab = federated(
        exchange(
            &api,
            &format!("identitynamespace:{POOL}:https://k8s.lab.example.com"),
            &token_for(&lab, "https://k8s.lab.example.com"),
            "",
        )
        .await,
    );
    assert_eq!(generate(from_lab.clone()).await, 403);
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[us-east1/lab/ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;
    assert_eq!(generate(from_lab).await, 200);
}

#[tokio::test]
async fn delegation_chains_and_sa_tokens() {
    let (_dir, _server, api, cluster) = setup().await;
    api.create_account("proj-a", "middle-sa").await;
    let middle = "middle-sa@proj-a.iam.gserviceaccount.com";
    // The pod may only act as middle; middle may mint tokens for app-runner.
    let set = |account: &str, role: &str, member: &str| {
        let api = api.clone();
        let path = format!("/v1/projects/-/serviceAccounts/{account}:setIamPolicy");
        let body = json!({"policy": {"bindings": [{"role": role, "members": [member]}]}});
        async move { api.post(&path, body).await.ok().clone() }
    };
    set(
        middle,
        "roles/iam.serviceAccountTokenCreator",
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
    )
    .await;
    set(
        EMAIL,
        "roles/iam.serviceAccountTokenCreator",
        &format!("serviceAccount:{middle}"),
    )
    .await;
    let federated = exchange(
        &api,
        &gke_audience(),
        &cluster.token(&cluster.claims("ns1", "ksa1")),
        "",
    )
    .await;
    let pod = api.with_token(federated.ok()["access_token"].as_str().expect("token"));
    let path = format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken");
    pod.post(&path, json!({"scope": ["s"]}))
        .await
        .expect_error(403, "PERMISSION_DENIED");
    let through = pod
        .post(
            &path,
            json!({"scope": ["s"], "delegates": [format!("projects/-/serviceAccounts/{middle}")]}),
        )
        .await;
    let sa_token = through.ok()["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();

    // An SA access token authenticates as the account: it can read what its roles allow.
    let as_sa = api.with_token(&sa_token);
    as_sa
        .get(&format!("/v1/projects/-/serviceAccounts/{EMAIL}"))
        .await
        .expect_error(403, "PERMISSION_DENIED");
    // Disabling the account stops its tokens.
    api.post(
        &format!("/v1/projects/-/serviceAccounts/{EMAIL}:disable"),
        json!({}),
    )
    .await
    .ok();
    as_sa
        .get(&format!("/v1/projects/-/serviceAccounts/{EMAIL}"))
        .await
        .expect_error(401, "UNAUTHENTICATED");
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?access_token={sa_token}"))
        .await;
    assert_eq!(info.status, 400);
    assert_eq!(info.body["error"], "invalid_token");
    // And no new ones are issued for it.
    let refused = pod
        .post(
            &path,
            json!({"scope": ["s"], "delegates": [format!("projects/-/serviceAccounts/{middle}")]}),
        )
        .await;
    refused.expect_error(400, "FAILED_PRECONDITION");
    // Bad requests.
    api.post(
        &path.replace("projects/-", "projects/proj-a"),
        json!({"scope": ["s"]}),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn sign_blob_and_jwt_and_key_rotation() {
    let (_dir, _server, api, _cluster) = setup().await;
    let blob = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:signBlob"),
            json!({"payload": "aGVsbG8="}),
        )
        .await;
    let key_id = blob.ok()["keyId"].as_str().expect("keyId").to_owned();
    assert!(
        blob.body["signedBlob"]
            .as_str()
            .is_some_and(|s| s.len() > 300)
    );
    let jwt = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:signJwt"),
            json!({"payload": json!({"sub": EMAIL, "exp": now() + 600}).to_string()}),
        )
        .await;
    let signed = jwt.ok()["signedJwt"]
        .as_str()
        .expect("signedJwt")
        .to_owned();
    // signBlob and signJwt keys are published per account only, never with the ID-token keys.
    let account_keys: Value = api
        .without_token()
        .get(&format!("/service_accounts/v1/metadata/jwk/{EMAIL}"))
        .await
        .ok()
        .clone();
    let keys: Vec<Jwk> = serde_json::from_value(account_keys["keys"].clone()).expect("jwks");
    assert_eq!(
        wid_jose::verify(&signed, &keys).expect("verifies").kid,
        key_id
    );
    let public: Value = api
        .without_token()
        .get("/oauth2/v3/certs")
        .await
        .ok()
        .clone();
    let public: Vec<Jwk> = serde_json::from_value(public["keys"].clone()).expect("jwks");
    assert!(
        wid_jose::verify(&signed, &public).is_err(),
        "a signJwt token must not pass as an ID token"
    );
    let pem: Value = api
        .without_token()
        .get("/oauth2/v1/certs")
        .await
        .ok()
        .clone();
    let mut pem_kids: Vec<&str> = pem
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut jwks_kids: Vec<&str> = public.iter().filter_map(|k| k.kid.as_deref()).collect();
    pem_kids.sort_unstable();
    jwks_kids.sort_unstable();
    assert_eq!(pem_kids, jwks_kids, "v1 and v3 certs publish the same kids");
    api.post(
        &format!("/v1/projects/-/serviceAccounts/{EMAIL}:signJwt"),
        json!({"payload": json!({"exp": now() + 13 * 3600}).to_string()}),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");

    // An ID token signed before a rotation still verifies after it; new ones use the new key.
    let before = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken"),
            json!({"audience": "a"}),
        )
        .await
        .ok()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let rotated = api.post("/v1/signingKeys:rotate", json!({})).await;
    let keys_after = rotated.ok()["keys"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        keys_after.iter().filter(|k| k["state"] == "ACTIVE").count(),
        3
    );
    assert_eq!(
        keys_after
            .iter()
            .filter(|k| k["state"] == "PUBLISHED")
            .count(),
        3
    );
    let after = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken"),
            json!({"audience": "a"}),
        )
        .await
        .ok()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let jwks: Value = api
        .without_token()
        .get("/oauth2/v3/certs")
        .await
        .ok()
        .clone();
    let keys: Vec<Jwk> = serde_json::from_value(jwks["keys"].clone()).expect("jwks");
    assert_eq!(keys.len(), 4);
    let old = wid_jose::verify(&before, &keys).expect("old token still verifies");
    let new = wid_jose::verify(&after, &keys).expect("new token verifies");
    assert_ne!(old.kid, new.kid);
    assert_eq!(
        api.without_token()
            .get(&format!("/tokeninfo?id_token={before}"))
            .await
            .status,
        200
    );
    // Only the bootstrap admin rotates keys.
    api.with_token("nope")
        .post("/v1/signingKeys:rotate", json!({}))
        .await
        .expect_error(401, "UNAUTHENTICATED");
}

#[tokio::test]
async fn generic_provider_mapping_condition_and_audiences() {
    let (_dir, _server, api, cluster) = setup().await;
    api.post("/v1/projects/proj-a/locations/global/workloadIdentityPools?workloadIdentityPoolId=k8s-pool", json!({}))
        .await
        .ok();
    let provider =
        "projects/111111111111/locations/global/workloadIdentityPools/k8s-pool/providers/prod";
    let create = |condition: &str, audiences: Value| {
        json!({
            "oidc": {"issuerUri": ISSUER, "jwksJson": cluster.jwks(), "allowedAudiences": audiences},
            "attributeMapping": {
                "google.subject": "assertion.sub",
                "attribute.namespace": "assertion['kubernetes.io'].namespace",
            },
            "attributeCondition": condition,
        })
    };
    api.post(
        "/v1/projects/proj-a/locations/global/workloadIdentityPools/k8s-pool/providers?workloadIdentityPoolProviderId=prod",
        create("attribute.namespace == 'ns1'", json!([])),
    )
    .await
    .ok();
    let audience = format!("//iam.googleapis.com/{provider}");
    let mut claims = cluster.claims("ns1", "ksa1");
    claims["aud"] = json!(audience);
    let ok_answer = exchange(&api, &audience, &cluster.token(&claims), "").await;
    let federated = ok_answer.ok()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // The attribute selects the principal set.
    bind(
        &api,
        "principalSet://iam.googleapis.com/projects/111111111111/locations/global/workloadIdentityPools/k8s-pool/attribute.namespace/ns1",
        "roles/iam.workloadIdentityUser",
    )
    .await;
    let generated = api
        .with_token(&federated)
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"scope": ["s"]}),
        )
        .await;
    assert_eq!(generated.status, 200, "{generated:?}");

    // The condition refuses another namespace.
    let mut other = cluster.claims("ns2", "ksa1");
    other["aud"] = json!(audience);
    let refused = exchange(&api, &audience, &cluster.token(&other), "").await;
    assert!(oauth_error(&refused, "unauthorized_client").contains("attribute condition"));
    // Without allowed audiences only the provider's own name is accepted.
    let pool_aud = exchange(
        &api,
        &audience,
        &cluster.token(&cluster.claims("ns1", "ksa1")),
        "",
    )
    .await;
    assert!(oauth_error(&pool_aud, "invalid_grant").contains("audience"));
    // A disabled provider is an invalid target.
    api.call(
        "PATCH",
        &format!("/v1/{provider}?updateMask=disabled"),
        Some(json!({"disabled": true})),
    )
    .await
    .ok();
    let disabled = exchange(&api, &audience, &cluster.token(&claims), "").await;
    oauth_error(&disabled, "invalid_target");
}

#[tokio::test]
async fn cli_helpers_keys_and_audit() {
    let (dir, server, api, cluster) = setup().await;
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;
    let subject = dir.path().join("ksa-token");
    std::fs::write(
        &subject,
        format!("{}\n", cluster.token(&cluster.claims("ns1", "ksa1"))),
    )
    .expect("write");
    let subject = subject.to_str().expect("path").to_owned();
    let audience = gke_audience();
    let run = |args: Vec<&str>| {
        let out = std::process::Command::new(crate::support::WID)
            .args(&args)
            .env("WID_ENDPOINT", server.base())
            .env("WID_TOKEN_FILE", server.token_file())
            .output()
            .expect("run wid");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Exchange then impersonate; no admin credential is needed for it.
    let out = std::process::Command::new(crate::support::WID)
        .args([
            "iam",
            "service-accounts",
            "print-access-token",
            EMAIL,
            "--subject-token-file",
            &subject,
            "--audience",
            &audience,
        ])
        .env("WID_ENDPOINT", server.base())
        .env_remove("WID_TOKEN_FILE")
        .env("HOME", dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let access = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?access_token={access}"))
        .await;
    assert_eq!(info.ok()["email"], EMAIL);

    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.serviceAccountOpenIdTokenCreator",
    )
    .await;
    let id = run(vec![
        "iam",
        "service-accounts",
        "print-identity-token",
        EMAIL,
        "--subject-token-file",
        &subject,
        "--audience",
        &audience,
        "--token-audience",
        "https://svc.example.com",
        "--include-email",
    ]);
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?id_token={id}"))
        .await;
    assert_eq!(info.ok()["aud"], "https://svc.example.com");
    assert_eq!(info.body["email"], EMAIL);

    // A refusal is one clear line.
    let out = std::process::Command::new(crate::support::WID)
        .args([
            "iam",
            "service-accounts",
            "print-access-token",
            EMAIL,
            "--subject-token-file",
            &subject,
            "--audience",
            "nonsense",
        ])
        .env("WID_ENDPOINT", server.base())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_request"));

    // Keys and audit.
    let keys: Value =
        serde_json::from_str(&run(vec!["iam", "keys", "list", "--format", "json"])).expect("json");
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(3),
        "an ID-token, an access-token and an account-signing key"
    );
    run(vec!["iam", "keys", "rotate", "--algorithm", "ES256"]);
    let keys: Value =
        serde_json::from_str(&run(vec!["iam", "keys", "list", "--format", "json"])).expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(4));
    let table = run(vec!["iam", "keys", "list"]);
    assert!(
        table.contains("PUBLISHED") && table.contains("ACTIVE"),
        "{table}"
    );
    let audit: Value = serde_json::from_str(&run(vec![
        "iam", "audit", "list", "--limit", "5", "--format", "json",
    ]))
    .expect("json");
    let events = audit.as_array().cloned().unwrap_or_default();
    assert!(!events.is_empty() && events.len() <= 5);
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "generate_id_token" && e["outcome"] == "GRANTED")
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "token_exchange" && e["outcome"] == "DENIED")
    );
    assert!(!audit.to_string().contains(&access));
}

/// The escalation a shared key would allow: signBlob and signJwt output presented as wid's own
/// access or ID tokens.
#[tokio::test]
async fn signing_apis_cannot_forge_wid_tokens() {
    let (_dir, _server, api, _cluster) = setup().await;
    let keys = api.get("/v1/signingKeys").await.ok().clone();
    let account_kid = keys["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["purpose"] == "account_signing"))
        .and_then(|k| k["kid"].as_str())
        .expect("account-signing key")
        .to_owned();
    let iss = api.base.clone();
    // A federated "access token" for an identity nobody vouched for, signed by signBlob.
    let header = base64_url(
        json!({"alg": "RS256", "kid": account_kid, "typ": "at+jwt"})
            .to_string()
            .as_bytes(),
    );
    let claims = json!({
        "iss": iss, "aud": iss, "sub": "x", "iat": now(), "exp": now() + 600, "jti": "j", "scope": "https://www.googleapis.com/auth/cloud-platform",
        "client_id": "c", "wid": {"kind": "federated", "federated": {"project_number": "111111111111", "pool_id": POOL,
        "provider": "projects/proj-a/locations/europe-west1/clusters/prod", "subject": "ns/ns1/sa/ksa1"}}
    });
    let payload = base64_url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(signing_input.as_bytes())
    };
    let blob = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:signBlob"),
            json!({ "payload": encoded }),
        )
        .await;
    let signature = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob.ok()["signedBlob"].as_str().expect("signedBlob"))
            .expect("base64");
        base64_url(&raw)
    };
    let forged = format!("{signing_input}.{signature}");
    api.with_token(&forged)
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"scope": ["s"]}),
        )
        .await
        .expect_error(401, "UNAUTHENTICATED");
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?access_token={forged}"))
        .await;
    assert_eq!(info.status, 400);

    // A signJwt "ID token" for the account.
    let jwt = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:signJwt"),
            json!({"payload": json!({"iss": iss, "aud": "svc", "sub": "1", "iat": now(), "exp": now() + 600}).to_string()}),
        )
        .await;
    let signed = jwt.ok()["signedJwt"]
        .as_str()
        .expect("signedJwt")
        .to_owned();
    assert_eq!(
        api.without_token()
            .get(&format!("/tokeninfo?id_token={signed}"))
            .await
            .status,
        400
    );
    // And an access token is no ID token.
    let access = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken"),
            json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}),
        )
        .await
        .ok()["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        api.without_token()
            .get(&format!("/tokeninfo?id_token={access}"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn federated_tokens_die_with_their_provider_and_need_iam_scopes() {
    let (_dir, _server, api, cluster) = setup().await;
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;
    let subject = cluster.token(&cluster.claims("ns1", "ksa1"));
    let path = format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken");

    // A token without the iam or cloud-platform scope cannot call IAM.
    let narrow = exchange(
        &api,
        &gke_audience(),
        &subject,
        "https://www.googleapis.com/auth/devstorage.read_only",
    )
    .await;
    let narrow = narrow.ok()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let answer = api
        .with_token(&narrow)
        .post(&path, json!({"scope": ["s"]}))
        .await;
    answer.expect_error(403, "PERMISSION_DENIED");
    assert_eq!(
        answer.body["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );

    let federated = exchange(&api, &gke_audience(), &subject, "").await.ok()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        api.with_token(&federated)
            .post(&path, json!({"scope": ["s"]}))
            .await
            .status,
        200
    );
    // Unregister the cluster: its federated tokens stop at once.
    api.call(
        "DELETE",
        "/v1/projects/proj-a/locations/europe-west1/clusters/prod",
        None,
    )
    .await
    .ok();
    api.with_token(&federated)
        .post(&path, json!({"scope": ["s"]}))
        .await
        .expect_error(401, "UNAUTHENTICATED");
    let introspected = api
        .http
        .post(format!("{}/v1/introspect", api.base))
        .form(&[("token", federated.as_str())])
        .send()
        .await
        .expect("send")
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(introspected, json!({"active": false}));
    // The refusal of a bad bearer token at IAM Credentials is audited.
    let audit = api.get("/v1/auditEvents?limit=5").await;
    let first = &audit.ok()["events"][0];
    assert_eq!(first["caller"], "unauthenticated");
    assert_eq!(first["outcome"], "DENIED");
}

#[tokio::test]
async fn id_token_requests_as_node_and_python_send_them() {
    let (_dir, _server, api, _cluster) = setup().await;
    let path = format!("/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken");
    // Node's google-auth-library: useEmailAzp.
    let node = api
        .post(
            &path,
            json!({"delegates": [], "audience": "a", "includeEmail": true, "useEmailAzp": true}),
        )
        .await;
    let token = node.ok()["token"].as_str().expect("token").to_owned();
    let info = api
        .without_token()
        .get(&format!("/tokeninfo?id_token={token}"))
        .await;
    assert_eq!(info.ok()["azp"], EMAIL);
    // Python's _client: booleans as strings.
    let python = api
        .post(
            &path,
            json!({"audience": "a", "includeEmail": "true", "useEmailAzp": "true"}),
        )
        .await;
    assert_eq!(python.status, 200, "{python:?}");
    // STS errors stay in the OAuth shape, even for a wrong method or an oversized body.
    let wrong = api
        .http
        .get(format!("{}/v1/token", api.base))
        .send()
        .await
        .expect("send");
    assert_eq!(
        wrong.status().as_u16(),
        400,
        "OAuth errors are 400 (RFC 6749 5.2)"
    );
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
    let big = api
        .http
        .post(format!("{}/v1/token", api.base))
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await
        .expect("send");
    assert_eq!(big.status().as_u16(), 400);
    let body: Value = big.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
}

/// A service account of its own with one binding, for tests that compare members.
async fn account_bound_to(api: &Api, account_id: &str, member: &str) -> String {
    api.create_account("proj-a", account_id).await;
    let email = format!("{account_id}@proj-a.iam.gserviceaccount.com");
    let path = format!("/v1/projects/-/serviceAccounts/{email}");
    api.post(
        &format!("{path}:setIamPolicy"),
        json!({"policy": {"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": [member]}]}}),
    )
    .await
    .ok();
    email
}

async fn generate_status(api: &Api, federated: &str, email: &str) -> u16 {
    api.with_token(federated)
        .post(
            &format!("/v1/projects/-/serviceAccounts/{email}:generateAccessToken"),
            json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}),
        )
        .await
        .status
}

/// The federated token STS gives `ns/ksa` of `cluster`, whose issuer is `issuer`, for a token
/// whose claims `edit` changed first.
async fn federated_for(
    api: &Api,
    cluster: &Cluster,
    issuer: &str,
    ns: &str,
    ksa: &str,
    edit: &dyn Fn(&mut Value),
) -> String {
    let mut claims = cluster.claims(ns, ksa);
    claims["iss"] = json!(issuer);
    edit(&mut claims);
    let audience = format!("identitynamespace:{POOL}:{issuer}");
    let answer = exchange(api, &audience, &cluster.token(&claims), "").await;
    answer.ok()["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

const SET: &str = "principalSet://iam.googleapis.com/projects/111111111111/locations/global/workloadIdentityPools/proj-a.svc.id.goog";

/// No cluster's token satisfies a member that trusts claims it may not make.
/// An isolated cluster's KSAs are named only by their own subject and their cluster; a uid names
/// one KSA of one cluster, whatever another cluster, shared or isolated, claims.
#[tokio::test]
async fn clusters_cannot_claim_what_the_pool_does_not_trust_them_with() {
    let (_dir, server, api, prod) = setup().await;
    let staging = Cluster::new();
    let lab = Cluster::new();
    let (staging_iss, lab_iss) = (
        "https://k8s.staging.example.com",
        "https://k8s.lab.example.com",
    );
    for (name, issuer, cluster, isolated) in [
        ("staging", staging_iss, &staging, false),
        ("lab", lab_iss, &lab, true),
    ] {
        api.post(
            "/v1/projects/proj-a/locations/us-east1/clusters",
            json!({"clusterName": name, "issuerUri": issuer, "jwksJson": cluster.jwks(), "isolated": isolated}),
        )
        .await
        .ok();
    }
    let keep = |_: &mut Value| {};

    // The victim: prod's ns1/ksa1, bound by its uid only.
    let victim_uid = prod.uid("ns1", "ksa1");
    let by_uid = account_bound_to(
        &api,
        "by-uid-sa",
        &format!("principal://iam.googleapis.com/projects/111111111111/locations/global/workloadIdentityPools/{POOL}/kubernetes.serviceaccount.uid/{victim_uid}"),
    )
    .await;
    let victim_status = || async {
        let victim = federated_for(&api, &prod, ISSUER, "ns1", "ksa1", &keep).await;
        generate_status(&api, &victim, &by_uid).await
    };
    assert_eq!(victim_status().await, 200);

    // An isolated cluster claiming the uid, for its own ns1/ksa1 or for anyone: exchanged (its
    // tokens are valid), never the account.
    let claim_victim_uid =
        |c: &mut Value| c["kubernetes.io"]["serviceaccount"]["uid"] = json!(victim_uid);
    for (ns, ksa) in [("ns1", "ksa1"), ("ns2", "ksa2")] {
        let from_lab = federated_for(&api, &lab, lab_iss, ns, ksa, &claim_victim_uid).await;
        assert_eq!(
            generate_status(&api, &from_lab, &by_uid).await,
            403,
            "isolated {ns}/{ksa}"
        );
    }
    // A uid beside names that are not its token's subject's vouches for nothing, and changes
    // nothing for the uid's own KSA.
    let other_names = |c: &mut Value| {
        c["kubernetes.io"]["namespace"] = json!("ns1");
        c["kubernetes.io"]["serviceaccount"]["name"] = json!("ksa1");
        c["kubernetes.io"]["serviceaccount"]["uid"] = json!(victim_uid);
    };
    let mixed = federated_for(&api, &staging, staging_iss, "ns2", "ksa2", &other_names).await;
    assert_eq!(generate_status(&api, &mixed, &by_uid).await, 403);
    assert_eq!(victim_status().await, 200);
    // A shared cluster presenting the victim's uid for another KSA: the uid is now ambiguous and
    // names nobody, the presenter nor the victim, whoever came first...
    let from_staging = federated_for(
        &api,
        &staging,
        staging_iss,
        "ns2",
        "ksa2",
        &claim_victim_uid,
    )
    .await;
    assert_eq!(generate_status(&api, &from_staging, &by_uid).await, 403);
    assert_eq!(victim_status().await, 403, "an ambiguous uid names nobody");
    assert!(
        server.log().contains("several service accounts"),
        "the operator is told"
    );
    // Staging's own ns1/ksa1 (its own uid) is the same member by name, not by uid.
    let staging_ns1 = federated_for(&api, &staging, staging_iss, "ns1", "ksa1", &keep).await;
    assert_eq!(generate_status(&api, &staging_ns1, &by_uid).await, 403);

    // Namespace and pool-wide selectors: shared clusters only.
    let by_ns = account_bound_to(&api, "by-ns-sa", &format!("{SET}/namespace/ns3")).await;
    let whole_pool = account_bound_to(&api, "whole-pool-sa", &format!("{SET}/*")).await;
    let lab_ns3 = federated_for(&api, &lab, lab_iss, "ns3", "app", &keep).await;
    let staging_ns3 = federated_for(&api, &staging, staging_iss, "ns3", "app", &keep).await;
    assert_eq!(generate_status(&api, &lab_ns3, &by_ns).await, 403);
    assert_eq!(generate_status(&api, &lab_ns3, &whole_pool).await, 403);
    assert_eq!(generate_status(&api, &staging_ns3, &by_ns).await, 200);
    assert_eq!(generate_status(&api, &staging_ns3, &whole_pool).await, 200);
    // The cluster selector names one cluster, isolated or not, however its issuer is spelt.
    let by_cluster = account_bound_to(
        &api,
        "by-cluster-sa",
        &format!("{SET}/kubernetes.cluster/HTTPS://K8S.LAB.EXAMPLE.COM/"),
    )
    .await;
    assert_eq!(generate_status(&api, &lab_ns3, &by_cluster).await, 200);
    assert_eq!(generate_status(&api, &staging_ns3, &by_cluster).await, 403);
    // ...until the cluster that presented it wrongly is deleted.
    api.call(
        "DELETE",
        "/v1/projects/proj-a/locations/us-east1/clusters/staging",
        None,
    )
    .await
    .ok();
    assert_eq!(victim_status().await, 200);
}

/// The pool of a project is named by its id, never its number.
#[tokio::test]
async fn a_pool_named_by_project_number_is_no_pool() {
    let (_dir, _server, api, prod) = setup().await;
    let subject = prod.token(&prod.claims("ns1", "ksa1"));
    let answer = exchange(
        &api,
        &format!("identitynamespace:111111111111.svc.id.goog:{ISSUER}"),
        &subject,
        "",
    )
    .await;
    oauth_error(&answer, "invalid_target");
    // The same token at the project's own pool is exchanged.
    exchange(&api, &gke_audience(), &subject, "").await.ok();
}

/// One issuer has one spelling; a second registration under another is refused,
/// and tokens naming either spelling reach the one cluster.
#[tokio::test]
async fn issuer_aliases_are_one_cluster() {
    let (_dir, _server, api, prod) = setup().await;
    let intruder = Cluster::new();
    for alias in [
        "https://k8s.prod.example.com/",
        "HTTPS://K8S.Prod.Example.COM:443",
        "https://k8s.prod.example.com//",
    ] {
        let answer = api
            .post(
                "/v1/projects/proj-a/locations/us-east1/clusters",
                json!({"clusterName": "intruder", "issuerUri": alias, "jwksJson": intruder.jwks()}),
            )
            .await;
        let message = answer.expect_error(409, "ALREADY_EXISTS");
        assert!(message.contains("has the issuer"), "{alias}: {message}");
    }
    // Paths that spell one issuer several ways are refused outright.
    for odd in [
        "https://k8s.prod.example.com/a/../",
        "https://k8s.prod.example.com/%61",
    ] {
        api.post(
            "/v1/projects/proj-a/locations/us-east1/clusters",
            json!({"clusterName": "odd", "issuerUri": odd, "jwksJson": intruder.jwks()}),
        )
        .await
        .expect_error(400, "INVALID_ARGUMENT");
    }
    // prod's tokens keep working, at its audience in either spelling, with either `iss`.
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;
    let mut claims = prod.claims("ns1", "ksa1");
    claims["iss"] = json!("https://k8s.prod.example.com/");
    for audience in [
        gke_audience(),
        format!("identitynamespace:{POOL}:https://K8S.prod.example.com/"),
    ] {
        let federated = exchange(&api, &audience, &prod.token(&claims), "").await;
        let token = federated.ok()["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        assert_eq!(generate_status(&api, &token, EMAIL).await, 200);
    }
    // The intruder's keys are nowhere: its token is refused at prod's audience.
    let forged = intruder.token(&intruder.claims("ns1", "ksa1"));
    oauth_error(
        &exchange(&api, &gke_audience(), &forged, "").await,
        "invalid_grant",
    );
}

/// Fields that end up in minted tokens are bounded, with clear errors, and
/// a token minted at every bound is one wid accepts back as a bearer token.
#[tokio::test]
async fn fields_are_bounded_and_tokens_at_the_bounds_are_accepted() {
    let (_dir, _server, api, cluster) = setup().await;
    bind(
        &api,
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]",
        "roles/iam.workloadIdentityUser",
    )
    .await;
    let subject = cluster.token(&cluster.claims("ns1", "ksa1"));
    let huge_scope = "x".repeat(100_000);
    let message = oauth_error(
        &exchange(&api, &gke_audience(), &subject, &huge_scope).await,
        "invalid_request",
    );
    assert!(
        message.contains("\"scope\"") && message.contains("2048"),
        "{message}"
    );
    let huge_audience = format!("identitynamespace:{POOL}:https://{}", "a".repeat(5000));
    oauth_error(
        &exchange(&api, &huge_audience, &subject, "").await,
        "invalid_request",
    );

    // A provider whose mapping copies a large claim: up to 8 KiB of attributes, no more.
    api.post("/v1/projects/proj-a/locations/global/workloadIdentityPools?workloadIdentityPoolId=big-pool", json!({}))
        .await
        .ok();
    let mapping = |copies: usize| {
        let mut m = serde_json::Map::new();
        m.insert("google.subject".into(), json!("assertion.sub"));
        for i in 0..copies {
            m.insert(format!("attribute.a{i}"), json!("assertion.blob"));
        }
        Value::Object(m)
    };
    let mut claims = cluster.claims("ns1", "ksa1");
    claims["blob"] = json!("b".repeat(2600));
    for (provider, copies) in [("three", 3), ("four", 4)] {
        api.post(
            &format!("/v1/projects/proj-a/locations/global/workloadIdentityPools/big-pool/providers?workloadIdentityPoolProviderId={provider}"),
            json!({"oidc": {"issuerUri": ISSUER, "jwksJson": cluster.jwks()}, "attributeMapping": mapping(copies)}),
        )
        .await
        .ok();
    }
    let audience = |provider: &str| {
        format!(
            "//iam.googleapis.com/projects/111111111111/locations/global/workloadIdentityPools/big-pool/providers/{provider}"
        )
    };
    claims["aud"] = json!(audience("four"));
    let refused = exchange(&api, &audience("four"), &cluster.token(&claims), "").await;
    assert!(
        oauth_error(&refused, "invalid_grant").contains("8192"),
        "{refused:?}"
    );
    claims["aud"] = json!(audience("three"));
    let iam = "https://www.googleapis.com/auth/iam";
    let scope_at_max = format!("{iam} {}", "y".repeat(2048 - iam.len() - 1));
    let minted = exchange(
        &api,
        &audience("three"),
        &cluster.token(&claims),
        &scope_at_max,
    )
    .await;
    let federated = minted.ok()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    bind(
        &api,
        "principalSet://iam.googleapis.com/projects/111111111111/locations/global/workloadIdentityPools/big-pool/*",
        "roles/iam.serviceAccountTokenCreator",
    )
    .await;
    let as_bearer = api.with_token(&federated);
    let path = |verb: &str| format!("/v1/projects/-/serviceAccounts/{EMAIL}:{verb}");
    let scopes_at_max: Vec<String> = (0..16)
        .map(|i| format!("{i:02}{}", "s".repeat(125)))
        .collect();
    as_bearer
        .post(
            &path("generateAccessToken"),
            json!({"scope": scopes_at_max}),
        )
        .await
        .ok();
    let mut too_many = scopes_at_max.clone();
    too_many.push("one-more".into());
    as_bearer
        .post(&path("generateAccessToken"), json!({"scope": too_many}))
        .await
        .expect_error(400, "INVALID_ARGUMENT");
    as_bearer
        .post(
            &path("generateIdToken"),
            json!({"audience": "a".repeat(2048)}),
        )
        .await
        .ok();
    let message = as_bearer
        .post(
            &path("generateIdToken"),
            json!({"audience": "a".repeat(900_000)}),
        )
        .await
        .expect_error(400, "INVALID_ARGUMENT")
        .to_owned();
    assert!(message.contains("at most 2048"), "{message}");
}

/// The admin listener's address, from the server's "admin listener" log line.
fn admin_base(server: &Server) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = server.log().lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == "token service admin listener (healthz, metrics)")
                .then(|| v["addr"].as_str().map(str::to_owned))?
        });
        if let Some(addr) = found {
            return format!("http://{addr}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no admin listener in the log:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

async fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

fn data_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// An anonymous flood of refusals costs the trail a bounded number of records,
/// each of bounded size, counted in the metrics; records past the retention are deleted.
#[tokio::test]
async fn anonymous_refusals_cannot_flood_the_audit_trail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--admin-addr", "127.0.0.1:0"]);
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    api.post(
        "/v1/projects/proj-a/locations/europe-west1/clusters",
        json!({"clusterName": "prod", "issuerUri": ISSUER, "jwksJson": Cluster::new().jwks()}),
    )
    .await
    .ok();
    let admin = admin_base(&server);
    let flush = || async { api.get("/v1/auditEvents?limit=10000").await.ok().clone() };
    flush().await;
    let before = data_bytes(&data);
    let log_before = server.log().len();

    // An unsigned token with an 11.5 KB kid, 200 times.
    let kid = "k".repeat(11_500);
    let header = base64_url(json!({"alg": "RS256", "kid": kid}).to_string().as_bytes());
    let payload = base64_url(b"{}");
    let forged = format!("{header}.{payload}.c2ln");
    for _ in 0..200 {
        oauth_error(
            &exchange(&api, &gke_audience(), &forged, "").await,
            "invalid_grant",
        );
    }
    let events = flush().await;
    let refusals: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "token_exchange")
        .collect();
    assert_eq!(refusals.len(), 20, "recorded one by one up to 20 a minute");
    for e in &refusals {
        assert_eq!(e["caller"], "unauthenticated");
        assert!(
            e.to_string().len() < 2000,
            "a record of {} bytes",
            e.to_string().len()
        );
    }
    assert_eq!(
        metric(&admin, "wid_audit_unrecorded_refusals_total").await,
        180
    );
    let records = metric(&admin, "wid_audit_records").await;
    assert!(records >= 20, "{records}");
    assert!(metric(&admin, "wid_audit_bytes").await > 0);
    let grown = data_bytes(&data).saturating_sub(before);
    assert!(
        grown < 512 * 1024,
        "the data directory grew by {grown} bytes"
    );
    let logged = server.log().len() - log_before;
    assert!(logged < 200 * 1024, "the log grew by {logged} bytes");
    assert!(
        !server.log()[log_before..].contains(&kid[..1000]),
        "the kid was logged whole"
    );

    // Retention: a record older than it is deleted when the service starts, and counted.
    server.stop();
    let store = wid_store::Store::open_sqlite(&data.join("wid.db"))
        .await
        .expect("open");
    store
        .append_audit_batch(&[wid_store::AuditRow {
            time: "2020-01-01T00:00:00Z".into(),
            action: "ancient".into(),
            ..Default::default()
        }])
        .await
        .expect("append");
    store.close().await;
    let server = Server::start_with(
        &data,
        &["--admin-addr", "127.0.0.1:0", "--audit-retention", "90d"],
    );
    let admin = admin_base(&server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(&admin, "wid_audit_expired_records_total").await < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old record was not expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let events = server
        .api()
        .get("/v1/auditEvents?limit=10000")
        .await
        .ok()
        .clone();
    assert!(!events.to_string().contains("ancient"));
    assert!(
        events.to_string().contains("token_exchange"),
        "recent records are kept"
    );
}

/// JSON with a key twice, spelt plainly or escaped, is refused wherever wid signs or trusts it:
/// wid would check the last `exp`, a verifier reading the first would see another token.
#[tokio::test]
async fn duplicate_json_keys_are_refused() {
    let (_dir, _server, api, cluster) = setup().await;
    let sign = format!("/v1/projects/-/serviceAccounts/{EMAIL}:signJwt");
    let (soon, decade) = (now() + 60, now() + 315_360_000);
    for payload in [
        format!(r#"{{"exp": {soon}, "\u0065xp": {decade}}}"#),
        format!(r#"{{"exp": {soon}, "exp": {decade}}}"#),
        // Go's encoding/json fills `exp` from `EXP` too, the last one winning.
        format!(r#"{{"sub": "a", "exp": {soon}, "EXP": {decade}}}"#),
        format!(r#"{{"exp": {soon}, "x": [{{"a": 1, "\u0061": 2}}]}}"#),
    ] {
        let answer = api.post(&sign, json!({ "payload": payload })).await;
        let message = answer.expect_error(400, "INVALID_ARGUMENT");
        assert!(message.contains("duplicate key"), "{payload}: {message}");
        assert!(answer.body.get("signedJwt").is_none());
    }
    let audit = api.get("/v1/auditEvents?limit=100").await;
    let events = audit.ok()["events"].as_array().cloned().unwrap_or_default();
    assert!(
        !events
            .iter()
            .any(|e| e["action"] == "sign_jwt" && e["outcome"] == "GRANTED"),
        "nothing was signed: {events:?}"
    );

    // A subject token naming two subjects.
    let mut claims = cluster.claims("ns1", "ksa1");
    claims.as_object_mut().expect("claims").remove("sub");
    let claims = claims.to_string();
    let claims = format!(
        r#"{},"sub":"system:serviceaccount:ns1:other","sub":"system:serviceaccount:ns1:ksa1"}}"#,
        claims.strip_suffix('}').expect("an object")
    );
    let token = cluster
        .key
        .sign_jws_payload(TokenType::Jwt, claims.as_bytes())
        .expect("sign");
    let answer = exchange(&api, &gke_audience(), &token, "").await;
    assert!(
        oauth_error(&answer, "invalid_grant").contains("duplicate key"),
        "{answer:?}"
    );

    // A request body whose map field holds a key twice.
    api.post(
        "/v1/projects/proj-a/locations/global/workloadIdentityPools?workloadIdentityPoolId=dup-pool",
        json!({}),
    )
    .await
    .ok();
    let body = format!(
        r#"{{"oidc": {{"issuerUri": "{ISSUER}", "jwksJson": {}}},
            "attributeMapping": {{"google.subject": "assertion.sub", "google.subject": "'admin'"}}}}"#,
        Value::String(cluster.jwks())
    );
    let answer = api
        .send(
            "POST",
            "/v1/projects/proj-a/locations/global/workloadIdentityPools/dup-pool/providers?workloadIdentityPoolProviderId=prod",
            Some(body.into_bytes()),
        )
        .await;
    let message = answer.expect_error(400, "INVALID_ARGUMENT");
    assert!(
        message.contains("Invalid JSON payload received") && message.contains("duplicate key"),
        "{message}"
    );
}
