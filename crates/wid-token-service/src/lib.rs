//! The wid token service: what Google runs as IAM, served from one base URL at Google's paths.
//!
//! This crate holds the IAM admin plane (projects, service accounts, IAM policies, workload
//! identity pools and providers, registered Kubernetes clusters) on a [`Store`], and the
//! token-issuing half: STS token exchange, IAM Credentials, the key documents and tokeninfo.
//!
//! Layout:
//! - [`routes`]: Google's paths parsed into a typed route (pure).
//! - [`handler`]: the one request entry point: route, authenticate, dispatch, log.
//! - [`error`]: the one place where errors become Google-format responses.
//! - `iam/`: the rules of each resource, as methods on [`App`].
//! - [`discovery`]: fetching issuers' keys through OIDC discovery, and keeping them fresh.
//! - [`auth`]: who is calling, and whether they may.
//! - [`sts`]: token exchange and introspection; [`credentials`]: IAM Credentials.
//! - [`keys`]: the signing keys; [`tokens`]: minting and recognising wid's tokens.
//! - [`audit`]: the audit trail.

pub mod audit;
mod audit_spool;
pub mod auth;
pub mod credentials;
mod data_dir;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod http;
mod iam;
pub mod jwks;
mod key_grant;
pub mod keys;
pub mod metrics;
mod oauth2;
pub mod routes;
pub mod sts;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wid_store::Store;

pub use metrics::Metrics;

use tokio::net::TcpListener;
use wid_runtime::private_files;

/// The resolved settings of the token service.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    /// Holds the database and the bootstrap admin token; private to the service's user.
    pub data_dir: PathBuf,
    /// How often keys fetched through OIDC discovery are fetched again.
    pub jwks_refresh_interval: Duration,
    /// The bound on each discovery request.
    pub discovery_timeout: Duration,
    /// The issuer of the tokens wid signs (`iss`); default `http://ADDR` as bound.
    pub issuer: Option<String>,
    /// Audit records older than this are deleted.
    pub audit_retention: Duration,
    /// The admin listener (`/healthz`, Prometheus `/metrics`), if any.
    pub admin_addr: Option<SocketAddr>,
    /// HTTPS with this certificate and key (read again when they change); else plain HTTP.
    pub tls: Option<wid_runtime::tls::TlsFiles>,
    /// Plain HTTP on an address other than loopback's, where tokens cross a network in clear:
    /// refused unless this says so.
    pub insecure_listen: bool,
    /// A PostgreSQL database (`postgres://…`) that several replicas share; else SQLite in the
    /// data directory.
    pub database: Option<String>,
    /// The bootstrap admin secret's file (made there on first start); else `admin-token` in
    /// the data directory.
    pub admin_token_file: Option<PathBuf>,
}

/// How long audit records are kept unless told otherwise: 30 days, as Google keeps Data Access
/// audit logs by default.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The name of the bootstrap admin token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The name of the SQLite database in the data directory.
pub const DATABASE_FILE: &str = "wid.db";
/// Held (flock) by the process that serves the data directory.
pub const LOCK_FILE: &str = "lock";

/// The token service's state, shared by every request.
pub struct App {
    store: Store,
    admin_token: String,
    http: reqwest::Client,
    config: Config,
    issuer: String,
    keys: keys::KeyRing,
    refetch_gate: sts::RefetchGate,
    audit_tx: tokio::sync::mpsc::Sender<audit::AuditMessage>,
    /// Which unauthenticated refusals are recorded one by one.
    audit_sampler: audit::Sampler,
    /// Log lines a caller can cause again and again, one per kind and minute.
    log_limit: wid_runtime::log_limit::LogLimit,
    metrics: Arc<Metrics>,
    /// Access tokens whose signature verified, by value.
    verified_tokens: wid_runtime::memo::Memo<String, wid_api::tokens::AccessTokenClaims>,
    /// Validated policies, by etag.
    parsed_policies: wid_runtime::memo::Memo<String, Arc<wid_iam::Policy>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    PrivateFile(#[from] private_files::PrivateFileError),
    #[error("cannot open the database: {0}")]
    Store(#[from] wid_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("signing keys: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("cannot open {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("another wid process serves the data directory {0}; stop it first")]
    Locked(String),
    #[error("invalid issuer '{0}': it must be an absolute http(s) URL")]
    Issuer(String),
    #[error(
        "refusing plain HTTP on {0}: tokens would cross the network in clear. Give a certificate (--tls-cert, --tls-key), listen on loopback, or allow it (--insecure-listen)"
    )]
    Insecure(SocketAddr),
    #[error("TLS")]
    Tls(#[from] wid_runtime::tls::TlsError),
    #[error(
        "--database takes a PostgreSQL URL (postgres://USER@HOST:PORT/DB); SQLite, the default, needs none"
    )]
    DatabaseUrl,
}

/// A started token service: its listener is bound, its store open.
pub struct TokenService {
    app: Arc<App>,
    /// Holds the data directory's lock for as long as the service lives (SQLite).
    _lock: Option<std::fs::File>,
    listener: TcpListener,
    /// The certificate presented, when the service speaks HTTPS.
    tls: Option<Arc<wid_runtime::tls::ReloadingCert>>,
}

/// How often the certificate's files are looked at for a renewal.
const TLS_RELOAD_PERIOD: Duration = Duration::from_secs(1);

impl TokenService {
    /// Binds the listener, then opens the data directory ([`App::open`]).
    pub async fn start(config: Config) -> Result<TokenService, StartError> {
        // Bind first: a taken port should fail before anything is written to the data directory.
        let bind_error = |source| StartError::Bind {
            addr: config.addr,
            source,
        };
        if config.tls.is_none() && !config.insecure_listen && !config.addr.ip().is_loopback() {
            return Err(StartError::Insecure(config.addr));
        }
        if config
            .database
            .as_deref()
            .is_some_and(|url| !data_dir::is_postgres_url(url))
        {
            return Err(StartError::DatabaseUrl);
        }
        let tls = match &config.tls {
            Some(files) => Some(wid_runtime::tls::ReloadingCert::load(files.clone())?),
            None => None,
        };
        let listener = TcpListener::bind(config.addr).await.map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let (app, lock) = App::open(config, bound).await?;
        Ok(TokenService {
            app,
            listener,
            _lock: lock,
            tls,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, refreshing discovered keys in the background.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let database = match self.app.store.dialect() {
            wid_store::Dialect::Sqlite => "sqlite",
            wid_store::Dialect::Postgres => "postgres",
        };
        tracing::info!(%addr, scheme, database, data_dir = %self.app.config.data_dir.display(), "token service listening");
        let acceptor = match &self.tls {
            Some(cert) => Some(cert.acceptor().map_err(std::io::Error::other)?),
            None => None,
        };
        let watcher = self.tls.as_ref().map(|cert| cert.watch(TLS_RELOAD_PERIOD));
        let refresher = tokio::spawn(discovery::refresh_forever(self.app.clone()));
        let retirer = tokio::spawn(retire_keys_forever(self.app.clone()));
        let expirer = tokio::spawn(audit::expire_forever(self.app.clone()));
        let follower = tokio::spawn(self.app.store.clone().follow_changes());
        let key_reloader = tokio::spawn(reload_keys_forever(self.app.clone()));
        let admin = match self.app.config.admin_addr {
            Some(addr) => Some(serve_admin(addr, self.app.clone()).await?),
            None => None,
        };
        let router = handler::router(self.app.clone());
        let result = wid_runtime::serve::serve(self.listener, router, acceptor, shutdown).await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        refresher.abort();
        retirer.abort();
        expirer.abort();
        follower.abort();
        key_reloader.abort();
        if let Some(admin) = admin {
            admin.abort();
        }
        self.app.flush_audit().await;
        if let Some(store) = Arc::into_inner(self.app).map(|app| app.store) {
            store.close().await;
        }
        result
    }
}

/// The admin listener: `/healthz` and Prometheus `/metrics`, apart from the API so that a scraper
/// needs no credential and the API's port exposes nothing more.
async fn serve_admin(
    addr: SocketAddr,
    app: Arc<App>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "token service admin listener (healthz, metrics)");
    let ready = app.clone();
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || async move { ready.readiness() }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || async move { app.metrics.response(&app.store) }),
        );
    Ok(tokio::spawn(async move {
        if let Err(e) =
            wid_runtime::serve::serve(listener, router, None, std::future::pending()).await
        {
            tracing::error!(error = %e, "the admin listener stopped");
        }
    }))
}

impl App {
    /// `/readyz`: 200 while the database answers and the keys are loaded (they are from the
    /// start, or the service would not have started); 503 otherwise, in Google's format.
    pub fn readiness(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let keys = self.keys.current().rows.len();
        if self.store.reachable() {
            let body = serde_json::json!({ "status": "ready", "database": "reachable", "signingKeys": keys });
            return http::ok(&body);
        }
        error::ApiError::Unavailable("The database is unreachable.".into()).into_response()
    }
}

/// The issuer of the tokens wid signs: `--issuer`, checked, or the service's own base URL.
fn issuer_of(config: &Config, bound: SocketAddr) -> Result<String, StartError> {
    match &config.issuer {
        Some(issuer) => {
            if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
                || issuer.contains(['?', '#', ' '])
            {
                return Err(StartError::Issuer(issuer.clone()));
            }
            Ok(issuer.trim_end_matches('/').to_owned())
        }
        None if config.tls.is_some() => Ok(format!("https://{bound}")),
        None => Ok(format!("http://{bound}")),
    }
}

impl App {
    /// The service's state on its data directory and database, for a service listening at
    /// `bound`; the lock returned (SQLite) is to be held for as long as the service lives.
    pub async fn open(
        mut config: Config,
        bound: SocketAddr,
    ) -> Result<(Arc<App>, Option<std::fs::File>), StartError> {
        let data_dir = data_dir::DataDir::open(&config)?;
        config.data_dir.clone_from(&data_dir.path);
        let store = data_dir.store(&config).await?;
        store
            .add_admin_credential(
                &auth::digest(&data_dir.admin_token),
                &crate::iam::now_rfc3339(),
            )
            .await?;
        let http = reqwest::Client::builder()
            .timeout(config.discovery_timeout)
            .connect_timeout(config.discovery_timeout)
            .redirect(discovery::redirect_policy())
            .user_agent(concat!("wid/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let issuer = issuer_of(&config, bound)?;
        store
            .add_issuer(&issuer, &crate::iam::now_rfc3339())
            .await?;
        let keys = keys::KeyRing::open(&store, &issuer, tokens::now()).await?;
        let (audit_tx, audit_rx) = tokio::sync::mpsc::channel(audit::AUDIT_QUEUE);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(audit::write_audit_forever(
            store.clone(),
            audit_rx,
            metrics.clone(),
            audit_spool::Spool::new(&data_dir.path),
        ));
        let app = Arc::new(App {
            store,
            admin_token: data_dir.admin_token,
            http,
            config,
            issuer,
            keys,
            refetch_gate: sts::RefetchGate::default(),
            audit_tx,
            audit_sampler: audit::Sampler::default(),
            log_limit: wid_runtime::log_limit::LogLimit::new(Duration::from_secs(60)),
            metrics,
            verified_tokens: wid_runtime::memo::Memo::new(10_000),
            parsed_policies: wid_runtime::memo::Memo::new(10_000),
        });
        Ok((app, data_dir.lock))
    }
}

/// Loads the signing keys again each time another replica may have changed them (PostgreSQL;
/// with SQLite nothing changes them behind this process's back).
async fn reload_keys_forever(app: Arc<App>) {
    let mut changes = app.store.key_changes();
    while changes.changed().await.is_ok() {
        if let Err(e) = app.keys.reload(&app.store).await {
            tracing::warn!(error = %e, "cannot load the signing keys another replica changed");
        }
    }
}

/// Retires rotated-out keys once every token they signed has expired (each replica by the same
/// clock).
async fn retire_keys_forever(app: Arc<App>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        if let Err(e) = app.keys.retire(&app.store, tokens::now()).await {
            tracing::warn!(error = %e, "cannot retire signing keys");
        }
    }
}

#[cfg(test)]
mod tests;
