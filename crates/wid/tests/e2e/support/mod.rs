//! Test support: the real `wid` binary on loopback, and a small JSON client for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod tls;

pub const WID: &str = env!("CARGO_BIN_EXE_wid");

/// A loopback address where nothing listens: port 1 is privileged, and no test binds it.
pub const CLOSED: &str = "127.0.0.1:1";

/// The value of `addr=` on the first line of `log` that contains `message`.
pub fn logged_addr(log: &str, message: &str) -> Option<String> {
    log.lines()
        .find(|line| line.contains(message))?
        .split(' ')
        .find_map(|field| field.strip_prefix("addr="))
        .map(|addr| addr.trim_matches('"').to_owned())
}

/// A `wid iam serve` process with its own data directory.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Starts on port 0 and learns the port from the service's "listening" log line, so that
    /// parallel tests can never race for a port. Logs are JSON.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_spawned(data_dir, "json", extra, &[])
    }

    /// [`Server::start_with`], with environment variables of its own (`SSL_CERT_FILE`, say).
    pub fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        Self::start_spawned(data_dir, "json", extra, env)
    }

    /// [`Server::start_with`] with logs in `format` (`json` or `text`).
    pub fn start_logging(data_dir: &Path, format: &str, extra: &[&str]) -> Server {
        Self::start_spawned(data_dir, format, extra, &[])
    }

    fn start_spawned(
        data_dir: &Path,
        format: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Server {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log_path = data_dir.with_extension(format!("{}.{n}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(WID)
            .args(["iam", "serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--log-format", format])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wid iam serve");
        let mut server = Server {
            child,
            port: 0,
            data_dir: data_dir.to_owned(),
            log_path,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "wid iam serve exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            let listening = self.log().lines().find_map(listening_addr);
            if let Some(addr) = listening {
                self.port = addr
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .expect("port in the log");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "wid iam serve not ready after 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .expect("admin token")
            .trim()
            .to_owned()
    }

    pub fn api(&self) -> Api {
        Api {
            base: self.base(),
            token: Some(self.token()),
            http: reqwest::Client::new(),
        }
    }

    /// A client of this server with `token` as its credential.
    pub fn api_with_token(&self, token: &str) -> Api {
        Api {
            base: self.base(),
            token: Some(token.to_owned()),
            http: reqwest::Client::new(),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "wid iam serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address of the token service's "listening" log line, in JSON or in text
/// (`... token service listening addr=127.0.0.1:PORT ...`).
fn listening_addr(line: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return (v["message"] == "token service listening")
            .then(|| v["addr"].as_str().map(str::to_owned))?;
    }
    let (_, fields) = line.split_once("token service listening ")?;
    fields
        .split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .map(str::to_owned)
}

/// A JSON client of the IAM API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

/// An answer: status and parsed body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts a Google-format error with this HTTP status and rpc status.
    #[track_caller]
    pub fn expect_error(&self, code: u16, status: &str) -> &str {
        assert_eq!(self.status, code, "unexpected answer {self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert_eq!(self.body["error"]["status"], status, "{self:?}");
        let message = self.body["error"]["message"]
            .as_str()
            .expect("error message");
        assert!(!message.is_empty());
        message
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "unexpected answer {self:?}");
        &self.body
    }
}

impl Api {
    /// The account of the access token in a metadata token answer (`{"access_token": ...}`),
    /// as the token service's tokeninfo reports it.
    pub async fn email_of_token_answer(&self, body: &str) -> String {
        let token = serde_json::from_str::<Value>(body).expect("token json")["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        let info = self
            .without_token()
            .get(&format!("/tokeninfo?access_token={token}"))
            .await;
        info.ok()["email"].as_str().unwrap_or_default().to_owned()
    }

    pub fn without_token(&self) -> Api {
        Api {
            token: None,
            ..self.clone()
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            headers,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.send(
            method,
            path,
            body.map(|b| serde_json::to_vec(&b).expect("json")),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(body)).await
    }

    pub async fn create_project(&self, id: &str, number: &str) -> Value {
        self.post(
            "/v1/projects",
            serde_json::json!({"projectId": id, "projectNumber": number}),
        )
        .await
        .ok()
        .clone()
    }

    pub async fn create_account(&self, project: &str, account_id: &str) -> Value {
        self.post(
            &format!("/v1/projects/{project}/serviceAccounts"),
            serde_json::json!({"accountId": account_id, "serviceAccount": {"displayName": account_id}}),
        )
        .await
        .ok()
        .clone()
    }
}

/// Runs `wid` with the given arguments against `server`; returns (success, stdout, stderr).
pub fn wid_cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    wid_cli_with_env(server, args, &[])
}

/// [`wid_cli`] with environment variables of its own.
pub fn wid_cli_with_env(
    server: &Server,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (bool, String, String) {
    let out = Command::new(WID)
        .args(args)
        .envs(env.iter().copied())
        .env("WID_ENDPOINT", server.base())
        .env("WID_TOKEN_FILE", server.token_file())
        .env_remove("WID_PROJECT")
        .output()
        .expect("run wid");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `wid metadata serve`: its metadata and admin base URLs and its log, stopped when
/// dropped.
pub struct Agent {
    pub child: Child,
    pub base: String,
    pub admin: String,
    pub log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Spawns `command`, an agent told to listen on port 0 (and, for its admin listener, port 0
    /// too, if it has one), logging as text to `log`; returns once it listens, its addresses
    /// read from its log (at most 30 s).
    pub async fn spawn(command: &mut Command, log: &Path) -> Agent {
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .env_remove("WID_LOG_FORMAT")
            .spawn()
            .expect("spawn the agent");
        let mut agent = Agent {
            child,
            base: String::new(),
            admin: String::new(),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let listening = loop {
            let text = agent.log();
            if let Some(addr) = logged_addr(&text, "metadata server listening") {
                break (addr, logged_addr(&text, "metadata admin listener"));
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited with {status}: {text}");
            }
            assert!(Instant::now() < deadline, "agent not listening: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        agent.base = format!("http://{}", listening.0);
        agent.admin = listening
            .1
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of a counter on /metrics (0 when absent).
    pub async fn counter(&self, name: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Whether the tests run as root, which `chown` to another user needs; learnt from the owner of
/// a file just made, so that no call into libc is needed.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    tempfile::NamedTempFile::new()
        .and_then(|f| f.as_file().metadata())
        .is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `nobody`, the other user of the owner tests.
pub const NOBODY: u32 = 65534;

/// Writes `bytes` to `path` as a private file (mode 0600) of another user, `nobody` (needs root).
pub fn write_as_nobody(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::{PermissionsExt, chown};
    std::fs::write(path, bytes).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    chown(path, Some(NOBODY), Some(NOBODY)).expect("chown");
}

/// Runs `command`, which is expected to refuse to start: its output once it exits, or a panic
/// with its log when it is still running after 20 s (it started instead).
pub fn run_refused(command: &mut Command) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = command
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "it started instead of refusing; log:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    (status.success(), stderr)
}

/// A running `wid dev`, stopped when dropped: what it printed on standard output until its
/// last `export` line, and its log file (standard error).
pub struct DevProcess {
    pub child: Child,
    pub printed: String,
    pub log: PathBuf,
}

impl DevProcess {
    /// Starts `wid dev ARGS` in `cwd`, its standard error in `log`; returns once it has printed
    /// the lines to paste (at most 60 s).
    pub fn start(cwd: &Path, args: &[&str], log: &Path) -> DevProcess {
        use std::io::BufRead;
        let mut child = Command::new(WID)
            .arg("dev")
            .args(args)
            .current_dir(cwd)
            .env_remove("WID_DATA_DIR")
            .env_remove("WID_PROJECT")
            // What `wid dev` would print an `unset` line for: the user's shell is not the test's.
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("NO_GCE_CHECK")
            .env_remove("CLOUDSDK_CORE_ACCOUNT")
            .env_remove("CLOUDSDK_CORE_PROJECT")
            .env_remove("CLOUDSDK_CORE_CHECK_GCE_METADATA")
            .env_remove("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE")
            .env_remove("CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE")
            .env_remove("CLOUDSDK_AUTH_IMPERSONATE_SERVICE_ACCOUNT")
            .env_remove("CLOUDSDK_AUTH_DISABLE_CREDENTIALS")
            .env_remove("CLOUDSDK_AUTH_AUTHORIZATION_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn wid dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut printed = String::new();
        while !printed.contains("\nexport WID_ENDPOINT=") {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    printed.push('\n');
                    printed.push_str(&line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "wid dev printed no lines to paste in 60 s; stdout:{printed}\nlog:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
        DevProcess {
            child,
            printed: printed.trim_start().to_owned(),
            log: log.to_owned(),
        }
    }

    /// The value of `NAME=` in the printed lines.
    pub fn exported(&self, name: &str) -> String {
        let prefix = format!("{name}=");
        self.printed
            .lines()
            .filter(|l| l.starts_with("export "))
            .flat_map(|l| l.split(' ').skip(1))
            .find_map(|pair| pair.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} is not exported:\n{}", self.printed))
            .to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
