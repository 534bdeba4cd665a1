//! Bench guest: a header filter written with the SDK: sets one request header and one response
//! header and removes one response header. Measured against [`stamp-raw`](../stamp-raw), the
//! same filter on the raw `proxy-wasm` crate (`bench/README.md`).

use std::rc::Rc;

use tollgate_sdk::config::NoConfig;
use tollgate_sdk::{Action, HttpFilter, Request, Response};

/// The filter for one HTTP stream.
pub struct Stamp;

impl HttpFilter for Stamp {
    const NAME: &'static str = "stamp-sdk";
    type Config = NoConfig;

    fn new(_config: Rc<NoConfig>) -> Self {
        Stamp
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        req.set_header("x-tollgate", "bench");
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        resp.remove_header("server");
        resp.set_header("x-content-type-options", "nosniff");
        Action::Continue
    }
}

tollgate_sdk::export_filter!(Stamp);
