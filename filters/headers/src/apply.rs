//! Applying [`Mutations`] to a header map. Pure logic over [`HeaderMap`], so it runs the same
//! against the host's maps and against a `HeaderList` in tests.

use std::borrow::Cow;

use tollgate_sdk::HeaderMap;

use crate::config::{HeaderEntry, Mutations};
use crate::template::RequestHeaders;

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
pub fn apply<R: RequestHeaders>(
    mutations: &Mutations,
    headers: &mut dyn HeaderMap,
    request: &R,
    side: Side,
) {
    apply_known(mutations, headers, None, request, side);
}

/// [`apply`] when the caller already holds `current`, the names of `headers` as they are now
/// that a `remove_prefix` of `mutations` matches (others may be left out): `remove_prefix` then
/// works on them instead of reading the whole map again.
///
/// ```
/// use tollgate_headers::{apply::{apply_known, Side}, HeadersConfig};
/// use tollgate_sdk::{HeaderList, HeaderMap, HeaderSnapshot};
///
/// let config = tollgate_sdk::config::parse::<HeadersConfig>(
///     br#"{"request": {"remove": ["x-debug-a"], "remove_prefix": ["x-debug-"]}}"#,
/// )?;
/// let mut headers = HeaderList::from([(":path", "/"), ("x-debug-a", "1"), ("X-Debug-B", "2")]);
/// let current: Vec<String> = headers.pairs().into_iter().map(|(name, _)| name).collect();
/// apply_known(&config.request, &mut headers, Some(&current), &HeaderSnapshot::default(), Side::Request);
/// assert_eq!(headers, HeaderList::from([(":path", "/")]));
/// # Ok::<(), tollgate_sdk::ConfigError>(())
/// ```
pub fn apply_known<R: RequestHeaders>(
    mutations: &Mutations,
    headers: &mut dyn HeaderMap,
    current: Option<&[String]>,
    request: &R,
    side: Side,
) {
    let side = side.as_str();
    for name in &mutations.remove {
        headers.remove(name.as_str());
        log::debug!("headers: {side} header {name}: removed");
    }
    if !mutations.remove_prefix.is_empty() {
        let fetched: Vec<String>;
        let names: &[String] = match current {
            Some(names) => names,
            None => {
                fetched = headers.pairs().into_iter().map(|(name, _)| name).collect();
                &fetched
            }
        };
        let mut doomed: Vec<&str> = Vec::new();
        for name in names {
            // `current` is from before the `remove`s above: those are gone already.
            if current.is_some()
                && mutations
                    .remove
                    .iter()
                    .any(|r| r.as_str().eq_ignore_ascii_case(name))
            {
                continue;
            }
            if mutations.remove_prefix.iter().any(|p| p.matches(name))
                && !doomed.iter().any(|d| d.eq_ignore_ascii_case(name))
            {
                doomed.push(name);
            }
        }
        for name in doomed {
            headers.remove(name);
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
    // Whether the value renders first: that is the guest's own work, while asking whether the
    // header is there is a host call (one that copies the value into the guest when it is).
    // An entry whose reference is absent is skipped without asking.
    for entry in &mutations.add_if_absent {
        if renders(entry, request, side)
            && !headers.contains(entry.name.as_str())
            && let Some(value) = render(entry, request, side)
        {
            headers.add(entry.name.as_str(), &value);
            log::debug!("headers: {side} header {}: added {value:?}", entry.name);
        }
    }
    for entry in &mutations.overwrite_if_exists {
        if renders(entry, request, side)
            && headers.contains(entry.name.as_str())
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

/// Whether `entry`'s value renders (else the skip is logged, as [`render`] does).
#[inline]
fn renders<R: RequestHeaders>(entry: &HeaderEntry, request: &R, side: &str) -> bool {
    let renders = entry.value.renders(request, entry.on_missing);
    if !renders {
        skipped(entry, side);
    }
    renders
}

#[inline]
fn render<'e, R: RequestHeaders>(
    entry: &'e HeaderEntry,
    request: &'e R,
    side: &str,
) -> Option<Cow<'e, str>> {
    let value = entry.value.render_cow(request, entry.on_missing);
    if value.is_none() {
        skipped(entry, side);
    }
    value
}

/// The log line of an entry skipped for a missing reference: out of line, so the common path
/// (a value) carries no formatting code.
#[cold]
#[inline(never)]
fn skipped(entry: &HeaderEntry, side: &str) {
    log::debug!(
        "headers: {side} header {}: skipped, a request header in {:?} is absent",
        entry.name,
        entry.value.to_string()
    );
}
