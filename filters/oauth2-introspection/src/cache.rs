//! Active introspection answers cached in shared data, one cache for every worker.
//!
//! - Bounded: `slots` fixed keys (`tollgate.oauth2-introspection.<slot>`); a token's slot comes
//!   from its digest and a newer token in the same slot replaces the older one, so the cache
//!   never holds more than `slots` entries of at most [`MAX_ANSWER_BYTES`] each.
//! - Keyed by SHA-256 over the filter's server and client identity and the token: a slot holding
//!   another token (or the same token validated by another configuration) is a miss.
//! - An answer is reused until the token's `exp` and at most `max_ttl_s`; the verdict is made
//!   again on every use (against the current clock), so an expired token is refused even when
//!   its answer is still cached.
//! - Inactive answers are never cached: a token becomes active only by being issued, and a
//!   revoked one must stay refused.

use serde::{Deserialize, Serialize};
use sha2_next::{Digest, Sha256};
use tollgate_sdk::shared;

use crate::verdict::Answer;
use crate::{CacheConfig, Config, env};

/// Largest answer (its JSON) cached.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024;

/// A token's digest under a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of `token` as checked by `config`'s server and client.
    pub fn of(config: &Config, token: &str) -> Key {
        let mut hash = Sha256::new();
        for part in [
            config.cluster.as_str(),
            config.authority.as_str(),
            config.path.as_str(),
            config.client_id.as_str(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update(token.as_bytes());
        Key(hash.finalize().into())
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn slot(&self, slots: u32) -> u32 {
        let head = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]);
        head % slots.max(1)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    digest: String,
    until_s: u64,
    answer: Answer,
}

fn slot_key(key: &Key, cache: &CacheConfig) -> String {
    format!("tollgate.oauth2-introspection.{}", key.slot(cache.slots))
}

/// The cached answer for `key`, if there is one still to be used at `now`.
pub fn get(cache: &CacheConfig, key: &Key, now: u64) -> Option<Answer> {
    if cache.slots == 0 {
        return None;
    }
    let name = slot_key(key, cache);
    let found = env::with_store(|store| shared::get_json::<Entry>(store, &name));
    match found {
        Ok(Some((entry, _))) if entry.digest == key.hex() && now < entry.until_s => {
            Some(entry.answer)
        }
        Ok(_) => None,
        Err(error) => {
            log::warn!("{error}");
            None
        }
    }
}

/// Caches an active `answer` for `key` until its `exp`, at most `max_ttl_s`.
pub fn put(cache: &CacheConfig, key: &Key, answer: &Answer, now: u64) {
    if cache.slots == 0 {
        return;
    }
    let cap = now.saturating_add(cache.max_ttl_s);
    let until_s = answer
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .map_or(cap, |exp| exp.min(cap));
    if until_s <= now {
        return;
    }
    let entry = Entry {
        digest: key.hex(),
        until_s,
        answer: answer.clone(),
    };
    match serde_json::to_vec(&entry) {
        Ok(bytes) if bytes.len() <= MAX_ANSWER_BYTES + 128 => {
            let name = slot_key(key, cache);
            if let Err(error) = env::with_store(|store| store.set(&name, &bytes, None)) {
                log::warn!("{error}");
            }
        }
        Ok(bytes) => log::debug!("introspection answer of {} bytes not cached", bytes.len()),
        Err(error) => log::warn!("introspection answer not cached: {error}"),
    }
}
