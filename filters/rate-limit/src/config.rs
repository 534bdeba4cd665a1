//! The `rate-limit` configuration (reference: `filters/rate-limit/README.md`) and its checks.

use std::cell::{Cell, OnceCell};

use serde::Deserialize;
use tollgate_sdk::consumers::default_consumer_header;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName};

use crate::bucket::Gcra;

/// The most buckets a limit may keep (`slots`).
pub const MAX_SLOTS: u32 = 65_536;

/// The whole plugin configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits, by name.
    pub limits: Vec<Limit>,
    /// Which limits apply on which route; absent: every limit on every request.
    #[serde(default)]
    pub routes: Option<Routed<RoutePolicy>>,
    /// Count and log what would be limited, never refuse.
    #[serde(default)]
    pub shadow: bool,
    /// The request header an earlier authentication filter sets to the consumer's name (the
    /// `consumer` key part).
    #[serde(default = "default_consumer_header")]
    pub consumer_header: Option<HeaderName>,
    /// Buckets per limit in shared data (descriptors hash to one of them).
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Mixed into the hash that places descriptors in slots, so that nobody outside can pick
    /// descriptors that share a bucket with someone else's.
    #[serde(default)]
    pub hash_seed: String,
    /// Send `RateLimit-Policy` and `RateLimit` on admitted responses too (429s always have them).
    #[serde(default = "yes")]
    pub response_headers: bool,
    /// The body of the 429.
    #[serde(default = "default_body")]
    pub body: String,
    /// Whether this VM has created the slots of every limit in shared data.
    #[serde(skip)]
    pub(crate) prepared: Cell<bool>,
    /// Counters per limit (defined on first use).
    #[serde(skip)]
    pub(crate) metrics: OnceCell<Vec<LimitMetrics>>,
}

fn default_slots() -> u32 {
    1024
}

fn yes() -> bool {
    true
}

fn default_body() -> String {
    "rate limited\n".into()
}

/// One limit: a token bucket per descriptor.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Names the limit in routes, headers, logs and metrics.
    pub name: String,
    /// What the descriptor is made of; empty: one bucket for every request.
    pub key: Vec<KeyPart>,
    /// Bucket size: the burst a descriptor may send at once.
    pub max_tokens: u32,
    /// Tokens added every `fill_interval_ms` (continuously, pro rata); default `max_tokens`.
    #[serde(default)]
    pub tokens_per_fill: Option<u32>,
    /// The refill period, in milliseconds.
    pub fill_interval_ms: u64,
}

impl Limit {
    /// Tokens per fill (`max_tokens` when not given).
    pub fn per_fill(&self) -> u32 {
        self.tokens_per_fill.unwrap_or(self.max_tokens)
    }

    /// The bucket's arithmetic.
    pub fn gcra(&self) -> Gcra {
        Gcra::new(self.max_tokens, self.per_fill(), self.fill_interval_ms)
    }
}

/// One part of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyPart {
    /// The downstream peer's IP (`source.address` without the port).
    SourceIp,
    /// `:path` without the query.
    Path,
    /// `:method`.
    Method,
    /// The consumer an earlier authentication filter set in `consumer_header`.
    Consumer,
    /// A request header's first value, e.g. `{"header": "x-tenant"}`.
    Header(HeaderName),
}

/// What applies on a route.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// The names of the limits that apply (each one must exist).
    pub limits: Vec<String>,
    /// Overrides the top-level `shadow` on this route.
    #[serde(default)]
    pub shadow: Option<bool>,
}

impl FilterConfig for RoutePolicy {}

impl FilterConfig for RateLimitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.limits.is_empty() {
            return Err(ConfigError::at("limits", "at least one limit is needed"));
        }
        for (i, limit) in self.limits.iter().enumerate() {
            let at = |field: &str| format!("limits[{i}].{field}");
            if limit.name.is_empty() || limit.name.len() > 64 {
                return Err(ConfigError::at(at("name"), "must be 1 to 64 characters"));
            }
            if !limit
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(ConfigError::at(
                    at("name"),
                    "may hold only letters, digits, '-', '_' and '.' (it is a header token and a metric tag)",
                ));
            }
            if self.limits[..i].iter().any(|l| l.name == limit.name) {
                return Err(ConfigError::at(
                    at("name"),
                    "a limit of this name is defined earlier",
                ));
            }
            if limit.max_tokens == 0 {
                return Err(ConfigError::at(at("max_tokens"), "must be at least 1"));
            }
            if limit.per_fill() == 0 {
                return Err(ConfigError::at(at("tokens_per_fill"), "must be at least 1"));
            }
            if limit.fill_interval_ms == 0 || limit.fill_interval_ms > 86_400_000 * 366 {
                return Err(ConfigError::at(
                    at("fill_interval_ms"),
                    "must be between 1 ms and a year",
                ));
            }
            for (j, part) in limit.key.iter().enumerate() {
                if limit.key[..j].contains(part) {
                    return Err(ConfigError::at(format!("limits[{i}].key[{j}]"), "repeated"));
                }
            }
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(ConfigError::at(
                "slots",
                format!("must be between 1 and {MAX_SLOTS}"),
            ));
        }
        if let Some(routes) = &self.routes {
            routes.validate_at("routes")?;
            let rules = routes
                .default
                .iter()
                .map(|p| ("routes.default".to_string(), p))
                .chain(
                    routes
                        .routes
                        .iter()
                        .enumerate()
                        .map(|(i, r)| (format!("routes.routes[{i}].config"), &r.config)),
                );
            for (at, policy) in rules {
                for (j, name) in policy.limits.iter().enumerate() {
                    if self.limit_index(name).is_none() {
                        return Err(ConfigError::at(
                            format!("{at}.limits[{j}]"),
                            "no limit of this name in `limits`",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn on_configured(&self) -> Result<(), ConfigError> {
        self.prepare()
            .map_err(|err| ConfigError::at("slots", format!("cannot create the buckets: {err}")))
    }
}

impl RateLimitConfig {
    /// Creates every limit's slots in shared data that do not exist yet (once per VM).
    pub fn prepare(&self) -> Result<(), tollgate_sdk::shared::SharedError> {
        if self.prepared.get() {
            return Ok(());
        }
        crate::env::with_store(|store| {
            self.limits.iter().try_for_each(|l| {
                crate::bucket::prepare(store, &crate::limit_prefix(&l.name), self.slots)
            })
        })?;
        self.prepared.set(true);
        Ok(())
    }

    /// The index of the limit called `name`.
    pub fn limit_index(&self, name: &str) -> Option<usize> {
        self.limits.iter().position(|l| l.name == name)
    }

    pub(crate) fn metrics(&self) -> &[LimitMetrics] {
        self.metrics.get_or_init(|| {
            self.limits
                .iter()
                .map(|l| LimitMetrics::define(&l.name))
                .collect()
        })
    }
}

/// The metric name: `rate_limit_requests{limit=...,result=...}` in Prometheus.
pub const METRIC: &str = "rate_limit_requests";

/// The outcome counters of one limit, tagged `limit` and `result`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitMetrics {
    /// Admitted by this limit.
    pub allowed: Counter,
    /// Refused with 429 because of this limit.
    pub limited: Counter,
    /// Would have been refused (shadow mode); let through.
    pub shadow_limited: Counter,
    /// The descriptor could not be built (a header or the peer address missing): not counted
    /// against the limit.
    pub skipped: Counter,
    /// Shared data failed (host error): let through.
    pub error: Counter,
}

impl LimitMetrics {
    fn define(limit: &str) -> Self {
        let c = |result: &str| Counter::define(METRIC, &[("limit", limit), ("result", result)]);
        Self {
            allowed: c("allowed"),
            limited: c("limited"),
            shadow_limited: c("shadow_limited"),
            skipped: c("skipped"),
            error: c("error"),
        }
    }
}
