//! Randomness from the host: request ids, trace and span ids.
//!
//! Inside the proxy [`fill`] asks the host through WASI's `random_get` (Envoy answers from its
//! random generator, at most 64 KiB per call; the harness from its seeded generator, so a replay
//! is reproducible). In native tests it draws from a per-thread generator that [`mock::seed`]
//! makes deterministic. The filter never seeds anything itself.
//!
//! ```
//! tollgate_sdk::random::mock::seed(7);
//! let a = tollgate_sdk::random::bytes::<16>();
//! tollgate_sdk::random::mock::seed(7);
//! assert_eq!(a, tollgate_sdk::random::bytes::<16>());
//! assert_ne!(a, tollgate_sdk::random::bytes::<16>());
//! ```

/// The most `random_get` hands out in one call (Envoy's limit).
const HOST_MAX: usize = 64 * 1024;

/// Fills `out` with random bytes from the host; false when the host refused (then `out` is
/// left as it was, and the caller decides what to do).
#[cfg(target_family = "wasm")]
pub fn fill(out: &mut [u8]) -> bool {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }
    for chunk in out.chunks_mut(HOST_MAX) {
        // SAFETY: `chunk` is valid for writes of `chunk.len()` bytes for the whole call, and
        // `random_get` writes at most that many.
        let errno = unsafe { random_get(chunk.as_mut_ptr(), chunk.len()) };
        if errno != 0 {
            log::warn!("random_get failed: errno {errno}");
            return false;
        }
    }
    true
}

/// Fills `out` from the per-thread generator of [`mock`] (native tests).
#[cfg(not(target_family = "wasm"))]
pub fn fill(out: &mut [u8]) -> bool {
    for chunk in out.chunks_mut(HOST_MAX) {
        mock::fill(chunk);
    }
    true
}

/// `N` random bytes from [`fill`] (zeros if the host refused, which no proxy does).
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

/// The generator [`fill`] uses outside the proxy (native tests), per thread.
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::Cell;

    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
    }

    /// Restarts this thread's generator from `seed`: the same bytes follow each time.
    pub fn seed(seed: u64) {
        STATE.set(seed ^ 0x9e37_79b9_7f4a_7c15);
    }

    /// splitmix64: fine for tests, not for secrets.
    pub(super) fn fill(out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let mut z = STATE.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            STATE.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let bytes = z.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
