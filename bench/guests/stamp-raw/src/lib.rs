//! Bench guest: a header filter written against the raw `proxy-wasm` crate: sets one request
//! header and one response header and removes one response header. Its twin written with the
//! SDK is [`stamp-sdk`](../stamp-sdk) (`bench/README.md`).
#![cfg_attr(not(target_family = "wasm"), allow(dead_code))]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream;

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_request_header("x-tollgate", Some("bench"));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("server", None);
        self.set_http_response_header("x-content-type-options", Some("nosniff"));
        Action::Continue
    }
}

/// The module's entry point (a private module keeps `_initialize` out of the crate's API).
#[cfg(target_family = "wasm")]
mod entry {
    use super::*;
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}
}
