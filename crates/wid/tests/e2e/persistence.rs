//! Durability and concurrency: restarts, kill -9, and concurrent read-modify-writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::Server;
use serde_json::json;
use tokio::sync::Mutex;

const EMAIL: &str = "robot-one@proj-a.iam.gserviceaccount.com";

#[tokio::test]
async fn state_survives_a_clean_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let api = server.api();
    let token = server.token();
    api.create_project("proj-a", "111111111111").await;
    let sa = api.create_account("proj-a", "robot-one").await;
    let policy = api
        .post(
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:setIamPolicy"),
            json!({"policy": {"bindings": [{"role": "roles/iam.workloadIdentityUser", "members": ["serviceAccount:proj-a.svc.id.goog[ns1/ksa1]"]}]}}),
        )
        .await
        .ok()
        .clone();
    server.stop();

    let server = Server::start(&data);
    assert_eq!(
        server.token(),
        token,
        "the bootstrap token is kept across restarts"
    );
    let api = server.api();
    assert_eq!(
        api.get(&format!("/v1/projects/-/serviceAccounts/{EMAIL}"))
            .await
            .ok(),
        &sa
    );
    let read = api
        .send(
            "POST",
            &format!("/v1/projects/-/serviceAccounts/{EMAIL}:getIamPolicy"),
            None,
        )
        .await;
    assert_eq!(read.ok(), &policy);
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;

    // Four writers create accounts as fast as they can; each remembers what was acknowledged.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (api, acknowledged, stop) = (api.clone(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("writer-{w}-{i:05}");
                let request = api
                    .http
                    .post(format!("{}/v1/projects/proj-a/serviceAccounts", api.base));
                let sent = request
                    .bearer_auth(api.token.as_deref().unwrap_or_default())
                    .json(&json!({"accountId": id}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 200 => acknowledged.lock().await.push(id),
                    // The process was killed under the request: not acknowledged.
                    _ => break,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acknowledged.lock().await.len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers made no progress"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }

    let server = Server::start(&data);
    let api = server.api();
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .get(&format!(
                "/v1/projects/proj-a/serviceAccounts?pageSize=100&pageToken={token}"
            ))
            .await;
        for a in page.ok()["accounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            listed.push(a["email"].as_str().unwrap_or_default().to_owned());
        }
        match page.body["nextPageToken"].as_str() {
            Some(t) => token = t.to_owned(),
            None => break,
        }
    }
    let acknowledged = acknowledged.lock().await;
    for id in acknowledged.iter() {
        let email = format!("{id}@proj-a.iam.gserviceaccount.com");
        assert!(
            listed.contains(&email),
            "acknowledged {email} was lost by kill -9"
        );
    }
    assert!(acknowledged.len() >= 40);
}

#[tokio::test]
async fn concurrent_set_iam_policy_loses_no_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let api = server.api();
    api.create_project("proj-a", "111111111111").await;
    api.create_account("proj-a", "robot-one").await;
    let base = format!("/v1/projects/proj-a/serviceAccounts/{EMAIL}");

    // Eight clients each add their own member by read-modify-write, retrying on ABORTED as
    // Google tells clients to.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (api, base) = (api.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let member = format!("serviceAccount:proj-a.svc.id.goog[ns{n}/ksa{n}]");
            let mut conflicts = 0;
            for _ in 0..200 {
                let mut policy = api
                    .send("POST", &format!("{base}:getIamPolicy"), None)
                    .await
                    .ok()
                    .clone();
                let mut bindings = policy["bindings"].as_array().cloned().unwrap_or_default();
                match bindings
                    .iter_mut()
                    .find(|b| b["role"] == "roles/iam.workloadIdentityUser")
                {
                    Some(b) => b["members"]
                        .as_array_mut()
                        .expect("members")
                        .push(json!(member)),
                    None => bindings.push(
                        json!({"role": "roles/iam.workloadIdentityUser", "members": [member]}),
                    ),
                }
                policy["bindings"] = json!(bindings);
                let answer = api
                    .post(&format!("{base}:setIamPolicy"), json!({"policy": policy}))
                    .await;
                match answer.status {
                    200 => return conflicts,
                    409 => {
                        answer.expect_error(409, "ABORTED");
                        conflicts += 1;
                    }
                    other => panic!("unexpected {other}: {answer:?}"),
                }
            }
            panic!("client {n} never got its update in");
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.expect("client");
    }
    let policy = api
        .send("POST", &format!("{base}:getIamPolicy"), None)
        .await
        .ok()
        .clone();
    let members = policy["bindings"][0]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        members.len(),
        8,
        "an update was lost: {policy} ({conflicts} conflicts seen)"
    );
}

#[test]
fn an_open_data_directory_or_an_empty_token_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = || {
        std::process::Command::new(crate::support::WID)
            .args(["iam", "serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .output()
            .expect("run")
    };
    let out = run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("accessible by group or others"));
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let token = data.join("admin-token");
    std::fs::write(&token, "").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("delete it"));
}

/// Files a user made beforehand in the data directory, with the right modes and a token they
/// know, are refused by a service of another user (root here): the token would be theirs.
#[test]
fn a_data_directory_of_another_owner_is_refused() {
    use std::os::unix::fs::{PermissionsExt, chown};
    if !crate::support::running_as_root() {
        eprintln!("skipped: making files of another user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let token = data.join("admin-token");
    crate::support::write_as_nobody(&token, "known-to-nobody-".repeat(4).as_bytes());
    chown(
        &data,
        Some(crate::support::NOBODY),
        Some(crate::support::NOBODY),
    )
    .expect("chown");
    let serve = || {
        let mut command = std::process::Command::new(crate::support::WID);
        command
            .args(["iam", "serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data);
        crate::support::run_refused(&mut command)
    };
    // `wid dev` runs the same token service on its data directory.
    let mut dev = std::process::Command::new(crate::support::WID);
    dev.arg("dev").arg("--data-dir").arg(&data).args([
        "--iam-addr",
        "127.0.0.1:0",
        "--metadata-addr",
        "127.0.0.1:0",
    ]);
    let (ok, stderr) = crate::support::run_refused(&mut dev);
    assert!(!ok && stderr.contains("owned by uid 65534"), "{stderr}");
    for refused in [&data, &token] {
        let (ok, stderr) = serve();
        assert!(!ok, "{stderr}");
        for part in [
            refused.display().to_string().as_str(),
            "owned by uid 65534",
            "runs as uid 0",
            "chown",
        ] {
            assert!(stderr.contains(part), "{part:?} not in {stderr}");
        }
        assert!(!stderr.contains("listening"), "{stderr}");
        // Then the token alone.
        chown(&data, Some(0), Some(0)).expect("chown");
    }
    // SQLite's journal is replayed when the database opens: one of another owner is refused too.
    chown(&token, Some(0), Some(0)).expect("chown");
    crate::support::write_as_nobody(&data.join("wid.db-wal"), b"");
    let (ok, stderr) = serve();
    assert!(
        !ok && stderr.contains("wid.db-wal") && stderr.contains("owned by uid 65534"),
        "{stderr}"
    );
}

/// `--admin-token-file`: the bootstrap secret is made there (0600) on first start, read from
/// there after, and is the only one accepted (none is written to the data directory).
#[tokio::test]
async fn the_admin_secret_lives_where_admin_token_file_says() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).expect("mkdir");
    let token_file = secret.join("token");
    let flag = token_file.to_str().expect("path");
    let server = Server::start_with(&data, &["--admin-token-file", flag]);
    let token = std::fs::read_to_string(&token_file).expect("made on first start");
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!data.join("admin-token").exists());
    let mut api = server.api_with_token(token.trim());
    api.create_project("proj-a", "100000000001").await;
    server.stop();
    // As a Kubernetes Secret mounts it for a pod with fsGroup: root's, of the group, 0440 (this
    // test runs as root in CI: root's group is the process's).
    if crate::support::running_as_root() {
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o440))
            .expect("chmod");
    }
    let server = Server::start_with(&data, &["--admin-token-file", flag]);
    assert_eq!(
        std::fs::read_to_string(&token_file).expect("read"),
        token,
        "read again, not made anew"
    );
    api.base = server.base();
    api.get("/v1/projects/proj-a").await.ok();
    api.token = Some("not-the-secret".into());
    api.get("/v1/projects/proj-a")
        .await
        .expect_error(401, "UNAUTHENTICATED");
}

#[test]
fn a_database_other_than_postgresql_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stderr) = crate::support::run_refused(
        std::process::Command::new(crate::support::WID)
            .args(["iam", "serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--database", "mysql://root@localhost/wid"]),
    );
    assert!(!ok);
    assert!(
        stderr.contains("--database takes a PostgreSQL URL"),
        "{stderr}"
    );
}
