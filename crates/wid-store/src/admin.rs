//! What replicas share of the service itself: the bootstrap admin credentials every replica
//! accepts (kept as SHA-256 digests), and the issuers they sign as.

use crate::{Result, Store};

impl Store {
    /// Adds the digest of a bootstrap admin secret (a digest known already changes nothing).
    pub async fn add_admin_credential(&self, sha256: &str, create_time: &str) -> Result<()> {
        self.write(async {
            sqlx::query(
                "INSERT INTO admin_credentials (sha256, create_time) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(sha256)
            .bind(create_time)
            .execute(&self.db.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Whether `sha256` is the digest of a bootstrap admin secret.
    pub async fn is_admin_credential(&self, sha256: &str) -> Result<bool> {
        let load = async {
            let row = sqlx::query("SELECT 1 FROM admin_credentials WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.db.pool)
                .await?;
            Ok(row.is_some())
        };
        self.cache
            .read(&self.cache.admin_credentials, sha256.to_owned(), load)
            .await
    }
}

impl Store {
    /// Adds an issuer a replica signs as (one known already changes nothing).
    pub async fn add_issuer(&self, issuer: &str, create_time: &str) -> Result<()> {
        self.write(async {
            sqlx::query(
                "INSERT INTO issuers (issuer, create_time) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(issuer)
            .bind(create_time)
            .execute(&self.db.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Whether some replica signs as `issuer`.
    pub async fn is_issuer(&self, issuer: &str) -> Result<bool> {
        let load = async {
            let row = sqlx::query("SELECT 1 FROM issuers WHERE issuer = $1")
                .bind(issuer)
                .fetch_optional(&self.db.pool)
                .await?;
            Ok(row.is_some())
        };
        self.cache
            .read(&self.cache.issuers, issuer.to_owned(), load)
            .await
    }
}
