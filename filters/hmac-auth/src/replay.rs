//! Nonces seen, in shared data (one store for every worker), so a signed request is accepted once.
//!
//! Bounded: `slots` keys (`tollgate.hmac-auth.nonce.<n>`), each holding at most
//! [`PER_SLOT`] nonces with the time they stop mattering (their signature's `created` plus the
//! skew limit: after that the signature is refused as too old anyway, so the nonce can go). A
//! nonce's slot comes from a SHA-256 over the key id and the nonce. Writes are compare-and-swap,
//! so two workers seeing the same nonce at once cannot both accept it. When a slot is full of
//! nonces that still matter the request is refused ([`Seen::Full`]): forgetting a live nonce would
//! let its request be replayed.

use serde::{Deserialize, Serialize};
use sha2_next::{Digest, Sha256};
use tollgate_sdk::shared::{self, SharedError};

use crate::env;

/// Nonces a slot holds.
pub const PER_SLOT: usize = 8;

/// What recording a nonce found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First use: recorded.
    New,
    /// Already used: a replay.
    Replayed,
    /// The slot is full of live nonces: refused (fail closed).
    Full,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Slot {
    /// (hex digest of key id and nonce, seconds until which it matters).
    nonces: Vec<(String, u64)>,
}

fn digest(key_id: &str, nonce: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(key_id.as_bytes());
    hash.update([0]);
    hash.update(nonce.as_bytes());
    hash.finalize().into()
}

/// Records `nonce` of `key_id`, live until `until` (seconds), at `now`.
pub fn record(
    key_id: &str,
    nonce: &str,
    until: u64,
    now: u64,
    slots: u32,
) -> Result<Seen, SharedError> {
    let hash = digest(key_id, nonce);
    let slot = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]) % slots.max(1);
    let name = slot_key(slot);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let mut seen = Seen::New;
    env::with_store(|store| {
        shared::update(store, &name, 16, |slot: Option<Slot>| {
            let mut slot = slot.unwrap_or_default();
            slot.nonces.retain(|(_, live)| *live > now);
            if slot.nonces.iter().any(|(d, _)| *d == hex) {
                seen = Seen::Replayed;
            } else if slot.nonces.len() >= PER_SLOT {
                seen = Seen::Full;
            } else {
                seen = Seen::New;
                slot.nonces.push((hex.clone(), until));
            }
            slot
        })
    })?;
    Ok(seen)
}

fn slot_key(slot: u32) -> String {
    format!("tollgate.hmac-auth.nonce.{slot}")
}

/// Creates the slots that do not exist yet, empty (at configuration, once per VM). Existing
/// slots are left alone: another worker created them and may be filling them.
pub fn prepare(slots: u32) -> Result<(), SharedError> {
    let empty = b"{\"nonces\":[]}";
    env::with_store(|store| {
        for slot in 0..slots {
            let key = slot_key(slot);
            if store.get(&key)?.is_none() {
                store.set(&key, empty, None)?;
            }
        }
        Ok(())
    })
}
