//! `rate-limit`: local rate limiting. Each limit is a token bucket per *descriptor* (built from
//! the peer IP, a header, the authenticated consumer, the path, the method, or a combination);
//! buckets live in shared data and are spent with compare-and-swap, so the worker VMs of a proxy
//! together never admit more than the limit (see [`bucket`]). Refused requests get a 429 with
//! `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers; a shadow mode only
//! counts and logs.
//!
//! The configuration reference is `filters/rate-limit/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_rate_limit::{RateLimitConfig, RateLimitFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse::<RateLimitConfig>(br#"{
//!   "limits": [{"name": "per-tenant", "key": [{"header": "x-tenant"}], "max_tokens": 2, "fill_interval_ms": 60000}]
//! }"#)?);
//! tollgate_rate_limit::env::mock::set_now_ns(1_700_000_000_000_000_000);
//! let statuses: Vec<Option<u16>> = (0..3)
//!     .map(|_| {
//!         let mut headers = HeaderList::from([(":path", "/"), ("x-tenant", "acme")]);
//!         let mut req = Request::new(&mut headers);
//!         RateLimitFilter::new(Rc::clone(&config)).on_request_headers(&mut req, true);
//!         req.local_reply().map(|r| r.status)
//!     })
//!     .collect();
//! assert_eq!(statuses, [None, None, Some(429)]);
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bucket;
pub mod config;
pub mod env;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use tollgate_sdk::{Action, HttpFilter, Request, Response};

use crate::bucket::Decision;
pub use crate::config::{KeyPart, Limit, RateLimitConfig, RoutePolicy};

/// The shared-data key prefix of the buckets.
pub const KEY_PREFIX: &str = "tollgate.rate-limit";

/// The shared-data key prefix of a limit's slots.
pub fn limit_prefix(limit: &str) -> String {
    format!("{KEY_PREFIX}/{limit}")
}

/// Descriptors longer than this are cut in logs.
const LOG_DESCRIPTOR_BYTES: usize = 128;

/// The filter for one HTTP stream.
pub struct RateLimitFilter {
    config: Rc<RateLimitConfig>,
    /// What the limits said about an admitted request, for its response's headers.
    admitted: Vec<(usize, Decision)>,
}

impl RateLimitFilter {
    /// The limits that apply to `req` and whether they only count (shadow).
    fn policy(&self, req: &Request<'_>) -> (Vec<usize>, bool) {
        let config = &self.config;
        match &config.routes {
            None => ((0..config.limits.len()).collect(), config.shadow),
            Some(routed) => match routed.select_request(req) {
                None => (Vec::new(), config.shadow),
                Some(policy) => (
                    policy
                        .limits
                        .iter()
                        .filter_map(|name| config.limit_index(name))
                        .collect(),
                    policy.shadow.unwrap_or(config.shadow),
                ),
            },
        }
    }

    /// The descriptor of `limit` for `req`; `None` when a part is missing.
    fn descriptor(&self, limit: &Limit, req: &Request<'_>) -> Option<Vec<String>> {
        limit
            .key
            .iter()
            .map(|part| match part {
                KeyPart::SourceIp => env::source_address()
                    .and_then(|a| tollgate_sdk::peer::ip_of(&a))
                    .map(|ip| ip.to_string()),
                KeyPart::Path => req
                    .path()
                    .map(|p| tollgate_sdk::routes::path_only(&p).to_string()),
                KeyPart::Method => req.method(),
                KeyPart::Consumer => self
                    .config
                    .consumer_header
                    .as_ref()
                    .and_then(|h| req.header(h.as_str()))
                    .filter(|v| !v.trim().is_empty()),
                KeyPart::Header(name) => req.header(name.as_str()),
            })
            .collect()
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) for `outcomes`.
    fn ietf_headers(&self, outcomes: &[(usize, Decision)]) -> [(&'static str, String); 2] {
        let mut policy = Vec::new();
        let mut state = Vec::new();
        for (index, decision) in outcomes {
            let Some(limit) = self.config.limits.get(*index) else {
                continue;
            };
            let window = limit.fill_interval_ms.div_ceil(1000).max(1);
            policy.push(format!(
                "\"{}\";q={};w={window}",
                limit.name,
                limit.per_fill()
            ));
            let (remaining, reset) = match decision {
                Decision::Allowed {
                    remaining,
                    reset_ns,
                } => (*remaining, *reset_ns),
                Decision::Limited { retry_after_ns, .. } => (0, *retry_after_ns),
            };
            state.push(format!(
                "\"{}\";r={remaining};t={}",
                limit.name,
                seconds_up(reset)
            ));
        }
        [
            ("ratelimit-policy", policy.join(", ")),
            ("ratelimit", state.join(", ")),
        ]
    }
}

/// Nanoseconds as whole seconds, rounded up.
fn seconds_up(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// A descriptor for a log line: parts joined with `|`, control characters escaped, cut.
fn printable(parts: &[String]) -> String {
    let joined = parts.join("|");
    let mut out: String = joined.escape_debug().collect();
    if out.len() > LOG_DESCRIPTOR_BYTES {
        let mut cut = LOG_DESCRIPTOR_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

impl HttpFilter for RateLimitFilter {
    const NAME: &'static str = "rate-limit";
    type Config = RateLimitConfig;

    fn new(config: Rc<RateLimitConfig>) -> Self {
        Self {
            config,
            admitted: Vec::new(),
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let (limits, shadow) = self.policy(req);
        if limits.is_empty() {
            return Action::Continue;
        }
        // Done in `on_configure` inside the proxy; here for native tests and as a fallback.
        if let Err(err) = config.prepare() {
            log::warn!("rate-limit: cannot create the buckets: {err}");
        }
        let now = env::now_ns();
        let metrics = config.metrics();
        let mut outcomes = Vec::with_capacity(limits.len());
        for index in limits {
            let (Some(limit), Some(m)) = (config.limits.get(index), metrics.get(index)) else {
                continue;
            };
            let Some(parts) = self.descriptor(limit, req) else {
                m.skipped.increment();
                continue;
            };
            let slot = bucket::slot(&config.hash_seed, &limit.name, &parts, config.slots);
            let key = bucket::key(&limit_prefix(&limit.name), slot);
            let decision =
                match env::with_store(|store| bucket::take(store, &key, &limit.gcra(), now)) {
                    Ok(decision) => decision,
                    Err(err @ tollgate_sdk::shared::SharedError::Contended { .. }) => {
                        log::warn!("rate-limit: \"{}\": {err}; refusing", limit.name);
                        Decision::Limited {
                            retry_after_ns: 1_000_000_000,
                            reset_ns: 1_000_000_000,
                        }
                    }
                    Err(err) => {
                        m.error.increment();
                        log::warn!("rate-limit: \"{}\": {err}; letting through", limit.name);
                        continue;
                    }
                };
            if let Decision::Limited { .. } = decision {
                if shadow {
                    m.shadow_limited.increment();
                    log::info!(
                        "rate-limit: \"{}\" would limit {} (shadow)",
                        limit.name,
                        printable(&parts)
                    );
                } else {
                    m.limited.increment();
                    log::info!(
                        "rate-limit: \"{}\" limited {}",
                        limit.name,
                        printable(&parts)
                    );
                }
            } else {
                m.allowed.increment();
            }
            outcomes.push((index, decision));
        }
        let retry_after = outcomes
            .iter()
            .filter_map(|(_, d)| match d {
                Decision::Limited { retry_after_ns, .. } => Some(*retry_after_ns),
                Decision::Allowed { .. } => None,
            })
            .max();
        match retry_after {
            Some(retry_after) if !shadow => {
                let retry = seconds_up(retry_after).max(1).to_string();
                let [policy, state] = self.ietf_headers(&outcomes);
                req.send_response(
                    429,
                    &[
                        ("retry-after", retry.as_str()),
                        (policy.0, policy.1.as_str()),
                        (state.0, state.1.as_str()),
                        ("content-type", "text/plain"),
                    ],
                    config.body.as_bytes(),
                );
            }
            _ => {
                if config.response_headers && !shadow {
                    self.admitted = outcomes;
                }
            }
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        if !self.admitted.is_empty() {
            let outcomes = std::mem::take(&mut self.admitted);
            for (name, value) in self.ietf_headers(&outcomes) {
                resp.set_header(name, &value);
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(RateLimitFilter, headers_only);
