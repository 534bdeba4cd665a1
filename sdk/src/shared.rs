//! Shared data: the proxy's key-value store shared by every VM with the same `vm_id` (all worker
//! threads), typed with `serde` JSON, with a compare-and-swap retry helper and TTL'd cache entries.
//!
//! [`HostShared`] is the proxy's store; [`MemoryShared`] is an in-memory one with the same
//! semantics (a CAS token per key, bumped by every write) for native tests.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use tollgate_sdk::shared::{self, MemoryShared};
//!
//! let mut store = MemoryShared::new();
//! // Typed get/set.
//! shared::set_json(&mut store, "greeting", &"hello", None).unwrap();
//! let (value, _cas) = shared::get_json::<String>(&store, "greeting").unwrap().unwrap();
//! assert_eq!(value, "hello");
//!
//! // Read-modify-write that retries when another worker wrote in between.
//! let n = shared::update(&mut store, "hits", 8, |n: Option<u64>| n.unwrap_or(0) + 1).unwrap();
//! assert_eq!(n, 1);
//!
//! // A cache entry living 60 s of host time.
//! let now = UNIX_EPOCH + Duration::from_secs(1_000);
//! shared::cache_put(&mut store, "jwks", &vec![1, 2], Duration::from_secs(60), now).unwrap();
//! assert_eq!(shared::cache_get::<Vec<u8>>(&store, "jwks", now).unwrap(), Some(vec![1, 2]));
//! let later = now + Duration::from_secs(61);
//! assert_eq!(shared::cache_get::<Vec<u8>>(&store, "jwks", later).unwrap(), None);
//! ```

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What can go wrong with shared data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    /// The value changed since it was read (the CAS token is stale).
    #[error("shared data `{key}`: changed by another writer (CAS mismatch)")]
    CasMismatch {
        /// The key.
        key: String,
    },
    /// [`update`] kept losing the race.
    #[error("shared data `{key}`: still contended after {attempts} attempts")]
    Contended {
        /// The key.
        key: String,
        /// How many read-modify-write rounds were tried.
        attempts: u32,
    },
    /// The stored bytes are not the JSON of the expected type.
    #[error("shared data `{key}`: cannot decode the stored value: {message}")]
    Decode {
        /// The key.
        key: String,
        /// The JSON error.
        message: String,
    },
    /// The value cannot be written as JSON.
    #[error("shared data `{key}`: cannot encode the value: {message}")]
    Encode {
        /// The key.
        key: String,
        /// The JSON error.
        message: String,
    },
    /// The host refused the call.
    #[error("shared data `{key}`: the host refused the call ({status})")]
    Host {
        /// The key.
        key: String,
        /// The host's status.
        status: String,
    },
}

/// A key-value store with a compare-and-swap token per key.
pub trait SharedStore {
    /// The bytes at `key` and their CAS token; `None` when absent.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SharedError>;
    /// Writes `value` at `key`; with `cas`, only if the key was not written since that token was
    /// read ([`SharedError::CasMismatch`] otherwise).
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError>;
}

/// The proxy's shared data (`proxy_get_shared_data` / `proxy_set_shared_data`).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostShared;

impl SharedStore for HostShared {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SharedError> {
        match crate::abi::get_shared_data(key) {
            Ok((Some(bytes), cas)) => Ok(Some((bytes, cas.unwrap_or(0)))),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(SharedError::Host {
                key: key.to_string(),
                status: format!("{status:?}"),
            }),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        match crate::abi::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(crate::abi::Status::CasMismatch) => Err(SharedError::CasMismatch {
                key: key.to_string(),
            }),
            Err(status) => Err(SharedError::Host {
                key: key.to_string(),
                status: format!("{status:?}"),
            }),
        }
    }
}

/// An in-memory [`SharedStore`] for native tests: CAS tokens start at 1 and grow with each write.
///
/// ```
/// use tollgate_sdk::shared::{MemoryShared, SharedError, SharedStore};
/// let mut store = MemoryShared::new();
/// store.set("k", b"1", None).unwrap();
/// let (_, cas) = store.get("k").unwrap().unwrap();
/// store.set("k", b"2", Some(cas)).unwrap();
/// assert_eq!(store.set("k", b"3", Some(cas)), Err(SharedError::CasMismatch { key: "k".into() }));
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryShared {
    entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl MemoryShared {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SharedStore for MemoryShared {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SharedError> {
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
        // Like Envoy: a CAS of 0 (or none) writes unconditionally.
        if let Some(cas) = cas.filter(|c| *c != 0) {
            let current = self.entries.get(key).map(|(_, c)| *c);
            if current != Some(cas) {
                return Err(SharedError::CasMismatch {
                    key: key.to_string(),
                });
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.entries
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

/// Reads and decodes the JSON value at `key`, with its CAS token.
pub fn get_json<T: DeserializeOwned>(
    store: &dyn SharedStore,
    key: &str,
) -> Result<Option<(T, u32)>, SharedError> {
    let Some((bytes, cas)) = store.get(key)? else {
        return Ok(None);
    };
    let value = serde_json::from_slice(&bytes).map_err(|err| SharedError::Decode {
        key: key.to_string(),
        message: err.to_string(),
    })?;
    Ok(Some((value, cas)))
}

/// Encodes `value` as JSON and writes it at `key` (conditionally with `cas`).
pub fn set_json<T: Serialize + ?Sized>(
    store: &mut dyn SharedStore,
    key: &str,
    value: &T,
    cas: Option<u32>,
) -> Result<(), SharedError> {
    let bytes = serde_json::to_vec(value).map_err(|err| SharedError::Encode {
        key: key.to_string(),
        message: err.to_string(),
    })?;
    store.set(key, &bytes, cas)
}

/// Read-modify-write with compare-and-swap: reads `key`, computes the new value with `f`, writes
/// it only if nobody wrote in between, and on a CAS mismatch re-reads and retries, up to
/// `max_attempts` rounds. Returns the value written.
///
/// ```
/// use tollgate_sdk::shared::{self, MemoryShared};
/// let mut store = MemoryShared::new();
/// for _ in 0..3 {
///     shared::update(&mut store, "n", 4, |n: Option<u32>| n.unwrap_or(0) + 2).unwrap();
/// }
/// assert_eq!(shared::get_json::<u32>(&store, "n").unwrap().map(|(n, _)| n), Some(6));
/// ```
pub fn update<T: Serialize + DeserializeOwned>(
    store: &mut dyn SharedStore,
    key: &str,
    max_attempts: u32,
    mut f: impl FnMut(Option<T>) -> T,
) -> Result<T, SharedError> {
    for _ in 0..max_attempts {
        let (current, cas) = match get_json::<T>(store, key)? {
            Some((value, cas)) => (Some(value), cas),
            None => (None, 0),
        };
        let next = f(current);
        // A CAS of 0 would write unconditionally; an absent key cannot be guarded in the ABI, so
        // the first writer of a key wins without a check (values are recomputable).
        match set_json(store, key, &next, (cas != 0).then_some(cas)) {
            Ok(()) => return Ok(next),
            Err(SharedError::CasMismatch { .. }) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(SharedError::Contended {
        key: key.to_string(),
        attempts: max_attempts,
    })
}

/// A value with an expiry time, as [`cache_put`] stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry<T> {
    /// Expiry, milliseconds since the Unix epoch (host clock).
    pub expires_at_ms: u64,
    /// The value.
    pub value: T,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Stores `value` at `key` until `now + ttl`.
pub fn cache_put<T: Serialize>(
    store: &mut dyn SharedStore,
    key: &str,
    value: &T,
    ttl: Duration,
    now: SystemTime,
) -> Result<(), SharedError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let entry = CacheEntry {
        expires_at_ms: unix_ms(now).saturating_add(ttl_ms),
        value,
    };
    set_json(store, key, &entry, None)
}

/// The value at `key` if it has not expired at `now`.
pub fn cache_get<T: DeserializeOwned>(
    store: &dyn SharedStore,
    key: &str,
    now: SystemTime,
) -> Result<Option<T>, SharedError> {
    let Some((entry, _)) = get_json::<CacheEntry<T>>(store, key)? else {
        return Ok(None);
    };
    Ok((unix_ms(now) < entry.expires_at_ms).then_some(entry.value))
}

/// The host's clock (`proxy_get_current_time_nanoseconds`); the Unix epoch if the host refuses.
pub fn host_now() -> SystemTime {
    crate::abi::get_current_time().unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store where another writer sneaks in a write before the first `racing` sets.
    struct Racy {
        inner: MemoryShared,
        racing: u32,
    }

    impl SharedStore for Racy {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SharedError> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
            if self.racing > 0 {
                self.racing -= 1;
                self.inner.set(key, b"100", None)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn update_retries_on_cas_mismatch_and_sees_the_other_write() {
        let mut store = Racy {
            inner: MemoryShared::new(),
            racing: 2,
        };
        set_json(&mut store, "n", &1u32, None).ok();
        // Round 1 reads 1 and loses to the racer (n=100); round 2 reads 100, loses again;
        // round 3 reads 100 and wins with 101.
        let written = update(&mut store, "n", 5, |n: Option<u32>| n.unwrap_or(0) + 1);
        assert_eq!(written, Ok(101));
        assert_eq!(
            get_json::<u32>(&store, "n").map(|v| v.map(|v| v.0)),
            Ok(Some(101))
        );
    }

    #[test]
    fn update_gives_up_after_max_attempts() {
        let mut store = Racy {
            inner: MemoryShared::new(),
            racing: 10,
        };
        set_json(&mut store.inner, "n", &1u32, None).ok();
        let err = update(&mut store, "n", 3, |n: Option<u32>| n.unwrap_or(0) + 1);
        assert_eq!(
            err,
            Err(SharedError::Contended {
                key: "n".into(),
                attempts: 3
            })
        );
    }

    #[test]
    fn wrong_type_is_a_decode_error_naming_the_key() {
        let mut store = MemoryShared::new();
        store.set("k", b"not json", None).ok();
        let err = get_json::<u32>(&store, "k");
        assert!(matches!(err, Err(SharedError::Decode { ref key, .. }) if key == "k"));
    }

    #[test]
    fn cache_expires_exactly_at_ttl() {
        let mut store = MemoryShared::new();
        let now = UNIX_EPOCH + Duration::from_secs(10);
        cache_put(&mut store, "c", &"v", Duration::from_millis(500), now).ok();
        let at = |ms| now + Duration::from_millis(ms);
        assert_eq!(
            cache_get::<String>(&store, "c", at(499)),
            Ok(Some("v".into()))
        );
        assert_eq!(cache_get::<String>(&store, "c", at(500)), Ok(None));
        assert_eq!(cache_get::<String>(&store, "missing", now), Ok(None));
    }
}
