use proptest::prelude::*;

use super::*;
use crate::signer::{SigningKey, TokenType};

fn keys() -> (SigningKey, SigningKey) {
    (
        SigningKey::generate(Algorithm::Rs256).expect("rsa"),
        SigningKey::generate(Algorithm::Es256).expect("ec"),
    )
}

#[test]
fn round_trip_both_algorithms() {
    let (rsa, ec) = keys();
    let set = vec![rsa.public_jwk().clone(), ec.public_jwk().clone()];
    for key in [&rsa, &ec] {
        let token = key
            .sign_jwt(TokenType::Jwt, &serde_json::json!({"sub": "x", "n": 1}))
            .expect("sign");
        let v = verify(&token, &set).expect("verifies");
        assert_eq!(v.alg, key.alg());
        assert_eq!(v.kid, key.kid());
        assert_eq!(v.claims["sub"], "x");
    }
    let reloaded = SigningKey::from_pkcs8(Algorithm::Rs256, rsa.pkcs8()).expect("reload");
    assert_eq!(reloaded.kid(), rsa.kid());
}

#[test]
fn refusals() {
    let (rsa, ec) = keys();
    let set = vec![rsa.public_jwk().clone()];
    let token = rsa
        .sign_jwt(TokenType::Jwt, &serde_json::json!({"sub": "x"}))
        .expect("sign");
    let parts: Vec<&str> = token.split('.').collect();
    let header = |json: &str| crate::b64(json.as_bytes());

    // Unknown key, wrong-type key, alg none and HS256, missing kid.
    let ec_token = ec
        .sign_jwt(TokenType::Jwt, &serde_json::json!({}))
        .expect("sign");
    assert!(matches!(
        verify(&ec_token, &set),
        Err(JoseError::UnknownKid(_))
    ));
    let mut mixed = ec.public_jwk().clone();
    mixed.kid = Some(rsa.kid().to_owned());
    assert!(matches!(
        verify(&token, &[mixed]),
        Err(JoseError::KeyMismatch { .. })
    ));
    for alg in ["none", "HS256", "RS512", ""] {
        let forged = format!(
            "{}.{}.{}",
            header(&format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, rsa.kid())),
            parts[1],
            parts[2]
        );
        assert!(
            matches!(
                verify(&forged, &set),
                Err(JoseError::UnsupportedAlgorithm(_))
            ),
            "{alg}"
        );
    }
    let no_kid = format!("{}.{}.{}", header(r#"{"alg":"RS256"}"#), parts[1], parts[2]);
    assert_eq!(verify(&no_kid, &set), Err(JoseError::MissingKid));
    let crit = format!(
        "{}.{}.{}",
        header(&format!(
            r#"{{"alg":"RS256","kid":"{}","crit":["x"]}}"#,
            rsa.kid()
        )),
        parts[1],
        parts[2]
    );
    assert!(matches!(verify(&crit, &set), Err(JoseError::Malformed(_))));

    // Tampering anywhere breaks the signature.
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        crate::b64(br#"{"sub":"y"}"#),
        parts[2]
    );
    assert_eq!(
        verify(&tampered_payload, &set),
        Err(JoseError::BadSignature)
    );
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(verify(&unsigned, &set), Err(JoseError::BadSignature));

    // Malformed shapes.
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!.b.c",
        &format!("{}.!!.{}", parts[0], parts[2]),
        &"a".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        assert!(
            matches!(verify(bad, &set), Err(JoseError::Malformed(_))),
            "{bad:.40}"
        );
    }
}

/// A header or claims set with a key twice is malformed, however the key is spelt: wid would
/// read the last value, another verifier the first.
#[test]
fn duplicate_keys_are_malformed() {
    let (rsa, _) = keys();
    let set = vec![rsa.public_jwk().clone()];
    let kid = rsa.kid();
    let good_header = format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#);
    for (header, claims) in [
        (good_header.as_str(), r#"{"sub":"a","sub":"b"}"#),
        (good_header.as_str(), r#"{"sub":"a","\u0073ub":"b"}"#),
        (good_header.as_str(), r#"{"sub":"a","x":{"y":1,"y":2}}"#),
        (
            &format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT","x":[{{"t":1,"t":2}}]}}"#),
            r#"{"sub":"a"}"#,
        ),
    ] {
        // Signed as is, so that only the duplicate is wrong.
        let input = format!(
            "{}.{}",
            crate::b64(header.as_bytes()),
            crate::b64(claims.as_bytes())
        );
        let token = format!(
            "{input}.{}",
            crate::b64(&rsa.sign(input.as_bytes()).expect("sign"))
        );
        assert!(
            matches!(parse(&token), Err(JoseError::Malformed(why)) if why.contains("duplicate key")),
            "{header} {claims}"
        );
        assert!(matches!(verify(&token, &set), Err(JoseError::Malformed(_))));
    }
}

#[test]
fn a_jwk_set_with_a_key_twice_is_refused() {
    let (rsa, _) = keys();
    let jwk = serde_json::to_string(rsa.public_jwk()).expect("jwk");
    assert!(crate::Jwks::parse(&format!(r#"{{"keys":[{jwk}]}}"#)).is_ok());
    // A member wid reads, and one it ignores (serde derive refuses only the former).
    for (twice, key) in [
        (r#""kid":"other","#, "kid"),
        (r#""x5t":"a","x5t":"b","#, "x5t"),
    ] {
        let jwk = jwk.replacen('{', &format!("{{{twice}"), 1);
        assert!(
            matches!(
                crate::Jwks::parse(&format!(r#"{{"keys":[{jwk}]}}"#)),
                Err(JoseError::InvalidKey(why)) if why.contains(&format!("duplicate key '{key}'"))
            ),
            "{jwk}"
        );
    }
}

proptest! {
    /// Flipping any byte of a signed token makes it fail to verify (or to parse).
    #[test]
    fn any_tampering_is_detected(index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let key = SigningKey::generate(Algorithm::Es256).expect("ec");
        let token = key.sign_jwt(TokenType::AccessToken, &serde_json::json!({"sub": "s", "scope": "a b"})).expect("sign");
        let mut bytes = token.clone().into_bytes();
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        if let Ok(text) = String::from_utf8(bytes)
            && text != token
        {
            prop_assert!(verify(&text, &[key.public_jwk().clone()]).is_err());
        }
    }

    /// The parser never panics.
    #[test]
    fn parser_never_panics(s in "\\PC{0,300}") {
        let _ = parse(&s);
    }
}
