//! IAM Credentials' generateAccessToken and generateIdToken for a federated token, as Google
//! checks them: `projects/-` in the name, a live Bearer token with a scope that reaches IAM,
//! the permission through a binding on the account (a 403 that does not tell whether the
//! account exists), the body's fields; Google's JSON errors (iam-sts-protocol.md §3.7, §4.4).

use serde_json::{Value, json};

use crate::{Config, Federated};

const IAM_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/iam",
    "https://www.googleapis.com/auth/cloud-platform",
];
pub const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

/// A Google JSON error: status, and the body.
#[derive(Debug, PartialEq)]
pub struct GoogleError {
    pub code: u16,
    pub body: Value,
}

/// Google's error of `code` with `status`, `message` and, if any, an `ErrorInfo` of `reason` in
/// `domain` (`iam.googleapis.com` for IAM's own, `googleapis.com` for the front end's).
pub fn google_error(
    code: u16,
    status: &str,
    message: &str,
    reason: Option<(&str, &str, Value)>,
) -> GoogleError {
    let mut error = json!({"code": code, "message": message, "status": status});
    if let Some((reason, domain, metadata)) = reason {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": domain,
            "metadata": metadata,
        }]);
    }
    GoogleError {
        code,
        body: json!({ "error": error }),
    }
}

/// The front end's metadata of an IAM Credentials call.
fn front_end() -> Value {
    json!({"service": "iamcredentials.googleapis.com", "method": "google.iam.credentials.v1.IAMCredentials"})
}

fn invalid_argument(message: &str) -> GoogleError {
    google_error(400, "INVALID_ARGUMENT", message, None)
}

/// The two methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    AccessToken,
    IdToken,
}

impl Method {
    fn permission(self) -> &'static str {
        match self {
            Method::AccessToken => "iam.serviceAccounts.getAccessToken",
            Method::IdToken => "iam.serviceAccounts.getOpenIdToken",
        }
    }
}

/// `projects/-/serviceAccounts/EMAIL:VERB`'s account and method, from the path's project and
/// last segment.
pub fn route(project: &str, name: &str) -> Result<(String, Method), GoogleError> {
    let (email, verb) = name
        .rsplit_once(':')
        .ok_or_else(|| google_error(404, "NOT_FOUND", "Method not found.", None))?;
    let method = match verb {
        "generateAccessToken" => Method::AccessToken,
        "generateIdToken" => Method::IdToken,
        _ => return Err(google_error(404, "NOT_FOUND", "Method not found.", None)),
    };
    if project != "-" {
        return Err(invalid_argument(
            "Request contains an invalid argument: the project of a service account's name must be \"-\".",
        ));
    }
    if email.is_empty() {
        return Err(invalid_argument("Request contains an invalid argument."));
    }
    Ok((email.to_owned(), method))
}

/// The caller's federated token, live and with a scope that reaches IAM.
pub fn caller(
    authorization: Option<&str>,
    lookup: impl Fn(&str) -> Option<Federated>,
    now: i64,
) -> Result<Federated, GoogleError> {
    let unauthenticated = |reason: &str| {
        google_error(
            401,
            "UNAUTHENTICATED",
            UNAUTHENTICATED,
            Some((reason, "googleapis.com", front_end())),
        )
    };
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthenticated("CREDENTIALS_MISSING"))?;
    let federated =
        lookup(token).ok_or_else(|| unauthenticated("ACCESS_TOKEN_TYPE_UNSUPPORTED"))?;
    if federated.expires_at <= now {
        return Err(unauthenticated("ACCESS_TOKEN_EXPIRED"));
    }
    if !federated
        .scopes
        .iter()
        .any(|s| IAM_SCOPES.contains(&s.as_str()))
    {
        return Err(google_error(
            403,
            "PERMISSION_DENIED",
            "Request had insufficient authentication scopes.",
            Some((
                "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "googleapis.com",
                front_end(),
            )),
        ));
    }
    Ok(federated)
}

/// The caller may use `method` on `email`: a member of the account's bindings names its
/// principal, or the whole pool. An account that does not exist is IAM's 404, as GKE's metadata
/// server relays it (metadata-api.md §7.4).
pub fn authorize(
    config: &Config,
    federated: &Federated,
    email: &str,
    method: Method,
) -> Result<(), GoogleError> {
    let Some(members) = config.service_accounts.get(email) else {
        return Err(google_error(
            404,
            "NOT_FOUND",
            &format!("Not found; Gaia id not found for email {email}"),
            None,
        ));
    };
    let pool_set = format!("principalSet://iam.googleapis.com/{}/*", config.pool_path());
    if members
        .iter()
        .any(|m| *m == federated.principal || *m == pool_set)
    {
        return Ok(());
    }
    let permission = method.permission();
    Err(google_error(
        403,
        "PERMISSION_DENIED",
        &format!("Permission '{permission}' denied on resource (or it may not exist)."),
        Some((
            "IAM_PERMISSION_DENIED",
            "iam.googleapis.com",
            json!({"permission": permission}),
        )),
    ))
}

/// generateAccessToken's body: its scopes and lifetime in seconds.
pub fn access_token_request(body: &Value) -> Result<(Vec<String>, i64), GoogleError> {
    let scopes: Vec<String> = body["scope"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if scopes.is_empty() {
        return Err(invalid_argument(
            "Request contains an invalid argument: scope is required.",
        ));
    }
    let lifetime = match &body["lifetime"] {
        Value::Null => 3600,
        Value::String(text) => text
            .strip_suffix('s')
            .and_then(|n| n.split('.').next()?.parse::<i64>().ok())
            .filter(|n| (1..=3600).contains(n))
            .ok_or_else(|| {
                invalid_argument(
                    "Request contains an invalid argument: lifetime must be between 1s and 3600s.",
                )
            })?,
        _ => {
            return Err(invalid_argument(
                "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration).",
            ));
        }
    };
    Ok((scopes, lifetime))
}

/// generateIdToken's body: its audience and whether the email is included.
pub fn id_token_request(body: &Value) -> Result<(String, bool), GoogleError> {
    let audience = body["audience"]
        .as_str()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            invalid_argument("Request contains an invalid argument: audience is required.")
        })?;
    let include_email = match &body["includeEmail"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => {
            return Err(invalid_argument(
                "Invalid value at 'include_email' (TYPE_BOOL).",
            ));
        }
    };
    Ok((audience.to_owned(), include_email))
}
