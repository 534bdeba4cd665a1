//! `cors`: Cross-Origin Resource Sharing by route. Requests with an `Origin` the route's policy
//! allows get `Access-Control-Allow-Origin` (the origin, echoed), `-Allow-Credentials` and
//! `-Expose-Headers` on the response; preflights (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) from allowed origins are answered here with `200` and
//! `-Allow-Methods`, `-Allow-Headers`, `-Max-Age`. Other origins get no CORS header from this
//! filter (and their preflights go upstream, as with Envoy's native `cors`). Every response to a
//! request with an `Origin` on a route with a policy carries `Vary: Origin`.
//!
//! The configuration is a [`Routed`] [`CorsPolicy`]; the reference is `filters/cors/README.md`.
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_cors::CorsFilter;
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse(br#"{"default": {
//!   "allow_origins": ["https://*.example.com"], "allow_methods": ["GET", "POST"]
//! }}"#)?);
//! let mut headers = HeaderList::from([
//!     (":method", "OPTIONS"), (":path", "/"),
//!     ("origin", "https://app.example.com"), ("access-control-request-method", "POST"),
//! ]);
//! let mut req = Request::new(&mut headers);
//! CorsFilter::new(config).on_request_headers(&mut req, true);
//! let reply = req.local_reply().map(|r| (r.status, r.headers.clone()));
//! let (status, headers) = reply.unwrap_or_default();
//! assert_eq!(status, 200);
//! assert!(headers.contains(&("access-control-allow-methods".into(), "GET,POST".into())));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod origin;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{Action, HttpFilter, Request, Response};

pub use crate::origin::CorsPolicy;

/// The whole plugin configuration: a policy per route (`default` and `routes`).
pub type CorsConfig = Routed<CorsPolicy>;

/// The metric name: `cors_requests{result=...}` in Prometheus.
pub const METRIC: &str = "cors_requests";

#[derive(Debug, Clone, Copy)]
struct Metrics {
    preflight: Counter,
    allowed: Counter,
    disallowed: Counter,
}

thread_local! {
    static METRICS: std::cell::OnceCell<Metrics> = const { std::cell::OnceCell::new() };
}

fn metrics() -> Metrics {
    METRICS.with(|m| {
        *m.get_or_init(|| {
            let c = |result: &str| Counter::define(METRIC, &[("result", result)]);
            Metrics {
                preflight: c("preflight"),
                allowed: c("allowed"),
                disallowed: c("disallowed"),
            }
        })
    })
}

/// What the request half decided for the response half.
#[derive(Debug, Default)]
enum State {
    /// No policy on the route, or no `Origin`: not a CORS request.
    #[default]
    NotCors,
    /// A CORS request from an origin the policy does not allow: only `Vary: Origin`.
    Disallowed,
    /// An allowed origin: the CORS headers its response gets.
    Allowed {
        headers: Vec<(&'static str, String)>,
    },
    /// A preflight answered locally (its reply carries every header).
    Answered,
}

/// The filter for one HTTP stream.
pub struct CorsFilter {
    config: Rc<CorsConfig>,
    state: State,
}

impl HttpFilter for CorsFilter {
    const NAME: &'static str = "cors";
    type Config = CorsConfig;

    fn new(config: Rc<CorsConfig>) -> Self {
        Self {
            config,
            state: State::NotCors,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let Some(origin) = req.header("origin") else {
            return Action::Continue;
        };
        let config = Rc::clone(&self.config);
        let Some(policy) = config.select_request(req) else {
            return Action::Continue;
        };
        if !policy.allows_origin(&origin) {
            metrics().disallowed.increment();
            log::debug!("cors: origin {origin:?} not allowed");
            self.state = State::Disallowed;
            return Action::Continue;
        }
        let preflight = req
            .method()
            .is_some_and(|m| m.eq_ignore_ascii_case("OPTIONS"))
            && req
                .header("access-control-request-method")
                .is_some_and(|m| !m.is_empty());
        if preflight {
            metrics().preflight.increment();
            let headers = policy.preflight_headers(&origin);
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            req.send_response(200, &pairs, b"");
            self.state = State::Answered;
        } else {
            metrics().allowed.increment();
            self.state = State::Allowed {
                headers: policy.response_headers(&origin),
            };
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        let state = std::mem::take(&mut self.state);
        match state {
            State::NotCors | State::Answered => {}
            State::Disallowed => add_vary_origin(resp),
            State::Allowed { headers } => {
                add_vary_origin(resp);
                for (name, value) in headers {
                    resp.set_header(name, &value);
                }
            }
        }
        Action::Continue
    }
}

/// Adds `Origin` to the response's `Vary` unless it is already there (or `Vary: *`).
fn add_vary_origin(resp: &mut Response<'_>) {
    let present = resp
        .headers()
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("vary"))
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .any(|t| t == "origin" || t == "*");
    if !present {
        resp.add_header("vary", "Origin");
    }
}

tollgate_sdk::export_filter!(CorsFilter, headers_only);
