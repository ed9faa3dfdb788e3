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
pub mod auth;
pub mod credentials;
pub mod discovery;
pub mod error;
pub mod handler;
pub mod http;
mod iam;
pub mod jwks;
pub mod keys;
mod oauth2;
pub mod routes;
pub mod sts;
pub mod tokens;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wid_store::Store;

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
}

/// How long audit records are kept unless told otherwise: 30 days, as Google keeps Data Access
/// audit logs by default.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The token service's metrics, on its admin listener.
pub struct Metrics {
    pub audit: audit::AuditMetrics,
    registry: prometheus_client::registry::Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let audit = audit::AuditMetrics::default();
        let mut registry = prometheus_client::registry::Registry::default();
        audit.register(&mut registry);
        Metrics { audit, registry }
    }
}

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
}

/// A started token service: its listener is bound, its store open.
pub struct TokenService {
    app: Arc<App>,
    /// Holds the data directory's lock for as long as the service lives.
    _lock: std::fs::File,
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
        tracing::info!(%addr, scheme, data_dir = %self.app.config.data_dir.display(), "token service listening");
        let acceptor = match &self.tls {
            Some(cert) => Some(cert.acceptor().map_err(std::io::Error::other)?),
            None => None,
        };
        let watcher = self.tls.as_ref().map(|cert| cert.watch(TLS_RELOAD_PERIOD));
        let refresher = tokio::spawn(discovery::refresh_forever(self.app.clone()));
        let retirer = tokio::spawn(retire_keys_forever(self.app.clone()));
        let expirer = tokio::spawn(audit::expire_forever(self.app.clone()));
        let admin = match self.app.config.admin_addr {
            Some(addr) => Some(serve_admin(addr, self.app.metrics.clone()).await?),
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
    metrics: Arc<Metrics>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "token service admin listener (healthz, metrics)");
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let response = wid_runtime::openmetrics::response(&metrics.registry);
                async move { response }
            }),
        );
    Ok(tokio::spawn(async move {
        if let Err(e) =
            wid_runtime::serve::serve(listener, router, None, std::future::pending()).await
        {
            tracing::error!(error = %e, "the admin listener stopped");
        }
    }))
}

/// The data directory's files, checked private and the running user's.
struct DataDir {
    /// Resolved once: the database is reopened by path for as long as the service runs, and a
    /// symlink on the way could be pointed elsewhere meanwhile.
    path: PathBuf,
    /// Held for as long as the service lives: one process per data directory, since the
    /// store's cache is coherent only with one writer.
    lock: std::fs::File,
    admin_token: String,
}

impl DataDir {
    /// Prepares the data directory (mode 0700), takes its lock, checks the database and its
    /// journals private, and reads the bootstrap admin token (written on first start, 0600).
    fn open(dir: &std::path::Path) -> Result<DataDir, StartError> {
        private_files::ensure_private_dir(dir)?;
        let path = std::fs::canonicalize(dir).map_err(|source| StartError::Lock {
            path: dir.display().to_string(),
            source,
        })?;
        let lock_path = path.join(LOCK_FILE);
        // The lock holds nothing; it is only made private like everything beside it.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| StartError::Lock {
                path: lock_path.display().to_string(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(StartError::Locked(path.display().to_string()));
        }
        let db_path = path.join(DATABASE_FILE);
        private_files::ensure_private_file(&db_path)?;
        // SQLite replays its journal when it opens the database: it is as private as the rest.
        for journal in ["-wal", "-shm"] {
            let mut journal_path = db_path.clone().into_os_string();
            journal_path.push(journal);
            private_files::check_private_if_exists(std::path::Path::new(&journal_path))?;
        }
        let token_path = path.join(ADMIN_TOKEN_FILE);
        let (admin_token, created) =
            private_files::read_or_create_secret(&token_path, wid_runtime::secrets::random_token)?;
        if created {
            tracing::info!(path = %token_path.display(), "wrote a new bootstrap admin token");
        }
        Ok(DataDir {
            path,
            lock,
            admin_token,
        })
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
    /// The service's state on its data directory, for a service listening at `bound`; the lock
    /// returned is to be held for as long as the service lives.
    pub async fn open(
        mut config: Config,
        bound: SocketAddr,
    ) -> Result<(Arc<App>, std::fs::File), StartError> {
        let data_dir = DataDir::open(&config.data_dir)?;
        config.data_dir.clone_from(&data_dir.path);
        let store = Store::open_sqlite(&data_dir.path.join(DATABASE_FILE)).await?;
        let http = reqwest::Client::builder()
            .timeout(config.discovery_timeout)
            .connect_timeout(config.discovery_timeout)
            .redirect(discovery::redirect_policy())
            .user_agent(concat!("wid/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let issuer = issuer_of(&config, bound)?;
        let keys = keys::KeyRing::open(&store, &issuer, tokens::now()).await?;
        let (audit_tx, audit_rx) = tokio::sync::mpsc::channel(audit::AUDIT_QUEUE);
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(audit::write_audit_forever(
            store.clone(),
            audit_rx,
            metrics.clone(),
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

/// Retires rotated-out keys once every token they signed has expired. (Nothing else changes the
/// keys behind this process's back: it holds the data directory's lock.)
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
