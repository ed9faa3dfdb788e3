//! The `wid iam` admin CLI against a real server.

use crate::support::{Server, WID, wid_cli};
use serde_json::Value;

#[track_caller]
fn ok(result: (bool, String, String)) -> String {
    assert!(
        result.0,
        "command failed:\nstdout: {}\nstderr: {}",
        result.1, result.2
    );
    result.1
}

#[track_caller]
fn fails(result: (bool, String, String), needle: &str) {
    assert!(
        !result.0,
        "command succeeded but should not have: {}",
        result.1
    );
    assert!(
        result.2.contains(needle),
        "stderr does not say '{needle}': {}",
        result.2
    );
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn admin_cli_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let run = |args: &[&str]| wid_cli(&server, args);

    let project = json(&ok(run(&[
        "iam", "projects", "create", "cli-proj", "--format", "json",
    ])));
    assert_eq!(project["workloadIdentityPool"], "cli-proj.svc.id.goog");
    assert_eq!(
        project["projectNumber"].as_str().map(str::len),
        Some(12),
        "a number is assigned"
    );
    ok(run(&[
        "iam",
        "projects",
        "create",
        "cli-proj-2",
        "--number",
        "987654321",
    ]));
    let table = ok(run(&["iam", "projects", "list"]));
    assert!(table.starts_with("PROJECT_ID"), "{table}");
    assert!(table.contains("987654321"), "{table}");
    fails(
        run(&["iam", "projects", "create", "cli-proj"]),
        "already exists",
    );

    // Service accounts.
    let email = "cli-robot@cli-proj.iam.gserviceaccount.com";
    ok(run(&[
        "iam",
        "service-accounts",
        "create",
        "cli-robot",
        "--project",
        "cli-proj",
        "--display-name",
        "CLI robot",
    ]));
    let yaml = ok(run(&[
        "iam",
        "service-accounts",
        "describe",
        email,
        "--format",
        "yaml",
    ]));
    assert!(yaml.contains("displayName: CLI robot"), "{yaml}");
    ok(run(&[
        "iam",
        "service-accounts",
        "update",
        email,
        "--description",
        "made by a test",
    ]));
    ok(run(&["iam", "service-accounts", "disable", email]));
    let described = json(&ok(run(&[
        "iam",
        "service-accounts",
        "describe",
        email,
        "--format",
        "json",
    ])));
    assert_eq!(described["disabled"], true);
    assert_eq!(described["description"], "made by a test");
    ok(run(&["iam", "service-accounts", "enable", email]));
    let table = ok(run(&[
        "iam",
        "service-accounts",
        "list",
        "--project",
        "cli-proj",
    ]));
    assert!(
        table.contains("CLI robot") && table.contains(email),
        "{table}"
    );
    fails(
        run(&[
            "iam",
            "service-accounts",
            "create",
            "bad",
            "--project",
            "cli-proj",
        ]),
        "6 to 30",
    );

    // Bindings.
    let member = "serviceAccount:cli-proj.svc.id.goog[default/app]";
    ok(run(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        email,
        "--member",
        member,
        "--role",
        "roles/iam.workloadIdentityUser",
    ]));
    ok(run(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        email,
        "--member",
        "user:alice@example.com",
        "--role",
        "roles/iam.serviceAccountTokenCreator",
        "--condition",
        "expression=request.time < timestamp('2030-01-01T00:00:00Z'),title=until 2030",
    ]));
    let policy = json(&ok(run(&[
        "iam",
        "service-accounts",
        "get-iam-policy",
        email,
        "--format",
        "json",
    ])));
    assert_eq!(policy["version"], 3);
    assert_eq!(policy["bindings"][1]["condition"]["title"], "until 2030");
    fails(
        run(&[
            "iam",
            "service-accounts",
            "add-iam-policy-binding",
            email,
            "--member",
            "nobody",
            "--role",
            "roles/viewer",
        ]),
        "Invalid member",
    );
    fails(
        run(&[
            "iam",
            "service-accounts",
            "add-iam-policy-binding",
            email,
            "--member",
            member,
            "--role",
            "roles/nope",
        ]),
        "roles/nope",
    );
    ok(run(&[
        "iam",
        "service-accounts",
        "remove-iam-policy-binding",
        email,
        "--member",
        member,
        "--role",
        "roles/iam.workloadIdentityUser",
    ]));
    fails(
        run(&[
            "iam",
            "service-accounts",
            "remove-iam-policy-binding",
            email,
            "--member",
            member,
            "--role",
            "roles/iam.workloadIdentityUser",
        ]),
        "not found",
    );
    // set-iam-policy from a file, guarded by its etag.
    let file = dir.path().join("policy.json");
    let mut edited = json(&ok(run(&[
        "iam",
        "service-accounts",
        "get-iam-policy",
        email,
        "--format",
        "json",
    ])));
    edited["bindings"] =
        serde_json::json!([{"role": "roles/viewer", "members": ["user:carol@example.com"]}]);
    edited["version"] = serde_json::json!(1);
    std::fs::write(&file, edited.to_string()).expect("write");
    ok(run(&[
        "iam",
        "service-accounts",
        "set-iam-policy",
        email,
        file.to_str().expect("path"),
    ]));
    fails(
        run(&[
            "iam",
            "service-accounts",
            "set-iam-policy",
            email,
            file.to_str().expect("path"),
        ]),
        "concurrent policy changes",
    );

    // Pools and providers.
    ok(run(&[
        "iam",
        "workload-identity-pools",
        "create",
        "cli-pool",
        "--project",
        "cli-proj",
        "--display-name",
        "CLI pool",
    ]));
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[{"kty":"RSA","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB","kid":"k1"}]}"#).expect("write");
    let jwks_arg = jwks.to_str().expect("path");
    let pool_args = [
        "--workload-identity-pool",
        "cli-pool",
        "--project",
        "cli-proj",
    ];
    let mut create = vec![
        "iam",
        "workload-identity-pools",
        "providers",
        "create-oidc",
        "cli-prov",
    ];
    create.extend(pool_args);
    create.extend([
        "--issuer-uri",
        "https://k8s.cli.example.com",
        "--jwk-json-path",
        jwks_arg,
        "--attribute-mapping",
        "google.subject=assertion.sub,attribute.namespace=assertion['kubernetes.io'].namespace",
        "--attribute-condition",
        "assertion['kubernetes.io'].namespace != 'kube-system'",
        "--format",
        "json",
    ]);
    let provider = json(&ok(run(&create)));
    assert_eq!(
        provider["attributeMapping"]["attribute.namespace"],
        "assertion['kubernetes.io'].namespace"
    );
    let mut update = vec![
        "iam",
        "workload-identity-pools",
        "providers",
        "update-oidc",
        "cli-prov",
    ];
    update.extend(pool_args);
    update.extend([
        "--allowed-audiences",
        "a1,a2",
        "--disabled",
        "--format",
        "json",
    ]);
    let updated = json(&ok(run(&update)));
    assert_eq!(
        updated["oidc"]["allowedAudiences"],
        serde_json::json!(["a1", "a2"])
    );
    assert_eq!(updated["disabled"], true);
    let mut list = vec!["iam", "workload-identity-pools", "providers", "list"];
    list.extend(pool_args);
    assert!(ok(run(&list)).contains("https://k8s.cli.example.com"));
    let mut delete = vec![
        "iam",
        "workload-identity-pools",
        "providers",
        "delete",
        "cli-prov",
    ];
    delete.extend(pool_args);
    ok(run(&delete));
    ok(run(&[
        "iam",
        "workload-identity-pools",
        "delete",
        "cli-pool",
        "--project",
        "cli-proj",
    ]));
    let pools = json(&ok(run(&[
        "iam",
        "workload-identity-pools",
        "list",
        "--project",
        "cli-proj",
        "--format",
        "json",
    ])));
    assert_eq!(
        pools.as_array().map(Vec::len),
        Some(1),
        "only the fixed GKE pool is left: {pools}"
    );

    // Clusters.
    let register = |name: &str, location: &str, issuer: &str, isolated: bool| {
        let mut args = vec![
            "iam",
            "clusters",
            "register",
            name,
            "--project",
            "cli-proj",
            "--location",
            location,
        ];
        args.extend([
            "--issuer-uri",
            issuer,
            "--jwk-json-path",
            jwks_arg,
            "--format",
            "json",
        ]);
        if isolated {
            args.push("--isolated");
        }
        run(&args)
    };
    let shared = json(&ok(register(
        "prod",
        "us-east1",
        "https://prod.k8s.example.com",
        false,
    )));
    assert_eq!(
        shared["memberFormat"],
        "serviceAccount:cli-proj.svc.id.goog[NAMESPACE/KSA]"
    );
    let isolated = json(&ok(register(
        "lab",
        "us-east1",
        "https://lab.k8s.example.com",
        true,
    )));
    assert_eq!(
        isolated["memberFormat"],
        "serviceAccount:cli-proj.svc.id.goog[us-east1/lab/NAMESPACE/KSA]"
    );
    fails(
        register("prod", "us-east1", "https://other.k8s.example.com", false),
        "already exists",
    );
    let table = ok(run(&["iam", "clusters", "list", "--project", "cli-proj"]));
    assert!(table.contains("prod") && table.contains("lab"), "{table}");
    let described = json(&ok(run(&[
        "iam",
        "clusters",
        "describe",
        "lab",
        "--project",
        "cli-proj",
        "--location",
        "us-east1",
        "--format",
        "json",
    ])));
    assert_eq!(described["isolated"], true);
    ok(run(&[
        "iam",
        "clusters",
        "delete",
        "lab",
        "--project",
        "cli-proj",
        "--location",
        "us-east1",
    ]));
    fails(
        run(&[
            "iam",
            "clusters",
            "describe",
            "lab",
            "--project",
            "cli-proj",
            "--location",
            "us-east1",
        ]),
        "not registered",
    );
    // Clap refuses --discover with --jwk-json-path, and neither.
    fails(
        run(&[
            "iam",
            "clusters",
            "register",
            "x",
            "--project",
            "cli-proj",
            "--location",
            "l",
            "--issuer-uri",
            "https://x.example.com",
        ]),
        "--discover",
    );
}

#[test]
fn cli_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    // A wrong token: 401 in words.
    let bad_token = dir.path().join("bad-token");
    std::fs::write(&bad_token, "wrong").expect("write");
    let out = std::process::Command::new(WID)
        .args(["iam", "projects", "list"])
        .env("WID_ENDPOINT", server.base())
        .env("WID_TOKEN_FILE", &bad_token)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No server there.
    let out = std::process::Command::new(WID)
        .args(["iam", "projects", "list"])
        .env("WID_ENDPOINT", format!("http://{}", crate::support::CLOSED))
        .env("WID_TOKEN_FILE", server.token_file())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the token service"));
    // No credential at all.
    let out = std::process::Command::new(WID)
        .args(["iam", "projects", "list"])
        .env("WID_ENDPOINT", server.base())
        .env_remove("WID_TOKEN_FILE")
        .env("HOME", dir.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("WID_DATA_DIR")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credential"));
}

/// `wid` with `args` and no server: (success, stdout, stderr).
fn wid(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(WID)
        .args(args)
        .env_remove("WID_ENDPOINT")
        .env_remove("WID_TOKEN_FILE")
        .output()
        .expect("run wid");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn failures_say_what_went_wrong_once_and_what_to_try() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let token = server.token_file();
    let token = token.to_str().expect("path");
    let list = |endpoint: &str| {
        wid(&[
            "iam",
            "projects",
            "list",
            "--endpoint",
            endpoint,
            "--token-file",
            token,
        ])
    };
    // No scheme: the URL it probably meant.
    let address = server.base().replace("http://", "");
    let (ok, _, err) = list(&address);
    assert!(!ok);
    assert!(
        err.contains("has no scheme") && err.contains(&format!("http://{address}")),
        "{err}"
    );
    // Nothing listens: is it running, and how to name another.
    let (ok, _, err) = list(&format!("http://{}", crate::support::CLOSED));
    assert!(!ok);
    assert!(
        err.contains("connection refused") && err.contains("wid dev") && err.contains("--endpoint"),
        "{err}"
    );
    assert!(!err.contains("error sending request"), "{err}");
    // TLS against plain HTTP: use http://.
    let (ok, _, err) = list(&server.base().replace("http://", "https://"));
    assert!(!ok);
    assert!(
        err.contains("does not speak TLS") && err.contains(&server.base()),
        "{err}"
    );
    // A taken port: said once, with the flag that moves it.
    let taken = server.base().replace("http://", "");
    let (ok, stderr) = crate::support::run_refused(std::process::Command::new(WID).args([
        "iam",
        "serve",
        "--addr",
        &taken,
        "--data-dir",
        dir.path().join("other").to_str().expect("path"),
    ]));
    assert!(!ok);
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: ") && stderr.contains("--addr"),
        "{stderr}"
    );
    let (ok, stderr) = crate::support::run_refused(std::process::Command::new(WID).args([
        "dev",
        "--iam-addr",
        &taken,
        "--data-dir",
        dir.path().join("dev").to_str().expect("path"),
    ]));
    assert!(!ok);
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("--iam-addr"), "{stderr}");
}

#[test]
fn help_says_what_each_command_does_and_takes() {
    let (_, serve, _) = wid(&["iam", "serve", "--help"]);
    for client_flag in ["--endpoint", "--token-file", "--format"] {
        assert!(
            !serve.contains(client_flag),
            "serve takes no {client_flag}:\n{serve}"
        );
    }
    let (_, describe, _) = wid(&["iam", "service-accounts", "describe", "--help"]);
    assert!(
        describe.contains("Usage: wid iam service-accounts describe [OPTIONS] <SERVICE_ACCOUNT>"),
        "{describe}"
    );
    assert!(
        describe.contains("<SERVICE_ACCOUNT>  The service account: its email, or its unique id"),
        "{describe}"
    );
    // --format's default is what the command does: tables for lists, YAML for one resource.
    assert!(!describe.contains("[default: table]"), "{describe}");
    assert!(describe.contains("single resources as YAML"), "{describe}");
    let (_, dev, _) = wid(&["dev", "--help"]);
    for promised in [
        "~/.local/share/wid/dev",
        "--log <LOG>",
        "--log-format <LOG_FORMAT>",
        "Ctrl-C",
        "standard output",
    ] {
        assert!(
            dev.contains(promised),
            "wid dev --help lacks {promised}:\n{dev}"
        );
    }
}

#[test]
fn completion_scripts_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _wid"),
        ("zsh", "#compdef wid"),
        ("fish", "complete -c wid"),
    ] {
        let (ok, script, err) = wid(&["completion", shell]);
        assert!(ok && script.contains(marker), "{shell}: {err}");
        assert!(script.contains("service-accounts"), "{shell}");
    }
    // A reader that goes away (`| head`) ends the output quietly.
    let mut child = std::process::Command::new(WID)
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().expect("stdout"), &mut first).expect("read");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    let (_, bash, _) = wid(&["completion", "bash"]);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bash).expect("write");
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(file.path())
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// What a quiet first start looks like: lines to paste with absolute paths on standard output,
/// logs without colour codes and without a refusal on standard error.
#[test]
fn wid_dev_prints_lines_that_work_anywhere_and_logs_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--metadata-addr",
        "127.0.0.1:0",
        "--iam-addr",
        "127.0.0.1:0",
        "--data-dir",
        "./wid-data",
    ];
    let home = std::fs::canonicalize(dir.path()).expect("canonical");
    for start in ["first", "second"] {
        let log = dir.path().join(format!("{start}.log"));
        let dev = crate::support::DevProcess::start(dir.path(), &args, &log);
        for line in dev.printed.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("export "),
                "{start} start: stdout has more than lines to paste: {line}"
            );
        }
        assert_eq!(
            dev.exported("WID_TOKEN_FILE"),
            home.join("wid-data/admin-token").display().to_string()
        );
        assert_eq!(
            dev.exported("CLOUDSDK_CONFIG"),
            home.join("wid-data/gcloud").display().to_string()
        );
        let log = dev.log();
        assert!(log.contains("token service listening"), "{log}");
        assert!(!log.contains('\x1b'), "colour codes in a log file:\n{log}");
        for alarming in [" WARN ", " ERROR ", "status=4", "status=5"] {
            assert!(
                !log.contains(alarming),
                "{start} start logged {alarming}:\n{log}"
            );
        }
        // Paths in the log are absolute too.
        assert!(!log.contains("data_dir=./"), "{log}");
    }
}

/// Colours on a terminal, none with NO_COLOR (no-color.org): run under a pseudo-terminal.
#[test]
fn logs_are_coloured_on_a_terminal_unless_no_color() {
    let Ok(script) = which("script") else {
        panic!("`script` (util-linux/bsdutils) is needed to give wid a terminal");
    };
    let run = |no_color: Option<&str>| {
        // An agent that logs its start, then refuses a pods file that is not there.
        let mut command = std::process::Command::new(&script);
        command
            .args(["-qec"])
            .arg(format!(
                "{WID} metadata serve --addr 127.0.0.1:0 --pods /nonexistent/pods.json"
            ))
            .arg("/dev/null")
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let out = command.output().expect("script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run(None);
    assert!(
        coloured.contains("open files limit") && coloured.contains('\x1b'),
        "{coloured:?}"
    );
    let plain = run(Some("1"));
    assert!(
        plain.contains("open files limit") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}

/// A second `wid dev` on the same data directory, a taken metadata address, and the metadata
/// address given as the token service's: each said for what it is.
#[test]
fn wid_dev_mistakes_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("path");
    let zeros = [
        "--metadata-addr",
        "127.0.0.1:0",
        "--iam-addr",
        "127.0.0.1:0",
    ];
    let first = crate::support::DevProcess::start(
        dir.path(),
        &[&zeros[..], &["--data-dir", data]].concat(),
        &dir.path().join("dev.log"),
    );
    let endpoint = first.exported("WID_ENDPOINT");
    let metadata = first.exported("GCE_METADATA_HOST");
    let again = |args: &[&str]| {
        crate::support::run_refused(
            std::process::Command::new(WID)
                .arg("dev")
                .args(args)
                .env_remove("WID_DATA_DIR"),
        )
    };
    let iam = endpoint.trim_start_matches("http://");
    let (ok, stderr) = again(&[
        "--iam-addr",
        iam,
        "--metadata-addr",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("already runs with the data directory"),
        "{stderr}"
    );
    // A taken metadata address is told before a new data directory is made.
    let other = dir.path().join("other");
    let (ok, stderr) = again(&[
        "--metadata-addr",
        &metadata,
        "--iam-addr",
        "127.0.0.1:0",
        "--data-dir",
        other.to_str().expect("path"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("--metadata-addr"), "{stderr}");
    assert!(!other.exists(), "a refused start made {}", other.display());
    // The metadata address where the token service's belongs.
    let token = first.exported("WID_TOKEN_FILE");
    let (ok, _, err) = wid(&[
        "iam",
        "projects",
        "list",
        "--endpoint",
        &format!("http://{metadata}"),
        "--token-file",
        &token,
    ]);
    assert!(!ok);
    assert!(
        err.contains("metadata server") && err.contains("WID_ENDPOINT"),
        "{err}"
    );
}
