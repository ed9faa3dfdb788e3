//! The data directory: the SQLite database (by default), the bootstrap admin secret (unless
//! `--admin-token-file` names another place) and the audit spool, all private to the service's
//! user; and which database the service opens.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use wid_runtime::private_files;
use wid_store::Store;

use crate::{ADMIN_TOKEN_FILE, Config, DATABASE_FILE, LOCK_FILE, StartError};

/// The data directory's files, checked private and the running user's.
pub(crate) struct DataDir {
    /// Resolved once: the database is reopened by path for as long as the service runs, and a
    /// symlink on the way could be pointed elsewhere meanwhile.
    pub path: PathBuf,
    /// Held for as long as the service lives, with SQLite: one process per database file,
    /// since the store's cache is coherent only with one writer. PostgreSQL's replicas tell
    /// each other of their writes instead, and may share a directory.
    pub lock: Option<std::fs::File>,
    pub admin_token: String,
}

impl DataDir {
    /// Prepares the data directory (mode 0700), takes its lock when it holds the database,
    /// checks the database and its journals private, and reads the bootstrap admin secret
    /// (written on first start, 0600).
    pub fn open(config: &Config) -> Result<DataDir, StartError> {
        let dir = &config.data_dir;
        private_files::ensure_private_dir(dir)?;
        let path = std::fs::canonicalize(dir).map_err(|source| StartError::Lock {
            path: dir.display().to_string(),
            source,
        })?;
        let lock = match config.database {
            None => Some(sqlite_files(&path)?),
            Some(_) => None,
        };
        let token_path = config
            .admin_token_file
            .clone()
            .unwrap_or_else(|| path.join(ADMIN_TOKEN_FILE));
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

    /// The store the configuration names, migrated.
    pub async fn store(&self, config: &Config) -> Result<Store, StartError> {
        Ok(match &config.database {
            Some(url) => Store::open_postgres(url).await?,
            None => Store::open_sqlite(&self.path.join(DATABASE_FILE)).await?,
        })
    }
}

/// Takes the directory's lock and checks the database file and its journals private.
fn sqlite_files(path: &Path) -> Result<std::fs::File, StartError> {
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
        private_files::check_private_if_exists(Path::new(&journal_path))?;
    }
    Ok(lock)
}

/// Whether `url` names a PostgreSQL database, the one kind `--database` takes.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
