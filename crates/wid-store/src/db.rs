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
        match self {
            Dialect::Sqlite => Migrator::with_migrations(vec![
                migration(1, "iam", include_str!("../migrations/sqlite/0001_iam.sql")),
                migration(
                    2,
                    "tokens",
                    include_str!("../migrations/sqlite/0002_tokens.sql"),
                ),
                migration(
                    3,
                    "audit pod",
                    include_str!("../migrations/sqlite/0003_audit_pod.sql"),
                ),
                migration(
                    4,
                    "ksa uids, audit by time",
                    include_str!("../migrations/sqlite/0004_ksa_uids_audit_time.sql"),
                ),
            ]),
        }
    }

    /// The length in bytes of a text column.
    pub(crate) fn octet_length(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("LENGTH(CAST({column} AS BLOB))"),
        }
    }
}

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
        sqlx::any::install_drivers(&[sqlx::sqlite::any::DRIVER]).ok();
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
