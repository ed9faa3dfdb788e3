//! The one SQL layer's connection and dialect. Statements are written once, with `$N`
//! placeholders that SQLite and PostgreSQL both read, and run through sqlx's `Any` driver; what
//! differs between databases is here: how to connect and set a connection up, the migrations,
//! and the few expressions the dialects spell apart. Booleans are stored as integers (0 or 1)
//! in every dialect, so that a row reads the same whatever the database.

use std::borrow::Cow;
use std::path::Path;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlSafeStr};

use crate::{Result, StoreError};

/// A database wid knows how to speak to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default: one file in the data directory.
    Sqlite,
    /// A server several replicas share. Integers are BIGINT and bytes BYTEA, so that every
    /// column reads back as the same Rust type as in SQLite.
    Postgres,
}

impl Dialect {
    /// The schema's migrations, in order.
    fn migrator(self) -> Migrator {
        let migration = |version, name: &'static str, sql: &'static str| {
            Migration::new(
                version,
                Cow::Borrowed(name),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        };
        // The same versions in every dialect: migration N is the same change.
        let files = match self {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        };
        Migrator::with_migrations(
            files
                .iter()
                .zip(1..)
                .map(|((name, sql), version)| migration(version, name, sql))
                .collect(),
        )
    }

    /// The length in bytes of a text column.
    pub(crate) fn octet_length(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("LENGTH(CAST({column} AS BLOB))"),
            Dialect::Postgres => format!("OCTET_LENGTH({column})"),
        }
    }
}

/// Each dialect's migrations, in order: a name and its SQL.
const SQLITE_MIGRATIONS: &[(&str, &str)] = &[
    ("iam", include_str!("../migrations/sqlite/0001_iam.sql")),
    (
        "tokens",
        include_str!("../migrations/sqlite/0002_tokens.sql"),
    ),
    (
        "audit pod",
        include_str!("../migrations/sqlite/0003_audit_pod.sql"),
    ),
    (
        "ksa uids, audit by time",
        include_str!("../migrations/sqlite/0004_ksa_uids_audit_time.sql"),
    ),
    (
        "admin credentials, issuers",
        include_str!("../migrations/sqlite/0005_admin_credentials.sql"),
    ),
    (
        "service account keys",
        include_str!("../migrations/sqlite/0006_service_account_keys.sql"),
    ),
];
pub(crate) const POSTGRES_MIGRATIONS: &[(&str, &str)] = &[
    ("iam", include_str!("../migrations/postgres/0001_iam.sql")),
    (
        "tokens",
        include_str!("../migrations/postgres/0002_tokens.sql"),
    ),
    (
        "audit pod",
        include_str!("../migrations/postgres/0003_audit_pod.sql"),
    ),
    (
        "ksa uids, audit by time",
        include_str!("../migrations/postgres/0004_ksa_uids_audit_time.sql"),
    ),
    (
        "admin credentials, issuers",
        include_str!("../migrations/postgres/0005_admin_credentials.sql"),
    ),
    (
        "service account keys",
        include_str!("../migrations/postgres/0006_service_account_keys.sql"),
    ),
];

/// Makes both drivers known to sqlx's `Any`, once per process (a second install is refused, and
/// a process may open both kinds of database: the tests do).
pub(crate) fn install_drivers() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ =
            sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER, sqlx::postgres::any::DRIVER]);
    });
}

/// Connections of one replica to a PostgreSQL server.
const POSTGRES_CONNECTIONS: u32 = 16;

/// A pool of connections to one database, and its dialect.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub pool: AnyPool,
    pub dialect: Dialect,
}

/// What every SQLite connection is set to: WAL, so that readers never wait for the writer;
/// `synchronous=FULL`, so that a commit is on disk before it is acknowledged, whatever happens
/// next; foreign keys enforced; a writer waits for the lock rather than failing at once.
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

impl Db {
    /// The SQLite database at `path` (created if missing), migrated. The caller makes the
    /// file's directory private; SQLite creates the file with mode 0644 masked by the umask, so
    /// the service creates it first with 0600.
    pub async fn sqlite(path: &Path) -> Result<Db> {
        install_drivers();
        let url = sqlite_url(path)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection.execute(SQLITE_SETUP).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let db = Db {
            pool,
            dialect: Dialect::Sqlite,
        };
        db.dialect.migrator().run(&db.pool).await?;
        Ok(db)
    }
}

impl Db {
    /// The PostgreSQL database at `url` (`postgres://USER@HOST:PORT/DB`, or a Unix socket's
    /// directory as `?host=DIR`), migrated. Replicas that start together apply the migrations
    /// once: sqlx's migrator holds PostgreSQL's advisory lock while it runs them.
    pub async fn postgres(url: &str) -> Result<Db> {
        install_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .acquire_timeout(crate::cache::SHARED_QUERY_TIMEOUT)
            .connect(url)
            .await?;
        let db = Db {
            pool,
            dialect: Dialect::Postgres,
        };
        db.dialect.migrator().run(&db.pool).await?;
        Ok(db)
    }
}

/// `sqlite://PATH?mode=rwc`, the path percent-encoded (a data directory may have any name).
fn sqlite_url(path: &Path) -> Result<String> {
    let path = path.to_str().ok_or_else(|| StoreError::Corrupt {
        what: "the database path".into(),
        detail: format!("{} is not UTF-8", path.display()),
    })?;
    const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(path, PATH);
    Ok(format!("sqlite://{encoded}?mode=rwc"))
}

/// Turns a uniqueness violation into AlreadyExists and keeps other errors.
pub(crate) fn on_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
        _ => StoreError::Database(e),
    }
}

/// NotFound unless a statement changed a row.
pub(crate) fn changed_one(result: &sqlx::any::AnyQueryResult) -> Result<()> {
    if result.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// A compare-and-swap's outcome from the rows it `changed`: done when it changed its row;
/// otherwise NotFound when the row is gone (what `exists` reads), Aborted when it changed
/// meanwhile.
pub(crate) async fn swapped<T>(
    changed: u64,
    exists: impl Future<Output = Result<T>>,
) -> Result<()> {
    if changed == 1 {
        return Ok(());
    }
    exists.await?;
    Err(StoreError::Aborted)
}

/// A stored boolean (0 or 1).
pub(crate) fn flag(row: &AnyRow, column: &str) -> Result<bool> {
    let value: i64 = row.try_get(column)?;
    Ok(value != 0)
}

/// A boolean as it is stored.
pub(crate) fn stored(flag: bool) -> i64 {
    i64::from(flag)
}

/// A JSON column read as `T`; a corrupt one is an error, never a default.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
    whose: impl FnOnce() -> String,
) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        what: format!("{column} of {}", whose()),
        detail: e.to_string(),
    })
}

/// `T` as a JSON column.
pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_urls() {
        assert_eq!(
            sqlite_url(Path::new("/data/wid.db")).ok().as_deref(),
            Some("sqlite:///data/wid.db?mode=rwc")
        );
        assert_eq!(
            sqlite_url(Path::new("/a b/#?%/wid.db")).ok().as_deref(),
            Some("sqlite:///a%20b/%23%3F%25/wid.db?mode=rwc")
        );
    }
}
