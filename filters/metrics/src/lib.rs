//! `metrics`: request metrics labelled by route, method and status class.
//!
//! For every stream that ends, `<prefix>_requests{route, method, status_class}` counts one, and
//! three histograms record `<prefix>_request_bytes{route, method}` and
//! `<prefix>_response_bytes{route, method, status_class}` (body bytes) and
//! `<prefix>_duration_ms{route, method, status_class}` (from the request headers to the end of
//! the stream, on the host's clock). The labels are tags in the SDK's encoding ([`metrics`]),
//! which Envoy turns into Prometheus labels with one `stats_tags` entry per tag.
//!
//! Labels stay bounded: `route` is Envoy's route name (or a configured path prefix's name, or
//! `unknown`), `method` one of the configured methods or `other`, `status_class` `1xx` to `5xx`
//! or `none` (no response: a reset).
//!
//! Per route (`routes`, the SDK's [`Routed`] rules): a rule names the `route` label of the
//! requests it matches (`label`), or leaves them uncounted (`enabled: false`).
//!
//! [`metrics`]: tollgate_sdk::metrics
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_metrics::MetricsFilter;
//! use tollgate_sdk::{HeaderList, HttpFilter, Request, Response};
//! use tollgate_sdk::metrics::mock;
//!
//! tollgate_sdk::routes::mock::set_route_name(Some("orders"));
//! let config = Rc::new(tollgate_sdk::config::parse(br#"{}"#)?);
//! let mut filter = MetricsFilter::new(config);
//! let mut req = HeaderList::from([(":method", "GET"), (":path", "/orders")]);
//! filter.on_request_headers(&mut Request::new(&mut req), true);
//! let mut resp = HeaderList::from([(":status", "204")]);
//! filter.on_response_headers(&mut Response::new(&mut resp), true);
//! filter.on_done();
//! assert_eq!(mock::value("route=.=orders;.;method=.=GET;.;status_class=.=2xx;.;tollgate_requests"), Some(1));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod clock;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Deserialize;
use tollgate_sdk::metrics::{Counter, Histogram};
use tollgate_sdk::routes::{RequestRoute, Routed};
use tollgate_sdk::{Action, Body, ConfigError, FilterConfig, HttpFilter, Request, Response};

fn default_prefix() -> String {
    "tollgate".into()
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

/// A path prefix named as a route (for requests whose Envoy route has no name).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRoute {
    /// The prefix (query excluded), e.g. `/orders/`.
    pub prefix: String,
    /// The `route` label.
    pub name: String,
}

fn yes() -> bool {
    true
}

/// What applies to the requests of a route (the `config` of a `routes` rule).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMetrics {
    /// The `route` label of these requests, over Envoy's route name and `path_routes`.
    #[serde(default)]
    pub label: Option<String>,
    /// `false`: these requests are not counted or measured at all.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl FilterConfig for RouteMetrics {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(label) = &self.label {
            if !self.enabled {
                return Err(ConfigError::at(
                    "label",
                    "a label for requests that are not counted (enabled: false)",
                ));
            }
            if !is_label_value(label) || label == "unknown" {
                return Err(ConfigError::at(
                    "label",
                    format!(
                        "{label:?} is not a label value (letters, digits, _ and -, up to 64; not unknown)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The whole plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The metric names' prefix (`[a-z_][a-z0-9_]*`, default `tollgate`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Methods that are their own `method` label (upper case); others are `other`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Route labels by path prefix, first match wins, for requests whose Envoy route has no
    /// name (and for all requests with `prefer_paths`).
    #[serde(default)]
    pub path_routes: Vec<PathRoute>,
    /// Label by `path_routes` even when the Envoy route has a name.
    #[serde(default)]
    pub prefer_paths: bool,
    /// Per-route rules: the `route` label of a route's requests, or no metrics on a route.
    /// Requests no rule (and no `default`) matches are labelled as above.
    #[serde(default)]
    pub routes: Option<Routed<RouteMetrics>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            methods: default_methods(),
            path_routes: Vec::new(),
            prefer_paths: false,
            routes: None,
        }
    }
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl FilterConfig for MetricsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let p = self.prefix.as_bytes();
        let ok = p
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || *b == b'_')
            && p.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !ok {
            return Err(ConfigError::at(
                "prefix",
                format!(
                    "{:?} is not a metric name prefix ([a-z_][a-z0-9_]*)",
                    self.prefix
                ),
            ));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::at(
                    format!("methods[{i}]"),
                    format!("{m:?} is not an upper-case method"),
                ));
            }
        }
        for (i, r) in self.path_routes.iter().enumerate() {
            if !r.prefix.starts_with('/') {
                return Err(ConfigError::at(
                    format!("path_routes[{i}].prefix"),
                    format!("{:?} does not start with /", r.prefix),
                ));
            }
            if !is_label_value(&r.name) || r.name == "unknown" {
                return Err(ConfigError::at(
                    format!("path_routes[{i}].name"),
                    format!(
                        "{:?} is not a label value (letters, digits, _ and -, up to 64; not unknown)",
                        r.name
                    ),
                ));
            }
        }
        if self.prefer_paths && self.path_routes.is_empty() {
            return Err(ConfigError::at("prefer_paths", "needs path_routes"));
        }
        if let Some(routes) = &self.routes {
            routes.validate_at("routes")?;
        }
        Ok(())
    }
}

impl MetricsConfig {
    /// The `route` label for a request.
    pub fn route_label(&self, route_name: Option<&str>, path: &str) -> String {
        let by_path = || {
            let bare = tollgate_sdk::routes::path_only(path);
            self.path_routes
                .iter()
                .find(|r| bare.starts_with(r.prefix.as_str()))
                .map(|r| r.name.clone())
        };
        let named = route_name.filter(|n| !n.is_empty()).map(sanitize);
        if self.prefer_paths {
            by_path().or(named).unwrap_or_else(|| "unknown".into())
        } else {
            named.or_else(by_path).unwrap_or_else(|| "unknown".into())
        }
    }

    /// The `method` label.
    pub fn method_label(&self, method: &str) -> String {
        if self.methods.iter().any(|m| m == method) {
            method.to_string()
        } else {
            "other".into()
        }
    }
}

/// A route name as a label value: at most 64 characters, `.`/`;` (the tag encoding's
/// separators) and other punctuation as `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `status_class` label of a status.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

thread_local! {
    static COUNTERS: RefCell<HashMap<String, Counter>> = RefCell::new(HashMap::new());
    static HISTOGRAMS: RefCell<HashMap<String, Histogram>> = RefCell::new(HashMap::new());
}

fn counter(name: &str, tags: &[(&str, &str)]) -> Counter {
    let key = tollgate_sdk::metrics::stat_name(name, tags);
    COUNTERS.with_borrow_mut(|m| *m.entry(key).or_insert_with(|| Counter::define(name, tags)))
}

fn histogram(name: &str, tags: &[(&str, &str)]) -> Histogram {
    let key = tollgate_sdk::metrics::stat_name(name, tags);
    HISTOGRAMS.with_borrow_mut(|m| {
        *m.entry(key)
            .or_insert_with(|| Histogram::define(name, tags))
    })
}

/// The filter for one HTTP stream.
pub struct MetricsFilter {
    config: Rc<MetricsConfig>,
    started_ns: Option<u128>,
    route: String,
    method: String,
    status: Option<u16>,
    request_bytes: u64,
    response_bytes: u64,
}

impl HttpFilter for MetricsFilter {
    const NAME: &'static str = "metrics";
    type Config = MetricsConfig;

    fn new(config: Rc<MetricsConfig>) -> Self {
        Self {
            config,
            started_ns: None,
            route: String::new(),
            method: String::new(),
            status: None,
            request_bytes: 0,
            response_bytes: 0,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        // The route facts are read once for the rules and the label.
        let route = RequestRoute::new(req);
        let rule = self
            .config
            .routes
            .as_ref()
            .and_then(|routes| routes.select_route(&route));
        if rule.is_some_and(|r| !r.enabled) {
            // Not counted: `on_done` sees no start.
            log::debug!("metrics: not measured on this route");
            return Action::Continue;
        }
        self.started_ns = Some(clock::now_ns());
        self.route = match rule.and_then(|r| r.label.as_ref()) {
            Some(label) => label.clone(),
            None => self
                .config
                .route_label(route.route_name(), route.full_path().unwrap_or_default()),
        };
        self.method = self.config.method_label(&req.method().unwrap_or_default());
        Action::Continue
    }

    fn on_request_body(&mut self, body: &mut Body<'_>, _end_of_stream: bool) -> Action {
        self.request_bytes += body.len() as u64;
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        self.status = resp.status();
        Action::Continue
    }

    fn on_response_body(&mut self, body: &mut Body<'_>, _end_of_stream: bool) -> Action {
        self.response_bytes += body.len() as u64;
        Action::Continue
    }

    fn on_done(&mut self) {
        let Some(started) = self.started_ns else {
            return;
        };
        let p = &self.config.prefix;
        let class = status_class(self.status);
        let (route, method) = (self.route.as_str(), self.method.as_str());
        let full = [
            ("route", route),
            ("method", method),
            ("status_class", class),
        ];
        counter(&format!("{p}_requests"), &full).increment();
        histogram(&format!("{p}_request_bytes"), &full[..2]).record(self.request_bytes);
        histogram(&format!("{p}_response_bytes"), &full).record(self.response_bytes);
        let elapsed_ms = clock::now_ns().saturating_sub(started) / 1_000_000;
        histogram(&format!("{p}_duration_ms"), &full)
            .record(u64::try_from(elapsed_ms).unwrap_or(u64::MAX));
    }
}

tollgate_sdk::export_filter!(MetricsFilter);
