//! Workload identity pools ([`super::providers`] has their providers). Mutations answer with an
//! Operation that is already done, which gcloud accepts without polling.

use wid_api::operation::Operation;
use wid_api::pool::{ListWorkloadIdentityPoolsResponse, WorkloadIdentityPool};
use wid_iam::roles::{POOL_CREATE, POOL_DELETE, POOL_GET, POOL_LIST, POOL_UPDATE};
use wid_iam::{Caller, names};
use wid_store::{PoolRow, ProjectRow, StoreError};

use crate::App;
use crate::auth::Resource;
use crate::error::ApiError;
use crate::http::Input;
use crate::routes::{LocationName, PoolName};

const POOL_TYPE: &str = "google.iam.v1.WorkloadIdentityPool";

pub(super) fn pool_name(project_number: &str, pool_id: &str) -> String {
    format!("projects/{project_number}/locations/global/workloadIdentityPools/{pool_id}")
}

fn render_pool(row: &PoolRow) -> WorkloadIdentityPool {
    WorkloadIdentityPool {
        name: pool_name(&row.project_number, &row.pool_id),
        display_name: row.display_name.clone(),
        description: row.description.clone(),
        state: "ACTIVE".into(),
        disabled: row.disabled,
        ..WorkloadIdentityPool::default()
    }
}

/// The project's fixed GKE pool, which exists without being created.
fn gke_pool(project: &ProjectRow) -> WorkloadIdentityPool {
    WorkloadIdentityPool {
        name: pool_name(
            &project.project_number,
            &names::gke_pool(&project.project_id),
        ),
        display_name: "GKE workload identity pool".into(),
        description: "Kubernetes service accounts of the project's registered clusters".into(),
        state: "ACTIVE".into(),
        ..WorkloadIdentityPool::default()
    }
}

pub(super) fn operation(
    resource_name: &str,
    type_name: &str,
    resource: &impl serde::Serialize,
) -> Operation {
    Operation::done(
        format!(
            "{resource_name}/operations/{}",
            wid_runtime::secrets::random_hex::<8>()
        ),
        type_name,
        resource,
    )
}

/// A concurrent update won the compare-and-swap.
pub(super) fn changed_meanwhile(e: StoreError) -> ApiError {
    match e {
        StoreError::Aborted => ApiError::Aborted(
            "The resource changed while this update was applied. Read it again and retry.".into(),
        ),
        other => other.into(),
    }
}

/// A registered cluster, shown read-only as a provider of the project's GKE pool; its provider
/// id is the cluster's uid.
pub(super) fn check_location(location: &str) -> Result<(), ApiError> {
    if location != "global" {
        return Err(ApiError::invalid(
            "location",
            format!("Workload identity pools live in location 'global', not '{location}'."),
        ));
    }
    Ok(())
}

/// Which provider fields a PATCH may change.
impl App {
    pub(super) async fn pool_project(
        &self,
        caller: &Caller,
        parent: &LocationName,
        permission: &'static str,
    ) -> Result<ProjectRow, ApiError> {
        check_location(&parent.location)?;
        let owner = self.project(&parent.project).await?;
        self.require(caller, permission, &Resource::Project(&owner))
            .await?;
        Ok(owner)
    }

    /// A pool that can change; the project's fixed GKE pool cannot.
    pub(super) async fn pool_row(
        &self,
        owner: &ProjectRow,
        pool: &str,
    ) -> Result<PoolRow, ApiError> {
        if pool == names::gke_pool(&owner.project_id) {
            return Err(ApiError::FailedPrecondition(format!(
                "{pool} is the project's fixed GKE workload identity pool: it cannot be changed, and its providers are the clusters registered with `wid iam clusters register`."
            )));
        }
        match self.store.get_pool(&owner.project_number, pool).await {
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
                "Workload identity pool {} does not exist.",
                pool_name(&owner.project_number, pool)
            ))),
            other => Ok(other?),
        }
    }

    pub(crate) async fn create_pool(
        &self,
        caller: &Caller,
        parent: &LocationName,
        input: &Input,
    ) -> Result<Operation, ApiError> {
        let request: WorkloadIdentityPool = input.json()?;
        let owner = self.pool_project(caller, parent, POOL_CREATE).await?;
        let pool_id = input.query("workloadIdentityPoolId").unwrap_or_default();
        names::validate_pool_id("pool", pool_id)
            .map_err(|m| ApiError::invalid("workloadIdentityPoolId", m))?;
        super::check_len("displayName", &request.display_name, 32)?;
        super::check_len("description", &request.description, 256)?;
        let row = PoolRow {
            project_number: owner.project_number.clone(),
            pool_id: pool_id.to_owned(),
            display_name: request.display_name,
            description: request.description,
            disabled: request.disabled,
            create_time: super::now_rfc3339(),
            version: 0,
        };
        match self.store.create_pool(&row).await {
            Err(StoreError::AlreadyExists) => {
                return Err(ApiError::AlreadyExists {
                    message: format!(
                        "Workload identity pool {} already exists.",
                        pool_name(&row.project_number, pool_id)
                    ),
                    resource: pool_name(&row.project_number, pool_id),
                });
            }
            other => other?,
        }
        tracing::info!(caller = %caller, pool = %pool_name(&row.project_number, pool_id), "pool created");
        let pool = render_pool(&row);
        Ok(operation(&pool.name, POOL_TYPE, &pool))
    }

    pub(crate) async fn get_pool(
        &self,
        caller: &Caller,
        name: &PoolName,
    ) -> Result<WorkloadIdentityPool, ApiError> {
        let owner = self.pool_project(caller, &name.parent, POOL_GET).await?;
        let pool = name.pool.as_str();
        if pool == names::gke_pool(&owner.project_id) {
            return Ok(gke_pool(&owner));
        }
        Ok(render_pool(&self.pool_row(&owner, pool).await?))
    }

    pub(crate) async fn list_pools(
        &self,
        caller: &Caller,
        parent: &LocationName,
    ) -> Result<ListWorkloadIdentityPoolsResponse, ApiError> {
        let owner = self.pool_project(caller, parent, POOL_LIST).await?;
        let mut pools = vec![gke_pool(&owner)];
        pools.extend(
            self.store
                .list_pools(&owner.project_number)
                .await?
                .iter()
                .map(render_pool),
        );
        Ok(ListWorkloadIdentityPoolsResponse {
            workload_identity_pools: pools,
            next_page_token: None,
        })
    }

    pub(crate) async fn update_pool(
        &self,
        caller: &Caller,
        name: &PoolName,
        input: &Input,
    ) -> Result<Operation, ApiError> {
        let request: WorkloadIdentityPool = input.json()?;
        let owner = self.pool_project(caller, &name.parent, POOL_UPDATE).await?;
        let pool = name.pool.as_str();
        let mut row = self.pool_row(&owner, pool).await?;
        let mask = input.query("updateMask").filter(|m| !m.trim().is_empty()).ok_or_else(|| {
            ApiError::invalid("updateMask", "updateMask is required: name the fields to change (displayName, description, disabled).")
        })?;
        for field in mask.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "displayName" | "display_name" => row.display_name = request.display_name.clone(),
                "description" => row.description = request.description.clone(),
                "disabled" => row.disabled = request.disabled,
                other => {
                    return Err(ApiError::invalid(
                        "updateMask",
                        format!("updateMask names '{other}', which cannot be updated."),
                    ));
                }
            }
        }
        super::check_len("displayName", &row.display_name, 32)?;
        super::check_len("description", &row.description, 256)?;
        self.store
            .update_pool(&row)
            .await
            .map_err(changed_meanwhile)?;
        tracing::info!(caller = %caller, pool = %pool_name(&row.project_number, pool), "pool updated");
        let rendered = render_pool(&row);
        Ok(operation(&rendered.name, POOL_TYPE, &rendered))
    }

    pub(crate) async fn delete_pool(
        &self,
        caller: &Caller,
        name: &PoolName,
    ) -> Result<Operation, ApiError> {
        let owner = self.pool_project(caller, &name.parent, POOL_DELETE).await?;
        let pool = name.pool.as_str();
        let row = self.pool_row(&owner, pool).await?;
        self.store
            .delete_pool(&row.project_number, &row.pool_id)
            .await?;
        tracing::info!(caller = %caller, pool = %pool_name(&row.project_number, pool), "pool deleted");
        let mut rendered = render_pool(&row);
        rendered.state = "DELETED".into();
        Ok(operation(&rendered.name, POOL_TYPE, &rendered))
    }
}
