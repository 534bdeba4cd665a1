//! `request-id`: every request leaves with an id and a W3C trace context.
//!
//! - `x-request-id` (or the configured header): a client's id is kept when trusted and well
//!   formed, else replaced; absent, one is made: a UUID version 4 from the host's randomness.
//! - `traceparent`: a valid one is propagated (its parent id replaced by a new span id when
//!   `new_span` is set) with its `tracestate` if valid; an invalid one, or none, starts a fresh
//!   trace and drops `tracestate`.
//! - The response gets the request's id (`echo`), whatever the upstream or a local reply said.
//! - Per route (`routes`, the SDK's [`Routed`] rules): a route may have its own configuration
//!   (another header, another trust policy) or none at all (`enabled: false`).
//!
//! The configuration is [`RequestIdConfig`]; the reference is `filters/request-id/README.md`.
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_request_id::RequestIdFilter;
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse(br#"{}"#)?);
//! let mut headers = HeaderList::from([(":method", "GET"), (":path", "/")]);
//! RequestIdFilter::new(config).on_request_headers(&mut Request::new(&mut headers), true);
//! let id = headers.get_all("x-request-id")[0].to_string();
//! assert!(tollgate_request_id::trace::is_uuid(&id));
//! assert_eq!(&id[14..15], "4");
//! assert_eq!(headers.get_all("traceparent")[0].len(), 55);
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(test)]
mod tests;
pub mod trace;

use std::rc::Rc;

use serde::Deserialize;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{Action, ConfigError, FilterConfig, HeaderName, HttpFilter, Request, Response};

use crate::trace::TraceParent;

/// Which client ids are accepted (when `trust_client_id` is set).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdFormat {
    /// Any id of visible ASCII (no spaces), up to `max_client_id_length` characters.
    #[default]
    Any,
    /// Only UUIDs (8-4-4-4-12 hex digits, any version).
    Uuid,
}

/// What happens to W3C trace context.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceMode {
    /// Propagate a valid `traceparent`, start a trace when it is absent or invalid.
    #[default]
    Propagate,
    /// Leave `traceparent` and `tracestate` alone.
    Off,
}

/// The default request id header.
pub const DEFAULT_HEADER: &str = "x-request-id";

fn yes() -> bool {
    true
}

fn default_max_length() -> usize {
    128
}

/// The whole plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIdConfig {
    /// The request id header (default `x-request-id`).
    #[serde(default)]
    pub header: Option<HeaderName>,
    /// Keep an id the client sent (when well formed); `false`: always replace it (Envoy's
    /// `preserve_external_request_id: false` at the edge).
    #[serde(default = "yes")]
    pub trust_client_id: bool,
    /// Which client ids are well formed.
    #[serde(default)]
    pub client_id_format: ClientIdFormat,
    /// The longest client id kept (1 to 1024; default 128).
    #[serde(default = "default_max_length")]
    pub max_client_id_length: usize,
    /// Set the request's id on the response (Envoy's `always_set_request_id_in_response`).
    #[serde(default = "yes")]
    pub echo: bool,
    /// W3C trace context handling.
    #[serde(default)]
    pub trace_context: TraceMode,
    /// When propagating, replace the parent id with a new span id (this proxy as a hop).
    #[serde(default)]
    pub new_span: bool,
    /// Whether traces this filter starts are flagged sampled (`-01`).
    #[serde(default)]
    pub sample_new_traces: bool,
    /// `false`: requests are left alone (no id, no trace context, no echo, not counted); with
    /// `routes`, turns the filter off on some routes (or on all but some).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-route configurations: the first matching rule's `config` (a whole request-id
    /// configuration, without `routes`) applies instead of the top-level fields; requests no
    /// rule matches get the top-level fields (so `routes.default` is refused).
    #[serde(default)]
    pub routes: Option<Box<Routed<RequestIdConfig>>>,
}

impl FilterConfig for RequestIdConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_policy()?;
        if let Some(routes) = &self.routes {
            if routes.default.is_some() {
                return Err(ConfigError::at(
                    "routes.default",
                    "the top-level fields are the configuration for requests no rule matches",
                ));
            }
            for (i, rule) in routes.routes.iter().enumerate() {
                if rule.config.routes.is_some() {
                    return Err(ConfigError::at(
                        format!("routes.routes[{i}].config.routes"),
                        "per-route rules do not nest",
                    ));
                }
            }
            routes.validate_at("routes")?;
        }
        Ok(())
    }
}

impl RequestIdConfig {
    /// The checks of one configuration's own fields (not its `routes`).
    fn validate_policy(&self) -> Result<(), ConfigError> {
        let header = self.header_name();
        if header.starts_with(':') {
            return Err(ConfigError::at(
                "header",
                format!("{header} is a pseudo-header"),
            ));
        }
        if matches!(header, "traceparent" | "tracestate") {
            return Err(ConfigError::at(
                "header",
                format!("{header} is the trace context's own header"),
            ));
        }
        if !(1..=1024).contains(&self.max_client_id_length) {
            return Err(ConfigError::at(
                "max_client_id_length",
                format!("{} is not between 1 and 1024", self.max_client_id_length),
            ));
        }
        if self.trace_context == TraceMode::Off && (self.new_span || self.sample_new_traces) {
            return Err(ConfigError::at(
                "trace_context",
                "new_span and sample_new_traces need trace_context: propagate",
            ));
        }
        Ok(())
    }

    /// The configuration for `req`: its route's rule's, else this one (the top level).
    pub fn for_request(&self, req: &Request<'_>) -> &RequestIdConfig {
        self.routes
            .as_ref()
            .and_then(|routes| routes.select_request(req))
            .unwrap_or(self)
    }

    /// [`RequestIdConfig::for_request`] on the request's headers as already read.
    pub fn for_headers(&self, headers: &[(String, String)]) -> &RequestIdConfig {
        self.routes
            .as_ref()
            .and_then(|routes| routes.select_headers(headers))
            .unwrap_or(self)
    }

    /// Whether some request may propagate a trace context (this configuration or a route's):
    /// the filter then reads every request header once, for the rules, the id and the trace.
    pub fn may_propagate(&self) -> bool {
        self.trace_context == TraceMode::Propagate
            || self.routes.as_ref().is_some_and(|routes| {
                routes
                    .routes
                    .iter()
                    .any(|rule| rule.config.trace_context == TraceMode::Propagate)
            })
    }

    /// The request id header, lower-cased.
    pub fn header_name(&self) -> &str {
        self.header
            .as_ref()
            .map_or(DEFAULT_HEADER, HeaderName::as_str)
    }

    /// Whether the client's `id` is kept.
    pub fn keeps(&self, id: &str) -> bool {
        if !self.trust_client_id || id.is_empty() || id.len() > self.max_client_id_length {
            return false;
        }
        match self.client_id_format {
            ClientIdFormat::Any => id.bytes().all(|b| b.is_ascii_graphic()),
            ClientIdFormat::Uuid => trace::is_uuid(id),
        }
    }
}

/// What happened to the request id: the `source` tag of `request_id_ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// None came: one was made.
    Generated,
    /// The client's was kept.
    Kept,
    /// The client's was replaced (untrusted or malformed).
    Replaced,
}

/// What happened to the trace context: the `trace` tag of `request_id_traces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceOutcome {
    /// None came: a trace was started.
    Started,
    /// A valid one was propagated.
    Propagated,
    /// An invalid one was replaced by a fresh trace.
    Restarted,
}

/// The metric names.
pub const IDS_METRIC: &str = "request_id_ids";
/// See [`IDS_METRIC`].
pub const TRACES_METRIC: &str = "request_id_traces";

#[derive(Debug, Clone, Copy)]
struct Metrics {
    ids: [Counter; 3],
    traces: [Counter; 3],
}

thread_local! {
    static METRICS: std::cell::OnceCell<Metrics> = const { std::cell::OnceCell::new() };
}

fn metrics() -> Metrics {
    METRICS.with(|m| {
        *m.get_or_init(|| {
            let id = |v: &str| Counter::define(IDS_METRIC, &[("source", v)]);
            let tr = |v: &str| Counter::define(TRACES_METRIC, &[("trace", v)]);
            Metrics {
                ids: [id("generated"), id("kept"), id("replaced")],
                traces: [tr("started"), tr("propagated"), tr("restarted")],
            }
        })
    })
}

/// The filter for one HTTP stream.
pub struct RequestIdFilter {
    config: Rc<RequestIdConfig>,
    /// The id the request left with (echoed on the response).
    id: Option<String>,
    /// Which configuration applied: `None` the top level, `Some(i)` the rule `routes[i]`.
    rule: Option<usize>,
}

impl RequestIdFilter {
    /// The id the request left with, once its headers were seen.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Sets the request id on `req`; returns it and where it came from. `read`: the request's
/// headers when the filter already read them all (else the id header alone is read).
pub fn apply_id(
    config: &RequestIdConfig,
    req: &mut Request<'_>,
    read: Option<&[(String, String)]>,
) -> (String, IdSource) {
    let name = config.header_name();
    let seen = match read {
        Some(headers) => headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone()),
        None => req.header(name),
    };
    match seen {
        Some(id) if config.keeps(&id) => (id, IdSource::Kept),
        seen => {
            let id = trace::uuid_v4();
            req.set_header(name, &id);
            let source = if seen.is_some() {
                IdSource::Replaced
            } else {
                IdSource::Generated
            };
            (id, source)
        }
    }
}

/// Propagates or starts the trace context on `req`, whose headers as read are `headers`.
pub fn apply_trace(
    config: &RequestIdConfig,
    req: &mut Request<'_>,
    headers: &[(String, String)],
) -> TraceOutcome {
    // Several `traceparent` headers are invalid (W3C); several `tracestate` ones are one list.
    let mut parents = Vec::new();
    let mut states = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("traceparent") {
            parents.push(value.as_str());
        } else if name.eq_ignore_ascii_case("tracestate") {
            states.push(value.as_str());
        }
    }
    let parsed = match parents.as_slice() {
        [one] => TraceParent::parse(one),
        _ => None,
    };
    match parsed {
        Some(mut parent) => {
            if config.new_span {
                parent.parent_id = trace::nonzero_hex::<8>();
                req.set_header("traceparent", &parent.render());
            }
            if !states.is_empty() && !trace::tracestate_is_valid(&states.join(",")) {
                req.remove_header("tracestate");
            }
            TraceOutcome::Propagated
        }
        None => {
            let fresh = TraceParent::fresh(config.sample_new_traces);
            req.set_header("traceparent", &fresh.render());
            if !states.is_empty() {
                req.remove_header("tracestate");
            }
            if parents.is_empty() {
                TraceOutcome::Started
            } else {
                TraceOutcome::Restarted
            }
        }
    }
}

impl HttpFilter for RequestIdFilter {
    const NAME: &'static str = "request-id";
    type Config = RequestIdConfig;

    fn new(config: Rc<RequestIdConfig>) -> Self {
        Self {
            config,
            id: None,
            rule: None,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let top = Rc::clone(&self.config);
        // When the trace context may be needed every header is read anyway: that one read also
        // serves the route rules and the id (each read is a call across the VM boundary).
        let read = top.may_propagate().then(|| req.headers());
        let config = match &read {
            Some(headers) => top.for_headers(headers),
            None => top.for_request(req),
        };
        self.rule = top.routes.as_ref().and_then(|routes| {
            routes
                .routes
                .iter()
                .position(|rule| std::ptr::eq(&rule.config, config))
        });
        if !config.enabled {
            log::debug!("request-id: off on this route");
            return Action::Continue;
        }
        let (id, source) = apply_id(config, req, read.as_deref());
        let m = metrics();
        m.ids[source as usize].increment();
        if config.trace_context == TraceMode::Propagate {
            let headers = read.unwrap_or_else(|| req.headers());
            let outcome = apply_trace(config, req, &headers);
            m.traces[outcome as usize].increment();
        }
        log::debug!("request-id: {id} ({source:?})");
        self.id = Some(id);
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        let top = &self.config;
        let config = match (self.rule, &top.routes) {
            (Some(i), Some(routes)) => routes.routes.get(i).map_or(&**top, |rule| &rule.config),
            _ => &**top,
        };
        if config.echo
            && let Some(id) = &self.id
        {
            resp.set_header(config.header_name(), id);
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(RequestIdFilter, headers_only);
