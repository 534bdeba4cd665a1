//! What one VM may use: linear memory (Envoy's 1 GiB by default), callouts and
//! wall time per exchange, and the guest log kept per exchange.
//!
//! A harness is trusted to say a filter is safe to run on every request; it must
//! never be the thing that hangs or runs out of memory. So every resource a guest
//! can make the host spend is bounded here, and each bound that trips says which
//! one it was and what the guest did:
//!
//! - **Memory**: Envoy's V8 caps a VM's linear memory at 1 GiB
//!   (proxy-wasm-cpp-host's `PROXY_WASM_HOST_MAX_WASM_MEMORY_SIZE_BYTES`, given to
//!   V8 as `wasm_max_mem_pages`): a `memory.grow` past it returns -1, as in V8, and
//!   a module whose initial memory is larger does not load. The [`MemoryLimiter`]
//!   is the store's `ResourceLimiter` and remembers the refused growth, so the
//!   trap that usually follows (a Rust guest aborts on allocation failure) is
//!   reported with its cause.
//! - **Callouts per exchange**: Envoy's callouts take network time; the harness's
//!   stubs answer on a virtual clock, so a guest whose every answer dispatches a
//!   new callout would never end. Past [`Limits::callouts_per_exchange`]
//!   dispatches, or [`Limits::exchange_wall`] of wall time in one exchange, the
//!   exchange fails naming the module and what it did.
//! - **Logs**: a line is cut at [`Limits::log_line_bytes`] and at most
//!   [`Limits::log_bytes_per_exchange`] bytes of lines are kept between two
//!   takes of the log (one exchange); what was cut or dropped is said in a
//!   `[harness]` line.

use std::time::{Duration, Instant};

/// Envoy's limit on a VM's linear memory: 1 GiB (16,384 pages of 64 KiB).
pub const ENVOY_MEMORY_LIMIT: u64 = 1 << 30;

/// The bounds a VM runs under (part of [`crate::state::VmSettings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory a guest may grow to, in bytes (Envoy: 1 GiB).
    pub memory_bytes: u64,
    /// Most callouts (http and gRPC calls and streams) a VM may dispatch in one exchange.
    pub callouts_per_exchange: u64,
    /// Longest wall time one exchange may keep a VM busy delivering callout answers.
    pub exchange_wall: Duration,
    /// Longest guest log line kept, in bytes (the rest is cut, and said so).
    pub log_line_bytes: usize,
    /// Most bytes of guest log kept between two takes of the log (one exchange).
    pub log_bytes_per_exchange: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: ENVOY_MEMORY_LIMIT,
            callouts_per_exchange: 10_000,
            exchange_wall: Duration::from_secs(60),
            log_line_bytes: 64 * 1024,
            log_bytes_per_exchange: 4 * 1024 * 1024,
        }
    }
}

/// Formats a byte count as the limits are written: `1 GiB`, `64 KiB`, `1000 bytes`.
pub fn bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// The store's `ResourceLimiter`: linear memory up to the limit, growth past
/// it refused (`memory.grow` returns -1, as in V8) and remembered.
#[derive(Debug, Clone)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    /// The last growth refused: (current bytes, desired bytes).
    pub(crate) refused: Option<(u64, u64)>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            refused: None,
        }
    }

    /// What a failed call's report adds when the guest hit the limit.
    pub(crate) fn explain(&self) -> Option<String> {
        let (current, desired) = self.refused?;
        Some(format!(
            "the VM's linear memory reached its limit of {} (Envoy's limit; memory.grow from {} to {} bytes returned -1)",
            bytes(self.limit),
            current,
            desired
        ))
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.refused = Some((current as u64, desired as u64));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer: bound tables as memory is bounded.
        Ok((desired as u64).saturating_mul(8) <= self.limit)
    }
}

/// What one exchange has spent so far (reset as the exchange starts).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExchangeBudget {
    /// Callouts dispatched by the VM when the exchange started.
    pub(crate) dispatched_at_start: u64,
    /// When the exchange started.
    pub(crate) started: Option<Instant>,
}

/// Why an exchange was stopped by a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Overrun {
    /// Too many callouts dispatched.
    Callouts { dispatched: u64, limit: u64 },
    /// Too much wall time.
    Wall { limit: Duration, dispatched: u64 },
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Callouts { dispatched, limit } => write!(
                f,
                "callout storm: the module dispatched {dispatched} callouts in one exchange (limit {limit}: each answer dispatched more); the harness failed the exchange"
            ),
            Self::Wall { limit, dispatched } => write!(
                f,
                "the exchange kept the module busy for more than {limit:?} of wall time ({dispatched} callouts dispatched); the harness failed the exchange"
            ),
        }
    }
}

/// The guest log's bookkeeping between two takes (one exchange).
#[derive(Debug, Clone, Default)]
pub(crate) struct LogBudget {
    /// Bytes of lines kept.
    pub(crate) kept: usize,
    /// Lines cut to the line limit.
    pub(crate) cut: usize,
    /// Lines dropped past the per-exchange limit, and their bytes.
    pub(crate) dropped: (usize, u64),
}

/// Cuts `msg` to at most `max` bytes on a character boundary, saying so.
pub(crate) fn cut_line(msg: &[u8], max: usize) -> (String, bool) {
    if msg.len() <= max {
        return (String::from_utf8_lossy(msg).into_owned(), false);
    }
    let head = String::from_utf8_lossy(&msg[..max]);
    let head = head.trim_end_matches('\u{FFFD}');
    (
        format!(
            "{head}... [harness: line of {} bytes cut to {max}]",
            msg.len()
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_in_their_unit() {
        assert_eq!(bytes(ENVOY_MEMORY_LIMIT), "1 GiB");
        assert_eq!(bytes(64 * 1024), "64 KiB");
        assert_eq!(bytes(1000), "1000 bytes");
    }

    #[test]
    fn a_long_line_is_cut_and_says_so() {
        let (line, cut) = cut_line(&[b'a'; 100], 10);
        assert!(cut);
        assert_eq!(line, "aaaaaaaaaa... [harness: line of 100 bytes cut to 10]");
        let (line, cut) = cut_line("héllo".as_bytes(), 2);
        assert!(cut && line.starts_with("h..."), "{line}");
        assert_eq!(cut_line(b"short", 10), ("short".into(), false));
    }
}
