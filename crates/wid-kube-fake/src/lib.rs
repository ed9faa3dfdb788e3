//! A fake Kubernetes API server for wid's tests, speaking the wire protocol kube-rs and every
//! other client use: pods listed and watched (field selectors, resourceVersion, bookmarks, `410
//! Gone` once history is compacted), service accounts, the TokenRequest API signed with the
//! cluster's own key, the issuer's OIDC discovery and JWKS, and fault injection (dropped watches,
//! an unavailable server, delays). Tests drive pod lifecycles through [`FakeApi`].
//!
//! It is not the API server: no admission, no RBAC, no validation beyond what the agent relies
//! on. It keeps objects as JSON, because JSON is what crosses the wire.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use wid_jose::signer::{SigningKey, TokenType};

/// The bearer token the fake accepts (written into the kubeconfig it makes).
pub const TOKEN: &str = "wid-kube-fake-token";

/// A pod to create or replace.
#[derive(Clone, Debug)]
pub struct PodFixture {
    pub namespace: String,
    pub name: String,
    /// Empty: a fresh uid is made.
    pub uid: String,
    pub node: String,
    /// `status.podIPs`, the first also `status.podIP` (one per family on a dual-stack pod).
    pub ips: Vec<String>,
    pub service_account: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: String,
    pub host_network: bool,
}

impl PodFixture {
    pub fn new(namespace: &str, name: &str, node: &str) -> PodFixture {
        PodFixture {
            namespace: namespace.into(),
            name: name.into(),
            uid: String::new(),
            node: node.into(),
            ips: Vec::new(),
            service_account: "default".into(),
            phase: "Running".into(),
            host_network: false,
        }
    }

    /// Adds an address (the first is `podIP`).
    pub fn ip(mut self, ip: &str) -> PodFixture {
        self.ips.push(ip.into());
        self
    }

    pub fn service_account(mut self, ksa: &str) -> PodFixture {
        self.service_account = ksa.into();
        self
    }

    pub fn phase(mut self, phase: &str) -> PodFixture {
        self.phase = phase.into();
        self
    }

    pub fn uid(mut self, uid: &str) -> PodFixture {
        self.uid = uid.into();
        self
    }

    pub fn host_network(mut self) -> PodFixture {
        self.host_network = true;
        self
    }
}

#[derive(Clone, Debug)]
struct Change {
    resource_version: u64,
    /// `None` for a BOOKMARK, which every watch hears.
    resource: Option<Resource>,
    kind: &'static str,
    object: Value,
}

/// The kinds of object the fake lists and watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Pods,
    ServiceAccounts,
}

impl Resource {
    fn list_kind(self) -> &'static str {
        match self {
            Resource::Pods => "PodList",
            Resource::ServiceAccounts => "ServiceAccountList",
        }
    }

    fn objects(self, objects: &Objects) -> &BTreeMap<(String, String), Value> {
        match self {
            Resource::Pods => &objects.pods,
            Resource::ServiceAccounts => &objects.service_accounts,
        }
    }
}

#[derive(Default)]
struct Objects {
    resource_version: u64,
    /// Every change since `compacted_at`, for watches that resume.
    history: Vec<Change>,
    compacted_at: u64,
    pods: BTreeMap<(String, String), Value>,
    service_accounts: BTreeMap<(String, String), Value>,
    nodes: BTreeMap<String, Value>,
    /// Events posted, as the API server stored them.
    events: Vec<Value>,
    /// Every request, as `METHOD path?query`.
    requests: Vec<String>,
    tokens_issued: usize,
    bookmarks_sent: usize,
    next_uid: u64,
    /// Every request fails with 503 while set.
    down: bool,
    /// Held before answering every request.
    delay: Duration,
    /// Service accounts `ksa-0` to `ksa-{n-1}` exist in every namespace without being stored.
    synthetic_service_accounts: u64,
}

struct Shared {
    objects: Mutex<Objects>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    watch_generation: tokio::sync::watch::Sender<u64>,
    key: SigningKey,
    issuer: Mutex<String>,
    base: Mutex<String>,
}

/// The fake API server: a handle for tests, cheap to clone.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Shared>,
}

impl Default for FakeApi {
    fn default() -> Self {
        FakeApi::new()
    }
}

impl FakeApi {
    pub fn new() -> FakeApi {
        let (changes, _) = broadcast::channel(65_536);
        let (watch_generation, _) = tokio::sync::watch::channel(0);
        let key = match SigningKey::generate(wid_jose::Algorithm::Rs256) {
            Ok(key) => key,
            Err(e) => panic!("cannot make the cluster key: {e}"),
        };
        FakeApi {
            shared: Arc::new(Shared {
                objects: Mutex::new(Objects::default()),
                changes,
                watch_generation,
                key,
                issuer: Mutex::new(String::new()),
                base: Mutex::new(String::new()),
            }),
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.shared
            .objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves on `127.0.0.1:0` on the current runtime; the issuer is the base URL.
    pub async fn serve(&self) -> std::io::Result<String> {
        self.serve_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?)
            .await
    }

    /// Serves on `addr` on the current runtime; the issuer is the base URL unless
    /// [`FakeApi::set_issuer`] named another.
    pub async fn serve_on(&self, addr: std::net::SocketAddr) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base = format!("http://{}", listener.local_addr()?);
        *self
            .shared
            .base
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = base.clone();
        {
            let mut issuer = self
                .shared
                .issuer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if issuer.is_empty() {
                issuer.clone_from(&base);
            }
        }
        let router = self.router();
        tokio::spawn(async move {
            let _ = wid_runtime::serve::serve(listener, router, None, std::future::pending()).await;
        });
        Ok(base)
    }

    /// Names the service-account issuer something other than the base URL (as clusters whose
    /// API server is not where their issuer is published).
    pub fn set_issuer(&self, issuer: &str) {
        *self
            .shared
            .issuer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = issuer.to_owned();
    }

    pub fn issuer(&self) -> String {
        self.shared
            .issuer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cluster's public keys, as `/openid/v1/jwks` serves them.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.shared.key.public_jwk()]})
    }

    /// The URL the server answers at, once serving.
    fn base(&self) -> String {
        self.shared
            .base
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A kubeconfig for this server, with the fake's bearer token.
    pub fn kubeconfig(&self) -> String {
        let base = self.base();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {base}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\n"
        )
    }

    fn record(&self, objects: &mut Objects, resource: Resource, kind: &'static str, object: Value) {
        let change = Change {
            resource_version: objects.resource_version,
            resource: Some(resource),
            kind,
            object,
        };
        objects.history.push(change.clone());
        let _ = self.shared.changes.send(change);
    }

    /// Creates or replaces a pod (ADDED or MODIFIED); returns its uid.
    pub fn put_pod(&self, pod: PodFixture) -> String {
        let mut objects = self.objects();
        objects.resource_version += 1;
        let key = (pod.namespace.clone(), pod.name.clone());
        let existing_uid = objects
            .pods
            .get(&key)
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned));
        let uid = if !pod.uid.is_empty() {
            pod.uid.clone()
        } else if let Some(uid) = existing_uid.clone() {
            uid
        } else {
            objects.next_uid += 1;
            format!("00000000-0000-4000-8000-{:012}", objects.next_uid)
        };
        let mut status = json!({"phase": pod.phase});
        if let Some(ip) = pod.ips.first() {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!(
                pod.ips
                    .iter()
                    .map(|ip| json!({"ip": ip}))
                    .collect::<Vec<_>>()
            );
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": uid,
                "resourceVersion": objects.resource_version.to_string(),
                "creationTimestamp": "2026-11-29T00:00:00Z",
            },
            "spec": {
                "nodeName": pod.node,
                "serviceAccountName": pod.service_account,
                "hostNetwork": pod.host_network,
                "containers": [{"name": "app", "image": "example.com/app:1"}],
            },
            "status": status,
        });
        let kind = if existing_uid.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.pods.insert(key, object.clone());
        self.record(&mut objects, Resource::Pods, kind, object);
        uid
    }

    /// Fills the cluster with `count` running pods spread over nodes `node-1` to `node-{nodes}`
    /// (never `node-0`, the usual node under test), each with its own address in 10.0.0.0/8 and
    /// a service account `ksa-{i}` of namespace `ns-{i % 1000}`: a large cluster around one
    /// node. Recorded as one compaction, not as history.
    pub fn populate(&self, count: u64, nodes: u64) {
        let mut objects = self.objects();
        for i in 0..count {
            objects.resource_version += 1;
            let namespace = format!("ns-{}", i % 1000);
            let name = format!("pod-{i}");
            let ip = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
            let object = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "uid": format!("synthetic-{i}"),
                             "resourceVersion": objects.resource_version.to_string()},
                "spec": {"nodeName": format!("node-{}", 1 + i % nodes.max(1)), "serviceAccountName": format!("ksa-{i}"),
                         "hostNetwork": false, "containers": [{"name": "app", "image": "example.com/app:1"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            });
            objects.pods.insert((namespace, name), object);
        }
        objects.compacted_at = objects.resource_version;
        objects.history.clear();
    }

    /// Service accounts `ksa-0` to `ksa-{count-1}`, unannotated, exist in every namespace: a
    /// cluster of that many accounts, of which an agent reads only those its node's pods use.
    pub fn synthetic_service_accounts(&self, count: u64) {
        self.objects().synthetic_service_accounts = count;
    }

    /// Deletes a pod (DELETED); false if there was none.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> bool {
        let mut objects = self.objects();
        let Some(mut object) = objects
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return false;
        };
        objects.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(objects.resource_version.to_string());
        self.record(&mut objects, Resource::Pods, "DELETED", object);
        true
    }

    /// Creates or replaces a service account with these annotations.
    pub fn put_service_account(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) {
        let mut objects = self.objects();
        objects.resource_version += 1;
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let object = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": format!("sa-{namespace}-{name}"),
                "resourceVersion": objects.resource_version.to_string(),
                "annotations": annotations,
            },
        });
        let kind = if objects
            .service_accounts
            .insert((namespace.to_owned(), name.to_owned()), object.clone())
            .is_some()
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(&mut objects, Resource::ServiceAccounts, kind, object);
    }

    /// Creates or replaces a node with these taints (`key`, `effect`).
    pub fn put_node(&self, name: &str, taints: &[(&str, &str)]) {
        let mut objects = self.objects();
        objects.resource_version += 1;
        let taints: Vec<Value> = taints
            .iter()
            .map(|(key, effect)| json!({"key": key, "effect": effect}))
            .collect();
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "uid": format!("node-{name}"), "resourceVersion": objects.resource_version.to_string()},
            "spec": {"taints": taints},
        });
        objects.nodes.insert(name.to_owned(), node);
    }

    /// The taint keys a node has now.
    pub fn node_taints(&self, name: &str) -> Vec<String> {
        self.objects()
            .nodes
            .get(name)
            .and_then(|n| n["spec"]["taints"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t["key"].as_str().map(str::to_owned))
            .collect()
    }

    /// Events posted so far.
    pub fn events(&self) -> Vec<Value> {
        self.objects().events.clone()
    }

    /// Ends every open watch, as a dropped connection or an API server restart would.
    pub fn drop_watches(&self) {
        self.shared.watch_generation.send_modify(|g| *g += 1);
    }

    /// Forgets the history: a watch resuming from an older resourceVersion gets `410 Gone`.
    pub fn compact(&self) {
        let mut objects = self.objects();
        objects.compacted_at = objects.resource_version;
        objects.history.clear();
    }

    /// While set, every request gets a 503 (and open watches end).
    pub fn set_down(&self, down: bool) {
        self.objects().down = down;
        if down {
            self.drop_watches();
        }
    }

    /// Holds every answer this long.
    pub fn set_delay(&self, delay: Duration) {
        self.objects().delay = delay;
    }

    /// Sends a BOOKMARK with the current resourceVersion to every open watch.
    pub fn bookmark(&self) {
        let objects = self.objects();
        let _ = self.shared.changes.send(Change {
            resource_version: objects.resource_version,
            resource: None,
            kind: "BOOKMARK",
            object: json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": objects.resource_version.to_string()}}),
        });
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.objects().requests.clone()
    }

    /// BOOKMARK events written to watches so far.
    pub fn bookmarks_sent(&self) -> usize {
        self.objects().bookmarks_sent
    }

    /// TokenRequests answered so far.
    pub fn tokens_issued(&self) -> usize {
        self.objects().tokens_issued
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/pods", get(list_or_watch_pods))
            .route(
                "/api/v1/serviceaccounts",
                get(list_or_watch_service_accounts),
            )
            .route(
                "/api/v1/namespaces/{namespace}/serviceaccounts",
                get(list_or_watch_namespaced_service_accounts),
            )
            .route(
                "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
                get(get_service_account),
            )
            .route(
                "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                post(create_token),
            )
            .route("/api/v1/nodes/{name}", get(get_node).patch(patch_node))
            .route("/api/v1/namespaces/{namespace}/events", post(create_event))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/openid/v1/jwks", get(jwks))
            .merge(control::router())
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }
}

mod control;

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        })),
    )
        .into_response()
}

/// Records the request, then the faults and the bearer token, before any handler.
async fn gate(
    State(api): State<FakeApi>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (down, delay) = {
        let mut objects = api.objects();
        objects.requests.push(format!(
            "{} {}",
            request.method(),
            request.uri().path_and_query().map_or("", |p| p.as_str())
        ));
        (objects.down, objects.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if down && !request.uri().path().starts_with("/_fake/") {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake API server is down",
        );
    }
    let path = request.uri().path();
    let public = path == "/.well-known/openid-configuration"
        || path == "/openid/v1/jwks"
        || path.starts_with("/_fake/");
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !public && bearer != Some(TOKEN) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    next.run(request).await
}

async fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// A field selector (`spec.nodeName=NODE`, `==`, `!=`, comma-separated) against an object;
/// fields the fake does not know are refused, as the API server refuses unknown ones.
fn fields_match(selector: &str, object: &Value) -> Result<bool, String> {
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (field, negate, value) = if let Some((f, v)) = term.split_once("!=") {
            (f, true, v)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, false, v)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, false, v)
        } else {
            return Err(format!("invalid field selector {term:?}"));
        };
        let actual = match field {
            "spec.nodeName" => object["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "metadata.name" => object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "metadata.namespace" => object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "status.podIP" => object["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            _ => return Err(format!("field label not supported: {field}")),
        };
        if (actual == value) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list_or_watch_pods(
    State(api): State<FakeApi>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(api, Resource::Pods, query, None)
}

async fn list_or_watch_service_accounts(
    State(api): State<FakeApi>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(api, Resource::ServiceAccounts, query, None)
}

async fn list_or_watch_namespaced_service_accounts(
    State(api): State<FakeApi>,
    Path(namespace): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    list_or_watch(api, Resource::ServiceAccounts, query, Some(namespace))
}

/// A list (with `limit`/`continue` pages) or a watch (`watch=true`) of `resource`, filtered by
/// the field selector and, for a namespaced path, the namespace.
fn list_or_watch(
    api: FakeApi,
    resource: Resource,
    query: BTreeMap<String, String>,
    namespace: Option<String>,
) -> Response {
    let mut selector = query.get("fieldSelector").cloned().unwrap_or_default();
    if let Some(namespace) = namespace {
        if !selector.is_empty() {
            selector.push(',');
        }
        selector.push_str(&format!("metadata.namespace={namespace}"));
    }
    if let Err(e) = fields_match(&selector, &json!({})) {
        return status(StatusCode::BAD_REQUEST, "BadRequest", &e);
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(api, resource, query, selector);
    }
    let objects = api.objects();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // The continue token: the resourceVersion of the listing and the offset reached.
    let (list_version, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match token
            .split_once(':')
            .and_then(|(v, o)| Some((v.parse::<u64>().ok()?, o.parse::<usize>().ok()?)))
        {
            Some(pair) => pair,
            None => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            }
        },
        None => (objects.resource_version, 0),
    };
    let matching: Vec<&Value> = resource
        .objects(&objects)
        .values()
        .filter(|p| fields_match(&selector, p).unwrap_or(false))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|p| (*p).clone())
        .collect();
    let mut metadata = json!({"resourceVersion": list_version.to_string()});
    if offset + page.len() < matching.len() {
        metadata["continue"] = json!(format!("{list_version}:{}", offset + page.len()));
        metadata["remainingItemCount"] = json!(matching.len() - offset - page.len());
    }
    axum::Json(json!({"apiVersion": "v1", "kind": resource.list_kind(), "metadata": metadata, "items": page}))
        .into_response()
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(
    api: FakeApi,
    resource: Resource,
    query: BTreeMap<String, String>,
    selector: String,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    // Subscribe before reading the history, so that nothing falls between the two.
    let mut live = api.shared.changes.subscribe();
    let mut generation = api.shared.watch_generation.subscribe();
    let (replay, expired, current) = {
        let objects = api.objects();
        let expired = from != 0 && from < objects.compacted_at;
        let replay: Vec<Change> = if from == 0 {
            // "Any": start from now, as a watch without a version does.
            Vec::new()
        } else {
            objects
                .history
                .iter()
                .filter(|c| c.resource_version > from && c.resource == Some(resource))
                .cloned()
                .collect()
        };
        (replay, expired, objects.resource_version)
    };
    tokio::spawn(async move {
        if expired {
            let gone = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({current})"),
                "reason": "Expired", "code": 410,
            });
            let _ = tx.send(Ok(watch_line("ERROR", &gone))).await;
            return;
        }
        let mut sent = if from == 0 { current } else { from };
        for change in replay {
            if fields_match(&selector, &change.object).unwrap_or(false)
                && tx
                    .send(Ok(watch_line(change.kind, &change.object)))
                    .await
                    .is_err()
            {
                return;
            }
            sent = change.resource_version;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                change = live.recv() => match change {
                    Ok(change) if change.kind == "BOOKMARK" => {
                        if bookmarks {
                            if tx.send(Ok(watch_line("BOOKMARK", &change.object))).await.is_err() {
                                return;
                            }
                            api.objects().bookmarks_sent += 1;
                        }
                    }
                    Ok(change) => {
                        if change.resource_version <= sent || change.resource != Some(resource) {
                            continue;
                        }
                        sent = change.resource_version;
                        if fields_match(&selector, &change.object).unwrap_or(false)
                            && tx.send(Ok(watch_line(change.kind, &change.object))).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind or closed: end the watch; the client resumes from its version.
                    Err(_) => return,
                },
                _ = generation.changed() => return,
                () = &mut deadline => return,
                () = tx.closed() => return,
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, body).into_response()
}

async fn get_service_account(
    State(api): State<FakeApi>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let objects = api.objects();
    match objects
        .service_accounts
        .get(&(namespace.clone(), name.clone()))
    {
        Some(sa) => axum::Json(sa.clone()).into_response(),
        None if is_synthetic(&name, objects.synthetic_service_accounts) => axum::Json(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("sa-{namespace}-{name}")},
        }))
        .into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("serviceaccounts \"{name}\" not found"),
        ),
    }
}

fn is_synthetic(name: &str, count: u64) -> bool {
    name.strip_prefix("ksa-")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n < count)
}

/// `POST .../serviceaccounts/NAME/token`: a KSA token for the audiences asked, bound to the pod
/// named in `boundObjectRef` (which must exist with that uid), as the kubelet's projected tokens
/// and the TokenRequest API make them.
async fn create_token(
    State(api): State<FakeApi>,
    Path((namespace, name)): Path<(String, String)>,
    axum::Json(request): axum::Json<Value>,
) -> Response {
    let spec = &request["spec"];
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let lifetime = spec["expirationSeconds"]
        .as_u64()
        .unwrap_or(3600)
        .clamp(600, 48 * 3600);
    let bound = &spec["boundObjectRef"];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (pod_claim, sa_uid) = {
        let mut objects = api.objects();
        let sa_uid = match objects
            .service_accounts
            .get(&(namespace.clone(), name.clone()))
        {
            Some(sa) => sa["metadata"]["uid"].clone(),
            None if is_synthetic(&name, objects.synthetic_service_accounts) => {
                json!(format!("sa-{namespace}-{name}"))
            }
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("serviceaccounts \"{name}\" not found"),
                );
            }
        };
        let pod_claim = if bound.is_object() {
            let pod_name = bound["name"].as_str().unwrap_or_default().to_owned();
            let Some(pod) = objects.pods.get(&(namespace.clone(), pod_name.clone())) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{pod_name}\" not found"),
                );
            };
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if bound["uid"].as_str().is_some_and(|u| u != uid) {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the UID in the bound object reference does not match the pod",
                );
            }
            Some(json!({"name": pod_name, "uid": uid}))
        } else {
            None
        };
        objects.tokens_issued += 1;
        (pod_claim, sa_uid)
    };
    let mut kubernetes =
        json!({"namespace": namespace, "serviceaccount": {"name": name, "uid": sa_uid}});
    if let Some(pod) = pod_claim {
        kubernetes["pod"] = pod;
    }
    let claims = json!({
        "iss": api.issuer(),
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": audiences,
        "iat": now, "nbf": now, "exp": now + lifetime,
        "kubernetes.io": kubernetes,
    });
    let token = match api.shared.key.sign_jwt(TokenType::Jwt, &claims) {
        Ok(token) => token,
        Err(e) => {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            );
        }
    };
    let mut response = request.clone();
    response["status"] = json!({
        "token": token,
        "expirationTimestamp": wid_api::time::rfc3339(i64::try_from(now + lifetime).unwrap_or(i64::MAX)),
    });
    (StatusCode::CREATED, axum::Json(response)).into_response()
}

async fn get_node(State(api): State<FakeApi>, Path(name): Path<String>) -> Response {
    match api.objects().nodes.get(&name) {
        Some(node) => axum::Json(node.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        ),
    }
}

/// RFC 7386 merge patch, as `kubectl patch --type merge` sends it.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A merge patch of a node (`application/merge-patch+json`); a `metadata.resourceVersion` in the
/// patch makes it conditional, as on the API server (409 when the node changed).
async fn patch_node(
    State(api): State<FakeApi>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/merge-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake takes merge patches only, not {content_type}"),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the patch is not JSON",
        );
    };
    let mut objects = api.objects();
    let next_version = objects.resource_version + 1;
    let Some(node) = objects.nodes.get_mut(&name) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        );
    };
    if let Some(expected) = patch["metadata"]["resourceVersion"].as_str()
        && Some(expected) != node["metadata"]["resourceVersion"].as_str()
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    merge(node, &patch);
    node["metadata"]["resourceVersion"] = json!(next_version.to_string());
    let node = node.clone();
    objects.resource_version = next_version;
    axum::Json(node).into_response()
}

async fn create_event(
    State(api): State<FakeApi>,
    Path(namespace): Path<String>,
    axum::Json(mut event): axum::Json<Value>,
) -> Response {
    event["metadata"]["namespace"] = json!(namespace);
    api.objects().events.push(event.clone());
    (StatusCode::CREATED, axum::Json(event)).into_response()
}

async fn discovery(State(api): State<FakeApi>) -> Response {
    let issuer = api.issuer();
    let base = api.base();
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(api): State<FakeApi>) -> Response {
    axum::Json(api.jwks()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors() {
        let pod = json!({"spec": {"nodeName": "a"}, "metadata": {"name": "p"}});
        assert_eq!(fields_match("spec.nodeName=a", &pod), Ok(true));
        assert_eq!(fields_match("spec.nodeName==b", &pod), Ok(false));
        assert_eq!(
            fields_match("spec.nodeName!=b,metadata.name=p", &pod),
            Ok(true)
        );
        assert!(fields_match("spec.bogus=1", &pod).is_err());
    }
}
