//! Bench guest: a filter that does nothing, written with the SDK. Measured against
//! [`noop-raw`](../noop-raw), the same filter on the raw `proxy-wasm` crate (`bench/README.md`).

use std::rc::Rc;

use tollgate_sdk::HttpFilter;
use tollgate_sdk::config::NoConfig;

/// The filter for one HTTP stream: every callback keeps the SDK's default (continue).
pub struct Noop;

impl HttpFilter for Noop {
    const NAME: &'static str = "noop-sdk";
    type Config = NoConfig;

    fn new(_config: Rc<NoConfig>) -> Self {
        Noop
    }
}

tollgate_sdk::export_filter!(Noop);
