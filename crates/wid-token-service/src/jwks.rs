//! Checks that a JSON Web Key Set is one wid can verify tokens with: RSA or EC public keys for
//! signatures.

use serde_json::Value;

/// At most this many keys in a set.
pub const MAX_KEYS: usize = 32;

/// Validates `text` as a JWKS: `{"keys": [...]}` with 1 to [`MAX_KEYS`] public RSA (`n`, `e`) or
/// EC (`crv` P-256/P-384/P-521, `x`, `y`) keys, `use` absent or `sig`, and no private parts; no
/// object in it has a key twice.
pub fn validate(text: &str) -> Result<(), String> {
    let doc: Value = wid_api::json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWKS is an object with a \"keys\" array")?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(format!(
            "a JWKS needs 1 to {MAX_KEYS} keys; this one has {}",
            keys.len()
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        let field = |name: &str| key.get(name).and_then(Value::as_str);
        let has = |name: &str| field(name).is_some_and(|v| !v.is_empty());
        match field("kty") {
            Some("RSA") if has("n") && has("e") => {}
            Some("EC")
                if has("x")
                    && has("y")
                    && matches!(field("crv"), Some("P-256" | "P-384" | "P-521")) => {}
            Some("RSA") => return Err(format!("key {i}: an RSA key needs \"n\" and \"e\"")),
            Some("EC") => {
                return Err(format!(
                    "key {i}: an EC key needs \"crv\" (P-256, P-384 or P-521), \"x\" and \"y\""
                ));
            }
            Some(other) => {
                return Err(format!(
                    "key {i}: key type \"{other}\" is not supported; use RSA or EC"
                ));
            }
            None => return Err(format!("key {i}: \"kty\" is missing")),
        }
        if let Some(u) = key.get("use")
            && u.as_str() != Some("sig")
        {
            return Err(format!("key {i}: \"use\" must be \"sig\""));
        }
        if key.get("d").is_some() {
            return Err(format!(
                "key {i} holds a private key; upload only public keys"
            ));
        }
        if key.get("kid").is_some_and(|k| !k.is_string()) {
            return Err(format!("key {i}: \"kid\" must be a string"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_public_signing_keys() {
        assert!(validate(r#"{"keys":[{"kty":"RSA","n":"abc","e":"AQAB","kid":"k1","use":"sig","alg":"RS256"}]}"#).is_ok());
        assert!(validate(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}"#).is_ok());
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "",
            "[]",
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"oct","k":"x"}]}"#,
            r#"{"keys":[{"kty":"RSA","n":"x"}]}"#,
            r#"{"keys":[{"kty":"EC","crv":"P-192","x":"a","y":"b"}]}"#,
            r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB","d":"secret"}]}"#,
            r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB","use":"enc"}]}"#,
            // A key twice: wid would read the last, another reader the first.
            r#"{"keys":[{"kty":"RSA","n":"x","e":"AQAB","use":"enc","use":"sig"}]}"#,
            r#"{"keys":[{"kty":"oct","k":"x","\u006bty":"RSA","n":"x","e":"AQAB"}]}"#,
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
