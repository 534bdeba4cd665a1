//! Sealed cookies: a value encrypted and authenticated with XChaCha20-Poly1305 under a session
//! key, with the cookie's name as associated data (a login cookie cannot pass for a session).
//!
//! Wire form: base64url (no padding) of `version (1) || nonce (24) || ciphertext+tag`. The nonce
//! is random from the host: 192 bits, so random nonces never collide in practice. Sealing uses
//! the first key; opening tries each configured key, so a key can be rotated in by listing it
//! first and the old one second, then retired by removing it (its cookies are then refused).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

use crate::config::SessionKey;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Largest sealed cookie value accepted (browsers keep 4096 bytes per cookie).
pub const MAX_SEALED_LEN: usize = 4096;

/// Why a sealed value was refused (logged, never shown to the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not base64url, too short or too long (truncated or padded cookies).
    #[error("malformed sealed value")]
    Malformed,
    /// Unknown format version.
    #[error("unknown sealed-value version")]
    Version,
    /// No configured key opens it: tampered, or sealed under a retired key.
    #[error("no session key opens it (tampered or retired key)")]
    Key,
    /// Sealing failed (no randomness from the host, or an oversized value).
    #[error("could not seal")]
    Seal,
}

/// Seals `plain` under `key` with associated data `aad`, using `nonce`.
pub fn seal(
    key: &SessionKey,
    nonce: [u8; NONCE_LEN],
    aad: &str,
    plain: &[u8],
) -> Result<String, SealError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SealError::Seal)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    let text = URL_SAFE_NO_PAD.encode(out);
    if text.len() > MAX_SEALED_LEN {
        return Err(SealError::Seal);
    }
    Ok(text)
}

/// Opens `text` with the first of `keys` that authenticates it.
pub fn open(keys: &[SessionKey], aad: &str, text: &str) -> Result<Vec<u8>, SealError> {
    if text.len() > MAX_SEALED_LEN {
        return Err(SealError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SealError::Malformed)?;
    if bytes.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(SealError::Malformed);
    }
    if bytes[0] != VERSION {
        return Err(SealError::Version);
    }
    let (nonce, sealed) = bytes[1..].split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed)?;
    for key in keys {
        let cipher = XChaCha20Poly1305::new(key.into());
        if let Ok(plain) = cipher.decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        ) {
            return Ok(plain);
        }
    }
    Err(SealError::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: SessionKey = [1; 32];
    const K2: SessionKey = [2; 32];

    fn sealed(key: &SessionKey, aad: &str, plain: &[u8]) -> String {
        seal(key, [7; NONCE_LEN], aad, plain).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn round_trip_and_rotation() {
        let text = sealed(&K1, "s", b"hello");
        assert_eq!(open(&[K1], "s", &text), Ok(b"hello".to_vec()));
        // Rotation: a new key first, the old one second, still opens old cookies.
        assert_eq!(open(&[K2, K1], "s", &text), Ok(b"hello".to_vec()));
        // The old key retired: refused.
        assert_eq!(open(&[K2], "s", &text), Err(SealError::Key));
        // Another cookie name (associated data): refused.
        assert_eq!(open(&[K1], "s_login", &text), Err(SealError::Key));
    }

    #[test]
    fn tampered_truncated_and_foreign_values_are_refused() {
        let text = sealed(&K1, "s", b"{\"sub\":\"alice\"}");
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap_or_default();
        for i in [0, 1, 30, bytes.len() - 1] {
            bytes[i] ^= 1;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(open(&[K1], "s", &tampered).is_err(), "byte {i} flipped");
            bytes[i] ^= 1;
        }
        for cut in 1..5 {
            assert!(
                open(&[K1], "s", &text[..text.len() - cut]).is_err(),
                "{cut} cut"
            );
        }
        assert_eq!(open(&[K1], "s", &text[..20]), Err(SealError::Malformed));
        assert_eq!(open(&[K1], "s", "not base64!"), Err(SealError::Malformed));
        assert_eq!(
            open(&[K1], "s", &"A".repeat(MAX_SEALED_LEN + 1)),
            Err(SealError::Malformed)
        );
    }
}
