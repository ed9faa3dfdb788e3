//! Compact JWS: parsing with bounds and typed errors, and verification against a key set.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwk::{Jwk, VerifyingKey};
use crate::{Algorithm, JoseError, unb64};

/// Tokens above this size are refused before any decoding (Google caps STS tokens at 12 KiB;
/// Kubernetes tokens are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Header {
    #[serde(default)]
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub typ: Option<String>,
    /// Critical extensions: wid understands none, so any makes the token unacceptable.
    #[serde(default)]
    pub crit: Option<Value>,
}

/// A compact JWS split and decoded, not yet verified.
pub struct Parsed<'a> {
    pub header: Header,
    pub claims: Map<String, Value>,
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS whose payload is a JSON object.
pub fn parse(token: &str) -> Result<Parsed<'_>, JoseError> {
    let malformed = |why: &str| JoseError::Malformed(why.to_owned());
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed("it is larger than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a JWT has three dot-separated parts"));
    };
    let header_bytes = unb64(h).ok_or_else(|| malformed("the header is not base64url"))?;
    let header: Header = json_part(&header_bytes, "header")?;
    let payload = unb64(p).ok_or_else(|| malformed("the payload is not base64url"))?;
    let claims: Map<String, Value> = json_part(&payload, "payload")?;
    let signature = unb64(s).ok_or_else(|| malformed("the signature is not base64url"))?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(Parsed {
        header,
        claims,
        signing_input,
        signature,
    })
}

/// A header or payload: a JSON object whose keys are unique at every depth, since a token
/// with a claim twice means one thing to wid (serde keeps the last) and another to a verifier
/// that keeps the first.
fn json_part<T: serde::de::DeserializeOwned>(json: &[u8], part: &str) -> Result<T, JoseError> {
    wid_api::json::from_slice(json).map_err(|e| {
        JoseError::Malformed(format!(
            "the {part} is not a JSON object with unique keys ({e})"
        ))
    })
}

/// A token whose signature verified.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub alg: Algorithm,
    pub kid: String,
    pub header: Header,
    pub claims: Map<String, Value>,
}

/// Verifies a compact JWS against `keys`: the header names an accepted algorithm (RS256 or
/// ES256; `none`, HMAC and all others are refused) and a `kid`, the key with that `kid` is of the
/// algorithm's type, and the signature verifies. Claims are not checked here (see
/// [`crate::claims`]).
pub fn verify(token: &str, keys: &[Jwk]) -> Result<Verified, JoseError> {
    let parsed = parse(token)?;
    let alg = accepted_algorithm(&parsed.header)?;
    let kid = parsed
        .header
        .kid
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or(JoseError::MissingKid)?;
    let jwk = keys
        .iter()
        .find(|k| k.kid.as_deref() == Some(kid.as_str()))
        .ok_or_else(|| JoseError::UnknownKid(kid.clone()))?;
    check_signature(&parsed, alg, jwk)?;
    Ok(Verified {
        alg,
        kid,
        header: parsed.header,
        claims: parsed.claims,
    })
}

/// Verifies a compact JWS against the one key `jwk`, which the caller found by other means than
/// the header's `kid` (a JWT-bearer grant names its account by `iss`; Node's google-auth-library
/// sends no `kid`): the algorithm rules of [`verify`], and the signature.
pub fn verify_with_key(token: &str, jwk: &Jwk) -> Result<Verified, JoseError> {
    let parsed = parse(token)?;
    let alg = accepted_algorithm(&parsed.header)?;
    check_signature(&parsed, alg, jwk)?;
    Ok(Verified {
        alg,
        kid: parsed.header.kid.clone().unwrap_or_default(),
        header: parsed.header,
        claims: parsed.claims,
    })
}

/// The header's algorithm, if wid accepts it and the header asks nothing else of it.
fn accepted_algorithm(header: &Header) -> Result<Algorithm, JoseError> {
    let alg = Algorithm::parse(&header.alg)
        .ok_or_else(|| JoseError::UnsupportedAlgorithm(header.alg.clone()))?;
    if header.crit.is_some() {
        return Err(JoseError::Malformed(
            "the header has critical extensions wid does not understand".into(),
        ));
    }
    Ok(alg)
}

/// Whether `parsed`'s signature is `jwk`'s, by `alg`.
fn check_signature(parsed: &Parsed<'_>, alg: Algorithm, jwk: &Jwk) -> Result<(), JoseError> {
    let message = parsed.signing_input.as_bytes();
    let ok = match jwk.verifying_key(alg)? {
        VerifyingKey::Rsa { n, e } => aws_lc_rs::rsa::PublicKeyComponents {
            n: &n[..],
            e: &e[..],
        }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            message,
            &parsed.signature,
        )
        .is_ok(),
        VerifyingKey::P256(point) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                .verify(message, &parsed.signature)
                .is_ok()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(JoseError::BadSignature)
    }
}

#[cfg(test)]
mod tests;
