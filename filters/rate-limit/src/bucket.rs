//! Token buckets in shared data, updated with compare-and-swap so that every worker VM sees and
//! spends the same tokens.
//!
//! A bucket is kept as one number, its *theoretical arrival time* (GCRA, the generic cell rate
//! algorithm): the instant at which the bucket would be full again. With `T` the time one token
//! takes to come back (`fill_interval / tokens_per_fill`) and a burst of `max_tokens`, a request
//! at `now` is admitted when `max(tat, now) + T - now <= max_tokens * T`; admitting it stores
//! `max(tat, now) + T`. This is exactly a token bucket refilled continuously, without a timer
//! and with a single integer to compare-and-swap.
//!
//! Descriptors hash (with the configured seed) to one of a fixed number of slots per limit, and
//! each slot is a shared-data key created when the VM first needs it ([`prepare`]). Shared data
//! has no "create if absent" (a write to a missing key is unconditional, in Envoy and in the
//! harness), so keys are created once, up front, and from then on written only with the CAS
//! token of the value read: two VMs can never both spend the same token. A fixed table also
//! bounds the memory an attacker can make the proxy hold (shared data is never freed), and two
//! descriptors sharing a slot only ever make the limit stricter, never looser.
//!
//! ```
//! use tollgate_rate_limit::bucket::{self, Decision, Gcra};
//! use tollgate_sdk::shared::MemoryShared;
//!
//! let mut store = MemoryShared::new();
//! let gcra = Gcra::new(2, 1, 1_000); // burst 2, one token a second
//! bucket::prepare(&mut store, "k", 1).unwrap();
//! let now = 5_000_000_000;
//! assert!(matches!(bucket::take(&mut store, "k/0", &gcra, now), Ok(Decision::Allowed { remaining: 1, .. })));
//! assert!(matches!(bucket::take(&mut store, "k/0", &gcra, now), Ok(Decision::Allowed { remaining: 0, .. })));
//! assert!(matches!(bucket::take(&mut store, "k/0", &gcra, now), Ok(Decision::Limited { retry_after_ns: 1_000_000_000, .. })));
//! assert!(matches!(bucket::take(&mut store, "k/0", &gcra, now + 1_000_000_000), Ok(Decision::Allowed { .. })));
//! ```

use std::hash::{DefaultHasher, Hash, Hasher};

use tollgate_sdk::shared::{SharedError, SharedStore};

/// How many read-compare-and-swap rounds a decision may take before it gives up (and refuses:
/// the bound is never traded for an answer).
pub const MAX_ATTEMPTS: u32 = 64;

/// A bucket's arithmetic, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time for one token to come back.
    pub interval_ns: u64,
    /// `max_tokens * interval_ns`: how far ahead of now the bucket's full time may be.
    pub burst_ns: u64,
}

impl Gcra {
    /// `max_tokens` burst, `tokens_per_fill` tokens every `fill_interval_ms`.
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval_ms: u64) -> Self {
        let interval_ns =
            (u128::from(fill_interval_ms) * 1_000_000 / u128::from(tokens_per_fill.max(1))).max(1);
        let interval_ns = u64::try_from(interval_ns).unwrap_or(u64::MAX);
        Self {
            interval_ns,
            burst_ns: interval_ns.saturating_mul(u64::from(max_tokens)),
        }
    }

    /// The decision for one request at `now` given the stored full time `tat`, and the full
    /// time to store when it is admitted.
    pub fn decide(&self, tat: u64, now: u64) -> (Decision, Option<u64>) {
        let next = tat.max(now).saturating_add(self.interval_ns);
        let ahead = next - now;
        if ahead > self.burst_ns {
            let retry_after_ns = ahead - self.burst_ns;
            (
                Decision::Limited {
                    retry_after_ns,
                    reset_ns: tat.max(now) - now,
                },
                None,
            )
        } else {
            let remaining = (self.burst_ns - ahead) / self.interval_ns;
            (
                Decision::Allowed {
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset_ns: ahead,
                },
                Some(next),
            )
        }
    }
}

/// What a bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted: `remaining` tokens are left; the bucket is full again in `reset_ns`.
    Allowed {
        /// Tokens left after this request.
        remaining: u32,
        /// Until the bucket is full again.
        reset_ns: u64,
    },
    /// Refused: the next token comes in `retry_after_ns`.
    Limited {
        /// Until one request would be admitted.
        retry_after_ns: u64,
        /// Until the bucket is full again.
        reset_ns: u64,
    },
}

/// The slot (`0..slots`) of a descriptor: SipHash of the seed, the limit name and the parts.
pub fn slot(seed: &str, limit: &str, parts: &[String], slots: u32) -> u32 {
    let mut hasher = DefaultHasher::new();
    seed.hash(&mut hasher);
    limit.hash(&mut hasher);
    parts.hash(&mut hasher);
    u32::try_from(hasher.finish() % u64::from(slots.max(1))).unwrap_or(0)
}

/// The shared-data key of slot `slot` under `prefix`.
pub fn key(prefix: &str, slot: u32) -> String {
    format!("{prefix}/{slot}")
}

/// Creates the `slots` keys `prefix/0..` that do not exist yet (as full buckets). Keys that
/// exist are left alone: another VM created them and may be spending them.
pub fn prepare(store: &mut dyn SharedStore, prefix: &str, slots: u32) -> Result<(), SharedError> {
    for slot in 0..slots {
        let key = key(prefix, slot);
        if store.get(&key)?.is_none() {
            store.set(&key, b"0", None)?;
        }
    }
    Ok(())
}

fn parse(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Spends one token of the bucket at `key` at `now` (ns since the epoch): reads it, decides,
/// and writes the new full time only if nobody wrote since the read, else reads again.
/// A key that does not exist is created first (see [`prepare`]).
pub fn take(
    store: &mut dyn SharedStore,
    key: &str,
    gcra: &Gcra,
    now: u64,
) -> Result<Decision, SharedError> {
    for _ in 0..MAX_ATTEMPTS {
        let Some((bytes, cas)) = store.get(key)? else {
            store.set(key, b"0", None)?;
            continue;
        };
        let (decision, write) = gcra.decide(parse(&bytes), now);
        let Some(next) = write else {
            return Ok(decision);
        };
        match store.set(key, next.to_string().as_bytes(), Some(cas)) {
            Ok(()) => return Ok(decision),
            Err(SharedError::CasMismatch { .. }) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(SharedError::Contended {
        key: key.to_string(),
        attempts: MAX_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_sdk::shared::MemoryShared;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_one_token_per_interval() {
        let mut store = MemoryShared::new();
        let g = Gcra::new(3, 1, 1_000);
        let now = 100 * S;
        let mut allowed = 0;
        for _ in 0..10 {
            if matches!(take(&mut store, "b", &g, now), Ok(Decision::Allowed { .. })) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3);
        // Half a second later: still nothing; a second later: exactly one.
        assert!(matches!(
            take(&mut store, "b", &g, now + S / 2),
            Ok(Decision::Limited { retry_after_ns, .. }) if retry_after_ns == S / 2
        ));
        assert!(matches!(
            take(&mut store, "b", &g, now + S),
            Ok(Decision::Allowed { remaining: 0, .. })
        ));
        assert!(matches!(
            take(&mut store, "b", &g, now + S),
            Ok(Decision::Limited { .. })
        ));
        // Idle long enough: full again, never more than the burst.
        let later = now + 60 * S;
        let admitted = (0..10)
            .filter(|_| {
                matches!(
                    take(&mut store, "b", &g, later),
                    Ok(Decision::Allowed { .. })
                )
            })
            .count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn tokens_per_fill_refill_pro_rata() {
        let g = Gcra::new(10, 10, 60_000);
        assert_eq!(g.interval_ns, 6 * S);
        assert_eq!(g.burst_ns, 60 * S);
        let (d, next) = g.decide(0, 1_000 * S);
        assert_eq!(
            d,
            Decision::Allowed {
                remaining: 9,
                reset_ns: 6 * S
            }
        );
        assert_eq!(next, Some(1_006 * S));
    }

    /// Another VM writes between our read and our write every time but the last: the CAS
    /// refuses our stale write and the retry sees the other VM's token spent.
    struct Racing {
        inner: MemoryShared,
        races: u32,
        gcra: Gcra,
        now: u64,
    }

    impl SharedStore for Racing {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SharedError> {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedError> {
            if self.races > 0 && cas.is_some() {
                self.races -= 1;
                let (gcra, now) = (self.gcra, self.now);
                take(&mut self.inner, key, &gcra, now)?;
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn a_lost_race_is_retried_and_never_spends_a_token_twice() {
        let gcra = Gcra::new(3, 1, 1_000);
        let now = 10 * S;
        let mut store = Racing {
            inner: MemoryShared::new(),
            races: 2,
            gcra,
            now,
        };
        prepare(&mut store.inner, "p", 1).ok();
        // Two racing writes spend two tokens; ours gets the third and last.
        assert_eq!(
            take(&mut store, "p/0", &gcra, now),
            Ok(Decision::Allowed {
                remaining: 0,
                reset_ns: 3 * S
            })
        );
        assert!(matches!(
            take(&mut store, "p/0", &gcra, now),
            Ok(Decision::Limited { .. })
        ));
    }

    #[test]
    fn prepare_leaves_existing_buckets_alone() {
        let mut store = MemoryShared::new();
        store.set("p/1", b"12345", None).ok();
        prepare(&mut store, "p", 3).ok();
        assert_eq!(
            store.get("p/1").ok().flatten().map(|v| v.0),
            Some(b"12345".to_vec())
        );
        assert_eq!(
            store.get("p/2").ok().flatten().map(|v| v.0),
            Some(b"0".to_vec())
        );
    }

    #[test]
    fn slots_spread_and_depend_on_the_seed() {
        let parts = |s: &str| vec![s.to_string()];
        let a = slot("", "ip", &parts("10.0.0.1"), 1024);
        assert_eq!(a, slot("", "ip", &parts("10.0.0.1"), 1024));
        let distinct: std::collections::HashSet<u32> = (0..100)
            .map(|i| slot("", "ip", &parts(&format!("10.0.0.{i}")), 1024))
            .collect();
        assert!(distinct.len() > 90, "{}", distinct.len());
        let seeded: Vec<u32> = (0..20)
            .map(|i| slot("s3cret", "ip", &parts(&format!("10.0.0.{i}")), 1024))
            .collect();
        let plain: Vec<u32> = (0..20)
            .map(|i| slot("", "ip", &parts(&format!("10.0.0.{i}")), 1024))
            .collect();
        assert_ne!(seeded, plain);
    }
}
