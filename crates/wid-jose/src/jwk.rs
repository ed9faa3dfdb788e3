//! JSON Web Keys (RFC 7517) as wid reads and publishes them.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

use crate::{Algorithm, JoseError, b64, unb64};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWK set; one with a key twice in an object is refused, as every JSON wid trusts.
    pub fn parse(text: &str) -> Result<Jwks, JoseError> {
        wid_api::json::from_str(text)
            .map_err(|e| JoseError::InvalidKey(format!("not a JWK set: {e}")))
    }
}

/// A public key ready to verify signatures.
pub(crate) enum VerifyingKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point, 0x04 || x || y.
    P256(Vec<u8>),
}

fn part(value: &Option<String>, name: &str) -> Result<Vec<u8>, JoseError> {
    let text = value
        .as_deref()
        .ok_or_else(|| JoseError::InvalidKey(format!("missing '{name}'")))?;
    unb64(text)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| JoseError::InvalidKey(format!("'{name}' is not base64url")))
}

impl Jwk {
    /// The key to verify `alg` signatures with; refuses a key of another type or curve.
    pub(crate) fn verifying_key(&self, alg: Algorithm) -> Result<VerifyingKey, JoseError> {
        let mismatch = || JoseError::KeyMismatch {
            kid: self.kid.clone().unwrap_or_default(),
            kty: self.kty.clone(),
            alg: alg.name().to_owned(),
        };
        if self.alg.as_deref().is_some_and(|a| a != alg.name()) {
            return Err(mismatch());
        }
        match (alg, self.kty.as_str()) {
            (Algorithm::Rs256, "RSA") => Ok(VerifyingKey::Rsa {
                n: part(&self.n, "n")?,
                e: part(&self.e, "e")?,
            }),
            (Algorithm::Es256, "EC") if self.crv.as_deref() == Some("P-256") => {
                let (x, y) = (part(&self.x, "x")?, part(&self.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JoseError::InvalidKey(
                        "P-256 coordinates are 32 bytes".into(),
                    ));
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(VerifyingKey::P256(point))
            }
            _ => Err(mismatch()),
        }
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexical order.
    pub fn thumbprint(&self) -> Result<String, JoseError> {
        let canonical = match self.kty.as_str() {
            "RSA" => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                self.e.as_deref().unwrap_or_default(),
                self.n.as_deref().unwrap_or_default()
            ),
            "EC" => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                self.crv.as_deref().unwrap_or_default(),
                self.x.as_deref().unwrap_or_default(),
                self.y.as_deref().unwrap_or_default()
            ),
            other => {
                return Err(JoseError::InvalidKey(format!(
                    "no thumbprint for key type {other}"
                )));
            }
        };
        Ok(b64(
            digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 section 3.1's example.
    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = Jwk {
            kty: "RSA".into(),
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
            ..Jwk::default()
        };
        assert_eq!(
            jwk.thumbprint().expect("thumbprint"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
