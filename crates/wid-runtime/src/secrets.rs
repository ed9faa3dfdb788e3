//! Random values from the operating system's generator.

use base64::Engine;

/// `n` random bytes. The OS generator failing is unrecoverable for a security service.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("the operating system's random generator failed: {e}");
    }
    buf
}

/// A 256-bit secret, URL-safe base64 without padding.
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// A string of `len` random decimal digits, the first one not zero.
pub fn random_digits(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<32>() {
            // Rejection sampling keeps the digits uniform.
            if b >= 250 || (out.is_empty() && b % 10 == 0) {
                continue;
            }
            out.push(char::from(b'0' + b % 10));
            if out.len() == len {
                break;
            }
        }
    }
    out
}

/// Lowercase hex of `N` random bytes.
pub fn random_hex<const N: usize>() -> String {
    random_bytes::<N>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_have_the_asked_length() {
        for len in [1, 12, 21, 40] {
            let d = random_digits(len);
            assert_eq!(d.len(), len);
            assert!(d.bytes().all(|b| b.is_ascii_digit()));
            assert_ne!(d.as_bytes()[0], b'0');
        }
        assert_eq!(random_token().len(), 43);
        assert_ne!(random_token(), random_token());
    }
}
