//! `wid iam workload-identity-pools ...`: pools and their OIDC providers.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Cli, POOL_COLUMNS, PROVIDER_COLUMNS, items, operation_response};
use crate::args::{Format, LocationArg, OidcArgs, PoolRef, PoolsCommand, ProvidersCommand};
use crate::client::segment;

fn pools_path(project: &str, location: &LocationArg) -> String {
    format!(
        "/v1/projects/{}/locations/{}/workloadIdentityPools",
        segment(project),
        segment(&location.location)
    )
}

fn providers_path(pool: &PoolRef) -> anyhow::Result<String> {
    Ok(format!(
        "{}/{}/providers",
        pools_path(pool.project.id()?, &pool.location),
        segment(&pool.workload_identity_pool)
    ))
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
    pub(super) async fn pools(&self, command: PoolsCommand) -> anyhow::Result<()> {
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
                        &pools_path(project.id()?, &location),
                        &[("workloadIdentityPoolId", &pool)],
                        Some(&body),
                    )
                    .await?;
                eprintln!("Created workload identity pool [{pool}].");
                self.print(&operation_response(op));
            }
            PoolsCommand::List { project, location } => {
                let list = self.get(&pools_path(project.id()?, &location)).await?;
                self.print_list(&items(&list, "workloadIdentityPools"), POOL_COLUMNS);
            }
            PoolsCommand::Describe {
                pool,
                project,
                location,
            } => {
                self.describe(&pools_path(project.id()?, &location), &pool)
                    .await?;
            }
            PoolsCommand::Delete {
                pool,
                project,
                location,
            } => {
                let path = format!(
                    "{}/{}",
                    pools_path(project.id()?, &location),
                    segment(&pool)
                );
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
                        &providers_path(&pool)?,
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
                let path = format!("{}/{}", providers_path(&pool)?, segment(&provider));
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
                let list = self.get(&providers_path(&pool)?).await?;
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
                self.describe(&providers_path(&pool)?, &provider).await?;
            }
            ProvidersCommand::Delete { provider, pool } => {
                let path = format!("{}/{}", providers_path(&pool)?, segment(&provider));
                self.client.call(Method::DELETE, &path, &[], None).await?;
                eprintln!("Deleted workload identity pool provider [{provider}].");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        let m = parse_mapping(
            "google.subject=assertion.sub,attribute.ns=assertion['kubernetes.io'].namespace",
        )
        .expect("parses");
        assert_eq!(m.len(), 2);
        assert!(parse_mapping("nokey").is_err());
    }
}
