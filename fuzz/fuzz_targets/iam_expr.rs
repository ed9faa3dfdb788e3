//! `expr::parse` on arbitrary UTF-8, and `expr::eval` / `expr::holds` of every expression that
//! parses over a small fixed variable map shaped like the ones wid binds (`assertion`, `google`,
//! `attribute`, `resource`). Only absence of panics is checked.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use wid_iam::expr;

static ASSERTION: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:ns1:ksa1",
        "aud": ["my-proj.svc.id.goog", "https://example.com"],
        "exp": 1_700_000_000,
        "big": u64::MAX,
        "neg": i64::MIN,
        "max": i64::MAX,
        "float": 1.5,
        "flag": true,
        "nothing": null,
        "groups": ["admins", "dev"],
        "kubernetes.io": {
            "namespace": "ns1",
            "serviceaccount": {"name": "ksa1", "uid": "0a1b2c3d"},
            "pod": {"name": "p-1", "uid": "u"},
        },
        "": "empty key",
        "ünï": "côdé ✓",
    })
});
static GOOGLE: LazyLock<Value> =
    LazyLock::new(|| json!({"subject": "ns/ns1/sa/ksa1", "groups": ["admins"]}));
static ATTRIBUTE: LazyLock<Value> = LazyLock::new(|| json!({"env": "prod", "n": 3}));
static RESOURCE: LazyLock<Value> = LazyLock::new(
    || json!({"name": "projects/my-proj/serviceAccounts/sa@my-proj.iam.gserviceaccount.com"}),
);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = match expr::parse(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let vars: BTreeMap<&str, &Value> = BTreeMap::from([
        ("assertion", &*ASSERTION),
        ("google", &*GOOGLE),
        ("attribute", &*ATTRIBUTE),
        ("resource", &*RESOURCE),
    ]);
    match expr::eval(&parsed, &vars) {
        Ok(value) => {
            let _ = value.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = expr::holds(&parsed, &vars);
    // With no variables bound every reference is an error.
    let _ = expr::eval(&parsed, &BTreeMap::new());
});
