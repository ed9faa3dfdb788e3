//! The fake's own control API under `/_fake/`, for tests in other processes (the network
//! namespace tests drive pods from Python): what [`FakeApi`]'s methods do, over HTTP.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::{FakeApi, PodFixture};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodBody {
    namespace: String,
    name: String,
    node: String,
    #[serde(default)]
    uid: String,
    ip: Option<String>,
    /// Every address (dual-stack), instead of `ip`.
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default = "default_ksa")]
    service_account: String,
    #[serde(default = "running")]
    phase: String,
    #[serde(default)]
    host_network: bool,
}

fn default_ksa() -> String {
    "default".into()
}

fn running() -> String {
    "Running".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceAccountBody {
    namespace: String,
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownBody {
    down: bool,
}

pub(crate) fn router() -> Router<FakeApi> {
    Router::new()
        .route("/_fake/pods", post(put_pod))
        .route("/_fake/pods/{namespace}/{name}", delete(delete_pod))
        .route("/_fake/serviceaccounts", post(put_service_account))
        .route(
            "/_fake/drop-watches",
            post(|State(api): State<FakeApi>| async move {
                api.drop_watches();
                "ok\n"
            }),
        )
        .route(
            "/_fake/compact",
            post(|State(api): State<FakeApi>| async move {
                api.compact();
                "ok\n"
            }),
        )
        .route(
            "/_fake/bookmark",
            post(|State(api): State<FakeApi>| async move {
                api.bookmark();
                "ok\n"
            }),
        )
        .route("/_fake/down", post(set_down))
        .route(
            "/_fake/requests",
            get(|State(api): State<FakeApi>| async move { axum::Json(api.requests()) }),
        )
        .route(
            "/_fake/kubeconfig",
            get(|State(api): State<FakeApi>| async move { api.kubeconfig() }),
        )
        .route(
            "/_fake/jwks",
            get(|State(api): State<FakeApi>| async move { axum::Json(api.jwks()) }),
        )
}

async fn put_pod(State(api): State<FakeApi>, axum::Json(pod): axum::Json<PodBody>) -> Response {
    let uid = api.put_pod(PodFixture {
        namespace: pod.namespace,
        name: pod.name,
        uid: pod.uid,
        node: pod.node,
        ips: if pod.ips.is_empty() {
            pod.ip.into_iter().collect()
        } else {
            pod.ips
        },
        service_account: pod.service_account,
        phase: pod.phase,
        host_network: pod.host_network,
    });
    axum::Json(json!({"uid": uid})).into_response()
}

async fn delete_pod(
    State(api): State<FakeApi>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if api.delete_pod(&namespace, &name) {
        "ok\n".into_response()
    } else {
        (axum::http::StatusCode::NOT_FOUND, "no such pod\n").into_response()
    }
}

async fn put_service_account(
    State(api): State<FakeApi>,
    axum::Json(sa): axum::Json<ServiceAccountBody>,
) -> Response {
    let annotations: Vec<(&str, &str)> = sa
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    api.put_service_account(&sa.namespace, &sa.name, &annotations);
    "ok\n".into_response()
}

async fn set_down(State(api): State<FakeApi>, axum::Json(body): axum::Json<DownBody>) -> Response {
    api.set_down(body.down);
    "ok\n".into_response()
}
