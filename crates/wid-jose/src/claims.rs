//! Time checks on a verified token's claims, with the clock passed in.

use serde_json::{Map, Value};

/// The acceptance window of a token at `now`.
#[derive(Clone, Copy, Debug)]
pub struct TimeRules {
    /// Seconds of clock difference tolerated on `iat`, `nbf` and `exp`.
    pub skew: i64,
    /// The longest `exp - iat` accepted (Google's STS: under 48 h).
    pub max_lifetime: i64,
}

/// A NumericDate claim as whole seconds. Fractions are accepted (RFC 7519 allows them) when
/// they fit; anything else is refused rather than saturated.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    const LIMIT: f64 = 1e15;
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if i.abs() < LIMIT as i64 => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < LIMIT => Ok(Some(f.trunc() as i64)),
            _ => Err(format!("the '{name}' claim is not a time")),
        },
        Some(_) => Err(format!("the '{name}' claim is not a number")),
    }
}

/// Checks `exp` (required), `iat` (required), and `nbf` (when present) at `now`.
pub fn check_times(claims: &Map<String, Value>, now: i64, rules: TimeRules) -> Result<(), String> {
    let exp = seconds(claims, "exp")?.ok_or("the token has no 'exp' claim")?;
    let iat = seconds(claims, "iat")?.ok_or("the token has no 'iat' claim")?;
    if now > exp.saturating_add(rules.skew) {
        return Err(format!(
            "the token expired at {exp}, {} s ago",
            now.saturating_sub(exp)
        ));
    }
    if iat > now.saturating_add(rules.skew) {
        return Err(format!(
            "the token was issued in the future (iat {iat}, now {now})"
        ));
    }
    if let Some(nbf) = seconds(claims, "nbf")?
        && nbf > now.saturating_add(rules.skew)
    {
        return Err(format!("the token is not valid before {nbf} (now {now})"));
    }
    if exp.saturating_sub(iat) >= rules.max_lifetime {
        return Err(format!(
            "the token lives {} s, longer than the {} s accepted",
            exp.saturating_sub(iat),
            rules.max_lifetime
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TimeRules = TimeRules {
        skew: 30,
        max_lifetime: 48 * 3600,
    };

    fn claims(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn windows() {
        let now = 1_000_000;
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": now - 10, "exp": now + 600, "nbf": now - 10})),
                now,
                RULES
            )
            .is_ok()
        );
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": now - 700, "exp": now - 31})),
                now,
                RULES
            )
            .is_err()
        );
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": now - 700, "exp": now - 29})),
                now,
                RULES
            )
            .is_ok()
        );
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": now + 60, "exp": now + 600})),
                now,
                RULES
            )
            .is_err()
        );
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": now, "exp": now + 600, "nbf": now + 60})),
                now,
                RULES
            )
            .is_err()
        );
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": now, "exp": now + 48 * 3600})),
                now,
                RULES
            )
            .is_err()
        );
        assert!(check_times(&claims(serde_json::json!({"iat": now})), now, RULES).is_err());
        assert!(
            check_times(
                &claims(serde_json::json!({"iat": "x", "exp": now})),
                now,
                RULES
            )
            .is_err()
        );
    }
}
