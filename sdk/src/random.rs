//! Randomness from the host: request ids, trace and span ids, PKCE verifiers, `state`, AEAD
//! nonces.
//!
//! Inside the proxy [`fill`] asks the host through WASI's `random_get`, which Envoy
//! (proxy-wasm-cpp-host) and the `tollgate` harness both provide: Envoy from its random generator,
//! at most 64 KiB per call (so longer buffers are filled in pieces); the harness from its seeded
//! generator, so a replay is reproducible. Filters take their bytes from here, never from a
//! guest-side generator, and a refusal is an error the caller handles.
//!
//! In native tests the bytes come from a per-thread generator that [`mock::seed`] makes
//! deterministic (not for secrets: native builds are for tests).
//!
//! ```
//! tollgate_sdk::random::mock::seed(7);
//! let a = tollgate_sdk::random::bytes::<16>();
//! tollgate_sdk::random::mock::seed(7);
//! assert_eq!(a, tollgate_sdk::random::bytes::<16>());
//! assert_ne!(a, tollgate_sdk::random::bytes::<16>());
//! ```

/// The host refused to give random bytes (a WASI errno).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no randomness from the host: {0}")]
pub struct RandomError(pub String);

/// Envoy's limit for one `random_get`.
pub const MAX_CHUNK: usize = 64 * 1024;

#[cfg(target_family = "wasm")]
mod imp {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        #[link_name = "random_get"]
        fn wasi_random_get(buf: *mut u8, len: usize) -> u16;
    }

    pub fn fill(buf: &mut [u8]) -> Result<(), super::RandomError> {
        for chunk in buf.chunks_mut(super::MAX_CHUNK) {
            // SAFETY: the pointer and length describe `chunk`, a live, exclusively borrowed
            // slice of guest memory; the host writes at most `len` bytes into it or fails.
            let errno = unsafe { wasi_random_get(chunk.as_mut_ptr(), chunk.len()) };
            if errno != 0 {
                return Err(super::RandomError(format!("random_get errno {errno}")));
            }
        }
        Ok(())
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    pub fn fill(buf: &mut [u8]) -> Result<(), super::RandomError> {
        for chunk in buf.chunks_mut(super::MAX_CHUNK) {
            super::mock::fill(chunk);
        }
        Ok(())
    }
}

/// Fills `buf` with random bytes from the host.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    imp::fill(buf)
}

/// `N` random bytes from the host.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_differ_between_calls_and_long_buffers_fill() {
        let (a, b) = (bytes::<32>(), bytes::<32>());
        assert!(a.is_ok() && b.is_ok());
        assert_ne!(a, b);
        let mut long = vec![0u8; MAX_CHUNK + 10];
        assert!(fill(&mut long).is_ok());
        assert!(long[MAX_CHUNK..].iter().any(|&b| b != 0));
    }
}
