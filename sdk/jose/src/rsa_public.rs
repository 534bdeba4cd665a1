//! The RSA public operation (`s^e mod n`) for signature verification with Montgomery
//! multiplication (28-bit limbs and SIMD128 rows for keys up to 3,360 bits, `narrow`; 32-bit
//! limbs above), and the PKCS#1 v1.5 check (RS256/RS384/RS512) on top of it.
//!
//! Why not the `rsa` crate's: its exponentiation is the constant-time one a private key needs
//! (a 4-bit window with a 16-entry table scanned on every step, about 40 Montgomery
//! multiplications for e = 65537), which on wasm32 cost 7.3 M instructions per RS256 token.
//! A signature check only handles public data (key, signature, message), so a plain
//! square-and-multiply is sound: for e = 65537 it is 16 squarings and one multiplication, plus
//! the conversion into Montgomery form (the 28-bit code's last multiplication, by `s` itself,
//! also takes the result out of it). Everything that depends only on the key
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

/// The public operation on 28-bit limbs: a limb product is below `2^56`, so the Montgomery
/// product accumulates every product of a row into 64-bit column sums without carrying
/// (operand scanning with lazy carries: fewer than 256 products of a column stay below
/// `2^64`), and one carry per row moves the low column up. A row is a vector operation
/// (`t[i + j] += x b[j] + y n[j]`), which wasm runs with SIMD128: four 28-bit limbs per
/// 16-byte load, `i64x2.extmul_{low,high}_i32x4_u` for the products (one `pmuludq` each on
/// x86, what V8 emits) and the column sums updated in place. 32-bit limbs need a carry per
/// product, about 19 wasm instructions per limb product (`harness/docs/bench.md`).
mod narrow {
    const BITS: usize = 28;
    const MASK: u64 = (1 << BITS) - 1;
    /// Up to 120 limbs: a column of `2 * 120 + 1` products below `2^56` and the carry stay
    /// below `2^64`.
    pub const MAX_BITS: usize = 120 * BITS;

    /// A modulus in 28-bit limbs with its Montgomery constants (`R = 2^(28 l)`). Limb
    /// vectors are `w + 4` long (`w`: `l` rounded up to 4), zero past `l`, so that every row
    /// is whole 4-limb chunks.
    #[derive(Clone)]
    pub struct Key {
        n: Vec<u32>,
        l: usize,
        w: usize,
        n0: u64,
        /// `R^2 mod n`.
        r2: Vec<u32>,
    }

    /// The 28-bit limbs of the 32-bit limbs `wide` into `out` (zeroed first).
    fn from_wide(wide: &[u32], out: &mut [u32]) {
        out.iter_mut().for_each(|x| *x = 0);
        for (i, &w) in wide.iter().enumerate() {
            let at = 32 * i;
            let (limb, shift) = (at / BITS, at % BITS);
            let w = u64::from(w) << shift;
            for (k, part) in [w & MASK, (w >> BITS) & MASK, w >> (2 * BITS)]
                .into_iter()
                .enumerate()
            {
                if let Some(slot) = out.get_mut(limb + k) {
                    *slot |= part as u32;
                }
            }
        }
    }

    fn less(a: &[u32], b: &[u32]) -> bool {
        for (x, y) in a.iter().rev().zip(b.iter().rev()) {
            if x != y {
                return x < y;
            }
        }
        false
    }

    fn sub(a: &mut [u32], b: &[u32]) {
        let mut borrow = 0u32;
        for (x, &y) in a.iter_mut().zip(b) {
            let d = x.wrapping_sub(y).wrapping_sub(borrow);
            borrow = d >> 31;
            *x = d & MASK as u32;
        }
    }

    /// `t[k] += x b[k] + y c[k]` for `k < 4 chunks` (fewer if a slice is shorter).
    #[inline(always)]
    fn row2(t: &mut [u64], x: u32, b: &[u32], y: u32, c: &[u32], chunks: usize) {
        #[cfg(target_arch = "wasm32")]
        simd::row2(t, x, b, y, c, chunks);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let len = (4 * chunks).min(t.len()).min(b.len()).min(c.len());
            for ((t, &b), &c) in t[..len].iter_mut().zip(b).zip(c) {
                *t += u64::from(x) * u64::from(b) + u64::from(y) * u64::from(c);
            }
        }
    }

    /// `t[k] += sum of x[r] v[r][k]` for `k < 4 chunks` (fewer if a slice is shorter).
    #[inline(always)]
    fn row4(t: &mut [u64], x: [u32; 4], v: [&[u32]; 4], chunks: usize) {
        #[cfg(target_arch = "wasm32")]
        simd::row4(t, x, v, chunks);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let len = v
                .iter()
                .fold((4 * chunks).min(t.len()), |len, v| len.min(v.len()));
            for (k, t) in t[..len].iter_mut().enumerate() {
                for (&x, v) in x.iter().zip(v) {
                    *t += u64::from(x) * u64::from(v[k]);
                }
            }
        }
    }

    /// `t[k] += x b[k]` for `k < 4 chunks` (fewer if a slice is shorter).
    #[inline(always)]
    fn row1(t: &mut [u64], x: u32, b: &[u32], chunks: usize) {
        #[cfg(target_arch = "wasm32")]
        simd::row1(t, x, b, chunks);
        #[cfg(not(target_arch = "wasm32"))]
        {
            let len = (4 * chunks).min(t.len()).min(b.len());
            for (t, &b) in t[..len].iter_mut().zip(b) {
                *t += u64::from(x) * u64::from(b);
            }
        }
    }

    /// The rows with wasm SIMD128.
    #[cfg(target_arch = "wasm32")]
    mod simd {
        use core::arch::wasm32::{
            i64x2_add, u32x4_splat, u64x2_extmul_high_u32x4, u64x2_extmul_low_u32x4, v128,
            v128_load, v128_store,
        };

        /// `t[k] += x b[k] + y c[k]` for `k < 4 chunks`, clamped to the slices.
        #[inline]
        #[target_feature(enable = "simd128")]
        pub fn row2(t: &mut [u64], x: u32, b: &[u32], y: u32, c: &[u32], chunks: usize) {
            let chunks = chunks.min(t.len() / 4).min(b.len() / 4).min(c.len() / 4);
            let (vx, vy) = (u32x4_splat(x), u32x4_splat(y));
            let (tp, bp, cp) = (t.as_mut_ptr(), b.as_ptr(), c.as_ptr());
            for q in 0..chunks {
                // SAFETY: q < chunks, so limbs 4q..4q+4 of b and c and column sums 4q..4q+4
                // of t are inside their slices; v128 loads and stores have no alignment
                // requirement, and t does not overlap b or c (a &mut borrow).
                unsafe {
                    let vb = v128_load(bp.add(4 * q).cast::<v128>());
                    let vc = v128_load(cp.add(4 * q).cast::<v128>());
                    let t0 = tp.add(4 * q).cast::<v128>();
                    let t1 = tp.add(4 * q + 2).cast::<v128>();
                    let lo = i64x2_add(
                        u64x2_extmul_low_u32x4(vb, vx),
                        u64x2_extmul_low_u32x4(vc, vy),
                    );
                    let hi = i64x2_add(
                        u64x2_extmul_high_u32x4(vb, vx),
                        u64x2_extmul_high_u32x4(vc, vy),
                    );
                    v128_store(t0, i64x2_add(v128_load(t0), lo));
                    v128_store(t1, i64x2_add(v128_load(t1), hi));
                }
            }
        }

        /// `t[k] += sum of x[r] v[r][k]` for `k < 4 chunks`, clamped to the slices.
        #[inline]
        #[target_feature(enable = "simd128")]
        pub fn row4(t: &mut [u64], x: [u32; 4], v: [&[u32]; 4], chunks: usize) {
            let chunks = v
                .iter()
                .fold(chunks.min(t.len() / 4), |c, v| c.min(v.len() / 4));
            let x = [
                u32x4_splat(x[0]),
                u32x4_splat(x[1]),
                u32x4_splat(x[2]),
                u32x4_splat(x[3]),
            ];
            let p = v.map(<[u32]>::as_ptr);
            let tp = t.as_mut_ptr();
            for q in 0..chunks {
                // SAFETY: q < chunks, so limbs 4q..4q+4 of every v[r] and column sums
                // 4q..4q+4 of t are inside their slices; v128 loads and stores have no
                // alignment requirement, and t does not overlap the v[r] (a &mut borrow).
                unsafe {
                    let l0 = v128_load(p[0].add(4 * q).cast::<v128>());
                    let l1 = v128_load(p[1].add(4 * q).cast::<v128>());
                    let l2 = v128_load(p[2].add(4 * q).cast::<v128>());
                    let l3 = v128_load(p[3].add(4 * q).cast::<v128>());
                    let lo = i64x2_add(
                        i64x2_add(
                            u64x2_extmul_low_u32x4(l0, x[0]),
                            u64x2_extmul_low_u32x4(l1, x[1]),
                        ),
                        i64x2_add(
                            u64x2_extmul_low_u32x4(l2, x[2]),
                            u64x2_extmul_low_u32x4(l3, x[3]),
                        ),
                    );
                    let hi = i64x2_add(
                        i64x2_add(
                            u64x2_extmul_high_u32x4(l0, x[0]),
                            u64x2_extmul_high_u32x4(l1, x[1]),
                        ),
                        i64x2_add(
                            u64x2_extmul_high_u32x4(l2, x[2]),
                            u64x2_extmul_high_u32x4(l3, x[3]),
                        ),
                    );
                    let t0 = tp.add(4 * q).cast::<v128>();
                    let t1 = tp.add(4 * q + 2).cast::<v128>();
                    v128_store(t0, i64x2_add(v128_load(t0), lo));
                    v128_store(t1, i64x2_add(v128_load(t1), hi));
                }
            }
        }

        /// `t[k] += x b[k]` for `k < 4 chunks`, clamped to the slices.
        #[inline]
        #[target_feature(enable = "simd128")]
        pub fn row1(t: &mut [u64], x: u32, b: &[u32], chunks: usize) {
            let chunks = chunks.min(t.len() / 4).min(b.len() / 4);
            let vx = u32x4_splat(x);
            let (tp, bp) = (t.as_mut_ptr(), b.as_ptr());
            for q in 0..chunks {
                // SAFETY: as in row2.
                unsafe {
                    let vb = v128_load(bp.add(4 * q).cast::<v128>());
                    let t0 = tp.add(4 * q).cast::<v128>();
                    let t1 = tp.add(4 * q + 2).cast::<v128>();
                    v128_store(t0, i64x2_add(v128_load(t0), u64x2_extmul_low_u32x4(vb, vx)));
                    v128_store(
                        t1,
                        i64x2_add(v128_load(t1), u64x2_extmul_high_u32x4(vb, vx)),
                    );
                }
            }
        }
    }

    /// Scratch for one exponentiation: the column sums.
    struct Scratch {
        t: Vec<u64>,
    }

    impl Key {
        /// A zeroed limb vector. Every limb vector `x` is kept one limb up, `x[0] = 0` and the
        /// limbs at `x[1..=l]`, so that `&x[..]` is the same number times `2^28` (one row
        /// later): two rows share a pass ([`Key::mul`], [`Key::sqr`]).
        fn limbs(&self) -> Vec<u32> {
            vec![0u32; self.w + 8]
        }

        /// The column sums `t[l..]` (row `l - 1` left `carry` for column `l`) normalised
        /// into `out`, then reduced below `n` (the value is below `2n`).
        fn finish(&self, t: &[u64], mut carry: u64, out: &mut [u32]) {
            let l = self.l;
            let (out, n) = (&mut out[1..=l], &self.n[1..=l]);
            for (limb, &sum) in out.iter_mut().zip(&t[l..2 * l]) {
                let v = sum + carry;
                *limb = (v & MASK) as u32;
                carry = v >> BITS;
            }
            if carry != 0 || !less(out, n) {
                sub(out, n);
            }
        }

        /// `out = a b / R mod n` for `a, b < n`. (With simd128 enabled here, the rows
        /// inline; wasm runtimes without SIMD refuse the module at load, nothing else.)
        #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
        fn mul(&self, out: &mut [u32], a_up: &[u32], b_up: &[u32], s: &mut Scratch) {
            let (l, n0) = (self.l, self.n0);
            let (a, b, n) = (&a_up[1..], &b_up[1..], &self.n[1..]);
            let (bz, nz) = (b_up, &self.n[..]);
            let t = &mut s.t;
            t.iter_mut().for_each(|x| *x = 0);
            let mut carry = 0u64;
            let (b0, b1) = (u64::from(b[0]), u64::from(b[1]));
            let (n00, n01) = (u64::from(n[0]), u64::from(n[1]));
            // Rows i and i + 1 in one pass, as in `sqr`: t[i + k] += a[i] b[k] + m[i] n[k]
            // + a[i+1] b[k-1] + m[i+1] n[k-1].
            let mut i = 0;
            while i + 1 < l {
                let (ai, aj) = (a[i], a[i + 1]);
                let low = t[i] + carry + u64::from(ai) * b0;
                let mi = ((low & MASK) * n0) & MASK;
                let next = t[i + 1]
                    + ((low + mi * n00) >> BITS)
                    + u64::from(ai) * b1
                    + mi * n01
                    + u64::from(aj) * b0;
                let mj = ((next & MASK) * n0) & MASK;
                carry = (next + mj * n00) >> BITS;
                row4(
                    &mut t[i..],
                    [ai, mi as u32, aj, mj as u32],
                    [b, n, bz, nz],
                    (l + 1).div_ceil(4),
                );
                i += 2;
            }
            if i < l {
                let ai = a[i];
                let low = t[i] + carry + u64::from(ai) * b0;
                let mi = ((low & MASK) * n0) & MASK;
                row2(&mut t[i..], ai, b, mi as u32, n, self.w / 4);
                // Column i is now a multiple of 2^28 (with the carry it was owed).
                carry = (low + mi * n00) >> BITS;
            }
            self.finish(t, carry, out);
        }

        /// `out = a a / R mod n` for `a < n`: each cross product `a[i] a[j]` (`i < j`) once,
        /// as `(2 a[i]) a[j]`, and rows `i`, `i + 1` in one pass: row `i + 1`'s terms are row
        /// `i`'s shape read one limb down (`az`, `nz`: the vectors as stored, one up), so each
        /// column sum is loaded and stored once for up to four products.
        #[cfg_attr(target_arch = "wasm32", target_feature(enable = "simd128"))]
        fn sqr(&self, out: &mut [u32], a_up: &[u32], s: &mut Scratch) {
            let (l, n0) = (self.l, self.n0);
            let (a, az, n, nz) = (&a_up[1..], a_up, &self.n[1..], &self.n[..]);
            let t = &mut s.t;
            t.iter_mut().for_each(|x| *x = 0);
            let mut carry = 0u64;
            let (n00, n01) = (u64::from(n[0]), u64::from(n[1]));
            let mut i = 0;
            while i + 1 < l {
                let (ai, aj) = (a[i], a[i + 1]);
                t[2 * i] += u64::from(ai) * u64::from(ai);
                t[2 * i + 2] += u64::from(aj) * u64::from(aj);
                // m[i] from column i; m[i + 1] from column i + 1 with what row i adds there
                // (m[i] n[1], and 2 a[0] a[1] in the first row) and row i + 1's m n[0].
                let low = t[i] + carry;
                let mi = ((low & MASK) * n0) & MASK;
                let mut next = t[i + 1] + ((low + mi * n00) >> BITS) + mi * n01;
                if i == 0 {
                    next += 2 * u64::from(ai) * u64::from(aj);
                }
                let mj = ((next & MASK) * n0) & MASK;
                carry = (next + mj * n00) >> BITS;
                let (mi32, mj32) = (mi as u32, mj as u32);
                // Columns i..=2i: the reduction terms only, m[i] n[k] + m[i + 1] n[k - 1].
                let only = i + 1;
                let whole = only / 4 * 4;
                row2(&mut t[i..], mi32, n, mj32, nz, whole / 4);
                for k in whole..only {
                    t[i + k] += mi * u64::from(n[k]) + mj * u64::from(nz[k]);
                }
                // Columns 2i+1..=i+l: the cross terms too. Row i + 1's cross terms start at
                // a[i + 2]; the pass also adds 2 a[i+1] a[i] and 2 a[i+1] a[i+1] at 2i+1
                // and 2i+2, taken back after it.
                row4(
                    &mut t[2 * i + 1..],
                    [2 * ai, mi32, 2 * aj, mj32],
                    [&a[only..], &n[only..], &az[only..], &nz[only..]],
                    (l - i).div_ceil(4),
                );
                let twice_aj = 2 * u64::from(aj);
                t[2 * i + 1] -= twice_aj * u64::from(ai);
                t[2 * i + 2] -= twice_aj * u64::from(aj);
                i += 2;
            }
            if i < l {
                // The last row of an odd l: its square and its reduction (no cross terms).
                let ai = a[i];
                t[2 * i] += u64::from(ai) * u64::from(ai);
                let low = t[i] + carry;
                let mi = ((low & MASK) * n0) & MASK;
                row1(&mut t[i..], mi as u32, n, self.w / 4);
                carry = (low + mi * n00) >> BITS;
            }
            self.finish(t, carry, out);
        }

        /// `None` for a modulus longer than [`MAX_BITS`] (the 32-bit code handles those).
        pub fn new(wide: &[u32]) -> Option<Self> {
            let bits = 32 * wide.len() - wide.last().map_or(32, |top| top.leading_zeros() as usize);
            if bits == 0 || bits > MAX_BITS {
                return None;
            }
            let l = bits.div_ceil(BITS);
            let w = l.div_ceil(4) * 4;
            let mut n = vec![0u32; w + 8];
            from_wide(wide, &mut n[1..]);
            let n0 = u64::from(super::neg_inverse(*wide.first()?)) & MASK;
            let mut key = Self {
                n,
                l,
                w,
                n0,
                r2: Vec::new(),
            };
            // R2 = 2^(2 * 28 l) mod n: 2^(28 l + j) by doublings, then t Montgomery squarings,
            // where 28 l = j * 2^t (each squaring doubles the exponent of the Montgomery form).
            let rb = BITS * l;
            let t = rb.trailing_zeros();
            let j = rb >> t;
            let mut x = key.limbs();
            x[1 + (bits - 1) / BITS] = 1 << ((bits - 1) % BITS);
            for _ in 0..(rb + j + 1 - bits) {
                let x = &mut x[1..=l];
                let mut carry = 0u32;
                for limb in x.iter_mut() {
                    let v = (*limb << 1) | carry;
                    carry = v >> BITS;
                    *limb = v & MASK as u32;
                }
                if carry == 1 || !less(x, &key.n[1..=l]) {
                    sub(x, &key.n[1..=l]);
                }
            }
            let mut scratch = key.scratch();
            let mut tmp = key.limbs();
            for _ in 0..t {
                key.sqr(&mut tmp, &x, &mut scratch);
                std::mem::swap(&mut x, &mut tmp);
            }
            key.r2 = x;
            Some(key)
        }

        fn scratch(&self) -> Scratch {
            Scratch {
                t: vec![0u64; 2 * self.w + 8],
            }
        }

        /// `s^e mod n` as `size` big-endian bytes, for `s < n` (32-bit limbs) and odd `e`.
        pub fn public_op(&self, s: &[u32], e: u64, size: usize) -> Vec<u8> {
            let mut scratch = self.scratch();
            let mut plain = self.limbs();
            from_wide(s, &mut plain[1..]);
            let (mut base, mut acc, mut tmp) = (self.limbs(), self.limbs(), self.limbs());
            self.mul(&mut base, &plain, &self.r2, &mut scratch);
            acc.copy_from_slice(&base);
            // Left to right; the last bit (e is odd) multiplies by `s` itself, which also
            // takes the result out of Montgomery form (x R * s / R = x s).
            let top = 63 - e.leading_zeros();
            for bit in (0..top).rev() {
                self.sqr(&mut tmp, &acc, &mut scratch);
                std::mem::swap(&mut acc, &mut tmp);
                if bit == 0 {
                    self.mul(&mut tmp, &acc, &plain, &mut scratch);
                    std::mem::swap(&mut acc, &mut tmp);
                } else if (e >> bit) & 1 == 1 {
                    self.mul(&mut tmp, &acc, &base, &mut scratch);
                    std::mem::swap(&mut acc, &mut tmp);
                }
            }
            if top == 0 {
                // e = 1 (refused by RsaKey::new, kept correct): s itself.
                acc.copy_from_slice(&plain);
            }
            let acc = &acc[1..];
            (0..size)
                .rev()
                .map(|i| {
                    let at = 8 * i;
                    let (limb, shift) = (at / BITS, at % BITS);
                    let mut v = acc.get(limb).map_or(0, |&x| u64::from(x) >> shift);
                    if shift + 8 > BITS {
                        v |= acc
                            .get(limb + 1)
                            .map_or(0, |&x| u64::from(x) << (BITS - shift));
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
        for (round, bits) in [2048usize, 2048, 3072, 2056, 4096, 1024, 2040, 3360]
            .into_iter()
            .enumerate()
        {
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
