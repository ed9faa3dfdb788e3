//! The commands: each turns parsed arguments into API calls and prints the result.

use std::path::PathBuf;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};

use wid_api::cluster::Cluster;
use wid_api::iam::{Expr, ServiceAccount};
use wid_api::project::Project;

use crate::admin::{Admin, account_path, add_binding, clusters_path, remove_binding};
use crate::args::*;
use crate::client::{Client, segment};
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

struct Cli {
    client: Client,
    /// Table prints single resources as YAML, as gcloud's describe does.
    format: Format,
}

/// IAM Credentials names accounts under `projects/-` only.
fn credentials_path(account: &str) -> String {
    format!("/v1/projects/-/serviceAccounts/{}", segment(account))
}

fn pools_path(project: &ProjectArg, location: &LocationArg) -> String {
    format!(
        "/v1/projects/{}/locations/{}/workloadIdentityPools",
        segment(&project.project),
        segment(&location.location)
    )
}

fn providers_path(pool: &PoolRef) -> String {
    format!(
        "{}/{}/providers",
        pools_path(&pool.project, &pool.location),
        segment(&pool.workload_identity_pool)
    )
}

/// The resource inside a finished Operation, without its type tag.
fn operation_response(op: Value) -> Value {
    let mut response = op.get("response").cloned().unwrap_or(Value::Null);
    if let Value::Object(map) = &mut response {
        map.remove("@type");
    }
    response
}

/// The issuer and uploaded keys of a cluster to register: `--jwk-json-path`'s file; the API
/// server's issuer and keys with `--kubeconfig`; with `--discover` and no `--issuer-uri`, the
/// issuer of the API server `kubectl` would use (the token service fetches the keys).
async fn cluster_keys(
    issuer_uri: Option<String>,
    keys: &ClusterKeys,
) -> anyhow::Result<(String, String)> {
    if keys.kubeconfig.is_none() && !(keys.discover && issuer_uri.is_none()) {
        let Some(issuer_uri) = issuer_uri else {
            bail!(
                "--issuer-uri is required with --jwk-json-path (--kubeconfig and --discover read it from the cluster's API server)"
            );
        };
        let jwks_json = match &keys.jwk_json_path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => String::new(),
        };
        return Ok((issuer_uri, jwks_json));
    }
    let server = wid_kube::ApiServer::find(keys.kubeconfig.as_deref())
        .await
        .context(
            "the cluster's issuer is read from its API server: set KUBECONFIG, give --issuer-uri, or use --kubeconfig FILE instead of --discover",
        )?;
    eprintln!(
        "Reading the cluster's issuer from the API server at {}.",
        server.url()
    );
    let (read_uri, jwks_json) = if keys.kubeconfig.is_some() {
        let issuer = server.issuer().await?;
        (issuer.uri, issuer.jwks_json)
    } else {
        (server.issuer_uri().await?, String::new())
    };
    if let Some(given) = issuer_uri.filter(|given| *given != read_uri) {
        bail!("the cluster's API server names its issuer {read_uri}, not {given}");
    }
    Ok((read_uri, jwks_json))
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

/// gcloud's `--condition=expression=EXPR,title=TITLE,description=DESC` (or `None`).
fn parse_condition(text: Option<&str>) -> anyhow::Result<Option<Expr>> {
    let Some(text) = text.filter(|t| !t.eq_ignore_ascii_case("none")) else {
        return Ok(None);
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in text.split(',') {
        match part.split_once('=') {
            Some((k @ ("expression" | "title" | "description"), v)) => {
                fields.push((k.to_owned(), v.to_owned()))
            }
            // A comma inside the previous value.
            _ => match fields.last_mut() {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(part);
                }
                None => bail!(
                    "--condition takes expression=EXPR,title=TITLE[,description=DESC], or None"
                ),
            },
        }
    }
    let mut expr = Expr::default();
    let mut has_expression = false;
    for (key, value) in fields {
        match key.as_str() {
            "expression" => {
                expr.expression = value;
                has_expression = true;
            }
            "title" => expr.title = value,
            _ => expr.description = value,
        }
    }
    if !has_expression {
        bail!("--condition needs expression=EXPR");
    }
    Ok(Some(expr))
}

/// `KEY=EXPR,KEY=EXPR` where each key is google.* or attribute.*; commas inside an expression
/// stay with it.
fn parse_mapping(text: &str) -> anyhow::Result<Map<String, Value>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in text.split(',') {
        let key_like = part.split_once('=').filter(|(k, _)| {
            (k.starts_with("google.") || k.starts_with("attribute."))
                && !k.contains([' ', '(', '\'', '"'])
        });
        match key_like {
            Some((k, v)) => pairs.push((k.trim().to_owned(), v.to_owned())),
            None => match pairs.last_mut() {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(part);
                }
                None => bail!(
                    "--attribute-mapping takes KEY=EXPRESSION pairs, e.g. google.subject=assertion.sub"
                ),
            },
        }
    }
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

impl Cli {
    fn print(&self, value: &Value) {
        print!("{}", output::resource(value, self.format));
    }

    /// A wire type, printed as the service sent it.
    fn print_typed(&self, value: &impl serde::Serialize) {
        self.print(&to_value(value));
    }

    fn admin(&self) -> Admin<'_> {
        Admin::new(&self.client)
    }

    fn print_list(&self, items: &[Value], columns: &[Column]) {
        print!("{}", output::list(items, self.format, columns));
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
        }
        Ok(())
    }

    async fn service_accounts(&self, command: ServiceAccountsCommand) -> anyhow::Result<()> {
        use ServiceAccountsCommand as C;
        match command {
            C::Create {
                name,
                project,
                display_name,
                description,
            } => {
                let account = ServiceAccount {
                    display_name: display_name.unwrap_or_default(),
                    description: description.unwrap_or_default(),
                    ..ServiceAccount::default()
                };
                let account = self
                    .admin()
                    .create_service_account(&project.project, &name, &account)
                    .await?;
                eprintln!("Created service account [{name}].");
                self.print_typed(&account);
            }
            C::List { project } => {
                let accounts = self.admin().service_accounts(&project.project).await?;
                let accounts: Vec<Value> = accounts.iter().map(to_value).collect();
                self.print_list(&accounts, SA_COLUMNS);
            }
            C::Describe { service_account } => {
                self.print(&self.get(&account_path(&service_account)).await?)
            }
            C::Update {
                service_account,
                display_name,
                description,
            } => {
                let mut mask = Vec::new();
                let mut fields = Map::new();
                if let Some(d) = display_name {
                    mask.push("displayName");
                    fields.insert("displayName".into(), json!(d));
                }
                if let Some(d) = description {
                    mask.push("description");
                    fields.insert("description".into(), json!(d));
                }
                if mask.is_empty() {
                    bail!("nothing to update: pass --display-name or --description");
                }
                let body = json!({ "serviceAccount": fields, "updateMask": mask.join(",") });
                let sa = self
                    .client
                    .call(
                        Method::PATCH,
                        &account_path(&service_account),
                        &[],
                        Some(&body),
                    )
                    .await?;
                eprintln!("Updated service account [{service_account}].");
                self.print(&sa);
            }
            C::Delete { service_account } => {
                self.client
                    .call(Method::DELETE, &account_path(&service_account), &[], None)
                    .await?;
                eprintln!("Deleted service account [{service_account}].");
            }
            C::Disable { service_account } => {
                let path = format!("{}:disable", account_path(&service_account));
                self.client
                    .call(Method::POST, &path, &[], Some(&json!({})))
                    .await?;
                eprintln!("Disabled service account [{service_account}].");
            }
            C::Enable { service_account } => {
                let path = format!("{}:enable", account_path(&service_account));
                self.client
                    .call(Method::POST, &path, &[], Some(&json!({})))
                    .await?;
                eprintln!("Enabled service account [{service_account}].");
            }
            C::PrintAccessToken {
                source,
                scopes,
                lifetime,
            } => {
                let federated = self.exchange(&source).await?;
                let mut body = json!({ "scope": scopes });
                if let Some(l) = lifetime {
                    body["lifetime"] = json!(l);
                }
                let path = format!(
                    "{}:generateAccessToken",
                    credentials_path(&source.service_account)
                );
                let answer = self
                    .client
                    .with_token(&federated)
                    .call(Method::POST, &path, &[], Some(&body))
                    .await?;
                self.print_token(&answer, "accessToken");
            }
            C::PrintIdentityToken {
                source,
                token_audience,
                include_email,
            } => {
                let federated = self.exchange(&source).await?;
                let body = json!({ "audience": token_audience, "includeEmail": include_email });
                let path = format!(
                    "{}:generateIdToken",
                    credentials_path(&source.service_account)
                );
                let answer = self
                    .client
                    .with_token(&federated)
                    .call(Method::POST, &path, &[], Some(&body))
                    .await?;
                self.print_token(&answer, "token");
            }
            C::GetIamPolicy { service_account } => {
                self.print_typed(&self.admin().iam_policy(&service_account).await?)
            }
            C::SetIamPolicy {
                service_account,
                policy_file,
            } => {
                let text = std::fs::read_to_string(&policy_file)
                    .with_context(|| format!("reading {}", policy_file.display()))?;
                let policy: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a JSON policy", policy_file.display()))?;
                let path = format!("{}:setIamPolicy", account_path(&service_account));
                let body = json!({ "policy": policy });
                let set = self
                    .client
                    .call(Method::POST, &path, &[], Some(&body))
                    .await?;
                eprintln!("Updated IAM policy for serviceAccount [{service_account}].");
                self.print(&set);
            }
            C::AddIamPolicyBinding {
                service_account,
                member,
                role,
                condition,
            } => {
                let condition = parse_condition(condition.condition.as_deref())?;
                let admin = self.admin();
                let mut policy = admin.iam_policy(&service_account).await?;
                add_binding(&mut policy, &member, &role, condition);
                let set = admin.set_iam_policy(&service_account, &policy).await?;
                eprintln!("Updated IAM policy for serviceAccount [{service_account}].");
                self.print_typed(&set);
            }
            C::RemoveIamPolicyBinding {
                service_account,
                member,
                role,
                condition,
                all,
            } => {
                let condition = parse_condition(condition.condition.as_deref())?;
                let admin = self.admin();
                let mut policy = admin.iam_policy(&service_account).await?;
                if !remove_binding(&mut policy, &member, &role, condition.as_ref(), all) {
                    bail!(
                        "Policy binding with the specified principal, role, and condition not found!"
                    );
                }
                let set = admin.set_iam_policy(&service_account, &policy).await?;
                eprintln!("Updated IAM policy for serviceAccount [{service_account}].");
                self.print_typed(&set);
            }
        }
        Ok(())
    }

    /// The STS exchange of a subject token; returns the federated token.
    async fn exchange(&self, source: &ImpersonationArgs) -> anyhow::Result<String> {
        let subject = std::fs::read_to_string(&source.subject_token_file)
            .with_context(|| format!("reading {}", source.subject_token_file.display()))?;
        let answer = self
            .client
            .post_form(
                "/v1/token",
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("audience", &source.audience),
                    ("scope", "https://www.googleapis.com/auth/iam"),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("subject_token", subject.trim()),
                    ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ],
            )
            .await?;
        answer
            .get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("the token service answered without an access_token")
    }

    /// A token alone on a line (for `$(...)`), or the whole answer in JSON or YAML.
    fn print_token(&self, answer: &Value, field: &str) {
        match self.format {
            Format::Table => println!(
                "{}",
                answer
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
            _ => self.print(answer),
        }
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

    async fn pools(&self, command: PoolsCommand) -> anyhow::Result<()> {
        match command {
            PoolsCommand::Create {
                pool,
                project,
                location,
                display_name,
                description,
                disabled,
            } => {
                let body = json!({
                    "displayName": display_name.unwrap_or_default(),
                    "description": description.unwrap_or_default(),
                    "disabled": disabled,
                });
                let op = self
                    .client
                    .call(
                        Method::POST,
                        &pools_path(&project, &location),
                        &[("workloadIdentityPoolId", &pool)],
                        Some(&body),
                    )
                    .await?;
                eprintln!("Created workload identity pool [{pool}].");
                self.print(&operation_response(op));
            }
            PoolsCommand::List { project, location } => {
                let list = self.get(&pools_path(&project, &location)).await?;
                self.print_list(&items(&list, "workloadIdentityPools"), POOL_COLUMNS);
            }
            PoolsCommand::Describe {
                pool,
                project,
                location,
            } => {
                self.print(
                    &self
                        .get(&format!(
                            "{}/{}",
                            pools_path(&project, &location),
                            segment(&pool)
                        ))
                        .await?,
                );
            }
            PoolsCommand::Delete {
                pool,
                project,
                location,
            } => {
                let path = format!("{}/{}", pools_path(&project, &location), segment(&pool));
                self.client.call(Method::DELETE, &path, &[], None).await?;
                eprintln!("Deleted workload identity pool [{pool}].");
            }
            PoolsCommand::Providers(c) => self.providers(c).await?,
        }
        Ok(())
    }

    /// The provider body and update mask for the flags given.
    fn provider_body(oidc: &OidcArgs) -> anyhow::Result<(Value, Vec<&'static str>)> {
        let mut body = Map::new();
        let mut mask = Vec::new();
        let mut o = Map::new();
        if let Some(v) = &oidc.display_name {
            body.insert("displayName".into(), json!(v));
            mask.push("displayName");
        }
        if let Some(v) = &oidc.description {
            body.insert("description".into(), json!(v));
            mask.push("description");
        }
        if let Some(v) = oidc.disabled {
            body.insert("disabled".into(), json!(v));
            mask.push("disabled");
        }
        if let Some(v) = &oidc.attribute_mapping {
            body.insert("attributeMapping".into(), Value::Object(parse_mapping(v)?));
            mask.push("attributeMapping");
        }
        if let Some(v) = &oidc.attribute_condition {
            body.insert("attributeCondition".into(), json!(v));
            mask.push("attributeCondition");
        }
        if let Some(v) = &oidc.issuer_uri {
            o.insert("issuerUri".into(), json!(v));
            mask.push("oidc.issuerUri");
        }
        if let Some(v) = &oidc.allowed_audiences {
            o.insert("allowedAudiences".into(), json!(v));
            mask.push("oidc.allowedAudiences");
        }
        if let Some(path) = &oidc.jwk_json_path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            o.insert("jwksJson".into(), json!(text));
            mask.push("oidc.jwksJson");
        }
        if !o.is_empty() {
            body.insert("oidc".into(), Value::Object(o));
        }
        Ok((Value::Object(body), mask))
    }

    async fn providers(&self, command: ProvidersCommand) -> anyhow::Result<()> {
        match command {
            ProvidersCommand::CreateOidc {
                provider,
                pool,
                oidc,
            } => {
                if oidc.issuer_uri.is_none() {
                    bail!("--issuer-uri is required");
                }
                let (body, _) = Self::provider_body(&oidc)?;
                let op = self
                    .client
                    .call(
                        Method::POST,
                        &providers_path(&pool),
                        &[("workloadIdentityPoolProviderId", &provider)],
                        Some(&body),
                    )
                    .await?;
                eprintln!("Created workload identity pool provider [{provider}].");
                self.print(&operation_response(op));
            }
            ProvidersCommand::UpdateOidc {
                provider,
                pool,
                oidc,
            } => {
                let (body, mask) = Self::provider_body(&oidc)?;
                if mask.is_empty() {
                    bail!("nothing to update: pass at least one flag to change");
                }
                let path = format!("{}/{}", providers_path(&pool), segment(&provider));
                let op = self
                    .client
                    .call(
                        Method::PATCH,
                        &path,
                        &[("updateMask", &mask.join(","))],
                        Some(&body),
                    )
                    .await?;
                eprintln!("Updated workload identity pool provider [{provider}].");
                self.print(&operation_response(op));
            }
            ProvidersCommand::List { pool } => {
                let list = self.get(&providers_path(&pool)).await?;
                let flat: Vec<Value> = items(&list, "workloadIdentityPoolProviders")
                    .into_iter()
                    .map(|mut p| {
                        if let Some(issuer) = p.pointer("/oidc/issuerUri").cloned() {
                            p["issuerUri"] = issuer;
                        }
                        p
                    })
                    .collect();
                if self.format == Format::Table {
                    self.print_list(&flat, PROVIDER_COLUMNS);
                } else {
                    self.print_list(
                        &items(&list, "workloadIdentityPoolProviders"),
                        PROVIDER_COLUMNS,
                    );
                }
            }
            ProvidersCommand::Describe { provider, pool } => {
                self.print(
                    &self
                        .get(&format!("{}/{}", providers_path(&pool), segment(&provider)))
                        .await?,
                );
            }
            ProvidersCommand::Delete { provider, pool } => {
                let path = format!("{}/{}", providers_path(&pool), segment(&provider));
                self.client.call(Method::DELETE, &path, &[], None).await?;
                eprintln!("Deleted workload identity pool provider [{provider}].");
            }
        }
        Ok(())
    }

    async fn clusters(&self, command: ClustersCommand) -> anyhow::Result<()> {
        match command {
            ClustersCommand::Register {
                name,
                project,
                location,
                issuer_uri,
                keys,
                isolated,
            } => {
                let (issuer_uri, jwks_json) = cluster_keys(issuer_uri, &keys).await?;
                let cluster = Cluster {
                    cluster_name: name.clone(),
                    issuer_uri,
                    jwks_json,
                    discover: keys.discover,
                    isolated,
                    ..Cluster::default()
                };
                let cluster = self
                    .admin()
                    .register_cluster(&project.project, &location, &cluster)
                    .await?;
                eprintln!("Registered cluster [{name}] in [{location}].");
                self.print_typed(&cluster);
            }
            ClustersCommand::List { project, location } => {
                let list = self
                    .get(&clusters_path(&project.project, &location))
                    .await?;
                self.print_list(&items(&list, "clusters"), CLUSTER_COLUMNS);
            }
            ClustersCommand::Describe {
                name,
                project,
                location,
            } => {
                self.print(
                    &self
                        .get(&format!(
                            "{}/{}",
                            clusters_path(&project.project, &location),
                            segment(&name)
                        ))
                        .await?,
                );
            }
            ClustersCommand::Delete {
                name,
                project,
                location,
            } => {
                self.admin()
                    .delete_cluster(&project.project, &location, &name)
                    .await?;
                eprintln!("Deleted cluster [{name}] in [{location}].");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_mappings_parse() {
        let c = parse_condition(Some("expression=a == 'x,y',title=t"))
            .expect("parses")
            .expect("some");
        assert_eq!(
            (c.expression.as_str(), c.title.as_str()),
            ("a == 'x,y'", "t")
        );
        assert_eq!(parse_condition(Some("None")).expect("parses"), None);
        let m = parse_mapping(
            "google.subject=assertion.sub,attribute.ns=assertion['kubernetes.io'].namespace",
        )
        .expect("parses");
        assert_eq!(m.len(), 2);
        assert!(parse_mapping("nokey").is_err());
    }
}
