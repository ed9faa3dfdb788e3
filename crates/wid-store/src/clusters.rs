//! Registered clusters, the Kubernetes service-account uids their tokens presented, and the key
//! sets wid keeps fresh through OIDC discovery (of clusters and providers).

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{changed_one, flag, on_unique, stored};
use crate::projects::{all, one};
use crate::{ClusterRow, DiscoveryTarget, KeySetOwner, KsaUidRow, Result, Store};

fn cluster(r: &AnyRow) -> Result<ClusterRow> {
    Ok(ClusterRow {
        project_id: r.try_get("project_id")?,
        location: r.try_get("location")?,
        name: r.try_get("name")?,
        uid: r.try_get("uid")?,
        issuer_uri: r.try_get("issuer_uri")?,
        jwks_json: r.try_get("jwks_json")?,
        discovered_jwks_json: r.try_get("discovered_jwks_json")?,
        jwks_fetch_time: r.try_get("jwks_fetch_time")?,
        isolated: flag(r, "isolated")?,
        create_time: r.try_get("create_time")?,
    })
}

fn ksa_uid(r: &AnyRow) -> Result<KsaUidRow> {
    Ok(KsaUidRow {
        project_id: r.try_get("project_id")?,
        uid: r.try_get("uid")?,
        cluster_uid: r.try_get("cluster_uid")?,
        namespace: r.try_get("namespace")?,
        name: r.try_get("name")?,
        first_seen: r.try_get("first_seen")?,
    })
}

fn provider_target(r: &AnyRow) -> Result<DiscoveryTarget> {
    Ok(DiscoveryTarget {
        owner: KeySetOwner::Provider {
            project_number: r.try_get("project_number")?,
            pool_id: r.try_get("pool_id")?,
            provider_id: r.try_get("provider_id")?,
        },
        issuer_uri: r.try_get("issuer_uri")?,
        jwks_fetch_time: r.try_get("jwks_fetch_time")?,
    })
}

fn cluster_target(r: &AnyRow) -> Result<DiscoveryTarget> {
    Ok(DiscoveryTarget {
        owner: KeySetOwner::Cluster {
            project_id: r.try_get("project_id")?,
            location: r.try_get("location")?,
            name: r.try_get("name")?,
        },
        issuer_uri: r.try_get("issuer_uri")?,
        jwks_fetch_time: r.try_get("jwks_fetch_time")?,
    })
}

impl Store {
    /// Fails with AlreadyExists on a taken name or an issuer already registered in the project.
    pub async fn create_cluster(&self, row: &ClusterRow) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO clusters (project_id, location, name, uid, issuer_uri, jwks_json,
                 discovered_jwks_json, jwks_fetch_time, isolated, create_time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&row.project_id)
        .bind(&row.location)
        .bind(&row.name)
        .bind(&row.uid)
        .bind(&row.issuer_uri)
        .bind(&row.jwks_json)
        .bind(&row.discovered_jwks_json)
        .bind(&row.jwks_fetch_time)
        .bind(stored(row.isolated))
        .bind(&row.create_time)
        .execute(&self.db.pool);
        self.write(async { insert.await.map_err(on_unique).map(drop) })
            .await
    }

    pub async fn get_cluster(
        &self,
        project_id: &str,
        location: &str,
        name: &str,
    ) -> Result<ClusterRow> {
        let rows = sqlx::query(
            "SELECT * FROM clusters WHERE project_id = $1 AND location = $2 AND name = $3",
        )
        .bind(project_id)
        .bind(location)
        .bind(name)
        .fetch_all(&self.db.pool)
        .await?;
        one(&rows, cluster)
    }

    /// The clusters of a project; of one location when `location` is not `-`.
    pub async fn list_clusters(&self, project_id: &str, location: &str) -> Result<Vec<ClusterRow>> {
        let load = async {
            let rows = sqlx::query(
                "SELECT * FROM clusters WHERE project_id = $1 AND ($2 = '-' OR location = $2)
                 ORDER BY location, name",
            )
            .bind(project_id)
            .bind(location)
            .fetch_all(&self.db.pool)
            .await?;
            all(&rows, cluster)
        };
        let key = (project_id.to_owned(), location.to_owned());
        self.cache.read(&self.cache.clusters, key, load).await
    }

    /// Deletes the cluster and the uids its KSAs presented.
    pub async fn delete_cluster(&self, project_id: &str, location: &str, name: &str) -> Result<()> {
        self.write(async {
            let mut tx = self.db.pool.begin().await?;
            sqlx::query(
                "DELETE FROM ksa_uids WHERE cluster_uid IN
                     (SELECT uid FROM clusters WHERE project_id = $1 AND location = $2 AND name = $3)",
            )
            .bind(project_id)
            .bind(location)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            let result = sqlx::query(
                "DELETE FROM clusters WHERE project_id = $1 AND location = $2 AND name = $3",
            )
            .bind(project_id)
            .bind(location)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            changed_one(&result)?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Records that the KSA of `row` presented the uid `row.uid`, and returns every KSA that
    /// ever presented it in the project, that one included. A presenter seen before adds
    /// nothing: its answer is what was read then, kept until a write (a new presenter of any
    /// uid, a cluster deleted) clears the cache. Only a presenter new to the database is a
    /// write that clears caches (every replica's): the others only read.
    pub async fn present_service_account_uid(&self, row: &KsaUidRow) -> Result<Vec<KsaUidRow>> {
        let key = (row.project_id.clone(), row.uid.clone());
        if let Some(known) = self.cache.get(&self.cache.ksa_uids, &key)
            && known.iter().any(|k| k.same_presenter(row))
        {
            return Ok(known);
        }
        let inserted = self
            .cache
            .bounded(async {
                let result = sqlx::query(
                    "INSERT INTO ksa_uids (project_id, uid, cluster_uid, namespace, name, first_seen)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&row.project_id)
                .bind(&row.uid)
                .bind(&row.cluster_uid)
                .bind(&row.namespace)
                .bind(&row.name)
                .bind(&row.first_seen)
                .execute(&self.db.pool)
                .await?;
                Ok(result.rows_affected())
            })
            .await?;
        if inserted > 0 {
            self.tell(crate::changes::ROWS, true).await;
        }
        let presenters = self.cache.bounded(self.presenters_of(row)).await?;
        self.cache
            .put(&self.cache.ksa_uids, key, presenters.clone());
        Ok(presenters)
    }

    async fn presenters_of(&self, row: &KsaUidRow) -> Result<Vec<KsaUidRow>> {
        let rows = sqlx::query(
            "SELECT * FROM ksa_uids WHERE project_id = $1 AND uid = $2
             ORDER BY first_seen, cluster_uid, namespace, name",
        )
        .bind(&row.project_id)
        .bind(&row.uid)
        .fetch_all(&self.db.pool)
        .await?;
        all(&rows, ksa_uid)
    }

    /// Providers and clusters without uploaded keys.
    pub async fn list_discovery_targets(&self) -> Result<Vec<DiscoveryTarget>> {
        let providers = sqlx::query(
            "SELECT project_number, pool_id, provider_id, issuer_uri, jwks_fetch_time
             FROM workload_identity_pool_providers WHERE jwks_json IS NULL",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let clusters = sqlx::query(
            "SELECT project_id, location, name, issuer_uri, jwks_fetch_time
             FROM clusters WHERE jwks_json IS NULL",
        )
        .fetch_all(&self.db.pool)
        .await?;
        let mut targets = all(&providers, provider_target)?;
        targets.extend(all(&clusters, cluster_target)?);
        Ok(targets)
    }

    /// Stores keys fetched from `issuer_uri`, unless the owner's issuer changed meanwhile or it
    /// has uploaded keys (then NotFound).
    pub async fn set_discovered_jwks(
        &self,
        owner: &KeySetOwner,
        issuer_uri: &str,
        jwks_json: &str,
        fetch_time: &str,
    ) -> Result<()> {
        let (sql, a, b, c) = match owner {
            KeySetOwner::Provider {
                project_number,
                pool_id,
                provider_id,
            } => (
                "UPDATE workload_identity_pool_providers SET discovered_jwks_json = $1,
                     jwks_fetch_time = $2
                 WHERE project_number = $3 AND pool_id = $4 AND provider_id = $5
                     AND jwks_json IS NULL AND issuer_uri = $6",
                project_number,
                pool_id,
                provider_id,
            ),
            KeySetOwner::Cluster {
                project_id,
                location,
                name,
            } => (
                "UPDATE clusters SET discovered_jwks_json = $1, jwks_fetch_time = $2
                 WHERE project_id = $3 AND location = $4 AND name = $5
                     AND jwks_json IS NULL AND issuer_uri = $6",
                project_id,
                location,
                name,
            ),
        };
        let update = sqlx::query(sql)
            .bind(jwks_json)
            .bind(fetch_time)
            .bind(a)
            .bind(b)
            .bind(c)
            .bind(issuer_uri)
            .execute(&self.db.pool);
        self.write(async { changed_one(&update.await?) }).await
    }
}
