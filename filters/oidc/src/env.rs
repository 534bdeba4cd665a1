//! What the filter needs from its host besides headers: the clock, randomness and shared data.
//! Inside the proxy these are host calls; in native tests, per-thread stand-ins ([`mock`]).

#[cfg(target_family = "wasm")]
mod imp {
    use std::time::UNIX_EPOCH;

    use tollgate_sdk::shared::{HostShared, SharedStore};

    pub fn now_s() -> u64 {
        let now = tollgate_sdk::shared::host_now();
        now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    pub fn with_store<T>(f: impl FnOnce(&mut dyn SharedStore) -> T) -> T {
        f(&mut HostShared)
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    use tollgate_sdk::shared::SharedStore;

    pub fn now_s() -> u64 {
        super::mock::NOW.get()
    }

    pub fn with_store<T>(f: impl FnOnce(&mut dyn SharedStore) -> T) -> T {
        super::mock::STORE.with_borrow_mut(|store| f(store))
    }
}

/// The host's wall clock, seconds since the Unix epoch.
pub fn now_s() -> u64 {
    imp::now_s()
}

/// `N` random bytes from the host (`tollgate_sdk::random`).
pub fn random<const N: usize>() -> Option<[u8; N]> {
    match tollgate_sdk::random::bytes::<N>() {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            log::error!("{err}");
            None
        }
    }
}

/// Runs `f` on the proxy's shared data.
pub fn with_store<T>(f: impl FnOnce(&mut dyn tollgate_sdk::shared::SharedStore) -> T) -> T {
    imp::with_store(f)
}

/// The clock and shared data the filter sees outside the proxy (native tests), per thread.
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::{Cell, RefCell};

    use tollgate_sdk::shared::MemoryShared;

    thread_local! {
        pub(super) static NOW: Cell<u64> = const { Cell::new(0) };
        pub(super) static STORE: RefCell<MemoryShared> = RefCell::new(MemoryShared::default());
    }

    /// Sets the clock (seconds since the epoch).
    pub fn set_now_s(now: u64) {
        NOW.set(now);
    }

    /// Empties the shared data.
    pub fn reset_store() {
        STORE.with_borrow_mut(|s| *s = MemoryShared::default());
    }
}
