//! A small client for the token service's Google-style REST API: requests, and failures told
//! in words that say what to do.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

/// A failure the user should read.
#[derive(Debug)]
pub enum CallError {
    /// The credential file cannot be used.
    Credential(String),
    /// No HTTP answer came; `reason` says why and what to try.
    Unreachable { endpoint: String, reason: String },
    /// The service answered with an error: Google's message (or the OAuth error).
    Api { status: u16, message: String },
    /// The service answered something this client cannot read.
    Protocol { endpoint: String, detail: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Credential(message) => f.write_str(message),
            CallError::Unreachable { endpoint, reason } => {
                write!(f, "cannot reach the token service at {endpoint}: {reason}")
            }
            CallError::Api { status, message } => write!(f, "HTTP {status}: {message}"),
            CallError::Protocol { endpoint, detail } => {
                write!(f, "the token service at {endpoint} answered {detail}")
            }
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Why a request got no answer, and what to try, from the causes reqwest reports.
fn transport_failure(endpoint: &str, error: &reqwest::Error) -> CallError {
    let mut causes = Vec::new();
    let mut io_kind = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = io_kind.or(Some(io.kind()));
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    let all = causes.join(": ");
    let tls = endpoint.starts_with("https://");
    let other_scheme = |scheme: &str| {
        endpoint
            .split_once("://")
            .map_or_else(String::new, |(_, rest)| format!("{scheme}://{rest}"))
    };
    let reason = if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        "nothing listens there (connection refused). Is it running? Start it with `wid dev` or \
         `wid iam serve`, or name where it runs with --endpoint or WID_ENDPOINT"
            .to_owned()
    } else if error.is_timeout() {
        "no answer in time. Is the address right, and the service up?".to_owned()
    } else if tls && (all.contains("InvalidContentType") || all.contains("corrupt message")) {
        format!(
            "it does not speak TLS there. If it serves plain HTTP, use {}",
            other_scheme("http")
        )
    } else if !tls && (all.contains("invalid HTTP") || all.contains("parse")) {
        format!(
            "what answered is not plain HTTP. If it serves TLS, use {}",
            other_scheme("https")
        )
    } else if all.contains("dns error") || all.contains("failed to lookup") {
        "its host name does not resolve. Is --endpoint (WID_ENDPOINT) right?".to_owned()
    } else {
        // The innermost cause says the most; the outer ones repeat the URL.
        causes.last().cloned().unwrap_or(all)
    };
    CallError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason,
    }
}

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Percent-encodes one path segment.
pub fn segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'@');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Reads a credential file: one token, surrounding whitespace ignored.
fn read_credential(path: &Path) -> Result<String, CallError> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| {
            CallError::Credential(format!(
                "cannot read the credential in {}: {e}",
                path.display()
            ))
        })?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(CallError::Credential(format!(
            "the credential file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

impl Client {
    /// A client that authenticates with the credential in `token_file`, or with none (for the
    /// OAuth endpoints, which take no bearer token). `endpoint` is an http(s) base URL
    /// ([`crate::args::parse_endpoint`]).
    pub fn new(
        endpoint: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Client, CallError> {
        let token = match token_file {
            Some(path) => read_credential(path)?,
            None => String::new(),
        };
        let unusable = |reason: String| CallError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("wid-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let certificates = wid_runtime::tls::ca_certificates(path)
                .map_err(|e| CallError::Credential(format!("--ca-file: {e}")))?
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unusable(format!("cannot use --ca-file: {e}")))?;
            builder = builder.tls_certs_merge(certificates);
        }
        let http = builder
            .build()
            .map_err(|e| unusable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: endpoint.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            base: self.base.clone(),
            token: token.to_owned(),
            http: self.http.clone(),
        }
    }

    /// Sends a request; the answer's status and body, or why none came.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), CallError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_failure(&self.base, &e))?;
        // wid dev's two addresses are easy to swap: the metadata server says what it is.
        if response.headers().get("metadata-flavor").is_some() {
            return Err(CallError::Protocol {
                endpoint: self.base.clone(),
                detail:
                    "as a GCE metadata server (Metadata-Flavor: Google), not as the token service: \
                         that is wid's metadata address; the token service's is the WID_ENDPOINT \
                         `wid dev` prints"
                        .to_owned(),
            });
        }
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_failure(&self.base, &e))?;
        Ok((status, body.to_vec()))
    }

    /// POSTs a form (the STS endpoints); OAuth errors come back as `error: error_description`.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let (status, bytes) = self.send(self.http.post(&url).form(form)).await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = match (
            value.get("error").and_then(Value::as_str),
            value.get("error_description").and_then(Value::as_str),
        ) {
            (Some(error), Some(description)) => format!("{error}: {description}"),
            _ => String::from_utf8_lossy(&bytes).into_owned(),
        };
        Err(CallError::Api {
            status: status.as_u16(),
            message,
        })
    }

    /// Calls `method path` with an optional JSON body; returns the JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).query(query);
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, bytes) = self.send(request).await?;
        let value: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return value.ok_or_else(|| CallError::Protocol {
                endpoint: self.base.clone(),
                detail: format!(
                    "{status} with a body that is not JSON: is it wid's token service?"
                ),
            });
        }
        let message = value
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(CallError::Api {
            status: status.as_u16(),
            message,
        })
    }
}
