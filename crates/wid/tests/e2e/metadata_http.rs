//! The metadata server of `wid dev`, with a static pods file, over real HTTP on loopback: the
//! conformance checks of section 13 of `metadata-api.md` that such a node can run (the numbers in
//! the comments are the checks'), and the HTTP/1.1 framing of our own layer (`wid_gce::http1`,
//! `wid_agent::conn`) with raw sockets.
//!
//! Every test starts its own `wid dev` (token service + metadata server). The pods file holds
//! pod A at 127.0.0.1 (`default/default`, annotated with the account `wid dev` binds), pod B at
//! 127.0.0.5 (`team-b/reader`, not annotated) and pod C at 127.0.0.6 (`team-c/lister`, asking for
//! the principal identifier as its email). Clients bind their source address to be one of them;
//! 127.0.0.9 is no pod.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const POD_A: &str = "127.0.0.1";
const POD_B: &str = "127.0.0.5";
const POD_C: &str = "127.0.0.6";
const STRANGER: &str = "127.0.0.9";

const PROJECT: &str = "wid-dev";
/// The account `wid dev` makes and binds to `default/default` (crates/wid/src/node.rs).
const GSA: &str = "dev-runner@wid-dev.iam.gserviceaccount.com";
const GSA_ENCODED: &str = "dev-runner%40wid-dev.iam.gserviceaccount.com";
/// What an unannotated KSA sees as its email.
const POOL: &str = "wid-dev.svc.id.goog";
const B_KSA: (&str, &str) = ("team-b", "reader");
const C_KSA: (&str, &str) = ("team-c", "lister");

const V1: &str = "/computeMetadata/v1/";
const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");
const DEFAULT_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];
/// The instance id `wid dev` reports: above 2^53, so a float would not hold it.
const INSTANCE_ID: &str = "1000000000000000001";

// ------------------------------------------------------------------------------------------------
// A `wid dev` process per test.

struct Dev {
    child: Child,
    md_port: u16,
    iam_base: String,
    log: PathBuf,
    out: PathBuf,
    // Last: removed after the process is gone.
    _dir: tempfile::TempDir,
}

fn write_pods(path: &Path) {
    let pods = json!({"pods": [
        {"ip": POD_A, "namespace": "default", "name": "pod-a", "uid": "uid-pod-a",
         "serviceAccountName": "default",
         "annotations": {"iam.gke.io/gcp-service-account": GSA}},
        {"ip": POD_B, "namespace": B_KSA.0, "name": "pod-b", "uid": "uid-pod-b",
         "serviceAccountName": B_KSA.1},
        {"ip": POD_C, "namespace": C_KSA.0, "name": "pod-c", "uid": "uid-pod-c",
         "serviceAccountName": C_KSA.1,
         "annotations": {"iam.gke.io/return-principal-id-as-email": "true"}},
    ]});
    std::fs::write(path, pods.to_string()).expect("write the pods file");
}

impl Dev {
    async fn start() -> Dev {
        Dev::start_with(|command, dir| {
            command.arg("--data-dir").arg(dir.join("data"));
        })
        .await
    }

    /// `wid dev` with the pods file `pods.json` of its temporary directory, and whatever else
    /// `configure` adds, given that directory.
    async fn start_with(configure: impl FnOnce(&mut Command, &Path)) -> Dev {
        let dir = tempfile::tempdir().expect("tempdir");
        let pods = dir.path().join("pods.json");
        write_pods(&pods);
        let log = dir.path().join("dev.log");
        let out = dir.path().join("dev.out");
        let mut command = Command::new(crate::support::WID);
        command
            .arg("dev")
            // Free ports, as the printed lines tell.
            .args(["--metadata-addr", "127.0.0.1:0"])
            .args(["--iam-addr", "127.0.0.1:0"])
            .arg("--pods")
            .arg(&pods)
            .env_remove("WID_PROJECT")
            .env_remove("WID_DATA_DIR");
        configure(&mut command, dir.path());
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn wid dev");
        let mut dev = Dev {
            child,
            md_port: 0,
            iam_base: String::new(),
            log,
            out,
            _dir: dir,
        };
        dev.wait_ready().await;
        dev
    }

    /// Ready once `wid dev` prints its lines to paste: the metadata listener is bound and the
    /// bootstrap (project, account, binding, cluster) is done. They say where both listen.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "wid dev exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            let printed = std::fs::read_to_string(&self.out).unwrap_or_default();
            let exported = |name: &str| {
                printed
                    .lines()
                    .filter(|l| l.starts_with("export "))
                    .flat_map(|l| l.split(' '))
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            if let (Some(host), Some(endpoint)) =
                (exported("GCE_METADATA_HOST"), exported("WID_ENDPOINT"))
            {
                let port = host.strip_prefix("127.0.0.1:").and_then(|p| p.parse().ok());
                self.md_port = port.unwrap_or_else(|| panic!("wid dev printed {host}"));
                self.iam_base = endpoint;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "wid dev not ready after 60 s; stdout:\n{printed}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.md_port))
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.md_port)
    }

    /// A client of the metadata server from `ip`, not following redirects.
    fn caller(&self, ip: &'static str) -> Caller {
        Caller::new(self, ip, reqwest::redirect::Policy::none())
    }

    /// The token service's view of an access token (`/tokeninfo`).
    async fn tokeninfo(&self, param: &str, token: &str) -> Value {
        let response = plain_client()
            .get(format!("{}/tokeninfo", self.iam_base))
            .query(&[(param, token)])
            .send()
            .await
            .expect("tokeninfo reaches the token service");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("tokeninfo answers JSON");
        assert_eq!(status, 200, "tokeninfo refused the token: {body}");
        body
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- wid dev log ----\n{}\n---- end of log ----",
                self.log()
            );
        }
    }
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

// ------------------------------------------------------------------------------------------------
// HTTP clients bound to a pod's address.

struct Caller {
    http: reqwest::Client,
    base: String,
    ip: &'static str,
}

/// An answer, with what was asked for the failure messages.
struct Got {
    what: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl std::fmt::Display for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {:?} body {:?}",
            self.what, self.status, self.headers, self.body
        )
    }
}

fn is_etag(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("<none>")
    }

    /// Asserts the status and `Metadata-Flavor: Google`, which every answer carries (3.1, 3.2).
    #[track_caller]
    fn expect(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "unexpected status: {self}");
        assert_eq!(
            self.header("metadata-flavor"),
            Some("Google"),
            "no `Metadata-Flavor: Google` on the answer: {self}"
        );
        &self.body
    }

    #[track_caller]
    fn ok(&self) -> &str {
        self.expect(200)
    }

    /// A value's answer: 200, `application/text`, a well-formed ETag.
    #[track_caller]
    fn text(&self) -> &str {
        self.ok();
        assert_eq!(self.content_type(), "application/text", "{self}");
        self.etag();
        &self.body
    }

    #[track_caller]
    fn etag(&self) -> &str {
        let etag = self
            .header("etag")
            .unwrap_or_else(|| panic!("no ETag: {self}"));
        assert!(is_etag(etag), "ETag is not 16 lowercase hex digits: {self}");
        etag
    }

    #[track_caller]
    fn json(&self) -> Value {
        self.ok();
        assert_eq!(self.content_type(), "application/json", "{self}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }
}

impl Caller {
    fn new(dev: &Dev, ip: &'static str, redirects: reqwest::redirect::Policy) -> Caller {
        let http = reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().expect("an address"))
            .redirect(redirects)
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Caller {
            http,
            base: dev.base(),
            ip,
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}{V1}{path}", self.base)
        }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Got {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let url = self.url(path);
        let mut request = self.http.request(method.clone(), &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let what = format!("{method} {url} {headers:?} from {}", self.ip);
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: body: {e}"));
        Got {
            what,
            status,
            headers,
            body,
        }
    }

    /// With `Metadata-Flavor: Google`; `path` is under `/computeMetadata/v1/` unless it starts
    /// with `/`.
    async fn get(&self, path: &str) -> Got {
        self.request("GET", path, &[FLAVOR], None).await
    }

    /// Without any metadata header.
    async fn bare(&self, method: &str, path: &str) -> Got {
        self.request(method, path, &[], None).await
    }

    /// A token answer: its access token and `expires_in`, after checking the JSON shape clients
    /// decode (7.2).
    async fn token(&self, path: &str) -> (String, u64) {
        let got = self.get(path).await;
        token_of(&got)
    }
}

#[track_caller]
fn token_of(got: &Got) -> (String, u64) {
    let body = got.json();
    let token = body["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no access_token: {got}"));
    let expires_in = body["expires_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("expires_in is not an integer: {got}"));
    assert!(
        expires_in > 300 && expires_in <= 3600,
        "expires_in out of (300, 3600]: {got}"
    );
    assert_eq!(body["token_type"], "Bearer", "{got}");
    (token.to_owned(), expires_in)
}

/// The payload of a compact JWS, after checking it is one.
#[track_caller]
fn jwt_claims(got: &Got) -> Value {
    use base64::Engine;
    let token = got.ok();
    assert_eq!(got.content_type(), "application/text", "{got}");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a three-segment JWT: {got}");
    assert!(
        parts.iter().all(|p| !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
        "segments are not base64url (a trailing newline?): {got}"
    );
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap_or_else(|e| panic!("payload is not base64url ({e}): {got}"));
    serde_json::from_slice(&payload).unwrap_or_else(|e| panic!("payload is not JSON ({e}): {got}"))
}

// ------------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP, for the framing checks and the paths a URL library would normalise.

struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a text body")
    }

    #[track_caller]
    fn expect(&self, status: u16) -> &str {
        assert_eq!(self.status, status, "unexpected response: {self:?}");
        assert_eq!(
            self.header("metadata-flavor"),
            Some("Google"),
            "no `Metadata-Flavor: Google`: {self:?}"
        );
        self.body()
    }
}

const RAW_TIMEOUT: Duration = Duration::from_secs(10);

fn raw_get(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n{extra}\r\n"
    )
}

impl RawConn {
    async fn open(dev: &Dev, ip: &str) -> RawConn {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(ip.parse().expect("an address"), 0))
            .expect("bind the source address");
        let stream = tokio::time::timeout(RAW_TIMEOUT, socket.connect(dev.addr()))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .await
            .expect("write the request");
    }

    /// Sends what the server may refuse before it has read it all: a write cut short by the
    /// server's close is not an error here; the answer is.
    async fn send_refusable(&mut self, bytes: impl AsRef<[u8]>) {
        match self.stream.write_all(bytes.as_ref()).await {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => panic!("write the request: {e}"),
        }
    }

    /// Reads more into the buffer; false at the end of the stream (or a reset after it).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(RAW_TIMEOUT, self.stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "no bytes from the server in {RAW_TIMEOUT:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(Ok(0)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }

    /// The next response; `head_only` for the answer of a HEAD (a length, no body).
    async fn response(&mut self, head_only: bool) -> RawResponse {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill().await,
                "the connection ended before a complete response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status code in {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("header line {l:?}"));
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
        self.buf.drain(..end + 4);
        let length = if head_only { 0 } else { length };
        while self.buf.len() < length {
            assert!(
                self.fill().await,
                "the connection ended inside a body of {length} bytes; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        let body = self.buf.drain(..length).collect();
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// Asserts the server ends the connection with nothing more to say.
    async fn expect_closed(&mut self, after: &str) {
        while self.buf.is_empty() {
            if !self.fill().await {
                return;
            }
        }
        panic!(
            "after {after}, the server sent more instead of closing: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }
}

/// One request on a fresh connection from pod A.
async fn raw_once(dev: &Dev, request: &str) -> RawResponse {
    let mut conn = RawConn::open(dev, POD_A).await;
    conn.send(request).await;
    conn.response(false).await
}

// ================================================================================================
// Transport and headers

/// Checks 1-6: `/` without the header, HEAD, the header rules, X-Forwarded-For, methods.
#[tokio::test]
async fn transport_root_flavor_forwarding_and_methods() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    // 1. Go's OnGCE probes `/` with no header at all.
    let root = a.bare("GET", "/").await;
    assert_eq!(root.expect(200), "computeMetadata/\n", "{root}");
    assert_eq!(root.content_type(), "application/text", "{root}");

    // 2. With the header: the same answer. HEAD: the same headers and no body.
    let with = a.get("/").await;
    assert_eq!(with.expect(200), root.body, "{with}");
    let head = a.request("HEAD", "/", &[FLAVOR], None).await;
    assert_eq!(head.expect(200), "", "HEAD has a body: {head}");
    for name in [
        "content-type",
        "content-length",
        "metadata-flavor",
        "server",
        "etag",
    ] {
        assert_eq!(
            head.header(name),
            with.header(name),
            "HEAD / and GET / differ in {name}: {head} vs {with}"
        );
    }
    assert_eq!(head.header("content-length"), Some("17"), "{head}");

    // 3. No header on a value: 403 that names the header, still flavoured.
    let refused = a.bare("GET", "project/project-id").await;
    assert!(
        refused.expect(403).contains("Metadata-Flavor"),
        "the 403 does not mention Metadata-Flavor: {refused}"
    );

    // 4. The value is exact; the legacy header is no substitute.
    for headers in [
        [("Metadata-Flavor", "google")],
        [("Metadata-Flavor", "")],
        [("X-Google-Metadata-Request", "True")],
    ] {
        let got = a.request("GET", "project/project-id", &headers, None).await;
        got.expect(403);
        assert!(!got.body.contains(PROJECT), "the value leaked: {got}");
    }
    let token = a
        .request(
            "GET",
            "instance/service-accounts/default/token",
            &[("Metadata-Flavor", "google")],
            None,
        )
        .await;
    token.expect(403);
    assert!(!token.body.contains("access_token"), "{token}");

    // 5. X-Forwarded-For: refused everywhere, `/` included.
    for path in [
        "/",
        "project/project-id",
        "instance/service-accounts/default/token",
    ] {
        let got = a
            .request("GET", path, &[FLAVOR, ("X-Forwarded-For", "1.2.3.4")], None)
            .await;
        got.expect(403);
        assert!(!got.body.contains("access_token"), "{got}");
    }
    a.request("GET", "/", &[("X-Forwarded-For", "1.2.3.4")], None)
        .await
        .expect(403);

    // 6. Only GET and HEAD: 405 with Allow, and nothing changes.
    let before = a.get("project/project-id").await;
    let before_etag = before.etag().to_owned();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in [
            "/",
            "project/project-id",
            "instance/",
            "instance/service-accounts/default/token",
        ] {
            for body in [None, Some("project-id=other")] {
                let got = a.request(method, path, &[FLAVOR], body).await;
                got.expect(405);
                assert_eq!(got.header("allow"), Some("GET, HEAD"), "{got}");
            }
        }
    }
    let after = a.get("project/project-id").await;
    assert_eq!(after.text(), PROJECT, "{after}");
    assert_eq!(after.etag(), before_etag, "the value changed: {after}");
}

/// Checks 7-10: walks pod A's tree from `/computeMetadata/v1/` by its listings; every answer is
/// flavoured and typed, scalars have no trailing newline, listings end in one, ETags are
/// well-formed and stable.
#[tokio::test]
async fn transport_every_answer_of_the_tree_is_well_formed() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    let mut dirs = vec![V1.to_owned()];
    let mut leaves = Vec::new();
    let mut seen_dirs = Vec::new();
    while let Some(dir) = dirs.pop() {
        let got = a.get(&dir).await;
        // 9. A listing: one entry per line, every line ending in `\n`.
        let body = got.text().to_owned();
        assert!(
            body.ends_with('\n') && !body.contains("\n\n"),
            "a listing that does not end in a newline, or has an empty line: {got}"
        );
        // 10. Stable ETag.
        let again = a.get(&dir).await;
        assert_eq!(again.etag(), got.etag(), "the ETag moved: {got} / {again}");
        assert_eq!(again.body, body);
        for entry in body.lines() {
            assert!(
                !entry.is_empty() && !entry.starts_with('/'),
                "odd entry {entry:?}: {got}"
            );
            let path = format!("{dir}{entry}");
            if entry.ends_with('/') {
                dirs.push(path);
            } else {
                leaves.push(path);
            }
        }
        seen_dirs.push(dir);
    }
    seen_dirs.sort();
    let mut expected_dirs: Vec<String> = [
        "",
        "instance/",
        "instance/attributes/",
        "instance/service-accounts/",
        "instance/service-accounts/default/",
        &format!("instance/service-accounts/{GSA}/"),
        "project/",
        "universe/",
    ]
    .iter()
    .map(|d| format!("{V1}{d}"))
    .collect();
    expected_dirs.sort();
    assert_eq!(seen_dirs, expected_dirs, "the walk found other directories");

    let mut seen_leaves = Vec::new();
    for leaf in &leaves {
        let name = leaf.rsplit('/').next().unwrap_or_default();
        seen_leaves.push(name.to_owned());
        match name {
            "token" => {
                // 7. The token too: flavoured, application/json.
                let got = a.get(leaf).await;
                token_of(&got);
            }
            "identity" => {
                let got = a
                    .get(&format!("{leaf}?audience=https://walk.example"))
                    .await;
                let claims = jwt_claims(&got);
                assert_eq!(claims["aud"], "https://walk.example", "{got}");
            }
            _ => {
                let got = a.get(leaf).await;
                let body = got.text();
                if name == "scopes" || name == "aliases" {
                    // 9. A list value: one item per line, each ending in `\n`.
                    assert!(body.ends_with('\n'), "a list without its newline: {got}");
                } else {
                    // 8. A scalar: no trailing newline.
                    assert!(!body.ends_with('\n'), "a scalar ends in a newline: {got}");
                }
                let again = a.get(leaf).await;
                assert_eq!(again.etag(), got.etag(), "the ETag moved: {got} / {again}");
                assert_eq!(again.body, got.body, "{again}");
            }
        }
    }
    for expected in [
        "id",
        "hostname",
        "name",
        "zone",
        "cluster-location",
        "cluster-name",
        "cluster-uid",
        "email",
        "aliases",
        "scopes",
        "token",
        "identity",
        "project-id",
        "numeric-project-id",
        "universe-domain",
    ] {
        assert!(
            seen_leaves.iter().any(|l| l == expected),
            "the walk never reached `{expected}`: {leaves:?}"
        );
    }

    // 8. The two numbers gcloud and guest tools parse.
    for path in ["project/numeric-project-id", "instance/id"] {
        let got = a.get(path).await;
        assert!(is_digits(got.text()), "not ^[0-9]+$: {got}");
    }
    // 9. `scopes` and `aliases` are leaves in the account's listing.
    let account = a.get("instance/service-accounts/default/").await;
    let entries: Vec<&str> = account.text().lines().collect();
    assert!(
        entries.contains(&"scopes") && entries.contains(&"aliases"),
        "{account}"
    );
}

// ================================================================================================
// Tree and redirects

/// Checks 11-15: the v1 listing, directory redirects, leaves with a slash, unknown paths.
#[tokio::test]
async fn tree_redirects_and_not_found() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    // 11.
    let v1 = a.get(V1).await;
    assert_eq!(v1.text(), "instance/\nproject/\nuniverse/\n", "{v1}");
    let versions = a.get("/computeMetadata/").await;
    assert_eq!(versions.text(), "v1/\n", "{versions}");

    // 12. A directory without its slash: 301 to the absolute URL on the request's Host, with
    // the slash and the original query.
    let host = format!("127.0.0.1:{}", dev.md_port);
    for dir in [
        "/computeMetadata/v1",
        "/computeMetadata/v1/instance",
        "/computeMetadata/v1/instance/attributes",
        "/computeMetadata/v1/instance/service-accounts",
        "/computeMetadata/v1/instance/service-accounts/default",
        "/computeMetadata/v1/project",
    ] {
        let got = a.get(&format!("{dir}?recursive=true")).await;
        got.expect(301);
        assert_eq!(
            got.header("location"),
            Some(format!("http://{host}{dir}/?recursive=true").as_str()),
            "{got}"
        );
        let got = a.get(dir).await;
        got.expect(301);
        assert_eq!(
            got.header("location"),
            Some(format!("http://{host}{dir}/").as_str()),
            "{got}"
        );
    }
    // The Host the client used, whatever it is (clients use metadata.google.internal).
    let raw = raw_once(
        &dev,
        &raw_get(
            "/computeMetadata/v1/instance/service-accounts?recursive=true",
            "",
        ),
    )
    .await;
    raw.expect(301);
    assert_eq!(
        raw.header("location"),
        Some(
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/?recursive=true"
        ),
        "{raw:?}"
    );

    // 13. Node's detection: `instance` without the slash, following the redirect.
    let following = Caller::new(&dev, POD_A, reqwest::redirect::Policy::limited(5));
    let got = following.get("/computeMetadata/v1/instance").await;
    assert_eq!(
        got.text(),
        "attributes/\nhostname\nid\nname\nservice-accounts/\nzone\n",
        "{got}"
    );

    // 14. A leaf with a slash.
    for path in [
        "project/project-id/",
        "instance/id/",
        "instance/service-accounts/default/email/",
        "instance/service-accounts/default/token/",
        "instance/service-accounts/default/identity/?audience=x",
        "universe/universe-domain/",
    ] {
        a.get(path).await.expect(404);
    }

    // 15. Unknown paths: 404, never 403.
    for path in [
        "/computeMetadata/v1/nope",
        "/computeMetadata/v1/nope/",
        "/computeMetadata/v2/",
        "/computeMetadata/v1beta1/",
        "/computeMetadata/v1beta1/instance/id",
        "/0.1/meta-data/",
        "/0.1/meta-data/attributes/kube-env",
        "/computeMetadata/v1/instance/preempted",
        "/computeMetadata/v1/instance/network-interfaces/",
        "/computeMetadata/v1/project/attributes/",
        "/computeMetadata/v1/oslogin/",
        "/nope",
    ] {
        let got = a.get(path).await;
        got.expect(404);
    }
}

/// Checks 16-19 and 27: the instance and project values, attributes, universe, recursive JSON.
#[tokio::test]
async fn tree_instance_project_universe_and_recursive() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    // 16.
    let instance = a.get("instance/").await;
    assert_eq!(
        instance.text(),
        "attributes/\nhostname\nid\nname\nservice-accounts/\nzone\n",
        "{instance}"
    );
    let number = a.get("project/numeric-project-id").await.text().to_owned();
    assert!(is_digits(&number), "{number:?}");
    assert_eq!(a.get("project/project-id").await.text(), PROJECT);
    assert_eq!(
        a.get("project/").await.text(),
        "numeric-project-id\nproject-id\n"
    );
    assert_eq!(a.get("instance/id").await.text(), INSTANCE_ID);
    let hostname = a.get("instance/hostname").await;
    assert!(!hostname.text().is_empty(), "{hostname}");

    // 17. `projects/<number>/zones/<zone>`, the number the project's.
    let zone = a.get("instance/zone").await;
    let (zone_number, zone_name) = zone
        .text()
        .strip_prefix("projects/")
        .and_then(|z| z.split_once("/zones/"))
        .unwrap_or_else(|| panic!("not projects/N/zones/Z: {zone}"));
    assert!(is_digits(zone_number), "{zone}");
    assert_eq!(zone_number, number, "the zone's project number: {zone}");
    assert!(
        !zone_name.is_empty()
            && zone_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "zone name not [a-z0-9-]+: {zone}"
    );

    // 18. Exactly the three cluster attributes; kube-env and the rest are 404.
    let attributes = a.get("instance/attributes/").await;
    assert_eq!(
        attributes.text(),
        "cluster-location\ncluster-name\ncluster-uid\n",
        "{attributes}"
    );
    assert_eq!(
        a.get("instance/attributes/cluster-name").await.text(),
        "dev"
    );
    assert_eq!(
        a.get("instance/attributes/cluster-location").await.text(),
        "local"
    );
    for attribute in [
        "kube-env",
        "instance-template",
        "startup-script",
        "ssh-keys",
        "Cluster-Name",
    ] {
        a.get(&format!("instance/attributes/{attribute}"))
            .await
            .expect(404);
    }

    // 19.
    assert_eq!(
        a.get("universe/universe-domain").await.text(),
        "googleapis.com"
    );

    // 27. The whole tree as JSON: camelCase fixed keys, verbatim names, exact numbers, no tokens.
    let recursive = a.get(&format!("{V1}?recursive=true")).await;
    let tree = recursive.json();
    recursive.etag();
    assert_eq!(tree["project"]["projectId"], PROJECT, "{recursive}");
    assert_eq!(
        tree["project"]["numericProjectId"]
            .as_u64()
            .map(|n| n.to_string()),
        Some(number.clone()),
        "numericProjectId is not the JSON number {number}: {recursive}"
    );
    assert!(
        recursive
            .body
            .contains(&format!("\"numericProjectId\":{number}")),
        "{recursive}"
    );
    assert_eq!(
        tree["instance"]["id"].as_u64(),
        Some(1_000_000_000_000_000_001),
        "id is not a JSON number: {recursive}"
    );
    assert!(
        recursive.body.contains(&format!("\"id\":{INSTANCE_ID}")),
        "the id is not printed exactly: {recursive}"
    );
    let attributes = &tree["instance"]["attributes"];
    assert_eq!(attributes["cluster-location"], "local", "{recursive}");
    assert_eq!(attributes["cluster-name"], "dev", "{recursive}");
    assert!(
        attributes.get("clusterName").is_none(),
        "attribute names are verbatim: {recursive}"
    );
    let accounts = tree["instance"]["serviceAccounts"]
        .as_object()
        .unwrap_or_else(|| panic!("no serviceAccounts object: {recursive}"));
    let mut names: Vec<&str> = accounts.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["default", GSA], "{recursive}");
    for account in accounts.values() {
        assert_eq!(account["email"], GSA, "{recursive}");
        assert!(
            account.get("token").is_none() && account.get("identity").is_none(),
            "tokens in recursive output: {recursive}"
        );
    }
    assert_eq!(
        tree["universe"]["universeDomain"], "googleapis.com",
        "{recursive}"
    );
    assert!(
        tree["instance"].get("service-accounts").is_none(),
        "{recursive}"
    );

    // ... and as `path value` lines.
    let text = a.get(&format!("{V1}?recursive=true&alt=text")).await;
    let lines: Vec<&str> = text.text().lines().collect();
    for expected in [
        format!("project/project-id {PROJECT}"),
        format!("project/numeric-project-id {number}"),
        format!("instance/id {INSTANCE_ID}"),
        "instance/attributes/cluster-name dev".to_owned(),
        format!("instance/service-accounts/default/email {GSA}"),
        "universe/universe-domain googleapis.com".to_owned(),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "no {expected:?}: {text}"
        );
    }
    assert!(
        lines
            .iter()
            .all(|l| l.contains(' ') && !l.starts_with('/') && !l.contains("/token")),
        "{text}"
    );

    // A scalar as JSON (alt=json).
    let json = a.get("project/project-id?alt=json").await;
    assert_eq!(json.json(), json!(PROJECT), "{json}");
}

/// Check 20: `%40` and `@` route alike; `..`, `.`, `//` and encoded slashes reach nothing else.
#[tokio::test]
async fn tree_paths_cannot_be_tricked() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    for leaf in ["email", "aliases", "scopes"] {
        let at = a
            .get(&format!("instance/service-accounts/{GSA}/{leaf}"))
            .await;
        let encoded = a
            .get(&format!("instance/service-accounts/{GSA_ENCODED}/{leaf}"))
            .await;
        assert_eq!(at.text(), encoded.text(), "{at} / {encoded}");
        assert_eq!(at.etag(), encoded.etag(), "{at} / {encoded}");
    }
    let at = a.get(&format!("instance/service-accounts/{GSA}/")).await;
    let encoded = a
        .get(&format!("instance/service-accounts/{GSA_ENCODED}/"))
        .await;
    assert_eq!(at.text(), encoded.text(), "{at} / {encoded}");
    let (token_at, _) = a
        .token(&format!("instance/service-accounts/{GSA}/token"))
        .await;
    let (token_encoded, _) = a
        .token(&format!("instance/service-accounts/{GSA_ENCODED}/token"))
        .await;
    assert_eq!(token_at, token_encoded, "%40 and @ give different tokens");

    // A URL library would normalise these; raw requests reach the server as written.
    let project_id = raw_once(&dev, &raw_get("/computeMetadata/v1/project/project-id", "")).await;
    assert_eq!(project_id.expect(200), PROJECT);
    for target in [
        "/computeMetadata/v1/instance/../project/project-id",
        "/computeMetadata/v1/instance/%2e%2e/project/project-id",
        "/computeMetadata/v1/instance/%2E%2E/project/project-id",
        "/computeMetadata/v1/./project/project-id",
        "/computeMetadata/v1/%2e/project/project-id",
        "/computeMetadata/v1//project/project-id",
        "/computeMetadata//v1/project/project-id",
        "//computeMetadata/v1/project/project-id",
        "/computeMetadata/v1/project%2Fproject-id",
        "/computeMetadata/v1/project%2fproject-id",
        "/computeMetadata/v1/instance/service-accounts/default/..%2F..%2F..%2Fproject%2Fproject-id",
        "/computeMetadata/v1/instance/service-accounts/default%2F..%2F..%2F..%2Fproject/project-id",
        "/computeMetadata/v1/instance/service-accounts/..%2F..%2Fproject/project-id",
        "/computeMetadata/v2/../v1/project/project-id",
        "/0.1/../computeMetadata/v1/project/project-id",
    ] {
        let got = raw_once(&dev, &raw_get(target, "")).await;
        assert_eq!(
            got.status, 404,
            "GET {target} must not reach another path (expected 404): {got:?}"
        );
        got.expect(404);
        assert_ne!(got.body(), PROJECT, "{target} reached project-id");
    }
    // A pod's token is not reachable by walking out of another account's directory either.
    let got = raw_once(
        &dev,
        &raw_get(
            "/computeMetadata/v1/instance/service-accounts/nobody@x.iam.gserviceaccount.com/../default/token",
            "",
        ),
    )
    .await;
    got.expect(404);
}

// ================================================================================================
// Service accounts

/// Checks 21 and 23-26 for pod A (annotated).
#[tokio::test]
async fn service_accounts_of_an_annotated_pod() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    // 21.
    let listing = a.get("instance/service-accounts/").await;
    assert_eq!(listing.text(), format!("default/\n{GSA}/\n"), "{listing}");
    assert_eq!(
        a.get("instance/service-accounts/default/email")
            .await
            .text(),
        GSA
    );
    assert_eq!(
        a.get("instance/service-accounts/default/aliases")
            .await
            .text(),
        "default\n"
    );
    let scopes = a.get("instance/service-accounts/default/scopes").await;
    assert_eq!(
        scopes.text(),
        format!("{}\n{}\n", DEFAULT_SCOPES[0], DEFAULT_SCOPES[1]),
        "{scopes}"
    );

    // 23.
    let account = a.get("instance/service-accounts/default/").await;
    assert_eq!(
        account.text(),
        "aliases\nemail\nidentity\nscopes\ntoken\n",
        "{account}"
    );

    // 24. What Python reads before every refresh.
    let info = a
        .get("instance/service-accounts/default/?recursive=true")
        .await;
    let value = info.json();
    assert_eq!(value["email"], GSA, "{info}");
    assert!(
        value["aliases"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("default"))),
        "{info}"
    );
    assert_eq!(value["scopes"], json!(DEFAULT_SCOPES), "{info}");
    assert!(
        value.get("token").is_none() && value.get("identity").is_none(),
        "{info}"
    );

    // 25. The account's own email is a second name of `default/`.
    for path in ["", "email", "aliases", "scopes", "?recursive=true"] {
        let default = a
            .get(&format!("instance/service-accounts/default/{path}"))
            .await;
        let named = a
            .get(&format!("instance/service-accounts/{GSA}/{path}"))
            .await;
        named.ok();
        assert_eq!(named.body, default.body, "{named} / {default}");
        assert_eq!(named.content_type(), default.content_type(), "{named}");
        assert_eq!(named.etag(), default.etag(), "{named} / {default}");
    }
    let redirect = a.get(&format!("instance/service-accounts/{GSA}")).await;
    redirect.expect(301);
    assert!(
        redirect
            .header("location")
            .is_some_and(|l| l.ends_with(&format!("/instance/service-accounts/{GSA}/"))),
        "{redirect}"
    );
    let (default_token, _) = a.token("instance/service-accounts/default/token").await;
    let (named_token, _) = a
        .token(&format!("instance/service-accounts/{GSA}/token"))
        .await;
    assert_eq!(named_token, default_token, "one account, one cached token");
    let id = a
        .get(&format!(
            "instance/service-accounts/{GSA}/identity?audience=https://named.example"
        ))
        .await;
    assert_eq!(jwt_claims(&id)["email"], GSA, "{id}");

    // 26. Another pod's email, or an unknown one, is no directory of this pod.
    for other in [
        POOL,
        "nobody@wid-dev.iam.gserviceaccount.com",
        "dev-runner@other.iam.gserviceaccount.com",
    ] {
        for path in [
            "/",
            "/email",
            "/token",
            "/identity?audience=https://x.example",
            "/?recursive=true",
        ] {
            let got = a
                .get(&format!("instance/service-accounts/{other}{path}"))
                .await;
            got.expect(404);
            assert!(!got.body.contains("access_token"), "{got}");
        }
    }
}

/// Checks 22-26 for pod B (unannotated: the pool name) and pod C (the principal identifier).
#[tokio::test]
async fn service_accounts_of_unannotated_pods() {
    let dev = Dev::start().await;
    let b = dev.caller(POD_B);
    let c = dev.caller(POD_C);
    let number = b.get("project/numeric-project-id").await.text().to_owned();

    // 22. The pool name, listed and routed as an account.
    assert_eq!(
        b.get("instance/service-accounts/default/email")
            .await
            .text(),
        POOL
    );
    let listing = b.get("instance/service-accounts/").await;
    assert_eq!(listing.text(), format!("default/\n{POOL}/\n"), "{listing}");
    // ... or, asked for, the principal identifier; a value with `/` is listed only as default.
    let principal = format!(
        "principal://iam.googleapis.com/projects/{number}/locations/global/workloadIdentityPools/{POOL}/subject/ns/{}/sa/{}",
        C_KSA.0, C_KSA.1
    );
    assert_eq!(
        c.get("instance/service-accounts/default/email")
            .await
            .text(),
        principal
    );
    let c_listing = c.get("instance/service-accounts/").await;
    assert_eq!(c_listing.text(), "default/\n", "{c_listing}");

    // 23.
    for caller in [&b, &c] {
        let account = caller.get("instance/service-accounts/default/").await;
        assert_eq!(
            account.text(),
            "aliases\nemail\nidentity\nscopes\ntoken\n",
            "{account}"
        );
    }

    // 24.
    let info = b
        .get("instance/service-accounts/default/?recursive=true")
        .await;
    let value = info.json();
    assert_eq!(value["email"], POOL, "{info}");
    assert_eq!(value["aliases"], json!(["default"]), "{info}");
    assert_eq!(value["scopes"], json!(DEFAULT_SCOPES), "{info}");
    assert!(
        value.get("token").is_none() && value.get("identity").is_none(),
        "{info}"
    );
    let c_info = c
        .get("instance/service-accounts/default/?recursive=true")
        .await;
    assert_eq!(c_info.json()["email"], principal, "{c_info}");

    // 25. Old google-auth and gcloud use the returned email as the path segment.
    for path in ["", "email", "aliases", "scopes", "?recursive=true"] {
        let default = b
            .get(&format!("instance/service-accounts/default/{path}"))
            .await;
        let named = b
            .get(&format!("instance/service-accounts/{POOL}/{path}"))
            .await;
        named.ok();
        assert_eq!(named.body, default.body, "{named} / {default}");
        assert_eq!(named.etag(), default.etag(), "{named} / {default}");
    }
    let (default_token, _) = b.token("instance/service-accounts/default/token").await;
    let (named_token, _) = b
        .token(&format!("instance/service-accounts/{POOL}/token"))
        .await;
    assert_eq!(named_token, default_token, "one identity, one cached token");

    // 26. Pod A's account is not pod B's.
    for other in [GSA, GSA_ENCODED, "nobody@wid-dev.iam.gserviceaccount.com"] {
        for path in [
            "/",
            "/email",
            "/token",
            "/identity?audience=https://x.example",
        ] {
            let got = b
                .get(&format!("instance/service-accounts/{other}{path}"))
                .await;
            got.expect(404);
            assert!(!got.body.contains("access_token"), "{got}");
        }
    }
}

// ================================================================================================
// Token

/// Checks 28, 29 and 33: the token's JSON, the cache and its countdown, no long-poll on tokens.
#[tokio::test]
async fn token_shape_cache_and_countdown() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);

    // 28.
    let first_at = Instant::now();
    let got = a.get("instance/service-accounts/default/token").await;
    let (first, first_expires) = token_of(&got);
    assert!(
        got.header("server").is_some(),
        "no Server header on the token: {got}"
    );
    let info = dev.tokeninfo("access_token", &first).await;
    assert_eq!(info["email"], GSA, "the token is not the GSA's: {info}");
    // Unknown parameters (bound-token hints, identity parameters on /token) are ignored.
    let (extra, _) = a
        .token(
            "instance/service-accounts/default/token?bindCertificateFingerprint=abc&transport=mtls&binding-enforcement=on&audience=x&format=full&licenses=TRUE",
        )
        .await;
    assert_eq!(extra, first, "unknown parameters changed the token");

    // 29. The cached token, counting down (this wait measures time; it synchronises nothing).
    let pause = Duration::from_millis(1100).saturating_sub(first_at.elapsed());
    tokio::time::sleep(pause).await;
    let (second, second_expires) = a.token("instance/service-accounts/default/token").await;
    let elapsed = first_at.elapsed().as_secs_f64().ceil() as u64;
    assert_eq!(second, first, "the cached token is not served again");
    assert!(
        second_expires < first_expires && first_expires - second_expires <= elapsed + 1,
        "expires_in did not count down with the time elapsed ({elapsed} s): {first_expires} then {second_expires}"
    );
    let remaining = info["expires_in"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("tokeninfo has no expires_in: {info}"));
    assert!(
        remaining.abs_diff(first_expires) <= 2,
        "expires_in is not the token's remaining life ({remaining} s): {first_expires}"
    );

    // 33. No long-poll on a token.
    for query in [
        "wait_for_change=true",
        "wait_for_change=true&timeout_sec=1",
        "wait_for_change=true&last_etag=0",
    ] {
        let got = a
            .get(&format!("instance/service-accounts/default/token?{query}"))
            .await;
        got.expect(400);
        assert!(!got.body.contains("access_token"), "{got}");
    }
}

/// Check 31: `scopes` reaches the minting call as its list whether sent raw or encoded, and
/// tokens are cached per scope set.
#[tokio::test]
async fn token_scopes_raw_and_encoded_share_one_cache_entry() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);
    let storage = "https://www.googleapis.com/auth/devstorage.read_only";
    let cloud = "https://www.googleapis.com/auth/cloud-platform";
    let path = "instance/service-accounts/default/token";

    let (raw, _) = a.token(&format!("{path}?scopes={storage},{cloud}")).await;
    let info = dev.tokeninfo("access_token", &raw).await;
    let mut granted: Vec<&str> = info["scope"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    granted.sort_unstable();
    assert_eq!(granted, [cloud, storage], "scopes were not minted: {info}");

    let encoded = "https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fdevstorage.read_only%2Chttps%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform";
    for query in [
        format!("scopes={encoded}"),
        format!("scopes={storage}%2C{cloud}"),
        format!("scopes={}", encoded.replace("%2C", ",")),
        format!("scopes={storage},{cloud}&bindCertificateFingerprint=x"),
    ] {
        let (token, _) = a.token(&format!("{path}?{query}")).await;
        assert_eq!(
            token, raw,
            "?{query} is another cache entry than the raw form"
        );
    }

    // Another scope set: another token; the default set: yet another.
    let (cloud_only, _) = a.token(&format!("{path}?scopes={cloud}")).await;
    assert_ne!(cloud_only, raw, "a different scope set shared the token");
    let info = dev.tokeninfo("access_token", &cloud_only).await;
    assert_eq!(info["scope"], cloud, "{info}");
    let (default, _) = a.token(path).await;
    assert_ne!(default, raw);
    assert_ne!(default, cloud_only);
    let (cloud_again, _) = a.token(&format!("{path}?scopes={cloud}")).await;
    assert_eq!(
        cloud_again, cloud_only,
        "the cloud-platform token is cached"
    );
}

/// Check 34: an unannotated pod gets the federated token itself, in the same JSON.
#[tokio::test]
async fn token_of_an_unannotated_pod_is_federated() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);
    let b = dev.caller(POD_B);

    let got = b.get("instance/service-accounts/default/token").await;
    let (federated, _) = token_of(&got);
    let body = got.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "token_type"],
        "another JSON shape: {got}"
    );
    let (annotated, _) = a.token("instance/service-accounts/default/token").await;
    assert_ne!(federated, annotated, "pod B got pod A's token");
    let (again, _) = b.token("instance/service-accounts/default/token").await;
    assert_eq!(again, federated, "pod B's token is cached");

    let introspected: Value = plain_client()
        .post(format!("{}/v1/introspect", dev.iam_base))
        .form(&[("token", federated.as_str())])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("introspection JSON");
    assert_eq!(introspected["active"], true, "{introspected}");
    let subject = format!("/subject/ns/{}/sa/{}", B_KSA.0, B_KSA.1);
    assert!(
        introspected["username"]
            .as_str()
            .is_some_and(|u| u.ends_with(&subject)),
        "the federated token is not pod B's KSA: {introspected}"
    );
}

// ================================================================================================
// Identity

/// Checks 36-39: the audience rule, the claims, `format` and `licenses`, unannotated pods.
#[tokio::test]
async fn identity_tokens() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);
    let b = dev.caller(POD_B);
    let path = "instance/service-accounts/default/identity";

    // 36.
    for query in ["", "?audience=", "?format=full", "?audience=&format=full"] {
        let got = a.get(&format!("{path}{query}")).await;
        assert_eq!(
            got.expect(400),
            "non-empty audience parameter required\n",
            "{got}"
        );
    }

    // 37. Encoded (Python, gcloud, Go) and Node's raw audience.
    for (query, audience) in [
        (
            "audience=https%3A%2F%2Fx.example%2Fp%3Fq%3D1",
            "https://x.example/p?q=1",
        ),
        (
            "format=full&audience=https://x.example",
            "https://x.example",
        ),
    ] {
        let got = a.get(&format!("{path}?{query}")).await;
        let claims = jwt_claims(&got);
        assert_eq!(claims["aud"], audience, "{claims}");
        // wid signs its own ID tokens: `iss` is the token service's issuer, the "configured
        // private issuer" of iam-sts-protocol.md check 24, not accounts.google.com.
        assert_eq!(claims["iss"], dev.iam_base, "{claims}");
        assert_eq!(claims["email"], GSA, "{claims}");
        assert_eq!(claims["email_verified"], true, "{claims}");
        assert!(
            claims["sub"].as_str().is_some_and(is_digits),
            "sub is not numeric: {claims}"
        );
        let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
        let lifetime = exp.zip(iat).map(|(e, i)| e - i);
        assert!(
            lifetime.is_some_and(|l| (3590..=3610).contains(&l)),
            "exp - iat is not about 3600: {claims}"
        );
        assert!(claims.get("google").is_none(), "{claims}");
        // The token service that signed it accepts it as an ID token for that audience.
        let verified = dev.tokeninfo("id_token", got.ok()).await;
        assert_eq!(verified["aud"], audience, "{verified}");
        assert_eq!(verified["email"], GSA, "{verified}");
    }

    // 38. `format` and `licenses` as clients send them; a bad format is refused.
    for query in [
        "format=full",
        "format=standard",
        "format=FULL",
        "format=full&licenses=TRUE",
        "format=full&licenses=FALSE",
        "format=full&licenses=true",
        "format=standard&licenses=FALSE",
        "licenses=TRUE",
    ] {
        let got = a
            .get(&format!("{path}?audience=https://fmt.example&{query}"))
            .await;
        let claims = jwt_claims(&got);
        assert_eq!(claims["aud"], "https://fmt.example", "?{query}: {claims}");
        assert!(
            claims.get("google").is_none(),
            "?{query}: a google claim from our signer: {claims}"
        );
    }
    for query in ["format=compact", "format=fulll"] {
        let got = a
            .get(&format!("{path}?audience=https://fmt.example&{query}"))
            .await;
        got.expect(400);
        assert!(!got.body.contains("eyJ"), "a token with a 400: {got}");
    }

    // 39. No annotation, no ID token: GKE's text, naming the KSA.
    let got = b
        .get(&format!("{path}?audience=https://x.example&format=full"))
        .await;
    let body = got.expect(404);
    assert_eq!(got.content_type(), "application/text", "{got}");
    assert!(
        body.contains(&format!("({}/{}) is not annotated", B_KSA.0, B_KSA.1)),
        "the 404 does not name {}/{}: {got}",
        B_KSA.0,
        B_KSA.1
    );
    assert!(
        body.contains("iam.gke.io/gcp-service-account"),
        "the 404 does not say which annotation: {got}"
    );
}

// ================================================================================================
// Long-poll

/// Checks 40-43 with `timeout_sec=1`.
#[tokio::test]
async fn long_poll_waits_for_a_change_or_the_timeout() {
    let dev = Dev::start().await;
    let a = dev.caller(POD_A);
    let current = a.get("project/project-id").await;
    let etag = current.etag().to_owned();

    // 40. The caller has the current value: held for timeout_sec, then the same answer.
    for query in [
        format!("wait_for_change=true&last_etag={etag}&timeout_sec=1"),
        // Without last_etag: wait as well.
        "wait_for_change=true&timeout_sec=1".to_owned(),
    ] {
        let started = Instant::now();
        let got = a.get(&format!("project/project-id?{query}")).await;
        let waited = started.elapsed();
        assert_eq!(got.text(), PROJECT, "{got}");
        assert_eq!(got.etag(), etag, "{got}");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "?{query} answered after {waited:?}, not after about 1 s"
        );
    }

    // 41. An ETag the caller cannot have: the current value at once.
    let stale = if etag == "0123456789abcdef" {
        "fedcba9876543210"
    } else {
        "0123456789abcdef"
    };
    for last in ["0", "NONE", stale] {
        let started = Instant::now();
        let got = a
            .get(&format!(
                "project/project-id?wait_for_change=true&last_etag={last}&timeout_sec=5"
            ))
            .await;
        let waited = started.elapsed();
        assert_eq!(got.text(), PROJECT, "{got}");
        assert_eq!(got.etag(), etag, "{got}");
        assert!(
            waited < Duration::from_secs(2),
            "last_etag={last} was held {waited:?}"
        );
    }

    // 42. A listing cannot be waited on; a recursive directory can. (The refusals below ask for
    // 3 s, so that an answer held instead of refused cannot pass as a quick one.)
    for path in ["instance/", "instance/attributes/", V1] {
        let started = Instant::now();
        let got = a
            .get(&format!("{path}?wait_for_change=true&timeout_sec=3"))
            .await;
        got.expect(400);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: the 400 came only after the wait"
        );
    }
    let recursive = a.get("instance/attributes/?recursive=true").await;
    let recursive_etag = recursive.etag().to_owned();
    assert_eq!(recursive.json()["cluster-name"], "dev", "{recursive}");
    let started = Instant::now();
    let got = a
        .get(&format!(
            "instance/attributes/?recursive=true&wait_for_change=true&last_etag={recursive_etag}&timeout_sec=1"
        ))
        .await;
    let waited = started.elapsed();
    assert_eq!(got.json(), recursive.json(), "{got}");
    assert_eq!(got.etag(), recursive_etag, "{got}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "recursive long-poll answered after {waited:?}"
    );
    let got = a
        .get(&format!(
            "instance/attributes/?recursive=true&wait_for_change=true&last_etag={stale}&timeout_sec=5"
        ))
        .await;
    assert_eq!(got.json(), recursive.json(), "{got}");

    // 43. Whole seconds only.
    for timeout in ["abc", "1.5", "-1"] {
        let started = Instant::now();
        let got = a
            .get(&format!(
                "project/project-id?wait_for_change=true&last_etag={etag}&timeout_sec={timeout}"
            ))
            .await;
        got.expect(400);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "timeout_sec={timeout:?}: the 400 came only after a wait"
        );
    }
}

// ================================================================================================
// Identification

/// Check 45: an address no pod has is refused, with a text that says why, and never credentials.
#[tokio::test]
async fn a_stranger_is_refused_and_never_given_credentials() {
    let dev = Dev::start().await;
    let stranger = dev.caller(STRANGER);

    for path in [
        "project/project-id",
        "instance/service-accounts/",
        "instance/service-accounts/default/email",
        "instance/service-accounts/default/token",
        &format!("instance/service-accounts/{GSA}/token"),
        "instance/service-accounts/default/identity?audience=https://x.example",
        "instance/service-accounts/default/?recursive=true",
        &format!("{V1}?recursive=true"),
    ] {
        let got = stranger.get(path).await;
        let body = got.expect(403);
        assert!(
            body.contains(STRANGER),
            "the 403 does not name the caller's address: {got}"
        );
        for secret in ["access_token", GSA, POOL, "eyJ"] {
            assert!(
                !body.contains(secret),
                "{secret} leaked to a stranger: {got}"
            );
        }
    }
    // `/` answers anyone (Go's OnGCE probe), with nothing in it.
    let root = stranger.bare("GET", "/").await;
    assert_eq!(root.expect(200), "computeMetadata/\n", "{root}");
}

// ================================================================================================
// HTTP/1.1 framing of our own layer, over raw sockets

/// Requests that share a connection: pipelined in one write, sequential keep-alive, a head that
/// arrives in pieces, and an absolute-form target.
#[tokio::test]
async fn framing_requests_that_share_a_connection() {
    let dev = Dev::start().await;
    let number = dev
        .caller(POD_A)
        .get("project/numeric-project-id")
        .await
        .text()
        .to_owned();

    // Pipelined: three requests in one write, three responses in order (a HEAD between two
    // GETs: its length is announced, its body never sent).
    let mut conn = RawConn::open(&dev, POD_A).await;
    let pipelined = [
        raw_get("/computeMetadata/v1/project/project-id", ""),
        "HEAD / HTTP/1.1\r\nHost: metadata.google.internal\r\n\r\n".to_owned(),
        raw_get("/computeMetadata/v1/project/numeric-project-id", ""),
    ]
    .concat();
    conn.send(&pipelined).await;
    let first = conn.response(false).await;
    assert_eq!(first.expect(200), PROJECT, "{first:?}");
    let head = conn.response(true).await;
    head.expect(200);
    assert_eq!(head.header("content-length"), Some("17"), "{head:?}");
    let third = conn.response(false).await;
    assert_eq!(third.expect(200), number, "{third:?}");
    assert!(
        third.header("connection").is_none(),
        "a keep-alive answer says Connection: {third:?}"
    );

    // Keep-alive: three requests one after another on one connection.
    let mut conn = RawConn::open(&dev, POD_A).await;
    for (path, expected) in [
        ("/computeMetadata/v1/project/project-id", PROJECT),
        (
            "/computeMetadata/v1/universe/universe-domain",
            "googleapis.com",
        ),
        ("/computeMetadata/v1/instance/id", INSTANCE_ID),
    ] {
        conn.send(raw_get(path, "")).await;
        let got = conn.response(false).await;
        assert_eq!(got.expect(200), expected, "{path}: {got:?}");
        assert_ne!(got.header("connection"), Some("close"), "{got:?}");
    }
    // ... the token among them, HTTP/1.0 asking to keep the connection as well.
    conn.send(
        "GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.0\r\nConnection: keep-alive\r\nMetadata-Flavor: Google\r\n\r\n",
    )
    .await;
    let token = conn.response(false).await;
    token.expect(200);
    assert!(token.body().contains("\"access_token\""), "{token:?}");
    // An HTTP/1.0 client reads to the end of the connection unless told it stays open.
    assert_eq!(token.header("connection"), Some("keep-alive"), "{token:?}");
    conn.send(raw_get("/computeMetadata/v1/project/project-id", ""))
        .await;
    assert_eq!(conn.response(false).await.expect(200), PROJECT);

    // A head in pieces, with pauses between them, is still one request.
    let mut conn = RawConn::open(&dev, POD_A).await;
    for piece in [
        "GET /computeMetadata/v1/pro",
        "ject/project-id HTTP/1.1\r\nHo",
        "st: metadata.google.internal\r\nMetadata-Fla",
        "vor: Google\r\n",
        "\r\n",
    ] {
        conn.send(piece).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let got = conn.response(false).await;
    assert_eq!(got.expect(200), PROJECT, "{got:?}");

    // Absolute-form targets, as clients send them through a proxy.
    let got = raw_once(
        &dev,
        "GET http://metadata.google.internal/computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n",
    )
    .await;
    assert_eq!(got.expect(200), PROJECT, "{got:?}");
    let got = raw_once(
        &dev,
        "GET http://169.254.169.254/computeMetadata/v1/instance?alt=text HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata-Flavor: Google\r\n\r\n",
    )
    .await;
    got.expect(301);
    assert_eq!(
        got.header("location"),
        Some("http://169.254.169.254/computeMetadata/v1/instance/?alt=text"),
        "{got:?}"
    );
}

/// Connections that end: HTTP/1.0, `Connection: close`, a request with a body, an oversized
/// head, bytes that are no HTTP.
#[tokio::test]
async fn framing_connections_that_end() {
    let dev = Dev::start().await;

    // HTTP/1.0 without Connection: one answer, then the server closes.
    let mut conn = RawConn::open(&dev, POD_A).await;
    conn.send(
        "GET /computeMetadata/v1/project/project-id HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n",
    )
    .await;
    let got = conn.response(false).await;
    assert_eq!(got.expect(200), PROJECT, "{got:?}");
    conn.expect_closed("an HTTP/1.0 answer").await;

    // `Connection: close`: said back, then closed (a request after it is never answered).
    let mut conn = RawConn::open(&dev, POD_A).await;
    conn.send(
        [
            raw_get(
                "/computeMetadata/v1/project/project-id",
                "Connection: close\r\n",
            ),
            raw_get("/computeMetadata/v1/instance/id", ""),
        ]
        .concat(),
    )
    .await;
    let got = conn.response(false).await;
    assert_eq!(got.expect(200), PROJECT, "{got:?}");
    assert_eq!(got.header("connection"), Some("close"), "{got:?}");
    conn.expect_closed("a Connection: close answer").await;

    // A body is never read as the next request: 405, then closed.
    let mut conn = RawConn::open(&dev, POD_A).await;
    let smuggled = raw_get(
        "/computeMetadata/v1/instance/service-accounts/default/token",
        "",
    );
    conn.send(format!(
        "POST /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    ))
    .await;
    let got = conn.response(false).await;
    got.expect(405);
    assert_eq!(got.header("allow"), Some("GET, HEAD"), "{got:?}");
    assert_eq!(got.header("connection"), Some("close"), "{got:?}");
    conn.expect_closed("a 405 to a request with a body").await;

    // A chunked body, the same.
    let mut conn = RawConn::open(&dev, POD_A).await;
    conn.send(format!(
        "PUT /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: m\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    ))
    .await;
    conn.response(false).await.expect(405);
    conn.expect_closed("a 405 to a chunked request").await;

    // A head over 16 KiB: 431, closed.
    let mut conn = RawConn::open(&dev, POD_A).await;
    let pad = "a".repeat(17 * 1024);
    conn.send_refusable(raw_get(
        "/computeMetadata/v1/project/project-id",
        &format!("X-Pad: {pad}\r\n"),
    ))
    .await;
    let got = conn.response(false).await;
    got.expect(431);
    conn.expect_closed("a 431").await;
    // ... and one that never ends, sent without its blank line.
    let mut conn = RawConn::open(&dev, POD_A).await;
    conn.send_refusable(format!("GET / HTTP/1.1\r\nHost: m\r\nX-Pad: {pad}"))
        .await;
    conn.response(false).await.expect(431);
    conn.expect_closed("a 431 to an endless head").await;

    // Bytes that are no HTTP: 400, closed.
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"HELLO\r\n\r\n",
        b"GET / FTP/1.0\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
    ] {
        let mut conn = RawConn::open(&dev, POD_A).await;
        conn.send(garbage).await;
        let got = conn.response(false).await;
        assert_eq!(
            got.status,
            400,
            "{:?} answered {got:?}",
            String::from_utf8_lossy(garbage)
        );
        got.expect(400);
        conn.expect_closed("a 400 to garbage").await;
    }

    // The server is still fine.
    let got = raw_once(&dev, &raw_get("/computeMetadata/v1/project/project-id", "")).await;
    assert_eq!(got.expect(200), PROJECT);
}

/// The agent alone, `wid metadata serve --addr --pods --sts-url
/// --iamcredentials-url` and nothing else, beside a `wid dev` on its default data directory:
/// the agent takes `wid dev`'s project, issuer and issuer key, so its pods get tokens.
#[tokio::test]
async fn an_agent_alone_answers_for_the_cluster_of_wid_dev() {
    let xdg = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start_with(|command, _| {
        command.env("XDG_DATA_HOME", xdg.path());
    })
    .await;
    assert!(
        xdg.path().join("wid/dev/agent-issuer.pk8").exists(),
        "wid dev keeps its issuer key in its default data directory"
    );
    let log = xdg.path().join("alone.log");
    let mut command = Command::new(crate::support::WID);
    command
        .args(["metadata", "serve", "--addr", "127.0.0.1:0"])
        .arg("--pods")
        .arg(dev._dir.path().join("pods.json"))
        .args([
            "--sts-url",
            &dev.iam_base,
            "--iamcredentials-url",
            &dev.iam_base,
        ])
        .env("XDG_DATA_HOME", xdg.path())
        .env_remove("WID_PROJECT")
        .env_remove("WID_DATA_DIR")
        .env_remove("WID_ISSUER_KEY")
        .env_remove("WID_ISSUER_URI")
        .stdin(Stdio::null());
    let alone = crate::support::Agent::spawn(&mut command, &log).await;
    let client = reqwest::Client::builder()
        .local_address(POD_A.parse::<IpAddr>().ok())
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token",
        alone.base
    );
    let response = client
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .expect("the agent answers");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{body}\n{}", alone.log());
    let token: Value = serde_json::from_str(&body).expect("token JSON");
    let info = dev
        .tokeninfo(
            "access_token",
            token["access_token"].as_str().unwrap_or_default(),
        )
        .await;
    assert_eq!(info["email"], GSA, "{info}");
}
