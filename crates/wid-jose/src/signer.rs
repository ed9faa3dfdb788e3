//! Signing keys, parsed once and kept parsed.

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde::Serialize;

use crate::jwk::Jwk;
use crate::{Algorithm, JoseError, b64};

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private signing key with its `kid` (the RFC 7638 thumbprint of its public key) and its JWT
/// headers encoded once.
pub struct SigningKey {
    alg: Algorithm,
    kid: String,
    inner: Inner,
    pkcs8: Vec<u8>,
    jwk: Jwk,
    header_jwt: String,
    header_at_jwt: String,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The JWT `typ` of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// `JWT`: ID tokens and signJwt.
    Jwt,
    /// `at+jwt` (RFC 9068): access tokens.
    AccessToken,
}

fn header(alg: Algorithm, kid: &str, typ: &str) -> String {
    let json = serde_json::json!({ "alg": alg.name(), "kid": kid, "typ": typ });
    b64(json.to_string().as_bytes())
}

impl SigningKey {
    /// A new random key: RSA-2048 for RS256, P-256 for ES256.
    pub fn generate(alg: Algorithm) -> Result<SigningKey, JoseError> {
        let pkcs8 = match alg {
            Algorithm::Rs256 => {
                let pair =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| JoseError::Signing)?;
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&pair)
                    .map_err(|_| JoseError::Signing)?;
                der.as_ref().to_vec()
            }
            Algorithm::Es256 => EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(|_| JoseError::Signing)?
            .as_ref()
            .to_vec(),
        };
        SigningKey::from_pkcs8(alg, &pkcs8)
    }

    /// Loads a PKCS#8 private key.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Result<SigningKey, JoseError> {
        let bad = |e: String| JoseError::InvalidKey(e);
        let (inner, mut jwk) = match alg {
            Algorithm::Rs256 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| bad(e.to_string()))?;
                let components: PublicKeyComponents<Vec<u8>> = pair.public_key().into();
                let jwk = Jwk {
                    kty: "RSA".into(),
                    n: Some(b64(&components.n)),
                    e: Some(b64(&components.e)),
                    ..Jwk::default()
                };
                (Inner::Rsa(pair), jwk)
            }
            Algorithm::Es256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                        .map_err(|e| bad(e.to_string()))?;
                let point = pair.public_key().as_ref();
                if point.len() != 65 || point[0] != 0x04 {
                    return Err(bad("unexpected P-256 public key encoding".into()));
                }
                let jwk = Jwk {
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: Some(b64(&point[1..33])),
                    y: Some(b64(&point[33..65])),
                    ..Jwk::default()
                };
                (Inner::Ec(pair), jwk)
            }
        };
        let kid = jwk.thumbprint()?;
        jwk.kid = Some(kid.clone());
        jwk.alg = Some(alg.name().to_owned());
        jwk.use_ = Some("sig".into());
        Ok(SigningKey {
            alg,
            header_jwt: header(alg, &kid, "JWT"),
            header_at_jwt: header(alg, &kid, "at+jwt"),
            kid,
            inner,
            pkcs8: pkcs8.to_vec(),
            jwk,
            rng: SystemRandom::new(),
        })
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key, PKCS#8 DER, for storage. Handle as a secret.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `message`: RSASSA-PKCS1-v1_5 with SHA-256, or ECDSA P-256 with SHA-256 as the fixed
    /// 64-byte `r || s` JWS uses.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        match &self.inner {
            Inner::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| JoseError::Signing)?;
                Ok(sig)
            }
            Inner::Ec(pair) => Ok(pair
                .sign(&self.rng, message)
                .map_err(|_| JoseError::Signing)?
                .as_ref()
                .to_vec()),
        }
    }

    /// A compact JWS of `claims` with this key's header.
    pub fn sign_jwt(&self, typ: TokenType, claims: &impl Serialize) -> Result<String, JoseError> {
        let payload = serde_json::to_vec(claims).map_err(|_| JoseError::Signing)?;
        self.sign_jws_payload(typ, &payload)
    }

    /// A compact JWS over raw claims bytes (signJwt signs the caller's JSON as given).
    pub fn sign_jws_payload(&self, typ: TokenType, payload: &[u8]) -> Result<String, JoseError> {
        let header = match typ {
            TokenType::Jwt => &self.header_jwt,
            TokenType::AccessToken => &self.header_at_jwt,
        };
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header);
        token.push('.');
        token.push_str(&b64(payload));
        let signature = self.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64(&signature));
        Ok(token)
    }

    /// The private key as PEM (`PRIVATE KEY`, PKCS#8), as a service-account key file holds it.
    pub fn private_key_pem(&self) -> Result<String, JoseError> {
        let pair = rcgen::KeyPair::try_from(self.pkcs8.as_slice())
            .map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        Ok(pair.serialize_pem())
    }

    /// A self-signed X.509 certificate for the public key, PEM-encoded, as Google's
    /// `/oauth2/v1/certs` map holds them (Java and the SDK's google-auth read certificates there).
    pub fn certificate_pem(
        &self,
        common_name: &str,
        not_before_unix: i64,
        not_after_unix: i64,
    ) -> Result<String, JoseError> {
        let pair = rcgen::KeyPair::try_from(self.pkcs8.as_slice())
            .map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let time = |t: i64| {
            rcgen::date_time_ymd(1970, 1, 1)
                + std::time::Duration::from_secs(u64::try_from(t).unwrap_or(0))
        };
        params.not_before = time(not_before_unix);
        params.not_after = time(not_after_unix);
        let cert = params
            .self_signed(&pair)
            .map_err(|e| JoseError::InvalidKey(e.to_string()))?;
        Ok(cert.pem())
    }
}
