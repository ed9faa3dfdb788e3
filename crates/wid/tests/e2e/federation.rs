//! The agent in Workload Identity Federation's generic mode (`--workload-identity-provider`):
//! against the strict fake of Google's STS and IAM Credentials over TLS, and against wid's own
//! token service with a pool and an OIDC provider made by `wid iam`. Pods come from a pods file
//! and their KSA tokens are signed with the agent's issuer key, whose JWKS the provider trusts.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use wid_google_fake::{Config, GoogleFake};

use crate::support::{Agent, Server, wid_cli};

const NUMBER: &str = "333333333333";
const PROVIDER: &str =
    "projects/333333333333/locations/global/workloadIdentityPools/eks-pool/providers/prod";
const CANONICAL: &str = "//iam.googleapis.com/projects/333333333333/locations/global/workloadIdentityPools/eks-pool/providers/prod";
const ISSUER: &str = "https://oidc.eks.example.com/id/ABC";
const APP: &str = "app-runner@proj-g.iam.gserviceaccount.com";
const OTHER: &str = "other-runner@proj-g.iam.gserviceaccount.com";

/// The fake's accounts: APP, bound for team-a/app, and OTHER, bound for nobody.
fn accounts() -> std::collections::BTreeMap<String, Vec<String>> {
    [
        (APP.to_owned(), vec![principal("team-a", "app")]),
        (OTHER.to_owned(), Vec::new()),
    ]
    .into()
}

fn principal(ns: &str, ksa: &str) -> String {
    format!(
        "principal://iam.googleapis.com/projects/{NUMBER}/locations/global/workloadIdentityPools/eks-pool/subject/system:serviceaccount:{ns}:{ksa}"
    )
}

/// Pods at 127.0.0.2.. : team-a/app annotated with APP, team-b/app with OTHER (not bound),
/// team-c/plain with none; then pods d and e of team-a/app, for refusals met afresh.
fn pods_file(path: &Path) {
    let pod = |ip: &str, ns: &str, uid: &str, ksa: &str, gsa: Option<&str>| {
        let annotations = gsa.map_or(json!({}), |g| json!({"iam.gke.io/gcp-service-account": g}));
        json!({"ip": ip, "namespace": ns, "name": uid, "uid": uid, "serviceAccountName": ksa, "annotations": annotations})
    };
    let pods = json!({"pods": [
        pod("127.0.0.2", "team-a", "a-1", "app", Some(APP)),
        pod("127.0.0.3", "team-b", "b-1", "app", Some(OTHER)),
        pod("127.0.0.4", "team-c", "c-1", "plain", None),
        pod("127.0.0.5", "team-a", "d-1", "app", Some(APP)),
        pod("127.0.0.6", "team-a", "e-1", "app", Some(APP)),
    ]});
    std::fs::write(path, pods.to_string()).expect("write pods");
}

/// An agent in the generic mode for `dir`'s pods, with `upstream` as STS and IAM Credentials.
async fn start_agent(dir: &Path, upstream: &str, provider: &str, extra: &[&str]) -> Agent {
    let mut command = Command::new(crate::support::WID);
    command
        .args(["metadata", "serve", "--addr", "127.0.0.1:0", "--pods"])
        .arg(dir.join("pods.json"))
        .args([
            "--workload-identity-provider",
            provider,
            "--project",
            "proj-g",
        ])
        .args(["--sts-url", upstream, "--iamcredentials-url", upstream])
        .args(["--issuer-uri", ISSUER])
        .arg("--issuer-key")
        .arg(dir.join("issuer.pk8"))
        .arg("--jwks-out")
        .arg(dir.join("jwks.json"))
        .args(extra);
    Agent::spawn(
        &mut command,
        &dir.join(format!("agent-{}.log", extra.len())),
    )
    .await
}

async fn md(ip: &str, base: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().ok())
        .build()
        .expect("client");
    let response = client
        .get(format!("{base}/computeMetadata/v1/{path}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn access_token(body: &str) -> String {
    serde_json::from_str::<Value>(body).expect("json")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn claims(jwt: &str) -> Value {
    Value::Object(wid_jose::jws::parse(jwt).expect("jwt").claims)
}

const TOKEN: &str = "instance/service-accounts/default/token";
const EMAIL: &str = "instance/service-accounts/default/email";

#[tokio::test]
async fn the_generic_mode_against_googles_strict_fake_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    pods_file(&dir.path().join("pods.json"));
    let fake = GoogleFake::start(Config {
        provider: PROVIDER.into(),
        issuer_uri: ISSUER.into(),
        service_accounts: accounts(),
        ..Config::default()
    })
    .await;
    let ca = dir.path().join("google-ca.pem");
    std::fs::write(&ca, fake.ca_pem()).expect("ca");
    let ca = ca.to_str().expect("path");
    let agent = start_agent(dir.path(), fake.url(), PROVIDER, &["--ca-file", ca]).await;
    let jwks = std::fs::read_to_string(dir.path().join("jwks.json")).expect("jwks");
    fake.update(|c| c.jwks_json = jwks);

    // Project and account, as the pool of NAME has them.
    assert_eq!(
        md("127.0.0.2", &agent.base, "project/numeric-project-id")
            .await
            .1,
        NUMBER
    );
    assert_eq!(
        md("127.0.0.2", &agent.base, "project/project-id").await.1,
        "proj-g"
    );
    assert_eq!(md("127.0.0.2", &agent.base, EMAIL).await.1, APP);
    assert_eq!(md("127.0.0.4", &agent.base, EMAIL).await.1, "eks-pool");

    // An annotated KSA: STS then generateAccessToken and generateIdToken of its account.
    let (status, body) = md("127.0.0.2", &agent.base, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert!(access_token(&body).starts_with("ya29.c.fake-"), "{body}");
    let (status, id) = md(
        "127.0.0.2",
        &agent.base,
        "instance/service-accounts/default/identity?audience=https://app.example&format=full",
    )
    .await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(claims(&id)["aud"], "https://app.example");
    assert_eq!(claims(&id)["email"], APP);
    let requests = fake.requests();
    let exchange = &requests[0];
    assert_eq!(exchange["status"], 200, "{exchange}");
    assert_eq!(
        exchange["fields"],
        json!({
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": CANONICAL,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        })
    );
    assert_eq!(exchange["subject"]["aud"], json!([CANONICAL]));
    assert_eq!(exchange["subject"]["iss"], ISSUER);
    assert_eq!(
        exchange["subject"]["sub"],
        "system:serviceaccount:team-a:app"
    );
    assert_eq!(
        requests[1]["path"],
        format!("/v1/projects/-/serviceAccounts/{APP}:generateAccessToken")
    );
    // One exchange buys the access and the ID token.
    assert_eq!(
        requests.iter().filter(|r| r["path"] == "/v1/token").count(),
        1
    );

    // No annotation: the federated token itself, and no ID token.
    let (status, body) = md("127.0.0.4", &agent.base, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert!(access_token(&body).starts_with("ya29.d.fake-"), "{body}");
    let (status, _) = md(
        "127.0.0.4",
        &agent.base,
        "instance/service-accounts/default/identity?audience=x",
    )
    .await;
    assert_eq!(status, 404);

    refusals_reach_the_pod(&fake, &agent).await;
}

/// An unbound KSA, an audience mismatch and a disabled provider, each in Google's words.
async fn refusals_reach_the_pod(fake: &GoogleFake, agent: &Agent) {
    let (status, body) = md("127.0.0.3", &agent.base, TOKEN).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("IAM returned 403 Forbidden: Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
            && body.contains("missing IAM policy binding"),
        "{body}"
    );
    fake.update(|c| c.allowed_audiences = vec!["sts.example".into()]);
    let (status, body) = md("127.0.0.5", &agent.base, TOKEN).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!("STS returned 400 Bad Request: invalid_grant: The audience in ID Token [{CANONICAL}] does not match the expected audience.")),
        "{body}"
    );
    fake.update(|c| {
        c.allowed_audiences.clear();
        c.disabled = true;
    });
    let (status, body) = md("127.0.0.6", &agent.base, TOKEN).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&format!(
            "invalid_target: {}",
            wid_google_fake::sts::INVALID_TARGET
        )),
        "{body}"
    );
}

/// A provider configured with an audience of its own is met with --ksa-token-audience.
#[tokio::test]
async fn a_providers_own_audience_is_given_to_the_ksa_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    pods_file(&dir.path().join("pods.json"));
    let fake = GoogleFake::start(Config {
        provider: PROVIDER.into(),
        issuer_uri: ISSUER.into(),
        allowed_audiences: vec!["sts.example".into()],
        service_accounts: accounts(),
        ..Config::default()
    })
    .await;
    let ca = dir.path().join("google-ca.pem");
    std::fs::write(&ca, fake.ca_pem()).expect("ca");
    let args = [
        "--ca-file",
        ca.to_str().expect("path"),
        "--ksa-token-audience",
        "sts.example",
    ];
    let agent = start_agent(
        dir.path(),
        fake.url(),
        &format!("//iam.googleapis.com/{PROVIDER}"),
        &args,
    )
    .await;
    let jwks = std::fs::read_to_string(dir.path().join("jwks.json")).expect("jwks");
    fake.update(|c| c.jwks_json = jwks);
    let (status, body) = md("127.0.0.2", &agent.base, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.requests()[0]["subject"]["aud"], json!(["sts.example"]));
    assert_eq!(fake.requests()[0]["fields"]["audience"], CANONICAL);
}

/// An upstream whose certificate the agent does not trust: a 503 that says so, and a log line;
/// nothing is asked over an unverified connection.
#[tokio::test]
async fn an_untrusted_certificate_is_a_clear_503_never_a_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    pods_file(&dir.path().join("pods.json"));
    let fake = GoogleFake::start(Config {
        provider: PROVIDER.into(),
        issuer_uri: ISSUER.into(),
        ..Config::default()
    })
    .await;
    let agent = start_agent(dir.path(), fake.url(), PROVIDER, &[]).await;
    let (status, body) = md("127.0.0.2", &agent.base, TOKEN).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("Unable to generate access token: STS unreachable:")
            && body.contains("certificate"),
        "{body}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    let log = agent.log();
    assert!(
        log.contains("the upstream could not be reached") && log.contains("--ca-file"),
        "{log}"
    );
}

/// A provider name of any other form is refused at start, with the form it should have.
#[test]
fn a_wrong_provider_name_is_refused_at_start() {
    for wrong in [
        "projects/my-project/locations/global/workloadIdentityPools/p/providers/x",
        "projects/1/locations/global/workloadIdentityPools/p",
        "https://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
    ] {
        let out = Command::new(crate::support::WID)
            .args([
                "metadata",
                "serve",
                "--pods",
                "/nonexistent",
                "--workload-identity-provider",
                wrong,
            ])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(
                "projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER"
            ),
            "{stderr}"
        );
    }
    let out = Command::new(crate::support::WID)
        .args([
            "metadata",
            "serve",
            "--pods",
            "/nonexistent",
            "--workload-identity-provider",
            PROVIDER,
            "--project-number",
            "1",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is not the number in --workload-identity-provider")
    );
}

/// The same mode against wid's token service: a pool and an OIDC provider made with `wid iam`,
/// bindings on the `principal://` of a KSA, plain HTTP on loopback.
#[tokio::test]
async fn the_generic_mode_against_wids_token_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    pods_file(&dir.path().join("pods.json"));
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    api.create_project("proj-g", NUMBER).await;
    api.create_account("proj-g", "app-runner").await;
    api.create_account("proj-g", "other-runner").await;
    let agent = start_agent(dir.path(), &server.base(), PROVIDER, &[]).await;
    let jwks_path = dir.path().join("jwks.json");
    let jwks_path = jwks_path.to_str().expect("path");
    let run = |args: &[&str]| {
        let (ok, out, err) = wid_cli(&server, args);
        assert!(ok, "{args:?}: {out}{err}");
    };
    run(&[
        "iam",
        "workload-identity-pools",
        "create",
        "eks-pool",
        "--project",
        "proj-g",
    ]);
    run(&[
        "iam",
        "workload-identity-pools",
        "providers",
        "create-oidc",
        "prod",
        "--workload-identity-pool",
        "eks-pool",
        "--project",
        "proj-g",
        "--issuer-uri",
        ISSUER,
        "--jwk-json-path",
        jwks_path,
        "--attribute-mapping",
        "google.subject=assertion.sub",
    ]);
    let member = principal("team-a", "app");
    run(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        APP,
        "--member",
        &member,
        "--role",
        "roles/iam.workloadIdentityUser",
    ]);

    let (status, body) = md("127.0.0.2", &agent.base, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.email_of_token_answer(&body).await, APP);
    let (status, id) = md(
        "127.0.0.2",
        &agent.base,
        "instance/service-accounts/default/identity?audience=https://app.example&format=full",
    )
    .await;
    assert_eq!(status, 200, "{id}");
    assert_eq!(claims(&id)["email"], APP);
    // Unbound: IAM's refusal, passed through.
    let (status, body) = md("127.0.0.3", &agent.base, TOKEN).await;
    assert_eq!(status, 403, "{body}");
    // No annotation: the federated token of the KSA's principal.
    let (status, body) = md("127.0.0.4", &agent.base, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let introspected: Value = api
        .http
        .post(format!("{}/v1/introspect", api.base))
        .form(&[("token", access_token(&body))])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json");
    assert_eq!(introspected["username"], principal("team-c", "plain"));
}

/// On Kubernetes: KSA tokens from the TokenRequest API with the provider's name as audience,
/// and refusals as Events on the pod, in the generic mode as in GKE's.
#[tokio::test]
async fn on_kubernetes_token_requests_carry_the_providers_audience_and_refusals_are_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kube = wid_kube_fake::FakeApi::new();
    kube.serve().await.expect("fake API server");
    kube.put_service_account("team-a", "app", &[("iam.gke.io/gcp-service-account", APP)]);
    kube.put_service_account(
        "team-b",
        "app",
        &[("iam.gke.io/gcp-service-account", OTHER)],
    );
    kube.put_service_account(
        "team-c",
        "app",
        &[(
            "iam.gke.io/gcp-service-account",
            "ghost@proj-g.iam.gserviceaccount.com",
        )],
    );
    for (ns, name, ip) in [
        ("team-a", "a-1", "127.0.0.22"),
        ("team-b", "b-1", "127.0.0.23"),
        ("team-c", "c-1", "127.0.0.25"),
    ] {
        kube.put_pod(
            wid_kube_fake::PodFixture::new(ns, name, "node-a")
                .ip(ip)
                .service_account("app"),
        );
    }
    let google = GoogleFake::start(Config {
        provider: PROVIDER.into(),
        issuer_uri: kube.issuer(),
        jwks_json: kube.jwks().to_string(),
        service_accounts: accounts(),
        ..Config::default()
    })
    .await;
    let (kubeconfig, ca) = (
        dir.path().join("kubeconfig"),
        dir.path().join("google-ca.pem"),
    );
    std::fs::write(&kubeconfig, kube.kubeconfig()).expect("kubeconfig");
    std::fs::write(&ca, google.ca_pem()).expect("ca");
    let mut command = Command::new(crate::support::WID);
    command
        .args([
            "metadata",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--node-name",
            "node-a",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "--workload-identity-provider",
            PROVIDER,
            "--project",
            "proj-g",
        ])
        .args([
            "--sts-url",
            google.url(),
            "--iamcredentials-url",
            google.url(),
        ])
        .arg("--ca-file")
        .arg(&ca)
        // Each upstream call here is a request's, in the order the test makes them.
        .arg("--no-token-prefetch");
    let agent = Agent::spawn(&mut command, &dir.path().join("agent.log")).await;

    let (status, body) = md_eventually("127.0.0.22", &agent, TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let exchange = &google.requests()[0];
    assert_eq!(exchange["subject"]["aud"], json!([CANONICAL]), "{exchange}");
    assert_eq!(
        exchange["subject"]["sub"],
        "system:serviceaccount:team-a:app"
    );
    assert_eq!(kube.tokens_issued(), 1);

    let (status, body) = md("127.0.0.23", &agent.base, TOKEN).await;
    assert_eq!(status, 403, "{body}");
    // An annotation naming an account that does not exist: IAM's 404, as GKE relays it.
    let (status, body) = md("127.0.0.25", &agent.base, TOKEN).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.starts_with("Unable to generate access token; IAM returned 404 Not Found: Not found; Gaia id not found for email ghost@proj-g.iam.gserviceaccount.com"),
        "{body}"
    );
    // A pod that starts once the provider is disabled: STS's refusal, passed through.
    google.update(|c| c.disabled = true);
    kube.put_pod(
        wid_kube_fake::PodFixture::new("team-a", "a-2", "node-a")
            .ip("127.0.0.24")
            .service_account("app"),
    );
    let (status, body) = md_eventually("127.0.0.24", &agent, TOKEN).await;
    assert_eq!(
        (status, body.contains("invalid_target")),
        (400, true),
        "{body}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let reasons = loop {
        let reasons: Vec<(String, String)> = kube
            .events()
            .iter()
            .map(|e| {
                (
                    e["involvedObject"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if reasons.len() >= 3 || std::time::Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        reasons.contains(&("b-1".into(), "WorkloadIdentityDenied".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("a-2".into(), "WorkloadIdentityRefused".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("c-1".into(), "WorkloadIdentityUnknownAccount".into())),
        "{reasons:?}"
    );
}

/// The first answer once the agent's watch has the pod (bounded).
async fn md_eventually(ip: &str, agent: &Agent, path: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answer = md(ip, &agent.base, path).await;
        if answer.0 != 403 && answer.0 != 503 || std::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `wid metadata google-setup` prints a script of gcloud commands; real gcloud runs it as
/// printed against wid's token service, and the agent with the flags it names serves a pod of
/// the cluster.
// Multi-threaded: the fake API server answers `google-setup` while the test waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_setups_script_runs_with_real_gcloud_and_its_flags_serve_a_pod() {
    if !crate::gcloud::gcloud_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    server.api().create_project("proj-s", NUMBER).await;
    let kube = wid_kube_fake::FakeApi::new();
    kube.serve().await.expect("fake API server");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig()).expect("kubeconfig");
    let jwks_file = dir.path().join("cluster-jwks.json");
    let setup = Command::new(crate::support::WID)
        .args([
            "metadata",
            "google-setup",
            "--project",
            "proj-s",
            "--project-number",
            NUMBER,
        ])
        .args([
            "--pool",
            "kind-pool",
            "--provider",
            "kind",
            "--namespace",
            "team-a",
            "--ksa",
            "app",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--jwks-file")
        .arg(&jwks_file)
        .output()
        .expect("google-setup");
    let script = String::from_utf8_lossy(&setup.stdout).into_owned();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    let run = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("CLOUDSDK_CONFIG", dir.path().join("gcloud"))
        .env(
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM",
            format!("{}/", server.base()),
        )
        .env("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE", server.token_file())
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .output()
        .expect("run the script");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{script}\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let flags: Vec<String> = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("wid metadata serve "))
        .unwrap_or_else(|| panic!("no flags: {out}"))
        .split(' ')
        .map(str::to_owned)
        .collect();

    // The agent with those flags (and the local token service as its upstream) serves the KSA.
    let account = "wid-workload@proj-s.iam.gserviceaccount.com";
    kube.put_service_account(
        "team-a",
        "app",
        &[("iam.gke.io/gcp-service-account", account)],
    );
    kube.put_pod(
        wid_kube_fake::PodFixture::new("team-a", "a-1", "node-a")
            .ip("127.0.0.32")
            .service_account("app"),
    );
    let mut command = Command::new(crate::support::WID);
    command
        .args([
            "metadata",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--node-name",
            "node-a",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(&flags)
        .args([
            "--sts-url",
            &server.base(),
            "--iamcredentials-url",
            &server.base(),
        ]);
    let agent = Agent::spawn(&mut command, &dir.path().join("agent.log")).await;
    let (status, body) = md_eventually("127.0.0.32", &agent, TOKEN).await;
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert_eq!(server.api().email_of_token_answer(&body).await, account);
}
