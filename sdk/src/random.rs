//! Randomness from the host: WASI `random_get`, which Envoy (proxy-wasm-cpp-host) and the
//! `tollgate` harness both provide (at most 64 KiB per call in Envoy, so longer buffers are
//! filled in pieces). Filters that need secrets (PKCE verifiers, `state`, AEAD nonces) take their
//! bytes from here and never from a guest-side generator.
//!
//! Natively (unit tests, tools) the operating system's generator stands in (`/dev/urandom`);
//! filters inject their own deterministic source in tests where they assert on the bytes.

/// The host refused to give random bytes (a WASI errno, or the native generator's error).
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
            // slice of guest memory; the host writes exactly `len` bytes into it or fails.
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
    use std::io::Read;

    pub fn fill(buf: &mut [u8]) -> Result<(), super::RandomError> {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .map_err(|err| super::RandomError(format!("/dev/urandom: {err}")))
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
