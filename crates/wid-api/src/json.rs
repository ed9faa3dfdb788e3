//! JSON that wid signs or trusts has unique keys.
//!
//! RFC 8259 leaves an object with a key twice to each parser: serde_json keeps the last value,
//! other parsers keep the first or refuse. When wid checks one value and another party reads
//! the other (`{"exp": SOON, "exp": A_DECADE}` in a signJwt payload; two `sub` claims in a
//! subject token), the check is worth nothing, so such documents are refused before they are
//! used: signJwt payloads, the header and claims of every JWT wid verifies, JWK sets, OIDC
//! discovery documents and request bodies.
//!
//! The checker walks a document without building it. Keys are compared as serde_json hands
//! them to a visitor, that is unescaped, so `"\u0065xp"` and `"exp"` are one key.
//!
//! It lives here, the pure layer-0 crate of wire formats, because both wid-jose (JWTs, JWK
//! sets) and the token service (request bodies, discovery) need it: in wid-jose, the token
//! service would call the JOSE crate to read IAM request bodies.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

/// Fails when `json` is not one JSON value (surrounding whitespace allowed), or when one of its
/// objects, at any depth, has a key twice. The error names the key.
pub fn check_unique_keys(json: &[u8]) -> Result<(), serde_json::Error> {
    check(json, false)
}

/// [`check_unique_keys`], with keys that differ only in ASCII case taken as one: for JSON that
/// wid signs for others to read, since some readers match keys without case (Go's
/// `encoding/json` fills a struct's `exp` from `"EXP"`, the last one winning).
pub fn check_unique_keys_ignoring_case(json: &[u8]) -> Result<(), serde_json::Error> {
    check(json, true)
}

fn check(json: &[u8], ignore_case: bool) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    de::DeserializeSeed::deserialize(UniqueKeys { ignore_case }, &mut de)?;
    de.end()
}

/// `serde_json::from_slice`, refusing duplicate keys first.
pub fn from_slice<T: DeserializeOwned>(json: &[u8]) -> Result<T, serde_json::Error> {
    check_unique_keys(json)?;
    serde_json::from_slice(json)
}

/// `serde_json::from_str`, refusing duplicate keys first.
pub fn from_str<T: DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    from_slice(json.as_bytes())
}

/// A JSON value, seen and dropped; deserialising it is the check.
#[derive(Clone, Copy)]
struct UniqueKeys {
    ignore_case: bool,
}

impl<'de> de::DeserializeSeed<'de> for UniqueKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        // serde_json unescapes keys before handing them over.
        while let Some(key) = map.next_key::<String>()? {
            let compared = if self.ignore_case {
                key.to_ascii_lowercase()
            } else {
                key.clone()
            };
            if !seen.insert(compared) {
                return Err(de::Error::custom(format_args!("duplicate key '{key}'")));
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    #[test]
    fn keys_differing_in_case_only_are_one_key_for_what_wid_signs() {
        let payload = br#"{"sub": "a", "exp": 1, "nested": {"EXP": 2}, "EXP": 3}"#;
        assert!(
            check_unique_keys(payload).is_ok(),
            "spelt apart, they are apart"
        );
        let e = check_unique_keys_ignoring_case(payload).expect_err("EXP is exp");
        assert!(e.to_string().contains("duplicate key 'EXP'"), "{e}");
        assert!(check_unique_keys_ignoring_case(br#"{"a": {"b": 1}, "c": [{"b": 2}]}"#).is_ok());
        assert!(check_unique_keys_ignoring_case(br#"[{"Aud": 1, "aud": 2}]"#).is_err());
    }

    fn refused(json: &str) -> String {
        match check_unique_keys(json.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted {json}"),
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_and_spelling() {
        assert!(refused(r#"{"exp": 1, "exp": 2}"#).contains("duplicate key 'exp'"));
        assert!(refused(r#"{"exp": 1, "\u0065xp": 2}"#).contains("duplicate key 'exp'"));
        assert!(refused(r#"{"a": [{"b": {"c": 1, "d": 2, "c": 3}}]}"#).contains("'c'"));
        assert!(refused(r#"[1, {"x": null, "x": null}]"#).contains("'x'"));
        // Unicode escapes, surrogate pairs included, are one spelling of a key.
        assert!(refused(r#"{"😀": 1, "\ud83d\ude00": 2}"#).contains("duplicate key"));
    }

    #[test]
    fn documents_without_duplicates_pass() {
        for json in [
            r#"{"exp": 1, "Exp": 2, "ex": {"exp": 3}, "l": [{"exp": 4}, {"exp": 5}]}"#,
            "[]",
            "{}",
            " 1 ",
            r#""s""#,
            "null",
        ] {
            assert!(check_unique_keys(json.as_bytes()).is_ok(), "{json}");
        }
        assert!(check_unique_keys(b"{} {}").is_err(), "one value only");
        assert!(check_unique_keys(b"{").is_err());
        assert!(check_unique_keys(b"").is_err());
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-e\u{e9}\u{1f600}\"\\\\\n]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-e\u{e9}\u{1f600}]{0,3}", inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// `key` as a JSON string with every character escaped as `\uXXXX`.
    fn escaped_key(key: &str) -> String {
        let units: String = key.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
        format!("\"{units}\"")
    }

    fn text(value: &Value) -> String {
        serde_json::to_string(value).unwrap_or_default()
    }

    proptest! {
        #[test]
        fn unique_documents_pass_and_parse_as_serde_json(v in value()) {
            let json = text(&v);
            prop_assert!(check_unique_keys(json.as_bytes()).is_ok(), "{}", json);
            let ours: Value = from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let theirs: Value = serde_json::from_str(&json)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn a_repeated_key_is_refused_at_any_depth(
            key in "[a-e\u{e9}\u{1f600}]{0,3}",
            first in value(),
            second in value(),
            others in prop::collection::vec(("[f-h]{1,2}", value()), 0..3),
            wrappers in prop::collection::vec(prop::option::of("[a-y]{0,2}"), 0..4),
            escape in any::<bool>(),
        ) {
            let again = if escape { escaped_key(&key) } else { text(&Value::from(key.as_str())) };
            let others: Map<String, Value> = others.into_iter().collect();
            let mut entries = vec![format!("{}:{}", text(&Value::from(key.as_str())), text(&first))];
            entries.extend(others.iter().map(|(k, v)| format!("{}:{}", text(&Value::from(k.as_str())), text(v))));
            entries.push(format!("{again}:{}", text(&second)));
            let mut json = format!("{{{}}}", entries.join(","));
            // Nested in arrays (None) and objects (a key) around it.
            for wrapper in wrappers {
                json = match wrapper {
                    None => format!("[1,{json}]"),
                    Some(k) => format!("{{\"zz\":0,{}:{json}}}", text(&Value::from(k))),
                };
            }
            let error = check_unique_keys(json.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            prop_assert!(error.contains("duplicate key"), "{} accepted ({})", json, error);
            prop_assert!(from_str::<Value>(&json).is_err());
        }
    }
}
