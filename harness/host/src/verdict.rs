//! What a filter did with one exchange ([`Verdict`]) and the differences
//! between the recorded messages and what reached the upstream and the
//! client, shared by the filter manager ([`crate::stream`]) and the reports
//! built above it.

use crate::stream::StreamOutcome;
use tollgate_traffic::{HttpRequest, HttpResponse};

/// What the filter did with one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Request and response went through unchanged.
    Passed,
    /// The request reaching the upstream or the response reaching the client
    /// differs from the recording (or the filter reset or stalled the stream).
    Modified,
    /// The filter answered itself with `proxy_send_local_response`.
    AnsweredLocally {
        /// The status it answered with.
        status: u16,
    },
    /// A guest call trapped or ran too long.
    Failed {
        /// What happened, with the guest backtrace.
        message: String,
    },
}

/// The verdict a run gets whatever it changed: the first filter failure
/// (prefixed with the filter's name when `many`), else the chain's failure,
/// else the filter's local answer; `None` when the messages decide.
pub fn decided_verdict(out: &StreamOutcome, many: bool) -> Option<Verdict> {
    if let Some(f) = out.failures.first() {
        Some(Verdict::Failed {
            message: if many {
                format!("{}: {}", f.filter, f.error)
            } else {
                f.error.to_string()
            },
        })
    } else if let Some(f) = &out.failure {
        Some(Verdict::Failed {
            message: f.to_string(),
        })
    } else {
        out.local_response
            .as_ref()
            .map(|l| Verdict::AnsweredLocally {
                status: u16::try_from(l.status).unwrap_or(0),
            })
    }
}

fn show(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Header differences by name (order-insensitive across names, ordered within one).
pub fn diff_headers(
    what: &str,
    before: &[(String, String)],
    after: &[(String, String)],
    out: &mut Vec<String>,
) {
    if before == after {
        // Nothing to say (the usual case): no allocation.
        return;
    }
    let mut names: Vec<&str> = Vec::new();
    for (k, _) in before.iter().chain(after) {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    for name in names {
        let b: Vec<&str> = before
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        let a: Vec<&str> = after
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        // A repeated header folded into one comma-separated value (as Envoy's
        // codec does for inline names) means the same (RFC 9110 5.3).
        if a == b || (name != "set-cookie" && a.join(",") == b.join(",")) {
            continue;
        }
        out.push(if b.is_empty() {
            format!("{what} header {name}: added {}", show(&a))
        } else if a.is_empty() {
            format!("{what} header {name}: removed (was {})", show(&b))
        } else {
            format!("{what} header {name}: changed {} -> {}", show(&b), show(&a))
        });
    }
}

/// Body difference, as one line.
pub fn diff_body(what: &str, before: &[u8], after: &[u8], out: &mut Vec<String>) {
    if before != after {
        out.push(format!(
            "{what} body: changed ({} bytes -> {} bytes)",
            before.len(),
            after.len()
        ));
    }
}

/// Request differences (method, scheme, authority, path, headers, body), one line each.
pub fn diff_request(before: &HttpRequest, after: &HttpRequest, out: &mut Vec<String>) {
    for (field, b, a) in [
        ("method", &before.method, &after.method),
        ("scheme", &before.scheme, &after.scheme),
        ("authority", &before.authority, &after.authority),
        ("path", &before.path, &after.path),
    ] {
        if b != a {
            out.push(format!("request {field}: changed {b:?} -> {a:?}"));
        }
    }
    diff_headers("request", &before.headers, &after.headers, out);
    diff_body("request", &before.body, &after.body, out);
}

/// Whether the request that reached the upstream differs from the recorded
/// one as the replay report sees it.
pub fn request_differs(before: &HttpRequest, after: &HttpRequest) -> bool {
    let mut changes = Vec::new();
    diff_request(before, after, &mut changes);
    !changes.is_empty()
}

/// Whether the response the client got differs from the recorded one as
/// the replay report sees it.
pub fn response_differs(before: &HttpResponse, after: &HttpResponse) -> bool {
    let mut changes = Vec::new();
    diff_response(before, after, &mut changes);
    !changes.is_empty()
}

/// Response differences (status, headers, body), one line each.
pub fn diff_response(before: &HttpResponse, after: &HttpResponse, out: &mut Vec<String>) {
    if before.status != after.status {
        out.push(format!(
            "response status: changed {} -> {}",
            before.status, after.status
        ));
    }
    diff_headers("response", &before.headers, &after.headers, out);
    diff_body("response", &before.body, &after.body, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_diff_reads_well() {
        let mut out = Vec::new();
        diff_headers(
            "request",
            &h(&[("a", "1"), ("b", "2"), ("c", "3")]),
            &h(&[("b", "2"), ("a", "9"), ("d", "4")]),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "request header a: changed \"1\" -> \"9\"",
                "request header c: removed (was \"3\")",
                "request header d: added \"4\"",
            ]
        );
    }
}
