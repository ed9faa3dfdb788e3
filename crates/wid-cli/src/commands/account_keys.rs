//! `wid iam service-accounts keys ...`, as gcloud's: the keys of one account.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};

use super::Cli;
use crate::args::AccountKeysCommand;
use crate::client::segment;
use crate::output::Column;

const ACCOUNT_KEY_COLUMNS: &[Column] = &[
    ("KEY_ID", "keyId"),
    ("ACCOUNT", "account"),
    ("CREATED_AT", "validAfterTime"),
    ("EXPIRES_AT", "validBeforeTime"),
    ("LAST_USED", "lastUseTime"),
    ("ORIGIN", "keyOrigin"),
    ("DISABLED", "disabled"),
];

/// gcloud names keys under `projects/-`, whatever the account's project.
fn keys_path(account: &str) -> String {
    format!("/v1/projects/-/serviceAccounts/{}/keys", segment(account))
}

/// A key as listed, with its id and its account's email (from its name,
/// `projects/P/serviceAccounts/EMAIL/keys/ID`) beside it.
fn with_key_id(mut key: Value) -> Value {
    let name = key["name"].as_str().unwrap_or_default().to_owned();
    let mut parts = name.rsplit('/');
    let id = parts.next().unwrap_or_default();
    let email = parts.nth(1).unwrap_or_default();
    key["keyId"] = json!(id);
    key["account"] = json!(email);
    key
}

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Cli {
    pub(super) async fn account_keys(&self, command: AccountKeysCommand) -> anyhow::Result<()> {
        use AccountKeysCommand as C;
        match command {
            C::Create {
                output_file,
                account,
            } => {
                let body = json!({"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE"});
                let path = keys_path(&account.iam_account);
                let key = self
                    .client
                    .call(Method::POST, &path, &[], Some(&body))
                    .await?;
                let file = STANDARD
                    .decode(key["privateKeyData"].as_str().unwrap_or_default())
                    .context("the token service sent no key file")?;
                wid_runtime::private_files::write_new_private(&output_file, &file)
                    .with_context(|| format!("writing the key file {}", output_file.display()))?;
                let key = with_key_id(key);
                eprintln!(
                    "Created key [{}] of [{}], valid until {}, in [{}].",
                    key["keyId"].as_str().unwrap_or_default(),
                    account.iam_account,
                    key["validBeforeTime"].as_str().unwrap_or_default(),
                    output_file.display()
                );
            }
            C::Upload {
                certificate_file,
                account,
            } => {
                let pem = std::fs::read(&certificate_file)
                    .with_context(|| format!("reading {}", certificate_file.display()))?;
                let body = json!({"publicKeyData": STANDARD.encode(pem)});
                let path = format!("{}:upload", keys_path(&account.iam_account));
                let key = self
                    .client
                    .call(Method::POST, &path, &[], Some(&body))
                    .await?;
                self.print_list(&[with_key_id(key)], ACCOUNT_KEY_COLUMNS);
            }
            C::List {
                iam_account,
                all_projects: _,
                older_than,
            } => {
                let accounts = match iam_account {
                    Some(account) => vec![account],
                    None => self.every_account().await?,
                };
                let mut keys = Vec::new();
                for account in &accounts {
                    keys.extend(self.keys_of(account).await?);
                }
                if let Some(age) = older_than {
                    let cutoff = now() - age;
                    keys.retain(|k| {
                        k["validAfterTime"]
                            .as_str()
                            .and_then(wid_api::time::parse_rfc3339)
                            .is_some_and(|made| made < cutoff)
                    });
                }
                self.print_list(&keys, ACCOUNT_KEY_COLUMNS);
            }
            C::Delete { key_id, account } => {
                let path = format!("{}/{}", keys_path(&account.iam_account), segment(&key_id));
                self.client.call(Method::DELETE, &path, &[], None).await?;
                eprintln!("Deleted key [{key_id}] of [{}].", account.iam_account);
            }
            C::Disable { key_id, account } => {
                self.set_key_state(&key_id, &account.iam_account, "disable")
                    .await?
            }
            C::Enable { key_id, account } => {
                self.set_key_state(&key_id, &account.iam_account, "enable")
                    .await?
            }
        }
        Ok(())
    }

    /// The keys of `account`, each with its id and account beside it.
    async fn keys_of(&self, account: &str) -> anyhow::Result<Vec<Value>> {
        let answer = self
            .client
            .call(Method::GET, &keys_path(account), &[], None)
            .await?;
        Ok(answer["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(with_key_id)
            .collect())
    }

    /// The email of every account of every project the caller may list.
    async fn every_account(&self) -> anyhow::Result<Vec<String>> {
        let admin = self.admin();
        let mut emails = Vec::new();
        for project in admin.projects().await? {
            for account in admin.service_accounts(&project.project_id).await? {
                emails.push(account.email);
            }
        }
        Ok(emails)
    }

    /// `disable` or `enable` the key `key_id` of `account`.
    async fn set_key_state(&self, key_id: &str, account: &str, verb: &str) -> anyhow::Result<()> {
        let path = format!("{}/{}:{verb}", keys_path(account), segment(key_id));
        self.client
            .call(Method::POST, &path, &[], Some(&json!({})))
            .await?;
        eprintln!("{}d key [{key_id}] of [{account}].", capitalised(verb));
        Ok(())
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
