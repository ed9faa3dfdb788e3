//! The fake's rules, as strict as Google's: each refusal in Google's code and words.

use serde_json::{Map, Value, json};
use wid_jose::signer::{SigningKey, TokenType};

use crate::credentials::{self, Method};
use crate::{Config, Federated, sts};

const PROVIDER: &str = "projects/9/locations/global/workloadIdentityPools/pool/providers/prov";
const AUDIENCE: &str =
    "//iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/pool/providers/prov";
const NOW: i64 = 1_800_000_000;

fn setup() -> (Config, SigningKey) {
    let key = SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key");
    let config = Config {
        provider: PROVIDER.into(),
        issuer_uri: "https://issuer".into(),
        jwks_json: json!({"keys": [key.public_jwk()]}).to_string(),
        ..Config::default()
    };
    (config, key)
}

fn subject(key: &SigningKey, change: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({"iss": "https://issuer", "sub": "system:serviceaccount:ns:ksa", "aud": [AUDIENCE], "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 600});
    change(&mut claims);
    key.sign_jwt(TokenType::Jwt, &claims).expect("sign")
}

fn form(token: &str, change: impl FnOnce(&mut Vec<(String, String)>)) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("audience", AUDIENCE),
        ("scope", "https://www.googleapis.com/auth/cloud-platform"),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("subject_token", token),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    change(&mut form);
    form
}

/// A form, as pairs in order.
type Form = Vec<(String, String)>;

fn set(form: &mut [(String, String)], name: &str, value: &str) {
    if let Some(field) = form.iter_mut().find(|(k, _)| k == name) {
        field.1 = value.to_owned();
    }
}

fn exchange(config: &Config, form: &[(String, String)]) -> Result<sts::Grant, sts::OAuthError> {
    let fields: Map<String, Value> = sts::fields(form)?;
    sts::exchange(config, &fields, NOW)
}

#[test]
fn a_well_formed_exchange_is_granted_the_subjects_principal() {
    let (config, key) = setup();
    let token = format!("{}\n", subject(&key, |_| {}));
    let grant = exchange(&config, &form(&token, |_| {})).expect("grant");
    assert_eq!(
        grant.principal,
        "principal://iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/pool/subject/system:serviceaccount:ns:ksa"
    );
    assert_eq!(
        grant.scopes,
        ["https://www.googleapis.com/auth/cloud-platform"]
    );
}

#[test]
fn each_wrong_form_is_refused_in_googles_code() {
    let (config, key) = setup();
    let token = subject(&key, |_| {});
    let code = |change: &dyn Fn(&mut Form)| {
        exchange(&config, &form(&token, |f| change(f)))
            .expect_err("refused")
            .error
    };
    assert_eq!(
        code(&|f| f.push(("extra".into(), "x".into()))),
        "invalid_request"
    );
    assert_eq!(
        code(&|f| f.push(("scope".into(), "x".into()))),
        "invalid_request"
    );
    assert_eq!(
        code(&|f| set(f, "grant_type", "client_credentials")),
        "unsupported_grant_type"
    );
    assert_eq!(
        code(&|f| f.retain(|(k, _)| k != "grant_type")),
        "invalid_request"
    );
    assert_eq!(
        code(&|f| set(
            f,
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:id_token"
        )),
        "invalid_request"
    );
    assert_eq!(
        code(&|f| set(
            f,
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:saml2"
        )),
        "invalid_request"
    );
    assert_eq!(
        code(&|f| f.retain(|(k, _)| k != "scope")),
        "invalid_request"
    );
    assert_eq!(
        code(&|f| f.retain(|(k, _)| k != "subject_token")),
        "invalid_request"
    );
    for audience in [
        "projects/9/locations/global/workloadIdentityPools/pool/providers/prov",
        "//iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/pool",
        "identitynamespace:p.svc.id.goog:https://issuer",
    ] {
        let refused =
            exchange(&config, &form(&token, |f| set(f, "audience", audience))).expect_err(audience);
        assert_eq!(
            (refused.error, refused.description.as_str()),
            ("invalid_request", sts::INVALID_AUDIENCE)
        );
    }
    let other = "//iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/pool/providers/other";
    let refused =
        exchange(&config, &form(&token, |f| set(f, "audience", other))).expect_err("other");
    assert_eq!(
        (refused.error, refused.description.as_str()),
        ("invalid_target", sts::INVALID_TARGET)
    );
    let disabled = Config {
        disabled: true,
        ..config.clone()
    };
    assert_eq!(
        exchange(&disabled, &form(&token, |_| {}))
            .expect_err("disabled")
            .error,
        "invalid_target"
    );
}

#[test]
fn each_wrong_subject_token_is_an_invalid_grant() {
    let (config, key) = setup();
    let refused = |token: String| exchange(&config, &form(&token, |_| {})).expect_err("refused");
    let aud = refused(subject(&key, |c| c["aud"] = json!(["p.svc.id.goog"])));
    assert_eq!(
        (aud.error, aud.description.as_str()),
        (
            "invalid_grant",
            "The audience in ID Token [p.svc.id.goog] does not match the expected audience."
        )
    );
    for token in [
        subject(&key, |c| c["iss"] = json!("https://elsewhere")),
        subject(&key, |c| c["exp"] = json!(NOW - 100)),
        subject(&key, |c| c["iat"] = json!(NOW - 49 * 3600)),
        subject(&key, |c| c["nbf"] = json!(NOW + 600)),
        subject(
            &SigningKey::generate(wid_jose::Algorithm::Rs256).expect("key"),
            |_| {},
        ),
        "not.a.jwt".to_owned(),
    ] {
        assert_eq!(refused(token).error, "invalid_grant");
    }
    let long = refused(subject(&key, |c| c["sub"] = json!("s".repeat(128))));
    assert!(long.description.contains("127 bytes"), "{long:?}");
    // The provider's name with https:// is accepted as Google accepts it; so are its own
    // audiences when it has some.
    let https = format!("https://{}", AUDIENCE.trim_start_matches("//"));
    assert!(
        exchange(
            &config,
            &form(&subject(&key, |c| c["aud"] = json!(https)), |_| {})
        )
        .is_ok()
    );
    let own = Config {
        allowed_audiences: vec!["sts.example".into()],
        ..config.clone()
    };
    assert!(
        exchange(
            &own,
            &form(&subject(&key, |c| c["aud"] = json!("sts.example")), |_| {})
        )
        .is_ok()
    );
    assert_eq!(
        exchange(&own, &form(&subject(&key, |_| {}), |_| {}))
            .expect_err("own")
            .error,
        "invalid_grant"
    );
}

#[test]
fn iam_credentials_checks_the_name_the_caller_and_the_binding() {
    let (mut config, _) = setup();
    let principal = config.principal("system:serviceaccount:ns:ksa");
    config.service_accounts.insert(
        "sa@p.iam.gserviceaccount.com".into(),
        vec![principal.clone()],
    );
    assert_eq!(
        credentials::route("p", "sa@p.iam.gserviceaccount.com:generateAccessToken")
            .expect_err("project")
            .code,
        400
    );
    assert_eq!(
        credentials::route("-", "sa@p.iam.gserviceaccount.com:signBlob")
            .expect_err("verb")
            .code,
        404
    );
    let federated = Federated {
        principal,
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        expires_at: NOW + 60,
    };
    let found = |f: Federated| move |_: &str| Some(f.clone());
    assert_eq!(
        credentials::caller(None, found(federated.clone()), NOW)
            .expect_err("none")
            .code,
        401
    );
    assert_eq!(
        credentials::caller(Some("Bearer t"), |_: &str| None, NOW)
            .expect_err("unknown")
            .code,
        401
    );
    assert_eq!(
        credentials::caller(Some("Bearer t"), found(federated.clone()), NOW + 61)
            .expect_err("expired")
            .code,
        401
    );
    let narrow = Federated {
        scopes: vec!["https://www.googleapis.com/auth/devstorage.read_only".into()],
        ..federated.clone()
    };
    assert_eq!(
        credentials::caller(Some("Bearer t"), found(narrow), NOW)
            .expect_err("scope")
            .code,
        403
    );
    let caller = credentials::caller(Some("Bearer t"), found(federated), NOW).expect("caller");
    assert!(
        credentials::authorize(
            &config,
            &caller,
            "sa@p.iam.gserviceaccount.com",
            Method::IdToken
        )
        .is_ok()
    );
    config
        .service_accounts
        .insert("unbound@p.iam.gserviceaccount.com".into(), Vec::new());
    let denied = credentials::authorize(
        &config,
        &caller,
        "unbound@p.iam.gserviceaccount.com",
        Method::AccessToken,
    )
    .expect_err("denied");
    assert_eq!(denied.code, 403);
    assert_eq!(
        denied.body["error"]["message"],
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
    );
    assert_eq!(
        denied.body["error"]["details"][0]["reason"],
        "IAM_PERMISSION_DENIED"
    );
    let missing = credentials::authorize(
        &config,
        &caller,
        "nobody@p.iam.gserviceaccount.com",
        Method::AccessToken,
    )
    .expect_err("missing");
    assert_eq!(
        (missing.code, missing.body["error"]["message"].as_str()),
        (
            404,
            Some("Not found; Gaia id not found for email nobody@p.iam.gserviceaccount.com")
        )
    );
    assert!(credentials::access_token_request(&json!({"scope": []})).is_err());
    assert!(
        credentials::access_token_request(&json!({"scope": ["s"], "lifetime": "7200s"})).is_err()
    );
    assert_eq!(
        credentials::access_token_request(
            &json!({"scope": ["s"], "lifetime": "1800s", "delegates": null})
        )
        .expect("ok")
        .1,
        1800
    );
    assert!(credentials::id_token_request(&json!({"includeEmail": true})).is_err());
}
