//! Applying [`Mutations`] to a header map. Pure logic over [`HeaderMap`], so it runs the same
//! against the host's maps and against a `HeaderList` in tests.

use tollgate_sdk::{HeaderMap, HeaderSnapshot};

use crate::config::{HeaderEntry, Mutations};

/// Which map is being changed, for log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Request headers.
    Request,
    /// Response headers.
    Response,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

/// Applies `mutations` to `headers`; `%REQ(...)%` references read `request`.
///
/// ```
/// use tollgate_headers::{apply::{apply, Side}, HeadersConfig};
/// use tollgate_sdk::{HeaderList, HeaderSnapshot};
///
/// let config = tollgate_sdk::config::parse::<HeadersConfig>(
///     br#"{"response": {"remove": ["server"], "set": [{"name": "x-frame-options", "value": "DENY"}]}}"#,
/// )?;
/// let mut headers = HeaderList::from([(":status", "200"), ("server", "nginx")]);
/// apply(&config.response, &mut headers, &HeaderSnapshot::default(), Side::Response);
/// assert_eq!(headers, HeaderList::from([(":status", "200"), ("x-frame-options", "DENY")]));
/// # Ok::<(), tollgate_sdk::ConfigError>(())
/// ```
pub fn apply(
    mutations: &Mutations,
    headers: &mut dyn HeaderMap,
    request: &HeaderSnapshot,
    side: Side,
) {
    let side = side.as_str();
    for name in &mutations.remove {
        headers.remove(name.as_str());
        log::debug!("headers: {side} header {name}: removed");
    }
    if !mutations.remove_prefix.is_empty() {
        let mut doomed: Vec<String> = Vec::new();
        for (name, _) in headers.pairs() {
            if mutations.remove_prefix.iter().any(|p| p.matches(&name))
                && !doomed.iter().any(|d| d.eq_ignore_ascii_case(&name))
            {
                doomed.push(name);
            }
        }
        for name in doomed {
            headers.remove(&name);
            log::debug!("headers: {side} header {name}: removed (prefix)");
        }
    }
    for entry in &mutations.set {
        if let Some(value) = render(entry, request, side) {
            headers.set(entry.name.as_str(), &value);
            log::debug!("headers: {side} header {}: set to {value:?}", entry.name);
        }
    }
    for entry in &mutations.append {
        if let Some(value) = render(entry, request, side) {
            headers.add(entry.name.as_str(), &value);
            log::debug!("headers: {side} header {}: appended {value:?}", entry.name);
        }
    }
    for entry in &mutations.add_if_absent {
        if headers.get(entry.name.as_str()).is_none()
            && let Some(value) = render(entry, request, side)
        {
            headers.add(entry.name.as_str(), &value);
            log::debug!("headers: {side} header {}: added {value:?}", entry.name);
        }
    }
    for entry in &mutations.overwrite_if_exists {
        if headers.get(entry.name.as_str()).is_some()
            && let Some(value) = render(entry, request, side)
        {
            headers.set(entry.name.as_str(), &value);
            log::debug!(
                "headers: {side} header {}: overwritten with {value:?}",
                entry.name
            );
        }
    }
}

fn render(entry: &HeaderEntry, request: &HeaderSnapshot, side: &str) -> Option<String> {
    let value = entry.value.render(request, entry.on_missing);
    if value.is_none() {
        log::debug!(
            "headers: {side} header {}: skipped, a request header in {:?} is absent",
            entry.name,
            entry.value.to_string()
        );
    }
    value
}
