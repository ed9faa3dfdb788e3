//! The embedded SQLite store.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use crate::*;

/// The SQLite store: one database file in the data directory.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn migrator() -> Migrator {
    let migration = |version, name: &'static str, sql: &'static str| {
        Migration::new(
            version,
            Cow::Borrowed(name),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
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
    ])
}

/// Turns a uniqueness violation into AlreadyExists and keeps other errors.
fn on_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
        _ => StoreError::Database(e),
    }
}

fn one<T>(rows: Vec<T>) -> Result<T> {
    rows.into_iter().next().ok_or(StoreError::NotFound)
}

fn affected_one(result: sqlx::sqlite::SqliteQueryResult) -> Result<()> {
    if result.rows_affected() == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// The records and bytes of the audit records `filter` selects (with `bind` for its `?`).
async fn audit_size_where<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    filter: &str,
    bind: Option<&str>,
) -> Result<AuditSize> {
    let sql = format!(
        "SELECT COUNT(*) AS records, COALESCE(SUM(LENGTH(CAST(time AS BLOB)) + LENGTH(CAST(action AS BLOB))
             + LENGTH(CAST(caller AS BLOB)) + LENGTH(CAST(provider AS BLOB)) + LENGTH(CAST(target AS BLOB))
             + LENGTH(CAST(token_id AS BLOB)) + LENGTH(CAST(outcome AS BLOB)) + LENGTH(CAST(reason AS BLOB))
             + LENGTH(CAST(pod AS BLOB))), 0) AS bytes
         FROM audit_events {filter}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(value) = bind {
        query = query.bind(value);
    }
    let r = query.fetch_one(executor).await?;
    let count = |name: &str| -> Result<u64> {
        let n: i64 = r.try_get(name)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(AuditSize {
        records: count("records")?,
        bytes: count("bytes")?,
    })
}

fn project(r: &SqliteRow) -> sqlx::Result<ProjectRow> {
    Ok(ProjectRow {
        project_id: r.try_get("project_id")?,
        project_number: r.try_get("project_number")?,
        display_name: r.try_get("display_name")?,
        create_time: r.try_get("create_time")?,
    })
}

fn service_account(r: &SqliteRow) -> sqlx::Result<ServiceAccountRow> {
    Ok(ServiceAccountRow {
        unique_id: r.try_get("unique_id")?,
        project_id: r.try_get("project_id")?,
        account_id: r.try_get("account_id")?,
        email: r.try_get("email")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        disabled: r.try_get("disabled")?,
        etag: r.try_get("etag")?,
        create_time: r.try_get("create_time")?,
    })
}

fn pool(r: &SqliteRow) -> sqlx::Result<PoolRow> {
    Ok(PoolRow {
        project_number: r.try_get("project_number")?,
        pool_id: r.try_get("pool_id")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        disabled: r.try_get("disabled")?,
        create_time: r.try_get("create_time")?,
        version: r.try_get("version")?,
    })
}

fn provider(r: &SqliteRow) -> sqlx::Result<ProviderRow> {
    Ok(ProviderRow {
        project_number: r.try_get("project_number")?,
        pool_id: r.try_get("pool_id")?,
        provider_id: r.try_get("provider_id")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        disabled: r.try_get("disabled")?,
        attribute_mapping_json: r.try_get("attribute_mapping_json")?,
        attribute_condition: r.try_get("attribute_condition")?,
        issuer_uri: r.try_get("issuer_uri")?,
        allowed_audiences_json: r.try_get("allowed_audiences_json")?,
        jwks_json: r.try_get("jwks_json")?,
        discovered_jwks_json: r.try_get("discovered_jwks_json")?,
        jwks_fetch_time: r.try_get("jwks_fetch_time")?,
        create_time: r.try_get("create_time")?,
        version: r.try_get("version")?,
    })
}

fn cluster(r: &SqliteRow) -> sqlx::Result<ClusterRow> {
    Ok(ClusterRow {
        project_id: r.try_get("project_id")?,
        location: r.try_get("location")?,
        name: r.try_get("name")?,
        uid: r.try_get("uid")?,
        issuer_uri: r.try_get("issuer_uri")?,
        jwks_json: r.try_get("jwks_json")?,
        discovered_jwks_json: r.try_get("discovered_jwks_json")?,
        jwks_fetch_time: r.try_get("jwks_fetch_time")?,
        isolated: r.try_get("isolated")?,
        create_time: r.try_get("create_time")?,
    })
}

fn all<T>(rows: Vec<SqliteRow>, f: fn(&SqliteRow) -> sqlx::Result<T>) -> Result<Vec<T>> {
    rows.iter()
        .map(|r| f(r).map_err(StoreError::from))
        .collect()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    /// The caller makes the file's directory private; SQLite creates the file with mode 0644
    /// masked by the umask, so the service creates it first with 0600.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged, whatever happens next.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Store for SqliteStore {
    async fn create_project(&self, row: &ProjectRow) -> Result<()> {
        sqlx::query("INSERT INTO projects (project_id, project_number, display_name, create_time) VALUES (?, ?, ?, ?)")
            .bind(&row.project_id)
            .bind(&row.project_number)
            .bind(&row.display_name)
            .bind(&row.create_time)
            .execute(&self.pool)
            .await
            .map_err(on_unique)?;
        Ok(())
    }

    async fn get_project(&self, id_or_number: &str) -> Result<ProjectRow> {
        let rows =
            sqlx::query("SELECT * FROM projects WHERE project_id = ?1 OR project_number = ?1")
                .bind(id_or_number)
                .fetch_all(&self.pool)
                .await?;
        one(all(rows, project)?)
    }

    async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        let rows = sqlx::query("SELECT * FROM projects ORDER BY project_id")
            .fetch_all(&self.pool)
            .await?;
        all(rows, project)
    }

    async fn create_service_account(&self, row: &ServiceAccountRow) -> Result<()> {
        // One statement, so that the retired-id check and the insert are atomic without a read
        // transaction that SQLite could not upgrade under concurrent writers.
        let result = sqlx::query(
            "INSERT INTO service_accounts (unique_id, project_id, account_id, email, display_name, description, disabled, etag, create_time)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
             WHERE NOT EXISTS (SELECT 1 FROM retired_unique_ids WHERE unique_id = ?1)",
        )
        .bind(&row.unique_id)
        .bind(&row.project_id)
        .bind(&row.account_id)
        .bind(&row.email)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(row.disabled)
        .bind(&row.etag)
        .bind(&row.create_time)
        .execute(&self.pool)
        .await
        .map_err(on_unique)?;
        if result.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists);
        }
        Ok(())
    }

    async fn get_service_account(&self, email_or_unique_id: &str) -> Result<ServiceAccountRow> {
        let rows = sqlx::query("SELECT * FROM service_accounts WHERE email = ?1 OR unique_id = ?1")
            .bind(email_or_unique_id)
            .fetch_all(&self.pool)
            .await?;
        one(all(rows, service_account)?)
    }

    async fn list_service_accounts(&self, project_id: &str) -> Result<Vec<ServiceAccountRow>> {
        let rows =
            sqlx::query("SELECT * FROM service_accounts WHERE project_id = ? ORDER BY email")
                .bind(project_id)
                .fetch_all(&self.pool)
                .await?;
        all(rows, service_account)
    }

    async fn update_service_account(
        &self,
        row: &ServiceAccountRow,
        expected_etag: &str,
    ) -> Result<()> {
        let result = sqlx::query(
            "UPDATE service_accounts SET display_name = ?, description = ?, disabled = ?, etag = ?
             WHERE unique_id = ? AND etag = ?",
        )
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(row.disabled)
        .bind(&row.etag)
        .bind(&row.unique_id)
        .bind(expected_etag)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 1 {
            return Ok(());
        }
        // Tell a vanished account from a concurrent change.
        self.get_service_account(&row.unique_id).await?;
        Err(StoreError::Aborted)
    }

    async fn delete_service_account(&self, unique_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query("DELETE FROM service_accounts WHERE unique_id = ?")
            .bind(unique_id)
            .execute(&mut *tx)
            .await?;
        affected_one(result)?;
        sqlx::query("DELETE FROM iam_policies WHERE resource = ?")
            .bind(format!("sa/{unique_id}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT OR IGNORE INTO retired_unique_ids (unique_id) VALUES (?)")
            .bind(unique_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_policy(&self, resource: &str) -> Result<Option<PolicyRow>> {
        let row = sqlx::query("SELECT etag, policy_json FROM iam_policies WHERE resource = ?")
            .bind(resource)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(PolicyRow {
                etag: r.try_get("etag")?,
                policy_json: r.try_get("policy_json")?,
            }),
            None => None,
        })
    }

    async fn set_policy(
        &self,
        resource: &str,
        expected_etag: Option<&str>,
        policy: &PolicyRow,
    ) -> Result<()> {
        // Each branch is a single statement, so the compare and the swap are atomic without a
        // transaction, here and on any SQL backend.
        let result = match expected_etag {
            None => {
                sqlx::query(
                    "INSERT INTO iam_policies (resource, etag, policy_json) VALUES (?1, ?2, ?3)
                     ON CONFLICT (resource) DO UPDATE SET etag = ?2, policy_json = ?3",
                )
                .bind(resource)
                .bind(&policy.etag)
                .bind(&policy.policy_json)
                .execute(&self.pool)
                .await?
            }
            Some(NO_POLICY_ETAG) => {
                sqlx::query(
                    "INSERT INTO iam_policies (resource, etag, policy_json) VALUES (?, ?, ?)
                     ON CONFLICT (resource) DO NOTHING",
                )
                .bind(resource)
                .bind(&policy.etag)
                .bind(&policy.policy_json)
                .execute(&self.pool)
                .await?
            }
            Some(expected) => sqlx::query(
                "UPDATE iam_policies SET etag = ?, policy_json = ? WHERE resource = ? AND etag = ?",
            )
            .bind(&policy.etag)
            .bind(&policy.policy_json)
            .bind(resource)
            .bind(expected)
            .execute(&self.pool)
            .await?,
        };
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Aborted)
        }
    }

    async fn create_pool(&self, row: &PoolRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO workload_identity_pools (project_number, pool_id, display_name, description, disabled, create_time)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(row.disabled)
        .bind(&row.create_time)
        .execute(&self.pool)
        .await
        .map_err(on_unique)?;
        Ok(())
    }

    async fn get_pool(&self, project_number: &str, pool_id: &str) -> Result<PoolRow> {
        let rows = sqlx::query(
            "SELECT * FROM workload_identity_pools WHERE project_number = ? AND pool_id = ?",
        )
        .bind(project_number)
        .bind(pool_id)
        .fetch_all(&self.pool)
        .await?;
        one(all(rows, pool)?)
    }

    async fn list_pools(&self, project_number: &str) -> Result<Vec<PoolRow>> {
        let rows = sqlx::query(
            "SELECT * FROM workload_identity_pools WHERE project_number = ? ORDER BY pool_id",
        )
        .bind(project_number)
        .fetch_all(&self.pool)
        .await?;
        all(rows, pool)
    }

    async fn update_pool(&self, row: &PoolRow) -> Result<()> {
        let result = sqlx::query(
            "UPDATE workload_identity_pools SET display_name = ?, description = ?, disabled = ?, version = version + 1
             WHERE project_number = ? AND pool_id = ? AND version = ?",
        )
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(row.disabled)
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(row.version)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 1 {
            return Ok(());
        }
        self.get_pool(&row.project_number, &row.pool_id).await?;
        Err(StoreError::Aborted)
    }

    async fn delete_pool(&self, project_number: &str, pool_id: &str) -> Result<()> {
        let result = sqlx::query(
            "DELETE FROM workload_identity_pools WHERE project_number = ? AND pool_id = ?",
        )
        .bind(project_number)
        .bind(pool_id)
        .execute(&self.pool)
        .await?;
        affected_one(result)
    }

    async fn create_provider(&self, row: &ProviderRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO workload_identity_pool_providers (project_number, pool_id, provider_id, display_name, description,
                 disabled, attribute_mapping_json, attribute_condition, issuer_uri, allowed_audiences_json, jwks_json,
                 discovered_jwks_json, jwks_fetch_time, create_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(&row.provider_id)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(row.disabled)
        .bind(&row.attribute_mapping_json)
        .bind(&row.attribute_condition)
        .bind(&row.issuer_uri)
        .bind(&row.allowed_audiences_json)
        .bind(&row.jwks_json)
        .bind(&row.discovered_jwks_json)
        .bind(&row.jwks_fetch_time)
        .bind(&row.create_time)
        .execute(&self.pool)
        .await
        .map_err(on_unique)?;
        Ok(())
    }

    async fn get_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<ProviderRow> {
        let rows = sqlx::query(
            "SELECT * FROM workload_identity_pool_providers WHERE project_number = ? AND pool_id = ? AND provider_id = ?",
        )
        .bind(project_number)
        .bind(pool_id)
        .bind(provider_id)
        .fetch_all(&self.pool)
        .await?;
        one(all(rows, provider)?)
    }

    async fn list_providers(
        &self,
        project_number: &str,
        pool_id: &str,
    ) -> Result<Vec<ProviderRow>> {
        let rows = sqlx::query(
            "SELECT * FROM workload_identity_pool_providers WHERE project_number = ? AND pool_id = ? ORDER BY provider_id",
        )
        .bind(project_number)
        .bind(pool_id)
        .fetch_all(&self.pool)
        .await?;
        all(rows, provider)
    }

    async fn update_provider(&self, row: &ProviderRow, forget_discovered_keys: bool) -> Result<()> {
        let result = sqlx::query(
            "UPDATE workload_identity_pool_providers SET display_name = ?, description = ?, disabled = ?,
                 attribute_mapping_json = ?, attribute_condition = ?, issuer_uri = ?, allowed_audiences_json = ?,
                 jwks_json = ?,
                 discovered_jwks_json = CASE WHEN ? THEN NULL ELSE discovered_jwks_json END,
                 jwks_fetch_time = CASE WHEN ? THEN NULL ELSE jwks_fetch_time END,
                 version = version + 1
             WHERE project_number = ? AND pool_id = ? AND provider_id = ? AND version = ?",
        )
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(row.disabled)
        .bind(&row.attribute_mapping_json)
        .bind(&row.attribute_condition)
        .bind(&row.issuer_uri)
        .bind(&row.allowed_audiences_json)
        .bind(&row.jwks_json)
        .bind(forget_discovered_keys)
        .bind(forget_discovered_keys)
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(&row.provider_id)
        .bind(row.version)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 1 {
            return Ok(());
        }
        self.get_provider(&row.project_number, &row.pool_id, &row.provider_id)
            .await?;
        Err(StoreError::Aborted)
    }

    async fn delete_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<()> {
        let result = sqlx::query(
            "DELETE FROM workload_identity_pool_providers WHERE project_number = ? AND pool_id = ? AND provider_id = ?",
        )
        .bind(project_number)
        .bind(pool_id)
        .bind(provider_id)
        .execute(&self.pool)
        .await?;
        affected_one(result)
    }

    async fn create_cluster(&self, row: &ClusterRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO clusters (project_id, location, name, uid, issuer_uri, jwks_json, discovered_jwks_json,
                 jwks_fetch_time, isolated, create_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.project_id)
        .bind(&row.location)
        .bind(&row.name)
        .bind(&row.uid)
        .bind(&row.issuer_uri)
        .bind(&row.jwks_json)
        .bind(&row.discovered_jwks_json)
        .bind(&row.jwks_fetch_time)
        .bind(row.isolated)
        .bind(&row.create_time)
        .execute(&self.pool)
        .await
        .map_err(on_unique)?;
        Ok(())
    }

    async fn get_cluster(
        &self,
        project_id: &str,
        location: &str,
        name: &str,
    ) -> Result<ClusterRow> {
        let rows = sqlx::query(
            "SELECT * FROM clusters WHERE project_id = ? AND location = ? AND name = ?",
        )
        .bind(project_id)
        .bind(location)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        one(all(rows, cluster)?)
    }

    async fn list_clusters(&self, project_id: &str, location: &str) -> Result<Vec<ClusterRow>> {
        let rows = sqlx::query(
            "SELECT * FROM clusters WHERE project_id = ?1 AND (?2 = '-' OR location = ?2) ORDER BY location, name",
        )
        .bind(project_id)
        .bind(location)
        .fetch_all(&self.pool)
        .await?;
        all(rows, cluster)
    }

    async fn delete_cluster(&self, project_id: &str, location: &str, name: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM ksa_uids WHERE cluster_uid IN
                 (SELECT uid FROM clusters WHERE project_id = ? AND location = ? AND name = ?)",
        )
        .bind(project_id)
        .bind(location)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let result =
            sqlx::query("DELETE FROM clusters WHERE project_id = ? AND location = ? AND name = ?")
                .bind(project_id)
                .bind(location)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        affected_one(result)?;
        tx.commit().await?;
        Ok(())
    }

    async fn present_service_account_uid(&self, row: &KsaUidRow) -> Result<Vec<KsaUidRow>> {
        sqlx::query(
            "INSERT INTO ksa_uids (project_id, uid, cluster_uid, namespace, name, first_seen)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&row.project_id)
        .bind(&row.uid)
        .bind(&row.cluster_uid)
        .bind(&row.namespace)
        .bind(&row.name)
        .bind(&row.first_seen)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(
            "SELECT * FROM ksa_uids WHERE project_id = ? AND uid = ? ORDER BY first_seen, cluster_uid, namespace, name",
        )
        .bind(&row.project_id)
        .bind(&row.uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KsaUidRow {
                    project_id: r.try_get("project_id")?,
                    uid: r.try_get("uid")?,
                    cluster_uid: r.try_get("cluster_uid")?,
                    namespace: r.try_get("namespace")?,
                    name: r.try_get("name")?,
                    first_seen: r.try_get("first_seen")?,
                })
            })
            .collect()
    }

    async fn list_discovery_targets(&self) -> Result<Vec<DiscoveryTarget>> {
        let mut targets = Vec::new();
        let rows = sqlx::query(
            "SELECT project_number, pool_id, provider_id, issuer_uri, jwks_fetch_time
             FROM workload_identity_pool_providers WHERE jwks_json IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            targets.push(DiscoveryTarget {
                owner: KeySetOwner::Provider {
                    project_number: r.try_get("project_number")?,
                    pool_id: r.try_get("pool_id")?,
                    provider_id: r.try_get("provider_id")?,
                },
                issuer_uri: r.try_get("issuer_uri")?,
                jwks_fetch_time: r.try_get("jwks_fetch_time")?,
            });
        }
        let rows = sqlx::query(
            "SELECT project_id, location, name, issuer_uri, jwks_fetch_time FROM clusters WHERE jwks_json IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            targets.push(DiscoveryTarget {
                owner: KeySetOwner::Cluster {
                    project_id: r.try_get("project_id")?,
                    location: r.try_get("location")?,
                    name: r.try_get("name")?,
                },
                issuer_uri: r.try_get("issuer_uri")?,
                jwks_fetch_time: r.try_get("jwks_fetch_time")?,
            });
        }
        Ok(targets)
    }

    async fn set_discovered_jwks(
        &self,
        owner: &KeySetOwner,
        issuer_uri: &str,
        jwks_json: &str,
        fetch_time: &str,
    ) -> Result<()> {
        let result = match owner {
            KeySetOwner::Provider { project_number, pool_id, provider_id } => {
                sqlx::query(
                    "UPDATE workload_identity_pool_providers SET discovered_jwks_json = ?, jwks_fetch_time = ?
                     WHERE project_number = ? AND pool_id = ? AND provider_id = ? AND jwks_json IS NULL AND issuer_uri = ?",
                )
                .bind(jwks_json)
                .bind(fetch_time)
                .bind(project_number)
                .bind(pool_id)
                .bind(provider_id)
                .bind(issuer_uri)
                .execute(&self.pool)
                .await?
            }
            KeySetOwner::Cluster { project_id, location, name } => {
                sqlx::query(
                    "UPDATE clusters SET discovered_jwks_json = ?, jwks_fetch_time = ?
                     WHERE project_id = ? AND location = ? AND name = ? AND jwks_json IS NULL AND issuer_uri = ?",
                )
                .bind(jwks_json)
                .bind(fetch_time)
                .bind(project_id)
                .bind(location)
                .bind(name)
                .bind(issuer_uri)
                .execute(&self.pool)
                .await?
            }
        };
        affected_one(result)
    }

    async fn list_policies(&self) -> Result<Vec<(String, PolicyRow)>> {
        let rows =
            sqlx::query("SELECT resource, etag, policy_json FROM iam_policies ORDER BY resource")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("resource")?,
                    PolicyRow {
                        etag: r.try_get("etag")?,
                        policy_json: r.try_get("policy_json")?,
                    },
                ))
            })
            .collect()
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY create_time, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get("kid")?,
                    purpose: r.try_get("purpose")?,
                    algorithm: r.try_get("algorithm")?,
                    private_pkcs8: r.try_get("private_pkcs8")?,
                    create_time: r.try_get("create_time")?,
                    rotate_time: r.try_get("rotate_time")?,
                    retire_time: r.try_get("retire_time")?,
                })
            })
            .collect()
    }

    async fn insert_signing_key(&self, row: &SigningKeyRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, purpose, algorithm, private_pkcs8, create_time, rotate_time, retire_time)
             VALUES (?, ?, ?, ?, ?, NULL, NULL)",
        )
        .bind(&row.kid)
        .bind(&row.purpose)
        .bind(&row.algorithm)
        .bind(&row.private_pkcs8)
        .bind(row.create_time)
        .execute(&self.pool)
        .await
        .map_err(on_unique)?;
        Ok(())
    }

    async fn rotate_signing_key(
        &self,
        row: &SigningKeyRow,
        rotate_time: i64,
        retire_time: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // The first statement writes, so the transaction takes the write lock at once.
        sqlx::query(
            "UPDATE signing_keys SET rotate_time = ?, retire_time = ? WHERE purpose = ? AND rotate_time IS NULL",
        )
        .bind(rotate_time)
        .bind(retire_time)
        .bind(&row.purpose)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, purpose, algorithm, private_pkcs8, create_time, rotate_time, retire_time)
             VALUES (?, ?, ?, ?, ?, NULL, NULL)",
        )
        .bind(&row.kid)
        .bind(&row.purpose)
        .bind(&row.algorithm)
        .bind(&row.private_pkcs8)
        .bind(row.create_time)
        .execute(&mut *tx)
        .await
        .map_err(on_unique)?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_retired_signing_keys(&self, now: i64) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM signing_keys WHERE retire_time IS NOT NULL AND retire_time <= ?",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn append_audit_batch(&self, rows: &[AuditRow]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO audit_events (time, action, caller, provider, target, token_id, outcome, reason, pod)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    async fn delete_audit_before(&self, time: &str) -> Result<AuditSize> {
        // Times are RFC 3339 in UTC with whole seconds, so they sort as text.
        let mut tx = self.pool.begin().await?;
        let size = audit_size_where(&mut *tx, "WHERE time < ?", Some(time)).await?;
        sqlx::query("DELETE FROM audit_events WHERE time < ?")
            .bind(time)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(size)
    }
    async fn audit_size(&self) -> Result<AuditSize> {
        audit_size_where(&self.pool, "", None).await
    }
    async fn list_audit(&self, limit: u32) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query("SELECT * FROM audit_events ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
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
            })
            .collect()
    }
}
