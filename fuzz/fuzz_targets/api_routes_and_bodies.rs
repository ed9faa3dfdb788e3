//! The REST edge of the token service: `routes::route` for a method picked by the first byte and
//! a path made of the rest (when it is UTF-8), and `http::parse_json` of the rest as every
//! request type of `wid_api` (plus the resources and list responses that share the modules, and
//! the untyped map the service-account undelete/patch paths read). Whatever parses is serialised
//! back. Only absence of panics is checked.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wid_api::{cluster, iam, pool, project};
use wid_token_service::http::parse_json;
use wid_token_service::routes::route;

fn method(byte: u8) -> Method {
    match byte % 10 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        3 => Method::PATCH,
        4 => Method::DELETE,
        5 => Method::HEAD,
        6 => Method::OPTIONS,
        7 => Method::TRACE,
        8 => Method::CONNECT,
        _ => Method::from_bytes(b"PURGE").unwrap_or_default(),
    }
}

fn body<T: DeserializeOwned + Serialize>(bytes: &[u8]) {
    match parse_json::<T>(bytes) {
        Ok(value) => {
            let _ = serde_json::to_vec(&value);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if let Ok(path) = std::str::from_utf8(rest) {
        match route(&method(first), path) {
            Ok(operation) => {
                let _ = format!("{operation:?}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    // iam.rs
    body::<iam::ServiceAccount>(rest);
    body::<iam::CreateServiceAccountRequest>(rest);
    body::<iam::PatchServiceAccountRequest>(rest);
    body::<iam::ListServiceAccountsResponse>(rest);
    body::<iam::Policy>(rest);
    body::<iam::Binding>(rest);
    body::<iam::Expr>(rest);
    body::<iam::SetIamPolicyRequest>(rest);
    body::<iam::GetIamPolicyRequest>(rest);
    body::<iam::GetPolicyOptions>(rest);
    body::<iam::TestIamPermissionsRequest>(rest);
    body::<iam::TestIamPermissionsResponse>(rest);
    // pool.rs
    body::<pool::WorkloadIdentityPool>(rest);
    body::<pool::ListWorkloadIdentityPoolsResponse>(rest);
    body::<pool::WorkloadIdentityPoolProvider>(rest);
    body::<pool::Oidc>(rest);
    body::<pool::ListWorkloadIdentityPoolProvidersResponse>(rest);
    body::<pool::OidcDiscovery>(rest);
    // project.rs
    body::<project::Project>(rest);
    body::<project::ListProjectsResponse>(rest);
    // cluster.rs
    body::<cluster::Cluster>(rest);
    body::<cluster::ListClustersResponse>(rest);
    // handler.rs reads some bodies as a bare JSON object.
    body::<serde_json::Map<String, serde_json::Value>>(rest);
});
