//! Query parameter operations on the raw query string (`?a=1&b=2`), keeping the order and the
//! encoding of the parameters it does not touch.
//!
//! ```
//! let ops: tollgate_transformer::QueryOps = serde_json::from_str(
//!     r#"{"remove": ["debug"], "rename": [["q", "query"]], "set": [["v", "2 x"]]}"#)?;
//! let facts = tollgate_transformer::template::Facts::default();
//! let out = tollgate_transformer::query::apply(&ops, "?q=a&debug=1&v=1&v=3", &facts);
//! assert_eq!(out, "?query=a&v=2%20x");
//! # Ok::<(), serde_json::Error>(())
//! ```

use tollgate_sdk::http::percent_decode;

use crate::QueryOps;
use crate::template::Facts;

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `query` (with its `?`, or empty) after `ops`; the result has its `?` (or is empty).
pub fn apply(ops: &QueryOps, query: &str, facts: &Facts) -> String {
    let raw = query.strip_prefix('?').unwrap_or(query);
    let mut pairs: Vec<(String, Option<String>)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (p.to_string(), None),
        })
        .collect();
    let named = |k: &str, name: &str| percent_decode(k).as_deref() == Some(name);
    for name in &ops.remove {
        pairs.retain(|(k, _)| !named(k, name));
    }
    for (from, to) in &ops.rename {
        if pairs.iter().any(|(k, _)| named(k, from)) {
            pairs.retain(|(k, _)| !named(k, to));
            for (k, _) in pairs.iter_mut() {
                if named(k, from) {
                    *k = encode(to);
                }
            }
        }
    }
    for (name, value) in &ops.set {
        let value = encode(&value.0.render(facts));
        match pairs.iter().position(|(k, _)| named(k, name)) {
            Some(first) => {
                pairs[first].1 = Some(value);
                let mut i = 0;
                pairs.retain(|(k, _)| {
                    i += 1;
                    i - 1 == first || !named(k, name)
                });
            }
            None => pairs.push((encode(name), Some(value))),
        }
    }
    for (name, value) in &ops.add {
        pairs.push((encode(name), Some(encode(&value.0.render(facts)))));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let joined: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
        .collect();
    format!("?{}", joined.join("&"))
}
