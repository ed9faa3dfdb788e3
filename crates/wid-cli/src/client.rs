//! A small client for the token service's Google-style REST API.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

/// A failure the user should read: an API error with Google's message, or a transport problem.
#[derive(Debug)]
pub struct CallError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "HTTP {status}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CallError {}

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

impl Client {
    /// A client that authenticates with the credential in `token_file`, or with none (for the
    /// OAuth endpoints, which take no bearer token).
    pub fn new(endpoint: &str, token_file: Option<&Path>) -> Result<Client, CallError> {
        let token = match token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .map_err(|e| CallError {
                        status: None,
                        message: format!("cannot read the credential in {}: {e}", path.display()),
                    })?
                    .trim()
                    .to_owned();
                if token.is_empty() {
                    return Err(CallError {
                        status: None,
                        message: format!("the credential file {} is empty", path.display()),
                    });
                }
                token
            }
            None => String::new(),
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("wid-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CallError {
                status: None,
                message: e.to_string(),
            })?;
        Ok(Client {
            base: endpoint.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            base: self.base.clone(),
            token: token.to_owned(),
            http: self.http.clone(),
        }
    }

    /// POSTs a form (the STS endpoints); OAuth errors come back as `error: error_description`.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(|e| CallError {
                status: None,
                message: format!("cannot reach the token service at {}: {e}", self.base),
            })?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = match (
            value.get("error").and_then(Value::as_str),
            value.get("error_description").and_then(Value::as_str),
        ) {
            (Some(error), Some(description)) => format!("{error}: {description}"),
            _ => value.to_string(),
        };
        Err(CallError {
            status: Some(status.as_u16()),
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
        let response = request.send().await.map_err(|e| CallError {
            status: None,
            message: format!("cannot reach the token service at {}: {e}", self.base),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| CallError {
            status: Some(status.as_u16()),
            message: e.to_string(),
        })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(CallError {
            status: Some(status.as_u16()),
            message,
        })
    }
}
