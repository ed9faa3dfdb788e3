//! The X.509 certificates of uploaded keys, read with x509-parser: what `keys:upload` takes and
//! what `TYPE_RAW_PUBLIC_KEY` gives back.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x509_parser::pem::parse_x509_pem;
use x509_parser::public_key::PublicKey;

use crate::error::ApiError;

/// An uploaded certificate, checked: its PEM and the end of its validity (Unix seconds).
pub(crate) struct Uploaded {
    pub pem: String,
    pub not_after: i64,
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
    let (_, pem) = parse_x509_pem(&pem_bytes)
        .map_err(|_| refused("publicKeyData holds no PEM certificate."))?;
    if pem.label != "CERTIFICATE" {
        return Err(refused(format!(
            "publicKeyData holds a PEM '{}', not a CERTIFICATE.",
            pem.label
        )));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| refused(format!("The certificate cannot be read: {e}.")))?;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
        Ok(PublicKey::RSA(rsa)) => {
            return Err(refused(format!(
                "The key is RSA of {} bits; at least 2048 are needed.",
                rsa.key_size()
            )));
        }
        _ => return Err(refused("The certificate's key is not RSA.")),
    }
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if not_after <= now || not_before > now {
        return Err(refused("The certificate is not valid now."));
    }
    let pem = String::from_utf8(pem_bytes)
        .map_err(|_| refused("publicKeyData is not text once decoded."))?;
    Ok(Uploaded { pem, not_after })
}

/// The DER SubjectPublicKeyInfo of a stored certificate.
pub(crate) fn public_key_der(certificate_pem: &str) -> Result<Vec<u8>, ApiError> {
    let broken = |e: String| ApiError::Internal(format!("a stored key certificate is broken: {e}"));
    let (_, pem) = parse_x509_pem(certificate_pem.as_bytes()).map_err(|e| broken(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| broken(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The JWK (RS256) of a stored certificate's RSA key, with `kid`, as Google's per-account JWK
/// document lists a key.
pub(crate) fn rsa_jwk(certificate_pem: &str, kid: &str) -> Result<serde_json::Value, ApiError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let broken = |e: String| ApiError::Internal(format!("a stored key certificate is broken: {e}"));
    let (_, pem) = parse_x509_pem(certificate_pem.as_bytes()).map_err(|e| broken(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| broken(e.to_string()))?;
    let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() else {
        return Err(broken("not an RSA key".into()));
    };
    // DER integers carry a leading zero byte when their top bit is set; a JWK's do not.
    let unsigned = |bytes: &[u8]| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        URL_SAFE_NO_PAD.encode(&bytes[start..])
    };
    Ok(serde_json::json!({
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": unsigned(rsa.modulus),
        "e": unsigned(rsa.exponent),
    }))
}
