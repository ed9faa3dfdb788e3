//! Real gcloud against `wid iam serve`: what gcloud creates is what `wid iam` lists, and the
//! reverse.
//!
//! gcloud is part of the machine image. In CI (CI set) its absence fails the test with a clear
//! message; elsewhere the test says it is skipped.

use std::path::Path;
use std::process::Command;

use crate::support::{Server, wid_cli};
use serde_json::Value;

pub fn gcloud_present() -> bool {
    let found = Command::new("gcloud")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!(
                "gcloud is not installed: the gcloud compatibility tests need the Google Cloud SDK (gcloud) on PATH"
            );
        }
        eprintln!("SKIPPED: gcloud is not installed; the gcloud compatibility tests did not run");
    }
    found
}

/// Runs gcloud against `server` with the admin token; returns (success, stdout, stderr).
fn gcloud(server: &Server, config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("gcloud")
        .args(args)
        .arg(format!(
            "--access-token-file={}",
            server.token_file().display()
        ))
        .arg("--project=gproj")
        .env("CLOUDSDK_CONFIG", config)
        .env(
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM",
            format!("{}/", server.base()),
        )
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
        .output()
        .expect("run gcloud");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(result: (bool, String, String)) -> String {
    assert!(
        result.0,
        "command failed:\nstdout: {}\nstderr: {}",
        result.1, result.2
    );
    result.1
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn gcloud_and_wid_share_one_iam() {
    if !gcloud_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let config = dir.path().join("gcloud");
    ok(wid_cli(
        &server,
        &[
            "iam",
            "projects",
            "create",
            "gproj",
            "--number",
            "424242424242",
        ],
    ));

    // Service accounts: gcloud creates, wid lists.
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "create",
            "gsa-one",
            "--display-name=G One",
        ],
    ));
    let email = "gsa-one@gproj.iam.gserviceaccount.com";
    let listed = json(&ok(gcloud(
        &server,
        &config,
        &["iam", "service-accounts", "list", "--format=json"],
    )));
    assert_eq!(listed[0]["email"], email);
    let described = json(&ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "describe",
            email,
            "--format=json",
        ],
    )));
    assert_eq!(described["displayName"], "G One");
    let from_wid = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "list",
            "--project",
            "gproj",
            "--format",
            "json",
        ],
    )));
    assert_eq!(from_wid[0]["uniqueId"], described["uniqueId"]);

    // wid creates, gcloud describes.
    ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "create",
            "wsa-two",
            "--project",
            "gproj",
        ],
    ));
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "describe",
            "wsa-two@gproj.iam.gserviceaccount.com",
        ],
    ));

    // Policy bindings, in the GKE member form.
    let member = "serviceAccount:gproj.svc.id.goog[ns1/ksa1]";
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "add-iam-policy-binding",
            email,
            "--role=roles/iam.workloadIdentityUser",
            &format!("--member={member}"),
        ],
    ));
    let policy = json(&ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "get-iam-policy",
            email,
            "--format=json",
        ],
    )));
    assert_eq!(policy["bindings"][0]["members"][0], member);
    assert_eq!(
        policy["bindings"][0]["role"],
        "roles/iam.workloadIdentityUser"
    );
    let from_wid = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "get-iam-policy",
            email,
            "--format",
            "json",
        ],
    )));
    assert_eq!(from_wid, policy);

    // A stale etag through gcloud: refused with the concurrent-change message, nothing changes.
    ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "add-iam-policy-binding",
            email,
            "--role",
            "roles/viewer",
            "--member",
            "user:bob@example.com",
        ],
    ));
    let stale_file = dir.path().join("stale.json");
    std::fs::write(&stale_file, policy.to_string()).expect("write policy");
    let (success, _, stderr) = gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "set-iam-policy",
            email,
            stale_file.to_str().expect("path"),
        ],
    );
    assert!(!success, "a stale etag was accepted");
    assert!(stderr.contains("concurrent policy changes"), "{stderr}");
    let now = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "get-iam-policy",
            email,
            "--format",
            "json",
        ],
    )));
    assert_eq!(now["bindings"].as_array().map(Vec::len), Some(2));

    // Workload identity pools and OIDC providers.
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "create",
            "pool-one",
            "--location=global",
            "--display-name=Pool one",
        ],
    ));
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}"#)
        .expect("write jwks");
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "providers",
            "create-oidc",
            "prov-one",
            "--workload-identity-pool=pool-one",
            "--location=global",
            "--issuer-uri=https://k8s.example.com",
            "--attribute-mapping=google.subject=assertion.sub",
            &format!("--jwk-json-path={}", jwks.display()),
        ],
    ));
    let pools = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "workload-identity-pools",
            "list",
            "--project",
            "gproj",
            "--format",
            "json",
        ],
    )));
    assert_eq!(
        pools[1]["name"],
        "projects/424242424242/locations/global/workloadIdentityPools/pool-one"
    );
    let providers = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "workload-identity-pools",
            "providers",
            "list",
            "--workload-identity-pool",
            "pool-one",
            "--project",
            "gproj",
            "--format",
            "json",
        ],
    )));
    assert_eq!(providers[0]["oidc"]["issuerUri"], "https://k8s.example.com");
    let described = json(&ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "providers",
            "describe",
            "prov-one",
            "--workload-identity-pool=pool-one",
            "--location=global",
            "--format=json",
        ],
    )));
    assert_eq!(
        described["attributeMapping"]["google.subject"],
        "assertion.sub"
    );

    // Updates, state changes and removals through gcloud.
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "update",
            email,
            "--display-name=Renamed",
            "--description=by gcloud",
        ],
    ));
    ok(gcloud(
        &server,
        &config,
        &["iam", "service-accounts", "disable", email],
    ));
    let described = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "describe",
            email,
            "--format",
            "json",
        ],
    )));
    assert_eq!(
        (
            described["displayName"].as_str(),
            described["disabled"].as_bool()
        ),
        (Some("Renamed"), Some(true))
    );
    ok(gcloud(
        &server,
        &config,
        &["iam", "service-accounts", "enable", email],
    ));
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "service-accounts",
            "remove-iam-policy-binding",
            email,
            "--role=roles/viewer",
            "--member=user:bob@example.com",
        ],
    ));
    let after = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "get-iam-policy",
            email,
            "--format",
            "json",
        ],
    )));
    assert_eq!(after["bindings"].as_array().map(Vec::len), Some(1));
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "providers",
            "update-oidc",
            "prov-one",
            "--workload-identity-pool=pool-one",
            "--location=global",
            "--allowed-audiences=aud-1,aud-2",
            "--attribute-condition=assertion.sub.startsWith('system:serviceaccount:')",
        ],
    ));
    let listed = json(&ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "providers",
            "list",
            "--workload-identity-pool=pool-one",
            "--location=global",
            "--format=json",
        ],
    )));
    assert_eq!(
        listed[0]["oidc"]["allowedAudiences"],
        serde_json::json!(["aud-1", "aud-2"])
    );
    let pools = json(&ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "list",
            "--location=global",
            "--format=json",
        ],
    )));
    let names: Vec<&str> = pools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("/gproj.svc.id.goog")),
        "the GKE pool is listed: {names:?}"
    );
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "describe",
            "pool-one",
            "--location=global",
        ],
    ));
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "providers",
            "delete",
            "prov-one",
            "--workload-identity-pool=pool-one",
            "--location=global",
            "--quiet",
        ],
    ));
    ok(gcloud(
        &server,
        &config,
        &[
            "iam",
            "workload-identity-pools",
            "delete",
            "pool-one",
            "--location=global",
            "--quiet",
        ],
    ));
    let pools = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "workload-identity-pools",
            "list",
            "--project",
            "gproj",
            "--format",
            "json",
        ],
    )));
    assert_eq!(
        pools.as_array().map(Vec::len),
        Some(1),
        "only the GKE pool is left: {pools}"
    );

    // Deletion through gcloud is seen by wid.
    ok(gcloud(
        &server,
        &config,
        &["iam", "service-accounts", "delete", email, "--quiet"],
    ));
    let left = json(&ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "list",
            "--project",
            "gproj",
            "--format",
            "json",
        ],
    )));
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    assert!(
        !server.log().contains(&server.token()),
        "the admin token appears in the log"
    );
}

/// Real gcloud's `iam service-accounts keys` against wid: refused until the project allows
/// keys (`wid iam projects update`), then create (a key file gcloud writes as Google's), list,
/// disable, enable, upload and delete.
#[test]
fn gcloud_manages_service_account_keys_where_the_project_allows_them() {
    if !gcloud_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let config = dir.path().join("gcloud");
    ok(wid_cli(
        &server,
        &[
            "iam",
            "projects",
            "create",
            "gproj",
            "--number",
            "434343434343",
        ],
    ));
    ok(wid_cli(
        &server,
        &[
            "iam",
            "service-accounts",
            "create",
            "keyed-app",
            "--project",
            "gproj",
        ],
    ));
    let email = "keyed-app@gproj.iam.gserviceaccount.com";
    let key_file = dir.path().join("key.json");
    let key_path = key_file.to_str().expect("path");
    let keys = |verb: &str, extra: &[&str]| {
        let mut args = vec!["iam", "service-accounts", "keys", verb];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--iam-account", email]);
        gcloud(&server, &config, &args)
    };

    let (created, _, stderr) = keys("create", &[key_path]);
    assert!(
        !created && stderr.contains("FAILED_PRECONDITION"),
        "{stderr}"
    );
    ok(wid_cli(
        &server,
        &[
            "iam",
            "projects",
            "update",
            "gproj",
            "--allow-service-account-keys",
            "--key-max-lifetime",
            "90d",
        ],
    ));
    ok(keys("create", &[key_path]));
    let file = json(&std::fs::read_to_string(&key_file).expect("key file"));
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["client_email"], email);
    assert_eq!(file["token_uri"], format!("{}/token", server.base()));
    let key_id = file["private_key_id"].as_str().expect("key id").to_owned();

    let listed = json(&ok(keys("list", &["--format=json"])));
    let listed = listed.as_array().expect("keys");
    assert!(
        listed
            .iter()
            .any(|k| k["name"].as_str().is_some_and(|n| n.ends_with(&key_id))),
        "{listed:?}"
    );
    ok(keys("disable", &[&key_id]));
    ok(keys("enable", &[&key_id]));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let own = wid_jose::signer::SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    let certificate = dir.path().join("mine.pem");
    std::fs::write(
        &certificate,
        own.certificate_pem("mine", now - 60, now + 86_400)
            .expect("cert"),
    )
    .expect("write");
    ok(keys("upload", &[certificate.to_str().expect("path")]));
    let listed = json(&ok(keys("list", &["--format=json", "--managed-by=user"])));
    assert_eq!(listed.as_array().expect("keys").len(), 2, "{listed}");

    ok(keys("delete", &[&key_id]));
    let listed = json(&ok(keys("list", &["--format=json"])));
    assert_eq!(listed.as_array().expect("keys").len(), 1, "{listed}");
}
