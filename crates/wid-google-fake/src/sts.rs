//! STS's `POST /v1/token` for a workload identity pool's OIDC provider, as Google checks it: the
//! form's fields and values, the audience's form and target, the subject token's signature,
//! issuer, times, audience and subject; Google's OAuth error codes and texts (the ones observed
//! in the field, quoted in iam-sts-protocol.md §2.3). Pure: the form and the clock in, a grant
//! or an error out.

use serde_json::{Map, Value};

use crate::Config;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TOKEN_TYPES: [&str; 2] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];
/// Every field STS's form has (RFC 8693 and Google's `options`).
const FIELDS: [&str; 10] = [
    "grant_type",
    "audience",
    "scope",
    "requested_token_type",
    "subject_token",
    "subject_token_type",
    "options",
    "resource",
    "actor_token",
    "actor_token_type",
];
/// The longest `google.subject` Google maps.
const MAX_SUBJECT_BYTES: usize = 127;

pub const INVALID_AUDIENCE: &str = "Invalid value for \"audience\". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.";
pub const INVALID_TARGET: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";

/// An OAuth error (RFC 6749 §5.2), as STS answers it with 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

fn error(error: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        error,
        description: description.into(),
    }
}

/// What an accepted exchange grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/S`.
    pub principal: String,
    pub scopes: Vec<String>,
    /// The subject token's claims, for the record.
    pub claims: Map<String, Value>,
}

/// The form's fields, each once; a field STS does not have is refused as Google's front end
/// refuses it.
pub fn fields(form: &[(String, String)]) -> Result<Map<String, Value>, OAuthError> {
    let mut fields = Map::new();
    for (name, value) in form {
        if !FIELDS.contains(&name.as_str()) {
            return Err(error(
                "invalid_request",
                format!(
                    "Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter. Field '{name}' could not be found in request message."
                ),
            ));
        }
        if fields
            .insert(name.clone(), Value::String(value.clone()))
            .is_some()
        {
            return Err(error(
                "invalid_request",
                format!("Invalid JSON payload received. Repeated value for \"{name}\"."),
            ));
        }
    }
    Ok(fields)
}

/// A JSON body's camelCase name as the form's snake_case one (`subjectToken`: `subject_token`).
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

/// Checks an exchange of `config`'s provider at `now`.
pub fn exchange(
    config: &Config,
    fields: &Map<String, Value>,
    now: i64,
) -> Result<Grant, OAuthError> {
    check_types(fields)?;
    let audience = field(fields, "audience")
        .ok_or_else(|| error("invalid_request", "Missing required field \"audience\"."))?;
    check_audience(config, audience)?;
    let scopes: Vec<String> = field(fields, "scope")
        .ok_or_else(|| error("invalid_request", "Missing required field \"scope\". It is required when exchanging an external credential for a Google access token."))?
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let token = field(fields, "subject_token").ok_or_else(|| {
        error(
            "invalid_request",
            "Missing required field \"subject_token\".",
        )
    })?;
    let claims = subject_claims(config, token.trim(), now)?;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error("invalid_grant", "The ID Token has no \"sub\" claim."))?;
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(error(
            "invalid_request",
            "The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify your attribute mapping or the incoming assertion to produce a mapped attribute that is less than 127 bytes.",
        ));
    }
    Ok(Grant {
        principal: config.principal(subject),
        scopes,
        claims,
    })
}

fn check_types(fields: &Map<String, Value>) -> Result<(), OAuthError> {
    match field(fields, "grant_type") {
        None => {
            return Err(error(
                "invalid_request",
                "Missing required field \"grant_type\".",
            ));
        }
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return Err(error(
                "unsupported_grant_type",
                format!("The grant type \"{other}\" is not supported. Use \"{GRANT_TYPE}\"."),
            ));
        }
    }
    if field(fields, "requested_token_type") != Some(ACCESS_TOKEN_TYPE) {
        return Err(error(
            "invalid_request",
            format!(
                "Invalid value for \"requested_token_type\". Expected \"{ACCESS_TOKEN_TYPE}\"."
            ),
        ));
    }
    match field(fields, "subject_token_type") {
        Some(kind) if SUBJECT_TOKEN_TYPES.contains(&kind) => Ok(()),
        _ => Err(error(
            "invalid_request",
            "Invalid value for \"subject_token_type\". For an OIDC provider it is urn:ietf:params:oauth:token-type:jwt or urn:ietf:params:oauth:token-type:id_token.",
        )),
    }
}

/// The audience names a provider (else `invalid_request`), and that provider is the fake's and
/// enabled (else `invalid_target`).
fn check_audience(config: &Config, audience: &str) -> Result<(), OAuthError> {
    let path = audience
        .strip_prefix("//iam.googleapis.com/")
        .ok_or_else(|| error("invalid_request", INVALID_AUDIENCE))?;
    if wid_iam::names::split_provider_name(path).is_none() {
        return Err(error("invalid_request", INVALID_AUDIENCE));
    }
    if path != config.provider || config.disabled {
        return Err(error("invalid_target", INVALID_TARGET));
    }
    Ok(())
}

/// The subject token's claims, once its signature, issuer, times and audience are the
/// provider's.
fn subject_claims(
    config: &Config,
    token: &str,
    now: i64,
) -> Result<Map<String, Value>, OAuthError> {
    let keys = wid_jose::jwk::Jwks::parse(&config.jwks_json).map_err(|e| {
        error(
            "invalid_grant",
            format!("The provider's JWKS is unusable: {e}"),
        )
    })?;
    let verified = wid_jose::jws::verify(token, &keys.keys).map_err(|e| {
        error(
            "invalid_grant",
            format!(
                "Invalid ID Token: the signature cannot be verified with the provider's keys ({e})."
            ),
        )
    })?;
    let claims = verified.claims;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if issuer != config.issuer_uri {
        return Err(error(
            "invalid_grant",
            format!(
                "The issuer in ID Token [{issuer}] does not match the expected ones: [{}].",
                config.issuer_uri
            ),
        ));
    }
    let rules = wid_jose::claims::TimeRules {
        skew: 30,
        max_lifetime: 48 * 3600,
    };
    wid_jose::claims::check_times(&claims, now, rules)
        .map_err(|e| error("invalid_grant", format!("Invalid ID Token: {e}.")))?;
    check_token_audience(config, &claims)?;
    Ok(claims)
}

/// Any of the token's audiences is allowed: one of the provider's `allowedAudiences`, or with
/// none, the provider's own name (`//` or `https://` prefixed).
fn check_token_audience(config: &Config, claims: &Map<String, Value>) -> Result<(), OAuthError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let allowed = |aud: &str| {
        if config.allowed_audiences.is_empty() {
            aud == format!("//iam.googleapis.com/{}", config.provider)
                || aud == format!("https://iam.googleapis.com/{}", config.provider)
        } else {
            config.allowed_audiences.iter().any(|a| a == aud)
        }
    };
    if audiences.iter().any(|aud| allowed(aud)) {
        return Ok(());
    }
    Err(error(
        "invalid_grant",
        format!(
            "The audience in ID Token [{}] does not match the expected audience.",
            audiences.join(", ")
        ),
    ))
}
