//! Driving one HTTP exchange through a chain of filters (one VM each), as
//! Envoy's HTTP filter manager does.
//!
//! The request travels through the filters in order, the response in
//! reverse order. Each callback's return value is converted as
//! proxy-wasm-cpp-host converts it: for headers `0` Continue, `2`
//! ContinueAndEndStream, anything else stops *all* iteration (`1`
//! StopIteration is turned into StopAllIterationAndWatermark, so the body is
//! not delivered to a filter whose headers callback paused until it calls
//! `proxy_continue_stream`); for bodies `0` Continue, `1`
//! StopIterationAndBuffer, `2` StopIterationAndWatermark (both buffer),
//! `3` and above StopIterationNoBuffer (the chunk is dropped); for trailers
//! `0` Continue, anything else StopIteration.
//!
//! Bodies arrive in chunks ([`ChunkPlan`]). While a filter buffers, the next
//! chunk is appended to what it buffered *before* its callback runs (Envoy
//! ≥ 1.32), so `body_size` is the total buffered so far. When it continues,
//! the buffered data goes to the next filter as one chunk. Data that reached
//! a filter stopped with StopAllIteration is held and delivered to that same
//! filter, merged, once it continues.
//!
//! A local reply sent while the request is processed ends the request path
//! (later filters never see it) and travels back through the response
//! callbacks of the filters that saw the request, starting with the one that
//! sent it. A local reply sent while the response is processed replaces the
//! response directly (no filter sees it) unless the response headers already
//! reached the client, in which case the stream is reset.
//!
//! A trap is handled by the filter's [`FailurePolicy`]: `FailClosed` and
//! `FailReload` answer 503 with details `wasm_fail_stream` (or reset the
//! stream when the response already started), `FailOpen` carries on as if
//! the callback returned Continue and skips the filter from then on.

use crate::host::{ExchangeCallouts, HeaderMap, LocalResponse, Phase, StreamState};
use crate::traffic::{Callout, Exchange, HttpRequest, HttpResponse};
use crate::vm::{CallError, Vm};

/// The status of a stalled or reset exchange's client response: none was sent.
pub const NO_RESPONSE: u16 = 0;

/// Response code details Envoy gives the 503 of a failed filter.
pub const FAIL_STREAM_DETAILS: &str = "wasm_fail_stream";

/// gRPC status `UNAVAILABLE`, which Envoy gives the local reply of a failed filter.
const GRPC_UNAVAILABLE: i32 = 14;

/// What happens when a filter's VM fails (traps, runs too long), as Envoy's
/// `failure_policy` (`envoy.extensions.wasm.v3.PluginConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Envoy's default (`UNSPECIFIED` and `FAIL_CLOSED`): the failing stream
    /// and every later one answer 503 `wasm_fail_stream`.
    #[default]
    FailClosed,
    /// `FAIL_OPEN` (or the deprecated `fail_open: true`): the failed filter
    /// is skipped, the chain continues without it.
    FailOpen,
    /// `FAIL_RELOAD`: like `FailClosed` for the failing stream, then a fresh
    /// VM for requests that arrive after the reload backoff (Envoy's default
    /// base interval 1 s); during the backoff requests answer 503.
    FailReload,
}

impl FailurePolicy {
    /// The name Envoy's configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "FAIL_CLOSED",
            Self::FailOpen => "FAIL_OPEN",
            Self::FailReload => "FAIL_RELOAD",
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "FAIL_CLOSED" | "CLOSED" | "UNSPECIFIED" => Self::FailClosed,
            "FAIL_OPEN" | "OPEN" => Self::FailOpen,
            "FAIL_RELOAD" | "RELOAD" => Self::FailReload,
            other => {
                return Err(format!(
                    "unknown failure policy `{other}` (FAIL_CLOSED, FAIL_OPEN, FAIL_RELOAD)"
                ));
            }
        })
    }
}

/// How a body is cut into the chunks the filters receive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ChunkPlan {
    /// One chunk (the default).
    #[default]
    Whole,
    /// This many chunks of (nearly) equal size.
    Chunks(usize),
    /// Chunks of this many bytes (the last may be shorter).
    ChunkSize(usize),
    /// Chunks of exactly these sizes, in order (recorded boundaries). Zero
    /// sizes are skipped; bytes beyond the sizes' sum form one last chunk,
    /// sizes beyond the body's end are cut short.
    Sizes(Vec<usize>),
}

impl ChunkPlan {
    /// The plan for recorded chunk sizes: [`ChunkPlan::Whole`] for none or
    /// one, else [`ChunkPlan::Sizes`].
    pub fn recorded(sizes: &[usize]) -> Self {
        if sizes.iter().filter(|&&n| n > 0).count() <= 1 {
            Self::Whole
        } else {
            Self::Sizes(sizes.to_vec())
        }
    }

    /// Cuts `body` into chunks; an empty body has none.
    pub fn split(&self, body: &[u8]) -> Vec<Vec<u8>> {
        if body.is_empty() {
            return Vec::new();
        }
        let size = match self {
            Self::Whole => body.len(),
            Self::Chunks(n) => body.len().div_ceil((*n).max(1)),
            Self::ChunkSize(n) => (*n).max(1),
            Self::Sizes(sizes) => {
                let mut out = Vec::with_capacity(sizes.len() + 1);
                let mut rest = body;
                for &n in sizes {
                    if rest.is_empty() {
                        break;
                    }
                    if n == 0 {
                        continue;
                    }
                    let (chunk, tail) = rest.split_at(n.min(rest.len()));
                    out.push(chunk.to_vec());
                    rest = tail;
                }
                if !rest.is_empty() {
                    out.push(rest.to_vec());
                }
                return out;
            }
        };
        body.chunks(size.max(1)).map(<[u8]>::to_vec).collect()
    }
}

/// Everything about one exchange the driver needs.
#[derive(Debug, Clone)]
pub struct StreamInput {
    /// The request as the client sends it.
    pub request: HttpRequest,
    /// Request trailers (none: the request ends with its body or headers).
    pub request_trailers: Vec<(String, String)>,
    /// What the upstream answers when the request reaches it.
    pub response: HttpResponse,
    /// Response trailers.
    pub response_trailers: Vec<(String, String)>,
    /// How the request body is chunked.
    pub request_chunks: ChunkPlan,
    /// How the response body is chunked.
    pub response_chunks: ChunkPlan,
    /// Answers for the `proxy_http_call`s made while handling this exchange,
    /// taken in order by the first call whose cluster matches (empty cluster:
    /// any); they take precedence over the VM's `http_call_stub`.
    pub callouts: Vec<Callout>,
}

impl StreamInput {
    /// The input for a recorded exchange (no recorded response: a 200 with
    /// no body), bodies in one chunk, no trailers.
    pub fn from_exchange(exchange: &Exchange) -> Self {
        Self {
            request: exchange.request.clone(),
            request_trailers: Vec::new(),
            response: exchange.response.clone().unwrap_or(HttpResponse {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
            }),
            response_trailers: Vec::new(),
            request_chunks: ChunkPlan::Whole,
            response_chunks: ChunkPlan::Whole,
            callouts: Vec::new(),
        }
    }

    /// The input for a recorded exchange with everything its
    /// [`details`](Exchange::details) say: the recorded body chunk sizes
    /// ([`ChunkPlan::Sizes`]), trailers, and callout answers.
    pub fn from_recording(exchange: &Exchange) -> Self {
        let d = &exchange.details;
        Self {
            request_trailers: d.request_trailers.clone(),
            response_trailers: d.response_trailers.clone(),
            request_chunks: ChunkPlan::recorded(&d.request_chunks),
            response_chunks: ChunkPlan::recorded(&d.response_chunks),
            callouts: d.callouts.clone(),
            ..Self::from_exchange(exchange)
        }
    }
}

/// One filter of a chain, as the driver sees it.
pub struct Lane<'a> {
    /// Its running VM; `None` when the VM failed earlier (the policy decides).
    pub vm: Option<&'a mut Vm>,
    /// Its name in reports.
    pub name: String,
    /// Its failure policy.
    pub policy: FailurePolicy,
}

/// A trap in one filter of the chain.
#[derive(Debug, Clone)]
pub struct FilterFailure {
    /// Position of the filter in the chain.
    pub index: usize,
    /// The filter's name.
    pub filter: String,
    /// The failed call.
    pub error: CallError,
}

/// What one filter did during an exchange, readable, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSteps {
    /// The filter's name.
    pub filter: String,
    /// Callbacks with their results, changes, local replies, failures.
    pub steps: Vec<String>,
}

/// What happened to one exchange.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The request as it reached the upstream, `None` if it never did.
    pub upstream_request: Option<HttpRequest>,
    /// The response the client received.
    pub client_response: HttpResponse,
    /// The local response a filter sent (or the 503 of a failed filter).
    pub local_response: Option<LocalResponse>,
    /// The local response was sent while processing the response.
    pub local_in_response: bool,
    /// The filter reset the stream (`proxy_close_stream`) in this callback.
    pub reset_in: Option<&'static str>,
    /// The filter paused in this callback and never resumed.
    pub stalled_in: Option<&'static str>,
    /// The first guest call that failed (trap, timeout).
    pub failure: Option<CallError>,
    /// Every failed guest call, with the filter it happened in.
    pub failures: Vec<FilterFailure>,
    /// Request trailers as they reached the upstream.
    pub upstream_trailers: Vec<(String, String)>,
    /// Response trailers as the client received them.
    pub client_trailers: Vec<(String, String)>,
    /// Per filter, in chain order: what it did.
    pub steps: Vec<FilterSteps>,
    /// Callouts the filters made, as `<filter>: http <cluster> <method> <path>`
    /// or `<filter>: grpc <cluster> <service>/<method>`.
    pub callouts: Vec<String>,
}

fn request_map(req: &HttpRequest) -> HeaderMap {
    let mut pairs: Vec<(String, String)> = vec![
        (":authority".into(), req.authority.clone()),
        (":path".into(), req.path.clone()),
        (":method".into(), req.method.clone()),
        (":scheme".into(), req.scheme.clone()),
    ];
    pairs.extend(req.headers.iter().cloned());
    HeaderMap::from_pairs(pairs)
}

fn response_map(status: u16, headers: &[(String, String)]) -> HeaderMap {
    let mut pairs = vec![(":status".to_string(), status.to_string())];
    pairs.extend(headers.iter().cloned());
    HeaderMap::from_pairs(pairs)
}

/// The map's entries without the pseudo-headers (`:method`, `:status`, ...).
fn regular_headers(map: &HeaderMap) -> Vec<(String, String)> {
    map.entries()
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .cloned()
        .collect()
}

fn to_request(map: &HeaderMap, body: Vec<u8>) -> HttpRequest {
    let get = |k: &str| map.get(k).unwrap_or_default().to_string();
    HttpRequest {
        method: get(":method"),
        scheme: get(":scheme"),
        authority: get(":authority"),
        path: get(":path"),
        headers: regular_headers(map),
        body,
    }
}

fn to_response(map: &HeaderMap, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status: map
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(NO_RESPONSE),
        headers: regular_headers(map),
        body,
    }
}

/// The response Envoy builds for a local reply.
fn local_reply(l: &LocalResponse) -> HttpResponse {
    let mut headers = Vec::new();
    if !l.body.is_empty() {
        headers.push(("content-length".to_string(), l.body.len().to_string()));
        headers.push(("content-type".to_string(), "text/plain".to_string()));
    }
    headers.extend(l.headers.iter().cloned());
    HttpResponse {
        status: u16::try_from(l.status).unwrap_or(NO_RESPONSE),
        headers,
        body: l.body.clone(),
    }
}

fn fail_stream_reply() -> LocalResponse {
    LocalResponse {
        status: 503,
        details: FAIL_STREAM_DETAILS.into(),
        body: Vec::new(),
        headers: Vec::new(),
        grpc_status: GRPC_UNAVAILABLE,
    }
}

fn headers_action(a: u32) -> (&'static str, HeadersResult) {
    match a {
        0 => ("Continue", HeadersResult::Continue),
        2 => ("ContinueAndEndStream", HeadersResult::ContinueAndEnd),
        1 => (
            "StopIteration (as StopAllIterationAndWatermark)",
            HeadersResult::StopAll,
        ),
        3 => ("StopAllIterationAndBuffer", HeadersResult::StopAll),
        4 => ("StopAllIterationAndWatermark", HeadersResult::StopAll),
        _ => (
            "out of range (as StopAllIterationAndWatermark)",
            HeadersResult::StopAll,
        ),
    }
}

fn data_action(a: u32) -> (&'static str, DataResult) {
    match a {
        0 => ("Continue", DataResult::Continue),
        1 => ("StopIterationAndBuffer", DataResult::Buffer),
        2 => ("StopIterationAndWatermark", DataResult::Buffer),
        3 => ("StopIterationNoBuffer", DataResult::NoBuffer),
        _ => (
            "out of range (as StopIterationNoBuffer)",
            DataResult::NoBuffer,
        ),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HeadersResult {
    Continue,
    ContinueAndEnd,
    StopAll,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DataResult {
    Continue,
    Buffer,
    NoBuffer,
}

#[derive(Debug, Clone)]
enum Event {
    Headers,
    Data(Vec<u8>, bool),
    Trailers,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Headers stopped all iteration: later events wait, undelivered.
    All,
    /// A body callback stopped: later data and trailers still reach it.
    Data,
    /// Trailers stopped.
    Trailers,
}

/// One direction of one filter.
#[derive(Default)]
struct Port {
    stop: Option<(Stop, &'static str)>,
    held: Vec<Event>,
    buffered: Vec<u8>,
    buffering: bool,
    eos: bool,
    ended: bool,
}

struct LaneState {
    ctx: u32,
    created: bool,
    dead: bool,
    closed: bool,
    req: Port,
    resp: Port,
}

/// Why a direction stopped for good.
enum Halt {
    Local(LocalResponse),
    Reset(&'static str),
}

/// One direction's data as it flows.
#[derive(Default)]
struct Flow {
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    out_headers: Option<HeaderMap>,
    out_body: Vec<u8>,
    out_trailers: Option<HeaderMap>,
    out_eos: bool,
    started: bool,
}

struct Driver<'l, 'a> {
    lanes: &'l mut [Lane<'a>],
    st: Vec<LaneState>,
    req: Flow,
    resp: Flow,
    out: StreamOutcome,
    /// A local reply is being encoded: further local replies are ignored.
    in_local: bool,
    req_body_len: usize,
    resp_body_len: usize,
    /// Set while ContinueAndEndStream forwards headers as the last frame.
    more_after_headers_override: Option<bool>,
}

fn vm_stream(vm: &mut Vm) -> Option<&mut StreamState> {
    vm.state_mut().stream.as_mut()
}

impl<'a> Driver<'_, 'a> {
    fn step(&mut self, i: usize, text: String) {
        self.out.steps[i].steps.push(text);
    }

    fn order(&self, response: bool) -> Vec<usize> {
        let n = self.lanes.len();
        if response {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        }
    }

    /// Copies the flowing maps into lane `i`'s stream state.
    fn load(&mut self, i: usize, phase: Phase, body: Option<(bool, Vec<u8>)>) {
        let req_h = self.req.headers.clone();
        let req_t = self.req.trailers.clone().unwrap_or_default();
        let resp_h = self.resp.started.then(|| self.resp.headers.clone());
        let resp_t = self.resp.trailers.clone().unwrap_or_default();
        if let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) {
            s.phase = phase;
            s.request_headers = req_h;
            s.request_trailers = req_t;
            s.response_headers = resp_h;
            s.response_trailers = resp_t;
            s.continued_request = false;
            s.continued_response = false;
            match body {
                Some((false, b)) => s.request_body = Some(b),
                Some((true, b)) => s.response_body = Some(b),
                None => {}
            }
        }
    }

    /// Copies lane `i`'s maps back; returns the body it holds for `response`.
    fn store(&mut self, i: usize, response: bool) -> Vec<u8> {
        let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) else {
            return Vec::new();
        };
        self.req.headers = s.request_headers.clone();
        if self.req.trailers.is_some() {
            self.req.trailers = Some(s.request_trailers.clone());
        }
        if self.resp.started {
            if let Some(h) = &s.response_headers {
                self.resp.headers = h.clone();
            }
            if self.resp.trailers.is_some() {
                self.resp.trailers = Some(s.response_trailers.clone());
            }
        }
        if response {
            s.response_body.clone().unwrap_or_default()
        } else {
            s.request_body.clone().unwrap_or_default()
        }
    }

    fn port(&mut self, i: usize, response: bool) -> &mut Port {
        if response {
            &mut self.st[i].resp
        } else {
            &mut self.st[i].req
        }
    }

    fn flow(&mut self, response: bool) -> &mut Flow {
        if response {
            &mut self.resp
        } else {
            &mut self.req
        }
    }

    /// Handles a failed call of lane `i`. `Ok` when the policy lets the
    /// stream go on (FAIL_OPEN), else the halt.
    fn failed(&mut self, i: usize, error: CallError) -> Result<(), Halt> {
        self.st[i].dead = true;
        let policy = self.lanes[i].policy;
        self.step(
            i,
            format!(
                "{} trapped ({}): {}",
                error.callback,
                policy.as_str(),
                error.message.lines().next().unwrap_or_default()
            ),
        );
        if self.out.failure.is_none() {
            self.out.failure = Some(error.clone());
        }
        self.out.failures.push(FilterFailure {
            index: i,
            filter: self.lanes[i].name.clone(),
            error,
        });
        if let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) {
            // The host drops whatever the failed call asked for.
            s.local_response = None;
        }
        match policy {
            FailurePolicy::FailOpen => Ok(()),
            _ => Err(Halt::Local(fail_stream_reply())),
        }
    }

    /// After a callback of lane `i`: local reply, reset, continue.
    /// Returns whether the filter asked to continue (`proxy_continue_stream`).
    fn after(&mut self, i: usize, response: bool, cb: &'static str) -> Result<bool, Halt> {
        let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) else {
            return Ok(false);
        };
        let local = s.local_response.clone();
        let closed = s.closed;
        let continued = if response {
            s.continued_response
        } else {
            s.continued_request
        };
        if let Some(l) = local
            && !self.in_local
        {
            let details = if l.details.is_empty() {
                String::new()
            } else {
                format!(" ({})", l.details)
            };
            self.step(
                i,
                format!("sent a local reply {}{details} in {cb}", l.status),
            );
            return Err(Halt::Local(l));
        }
        if closed && !self.st[i].closed {
            self.st[i].closed = true;
            self.step(i, format!("reset the stream (proxy_close_stream) in {cb}"));
            return Err(Halt::Reset(cb));
        }
        Ok(continued)
    }

    /// Sends `ev` through the filters of one direction starting at
    /// position `from` of that direction's order.
    fn push(&mut self, response: bool, from: usize, ev: Event) -> Result<(), Halt> {
        let order = self.order(response);
        let mut ev = ev;
        let mut k = from;
        while k < order.len() {
            let i = order[k];
            let passive =
                self.lanes[i].vm.is_none() || self.st[i].dead || (response && !self.st[i].created);
            if passive {
                if self.lanes[i].vm.is_none()
                    && !self.st[i].dead
                    && self.lanes[i].policy != FailurePolicy::FailOpen
                    && !response
                    && matches!(ev, Event::Headers)
                {
                    self.step(
                        i,
                        format!(
                            "its VM failed earlier ({}): answered 503 {FAIL_STREAM_DETAILS}",
                            self.lanes[i].policy.as_str()
                        ),
                    );
                    return Err(Halt::Local(fail_stream_reply()));
                }
                k += 1;
                continue;
            }
            let port = self.port(i, response);
            if port.ended {
                // ContinueAndEndStream: nothing after the headers goes on.
                return Ok(());
            }
            if let Some((Stop::All, _)) = port.stop {
                port.held.push(ev);
                return Ok(());
            }
            match ev {
                Event::Headers => {
                    if !response && !self.st[i].created {
                        self.create(i)?;
                        if self.st[i].dead {
                            k += 1;
                            continue;
                        }
                    }
                    let cb = if response {
                        "proxy_on_response_headers"
                    } else {
                        "proxy_on_request_headers"
                    };
                    let eos = !self.more_after_headers(response);
                    let phase = if response {
                        Phase::ResponseHeaders
                    } else {
                        Phase::RequestHeaders
                    };
                    self.load(i, phase, None);
                    let before = self.flow(response).headers.clone();
                    let n = before.len() as u32;
                    let r = self.call_vm(i, |vm, ctx| vm.call_headers(response, ctx, n, eos));
                    self.store(i, response);
                    let action = match r {
                        Ok(a) => a,
                        Err(e) => {
                            self.failed(i, e)?;
                            k += 1;
                            continue;
                        }
                    };
                    let (name, result) = headers_action(action);
                    self.step(i, format!("{cb}(eos={eos}) -> {name}"));
                    self.changes(i, response, &before);
                    let continued = self.after(i, response, cb)?;
                    match result {
                        HeadersResult::Continue => {}
                        HeadersResult::ContinueAndEnd => {
                            self.port(i, response).ended = true;
                            self.flow(response).trailers = None;
                            self.forward_end(response, k + 1)?;
                            return Ok(());
                        }
                        HeadersResult::StopAll => {
                            self.port(i, response).stop = Some((Stop::All, cb));
                            return self.stopped(i, response, continued);
                        }
                    }
                }
                Event::Data(chunk, eos) => {
                    let cb = if response {
                        "proxy_on_response_body"
                    } else {
                        "proxy_on_request_body"
                    };
                    let port = self.port(i, response);
                    let mut visible = if port.buffering {
                        std::mem::take(&mut port.buffered)
                    } else {
                        Vec::new()
                    };
                    visible.extend_from_slice(&chunk);
                    port.eos = eos;
                    let phase = if response {
                        Phase::ResponseBody
                    } else {
                        Phase::RequestBody
                    };
                    let size = visible.len();
                    self.load(i, phase, Some((response, visible.clone())));
                    let r =
                        self.call_vm(i, |vm, ctx| vm.call_body(response, ctx, size as u32, eos));
                    let body = self.store(i, response);
                    let action = match r {
                        Ok(a) => a,
                        Err(e) => {
                            self.failed(i, e)?;
                            ev = Event::Data(visible, eos);
                            k += 1;
                            continue;
                        }
                    };
                    let (name, result) = data_action(action);
                    self.step(i, format!("{cb}({size} bytes, eos={eos}) -> {name}"));
                    if body != visible {
                        self.step(
                            i,
                            format!(
                                "{} body: changed ({} bytes -> {} bytes)",
                                if response { "response" } else { "request" },
                                visible.len(),
                                body.len()
                            ),
                        );
                    }
                    let continued = self.after(i, response, cb)?;
                    let port = self.port(i, response);
                    match result {
                        DataResult::Continue => {
                            port.buffering = false;
                            port.stop = None;
                            ev = Event::Data(body, eos);
                        }
                        DataResult::Buffer => {
                            port.buffering = true;
                            port.buffered = body;
                            port.stop = Some((Stop::Data, cb));
                            return self.stopped(i, response, continued);
                        }
                        DataResult::NoBuffer => {
                            port.buffering = false;
                            port.buffered.clear();
                            port.stop = Some((Stop::Data, cb));
                            return self.stopped(i, response, continued);
                        }
                    }
                }
                Event::Trailers => {
                    let cb = if response {
                        "proxy_on_response_trailers"
                    } else {
                        "proxy_on_request_trailers"
                    };
                    self.load(i, phase_of(response), None);
                    let before = self.flow(response).trailers.clone().unwrap_or_default();
                    let n = before.len() as u32;
                    let r = self.call_vm(i, |vm, ctx| vm.call_trailers(response, ctx, n));
                    self.store(i, response);
                    let action = match r {
                        Ok(a) => a,
                        Err(e) => {
                            self.failed(i, e)?;
                            k += 1;
                            continue;
                        }
                    };
                    let name = if action == 0 {
                        "Continue"
                    } else {
                        "StopIteration"
                    };
                    self.step(i, format!("{cb} -> {name}"));
                    let after = self.flow(response).trailers.clone().unwrap_or_default();
                    let mut diffs = Vec::new();
                    crate::replay::diff_headers(
                        if response {
                            "response trailer"
                        } else {
                            "request trailer"
                        },
                        before.entries(),
                        after.entries(),
                        &mut diffs,
                    );
                    for d in diffs {
                        self.step(i, d);
                    }
                    let continued = self.after(i, response, cb)?;
                    if action != 0 {
                        self.port(i, response).stop = Some((Stop::Trailers, cb));
                        return self.stopped(i, response, continued);
                    }
                    let port = self.port(i, response);
                    if port.stop.is_some() || port.buffering {
                        // Continue on trailers releases what the filter buffered.
                        port.stop = None;
                        port.buffering = false;
                        let data = std::mem::take(&mut port.buffered);
                        if !data.is_empty() {
                            self.push(response, k + 1, Event::Data(data, false))?;
                        }
                    }
                }
            }
            k += 1;
        }
        self.exit(response, ev);
        Ok(())
    }

    /// Ends the stream after ContinueAndEndStream at position `from - 1`.
    fn forward_end(&mut self, response: bool, from: usize) -> Result<(), Halt> {
        // The headers go on as the last frame.
        let order = self.order(response);
        let saved = self.more_after_headers_override;
        self.more_after_headers_override = Some(false);
        let r = if from < order.len() {
            self.push(response, from, Event::Headers)
        } else {
            self.exit(response, Event::Headers);
            Ok(())
        };
        self.more_after_headers_override = saved;
        let f = self.flow(response);
        f.out_eos = f.out_headers.is_some();
        r
    }

    /// Calls into filter `i`'s VM with its context id (no VM: the default answer).
    fn call_vm<R: Default>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Vm, u32) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let ctx = self.st[i].ctx;
        match self.lanes[i].vm.as_deref_mut() {
            Some(vm) => f(vm, ctx),
            None => Ok(R::default()),
        }
    }

    /// After filter `i` stopped: resumes at once when it already asked to continue.
    fn stopped(&mut self, i: usize, response: bool, continued: bool) -> Result<(), Halt> {
        if continued {
            self.resume(i, response)
        } else {
            Ok(())
        }
    }

    /// A stopped filter continues: what it held goes on.
    fn resume(&mut self, i: usize, response: bool) -> Result<(), Halt> {
        let order = self.order(response);
        let Some(k) = order.iter().position(|&x| x == i) else {
            return Ok(());
        };
        let port = self.port(i, response);
        let Some((stop, cb)) = port.stop.take() else {
            return Ok(());
        };
        self.step(i, format!("resumed after {cb} (proxy_continue_stream)"));
        match stop {
            Stop::All => {
                let held = std::mem::take(&mut self.port(i, response).held);
                self.push(response, k + 1, Event::Headers)?;
                // Held data is delivered, merged, to the filter that stopped.
                let mut data: Option<(Vec<u8>, bool)> = None;
                let mut trailers = false;
                for e in held {
                    match e {
                        Event::Data(b, eos) => {
                            let d = data.get_or_insert_with(|| (Vec::new(), false));
                            d.0.extend_from_slice(&b);
                            d.1 = eos;
                        }
                        Event::Trailers => trailers = true,
                        Event::Headers => {}
                    }
                }
                if let Some((b, eos)) = data {
                    self.push(response, k, Event::Data(b, eos))?;
                }
                if trailers {
                    self.push(response, k, Event::Trailers)?;
                }
            }
            Stop::Data => {
                let port = self.port(i, response);
                port.buffering = false;
                let data = std::mem::take(&mut port.buffered);
                let eos = port.eos && self.flow(response).trailers.is_none();
                if !data.is_empty() || eos {
                    self.push(response, k + 1, Event::Data(data, eos))?;
                }
            }
            Stop::Trailers => {
                let port = self.port(i, response);
                port.buffering = false;
                let data = std::mem::take(&mut port.buffered);
                if !data.is_empty() {
                    self.push(response, k + 1, Event::Data(data, false))?;
                }
                self.push(response, k + 1, Event::Trailers)?;
            }
        }
        Ok(())
    }

    /// An event left the last filter of its direction.
    fn exit(&mut self, response: bool, ev: Event) {
        let has_trailers = self.flow(response).trailers.is_some();
        let more = self.more_after_headers(response);
        let f = self.flow(response);
        match ev {
            Event::Headers => {
                f.out_headers = Some(f.headers.clone());
                f.out_eos = f.out_eos || !more;
            }
            Event::Data(b, eos) => {
                f.out_body.extend_from_slice(&b);
                if eos && !has_trailers {
                    f.out_eos = true;
                }
            }
            Event::Trailers => {
                f.out_trailers = f.trailers.clone();
                f.out_eos = true;
            }
        }
    }

    fn more_after_headers(&self, response: bool) -> bool {
        if let Some(v) = self.more_after_headers_override {
            return v;
        }
        let (body, trailers) = if response {
            (&self.resp_body_len, self.resp.trailers.is_some())
        } else {
            (&self.req_body_len, self.req.trailers.is_some())
        };
        *body > 0 || trailers
    }

    fn create(&mut self, i: usize) -> Result<(), Halt> {
        self.st[i].created = true;
        let r = self.call_vm(i, |vm, ctx| vm.call_context_create(ctx));
        if let Err(e) = r {
            self.failed(i, e)?;
        }
        Ok(())
    }

    fn changes(&mut self, i: usize, response: bool, before: &HeaderMap) {
        let after = self.flow(response).headers.clone();
        let mut diffs = Vec::new();
        crate::replay::diff_headers(
            if response { "response" } else { "request" },
            before.entries(),
            after.entries(),
            &mut diffs,
        );
        for d in diffs {
            self.step(i, d);
        }
    }

    /// The first filter (in the direction's order) still holding the stream.
    fn holder(&self, response: bool) -> Option<(usize, &'static str)> {
        for i in self.order(response) {
            let p = if response {
                &self.st[i].resp
            } else {
                &self.st[i].req
            };
            if let Some((_, cb)) = p.stop {
                return Some((i, cb));
            }
        }
        None
    }
}

fn phase_of(response: bool) -> Phase {
    if response {
        Phase::ResponseBody
    } else {
        Phase::RequestBody
    }
}

/// Runs `exchange` through one VM (bodies in one chunk, no trailers).
pub fn run(vm: &mut Vm, exchange: &Exchange) -> StreamOutcome {
    let name = vm.name().to_string();
    let mut lanes = [Lane {
        vm: Some(vm),
        name,
        policy: FailurePolicy::FailClosed,
    }];
    run_chain(&mut lanes, &StreamInput::from_exchange(exchange))
}

/// Runs one exchange through a chain of filters.
pub fn run_chain(lanes: &mut [Lane<'_>], input: &StreamInput) -> StreamOutcome {
    let n = lanes.len();
    let mut st = Vec::with_capacity(n);
    for lane in lanes.iter_mut() {
        let ctx = lane.vm.as_deref_mut().map_or(0, Vm::new_context_id);
        st.push(LaneState {
            ctx,
            created: false,
            dead: false,
            closed: false,
            req: Port::default(),
            resp: Port::default(),
        });
    }
    let req = &input.request;
    // One queue for the chain: the recording lists the exchange's callouts
    // in order, whichever filter makes them.
    let callouts = ExchangeCallouts::new(input.callouts.iter().cloned());
    for (lane, s) in lanes.iter_mut().zip(&st) {
        if let Some(vm) = lane.vm.as_deref_mut() {
            vm.state_mut().exchange_callouts = callouts.clone();
            let start = vm.state().clock().realtime;
            vm.state_mut().stream = Some(StreamState::at_request_headers(
                s.ctx,
                request_map(req),
                start,
                req.body.len() as u64,
            ));
        }
    }
    let steps = lanes
        .iter()
        .map(|l| FilterSteps {
            filter: l.name.clone(),
            steps: Vec::new(),
        })
        .collect();
    let mut d = Driver {
        lanes,
        st,
        req: Flow {
            headers: request_map(req),
            trailers: (!input.request_trailers.is_empty())
                .then(|| HeaderMap::from_pairs(input.request_trailers.clone())),
            started: true,
            ..Flow::default()
        },
        resp: Flow::default(),
        out: StreamOutcome {
            upstream_request: None,
            client_response: HttpResponse {
                status: NO_RESPONSE,
                headers: Vec::new(),
                body: Vec::new(),
            },
            local_response: None,
            local_in_response: false,
            reset_in: None,
            stalled_in: None,
            failure: None,
            failures: Vec::new(),
            upstream_trailers: Vec::new(),
            client_trailers: Vec::new(),
            steps,
            callouts: Vec::new(),
        },
        in_local: false,
        req_body_len: req.body.len(),
        resp_body_len: 0,
        more_after_headers_override: None,
    };
    drive(&mut d, input);
    finish(&mut d);
    let mut out = d.out;
    for lane in d.lanes.iter_mut() {
        if let Some(vm) = lane.vm.as_deref_mut() {
            vm.state_mut().stream = None;
            for c in vm.state_mut().take_callouts() {
                let name = std::path::Path::new(&lane.name)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&lane.name)
                    .to_string();
                out.callouts.push(format!("{name}: {c}"));
            }
        }
    }
    if out.reset_in.is_some() || out.stalled_in.is_some() {
        out.client_response = HttpResponse {
            status: NO_RESPONSE,
            headers: Vec::new(),
            body: Vec::new(),
        };
        out.client_trailers.clear();
    }
    out
}

fn drive(d: &mut Driver<'_, '_>, input: &StreamInput) {
    // Request path.
    let chunks = input.request_chunks.split(&input.request.body);
    let mut r = d.push(false, 0, Event::Headers);
    let last = chunks.len();
    for (j, c) in chunks.into_iter().enumerate() {
        if r.is_err() {
            break;
        }
        let eos = j + 1 == last && d.req.trailers.is_none();
        r = d.push(false, 0, Event::Data(c, eos));
    }
    if r.is_ok() && d.req.trailers.is_some() {
        r = d.push(false, 0, Event::Trailers);
    }
    match r {
        Err(Halt::Local(l)) => {
            local_via_chain(d, l);
            return;
        }
        Err(Halt::Reset(cb)) => {
            d.out.reset_in = Some(cb);
            return;
        }
        Ok(()) => {}
    }
    let Some(headers) = d.req.out_headers.clone() else {
        stall(d, false);
        return;
    };
    d.out.upstream_request = Some(to_request(&headers, d.req.out_body.clone()));
    d.out.upstream_trailers = d
        .req
        .out_trailers
        .as_ref()
        .map(|t| t.entries().to_vec())
        .unwrap_or_default();
    if !d.req.out_eos {
        stall(d, false);
        return;
    }
    // Response path.
    let resp = &input.response;
    d.resp.headers = response_map(resp.status, &resp.headers);
    d.resp.trailers = (!input.response_trailers.is_empty())
        .then(|| HeaderMap::from_pairs(input.response_trailers.clone()));
    d.resp.started = true;
    d.resp_body_len = resp.body.len();
    let chunks = input.response_chunks.split(&resp.body);
    let r = respond(d, chunks);
    match r {
        Err(Halt::Local(l)) => {
            d.out.local_in_response = true;
            if d.resp.out_headers.is_some() {
                // The client already has the response headers: Envoy resets.
                d.out.reset_in = Some("the response (local reply after headers were sent)");
                d.out.local_response = Some(l);
            } else {
                d.out.client_response = local_reply(&l);
                d.out.local_response = Some(l);
            }
        }
        Err(Halt::Reset(cb)) => d.out.reset_in = Some(cb),
        Ok(()) => client_response(d),
    }
}

fn respond(d: &mut Driver<'_, '_>, chunks: Vec<Vec<u8>>) -> Result<(), Halt> {
    d.push(true, 0, Event::Headers)?;
    let last = chunks.len();
    for (j, c) in chunks.into_iter().enumerate() {
        let eos = j + 1 == last && d.resp.trailers.is_none();
        d.push(true, 0, Event::Data(c, eos))?;
    }
    if d.resp.trailers.is_some() {
        d.push(true, 0, Event::Trailers)?;
    }
    Ok(())
}

fn client_response(d: &mut Driver<'_, '_>) {
    match d.resp.out_headers.clone() {
        Some(h) if d.resp.out_eos => {
            d.out.client_response = to_response(&h, d.resp.out_body.clone());
            d.out.client_trailers = d
                .resp
                .out_trailers
                .as_ref()
                .map(|t| t.entries().to_vec())
                .unwrap_or_default();
        }
        _ => stall(d, true),
    }
}

fn stall(d: &mut Driver<'_, '_>, response: bool) {
    if let Some((i, cb)) = d.holder(response) {
        d.out.stalled_in = Some(cb);
        d.step(i, format!("held the stream in {cb} and never resumed"));
    } else {
        d.out.stalled_in = Some(if response {
            "the response path"
        } else {
            "the request path"
        });
    }
}

/// A local reply during the request path goes back through the response
/// callbacks of the filters that saw the request.
fn local_via_chain(d: &mut Driver<'_, '_>, l: LocalResponse) {
    d.out.local_response = Some(l.clone());
    d.in_local = true;
    let reply = local_reply(&l);
    for p in &mut d.st {
        p.resp = Port::default();
    }
    d.resp.headers = response_map(reply.status, &reply.headers);
    d.resp.trailers = None;
    d.resp.started = true;
    d.resp_body_len = reply.body.len();
    let chunks = ChunkPlan::Whole.split(&reply.body);
    match respond(d, chunks) {
        Err(Halt::Reset(cb)) => d.out.reset_in = Some(cb),
        Err(Halt::Local(_)) => {
            // A failure while encoding the local reply: Envoy sends it as is.
            d.out.client_response = reply;
        }
        Ok(()) => client_response(d),
    }
    d.in_local = false;
}

/// The end of the stream, in Envoy's order (checked with Envoy 1.40's
/// `-l trace`): every filter's `on_log` in chain order (a filter that never
/// saw the request gets its context created first, as Envoy's access log
/// does), then every filter's `on_done` and `on_delete`.
fn finish(d: &mut Driver<'_, '_>) {
    let alive = |d: &Driver<'_, '_>, i: usize| !d.st[i].dead && d.lanes[i].vm.is_some();
    for i in 0..d.lanes.len() {
        if !alive(d, i) {
            continue;
        }
        if !d.st[i].created {
            d.step(i, "context created for the access log only".into());
            if d.create(i).is_err() || !alive(d, i) {
                continue;
            }
        }
        if let Some(s) = d.lanes[i].vm.as_deref_mut().and_then(vm_stream) {
            s.phase = Phase::Finished;
        }
        let r = d.call_vm(i, |vm, ctx| vm.call_log(ctx));
        if let Err(e) = r {
            let _ = d.failed(i, e);
        }
    }
    for i in 0..d.lanes.len() {
        if !alive(d, i) {
            continue;
        }
        let r = d.call_vm(i, |vm, ctx| vm.call_done_delete(ctx));
        if let Err(e) = r {
            let _ = d.failed(i, e);
        }
    }
}
