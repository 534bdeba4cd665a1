//! The verified-token cache: per provider and per VM, tokens whose signature and claims were
//! verified, with what the request path needs from them (the claim header values), so a token
//! seen again is neither parsed nor verified (Envoy's `jwt_cache_config`).
//!
//! - Looked up with the raw token before any parse (the bytes of the request's header map, not a
//!   copy): a hit costs a hash of the token's length and last bytes, one table probe and a
//!   comparison of every byte of the token (16 at a time: the byte loops of `memcmp` and
//!   `String::from_utf8_lossy` were most of a hit's instructions in wasm), then the bounds
//!   check below.
//! - Holds the token itself, as Envoy's cache does (`SimpleLRUCache<std::string, Jwt>`): an
//!   entry matches only the exact bytes that were verified, so no forged token can take a cached
//!   token's place whatever the hash. The table is indexed by a 64-bit multiply-rotate hash of
//!   the token's length and last 24 bytes (its signature), not a keyed one: only verified
//!   tokens are ever inserted, so a client cannot choose keys that collide (and the module
//!   needs no randomness); a request whose token merely shares a cached token's hash finds
//!   other bytes in the slot and is verified as any other. Two verified tokens with
//!   the same hash share a slot: the later one replaces the earlier.
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

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The little-endian word of up to 8 bytes (zero-padded).
pub(crate) fn word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    if let Some(head) = word.get_mut(..bytes.len()) {
        head.copy_from_slice(bytes);
    }
    u64::from_le_bytes(word)
}

/// How many bytes at the end of a token [`token_hash`] reads.
const HASHED_TAIL: usize = 24;

/// The table hash of `token`: a fixed multiply-rotate over its length and its last
/// [`HASHED_TAIL`] bytes (see the module docs for why it need not be keyed). A token ends with
/// its signature, which differs between any two tokens that verify: the tail spreads them as
/// well as the whole would, at a constant cost (the whole token was about 1.6 wasm
/// instructions a byte); which slot a token takes never decides a hit, the comparison does.
pub fn token_hash(token: impl AsRef<[u8]>) -> u64 {
    let bytes = token.as_ref();
    let tail = bytes
        .get(bytes.len().saturating_sub(HASHED_TAIL)..)
        .unwrap_or(bytes);
    let mut hash = bytes.len() as u64;
    let mut chunks = tail.chunks_exact(8);
    for chunk in &mut chunks {
        hash = (hash.rotate_left(5) ^ word(chunk)).wrapping_mul(SEED);
    }
    hash = (hash.rotate_left(5) ^ word(chunks.remainder())).wrapping_mul(SEED);
    hash ^ (hash >> 29)
}

/// Whether `a` and `b` are the same bytes, compared 16 at a time (two words per step: the
/// loop's own instructions are most of a short step's).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(16), b.chunks_exact(16));
    for (x, y) in (&mut wa).zip(&mut wb) {
        let (x0, x1) = x.split_at(8);
        let (y0, y1) = y.split_at(8);
        if (word(x0) ^ word(y0)) | (word(x1) ^ word(y1)) != 0 {
            return false;
        }
    }
    let (mut ta, mut tb) = (wa.remainder().chunks(8), wb.remainder().chunks(8));
    (&mut ta).zip(&mut tb).all(|(x, y)| word(x) == word(y))
}

/// Passes the already mixed [`token_hash`] through to the table.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            self.0 = (self.0.rotate_left(5) ^ word(chunk)).wrapping_mul(SEED);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Slot {
    token: Box<str>,
    hash: u64,
    validity: Validity,
    verified: Rc<Verified>,
    /// Neighbours in recency order (`NIL` at the ends).
    newer: usize,
    older: usize,
}

/// One provider's cache.
#[derive(Debug)]
pub struct TokenCache {
    /// [`token_hash`] to slot.
    index: HashMap<u64, usize, BuildHasherDefault<PassThrough>>,
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
    pub fn get(&mut self, token: impl AsRef<[u8]>, now: u64) -> Option<Rc<Verified>> {
        let token = token.as_ref();
        let hash = token_hash(token);
        let at = *self.index.get(&hash)?;
        let slot = self.slots.get(at)?;
        if !same(slot.token.as_bytes(), token) {
            return None;
        }
        let Validity { from, until } = slot.validity;
        if now >= until {
            self.unlink(at);
            self.index.remove(&hash);
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
        let hash = token_hash(token);
        let at = if let Some(&at) = self.index.get(&hash) {
            // The same token again, or another with its hash: that slot takes it.
            self.unlink(at);
            at
        } else if self.index.len() >= size && self.oldest != NIL {
            // Full: the least recently used slot takes the new token.
            let at = self.oldest;
            self.unlink(at);
            if let Some(old) = self.slots.get(at).map(|s| s.hash) {
                self.index.remove(&old);
            }
            at
        } else if let Some(at) = self.free.pop() {
            at
        } else {
            self.slots.push(Slot {
                token: Box::from(""),
                hash,
                validity,
                verified: Rc::clone(&verified),
                newer: NIL,
                older: NIL,
            });
            self.slots.len() - 1
        };
        if let Some(slot) = self.slots.get_mut(at) {
            if !same(slot.token.as_bytes(), token.as_bytes()) {
                slot.token = Box::from(token);
            }
            slot.hash = hash;
            slot.validity = validity;
            slot.verified = verified;
        }
        self.index.insert(hash, at);
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
            None => {
                if self.newest == at {
                    self.newest = older;
                }
            }
        }
        match self.slots.get_mut(older) {
            Some(o) => o.newer = newer,
            None => {
                if self.oldest == at {
                    self.oldest = newer;
                }
            }
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
        assert!(
            cache.get("a", 1).is_some(),
            "a is now the most recently used"
        );
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
            assert!(cache.get(format!("t{i}"), 1).is_some(), "t{i}");
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
    fn hash_reads_the_tail_and_comparison_every_byte() {
        for (a, b) in [
            ("abcdefgh1", "abcdefgh2"),
            ("abcdefgh", "abcdefgi"),
            ("a", "b"),
            ("a", "a\0"),
            (
                "0123456789abcdefghijklmnopqrstuvwxyz",
                "0123456789abcdefghijklmnopqrstuvwxyZ",
            ),
            (
                "0123456789abcdefghijklmnopqrstuvwxyz",
                "0123456789abcdefghijklmnopqrstuvwxy",
            ),
        ] {
            assert_ne!(token_hash(a), token_hash(b), "{a:?} {b:?}");
        }
        // Every length around the 8- and 16-byte steps, a change in every position.
        let text: Vec<u8> = (0..70u8).map(|i| b'!' + i).collect();
        for len in 0..text.len() {
            let a = &text[..len];
            assert!(same(a, a));
            assert!(!same(a, &text[..len + 1]));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!same(a, &b), "{len} {at}");
                if at >= len.saturating_sub(HASHED_TAIL) {
                    assert_ne!(token_hash(a), token_hash(&b), "{len} {at}");
                }
            }
        }
    }

    #[test]
    fn tokens_sharing_a_hash_never_hit_each_other() {
        // Forced: the second token goes into the first one's slot, as a collision would.
        let mut cache = TokenCache::default();
        cache.insert("a.b.c", valid(0, 1000), claims("ada"), 4);
        let at = cache.index.get(&token_hash("a.b.c")).copied();
        let hash_of_other = token_hash("x.y.z");
        if let Some(at) = at {
            cache.index.remove(&token_hash("a.b.c"));
            cache.index.insert(hash_of_other, at);
        }
        // "x.y.z" finds the slot by its hash, but the slot holds other bytes.
        assert!(cache.get("x.y.z", 1).is_none());
        assert!(cache.get("a.b.c", 1).is_none());
    }
}
