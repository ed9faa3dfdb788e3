//! The conformance checks of metadata-api.md section 13 that a request alone decides.

use super::*;

fn view(email: &str) -> View {
    View {
        project_id: "my-proj".into(),
        project_number: "123456789012".into(),
        zone: "us-central1-a".into(),
        hostname: "node-1.us-central1-a.c.my-proj.internal".into(),
        instance_id: "18446744073709551615".into(),
        cluster_name: "prod".into(),
        cluster_location: "us-central1".into(),
        cluster_uid: "0f6c7e00-1111-4222-8333-444455556666".into(),
        account: Account {
            email: email.into(),
            scopes: vec![
                "https://www.googleapis.com/auth/cloud-platform".into(),
                "https://www.googleapis.com/auth/userinfo.email".into(),
            ],
        },
    }
}

const GSA: &str = "app@my-proj.iam.gserviceaccount.com";

fn get_with(path_and_query: &str, flavor: Option<&str>, method: &str, forwarded: bool) -> Outcome {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    answer(
        &Request {
            method,
            path,
            query,
            host: "metadata.google.internal",
            flavor,
            forwarded,
        },
        &view(GSA),
    )
}

fn get(path: &str) -> Outcome {
    get_with(path, Some("Google"), "GET", false)
}

#[track_caller]
fn reply(outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[track_caller]
fn ok_text(path: &str) -> String {
    let r = reply(get(path));
    assert_eq!(r.status, 200, "{path}: {r:?}");
    String::from_utf8(r.body).expect("utf-8")
}

#[test]
fn root_and_headers() {
    // 1, 2: `/` with or without the header.
    for flavor in [None, Some("Google")] {
        let r = reply(get_with("/", flavor, "GET", false));
        assert_eq!(
            (r.status, r.content_type, r.body.as_slice()),
            (200, TEXT, b"computeMetadata/\n".as_slice())
        );
    }
    // 3, 4: the header, exactly.
    for flavor in [None, Some("google"), Some(""), Some("True")] {
        let r = reply(get_with(
            "/computeMetadata/v1/project/project-id",
            flavor,
            "GET",
            false,
        ));
        assert_eq!(r.status, 403);
        assert!(String::from_utf8_lossy(&r.body).contains("Metadata-Flavor"));
    }
    // 5: X-Forwarded-For anywhere.
    for path in [
        "/",
        "/computeMetadata/v1/instance/service-accounts/default/token",
    ] {
        assert_eq!(
            reply(get_with(path, Some("Google"), "GET", true)).status,
            403
        );
    }
    // 6: only GET and HEAD.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = reply(get_with(
            "/computeMetadata/v1/project/project-id",
            Some("Google"),
            method,
            false,
        ));
        assert_eq!((r.status, r.allow), (405, Some("GET, HEAD")));
    }
    assert_eq!(reply(get_with("/", None, "HEAD", false)).status, 200);
}

#[test]
fn values_and_listings() {
    // 8: scalars without a newline.
    assert_eq!(
        ok_text("/computeMetadata/v1/project/numeric-project-id"),
        "123456789012"
    );
    assert_eq!(ok_text("/computeMetadata/v1/project/project-id"), "my-proj");
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/id"),
        "18446744073709551615"
    );
    // 11, 16, 18, 19, 21, 23.
    assert_eq!(
        ok_text("/computeMetadata/v1/"),
        "instance/\nproject/\nuniverse/\n"
    );
    assert_eq!(ok_text("/computeMetadata/"), "v1/\n");
    // Go's `metadata.InstanceName()`: the host name's first label.
    assert_eq!(ok_text("/computeMetadata/v1/instance/name"), "node-1");
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/"),
        "attributes/\nhostname\nid\nname\nservice-accounts/\nzone\n"
    );
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/attributes/"),
        "cluster-location\ncluster-name\ncluster-uid\n"
    );
    assert_eq!(
        ok_text("/computeMetadata/v1/universe/universe-domain"),
        "googleapis.com"
    );
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/service-accounts/"),
        format!("default/\n{GSA}/\n")
    );
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/service-accounts/default/"),
        "aliases\nemail\nidentity\nscopes\ntoken\n"
    );
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/service-accounts/default/email"),
        GSA
    );
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/service-accounts/default/aliases"),
        "default\n"
    );
    // 17: the zone names the project number.
    assert_eq!(
        ok_text("/computeMetadata/v1/instance/zone"),
        "projects/123456789012/zones/us-central1-a"
    );
    // 10: ETags, stable.
    let a = reply(get("/computeMetadata/v1/project/project-id"));
    let b = reply(get("/computeMetadata/v1/project/project-id"));
    let tag = a.etag.clone().expect("etag");
    assert!(
        tag.len() == 16
            && tag
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(a.etag, b.etag);
    // 20, 25: %40 and @, and the email path, route alike.
    let encoded = GSA.replace('@', "%40");
    assert_eq!(
        ok_text(&format!(
            "/computeMetadata/v1/instance/service-accounts/{encoded}/email"
        )),
        GSA
    );
    assert_eq!(
        ok_text(&format!(
            "/computeMetadata/v1/instance/service-accounts/{GSA}/scopes"
        ))
        .lines()
        .count(),
        2
    );
}

#[test]
fn concealment_and_redirects() {
    // 12: directories without a slash redirect, absolute, query kept.
    for path in [
        "/computeMetadata/v1",
        "/computeMetadata/v1/instance",
        "/computeMetadata/v1/instance/attributes",
        "/computeMetadata/v1/instance/service-accounts",
        "/computeMetadata/v1/instance/service-accounts/default",
        "/computeMetadata/v1/project",
    ] {
        let r = reply(get(&format!("{path}?recursive=true")));
        assert_eq!(r.status, 301, "{path}");
        assert_eq!(
            r.location,
            Some(format!(
                "http://metadata.google.internal{path}/?recursive=true"
            ))
        );
    }
    // 14, 15, 18, 20, 26: 404, never 403.
    for path in [
        "/computeMetadata/v1/project/project-id/",
        "/computeMetadata/v1/instance/service-accounts/default/token/",
        "/computeMetadata/v1/nope",
        "/computeMetadata/v2/",
        "/0.1/meta-data/",
        "/computeMetadata/v1beta1/",
        "/computeMetadata/v1/instance/attributes/kube-env",
        "/computeMetadata/v1/instance/name/",
        "/computeMetadata/v1/instance/service-accounts/other@my-proj.iam.gserviceaccount.com/token",
        "/computeMetadata/v1/instance/../project/project-id",
        "/computeMetadata/v1//project/project-id",
        "/computeMetadata/v1/instance%2F..%2Fproject/project-id",
    ] {
        assert_eq!(reply(get(path)).status, 404, "{path}");
    }
}

#[test]
fn recursive_answers() {
    // 24: an account's subtree without tokens.
    let r = reply(get(
        "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
    ));
    assert_eq!(r.content_type, JSON);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["aliases"], serde_json::json!(["default"]));
    assert_eq!(v["email"], GSA);
    assert!(v["scopes"].is_array() && v.get("token").is_none() && v.get("identity").is_none());
    // 27: the whole tree; camelCase for fixed keys, names verbatim, big numbers exact.
    let r = reply(get("/computeMetadata/v1/?recursive=true"));
    let body = String::from_utf8(r.body).expect("utf-8");
    assert!(body.contains("\"numericProjectId\":123456789012"), "{body}");
    assert!(body.contains("\"id\":18446744073709551615"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["project"]["projectId"], "my-proj");
    assert_eq!(v["instance"]["attributes"]["cluster-name"], "prod");
    assert_eq!(v["instance"]["name"], "node-1");
    assert!(v["instance"]["serviceAccounts"][GSA].is_object());
    let text = ok_text("/computeMetadata/v1/project/?recursive=true&alt=text");
    assert_eq!(
        text,
        "numeric-project-id 123456789012\nproject-id my-proj\n"
    );
    // alt=json on a scalar.
    assert_eq!(
        ok_text("/computeMetadata/v1/project/project-id?alt=json"),
        "\"my-proj\""
    );
}

#[test]
fn token_and_identity_parameters() {
    // 28, 31: tokens, unknown parameters ignored, scopes split.
    assert_eq!(
        get(
            "/computeMetadata/v1/instance/service-accounts/default/token?scopes=a%2Cb&bindCertificateFingerprint=x"
        ),
        Outcome::Token {
            account: 0,
            scopes: vec!["a".into(), "b".into()]
        }
    );
    assert_eq!(
        get(&format!(
            "/computeMetadata/v1/instance/service-accounts/{GSA}/token"
        )),
        Outcome::Token {
            account: 0,
            scopes: vec![]
        }
    );
    // 33.
    assert_eq!(
        reply(get(
            "/computeMetadata/v1/instance/service-accounts/default/token?wait_for_change=true"
        ))
        .status,
        400
    );
    // 36.
    for q in ["", "?audience=", "?format=full"] {
        let r = reply(get(&format!(
            "/computeMetadata/v1/instance/service-accounts/default/identity{q}"
        )));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (400, b"non-empty audience parameter required\n".as_slice())
        );
    }
    // 37, 38: raw and encoded audiences, formats and licenses.
    assert_eq!(
        get(
            "/computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=https://x.example"
        ),
        Outcome::Identity {
            account: 0,
            audience: "https://x.example".into(),
            format: IdFormat::Full,
            licenses: false
        }
    );
    assert_eq!(
        get(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https%3A%2F%2Fx.example%2Fp%3Fq%3D1&format=STANDARD&licenses=TRUE"
        ),
        Outcome::Identity {
            account: 0,
            audience: "https://x.example/p?q=1".into(),
            format: IdFormat::Standard,
            licenses: true
        }
    );
    assert_eq!(
        reply(get(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=a&format=weird"
        ))
        .status,
        400
    );
}

#[test]
fn unannotated_accounts() {
    // 22: the pool name as email; a principal identifier is listed only as default.
    let pool = "my-proj.svc.id.goog";
    let v = view(pool);
    let request = |path| Request {
        method: "GET",
        path,
        query: "",
        host: "h",
        flavor: Some("Google"),
        forwarded: false,
    };
    assert_eq!(
        reply(answer(
            &request("/computeMetadata/v1/instance/service-accounts/"),
            &v
        ))
        .body,
        format!("default/\n{pool}/\n").into_bytes()
    );
    let principal = view(
        "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/ns/a/sa/b",
    );
    assert_eq!(
        reply(answer(
            &request("/computeMetadata/v1/instance/service-accounts/"),
            &principal
        ))
        .body,
        b"default/\n"
    );
    // The fast path agrees: a principal identifier is no directory, so no token under it.
    let email = principal.account.email.clone();
    let under = format!("/computeMetadata/v1/instance/service-accounts/{email}/token");
    assert_eq!(token_fast_path(&request(&under), &email), None);
    assert!(matches!(answer(&request(&under), &principal), Outcome::Reply(r) if r.status == 404));
}

#[test]
fn long_polls() {
    let v = view(GSA);
    let current = tree::current_etag(&v, "/computeMetadata/v1/project/project-id").expect("etag");
    // 40: unchanged content is held for timeout_sec.
    match get(&format!(
        "/computeMetadata/v1/project/project-id?wait_for_change=true&last_etag={current}&timeout_sec=2"
    )) {
        Outcome::Hold { reply, wait } => {
            assert_eq!(wait, Duration::from_secs(2));
            assert_eq!(reply.etag, Some(current.clone()));
        }
        other => panic!("{other:?}"),
    }
    // 41: 0, NONE or stale: at once.
    for last in ["0", "NONE", "0123456789abcdef"] {
        let r = reply(get(&format!(
            "/computeMetadata/v1/project/project-id?wait_for_change=true&last_etag={last}"
        )));
        assert_eq!(r.status, 200);
    }
    // 42: listings need recursive.
    assert_eq!(
        reply(get("/computeMetadata/v1/instance/?wait_for_change=true")).status,
        400
    );
    assert!(matches!(
        get("/computeMetadata/v1/instance/attributes/?recursive=true&wait_for_change=true"),
        Outcome::Hold { wait, .. } if wait == MAX_WAIT
    ));
    // 43.
    assert_eq!(
        reply(get(
            "/computeMetadata/v1/project/project-id?wait_for_change=true&timeout_sec=abc"
        ))
        .status,
        400
    );
}

#[test]
fn the_fast_path_agrees_with_the_full_answer() {
    for path in [
        "/computeMetadata/v1/instance/service-accounts/default/token",
        "/computeMetadata/v1/instance/service-accounts/default/token?scopes=a,b",
        "/computeMetadata/v1/instance/service-accounts/app@my-proj.iam.gserviceaccount.com/token?x=1",
        "/computeMetadata/v1/instance/service-accounts/default/token?wait_for_change=true",
        "/computeMetadata/v1/instance/service-accounts/other@x.iam.gserviceaccount.com/token",
        "/computeMetadata/v1/instance/service-accounts/default/token/",
    ] {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let request = Request {
            method: "GET",
            path: p,
            query: q,
            host: "h",
            flavor: Some("Google"),
            forwarded: false,
        };
        if let Some(fast) = token_fast_path(&request, GSA) {
            assert_eq!(fast, answer(&request, &view(GSA)), "{path}");
        }
    }
    let bare = Request {
        method: "GET",
        path: "/computeMetadata/v1/instance/service-accounts/default/token",
        query: "",
        host: "h",
        flavor: None,
        forwarded: false,
    };
    assert_eq!(
        token_fast_path(&bare, GSA),
        None,
        "the header rules still apply"
    );
}

#[test]
fn oversized_audiences_and_scopes_are_refused() {
    let max = wid_api::bounds::MAX_AUDIENCE_BYTES;
    let identity = |audience: &str| {
        reply(get(&format!(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience={audience}"
        )))
    };
    let at_max = "a".repeat(max);
    assert!(matches!(
        get(&format!(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience={at_max}"
        )),
        Outcome::Identity { .. }
    ));
    let over = identity(&"a".repeat(max + 1));
    assert_eq!(
        (over.status, over.body.as_slice()),
        (
            400,
            format!("audience must be at most {max} bytes\n").as_bytes()
        )
    );
    let scopes = "s".repeat(wid_api::bounds::MAX_SCOPE_BYTES + 1);
    let path =
        format!("/computeMetadata/v1/instance/service-accounts/default/token?scopes={scopes}");
    assert_eq!(reply(get(&path)).status, 400);
    let request = Request {
        method: "GET",
        path: "/computeMetadata/v1/instance/service-accounts/default/token",
        query: &format!("scopes={scopes}"),
        host: "h",
        flavor: Some("Google"),
        forwarded: false,
    };
    assert_eq!(
        token_fast_path(&request, GSA),
        None,
        "the fast path leaves it to answer"
    );
}
