//! `wid-bench replicas`: the token path (STS exchange + generateAccessToken pairs, and
//! generateIdToken) on PostgreSQL with one and with two replicas, beside SQLite with one, in one
//! run on the same machine: the ratios to SQLite are the figures.
//!
//! PostgreSQL is the server `WID_BENCH_DATABASE_URL` (or `WID_TEST_DATABASE_URL`) names, its
//! maintenance database: each PostgreSQL row gets a new database there.
//! `scripts/bench-replicas.sh` starts one and runs this.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde_json::json;
use wid_jose::Algorithm;
use wid_jose::signer::{SigningKey, TokenType};

use crate::{EMAIL, ISSUER, POOL, Server, exchange, load, now, post, setup, start_server_with};

/// One row of the table: a database and a number of replicas.
struct Setup {
    name: &'static str,
    postgres: bool,
    replicas: usize,
}

const SETUPS: [Setup; 3] = [
    Setup {
        name: "SQLite, 1 replica",
        postgres: false,
        replicas: 1,
    },
    Setup {
        name: "PostgreSQL, 1 replica",
        postgres: true,
        replicas: 1,
    },
    Setup {
        name: "PostgreSQL, 2 replicas",
        postgres: true,
        replicas: 2,
    },
];

/// A new database on the server of the maintenance database `url`: its URL.
async fn new_database(url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("wid_bench_{}", std::process::id() ^ (now() as u32));
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url}"))?;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")),
    )
    .await?;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await?;
    let (address, query) = url.split_once('?').unwrap_or((url, ""));
    let (server, _) = address.rsplit_once('/').context("a URL with a database")?;
    Ok(format!("{server}/{name}?{query}"))
}

async fn start(setup: &Setup, url: &str) -> anyhow::Result<Vec<Server>> {
    let database = match setup.postgres {
        true => Some(new_database(url).await?),
        false => None,
    };
    let shared = tempfile::tempdir()?;
    let admin_token = shared.path().join("admin-token");
    let mut servers = Vec::new();
    for _ in 0..setup.replicas {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let extra: Vec<&str> = match &database {
            Some(url) => vec!["--database", url.as_str()],
            None => vec![],
        };
        servers.push(start_server_with(dir, &data, &admin_token, &extra).await?);
    }
    drop(shared);
    Ok(servers)
}

/// Pairs per second and ID tokens per second, spread evenly over the replicas.
async fn measure(
    servers: &[Server],
    seconds: f64,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, u64)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let cluster = SigningKey::generate(Algorithm::Rs256)?;
    setup(&http, &servers[0], &cluster).await?;
    let subject = Arc::new(cluster.sign_jwt(
        TokenType::Jwt,
        &json!({"iss": ISSUER, "sub": "system:serviceaccount:bench:app", "aud": [POOL], "iat": now(), "nbf": now(), "exp": now() + 3000}),
    )?);
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    let mut federated = Vec::new();
    for base in bases.iter() {
        federated.push(exchange(&http, base, &subject).await?);
    }
    let federated = Arc::new(federated);
    let next = Arc::new(AtomicUsize::new(0));
    let (h, b, s, n) = (http.clone(), bases.clone(), subject.clone(), next.clone());
    let (pairs, pair_errors) = load(concurrency, seconds, move || {
        let (http, bases, subject) = (h.clone(), b.clone(), s.clone());
        let base = bases[n.fetch_add(1, Ordering::Relaxed) % bases.len()].clone();
        async move {
            let token = exchange(&http, &base, &subject).await?;
            let url = format!("{base}/v1/projects/-/serviceAccounts/{EMAIL}:generateAccessToken");
            let body = json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]});
            post(&http, &url, &token, body).await
        }
    })
    .await;
    let (h, b, f) = (http.clone(), bases.clone(), federated.clone());
    let (ids, id_errors) = load(concurrency, seconds, move || {
        let (http, bases, federated) = (h.clone(), b.clone(), f.clone());
        let i = next.fetch_add(1, Ordering::Relaxed) % bases.len();
        let (base, token) = (bases[i].clone(), federated[i].clone());
        async move {
            let url = format!("{base}/v1/projects/-/serviceAccounts/{EMAIL}:generateIdToken");
            let body = json!({"audience": "https://service.example.com", "includeEmail": true});
            post(&http, &url, &token, body).await
        }
    })
    .await;
    Ok((pairs, ids, pair_errors + id_errors))
}

pub async fn run(seconds: f64, concurrency: usize) -> anyhow::Result<()> {
    let Some(url) = ["WID_BENCH_DATABASE_URL", "WID_TEST_DATABASE_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok())
    else {
        bail!(
            "name a PostgreSQL server's maintenance database in WID_BENCH_DATABASE_URL (scripts/bench-replicas.sh starts one)"
        );
    };
    let mut rows = Vec::new();
    for setup in &SETUPS {
        let servers = start(setup, &url).await?;
        let measured = measure(&servers, seconds, concurrency).await?;
        eprintln!(
            "{}: {:.0} pairs/s, {:.0} ID tokens/s, {} errors",
            setup.name, measured.0, measured.1, measured.2
        );
        rows.push((setup.name, measured));
    }
    let (sqlite_pairs, sqlite_ids) = (rows[0].1.0, rows[0].1.1);
    println!(
        "| setup ({concurrency} clients) | exchange + generateAccessToken, pairs/s | of SQLite | generateIdToken/s | of SQLite | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (pairs, ids, errors)) in rows {
        println!(
            "| {name} | {pairs:.0} | {:.2} | {ids:.0} | {:.2} | {errors} |",
            pairs / sqlite_pairs.max(1.0),
            ids / sqlite_ids.max(1.0)
        );
    }
    Ok(())
}
