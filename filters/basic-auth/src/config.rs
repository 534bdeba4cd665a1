//! The `basic-auth` configuration (reference: `filters/basic-auth/README.md`) and its checks.

use serde::Deserialize;
pub use tollgate_sdk::consumers::AccessPolicy;
use tollgate_sdk::consumers::{default_consumer_header, default_realm};
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName};

use crate::credentials::PasswordHash;

/// The whole plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// The user id clients send, and the value forwarded in `consumer_header`.
    pub name: String,
    /// `{SHA}...` or `{SSHA256}...`; see the README.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub password_hash: PasswordHash,
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
        self.rules
            .validate_consumers("rules", |name| seen.contains(name))
    }
}
