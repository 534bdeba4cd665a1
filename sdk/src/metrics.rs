//! Metrics with tags: [`Counter`], [`Gauge`] and [`Histogram`], defined once (in the filter's
//! configuration, which the SDK parses once per root context) and updated per request.
//!
//! proxy-wasm metrics are plain names, so the tags are encoded in the name, the way Istio's
//! stats plugin does it: each tag as `<tag>=.=<value>;.;`, in front of the metric name.
//! `Counter::define("basic_auth_requests", &[("result", "denied")])` defines the stat
//! `result=.=denied;.;basic_auth_requests`. Envoy files it as `wasmcustom.<that name>` and, with
//! one `stats_tags` entry per tag name in the bootstrap's `stats_config`, turns each tag into a
//! Prometheus label (the regex's first group is cut from the name, its second is the value):
//!
//! ```yaml
//! stats_config:
//!   use_all_default_tags: true
//!   stats_tags:
//!   - tag_name: result
//!     regex: "(result=\\.=(.*?);\\.;)"
//! ```
//!
//! `/stats/prometheus` then shows `basic_auth_requests{result="denied"} 2` (Envoy strips its
//! `wasmcustom` namespace for Prometheus, so the name gets no `envoy_` prefix).
//! [`stats_tag_regex`] prints the regex for a tag. In Istio, list the tag names in
//! `meshConfig.defaultConfig.extraStatTags`, which generates the same regexes.
//!
//! Tag values are sanitised: `.` and `;` (the encoding's separators) become `_`.
//!
//! Inside the proxy the handles call the host; natively (unit tests) they update an in-memory
//! registry per thread that [`mock`] reads back:
//!
//! ```
//! use tollgate_sdk::metrics::{Counter, Histogram, mock};
//!
//! let denied = Counter::define("demo_requests", &[("result", "denied")]);
//! denied.increment();
//! denied.add(2);
//! assert_eq!(mock::value("result=.=denied;.;demo_requests"), Some(3));
//!
//! let sizes = Histogram::define("demo_sizes", &[]);
//! sizes.record(512);
//! assert_eq!(mock::records("demo_sizes"), vec![512]);
//! ```

/// The kind of a metric, as proxy-wasm numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

impl MetricKind {
    #[cfg(target_family = "wasm")]
    fn host(self) -> crate::abi::MetricType {
        match self {
            MetricKind::Counter => crate::abi::MetricType::Counter,
            MetricKind::Gauge => crate::abi::MetricType::Gauge,
            MetricKind::Histogram => crate::abi::MetricType::Histogram,
        }
    }
}

/// The stat name for metric `name` with `tags`: each tag as `<tag>=.=<value>;.;`, then the name.
///
/// ```
/// let name = tollgate_sdk::metrics::stat_name("key_auth_requests", &[("result", "denied"), ("reason", "unknown.key")]);
/// assert_eq!(name, "result=.=denied;.;reason=.=unknown_key;.;key_auth_requests");
/// ```
pub fn stat_name(name: &str, tags: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (tag, value) in tags {
        out.push_str(&sanitize(tag));
        out.push_str("=.=");
        out.push_str(&sanitize(value));
        out.push_str(";.;");
    }
    out.push_str(name);
    out
}

/// The Envoy `stats_tags` regex that turns tag `tag` into a Prometheus label.
///
/// ```
/// assert_eq!(tollgate_sdk::metrics::stats_tag_regex("result"), r"(result=\.=(.*?);\.;)");
/// ```
pub fn stats_tag_regex(tag: &str) -> String {
    format!(r"({}=\.=(.*?);\.;)", sanitize(tag))
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c == '.' || c == ';' { '_' } else { c })
        .collect()
}

/// A defined metric: its host id, or `None` when the host refused it (then updates are no-ops;
/// the refusal was logged once, at definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle(Option<u32>);

impl Handle {
    fn define(kind: MetricKind, name: &str, tags: &[(&str, &str)]) -> Self {
        let full = stat_name(name, tags);
        Handle(backend::define(kind, &full))
    }

    fn increment(self, offset: i64) {
        if let Some(id) = self.0 {
            backend::increment(id, offset);
        }
    }

    fn record(self, value: u64) {
        if let Some(id) = self.0 {
            backend::record(id, value);
        }
    }
}

/// A counter: a number that only goes up (`envoy_<...>` `TYPE counter` in Prometheus).
///
/// ```
/// use tollgate_sdk::metrics::{Counter, mock};
/// let allowed = Counter::define("c_example", &[("result", "allowed")]);
/// allowed.increment();
/// assert_eq!(mock::value("result=.=allowed;.;c_example"), Some(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(Handle);

impl Counter {
    /// Defines (or finds, when already defined) the counter `name` with `tags`.
    pub fn define(name: &str, tags: &[(&str, &str)]) -> Self {
        Counter(Handle::define(MetricKind::Counter, name, tags))
    }

    /// Adds one.
    pub fn increment(&self) {
        self.0.increment(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.increment(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// A gauge: a number that goes up and down, or is set.
///
/// ```
/// use tollgate_sdk::metrics::{Gauge, mock};
/// let active = Gauge::define("g_example", &[]);
/// active.set(5);
/// active.add(-2);
/// assert_eq!(mock::value("g_example"), Some(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(Handle);

impl Gauge {
    /// Defines (or finds, when already defined) the gauge `name` with `tags`.
    pub fn define(name: &str, tags: &[(&str, &str)]) -> Self {
        Gauge(Handle::define(MetricKind::Gauge, name, tags))
    }

    /// Sets the value.
    pub fn set(&self, value: u64) {
        self.0.record(value);
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: i64) {
        self.0.increment(delta);
    }
}

/// A histogram: each recorded value goes into Envoy's buckets (`_bucket`, `_sum`, `_count`).
///
/// ```
/// use tollgate_sdk::metrics::{Histogram, mock};
/// let size = Histogram::define("h_example", &[("route", "api")]);
/// size.record(10);
/// size.record(20);
/// assert_eq!(mock::records("route=.=api;.;h_example"), vec![10, 20]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(Handle);

impl Histogram {
    /// Defines (or finds, when already defined) the histogram `name` with `tags`.
    pub fn define(name: &str, tags: &[(&str, &str)]) -> Self {
        Histogram(Handle::define(MetricKind::Histogram, name, tags))
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        self.0.record(value);
    }
}

#[cfg(target_family = "wasm")]
mod backend {
    use super::MetricKind;
    use crate::abi as hostcalls;

    pub(super) fn define(kind: MetricKind, name: &str) -> Option<u32> {
        match hostcalls::define_metric(kind.host(), name) {
            Ok(id) => Some(id),
            Err(status) => {
                log::warn!("cannot define metric {name}: {status:?}");
                None
            }
        }
    }

    pub(super) fn increment(id: u32, offset: i64) {
        if let Err(status) = hostcalls::increment_metric(id, offset) {
            log::debug!("cannot increment metric {id}: {status:?}");
        }
    }

    pub(super) fn record(id: u32, value: u64) {
        if let Err(status) = hostcalls::record_metric(id, value) {
            log::debug!("cannot record metric {id}: {status:?}");
        }
    }
}

#[cfg(not(target_family = "wasm"))]
mod backend {
    use super::MetricKind;

    pub(super) fn define(kind: MetricKind, name: &str) -> Option<u32> {
        super::mock::define(kind, name)
    }

    pub(super) fn increment(id: u32, offset: i64) {
        super::mock::increment(id, offset);
    }

    pub(super) fn record(id: u32, value: u64) {
        super::mock::record(id, value);
    }
}

/// The in-memory metrics registry used outside the proxy (native tests), one per thread.
///
/// ```
/// use tollgate_sdk::metrics::{Counter, mock};
/// Counter::define("m_example", &[]).increment();
/// assert_eq!(mock::value("m_example"), Some(1));
/// assert!(mock::names().contains(&"m_example".to_string()));
/// mock::reset();
/// assert_eq!(mock::value("m_example"), Some(0));
/// assert_eq!(mock::value("never_defined"), None);
/// ```
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::RefCell;

    use super::MetricKind;

    struct Metric {
        name: String,
        kind: MetricKind,
        value: i64,
        records: Vec<u64>,
    }

    thread_local! {
        static METRICS: RefCell<Vec<Metric>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn define(kind: MetricKind, name: &str) -> Option<u32> {
        METRICS.with_borrow_mut(|metrics| {
            let index = match metrics
                .iter()
                .position(|m| m.name == name && m.kind == kind)
            {
                Some(index) => index,
                None => {
                    metrics.push(Metric {
                        name: name.to_string(),
                        kind,
                        value: 0,
                        records: Vec::new(),
                    });
                    metrics.len() - 1
                }
            };
            u32::try_from(index).ok()
        })
    }

    pub(super) fn increment(id: u32, offset: i64) {
        METRICS.with_borrow_mut(|metrics| {
            if let Some(m) = metrics.get_mut(id as usize) {
                if m.kind == MetricKind::Counter && offset < 0 {
                    return;
                }
                m.value = m.value.saturating_add(offset);
            }
        });
    }

    pub(super) fn record(id: u32, value: u64) {
        METRICS.with_borrow_mut(|metrics| {
            if let Some(m) = metrics.get_mut(id as usize) {
                match m.kind {
                    MetricKind::Counter => {
                        m.value = m
                            .value
                            .saturating_add(i64::try_from(value).unwrap_or(i64::MAX))
                    }
                    MetricKind::Gauge => m.value = i64::try_from(value).unwrap_or(i64::MAX),
                    MetricKind::Histogram => m.records.push(value),
                }
            }
        });
    }

    /// The value of the counter or gauge with this full stat name (see [`super::stat_name`]).
    pub fn value(stat_name: &str) -> Option<i64> {
        METRICS.with_borrow(|metrics| {
            metrics
                .iter()
                .find(|m| m.name == stat_name && m.kind != MetricKind::Histogram)
                .map(|m| m.value)
        })
    }

    /// The values recorded in the histogram with this full stat name.
    pub fn records(stat_name: &str) -> Vec<u64> {
        METRICS.with_borrow(|metrics| {
            metrics
                .iter()
                .find(|m| m.name == stat_name && m.kind == MetricKind::Histogram)
                .map(|m| m.records.clone())
                .unwrap_or_default()
        })
    }

    /// Every defined stat name, in definition order.
    pub fn names() -> Vec<String> {
        METRICS.with_borrow(|metrics| metrics.iter().map(|m| m.name.clone()).collect())
    }

    /// Zeroes every metric of this thread (definitions stay, so handles keep working).
    pub fn reset() {
        METRICS.with_borrow_mut(|metrics| {
            for m in metrics.iter_mut() {
                m.value = 0;
                m.records.clear();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_encoded_before_the_name_and_sanitised() {
        assert_eq!(
            stat_name("a", &[("x", "1;.2"), ("y.z", "v")]),
            "x=.=1__2;.;y_z=.=v;.;a"
        );
        assert_eq!(stat_name("plain", &[]), "plain");
    }

    #[test]
    fn defining_twice_shares_the_metric() {
        let a = Counter::define("twice", &[("t", "1")]);
        let b = Counter::define("twice", &[("t", "1")]);
        a.increment();
        b.increment();
        assert_eq!(mock::value("t=.=1;.;twice"), Some(2));
    }

    #[test]
    fn counters_ignore_negative_and_gauges_accept_it() {
        let c = Counter::define("c_neg", &[]);
        c.add(3);
        Handle::increment(c.0, -5);
        assert_eq!(mock::value("c_neg"), Some(3));
        let g = Gauge::define("g_neg", &[]);
        g.add(-4);
        assert_eq!(mock::value("g_neg"), Some(-4));
        g.set(7);
        assert_eq!(mock::value("g_neg"), Some(7));
    }

    #[test]
    fn same_name_different_kind_is_a_different_metric() {
        Counter::define("same", &[]).increment();
        Histogram::define("same", &[]).record(9);
        assert_eq!(mock::value("same"), Some(1));
        assert_eq!(mock::records("same"), vec![9]);
    }
}
