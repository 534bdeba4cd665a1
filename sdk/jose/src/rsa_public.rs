//! The RSA public operation (`s^e mod n`) for signature verification, on 32-bit limbs with
//! Montgomery multiplication, and the PKCS#1 v1.5 check (RS256/RS384/RS512) on top of it.
//!
//! Why not the `rsa` crate's: its exponentiation is the constant-time one a private key needs
//! (a 4-bit window with a 16-entry table scanned on every step, about 40 Montgomery
//! multiplications for e = 65537), which on wasm32 cost 7.3 M instructions per RS256 token.
//! A signature check only handles public data (key, signature, message), so a plain
//! square-and-multiply is sound: for e = 65537 it is 16 squarings and one multiplication, plus
//! the conversions in and out of Montgomery form. Everything that depends only on the key
//! (`-n^-1 mod 2^32`, `R^2 mod n`) is computed once, when the key is parsed ([`RsaKey::new`]).
//!
//! Tested against the `rsa` crate (native tests, many random keys and signatures); PS256 still
//! goes through the `rsa` crate.

/// A public key with what every verification needs precomputed.
#[derive(Clone)]
pub struct RsaKey {
    /// The modulus, least significant limb first.
    n: Vec<u32>,
    /// `-n^-1 mod 2^32`.
    n0_inv: u32,
    /// `R^2 mod n`, `R = 2^(32 * limbs)`.
    r2: Vec<u32>,
    /// The public exponent (public, so its bits drive the exponentiation).
    e: u64,
    /// The modulus length in bytes (a signature's length).
    size: usize,
    /// The same modulus in 28-bit limbs, for keys up to [`narrow::MAX_BITS`] bits.
    narrow: Option<narrow::Key>,
}

impl RsaKey {
    /// Precomputes for modulus `n` and exponent `e` (big-endian bytes). `None` for an even or
    /// empty modulus, or an exponent that is zero, even or wider than 64 bits.
    pub fn new(n: &[u8], e: &[u8]) -> Option<Self> {
        let n = trim(n);
        let e = trim(e);
        if n.is_empty() || e.is_empty() || e.len() > 8 || n.last().is_some_and(|b| b & 1 == 0) {
            return None;
        }
        let e = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        if e < 3 || e & 1 == 0 {
            return None;
        }
        let size = n.len();
        let n = limbs_of(n, size.div_ceil(4));
        let n0_inv = neg_inverse(*n.first()?);
        let r2 = r_squared(&n, n0_inv);
        let narrow = narrow::Key::new(&n);
        Some(Self {
            n,
            n0_inv,
            r2,
            e,
            size,
            narrow,
        })
    }

    /// The modulus length in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `signature^e mod n` as big-endian bytes of the modulus length, or `None` when the
    /// signature is not of that length or not below the modulus.
    pub fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.size {
            return None;
        }
        let k = self.n.len();
        let s = limbs_of(signature, k);
        if !less_than(&s, &self.n) {
            return None;
        }
        if let Some(narrow) = &self.narrow {
            return Some(narrow.public_op(&s, self.e, self.size));
        }
        let mut scratch = vec![0u32; 2 * k + 1];
        let mut base = vec![0u32; k];
        mont_mul(&mut base, &s, &self.r2, &self.n, self.n0_inv, &mut scratch);
        let mut acc = base.clone();
        let mut tmp = vec![0u32; k];
        // Left to right over the exponent's bits after the top one.
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            mont_sqr(&mut tmp, &acc, &self.n, self.n0_inv, &mut scratch);
            std::mem::swap(&mut acc, &mut tmp);
            if (self.e >> bit) & 1 == 1 {
                mont_mul(&mut tmp, &acc, &base, &self.n, self.n0_inv, &mut scratch);
                std::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: multiply by 1.
        let mut one = vec![0u32; k];
        one[0] = 1;
        mont_mul(&mut tmp, &acc, &one, &self.n, self.n0_inv, &mut scratch);
        Some(bytes_of(&tmp, self.size))
    }

    /// Whether `signature` is a PKCS#1 v1.5 signature (RFC 8017, EMSA-PKCS1-v1_5) of a message
    /// whose digest is `digest`, `prefix` being the DER `DigestInfo` header of the hash.
    pub fn verify_pkcs1v15(&self, prefix: &[u8], digest: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        let t_len = prefix.len() + digest.len();
        // 0x00 0x01, at least 8 bytes of 0xff, 0x00, then T.
        if em.len() < t_len + 11 {
            return false;
        }
        let pad_end = em.len() - t_len - 1;
        em[0] == 0
            && em[1] == 1
            && em[2..pad_end].iter().all(|&b| b == 0xff)
            && em[pad_end] == 0
            && em[pad_end + 1..pad_end + 1 + prefix.len()] == *prefix
            && em[pad_end + 1 + prefix.len()..] == *digest
    }
}

/// The DER `DigestInfo` headers (RFC 8017, section 9.2, note 1).
pub const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// SHA-384's.
pub const SHA384_PREFIX: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
/// SHA-512's.
pub const SHA512_PREFIX: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// `bytes` without leading zeros.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Big-endian bytes to `k` little-endian limbs (the bytes fit: callers check lengths).
fn limbs_of(bytes: &[u8], k: usize) -> Vec<u32> {
    let mut limbs = vec![0u32; k];
    for (i, &b) in bytes.iter().rev().enumerate() {
        if let Some(limb) = limbs.get_mut(i / 4) {
            *limb |= u32::from(b) << (8 * (i % 4));
        }
    }
    limbs
}

/// Little-endian limbs to `size` big-endian bytes.
fn bytes_of(limbs: &[u32], size: usize) -> Vec<u8> {
    (0..size)
        .rev()
        .map(|i| {
            limbs
                .get(i / 4)
                .map_or(0, |limb| (limb >> (8 * (i % 4))) as u8)
        })
        .collect()
}

/// `-x^-1 mod 2^32` for odd `x` (Newton's iteration: each step doubles the correct bits).
fn neg_inverse(x: u32) -> u32 {
    let mut inv: u32 = 1;
    for _ in 0..5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(x.wrapping_mul(inv)));
    }
    inv.wrapping_neg()
}

/// `a < b` for limb vectors of the same length.
fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `a -= b` in place; returns the borrow.
fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow == 1
}

/// `x = 2x mod n` for `x < n`.
fn double_mod(x: &mut [u32], n: &[u32]) {
    let mut carry = 0u32;
    for limb in x.iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | carry;
        carry = next;
    }
    // x < n, so 2x < 2n: one subtraction at most.
    if carry == 1 || !less_than(x, n) {
        sub_in_place(x, n);
    }
}

/// `R^2 mod n`, once per key: `R mod n` by doubling from the modulus's top bit, then
/// `2^j R mod n` by `j` more doublings (the Montgomery form of `2^j`), then `t` Montgomery
/// squarings give the Montgomery form of `2^(j * 2^t)`, which is `R` when `j * 2^t = 32k`:
/// that is `R * R mod n`. For a 2048-bit modulus, 2 doublings and 11 squarings.
fn r_squared(n: &[u32], n0_inv: u32) -> Vec<u32> {
    let k = n.len();
    let bits = 32 * k - n.last().map_or(32, |top| top.leading_zeros() as usize);
    let mut x = vec![0u32; k];
    // 2^(bits-1) < n.
    x[(bits - 1) / 32] = 1 << ((bits - 1) % 32);
    for _ in 0..(32 * k + 1 - bits) {
        double_mod(&mut x, n);
    }
    // x = R mod n.
    let t = (32 * k).trailing_zeros();
    let j = (32 * k) >> t;
    for _ in 0..j {
        double_mod(&mut x, n);
    }
    let mut scratch = vec![0u32; 2 * k + 1];
    let mut tmp = vec![0u32; k];
    for _ in 0..t {
        mont_mul(&mut tmp, &x, &x, n, n0_inv, &mut scratch);
        std::mem::swap(&mut x, &mut tmp);
    }
    x
}

/// Adds `carry` into `t` from its start, as far as it carries.
#[inline]
fn propagate(t: &mut [u32], mut carry: u64) {
    for limb in t {
        if carry == 0 {
            return;
        }
        let sum = u64::from(*limb) + carry;
        *limb = sum as u32;
        carry = sum >> 32;
    }
}

/// `t[..k] += x * y[..k]`; returns the carry out of the top limb. Four limbs per step: the
/// loop's own bookkeeping was a third of the instructions of the one-limb loop on wasm32.
#[inline]
fn mul_add(t: &mut [u32], x: u64, y: &[u32]) -> u64 {
    let mut carry = 0u64;
    let mut t4 = t.chunks_exact_mut(4);
    let mut y4 = y.chunks_exact(4);
    for (tq, yq) in (&mut t4).zip(&mut y4) {
        if let ([t0, t1, t2, t3], [y0, y1, y2, y3]) = (tq, yq) {
            let s = u64::from(*t0) + x * u64::from(*y0) + carry;
            *t0 = s as u32;
            let s = u64::from(*t1) + x * u64::from(*y1) + (s >> 32);
            *t1 = s as u32;
            let s = u64::from(*t2) + x * u64::from(*y2) + (s >> 32);
            *t2 = s as u32;
            let s = u64::from(*t3) + x * u64::from(*y3) + (s >> 32);
            *t3 = s as u32;
            carry = s >> 32;
        }
    }
    for (tj, &yj) in t4.into_remainder().iter_mut().zip(y4.remainder()) {
        let sum = u64::from(*tj) + x * u64::from(yj) + carry;
        *tj = sum as u32;
        carry = sum >> 32;
    }
    carry
}

/// `out = a * b * R^-1 mod n` (Montgomery multiplication), for `a, b < n`. `t` is scratch of
/// `2k + 1` limbs: row `i` adds `a[i] * b` at limb `i`, then the multiple of `n` that clears
/// limb `i`; the result is limbs `k..2k+1`, below `2n`, then reduced once.
fn mont_mul(out: &mut [u32], a: &[u32], b: &[u32], n: &[u32], n0_inv: u32, t: &mut [u32]) {
    let k = n.len();
    t.iter_mut().for_each(|x| *x = 0);
    for (i, &ai) in a.iter().enumerate().take(k) {
        let carry = mul_add(&mut t[i..i + k], u64::from(ai), b);
        propagate(&mut t[i + k..], carry);
        let m = u64::from(t[i].wrapping_mul(n0_inv));
        let carry = mul_add(&mut t[i..i + k], m, n);
        propagate(&mut t[i + k..], carry);
    }
    out.copy_from_slice(&t[k..2 * k]);
    if t[2 * k] != 0 || !less_than(out, n) {
        sub_in_place(out, n);
    }
}

/// `out = a * a * R^-1 mod n`: [`mont_mul`] for a square, computing each cross product
/// `a[i] * a[j]` (i < j) once and doubling (16 of the 19 multiplications for e = 65537 are
/// squares). `t` is scratch of `2k + 1` limbs.
fn mont_sqr(out: &mut [u32], a: &[u32], n: &[u32], n0_inv: u32, t: &mut [u32]) {
    let k = n.len();
    t.iter_mut().for_each(|x| *x = 0);
    // Cross products.
    for i in 0..k.saturating_sub(1) {
        let carry = mul_add(&mut t[2 * i + 1..i + k], u64::from(a[i]), &a[i + 1..k]);
        propagate(&mut t[i + k..], carry);
    }
    // Doubled (the top limb, t[2k], is still zero: the cross sum is below 2^(64k - 1)).
    let mut top = 0u32;
    for limb in t[..2 * k].iter_mut() {
        let next = *limb >> 31;
        *limb = (*limb << 1) | top;
        top = next;
    }
    // Plus the squares on the diagonal.
    for i in 0..k {
        let square = u64::from(a[i]) * u64::from(a[i]);
        let low = u64::from(t[2 * i]) + (square & 0xffff_ffff);
        t[2 * i] = low as u32;
        propagate(&mut t[2 * i + 1..], (square >> 32) + (low >> 32));
    }
    // Montgomery reduction, row by row as in mont_mul.
    for i in 0..k {
        let m = u64::from(t[i].wrapping_mul(n0_inv));
        let carry = mul_add(&mut t[i..i + k], m, n);
        propagate(&mut t[i + k..], carry);
    }
    out.copy_from_slice(&t[k..2 * k]);
    if t[2 * k] != 0 || !less_than(out, n) {
        sub_in_place(out, n);
    }
}

/// The public operation on 28-bit limbs held in `u64`s: a limb product is one `i64.mul`
/// without carries, so the Montgomery product sums each column of products (fewer than 256 of
/// them, each below `2^56`) in one `u64` and carries once per column (product scanning).
/// 32-bit limbs need a carry per product, which costs about 19 wasm instructions per limb
/// product (`harness/docs/bench.md`).
mod narrow {
    const BITS: usize = 28;
    const MASK: u64 = (1 << BITS) - 1;
    /// Up to 120 limbs: a column of `2 * 120` products below `2^56` and the carry stay below
    /// `2^64`.
    pub const MAX_BITS: usize = 120 * BITS;

    /// A modulus in 28-bit limbs with its Montgomery constants (`R = 2^(28 L)`).
    #[derive(Clone)]
    pub struct Key {
        n: Vec<u64>,
        n_rev: Vec<u64>,
        n0: u64,
        r2: Vec<u64>,
    }

    /// The 28-bit limbs of the 32-bit limbs `wide`, `count` of them.
    fn from_wide(wide: &[u32], count: usize) -> Vec<u64> {
        let mut out = vec![0u64; count];
        for (i, &w) in wide.iter().enumerate() {
            let at = 32 * i;
            let (limb, shift) = (at / BITS, at % BITS);
            let w = u64::from(w) << shift;
            for (k, part) in [w & MASK, (w >> BITS) & MASK, w >> (2 * BITS)]
                .into_iter()
                .enumerate()
            {
                if let Some(slot) = out.get_mut(limb + k) {
                    *slot |= part;
                }
            }
        }
        out
    }

    fn less(a: &[u64], b: &[u64]) -> bool {
        for (x, y) in a.iter().rev().zip(b.iter().rev()) {
            if x != y {
                return x < y;
            }
        }
        false
    }

    fn sub(a: &mut [u64], b: &[u64]) {
        let mut borrow = 0u64;
        for (x, &y) in a.iter_mut().zip(b) {
            let d = x.wrapping_sub(y).wrapping_sub(borrow);
            borrow = d >> 63;
            *x = d & MASK;
        }
    }

    /// `acc += sum of a[k] b[k] + m[k] n[k]` over `a`'s length (the others as long or longer),
    /// four at a time: forward slices only, so wasm loads take constant offsets from one
    /// pointer per slice.
    #[cfg(not(target_arch = "wasm32"))]
    #[inline(always)]
    fn dot(acc: &mut u64, a: &[u64], b: &[u64], m: &[u64], n: &[u64]) {
        let len = a.len();
        let (Some(b), Some(m), Some(n)) = (b.get(..len), m.get(..len), n.get(..len)) else {
            return;
        };
        let mut sum = *acc;
        let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
        let (m4, n4) = (m.chunks_exact(4), n.chunks_exact(4));
        let rest = len - len % 4;
        for ((a, b), (m, n)) in a4.zip(b4).zip(m4.zip(n4)) {
            if let ([a0, a1, a2, a3], [b0, b1, b2, b3], [m0, m1, m2, m3], [n0, n1, n2, n3]) =
                (a, b, m, n)
            {
                sum += a0 * b0 + m0 * n0 + a1 * b1 + m1 * n1;
                sum += a2 * b2 + m2 * n2 + a3 * b3 + m3 * n3;
            }
        }
        for k in rest..len {
            sum += a[k] * b[k] + m[k] * n[k];
        }
        *acc = sum;
    }

    /// [`dot`] with wasm SIMD128: two limb products per `i64x2.mul`, two partial sums per
    /// lane (each lane's sum is part of the exact total, which stays below `2^64`).
    #[cfg(target_arch = "wasm32")]
    #[target_feature(enable = "simd128")]
    fn dot_simd(acc: &mut u64, a: &[u64], b: &[u64], m: &[u64], n: &[u64]) {
        use core::arch::wasm32::{
            i64x2_add, i64x2_mul, u64x2, u64x2_extract_lane, v128, v128_load,
        };
        let len = a.len();
        let (Some(b), Some(m), Some(n)) = (b.get(..len), m.get(..len), n.get(..len)) else {
            return;
        };
        let mut lanes = u64x2(0, 0);
        for k in (0..len - len % 2).step_by(2) {
            // SAFETY: k + 1 < len and every slice holds len u64s, so each 16-byte load reads
            // two elements of its slice; v128_load has no alignment requirement.
            let (va, vb, vm, vn) = unsafe {
                (
                    v128_load(a.as_ptr().add(k).cast::<v128>()),
                    v128_load(b.as_ptr().add(k).cast::<v128>()),
                    v128_load(m.as_ptr().add(k).cast::<v128>()),
                    v128_load(n.as_ptr().add(k).cast::<v128>()),
                )
            };
            lanes = i64x2_add(lanes, i64x2_add(i64x2_mul(va, vb), i64x2_mul(vm, vn)));
        }
        let mut sum = *acc + u64x2_extract_lane::<0>(lanes) + u64x2_extract_lane::<1>(lanes);
        if len % 2 == 1 {
            let k = len - 1;
            sum += a[k] * b[k] + m[k] * n[k];
        }
        *acc = sum;
    }

    /// `out = a * b / R mod n` for `a, b < n`, given `b` and `n` reversed (`b_rev`, `n_rev`);
    /// `m` is scratch of `L` limbs.
    fn mont(out: &mut [u64], a: &[u64], b_rev: &[u64], key: &Key, m: &mut [u64]) {
        let (n, n_rev, n0) = (&key.n, &key.n_rev, key.n0);
        let l = n.len();
        let mut acc: u64 = 0;
        // Column i sums a[j] b[i - j] and m[j] n[i - j], j < i, with b[i - j] =
        // b_rev[l - 1 - i + j].
        for i in 0..l {
            let from = l - 1 - i;
            dot_any(&mut acc, &a[..i], &b_rev[from..], &m[..i], &n_rev[from..]);
            acc += a[i] * b_rev[l - 1];
            let mi = ((acc & MASK) * n0) & MASK;
            m[i] = mi;
            acc += mi * n[0];
            acc >>= BITS;
        }
        for (i, limb) in (l..2 * l - 1).zip(out.iter_mut()) {
            let from = i + 1 - l;
            dot_any(&mut acc, &a[from..], b_rev, &m[from..], n_rev);
            *limb = acc & MASK;
            acc >>= BITS;
        }
        out[l - 1] = acc & MASK;
        acc >>= BITS;
        // The result is below 2n: at most one subtraction.
        if acc != 0 || !less(out, n) {
            sub(out, n);
        }
    }

    /// [`dot_simd`] in wasm, [`dot`] natively.
    #[inline(always)]
    fn dot_any(acc: &mut u64, a: &[u64], b: &[u64], m: &[u64], n: &[u64]) {
        #[cfg(target_arch = "wasm32")]
        dot_simd(acc, a, b, m, n);
        #[cfg(not(target_arch = "wasm32"))]
        dot(acc, a, b, m, n);
    }

    /// The sum of `x[k] y[k]` over `x`'s length (`y` as long or longer).
    #[inline(always)]
    fn dot1(x: &[u64], y: &[u64]) -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            dot1_simd(x, y)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            x.iter().zip(y).map(|(a, b)| a * b).sum()
        }
    }

    /// [`dot1`] with SIMD128, as [`dot_simd`].
    #[cfg(target_arch = "wasm32")]
    #[target_feature(enable = "simd128")]
    fn dot1_simd(x: &[u64], y: &[u64]) -> u64 {
        use core::arch::wasm32::{
            i64x2_add, i64x2_mul, u64x2, u64x2_extract_lane, v128, v128_load,
        };
        let len = x.len();
        let Some(y) = y.get(..len) else {
            return 0;
        };
        let mut lanes = u64x2(0, 0);
        for k in (0..len - len % 2).step_by(2) {
            // SAFETY: k + 1 < len and both slices hold len u64s; v128_load is unaligned.
            let (vx, vy) = unsafe {
                (
                    v128_load(x.as_ptr().add(k).cast::<v128>()),
                    v128_load(y.as_ptr().add(k).cast::<v128>()),
                )
            };
            lanes = i64x2_add(lanes, i64x2_mul(vx, vy));
        }
        let mut sum = u64x2_extract_lane::<0>(lanes) + u64x2_extract_lane::<1>(lanes);
        if len % 2 == 1 {
            sum += x[len - 1] * y[len - 1];
        }
        sum
    }

    /// `out = a * a / R mod n` for `a < n`, given `a` reversed: [`mont`] with each cross
    /// product of `a` computed once and doubled.
    fn mont_sqr(out: &mut [u64], a: &[u64], a_rev: &[u64], key: &Key, m: &mut [u64]) {
        let (n, n_rev, n0) = (&key.n, &key.n_rev, key.n0);
        let l = n.len();
        let mut acc: u64 = 0;
        // Column i: a[j] a[i - j] for j < i - j (twice), a[i / 2]^2 for an even i, and
        // m[j] n[i - j], with a[i - j] = a_rev[l - 1 - i + j].
        for i in 0..l {
            let from = l - 1 - i;
            let half = i.div_ceil(2);
            acc += 2 * dot1(&a[..half], &a_rev[from..]);
            if i % 2 == 0 {
                acc += a[i / 2] * a[i / 2];
            }
            acc += dot1(&m[..i], &n_rev[from..]);
            let mi = ((acc & MASK) * n0) & MASK;
            m[i] = mi;
            acc += mi * n[0];
            acc >>= BITS;
        }
        for (i, limb) in (l..2 * l - 1).zip(out.iter_mut()) {
            let from = i + 1 - l;
            let half = i.div_ceil(2);
            acc += 2 * dot1(&a[from..half], a_rev);
            if i % 2 == 0 {
                acc += a[i / 2] * a[i / 2];
            }
            acc += dot1(&m[from..], n_rev);
            *limb = acc & MASK;
            acc >>= BITS;
        }
        out[l - 1] = acc & MASK;
        acc >>= BITS;
        if acc != 0 || !less(out, n) {
            sub(out, n);
        }
    }

    /// `x` reversed into `out`.
    fn reverse_into(out: &mut [u64], x: &[u64]) {
        for (o, v) in out.iter_mut().zip(x.iter().rev()) {
            *o = *v;
        }
    }

    impl Key {
        /// `None` for a modulus longer than [`MAX_BITS`] (the 32-bit code handles those).
        pub fn new(wide: &[u32]) -> Option<Self> {
            let bits = 32 * wide.len() - wide.last().map_or(32, |top| top.leading_zeros() as usize);
            if bits == 0 || bits > MAX_BITS {
                return None;
            }
            let l = bits.div_ceil(BITS);
            let n = from_wide(wide, l);
            let n0 = u64::from(super::neg_inverse(*wide.first()?)) & MASK;
            // R2 = 2^(2 * 28 L) mod n: 2^(28 L + j) by doublings, then t Montgomery squarings,
            // where 28 L = j * 2^t (each squaring doubles the exponent of the Montgomery form).
            let rb = BITS * l;
            let t = rb.trailing_zeros();
            let j = rb >> t;
            let mut x = vec![0u64; l];
            x[(bits - 1) / BITS] = 1 << ((bits - 1) % BITS);
            for _ in 0..(rb + j + 1 - bits) {
                let mut carry = 0u64;
                for limb in x.iter_mut() {
                    let v = (*limb << 1) | carry;
                    carry = v >> BITS;
                    *limb = v & MASK;
                }
                if carry == 1 || !less(&x, &n) {
                    sub(&mut x, &n);
                }
            }
            let mut n_rev = vec![0u64; l];
            reverse_into(&mut n_rev, &n);
            let mut key = Self {
                n,
                n_rev,
                n0,
                r2: Vec::new(),
            };
            let (mut m, mut tmp, mut rev) = (vec![0u64; l], vec![0u64; l], vec![0u64; l]);
            for _ in 0..t {
                reverse_into(&mut rev, &x);
                mont(&mut tmp, &x, &rev, &key, &mut m);
                std::mem::swap(&mut x, &mut tmp);
            }
            key.r2 = x;
            Some(key)
        }

        /// `s^e mod n` as `size` big-endian bytes, for `s < n` (32-bit limbs).
        pub fn public_op(&self, s: &[u32], e: u64, size: usize) -> Vec<u8> {
            let l = self.n.len();
            let s = from_wide(s, l);
            let (mut m, mut tmp, mut base) = (vec![0u64; l], vec![0u64; l], vec![0u64; l]);
            let mut rev = vec![0u64; l];
            reverse_into(&mut rev, &self.r2);
            mont(&mut base, &s, &rev, self, &mut m);
            let mut base_rev = vec![0u64; l];
            reverse_into(&mut base_rev, &base);
            let mut acc = base.clone();
            let top = 63 - e.leading_zeros();
            for bit in (0..top).rev() {
                reverse_into(&mut rev, &acc);
                mont_sqr(&mut tmp, &acc, &rev, self, &mut m);
                std::mem::swap(&mut acc, &mut tmp);
                if (e >> bit) & 1 == 1 {
                    mont(&mut tmp, &acc, &base_rev, self, &mut m);
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
            // One, reversed: its only set limb is the last.
            rev.iter_mut().for_each(|x| *x = 0);
            rev[l - 1] = 1;
            mont(&mut tmp, &acc, &rev, self, &mut m);
            (0..size)
                .rev()
                .map(|i| {
                    let at = 8 * i;
                    let (limb, shift) = (at / BITS, at % BITS);
                    let mut v = tmp.get(limb).map_or(0, |x| x >> shift);
                    if shift + 8 > BITS {
                        v |= tmp.get(limb + 1).map_or(0, |x| x << (BITS - shift));
                    }
                    v as u8
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    //! The public operation against the `rsa` crate's on random keys and inputs.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use rsa::BoxedUint;
    use rsa::traits::PublicKeyParts;

    fn reference(key: &rsa::PublicKey, input: &[u8]) -> Vec<u8> {
        let m = BoxedUint::from_be_slice_vartime(input);
        let c = rsa::hazmat::rsa_encrypt(key, &m).unwrap();
        let bytes = c.to_be_bytes();
        let size = key.size();
        bytes[bytes.len() - size..].to_vec()
    }

    #[test]
    fn public_op_matches_the_rsa_crate_on_random_keys_and_inputs() {
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        for (round, bits) in [2048usize, 2048, 3072, 2056, 4096].into_iter().enumerate() {
            let private = rsa::PrivateKey::new(&mut rng, bits).unwrap();
            let public = private.to_public_key();
            let n = public.n().to_be_bytes();
            let e = public.e().to_be_bytes();
            let key = RsaKey::new(&n, &e).unwrap();
            assert_eq!(key.size(), public.size(), "round {round}");
            for _ in 0..40 {
                let mut input = vec![0u8; key.size()];
                getrandom::fill(&mut input).unwrap();
                input[0] = 0; // below the modulus
                assert_eq!(
                    key.public_op(&input).unwrap(),
                    reference(&public, &input),
                    "{bits} bits"
                );
            }
        }
    }

    #[test]
    fn exponents_other_than_65537_match_too() {
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        for e in [3u64, 17, 0x1_0001_0001u64] {
            let private =
                rsa::PrivateKey::new_with_exp(&mut rng, 2048, BoxedUint::from(e)).unwrap();
            let public = private.to_public_key();
            let key = RsaKey::new(&public.n().to_be_bytes(), &public.e().to_be_bytes()).unwrap();
            let mut input = vec![0x5au8; key.size()];
            input[0] = 0;
            assert_eq!(key.public_op(&input).unwrap(), reference(&public, &input));
        }
    }

    #[test]
    fn bad_keys_and_signatures_are_refused() {
        assert!(
            RsaKey::new(&[0x0f, 0x02], &[1, 0, 1]).is_none(),
            "even modulus"
        );
        assert!(RsaKey::new(&[0xff, 0x01], &[2]).is_none(), "even exponent");
        assert!(RsaKey::new(&[], &[3]).is_none());
        let key = RsaKey::new(&[0xff, 0xf1], &[3]).unwrap();
        assert!(
            key.public_op(&[0xff, 0xf1]).is_none(),
            "not below the modulus"
        );
        assert!(key.public_op(&[1]).is_none(), "wrong length");
        assert_eq!(key.public_op(&[0, 2]).unwrap(), vec![0, 8]);
    }
}
