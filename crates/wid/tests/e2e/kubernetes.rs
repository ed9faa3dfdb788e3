//! `wid metadata serve` as a Kubernetes node agent, against the fake API server (the real wire
//! protocol: list and watch, TokenRequest, OIDC discovery) and the real token service: pods found
//! by the watch, requests held in a pod's first moments, addresses reused and shared, terminated
//! pods, watches that expire or drop, and an API server that goes away.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Agent, Api, Server};
use serde_json::{Value, json};
use wid_kube_fake::{FakeApi, PodFixture};

const NODE: &str = "node-a";
const GSA_A: &str = "sa-a-runner@proj-a.iam.gserviceaccount.com";
const GSA_B: &str = "sa-b-runner@proj-a.iam.gserviceaccount.com";

async fn start_agent(dir: &std::path::Path, server: &Server, fake: &FakeApi) -> Agent {
    start_agent_with(dir, server, fake, &[]).await
}

async fn start_agent_with(
    dir: &std::path::Path,
    server: &Server,
    fake: &FakeApi,
    extra: &[&std::ffi::OsStr],
) -> Agent {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("kubeconfig");
    let log = dir.join("agent.log");
    let mut command = Command::new(crate::support::WID);
    command
        .args(["metadata", "serve", "--addr", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        // No project number: the agent learns it from STS.
        .args(["--node-name", NODE, "--project", "proj-a"])
        .args([
            "--cluster-name",
            "kube-test",
            "--cluster-location",
            "europe-west1",
        ])
        .args([
            "--sts-url",
            &server.base(),
            "--iamcredentials-url",
            &server.base(),
        ])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(["--pod-wait-ms", "3000"])
        .args(extra)
        .env("WID_LOG", "debug");
    let agent = Agent::spawn(&mut command, &log).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("{}/readyz", agent.admin)).await;
        if ready.is_ok_and(|r| r.status().as_u16() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent not ready: {}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent
}

fn pod_client(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().ok())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

async fn md(client: &reqwest::Client, agent: &Agent, path: &str) -> (u16, String) {
    let response = client
        .get(format!("{}/computeMetadata/v1/{path}", agent.base))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", agent.log()));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// A fake API server and a token service that knows its cluster, with the tests' accounts,
/// bindings and KSAs (`setup`).
async fn cluster(dir: &std::path::Path) -> (FakeApi, Server, Api) {
    let fake = FakeApi::new();
    fake.serve().await.expect("fake API server");
    let server = Server::start(&dir.join("data"));
    let api = server.api();
    setup(&api, &fake).await;
    (fake, server, api)
}

/// The token service trusts the fake cluster through its OIDC discovery, and two KSAs are bound.
async fn setup(api: &Api, fake: &FakeApi) {
    api.create_project("proj-a", "111111111111").await;
    for account in ["sa-a-runner", "sa-b-runner"] {
        api.create_account("proj-a", account).await;
    }
    api.post(
        "/v1/projects/proj-a/locations/europe-west1/clusters",
        json!({"clusterName": "kube-test", "issuerUri": fake.issuer(), "discover": true}),
    )
    .await
    .ok();
    for (account, ksa) in [
        ("sa-a-runner", "team-a/app"),
        ("sa-b-runner", "team-b/other"),
    ] {
        api.post(
            &format!("/v1/projects/-/serviceAccounts/{account}@proj-a.iam.gserviceaccount.com:setIamPolicy"),
            json!({"policy": {"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": [format!("serviceAccount:proj-a.svc.id.goog[{ksa}]")]}]}}),
        )
        .await
        .ok();
    }
    fake.put_service_account(
        "team-a",
        "app",
        &[("iam.gke.io/gcp-service-account", GSA_A)],
    );
    fake.put_service_account(
        "team-b",
        "other",
        &[("iam.gke.io/gcp-service-account", GSA_B)],
    );
    fake.put_service_account("team-c", "plain", &[]);
    // Annotated, but not bound: IAM refuses it.
    fake.put_service_account(
        "team-d",
        "unbound",
        &[("iam.gke.io/gcp-service-account", GSA_A)],
    );
}

/// Waits, bounded, until `check` holds.
async fn eventually<F, Fut>(what: &str, agent: &Agent, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 20 s\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn pods_from_the_watch_with_tokens_from_token_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, server, api) = cluster(dir.path()).await;
    // One pod on this node before the agent starts, one on another node with a local address.
    let a_uid = fake.put_pod(
        PodFixture::new("team-a", "a-1", NODE)
            .ip("127.0.0.12")
            .service_account("app"),
    );
    fake.put_pod(
        PodFixture::new("team-b", "elsewhere", "node-b")
            .ip("127.0.0.13")
            .service_account("other"),
    );
    fake.put_node(
        NODE,
        &[
            ("wid.dev/agent-not-ready", "NoSchedule"),
            ("example.com/other", "NoSchedule"),
        ],
    );
    let agent = start_agent(dir.path(), &server, &fake).await;
    // Ready: the agent lifts its own taint, and only its own.
    eventually("the not-ready taint is removed", &agent, || async {
        fake.node_taints(NODE) == vec!["example.com/other".to_owned()]
    })
    .await;
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/pods?")
            && r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "one watch of this node's pods: {requests:?}"
    );

    let a = pod_client("127.0.0.12");
    let (status, email) = md(&a, &agent, "instance/service-accounts/default/email").await;
    assert_eq!((status, email.as_str()), (200, GSA_A), "{}", agent.log());
    // What the agent holds, for its operator: ready, and the one pod of its node.
    assert_eq!(agent.counter("wid_metadata_ready").await, 1);
    assert_eq!(agent.counter("wid_metadata_pod_addresses").await, 1);
    // Learnt from STS's introspection of the pod's federated token.
    let (status, number) = md(&a, &agent, "project/numeric-project-id").await;
    assert_eq!((status, number.as_str()), (200, "111111111111"));
    let (status, body) = md(&a, &agent, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert_eq!(api.email_of_token_answer(&body).await, GSA_A);
    assert_eq!(
        fake.tokens_issued(),
        1,
        "the KSA token came from the TokenRequest API"
    );
    // The exchange and the access token it bought are in the audit trail with the pod they
    // were for, uid included.
    let trail = api.get("/v1/auditEvents?limit=100").await;
    let pod = format!("team-a/a-1 ({a_uid})");
    for action in ["token_exchange", "generate_access_token"] {
        assert!(
            trail.ok()["events"].as_array().is_some_and(|events| events
                .iter()
                .any(|e| e["action"] == action && e["pod"] == pod.as_str())),
            "{action} for {pod}: {}",
            trail.ok()
        );
    }
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("POST /api/v1/namespaces/team-a/serviceaccounts/app/token")),
        "{:?}",
        fake.requests()
    );

    // A pod of another node is never this node's.
    let (status, body) = md(
        &pod_client("127.0.0.13"),
        &agent,
        "instance/service-accounts/default/email",
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // A request in a pod's first moment is held until the watch delivers the pod, then answered.
    let waits = agent.counter("wid_metadata_pod_waits_total").await;
    let early = tokio::spawn({
        let base = agent.base.clone();
        async move {
            pod_client("127.0.0.14")
                .get(format!(
                    "{base}/computeMetadata/v1/instance/service-accounts/default/token"
                ))
                .header("Metadata-Flavor", "Google")
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    eventually("the early request is held", &agent, || async {
        agent.counter("wid_metadata_pod_waits_total").await > waits
    })
    .await;
    fake.put_pod(
        PodFixture::new("team-c", "c-1", NODE)
            .ip("127.0.0.14")
            .service_account("plain")
            .phase("Pending"),
    );
    let status = early.await.expect("join").expect("early request");
    assert_eq!(status, 200, "held, then answered: {}", agent.log());

    // The address is reused by a new pod with another KSA: the new pod's identity, never the old.
    assert!(fake.delete_pod("team-a", "a-1"));
    fake.put_pod(
        PodFixture::new("team-b", "b-1", NODE)
            .ip("127.0.0.12")
            .service_account("other"),
    );
    eventually("the reused address is the new pod", &agent, || async {
        md(&a, &agent, "instance/service-accounts/default/email").await == (200, GSA_B.to_owned())
    })
    .await;
    let (status, body) = md(&a, &agent, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.email_of_token_answer(&body).await, GSA_B);

    // Two live pods with one address: refused with a clear 503 until one goes.
    fake.put_pod(
        PodFixture::new("team-a", "a-2", NODE)
            .ip("127.0.0.12")
            .service_account("app"),
    );
    eventually("a shared address is refused", &agent, || async {
        md(&a, &agent, "instance/service-accounts/default/email")
            .await
            .0
            == 503
    })
    .await;
    let (_, body) = md(&a, &agent, "instance/service-accounts/default/token").await;
    assert!(
        body.contains("team-a/a-2") && body.contains("team-b/b-1"),
        "{body}"
    );
    // Each refused pod hears why in its events (posted in the background), once a minute
    // however often it asks.
    let ambiguous_events = || {
        fake.events()
            .into_iter()
            .filter(|e| {
                e["reason"] == "WorkloadIdentityAmbiguousAddress"
                    && e["involvedObject"]["name"] == "a-2"
            })
            .collect::<Vec<Value>>()
    };
    eventually(
        "the shared address is an event on the pod",
        &agent,
        || async { !ambiguous_events().is_empty() },
    )
    .await;
    let _ = md(&a, &agent, "instance/service-accounts/default/token").await;
    let ambiguous = ambiguous_events();
    assert_eq!(ambiguous.len(), 1, "rate-limited to one: {ambiguous:?}");
    assert_eq!(ambiguous[0]["involvedObject"]["kind"], "Pod");
    assert_eq!(ambiguous[0]["type"], "Warning");
    assert!(fake.delete_pod("team-a", "a-2"));
    eventually("the address is b-1's again", &agent, || async {
        md(&a, &agent, "instance/service-accounts/default/email").await == (200, GSA_B.to_owned())
    })
    .await;

    // A KSA that is not bound: IAM's 403, and an event on the pod that says so.
    fake.put_pod(
        PodFixture::new("team-d", "d-1", NODE)
            .ip("127.0.0.16")
            .service_account("unbound"),
    );
    let d = pod_client("127.0.0.16");
    eventually("the unbound pod is known", &agent, || async {
        md(&d, &agent, "instance/service-accounts/default/email").await == (200, GSA_A.to_owned())
    })
    .await;
    let (status, body) = md(&d, &agent, "instance/service-accounts/default/token").await;
    assert_eq!(status, 403, "{body}");
    eventually("the refusal is an event on the pod", &agent, || async {
        fake.events().iter().any(|e| {
            e["reason"] == "WorkloadIdentityDenied"
                && e["involvedObject"]["name"] == "d-1"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("team-d/unbound"))
        })
    })
    .await;

    // A finished pod never resolves: the request waits out the bound, then a 403.
    fake.put_pod(
        PodFixture::new("team-c", "c-1", NODE)
            .ip("127.0.0.14")
            .service_account("plain")
            .phase("Succeeded"),
    );
    eventually("a finished pod is refused", &agent, || async {
        md(
            &pod_client("127.0.0.14"),
            &agent,
            "instance/service-accounts/default/email",
        )
        .await
        .0 == 403
    })
    .await;

    // The watch expires (410 Gone) while pods change: the re-list brings the agent up to date.
    fake.compact();
    fake.drop_watches();
    fake.put_pod(
        PodFixture::new("team-a", "a-3", NODE)
            .ip("127.0.0.15")
            .service_account("app"),
    );
    assert!(fake.delete_pod("team-b", "b-1"));
    eventually("pods changed during the gap are seen", &agent, || async {
        md(
            &pod_client("127.0.0.15"),
            &agent,
            "instance/service-accounts/default/email",
        )
        .await
            == (200, GSA_A.to_owned())
    })
    .await;
    eventually("pods deleted during the gap are gone", &agent, || async {
        md(&a, &agent, "instance/service-accounts/default/email")
            .await
            .0
            == 403
    })
    .await;

    // The API server goes away: known pods keep working (their KSA tokens are cached).
    let (status, _) = md(
        &pod_client("127.0.0.15"),
        &agent,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 200);
    fake.set_down(true);
    let (status, body) = md(
        &pod_client("127.0.0.15"),
        &agent,
        "instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/devstorage.read_only",
    )
    .await;
    assert_eq!(
        status,
        200,
        "a known pod with the API server down: {body}\n{}",
        agent.log()
    );
    fake.set_down(false);
}

/// Puts a process of the pod with `uid` into a process table for `--proc-root`: its cgroup names
/// the pod as kubelet does, and its network namespace is this test's own (`net` is the real
/// `/proc/self/net`), so the kernel's own socket tables are what the agent reads.
fn run_pod_process(proc_root: &std::path::Path, pid: u32, uid: &str) {
    let process = proc_root.join(pid.to_string());
    std::fs::create_dir_all(&process).expect("process dir");
    std::fs::write(
        process.join("cgroup"),
        format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-1.scope\n", uid.replace('-', "_")),
    )
    .expect("cgroup");
    std::os::unix::fs::symlink("/proc/self/net", process.join("net")).expect("net");
}

#[tokio::test]
async fn attested_callers_are_answered_only_from_their_own_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, server, api) = cluster(dir.path()).await;
    let procs = dir.path().join("proc");
    std::fs::create_dir(&procs).expect("proc root");
    let a_uid = fake.put_pod(
        PodFixture::new("team-a", "a-1", NODE)
            .ip("127.0.0.41")
            .service_account("app"),
    );
    run_pod_process(&procs, 101, &a_uid);
    // Two pods the index lists whose processes are gone: their addresses may already be others'.
    fake.put_pod(
        PodFixture::new("team-a", "departed", NODE)
            .ip("127.0.0.42")
            .service_account("app"),
    );
    fake.put_pod(
        PodFixture::new("team-a", "ghost", NODE)
            .ip("127.0.0.43")
            .service_account("app"),
    );
    let agent = start_agent_with(
        dir.path(),
        &server,
        &fake,
        &[
            "--attest-callers".as_ref(),
            "--proc-root".as_ref(),
            procs.as_os_str(),
        ],
    )
    .await;

    // The kernel confirms pod A's connection: answered, token included.
    let a = pod_client("127.0.0.41");
    let (status, email) = md(&a, &agent, "instance/service-accounts/default/email").await;
    assert_eq!((status, email.as_str()), (200, GSA_A), "{}", agent.log());
    let (status, body) = md(&a, &agent, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.email_of_token_answer(&body).await, GSA_A);

    // The index says "departed" but the connection is not from it (a new pod has the address
    // and the watch is behind): held, never answered as the departed pod, and answered as the
    // new pod once the watch delivers it.
    let waits = agent.counter("wid_metadata_pod_waits_total").await;
    let reused = tokio::spawn({
        let client = pod_client("127.0.0.42");
        let base = agent.base.clone();
        async move {
            let response = client
                .get(format!(
                    "{base}/computeMetadata/v1/instance/service-accounts/default/email"
                ))
                .header("Metadata-Flavor", "Google")
                .send()
                .await?;
            Ok::<_, reqwest::Error>((response.status().as_u16(), response.text().await?))
        }
    });
    eventually("the unconfirmed request is held", &agent, || async {
        agent.counter("wid_metadata_pod_waits_total").await > waits
    })
    .await;
    assert!(fake.delete_pod("team-a", "departed"));
    // The new pod's processes run before its address is reported, as a sandbox's do.
    let new_uid = "0e000000-0000-4000-8000-00000000000e";
    run_pod_process(&procs, 102, new_uid);
    fake.put_pod(
        PodFixture::new("team-b", "new", NODE)
            .ip("127.0.0.42")
            .service_account("other")
            .uid(new_uid),
    );
    let (status, email) = reused.await.expect("join").expect("reused request");
    assert_eq!((status, email.as_str()), (200, GSA_B), "{}", agent.log());

    // An index that does not change its mind: refused once the wait is over, and reported on
    // the pod.
    let (status, body) = md(
        &pod_client("127.0.0.43"),
        &agent,
        "instance/service-accounts/default/email",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("Unable to confirm the caller") && body.contains("team-a/ghost"),
        "{body}"
    );
    assert!(
        agent
            .counter("wid_metadata_attestation_refusals_total")
            .await
            >= 1,
        "{}",
        agent.metrics().await
    );
    eventually("the refusal is an event on the pod", &agent, || async {
        fake.events().iter().any(|e| {
            e["reason"] == "WorkloadIdentityUnconfirmedCaller"
                && e["involvedObject"]["name"] == "ghost"
        })
    })
    .await;
}

/// A cluster whose issuer the token service cannot reach (kind's and kubeadm's default) is
/// registered through its API server: `wid iam clusters register --kubeconfig` reads the issuer
/// and its keys with the kubeconfig's credentials, and the agent's pods get tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_an_unreachable_issuer_is_registered_through_its_api_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeApi::new();
    fake.serve().await.expect("fake API server");
    fake.set_issuer("https://kubernetes.default.svc.cluster.local");
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    api.create_account("proj-a", "sa-a-runner").await;
    api.post(
        &format!("/v1/projects/-/serviceAccounts/{GSA_A}:setIamPolicy"),
        json!({"policy": {"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": ["serviceAccount:proj-a.svc.id.goog[team-a/app]"]}]}}),
    )
    .await
    .ok();
    fake.put_service_account(
        "team-a",
        "app",
        &[("iam.gke.io/gcp-service-account", GSA_A)],
    );
    let kubeconfig = dir.path().join("cluster.kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("path");
    // The CLI is waited for off the runtime's thread: the runtime serves the fake it calls.
    let register = |extra: &[&str]| {
        let mut args = vec![
            "iam",
            "clusters",
            "register",
            "kube-test",
            "--project",
            "proj-a",
        ];
        args.extend(["--location", "europe-west1", "--format", "json"]);
        args.extend(["--kubeconfig", kubeconfig]);
        args.extend_from_slice(extra);
        tokio::task::block_in_place(|| crate::support::wid_cli(&server, &args))
    };

    // An issuer given that is not the API server's: refused, nothing registered.
    let (ok, _, err) = register(&["--issuer-uri", "https://elsewhere.example.com"]);
    assert!(
        !ok && err.contains("https://kubernetes.default.svc.cluster.local"),
        "{err}"
    );
    let (ok, out, err) = register(&[]);
    assert!(ok, "{err}");
    let cluster: Value = serde_json::from_str(&out).expect("cluster JSON");
    assert_eq!(
        cluster["issuerUri"], "https://kubernetes.default.svc.cluster.local",
        "{cluster}"
    );

    let pod_uid = fake.put_pod(
        PodFixture::new("team-a", "a-1", NODE)
            .ip("127.0.0.61")
            .service_account("app"),
    );
    assert!(!pod_uid.is_empty());
    let agent = start_agent(dir.path(), &server, &fake).await;
    let (status, body) = md(
        &pod_client("127.0.0.61"),
        &agent,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert_eq!(api.email_of_token_answer(&body).await, GSA_A);
}

/// The manifest of deploy/kubernetes, as documents.
fn deploy_manifest() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/agent/base/wid-agent.yaml"
    );
    let text = std::fs::read_to_string(path).expect("deploy/kubernetes/agent/base/wid-agent.yaml");
    serde_saphyr::from_multiple::<Value>(&text).expect("the manifest is YAML")
}

/// The (resource or non-resource URL, verb) of an API request as the fake logged it
/// (`METHOD /path?query`), as RBAC names them.
fn rbac_of(request: &str) -> (String, &'static str) {
    let (method, target) = request.split_once(' ').unwrap_or((request, ""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resource = match segments.as_slice() {
        ["api", "v1", "namespaces", _, kind, _, sub] => format!("{kind}/{sub}"),
        ["api", "v1", "namespaces", _, kind, ..] | ["api", "v1", kind, ..] => (*kind).to_owned(),
        _ => return (path.to_owned(), "get"),
    };
    let named = segments.len().is_multiple_of(2);
    let verb = match method {
        "GET" if query.contains("watch=true") => "watch",
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PATCH" => "patch",
        "PUT" => "update",
        "DELETE" => "delete",
        _ => "unknown",
    };
    (resource, verb)
}

/// deploy/kubernetes/agent/base/wid-agent.yaml grants the agent every call it made in the other tests of
/// this file (run here again: a pod's life, events, the taint) and no more than its node
/// needs; the DaemonSet tolerates the agent's own taint and knows its node.
#[tokio::test]
async fn the_deploy_manifest_grants_what_the_agent_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, server, api) = cluster(dir.path()).await;
    fake.put_node(NODE, &[("wid.dev/agent-not-ready", "NoSchedule")]);
    fake.put_pod(
        PodFixture::new("team-a", "a-1", NODE)
            .ip("127.0.0.71")
            .service_account("app"),
    );
    fake.put_pod(
        PodFixture::new("team-d", "d-1", NODE)
            .ip("127.0.0.72")
            .service_account("unbound"),
    );
    // Only the agent's calls count, not the token service's discovery at registration.
    let before_agent = fake.requests().len();
    let agent = start_agent(dir.path(), &server, &fake).await;
    let (status, body) = md(
        &pod_client("127.0.0.71"),
        &agent,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.email_of_token_answer(&body).await, GSA_A);
    let (status, _) = md(
        &pod_client("127.0.0.72"),
        &agent,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 403);
    eventually("the refusal is an event", &agent, || async {
        !fake.events().is_empty()
    })
    .await;
    eventually("the taint is removed", &agent, || async {
        fake.node_taints(NODE).is_empty()
    })
    .await;

    let manifest = deploy_manifest();
    let role = manifest
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let granted = |resource: &str, verb: &str| {
        role["rules"].as_array().into_iter().flatten().any(|rule| {
            let names = |field: &str| {
                rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            };
            let verbs = names("verbs");
            (names("resources").iter().any(|r| r == resource)
                || names("nonResourceURLs").iter().any(|u| u == resource))
                && verbs.iter().any(|v| v == verb || v == "*")
        })
    };
    let calls: std::collections::BTreeSet<(String, &str)> = fake
        .requests()
        .iter()
        .skip(before_agent)
        .filter(|r| !r.contains("/_fake/"))
        .map(|r| rbac_of(r))
        .collect();
    for (resource, verb) in &calls {
        assert!(
            granted(resource, verb),
            "the agent calls {verb} on {resource}, which the ClusterRole does not grant: {calls:?}"
        );
    }
    // And nothing it does not call: every grant is used, in the core API group.
    for rule in role["rules"].as_array().into_iter().flatten() {
        let names = |field: &str| {
            rule[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        if rule.get("resources").is_some() {
            assert_eq!(names("apiGroups"), vec![String::new()], "{rule}");
        }
        for resource in names("resources")
            .into_iter()
            .chain(names("nonResourceURLs"))
        {
            for verb in names("verbs") {
                assert!(
                    calls.iter().any(|(r, v)| *r == resource && *v == verb),
                    "the ClusterRole grants {verb} on {resource}, which the agent never calls: {calls:?}"
                );
            }
        }
    }
    for needed in [
        ("pods", "watch"),
        ("serviceaccounts/token", "create"),
        ("nodes", "patch"),
        ("events", "create"),
    ] {
        assert!(
            calls.contains(&(needed.0.to_owned(), needed.1)),
            "{calls:?}"
        );
    }

    let daemonset = manifest
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let spec = &daemonset["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let tolerates_own_taint = spec["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            (t["operator"] == "Exists" && t.get("key").is_none())
                || t["key"] == "wid.dev/agent-not-ready"
        });
    assert!(tolerates_own_taint, "{spec}");
    let agent_container = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "agent")
        .expect("the agent's container");
    assert_eq!(agent_container["args"][0], "metadata");
    assert!(
        agent_container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["name"] == "WID_NODE_NAME"
                    && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
            }),
        "{agent_container}"
    );
}

/// `wid iam clusters register --discover` with no issuer: the issuer is read from the API
/// server of KUBECONFIG, and the token service fetches its keys through discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_reads_the_issuer_from_the_clusters_api_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeApi::new();
    fake.serve().await.expect("fake API server");
    let server = Server::start(&dir.path().join("data"));
    server.api().create_project("proj-a", "111111111111").await;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).expect("kubeconfig");
    let args = [
        "iam",
        "clusters",
        "register",
        "kube-test",
        "--project",
        "proj-a",
        "--location",
        "europe-west1",
        "--discover",
        "--format",
        "json",
    ];
    // The CLI is waited for off the runtime's thread: the runtime serves the fake it calls.
    let (ok, out, err) = tokio::task::block_in_place(|| {
        crate::support::wid_cli_with_env(&server, &args, &[("KUBECONFIG", kubeconfig.as_os_str())])
    });
    assert!(ok, "{err}");
    let cluster: Value = serde_json::from_str(&out).expect("cluster JSON");
    assert_eq!(cluster["issuerUri"], fake.issuer().as_str(), "{cluster}");
    // No cluster to ask: a clear refusal that says what to give.
    let nowhere = dir.path().join("no-such-kubeconfig");
    let (ok, _, err) = tokio::task::block_in_place(|| {
        crate::support::wid_cli_with_env(
            &server,
            &[
                "iam",
                "clusters",
                "register",
                "other",
                "--project",
                "proj-a",
                "--location",
                "l",
                "--discover",
            ],
            &[("KUBECONFIG", nowhere.as_os_str())],
        )
    });
    assert!(
        !ok && err.contains("set KUBECONFIG, give --issuer-uri"),
        "{err}"
    );
    // Uploaded keys need the issuer they are for.
    let (ok, _, err) = tokio::task::block_in_place(|| {
        crate::support::wid_cli_with_env(
            &server,
            &[
                "iam",
                "clusters",
                "register",
                "other",
                "--project",
                "proj-a",
                "--location",
                "l",
                "--jwk-json-path",
                "/dev/null",
            ],
            &[],
        )
    });
    assert!(!ok && err.contains("--issuer-uri is required"), "{err}");
}

/// One exchange buys a pod's access token and all its ID tokens; when the token service stops
/// taking that federated token (its cluster registered again), the agent exchanges anew.
#[tokio::test]
async fn one_exchange_serves_a_pods_tokens_until_the_token_service_refuses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, server, api) = cluster(dir.path()).await;
    let uid = fake.put_pod(
        PodFixture::new("team-a", "a-1", NODE)
            .ip("127.0.0.81")
            .service_account("app"),
    );
    let agent = start_agent(dir.path(), &server, &fake).await;
    let pod = pod_client("127.0.0.81");
    let exchanges = || async {
        let trail = api.get("/v1/auditEvents?limit=1000").await;
        let pod_name = format!("team-a/a-1 ({uid})");
        trail.ok()["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["action"] == "token_exchange" && e["pod"] == pod_name.as_str())
            .count()
    };
    let (status, body) = md(&pod, &agent, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    let after_access_token = exchanges().await;
    for audience in ["https://a.example.com", "https://b.example.com"] {
        let path = format!("instance/service-accounts/default/identity?audience={audience}");
        let (status, body) = md(&pod, &agent, &path).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        exchanges().await,
        after_access_token,
        "the ID tokens took no exchange of their own"
    );

    // The cluster deleted and registered again (new keys, after a leak say): the federated
    // token the agent holds was vouched for by the old one and no longer counts (401); the
    // agent drops it, exchanges anew, and the pod's next new token is served, in one request.
    let clusters = "/v1/projects/proj-a/locations/europe-west1/clusters";
    let register = || {
        api.post(
            clusters,
            json!({"clusterName": "kube-test", "issuerUri": fake.issuer(), "discover": true}),
        )
    };
    api.call("DELETE", &format!("{clusters}/kube-test"), None)
        .await
        .ok();
    register().await.ok();
    let (status, body) = md(
        &pod,
        &agent,
        "instance/service-accounts/default/identity?audience=https://c.example.com",
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert_eq!(exchanges().await, after_access_token + 1);

    // The cluster gone: no new token, however the agent tries.
    api.call("DELETE", &format!("{clusters}/kube-test"), None)
        .await
        .ok();
    let (status, body) = md(
        &pod,
        &agent,
        "instance/service-accounts/default/identity?audience=https://d.example.com",
    )
    .await;
    assert_ne!(status, 200, "{body}");
}

/// With `--node-identity` in Kubernetes mode, a process of the node (no pod's) gets the named
/// KSA's identity: its KSA token is bound to no pod (a pod named after the node identity exists
/// nowhere, and the API server would refuse the binding).
#[tokio::test]
async fn the_node_identity_gets_tokens_from_the_token_request_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, server, api) = cluster(dir.path()).await;
    let agent = start_agent_with(
        dir.path(),
        &server,
        &fake,
        &[
            "--node-address".as_ref(),
            "127.0.0.81".as_ref(),
            "--node-identity".as_ref(),
            "team-a/app".as_ref(),
            "--node-gcp-service-account".as_ref(),
            GSA_A.as_ref(),
        ],
    )
    .await;
    let (status, body) = md(
        &pod_client("127.0.0.81"),
        &agent,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", agent.log());
    assert_eq!(api.email_of_token_answer(&body).await, GSA_A);
    let (status, email) = md(
        &pod_client("127.0.0.81"),
        &agent,
        "instance/service-accounts/default/email",
    )
    .await;
    assert_eq!((status, email.as_str()), (200, GSA_A));
}

/// A pod of an annotated KSA has its access token before it asks: its first request is a cache
/// hit that costs no upstream call. Pods of no annotated account, and finished ones, cost none.
#[tokio::test]
async fn a_new_pods_access_token_is_fetched_before_its_first_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fake, server, _api) = cluster(dir.path()).await;
    let agent = start_agent(dir.path(), &server, &fake).await;
    fake.put_pod(
        PodFixture::new("team-c", "plain-1", NODE)
            .ip("127.0.0.83")
            .service_account("plain"),
    );
    fake.put_pod(
        PodFixture::new("team-b", "done-1", NODE)
            .ip("127.0.0.84")
            .service_account("other")
            .phase("Succeeded"),
    );
    fake.put_pod(
        PodFixture::new("team-a", "a-1", NODE)
            .ip("127.0.0.82")
            .service_account("app"),
    );
    let prefetched = r#"wid_metadata_token_prefetches_total{outcome="ok"}"#;
    eventually("the new pod's token is fetched", &agent, || async {
        agent.counter(prefetched).await == 1
    })
    .await;
    let upstream = r#"wid_metadata_upstream_calls_total{outcome="ok"}"#;
    let calls = agent.counter(upstream).await;
    assert_eq!(calls, 2, "one exchange and one generateAccessToken");

    let (status, body) = md(
        &pod_client("127.0.0.82"),
        &agent,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hits = r#"wid_metadata_token_cache_total{result="hit"}"#;
    let misses = r#"wid_metadata_token_cache_total{result="miss"}"#;
    assert_eq!(
        (agent.counter(hits).await, agent.counter(misses).await),
        (1, 0),
        "{}",
        agent.metrics().await
    );
    assert_eq!(
        agent.counter(upstream).await,
        calls,
        "the request cost none"
    );
    assert_eq!(agent.counter(prefetched).await, 1, "no other pod's token");
}
