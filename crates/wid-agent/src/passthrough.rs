//! `--passthrough URL`: requests for another cloud's metadata service (which ones:
//! [`wid_gce::passthrough`]) relayed to the node's own, and its answer relayed back, so that
//! the pods' redirection of 169.254.169.254 takes nothing from pods that read AWS's, Azure's or
//! another cloud's instance metadata. The agent reaches the node's service from the node's own
//! network, which the redirection does not touch.

use std::sync::Arc;
use std::time::Duration;

use wid_gce::Reply;

use crate::upstream::causes;

/// The largest answer relayed; instance metadata documents and user data are far smaller (AWS
/// caps user data at 16 KiB).
const MAX_BODY: usize = 1 << 20;

/// A `--passthrough` URL checked: http or https, a host, and nothing after it but an optional
/// `/` (the pod's path and query are appended as they came); without the trailing `/`.
pub fn base_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("an http:// or https:// URL with a host, like http://169.254.169.254".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("only a scheme, a host and a port: the pod's path and query are kept".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no credentials in the URL".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The node's own metadata service and the client that reaches it.
pub struct Passthrough {
    /// The service's base URL: a scheme, a host and a port.
    base: reqwest::Url,
    http: reqwest::Client,
    /// Relays in flight, node-wide: each holds a connection to the node's service.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Failures a pod's requests can cause again and again: one log line a minute.
    failure_log: wid_runtime::log_limit::LogLimit,
}

/// Relays in flight at once, node-wide; more are refused with a 503 until one ends. A node's
/// pods read their cloud's metadata at start, a few requests each.
const MAX_IN_FLIGHT: usize = 64;

/// A relay that could not be made.
enum Failure {
    /// The node's service did not answer, or not within the bounds.
    Upstream(String),
    /// The URL would not be the node's service's (cannot happen for a plain path: checked all
    /// the same, so that no later change of the checks can send a pod's request elsewhere).
    Elsewhere,
}

impl Passthrough {
    /// A relay to `base` (`http://169.254.169.254`, as [`base_url`] checked it), each call
    /// bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Passthrough, PassthroughError> {
        let base = reqwest::Url::parse(base).map_err(|_| PassthroughError::Url(base.to_owned()))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The node's metadata service is on its own link: never through a proxy of the
            // environment, and a redirect is the pod's to follow.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Passthrough {
            base,
            http,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            failure_log: wid_runtime::log_limit::LogLimit::new(Duration::from_secs(60)),
        })
    }

    /// The node service's answer to `method` of `path` and `query` (as the pod sent them, a
    /// plain path: `wid_gce::passthrough::relayable`) with the pod's end-to-end `headers`; a
    /// 502 when it cannot be had, a 503 when too many relays are in flight.
    pub async fn relay(
        &self,
        method: &str,
        (path, query): (&str, &str),
        headers: Vec<(String, Vec<u8>)>,
    ) -> Reply {
        let Ok(_turn) = self.in_flight.clone().try_acquire_owned() else {
            return Reply::text(
                503,
                "Too many requests for the node's metadata service in flight; retry shortly.\n",
            );
        };
        let failure = match self.forward(method, (path, query), headers).await {
            Ok(reply) => return reply,
            Err(failure) => failure,
        };
        let why = match failure {
            Failure::Upstream(why) => why,
            Failure::Elsewhere => "the request's path is not the node's service's".to_owned(),
        };
        if let Some(left_out) = self.failure_log.admit("failure") {
            let note = wid_runtime::log_limit::left_out_note(left_out);
            tracing::warn!(%method, %why, "the node's metadata service did not answer a relayed request{note}");
        }
        Reply::text(
            502,
            "The node's metadata service did not answer; retry shortly.\n",
        )
    }

    /// The URL of `path` and `query` at the node's service: its scheme, host and port, whatever
    /// the path holds.
    fn url(&self, path: &str, query: &str) -> Result<reqwest::Url, Failure> {
        let mut url = self.base.clone();
        url.set_path(path);
        url.set_query((!query.is_empty()).then_some(query));
        let same = (url.scheme(), url.host_str(), url.port_or_known_default())
            == (
                self.base.scheme(),
                self.base.host_str(),
                self.base.port_or_known_default(),
            );
        if same {
            Ok(url)
        } else {
            Err(Failure::Elsewhere)
        }
    }

    async fn forward(
        &self,
        method: &str,
        (path, query): (&str, &str),
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Reply, Failure> {
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| Failure::Elsewhere)?;
        let mut request = self.http.request(method, self.url(path, query)?);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let upstream = |e: reqwest::Error| Failure::Upstream(causes(&e));
        let mut response = request.send().await.map_err(upstream)?;
        let status = response.status().as_u16();
        let relayed = end_to_end(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(upstream)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Failure::Upstream(format!(
                    "an answer larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply::relay(status, relayed, body))
    }
}

/// A reply's headers but those its own `Connection` header names (hop-by-hop by its say); the
/// ones RFC 9110 names are dropped where the reply is framed (`wid_gce::http1`).
fn end_to_end(headers: &reqwest::header::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let named: Vec<String> = headers
        .get_all(reqwest::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|name| name.trim().to_ascii_lowercase()))
        .collect();
    headers
        .iter()
        .filter(|(name, _)| !named.iter().any(|n| n == name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("--passthrough {0} is not a URL")]
    Url(String),
    #[error("cannot build the passthrough's HTTP client")]
    Http(#[from] reqwest::Error),
}
