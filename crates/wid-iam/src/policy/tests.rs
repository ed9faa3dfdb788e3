use proptest::prelude::*;

use super::*;
use crate::member::FederatedCaller;
use crate::roles::{ALL_PERMISSIONS, SA_GET_ACCESS_TOKEN};

fn raw(role: &str, members: &[&str]) -> RawBinding {
    RawBinding {
        role: role.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        condition: None,
    }
}

fn ksa(ns: &str, name: &str) -> Caller {
    Caller::Federated(FederatedCaller {
        project_number: "123456".into(),
        pool_id: "proj-a.svc.id.goog".into(),
        subject: format!("ns/{ns}/sa/{name}"),
        namespace: Some(ns.into()),
        vouch: crate::Vouch::SharedCluster,
        ..Default::default()
    })
}

const CTX: RequestContext<'static> = RequestContext {
    resource_name: "projects/proj-a/serviceAccounts/x",
};

#[test]
fn validation_refuses_bad_policies() {
    assert_eq!(
        Policy::validate(2, &[]),
        Err(PolicyError::InvalidVersion(2))
    );
    assert!(matches!(
        Policy::validate(1, &[raw("roles/iam.nope", &["user:a@b.co"])]),
        Err(PolicyError::UnknownRole(_))
    ));
    assert!(matches!(
        Policy::validate(1, &[raw("roles/viewer", &["user:nope"])]),
        Err(PolicyError::InvalidMember(_))
    ));
    let mut conditional = raw("roles/viewer", &["user:a@b.co"]);
    conditional.condition = Some("true".into());
    assert_eq!(
        Policy::validate(1, std::slice::from_ref(&conditional)),
        Err(PolicyError::ConditionNeedsVersion3(1))
    );
    assert_eq!(
        Policy::validate(3, &[conditional]).map(|p| p.version),
        Ok(3)
    );
}

#[test]
fn normalisation_merges_and_drops() {
    let p = Policy::validate(
        3,
        &[
            raw("roles/viewer", &["user:a@b.co", "user:a@b.co"]),
            raw("roles/owner", &[]),
            raw("roles/viewer", &["user:c@d.co"]),
        ],
    )
    .expect("valid");
    assert_eq!(p.version, 1);
    assert_eq!(
        p.to_raw(),
        vec![raw("roles/viewer", &["user:a@b.co", "user:c@d.co"])]
    );
}

#[test]
fn conditions_fail_closed() {
    let mut yes = raw(
        "roles/iam.workloadIdentityUser",
        &["serviceAccount:proj-a.svc.id.goog[ns1/ksa1]"],
    );
    yes.condition = Some("resource.name.startsWith('projects/proj-a/')".into());
    let mut unsupported = yes.clone();
    unsupported.condition = Some("request.time < timestamp('2030-01-01T00:00:00Z')".into());
    let p = Policy::validate(3, &[yes]).expect("valid");
    assert!(is_allowed(
        &[&p],
        &ksa("ns1", "ksa1"),
        SA_GET_ACCESS_TOKEN,
        &CTX
    ));
    let p = Policy::validate(3, &[unsupported]).expect("valid: kept, never holds");
    assert!(!is_allowed(
        &[&p],
        &ksa("ns1", "ksa1"),
        SA_GET_ACCESS_TOKEN,
        &CTX
    ));
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}"
}

fn arb_role() -> impl Strategy<Value = Role> {
    proptest::sample::select(Role::ALL)
}

/// A KSA member in one of its two spellings.
fn ksa_member(ns: &str, name: &str, principal_form: bool) -> String {
    if principal_form {
        format!(
            "principal://iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/proj-a.svc.id.goog/subject/ns/{ns}/sa/{name}"
        )
    } else {
        format!("serviceAccount:proj-a.svc.id.goog[{ns}/{name}]")
    }
}

proptest! {
    /// The decision equals a naive model: some binding's role grants the permission and one of its
    /// members names the caller's namespace and KSA, whichever spelling it uses.
    #[test]
    fn decision_matches_model(
        bindings in proptest::collection::vec(
            (arb_role(), proptest::collection::vec((arb_name(), arb_name(), any::<bool>()), 0..4)),
            0..5,
        ),
        caller_ns in arb_name(),
        caller_ksa in arb_name(),
        permission in proptest::sample::select(ALL_PERMISSIONS),
    ) {
        let raws: Vec<RawBinding> = bindings.iter().map(|(role, ms)| RawBinding {
            role: role.name().into(),
            members: ms.iter().map(|(ns, n, form)| ksa_member(ns, n, *form)).collect(),
            condition: None,
        }).collect();
        let policy = Policy::validate(1, &raws).expect("generated policies are valid");
        let model = bindings.iter().any(|(role, ms)| {
            role.grants(permission) && ms.iter().any(|(ns, n, _)| *ns == caller_ns && *n == caller_ksa)
        });
        prop_assert_eq!(is_allowed(&[&policy], &ksa(&caller_ns, &caller_ksa), permission, &CTX), model);
        prop_assert!(is_allowed(&[&policy], &Caller::BootstrapAdmin, permission, &CTX));
    }

    /// Adding a binding never takes a permission away (monotonicity), and splitting one policy
    /// into two inherited ones changes nothing.
    #[test]
    fn adding_bindings_is_monotonic(
        first in proptest::collection::vec((arb_role(), arb_name(), arb_name()), 0..6),
        extra in (arb_role(), arb_name(), arb_name()),
        caller in (arb_name(), arb_name()),
        permission in proptest::sample::select(ALL_PERMISSIONS),
    ) {
        let to_raw = |v: &[(Role, String, String)]| -> Vec<RawBinding> {
            v.iter().map(|(r, ns, n)| raw(r.name(), &[&ksa_member(ns, n, false)])).collect()
        };
        let before = Policy::validate(1, &to_raw(&first)).expect("valid");
        let mut more = first.clone();
        more.push(extra.clone());
        let after = Policy::validate(1, &to_raw(&more)).expect("valid");
        let only_extra = Policy::validate(1, &to_raw(std::slice::from_ref(&extra))).expect("valid");
        let c = ksa(&caller.0, &caller.1);
        let allowed_before = is_allowed(&[&before], &c, permission, &CTX);
        let allowed_after = is_allowed(&[&after], &c, permission, &CTX);
        prop_assert!(!allowed_before || allowed_after);
        prop_assert_eq!(allowed_after, is_allowed(&[&before, &only_extra], &c, permission, &CTX));
    }

    /// Validation is idempotent: rendering a validated policy and validating it again gives it back.
    #[test]
    fn validation_is_idempotent(
        bindings in proptest::collection::vec((arb_role(), arb_name(), arb_name(), any::<bool>()), 0..8),
    ) {
        let raws: Vec<RawBinding> = bindings.iter()
            .map(|(r, ns, n, form)| raw(r.name(), &[&ksa_member(ns, n, *form)]))
            .collect();
        let once = Policy::validate(1, &raws).expect("valid");
        let twice = Policy::validate(once.version, &once.to_raw()).expect("valid");
        prop_assert_eq!(once, twice);
    }

    /// No member string makes the parser panic.
    #[test]
    fn member_parser_never_panics(s in "\\PC{0,80}") {
        let _ = Member::parse(&s);
    }

    /// No expression makes the parser or evaluator panic.
    #[test]
    fn expressions_never_panic(s in "[a-z.'\\[\\]()!=&|+ ,0-9\"]{0,60}") {
        if let Ok(e) = expr::parse(&s) {
            let v = serde_json::json!({"a": {"b": "c"}, "l": [1, 2]});
            let vars = BTreeMap::from([("a", &v)]);
            let _ = expr::eval(&e, &vars);
        }
    }
}
