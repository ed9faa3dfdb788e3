//! Projects: an id, a number, and the fixed GKE workload identity pool `P.svc.id.goog`.

use wid_api::project::{ListProjectsResponse, Project};
use wid_iam::Caller;
use wid_iam::names;
use wid_iam::roles::PROJECT_GET;
use wid_store::{ProjectRow, StoreError};

use crate::App;
use crate::auth::Resource;
use crate::error::ApiError;

pub(crate) fn render(row: &ProjectRow) -> Project {
    Project {
        project_id: row.project_id.clone(),
        project_number: row.project_number.clone(),
        name: row.display_name.clone(),
        lifecycle_state: "ACTIVE".into(),
        create_time: row.create_time.clone(),
        workload_identity_pool: names::gke_pool(&row.project_id),
        allow_service_account_keys: row.allow_service_account_keys,
        key_max_lifetime: match row.key_max_lifetime_seconds {
            0 => String::new(),
            seconds => wid_api::time::duration(seconds),
        },
    }
}

impl App {
    /// A project by id or number; NOT_FOUND names what was asked for.
    pub(crate) async fn project(&self, id_or_number: &str) -> Result<ProjectRow, ApiError> {
        match self.store.get_project(id_or_number).await {
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
                "Project '{id_or_number}' not found. Create it with `wid iam projects create {id_or_number}`."
            ))),
            other => Ok(other?),
        }
    }

    pub(crate) async fn create_project(
        &self,
        caller: &Caller,
        request: Project,
    ) -> Result<Project, ApiError> {
        if *caller != Caller::BootstrapAdmin {
            return Err(ApiError::PermissionDenied {
                permission: "resourcemanager.projects.create",
            });
        }
        names::validate_project_id(&request.project_id)
            .map_err(|m| ApiError::invalid("projectId", m))?;
        super::check_len("name", &request.name, 100)?;
        if !request.project_number.is_empty() {
            names::validate_project_number(&request.project_number)
                .map_err(|m| ApiError::invalid("projectNumber", m))?;
        }
        let display_name = if request.name.is_empty() {
            request.project_id.clone()
        } else {
            request.name
        };
        // An assigned number may collide with an existing one; draw again a few times.
        for _ in 0..5 {
            let number = if request.project_number.is_empty() {
                wid_runtime::secrets::random_digits(12)
            } else {
                request.project_number.clone()
            };
            let row = ProjectRow {
                project_id: request.project_id.clone(),
                project_number: number,
                display_name: display_name.clone(),
                create_time: super::now_rfc3339(),
                allow_service_account_keys: false,
                key_max_lifetime_seconds: 0,
            };
            match self.store.create_project(&row).await {
                Ok(()) => {
                    tracing::info!(project = %row.project_id, number = %row.project_number, "project created");
                    return Ok(render(&row));
                }
                Err(StoreError::AlreadyExists) => {
                    if self.store.get_project(&request.project_id).await.is_ok() {
                        return Err(ApiError::AlreadyExists {
                            message: format!("Project '{}' already exists.", request.project_id),
                            resource: format!("projects/{}", request.project_id),
                        });
                    }
                    if !request.project_number.is_empty() {
                        return Err(ApiError::AlreadyExists {
                            message: format!(
                                "Project number {} is taken by another project.",
                                row.project_number
                            ),
                            resource: format!("projects/{}", row.project_number),
                        });
                    }
                    // A drawn number collided: draw again.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Internal(
            "could not assign a unique project number".into(),
        ))
    }

    pub(crate) async fn get_project(&self, caller: &Caller, id: &str) -> Result<Project, ApiError> {
        let row = self.project(id).await?;
        self.require(caller, PROJECT_GET, &Resource::Project(&row))
            .await?;
        Ok(render(&row))
    }

    pub(crate) async fn list_projects(
        &self,
        caller: &Caller,
    ) -> Result<ListProjectsResponse, ApiError> {
        let mut projects = Vec::new();
        for row in self.store.list_projects().await? {
            if self
                .require(caller, PROJECT_GET, &Resource::Project(&row))
                .await
                .is_ok()
            {
                projects.push(render(&row));
            }
        }
        Ok(ListProjectsResponse {
            projects,
            next_page_token: None,
        })
    }
}
