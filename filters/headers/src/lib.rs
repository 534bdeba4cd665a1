//! `headers`: a proxy-wasm filter that adds, sets, appends and removes request and response
//! headers, optionally only when conditions on the request headers hold, with values that may
//! copy request headers (`%REQ(name)%`).
//!
//! The configuration reference is `filters/headers/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_headers::{HeadersConfig, HeadersFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request, Response};
//!
//! let config = tollgate_sdk::config::parse::<HeadersConfig>(br#"{
//!   "request": {"set": [{"name": "x-user-copy", "value": "%REQ(x-user)%"}]},
//!   "response": {"remove": ["x-powered-by"]},
//!   "rules": [{"when": [{"present": "authorization"}],
//!              "response": {"set": [{"name": "cache-control", "value": "private"}]}}]
//! }"#)?;
//! let mut filter = HeadersFilter::new(Rc::new(config));
//!
//! let mut request = HeaderList::from([(":path", "/"), ("x-user", "ada"), ("authorization", "Bearer t")]);
//! filter.on_request_headers(&mut Request::new(&mut request), true);
//! assert_eq!(request.get_all("x-user-copy"), vec!["ada"]);
//!
//! let mut response = HeaderList::from([(":status", "200"), ("x-powered-by", "PHP")]);
//! filter.on_response_headers(&mut Response::new(&mut response), true);
//! assert_eq!(response, HeaderList::from([(":status", "200"), ("cache-control", "private")]));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod apply;
pub mod config;
pub mod template;

use std::rc::Rc;

use tollgate_sdk::{Action, HeaderSnapshot, HttpFilter, Request, Response};

use crate::apply::{Side, apply, apply_known};
pub use crate::config::HeadersConfig;

/// The filter for one HTTP stream.
pub struct HeadersFilter {
    config: Rc<HeadersConfig>,
    /// What the response phase needs from the request phase; `None` until the request
    /// headers have been seen.
    request: Option<RequestState>,
}

struct RequestState {
    headers: HeaderSnapshot,
    matched_rules: Vec<usize>,
}

impl HeadersFilter {
    fn request_state(&self, headers: HeaderSnapshot) -> RequestState {
        RequestState {
            matched_rules: self.config.matching_rules(&headers),
            headers,
        }
    }
}

impl HttpFilter for HeadersFilter {
    const NAME: &'static str = "headers";
    type Config = HeadersConfig;

    fn new(config: Rc<HeadersConfig>) -> Self {
        Self {
            config,
            request: None,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        // Conditions and %REQ(...)% see the request as it reached this filter. The headers
        // are read once, in place: for the snapshot (only the names the configuration reads)
        // and for the top-level `remove_prefix`.
        let reads = config.reads_request();
        let prefixes = &config.request.remove_prefix;
        let mut current: Option<Vec<(String, String)>> = None;
        let mut snapshot = HeaderSnapshot::default();
        if reads || !prefixes.is_empty() {
            // One walk over the headers as the host holds them, copying only what is kept: the
            // headers the configuration reads (for the snapshot) and the names a top-level
            // `remove_prefix` matches (all `apply_known` needs of the current headers).
            let names = config.read_names();
            let mut kept: Vec<(String, String)> = Vec::new();
            let mut read: Vec<(String, String)> = Vec::new();
            // Names are compared as bytes: validating each as UTF-8 first cost more than the
            // rest of the walk (`bench/README.md`); only what is kept is converted.
            req.header_map().for_each_pair(&mut |name, value| {
                if prefixes.iter().any(|p| p.matches_bytes(name)) {
                    kept.push((String::from_utf8_lossy(name).into_owned(), String::new()));
                }
                if reads
                    && names
                        .iter()
                        .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name))
                {
                    read.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    ));
                }
            });
            if reads {
                snapshot = read.into_iter().collect();
            }
            current = Some(kept);
        }
        let state = self.request_state(snapshot);
        apply_known(
            &config.request,
            req.header_map(),
            current.as_deref(),
            &state.headers,
            Side::Request,
        );
        for &index in &state.matched_rules {
            if let Some(rule) = config.rules.get(index) {
                apply(
                    &rule.request,
                    req.header_map(),
                    &state.headers,
                    Side::Request,
                );
            }
        }
        self.request = Some(state);
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        // A response without a request phase here (an earlier filter answered locally) is
        // treated as a response to a request without headers.
        let state = match self.request.take() {
            Some(state) => state,
            None => self.request_state(HeaderSnapshot::default()),
        };
        let config = Rc::clone(&self.config);
        apply(
            &config.response,
            resp.header_map(),
            &state.headers,
            Side::Response,
        );
        for &index in &state.matched_rules {
            if let Some(rule) = config.rules.get(index) {
                apply(
                    &rule.response,
                    resp.header_map(),
                    &state.headers,
                    Side::Response,
                );
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(HeadersFilter);

#[cfg(test)]
mod tests;
