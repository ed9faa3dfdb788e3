//! Service-account keys (`projects.serviceAccounts.keys`), safer than Google's: off unless the
//! project allows them (`allowServiceAccountKeys`, wid's project setting), each valid no longer
//! than the project's `keyMaxLifetime`, and only the public half kept. The private key of a
//! created key leaves the service once, in the create response's key file.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use wid_api::account_keys::{
    CreateServiceAccountKeyRequest, KeyFile, ListServiceAccountKeysResponse, ServiceAccountKey,
    UploadServiceAccountKeyRequest,
};
use wid_api::project::Project;
use wid_iam::Caller;
use wid_iam::roles::{
    KEY_CREATE, KEY_DELETE, KEY_DISABLE, KEY_ENABLE, KEY_GET, KEY_LIST, PROJECT_UPDATE,
};
use wid_jose::{Algorithm, signer::SigningKey};
use wid_store::{AccountKeyRow, ProjectRow, ServiceAccountRow, StoreError};

use crate::App;
use crate::auth::Resource;
use crate::error::ApiError;
use crate::http::Input;
use crate::routes::{AccountName, KeyName};

const KEY_FILE: &str = "TYPE_GOOGLE_CREDENTIALS_FILE";
/// Keys an account may have at once, as Google allows.
pub(crate) const MAX_KEYS_PER_ACCOUNT: usize = 10;
const RSA_2048: &str = "KEY_ALG_RSA_2048";
/// Google's refusal where an organisation policy forbids keys, which gcloud prints as
/// `FAILED_PRECONDITION: <message>`.
const NOT_ALLOWED: &str = "Key creation is not allowed on this service account. Allow it with `wid iam projects update PROJECT --allow-service-account-keys --key-max-lifetime DURATION`.";

/// How a key is shown: `publicKeyData` only when asked for in a get.
fn render(email: &str, project_id: &str, row: &AccountKeyRow) -> ServiceAccountKey {
    ServiceAccountKey {
        name: format!(
            "projects/{project_id}/serviceAccounts/{email}/keys/{}",
            row.key_id
        ),
        key_algorithm: row.key_algorithm.clone(),
        valid_after_time: wid_api::time::rfc3339(row.valid_after),
        valid_before_time: wid_api::time::rfc3339(row.valid_before),
        key_origin: row.key_origin.clone(),
        key_type: "USER_MANAGED".into(),
        disabled: row.disabled,
        last_use_time: row
            .last_used
            .map(wid_api::time::rfc3339)
            .unwrap_or_default(),
        ..ServiceAccountKey::default()
    }
}

impl App {
    /// `PATCH /v1/projects/P`: wid's key policy, the only fields of a project that change.
    pub(crate) async fn update_project(
        &self,
        caller: &Caller,
        id: &str,
        input: &Input,
    ) -> Result<Project, ApiError> {
        let row = self.project(id).await?;
        self.require(caller, PROJECT_UPDATE, &Resource::Project(&row))
            .await?;
        let request: Project = input.json()?;
        let lifetime = match (request.allow_service_account_keys, request.key_max_lifetime.as_str()) {
            (false, "") => 0,
            (false, _) => {
                return Err(ApiError::invalid(
                    "keyMaxLifetime",
                    "keyMaxLifetime is for a project that allows keys.",
                ));
            }
            (true, text) => wid_api::time::parse_duration(text)
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "keyMaxLifetime",
                        "A project that allows keys needs keyMaxLifetime, a duration such as '7776000s' (at most 100 years).",
                    )
                })?,
        };
        self.store
            .set_key_policy(
                &row.project_id,
                request.allow_service_account_keys,
                lifetime,
            )
            .await?;
        tracing::info!(caller = %caller, project = %row.project_id, allow = request.allow_service_account_keys, lifetime, "project key policy set");
        Ok(super::projects::render(&self.project(id).await?))
    }

    /// The account a key path names, with the caller's right to `permission` on it checked.
    async fn key_account(
        &self,
        caller: &Caller,
        name: &AccountName,
        permission: &'static str,
    ) -> Result<(ProjectRow, ServiceAccountRow), ApiError> {
        let (owner, row) = self.account(name, permission).await?;
        self.require(caller, permission, &Resource::ServiceAccount(&owner, &row))
            .await?;
        Ok((owner, row))
    }

    /// The key a path names, of the account it names.
    async fn key(
        &self,
        caller: &Caller,
        name: &KeyName,
        permission: &'static str,
    ) -> Result<(ProjectRow, ServiceAccountRow, AccountKeyRow), ApiError> {
        let (owner, account) = self.key_account(caller, &name.account, permission).await?;
        match self
            .store
            .get_account_key(&account.unique_id, &name.key)
            .await
        {
            Ok(key) => Ok((owner, account, key)),
            Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
                "Service account key projects/{}/serviceAccounts/{}/keys/{} does not exist.",
                name.account.project, name.account.account, name.key
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a new key of an account that has [`MAX_KEYS_PER_ACCOUNT`], as Google does: a
    /// bound on what a grant without `kid` may try.
    async fn check_room(&self, account: &ServiceAccountRow) -> Result<(), ApiError> {
        if self
            .store
            .list_account_keys(&account.unique_id)
            .await?
            .len()
            >= MAX_KEYS_PER_ACCOUNT
        {
            return Err(ApiError::FailedPrecondition(format!(
                "The service account {} has {MAX_KEYS_PER_ACCOUNT} keys, the most it may have; delete one first.",
                account.email
            )));
        }
        Ok(())
    }

    /// The validity of a new key in `owner`: from now to its limit; FAILED_PRECONDITION where
    /// keys are not allowed.
    fn key_validity(owner: &ProjectRow) -> Result<(i64, i64), ApiError> {
        if !owner.allow_service_account_keys || owner.key_max_lifetime_seconds <= 0 {
            return Err(ApiError::FailedPrecondition(NOT_ALLOWED.into()));
        }
        let now = crate::tokens::now();
        Ok((now, now + owner.key_max_lifetime_seconds))
    }

    pub(crate) async fn create_key(
        &self,
        caller: &Caller,
        name: &AccountName,
        request: CreateServiceAccountKeyRequest,
    ) -> Result<ServiceAccountKey, ApiError> {
        if !matches!(request.private_key_type.as_str(), "" | KEY_FILE) {
            return Err(ApiError::invalid(
                "privateKeyType",
                format!(
                    "wid makes {KEY_FILE} keys only, not {}.",
                    request.private_key_type
                ),
            ));
        }
        if !matches!(
            request.key_algorithm.as_str(),
            "" | "KEY_ALG_UNSPECIFIED" | RSA_2048
        ) {
            return Err(ApiError::invalid(
                "keyAlgorithm",
                format!(
                    "wid makes {RSA_2048} keys only, not {}.",
                    request.key_algorithm
                ),
            ));
        }
        let (owner, account) = self.key_account(caller, name, KEY_CREATE).await?;
        let (valid_after, valid_before) = Self::key_validity(&owner)?;
        self.check_room(&account).await?;
        let key = SigningKey::generate(Algorithm::Rs256)
            .map_err(|e| ApiError::Internal(format!("cannot make a key: {e}")))?;
        let certificate_pem = key
            .certificate_pem(&account.email, valid_after, valid_before)
            .map_err(|e| ApiError::Internal(format!("cannot certify a key: {e}")))?;
        let row = AccountKeyRow {
            key_id: wid_runtime::secrets::random_hex::<20>(),
            account_unique_id: account.unique_id.clone(),
            public_key_sha256: super::certificates::public_key_sha256(&certificate_pem)?,
            certificate_pem,
            key_origin: "GOOGLE_PROVIDED".into(),
            key_algorithm: RSA_2048.into(),
            valid_after,
            valid_before,
            disabled: false,
            last_used: None,
        };
        self.store.create_account_key(&row).await?;
        tracing::info!(caller = %caller, account = %account.email, key = %row.key_id, "service account key created");
        let file = self.key_file(&owner, &account, &row.key_id, &key)?;
        Ok(ServiceAccountKey {
            private_key_type: KEY_FILE.into(),
            private_key_data: STANDARD.encode(file),
            ..render(&account.email, &owner.project_id, &row)
        })
    }

    /// The key file of a new key, as Google writes it, pointing at this service's token
    /// endpoint and key documents.
    fn key_file(
        &self,
        owner: &ProjectRow,
        account: &ServiceAccountRow,
        key_id: &str,
        key: &SigningKey,
    ) -> Result<String, ApiError> {
        let base = self.issuer.trim_end_matches('/');
        // As Google writes it: the `@` encoded, the rest of the email as it is.
        let email = account.email.replace('@', "%40");
        let file = KeyFile {
            kind: "service_account".into(),
            project_id: owner.project_id.clone(),
            private_key_id: key_id.into(),
            private_key: key
                .private_key_pem()
                .map_err(|e| ApiError::Internal(format!("cannot write a key: {e}")))?,
            client_email: account.email.clone(),
            client_id: account.unique_id.clone(),
            auth_uri: "https://accounts.google.com/o/oauth2/auth".into(),
            token_uri: format!("{base}/token"),
            auth_provider_x509_cert_url: format!("{base}/oauth2/v1/certs"),
            client_x509_cert_url: format!("{base}/service_accounts/v1/metadata/x509/{email}"),
            universe_domain: "googleapis.com".into(),
        };
        serde_json::to_string_pretty(&file).map_err(|e| ApiError::Internal(e.to_string()))
    }

    pub(crate) async fn upload_key(
        &self,
        caller: &Caller,
        name: &AccountName,
        request: UploadServiceAccountKeyRequest,
    ) -> Result<ServiceAccountKey, ApiError> {
        let (owner, account) = self.key_account(caller, name, KEY_CREATE).await?;
        let (now, limit) = Self::key_validity(&owner)?;
        self.check_room(&account).await?;
        let uploaded = super::certificates::read_uploaded(&request.public_key_data, now)?;
        // One of the service's own keys (published, so anyone could upload it) would let a
        // signBlob or signJwt of any account pass as this account's.
        if self.is_service_key(&uploaded.modulus) {
            return Err(ApiError::invalid(
                "publicKeyData",
                "This public key is one of the service's own signing keys.",
            ));
        }
        let row = AccountKeyRow {
            key_id: wid_runtime::secrets::random_hex::<20>(),
            account_unique_id: account.unique_id.clone(),
            public_key_sha256: uploaded.public_key_sha256,
            certificate_pem: uploaded.pem,
            key_origin: "USER_PROVIDED".into(),
            key_algorithm: RSA_2048.into(),
            valid_after: now,
            // The certificate's own end, or the project's limit if that comes first.
            valid_before: uploaded.not_after.min(limit),
            disabled: false,
            last_used: None,
        };
        match self.store.create_account_key(&row).await {
            Err(StoreError::AlreadyExists) => {
                return Err(ApiError::AlreadyExists {
                    message: "This public key is already a key of a service account.".into(),
                    resource: format!("projects/-/serviceAccounts/{}/keys", account.email),
                });
            }
            other => other?,
        }
        tracing::info!(caller = %caller, account = %account.email, key = %row.key_id, "service account key uploaded");
        Ok(render(&account.email, &owner.project_id, &row))
    }

    /// Whether an RSA modulus (a JWK's `n`) is one of the service's own signing keys'.
    fn is_service_key(&self, modulus: &str) -> bool {
        let keys = self.keys.current();
        [&keys.id_keys, &keys.access_keys, &keys.account_keys]
            .iter()
            .flat_map(|published| published.jwks.iter())
            .any(|jwk| jwk.n.as_deref() == Some(modulus))
    }

    pub(crate) async fn list_keys(
        &self,
        caller: &Caller,
        name: &AccountName,
        input: &Input,
    ) -> Result<ListServiceAccountKeysResponse, ApiError> {
        let (owner, account) = self.key_account(caller, name, KEY_LIST).await?;
        let types: Vec<&str> = input.query_all("keyTypes");
        if let Some(bad) = types.iter().find(|t| {
            !matches!(
                **t,
                "USER_MANAGED" | "SYSTEM_MANAGED" | "KEY_TYPE_UNSPECIFIED"
            )
        }) {
            return Err(ApiError::invalid(
                "keyTypes",
                format!("Unknown key type '{bad}'."),
            ));
        }
        // wid has no system-managed keys of an account: they are the service's own.
        if !types.is_empty()
            && !types.contains(&"USER_MANAGED")
            && !types.contains(&"KEY_TYPE_UNSPECIFIED")
        {
            return Ok(ListServiceAccountKeysResponse::default());
        }
        let keys = self.store.list_account_keys(&account.unique_id).await?;
        Ok(ListServiceAccountKeysResponse {
            keys: keys
                .iter()
                .map(|k| render(&account.email, &owner.project_id, k))
                .collect(),
        })
    }

    pub(crate) async fn get_key(
        &self,
        caller: &Caller,
        name: &KeyName,
        input: &Input,
    ) -> Result<ServiceAccountKey, ApiError> {
        let (owner, account, key) = self.key(caller, name, KEY_GET).await?;
        let public_key_data = match input.query("publicKeyType") {
            None | Some("" | "TYPE_NONE") => String::new(),
            Some("TYPE_X509_PEM_FILE") => STANDARD.encode(&key.certificate_pem),
            Some("TYPE_RAW_PUBLIC_KEY") => {
                STANDARD.encode(super::certificates::public_key_der(&key.certificate_pem)?)
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    "publicKeyType",
                    format!("Unknown public key type '{other}'."),
                ));
            }
        };
        Ok(ServiceAccountKey {
            public_key_data,
            ..render(&account.email, &owner.project_id, &key)
        })
    }

    pub(crate) async fn delete_key(&self, caller: &Caller, name: &KeyName) -> Result<(), ApiError> {
        let (_, account, key) = self.key(caller, name, KEY_DELETE).await?;
        self.store
            .delete_account_key(&account.unique_id, &key.key_id)
            .await?;
        tracing::info!(caller = %caller, account = %account.email, key = %key.key_id, "service account key deleted");
        Ok(())
    }

    pub(crate) async fn set_key_disabled(
        &self,
        caller: &Caller,
        name: &KeyName,
        disabled: bool,
    ) -> Result<(), ApiError> {
        let permission = if disabled { KEY_DISABLE } else { KEY_ENABLE };
        let (_, account, key) = self.key(caller, name, permission).await?;
        self.store
            .set_account_key_disabled(&account.unique_id, &key.key_id, disabled)
            .await?;
        tracing::info!(caller = %caller, account = %account.email, key = %key.key_id, disabled, "service account key state changed");
        Ok(())
    }
}
