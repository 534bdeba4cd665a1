//! Consumers and route admission shared by the credential filters (`basic-auth`, `key-auth`):
//! the per-route [`AccessPolicy`], the defaults of their common fields, and picking the policy
//! of a request's route.

use serde::Deserialize;

use crate::config::{ConfigError, FilterConfig};
use crate::headers::HeaderName;
use crate::http::Request;
use crate::routes::Routed;

/// What a route requires.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Consumers admitted; `"*"` admits every consumer.
    #[serde(default)]
    pub allow: Vec<String>,
    /// No credentials needed on this route (the consumer header is still removed, and a filter
    /// that hides credentials still hides them).
    #[serde(default)]
    pub skip: bool,
}

impl FilterConfig for AccessPolicy {
    #[inline]
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
    /// The policy of routes no rule covers: any consumer with valid credentials.
    #[inline]
    pub fn any_consumer() -> Self {
        Self {
            allow: vec!["*".into()],
            skip: false,
        }
    }

    /// Whether `consumer` is admitted.
    #[inline]
    pub fn admits(&self, consumer: &str) -> bool {
        self.allow.iter().any(|a| a == "*" || a == consumer)
    }
}

impl Routed<AccessPolicy> {
    /// The policy for `req`'s route, `None` where no rule covers it (the caller then applies
    /// [`AccessPolicy::any_consumer`]). The route is only read from the host when there are
    /// per-route rules.
    #[inline]
    pub fn policy_for(&self, req: &Request<'_>) -> Option<&AccessPolicy> {
        self.select_request(req)
    }

    /// [`Routed::policy_for`] for a request whose headers the filter has already read
    /// ([`Request::headers`]; see [`Routed::select_headers`]).
    #[inline]
    pub fn policy_for_headers(&self, headers: &[(String, String)]) -> Option<&AccessPolicy> {
        self.select_headers(headers)
    }
}

impl Routed<AccessPolicy> {
    /// Checks the rules (as [`Routed::validate_at`] with prefix `at`) and that every consumer a
    /// rule admits by name is `known`; the error names `<at>.<rule>.allow[j]`.
    pub fn validate_consumers(
        &self,
        at: &str,
        known: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        self.validate_at(at)?;
        for (path, policy) in self.configs() {
            for (j, name) in policy.allow.iter().enumerate() {
                if name != "*" && !known(name) {
                    return Err(ConfigError::at(
                        format!("{at}.{path}.allow[{j}]"),
                        format!("{name:?} is not one of the consumers"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The default realm named in authentication challenges: `tollgate`.
#[inline]
pub fn default_realm() -> String {
    "tollgate".into()
}

/// The default header that carries the verified consumer's name upstream: `x-consumer`.
#[inline]
pub fn default_consumer_header() -> Option<HeaderName> {
    HeaderName::new("x-consumer").ok()
}
