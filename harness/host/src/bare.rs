//! A bare stream lifecycle: one request through one VM with nothing but the
//! proxy-wasm callbacks (context create, request headers, response headers,
//! log, done, delete), without the replay driver's bookkeeping (no change
//! lists, no step log, no body or trailer phases). It measures what the host
//! itself costs per request; `tollgate bench` and the overhead benchmarks
//! use it, with the bundled no-op module ([`NOOP_WAT`]) as the floor.

use crate::state::{HeaderMap, Phase, StreamState};
use crate::vm::{CallError, Vm};
use tollgate_abi::Direction;

pub use tollgate_abi::guests::{
    BundledModuleError, HEADERS_WAT, NOOP_WAT, headers_module, noop_module,
};

/// What a bare lifecycle left behind.
#[derive(Debug, Clone)]
pub struct BareOutcome {
    /// `proxy_on_request_headers`'s action (0 continue, 1 pause).
    pub request_action: u32,
    /// `proxy_on_response_headers`'s action.
    pub response_action: u32,
    /// The request headers after the filter.
    pub request_headers: HeaderMap,
    /// The response headers after the filter.
    pub response_headers: HeaderMap,
}

impl Vm {
    /// Runs one stream through the VM with the bare callback sequence:
    /// `proxy_on_context_create`, `proxy_on_request_headers` (end of stream),
    /// `proxy_on_response_headers` (end of stream), `proxy_on_log`,
    /// `proxy_on_done`, `proxy_on_delete`, through the same call path as the
    /// stream driver (call timeout, fuel when metered, traps with their
    /// backtrace, the call trace when on). Local replies and pauses are not
    /// acted upon (the actions are returned); a trap ends the stream with
    /// its error after the context is deleted. Like the verdict-only stream
    /// driver, it adds nothing to the guest cost ([`Vm::take_cost`]): whoever
    /// wants its time measures the call (per-call records,
    /// [`Vm::record_calls`], are still taken).
    pub fn run_bare(
        &mut self,
        request_headers: HeaderMap,
        response_headers: HeaderMap,
    ) -> Result<BareOutcome, CallError> {
        let ctx = self.new_context_id();
        let n_req = request_headers.len() as u32;
        let n_resp = response_headers.len() as u32;
        let state = self.state_mut();
        let start = state.clock().realtime;
        state.stream = Some(StreamState::at_request_headers(
            ctx,
            request_headers,
            start,
            0,
        ));
        let timing = self.set_call_timing(false);
        let result = self.bare_callbacks(ctx, n_req, n_resp, response_headers);
        let deleted = self.call_done_delete(ctx);
        self.set_call_timing(timing);
        // Take the two maps out and drop the rest of the stream in place.
        let state = self.state_mut();
        let (request_headers, response_headers) = match state.stream.as_mut() {
            Some(s) => (
                std::mem::take(&mut s.request_headers),
                s.response_headers.take().unwrap_or_default(),
            ),
            None => (HeaderMap::default(), HeaderMap::default()),
        };
        state.stream = None;
        let (request_action, response_action) = result?;
        deleted?;
        Ok(BareOutcome {
            request_action,
            response_action,
            request_headers,
            response_headers,
        })
    }

    fn bare_callbacks(
        &mut self,
        ctx: u32,
        n_req: u32,
        n_resp: u32,
        response_headers: HeaderMap,
    ) -> Result<(u32, u32), CallError> {
        self.call_context_create(ctx)?;
        let request_action = self.call_headers(Direction::Request, ctx, n_req, true)?;
        if let Some(s) = self.state_mut().stream.as_mut() {
            s.phase = Phase::ResponseHeaders;
            s.response_headers = Some(response_headers);
        }
        let response_action = self.call_headers(Direction::Response, ctx, n_resp, true)?;
        if let Some(s) = self.state_mut().stream.as_mut() {
            s.phase = Phase::Finished;
        }
        self.call_log(ctx)?;
        Ok((request_action, response_action))
    }
}
