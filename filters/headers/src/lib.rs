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
pub mod bytes;
pub mod config;
pub mod template;

use std::rc::Rc;

use tollgate_sdk::headers::WirePairs;
use tollgate_sdk::{Action, HttpFilter, Request, Response};

use crate::apply::{Side, apply, apply_known};
pub use crate::config::HeadersConfig;
use crate::config::length_bit;
use crate::template::{Captured, Span};

/// The filter for one HTTP stream.
pub struct HeadersFilter {
    config: Rc<HeadersConfig>,
    /// The request headers as the host serialised them, kept when the configuration reads
    /// some of them (`spans`).
    wire: WirePairs,
    /// The request headers the configuration reads, as they reached this filter: spans of
    /// `wire`, each with the index of its name in [`HeadersConfig::read_names`]. The response
    /// phase renders from them and matches the rules again (the same values give the same
    /// matches). Empty until the request headers have been seen (an earlier filter answered
    /// locally: a response to a request without headers).
    spans: Vec<Span>,
}

/// `name` (as the host holds it) is `lower` (a lowercase configured name), compared a word
/// at a time ([`bytes::eq_lowercase`]).
#[inline]
fn is_name(lower: &str, name: &[u8]) -> bool {
    bytes::eq_lowercase(name, lower.as_bytes())
}

/// Bytes from the host as text: the check's fast path when they are UTF-8, a lossy copy
/// otherwise (a non-UTF-8 name is not HTTP, but must not panic).
#[inline]
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

impl HttpFilter for HeadersFilter {
    const NAME: &'static str = "headers";
    type Config = HeadersConfig;

    fn new(config: Rc<HeadersConfig>) -> Self {
        Self {
            config,
            wire: WirePairs::default(),
            spans: Vec::new(),
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        // The fields borrowed apart: the configuration is read while the captures are stored.
        let Self {
            config,
            wire: kept_wire,
            spans: kept_spans,
        } = self;
        // Conditions and %REQ(...)% see the request as it reached this filter. The headers
        // are read once, in place: for the values the configuration reads and for the
        // top-level `remove_prefix`.
        let reads = config.reads_request();
        let prefixes = &config.request.remove_prefix;
        let names = config.read_names();
        let mut current: Option<Vec<String>> = None;
        let mut spans: Vec<Span> = Vec::new();
        let mut wire = WirePairs::default();
        if reads || !prefixes.is_empty() {
            // One walk over the headers as the host holds them, copying only what is kept: the
            // values the configuration reads and the names a top-level `remove_prefix` matches
            // (all `apply_known` needs of the current headers). Names are compared as bytes:
            // validating each as UTF-8 first cost more than the rest of the walk
            // (`bench/README.md`); only what is kept is converted.
            let mut kept: Vec<String> = Vec::new();
            // Which name lengths the configuration reads: most headers are ruled out by one
            // test instead of a compare per read name.
            let lengths = config.read_lengths();
            // The first bytes the prefixes start with: one test rules out most names.
            let starts = config.prefix_starts();
            // The host's buffer walked by plain inlined code, no call per header; the values
            // read are kept as spans of it, not copied.
            wire = req.header_map().wire_pairs();
            let bytes = wire.as_bytes();
            for (name, value) in wire.iter() {
                if starts.may_match(name) && prefixes.iter().any(|p| p.matches_bytes(name)) {
                    kept.push(text(name));
                }
                if lengths & length_bit(name.len()) != 0
                    && let Some(index) = names.iter().position(|n| is_name(n.as_str(), name))
                {
                    spans.push(Span::of(bytes, index, value));
                }
            }
            current = Some(kept);
        }
        let request = Captured::new(names, wire.as_bytes(), &spans);
        apply_known(
            &config.request,
            req.header_map(),
            current.as_deref(),
            &request,
            Side::Request,
        );
        for rule in &config.rules {
            if rule.matches(&request) {
                apply(&rule.request, req.header_map(), &request, Side::Request);
            }
        }
        if !spans.is_empty() {
            *kept_wire = wire;
            *kept_spans = spans;
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        let config = &self.config;
        let wire = std::mem::take(&mut self.wire);
        let spans = std::mem::take(&mut self.spans);
        let request = Captured::new(config.read_names(), wire.as_bytes(), &spans);
        apply(
            &config.response,
            resp.header_map(),
            &request,
            Side::Response,
        );
        for rule in &config.rules {
            if rule.matches(&request) {
                apply(&rule.response, resp.header_map(), &request, Side::Response);
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(HeadersFilter, headers_only);

#[cfg(test)]
mod tests;
