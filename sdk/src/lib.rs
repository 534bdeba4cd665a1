//! # Tollgate SDK
//!
//! A small, typed layer over the proxy-wasm ABI 0.2.1 for writing Envoy/Istio HTTP filters in
//! Rust (its own dispatch of the ABI callbacks and its own host calls: no `proxy-wasm` crate):
//!
//! - a filter is a type implementing [`HttpFilter`], built once per HTTP stream from a shared,
//!   typed configuration ([`FilterConfig`]);
//! - the configuration is JSON parsed with `serde`; a bad one is refused in `on_configure` with a
//!   log line naming the field (`headers: bad configuration at request.set[0]: missing field
//!   `name``), so the proxy rejects it instead of running half-configured;
//! - callbacks get views ([`Request`], [`Response`], [`Body`]) over a [`HeaderMap`], so the same
//!   code runs in the proxy and, natively, in unit tests over a [`HeaderList`];
//! - [`export_filter!`] generates the module entry point, bridges `log` to the host log and
//!   reports panics (message and location) through the host before the module traps;
//! - [`metrics`]: counters, gauges and histograms with tags that become Prometheus labels;
//! - [`routes`]: one configuration with per-route rules (route name, host, path prefix);
//! - [`random`]: randomness from the host (WASI `random_get`), a seeded generator in tests;
//! - [`body`]: request bodies buffered up to a limit (413 past it, or the first bytes handed
//!   over), or transformed chunk by chunk.
//!
//! ```
//! use std::rc::Rc;
//! use serde::Deserialize;
//! use tollgate_sdk::{Action, FilterConfig, HeaderList, HttpFilter, Response};
//!
//! /// Adds one response header.
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct StampConfig {
//!     value: String,
//! }
//! impl FilterConfig for StampConfig {}
//!
//! struct Stamp(Rc<StampConfig>);
//!
//! impl HttpFilter for Stamp {
//!     const NAME: &'static str = "stamp";
//!     type Config = StampConfig;
//!     fn new(config: Rc<StampConfig>) -> Self {
//!         Stamp(config)
//!     }
//!     fn on_response_headers(&mut self, resp: &mut Response<'_>, _eos: bool) -> Action {
//!         resp.set_header("x-stamp", &self.0.value);
//!         Action::Continue
//!     }
//! }
//!
//! tollgate_sdk::export_filter!(Stamp);
//!
//! // Native test of the same logic:
//! let config = tollgate_sdk::config::parse::<StampConfig>(br#"{"value": "v1"}"#).unwrap();
//! let mut headers = HeaderList::from([(":status", "200")]);
//! Stamp::new(Rc::new(config)).on_response_headers(&mut Response::new(&mut headers), true);
//! assert_eq!(headers.get_all("x-stamp"), vec!["v1"]);
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abi;
pub mod alloc;
pub mod body;
pub mod callout;
pub mod config;
pub mod consumers;
pub mod env;
pub mod filter;
pub mod grpc;
pub mod headers;
mod host;
pub mod http;
pub mod logger;
pub mod metrics;
pub mod peer;
pub mod random;
pub mod routes;
#[cfg(feature = "schema")]
pub mod schema;
pub mod shared;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, FilterConfig};
pub use filter::{Action, HttpFilter};
pub use headers::{HeaderList, HeaderMap, HeaderName, HeaderSnapshot};
pub use http::{Body, BodyBuffer, LocalReply, Request, Response};

/// Items the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::allocate;
    pub use crate::host::{ContextTable, Dispatcher, start};
}

/// Makes this crate's wasm module run `$filter` (a type implementing [`HttpFilter`]).
///
/// Put it once in the filter crate (built as a `cdylib` for `wasm32-wasip1`). It generates the
/// module's proxy-wasm ABI 0.2.1 exports: `_initialize` (installs the host logger and panic
/// hook), `proxy_on_memory_allocate`, and the `proxy_on_*` callbacks, each forwarded to one
/// VM-wide dispatcher that keeps the root contexts (parsing `$filter::Config` in
/// `on_configure`) and one `$filter` per HTTP stream. Callbacks the SDK has no use for
/// (`proxy_on_log`, `proxy_on_done`, trailers, ticks, queues, TCP streams) are not exported, so
/// the host does not call them: each guest call costs about a microsecond of Envoy's CPU
/// (`harness/docs/bench.md`, "Session 7"). [`HttpFilter::on_done`] runs in `proxy_on_delete`.
/// The stream callbacks exported are `proxy_on_request_headers` and, unless a second argument
/// lists fewer, `request_body`, `response_headers` and `response_body`, for a filter that does not
/// use the others (no callback of its own there, no body limit there; `tests/tests/it/architecture.rs`
/// checks the project's filters):
///
/// | form | request headers | request body | response headers | response body |
/// |---|---|---|---|---|
/// | `export_filter!(Type)` | yes | yes | yes | yes |
/// | `export_filter!(Type, [response_headers])` (or `headers_only`) | yes | | yes | |
/// | `export_filter!(Type, [request_body])` | yes | yes | | |
/// | `export_filter!(Type, [])` | yes | | | |
///
/// For a callback left out the host goes on by itself (proxy-wasm-cpp-host answers Continue
/// without calling the guest). Such a filter may still pause its headers (callouts, replies):
/// Envoy turns a paused headers callback into StopAllIteration, so no body chunk reaches the filter
/// before it continues, and the chunks held meanwhile go on with it. It also installs the SDK's
/// size-class allocator ([`alloc`]) as the global
/// allocator. It expands to nothing on other targets, so the crate still builds natively for
/// tests.
///
/// ```
/// # use std::rc::Rc;
/// # #[derive(serde::Deserialize, Default)]
/// # #[serde(default)]
/// # struct Nothing {}
/// # impl tollgate_sdk::FilterConfig for Nothing {}
/// struct Passthrough;
/// impl tollgate_sdk::HttpFilter for Passthrough {
///     const NAME: &'static str = "passthrough";
///     type Config = Nothing;
///     fn new(_config: Rc<Nothing>) -> Self {
///         Passthrough
///     }
/// }
/// tollgate_sdk::export_filter!(Passthrough);
/// ```
#[macro_export]
macro_rules! export_filter {
    (@request_body) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn proxy_on_request_body(id: u32, size: usize, eos: u32) -> u32 {
            DISPATCH.with(|d| d.on_request_body(id, size, eos != 0))
        }
    };
    (@response_headers) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn proxy_on_response_headers(id: u32, headers: usize, eos: u32) -> u32 {
            DISPATCH.with(|d| d.on_response_headers(id, headers, eos != 0))
        }
    };
    (@response_body) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn proxy_on_response_body(id: u32, size: usize, eos: u32) -> u32 {
            DISPATCH.with(|d| d.on_response_body(id, size, eos != 0))
        }
    };
    (@module $filter:ty, [$($callback:ident),*]) => {
        // A private module keeps the generated exports out of the crate's API.
        #[cfg(target_family = "wasm")]
        #[doc(hidden)]
        mod __tollgate_filter_entry {
            #[allow(unused_imports)]
            use super::*;
            use $crate::__private::Dispatcher;

            thread_local! {
                // One per VM: a proxy-wasm VM runs one thread.
                static DISPATCH: Dispatcher<$filter> = const { Dispatcher::new() };
            }

            #[cfg(target_os = "wasi")]
            unsafe extern "C" {
                fn __wasm_call_ctors();
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn _initialize() {
                #[cfg(target_os = "wasi")]
                // SAFETY: the reactor's constructors, run once, before anything else (the
                // host calls `_initialize` first).
                unsafe {
                    __wasm_call_ctors();
                }
                $crate::__private::start::<$filter>();
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_abi_version_0_2_1() {}

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                $crate::__private::allocate(size)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_context_create(context_id: u32, parent: u32) {
                DISPATCH.with(|d| d.on_context_create(context_id, parent))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_vm_start(context_id: u32, size: usize) -> u32 {
                DISPATCH.with(|d| d.on_vm_start(context_id, size)) as u32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> u32 {
                DISPATCH.with(|d| d.on_configure(context_id, size)) as u32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_request_headers(id: u32, headers: usize, eos: u32) -> u32 {
                DISPATCH.with(|d| d.on_request_headers(id, headers, eos != 0))
            }

            $($crate::export_filter!(@$callback);)*

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_delete(context_id: u32) {
                DISPATCH.with(|d| d.on_delete(context_id))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_http_call_response(
                context_id: u32,
                token: u32,
                headers: usize,
                body_size: usize,
                trailers: usize,
            ) {
                DISPATCH.with(|d| {
                    d.on_http_call_response(context_id, token, headers, body_size, trailers)
                })
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_grpc_receive(context_id: u32, token: u32, size: usize) {
                DISPATCH.with(|d| d.on_grpc_receive(context_id, token, size))
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn proxy_on_grpc_close(context_id: u32, token: u32, status: u32) {
                DISPATCH.with(|d| d.on_grpc_close(context_id, token, status))
            }

            // The SDK's size-class allocator (`tollgate_sdk::alloc`): a VM is one thread.
            #[cfg(not(target_feature = "atomics"))]
            #[global_allocator]
            static ALLOCATOR: $crate::alloc::FilterAllocator =
                $crate::alloc::FilterAllocator::new();
        }
    };
    // A list names the stream callbacks exported besides `proxy_on_request_headers`; the host
    // does not call a callback the module does not export (one guest call fewer per request, or
    // per body chunk, for each one left out).
    ($filter:ty, [$($callback:ident),* $(,)?]) => {
        $crate::export_filter!(@module $filter, [$($callback),*]);
    };
    ($filter:ty, headers_only) => {
        $crate::export_filter!(@module $filter, [response_headers]);
    };
    ($filter:ty) => {
        $crate::export_filter!(@module $filter, [request_body, response_headers, response_body]);
    };
}

/// The Rust examples of the project's README, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
