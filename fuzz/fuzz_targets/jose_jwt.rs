//! The JWT parser and verifier on arbitrary input: a compact JWS is split, decoded and verified
//! against fixed RSA and EC keys, and the time checks run on whatever claims parse; the input is
//! also given as is to the duplicate-key checker of the JSON wid signs or trusts. Only "no
//! panic" is asserted; a forged signature verifying would be caught by the unit tests.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wid_jose::claims::{TimeRules, check_times};
use wid_jose::signer::SigningKey;
use wid_jose::{Algorithm, Jwk};

fn keys() -> &'static Vec<Jwk> {
    static KEYS: OnceLock<Vec<Jwk>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = Vec::new();
        for alg in [Algorithm::Rs256, Algorithm::Es256] {
            if let Ok(key) = SigningKey::generate(alg) {
                keys.push(key.public_jwk().clone());
            }
        }
        // Keys whose kid a fuzzed header can name easily.
        for kid in ["a", "k1"] {
            for mut key in keys.clone().into_iter().take(2) {
                key.kid = Some(kid.to_owned());
                keys.push(key);
            }
        }
        keys
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = wid_api::json::check_unique_keys(data);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = wid_jose::jws::parse(token) {
        let _ = check_times(
            &parsed.claims,
            1_700_000_000,
            TimeRules {
                skew: 60,
                max_lifetime: 48 * 3600,
            },
        );
    }
    let _ = wid_jose::verify(token, keys());
    let _ = wid_jose::Jwks::parse(token);
});
