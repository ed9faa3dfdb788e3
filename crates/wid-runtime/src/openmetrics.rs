//! Prometheus metrics as the admin listeners serve them: one encoding and one content type for
//! every service.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry's metrics in the OpenMetrics text format (empty if one cannot be encoded).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// The answer to a scrape of `/metrics`.
pub fn response(registry: &Registry) -> Response {
    let mut response = encode(registry).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}
