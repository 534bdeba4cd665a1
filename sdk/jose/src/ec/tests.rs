//! Differential tests: this module's verification against RustCrypto's `p256`/`p384` on many
//! random keys and signatures, valid and invalid, natively.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use p256::ecdsa::signature::{Signer, Verifier};

fn random<const L: usize>() -> [u8; L] {
    let mut bytes = [0u8; L];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// Signature variants for one message: the valid one and ways to break it; what the
/// reference says about each is what ours must say.
fn variants(sig: &[u8], order: &[u8]) -> Vec<Vec<u8>> {
    let half = sig.len() / 2;
    let mut out = vec![sig.to_vec()];
    // A flipped bit in r, in s.
    for at in [0, half - 1, half, sig.len() - 1] {
        let mut bad = sig.to_vec();
        bad[at] ^= 1;
        out.push(bad);
    }
    // s and r swapped.
    let mut swapped = sig[half..].to_vec();
    swapped.extend_from_slice(&sig[..half]);
    out.push(swapped);
    // s -> n - s (the other valid s for the same r: ECDSA without low-s is malleable).
    let mut neg = sig[..half].to_vec();
    let s = from_be_bytes(&sig[half..]);
    let n = from_be_bytes(order);
    neg.extend_from_slice(&to_be_bytes(&sub_big(&n, &s)));
    out.push(neg);
    // r = 0, s = 0, r = n, s = n, all ones, random.
    let mut zero_r = sig.to_vec();
    zero_r[..half].fill(0);
    out.push(zero_r);
    let mut zero_s = sig.to_vec();
    zero_s[half..].fill(0);
    out.push(zero_s);
    let mut r_n = order.to_vec();
    r_n.extend_from_slice(&sig[half..]);
    out.push(r_n);
    let mut s_n = sig[..half].to_vec();
    s_n.extend_from_slice(order);
    out.push(s_n);
    out.push(vec![0xff; sig.len()]);
    let mut rand = vec![0u8; sig.len()];
    getrandom::fill(&mut rand).unwrap();
    out.push(rand);
    // Wrong lengths.
    out.push(sig[..sig.len() - 1].to_vec());
    out.push([sig, &[0]].concat());
    out
}

fn from_be_bytes(b: &[u8]) -> Vec<u32> {
    b.rchunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn to_be_bytes(l: &[u32]) -> Vec<u8> {
    l.iter().rev().flat_map(|w| w.to_be_bytes()).collect()
}

fn sub_big(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = a.to_vec();
    let mut borrow = 0i64;
    for i in 0..a.len() {
        let d = i64::from(a[i]) - i64::from(b[i]) - borrow;
        out[i] = d as u32;
        borrow = i64::from(d < 0);
    }
    out
}

#[test]
fn p256_agrees_with_the_p256_crate_on_random_keys_and_signatures() {
    let order = to_be_bytes(&P256Order::M);
    let mut checked = (0, 0);
    for round in 0..20 {
        // Secrets 1, 2 and n - 1 (Q = G, 2G, -G: the additions meet doubling and
        // cancellation cases), then random ones.
        let secret: [u8; 32] = match round {
            0 => {
                let mut s = [0u8; 32];
                s[31] = 1;
                s
            }
            1 => {
                let mut s = [0u8; 32];
                s[31] = 2;
                s
            }
            2 => {
                let mut s: [u8; 32] = order.clone().try_into().unwrap();
                s[31] -= 1;
                s
            }
            _ => random(),
        };
        let Ok(signing) = p256::ecdsa::SigningKey::from_slice(&secret) else {
            continue;
        };
        let reference = *signing.verifying_key();
        let point = reference.to_sec1_point(false);
        let bytes = point.as_bytes();
        let ours = P256Key::from_coordinates(&bytes[1..33], &bytes[33..65]).unwrap();
        for _ in 0..8 {
            let message: [u8; 40] = random();
            let sig: p256::ecdsa::Signature = signing.sign(&message);
            let sig = sig.to_bytes();
            for candidate in variants(&sig, &order) {
                let expected = p256::ecdsa::Signature::from_slice(&candidate)
                    .is_ok_and(|s| reference.verify(&message, &s).is_ok());
                assert_eq!(
                    ours.verify(&message, &candidate),
                    expected,
                    "round {round}, signature {candidate:02x?}"
                );
                if expected {
                    checked.0 += 1;
                } else {
                    checked.1 += 1;
                }
            }
            // Another message under the valid signature.
            assert!(!ours.verify(b"another message", &sig));
        }
    }
    assert!(checked.0 >= 150 && checked.1 >= 1000, "{checked:?}");
}

#[test]
fn p384_agrees_with_the_p384_crate_on_random_keys_and_signatures() {
    let order = to_be_bytes(&P384Order::M);
    let mut checked = (0, 0);
    for round in 0..8 {
        let secret: [u8; 48] = match round {
            0 => {
                let mut s = [0u8; 48];
                s[47] = 1;
                s
            }
            1 => {
                let mut s: [u8; 48] = order.clone().try_into().unwrap();
                s[47] -= 1;
                s
            }
            _ => random(),
        };
        let Ok(signing) = p384::ecdsa::SigningKey::from_slice(&secret) else {
            continue;
        };
        let reference = *signing.verifying_key();
        let point = reference.to_sec1_point(false);
        let bytes = point.as_bytes();
        let ours = P384Key::from_coordinates(&bytes[1..49], &bytes[49..97]).unwrap();
        for _ in 0..6 {
            let message: [u8; 40] = random();
            let sig: p384::ecdsa::Signature = signing.sign(&message);
            let sig = sig.to_bytes();
            for candidate in variants(&sig, &order) {
                let expected = p384::ecdsa::Signature::from_slice(&candidate)
                    .is_ok_and(|s| reference.verify(&message, &s).is_ok());
                assert_eq!(
                    ours.verify(&message, &candidate),
                    expected,
                    "round {round}, signature {candidate:02x?}"
                );
                if expected {
                    checked.0 += 1;
                } else {
                    checked.1 += 1;
                }
            }
        }
    }
    assert!(checked.0 >= 50 && checked.1 >= 500, "{checked:?}");
}

#[test]
fn points_off_the_curve_and_out_of_range_coordinates_are_refused() {
    let signing = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let point = signing.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    let (x, y) = (&bytes[1..33], &bytes[33..65]);
    assert!(P256Key::from_coordinates(x, y).is_some());
    let mut bad_y = y.to_vec();
    bad_y[31] ^= 1;
    assert!(P256Key::from_coordinates(x, &bad_y).is_none());
    // x + p has the same value mod p but is not a canonical coordinate.
    assert!(P256Key::from_coordinates(&[0xff; 32], y).is_none());
    assert!(P256Key::from_coordinates(&x[1..], y).is_none());
    assert!(P384Key::from_coordinates(&[0; 48], &[0; 48]).is_none());
}

#[test]
fn scalar_inverse_and_montgomery_products_are_right() {
    for _ in 0..200 {
        let mut a = from_be::<8>(&random::<32>()).unwrap();
        if geq(&a, &P256Order::M) {
            sub_assign(&mut a, &P256Order::M);
        }
        if is_zero(&a) {
            continue;
        }
        let inv = inv_vartime::<8, P256Order>(&a);
        // a * inv == 1: mont_mul(a, inv) = R^-1, times R2 = R... so compare in the domain.
        let product = mont_mul::<8, P256Order>(&mont_mul::<8, P256Order>(&a, &inv), &P256Order::R2);
        assert_eq!(product, one::<8>());
        let x = from_be::<12>(&random::<48>()).map(|mut x| {
            x[11] &= 0x7fff_ffff;
            x
        });
        let x = x.unwrap();
        let round = from_mont::<12, P384Field>(&to_mont::<12, P384Field>(&x));
        assert_eq!(round, x);
    }
}
