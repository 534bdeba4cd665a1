//! What the filter needs from its host besides headers: the clock and shared data, from the SDK
//! ([`tollgate_sdk::env`]: host calls in the proxy, per-thread stand-ins in native tests).

#[cfg(not(target_family = "wasm"))]
pub use tollgate_sdk::env::mock;
pub use tollgate_sdk::env::{now_s, with_store};
