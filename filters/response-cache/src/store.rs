//! The cache in the proxy's shared data: a fixed set of slots (`<namespace>/slot/<i>`, `i` below
//! `max_entries`) holding one response each, and one index (`<namespace>/index`) saying which
//! key lives in which slot, updated with compare-and-swap so that every worker VM sees the same
//! cache.
//!
//! Eviction: a new key takes an empty slot; with none left, the slot whose entry expired (its
//! freshness lifetime over) longest ago, else the one stored first (FIFO). Not LRU: recency
//! would need an index write (a CAS on a shared value) on every hit. Envoy cannot delete a
//! shared-data key, so an evicted entry's bytes are freed by the new entry overwriting its slot;
//! an entry invalidated without a replacement is overwritten with an empty value, which leaves
//! only the slot's key name in Envoy's map. The keys ever written are therefore at most
//! `max_entries + 1`, and the bytes at most `max_entries` entries.
//!
//! An entry is `RC1`, the length of its metadata (4 bytes, little endian), the metadata (JSON)
//! and the body. Writers race only in the small window between the index update and the slot
//! write: a reader checks the key stored in the entry itself and treats a mismatch as a miss.

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tollgate_sdk::shared::{SharedError, SharedStore};

/// One index slot: which key lives there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Hash of the primary key (method class, URL, configured headers).
    pub p: u64,
    /// Hash of the full key (primary key and the values of the response's `Vary` headers).
    pub k: u64,
    /// The response's `Vary` header names (lower case, sorted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v: Vec<String>,
    /// When it was stored (seconds since the epoch).
    pub s: u64,
    /// When it stops being fresh (seconds since the epoch).
    pub e: u64,
}

/// The index: slot `i` of the cache is `slots[i]` (`None`: empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The slots, at most `max_entries`.
    pub slots: Vec<Option<Slot>>,
}

impl Index {
    /// The slot holding full key `k`.
    pub fn find(&self, k: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.k == k))
    }

    /// The `Vary` names of the newest entry stored under primary key `p`.
    pub fn vary_of(&self, p: u64) -> Option<&[String]> {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.p == p)
            .max_by_key(|s| s.s)
            .map(|s| s.v.as_slice())
    }

    /// Where an entry for full key `k` goes at `now` with `max` slots: its own slot, an empty
    /// one, the one expired longest ago, else the one stored first.
    pub fn place(&self, k: u64, max: usize, now: u64) -> usize {
        if let Some(i) = self.find(k) {
            return i;
        }
        if let Some(i) = self.slots.iter().take(max).position(Option::is_none) {
            return i;
        }
        if self.slots.len() < max {
            return self.slots.len();
        }
        let mut best = 0;
        let mut best_rank = (true, u64::MAX);
        for (i, slot) in self.slots.iter().take(max).enumerate() {
            let Some(slot) = slot else { return i };
            // Expired entries first (the longest expired first), then the oldest stored.
            let rank = if slot.e <= now {
                (false, slot.e)
            } else {
                (true, slot.s)
            };
            if rank < best_rank {
                best_rank = rank;
                best = i;
            }
        }
        best
    }

    /// Puts `slot` at `i`, growing the list when needed.
    pub fn put(&mut self, i: usize, slot: Option<Slot>) {
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = slot;
        }
    }

    /// How many slots hold an entry.
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Whether no slot holds an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stored response, without its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The full key, checked on every read.
    pub key: String,
    /// The status.
    pub status: u16,
    /// The headers to replay (hop-by-hop, `content-length`, `age` and cookies left out).
    pub headers: Vec<(String, String)>,
    /// When the response (or its last revalidation) arrived, seconds since the epoch.
    pub response_time: u64,
    /// Its age then ([`crate::policy::initial_age`]).
    pub initial_age: u64,
    /// The freshness lifetime, seconds.
    pub lifetime: u64,
    /// `no-cache`: revalidated before every use.
    pub no_cache: bool,
    /// The `ETag`, the validator used to revalidate.
    pub etag: Option<String>,
}

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Everything but the body.
    pub meta: Meta,
    /// The body.
    pub body: Vec<u8>,
}

const MAGIC: &[u8; 3] = b"RC1";

impl Entry {
    /// The bytes stored in a slot.
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut out = Vec::with_capacity(7 + meta.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads what [`Entry::encode`] wrote; `None` for anything else (an emptied slot). The
    /// body is the tail of `bytes`, moved down in place (no second copy of a large body).
    pub fn decode(mut bytes: Vec<u8>) -> Option<Entry> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let meta = rest.get(..len)?;
        let meta: Meta = serde_json::from_slice(meta).ok()?;
        bytes.drain(..MAGIC.len() + 4 + len);
        Some(Entry { meta, body: bytes })
    }
}

/// FNV-1a, 64 bits: the same on every VM (the index holds these). Never 0.
pub fn hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// The index key, its CAS token and length when read, and the index parsed from it.
type Parsed = (String, u32, usize, Rc<Index>);

thread_local! {
    /// This VM's parsed copy of the index with the CAS token and length it was read at: parsed
    /// again only when a write changed it (Envoy's CAS tokens come from one counter bumped by
    /// every write, so a token is never reused for another value).
    static PARSED: RefCell<Option<Parsed>> = const { RefCell::new(None) };
}

/// The cache in shared data under `namespace`, with at most `max_entries` entries.
#[derive(Debug, Clone)]
pub struct Cache {
    namespace: String,
    max_entries: usize,
}

/// How many times an index update is retried when another worker wrote in between.
const ATTEMPTS: u32 = 16;

impl Cache {
    /// The cache named `namespace`.
    pub fn new(namespace: &str, max_entries: usize) -> Self {
        Self {
            namespace: namespace.to_string(),
            max_entries: max_entries.max(1),
        }
    }

    /// The index's shared-data key.
    pub fn index_key(&self) -> String {
        format!("{}/index", self.namespace)
    }

    /// Slot `i`'s shared-data key.
    pub fn slot_key(&self, i: usize) -> String {
        format!("{}/slot/{i}", self.namespace)
    }

    /// The index and its CAS token (0 when absent).
    pub fn index(&self, store: &dyn SharedStore) -> Result<(Rc<Index>, u32), SharedError> {
        let key = self.index_key();
        let Some((bytes, cas)) = store.get(&key)? else {
            return Ok((Rc::new(Index::default()), 0));
        };
        let cached = PARSED.with_borrow(|p| {
            p.as_ref()
                .filter(|(k, c, n, _)| *k == key && *c == cas && *n == bytes.len() && cas != 0)
                .map(|(_, _, _, i)| Rc::clone(i))
        });
        if let Some(index) = cached {
            return Ok((index, cas));
        }
        // A value that does not decode (an older layout) is an empty index, rewritten on the
        // next store.
        let index = Rc::new(serde_json::from_slice::<Index>(&bytes).unwrap_or_default());
        PARSED.with_borrow_mut(|p| *p = Some((key, cas, bytes.len(), Rc::clone(&index))));
        Ok((index, cas))
    }

    /// The entry for `primary` (and the request's values of its `Vary` headers, given by
    /// `vary_value`), with its slot.
    pub fn lookup(
        &self,
        store: &dyn SharedStore,
        primary: &str,
        vary_value: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<(Entry, usize)>, SharedError> {
        let (index, _) = self.index(store)?;
        let Some(vary) = index.vary_of(hash(primary)) else {
            return Ok(None);
        };
        let full = full_key(primary, vary, vary_value);
        let Some(i) = index.find(hash(&full)) else {
            return Ok(None);
        };
        let Some((bytes, _)) = store.get(&self.slot_key(i))? else {
            return Ok(None);
        };
        Ok(Entry::decode(bytes)
            .filter(|e| e.meta.key == full)
            .map(|e| (e, i)))
    }

    /// Stores `entry` (its `meta.key` is the full key) under `primary` with `vary` names at
    /// `now`, expiring at `expires`; returns the slot used.
    pub fn insert(
        &self,
        store: &mut dyn SharedStore,
        primary: &str,
        vary: &[String],
        entry: &Entry,
        now: u64,
        expires: u64,
    ) -> Result<usize, SharedError> {
        let k = hash(&entry.meta.key);
        let slot = Slot {
            p: hash(primary),
            k,
            v: vary.to_vec(),
            s: now,
            e: expires,
        };
        let i = self.update_index(store, |index| {
            let i = index.place(k, self.max_entries, now);
            index.put(i, Some(slot.clone()));
            Some(i)
        })?;
        let Some(i) = i else { return Ok(0) };
        store.set(&self.slot_key(i), &entry.encode(), None)?;
        Ok(i)
    }

    /// Rewrites the entry in slot `i` (after a revalidation), if the index still gives that
    /// slot to its key.
    pub fn refresh(
        &self,
        store: &mut dyn SharedStore,
        i: usize,
        entry: &Entry,
        now: u64,
        expires: u64,
    ) -> Result<bool, SharedError> {
        let k = hash(&entry.meta.key);
        let updated = self.update_index(store, |index| {
            let slot = index.slots.get_mut(i)?.as_mut().filter(|s| s.k == k)?;
            slot.s = now;
            slot.e = expires;
            Some(())
        })?;
        if updated.is_none() {
            return Ok(false);
        }
        store.set(&self.slot_key(i), &entry.encode(), None)?;
        Ok(true)
    }

    /// Removes full key `full` (a response that may no longer be stored): its slot is emptied in
    /// the index and overwritten with an empty value.
    pub fn invalidate(&self, store: &mut dyn SharedStore, full: &str) -> Result<bool, SharedError> {
        let k = hash(full);
        let removed = self.update_index(store, |index| {
            let i = index.find(k)?;
            index.put(i, None);
            Some(i)
        })?;
        match removed {
            Some(i) => {
                store.set(&self.slot_key(i), b"", None)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Removes every entry (every `Vary` variant) of primary key `primary`, as
    /// [`Cache::invalidate`] does; returns how many.
    pub fn invalidate_primary(
        &self,
        store: &mut dyn SharedStore,
        primary: &str,
    ) -> Result<usize, SharedError> {
        let p = hash(primary);
        let removed = self.update_index(store, |index| {
            let slots: Vec<usize> = (0..index.slots.len())
                .filter(|&i| {
                    index
                        .slots
                        .get(i)
                        .is_some_and(|s| s.as_ref().is_some_and(|s| s.p == p))
                })
                .collect();
            if slots.is_empty() {
                return None;
            }
            for &i in &slots {
                index.put(i, None);
            }
            Some(slots)
        })?;
        let removed = removed.unwrap_or_default();
        for &i in &removed {
            store.set(&self.slot_key(i), b"", None)?;
        }
        Ok(removed.len())
    }

    /// Read-modify-write of the index with CAS; `change` returns `None` to write nothing.
    fn update_index<T>(
        &self,
        store: &mut dyn SharedStore,
        mut change: impl FnMut(&mut Index) -> Option<T>,
    ) -> Result<Option<T>, SharedError> {
        let key = self.index_key();
        for _ in 0..ATTEMPTS {
            let (index, cas) = self.index(store)?;
            let mut index = (*index).clone();
            let Some(out) = change(&mut index) else {
                return Ok(None);
            };
            let bytes = serde_json::to_vec(&index).map_err(|e| SharedError::Encode {
                key: key.clone(),
                message: e.to_string(),
            })?;
            // An absent index cannot be guarded (a CAS of 0 writes unconditionally): the first
            // writer wins, a lost entry is a later miss.
            match store.set(&key, &bytes, (cas != 0).then_some(cas)) {
                Ok(()) => return Ok(Some(out)),
                Err(SharedError::CasMismatch { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SharedError::Contended {
            key,
            attempts: ATTEMPTS,
        })
    }
}

/// The full key: the primary key and the request's value of each `Vary` header (absent and
/// empty differ).
pub fn full_key(primary: &str, vary: &[String], value: &dyn Fn(&str) -> Option<String>) -> String {
    let mut key = primary.to_string();
    for name in vary {
        key.push('\n');
        key.push_str(name);
        match value(name) {
            Some(v) => {
                key.push('=');
                key.push_str(&normalize_vary_value(&v));
            }
            None => key.push('!'),
        }
    }
    key
}

/// A request header value as a `Vary` secondary key compares it: list elements trimmed and
/// joined with `,` (so `gzip, br` and `gzip,br` select the same entry).
pub fn normalize_vary_value(value: &str) -> String {
    value
        .split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",")
}
