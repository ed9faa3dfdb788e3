//! Workload identity pools and their providers. Updates compare and swap on a version column.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::cache::found;
use crate::db::{changed_one, flag, json, on_unique, stored, swapped, to_json};
use crate::projects::{all, one};
use crate::{PoolRow, ProviderRow, Result, Store, StoreError};

fn pool(r: &AnyRow) -> Result<PoolRow> {
    Ok(PoolRow {
        project_number: r.try_get("project_number")?,
        pool_id: r.try_get("pool_id")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        disabled: flag(r, "disabled")?,
        create_time: r.try_get("create_time")?,
        version: r.try_get("version")?,
    })
}

fn provider(r: &AnyRow) -> Result<ProviderRow> {
    let project_number: String = r.try_get("project_number")?;
    let pool_id: String = r.try_get("pool_id")?;
    let provider_id: String = r.try_get("provider_id")?;
    let whose = || format!("provider {project_number}/{pool_id}/{provider_id}");
    Ok(ProviderRow {
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        disabled: flag(r, "disabled")?,
        attribute_mapping: json(r, "attribute_mapping_json", whose)?,
        attribute_condition: r.try_get("attribute_condition")?,
        issuer_uri: r.try_get("issuer_uri")?,
        allowed_audiences: json(r, "allowed_audiences_json", whose)?,
        jwks_json: r.try_get("jwks_json")?,
        discovered_jwks_json: r.try_get("discovered_jwks_json")?,
        jwks_fetch_time: r.try_get("jwks_fetch_time")?,
        create_time: r.try_get("create_time")?,
        version: r.try_get("version")?,
        project_number,
        pool_id,
        provider_id,
    })
}

impl Store {
    pub async fn create_pool(&self, row: &PoolRow) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO workload_identity_pools (project_number, pool_id, display_name, description,
                 disabled, create_time)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(stored(row.disabled))
        .bind(&row.create_time)
        .execute(&self.db.pool);
        self.write(async { insert.await.map_err(on_unique).map(drop) })
            .await
    }

    pub async fn get_pool(&self, project_number: &str, pool_id: &str) -> Result<PoolRow> {
        let load = async {
            let rows = sqlx::query(
                "SELECT * FROM workload_identity_pools WHERE project_number = $1 AND pool_id = $2",
            )
            .bind(project_number)
            .bind(pool_id)
            .fetch_all(&self.db.pool)
            .await?;
            found(one(&rows, pool))
        };
        let key = (project_number.to_owned(), pool_id.to_owned());
        self.cache
            .read(&self.cache.pools, key, load)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_pools(&self, project_number: &str) -> Result<Vec<PoolRow>> {
        let rows = sqlx::query(
            "SELECT * FROM workload_identity_pools WHERE project_number = $1 ORDER BY pool_id",
        )
        .bind(project_number)
        .fetch_all(&self.db.pool)
        .await?;
        all(&rows, pool)
    }

    /// Replaces the pool's mutable fields when its stored version is `row.version`, and bumps it.
    pub async fn update_pool(&self, row: &PoolRow) -> Result<()> {
        let update = sqlx::query(
            "UPDATE workload_identity_pools SET display_name = $1, description = $2, disabled = $3,
                 version = version + 1
             WHERE project_number = $4 AND pool_id = $5 AND version = $6",
        )
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(stored(row.disabled))
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(row.version)
        .execute(&self.db.pool);
        let changed = self
            .write(async { Ok(update.await?.rows_affected()) })
            .await?;
        swapped(changed, self.get_pool(&row.project_number, &row.pool_id)).await
    }

    /// Deletes the pool and its providers.
    pub async fn delete_pool(&self, project_number: &str, pool_id: &str) -> Result<()> {
        let delete = sqlx::query(
            "DELETE FROM workload_identity_pools WHERE project_number = $1 AND pool_id = $2",
        )
        .bind(project_number)
        .bind(pool_id)
        .execute(&self.db.pool);
        self.write(async { changed_one(&delete.await?) }).await
    }

    pub async fn create_provider(&self, row: &ProviderRow) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO workload_identity_pool_providers (project_number, pool_id, provider_id,
                 display_name, description, disabled, attribute_mapping_json, attribute_condition,
                 issuer_uri, allowed_audiences_json, jwks_json, discovered_jwks_json,
                 jwks_fetch_time, create_time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(&row.provider_id)
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(stored(row.disabled))
        .bind(to_json(&row.attribute_mapping))
        .bind(&row.attribute_condition)
        .bind(&row.issuer_uri)
        .bind(to_json(&row.allowed_audiences))
        .bind(&row.jwks_json)
        .bind(&row.discovered_jwks_json)
        .bind(&row.jwks_fetch_time)
        .bind(&row.create_time)
        .execute(&self.db.pool);
        self.write(async { insert.await.map_err(on_unique).map(drop) })
            .await
    }

    pub async fn get_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<ProviderRow> {
        let load = async {
            let rows = sqlx::query(
                "SELECT * FROM workload_identity_pool_providers
                 WHERE project_number = $1 AND pool_id = $2 AND provider_id = $3",
            )
            .bind(project_number)
            .bind(pool_id)
            .bind(provider_id)
            .fetch_all(&self.db.pool)
            .await?;
            found(one(&rows, provider))
        };
        let key = (
            project_number.to_owned(),
            pool_id.to_owned(),
            provider_id.to_owned(),
        );
        self.cache
            .read(&self.cache.providers, key, load)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn list_providers(
        &self,
        project_number: &str,
        pool_id: &str,
    ) -> Result<Vec<ProviderRow>> {
        let rows = sqlx::query(
            "SELECT * FROM workload_identity_pool_providers
             WHERE project_number = $1 AND pool_id = $2 ORDER BY provider_id",
        )
        .bind(project_number)
        .bind(pool_id)
        .fetch_all(&self.db.pool)
        .await?;
        all(&rows, provider)
    }

    /// Replaces the provider's mutable fields when its stored version is `row.version`, and bumps
    /// it. The discovered keys are kept, unless `forget_discovered_keys` (the key source changed).
    pub async fn update_provider(
        &self,
        row: &ProviderRow,
        forget_discovered_keys: bool,
    ) -> Result<()> {
        let update = sqlx::query(
            "UPDATE workload_identity_pool_providers SET display_name = $1, description = $2,
                 disabled = $3, attribute_mapping_json = $4, attribute_condition = $5,
                 issuer_uri = $6, allowed_audiences_json = $7, jwks_json = $8,
                 discovered_jwks_json = CASE WHEN $9 = 1 THEN NULL ELSE discovered_jwks_json END,
                 jwks_fetch_time = CASE WHEN $9 = 1 THEN NULL ELSE jwks_fetch_time END,
                 version = version + 1
             WHERE project_number = $10 AND pool_id = $11 AND provider_id = $12 AND version = $13",
        )
        .bind(&row.display_name)
        .bind(&row.description)
        .bind(stored(row.disabled))
        .bind(to_json(&row.attribute_mapping))
        .bind(&row.attribute_condition)
        .bind(&row.issuer_uri)
        .bind(to_json(&row.allowed_audiences))
        .bind(&row.jwks_json)
        .bind(stored(forget_discovered_keys))
        .bind(&row.project_number)
        .bind(&row.pool_id)
        .bind(&row.provider_id)
        .bind(row.version)
        .execute(&self.db.pool);
        let changed = self
            .write(async { Ok(update.await?.rows_affected()) })
            .await?;
        swapped(
            changed,
            self.get_provider(&row.project_number, &row.pool_id, &row.provider_id),
        )
        .await
    }

    pub async fn delete_provider(
        &self,
        project_number: &str,
        pool_id: &str,
        provider_id: &str,
    ) -> Result<()> {
        let delete = sqlx::query(
            "DELETE FROM workload_identity_pool_providers
             WHERE project_number = $1 AND pool_id = $2 AND provider_id = $3",
        )
        .bind(project_number)
        .bind(pool_id)
        .bind(provider_id)
        .execute(&self.db.pool);
        self.write(async { changed_one(&delete.await?) }).await
    }
}
