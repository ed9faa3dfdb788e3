//! The X.509 certificates of uploaded keys, read with x509-parser: what `keys:upload` takes and
//! what `TYPE_RAW_PUBLIC_KEY` gives back.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use wid_jose::jwk::Jwk;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::parse_x509_pem;
use x509_parser::public_key::PublicKey;

use crate::error::ApiError;

/// An uploaded certificate, checked: its PEM (re-encoded from its DER: nothing else the upload
/// held is kept), the end of its validity (Unix seconds), its public key's fingerprint and RSA
/// modulus.
pub(crate) struct Uploaded {
    pub pem: String,
    pub not_after: i64,
    pub public_key_sha256: String,
    /// The modulus as a JWK's `n` (base64url).
    pub modulus: String,
}

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::invalid("publicKeyData", message)
}

/// `publicKeyData` of an upload: base64 of one PEM certificate of an RSA key of at least 2048
/// bits, valid at `now`.
pub(crate) fn read_uploaded(public_key_data: &str, now: i64) -> Result<Uploaded, ApiError> {
    let pem_bytes = STANDARD
        .decode(public_key_data.trim())
        .map_err(|_| refused("publicKeyData must be the base64 of a PEM X.509 certificate."))?;
    let (rest, pem) = parse_x509_pem(&pem_bytes)
        .map_err(|_| refused("publicKeyData holds no PEM certificate."))?;
    // One certificate and nothing else: a private key pasted after it must not be kept.
    if !rest.iter().all(u8::is_ascii_whitespace)
        || pem_bytes
            .windows(11)
            .filter(|w| *w == b"-----BEGIN ")
            .count()
            != 1
    {
        return Err(refused(
            "publicKeyData must hold one PEM certificate and nothing else.",
        ));
    }
    if pem.label != "CERTIFICATE" {
        return Err(refused(format!(
            "publicKeyData holds a PEM '{}', not a CERTIFICATE.",
            pem.label
        )));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| refused(format!("The certificate cannot be read: {e}.")))?;
    let modulus = match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) if (2048..=8192).contains(&rsa.key_size()) => unsigned(rsa.modulus),
        Ok(PublicKey::RSA(rsa)) => {
            return Err(refused(format!(
                "The key is RSA of {} bits; 2048 to 8192 are taken.",
                rsa.key_size()
            )));
        }
        _ => return Err(refused("The certificate's key is not RSA.")),
    };
    let public_key_sha256 = crate::auth::digest(cert.public_key().raw);
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if not_after <= now || not_before > now {
        return Err(refused("The certificate is not valid now."));
    }
    Ok(Uploaded {
        pem: pem_of(&pem.contents),
        not_after,
        public_key_sha256,
        modulus,
    })
}

/// A certificate's DER as PEM, 64 columns.
fn pem_of(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The fingerprint of a stored (or just made) certificate's public key.
pub(crate) fn public_key_sha256(certificate_pem: &str) -> Result<String, ApiError> {
    stored(certificate_pem, |cert| {
        Ok(crate::auth::digest(cert.public_key().raw))
    })
}

/// A DER integer as a JWK number: base64url, without the leading zero byte DER adds when the
/// top bit is set.
fn unsigned(bytes: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    URL_SAFE_NO_PAD.encode(&bytes[start..])
}

/// `read` of a stored certificate, parsed: one that cannot be is the store's fault.
fn stored<T>(
    certificate_pem: &str,
    read: impl FnOnce(&X509Certificate<'_>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let broken = |e: String| ApiError::Internal(format!("a stored key certificate is broken: {e}"));
    let (_, pem) = parse_x509_pem(certificate_pem.as_bytes()).map_err(|e| broken(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| broken(e.to_string()))?;
    read(&cert)
}

/// The DER SubjectPublicKeyInfo of a stored certificate.
pub(crate) fn public_key_der(certificate_pem: &str) -> Result<Vec<u8>, ApiError> {
    stored(certificate_pem, |cert| Ok(cert.public_key().raw.to_vec()))
}

/// The JWK (RS256) of a stored certificate's RSA key, with `kid`, as Google's per-account JWK
/// document lists a key.
pub(crate) fn rsa_jwk(certificate_pem: &str, kid: &str) -> Result<Jwk, ApiError> {
    stored(certificate_pem, |cert| {
        let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() else {
            return Err(ApiError::Internal(
                "a stored key certificate is broken: not an RSA key".into(),
            ));
        };
        Ok(Jwk {
            kty: "RSA".into(),
            alg: Some("RS256".into()),
            use_: Some("sig".into()),
            kid: Some(kid.to_owned()),
            n: Some(unsigned(rsa.modulus)),
            e: Some(unsigned(rsa.exponent)),
            ..Jwk::default()
        })
    })
}
