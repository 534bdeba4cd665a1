//! `key-auth`: API key authentication. Keys come from a header, a query parameter or a cookie;
//! consumers are stored as the SHA-256 of their key and compared in constant time; a missing key
//! is a 401, an unknown key or a consumer not admitted on the route a 403; the key can be hidden
//! from the upstream and the consumer forwarded in a header.
//!
//! The configuration reference is `filters/key-auth/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_key_auth::{KeyAuthConfig, KeyAuthFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! // key "tg_demo_ops_2b8d5e60": printf %s tg_demo_ops_2b8d5e60 | sha256sum
//! let config = Rc::new(tollgate_sdk::config::parse::<KeyAuthConfig>(br#"{
//!   "sources": [{"header": "x-api-key"}, {"query": "api_key"}],
//!   "consumers": [{"name": "ops", "key_sha256": "915a4d3f33b47d94898a20586673bc6173874795366505547d77cb9b738ddc94"}],
//!   "hide_credentials": true
//! }"#)?);
//!
//! let mut headers = HeaderList::from([(":path", "/v1?api_key=tg_demo_ops_2b8d5e60&page=2")]);
//! let mut req = Request::new(&mut headers);
//! KeyAuthFilter::new(Rc::clone(&config)).on_request_headers(&mut req, true);
//! assert!(req.local_reply().is_none());
//! assert_eq!(headers.get_all(":path"), vec!["/v1?page=2"]);
//! assert_eq!(headers.get_all("x-consumer"), vec!["ops"]);
//!
//! let mut headers = HeaderList::from([(":path", "/v1"), ("x-api-key", "guess")]);
//! let mut req = Request::new(&mut headers);
//! KeyAuthFilter::new(config).on_request_headers(&mut req, true);
//! assert_eq!(req.local_reply().map(|r| r.status), Some(403));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod keys;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use subtle::ConstantTimeEq;
use tollgate_sdk::{Action, HttpFilter, Request};

use crate::config::key_hash;
pub use crate::config::{AccessPolicy, Consumer, KeyAuthConfig, KeySource};
use crate::keys::Found;

/// The filter for one HTTP stream.
pub struct KeyAuthFilter {
    config: Rc<KeyAuthConfig>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// 401: no key.
    Missing,
    /// 401: several keys, or an unusable one.
    Malformed,
    /// 403: no consumer has this key.
    UnknownKey,
    /// 403: the consumer is not admitted on this route.
    Forbidden,
}

impl KeyAuthFilter {
    /// The consumer whose key hash equals `hash`, comparing against every consumer.
    fn consumer_for(&self, key: &str) -> Option<&str> {
        let hash = key_hash(key);
        let mut found = None;
        for consumer in &self.config.consumers {
            if bool::from(consumer.key_sha256.ct_eq(&hash)) {
                found = Some(consumer.name.as_str());
            }
        }
        found
    }

    fn authenticate(&self, headers: &[(String, String)]) -> Result<&str, Denial> {
        for source in &self.config.sources {
            match keys::find(source, headers) {
                Found::Nothing => continue,
                Found::Malformed => return Err(Denial::Malformed),
                Found::Key(key) => return self.consumer_for(&key).ok_or(Denial::UnknownKey),
            }
        }
        Err(Denial::Missing)
    }

    /// Removes every key source from the request; `headers` are the request headers when they
    /// were already read (else each header source is looked up on its own).
    /// Removes every configured key source from the request, deciding from `headers` (the
    /// request's headers as read once) so that a source the request does not carry costs no
    /// host call.
    fn hide_keys(&self, req: &mut Request<'_>, headers: &[(String, String)]) {
        let mut path: Option<String> = headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map(|(_, v)| v.clone());
        let has_cookie = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("cookie"));
        for source in &self.config.sources {
            match source {
                KeySource::Header(name) => {
                    if !keys::header_values(headers, name.as_str()).is_empty() {
                        req.remove_header(name.as_str());
                    }
                }
                KeySource::Query(name) => {
                    if let Some(stripped) = path
                        .as_deref()
                        .and_then(|p| tollgate_sdk::http::path_without_param(p, name))
                    {
                        req.set_header(":path", &stripped);
                        path = Some(stripped);
                    }
                }
                KeySource::Cookie(name) => {
                    if has_cookie {
                        req.remove_cookie(name);
                    }
                }
            }
        }
    }

    fn deny(&self, req: &mut Request<'_>, denial: Denial) {
        let m = &self.config.metrics;
        let counter = match denial {
            Denial::Missing => m.missing,
            Denial::Malformed => m.malformed,
            Denial::UnknownKey => m.unknown_key,
            Denial::Forbidden => m.forbidden,
        };
        counter.increment();
        log::debug!("key-auth: denied ({denial:?})");
        match denial {
            Denial::Missing | Denial::Malformed => {
                let challenge = format!("ApiKey realm=\"{}\"", self.config.realm);
                let body = if denial == Denial::Missing {
                    "unauthorized: missing API key\n"
                } else {
                    "unauthorized: malformed API key\n"
                };
                req.send_response(
                    401,
                    &[
                        ("www-authenticate", challenge.as_str()),
                        ("content-type", "text/plain"),
                    ],
                    body,
                );
            }
            Denial::UnknownKey | Denial::Forbidden => req.send_response(
                403,
                &[("content-type", "text/plain")],
                "forbidden: this API key is not allowed here\n",
            ),
        }
    }
}

impl HttpFilter for KeyAuthFilter {
    const NAME: &'static str = "key-auth";
    type Config = KeyAuthConfig;

    fn new(config: Rc<KeyAuthConfig>) -> Self {
        Self { config }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        // Whatever happens next, the client never chooses the consumer header.
        if let Some(header) = &config.consumer_header {
            req.remove_header(header.as_str());
        }
        // One read of the request headers serves the route rules, the key sources and hiding
        // the key: each value the host returns costs a call into the guest (bench/envoy-probes).
        let headers = req.headers();
        // No rule and no default: any consumer (without building that policy per request).
        let policy = config.rules.policy_for_headers(&headers);
        let skip = policy.is_some_and(|p| p.skip);
        let admits = |consumer: &str| policy.is_none_or(|p| p.admits(consumer));
        if skip {
            config.metrics.skipped.increment();
            if config.hide_credentials {
                self.hide_keys(req, &headers);
            }
            return Action::Continue;
        }
        match self.authenticate(&headers) {
            Err(denial) => self.deny(req, denial),
            Ok(consumer) if !admits(consumer) => self.deny(req, Denial::Forbidden),
            Ok(consumer) => {
                config.metrics.allowed.increment();
                if let Some(header) = &config.consumer_header {
                    req.set_header(header.as_str(), consumer);
                }
                if config.hide_credentials {
                    self.hide_keys(req, &headers);
                }
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(KeyAuthFilter, []);
