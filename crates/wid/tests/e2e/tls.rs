//! The token service over TLS (`--tls-cert`, `--tls-key`): HTTP/2 and HTTP/1.1 by ALPN, a
//! certificate renewed in place and presented to new connections while open ones keep theirs, a
//! broken renewal that changes nothing, the CLI with `--ca-file`; and plain HTTP off loopback
//! refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wid_google_fake::tls::TestCa;

use crate::support::Server;

/// Writes `pem` to `path` (a key with mode 0600, as a Secret volume has it).
fn write(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).expect("write PEM");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A client that trusts the test CA and reports the certificate each answer came with.
fn client(ca: &TestCa) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).expect("CA");
    reqwest::Client::builder()
        .tls_certs_merge([ca])
        .tls_info(true)
        .build()
        .expect("client")
}

/// The certificate `client` was shown for a GET of `/healthz`.
async fn presented(client: &reqwest::Client, base: &str) -> Vec<u8> {
    let response = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz over TLS");
    assert_eq!(response.status().as_u16(), 200);
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the peer's certificate")
        .to_vec()
}

/// The HTTP version curl settled on with `flag` (`--http2`, `--http1.1`).
fn curl_version(base: &str, ca: &Path, flag: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            flag,
            "--cacert",
        ])
        .arg(ca)
        .arg(format!("{base}/healthz"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits, bounded, until `check` holds.
async fn eventually(what: &str, server: &Server, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 15 s\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_and_a_certificate_renewed_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let ca_file = ca.write_pem(dir.path());
    let (cert_file, key_file): (PathBuf, PathBuf) =
        (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (cert, key) = ca.server_pem(&[]);
    write(&cert_file, &cert);
    write(&key_file, &key);
    let (cert_arg, key_arg) = (
        cert_file.to_str().expect("path"),
        key_file.to_str().expect("path"),
    );
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--tls-cert", cert_arg, "--tls-key", key_arg],
    );
    let base = format!("https://127.0.0.1:{}", server.port);

    assert_eq!(curl_version(&base, &ca_file, "--http2"), "2");
    assert_eq!(curl_version(&base, &ca_file, "--http1.1"), "1.1");
    // The issuer of wid's tokens is its https base.
    let discovery: serde_json::Value = client(&ca)
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(discovery["issuer"], base);
    // Not trusted without the CA.
    let untrusted = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(untrusted.is_err(), "{untrusted:?}");

    // Renewed in place, key first: new connections get the new certificate, an open one
    // keeps the certificate it was made with.
    let open = client(&ca);
    let first = presented(&open, &base).await;
    let (cert2, key2) = ca.server_pem(&[]);
    write(&key_file, &key2);
    write(&cert_file, &cert2);
    eventually(
        "the renewed certificate is presented",
        &server,
        async || presented(&client(&ca), &base).await != first,
    )
    .await;
    assert_eq!(
        presented(&open, &base).await,
        first,
        "the open connection keeps its certificate"
    );
    let second = presented(&client(&ca), &base).await;

    // A broken renewal (a certificate without its key) changes nothing, and says so.
    let (cert3, _) = ca.server_pem(&[]);
    write(&cert_file, &cert3);
    eventually("the broken renewal is logged", &server, async || {
        server.log().contains("TLS certificate not reloaded")
    })
    .await;
    assert_eq!(presented(&client(&ca), &base).await, second);
    cli_with_a_private_ca(&server, &base, &ca_file);
}

/// The CLI reaches an https endpoint of a private CA with `--ca-file`, and says why it cannot
/// without it.
fn cli_with_a_private_ca(server: &Server, base: &str, ca_file: &Path) {
    let run = |extra: &[&str]| {
        Command::new(crate::support::WID)
            .args(["iam", "projects", "list", "--endpoint", base])
            .arg("--token-file")
            .arg(server.token_file())
            .args(extra)
            .output()
            .expect("wid")
    };
    let trusted = run(&["--ca-file", ca_file.to_str().expect("path")]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let untrusted = run(&[]);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// Plain HTTP on an address other than loopback's is refused before anything is bound or
/// written, with what to do instead.
#[test]
fn plain_http_off_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(crate::support::WID)
        .args(["iam", "serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("wid");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing plain HTTP on 0.0.0.0:0")
            && stderr.contains("--tls-cert")
            && stderr.contains("--insecure-listen"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing is written");
}
