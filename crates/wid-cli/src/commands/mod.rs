//! The commands: each turns parsed arguments into API calls and prints the result.

use std::path::PathBuf;

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

use wid_api::project::Project;

use crate::admin::Admin;
use crate::args::*;
use crate::client::Client;
use crate::output::{self, Column};

const KEY_COLUMNS: &[Column] = &[
    ("KID", "kid"),
    ("PURPOSE", "purpose"),
    ("ALGORITHM", "algorithm"),
    ("STATE", "state"),
    ("CREATED", "createTime"),
    ("RETIRES", "retireTime"),
];
const AUDIT_COLUMNS: &[Column] = &[
    ("TIME", "time"),
    ("ACTION", "action"),
    ("OUTCOME", "outcome"),
    ("CALLER", "caller"),
    ("TARGET", "target"),
    ("POD", "pod"),
    ("REASON", "reason"),
];
const SA_COLUMNS: &[Column] = &[
    ("DISPLAY NAME", "displayName"),
    ("EMAIL", "email"),
    ("DISABLED", "disabled"),
];
const PROJECT_COLUMNS: &[Column] = &[
    ("PROJECT_ID", "projectId"),
    ("NAME", "name"),
    ("PROJECT_NUMBER", "projectNumber"),
];
const POOL_COLUMNS: &[Column] = &[
    ("NAME", "name"),
    ("DISPLAY NAME", "displayName"),
    ("STATE", "state"),
    ("DISABLED", "disabled"),
];
const PROVIDER_COLUMNS: &[Column] = &[
    ("NAME", "name"),
    ("ISSUER", "issuerUri"),
    ("STATE", "state"),
    ("DISABLED", "disabled"),
];
const CLUSTER_COLUMNS: &[Column] = &[
    ("NAME", "clusterName"),
    ("LOCATION", "location"),
    ("ISSUER", "issuerUri"),
    ("ISOLATED", "isolated"),
    ("UID", "uid"),
];

/// Runs an admin command. `default_token_file` is used when no credential file is named.
pub async fn run(command: AdminCommand, default_token_file: Option<PathBuf>) -> anyhow::Result<()> {
    let client_args = command.client().clone();
    // Exchanging a subject token needs no admin credential: the subject token is the credential.
    let needs_admin = !matches!(
        &command,
        AdminCommand::ServiceAccounts(Group {
            command: ServiceAccountsCommand::PrintAccessToken { .. }
                | ServiceAccountsCommand::PrintIdentityToken { .. },
            ..
        })
    );
    let token_file = client_args.token_file.clone().or(default_token_file);
    if needs_admin && token_file.is_none() {
        bail!(
            "no credential: pass --token-file or set WID_TOKEN_FILE (the bootstrap token is DATA_DIR/admin-token; `wid dev` prints the line to paste)"
        );
    }
    let client = Client::new(
        &client_args.endpoint,
        if needs_admin {
            token_file.as_deref()
        } else {
            None
        },
        client_args.ca_file.as_deref(),
    )?;
    let cli = Cli {
        client,
        // Unsaid, gcloud's default: lists as tables and single resources as YAML.
        format: client_args.format.unwrap_or_default(),
    };
    match command {
        AdminCommand::Projects(g) => cli.projects(g.command).await,
        AdminCommand::ServiceAccounts(g) => cli.service_accounts(g.command).await,
        AdminCommand::WorkloadIdentityPools(g) => cli.pools(g.command).await,
        AdminCommand::Clusters(g) => cli.clusters(g.command).await,
        AdminCommand::Keys(g) => cli.keys(g.command).await,
        AdminCommand::Audit(g) => cli.audit(g.command).await,
    }
}

mod account_keys;
mod clusters;
mod pools;
mod service_accounts;

struct Cli {
    client: Client,
    /// Table prints single resources as YAML, as gcloud's describe does.
    format: Format,
}

/// The resource inside a finished Operation, without its type tag.
fn operation_response(op: Value) -> Value {
    let mut response = op.get("response").cloned().unwrap_or(Value::Null);
    if let Value::Object(map) = &mut response {
        map.remove("@type");
    }
    response
}

/// A wire type as JSON, for printing.
fn to_value(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn items(value: &Value, field: &str) -> Vec<Value> {
    value
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl Cli {
    fn print(&self, value: &Value) {
        output::emit(&output::resource(value, self.format));
    }

    /// A wire type, printed as the service sent it.
    fn print_typed(&self, value: &impl serde::Serialize) {
        self.print(&to_value(value));
    }

    fn admin(&self) -> Admin<'_> {
        Admin::new(&self.client)
    }

    fn print_list(&self, items: &[Value], columns: &[Column]) {
        output::emit(&output::list(items, self.format, columns));
    }

    /// Prints the resource `id` of the collection at `collection`.
    async fn describe(&self, collection: &str, id: &str) -> anyhow::Result<()> {
        let path = format!("{collection}/{}", crate::client::segment(id));
        self.print(&self.get(&path).await?);
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.client.call(Method::GET, path, &[], None).await?)
    }

    async fn projects(&self, command: ProjectsCommand) -> anyhow::Result<()> {
        match command {
            ProjectsCommand::Create {
                project_id,
                number,
                name,
            } => {
                let project = Project {
                    project_id: project_id.clone(),
                    project_number: number.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                    ..Project::default()
                };
                let project = self.admin().create_project(&project).await?;
                eprintln!("Created project [{project_id}].");
                self.print_typed(&project);
            }
            ProjectsCommand::List => self.print_list(
                &items(&self.get("/v1/projects").await?, "projects"),
                PROJECT_COLUMNS,
            ),
            ProjectsCommand::Describe { project } => {
                self.print_typed(&self.admin().project(&project).await?)
            }
            ProjectsCommand::Update {
                project,
                allow_service_account_keys,
                no_service_account_keys,
                key_max_lifetime,
            } => {
                if !allow_service_account_keys && !no_service_account_keys {
                    anyhow::bail!(
                        "nothing to update: pass --allow-service-account-keys --key-max-lifetime DURATION, or --no-service-account-keys"
                    );
                }
                let settings = Project {
                    allow_service_account_keys,
                    key_max_lifetime: key_max_lifetime
                        .map(wid_api::time::duration)
                        .unwrap_or_default(),
                    ..Project::default()
                };
                let updated = self.admin().update_project(&project, &settings).await?;
                eprintln!("Updated project [{project}].");
                self.print_typed(&updated);
            }
        }
        Ok(())
    }

    async fn keys(&self, command: KeysCommand) -> anyhow::Result<()> {
        let answer = match command {
            KeysCommand::List => self.get("/v1/signingKeys").await?,
            KeysCommand::Rotate { algorithm } => {
                let body = json!({ "algorithm": algorithm.unwrap_or_default() });
                let answer = self
                    .client
                    .call(Method::POST, "/v1/signingKeys:rotate", &[], Some(&body))
                    .await?;
                eprintln!(
                    "Rotated the signing keys; the old ones stay published until their tokens expire."
                );
                answer
            }
        };
        self.print_list(&items(&answer, "keys"), KEY_COLUMNS);
        Ok(())
    }

    async fn audit(&self, command: AuditCommand) -> anyhow::Result<()> {
        let AuditCommand::List { limit } = command;
        let answer = self
            .client
            .call(
                Method::GET,
                "/v1/auditEvents",
                &[("limit", &limit.to_string())],
                None,
            )
            .await?;
        self.print_list(&items(&answer, "events"), AUDIT_COLUMNS);
        Ok(())
    }
}
