//! JOSE for wid, with no I/O: compact JWS signing on pre-parsed keys, verification of JWTs
//! against a JWK set, JWK export with RFC 7638 thumbprint key ids, and self-signed certificates
//! for the PEM key map that Google's `/oauth2/v1/certs` serves.
//!
//! One crypto backend: aws-lc-rs. Keys are parsed once, when loaded, and kept parsed: signing
//! through a crate that re-parses the private key on each signature measured three times slower
//! (rust-stack.md 1.4).
//!
//! Layout:
//! - [`jwk`]: JSON Web Keys and key sets, and turning one into a verifying key.
//! - [`jws`]: parsing compact JWS (bounded, typed errors) and verifying one against a key set.
//! - [`signer`]: [`SigningKey`], RS256 and ES256.
//! - [`claims`]: time checks on a verified token's claims.

pub mod claims;
pub mod jwk;
pub mod jws;
pub mod signer;

pub use jwk::{Jwk, Jwks};
pub use jws::{Header, Verified, verify};
pub use signer::SigningKey;

use base64::Engine;

/// The JWS algorithms wid signs with and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: ID tokens, as Google's are.
    Rs256,
    /// ECDSA P-256 with SHA-256: compact and fast, for access tokens.
    Es256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }
}

/// Why a token or key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the signing algorithm '{0}' is not accepted; use RS256 or ES256")]
    UnsupportedAlgorithm(String),
    #[error("the token header has no 'kid'")]
    MissingKid,
    #[error("no key with kid '{0}' is known")]
    UnknownKid(String),
    #[error("the key with kid '{kid}' is of type {kty}, which cannot verify {alg}")]
    KeyMismatch {
        kid: String,
        kty: String,
        alg: String,
    },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("signing failed")]
    Signing,
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding, as JOSE writes it; padding is tolerated.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}
