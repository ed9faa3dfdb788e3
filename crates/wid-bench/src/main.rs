//! `wid-bench tokens`: the token service's throughput for STS exchange + generateAccessToken and
//! for generateIdToken, each beside the raw signing rate of the same kind of key measured in the
//! same run on the same cores, so that the figure is a ratio and survives a noisy machine.
//!
//! Run: `cargo build --release -p wid -p wid-bench && target/release/wid-bench tokens`.
//! The server is the real `wid` binary next to this one, on loopback; the load comes from this
//! process, closed-loop, with keep-alive connections.

mod cache;
mod replicas;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wid_jose::Algorithm;
use wid_jose::signer::{SigningKey, TokenType};

const ISSUER: &str = "https://k8s.bench.example.com";
const POOL: &str = "bench-proj.svc.id.goog";
const EMAIL: &str = "bench-runner@bench-proj.iam.gserviceaccount.com";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signatures per second with `threads` threads signing an ID-token-sized input.
fn raw_sign_rate(alg: Algorithm, threads: usize, seconds: f64) -> anyhow::Result<f64> {
    let key = Arc::new(SigningKey::generate(alg)?);
    let claims = json!({
        "iss": "http://127.0.0.1:8080", "aud": "https://service.example.com", "azp": "112233445566778899001",
        "sub": "112233445566778899001", "iat": now(), "exp": now() + 3600,
        "email": EMAIL, "email_verified": true,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (key, stop, count, claims) =
                (key.clone(), stop.clone(), count.clone(), claims.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if key.sign_jwt(TokenType::Jwt, &claims).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("signing thread panicked"))?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

struct Server {
    _child: tokio::process::Child,
    base: String,
    admin: String,
    _dir: tempfile::TempDir,
}

async fn start_server() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let admin_token = data.join("admin-token");
    start_server_with(dir, &data, &admin_token, &[]).await
}

/// `wid iam serve` on loopback with `extra` flags, its data in `data`, its admin secret in
/// `admin_token`.
async fn start_server_with(
    dir: tempfile::TempDir,
    data: &std::path::Path,
    admin_token: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<Server> {
    let wid: PathBuf = std::env::current_exe()?.with_file_name("wid");
    if !wid.is_file() {
        bail!(
            "{} is missing: cargo build --release -p wid -p wid-bench",
            wid.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(&wid)
        .args([
            "iam",
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .arg("--admin-token-file")
        .arg(admin_token)
        .args(["--log", "warn"])
        .args(extra)
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the server did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = std::fs::read_to_string(admin_token)?.trim().to_owned();
    Ok(Server {
        _child: child,
        base,
        admin,
        _dir: dir,
    })
}

async fn admin_call(
    http: &reqwest::Client,
    server: &Server,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.admin)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let value: Value = response.json().await?;
    if !status.is_success() {
        bail!("{path}: {status} {value}");
    }
    Ok(value)
}

async fn exchange(http: &reqwest::Client, base: &str, subject: &str) -> anyhow::Result<String> {
    let audience = format!("identitynamespace:{POOL}:{ISSUER}");
    let response = http
        .post(format!("{base}/v1/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", audience.as_str()),
            ("scope", "https://www.googleapis.com/auth/iam"),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ])
        .send()
        .await?;
    let value: Value = response.json().await?;
    value["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

/// Runs `op` from `concurrency` tasks for `seconds`; returns (completed per second, errors).
async fn load<F, Fut>(concurrency: usize, seconds: f64, op: F) -> (f64, u64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, done, errors) = (op.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    match op().await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    match args.get(1).map(String::as_str) {
        Some("tokens") => {
            let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
            tokens(seconds, concurrency).await
        }
        Some("cache") => cache::run(seconds).await,
        Some("replicas") => {
            let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
            replicas::run(seconds, concurrency).await
        }
        _ => bail!(
            "usage: wid-bench tokens [SECONDS] [CONCURRENCY] | cache [SECONDS] | replicas [SECONDS] [CONCURRENCY]"
        ),
    }
}

/// A project, an account, a cluster whose tokens `cluster` signs, and the binding of its KSA
/// `bench/app` to the account (and to its ID tokens).
async fn setup(
    http: &reqwest::Client,
    server: &Server,
    cluster: &SigningKey,
) -> anyhow::Result<()> {
    admin_call(
        http,
        server,
        "/v1/projects",
        json!({"projectId": "bench-proj", "projectNumber": "999999999999"}),
    )
    .await?;
    admin_call(
        http,
        server,
        "/v1/projects/bench-proj/serviceAccounts",
        json!({"accountId": "bench-runner"}),
    )
    .await?;
    admin_call(
        http,
        server,
        "/v1/projects/bench-proj/locations/l1/clusters",
        json!({"clusterName": "bench", "issuerUri": ISSUER, "jwksJson": json!({"keys": [cluster.public_jwk()]}).to_string()}),
    )
    .await?;
    admin_call(
        http,
        server,
        &format!("/v1/projects/-/serviceAccounts/{EMAIL}:setIamPolicy"),
        json!({"policy": {"bindings": [
            {"role": "roles/iam.workloadIdentityUser", "members": [format!("serviceAccount:{POOL}[bench/app]")]},
            {"role": "roles/iam.serviceAccountOpenIdTokenCreator", "members": [format!("serviceAccount:{POOL}[bench/app]")]},
        ]}}),
    )
    .await?;
    Ok(())
}

/// POSTs `body` with `token` to `url`; an error unless it succeeds.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let response = http.post(url).bearer_auth(token).json(&body).send().await?;
    if !response.status().is_success() {
        bail!("{}", response.status());
    }
    response.bytes().await?;
    Ok(())
}

/// `wid-bench tokens`: exchange + generateAccessToken pairs and generateIdToken calls per
/// second, beside raw signing rates, and the server's CPU for each.
async fn tokens(seconds: f64, concurrency: usize) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let server = start_server().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let cluster = SigningKey::generate(Algorithm::Rs256)?;
    setup(&http, &server, &cluster).await?;
    let subject = cluster.sign_jwt(
        TokenType::Jwt,
        &json!({"iss": ISSUER, "sub": "system:serviceaccount:bench:app", "aud": [POOL], "iat": now(), "nbf": now(), "exp": now() + 3000}),
    )?;
    let federated = exchange(&http, &server.base, &subject).await?;

    let base = Arc::new(server.base.clone());
    let pid = server._child.id().unwrap_or(0);
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    let (h, b, s) = (http.clone(), base.clone(), Arc::new(subject));
    let (pair_rate, pair_errors) = load(concurrency, seconds, move || {
        let (http, base, subject) = (h.clone(), b.clone(), s.clone());
        async move {
            let token = exchange(&http, &base, &subject).await?;
            let url = format!("{base}/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken");
            let body = json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "delegates": null});
            post(&http, &url, &token, body).await
        }
    })
    .await;
    let pair_cores = (cpu_seconds(pid) - cpu_before) / wall.elapsed().as_secs_f64();
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    let (h, b, f) = (http.clone(), base.clone(), Arc::new(federated));
    let (id_rate, id_errors) = load(concurrency, seconds, move || {
        let (http, base, token) = (h.clone(), b.clone(), f.clone());
        async move {
            let url = format!("{base}/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken");
            let body = json!({"audience": "https://service.example.com", "includeEmail": true});
            post(&http, &url, &token, body).await
        }
    })
    .await;
    let id_cores = (cpu_seconds(pid) - cpu_before) / wall.elapsed().as_secs_f64();
    drop(server);
    let rs256 = raw_sign_rate(Algorithm::Rs256, cores, seconds.min(5.0))?;
    let es256 = raw_sign_rate(Algorithm::Es256, cores, seconds.min(5.0))?;

    println!("| measurement | per second | reference | ratio |");
    println!("|---|---:|---|---:|");
    println!("| raw RS256 signing, {cores} threads | {rs256:.0} | | |");
    println!("| raw ES256 signing, {cores} threads | {es256:.0} | | |");
    println!(
        "| STS exchange + generateAccessToken (pairs), {concurrency} clients | {pair_rate:.0} | raw ES256 | {:.1}% |",
        100.0 * pair_rate / es256
    );
    println!(
        "| generateIdToken, {concurrency} clients | {id_rate:.0} | raw RS256 | {:.1}% |",
        100.0 * id_rate / rs256
    );
    println!("errors: exchange pairs {pair_errors}, generateIdToken {id_errors}");
    println!(
        "server CPU: {pair_cores:.2} cores during the pairs ({:.0} us per pair), {id_cores:.2} cores during generateIdToken ({:.0} us per token); the load generator used the rest of the {cores} cores",
        1e6 * pair_cores / pair_rate.max(1.0),
        1e6 * id_cores / id_rate.max(1.0)
    );
    Ok(())
}
