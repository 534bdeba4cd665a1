//! What a filter needs from its host besides the stream: the wall clock and shared data, as
//! plain functions its host-agnostic logic can call. Inside the proxy they are host calls
//! ([`crate::shared::host_now`], [`crate::shared::HostShared`]); in native tests, per-thread
//! stand-ins that [`mock`] sets and inspects, so the same code runs in both.
//!
//! ```
//! use tollgate_sdk::env;
//! env::mock::set_now_s(1_700_000_000);
//! assert_eq!(env::now_s(), 1_700_000_000);
//! env::with_store(|s| s.set("k", b"v", None)).unwrap();
//! assert_eq!(env::mock::store_len(), 1);
//! env::mock::reset_store();
//! assert_eq!(env::mock::store_len(), 0);
//! ```

use crate::shared::SharedStore;

#[cfg(target_family = "wasm")]
mod imp {
    use std::time::UNIX_EPOCH;

    use crate::shared::{HostShared, SharedStore};

    pub fn now_s() -> u64 {
        let now = crate::shared::host_now();
        now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    pub fn with_store<T>(f: impl FnOnce(&mut dyn SharedStore) -> T) -> T {
        f(&mut HostShared)
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    use crate::shared::SharedStore;

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

/// Runs `f` on the proxy's shared data.
pub fn with_store<T>(f: impl FnOnce(&mut dyn SharedStore) -> T) -> T {
    imp::with_store(f)
}

/// The clock and shared data [`now_s`] and [`with_store`] use outside the proxy (native tests),
/// per thread.
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeSet;

    use crate::shared::{MemoryShared, SharedError, SharedStore};

    /// Shared data that also remembers which keys were written (to check a cache's bound).
    #[derive(Default)]
    pub struct Counting {
        inner: MemoryShared,
        keys: BTreeSet<String>,
    }

    impl SharedStore for Counting {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SharedError> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
            self.keys.insert(key.to_string());
            self.inner.set(key, value, cas)
        }
    }

    thread_local! {
        pub(super) static NOW: Cell<u64> = const { Cell::new(0) };
        pub(super) static STORE: RefCell<Counting> = RefCell::new(Counting::default());
    }

    /// Sets the clock (seconds since the epoch).
    pub fn set_now_s(now: u64) {
        NOW.set(now);
    }

    /// Empties the shared data.
    pub fn reset_store() {
        STORE.with_borrow_mut(|s| *s = Counting::default());
    }

    /// How many keys were written to the shared data since it was last emptied.
    pub fn store_len() -> usize {
        STORE.with_borrow(|s| s.keys.len())
    }
}
