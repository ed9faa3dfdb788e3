//! Issuers' keys through OpenID Connect discovery: `{issuer}/.well-known/openid-configuration`,
//! then its `jwks_uri`. Used for providers created without uploaded keys and for clusters
//! registered with `--discover`; a background task fetches them again every refresh interval so
//! that key rotation at the issuer reaches wid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wid_api::pool::OidcDiscovery;
use wid_iam::names;
use wid_store::KeySetOwner;

use crate::App;

/// Documents above this size are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Redirects followed per document.
const MAX_REDIRECTS: usize = 3;

/// Why an issuer's keys could not be had. The detail is for the token service's log only: it
/// can carry what an internal address answered, and whoever registers a cluster must not learn
/// that (the fetch would be an oracle on the service's network).
#[derive(Debug)]
pub struct DiscoveryError(String);

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a client is told when discovery fails: nothing of what was answered.
pub const DISCOVERY_FAILED: &str = "the discovery document or its key set could not be fetched over an allowed URL, or is not valid; the token service's log has the detail";

/// The redirect policy of the discovery client: the issuer rule on every hop (plain HTTP only to
/// loopback, and never after TLS), at most [`MAX_REDIRECTS`].
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // Any hop over TLS, not only the first: http → https → http is a step down too.
        let from_https = attempt.previous().iter().any(|hop| hop.scheme() == "https");
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match names::may_fetch(attempt.url().as_str(), from_https) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(format!("redirect refused: {why}")),
        }
    })
}

/// An error and its causes, for the log (reqwest's own text leaves out why a redirect was
/// refused).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

async fn get_limited(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", with_causes(&e)))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches the issuer's JWKS and returns it as text, validated, within `timeout` for the whole
/// of it. The discovery document names the issuer, and its `jwks_uri` follows the issuer rule:
/// from an `https://` issuer, keys come over TLS only.
pub async fn fetch_jwks(
    http: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
) -> Result<String, DiscoveryError> {
    match tokio::time::timeout(timeout, fetch_jwks_untimed(http, issuer)).await {
        Ok(result) => result.map_err(DiscoveryError),
        Err(_) => Err(DiscoveryError(format!(
            "discovery of {issuer} took longer than {} s",
            timeout.as_secs()
        ))),
    }
}

async fn fetch_jwks_untimed(http: &reqwest::Client, issuer: &str) -> Result<String, String> {
    let issuer = names::canonical_issuer(issuer);
    names::validate_issuer_uri(&issuer)?;
    let url = format!("{issuer}/.well-known/openid-configuration");
    let doc: OidcDiscovery = wid_api::json::from_slice(&get_limited(http, &url).await?)
        .map_err(|e| format!("{url} is not an OpenID Connect discovery document: {e}"))?;
    if names::canonical_issuer(&doc.issuer) != issuer {
        return Err(format!(
            "{url} names the issuer '{}', not '{issuer}'",
            doc.issuer
        ));
    }
    names::may_fetch(&doc.jwks_uri, issuer.starts_with("https://"))
        .map_err(|why| format!("{url} names a jwks_uri wid does not fetch: {why}"))?;
    let jwks = get_limited(http, &doc.jwks_uri).await?;
    let text = String::from_utf8(jwks).map_err(|_| format!("{} is not UTF-8", doc.jwks_uri))?;
    crate::jwks::validate(&text).map_err(|e| format!("{}: {e}", doc.jwks_uri))?;
    Ok(text)
}

impl App {
    /// Fetches and stores the keys of one discovery target.
    pub(crate) async fn refresh_keys(
        &self,
        owner: &KeySetOwner,
        issuer: &str,
    ) -> Result<(), String> {
        let jwks = fetch_jwks(&self.http, issuer, self.config.discovery_timeout)
            .await
            .map_err(|e| e.to_string())?;
        self.store
            .set_discovered_jwks(owner, issuer, &jwks, &crate::iam::now_rfc3339())
            .await
            .map_err(|e| e.to_string())
    }
}

/// Keeps discovered keys fresh: every target is fetched at start, then once per refresh
/// interval; one that failed is tried again each minute.
pub async fn refresh_forever(app: Arc<App>) {
    let interval = app.config.jwks_refresh_interval;
    let tick = interval.min(Duration::from_secs(60));
    let mut last_success: HashMap<KeySetOwner, tokio::time::Instant> = HashMap::new();
    loop {
        match app.store.list_discovery_targets().await {
            Ok(targets) => {
                last_success.retain(|owner, _| targets.iter().any(|t| t.owner == *owner));
                for target in targets {
                    let due = last_success
                        .get(&target.owner)
                        .is_none_or(|t| t.elapsed() >= interval);
                    if !due {
                        continue;
                    }
                    match app.refresh_keys(&target.owner, &target.issuer_uri).await {
                        Ok(()) => {
                            tracing::debug!(issuer = %target.issuer_uri, "refreshed keys through discovery");
                            last_success.insert(target.owner, tokio::time::Instant::now());
                        }
                        Err(e) => {
                            tracing::warn!(issuer = %target.issuer_uri, error = %e, "key discovery failed")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list key discovery targets"),
        }
        tokio::time::sleep(tick).await;
    }
}
