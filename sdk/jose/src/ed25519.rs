//! Ed25519 verification (EdDSA, RFC 8032) with a fixed-base table per key.
//!
//! `ed25519-dalek`'s `verify_strict` computes `R' = [s]B - [k]A` with a variable-base
//! double-scalar multiplication (about 253 doublings shared by both halves, a table of `A`'s
//! odd multiples built per call), decompresses `R` and compresses `R'` (two field
//! exponentiations). Keys are fixed per configuration, so here `-A` gets the radix-16 table
//! `curve25519-dalek` builds for fixed-base multiplication (32 rows of 8 multiples, 30 KiB):
//! both halves are then fixed-base, 64 mixed additions and 4 doublings each, and no doubling
//! chain. `R` is not decompressed: `R'` is compressed and compared with `R`'s bytes, which
//! only matches when `R` is the canonical encoding of `R'`, so `R'`'s order stands for `R`'s.
//!
//! Same verdict as `ed25519_dalek::VerifyingKey::verify_strict` (the differential test
//! below): `s` canonical, `A` and `R` not of small order, `R` equal to `[s]B - [k]A` where
//! `k = SHA-512(R || A || M) mod l`.
//!
//! One-time costs: a key's table is built on its first verification (256 points, each
//! normalised with a field inversion: about 36 M wasm instructions) and kept across JWKS
//! parses for the last [`TABLE_CACHE`] keys; `B`'s is `curve25519-dalek`'s constant. Not
//! constant-time, by design: verification handles only public values.

use std::sync::{Arc, Mutex, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable;

/// How many keys' tables are kept across JWKS parses.
pub const TABLE_CACHE: usize = 8;

/// An Ed25519 public key: its encoding, its point and, from its first verification on, the
/// table of `-A`.
#[derive(Clone)]
pub struct VerifyingKey {
    bytes: [u8; 32],
    /// `-A`.
    neg_a: EdwardsPoint,
    /// `A` is of small order: `verify_strict` refuses every signature.
    weak: bool,
    table: OnceLock<Arc<EdwardsBasepointTable>>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// `B`'s table: `curve25519-dalek`'s constant (30 KiB of the module's data), not built at
/// run time, which costs about 36 M instructions (256 field inversions) on a VM's first
/// EdDSA token.
fn base_table() -> &'static EdwardsBasepointTable {
    ED25519_BASEPOINT_TABLE
}

/// The tables of the keys used lately, by encoding: a JWKS parsed again (a refetch, or
/// another VM's fetch read from shared data) finds its keys' tables here.
fn key_tables() -> &'static Mutex<Vec<([u8; 32], Arc<EdwardsBasepointTable>)>> {
    static KEYS: Mutex<Vec<([u8; 32], Arc<EdwardsBasepointTable>)>> = Mutex::new(Vec::new());
    &KEYS
}

impl VerifyingKey {
    /// The key encoded as `bytes` (RFC 8032's 32 bytes); `None` when they are not a point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let point = CompressedEdwardsY(*bytes).decompress()?;
        Some(Self {
            bytes: *bytes,
            neg_a: -point,
            weak: point.is_small_order(),
            table: OnceLock::new(),
        })
    }

    /// The key's encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// `-A`'s table: built on first use (a JWKS may carry keys no token uses), or found in
    /// the cache of recent keys.
    fn table(&self) -> &EdwardsBasepointTable {
        self.table.get_or_init(|| {
            let mut cache = key_tables()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, table)) = cache.iter().find(|(bytes, _)| *bytes == self.bytes) {
                return Arc::clone(table);
            }
            let table = Arc::new(EdwardsBasepointTable::create(&self.neg_a));
            if cache.len() >= TABLE_CACHE {
                cache.remove(0);
            }
            cache.push((self.bytes, Arc::clone(&table)));
            table
        })
    }

    /// Whether `signature` (`R || s`, 64 bytes) is this key's Ed25519 signature of
    /// `message`, with `verify_strict`'s rules.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use sha2_next::{Digest, Sha512};
        let (Ok(r), Ok(s)) = (
            <[u8; 32]>::try_from(signature.get(..32).unwrap_or_default()),
            <[u8; 32]>::try_from(signature.get(32..).unwrap_or_default()),
        ) else {
            return false;
        };
        if self.weak {
            return false;
        }
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        let mut hash = Sha512::new();
        hash.update(r);
        hash.update(self.bytes);
        hash.update(message);
        let wide: [u8; 64] = hash.finalize().into();
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let expected = self.table() * &k + base_table() * &s;
        expected.compress().0 == r && !expected.is_small_order()
    }
}

#[cfg(test)]
mod tests {
    //! The verdict against `ed25519-dalek`'s `verify_strict` on random keys and messages,
    //! valid and tampered signatures, and the small-order and non-canonical edge cases.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use ed25519_dalek::Signer;

    fn reference(key: &ed25519_dalek::VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
    }

    fn random<const N: usize>() -> [u8; N] {
        let mut out = [0u8; N];
        getrandom::fill(&mut out).unwrap();
        out
    }

    fn check(bytes: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
        let ours = VerifyingKey::from_bytes(bytes);
        let theirs = ed25519_dalek::VerifyingKey::from_bytes(bytes).ok();
        assert_eq!(ours.is_some(), theirs.is_some(), "key {bytes:02x?}");
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            return false;
        };
        let verdict = ours.verify(message, signature);
        assert_eq!(
            verdict,
            reference(&theirs, message, signature),
            "key {bytes:02x?}, message {message:02x?}, signature {signature:02x?}"
        );
        verdict
    }

    #[test]
    fn verdicts_match_verify_strict_on_random_keys_and_tampered_signatures() {
        let mut accepted = 0;
        for round in 0..24 {
            let signer = ed25519_dalek::SigningKey::from_bytes(&random::<32>());
            let public = signer.verifying_key().to_bytes();
            for len in [0usize, 1, 31, 64, 200, 1000] {
                let mut message = vec![0u8; len];
                getrandom::fill(&mut message).unwrap();
                let signature = signer.sign(&message).to_bytes();
                assert!(check(&public, &message, &signature), "round {round}");
                accepted += 1;
                // Every byte of R and s, one flipped bit each (a random bit per byte).
                for at in 0..64 {
                    let mut forged = signature;
                    forged[at] ^= 1 << (random::<1>()[0] % 8);
                    assert!(!check(&public, &message, &forged));
                }
                // s + l (not canonical), s = 0, a random signature, mis-sized ones.
                let mut high = signature;
                // l = 2^252 + 27742317777372353535851937790883648493, little-endian.
                let l: [u8; 32] = [
                    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde,
                    0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
                ];
                let mut carry = 0u16;
                for i in 0..32 {
                    let sum = u16::from(high[32 + i]) + u16::from(l[i]) + carry;
                    high[32 + i] = sum as u8;
                    carry = sum >> 8;
                }
                check(&public, &message, &high);
                let mut zero = signature;
                zero[32..].fill(0);
                check(&public, &message, &zero);
                check(&public, &message, &random::<64>());
                check(&public, &message, &signature[..63]);
                check(&public, &message, &[signature.as_slice(), &[0]].concat());
                if !message.is_empty() {
                    let mut other = message.clone();
                    other[0] ^= 0x80;
                    assert!(!check(&public, &other, &signature));
                }
            }
        }
        assert_eq!(accepted, 24 * 6);
    }

    #[test]
    fn small_order_and_non_canonical_points_are_refused_as_verify_strict_does() {
        // The eight small-order points' encodings (y = 1, -1, 0 and the order-8 ones), with
        // the sign bit both ways, and non-canonical y (p, p + 1) as keys and as R.
        let small = curve25519_dalek::constants::EIGHT_TORSION.map(|p| p.compress().0);
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut p1 = p;
        p1[0] = 0xee;
        let mut encodings: Vec<[u8; 32]> = small.to_vec();
        for e in small {
            let mut flipped = e;
            flipped[31] ^= 0x80;
            encodings.push(flipped);
        }
        encodings.push(p);
        encodings.push(p1);
        let signer = ed25519_dalek::SigningKey::from_bytes(&random::<32>());
        let public = signer.verifying_key().to_bytes();
        let message = b"small order";
        let s = *signer.sign(message).s_bytes();
        for encoding in &encodings {
            // As the key: whatever the signature.
            check(encoding, message, &signer.sign(message).to_bytes());
            // As R, with the real s and with s = 0 (R = -[k]A only for a small-order R).
            let forged = [encoding.as_slice(), &s].concat();
            assert!(!check(&public, message, &forged));
            let forged = [encoding.as_slice(), &[0u8; 32]].concat();
            check(&public, message, &forged);
        }
        // A small-order key with a signature that verify (non-strict) would accept:
        // A = identity, s = 0, R = identity.
        let identity = EdwardsPoint::default().compress().0;
        let forged = [identity.as_slice(), &[0u8; 32]].concat();
        assert!(!check(&identity, message, &forged));
    }
}
