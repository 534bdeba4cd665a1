//! The `key-auth` configuration (reference: `filters/key-auth/README.md`) and its checks.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
pub use tollgate_sdk::consumers::AccessPolicy;
use tollgate_sdk::consumers::{default_consumer_header, default_realm};
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName};

/// The whole plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// The realm named in `WWW-Authenticate: ApiKey realm="..."` on 401s.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Where keys are looked for, in order; the first source present is used.
    pub sources: Vec<KeySource>,
    /// Who may authenticate.
    pub consumers: Vec<Consumer>,
    /// Remove the key (header, query parameter or cookie) before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Request header that carries the verified consumer's name to the upstream (always removed
    /// from what the client sent); `null` to not forward it.
    #[serde(default = "default_consumer_header")]
    pub consumer_header: Option<HeaderName>,
    /// Which consumers each route admits; without rules, every route requires any consumer.
    #[serde(default)]
    pub rules: Routed<AccessPolicy>,
    /// Counters, defined once when the configuration is accepted.
    #[serde(skip, default = "Metrics::define")]
    pub(crate) metrics: Metrics,
}

/// Where a key may come from.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// A request header, e.g. `{"header": "x-api-key"}`.
    Header(HeaderName),
    /// A query parameter of `:path`, e.g. `{"query": "api_key"}` (percent-decoded).
    Query(String),
    /// A cookie, e.g. `{"cookie": "api_key"}`.
    Cookie(String),
}

/// One consumer: a name and the SHA-256 of its key.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Forwarded in `consumer_header`, and named in rules.
    pub name: String,
    /// `sha256(key)` in hex (`printf %s "$KEY" | sha256sum`).
    #[serde(deserialize_with = "hex_sha256")]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "String", regex(pattern = "^[0-9a-fA-F]{64}$"))
    )]
    pub key_sha256: [u8; 32],
}

fn hex_sha256<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    let text = String::deserialize(d)?;
    parse_hex32(&text).ok_or_else(|| {
        serde::de::Error::custom(
            "expected 64 hex digits: the SHA-256 of the key (printf %s \"$KEY\" | sha256sum)",
        )
    })
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        let value = digit(*pair.first()?)? * 16 + digit(*pair.get(1)?)?;
        *out.get_mut(i)? = u8::try_from(value).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a key, as stored in [`Consumer::key_sha256`].
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The metric name: `key_auth_requests{result=...,reason=...}` in Prometheus.
pub const METRIC: &str = "key_auth_requests";

/// The outcome counters, tagged `result` and `reason`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metrics {
    pub allowed: Counter,
    pub skipped: Counter,
    pub missing: Counter,
    pub malformed: Counter,
    pub unknown_key: Counter,
    pub forbidden: Counter,
}

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
            unknown_key: c("denied", "unknown_key"),
            forbidden: c("denied", "forbidden"),
        }
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(tollgate_sdk::headers::is_token_byte)
}

impl FilterConfig for KeyAuthConfig {
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
        if self.sources.is_empty() {
            return Err(ConfigError::at(
                "sources",
                "give at least one of {\"header\": ...}, {\"query\": ...}, {\"cookie\": ...}",
            ));
        }
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                KeySource::Header(name) if name.is_pseudo() => {
                    return Err(ConfigError::at(
                        format!("sources[{i}].header"),
                        format!("{name} is a pseudo-header"),
                    ));
                }
                KeySource::Query(name) | KeySource::Cookie(name) if !is_token(name) => {
                    return Err(ConfigError::at(
                        format!("sources[{i}]"),
                        format!("{name:?} is not a valid parameter or cookie name"),
                    ));
                }
                _ => {}
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for (i, consumer) in self.consumers.iter().enumerate() {
            if consumer.name.is_empty()
                || consumer.name == "*"
                || consumer.name.chars().any(|c| c.is_control())
            {
                return Err(ConfigError::at(
                    format!("consumers[{i}].name"),
                    "must be non-empty, not \"*\", without control characters",
                ));
            }
            if !seen.insert(consumer.name.as_str()) {
                return Err(ConfigError::at(
                    format!("consumers[{i}].name"),
                    format!("{:?} is listed twice", consumer.name),
                ));
            }
            if !hashes.insert(consumer.key_sha256) {
                return Err(ConfigError::at(
                    format!("consumers[{i}].key_sha256"),
                    "the same key is given to another consumer",
                ));
            }
        }
        if let Some(header) = &self.consumer_header
            && header.is_pseudo()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parses_both_cases_and_refuses_the_rest() {
        let lower = "1b40623eda620c3dd67d33a7133a65bdc5b2a11aea0bebd7f4d81fae3be13098";
        assert_eq!(
            parse_hex32(lower),
            Some(key_hash("tg_demo_partner_7c1e9a4f"))
        );
        assert_eq!(parse_hex32(&lower.to_uppercase()), parse_hex32(lower));
        assert_eq!(parse_hex32(&lower[..62]), None);
        assert_eq!(parse_hex32(&format!("{}zz", &lower[..62])), None);
        assert_eq!(parse_hex32(&format!("{}+1", &lower[..62])), None);
    }
}
