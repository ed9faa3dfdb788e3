//! Service accounts, as IAM v1 has them.

use base64::Engine;
use wid_api::iam::{
    CreateServiceAccountRequest, ListServiceAccountsResponse, PatchServiceAccountRequest,
    ServiceAccount,
};
use wid_iam::roles::{SA_CREATE, SA_DELETE, SA_DISABLE, SA_ENABLE, SA_GET, SA_LIST, SA_UPDATE};
use wid_iam::{Caller, names};
use wid_store::{ProjectRow, ServiceAccountRow, StoreError};

use crate::App;
use crate::auth::Resource;
use crate::error::ApiError;
use crate::http::Input;
use crate::routes::AccountName;

const MAX_DISPLAY_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 256;
const MAX_PAGE_SIZE: usize = 100;

pub(crate) fn render(row: &ServiceAccountRow) -> ServiceAccount {
    ServiceAccount {
        name: format!("projects/{}/serviceAccounts/{}", row.project_id, row.email),
        project_id: row.project_id.clone(),
        unique_id: row.unique_id.clone(),
        email: row.email.clone(),
        display_name: row.display_name.clone(),
        description: row.description.clone(),
        etag: row.etag.clone(),
        oauth2_client_id: row.unique_id.clone(),
        disabled: row.disabled,
    }
}

/// Which fields a PATCH may change.
#[derive(Default)]
struct Mask {
    display_name: bool,
    description: bool,
}

fn parse_mask(mask: &str) -> Result<Mask, ApiError> {
    let mut m = Mask::default();
    for field in mask.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field {
            "displayName" | "display_name" => m.display_name = true,
            "description" => m.description = true,
            other => {
                return Err(ApiError::invalid(
                    "updateMask",
                    format!(
                        "updateMask names '{other}', which cannot be updated; use displayName and description."
                    ),
                ));
            }
        }
    }
    Ok(m)
}

/// The lengths of the fields a caller sets.
fn check_fields(fields: &ServiceAccount) -> Result<(), ApiError> {
    super::check_len(
        "serviceAccount.displayName",
        &fields.display_name,
        MAX_DISPLAY_NAME,
    )?;
    super::check_len(
        "serviceAccount.description",
        &fields.description,
        MAX_DESCRIPTION,
    )
}

impl App {
    /// The account a path names (its email or unique id, under its project's id, number or
    /// `-`), with its project. Under `-` an unknown account is PERMISSION_DENIED for
    /// `permission`, as Google answers, so that its existence does not leak.
    pub(crate) async fn account(
        &self,
        name: &AccountName,
        permission: &'static str,
    ) -> Result<(ProjectRow, ServiceAccountRow), ApiError> {
        let (project, account) = (name.project.as_str(), name.account.as_str());
        let missing = || {
            if project == "-" {
                ApiError::PermissionDenied { permission }
            } else {
                ApiError::NotFound(format!(
                    "Service account projects/{project}/serviceAccounts/{account} does not exist."
                ))
            }
        };
        let row = match self.store.get_service_account(account).await {
            Err(StoreError::NotFound) => return Err(missing()),
            other => other?,
        };
        let owner = self.store.get_project(&row.project_id).await?;
        if project != "-" && project != owner.project_id && project != owner.project_number {
            return Err(missing());
        }
        Ok((owner, row))
    }

    pub(crate) async fn create_service_account(
        &self,
        caller: &Caller,
        project: &str,
        request: CreateServiceAccountRequest,
    ) -> Result<ServiceAccount, ApiError> {
        if project == "-" {
            return Err(ApiError::invalid(
                "name",
                "A service account is created in a named project, not in projects/-.",
            ));
        }
        let owner = self.project(project).await?;
        self.require(caller, SA_CREATE, &Resource::Project(&owner))
            .await?;
        names::validate_account_id(&request.account_id)
            .map_err(|m| ApiError::invalid("accountId", m))?;
        let fields = request.service_account.unwrap_or_default();
        check_fields(&fields)?;
        let email = names::service_account_email(&request.account_id, &owner.project_id);
        let already = || ApiError::AlreadyExists {
            message: format!(
                "Service account {} already exists within project projects/{}.",
                request.account_id, owner.project_id
            ),
            resource: format!("projects/{}/serviceAccounts/{email}", owner.project_id),
        };
        if self.store.get_service_account(&email).await.is_ok() {
            return Err(already());
        }
        for _ in 0..5 {
            let row = ServiceAccountRow {
                // Google's unique ids are 21 digits starting with 1.
                unique_id: format!("1{}", wid_runtime::secrets::random_digits(20)),
                project_id: owner.project_id.clone(),
                account_id: request.account_id.clone(),
                email: email.clone(),
                display_name: fields.display_name.clone(),
                description: fields.description.clone(),
                disabled: false,
                etag: super::new_etag(),
                create_time: super::now_rfc3339(),
            };
            match self.store.create_service_account(&row).await {
                Ok(()) => {
                    tracing::info!(caller = %caller, account = %row.email, unique_id = %row.unique_id, "service account created");
                    return Ok(render(&row));
                }
                // Either the email was taken meanwhile, or the drawn unique id was used before.
                Err(StoreError::AlreadyExists) => {
                    if self.store.get_service_account(&email).await.is_ok() {
                        return Err(already());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::Internal("could not assign a unique id".into()))
    }

    pub(crate) async fn get_service_account(
        &self,
        caller: &Caller,
        name: &AccountName,
    ) -> Result<ServiceAccount, ApiError> {
        let (owner, row) = self.account(name, SA_GET).await?;
        self.require(caller, SA_GET, &Resource::ServiceAccount(&owner, &row))
            .await?;
        Ok(render(&row))
    }

    pub(crate) async fn list_service_accounts(
        &self,
        caller: &Caller,
        project: &str,
        input: &Input,
    ) -> Result<ListServiceAccountsResponse, ApiError> {
        let (page_size, page_token) = (input.query("pageSize"), input.query("pageToken"));
        if project == "-" {
            return Err(ApiError::invalid(
                "name",
                "Listing needs a named project, not projects/-.",
            ));
        }
        let owner = self.project(project).await?;
        self.require(caller, SA_LIST, &Resource::Project(&owner))
            .await?;
        let size = match page_size {
            None | Some("") | Some("0") => MAX_PAGE_SIZE,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| {
                    ApiError::invalid(
                        "pageSize",
                        format!("pageSize must be a non-negative integer, not '{s}'."),
                    )
                })?
                .min(MAX_PAGE_SIZE),
        };
        // The page token is the last email of the previous page, so pages stay stable while
        // accounts are added or removed.
        let after = match page_token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ApiError::invalid("pageToken", "Invalid page token."))?,
            ),
        };
        let rows = self.store.list_service_accounts(&owner.project_id).await?;
        let mut rest = rows
            .iter()
            .filter(|r| after.as_ref().is_none_or(|a| r.email > *a))
            .peekable();
        let accounts: Vec<ServiceAccount> = rest.by_ref().take(size).map(render).collect();
        let next_page_token = match (rest.peek(), accounts.last()) {
            (Some(_), Some(last)) => {
                Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last.email))
            }
            _ => None,
        };
        Ok(ListServiceAccountsResponse {
            accounts,
            next_page_token,
        })
    }

    /// PATCH: the fields the update mask names.
    pub(crate) async fn patch_service_account(
        &self,
        caller: &Caller,
        name: &AccountName,
        request: PatchServiceAccountRequest,
    ) -> Result<ServiceAccount, ApiError> {
        let mask = match request.update_mask.as_deref() {
            Some(m) if !m.trim().is_empty() => parse_mask(m)?,
            _ => {
                return Err(ApiError::invalid(
                    "updateMask",
                    "updateMask is required: name the fields to change (displayName, description).",
                ));
            }
        };
        let fields = request.service_account.unwrap_or_default();
        self.update_service_account(caller, name, fields, mask)
            .await
    }

    /// PUT: the whole resource.
    pub(crate) async fn replace_service_account(
        &self,
        caller: &Caller,
        name: &AccountName,
        whole: ServiceAccount,
    ) -> Result<ServiceAccount, ApiError> {
        let mask = Mask {
            display_name: true,
            description: true,
        };
        self.update_service_account(caller, name, whole, mask).await
    }

    async fn update_service_account(
        &self,
        caller: &Caller,
        name: &AccountName,
        fields: ServiceAccount,
        mask: Mask,
    ) -> Result<ServiceAccount, ApiError> {
        let (owner, row) = self.account(name, SA_UPDATE).await?;
        self.require(caller, SA_UPDATE, &Resource::ServiceAccount(&owner, &row))
            .await?;
        check_fields(&fields)?;
        if !fields.etag.is_empty() && super::canonical_etag(&fields.etag) != row.etag {
            return Err(ApiError::Aborted(format!(
                "The service account changed since it was read: etag '{}' is not the current '{}'. Read it again and retry.",
                fields.etag, row.etag
            )));
        }
        let mut updated = row.clone();
        if mask.display_name {
            updated.display_name = fields.display_name;
        }
        if mask.description {
            updated.description = fields.description;
        }
        updated.etag = super::new_etag();
        self.store
            .update_service_account(&updated, &row.etag)
            .await?;
        tracing::info!(caller = %caller, account = %row.email, "service account updated");
        Ok(render(&updated))
    }

    pub(crate) async fn set_service_account_disabled(
        &self,
        caller: &Caller,
        name: &AccountName,
        disabled: bool,
    ) -> Result<(), ApiError> {
        let permission = if disabled { SA_DISABLE } else { SA_ENABLE };
        let (owner, row) = self.account(name, permission).await?;
        self.require(caller, permission, &Resource::ServiceAccount(&owner, &row))
            .await?;
        if row.disabled == disabled {
            return Ok(());
        }
        let mut updated = row.clone();
        updated.disabled = disabled;
        updated.etag = super::new_etag();
        // Retry once on a concurrent edit: disabling does not depend on the other fields.
        if let Err(StoreError::Aborted) =
            self.store.update_service_account(&updated, &row.etag).await
        {
            let (_, fresh) = self.account(name, permission).await?;
            let mut again = fresh.clone();
            again.disabled = disabled;
            again.etag = super::new_etag();
            self.store
                .update_service_account(&again, &fresh.etag)
                .await?;
        }
        tracing::info!(caller = %caller, account = %row.email, disabled, "service account state changed");
        Ok(())
    }

    pub(crate) async fn delete_service_account(
        &self,
        caller: &Caller,
        name: &AccountName,
    ) -> Result<(), ApiError> {
        let (owner, row) = self.account(name, SA_DELETE).await?;
        self.require(caller, SA_DELETE, &Resource::ServiceAccount(&owner, &row))
            .await?;
        self.store.delete_service_account(&row.unique_id).await?;
        self.retire_member(&row.email, &row.unique_id).await?;
        tracing::info!(caller = %caller, account = %row.email, "service account deleted");
        Ok(())
    }
}
