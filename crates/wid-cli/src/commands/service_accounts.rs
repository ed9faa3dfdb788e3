//! `wid iam service-accounts ...`: accounts, their IAM policies, and tokens bought with a subject
//! token.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};
use wid_api::iam::{Expr, ServiceAccount};

use super::{Cli, SA_COLUMNS, to_value};
use crate::admin::{account_path, add_binding, remove_binding};
use crate::args::{Format, ImpersonationArgs, ServiceAccountsCommand};
use crate::client::segment;

/// IAM Credentials names accounts under `projects/-` only.
fn credentials_path(account: &str) -> String {
    format!("/v1/projects/-/serviceAccounts/{}", segment(account))
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

impl Cli {
    pub(super) async fn service_accounts(
        &self,
        command: ServiceAccountsCommand,
    ) -> anyhow::Result<()> {
        use ServiceAccountsCommand as C;
        match command {
            C::Keys(keys) => return self.account_keys(keys).await,
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
                    .create_service_account(project.id()?, &name, &account)
                    .await?;
                eprintln!("Created service account [{name}].");
                self.print_typed(&account);
            }
            C::List { project } => {
                let accounts = self.admin().service_accounts(project.id()?).await?;
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
                self.update_account(&service_account, display_name, description)
                    .await?
            }
            C::Delete { service_account } => {
                self.client
                    .call(Method::DELETE, &account_path(&service_account), &[], None)
                    .await?;
                eprintln!("Deleted service account [{service_account}].");
            }
            C::Disable { service_account } => self.set_disabled(&service_account, true).await?,
            C::Enable { service_account } => self.set_disabled(&service_account, false).await?,
            C::PrintAccessToken {
                source,
                scopes,
                lifetime,
            } => self.print_access_token(&source, scopes, lifetime).await?,
            C::PrintIdentityToken {
                source,
                token_audience,
                include_email,
            } => {
                self.print_identity_token(&source, &token_audience, include_email)
                    .await?
            }
            C::GetIamPolicy { service_account } => {
                self.print_typed(&self.admin().iam_policy(&service_account).await?)
            }
            C::SetIamPolicy {
                service_account,
                policy_file,
            } => self.set_policy_file(&service_account, &policy_file).await?,
            C::AddIamPolicyBinding {
                service_account,
                member,
                role,
                condition,
            } => {
                let condition = parse_condition(condition.condition.as_deref())?;
                self.change_binding(&service_account, |policy| {
                    add_binding(policy, &member, &role, condition);
                    Ok(())
                })
                .await?
            }
            C::RemoveIamPolicyBinding {
                service_account,
                member,
                role,
                condition,
                all,
            } => {
                let condition = parse_condition(condition.condition.as_deref())?;
                self.change_binding(&service_account, |policy| {
                    if !remove_binding(policy, &member, &role, condition.as_ref(), all) {
                        bail!(
                            "Policy binding with the specified principal, role, and condition not found!"
                        );
                    }
                    Ok(())
                })
                .await?
            }
        }
        Ok(())
    }

    async fn update_account(
        &self,
        service_account: &str,
        display_name: Option<String>,
        description: Option<String>,
    ) -> anyhow::Result<()> {
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
        let path = account_path(service_account);
        let account = self
            .client
            .call(Method::PATCH, &path, &[], Some(&body))
            .await?;
        eprintln!("Updated service account [{service_account}].");
        self.print(&account);
        Ok(())
    }

    async fn set_disabled(&self, service_account: &str, disabled: bool) -> anyhow::Result<()> {
        let (verb, done) = if disabled {
            ("disable", "Disabled")
        } else {
            ("enable", "Enabled")
        };
        let path = format!("{}:{verb}", account_path(service_account));
        self.client
            .call(Method::POST, &path, &[], Some(&json!({})))
            .await?;
        eprintln!("{done} service account [{service_account}].");
        Ok(())
    }

    async fn print_access_token(
        &self,
        source: &ImpersonationArgs,
        scopes: Vec<String>,
        lifetime: Option<String>,
    ) -> anyhow::Result<()> {
        let mut body = json!({ "scope": scopes });
        if let Some(l) = lifetime {
            body["lifetime"] = json!(l);
        }
        self.print_credential(source, "generateAccessToken", &body, "accessToken")
            .await
    }

    async fn print_identity_token(
        &self,
        source: &ImpersonationArgs,
        audience: &str,
        include_email: bool,
    ) -> anyhow::Result<()> {
        let body = json!({ "audience": audience, "includeEmail": include_email });
        self.print_credential(source, "generateIdToken", &body, "token")
            .await
    }

    /// Exchanges the subject token, calls the IAM Credentials `verb` of the account with the
    /// federated token, and prints the answer's `field`.
    async fn print_credential(
        &self,
        source: &ImpersonationArgs,
        verb: &str,
        body: &Value,
        field: &str,
    ) -> anyhow::Result<()> {
        let federated = self.exchange(source).await?;
        let path = format!("{}:{verb}", credentials_path(&source.service_account));
        let answer = self
            .client
            .with_token(&federated)
            .call(Method::POST, &path, &[], Some(body))
            .await?;
        self.print_token(&answer, field);
        Ok(())
    }

    /// Replaces the account's policy with a file's, as the service reads it.
    async fn set_policy_file(
        &self,
        service_account: &str,
        policy_file: &std::path::Path,
    ) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(policy_file)
            .with_context(|| format!("reading {}", policy_file.display()))?;
        let policy: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON policy", policy_file.display()))?;
        let path = format!("{}:setIamPolicy", account_path(service_account));
        let body = json!({ "policy": policy });
        let set = self
            .client
            .call(Method::POST, &path, &[], Some(&body))
            .await?;
        eprintln!("Updated IAM policy for serviceAccount [{service_account}].");
        self.print(&set);
        Ok(())
    }

    /// Reads the account's policy, changes it with `change`, and sets it (its etag guards
    /// against a concurrent change).
    async fn change_binding(
        &self,
        service_account: &str,
        change: impl FnOnce(&mut wid_api::iam::Policy) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let admin = self.admin();
        let mut policy = admin.iam_policy(service_account).await?;
        change(&mut policy)?;
        let set = admin.set_iam_policy(service_account, &policy).await?;
        eprintln!("Updated IAM policy for serviceAccount [{service_account}].");
        self.print_typed(&set);
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
            Format::Table => {
                let token = answer.get(field).and_then(Value::as_str);
                crate::output::emit(&format!("{}\n", token.unwrap_or_default()));
            }
            _ => self.print(answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        let c = parse_condition(Some("expression=a == 'x,y',title=t"))
            .expect("parses")
            .expect("some");
        assert_eq!(
            (c.expression.as_str(), c.title.as_str()),
            ("a == 'x,y'", "t")
        );
        assert_eq!(parse_condition(Some("None")).expect("parses"), None);
        assert!(parse_condition(Some("title=t")).is_err(), "no expression");
    }
}
