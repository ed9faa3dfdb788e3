//! Service-account keys: their public halves, as certificates.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{changed_one, flag, on_unique, stored};
use crate::projects::{all, one};
use crate::{AccountKeyRow, Result, Store};

fn key(r: &AnyRow) -> Result<AccountKeyRow> {
    Ok(AccountKeyRow {
        key_id: r.try_get("key_id")?,
        account_unique_id: r.try_get("account_unique_id")?,
        certificate_pem: r.try_get("certificate_pem")?,
        public_key_sha256: r.try_get("public_key_sha256")?,
        key_origin: r.try_get("key_origin")?,
        key_algorithm: r.try_get("key_algorithm")?,
        valid_after: r.try_get("valid_after")?,
        valid_before: r.try_get("valid_before")?,
        disabled: flag(r, "disabled")?,
        last_used: r.try_get("last_used")?,
    })
}

impl Store {
    /// Fails with AlreadyExists on a key id, or a public key, taken (by any account).
    pub async fn create_account_key(&self, row: &AccountKeyRow) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO service_account_keys (key_id, account_unique_id, certificate_pem,
               public_key_sha256, key_origin, key_algorithm, valid_after, valid_before, disabled)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.key_id)
        .bind(&row.account_unique_id)
        .bind(&row.certificate_pem)
        .bind(&row.public_key_sha256)
        .bind(&row.key_origin)
        .bind(&row.key_algorithm)
        .bind(row.valid_after)
        .bind(row.valid_before)
        .bind(stored(row.disabled))
        .execute(&self.db.pool);
        self.write(async { insert.await.map_err(on_unique).map(drop) })
            .await
    }

    /// The key `key_id` of the account `account_unique_id`; NotFound for another account's.
    pub async fn get_account_key(
        &self,
        account_unique_id: &str,
        key_id: &str,
    ) -> Result<AccountKeyRow> {
        let rows = sqlx::query(
            "SELECT * FROM service_account_keys WHERE key_id = $1 AND account_unique_id = $2",
        )
        .bind(key_id)
        .bind(account_unique_id)
        .fetch_all(&self.db.pool)
        .await?;
        one(&rows, key)
    }

    /// The account's keys, oldest first.
    pub async fn list_account_keys(&self, account_unique_id: &str) -> Result<Vec<AccountKeyRow>> {
        let rows = sqlx::query(
            "SELECT * FROM service_account_keys WHERE account_unique_id = $1
             ORDER BY valid_after, key_id",
        )
        .bind(account_unique_id)
        .fetch_all(&self.db.pool)
        .await?;
        all(&rows, key)
    }

    pub async fn set_account_key_disabled(
        &self,
        account_unique_id: &str,
        key_id: &str,
        disabled: bool,
    ) -> Result<()> {
        let update = sqlx::query(
            "UPDATE service_account_keys SET disabled = $1 WHERE key_id = $2 AND account_unique_id = $3",
        )
        .bind(stored(disabled))
        .bind(key_id)
        .bind(account_unique_id)
        .execute(&self.db.pool);
        self.write(async { changed_one(&update.await?) }).await
    }

    /// Records a use of the key (a grant it signed) at `now`, for clean-up by age and use. Not
    /// a write the token path's cache holds: no replica is told.
    pub async fn touch_account_key(&self, key_id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE service_account_keys SET last_used = $1 WHERE key_id = $2")
            .bind(now)
            .bind(key_id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_account_key(&self, account_unique_id: &str, key_id: &str) -> Result<()> {
        let delete = sqlx::query(
            "DELETE FROM service_account_keys WHERE key_id = $1 AND account_unique_id = $2",
        )
        .bind(key_id)
        .bind(account_unique_id)
        .execute(&self.db.pool);
        self.write(async { changed_one(&delete.await?) }).await
    }
}
