//! The token service's signing keys.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::on_unique;
use crate::projects::all;
use crate::{Result, SigningKeyRow, Store};

fn signing_key(r: &AnyRow) -> Result<SigningKeyRow> {
    Ok(SigningKeyRow {
        kid: r.try_get("kid")?,
        purpose: r.try_get("purpose")?,
        algorithm: r.try_get("algorithm")?,
        private_pkcs8: r.try_get("private_pkcs8")?,
        create_time: r.try_get("create_time")?,
        rotate_time: r.try_get("rotate_time")?,
        retire_time: r.try_get("retire_time")?,
    })
}

/// The statement that adds `row` as its purpose's active key.
fn insert_key(row: &SigningKeyRow) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, purpose, algorithm, private_pkcs8, create_time,
             rotate_time, retire_time)
         VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
    )
    .bind(&row.kid)
    .bind(&row.purpose)
    .bind(&row.algorithm)
    .bind(&row.private_pkcs8)
    .bind(row.create_time)
}

impl Store {
    /// Every signing key, active and published.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY create_time, kid")
            .fetch_all(&self.db.pool)
            .await?;
        all(&rows, signing_key)
    }

    /// Adds a key as the active one of its purpose; AlreadyExists if one is active.
    pub async fn insert_signing_key(&self, row: &SigningKeyRow) -> Result<()> {
        self.write_and_tell(crate::changes::KEYS, async {
            insert_key(row)
                .execute(&self.db.pool)
                .await
                .map_err(on_unique)?;
            Ok(())
        })
        .await
    }

    /// In one transaction: the active key of `row.purpose` stops signing at `rotate_time` and
    /// stays published until `retire_time`, and `row` becomes the active key.
    pub async fn rotate_signing_key(
        &self,
        row: &SigningKeyRow,
        rotate_time: i64,
        retire_time: i64,
    ) -> Result<()> {
        self.write_and_tell(crate::changes::KEYS, async {
            let mut tx = self.db.pool.begin().await?;
            // The first statement writes, so the transaction takes the write lock at once (and
            // with PostgreSQL, a concurrent rotation waits for this one, then rotates nothing
            // and fails to add a second active key: AlreadyExists).
            sqlx::query(
                "UPDATE signing_keys SET rotate_time = $1, retire_time = $2
                 WHERE purpose = $3 AND rotate_time IS NULL",
            )
            .bind(rotate_time)
            .bind(retire_time)
            .bind(&row.purpose)
            .execute(&mut *tx)
            .await?;
            insert_key(row).execute(&mut *tx).await.map_err(on_unique)?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes the keys whose retire time has passed; returns how many.
    pub async fn delete_retired_signing_keys(&self, now: i64) -> Result<u64> {
        let deleted = self
            .cache
            .bounded(async {
                let result = sqlx::query(
                    "DELETE FROM signing_keys WHERE retire_time IS NOT NULL AND retire_time <= $1",
                )
                .bind(now)
                .execute(&self.db.pool)
                .await?;
                Ok(result.rows_affected())
            })
            .await?;
        // Every replica retires the same keys by the same clock; none needs telling.
        Ok(deleted)
    }
}
