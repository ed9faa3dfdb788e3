//! The IAM v1 API over real HTTP against the real `wid iam serve` on loopback.

use crate::support::{Api, Server};
use serde_json::{Value, json};

async fn setup() -> (tempfile::TempDir, Server, Api) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    (dir, server, api)
}

const SA: &str = "/v1/projects/proj-a/serviceAccounts";
const EMAIL: &str = "robot-one@proj-a.iam.gserviceaccount.com";

#[tokio::test]
async fn service_account_resource_is_googles() {
    let (_dir, _server, api) = setup().await;
    let sa = api.create_account("proj-a", "robot-one").await;
    assert_eq!(
        sa["name"],
        format!("projects/proj-a/serviceAccounts/{EMAIL}")
    );
    assert_eq!(sa["projectId"], "proj-a");
    assert_eq!(sa["email"], EMAIL);
    assert_eq!(sa["displayName"], "robot-one");
    let unique_id = sa["uniqueId"].as_str().expect("uniqueId is a string");
    assert_eq!(unique_id.len(), 21);
    assert!(unique_id.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(sa["oauth2ClientId"], sa["uniqueId"]);
    assert!(sa["etag"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(
        sa.get("disabled").is_none(),
        "disabled is omitted when false: {sa}"
    );

    // Addressed by email or unique id, under its project, its number, or projects/-.
    for path in [
        format!("{SA}/{EMAIL}"),
        format!("{SA}/{unique_id}"),
        format!("/v1/projects/111111111111/serviceAccounts/{EMAIL}"),
        format!("/v1/projects/-/serviceAccounts/{EMAIL}"),
        format!("/v1/projects/-/serviceAccounts/{unique_id}"),
        "/v1/projects/-/serviceAccounts/robot-one%40proj-a.iam.gserviceaccount.com".to_string(),
    ] {
        assert_eq!(api.get(&path).await.ok()["uniqueId"], unique_id, "{path}");
    }

    let list = api.get(SA).await;
    assert_eq!(list.ok()["accounts"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn account_names_follow_googles_rules() {
    let (_dir, _server, api) = setup().await;
    for bad in [
        "short",
        "1starts-with-digit",
        "ends-with-dash-",
        "Upper-case",
        "under_score",
        "a234567890123456789012345678901",
    ] {
        let answer = api.post(SA, json!({"accountId": bad})).await;
        let message = answer.expect_error(400, "INVALID_ARGUMENT");
        assert!(message.contains(bad), "message names the id: {message}");
    }
    api.create_account("proj-a", "robot-one").await;
    let dup = api.post(SA, json!({"accountId": "robot-one"})).await;
    let message = dup.expect_error(409, "ALREADY_EXISTS");
    assert!(
        message.contains("robot-one") && message.contains("already exists"),
        "{message}"
    );
    assert_eq!(
        dup.body["error"]["details"][0]["resourceName"],
        format!("projects/proj-a/serviceAccounts/{EMAIL}")
    );
    // Nothing was created by the refused requests.
    assert_eq!(
        api.get(SA).await.ok()["accounts"].as_array().map(Vec::len),
        Some(1)
    );
    // Unknown project.
    api.post(
        "/v1/projects/nope-project/serviceAccounts",
        json!({"accountId": "robot-one"}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn missing_accounts_are_404_or_403_under_dash() {
    let (_dir, _server, api) = setup().await;
    api.get(&format!("{SA}/ghost-one@proj-a.iam.gserviceaccount.com"))
        .await
        .expect_error(404, "NOT_FOUND");
    let denied = api
        .get("/v1/projects/-/serviceAccounts/ghost-one@proj-a.iam.gserviceaccount.com")
        .await;
    denied.expect_error(403, "PERMISSION_DENIED");
    assert_eq!(
        denied.body["error"]["details"][0]["reason"],
        "IAM_PERMISSION_DENIED"
    );
    // The account exists, but not in the project named.
    api.create_project("proj-b", "222222222222").await;
    api.create_account("proj-a", "robot-one").await;
    api.get(&format!("/v1/projects/proj-b/serviceAccounts/{EMAIL}"))
        .await
        .expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn patch_disable_enable_delete() {
    let (_dir, _server, api) = setup().await;
    let sa = api.create_account("proj-a", "robot-one").await;
    let path = format!("{SA}/{EMAIL}");
    let patched = api
        .call("PATCH", &path, Some(json!({"serviceAccount": {"description": "does things"}, "updateMask": "description"})))
        .await;
    assert_eq!(patched.ok()["description"], "does things");
    assert_eq!(
        patched.body["displayName"], "robot-one",
        "fields outside the mask stay"
    );
    assert_ne!(patched.body["etag"], sa["etag"]);
    // A stale etag on PATCH is refused and changes nothing.
    api.call(
        "PATCH",
        &path,
        Some(json!({"serviceAccount": {"description": "x", "etag": sa["etag"]}, "updateMask": "description"})),
    )
    .await
    .expect_error(409, "ABORTED");
    api.call(
        "PATCH",
        &path,
        Some(json!({"serviceAccount": {"email": "x"}, "updateMask": "email"})),
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");
    assert_eq!(api.get(&path).await.ok()["description"], "does things");

    assert_eq!(
        api.post(&format!("{path}:disable"), json!({})).await.ok(),
        &json!({})
    );
    assert_eq!(api.get(&path).await.ok()["disabled"], true);
    assert_eq!(
        api.send("POST", &format!("{path}:enable"), None).await.ok(),
        &json!({})
    );
    assert!(api.get(&path).await.ok().get("disabled").is_none());

    assert_eq!(api.call("DELETE", &path, None).await.ok(), &json!({}));
    api.get(&path).await.expect_error(404, "NOT_FOUND");
    api.call("DELETE", &path, None)
        .await
        .expect_error(404, "NOT_FOUND");
    // The email can be reused; the unique id cannot.
    let again = api.create_account("proj-a", "robot-one").await;
    assert_ne!(again["uniqueId"], sa["uniqueId"]);
}

#[tokio::test]
async fn list_pages() {
    let (_dir, _server, api) = setup().await;
    for i in 0..5 {
        api.create_account("proj-a", &format!("robot-{i:03}")).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = api.get(&format!("{SA}?pageSize=2&pageToken={token}")).await;
        let accounts = page.ok()["accounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(accounts.len() <= 2);
        seen.extend(
            accounts
                .iter()
                .map(|a| a["email"].as_str().unwrap_or_default().to_owned()),
        );
        match page.body["nextPageToken"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    api.get(&format!("{SA}?pageToken=%%%"))
        .await
        .expect_error(400, "INVALID_ARGUMENT");
    api.create_project("proj-empty", "333333333333").await;
    assert_eq!(
        api.get("/v1/projects/proj-empty/serviceAccounts")
            .await
            .ok(),
        &json!({})
    );
}

async fn get_policy(api: &Api, query: &str) -> Value {
    api.send("POST", &format!("{SA}/{EMAIL}:getIamPolicy{query}"), None)
        .await
        .ok()
        .clone()
}

async fn set_policy(api: &Api, policy: Value) -> crate::support::Answer {
    api.post(
        &format!("{SA}/{EMAIL}:setIamPolicy"),
        json!({ "policy": policy }),
    )
    .await
}

#[tokio::test]
async fn iam_policy_round_trip_and_etags() {
    let (_dir, _server, api) = setup().await;
    api.create_account("proj-a", "robot-one").await;
    assert_eq!(
        get_policy(&api, "?options.requestedPolicyVersion=3").await,
        json!({"etag": "ACAB"})
    );

    let gke = "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]";
    let first = set_policy(
        &api,
        json!({"etag": "ACAB", "bindings": [{"role": "roles/iam.workloadIdentityUser", "members": [gke]}]}),
    )
    .await;
    let first = first.ok().clone();
    assert_eq!(first["version"], 1);
    assert_ne!(first["etag"], "ACAB");
    assert_eq!(get_policy(&api, "").await, first);

    // A stale etag: 409 ABORTED, and nothing changes.
    let stale = set_policy(&api, json!({"etag": "ACAB", "bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"]}]})).await;
    let message = stale.expect_error(409, "ABORTED");
    assert!(message.contains("concurrent policy changes"), "{message}");
    assert_eq!(get_policy(&api, "").await, first);

    // The fresh etag wins; the body form of requestedPolicyVersion is accepted too.
    let conditional = json!({
        "version": 3,
        "etag": first["etag"],
        "bindings": [
            {"role": "roles/iam.workloadIdentityUser", "members": [gke]},
            {"role": "roles/iam.serviceAccountTokenCreator", "members": ["user:alice@example.com"],
             "condition": {"title": "expirable", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}
        ]
    });
    let second = set_policy(&api, conditional).await.ok().clone();
    assert_eq!(second["version"], 3);
    assert_eq!(second["bindings"][1]["condition"]["title"], "expirable");
    let read = api
        .post(
            &format!("{SA}/{EMAIL}:getIamPolicy"),
            json!({"options": {"requestedPolicyVersion": 1}}),
        )
        .await;
    assert_eq!(
        read.ok()["bindings"][1]["condition"]["title"],
        "expirable",
        "conditions are never silently dropped"
    );

    // Without an etag: an unconditional overwrite.
    let cleared = set_policy(&api, json!({"bindings": []})).await.ok().clone();
    assert!(cleared.get("bindings").is_none());
    assert_ne!(cleared["etag"], second["etag"]);
}

#[tokio::test]
async fn invalid_policies_are_refused_and_change_nothing() {
    let (_dir, _server, api) = setup().await;
    api.create_account("proj-a", "robot-one").await;
    let before = get_policy(&api, "").await;
    let cases = [
        (
            json!({"bindings": [{"role": "roles/iam.bogus", "members": ["user:a@example.com"]}]}),
            "roles/iam.bogus",
        ),
        (
            json!({"bindings": [{"role": "roles/viewer", "members": ["alice@example.com"]}]}),
            "alice@example.com",
        ),
        (
            json!({"bindings": [{"role": "roles/viewer", "members": ["serviceAccount:proj-a.svc.id.goog[ns1]"]}]}),
            "ns1",
        ),
        (json!({"version": 2, "bindings": []}), "version"),
        (
            json!({"version": 1, "bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"], "condition": {"expression": "true"}}]}),
            "version 3",
        ),
        (
            json!({"bindings": [{"role": "roles/viewer", "members": "user:a@example.com"}]}),
            "members",
        ),
        (json!({"bindings": [], "bogus": 1}), "bogus"),
    ];
    for (policy, needle) in cases {
        let answer = set_policy(&api, policy.clone()).await;
        let message = answer.expect_error(400, "INVALID_ARGUMENT");
        assert!(message.contains(needle), "{policy}: {message}");
    }
    api.post(&format!("{SA}/{EMAIL}:setIamPolicy"), json!({}))
        .await
        .expect_error(400, "INVALID_ARGUMENT");
    api.send(
        "POST",
        &format!("{SA}/{EMAIL}:getIamPolicy?options.requestedPolicyVersion=2"),
        None,
    )
    .await
    .expect_error(400, "INVALID_ARGUMENT");
    assert_eq!(get_policy(&api, "").await, before);
}

#[tokio::test]
async fn member_forms_are_accepted() {
    let (_dir, _server, api) = setup().await;
    api.create_account("proj-a", "robot-one").await;
    let pool = "projects/111111111111/locations/global/workloadIdentityPools";
    let members = [
        "user:alice@example.com".to_owned(),
        "group:admins@example.com".to_owned(),
        "domain:example.com".to_owned(),
        "serviceAccount:other@proj-a.iam.gserviceaccount.com".to_owned(),
        "serviceAccount:proj-a.svc.id.goog[ns1/ksa1]".to_owned(),
        "serviceAccount:proj-a.svc.id.goog[us-east1/prod/ns1/ksa1]".to_owned(),
        format!("principal://iam.googleapis.com/{pool}/proj-a.svc.id.goog/subject/ns/ns1/sa/ksa1"),
        format!("principalSet://iam.googleapis.com/{pool}/proj-a.svc.id.goog/namespace/ns1"),
        format!(
            "principalSet://iam.googleapis.com/{pool}/proj-a.svc.id.goog/kubernetes.cluster/https://container.googleapis.com/v1/projects/proj-a/locations/l/clusters/c"
        ),
        format!("principal://iam.googleapis.com/{pool}/pool-one/subject/some-subject"),
        format!("principalSet://iam.googleapis.com/{pool}/pool-one/group/g1"),
        format!("principalSet://iam.googleapis.com/{pool}/pool-one/attribute.env/prod"),
        format!("principalSet://iam.googleapis.com/{pool}/pool-one/*"),
        "allAuthenticatedUsers".to_owned(),
    ];
    let set = set_policy(
        &api,
        json!({"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": members}]}),
    )
    .await;
    assert_eq!(
        set.ok()["bindings"][0]["members"].as_array().map(Vec::len),
        Some(members.len())
    );
}

#[tokio::test]
async fn test_iam_permissions() {
    let (_dir, _server, api) = setup().await;
    api.create_account("proj-a", "robot-one").await;
    let path = format!("{SA}/{EMAIL}:testIamPermissions");
    let asked =
        json!({"permissions": ["iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.actAs"]});
    assert_eq!(
        api.post(&path, asked.clone()).await.ok(),
        &asked,
        "the bootstrap admin holds everything"
    );
    api.post(&path, json!({"permissions": ["iam.serviceAccounts.*"]}))
        .await
        .expect_error(400, "INVALID_ARGUMENT");
    api.post(&path, json!({"permissions": ["bogus.permission"]}))
        .await
        .expect_error(400, "INVALID_ARGUMENT");
    // A well-formed permission wid does not know is simply not granted.
    let mixed = json!({"permissions": ["iam.roles.list", "iam.serviceAccounts.get"]});
    assert_eq!(
        api.post(&path, mixed).await.ok(),
        &json!({"permissions": ["iam.serviceAccounts.get"]})
    );
}

#[tokio::test]
async fn java_client_conventions_method_override_and_gzip() {
    let (_dir, _server, api) = setup().await;
    api.create_account("proj-a", "robot-one").await;
    let gzip = |value: serde_json::Value| {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(value.to_string().as_bytes())
            .expect("gzip");
        encoder.finish().expect("gzip")
    };
    // POST + X-HTTP-Method-Override: PATCH, with a gzip body, as Google's Java clients send it.
    let response = api
        .http
        .post(format!("{}{SA}/{EMAIL}", api.base))
        .bearer_auth(api.token.as_deref().unwrap_or_default())
        .header("x-http-method-override", "PATCH")
        .header("content-type", "application/json; charset=UTF-8")
        .header("content-encoding", "gzip")
        .body(gzip(
            json!({"serviceAccount": {"description": "zipped"}, "updateMask": "description"}),
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        api.get(&format!("{SA}/{EMAIL}")).await.ok()["description"],
        "zipped"
    );
    // A gzip create.
    let response = api
        .http
        .post(format!("{}{SA}", api.base))
        .bearer_auth(api.token.as_deref().unwrap_or_default())
        .header("content-encoding", "gzip")
        .body(gzip(json!({"accountId": "robot-two"})))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
    // A body that claims gzip and is not, or another encoding: 400, nothing changes.
    for (encoding, body) in [("gzip", b"not gzip".to_vec()), ("br", b"{}".to_vec())] {
        let response = api
            .http
            .post(format!("{}{SA}", api.base))
            .bearer_auth(api.token.as_deref().unwrap_or_default())
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 400, "{encoding}");
    }
    // A gzip bomb is cut at the limit.
    let bomb = gzip(json!({"accountId": "x".repeat(4 * 1024 * 1024)}));
    let response = api
        .http
        .post(format!("{}{SA}", api.base))
        .bearer_auth(api.token.as_deref().unwrap_or_default())
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        api.get(SA).await.ok()["accounts"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn deleting_an_account_retires_its_grants() {
    let (_dir, _server, api) = setup().await;
    api.create_account("proj-a", "robot-one").await;
    let doomed = api.create_account("proj-a", "doomed-sa").await;
    let doomed_email = "doomed-sa@proj-a.iam.gserviceaccount.com";
    set_policy(
        &api,
        json!({"bindings": [{"role": "roles/iam.serviceAccountTokenCreator", "members": [format!("serviceAccount:{doomed_email}")]}]}),
    )
    .await
    .ok();
    api.call("DELETE", &format!("{SA}/{doomed_email}"), None)
        .await
        .ok();
    let policy = get_policy(&api, "").await;
    let expected = format!(
        "deleted:serviceAccount:{doomed_email}?uid={}",
        doomed["uniqueId"].as_str().expect("uid")
    );
    assert_eq!(policy["bindings"][0]["members"][0], expected.as_str());
    // A new account with the old email inherits nothing; the deleted form stays valid in policies.
    api.create_account("proj-a", "doomed-sa").await;
    let round_trip = set_policy(&api, policy.clone()).await;
    assert_eq!(
        round_trip.ok()["bindings"][0]["members"][0],
        expected.as_str()
    );
}

#[tokio::test]
async fn concurrent_creates_all_succeed() {
    let (_dir, _server, api) = setup().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.post(SA, json!({"accountId": format!("robot-{i:03}")}))
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    assert_eq!(
        api.get(SA).await.ok()["accounts"].as_array().map(Vec::len),
        Some(24)
    );
}

#[tokio::test]
async fn nothing_is_open() {
    let (_dir, server, api) = setup().await;
    for (method, path) in [
        ("GET", SA.to_owned()),
        ("POST", SA.to_owned()),
        ("GET", "/v1/projects".to_owned()),
    ] {
        let missing = api
            .without_token()
            .call(method, &path, Some(json!({"accountId": "robot-two"})))
            .await;
        missing.expect_error(401, "UNAUTHENTICATED");
        assert!(missing.headers.contains_key("www-authenticate"));
        api.with_token("not-the-token")
            .call(method, &path, Some(json!({"accountId": "robot-two"})))
            .await
            .expect_error(401, "UNAUTHENTICATED");
    }
    assert_eq!(api.get(SA).await.ok(), &json!({}), "nothing was created");
    // Only the health check answers without credentials.
    assert_eq!(
        api.without_token().get("/healthz").await.ok()["status"],
        "ok"
    );
    // The token file is private, and the token never reaches the log.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.token_file())
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mode = std::fs::metadata(&server.data_dir)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    assert!(
        !server.log().contains(&server.token()),
        "the admin token appears in the log"
    );
}

/// method, path, body, expected HTTP status, expected rpc status.
type BadRequest = (&'static str, String, Option<Vec<u8>>, u16, &'static str);

#[tokio::test]
async fn bad_input_gets_google_errors_and_changes_nothing() {
    let (_dir, server, api) = setup().await;
    let cases: Vec<BadRequest> = vec![
        (
            "POST",
            SA.into(),
            Some(b"{not json".to_vec()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            SA.into(),
            Some(br#"{"accountId": 5}"#.to_vec()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            SA.into(),
            Some(br#"{"accountId": "robot-two", "bogusField": 1}"#.to_vec()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            SA.into(),
            Some(
                br#"{"accountId": "robot-two", "serviceAccount": {"displayName": ["x"]}}"#.to_vec(),
            ),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            SA.into(),
            Some(br#"["array"]"#.to_vec()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            SA.into(),
            Some(vec![b' '; 2 * 1024 * 1024]),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            SA.into(),
            Some(vec![0xff, 0xfe, 0x00]),
            400,
            "INVALID_ARGUMENT",
        ),
        ("DELETE", SA.into(), None, 405, "UNIMPLEMENTED"),
        ("PUT", "/v1/projects".into(), None, 405, "UNIMPLEMENTED"),
        (
            "GET",
            format!("{SA}/x:getIamPolicy"),
            None,
            405,
            "UNIMPLEMENTED",
        ),
        ("GET", "/v1/nothing/here".into(), None, 404, "NOT_FOUND"),
        ("GET", "/v2/projects".into(), None, 404, "NOT_FOUND"),
        ("POST", format!("{SA}/x:explode"), None, 404, "NOT_FOUND"),
        (
            "GET",
            "/v1/projects/proj-a/serviceAccounts/%FF%FE".into(),
            None,
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            "/v1/projects".into(),
            Some(br#"{"projectId": "Bad_Id"}"#.to_vec()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/projects".into(),
            Some(br#"{"projectId": "proj-c", "projectNumber": "12x"}"#.to_vec()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            "/v1/projects".into(),
            Some(br#"{"projectId": "proj-a"}"#.to_vec()),
            409,
            "ALREADY_EXISTS",
        ),
    ];
    for (method, path, body, code, status) in cases {
        eprintln!(
            "case: {method} {path} ({} body bytes)",
            body.as_ref().map_or(0, Vec::len)
        );
        let answer = api.send(method, &path, body).await;
        assert!(
            answer
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json")),
            "{method} {path}: {answer:?}"
        );
        answer.expect_error(code, status);
        if code == 400 && path == SA {
            assert!(
                answer.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.len() > 10)
            );
        }
    }
    // The bad field is named.
    let answer = api
        .send(
            "POST",
            SA,
            Some(br#"{"accountId": "robot-two", "serviceAccount": {"displayName": 7}}"#.to_vec()),
        )
        .await;
    assert!(
        answer
            .expect_error(400, "INVALID_ARGUMENT")
            .contains("serviceAccount.displayName")
    );
    let answer = api
        .send(
            "POST",
            SA,
            Some(br#"{"accountId": "robot-two", "bogusField": 1}"#.to_vec()),
        )
        .await;
    assert!(
        answer
            .expect_error(400, "INVALID_ARGUMENT")
            .contains("bogusField")
    );
    let answer = api.send("DELETE", SA, None).await;
    assert_eq!(
        answer.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );

    assert_eq!(
        api.get(SA).await.ok(),
        &json!({}),
        "no refused request created anything"
    );
    assert_eq!(
        api.get("/v1/projects").await.ok()["projects"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // Still serving, never panicked.
    assert_eq!(api.get("/healthz").await.ok()["status"], "ok");
    assert!(!server.log().contains("panicked"));
}
