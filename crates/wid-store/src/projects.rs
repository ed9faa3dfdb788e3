//! Projects, service accounts and IAM policies.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::cache::found;
use crate::db::{changed_one, flag, on_unique, stored, swapped};
use crate::{NO_POLICY_ETAG, PolicyRow, ProjectRow, Result, ServiceAccountRow, Store, StoreError};

fn project(r: &AnyRow) -> Result<ProjectRow> {
    Ok(ProjectRow {
        project_id: r.try_get("project_id")?,
        project_number: r.try_get("project_number")?,
        display_name: r.try_get("display_name")?,
        create_time: r.try_get("create_time")?,
        allow_service_account_keys: flag(r, "allow_service_account_keys")?,
        key_max_lifetime_seconds: r.try_get("key_max_lifetime_seconds")?,
    })
}

fn service_account(r: &AnyRow) -> Result<ServiceAccountRow> {
    Ok(ServiceAccountRow {
        unique_id: r.try_get("unique_id")?,
        project_id: r.try_get("project_id")?,
        account_id: r.try_get("account_id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        disabled: flag(r, "disabled")?,
        etag: r.try_get("etag")?,
        create_time: r.try_get("create_time")?,
    })
}

fn policy(r: &AnyRow) -> Result<PolicyRow> {
    Ok(PolicyRow {
        etag: r.try_get("etag")?,
        policy_json: r.try_get("policy_json")?,
    })
}

/// The one row of `rows`, mapped; NotFound when there is none.
pub(crate) fn one<T>(rows: &[AnyRow], map: fn(&AnyRow) -> Result<T>) -> Result<T> {
    rows.first().ok_or(StoreError::NotFound).and_then(map)
}

/// Every row of `rows`, mapped.
pub(crate) fn all<T>(rows: &[AnyRow], map: fn(&AnyRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(map).collect()
}

impl Store {
    pub async fn create_project(&self, row: &ProjectRow) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO projects (project_id, project_number, display_name, create_time)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&row.project_id)
        .bind(&row.project_number)
        .bind(&row.display_name)
        .bind(&row.create_time)
        .execute(&self.db.pool);
        self.write(async { insert.await.map_err(on_unique).map(drop) })
            .await
    }

    /// A project by id or by number.
    pub async fn get_project(&self, id_or_number: &str) -> Result<ProjectRow> {
        let load = async {
            let rows =
                sqlx::query("SELECT * FROM projects WHERE project_id = $1 OR project_number = $1")
                    .bind(id_or_number)
                    .fetch_all(&self.db.pool)
                    .await?;
            found(one(&rows, project))
        };
        let key = id_or_number.to_owned();
        self.cache
            .read(&self.cache.projects, key, load)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Whether `project_id` allows service-account keys, and their longest validity.
    pub async fn set_key_policy(
        &self,
        project_id: &str,
        allow: bool,
        max_lifetime_seconds: i64,
    ) -> Result<()> {
        let update = sqlx::query(
            "UPDATE projects SET allow_service_account_keys = $1, key_max_lifetime_seconds = $2
             WHERE project_id = $3",
        )
        .bind(stored(allow))
        .bind(max_lifetime_seconds)
        .bind(project_id)
        .execute(&self.db.pool);
        self.write(async { changed_one(&update.await?) }).await
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY project_id")
            .fetch_all(&self.db.pool)
            .await?;
        all(&rows, project)
    }

    /// Fails with AlreadyExists on a taken email or a unique id ever used before.
    pub async fn create_service_account(&self, row: &ServiceAccountRow) -> Result<()> {
        // One statement, so that the retired-id check and the insert are atomic without a read
        // transaction that could not be upgraded under concurrent writers.
        let insert = sqlx::query(
            "INSERT INTO service_accounts (unique_id, project_id, account_id, email, display_name,
                 description, disabled, etag, create_time)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE NOT EXISTS (SELECT 1 FROM retired_unique_ids WHERE unique_id = $1)",
        )
        .bind(&row.unique_id)
        .bind(&row.project_id)
        .bind(&row.account_id)
        .bind(&row.email)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(stored(row.disabled))
        .bind(&row.etag)
        .bind(&row.create_time)
        .execute(&self.db.pool);
        self.write(async {
            let result = insert.await.map_err(on_unique)?;
            changed_one(&result).map_err(|_| StoreError::AlreadyExists)
        })
        .await
    }

    /// A service account by email or unique id.
    pub async fn get_service_account(&self, email_or_unique_id: &str) -> Result<ServiceAccountRow> {
        let load = async {
            let rows =
                sqlx::query("SELECT * FROM service_accounts WHERE email = $1 OR unique_id = $1")
                    .bind(email_or_unique_id)
                    .fetch_all(&self.db.pool)
                    .await?;
            found(one(&rows, service_account))
        };
        let key = email_or_unique_id.to_owned();
        self.cache
            .read(&self.cache.accounts, key, load)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_service_accounts(&self, project_id: &str) -> Result<Vec<ServiceAccountRow>> {
        let rows =
            sqlx::query("SELECT * FROM service_accounts WHERE project_id = $1 ORDER BY email")
                .bind(project_id)
                .fetch_all(&self.db.pool)
                .await?;
        all(&rows, service_account)
    }

    /// Replaces the mutable fields when the stored etag is `expected_etag`.
    pub async fn update_service_account(
        &self,
        row: &ServiceAccountRow,
        expected_etag: &str,
    ) -> Result<()> {
        let update = sqlx::query(
            "UPDATE service_accounts SET display_name = $1, description = $2, disabled = $3, etag = $4
             WHERE unique_id = $5 AND etag = $6",
        )
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(stored(row.disabled))
        .bind(&row.etag)
        .bind(&row.unique_id)
        .bind(expected_etag)
        .execute(&self.db.pool);
        let changed = self
            .write(async { Ok(update.await?.rows_affected()) })
            .await?;
        swapped(changed, self.get_service_account(&row.unique_id)).await
    }

    /// Deletes the account and its policy, and retires its unique id.
    pub async fn delete_service_account(&self, unique_id: &str) -> Result<()> {
        self.write(async {
            let mut tx = self.db.pool.begin().await?;
            let result = sqlx::query("DELETE FROM service_accounts WHERE unique_id = $1")
                .bind(unique_id)
                .execute(&mut *tx)
                .await?;
            changed_one(&result)?;
            sqlx::query("DELETE FROM iam_policies WHERE resource = $1")
                .bind(format!("sa/{unique_id}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM service_account_keys WHERE account_unique_id = $1")
                .bind(unique_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO retired_unique_ids (unique_id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(unique_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The stored policy of a resource, if one was ever set.
    pub async fn get_policy(&self, resource: &str) -> Result<Option<PolicyRow>> {
        let load = async {
            let rows =
                sqlx::query("SELECT etag, policy_json FROM iam_policies WHERE resource = $1")
                    .bind(resource)
                    .fetch_all(&self.db.pool)
                    .await?;
            found(one(&rows, policy))
        };
        self.cache
            .read(&self.cache.policies, resource.to_owned(), load)
            .await
    }

    /// Stores `policy` when the current etag is `expected_etag` (`None`: unconditionally;
    /// `Some(NO_POLICY_ETAG)`: only if no policy was ever set). Aborted otherwise. Each case is
    /// a single statement, so the compare and the swap are atomic without a transaction.
    pub async fn set_policy(
        &self,
        resource: &str,
        expected_etag: Option<&str>,
        policy: &PolicyRow,
    ) -> Result<()> {
        let sql = match expected_etag {
            None => {
                "INSERT INTO iam_policies (resource, etag, policy_json) VALUES ($1, $2, $3)
                 ON CONFLICT (resource) DO UPDATE SET etag = $2, policy_json = $3"
            }
            Some(NO_POLICY_ETAG) => {
                "INSERT INTO iam_policies (resource, etag, policy_json) VALUES ($1, $2, $3)
                 ON CONFLICT (resource) DO NOTHING"
            }
            Some(_) => {
                "UPDATE iam_policies SET etag = $2, policy_json = $3 WHERE resource = $1 AND etag = $4"
            }
        };
        let mut statement = sqlx::query(sql)
            .bind(resource)
            .bind(&policy.etag)
            .bind(&policy.policy_json);
        if let Some(expected) = expected_etag.filter(|e| *e != NO_POLICY_ETAG) {
            statement = statement.bind(expected);
        }
        let write = statement.execute(&self.db.pool);
        let changed = self
            .write(async { Ok(write.await?.rows_affected()) })
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(StoreError::Aborted)
        }
    }

    /// Every stored policy, by resource key.
    pub async fn list_policies(&self) -> Result<Vec<(String, PolicyRow)>> {
        let rows =
            sqlx::query("SELECT resource, etag, policy_json FROM iam_policies ORDER BY resource")
                .fetch_all(&self.db.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("resource")?, policy(r)?)))
            .collect()
    }
}
