//! Bench guest: a filter that does nothing, written against the raw `proxy-wasm` crate. The
//! floor the SDK's [`noop-sdk`](../noop-sdk) is measured against (`bench/README.md`).
#![cfg_attr(not(target_family = "wasm"), allow(dead_code))]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

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

impl HttpContext for Stream {}

/// The module's entry point (a private module keeps `_initialize` out of the crate's API).
#[cfg(target_family = "wasm")]
mod entry {
    use super::*;
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}
}
