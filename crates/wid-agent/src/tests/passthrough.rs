//! `--passthrough`: another cloud's metadata service (a stand-in speaking AWS's IMDSv2 and
//! Azure's IMDS as they refuse and answer) behind the agent.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{GSA, node_with};

/// Every request the stand-in got: method, path and query, headers.
#[derive(Default)]
struct Seen(Mutex<Vec<(String, String, HeaderMap)>>);

const SESSION: &str = "AQAEAImdsV2SessionToken==";

/// AWS's IMDSv2 and Azure's IMDS, as far as the test needs them.
async fn cloud(State(seen): State<Arc<Seen>>, request: Request) -> Response {
    let (method, uri, headers) = (
        request.method().to_string(),
        request.uri().to_string(),
        request.headers().clone(),
    );
    if let Ok(mut seen) = seen.0.lock() {
        seen.push((method.clone(), uri.clone(), headers.clone()));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if headers.contains_key("x-forwarded-for") {
        return (StatusCode::FORBIDDEN, "forwarded\n").into_response();
    }
    match (method.as_str(), uri.as_str()) {
        ("PUT", "/latest/api/token") => match header("x-aws-ec2-metadata-token-ttl-seconds") {
            Some(ttl) => (
                [("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_owned())],
                SESSION,
            )
                .into_response(),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        ("GET", "/latest/meta-data/instance-id") => {
            if header("x-aws-ec2-metadata-token") == Some(SESSION) {
                "i-0123456789abcdef0".into_response()
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }
        }
        ("GET", "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text") => {
            if header("metadata") == Some("true") {
                "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into_response()
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "Required metadata header not specified\n",
                )
                    .into_response()
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A stand-in on loopback: its base URL and what it saw.
async fn stand_in() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let router = axum::Router::new().fallback(cloud).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, seen)
}

/// `request` (a head; the connection closes after it) sent as written: the status line's code,
/// the head and the body of the answer.
async fn raw(base: &str, request: &str) -> (u16, String, String) {
    raw_from("127.0.0.1", base, request).await
}

/// [`raw`] from the address `from`.
async fn raw_from(from: &str, base: &str, request: &str) -> (u16, String, String) {
    let address: std::net::SocketAddr =
        base.trim_start_matches("http://").parse().expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("from"))
        .expect("bind");
    let mut stream = socket.connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_owned(), body.to_owned())
}

fn request(method: &str, target: &str, headers: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n{headers}Connection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn other_clouds_requests_are_relayed_and_googles_never() {
    let (cloud, seen) = stand_in().await;
    let node = node_with(Some(GSA), |c| c.passthrough = Some(cloud.clone())).await;

    // AWS's IMDSv2: a session token by PUT, then a value with it; the headers both ways.
    let (status, head, session) = raw(
        &node.base,
        &request(
            "PUT",
            "/latest/api/token",
            "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n",
        ),
    )
    .await;
    assert_eq!((status, session.as_str()), (200, SESSION), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("metadata-flavor"),
        "not Google's answer: {head}"
    );
    let with_session = format!("X-aws-ec2-metadata-token: {SESSION}\r\n");
    let instance = raw(
        &node.base,
        &request("GET", "/latest/meta-data/instance-id", &with_session),
    )
    .await;
    assert_eq!(
        (instance.0, instance.2.as_str()),
        (200, "i-0123456789abcdef0")
    );
    let refused = raw(
        &node.base,
        &request("GET", "/latest/meta-data/instance-id", ""),
    )
    .await;
    assert_eq!(
        refused.0, 401,
        "the service's own refusal, relayed: {}",
        refused.1
    );

    // Azure's IMDS, with its header, and its refusal without.
    let vm_id = "/metadata/instance/compute/vmId?api-version=2021-02-01&format=text";
    let azure = raw(&node.base, &request("GET", vm_id, "Metadata: true\r\n")).await;
    assert_eq!(
        (azure.0, azure.2.as_str()),
        (200, "02aab8a4-74ef-476e-8182-f6d2ba4166a6")
    );
    assert_eq!(raw(&node.base, &request("GET", vm_id, "")).await.0, 400);

    // Google's API is the agent's, however spelled; a forwarded request or a body is refused
    // without reaching the node's service.
    let before = seen.0.lock().expect("seen").len();
    let token = "/computeMetadata/v1/instance/service-accounts/default/token";
    let ours = raw(
        &node.base,
        &request("GET", token, "Metadata-Flavor: Google\r\n"),
    )
    .await;
    assert_eq!(ours.0, 200, "{}", ours.1);
    assert!(ours.2.contains("\"access_token\":\"access-"), "{}", ours.2);
    for target in [
        "/%63omputeMetadata/v1/instance/service-accounts/default/token",
        "/latest/../computeMetadata/v1/",
        "/COMPUTEMETADATA/v1/",
        "/0.1/meta-data/",
        "/",
    ] {
        let answer = raw(&node.base, &request("GET", target, "")).await;
        assert!(
            answer.1.contains("Metadata-Flavor: Google"),
            "{target}: {}",
            answer.1
        );
    }
    let forwarded = raw(
        &node.base,
        &request(
            "GET",
            "/latest/meta-data/instance-id",
            "X-Forwarded-For: 10.0.0.9\r\n",
        ),
    )
    .await;
    assert_eq!(forwarded.0, 403, "{}", forwarded.1);
    let body = raw(
        &node.base,
        &request("POST", "/latest/api/token", "Content-Length: 2\r\n\r\n{}"),
    )
    .await;
    assert_eq!(body.0, 405, "{}", body.1);
    for target in [
        "@127.0.0.1/latest/meta-data/instance-id",
        "/latest/..;/meta-data/instance-id",
        "/latest/%2e%2e/meta-data/instance-id",
    ] {
        let odd = raw(&node.base, &request("GET", target, &with_session)).await;
        assert_ne!(odd.0, 200, "{target}: {}", odd.1);
    }
    let head = raw(
        &node.base,
        &request("HEAD", "/latest/meta-data/instance-id", &with_session),
    )
    .await;
    assert_eq!(head.0, 403, "not relayed: {}", head.1);
    // An address that is no pod of the node (another host reaching the agent's port): refused
    // as for Google's API, never relayed.
    let stranger = raw_from(
        "127.0.0.2",
        &node.base,
        &request("GET", "/latest/meta-data/instance-id", &with_session),
    )
    .await;
    assert_eq!(stranger.0, 403, "{}", stranger.1);
    let after = seen.0.lock().expect("seen");
    assert_eq!(after.len(), before, "relayed: {:?}", &after[before..]);
}

#[tokio::test]
async fn without_passthrough_other_clouds_requests_are_refused_and_an_absent_service_is_a_502() {
    let node = node_with(Some(GSA), |_| {}).await;
    let refused = raw(
        &node.base,
        &request("GET", "/latest/meta-data/instance-id", ""),
    )
    .await;
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert!(refused.2.contains("Metadata-Flavor"), "{}", refused.2);

    // A service that is not there: a 502 that says so.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gone = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let node = node_with(Some(GSA), |c| c.passthrough = Some(gone)).await;
    let answer = raw(
        &node.base,
        &request("GET", "/latest/meta-data/instance-id", ""),
    )
    .await;
    assert_eq!(answer.0, 502, "{}", answer.1);
    assert_eq!(
        answer.2,
        "The node's metadata service did not answer; retry shortly.\n"
    );
}
