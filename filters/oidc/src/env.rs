//! What the filter needs from its host besides headers: the clock and shared data, from the SDK
//! ([`tollgate_sdk::env`]: host calls in the proxy, per-thread stand-ins in native tests), and
//! randomness ([`tollgate_sdk::random`]).

#[cfg(not(target_family = "wasm"))]
pub use tollgate_sdk::env::mock;
pub use tollgate_sdk::env::{now_s, with_store};

/// `N` random bytes from the host (`tollgate_sdk::random`); `None`, logged, when it refused.
pub fn random<const N: usize>() -> Option<[u8; N]> {
    match tollgate_sdk::random::bytes::<N>() {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            log::error!("{err}");
            None
        }
    }
}
