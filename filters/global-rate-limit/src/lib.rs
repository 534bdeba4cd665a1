//! `global-rate-limit`: asks a rate limit service about every request over Envoy's v3
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` gRPC protocol, as Envoy's native
//! `envoy.filters.http.ratelimit` does: a domain, descriptors built from the request by actions
//! (request headers, remote address, generic key, header value match), per route; `OVER_LIMIT`
//! answers with 429 (or the configured status), the service's body and headers and
//! `x-envoy-ratelimited`; `OK` lets the request through with the service's request headers added
//! and its response headers on the upstream's response; a service that fails or is too slow lets
//! the request through, or refuses it with `failure_mode_deny`. `x-ratelimit-*` headers
//! (draft 03) come from the service's descriptor statuses.
//!
//! The configuration reference is `filters/global-rate-limit/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_global_rate_limit::{GlobalRateLimitConfig, GlobalRateLimitFilter};
//! use tollgate_sdk::{Action, HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse::<GlobalRateLimitConfig>(br#"{
//!   "domain": "shop", "cluster": "rls",
//!   "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-tenant", "descriptor_key": "tenant"}}]}]
//! }"#)?);
//! let mut filter = GlobalRateLimitFilter::new(config);
//! let mut headers = HeaderList::from([(":path", "/"), ("x-tenant", "acme")]);
//! assert_eq!(filter.on_request_headers(&mut Request::new(&mut headers), true), Action::Pause);
//! let calls = filter.take_calls();
//! assert_eq!(calls[0].call().method, "ShouldRateLimit");
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod descriptor;
pub mod proto;
#[cfg(test)]
mod tests;

use std::rc::Rc;
use std::time::Duration;

use tollgate_sdk::callout::Callouts;
use tollgate_sdk::grpc::{GrpcCall, GrpcError, PendingGrpc};
use tollgate_sdk::{Action, HttpFilter, Request, Response};

pub use crate::config::{GlobalRateLimitConfig, XRateLimitHeaders};
use crate::proto::Code;

/// The filter for one HTTP stream.
pub struct GlobalRateLimitFilter {
    config: Rc<GlobalRateLimitConfig>,
    callouts: Callouts<Self>,
    /// Headers for the upstream's response (the service's and `x-ratelimit-*`).
    response_headers: Vec<(String, String)>,
}

impl GlobalRateLimitFilter {
    /// The gRPC calls queued by the last callback (native tests answer them by hand).
    pub fn take_calls(&mut self) -> Vec<PendingGrpc<Self>> {
        self.callouts.take_grpc()
    }

    /// What the service's answer (or failure) means for the request.
    fn on_answer(&mut self, req: &mut Request<'_>, answer: Result<Vec<u8>, GrpcError>) -> Action {
        let config = Rc::clone(&self.config);
        let metrics = config.metrics();
        let decoded = answer
            .map_err(|e| e.to_string())
            .and_then(|bytes| proto::decode_response(&bytes).map_err(|e| e.to_string()));
        let resp = match decoded {
            Ok(resp) if resp.overall_code != Code::Unknown => resp,
            other => {
                metrics.error.increment();
                let why = match other {
                    Err(e) => e,
                    Ok(_) => "the service answered UNKNOWN".into(),
                };
                if config.failure_mode_deny {
                    log::warn!("global-rate-limit: {why}; refusing (failure_mode_deny)");
                    req.send_response(config.status_on_error, &[], "");
                    return Action::Pause;
                }
                log::info!("global-rate-limit: {why}; letting through");
                metrics.failure_mode_allowed.increment();
                return Action::Continue;
            }
        };
        let mut headers = resp.response_headers.clone();
        if config.enable_x_ratelimit_headers == XRateLimitHeaders::DraftVersion03 {
            headers.extend(x_ratelimit_headers(&resp.statuses));
        }
        if resp.overall_code == Code::OverLimit {
            metrics.over_limit.increment();
            if !config.disable_x_envoy_ratelimited_header {
                headers.push(("x-envoy-ratelimited".into(), "true".into()));
            }
            let has_type = headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
            if !resp.raw_body.is_empty() && !has_type {
                headers.push(("content-type".into(), "text/plain".into()));
            }
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            req.send_response(config.rate_limited_status, &pairs, &resp.raw_body);
            return Action::Pause;
        }
        metrics.ok.increment();
        for (name, value) in &resp.request_headers {
            req.add_header(name, value);
        }
        self.response_headers = headers;
        Action::Continue
    }
}

/// `x-ratelimit-limit`, `-remaining` and `-reset` as Envoy's native filter writes them
/// (draft-polli-ratelimit-headers-03): the status with the fewest remaining requests gives the
/// limit, remaining and reset; the limit is followed by `, <n>;w=<window>[;name="<name>"]` for
/// every status whose unit is known.
pub fn x_ratelimit_headers(statuses: &[proto::DescriptorStatus]) -> Vec<(String, String)> {
    let mut lowest: Option<&proto::DescriptorStatus> = None;
    let mut policy = String::new();
    for status in statuses {
        let Some(limit) = &status.current_limit else {
            continue;
        };
        if lowest.is_none_or(|l| status.limit_remaining < l.limit_remaining) {
            lowest = Some(status);
        }
        let window = limit.window_seconds();
        if window != 0 {
            policy.push_str(&format!(", {};w={window}", limit.requests_per_unit));
            if !limit.name.is_empty() {
                policy.push_str(&format!(";name=\"{}\"", limit.name));
            }
        }
    }
    let Some(lowest) = lowest else {
        return Vec::new();
    };
    let rpu = lowest
        .current_limit
        .as_ref()
        .map_or(0, |l| l.requests_per_unit);
    vec![
        ("x-ratelimit-limit".into(), format!("{rpu}{policy}")),
        (
            "x-ratelimit-remaining".into(),
            lowest.limit_remaining.to_string(),
        ),
        ("x-ratelimit-reset".into(), lowest.reset_seconds.to_string()),
    ]
}

impl HttpFilter for GlobalRateLimitFilter {
    const NAME: &'static str = "global-rate-limit";
    type Config = GlobalRateLimitConfig;

    fn new(config: Rc<GlobalRateLimitConfig>) -> Self {
        Self {
            config,
            callouts: Callouts::new(),
            response_headers: Vec::new(),
        }
    }

    fn callouts(&mut self) -> Option<&mut Callouts<Self>> {
        Some(&mut self.callouts)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let sets = match &config.routes {
            None => config.rate_limits.as_slice(),
            Some(routed) => match routed.select_request(req) {
                Some(policy) => policy.rate_limits.as_slice(),
                None => return Action::Continue,
            },
        };
        let descriptors = descriptor::build(sets, req);
        if descriptors.is_empty() {
            return Action::Continue;
        }
        let message = proto::encode_request(&config.domain, &descriptors);
        let call = GrpcCall::new(&config.cluster, config::SERVICE, config::METHOD, message)
            .with_timeout(Duration::from_millis(config.timeout_ms));
        self.callouts
            .dispatch_grpc(call, |filter: &mut Self, req, answer| {
                filter.on_answer(req, answer)
            });
        Action::Pause
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            resp.add_header(&name, &value);
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(GlobalRateLimitFilter, headers_only);
