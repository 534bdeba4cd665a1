//! The verified-token cache: per provider and per VM, tokens whose signature and claims were
//! verified, so a token seen again skips the signature check (Envoy's `jwt_cache_config`).
//!
//! - Keyed by the SHA-256 of the token, so the cache holds 32 bytes per token whatever its
//!   length, and no forged token can take a cached token's place.
//! - Bounded: at most `size` tokens; when full, the least recently used one goes.
//! - Honours `exp`: an entry is used only until the token's `exp` plus the provider's clock
//!   skew (the moment verification would start refusing it), then dropped, and the token is
//!   verified again (and refused as expired).
//! - Off unless configured (`jwt_cache`), as in Envoy. A cached token stays valid until it
//!   expires or is evicted even if its key leaves the JWKS (Envoy's cache behaves the same).

use std::collections::HashMap;

use serde::Deserialize;
use sha2_next::{Digest, Sha256};

/// Largest `jwt_cache.size` accepted.
pub const MAX_CACHE_SIZE: usize = 100_000;

/// A provider's `jwt_cache` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How many verified tokens to keep (0 turns the cache off).
    #[serde(default = "default_size")]
    pub size: usize,
}

fn default_size() -> usize {
    100
}

/// One provider's cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    /// Token digest to (expiry: valid while `now` is below it, seconds since the epoch; last use).
    entries: HashMap<[u8; 32], (u64, u64)>,
    /// A counter giving each use its order, for eviction.
    clock: u64,
}

/// The cache key of `token`.
pub fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// Whether `key` was verified and is still valid at `now` (seconds). An expired entry is
    /// removed.
    pub fn hit(&mut self, key: &[u8; 32], now: u64) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(key) {
            Some((until, used)) if now < *until => {
                *used = clock;
                true
            }
            Some(_) => {
                self.entries.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers a verified token valid while `now < until` (seconds), keeping at most `size`.
    pub fn insert(&mut self, key: [u8; 32], until: u64, size: usize) {
        if size == 0 {
            return;
        }
        self.clock += 1;
        if self.entries.len() >= size && !self.entries.contains_key(&key) {
            // Least recently used out: a scan, on insertion only, bounded by `size`.
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (until, self.clock));
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn hits_until_the_entry_expires_then_forgets_it() {
        let mut cache = TokenCache::default();
        let k = key("a.b.c");
        assert!(!cache.hit(&k, 100));
        cache.insert(k, 200, 10);
        assert!(cache.hit(&k, 150));
        assert!(cache.hit(&k, 199));
        assert!(!cache.hit(&k, 200));
        assert!(cache.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn keeps_at_most_size_evicting_the_least_recently_used() {
        let mut cache = TokenCache::default();
        let (a, b, c) = (key("a"), key("b"), key("c"));
        cache.insert(a, 1000, 2);
        cache.insert(b, 1000, 2);
        assert!(cache.hit(&a, 1), "a is now the most recently used");
        cache.insert(c, 1000, 2);
        assert_eq!(cache.len(), 2);
        assert!(cache.hit(&a, 1));
        assert!(!cache.hit(&b, 1), "b was the least recently used");
        assert!(cache.hit(&c, 1));
    }

    #[test]
    fn size_zero_caches_nothing_and_keys_differ_per_token() {
        let mut cache = TokenCache::default();
        cache.insert(key("a"), 1000, 0);
        assert!(cache.is_empty());
        assert_ne!(key("a.b.c"), key("a.b.d"));
    }
}
