//! `basic-auth`: HTTP Basic authentication (RFC 7617) against consumers whose passwords are
//! stored as hashes (`{SHA}` as written by `htpasswd -s`, or salted `{SSHA256}`), compared in
//! constant time; per-route consumer lists; the verified consumer forwarded in a header.
//!
//! The configuration reference is `filters/basic-auth/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_basic_auth::{BasicAuthConfig, BasicAuthFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! // password "test"
//! let config = tollgate_sdk::config::parse::<BasicAuthConfig>(br#"{
//!   "realm": "shop",
//!   "consumers": [{"name": "ada", "password_hash": "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="}],
//!   "strip_authorization": true
//! }"#)?;
//! let config = Rc::new(config);
//!
//! let mut headers = HeaderList::from([(":path", "/"), ("authorization", "Basic YWRhOnRlc3Q=")]);
//! let mut req = Request::new(&mut headers);
//! BasicAuthFilter::new(Rc::clone(&config)).on_request_headers(&mut req, true);
//! assert!(req.local_reply().is_none());
//! assert_eq!(headers.get_all("x-consumer"), vec!["ada"]);
//! assert!(headers.get_all("authorization").is_empty());
//!
//! let mut headers = HeaderList::from([(":path", "/")]);
//! let mut req = Request::new(&mut headers);
//! BasicAuthFilter::new(config).on_request_headers(&mut req, true);
//! let reply = req.local_reply().cloned();
//! assert_eq!(reply.as_ref().map(|r| r.status), Some(401));
//! assert!(reply.is_some_and(|r| r.headers.contains(
//!     &("www-authenticate".to_string(), "Basic realm=\"shop\"".to_string()))));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod credentials;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use tollgate_sdk::{Action, HttpFilter, Request};

pub use crate::config::{AccessPolicy, BasicAuthConfig, Consumer};
use crate::credentials::{Credentials, CredentialsError, PasswordHash, parse_authorization};

/// A hash no password matches in practice, checked when the user is unknown so that an unknown
/// user costs the same as a wrong password.
const DUMMY_HASH: PasswordHash = PasswordHash::Sha1([0u8; 20]);

/// The filter for one HTTP stream.
pub struct BasicAuthFilter {
    config: Rc<BasicAuthConfig>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    /// 401: no usable credentials.
    Unauthenticated(CredentialsError),
    /// 401: user unknown.
    UnknownConsumer,
    /// 401: wrong password.
    BadPassword,
    /// 403: authenticated, but not admitted on this route.
    Forbidden,
}

impl BasicAuthFilter {
    fn authenticate(&self, headers: &[(String, String)]) -> Result<&str, Denial> {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.as_str())
            .collect();
        let Credentials { user, password } =
            parse_authorization(&values).map_err(Denial::Unauthenticated)?;
        let consumer = self.config.consumers.iter().find(|c| c.name == user);
        match consumer {
            Some(consumer) if consumer.password_hash.verify(&password) => Ok(&consumer.name),
            Some(_) => Err(Denial::BadPassword),
            None => {
                let _ = DUMMY_HASH.verify(&password);
                Err(Denial::UnknownConsumer)
            }
        }
    }

    fn deny(&self, req: &mut Request<'_>, denial: Denial) {
        let m = &self.config.metrics;
        let (counter, reason) = match denial {
            Denial::Unauthenticated(CredentialsError::Missing) => {
                (m.missing, "missing credentials")
            }
            Denial::Unauthenticated(_) => (m.malformed, "malformed credentials"),
            Denial::UnknownConsumer => (m.unknown_consumer, "invalid credentials"),
            Denial::BadPassword => (m.bad_password, "invalid credentials"),
            Denial::Forbidden => (m.forbidden, "forbidden"),
        };
        counter.increment();
        log::debug!("basic-auth: denied ({denial:?})");
        if denial == Denial::Forbidden {
            req.send_response(
                403,
                &[("content-type", "text/plain")],
                "forbidden: this consumer is not allowed on this route\n",
            );
        } else {
            let challenge = format!("Basic realm=\"{}\"", self.config.realm);
            req.send_response(
                401,
                &[
                    ("www-authenticate", challenge.as_str()),
                    ("content-type", "text/plain"),
                ],
                format!("unauthorized: {reason}\n"),
            );
        }
    }
}

impl HttpFilter for BasicAuthFilter {
    const NAME: &'static str = "basic-auth";
    type Config = BasicAuthConfig;

    fn new(config: Rc<BasicAuthConfig>) -> Self {
        Self { config }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        // Whatever happens next, the client never chooses the consumer header.
        if let Some(header) = &config.consumer_header {
            req.remove_header(header.as_str());
        }
        // One read of the request headers serves the route rules and the credentials: each
        // value the host returns costs a call into the guest (bench/envoy-probes).
        let headers = req.headers();
        // No rule and no default: any consumer (without building that policy per request).
        let policy = config.rules.policy_for_headers(&headers);
        let skip = policy.is_some_and(|p| p.skip);
        let admits = |consumer: &str| policy.is_none_or(|p| p.admits(consumer));
        if skip {
            config.metrics.skipped.increment();
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
                if config.strip_authorization {
                    req.remove_header("authorization");
                }
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(BasicAuthFilter, []);
