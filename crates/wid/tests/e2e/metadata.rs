//! The metadata server (`wid metadata serve`) with a pods file, against the real token service:
//! pods told apart by their source address, unknown callers refused, the file reloaded.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Agent, Api, Server};
use serde_json::{Value, json};

fn pods_file(path: &std::path::Path, second_gsa: &str) {
    let pods = json!({"pods": [
        {"ip": "127.0.0.2", "namespace": "team-a", "name": "a-1", "uid": "uid-a", "serviceAccountName": "app",
         "annotations": {"iam.gke.io/gcp-service-account": "sa-a-runner@proj-a.iam.gserviceaccount.com"}},
        {"ip": "127.0.0.3", "namespace": "team-b", "name": "b-1", "uid": "uid-b", "serviceAccountName": "app",
         "annotations": {"iam.gke.io/gcp-service-account": second_gsa}},
        {"ip": "127.0.0.4", "namespace": "team-c", "name": "c-1", "uid": "uid-c", "serviceAccountName": "plain"},
    ]});
    // Write then rename, so the agent never reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pods.to_string()).expect("write pods");
    std::fs::rename(&tmp, path).expect("rename pods");
}

async fn start_agent(dir: &std::path::Path, server: &Server) -> Agent {
    start_agent_with(dir, server, &[]).await
}

/// An agent on free ports (its log says which) for the pods file of `dir`.
async fn start_agent_with(dir: &std::path::Path, server: &Server, extra: &[&str]) -> Agent {
    let mut command = Command::new(crate::support::WID);
    command
        .args(["metadata", "serve", "--addr", "127.0.0.1:0", "--pods"])
        .arg(dir.join("pods.json"))
        .args([
            "--sts-url",
            &server.base(),
            "--iamcredentials-url",
            &server.base(),
        ])
        .args([
            "--project",
            "proj-a",
            "--project-number",
            "111111111111",
            "--issuer-uri",
            "https://k8s.node-test.example.com",
        ])
        .arg("--issuer-key")
        .arg(dir.join("issuer.pk8"))
        .arg("--jwks-out")
        .arg(dir.join("jwks.json"))
        .args(["--admin-addr", "127.0.0.1:0"])
        // Host-network callers come from the node's address, 127.0.0.7 here.
        .args([
            "--node-address",
            "127.0.0.7",
            "--node-identity",
            "kube-system/host-net",
        ])
        .args(extra);
    Agent::spawn(&mut command, &dir.join("agent.log")).await
}

/// A client whose connections come from `ip`, as a pod's would.
fn pod_client(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().ok())
        .build()
        .expect("client")
}

async fn md(client: &reqwest::Client, base: &str, path: &str) -> (u16, String) {
    let response = client
        .get(format!("{base}/computeMetadata/v1/{path}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok()),
        Some("Google")
    );
    (status, response.text().await.expect("body"))
}

/// STS's introspection of a token (RFC 7662).
async fn introspect(api: &Api, token: &str) -> Value {
    api.http
        .post(format!("{}/v1/introspect", api.base))
        .form(&[("token", token)])
        .send()
        .await
        .expect("send")
        .json::<Value>()
        .await
        .expect("json")
}

async fn setup(api: &Api, jwks: &str) {
    api.create_project("proj-a", "111111111111").await;
    for account in ["sa-a-runner", "sa-b-runner", "sa-b2-runner"] {
        api.create_account("proj-a", account).await;
    }
    api.post(
        "/v1/projects/proj-a/locations/local/clusters",
        json!({"clusterName": "node-test", "issuerUri": "https://k8s.node-test.example.com", "jwksJson": jwks}),
    )
    .await
    .ok();
    for (account, ksa) in [
        ("sa-a-runner", "team-a/app"),
        ("sa-b-runner", "team-b/app"),
        ("sa-b2-runner", "team-b/app"),
    ] {
        api.post(
            &format!("/v1/projects/-/serviceAccounts/{account}@proj-a.iam.gserviceaccount.com:setIamPolicy"),
            json!({"policy": {"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": [format!("serviceAccount:proj-a.svc.id.goog[{ksa}]")]}]}}),
        )
        .await
        .ok();
    }
}

#[tokio::test]
async fn pods_are_told_apart_by_source_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    pods_file(
        &dir.path().join("pods.json"),
        "sa-b-runner@proj-a.iam.gserviceaccount.com",
    );
    let agent = start_agent(dir.path(), &server).await;
    let jwks = std::fs::read_to_string(dir.path().join("jwks.json")).expect("jwks");
    setup(&api, &jwks).await;

    let (a, b, c, stranger) = (
        pod_client("127.0.0.2"),
        pod_client("127.0.0.3"),
        pod_client("127.0.0.4"),
        pod_client("127.0.0.9"),
    );
    assert_eq!(
        md(&a, &agent.base, "instance/service-accounts/default/email")
            .await
            .1,
        "sa-a-runner@proj-a.iam.gserviceaccount.com"
    );
    assert_eq!(
        md(&b, &agent.base, "instance/service-accounts/default/email")
            .await
            .1,
        "sa-b-runner@proj-a.iam.gserviceaccount.com"
    );
    // Unannotated: the pool name, and the federated token itself.
    assert_eq!(
        md(&c, &agent.base, "instance/service-accounts/default/email")
            .await
            .1,
        "proj-a.svc.id.goog"
    );

    let token_of = |body: &str| {
        serde_json::from_str::<Value>(body).expect("json")["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let (status, body) = md(&a, &agent.base, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        api.email_of_token_answer(&body).await,
        "sa-a-runner@proj-a.iam.gserviceaccount.com"
    );
    let (status, body) = md(&b, &agent.base, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        api.email_of_token_answer(&body).await,
        "sa-b-runner@proj-a.iam.gserviceaccount.com"
    );
    let (status, body) = md(&c, &agent.base, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    let introspected = introspect(&api, &token_of(&body)).await;
    assert!(
        introspected["username"]
            .as_str()
            .is_some_and(|u| u.ends_with("/subject/ns/team-c/sa/plain"))
    );
    let (status, body) = md(
        &c,
        &agent.base,
        "instance/service-accounts/default/identity?audience=x",
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("(team-c/plain) is not annotated"), "{body}");

    // A stranger is refused, never given another pod's identity.
    let (status, body) = md(
        &stranger,
        &agent.base,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("127.0.0.9"), "{body}");

    // A host-network caller (the node's address) gets the configured node identity, which is
    // unannotated here: the pool name, and a federated token for kube-system/host-net.
    let node = pod_client("127.0.0.7");
    assert_eq!(
        md(
            &node,
            &agent.base,
            "instance/service-accounts/default/email"
        )
        .await
        .1,
        "proj-a.svc.id.goog"
    );
    let (status, body) = md(
        &node,
        &agent.base,
        "instance/service-accounts/default/token",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let introspected = introspect(&api, &token_of(&body)).await;
    assert!(
        introspected["username"]
            .as_str()
            .is_some_and(|u| u.ends_with("/subject/ns/kube-system/sa/host-net")),
        "{introspected}"
    );

    // The pods file changes: pod b's next token is for its new account.
    pods_file(
        &dir.path().join("pods.json"),
        "sa-b2-runner@proj-a.iam.gserviceaccount.com",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if md(&b, &agent.base, "instance/service-accounts/default/email")
            .await
            .1
            == "sa-b2-runner@proj-a.iam.gserviceaccount.com"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pods file was not reloaded: {}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = md(&b, &agent.base, "instance/service-accounts/default/token").await;
    assert_eq!(
        api.email_of_token_answer(&body).await,
        "sa-b2-runner@proj-a.iam.gserviceaccount.com"
    );

    // IAM's refusal passes through in GKE's shape: unbind pod a, and a new scope set misses the cache.
    api.post(
        "/v1/projects/-/serviceAccounts/sa-a-runner@proj-a.iam.gserviceaccount.com:setIamPolicy",
        json!({"policy": {"bindings": []}}),
    )
    .await
    .ok();
    let (status, body) = md(&a, &agent.base, "instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/devstorage.read_only").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.starts_with("Unable to generate access token; IAM returned 403 Forbidden: Permission 'iam.serviceAccounts.getAccessToken' denied"), "{body}");

    // The admin listener: health, readiness and metrics without per-pod labels.
    assert_eq!(
        reqwest::get(format!("{}/healthz", agent.admin))
            .await
            .expect("healthz")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/readyz", agent.admin))
            .await
            .expect("readyz")
            .status()
            .as_u16(),
        200
    );
    let metrics = reqwest::get(format!("{}/metrics", agent.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("wid_metadata_requests_total{endpoint=\"token\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wid_metadata_token_cache_total{result=\"miss\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wid_metadata_upstream_calls_total{outcome=\"refused\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("127.0.0.2") && !metrics.contains("team-a"),
        "no per-pod labels"
    );

    // The upstream stops: cached tokens are still served; a new one is a 503, never a 500.
    drop(server);
    let (status, _) = md(&b, &agent.base, "instance/service-accounts/default/token").await;
    assert_eq!(
        status, 200,
        "the cached token is served with the upstream down"
    );
    let (status, body) = md(
        &b,
        &agent.base,
        "instance/service-accounts/default/identity?audience=new",
    )
    .await;
    assert_eq!(status, 503, "{body}");
}

/// Raw HTTP/1.1 on a socket bound to `ip`.
async fn raw_connect(ip: &str, base: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind");
    let addr = base.trim_start_matches("http://").parse().expect("addr");
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (bounded); what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream, bound: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    tokio::time::timeout(bound, stream.read_to_end(&mut all))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&all).into_owned())
}

#[tokio::test]
async fn connections_are_bounded_and_the_port_is_ours_alone() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    pods_file(
        &dir.path().join("pods.json"),
        "sa-b-runner@proj-a.iam.gserviceaccount.com",
    );
    let mut agent = start_agent_with(
        dir.path(),
        &server,
        &[
            "--head-timeout-ms",
            "1000",
            "--max-connections",
            "4",
            "--serve-threads",
            "2",
        ],
    )
    .await;

    // A second agent cannot take a share of the port.
    let second = Command::new(crate::support::WID)
        .args([
            "metadata",
            "serve",
            "--addr",
            agent.base.trim_start_matches("http://"),
            "--pods",
        ])
        .arg(dir.path().join("pods.json"))
        .args(["--project", "proj-a", "--project-number", "111111111111"])
        .args(["--issuer-uri", "https://k8s.node-test.example.com"])
        .arg("--issuer-key")
        .arg(dir.path().join("issuer.pk8"))
        .output()
        .expect("second agent");
    assert!(
        !second.status.success(),
        "a second agent bound the same port"
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // A head trickled a byte at a time is cut off at the head timeout, not kept alive by each byte.
    let slow = raw_connect("127.0.0.2", &agent.base).await;
    let (mut reader, mut writer) = slow.into_split();
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        .await
        .expect("write");
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        use tokio::io::AsyncReadExt;
        // EOF or a reset: either way the server let go.
        let _ = reader.read_to_end(&mut sink).await;
    })
    .await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "a trickled head was still open after {:?}\n{}",
        started.elapsed(),
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    );

    // Long-polls whose clients leave free their connections at once: four abandoned ones on a
    // server of four connections, then a request of another pod is still answered.
    for _ in 0..4 {
        let mut poll = raw_connect("127.0.0.3", &agent.base).await;
        poll.write_all(b"GET /computeMetadata/v1/project/project-id?wait_for_change=true&timeout_sec=60 HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n")
            .await
            .expect("write");
        drop(poll);
    }
    let client = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().ok())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let status = client
        .get(format!(
            "{}/computeMetadata/v1/project/project-id",
            agent.base
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(
        status.ok(),
        Some(200),
        "abandoned long-polls kept their connections: {}",
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    );

    // SIGTERM answers a held long-poll at once, then the agent exits.
    let mut poll = raw_connect("127.0.0.2", &agent.base).await;
    poll.write_all(b"GET /computeMetadata/v1/project/project-id?wait_for_change=true&timeout_sec=60 HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n")
        .await
        .expect("write");
    let metrics = || async {
        reqwest::get(format!("{}/metrics", agent.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // The long-poll is in: its answer is the only request not yet counted.
    let before = metrics().await;
    assert!(!before.contains("SIGTERM"), "{before}");
    let pid = agent.child.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let answered = read_to_close(&mut poll, Duration::from_secs(5))
        .await
        .expect("the held long-poll was not answered within 5 s of SIGTERM");
    assert!(answered.starts_with("HTTP/1.1 200 OK\r\n"), "{answered}");
    assert!(answered.contains("\r\nConnection: close\r\n"), "{answered}");
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = agent.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    assert!(exited.is_some(), "the agent did not exit after SIGTERM");
}

/// Sends one GET on `stream` and reads its response head and body (Content-Length framing);
/// returns the status.
async fn raw_get(stream: &mut tokio::net::TcpStream, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Content-Length: ")
                        .or_else(|| l.strip_prefix("content-length: "))
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head.split(' ').nth(1)?.parse().ok();
            }
        }
    }
}

/// A token service, and an agent with the flags `extra` for the pods of [`pods_file`], bound as
/// [`setup`] binds them.
struct Node {
    _dir: tempfile::TempDir,
    server: Server,
    agent: Agent,
}

impl Node {
    async fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(&dir.path().join("data"));
        pods_file(
            &dir.path().join("pods.json"),
            "sa-b-runner@proj-a.iam.gserviceaccount.com",
        );
        let agent = start_agent_with(dir.path(), &server, extra).await;
        let jwks = std::fs::read_to_string(dir.path().join("jwks.json")).expect("jwks");
        setup(&server.api(), &jwks).await;
        Node {
            _dir: dir,
            server,
            agent,
        }
    }
}

/// The status of the project id asked from `ip` within `bound`; `None` if not answered by then.
async fn served_within(agent: &Agent, ip: &str, bound: Duration) -> Option<u16> {
    let client = reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().ok())
        .timeout(bound)
        .build()
        .expect("client");
    client
        .get(format!(
            "{}/computeMetadata/v1/project/project-id",
            agent.base
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
}

/// The agent's CPU time so far, in clock ticks (utime + stime).
fn cpu_ticks(agent: &Agent) -> u64 {
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", agent.child.id())).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    fields
        .get(11)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
}

/// Waits (bounded) until the agent's CPU time stops growing for a quarter of a second.
async fn wait_until_idle(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cpu_ticks(agent);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = cpu_ticks(agent);
        if now == last {
            return;
        }
        assert!(Instant::now() < deadline, "the agent stayed busy for 30 s");
        last = now;
    }
}

/// The agent's resident memory, in KiB.
fn rss_kib(agent: &Agent) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", agent.child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// What one pod can make the agent hold is bounded: absurd audiences are
/// refused, refused fetches leave nothing, and a pod keeps at most its share of tokens.
#[tokio::test]
async fn one_pod_cannot_make_the_agent_hold_much() {
    let node = Node::start(&[
        "--upstream-per-pod-per-second",
        "10000",
        "--upstream-per-second",
        "10000",
    ])
    .await;
    let (api, agent) = (node.server.api(), &node.agent);
    // Pod b's annotation names an account its KSA is no longer bound to: every fetch is refused.
    api.post(
        "/v1/projects/-/serviceAccounts/sa-b-runner@proj-a.iam.gserviceaccount.com:setIamPolicy",
        json!({"policy": {"bindings": []}}),
    )
    .await
    .ok();
    let (a, b) = (pod_client("127.0.0.2"), pod_client("127.0.0.3"));
    let identity = |audience: String| {
        format!("instance/service-accounts/default/identity?audience={audience}")
    };
    let (status, body) = md(&a, &agent.base, &identity("a".repeat(8 * 1024))).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "audience must be at most 2048 bytes\n")
    );

    // Refused fetches: thousands of 2 KiB audiences leave nothing behind.
    md(&b, &agent.base, &identity("warm".into())).await;
    let before = rss_kib(agent);
    for i in 0..3000 {
        let (status, _) = md(
            &b,
            &agent.base,
            &identity(format!("{i:04}{}", "x".repeat(2040))),
        )
        .await;
        assert_eq!(status, 403);
    }
    let grown = rss_kib(agent).saturating_sub(before);
    assert!(
        grown < 4 * 1024,
        "the agent grew by {grown} KiB for refused fetches"
    );

    // Granted: the pod keeps at most 64 tokens; the rest are served, not kept.
    for i in 0..150 {
        let (status, _) = md(
            &a,
            &agent.base,
            &identity(format!("https://svc-{i}.example")),
        )
        .await;
        assert_eq!(status, 200);
    }
    let cached = agent.counter("wid_metadata_cached_tokens").await;
    assert!(cached <= 64 + 2, "{cached} tokens cached");
}

/// A burst from one pod is refused without debt, and never delays another
/// pod's first token; the refusals are not one log line each.
#[tokio::test]
async fn one_pods_burst_starves_nobody() {
    // The node: 100 calls a second (bursts of 1000); a pod: 10 (bursts of 100); waits of 1 s.
    let node = Node::start(&["--upstream-timeout-seconds", "1"]).await;
    let agent = &node.agent;
    let (a, b) = (pod_client("127.0.0.2"), pod_client("127.0.0.3"));
    let identity = |audience: String| {
        format!("instance/service-accounts/default/identity?audience={audience}")
    };

    // Pod a: 600 new audiences at once, far past its budget.
    let burst: Vec<_> = (0..600)
        .map(|i| {
            let (a, base, path) = (
                a.clone(),
                agent.base.clone(),
                identity(format!("https://burst-{i}.example")),
            );
            tokio::spawn(async move { md(&a, &base, &path).await.0 })
        })
        .collect();
    // Meanwhile pod b's first token comes at once.
    let started = Instant::now();
    let (status, body) = md(&b, &agent.base, "instance/service-accounts/default/token").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "b waited {:?}",
        started.elapsed()
    );
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for task in burst {
        *statuses.entry(task.await.expect("join")).or_default() += 1;
    }
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 100,
        "{statuses:?}"
    );
    assert!(statuses.get(&429).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert_eq!(
        statuses.keys().filter(|s| ![200, 429].contains(*s)).count(),
        0,
        "{statuses:?}"
    );
    // The refusals left no debt: within a second or so, pod a gets a new audience again.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, _) = md(&a, &agent.base, &identity("https://after.example".into())).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod a was still refused 3 s after its burst"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = agent.log().lines().filter(|l| l.contains("budget")).count();
    assert!(
        lines <= 3,
        "{lines} log lines for the refusals:\n{}",
        agent.log()
    );
    assert!(
        agent
            .counter("wid_metadata_upstream_throttled_total{budget=\"pod\"}")
            .await
            > 0
    );
}

/// An address holding many connections, pod or not, never keeps another pod
/// from being served within a second or two.
#[tokio::test]
async fn connection_hogs_make_room() {
    let node = Node::start(&["--max-connections", "50"]).await;
    let agent = &node.agent;
    let path = "/computeMetadata/v1/project/project-id";

    // An address that is no pod takes every connection, each kept alive after its 403.
    let mut strangers = Vec::new();
    for _ in 0..50 {
        let mut stream = raw_connect("127.0.0.9", &agent.base).await;
        if raw_get(&mut stream, path).await == Some(403) {
            strangers.push(stream);
        }
    }
    let started = Instant::now();
    assert_eq!(
        served_within(agent, "127.0.0.2", Duration::from_secs(2)).await,
        Some(200)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(strangers);

    // A pod takes every connection with keep-alives of its own: another pod is still served.
    let mut hog = Vec::new();
    for _ in 0..60 {
        let mut stream = raw_connect("127.0.0.3", &agent.base).await;
        if raw_get(&mut stream, path).await == Some(200) {
            hog.push(stream);
        }
    }
    assert!(hog.len() >= 49, "the hog got {} connections", hog.len());
    let started = Instant::now();
    assert_eq!(
        served_within(agent, "127.0.0.2", Duration::from_secs(2)).await,
        Some(200)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(agent.counter("wid_metadata_connections_shed_total").await >= 1);
    drop(hog);
}

/// An address that is no pod holds few connections (64): past them, new ones
/// are closed at once.
#[tokio::test]
async fn strangers_hold_few_connections() {
    let node = Node::start(&["--max-connections", "500"]).await;
    let agent = &node.agent;
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(raw_connect("127.0.0.9", &agent.base).await);
    }
    let reads: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                (
                    read_to_close(&mut s, Duration::from_millis(1500))
                        .await
                        .is_some(),
                    s,
                )
            })
        })
        .collect();
    let mut closed = 0;
    let mut kept = Vec::new();
    for read in reads {
        let (was_closed, stream) = read.await.expect("join");
        closed += usize::from(was_closed);
        kept.push(stream);
    }
    assert_eq!(
        closed,
        100 - 64,
        "connections past the cap are closed at once, the others kept"
    );
    // A pod is served meanwhile.
    let (status, _) = md(&pod_client("127.0.0.2"), &agent.base, "project/project-id").await;
    assert_eq!(status, 200);
    assert!(agent.counter("wid_metadata_connections_shed_total").await >= 36);
}

/// An issuer key file of another user (mode 0600, a key they know) is refused at start.
#[test]
fn an_issuer_key_of_another_owner_is_refused() {
    if !crate::support::running_as_root() {
        eprintln!("skipped: making files of another user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    pods_file(
        &dir.path().join("pods.json"),
        "sa-b@proj-a.iam.gserviceaccount.com",
    );
    let key = dir.path().join("issuer.pk8");
    let known = wid_jose::SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    crate::support::write_as_nobody(&key, known.pkcs8());
    let mut agent = Command::new(crate::support::WID);
    agent
        .args(["metadata", "serve", "--addr", "127.0.0.1:0"])
        .arg("--pods")
        .arg(dir.path().join("pods.json"))
        .args([
            "--sts-url",
            "http://127.0.0.1:9",
            "--iamcredentials-url",
            "http://127.0.0.1:9",
        ])
        .args(["--project", "proj-a", "--project-number", "111111111111"])
        .args(["--issuer-uri", "https://k8s.node-test.example.com"])
        .arg("--issuer-key")
        .arg(&key)
        .args(["--admin-addr", "127.0.0.1:0"]);
    let (ok, stderr) = crate::support::run_refused(&mut agent);
    assert!(!ok, "{stderr}");
    for part in [
        key.display().to_string().as_str(),
        "owned by uid 65534",
        "runs as uid 0",
        "chown",
    ] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
}

/// Connections are no way around the bounds. A large
/// head does not stay in its keep-alive connection's memory, and unfinished heads are bounded per
/// address.
#[tokio::test]
async fn connections_cannot_make_the_agent_hold_much() {
    use tokio::io::AsyncWriteExt;
    let node = Node::start(&[]).await;
    let agent = &node.agent;
    let pad = "p".repeat(15 * 1024);
    let before = rss_kib(agent);
    // 1,500 keep-alive connections of one pod, each after one request with a 15 KiB header.
    let mut kept = Vec::new();
    for _ in 0..1500 {
        let mut stream = raw_connect("127.0.0.2", &agent.base).await;
        stream
            .write_all(format!("GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\nX-Pad: {pad}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        kept.push(stream);
    }
    for stream in &mut kept {
        assert_eq!(
            raw_get(stream, "/computeMetadata/v1/project/project-id").await,
            Some(200)
        );
    }
    let grown = rss_kib(agent).saturating_sub(before);
    assert!(grown < 16 * 1024, "1,500 idle connections hold {grown} KiB");
    drop(kept);
    // 1,500 unfinished 15 KiB heads: the address holds at most 1 MiB of them.
    let before = rss_kib(agent);
    let mut unfinished = Vec::new();
    for _ in 0..1500 {
        let mut stream = raw_connect("127.0.0.3", &agent.base).await;
        let _ = stream
            .write_all(format!("GET / HTTP/1.1\r\nX-Pad: {pad}").as_bytes())
            .await;
        unfinished.push(stream);
    }
    // Bounded wait for the agent to have read them all.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.counter("wid_metadata_connections_shed_total").await < 1000 {
        assert!(
            Instant::now() < deadline,
            "unfinished heads past the bound were not closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = rss_kib(agent).saturating_sub(before);
    assert!(grown < 16 * 1024, "1,500 unfinished heads hold {grown} KiB");
    // Another pod is served meanwhile.
    assert_eq!(
        md(&pod_client("127.0.0.4"), &agent.base, "project/project-id")
            .await
            .0,
        200
    );
}

/// A client that pipelines requests and never reads the
/// answers does not keep its connections from being asked to make room.
#[tokio::test]
async fn connections_that_do_not_read_make_room_too() {
    use tokio::io::AsyncWriteExt;
    let node = Node::start(&["--max-connections", "20"]).await;
    let agent = &node.agent;
    let request = "GET /computeMetadata/v1/?recursive=true HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n";
    let mut hogs = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        socket
            .bind("127.0.0.3:0".parse().expect("addr"))
            .expect("bind");
        let mut stream = socket
            .connect(
                agent
                    .base
                    .trim_start_matches("http://")
                    .parse()
                    .expect("addr"),
            )
            .await
            .expect("connect");
        // Requests in a pipeline until the agent's answers back up (bounded).
        let pipeline = request.repeat(100);
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            for _ in 0..40 {
                if stream.write_all(pipeline.as_bytes()).await.is_err() {
                    break;
                }
            }
        })
        .await;
        hogs.push(stream);
    }
    // The agent is done answering what it can of the pipelines (its CPU time stands still):
    // what is measured next is making room, not the work the hogs asked for.
    wait_until_idle(agent).await;
    let started = Instant::now();
    let status = served_within(agent, "127.0.0.2", Duration::from_secs(3)).await;
    assert_eq!(status, Some(200), "another pod was not served");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(hogs);
}
