//! The host's clock for durations: `proxy_get_current_time_nanoseconds` inside the proxy, a
//! per-thread clock that tests set ([`mock`]) natively.

/// Nanoseconds since the Unix epoch, from the host (0 if it refuses).
#[cfg(target_family = "wasm")]
pub fn now_ns() -> u128 {
    tollgate_sdk::shared::host_now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The mock clock's time (native tests).
#[cfg(not(target_family = "wasm"))]
pub fn now_ns() -> u128 {
    mock::NOW.get()
}

/// The clock [`now_ns`] reads outside the proxy.
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::Cell;

    thread_local! {
        pub(super) static NOW: Cell<u128> = const { Cell::new(0) };
    }

    /// Moves this thread's clock forward by `ms` milliseconds.
    pub fn advance_ms(ms: u64) {
        NOW.set(NOW.get() + u128::from(ms) * 1_000_000);
    }
}
