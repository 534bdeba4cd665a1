//! The verified-token cache: per provider and per VM, tokens whose signature and claims were
//! verified, with what the request path needs from them (the claim header values), so a token
//! seen again is neither parsed nor verified (Envoy's `jwt_cache_config`).
//!
//! - Looked up with the raw token before any parse: a hit costs a hash of the token, one table
//!   probe and a comparison of the token's bytes, then the bounds check below.
//! - Keyed by the token itself, as Envoy's cache is (`SimpleLRUCache<std::string, Jwt>`): an
//!   entry matches only the exact bytes that were verified, so no forged token can take a cached
//!   token's place whatever the hash. The hash is a fixed multiply-rotate over 8-byte words,
//!   not a keyed one: only verified tokens are ever inserted, so a client cannot choose keys
//!   that collide (and needs no randomness in the module).
//! - Bounded: at most `size` tokens (memory at most `size` times `max_token_bytes` plus the
//!   claim values); when full, the least recently used goes, in constant time (a doubly
//!   linked list over the slots).
//! - Honours `exp` and `nbf`: an entry is used only while verification would accept the token
//!   (`nbf - skew <= now < exp + skew`); an entry past `exp` is dropped and the token is
//!   verified again (and refused as expired).
//! - Off unless configured (`jwt_cache`), as in Envoy. A cached token stays valid until it
//!   expires or is evicted even if its key leaves the JWKS (Envoy's cache behaves the same).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use serde::Deserialize;

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

/// What the request path needs of a verified token: the value of each of the provider's
/// `claim_to_headers` (in its order; `None` when the claim is absent, null, or not a valid
/// header value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// One per `claim_to_headers` entry.
    pub claim_values: Vec<Option<String>>,
}

/// When a verified token may be accepted: `from <= now < until`, seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First second it is valid (`nbf - skew`; 0 without `nbf`).
    pub from: u64,
    /// First second it is no longer valid (`exp + skew`; `u64::MAX` without `exp`).
    pub until: u64,
}

/// A fixed word-at-a-time hasher for the token table (see the module docs for why it need
/// not be keyed).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl TokenHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.mix(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Slot {
    token: Rc<str>,
    validity: Validity,
    verified: Rc<Verified>,
    /// Neighbours in recency order (`NIL` at the ends).
    newer: usize,
    older: usize,
}

/// One provider's cache.
#[derive(Debug)]
pub struct TokenCache {
    index: HashMap<Rc<str>, usize, BuildHasherDefault<TokenHasher>>,
    slots: Vec<Slot>,
    /// Slots whose token was dropped (expired), reused before the table grows.
    free: Vec<usize>,
    /// Most and least recently used slots.
    newest: usize,
    oldest: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }
}

impl TokenCache {
    /// What was verified of `token` when it is cached and valid at `now` (seconds); an entry
    /// past its `exp` is removed.
    pub fn get(&mut self, token: &str, now: u64) -> Option<Rc<Verified>> {
        let at = *self.index.get(token)?;
        let slot = self.slots.get(at)?;
        let Validity { from, until } = slot.validity;
        if now >= until {
            self.unlink(at);
            self.index.remove(token);
            self.free.push(at);
            return None;
        }
        if now < from {
            // Not valid yet (the clock went back): refused by verification, kept for later.
            return None;
        }
        let verified = Rc::clone(&slot.verified);
        self.touch(at);
        Some(verified)
    }

    /// Remembers a verified `token` with its `validity`, keeping at most `size` tokens (the
    /// least recently used goes).
    pub fn insert(&mut self, token: &str, validity: Validity, verified: Rc<Verified>, size: usize) {
        if size == 0 {
            return;
        }
        if let Some(&at) = self.index.get(token) {
            if let Some(slot) = self.slots.get_mut(at) {
                slot.validity = validity;
                slot.verified = verified;
            }
            self.touch(at);
            return;
        }
        let token: Rc<str> = Rc::from(token);
        let at = if self.index.len() >= size && self.oldest != NIL {
            // Full: the least recently used slot takes the new token.
            let at = self.oldest;
            self.unlink(at);
            if let Some(slot) = self.slots.get(at) {
                let old = Rc::clone(&slot.token);
                self.index.remove(&old);
            }
            at
        } else if let Some(at) = self.free.pop() {
            at
        } else {
            self.slots.push(Slot {
                token: Rc::clone(&token),
                validity,
                verified: Rc::clone(&verified),
                newer: NIL,
                older: NIL,
            });
            self.slots.len() - 1
        };
        if let Some(slot) = self.slots.get_mut(at) {
            slot.token = Rc::clone(&token);
            slot.validity = validity;
            slot.verified = verified;
        }
        self.index.insert(token, at);
        self.push_newest(at);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Makes `at` the most recently used.
    fn touch(&mut self, at: usize) {
        if self.newest != at {
            self.unlink(at);
            self.push_newest(at);
        }
    }

    fn unlink(&mut self, at: usize) {
        let Some((newer, older)) = self.slots.get(at).map(|s| (s.newer, s.older)) else {
            return;
        };
        match self.slots.get_mut(newer) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.slots.get_mut(older) {
            Some(o) => o.newer = newer,
            None => self.oldest = newer,
        }
        if let Some(slot) = self.slots.get_mut(at) {
            slot.newer = NIL;
            slot.older = NIL;
        }
    }

    fn push_newest(&mut self, at: usize) {
        let previous = self.newest;
        if let Some(slot) = self.slots.get_mut(at) {
            slot.newer = NIL;
            slot.older = previous;
        }
        match self.slots.get_mut(previous) {
            Some(p) => p.newer = at,
            None => self.oldest = at,
        }
        self.newest = at;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn valid(from: u64, until: u64) -> Validity {
        Validity { from, until }
    }

    fn claims(sub: &str) -> Rc<Verified> {
        Rc::new(Verified {
            claim_values: vec![Some(sub.to_string()), None],
        })
    }

    #[test]
    fn hits_while_valid_then_forgets_it_past_exp() {
        let mut cache = TokenCache::default();
        assert!(cache.get("a.b.c", 100).is_none());
        cache.insert("a.b.c", valid(120, 200), claims("ada"), 10);
        assert!(cache.get("a.b.c", 119).is_none(), "before nbf - skew");
        assert_eq!(cache.len(), 1, "kept for when it becomes valid");
        assert_eq!(cache.get("a.b.c", 150), Some(claims("ada")));
        assert!(cache.get("a.b.c", 199).is_some());
        assert!(cache.get("a.b.c", 200).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped");
        // Its slot is reused.
        cache.insert("d.e.f", valid(0, 300), claims("bob"), 10);
        assert_eq!(cache.slots.len(), 1);
        assert_eq!(cache.get("d.e.f", 250), Some(claims("bob")));
    }

    #[test]
    fn keeps_at_most_size_evicting_the_least_recently_used() {
        let mut cache = TokenCache::default();
        cache.insert("a", valid(0, 1000), claims("a"), 2);
        cache.insert("b", valid(0, 1000), claims("b"), 2);
        assert!(cache.get("a", 1).is_some(), "a is now the most recently used");
        cache.insert("c", valid(0, 1000), claims("c"), 2);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b", 1).is_none(), "b was the least recently used");
        assert_eq!(cache.get("a", 1), Some(claims("a")));
        assert_eq!(cache.get("c", 1), Some(claims("c")));
        // Many more than `size`: the table never grows past it, and the newest stay.
        for i in 0..1000 {
            cache.insert(&format!("t{i}"), valid(0, 1000), claims("x"), 3);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.slots.len() <= 3);
        for i in 997..1000 {
            assert!(cache.get(&format!("t{i}"), 1).is_some(), "t{i}");
        }
        assert!(cache.get("t996", 1).is_none());
    }

    #[test]
    fn only_the_exact_token_hits_and_size_zero_caches_nothing() {
        let mut cache = TokenCache::default();
        cache.insert("a", valid(0, 1000), claims("a"), 0);
        assert!(cache.is_empty());
        cache.insert("h.p.sig", valid(0, 1000), claims("a"), 4);
        assert!(cache.get("h.p.sig2", 1).is_none());
        assert!(cache.get("h.p.si", 1).is_none());
        assert!(cache.get("h.p.sig", 1).is_some());
    }

    #[test]
    fn reinserting_refreshes_validity_and_claims() {
        let mut cache = TokenCache::default();
        cache.insert("a", valid(0, 10), claims("a"), 4);
        cache.insert("a", valid(0, 20), claims("b"), 4);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("a", 15), Some(claims("b")));
    }

    #[test]
    fn hasher_reads_every_byte() {
        let hash = |s: &str| {
            let mut h = TokenHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_ne!(hash("abcdefgh1"), hash("abcdefgh2"));
        assert_ne!(hash("abcdefgh"), hash("abcdefgi"));
        assert_ne!(hash("a"), hash("b"));
    }
}
