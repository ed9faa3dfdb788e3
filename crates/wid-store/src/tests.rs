//! The store's contract, run against every database the store speaks: SQLite in a temporary
//! directory, and PostgreSQL in a database of its own on the server the test command starts
//! (`WID_TEST_DATABASE_URL`, scripts/postgres.sh).

use super::*;

/// Runs each contract test against SQLite and against PostgreSQL.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::sqlite().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(store) = super::postgres().await {
                        super::$name(store).await;
                    }
                }
            )*
        }
    };
}

contract!(
    projects_are_unique_by_id_and_number,
    unique_ids_are_never_reused,
    policy_compare_and_swap,
    concurrent_compare_and_swap_has_one_winner,
    concurrent_creates_all_succeed,
    discovered_keys_follow_the_current_issuer,
    pool_updates_compare_and_swap_on_version,
    signing_key_rotation,
    audit_is_newest_first,
    every_presenter_of_a_uid_is_kept_until_its_cluster_goes,
    audit_records_expire_by_time,
    writes_invalidate_cached_reads,
    corrupt_json_columns_are_refused,
    account_keys_belong_to_their_account_and_go_with_it,
    key_policy_is_per_project,
);

async fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_sqlite(&dir.path().join("wid.db"))
        .await
        .expect("open");
    (dir, store)
}

/// A store on a new database of the test server; none where there is no server (outside CI,
/// where the tests say they are skipped).
async fn postgres() -> Option<Store> {
    let url = test_database().await?;
    Some(Store::open_postgres(&url).await.expect("open"))
}

/// A new, empty database on the test server: its URL.
pub(crate) async fn test_database() -> Option<String> {
    let Ok(base) = std::env::var("WID_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "WID_TEST_DATABASE_URL is not set: scripts/test.sh starts PostgreSQL and sets it"
        );
        eprintln!(
            "SKIPPED: no PostgreSQL (WID_TEST_DATABASE_URL); the PostgreSQL half did not run"
        );
        return None;
    };
    db::install_drivers();
    let name = format!("wid_test_{}", wid_runtime::secrets::random_hex::<8>());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("the test server");
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("create a database");
    let (address, query) = base.split_once('?').unwrap_or((&base, ""));
    let (server, _) = address.rsplit_once('/').expect("a URL with a database");
    Some(format!("{server}/{name}?{query}"))
}

fn project_row(id: &str, number: &str) -> ProjectRow {
    ProjectRow {
        project_id: id.into(),
        project_number: number.into(),
        display_name: id.into(),
        create_time: "2026-01-01T00:00:00Z".into(),
        allow_service_account_keys: false,
        key_max_lifetime_seconds: 0,
    }
}

fn sa_row(unique_id: &str, email: &str) -> ServiceAccountRow {
    ServiceAccountRow {
        unique_id: unique_id.into(),
        project_id: "proj-a".into(),
        account_id: "acct".into(),
        email: email.into(),
        display_name: String::new(),
        description: String::new(),
        disabled: false,
        etag: "e1".into(),
        create_time: "2026-01-01T00:00:00Z".into(),
    }
}

async fn projects_are_unique_by_id_and_number(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("create");
    assert!(matches!(
        s.create_project(&project_row("proj-a", "101")).await,
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        s.create_project(&project_row("proj-b", "100")).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(
        s.get_project("100").await.expect("by number").project_id,
        "proj-a"
    );
    assert_eq!(
        s.get_project("proj-a").await.expect("by id").project_number,
        "100"
    );
    assert!(matches!(
        s.get_project("nope").await,
        Err(StoreError::NotFound)
    ));
}

async fn unique_ids_are_never_reused(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    s.create_service_account(&sa_row("1", "a@x"))
        .await
        .expect("create");
    assert!(matches!(
        s.create_service_account(&sa_row("2", "a@x")).await,
        Err(StoreError::AlreadyExists)
    ));
    s.delete_service_account("1").await.expect("delete");
    assert!(matches!(
        s.create_service_account(&sa_row("1", "b@x")).await,
        Err(StoreError::AlreadyExists)
    ));
    s.create_service_account(&sa_row("3", "a@x"))
        .await
        .expect("email is free again");
}

fn key_row(key_id: &str, account: &str, valid_after: i64) -> AccountKeyRow {
    AccountKeyRow {
        key_id: key_id.into(),
        account_unique_id: account.into(),
        certificate_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        public_key_sha256: format!("sha-of-{key_id}"),
        key_origin: "GOOGLE_PROVIDED".into(),
        key_algorithm: "KEY_ALG_RSA_2048".into(),
        valid_after,
        valid_before: valid_after + 86_400,
        disabled: false,
        last_used: None,
    }
}

async fn account_keys_belong_to_their_account_and_go_with_it(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    for (id, email) in [("1", "a@x"), ("2", "b@x")] {
        s.create_service_account(&sa_row(id, email))
            .await
            .expect("account");
    }
    // Beyond 2038 and before 1970: 64-bit seconds in both dialects.
    let (k1, k2) = (key_row("k1", "1", 4_102_444_800), key_row("k2", "1", -1));
    s.create_account_key(&k1).await.expect("k1");
    s.create_account_key(&k2).await.expect("k2");
    assert!(matches!(
        s.create_account_key(&key_row("k1", "2", 0)).await,
        Err(StoreError::AlreadyExists)
    ));
    let same_public_key = AccountKeyRow {
        public_key_sha256: k1.public_key_sha256.clone(),
        ..key_row("k3", "2", 0)
    };
    assert!(
        matches!(
            s.create_account_key(&same_public_key).await,
            Err(StoreError::AlreadyExists)
        ),
        "one public key is one account's"
    );
    assert_eq!(
        s.list_account_keys("1").await.expect("list"),
        vec![k2.clone(), k1.clone()]
    );
    assert!(matches!(
        s.get_account_key("2", "k1").await,
        Err(StoreError::NotFound)
    ));
    s.set_account_key_disabled("1", "k1", true)
        .await
        .expect("disable");
    assert!(s.get_account_key("1", "k1").await.expect("get").disabled);
    assert!(matches!(
        s.set_account_key_disabled("2", "k1", true).await,
        Err(StoreError::NotFound)
    ));
    s.delete_account_key("1", "k2").await.expect("delete");
    assert!(matches!(
        s.delete_account_key("1", "k2").await,
        Err(StoreError::NotFound)
    ));
    s.delete_service_account("1").await.expect("delete account");
    assert_eq!(s.list_account_keys("1").await.expect("list"), vec![]);
}

async fn key_policy_is_per_project(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("a");
    s.create_project(&project_row("proj-b", "200"))
        .await
        .expect("b");
    let a = s.get_project("proj-a").await.expect("cached read");
    assert!(!a.allow_service_account_keys && a.key_max_lifetime_seconds == 0);
    s.set_key_policy("proj-a", true, 90 * 86_400)
        .await
        .expect("allow");
    let a = s.get_project("proj-a").await.expect("read again");
    assert!(a.allow_service_account_keys);
    assert_eq!(a.key_max_lifetime_seconds, 90 * 86_400);
    assert!(
        !s.get_project("proj-b")
            .await
            .expect("b")
            .allow_service_account_keys
    );
    assert!(matches!(
        s.set_key_policy("proj-c", true, 1).await,
        Err(StoreError::NotFound)
    ));
}

async fn policy_compare_and_swap(s: Store) {
    let p = |etag: &str| PolicyRow {
        etag: etag.into(),
        policy_json: "{}".into(),
    };
    assert_eq!(s.get_policy("sa/1").await.expect("get"), None);
    s.set_policy("sa/1", Some(NO_POLICY_ETAG), &p("e1"))
        .await
        .expect("first set");
    assert!(matches!(
        s.set_policy("sa/1", Some(NO_POLICY_ETAG), &p("e2")).await,
        Err(StoreError::Aborted)
    ));
    assert!(matches!(
        s.set_policy("sa/1", Some("stale"), &p("e2")).await,
        Err(StoreError::Aborted)
    ));
    s.set_policy("sa/1", Some("e1"), &p("e2"))
        .await
        .expect("fresh etag");
    s.set_policy("sa/1", None, &p("e3"))
        .await
        .expect("unconditional");
    assert_eq!(
        s.get_policy("sa/1").await.expect("get").map(|r| r.etag),
        Some("e3".into())
    );
}

async fn concurrent_compare_and_swap_has_one_winner(s: Store) {
    s.set_policy(
        "sa/1",
        None,
        &PolicyRow {
            etag: "e0".into(),
            policy_json: "{}".into(),
        },
    )
    .await
    .expect("seed");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.set_policy(
                "sa/1",
                Some("e0"),
                &PolicyRow {
                    etag: format!("w{i}"),
                    policy_json: "{}".into(),
                },
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(()) => wins += 1,
            Err(StoreError::Aborted) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn writes_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wid.db");
    {
        let s = Store::open_sqlite(&path).await.expect("open");
        s.create_project(&project_row("proj-a", "100"))
            .await
            .expect("create");
        s.close().await;
    }
    let s = Store::open_sqlite(&path)
        .await
        .expect("reopen runs migrations again harmlessly");
    assert_eq!(s.list_projects().await.expect("list").len(), 1);
}

async fn concurrent_creates_all_succeed(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_service_account(&sa_row(&i.to_string(), &format!("sa{i}@x")))
                .await
        }));
    }
    for t in tasks {
        t.await
            .expect("join")
            .expect("every concurrent create succeeds");
    }
    assert_eq!(
        s.list_service_accounts("proj-a").await.expect("list").len(),
        24
    );
}

async fn discovered_keys_follow_the_current_issuer(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    let row = ClusterRow {
        project_id: "proj-a".into(),
        location: "l".into(),
        name: "c".into(),
        uid: "u".into(),
        issuer_uri: "https://new.example.com".into(),
        jwks_json: None,
        discovered_jwks_json: None,
        jwks_fetch_time: None,
        isolated: false,
        create_time: "t".into(),
    };
    s.create_cluster(&row).await.expect("cluster");
    let owner = KeySetOwner::Cluster {
        project_id: "proj-a".into(),
        location: "l".into(),
        name: "c".into(),
    };
    assert!(matches!(
        s.set_discovered_jwks(&owner, "https://old.example.com", "{}", "t")
            .await,
        Err(StoreError::NotFound)
    ));
    s.set_discovered_jwks(&owner, "https://new.example.com", "{\"keys\":[]}", "t")
        .await
        .expect("current issuer");
    assert_eq!(
        s.get_cluster("proj-a", "l", "c")
            .await
            .expect("get")
            .discovered_jwks_json
            .as_deref(),
        Some("{\"keys\":[]}")
    );
}

async fn pool_updates_compare_and_swap_on_version(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    let pool = PoolRow {
        project_number: "100".into(),
        pool_id: "pool".into(),
        display_name: String::new(),
        description: String::new(),
        disabled: false,
        create_time: "t".into(),
        version: 0,
    };
    s.create_pool(&pool).await.expect("create");
    let mut first = s.get_pool("100", "pool").await.expect("get");
    let mut second = first.clone();
    first.description = "first".into();
    second.description = "second".into();
    s.update_pool(&first).await.expect("first writer wins");
    assert!(matches!(
        s.update_pool(&second).await,
        Err(StoreError::Aborted)
    ));
    let stored = s.get_pool("100", "pool").await.expect("get");
    assert_eq!((stored.description.as_str(), stored.version), ("first", 1));
}

async fn signing_key_rotation(s: Store) {
    let key = |kid: &str| SigningKeyRow {
        kid: kid.into(),
        purpose: "access_token".into(),
        algorithm: "ES256".into(),
        private_pkcs8: vec![1, 2, 3],
        create_time: 100,
        rotate_time: None,
        retire_time: None,
    };
    s.insert_signing_key(&key("k1")).await.expect("first");
    assert!(
        matches!(
            s.insert_signing_key(&key("k2")).await,
            Err(StoreError::AlreadyExists)
        ),
        "one active key"
    );
    s.rotate_signing_key(&key("k2"), 200, 300)
        .await
        .expect("rotate");
    let keys = s.list_signing_keys().await.expect("list");
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys.iter()
            .find(|k| k.kid == "k1")
            .map(|k| (k.rotate_time, k.retire_time)),
        Some((Some(200), Some(300)))
    );
    assert_eq!(
        s.delete_retired_signing_keys(299).await.expect("none yet"),
        0
    );
    assert_eq!(s.delete_retired_signing_keys(300).await.expect("retire"), 1);
    assert_eq!(s.list_signing_keys().await.expect("list").len(), 1);
}

async fn audit_is_newest_first(s: Store) {
    for i in 0..5 {
        s.append_audit_batch(&[AuditRow {
            action: format!("a{i}"),
            ..AuditRow::default()
        }])
        .await
        .expect("append");
    }
    let rows = s.list_audit(2).await.expect("list");
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["a4", "a3"]
    );
}

async fn every_presenter_of_a_uid_is_kept_until_its_cluster_goes(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    let cluster = |name: &str, uid: &str| ClusterRow {
        project_id: "proj-a".into(),
        location: "l".into(),
        name: name.into(),
        uid: uid.into(),
        issuer_uri: format!("https://{name}.example.com"),
        jwks_json: Some("{}".into()),
        discovered_jwks_json: None,
        jwks_fetch_time: None,
        isolated: false,
        create_time: "t".into(),
    };
    s.create_cluster(&cluster("a", "cluster-a"))
        .await
        .expect("a");
    s.create_cluster(&cluster("b", "cluster-b"))
        .await
        .expect("b");
    let presenter = |cluster_uid: &str, ns: &str| KsaUidRow {
        project_id: "proj-a".into(),
        uid: "U".into(),
        cluster_uid: cluster_uid.into(),
        namespace: ns.into(),
        name: "ksa".into(),
        first_seen: "t".into(),
    };
    let cached = s.clone();
    let first = presenter("cluster-a", "ns1");
    assert_eq!(
        cached
            .present_service_account_uid(&first)
            .await
            .expect("first"),
        vec![first.clone()]
    );
    // The same presenter again: one presenter still, through the cache and without it.
    assert_eq!(
        cached
            .present_service_account_uid(&first)
            .await
            .expect("again"),
        vec![first.clone()]
    );
    // Another cluster, or another name: two presenters, whoever asks.
    let other = presenter("cluster-b", "ns1");
    assert_eq!(
        cached
            .present_service_account_uid(&other)
            .await
            .expect("other")
            .len(),
        2
    );
    assert_eq!(
        cached
            .present_service_account_uid(&first)
            .await
            .expect("first again")
            .len(),
        2,
        "the cache does not hide the second presenter"
    );
    assert_eq!(
        s.present_service_account_uid(&presenter("cluster-a", "ns2"))
            .await
            .expect("name")
            .len(),
        3
    );
    // Presentations go with their cluster, through the cache too.
    cached
        .delete_cluster("proj-a", "l", "b")
        .await
        .expect("delete");
    s.delete_cluster("proj-a", "l", "a").await.expect("delete");
    let cached = s.clone();
    assert_eq!(
        cached
            .present_service_account_uid(&other)
            .await
            .expect("alone"),
        vec![other.clone()]
    );
}

async fn audit_records_expire_by_time(s: Store) {
    for (i, time) in [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]
    .into_iter()
    .enumerate()
    {
        s.append_audit_batch(&[AuditRow {
            time: time.into(),
            action: format!("a{i}"),
            reason: "r".repeat(i),
            ..AuditRow::default()
        }])
        .await
        .expect("append");
    }
    let size = s.audit_size().await.expect("size");
    // The store counts what it holds as `AuditSize::of` counts rows.
    let listed = s.list_audit(10).await.expect("list");
    assert_eq!(size, AuditSize::of(&listed));
    assert_eq!(size.records, 3);
    // Each record: a 20-byte time, a 2-byte action, and reasons of 0, 1 and 2 bytes.
    assert_eq!(size.bytes, 3 * 20 + 3 * 2 + 3);
    assert_eq!(
        s.delete_audit_before("2026-01-02T00:00:00Z")
            .await
            .expect("expire"),
        AuditSize {
            records: 1,
            bytes: 20 + 2
        }
    );
    let left: Vec<String> = s
        .list_audit(10)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(left, ["a2", "a1"]);
    assert_eq!(s.audit_size().await.expect("size").records, 2);
}

async fn writes_invalidate_cached_reads(store: Store) {
    assert_eq!(store.get_policy("sa/1").await.expect("get"), None);
    let row = PolicyRow {
        etag: "e1".into(),
        policy_json: "{}".into(),
    };
    store.set_policy("sa/1", None, &row).await.expect("set");
    assert_eq!(
        store.get_policy("sa/1").await.expect("get"),
        Some(row.clone()),
        "the cached miss was dropped"
    );
    let next = PolicyRow {
        etag: "e2".into(),
        policy_json: "{}".into(),
    };
    store
        .set_policy("sa/1", Some("e1"), &next)
        .await
        .expect("set");
    assert_eq!(store.get_policy("sa/1").await.expect("get"), Some(next));
}

/// What is stored as JSON reads back typed; a corrupt value is an error, not an empty one.
async fn corrupt_json_columns_are_refused(s: Store) {
    s.create_project(&project_row("proj-a", "100"))
        .await
        .expect("project");
    s.create_pool(&PoolRow {
        project_number: "100".into(),
        pool_id: "p".into(),
        display_name: String::new(),
        description: String::new(),
        disabled: false,
        create_time: "t".into(),
        version: 0,
    })
    .await
    .expect("pool");
    let provider = ProviderRow {
        project_number: "100".into(),
        pool_id: "p".into(),
        provider_id: "x".into(),
        display_name: String::new(),
        description: String::new(),
        disabled: false,
        attribute_mapping: [("google.subject".to_owned(), "assertion.sub".to_owned())].into(),
        attribute_condition: String::new(),
        issuer_uri: "https://issuer.example.com".into(),
        allowed_audiences: vec!["aud".into()],
        jwks_json: Some("{}".into()),
        discovered_jwks_json: None,
        jwks_fetch_time: None,
        create_time: "t".into(),
        version: 0,
    };
    s.create_provider(&provider).await.expect("provider");
    assert_eq!(
        s.get_provider("100", "p", "x").await.expect("read"),
        provider
    );
    sqlx::query("UPDATE workload_identity_pool_providers SET allowed_audiences_json = '[1'")
        .execute(&s.db.pool)
        .await
        .expect("corrupt it");
    s.cache.invalidate();
    assert!(matches!(
        s.get_provider("100", "p", "x").await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        s.list_providers("100", "p").await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// Waits (bounded) until `store` hears other replicas' writes.
async fn until_listening(store: &Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !store.cache.answerable_now() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not start listening within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn postgres_replicas_clear_each_others_caches() {
    let Some(url) = test_database().await else {
        return;
    };
    let a = Store::open_postgres(&url).await.expect("replica a");
    let b = Store::open_postgres(&url).await.expect("replica b");
    let followers = [
        tokio::spawn(a.clone().follow_changes()),
        tokio::spawn(b.clone().follow_changes()),
    ];
    until_listening(&a).await;
    until_listening(&b).await;
    let p = |etag: &str| PolicyRow {
        etag: etag.into(),
        policy_json: "{}".into(),
    };
    let invalidations = || {
        b.cache
            .counts
            .invalidations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = invalidations();
    a.set_policy("sa/1", None, &p("e1")).await.expect("set");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while invalidations() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "b did not hear a's write within 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let etag = |row: Option<PolicyRow>| row.map(|r| r.etag);
    assert_eq!(
        etag(b.get_policy("sa/1").await.expect("read")),
        Some("e1".into())
    );
    let hits = b
        .cache
        .counts
        .hits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        etag(b.get_policy("sa/1").await.expect("read")),
        Some("e1".into())
    );
    assert_eq!(
        b.cache
            .counts
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        hits + 1,
        "the second read is answered from b's cache"
    );
    // A write at a is honoured at b within a second.
    let started = std::time::Instant::now();
    a.set_policy("sa/1", Some("e1"), &p("e2"))
        .await
        .expect("set");
    loop {
        if etag(b.get_policy("sa/1").await.expect("read")) == Some("e2".into()) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "b still answers the old policy after 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    eprintln!("b saw a's write after {:?}", started.elapsed());
    // A key written at a reaches b's watchers.
    let mut keys = b.key_changes();
    keys.mark_unchanged();
    let row = SigningKeyRow {
        kid: "k1".into(),
        purpose: "id_token".into(),
        algorithm: "RS256".into(),
        private_pkcs8: vec![1, 2, 3],
        create_time: 1,
        rotate_time: None,
        retire_time: None,
    };
    a.insert_signing_key(&row).await.expect("key");
    tokio::time::timeout(std::time::Duration::from_secs(1), keys.changed())
        .await
        .expect("b hears of a's key within 1 s")
        .expect("changed");
    // A presenter new to the database is a write every replica hears; presenting it again, at
    // any replica, only reads: a's cache hears of the policy write after it, and of nothing else.
    let presenter = KsaUidRow {
        project_id: "proj-a".into(),
        uid: "uid-1".into(),
        cluster_uid: "c1".into(),
        namespace: "ns".into(),
        name: "ksa".into(),
        first_seen: "2026-01-01T00:00:00Z".into(),
    };
    let heard_at_a = || {
        a.cache
            .counts
            .invalidations
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = invalidations();
    a.present_service_account_uid(&presenter)
        .await
        .expect("present");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while invalidations() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "b did not hear the new presenter"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = heard_at_a();
    b.present_service_account_uid(&presenter)
        .await
        .expect("present again");
    b.set_policy("sa/2", None, &p("f1")).await.expect("set");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while heard_at_a() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "a did not hear b's write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        heard_at_a(),
        before + 1,
        "a known presenter was told as a write"
    );
    for follower in followers {
        follower.abort();
    }
}

/// Replicas starting together on a new database migrate it once (the migrator's advisory
/// lock), and every one of them opens it.
#[tokio::test]
async fn postgres_replicas_starting_together_migrate_once() {
    let Some(url) = test_database().await else {
        return;
    };
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open_postgres(&url).await })
        })
        .collect();
    let mut opened = Vec::new();
    for task in tasks {
        opened.push(task.await.expect("task").expect("every replica opens it"));
    }
    let versions = sqlx::query("SELECT version FROM _sqlx_migrations")
        .fetch_all(&opened[0].db.pool)
        .await
        .expect("migrations");
    assert_eq!(
        versions.len(),
        db::POSTGRES_MIGRATIONS.len(),
        "each applied once"
    );
}
