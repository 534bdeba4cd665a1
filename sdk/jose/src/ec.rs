//! ECDSA verification over P-256 (ES256) and P-384 (ES384), written for wasm32.
//!
//! Why not RustCrypto's `p256`/`p384` (which sign and verify the tests' tokens): their field
//! arithmetic uses 64-bit limbs, and wasm32 has no 64x64->128 multiply, so each limb product
//! becomes several instructions; their verification is a generic double-and-add over both
//! scalars. Here (issue 15, `harness/docs/bench.md`):
//!
//! - Field and scalar elements are 32-bit limbs in Montgomery form; a product of two limbs is
//!   one `i64.mul`. The moduli are constants of the curve, so after unrolling the compiler folds
//!   the multiplications by their zero and all-ones limbs (P-256's and P-384's primes are
//!   mostly made of those, and their `-p^-1 mod 2^32` is 1).
//! - Keys are fixed per configuration, so each key gets a table once: for every fourth 5-bit
//!   window `i` of a scalar, the multiples `d * 32^i * Q` for `d = 1..=16`, in affine
//!   coordinates (a comb, [`TEETH`], [`W`]). The base point gets the same table once per VM. A
//!   verification `u1 * G + u2 * Q` is then one mixed addition per non-zero signed window digit
//!   of each scalar and 15 doublings in all, both scalars sharing one accumulator (Shamir's
//!   trick).
//! - The accumulator is in Jacobian coordinates; the final `x mod n == r` test compares `X`
//!   with `r * Z^2` (and `(r + n) * Z^2` when that is below `p`), so there is no field inversion
//!   per verification. `s^-1 mod n` is a binary extended Euclid.
//!
//! Not constant-time, on purpose: verification only handles public values (the key, the token
//! and its signature), so no branch or memory access here depends on a secret.
//!
//! Tables cost `ceil(windows / 4) * 16` affine points per key: 14 KiB for P-256, 30 KiB for
//! P-384. A key's table is built on its first verification
//! and kept across JWKS parses for the last [`TABLE_CACHE`] keys of each curve; the base point's
//! once per VM.

use std::sync::{Arc, Mutex, OnceLock};

/// A modulus of `N` 32-bit limbs, little-endian, with its Montgomery constants.
pub trait Modulus<const N: usize> {
    /// The (odd) modulus.
    const M: [u32; N];
    /// `-M^-1 mod 2^32`.
    const INV: u32;
    /// `2^(64 N) mod M`, to enter the Montgomery domain.
    const R2: [u32; N];
}

/// A short Weierstrass curve `y^2 = x^3 - 3x + b` over `P` with a prime group order `Order`.
pub trait Curve<const N: usize> {
    /// The field's prime.
    type P: Modulus<N>;
    /// The group order.
    type Order: Modulus<N>;
    /// `b`, in the Montgomery domain.
    const B: [u32; N];
    /// The base point, in the Montgomery domain.
    const G: Affine<N>;

    /// The base point's table, built on first use (once per VM).
    fn base_table() -> &'static Table<N>;

    /// The tables of the keys used lately ([`TABLE_CACHE`] of them): a JWKS parsed again (a
    /// refetch, or another VM's fetch read from shared data) finds its keys' tables here.
    fn key_tables() -> &'static Mutex<Vec<(Affine<N>, Arc<Table<N>>)>>;
}

/// How many keys' tables each curve keeps across JWKS parses.
pub const TABLE_CACHE: usize = 8;

type Limbs<const N: usize> = [u32; N];

/// `a >= b`.
#[inline(always)]
fn geq<const N: usize>(a: &Limbs<N>, b: &Limbs<N>) -> bool {
    for i in (0..N).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

/// `a -= b`, returning the borrow.
#[inline(always)]
fn sub_assign<const N: usize>(a: &mut Limbs<N>, b: &Limbs<N>) -> bool {
    let mut borrow = 0u64;
    for i in 0..N {
        let d = u64::from(a[i])
            .wrapping_sub(u64::from(b[i]))
            .wrapping_sub(borrow);
        a[i] = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow != 0
}

/// `a += b`, returning the carry.
#[inline(always)]
fn add_assign<const N: usize>(a: &mut Limbs<N>, b: &Limbs<N>) -> bool {
    let mut carry = 0u64;
    for i in 0..N {
        let s = u64::from(a[i]) + u64::from(b[i]) + carry;
        a[i] = s as u32;
        carry = s >> 32;
    }
    carry != 0
}

fn is_zero<const N: usize>(a: &Limbs<N>) -> bool {
    a.iter().all(|&l| l == 0)
}

/// `a * b * 2^(-32 N) mod M` for `a, b < M` (coarsely integrated operand scanning).
/// One function per modulus, not inlined: unrolled, it is a few KiB of code, and the call
/// costs a few instructions of the thousand or so it runs.
#[inline(never)]
fn mont_mul<const N: usize, M: Modulus<N>>(a: &Limbs<N>, b: &Limbs<N>) -> Limbs<N> {
    let mut t = [0u32; N];
    let mut t_hi = 0u32;
    for &bi in b.iter() {
        let mut carry = 0u64;
        for j in 0..N {
            let s = u64::from(t[j]) + u64::from(a[j]) * u64::from(bi) + carry;
            t[j] = s as u32;
            carry = s >> 32;
        }
        let s = u64::from(t_hi) + carry;
        let top = s as u32;
        let top_carry = (s >> 32) as u32;
        let m = t[0].wrapping_mul(M::INV);
        let s = u64::from(t[0]) + u64::from(m) * u64::from(M::M[0]);
        let mut carry = s >> 32;
        for j in 1..N {
            let s = u64::from(t[j]) + u64::from(m) * u64::from(M::M[j]) + carry;
            t[j - 1] = s as u32;
            carry = s >> 32;
        }
        let s = u64::from(top) + carry;
        t[N - 1] = s as u32;
        t_hi = top_carry + (s >> 32) as u32;
    }
    if t_hi != 0 || geq(&t, &M::M) {
        sub_assign(&mut t, &M::M);
    }
    t
}

#[inline(always)]
fn add_mod<const N: usize, M: Modulus<N>>(a: &Limbs<N>, b: &Limbs<N>) -> Limbs<N> {
    let mut r = *a;
    if add_assign(&mut r, b) || geq(&r, &M::M) {
        sub_assign(&mut r, &M::M);
    }
    r
}

#[inline(always)]
fn sub_mod<const N: usize, M: Modulus<N>>(a: &Limbs<N>, b: &Limbs<N>) -> Limbs<N> {
    let mut r = *a;
    if sub_assign(&mut r, b) {
        add_assign(&mut r, &M::M);
    }
    r
}

fn one<const N: usize>() -> Limbs<N> {
    let mut one = [0u32; N];
    one[0] = 1;
    one
}

fn to_mont<const N: usize, M: Modulus<N>>(a: &Limbs<N>) -> Limbs<N> {
    mont_mul::<N, M>(a, &M::R2)
}

fn from_mont<const N: usize, M: Modulus<N>>(a: &Limbs<N>) -> Limbs<N> {
    mont_mul::<N, M>(a, &one())
}

/// `a / 2 mod M` for `a < M` (variable time).
fn half_mod<const N: usize, M: Modulus<N>>(a: &mut Limbs<N>) {
    let carry = if a[0] & 1 == 1 {
        add_assign(a, &M::M)
    } else {
        false
    };
    for i in 0..N {
        let next = if i + 1 < N {
            a[i + 1]
        } else {
            u32::from(carry)
        };
        a[i] = (a[i] >> 1) | (next << 31);
    }
}

fn shr1<const N: usize>(a: &mut Limbs<N>) {
    for i in 0..N {
        let next = if i + 1 < N { a[i + 1] } else { 0 };
        a[i] = (a[i] >> 1) | (next << 31);
    }
}

/// `a^-1 mod M` for `0 < a < M`, `M` prime, in the normal (not Montgomery) domain: binary
/// extended Euclid, variable time (its inputs are public).
fn inv_vartime<const N: usize, M: Modulus<N>>(a: &Limbs<N>) -> Limbs<N> {
    let mut u = *a;
    let mut v = M::M;
    let mut x1 = one::<N>();
    let mut x2 = [0u32; N];
    let unit = one::<N>();
    if is_zero(&u) {
        return u;
    }
    while u != unit && v != unit {
        while u[0] & 1 == 0 {
            shr1(&mut u);
            half_mod::<N, M>(&mut x1);
        }
        while v[0] & 1 == 0 {
            shr1(&mut v);
            half_mod::<N, M>(&mut x2);
        }
        if geq(&u, &v) {
            sub_assign(&mut u, &v);
            x1 = sub_mod::<N, M>(&x1, &x2);
        } else {
            sub_assign(&mut v, &u);
            x2 = sub_mod::<N, M>(&x2, &x1);
        }
    }
    if u == unit { x1 } else { x2 }
}

/// A point in affine coordinates (Montgomery domain); never the point at infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Affine<const N: usize> {
    x: Limbs<N>,
    y: Limbs<N>,
}

/// A point in Jacobian coordinates (Montgomery domain): `(X / Z^2, Y / Z^3)`; `Z = 0` is the
/// point at infinity.
#[derive(Debug, Clone, Copy)]
struct Jacobian<const N: usize> {
    x: Limbs<N>,
    y: Limbs<N>,
    z: Limbs<N>,
}

impl<const N: usize> Jacobian<N> {
    fn infinity() -> Self {
        Self {
            x: [0; N],
            y: [0; N],
            z: [0; N],
        }
    }

    fn is_infinity(&self) -> bool {
        is_zero(&self.z)
    }

    fn from_affine<M: Modulus<N>>(p: &Affine<N>) -> Self {
        Self {
            x: p.x,
            y: p.y,
            z: to_mont::<N, M>(&one()),
        }
    }
}

/// The curve's group law over `C`.
struct Ops<const N: usize, C>(std::marker::PhantomData<C>);

impl<const N: usize, C: Curve<N>> Ops<N, C> {
    #[inline(always)]
    fn mul(a: &Limbs<N>, b: &Limbs<N>) -> Limbs<N> {
        mont_mul::<N, C::P>(a, b)
    }
    #[inline(always)]
    fn add(a: &Limbs<N>, b: &Limbs<N>) -> Limbs<N> {
        add_mod::<N, C::P>(a, b)
    }
    #[inline(always)]
    fn sub(a: &Limbs<N>, b: &Limbs<N>) -> Limbs<N> {
        sub_mod::<N, C::P>(a, b)
    }

    /// `2 * p` (dbl-2001-b, for `a = -3`).
    fn double(p: &Jacobian<N>) -> Jacobian<N> {
        if p.is_infinity() || is_zero(&p.y) {
            return Jacobian::infinity();
        }
        let delta = Self::mul(&p.z, &p.z);
        let gamma = Self::mul(&p.y, &p.y);
        let beta = Self::mul(&p.x, &gamma);
        let t = Self::sub(&p.x, &delta);
        let t3 = Self::add(&Self::add(&t, &t), &t);
        let alpha = Self::mul(&t3, &Self::add(&p.x, &delta));
        let beta2 = Self::add(&beta, &beta);
        let beta4 = Self::add(&beta2, &beta2);
        let beta8 = Self::add(&beta4, &beta4);
        let x = Self::sub(&Self::mul(&alpha, &alpha), &beta8);
        let yz = Self::add(&p.y, &p.z);
        let z = Self::sub(&Self::sub(&Self::mul(&yz, &yz), &gamma), &delta);
        let gamma2 = Self::mul(&gamma, &gamma);
        let g2 = Self::add(&gamma2, &gamma2);
        let g4 = Self::add(&g2, &g2);
        let g8 = Self::add(&g4, &g4);
        let y = Self::sub(&Self::mul(&alpha, &Self::sub(&beta4, &x)), &g8);
        Jacobian { x, y, z }
    }

    /// `a + b` for an affine `b` (madd-2004-hmv), any `a`.
    fn add_mixed(a: &Jacobian<N>, b: &Affine<N>) -> Jacobian<N> {
        if a.is_infinity() {
            return Jacobian::from_affine::<C::P>(b);
        }
        let z1z1 = Self::mul(&a.z, &a.z);
        let u2 = Self::mul(&b.x, &z1z1);
        let s2 = Self::mul(&b.y, &Self::mul(&a.z, &z1z1));
        let h = Self::sub(&u2, &a.x);
        let r = Self::sub(&s2, &a.y);
        if is_zero(&h) {
            return if is_zero(&r) {
                Self::double(a)
            } else {
                Jacobian::infinity()
            };
        }
        let hh = Self::mul(&h, &h);
        let hhh = Self::mul(&h, &hh);
        let v = Self::mul(&a.x, &hh);
        let x = Self::sub(&Self::sub(&Self::sub(&Self::mul(&r, &r), &hhh), &v), &v);
        let y = Self::sub(&Self::mul(&r, &Self::sub(&v, &x)), &Self::mul(&a.y, &hhh));
        let z = Self::mul(&a.z, &h);
        Jacobian { x, y, z }
    }

    /// `a + b` for Jacobian points (add-1998-cmo-2), any `a`, `b`.
    fn add_jacobian(a: &Jacobian<N>, b: &Jacobian<N>) -> Jacobian<N> {
        if a.is_infinity() {
            return *b;
        }
        if b.is_infinity() {
            return *a;
        }
        let z1z1 = Self::mul(&a.z, &a.z);
        let z2z2 = Self::mul(&b.z, &b.z);
        let u1 = Self::mul(&a.x, &z2z2);
        let u2 = Self::mul(&b.x, &z1z1);
        let s1 = Self::mul(&a.y, &Self::mul(&b.z, &z2z2));
        let s2 = Self::mul(&b.y, &Self::mul(&a.z, &z1z1));
        let h = Self::sub(&u2, &u1);
        let r = Self::sub(&s2, &s1);
        if is_zero(&h) {
            return if is_zero(&r) {
                Self::double(a)
            } else {
                Jacobian::infinity()
            };
        }
        let hh = Self::mul(&h, &h);
        let hhh = Self::mul(&h, &hh);
        let v = Self::mul(&u1, &hh);
        let x = Self::sub(&Self::sub(&Self::sub(&Self::mul(&r, &r), &hhh), &v), &v);
        let y = Self::sub(&Self::mul(&r, &Self::sub(&v, &x)), &Self::mul(&s1, &hhh));
        let z = Self::mul(&Self::mul(&a.z, &b.z), &h);
        Jacobian { x, y, z }
    }

    /// Affine forms of finite points, with one field inversion for all (Montgomery's trick).
    fn to_affine_batch(points: &[Jacobian<N>]) -> Vec<Affine<N>> {
        let unit = to_mont::<N, C::P>(&one());
        let mut prefix = Vec::with_capacity(points.len());
        let mut acc = unit;
        for p in points {
            prefix.push(acc);
            acc = Self::mul(&acc, &p.z);
        }
        // acc = product of every Z (none is zero: the caller passes finite points).
        let inv = to_mont::<N, C::P>(&inv_vartime::<N, C::P>(&from_mont::<N, C::P>(&acc)));
        let mut out = vec![
            Affine {
                x: [0; N],
                y: [0; N]
            };
            points.len()
        ];
        let mut running = inv;
        for (i, p) in points.iter().enumerate().rev() {
            let zinv = Self::mul(&running, &prefix[i]);
            running = Self::mul(&running, &p.z);
            let zinv2 = Self::mul(&zinv, &zinv);
            let zinv3 = Self::mul(&zinv2, &zinv);
            out[i] = Affine {
                x: Self::mul(&p.x, &zinv2),
                y: Self::mul(&p.y, &zinv3),
            };
        }
        out
    }
}

/// Bits per window of a scalar: digits are signed, in `-(2^(W-1) - 1)..=2^(W-1)`.
pub const W: usize = 5;
/// Multiples per table row: `1..=2^(W-1)`.
const ROW: usize = 1 << (W - 1);

/// How many windows a scalar of `N` limbs has (one more for the last carry).
const fn windows(n: usize) -> usize {
    (32 * n).div_ceil(W) + 1
}

/// The signed `W`-bit window digits of a scalar, lowest first: `windows(N)` of them.
fn recode<const N: usize>(k: &Limbs<N>, out: &mut [i8; 97]) {
    let mut carry = 0u32;
    let count = windows(N);
    for (i, digit) in out.iter_mut().enumerate().take(count - 1) {
        let at = i * W;
        let (limb, shift) = (at / 32, at % 32);
        let mut bits = k[limb] >> shift;
        if shift + W > 32 && limb + 1 < N {
            bits |= k[limb + 1] << (32 - shift);
        }
        let v = (bits & ((1 << W) - 1)) + carry;
        if v > ROW as u32 {
            *digit = (v as i32 - (1 << W)) as i8;
            carry = 1;
        } else {
            *digit = v as i8;
            carry = 0;
        }
    }
    out[count - 1] = carry as i8;
}

/// Windows per table row: a table holds every [`TEETH`]-th window, and a verification
/// makes `W * (TEETH - 1)` doublings to reach the others (a comb). 4 makes a table a quarter
/// of the size and its building a third of the work for about 7% more per verification.
pub const TEETH: usize = 4;

/// For every [`TEETH`]-th window `i` of a scalar (row `i / TEETH`), `d * 2^(W i) * Q` for
/// `d = 1..=2^(W-1)`.
#[derive(Debug)]
pub struct Table<const N: usize> {
    windows: Vec<[Affine<N>; ROW]>,
}

impl<const N: usize> Table<N> {
    fn new<C: Curve<N>>(q: &Affine<N>) -> Self {
        let count = windows(N).div_ceil(TEETH);
        let mut points = Vec::with_capacity(count * ROW);
        let mut base = Jacobian::from_affine::<C::P>(q);
        for _ in 0..count {
            let mut multiple = base;
            points.push(multiple);
            for _ in 1..ROW {
                multiple = Ops::<N, C>::add_jacobian(&multiple, &base);
                points.push(multiple);
            }
            for _ in 0..W * TEETH {
                base = Ops::<N, C>::double(&base);
            }
        }
        let affine = Ops::<N, C>::to_affine_batch(&points);
        let windows = affine
            .chunks_exact(ROW)
            .map(|c| {
                let mut row = [c[0]; ROW];
                row.copy_from_slice(c);
                row
            })
            .collect();
        Self { windows }
    }

    /// Adds `digit * 2^(W * row * TEETH) * Q` to `acc`.
    #[inline(always)]
    fn add_digit<C: Curve<N>>(&self, acc: &mut Jacobian<N>, row: usize, digit: i8) {
        if digit == 0 {
            return;
        }
        let Some(row) = self.windows.get(row) else {
            return;
        };
        let mut point = row[usize::from(digit.unsigned_abs()) - 1];
        if digit < 0 {
            point.y = sub_mod::<N, C::P>(&[0; N], &point.y);
        }
        *acc = Ops::<N, C>::add_mixed(acc, &point);
    }
}

/// Big-endian bytes (exactly `4 N`) to limbs.
fn from_be<const N: usize>(bytes: &[u8]) -> Option<Limbs<N>> {
    if bytes.len() != 4 * N {
        return None;
    }
    let mut out = [0u32; N];
    for (i, chunk) in bytes.rchunks_exact(4).enumerate() {
        out[i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Some(out)
}

/// A verification key: the public point and, from its first verification on, its table.
#[derive(Debug, Clone)]
pub struct VerifyingKey<const N: usize, C> {
    point: Affine<N>,
    table: OnceLock<Arc<Table<N>>>,
    curve: std::marker::PhantomData<C>,
}

impl<const N: usize, C: Curve<N>> VerifyingKey<N, C> {
    /// The key with affine coordinates `x`, `y` (big-endian, `4 N` bytes each); `None` when
    /// they are not a point of the curve.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Option<Self> {
        let x = from_be::<N>(x)?;
        let y = from_be::<N>(y)?;
        if geq(&x, &C::P::M) || geq(&y, &C::P::M) {
            return None;
        }
        let (x, y) = (to_mont::<N, C::P>(&x), to_mont::<N, C::P>(&y));
        // y^2 == x^3 - 3x + b
        let mul = Ops::<N, C>::mul;
        let x3 = mul(&mul(&x, &x), &x);
        let three_x = add_mod::<N, C::P>(&add_mod::<N, C::P>(&x, &x), &x);
        let rhs = add_mod::<N, C::P>(&sub_mod::<N, C::P>(&x3, &three_x), &C::B);
        if mul(&y, &y) != rhs {
            return None;
        }
        Some(Self {
            point: Affine { x, y },
            table: OnceLock::new(),
            curve: std::marker::PhantomData,
        })
    }

    /// The key's table: built on first use (a JWKS may carry keys no token uses), or found
    /// in the curve's cache of recent keys.
    fn table(&self) -> &Table<N> {
        self.table.get_or_init(|| {
            let cache = C::key_tables();
            let mut cache = cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, table)) = cache.iter().find(|(point, _)| *point == self.point) {
                return Arc::clone(table);
            }
            let table = Arc::new(Table::new::<C>(&self.point));
            if cache.len() >= TABLE_CACHE {
                cache.remove(0);
            }
            cache.push((self.point, Arc::clone(&table)));
            table
        })
    }

    /// Whether `signature` (`r || s`, big-endian, `4 N` bytes each: the JWS form) signs the
    /// message whose hash is `hash` (`4 N` bytes: SHA-256 for P-256, SHA-384 for P-384).
    pub fn verify_prehash(&self, hash: &[u8], signature: &[u8]) -> bool {
        let n = &C::Order::M;
        if signature.len() != 8 * N {
            return false;
        }
        let (Some(r), Some(s), Some(mut e)) = (
            from_be::<N>(&signature[..4 * N]),
            from_be::<N>(&signature[4 * N..]),
            from_be::<N>(hash),
        ) else {
            return false;
        };
        if is_zero(&r) || is_zero(&s) || geq(&r, n) || geq(&s, n) {
            return false;
        }
        if geq(&e, n) {
            sub_assign(&mut e, n);
        }
        let w = inv_vartime::<N, C::Order>(&s);
        let r2 = &C::Order::R2;
        let u1 = mont_mul::<N, C::Order>(&mont_mul::<N, C::Order>(&e, &w), r2);
        let u2 = mont_mul::<N, C::Order>(&mont_mul::<N, C::Order>(&r, &w), r2);
        let (mut d1, mut d2) = ([0i8; 97], [0i8; 97]);
        recode(&u1, &mut d1);
        recode(&u2, &mut d2);
        let (base, table) = (C::base_table(), self.table());
        // u1 G + u2 Q = sum over g of 2^(W g) (sum over rows j of the digits of window
        // j * TEETH + g times the row's multiples), by Horner over g: W doublings between groups.
        let windows = windows(N);
        let mut acc = Jacobian::infinity();
        for g in (0..TEETH).rev() {
            if g + 1 != TEETH {
                for _ in 0..W {
                    acc = Ops::<N, C>::double(&acc);
                }
            }
            for (j, i) in (g..windows).step_by(TEETH).enumerate() {
                base.add_digit::<C>(&mut acc, j, d1[i]);
                table.add_digit::<C>(&mut acc, j, d2[i]);
            }
        }
        if acc.is_infinity() {
            return false;
        }
        // x(acc) mod n == r, with x(acc) = X / Z^2 and r < n < p: X == r Z^2, or
        // X == (r + n) Z^2 when r + n < p.
        let z2 = Ops::<N, C>::mul(&acc.z, &acc.z);
        if Ops::<N, C>::mul(&to_mont::<N, C::P>(&r), &z2) == acc.x {
            return true;
        }
        let mut rn = r;
        if !add_assign(&mut rn, n) && !geq(&rn, &C::P::M) {
            return Ops::<N, C>::mul(&to_mont::<N, C::P>(&rn), &z2) == acc.x;
        }
        false
    }
}

/// P-256's prime `2^256 - 2^224 + 2^192 + 2^96 - 1`.
pub struct P256Field;
impl Modulus<8> for P256Field {
    const M: [u32; 8] = [
        0xffffffff, 0xffffffff, 0xffffffff, 0x00000000, 0x00000000, 0x00000000, 0x00000001,
        0xffffffff,
    ];
    const INV: u32 = 1;
    const R2: [u32; 8] = [
        0x00000003, 0x00000000, 0xffffffff, 0xfffffffb, 0xfffffffe, 0xffffffff, 0xfffffffd,
        0x00000004,
    ];
}

/// P-256's group order.
pub struct P256Order;
impl Modulus<8> for P256Order {
    const M: [u32; 8] = [
        0xfc632551, 0xf3b9cac2, 0xa7179e84, 0xbce6faad, 0xffffffff, 0xffffffff, 0x00000000,
        0xffffffff,
    ];
    const INV: u32 = 0xee00bc4f;
    const R2: [u32; 8] = [
        0xbe79eea2, 0x83244c95, 0x49bd6fa6, 0x4699799c, 0x2b6bec59, 0x2845b239, 0xf3d95620,
        0x66e12d94,
    ];
}

/// NIST P-256 (secp256r1).
#[derive(Debug, Clone, Copy)]
pub struct P256;
impl Curve<8> for P256 {
    fn base_table() -> &'static Table<8> {
        static BASE: OnceLock<Table<8>> = OnceLock::new();
        BASE.get_or_init(|| Table::new::<Self>(&Self::G))
    }
    fn key_tables() -> &'static Mutex<Vec<(Affine<8>, Arc<Table<8>>)>> {
        static KEYS: Mutex<Vec<(Affine<8>, Arc<Table<8>>)>> = Mutex::new(Vec::new());
        &KEYS
    }
    type P = P256Field;
    type Order = P256Order;
    const B: [u32; 8] = [
        0x29c4bddf, 0xd89cdf62, 0x78843090, 0xacf005cd, 0xf7212ed6, 0xe5a220ab, 0x04874834,
        0xdc30061d,
    ];
    const G: Affine<8> = Affine {
        x: [
            0x18a9143c, 0x79e730d4, 0x5fedb601, 0x75ba95fc, 0x77622510, 0x79fb732b, 0xa53755c6,
            0x18905f76,
        ],
        y: [
            0xce95560a, 0xddf25357, 0xba19e45c, 0x8b4ab8e4, 0xdd21f325, 0xd2e88688, 0x25885d85,
            0x8571ff18,
        ],
    };
}

/// P-384's prime `2^384 - 2^128 - 2^96 + 2^32 - 1`.
pub struct P384Field;
impl Modulus<12> for P384Field {
    const M: [u32; 12] = [
        0xffffffff, 0x00000000, 0x00000000, 0xffffffff, 0xfffffffe, 0xffffffff, 0xffffffff,
        0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
    ];
    const INV: u32 = 1;
    const R2: [u32; 12] = [
        0x00000001, 0xfffffffe, 0x00000000, 0x00000002, 0x00000000, 0xfffffffe, 0x00000000,
        0x00000002, 0x00000001, 0x00000000, 0x00000000, 0x00000000,
    ];
}

/// P-384's group order.
pub struct P384Order;
impl Modulus<12> for P384Order {
    const M: [u32; 12] = [
        0xccc52973, 0xecec196a, 0x48b0a77a, 0x581a0db2, 0xf4372ddf, 0xc7634d81, 0xffffffff,
        0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
    ];
    const INV: u32 = 0xe88fdc45;
    const R2: [u32; 12] = [
        0x19b409a9, 0x2d319b24, 0xdf1aa419, 0xff3d81e5, 0xfcb82947, 0xbc3e483a, 0x4aab1cc5,
        0xd40d4917, 0x28266895, 0x3fb05b7a, 0x2b39bf21, 0x0c84ee01,
    ];
}

/// NIST P-384 (secp384r1).
#[derive(Debug, Clone, Copy)]
pub struct P384;
impl Curve<12> for P384 {
    fn base_table() -> &'static Table<12> {
        static BASE: OnceLock<Table<12>> = OnceLock::new();
        BASE.get_or_init(|| Table::new::<Self>(&Self::G))
    }
    fn key_tables() -> &'static Mutex<Vec<(Affine<12>, Arc<Table<12>>)>> {
        static KEYS: Mutex<Vec<(Affine<12>, Arc<Table<12>>)>> = Mutex::new(Vec::new());
        &KEYS
    }
    type P = P384Field;
    type Order = P384Order;
    const B: [u32; 12] = [
        0x9d412dcc, 0x08118871, 0x7a4c32ec, 0xf729add8, 0x1920022e, 0x77f2209b, 0x94938ae2,
        0xe3374bee, 0x1f022094, 0xb62b21f4, 0x604fbff9, 0xcd08114b,
    ];
    const G: Affine<12> = Affine {
        x: [
            0x49c0b528, 0x3dd07566, 0xa0d6ce38, 0x20e378e2, 0x541b4d6e, 0x879c3afc, 0x59a30eff,
            0x64548684, 0x614ede2b, 0x812ff723, 0x299e1513, 0x4d3aadc2,
        ],
        y: [
            0x4b03a4fe, 0x23043dad, 0x7bb4a9ac, 0xa1bfa8bf, 0x2e83b050, 0x8bade756, 0x68f4ffd9,
            0xc6c35219, 0x3969a840, 0xdd800226, 0x5a15c5e9, 0x2b78abc2,
        ],
    };
}

/// A P-256 (ES256) verification key.
pub type P256Key = VerifyingKey<8, P256>;
/// A P-384 (ES384) verification key.
pub type P384Key = VerifyingKey<12, P384>;

impl P256Key {
    /// ES256: `signature` (64 bytes, `r || s`) over `message` (hashed with SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use sha2_next::Digest;
        let hash = sha2_next::Sha256::digest(message);
        self.verify_prehash(&hash, signature)
    }
}

impl P384Key {
    /// ES384: `signature` (96 bytes, `r || s`) over `message` (hashed with SHA-384).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use sha2_next::Digest;
        let hash = sha2_next::Sha384::digest(message);
        self.verify_prehash(&hash, signature)
    }
}

#[cfg(test)]
mod tests;
