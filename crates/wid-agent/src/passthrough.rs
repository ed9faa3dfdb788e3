//! `--passthrough URL`: requests for another cloud's metadata service (which ones:
//! [`wid_gce::passthrough`]) relayed to the node's own, and its answer relayed back, so that
//! the pods' redirection of 169.254.169.254 takes nothing from pods that read AWS's, Azure's or
//! another cloud's instance metadata. The agent reaches the node's service from the node's own
//! network, which the redirection does not touch.

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
    /// The service's base URL, without a trailing `/`.
    base: String,
    http: reqwest::Client,
}

impl Passthrough {
    /// A relay to `base` (`http://169.254.169.254`), each call bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Passthrough, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The node's metadata service is on its own link: never through a proxy of the
            // environment, and a redirect is the pod's to follow.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Passthrough {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// The node service's answer to `method` of `target` (path and query as the pod sent
    /// them) with the pod's end-to-end `headers`; a 502 when it cannot be had.
    pub async fn relay(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Reply {
        match self.forward(method, target, headers).await {
            Ok(reply) => reply,
            Err(why) => {
                tracing::warn!(%method, %why, "the node's metadata service did not answer a relayed request");
                Reply::text(
                    502,
                    format!("the node's metadata service did not answer: {why}\n"),
                )
            }
        }
    }

    async fn forward(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<Reply, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let url = format!("{}{target}", self.base);
        let mut request = self.http.request(method, &url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(|e| causes(&e))?;
        let status = response.status().as_u16();
        let relayed = response
            .headers()
            .iter()
            .filter(|(name, _)| !wid_gce::passthrough::is_hop_by_hop(name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| causes(&e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("an answer larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply::relay(status, relayed, body))
    }
}
