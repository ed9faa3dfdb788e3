//! The Google JSON error body (`{"error": {"code", "message", "status", "details", "errors"}}`)
//! used by every googleapis REST surface except the OAuth-style STS endpoints.

use serde::{Deserialize, Serialize};

/// The `google.rpc.Code` names wid answers with, and their HTTP statuses (AIP-193 mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcCode {
    InvalidArgument,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Aborted,
    AlreadyExists,
    ResourceExhausted,
    Internal,
    Unimplemented,
    Unavailable,
    DeadlineExceeded,
}

impl RpcCode {
    pub fn http_status(self) -> u16 {
        match self {
            RpcCode::InvalidArgument | RpcCode::FailedPrecondition => 400,
            RpcCode::Unauthenticated => 401,
            RpcCode::PermissionDenied => 403,
            RpcCode::NotFound => 404,
            RpcCode::Aborted | RpcCode::AlreadyExists => 409,
            RpcCode::ResourceExhausted => 429,
            RpcCode::Internal => 500,
            RpcCode::Unimplemented => 501,
            RpcCode::Unavailable => 503,
            RpcCode::DeadlineExceeded => 504,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RpcCode::InvalidArgument => "INVALID_ARGUMENT",
            RpcCode::FailedPrecondition => "FAILED_PRECONDITION",
            RpcCode::Unauthenticated => "UNAUTHENTICATED",
            RpcCode::PermissionDenied => "PERMISSION_DENIED",
            RpcCode::NotFound => "NOT_FOUND",
            RpcCode::Aborted => "ABORTED",
            RpcCode::AlreadyExists => "ALREADY_EXISTS",
            RpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            RpcCode::Internal => "INTERNAL",
            RpcCode::Unimplemented => "UNIMPLEMENTED",
            RpcCode::Unavailable => "UNAVAILABLE",
            RpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
        }
    }

    /// The camelCase `reason` of the legacy v1 `errors[]` entry for this code.
    pub fn legacy_reason(self) -> &'static str {
        match self {
            RpcCode::InvalidArgument => "badRequest",
            RpcCode::FailedPrecondition => "failedPrecondition",
            RpcCode::Unauthenticated => "authError",
            RpcCode::PermissionDenied => "forbidden",
            RpcCode::NotFound => "notFound",
            RpcCode::Aborted => "aborted",
            RpcCode::AlreadyExists => "alreadyExists",
            RpcCode::ResourceExhausted => "rateLimitExceeded",
            RpcCode::Internal => "backendError",
            RpcCode::Unimplemented => "notImplemented",
            RpcCode::Unavailable => "backendError",
            RpcCode::DeadlineExceeded => "deadlineExceeded",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GoogleError {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<LegacyError>,
}

/// One entry of the legacy v1 `errors[]` array; discovery-based Java clients surface it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LegacyError {
    pub message: String,
    pub domain: String,
    pub reason: String,
}

impl GoogleError {
    pub fn new(code: RpcCode, message: impl Into<String>, details: Vec<serde_json::Value>) -> Self {
        let message = message.into();
        GoogleError {
            error: ErrorBody {
                code: code.http_status(),
                status: code.name().to_owned(),
                errors: vec![LegacyError {
                    message: message.clone(),
                    domain: "global".to_owned(),
                    reason: code.legacy_reason().to_owned(),
                }],
                message,
                details,
            },
        }
    }
}

/// `google.rpc.ErrorInfo`, as IAM puts it in permission denials.
pub fn error_info(reason: &str, domain: &str, metadata: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
        "metadata": metadata,
    })
}

/// `google.rpc.ResourceInfo`, as IAM puts it in ALREADY_EXISTS answers.
pub fn resource_info(resource_name: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.ResourceInfo",
        "resourceName": resource_name,
    })
}

/// `google.rpc.BadRequest` naming the offending field.
pub fn bad_request(field: &str, description: &str) -> serde_json::Value {
    serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": description}],
    })
}
