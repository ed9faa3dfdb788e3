//! Workload identity pool providers (OIDC), and the registered clusters the GKE pool shows as
//! its providers.

use std::collections::BTreeMap;

use wid_api::operation::Operation;
use wid_api::pool::{
    ListWorkloadIdentityPoolProvidersResponse, Oidc, WorkloadIdentityPoolProvider,
};
use wid_iam::roles::{
    PROVIDER_CREATE, PROVIDER_DELETE, PROVIDER_GET, PROVIDER_LIST, PROVIDER_UPDATE,
};
use wid_iam::{Caller, expr, names};
use wid_store::{KeySetOwner, ProjectRow, ProviderRow, StoreError};

use super::pools::{changed_meanwhile, operation, pool_name};
use crate::App;
use crate::error::ApiError;
use crate::http::Input;
use crate::routes::{PoolName, ProviderName};

const PROVIDER_TYPE: &str = "google.iam.v1.WorkloadIdentityPoolProvider";
const MAX_MAPPING_EXPRESSION: usize = 2048;
const MAX_CUSTOM_ATTRIBUTES: usize = 50;
const MAX_AUDIENCES: usize = 10;

fn render_provider(row: &ProviderRow) -> WorkloadIdentityPoolProvider {
    WorkloadIdentityPoolProvider {
        name: format!(
            "{}/providers/{}",
            pool_name(&row.project_number, &row.pool_id),
            row.provider_id
        ),
        display_name: row.display_name.clone(),
        description: row.description.clone(),
        state: "ACTIVE".into(),
        disabled: row.disabled,
        attribute_mapping: row.attribute_mapping.clone(),
        attribute_condition: row.attribute_condition.clone(),
        oidc: Some(Oidc {
            issuer_uri: row.issuer_uri.clone(),
            allowed_audiences: row.allowed_audiences.clone(),
            jwks_json: row.jwks_json.clone().unwrap_or_default(),
        }),
        expire_time: String::new(),
    }
}

fn cluster_as_provider(
    project: &ProjectRow,
    cluster: &wid_store::ClusterRow,
) -> WorkloadIdentityPoolProvider {
    WorkloadIdentityPoolProvider {
        name: format!(
            "{}/providers/{}",
            pool_name(
                &project.project_number,
                &names::gke_pool(&project.project_id)
            ),
            cluster.uid
        ),
        display_name: format!("cluster {}/{}", cluster.location, cluster.name),
        description: format!(
            "Kubernetes cluster projects/{}/locations/{}/clusters/{}; manage it with `wid iam clusters`.",
            cluster.project_id, cluster.location, cluster.name
        ),
        state: "ACTIVE".into(),
        disabled: false,
        attribute_mapping: BTreeMap::from([(
            "google.subject".to_owned(),
            "assertion.sub".to_owned(),
        )]),
        attribute_condition: String::new(),
        oidc: Some(Oidc {
            issuer_uri: cluster.issuer_uri.clone(),
            allowed_audiences: vec![names::gke_pool(&project.project_id)],
            jwks_json: cluster.jwks_json.clone().unwrap_or_default(),
        }),
        expire_time: String::new(),
    }
}

#[derive(Default)]
struct ProviderMask {
    display_name: bool,
    description: bool,
    disabled: bool,
    attribute_mapping: bool,
    attribute_condition: bool,
    issuer_uri: bool,
    allowed_audiences: bool,
    jwks_json: bool,
}

fn provider_mask(mask: &str) -> Result<ProviderMask, ApiError> {
    let mut m = ProviderMask::default();
    for field in mask.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field {
            "displayName" | "display_name" => m.display_name = true,
            "description" => m.description = true,
            "disabled" => m.disabled = true,
            "attributeMapping" | "attribute_mapping" => m.attribute_mapping = true,
            "attributeCondition" | "attribute_condition" => m.attribute_condition = true,
            "oidc" => {
                m.issuer_uri = true;
                m.allowed_audiences = true;
                m.jwks_json = true;
            }
            "oidc.issuerUri" | "oidc.issuer_uri" => m.issuer_uri = true,
            "oidc.allowedAudiences" | "oidc.allowed_audiences" => m.allowed_audiences = true,
            "oidc.jwksJson" | "oidc.jwks_json" => m.jwks_json = true,
            other => {
                return Err(ApiError::invalid(
                    "updateMask",
                    format!("updateMask names '{other}', which cannot be updated."),
                ));
            }
        }
    }
    Ok(m)
}

/// Validates an attribute mapping; an empty one becomes `google.subject=assertion.sub`.
fn check_mapping(mapping: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    if mapping.is_empty() {
        return Ok(BTreeMap::from([(
            "google.subject".to_owned(),
            "assertion.sub".to_owned(),
        )]));
    }
    let field = "attributeMapping";
    if !mapping.contains_key("google.subject") {
        return Err(ApiError::invalid(
            field,
            "The attribute mapping must map google.subject.",
        ));
    }
    let mut custom = 0;
    for (key, expression) in &mapping {
        match key.strip_prefix("attribute.") {
            Some(name) => {
                custom += 1;
                let ok = !name.is_empty()
                    && name.len() <= 100
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(ApiError::invalid(
                        field,
                        format!(
                            "Attribute '{key}': custom names are attribute.[a-z0-9_]{{1,100}}."
                        ),
                    ));
                }
            }
            None if ["google.subject", "google.groups", "google.display_name"]
                .contains(&key.as_str()) => {}
            None => {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "Attribute '{key}' is not supported: use google.subject, google.groups, google.display_name or attribute.NAME."
                    ),
                ));
            }
        }
        if expression.len() > MAX_MAPPING_EXPRESSION {
            return Err(ApiError::invalid(
                field,
                format!(
                    "The expression of '{key}' is longer than {MAX_MAPPING_EXPRESSION} characters."
                ),
            ));
        }
        expr::parse(expression).map_err(|e| {
            ApiError::invalid(field, format!("The expression of '{key}' is invalid: {e}."))
        })?;
    }
    if custom > MAX_CUSTOM_ATTRIBUTES {
        return Err(ApiError::invalid(
            field,
            format!("At most {MAX_CUSTOM_ATTRIBUTES} custom attributes may be mapped."),
        ));
    }
    Ok(mapping)
}

fn check_condition(condition: &str) -> Result<(), ApiError> {
    if condition.is_empty() {
        return Ok(());
    }
    expr::parse(condition).map(|_| ()).map_err(|e| {
        ApiError::invalid(
            "attributeCondition",
            format!("The attribute condition is invalid: {e}."),
        )
    })
}

fn check_oidc(oidc: &Oidc) -> Result<(), ApiError> {
    names::validate_issuer_uri(&oidc.issuer_uri)
        .map_err(|m| ApiError::invalid("oidc.issuerUri", m))?;
    if oidc.allowed_audiences.len() > MAX_AUDIENCES {
        return Err(ApiError::invalid(
            "oidc.allowedAudiences",
            format!("At most {MAX_AUDIENCES} audiences are allowed."),
        ));
    }
    if oidc
        .allowed_audiences
        .iter()
        .any(|a| a.is_empty() || a.len() > 256)
    {
        return Err(ApiError::invalid(
            "oidc.allowedAudiences",
            "Each audience must be 1 to 256 characters.",
        ));
    }
    if !oidc.jwks_json.is_empty() {
        crate::jwks::validate(&oidc.jwks_json)
            .map_err(|e| ApiError::invalid("oidc.jwksJson", format!("Invalid JWKS: {e}.")))?;
    }
    Ok(())
}

impl App {
    async fn provider_row(
        &self,
        owner: &ProjectRow,
        pool: &str,
        provider: &str,
    ) -> Result<ProviderRow, ApiError> {
        self.pool_row(owner, pool).await?;
        match self
            .store
            .get_provider(&owner.project_number, pool, provider)
            .await
        {
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
                "Workload identity pool provider {}/providers/{provider} does not exist.",
                pool_name(&owner.project_number, pool)
            ))),
            other => Ok(other?),
        }
    }

    pub(crate) async fn create_provider(
        &self,
        caller: &Caller,
        parent: &PoolName,
        input: &Input,
    ) -> Result<Operation, ApiError> {
        let request: WorkloadIdentityPoolProvider = input.json()?;
        let owner = self
            .pool_project(caller, &parent.parent, PROVIDER_CREATE)
            .await?;
        let pool = parent.pool.as_str();
        if pool == names::gke_pool(&owner.project_id) {
            return Err(ApiError::invalid(
                "parent",
                "The GKE pool's providers are Kubernetes clusters: register them with `wid iam clusters register`.",
            ));
        }
        self.pool_row(&owner, pool).await?;
        let provider_id = input
            .query("workloadIdentityPoolProviderId")
            .unwrap_or_default();
        names::validate_pool_id("provider", provider_id)
            .map_err(|m| ApiError::invalid("workloadIdentityPoolProviderId", m))?;
        super::check_len("displayName", &request.display_name, 32)?;
        super::check_len("description", &request.description, 256)?;
        let oidc = request.oidc.ok_or_else(|| {
            ApiError::invalid(
                "oidc",
                "Only OIDC providers are supported: set oidc.issuerUri.",
            )
        })?;
        check_oidc(&oidc)?;
        let mapping = check_mapping(request.attribute_mapping)?;
        check_condition(&request.attribute_condition)?;
        let row = ProviderRow {
            project_number: owner.project_number.clone(),
            pool_id: pool.to_owned(),
            provider_id: provider_id.to_owned(),
            display_name: request.display_name,
            description: request.description,
            disabled: request.disabled,
            attribute_mapping: mapping,
            attribute_condition: request.attribute_condition,
            issuer_uri: oidc.issuer_uri.clone(),
            allowed_audiences: oidc.allowed_audiences.clone(),
            jwks_json: (!oidc.jwks_json.is_empty()).then_some(oidc.jwks_json),
            discovered_jwks_json: None,
            jwks_fetch_time: None,
            create_time: super::now_rfc3339(),
            version: 0,
        };
        let rendered = render_provider(&row);
        match self.store.create_provider(&row).await {
            Err(StoreError::AlreadyExists) => {
                return Err(ApiError::AlreadyExists {
                    message: format!(
                        "Workload identity pool provider {} already exists.",
                        rendered.name
                    ),
                    resource: rendered.name,
                });
            }
            other => other?,
        }
        tracing::info!(caller = %caller, provider = %rendered.name, "provider created");
        if row.jwks_json.is_none() {
            self.refresh_in_background(&row);
        }
        Ok(operation(&rendered.name, PROVIDER_TYPE, &rendered))
    }

    /// A first fetch of a new provider's keys, without holding up the answer; the refresher
    /// keeps trying if it fails.
    fn refresh_in_background(&self, row: &ProviderRow) {
        let owner = KeySetOwner::Provider {
            project_number: row.project_number.clone(),
            pool_id: row.pool_id.clone(),
            provider_id: row.provider_id.clone(),
        };
        let issuer = row.issuer_uri.clone();
        let http = self.http.clone();
        let store = self.store.clone();
        let timeout = self.config.discovery_timeout;
        tokio::spawn(async move {
            match crate::discovery::fetch_jwks(&http, &issuer, timeout).await {
                Ok(jwks) => {
                    if let Err(e) = store
                        .set_discovered_jwks(&owner, &issuer, &jwks, &super::now_rfc3339())
                        .await
                    {
                        tracing::warn!(issuer = %issuer, error = %e, "cannot store discovered keys");
                    }
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer, error = %e, "key discovery failed; will retry")
                }
            }
        });
    }

    pub(crate) async fn get_provider(
        &self,
        caller: &Caller,
        name: &ProviderName,
    ) -> Result<WorkloadIdentityPoolProvider, ApiError> {
        let owner = self
            .pool_project(caller, &name.pool.parent, PROVIDER_GET)
            .await?;
        let (pool, provider) = (name.pool.pool.as_str(), name.provider.as_str());
        if pool == names::gke_pool(&owner.project_id) {
            let clusters = self.store.list_clusters(&owner.project_id, "-").await?;
            return clusters
                .iter()
                .find(|c| c.uid == provider)
                .map(|c| cluster_as_provider(&owner, c))
                .ok_or_else(|| {
                    ApiError::NotFound(format!("No registered cluster has the uid {provider}."))
                });
        }
        Ok(render_provider(
            &self.provider_row(&owner, pool, provider).await?,
        ))
    }

    pub(crate) async fn list_providers(
        &self,
        caller: &Caller,
        parent: &PoolName,
    ) -> Result<ListWorkloadIdentityPoolProvidersResponse, ApiError> {
        let owner = self
            .pool_project(caller, &parent.parent, PROVIDER_LIST)
            .await?;
        let pool = parent.pool.as_str();
        if pool == names::gke_pool(&owner.project_id) {
            let clusters = self.store.list_clusters(&owner.project_id, "-").await?;
            return Ok(ListWorkloadIdentityPoolProvidersResponse {
                workload_identity_pool_providers: clusters
                    .iter()
                    .map(|c| cluster_as_provider(&owner, c))
                    .collect(),
                next_page_token: None,
            });
        }
        self.pool_row(&owner, pool).await?;
        let providers = self
            .store
            .list_providers(&owner.project_number, pool)
            .await?
            .iter()
            .map(render_provider)
            .collect();
        Ok(ListWorkloadIdentityPoolProvidersResponse {
            workload_identity_pool_providers: providers,
            next_page_token: None,
        })
    }

    pub(crate) async fn update_provider(
        &self,
        caller: &Caller,
        name: &ProviderName,
        input: &Input,
    ) -> Result<Operation, ApiError> {
        let request: WorkloadIdentityPoolProvider = input.json()?;
        let owner = self
            .pool_project(caller, &name.pool.parent, PROVIDER_UPDATE)
            .await?;
        let (pool, provider) = (name.pool.pool.as_str(), name.provider.as_str());
        let mut row = self.provider_row(&owner, pool, provider).await?;
        let mask = provider_mask(
            input
                .query("updateMask")
                .filter(|m| !m.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "updateMask",
                        "updateMask is required: name the fields to change.",
                    )
                })?,
        )?;
        let oidc = request.oidc.unwrap_or_default();
        if mask.display_name {
            row.display_name = request.display_name;
        }
        if mask.description {
            row.description = request.description;
        }
        if mask.disabled {
            row.disabled = request.disabled;
        }
        if mask.attribute_mapping {
            row.attribute_mapping = check_mapping(request.attribute_mapping)?;
        }
        if mask.attribute_condition {
            check_condition(&request.attribute_condition)?;
            row.attribute_condition = request.attribute_condition;
        }
        let mut merged = Oidc {
            issuer_uri: row.issuer_uri.clone(),
            allowed_audiences: row.allowed_audiences.clone(),
            jwks_json: row.jwks_json.clone().unwrap_or_default(),
        };
        if mask.issuer_uri {
            merged.issuer_uri = oidc.issuer_uri;
        }
        if mask.allowed_audiences {
            merged.allowed_audiences = oidc.allowed_audiences;
        }
        if mask.jwks_json {
            merged.jwks_json = oidc.jwks_json;
        }
        check_oidc(&merged)?;
        super::check_len("displayName", &row.display_name, 32)?;
        super::check_len("description", &row.description, 256)?;
        let keys_changed = merged.issuer_uri != row.issuer_uri
            || merged.jwks_json != row.jwks_json.clone().unwrap_or_default();
        row.issuer_uri = merged.issuer_uri;
        row.allowed_audiences = merged.allowed_audiences;
        row.jwks_json = (!merged.jwks_json.is_empty()).then_some(merged.jwks_json);
        // Keys fetched for another issuer must not outlive the change.
        self.store
            .update_provider(&row, keys_changed)
            .await
            .map_err(changed_meanwhile)?;
        if keys_changed && row.jwks_json.is_none() {
            self.refresh_in_background(&row);
        }
        let rendered = render_provider(&row);
        tracing::info!(caller = %caller, provider = %rendered.name, "provider updated");
        Ok(operation(&rendered.name, PROVIDER_TYPE, &rendered))
    }

    pub(crate) async fn delete_provider(
        &self,
        caller: &Caller,
        name: &ProviderName,
    ) -> Result<Operation, ApiError> {
        let owner = self
            .pool_project(caller, &name.pool.parent, PROVIDER_DELETE)
            .await?;
        let (pool, provider) = (name.pool.pool.as_str(), name.provider.as_str());
        let row = self.provider_row(&owner, pool, provider).await?;
        self.store
            .delete_provider(&row.project_number, &row.pool_id, &row.provider_id)
            .await?;
        let mut rendered = render_provider(&row);
        rendered.state = "DELETED".into();
        tracing::info!(caller = %caller, provider = %rendered.name, "provider deleted");
        Ok(operation(&rendered.name, PROVIDER_TYPE, &rendered))
    }
}
