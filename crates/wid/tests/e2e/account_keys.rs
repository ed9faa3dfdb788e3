//! Service-account keys at Google's paths: refused until the project allows them, each valid no
//! longer than the project's limit, the private key handed out once in a key file of Google's
//! format, the public half served as the certificate and as the raw key, and uploads of a
//! user's own certificate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::support::Server;

const PROJECT: &str = "kproj";
const EMAIL: &str = "keyed-app@kproj.iam.gserviceaccount.com";

fn keys_of(account: &str) -> String {
    format!("/v1/projects/-/serviceAccounts/{account}/keys")
}

#[tokio::test]
async fn keys_are_refused_until_the_project_allows_them_and_expire_within_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    api.create_project(PROJECT, "515151515151").await;
    api.create_account(PROJECT, "keyed-app").await;

    // Off by default, as Google enforces for new organisations: Google's error, nothing made.
    let refused = api.post(&keys_of(EMAIL), json!({})).await;
    let message = refused.expect_error(400, "FAILED_PRECONDITION");
    assert!(
        message.starts_with("Key creation is not allowed on this service account."),
        "{message}"
    );
    assert_eq!(api.get(&keys_of(EMAIL)).await.ok()["keys"], json!([]));
    // A limit without allowing keys, or keys without a limit, are refused.
    for body in [
        json!({"keyMaxLifetime": "86400s"}),
        json!({"allowServiceAccountKeys": true}),
        json!({"allowServiceAccountKeys": true, "keyMaxLifetime": "90"}),
    ] {
        api.call("PATCH", &format!("/v1/projects/{PROJECT}"), Some(body))
            .await
            .expect_error(400, "INVALID_ARGUMENT");
    }
    let project = api
        .call(
            "PATCH",
            &format!("/v1/projects/{PROJECT}"),
            Some(json!({"allowServiceAccountKeys": true, "keyMaxLifetime": "86400s"})),
        )
        .await;
    assert_eq!(project.ok()["keyMaxLifetime"], "86400s");

    let created = api
        .post(
            &keys_of(EMAIL),
            json!({"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE"}),
        )
        .await;
    let key = created.ok().clone();
    let key_id = key["name"]
        .as_str()
        .expect("name")
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    assert_eq!(key_id.len(), 40, "{key}");
    assert_eq!(key["keyOrigin"], "GOOGLE_PROVIDED");
    assert_eq!(key["keyType"], "USER_MANAGED");
    assert_eq!(key["keyAlgorithm"], "KEY_ALG_RSA_2048");
    let after =
        wid_api::time::parse_rfc3339(key["validAfterTime"].as_str().expect("after")).expect("time");
    let before = wid_api::time::parse_rfc3339(key["validBeforeTime"].as_str().expect("before"))
        .expect("time");
    assert_eq!(before - after, 86_400, "the project's limit: {key}");

    // The key file, as Google writes it.
    let file: Value = serde_json::from_slice(
        &STANDARD
            .decode(key["privateKeyData"].as_str().expect("data"))
            .expect("base64"),
    )
    .expect("key file");
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["private_key_id"], key_id.as_str());
    assert_eq!(file["client_email"], EMAIL);
    assert_eq!(file["project_id"], PROJECT);
    assert_eq!(file["token_uri"], format!("{}/token", server.base()));
    assert_eq!(file["universe_domain"], "googleapis.com");
    assert!(
        file["private_key"]
            .as_str()
            .expect("key")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert_eq!(
        file["client_x509_cert_url"],
        format!(
            "{}/service_accounts/v1/metadata/x509/keyed-app%40kproj.iam.gserviceaccount.com",
            server.base()
        )
    );

    // Listed and got without the private key, ever again; the public half on request.
    let listed = api.get(&keys_of(EMAIL)).await;
    let listed = listed.ok()["keys"].as_array().expect("keys").clone();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("privateKeyData").is_none(), "{listed:?}");
    let key_path = format!("{}/{key_id}", keys_of(EMAIL));
    let pem = api
        .get(&format!("{key_path}?publicKeyType=TYPE_X509_PEM_FILE"))
        .await;
    let pem = String::from_utf8(
        STANDARD
            .decode(pem.ok()["publicKeyData"].as_str().expect("pem"))
            .expect("b64"),
    )
    .expect("utf-8");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let raw = api
        .get(&format!("{key_path}?publicKeyType=TYPE_RAW_PUBLIC_KEY"))
        .await;
    assert!(!raw.ok()["publicKeyData"].as_str().expect("raw").is_empty());
    assert!(api.get(&key_path).await.ok().get("publicKeyData").is_none());

    // The public key documents, for third parties: the key while it is enabled.
    let documents = || async {
        let anyone = api.without_token();
        let x509 = anyone
            .get(&format!("/service_accounts/v1/metadata/x509/{EMAIL}"))
            .await;
        let jwk = anyone
            .get(&format!("/service_accounts/v1/metadata/jwk/{EMAIL}"))
            .await;
        let kids: Vec<String> = jwk.ok()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect();
        (x509.ok().get(&key_id).cloned(), kids.contains(&key_id))
    };
    let (certificate, in_jwks) = documents().await;
    assert_eq!(
        certificate.as_ref().and_then(Value::as_str),
        Some(pem.as_str())
    );
    assert!(in_jwks);
    api.post(&format!("{key_path}:disable"), json!({}))
        .await
        .ok();
    assert_eq!(
        documents().await,
        (None, false),
        "a disabled key is not listed"
    );
    api.post(&format!("{key_path}:enable"), json!({}))
        .await
        .ok();
    assert!(documents().await.1);
    // Another account's path does not reach it; deleted, it is gone.
    api.create_account(PROJECT, "other-app").await;
    let elsewhere = format!(
        "{}/{key_id}",
        keys_of("other-app@kproj.iam.gserviceaccount.com")
    );
    api.get(&elsewhere).await.expect_error(404, "NOT_FOUND");
    api.call("DELETE", &key_path, None).await.ok();
    api.get(&key_path).await.expect_error(404, "NOT_FOUND");

    // Ten keys at most, as Google allows: a grant without `kid` tries each.
    for _ in 0..10 {
        api.post(&keys_of(EMAIL), json!({})).await.ok();
    }
    let full = api.post(&keys_of(EMAIL), json!({})).await;
    assert!(
        full.expect_error(400, "FAILED_PRECONDITION")
            .contains("the most it may have")
    );
}

#[tokio::test]
async fn an_uploaded_certificate_is_a_user_provided_key_within_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    api.create_project(PROJECT, "525252525252").await;
    api.create_account(PROJECT, "keyed-app").await;
    let now = wid_api::time::parse_rfc3339(&wid_api::time::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64,
    ))
    .expect("now");
    let key = wid_jose::signer::SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    let certificate = key
        .certificate_pem("mine", now - 60, now + 10 * 365 * 86_400)
        .expect("certificate");
    let upload = json!({"publicKeyData": STANDARD.encode(&certificate)});
    api.post(&format!("{}:upload", keys_of(EMAIL)), upload.clone())
        .await
        .expect_error(400, "FAILED_PRECONDITION");
    api.call(
        "PATCH",
        &format!("/v1/projects/{PROJECT}"),
        Some(json!({"allowServiceAccountKeys": true, "keyMaxLifetime": "30d"})),
    )
    .await
    .ok();
    let uploaded = api
        .post(&format!("{}:upload", keys_of(EMAIL)), upload)
        .await;
    let uploaded = uploaded.ok();
    assert_eq!(uploaded["keyOrigin"], "USER_PROVIDED");
    assert!(uploaded.get("privateKeyData").is_none());
    let after =
        wid_api::time::parse_rfc3339(uploaded["validAfterTime"].as_str().expect("a")).expect("t");
    let before =
        wid_api::time::parse_rfc3339(uploaded["validBeforeTime"].as_str().expect("b")).expect("t");
    assert_eq!(
        before - after,
        30 * 86_400,
        "the project's limit, not the certificate's ten years"
    );
    for bad in [
        json!({"publicKeyData": "not base64!"}),
        json!({"publicKeyData": STANDARD.encode("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")}),
        json!({"publicKeyData": STANDARD.encode(
            wid_jose::signer::SigningKey::generate(wid_jose::Algorithm::Es256).expect("ec")
                .certificate_pem("ec", now - 60, now + 86_400).expect("cert"))}),
        json!({"publicKeyData": STANDARD.encode(key.certificate_pem("old", now - 7200, now - 3600).expect("cert"))}),
    ] {
        api.post(&format!("{}:upload", keys_of(EMAIL)), bad)
            .await
            .expect_error(400, "INVALID_ARGUMENT");
    }
    // A certificate with a private key pasted after it; the same key again, at any account;
    // one of the service's own signing keys, published at every x509 document.
    let with_private_key = format!("{certificate}{}", key.private_key_pem().expect("pem"));
    api.post(
        &format!("{}:upload", keys_of(EMAIL)),
        json!({"publicKeyData": STANDARD.encode(&with_private_key)}),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");
    api.create_account(PROJECT, "other-app").await;
    api.post(
        &format!(
            "{}:upload",
            keys_of("other-app@kproj.iam.gserviceaccount.com")
        ),
        json!({"publicKeyData": STANDARD.encode(&certificate)}),
    )
    .await
    .expect_error(409, "ALREADY_EXISTS");
    let service_keys = api.without_token().get("/oauth2/v1/certs").await;
    let service_certificate = service_keys
        .ok()
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(Value::as_str)
        .expect("a service certificate")
        .to_owned();
    api.post(
        &format!("{}:upload", keys_of(EMAIL)),
        json!({"publicKeyData": STANDARD.encode(&service_certificate)}),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");
    assert_eq!(
        api.get(&keys_of(EMAIL)).await.ok()["keys"]
            .as_array()
            .expect("keys")
            .len(),
        1
    );
}

/// `wid iam projects update` and `wid iam service-accounts keys`, as gcloud's: the key file
/// written private, listed by id, disabled, enabled and deleted.
#[test]
fn the_cli_allows_keys_and_manages_them() {
    use crate::support::wid_cli;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let ok = |args: &[&str]| {
        let (done, stdout, stderr) = wid_cli(&server, args);
        assert!(done, "wid {args:?}: {stderr}");
        stdout
    };
    ok(&[
        "iam",
        "projects",
        "create",
        PROJECT,
        "--number",
        "535353535353",
    ]);
    ok(&[
        "iam",
        "service-accounts",
        "create",
        "keyed-app",
        "--project",
        PROJECT,
    ]);
    let file = dir.path().join("key.json");
    let file_arg = file.to_str().expect("path");
    let (done, _, stderr) = wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "keys",
            "create",
            file_arg,
            "--iam-account",
            EMAIL,
        ],
    );
    assert!(
        !done && stderr.contains("Key creation is not allowed"),
        "{stderr}"
    );
    let (done, _, stderr) = wid_cli(
        &server,
        &[
            "iam",
            "projects",
            "update",
            PROJECT,
            "--allow-service-account-keys",
        ],
    );
    assert!(!done && stderr.contains("--key-max-lifetime"), "{stderr}");
    let updated = ok(&[
        "iam",
        "projects",
        "update",
        PROJECT,
        "--allow-service-account-keys",
        "--key-max-lifetime",
        "24h",
        "--format",
        "json",
    ]);
    assert!(
        updated.contains("\"keyMaxLifetime\": \"86400s\""),
        "{updated}"
    );

    ok(&[
        "iam",
        "service-accounts",
        "keys",
        "create",
        file_arg,
        "--iam-account",
        EMAIL,
    ]);
    let mode = std::fs::metadata(&file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is private");
    let written: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    assert_eq!(written["type"], "service_account");
    let key_id = written["private_key_id"].as_str().expect("id").to_owned();
    let listed = ok(&[
        "iam",
        "service-accounts",
        "keys",
        "list",
        "--iam-account",
        EMAIL,
        "--format",
        "json",
    ]);
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed[0]["keyId"], key_id.as_str());
    // Every project's keys, for clean-up: with their accounts, by age.
    ok(&[
        "iam",
        "projects",
        "create",
        "kproj-two",
        "--number",
        "545454545454",
    ]);
    ok(&[
        "iam",
        "service-accounts",
        "create",
        "second-app",
        "--project",
        "kproj-two",
    ]);
    ok(&[
        "iam",
        "projects",
        "update",
        "kproj-two",
        "--allow-service-account-keys",
        "--key-max-lifetime",
        "1h",
    ]);
    let second = dir.path().join("second.json");
    ok(&[
        "iam",
        "service-accounts",
        "keys",
        "create",
        second.to_str().expect("path"),
        "--iam-account",
        "second-app@kproj-two.iam.gserviceaccount.com",
    ]);
    let all = |extra: &[&str]| {
        let mut args = vec![
            "iam",
            "service-accounts",
            "keys",
            "list",
            "--all-projects",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str::<Value>(&ok(&args)).expect("json")
    };
    let every = all(&[]);
    let accounts: Vec<&str> = every
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["account"].as_str())
        .collect();
    assert_eq!(
        accounts,
        [EMAIL, "second-app@kproj-two.iam.gserviceaccount.com"],
        "{every}"
    );
    assert_eq!(
        all(&["--older-than", "1h"]),
        json!([]),
        "both were made just now"
    );
    for verb in ["disable", "enable", "delete"] {
        ok(&[
            "iam",
            "service-accounts",
            "keys",
            verb,
            &key_id,
            "--iam-account",
            EMAIL,
        ]);
    }
    let listed = ok(&[
        "iam",
        "service-accounts",
        "keys",
        "list",
        "--iam-account",
        EMAIL,
        "--format",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&listed).expect("json"),
        json!([])
    );
}
