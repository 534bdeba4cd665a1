//! W3C Trace Context (`traceparent`, `tracestate`, Level 1): parsing with the specification's
//! validity rules, and the ids this filter makes from the host's randomness.
//!
//! ```
//! use tollgate_request_id::trace::TraceParent;
//! let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! ```

use std::fmt::Write;

/// A parsed, valid `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

impl TraceParent {
    /// Parses a `traceparent` value: `version-traceid-parentid-flags`, lowercase hex. Version
    /// `ff` is invalid; version `00` is exactly 55 characters; a later version may carry more
    /// fields after a `-` (its first four fields are read as version `00`'s). All-zero ids are
    /// invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let version = value.get(0..2)?;
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && value.len() != 55 {
            return None;
        }
        if value.len() < 55 || (value.len() > 55 && value.as_bytes().get(55) != Some(&b'-')) {
            return None;
        }
        let bytes = value.as_bytes();
        if [2usize, 35, 52]
            .iter()
            .any(|&i| bytes.get(i) != Some(&b'-'))
        {
            return None;
        }
        let trace_id = value.get(3..35)?;
        let parent_id = value.get(36..52)?;
        let flags = value.get(53..55)?;
        if !is_lower_hex(trace_id) || !is_lower_hex(parent_id) || !is_lower_hex(flags) {
            return None;
        }
        if all_zero(trace_id) || all_zero(parent_id) {
            return None;
        }
        Some(TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// A new trace: random trace and parent ids (never all zero), the given flags.
    pub fn fresh(sampled: bool) -> TraceParent {
        TraceParent {
            trace_id: nonzero_hex::<16>(),
            parent_id: nonzero_hex::<8>(),
            flags: u8::from(sampled),
        }
    }

    /// The header value, version `00`.
    pub fn render(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }
}

/// `N` random bytes from the host, zeros when it refused (logged; no proxy does).
fn random<const N: usize>() -> [u8; N] {
    tollgate_sdk::random::bytes::<N>().unwrap_or_else(|e| {
        log::warn!("{e}");
        [0; N]
    })
}

/// `N` random bytes as lowercase hex, drawn again in the (2^-64 or less) case they are all zero.
pub fn nonzero_hex<const N: usize>() -> String {
    let mut bytes = random::<N>();
    for _ in 0..4 {
        if bytes.iter().any(|&b| b != 0) {
            break;
        }
        bytes = random::<N>();
    }
    if bytes.iter().all(|&b| b == 0) {
        // The host hands out zeros only when it refused: a fixed, valid id rather than none.
        if let Some(last) = bytes.last_mut() {
            *last = 1;
        }
    }
    hex(&bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A random UUID version 4 (RFC 9562), lowercase: `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`.
pub fn uuid_v4() -> String {
    let mut b = random::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `value` (the `tracestate` values joined with `,`) is a valid list: at most 32
/// members, each `key=value` with the specification's key and value characters; empty members
/// (from `,,` or surrounding spaces) are allowed; keys unique.
pub fn tracestate_is_valid(value: &str) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let Some((key, val)) = member.split_once('=') else {
            return false;
        };
        if !key_is_valid(key) || !value_is_valid(val) || keys.contains(&key) {
            return false;
        }
        keys.push(key);
        if keys.len() > 32 {
            return false;
        }
    }
    true
}

fn key_is_valid(key: &str) -> bool {
    let simple = |k: &str, max: usize| {
        let b = k.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => simple(key, 256),
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14),
    }
}

fn value_is_valid(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// Whether `id` is a UUID in the 8-4-4-4-12 hex form (any version, either case).
pub fn is_uuid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
