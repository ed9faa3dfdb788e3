//! Kubernetes clusters registered as providers of their project's GKE pool `P.svc.id.goog`.
//!
//! Clusters of one project share the pool, so a namespace/KSA pair names the same member in all
//! of them (GKE's "identity sameness"). A cluster registered as isolated gets members of its own,
//! `serviceAccount:P.svc.id.goog[LOCATION/CLUSTER/NS/KSA]` (see `wid_iam::member`).

use wid_api::cluster::{Cluster, ListClustersResponse};
use wid_iam::roles::{CLUSTER_CREATE, CLUSTER_DELETE, CLUSTER_GET, CLUSTER_LIST};
use wid_iam::{Caller, names};
use wid_store::{ClusterRow, StoreError};

use crate::App;
use crate::auth::Resource;
use crate::error::ApiError;
use crate::routes::{ClusterName, LocationName};

fn render(row: &ClusterRow) -> Cluster {
    let pool = names::gke_pool(&row.project_id);
    let member_format = if row.isolated {
        format!(
            "serviceAccount:{pool}[{}/{}/NAMESPACE/KSA]",
            row.location, row.name
        )
    } else {
        format!("serviceAccount:{pool}[NAMESPACE/KSA]")
    };
    Cluster {
        name: format!(
            "projects/{}/locations/{}/clusters/{}",
            row.project_id, row.location, row.name
        ),
        cluster_name: row.name.clone(),
        project_id: row.project_id.clone(),
        location: row.location.clone(),
        uid: row.uid.clone(),
        issuer_uri: row.issuer_uri.clone(),
        jwks_json: row.jwks_json.clone().unwrap_or_default(),
        discover: row.jwks_json.is_none(),
        isolated: row.isolated,
        workload_identity_pool: pool,
        member_format,
        create_time: row.create_time.clone(),
        jwks_fetch_time: row.jwks_fetch_time.clone().unwrap_or_default(),
    }
}

/// A uid shaped like a UUID (8-4-4-4-12 hex).
fn new_uid() -> String {
    let h = wid_runtime::secrets::random_hex::<16>();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The keys a registration uploads (`Some`), or none for discovery: exactly one of the two.
fn uploaded_keys(request: &Cluster) -> Result<Option<String>, ApiError> {
    match (request.jwks_json.is_empty(), request.discover) {
        (false, false) => {
            crate::jwks::validate(&request.jwks_json)
                .map_err(|e| ApiError::invalid("jwksJson", format!("Invalid JWKS: {e}.")))?;
            Ok(Some(request.jwks_json.clone()))
        }
        (true, true) => Ok(None),
        _ => Err(ApiError::invalid(
            "jwksJson",
            "Give the cluster's keys either as jwksJson (--jwk-json-path) or through discovery (--discover), not both or neither.",
        )),
    }
}

impl App {
    pub(crate) async fn register_cluster(
        &self,
        caller: &Caller,
        parent: &LocationName,
        request: Cluster,
    ) -> Result<Cluster, ApiError> {
        let location = parent.location.as_str();
        let owner = self.project(&parent.project).await?;
        self.require(caller, CLUSTER_CREATE, &Resource::Project(&owner))
            .await?;
        names::validate_cluster_segment("location", location)
            .map_err(|m| ApiError::invalid("location", m))?;
        names::validate_cluster_segment("cluster name", &request.cluster_name)
            .map_err(|m| ApiError::invalid("clusterName", m))?;
        names::validate_issuer_uri(&request.issuer_uri)
            .map_err(|m| ApiError::invalid("issuerUri", m))?;
        // One spelling per issuer, so that `https://k1.example/` is the cluster
        // `https://k1.example` is, and a second registration of it is refused.
        let issuer_uri = names::canonical_issuer(&request.issuer_uri);
        let jwks_json = uploaded_keys(&request)?;
        // With discovery, fetch now: a cluster whose keys cannot be had is not registered.
        let discovered = match jwks_json {
            Some(_) => None,
            None => Some(self.discover_cluster_keys(caller, &issuer_uri).await?),
        };
        let now = super::now_rfc3339();
        let row = ClusterRow {
            project_id: owner.project_id.clone(),
            location: location.to_owned(),
            name: request.cluster_name,
            uid: new_uid(),
            issuer_uri,
            jwks_fetch_time: discovered.as_ref().map(|_| now.clone()),
            jwks_json,
            discovered_jwks_json: discovered,
            isolated: request.isolated,
            create_time: now,
        };
        // Rows stored before issuers were kept canonical are compared by their canonical form.
        let alias = self
            .store
            .list_clusters(&row.project_id, "-")
            .await?
            .into_iter()
            .any(|c| names::canonical_issuer(&c.issuer_uri) == row.issuer_uri);
        let created = if alias {
            Err(StoreError::AlreadyExists)
        } else {
            self.store.create_cluster(&row).await
        };
        match created {
            Err(StoreError::AlreadyExists) => return Err(self.already_registered(&row).await),
            other => other?,
        }
        tracing::info!(caller = %caller, cluster = %row.name, location = %row.location, project = %row.project_id,
            isolated = row.isolated, issuer = %row.issuer_uri, "cluster registered");
        Ok(render(&row))
    }

    /// The keys of a cluster registered with discovery; a failure is told generically (what the
    /// issuer answered is only in the log: registering is no probe of the service's network).
    async fn discover_cluster_keys(
        &self,
        caller: &Caller,
        issuer_uri: &str,
    ) -> Result<String, ApiError> {
        let fetched =
            crate::discovery::fetch_jwks(&self.http, issuer_uri, self.config.discovery_timeout)
                .await;
        fetched.map_err(|e| {
            tracing::warn!(caller = %caller, issuer = %issuer_uri, error = %e, "a cluster's key discovery failed; not registered");
            ApiError::FailedPrecondition(format!(
                "Cannot fetch the keys of issuer {issuer_uri} through OpenID Connect discovery: {}.",
                crate::discovery::DISCOVERY_FAILED
            ))
        })
    }

    /// Why `row` cannot be registered: its name is taken, or its issuer is another cluster's.
    async fn already_registered(&self, row: &ClusterRow) -> ApiError {
        let name = format!(
            "projects/{}/locations/{}/clusters/{}",
            row.project_id, row.location, row.name
        );
        let taken = self
            .store
            .get_cluster(&row.project_id, &row.location, &row.name)
            .await
            .is_ok();
        let message = if taken {
            format!("Cluster {name} already exists.")
        } else {
            format!(
                "Another cluster of project {} has the issuer {}; each cluster needs its own (kube-apiserver --service-account-issuer).",
                row.project_id, row.issuer_uri
            )
        };
        ApiError::AlreadyExists {
            message,
            resource: name,
        }
    }

    async fn cluster_row(
        &self,
        owner_id: &str,
        location: &str,
        name: &str,
    ) -> Result<ClusterRow, ApiError> {
        match self.store.get_cluster(owner_id, location, name).await {
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
                "Cluster projects/{owner_id}/locations/{location}/clusters/{name} is not registered."
            ))),
            other => Ok(other?),
        }
    }

    pub(crate) async fn get_cluster(
        &self,
        caller: &Caller,
        name: &ClusterName,
    ) -> Result<Cluster, ApiError> {
        let owner = self.project(&name.parent.project).await?;
        self.require(caller, CLUSTER_GET, &Resource::Project(&owner))
            .await?;
        let row = self
            .cluster_row(&owner.project_id, &name.parent.location, &name.name)
            .await?;
        Ok(render(&row))
    }

    pub(crate) async fn list_clusters(
        &self,
        caller: &Caller,
        parent: &LocationName,
    ) -> Result<ListClustersResponse, ApiError> {
        let owner = self.project(&parent.project).await?;
        self.require(caller, CLUSTER_LIST, &Resource::Project(&owner))
            .await?;
        let clusters = self
            .store
            .list_clusters(&owner.project_id, &parent.location)
            .await?
            .iter()
            .map(render)
            .collect();
        Ok(ListClustersResponse { clusters })
    }

    pub(crate) async fn delete_cluster(
        &self,
        caller: &Caller,
        name: &ClusterName,
    ) -> Result<(), ApiError> {
        let owner = self.project(&name.parent.project).await?;
        self.require(caller, CLUSTER_DELETE, &Resource::Project(&owner))
            .await?;
        let row = self
            .cluster_row(&owner.project_id, &name.parent.location, &name.name)
            .await?;
        self.store
            .delete_cluster(&row.project_id, &row.location, &row.name)
            .await?;
        tracing::info!(caller = %caller, cluster = %row.name, location = %row.location, "cluster deleted");
        Ok(())
    }
}
