//! The audit trail: appended in batches, listed newest first, expired by time, and measured.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::projects::all;
use crate::{AuditRow, AuditSize, Result, Store};

/// The text fields of a record, whose bytes the trail's size counts ([`AuditSize::of`] counts
/// the same fields of rows in memory).
const FIELDS: [&str; 9] = [
    "time", "action", "caller", "provider", "target", "token_id", "outcome", "reason", "pod",
];

fn audit(r: &AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        time: r.try_get("time")?,
        action: r.try_get("action")?,
        caller: r.try_get("caller")?,
        provider: r.try_get("provider")?,
        target: r.try_get("target")?,
        token_id: r.try_get("token_id")?,
        outcome: r.try_get("outcome")?,
        reason: r.try_get("reason")?,
        pod: r.try_get("pod")?,
    })
}

impl Store {
    /// Appends several records in one transaction. With SQLite the commit does not wait for the
    /// disk: it survives the process (kill -9) at once, and a power loss once the next write of
    /// another kind (`synchronous=FULL`) or checkpoint syncs the journal; the service waits for
    /// each batch before answering, and a disk sync per batch would bound it to a few hundred
    /// batches a second.
    pub async fn append_audit_batch(&self, rows: &[AuditRow]) -> Result<()> {
        self.cache.bounded(self.insert_audit(rows)).await
    }

    async fn insert_audit(&self, rows: &[AuditRow]) -> Result<()> {
        let mut conn = self.db.pool.acquire().await?;
        let sqlite = self.db.dialect == crate::Dialect::Sqlite;
        if sqlite {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
        }
        let inserted = insert_rows(&mut conn, rows).await;
        if sqlite
            && sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await
                .is_err()
        {
            // Never hand back a connection whose commits would not wait for the disk.
            conn.close_on_drop();
        }
        inserted
    }

    /// The newest `limit` records, newest first.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query("SELECT * FROM audit_events ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.db.pool)
            .await?;
        all(&rows, audit)
    }

    /// Deletes the records older than `time` (RFC 3339); returns how much that was. Times are
    /// RFC 3339 in UTC with whole seconds, so they sort as text.
    pub async fn delete_audit_before(&self, time: &str) -> Result<AuditSize> {
        let mut tx = self.db.pool.begin().await?;
        let size = sqlx::query(sqlx::AssertSqlSafe(self.size_query("WHERE time < $1")))
            .bind(time)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM audit_events WHERE time < $1")
            .bind(time)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        audit_size(&size)
    }

    /// How much the trail holds.
    pub async fn audit_size(&self) -> Result<AuditSize> {
        let size = sqlx::query(sqlx::AssertSqlSafe(self.size_query("")))
            .fetch_one(&self.db.pool)
            .await?;
        audit_size(&size)
    }

    /// The records and bytes of the records `filter` selects, in the store's dialect.
    fn size_query(&self, filter: &str) -> String {
        let bytes: Vec<String> = FIELDS
            .iter()
            .map(|f| self.db.dialect.octet_length(f))
            .collect();
        format!(
            "SELECT COUNT(*) AS records, COALESCE(SUM({}), 0) AS bytes FROM audit_events {filter}",
            bytes.join(" + ")
        )
    }
}

fn audit_size(r: &AnyRow) -> Result<AuditSize> {
    let count = |name: &str| -> Result<u64> {
        let n: i64 = r.try_get(name)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(AuditSize {
        records: count("records")?,
        bytes: count("bytes")?,
    })
}

/// The records, in one transaction on `conn`.
async fn insert_rows(conn: &mut sqlx::AnyConnection, rows: &[AuditRow]) -> Result<()> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    for row in rows {
        sqlx::query(
            "INSERT INTO audit_events (time, action, caller, provider, target, token_id,
                 outcome, reason, pod)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.time)
        .bind(&row.action)
        .bind(&row.caller)
        .bind(&row.provider)
        .bind(&row.target)
        .bind(&row.token_id)
        .bind(&row.outcome)
        .bind(&row.reason)
        .bind(&row.pod)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
