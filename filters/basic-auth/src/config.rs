//! The `basic-auth` configuration (reference: `filters/basic-auth/README.md`) and its checks.

use serde::Deserialize;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::{RouteInfo, Routed};
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName};

use crate::credentials::PasswordHash;

/// The whole plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The realm named in `WWW-Authenticate: Basic realm="..."`.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Who may authenticate.
    pub consumers: Vec<Consumer>,
    /// Request header that carries the verified consumer's name to the upstream (always removed
    /// from what the client sent); `null` to not forward it.
    #[serde(default = "default_consumer_header")]
    pub consumer_header: Option<HeaderName>,
    /// Remove `Authorization` before the request goes upstream.
    #[serde(default)]
    pub strip_authorization: bool,
    /// Which consumers each route admits; without rules, every route requires any consumer.
    #[serde(default)]
    pub rules: Routed<AccessPolicy>,
    /// Counters, defined once when the configuration is accepted.
    #[serde(skip, default = "Metrics::define")]
    pub(crate) metrics: Metrics,
}

/// One consumer: a name and a password hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// The user id clients send, and the value forwarded in `consumer_header`.
    pub name: String,
    /// `{SHA}...` or `{SSHA256}...`; see the README.
    pub password_hash: PasswordHash,
}

/// What a route requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Consumers admitted; `"*"` admits every consumer.
    #[serde(default)]
    pub allow: Vec<String>,
    /// No authentication on this route (the consumer header is still removed).
    #[serde(default)]
    pub skip: bool,
}

impl FilterConfig for AccessPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        match (self.skip, self.allow.is_empty()) {
            (true, false) => Err(ConfigError::at("", "give either skip or allow, not both")),
            (false, true) => Err(ConfigError::at(
                "allow",
                "list the consumers admitted (\"*\" for all), or set skip: true",
            )),
            _ => Ok(()),
        }
    }
}

impl AccessPolicy {
    /// The policy of routes no rule covers: any authenticated consumer.
    pub fn any_consumer() -> Self {
        Self {
            allow: vec!["*".into()],
            skip: false,
        }
    }

    /// Whether `consumer` is admitted.
    pub fn admits(&self, consumer: &str) -> bool {
        self.allow.iter().any(|a| a == "*" || a == consumer)
    }
}

fn default_realm() -> String {
    "tollgate".into()
}

fn default_consumer_header() -> Option<HeaderName> {
    HeaderName::new("x-consumer").ok()
}

/// The outcome counters, tagged `result` and `reason`: the stat
/// `basic_auth_requests{result="denied",reason="bad_password"}` in Prometheus.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metrics {
    pub allowed: Counter,
    pub skipped: Counter,
    pub missing: Counter,
    pub malformed: Counter,
    pub unknown_consumer: Counter,
    pub bad_password: Counter,
    pub forbidden: Counter,
}

/// The metric name.
pub const METRIC: &str = "basic_auth_requests";

impl Metrics {
    fn define() -> Self {
        let c = |result: &str, reason: &str| {
            Counter::define(METRIC, &[("result", result), ("reason", reason)])
        };
        Self {
            allowed: c("allowed", "ok"),
            skipped: c("allowed", "skipped"),
            missing: c("denied", "missing"),
            malformed: c("denied", "malformed"),
            unknown_consumer: c("denied", "unknown_consumer"),
            bad_password: c("denied", "bad_password"),
            forbidden: c("denied", "forbidden"),
        }
    }
}

impl BasicAuthConfig {
    /// The policy for this request's route.
    pub fn policy(&self, route: &RouteInfo) -> Option<&AccessPolicy> {
        self.rules.select(route)
    }

    /// Whether any rule needs the route (so the filter can skip reading it).
    pub fn has_route_rules(&self) -> bool {
        !self.rules.routes.is_empty()
    }
}

impl FilterConfig for BasicAuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.realm.is_empty()
            || self
                .realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ConfigError::at(
                "realm",
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, consumer) in self.consumers.iter().enumerate() {
            if consumer.name.is_empty() || consumer.name.contains(':') || consumer.name == "*" {
                return Err(ConfigError::at(
                    format!("consumers[{i}].name"),
                    "must be non-empty, not \"*\", and contain no ':'",
                ));
            }
            if consumer.name.chars().any(|c| c.is_control()) {
                return Err(ConfigError::at(
                    format!("consumers[{i}].name"),
                    "must not contain control characters",
                ));
            }
            if !seen.insert(consumer.name.as_str()) {
                return Err(ConfigError::at(
                    format!("consumers[{i}].name"),
                    format!("{:?} is listed twice", consumer.name),
                ));
            }
        }
        if let Some(header) = &self.consumer_header
            && (header.is_pseudo() || header.as_str() == "authorization")
        {
            return Err(ConfigError::at(
                "consumer_header",
                format!("{header} cannot carry the consumer"),
            ));
        }
        self.rules.validate_at("rules")?;
        for (path, policy) in self.rules.configs() {
            for (j, name) in policy.allow.iter().enumerate() {
                if name != "*" && !seen.contains(name.as_str()) {
                    return Err(ConfigError::at(
                        format!("rules.{path}.allow[{j}]"),
                        format!("{name:?} is not one of the consumers"),
                    ));
                }
            }
        }
        Ok(())
    }
}
