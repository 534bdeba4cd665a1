//! # `ext-authz`: external authorization over HTTP
//!
//! Asks an authorization service about every request, like Envoy's native `ext_authz` filter in
//! HTTP mode: the check request goes to `cluster` with the original method and
//! `path_prefix + path`, the `authorization` header plus the configured request headers (and the
//! body up to a limit when configured). A 2xx answer lets the request through, with the service's
//! `allowed_upstream_headers` copied onto it (the client's own copies of those headers are
//! removed before asking, unless `strip_client_upstream_headers` is off); a 5xx answer, a
//! timeout or a service that cannot be reached is a failure (let through with
//! `failure_mode_allow`, else answered `status_on_error`, 403 by default), and so is a status
//! HTTP does not allow as a final answer (1xx, past 599); any other answer (3xx, 4xx) is a
//! denial: the client gets the service's status, headers and body.
//!
//! The configuration reference is in the crate's README.md.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use tollgate_sdk::body::{BodyLimit, Extent};
use tollgate_sdk::callout::{CalloutError, CalloutRequest, CalloutResponse, Callouts};
use tollgate_sdk::{Action, Body, ConfigError, FilterConfig, HttpFilter, Request};

/// Headers never copied from the service's answer (framing, hop-by-hop, pseudo-headers).
const NEVER_COPIED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "host",
];

/// How the request body goes to the service.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithBody {
    /// Most body bytes buffered and sent.
    pub max_request_bytes: usize,
    /// Past `max_request_bytes`: send the first bytes (`true`) or answer 413 (`false`).
    #[serde(default)]
    pub allow_partial_message: bool,
}

/// The filter's configuration (see README.md).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Envoy cluster of the authorization service.
    pub cluster: String,
    /// `:authority` of the check request; the original request's when absent.
    #[serde(default)]
    pub authority: Option<String>,
    /// Prefixed to the original path in the check request.
    #[serde(default)]
    pub path_prefix: String,
    /// How long to wait for the service, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Request headers sent to the service besides `authorization` (case-insensitive).
    #[serde(default)]
    pub allowed_request_headers: Vec<String>,
    /// Headers of an allowing answer set on the request going upstream.
    #[serde(default)]
    pub allowed_upstream_headers: Vec<String>,
    /// Headers of a denying answer passed to the client; all (but framing ones) when empty.
    #[serde(default)]
    pub allowed_client_headers: Vec<String>,
    /// Let requests through when the service fails (5xx, timeout, unreachable).
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// Status answered when the service fails and `failure_mode_allow` is off.
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// Send the request body too.
    #[serde(default)]
    pub with_request_body: Option<WithBody>,
    /// Remove the client's own copies of `allowed_upstream_headers` from the request before
    /// asking, so those headers reach the upstream only as the service set them.
    #[serde(default = "default_true")]
    pub strip_client_upstream_headers: bool,
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    200
}

fn default_status_on_error() -> u16 {
    403
}

impl FilterConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::at("cluster", "must name an Envoy cluster"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > u64::from(u32::MAX) {
            return Err(ConfigError::at(
                "timeout_ms",
                format!("{} is out of range 1..=4294967295", self.timeout_ms),
            ));
        }
        if !(200..=599).contains(&self.status_on_error) {
            return Err(ConfigError::at(
                "status_on_error",
                format!(
                    "{} is not an HTTP status in 200..=599",
                    self.status_on_error
                ),
            ));
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            return Err(ConfigError::at("path_prefix", "must start with `/`"));
        }
        let lists = [
            ("allowed_request_headers", &self.allowed_request_headers),
            ("allowed_upstream_headers", &self.allowed_upstream_headers),
            ("allowed_client_headers", &self.allowed_client_headers),
        ];
        for (field, list) in lists {
            for (i, name) in list.iter().enumerate() {
                tollgate_sdk::headers::check_name(name)
                    .map_err(|err| ConfigError::at(format!("{field}[{i}]"), err.to_string()))?;
            }
        }
        if let Some(body) = &self.with_request_body
            && body.max_request_bytes == 0
        {
            return Err(ConfigError::at(
                "with_request_body.max_request_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing asked yet.
    Start,
    /// Buffering the body before asking.
    Buffering,
    /// Waiting for the service.
    Checking,
    /// Decided; the request goes on.
    Done,
}

/// One request's authorization.
pub struct ExtAuthz {
    config: Rc<Config>,
    callouts: Callouts<Self>,
    state: State,
    /// The check request, built from the headers, sent once the body is in (when needed).
    check: Option<CalloutRequest>,
}

/// The decision on the service's answer (or failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through, setting these headers on it.
    Allow(Vec<(String, String)>),
    /// Answer the client with this.
    Deny {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
}

fn listed(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

impl ExtAuthz {
    /// The check request for a request with these headers (original `:method`, `:path`...).
    pub fn check_request(config: &Config, req: &Request<'_>) -> CalloutRequest {
        let method = req.method().unwrap_or_else(|| "GET".into());
        let path = req.path().unwrap_or_else(|| "/".into());
        let authority = config
            .authority
            .clone()
            .or_else(|| req.authority())
            .unwrap_or_else(|| config.cluster.clone());
        let mut call = CalloutRequest::new(
            &method,
            &config.cluster,
            &authority,
            &format!("{}{}", config.path_prefix, path),
        )
        .with_timeout(Duration::from_millis(config.timeout_ms));
        for (name, value) in req.headers() {
            let name = name.to_ascii_lowercase();
            if name.starts_with(':') || name == "content-length" {
                continue;
            }
            if name == "authorization" || listed(&config.allowed_request_headers, &name) {
                call = call.with_header(&name, &value);
            }
        }
        call
    }

    /// What to do with the service's answer.
    pub fn decide(config: &Config, result: Result<CalloutResponse, CalloutError>) -> Decision {
        let failure = || {
            if config.failure_mode_allow {
                Decision::Allow(Vec::new())
            } else {
                Decision::Deny {
                    status: config.status_on_error,
                    headers: Vec::new(),
                    body: Vec::new(),
                }
            }
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                log::warn!("{err}");
                return failure();
            }
        };
        if resp.status >= 500 {
            log::warn!(
                "the authorization service answered {}, treated as a failure",
                resp.status
            );
            return failure();
        }
        if !(200..=499).contains(&resp.status) {
            // 1xx are informational (never a final answer), and no status past 599 exists: an
            // answer the protocol does not allow is the service failing, never a reply to pass on.
            log::warn!(
                "the authorization service answered status {}, which is not a final HTTP status; treated as a failure",
                resp.status
            );
            return failure();
        }
        if resp.is_success() {
            let headers = resp
                .headers
                .into_iter()
                .filter(|(n, _)| listed(&config.allowed_upstream_headers, n))
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect();
            return Decision::Allow(headers);
        }
        let headers = resp
            .headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .filter(|(n, _)| !n.starts_with(':') && !NEVER_COPIED.contains(&n.as_str()))
            .filter(|(n, _)| {
                config.allowed_client_headers.is_empty()
                    || listed(&config.allowed_client_headers, n)
            })
            .collect();
        Decision::Deny {
            status: resp.status,
            headers,
            body: resp.body,
        }
    }

    /// Queues the check; its continuation applies the decision.
    fn ask(&mut self, call: CalloutRequest) -> Action {
        self.state = State::Checking;
        self.callouts
            .dispatch(call, |filter: &mut Self, req, result| {
                filter.state = State::Done;
                match Self::decide(&filter.config, result) {
                    Decision::Allow(headers) => {
                        for (name, value) in headers {
                            req.set_header(&name, &value);
                        }
                        Action::Continue
                    }
                    Decision::Deny {
                        status,
                        headers,
                        body,
                    } => {
                        let pairs: Vec<(&str, &str)> = headers
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.as_str()))
                            .collect();
                        req.send_response(status, &pairs, body);
                        Action::Pause
                    }
                }
            });
        Action::Pause
    }
}

impl HttpFilter for ExtAuthz {
    const NAME: &'static str = "ext-authz";
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            callouts: Callouts::new(),
            state: State::Start,
            check: None,
        }
    }

    fn callouts(&mut self) -> Option<&mut Callouts<Self>> {
        Some(&mut self.callouts)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, end_of_stream: bool) -> Action {
        let call = Self::check_request(&self.config, req);
        if self.config.strip_client_upstream_headers {
            // The service sees what it is configured to see (the check request is built), but
            // the upstream gets these headers only from the service: a client cannot claim an
            // identity the service did not set, even when it allows without setting one or
            // fails with `failure_mode_allow`.
            for name in &self.config.allowed_upstream_headers {
                req.remove_header(name);
            }
        }
        if self.config.with_request_body.is_some() && !end_of_stream {
            // A paused header callback holds the whole stream in Envoy (proxy-wasm turns
            // StopIteration into StopAllIteration), so the body would never arrive: let the
            // headers go on and hold the body back until the service has answered.
            self.check = Some(call);
            self.state = State::Buffering;
            return Action::Continue;
        }
        self.ask(call)
    }

    fn request_body_limit(&self) -> Option<BodyLimit> {
        if self.state != State::Buffering {
            return None;
        }
        let limits = self.config.with_request_body.as_ref()?;
        Some(if limits.allow_partial_message {
            BodyLimit::truncate_at(limits.max_request_bytes)
        } else {
            BodyLimit::refuse_above(limits.max_request_bytes)
        })
    }

    fn on_request_body_buffered(&mut self, body: &mut Body<'_>, extent: Extent) -> Action {
        let Some(call) = self.check.take() else {
            return Action::Continue;
        };
        let max = self
            .config
            .with_request_body
            .as_ref()
            .map_or(usize::MAX, |limits| limits.max_request_bytes);
        let mut bytes = body.bytes();
        bytes.truncate(max);
        let partial = if extent == Extent::Truncated {
            "true"
        } else {
            "false"
        };
        self.ask(
            call.with_body(bytes)
                .with_header("x-envoy-auth-partial-body", partial),
        )
    }

    fn on_request_body(&mut self, _body: &mut Body<'_>, _end_of_stream: bool) -> Action {
        // Chunks after the buffered part (allow_partial_message): held while the service
        // decides, streamed once it allowed.
        if self.state == State::Checking {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

tollgate_sdk::export_filter!(ExtAuthz, [request_body]);

#[cfg(test)]
mod tests;
