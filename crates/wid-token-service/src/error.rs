//! The one place where failures become HTTP answers: every handler returns [`ApiError`], and
//! [`ApiError::into_response`] renders it in Google's JSON error format with the AIP-193 status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wid_api::error::{bad_request, error_info, resource_info};
use wid_api::{GoogleError, RpcCode};
use wid_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A malformed request; `field` names what was wrong when one field was.
    #[error("{message}")]
    InvalidArgument {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    AlreadyExists { message: String, resource: String },
    /// A read-modify-write lost against a concurrent change.
    #[error("{0}")]
    Aborted(String),
    #[error("missing credentials")]
    MissingCredentials,
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A valid token whose scopes do not reach IAM.
    #[error("insufficient scopes")]
    InsufficientScope,
    /// The caller lacks `permission` on the resource (or it may not exist).
    #[error("permission {permission} denied")]
    PermissionDenied { permission: &'static str },
    #[error("{message}")]
    MethodNotAllowed { message: String, allow: String },
    #[error("internal error: {0}")]
    Internal(String),
    /// An OAuth-style refusal (STS, tokeninfo): HTTP 400 with `{"error", "error_description"}`.
    #[error("{error}: {description}")]
    OAuth {
        error: &'static str,
        description: String,
    },
    /// The database cannot be reached: 503, to be retried (here later, or at another replica).
    #[error("{0}")]
    Unavailable(String),
    /// The OAuth shape of [`ApiError::Unavailable`]: 503 with RFC 6749's
    /// `temporarily_unavailable`.
    #[error("temporarily_unavailable: {0}")]
    OAuthUnavailable(String),
    /// An OAuth-style server failure: HTTP 500 with `{"error": "server_error", …}`.
    #[error("server_error: {0}")]
    OAuthServer(String),
}

impl ApiError {
    /// The same failure in the OAuth shape, for the endpoints whose clients expect it (STS).
    pub fn oauth_shaped(self) -> ApiError {
        match self {
            e @ (ApiError::OAuth { .. }
            | ApiError::OAuthServer(_)
            | ApiError::OAuthUnavailable(_)) => e,
            ApiError::Internal(detail) => ApiError::OAuthServer(detail),
            ApiError::Unavailable(detail) => ApiError::OAuthUnavailable(detail),
            ApiError::MethodNotAllowed { message, .. } => ApiError::OAuth {
                error: "invalid_request",
                description: message,
            },
            other => ApiError::OAuth {
                error: "invalid_request",
                description: other.to_string(),
            },
        }
    }
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn code(&self) -> RpcCode {
        match self {
            ApiError::InvalidArgument { .. } => RpcCode::InvalidArgument,
            ApiError::FailedPrecondition(_) => RpcCode::FailedPrecondition,
            ApiError::NotFound(_) => RpcCode::NotFound,
            ApiError::AlreadyExists { .. } => RpcCode::AlreadyExists,
            ApiError::Aborted(_) => RpcCode::Aborted,
            ApiError::MissingCredentials | ApiError::InvalidCredentials => RpcCode::Unauthenticated,
            ApiError::PermissionDenied { .. } | ApiError::InsufficientScope => {
                RpcCode::PermissionDenied
            }
            ApiError::MethodNotAllowed { .. } => RpcCode::Unimplemented,
            ApiError::Internal(_) => RpcCode::Internal,
            ApiError::Unavailable(_) => RpcCode::Unavailable,
            ApiError::OAuth { .. } => RpcCode::InvalidArgument,
            ApiError::OAuthServer(_) => RpcCode::Internal,
            ApiError::OAuthUnavailable(_) => RpcCode::Unavailable,
        }
    }

    fn body(&self) -> GoogleError {
        let code = self.code();
        match self {
            ApiError::InvalidArgument {
                field: Some(field),
                message,
            } => GoogleError::new(code, message, vec![bad_request(field, message)]),
            ApiError::AlreadyExists { message, resource } => {
                GoogleError::new(code, message, vec![resource_info(resource)])
            }
            ApiError::MissingCredentials => GoogleError::new(
                code,
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                vec![error_info(
                    "CREDENTIALS_MISSING",
                    "googleapis.com",
                    serde_json::json!({}),
                )],
            ),
            ApiError::InvalidCredentials => GoogleError::new(
                code,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                vec![error_info(
                    "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                    "googleapis.com",
                    serde_json::json!({}),
                )],
            ),
            ApiError::InsufficientScope => GoogleError::new(
                code,
                "Request had insufficient authentication scopes.",
                vec![error_info(
                    "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                    "googleapis.com",
                    serde_json::json!({ "service": "iamcredentials.googleapis.com" }),
                )],
            ),
            ApiError::PermissionDenied { permission } => GoogleError::new(
                code,
                format!("Permission '{permission}' denied on resource (or it may not exist)."),
                vec![error_info(
                    "IAM_PERMISSION_DENIED",
                    "iam.googleapis.com",
                    serde_json::json!({ "permission": permission }),
                )],
            ),
            // HTTP says 405 for a known path with the wrong method; the status names the nearest
            // google.rpc code, as the request is for a method this resource does not implement.
            ApiError::MethodNotAllowed { message, .. } => {
                let mut e = GoogleError::new(code, message, vec![]);
                e.error.code = 405;
                e
            }
            // Never leak internals to the caller; the log has the details.
            ApiError::Internal(_) => GoogleError::new(code, "Internal error encountered.", vec![]),
            other => GoogleError::new(code, other.to_string(), vec![]),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound("Requested entity was not found.".into()),
            StoreError::AlreadyExists => ApiError::AlreadyExists {
                message: "Requested entity already exists.".into(),
                resource: String::new(),
            },
            StoreError::Aborted => ApiError::Aborted(
                "There were concurrent changes. Please retry the whole read-modify-write with exponential backoff.".into(),
            ),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::Unavailable("The service is currently unavailable.".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        if let ApiError::OAuthServer(detail) = &self {
            tracing::error!(error = %detail, "internal error");
            let body = wid_api::sts::OAuthError {
                error: "server_error".into(),
                error_description: "Internal error encountered.".into(),
            };
            return crate::http::json_response(StatusCode::INTERNAL_SERVER_ERROR, &body);
        }
        if let ApiError::OAuthUnavailable(description) = &self {
            // RFC 6749's code for a server that cannot answer now.
            let body = wid_api::sts::OAuthError {
                error: "temporarily_unavailable".into(),
                error_description: description.clone(),
            };
            let mut response = crate::http::json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        if let ApiError::OAuth { error, description } = &self {
            let body = wid_api::sts::OAuthError {
                error: (*error).to_owned(),
                error_description: description.clone(),
            };
            return crate::http::json_response(StatusCode::BAD_REQUEST, &body);
        }
        let body = self.body();
        let status =
            StatusCode::from_u16(body.error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = crate::http::json_response(status, &body);
        if matches!(self, ApiError::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = &self
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(header::ALLOW, v);
        }
        if matches!(
            self,
            ApiError::MissingCredentials | ApiError::InvalidCredentials
        ) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wid\""),
            );
        }
        response
    }
}
