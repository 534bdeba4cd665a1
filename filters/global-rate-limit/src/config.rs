//! The `global-rate-limit` configuration (reference: `filters/global-rate-limit/README.md`) and
//! its checks. Descriptor sets and their actions take the JSON shape of Envoy's route
//! `rate_limits` (`config.route.v3.RateLimit`), so a native configuration carries over.

use std::cell::OnceCell;

use serde::Deserialize;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName};

/// The gRPC service and method called.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// The method of [`SERVICE`].
pub const METHOD: &str = "ShouldRateLimit";

/// The whole plugin configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GlobalRateLimitConfig {
    /// The rate limit domain sent with every request.
    pub domain: String,
    /// The Envoy cluster of the rate limit service (HTTP/2).
    pub cluster: String,
    /// How long to wait for the service, in milliseconds (native default: 20).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// When the service fails (timeout, unreachable, bad answer): refuse the request with
    /// `status_on_error` instead of letting it through.
    #[serde(default)]
    pub failure_mode_deny: bool,
    /// The status of refusals when the service fails and `failure_mode_deny` is set.
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// The status sent when the service says `OVER_LIMIT`.
    #[serde(default = "default_rate_limited_status")]
    pub rate_limited_status: u16,
    /// `DRAFT_VERSION_03`: add `x-ratelimit-limit`, `-remaining` and `-reset` from the
    /// service's descriptor statuses; `OFF` (default): none.
    #[serde(default)]
    pub enable_x_ratelimit_headers: XRateLimitHeaders,
    /// Do not add `x-envoy-ratelimited: true` to refusals.
    #[serde(default)]
    pub disable_x_envoy_ratelimited_header: bool,
    /// The descriptor sets sent for every request (when `routes` is absent).
    #[serde(default)]
    pub rate_limits: Vec<DescriptorSet>,
    /// Descriptor sets per route (instead of `rate_limits`); a request no rule matches and with
    /// no `default` is not rate limited.
    #[serde(default)]
    pub routes: Option<Routed<RoutePolicy>>,
    /// Outcome counters (defined on first use).
    #[serde(skip)]
    pub(crate) metrics: OnceCell<Metrics>,
}

fn default_timeout_ms() -> u64 {
    20
}

fn default_status_on_error() -> u16 {
    500
}

fn default_rate_limited_status() -> u16 {
    429
}

/// Whether to add the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum XRateLimitHeaders {
    /// None.
    #[default]
    #[serde(rename = "OFF")]
    Off,
    /// draft-polli-ratelimit-headers-03, as Envoy's native filter writes them.
    #[serde(rename = "DRAFT_VERSION_03")]
    DraftVersion03,
}

/// The descriptor sets of a route.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// Descriptor sets, one descriptor each.
    pub rate_limits: Vec<DescriptorSet>,
}

impl FilterConfig for RoutePolicy {}

/// One descriptor: the entries its actions produce, in order (Envoy's `RateLimit`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DescriptorSet {
    /// The actions; when one cannot produce its entry (a header absent, a match failing) the
    /// whole descriptor is left out, as natively.
    pub actions: Vec<Action>,
    /// How many hits this descriptor adds (`hits_addend.number`); absent: the service's default (1).
    #[serde(default)]
    pub hits_addend: Option<HitsAddend>,
}

/// `hits_addend` of a descriptor.
#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HitsAddend {
    /// The number of hits.
    pub number: u64,
}

/// One action: where a descriptor entry comes from.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// `(descriptor_key, value of header_name)`; `:path` and `:method` work too.
    RequestHeaders(RequestHeaders),
    /// `("remote_address", peer IP)`.
    RemoteAddress(Empty),
    /// `(descriptor_key or "generic_key", descriptor_value)`.
    GenericKey(GenericKey),
    /// `(descriptor_key or "header_match", descriptor_value)` when the headers match (or do not,
    /// with `expect_match: false`).
    HeaderValueMatch(HeaderValueMatch),
}

/// An action without fields (`{}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `request_headers`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestHeaders {
    /// The header (or `:path`, `:method`, `:authority`).
    pub header_name: HeaderName,
    /// The entry's key.
    pub descriptor_key: String,
    /// When the header is absent, leave this entry out instead of the whole descriptor.
    #[serde(default)]
    pub skip_if_absent: bool,
}

/// `generic_key`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GenericKey {
    /// The entry's value.
    pub descriptor_value: String,
    /// The entry's key (default `generic_key`).
    #[serde(default)]
    pub descriptor_key: Option<String>,
}

/// `header_value_match`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderValueMatch {
    /// The entry's value.
    pub descriptor_value: String,
    /// The entry's key (default `header_match`).
    #[serde(default)]
    pub descriptor_key: Option<String>,
    /// Produce the entry when every matcher holds (default), or when not all do (`false`).
    #[serde(default = "yes")]
    pub expect_match: bool,
    /// The matchers (all must hold).
    pub headers: Vec<HeaderMatcher>,
}

fn yes() -> bool {
    true
}

/// A header condition (a subset of Envoy's `HeaderMatcher`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    /// The header (pseudo-headers too).
    pub name: HeaderName,
    /// Compare the value; absent (and no `present_match`): the header must be present.
    #[serde(default)]
    pub string_match: Option<StringMatch>,
    /// `true`: the header must be present; `false`: absent.
    #[serde(default)]
    pub present_match: Option<bool>,
    /// Negate the result.
    #[serde(default)]
    pub invert_match: bool,
}

/// How a value is compared (exactly one of `exact`, `prefix`, `suffix`, `contains`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    /// Equal to.
    #[serde(default)]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Ends with.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Contains.
    #[serde(default)]
    pub contains: Option<String>,
    /// Compare ASCII case-insensitively.
    #[serde(default)]
    pub ignore_case: bool,
}

fn check_status(at: &str, status: u16) -> Result<(), ConfigError> {
    if (200..=599).contains(&status) {
        Ok(())
    } else {
        Err(ConfigError::at(
            at,
            "must be an HTTP status between 200 and 599",
        ))
    }
}

fn check_sets(at: &str, sets: &[DescriptorSet]) -> Result<(), ConfigError> {
    for (i, set) in sets.iter().enumerate() {
        if set.actions.is_empty() {
            return Err(ConfigError::at(
                format!("{at}[{i}].actions"),
                "at least one action is needed",
            ));
        }
        for (j, action) in set.actions.iter().enumerate() {
            let here = |f: &str| format!("{at}[{i}].actions[{j}].{f}");
            match action {
                Action::RequestHeaders(h) if h.descriptor_key.is_empty() => {
                    return Err(ConfigError::at(
                        here("request_headers.descriptor_key"),
                        "must not be empty",
                    ));
                }
                Action::GenericKey(g) if g.descriptor_value.is_empty() => {
                    return Err(ConfigError::at(
                        here("generic_key.descriptor_value"),
                        "must not be empty",
                    ));
                }
                Action::HeaderValueMatch(m) => {
                    if m.descriptor_value.is_empty() {
                        return Err(ConfigError::at(
                            here("header_value_match.descriptor_value"),
                            "must not be empty",
                        ));
                    }
                    if m.headers.is_empty() {
                        return Err(ConfigError::at(
                            here("header_value_match.headers"),
                            "at least one matcher is needed",
                        ));
                    }
                    for (k, h) in m.headers.iter().enumerate() {
                        let Some(s) = &h.string_match else { continue };
                        let given = [&s.exact, &s.prefix, &s.suffix, &s.contains]
                            .iter()
                            .filter(|v| v.is_some())
                            .count();
                        if given != 1 || h.present_match.is_some() {
                            return Err(ConfigError::at(
                                here(&format!("header_value_match.headers[{k}].string_match")),
                                "give exactly one of exact, prefix, suffix, contains (and no present_match)",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

impl FilterConfig for GlobalRateLimitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.domain.is_empty() {
            return Err(ConfigError::at("domain", "must not be empty"));
        }
        if self.cluster.is_empty() {
            return Err(ConfigError::at(
                "cluster",
                "must name the Envoy cluster of the rate limit service",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > u64::from(u32::MAX) {
            return Err(ConfigError::at(
                "timeout_ms",
                "must be between 1 and 4294967295",
            ));
        }
        check_status("status_on_error", self.status_on_error)?;
        check_status("rate_limited_status", self.rate_limited_status)?;
        check_sets("rate_limits", &self.rate_limits)?;
        match &self.routes {
            Some(routes) => {
                if !self.rate_limits.is_empty() {
                    return Err(ConfigError::at(
                        "rate_limits",
                        "give the descriptor sets either here or in routes (routes.default), not both",
                    ));
                }
                routes.validate_at("routes")?;
                if let Some(d) = &routes.default {
                    check_sets("routes.default.rate_limits", &d.rate_limits)?;
                }
                for (i, rule) in routes.routes.iter().enumerate() {
                    check_sets(
                        &format!("routes.routes[{i}].config.rate_limits"),
                        &rule.config.rate_limits,
                    )?;
                }
            }
            None if self.rate_limits.is_empty() => {
                return Err(ConfigError::at(
                    "rate_limits",
                    "at least one descriptor set is needed (or routes)",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// The metric name: `global_rate_limit_requests{result=...}` in Prometheus.
pub const METRIC: &str = "global_rate_limit_requests";

/// Outcome counters, tagged `result` (as the native filter's `ratelimit.ok`, `over_limit`,
/// `error`, `failure_mode_allowed`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metrics {
    pub ok: Counter,
    pub over_limit: Counter,
    pub error: Counter,
    pub failure_mode_allowed: Counter,
}

impl GlobalRateLimitConfig {
    pub(crate) fn metrics(&self) -> &Metrics {
        self.metrics.get_or_init(|| {
            let c = |result: &str| Counter::define(METRIC, &[("result", result)]);
            Metrics {
                ok: c("ok"),
                over_limit: c("over_limit"),
                error: c("error"),
                failure_mode_allowed: c("failure_mode_allowed"),
            }
        })
    }
}
