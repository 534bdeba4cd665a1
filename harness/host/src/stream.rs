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
//! reached the client, in which case the stream is reset. That holds for a
//! response that is itself a local reply too: Envoy's filter manager has
//! its headers by then, so a second local reply (or a failed filter's 503)
//! sent while it is encoded goes straight to the client in its place.
//!
//! A trap is handled by the filter's [`FailurePolicy`]: `FailClosed` and
//! `FailReload` answer 503 with details `wasm_fail_stream` (or reset the
//! stream when the response already started), `FailOpen` carries on as if
//! the callback returned Continue and skips the filter from then on.

use crate::state::{ExchangeCallouts, HeaderMap, LocalResponse, Phase, StreamState};
use crate::vm::{CallError, Vm};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::Arc;
use tollgate_traffic::{Callout, Exchange, HttpRequest, HttpResponse};

/// The status of a stalled or reset exchange's client response: none was sent.
pub const NO_RESPONSE: u16 = 0;

/// Response code details Envoy gives the 503 of a failed filter.
pub const FAIL_STREAM_DETAILS: &str = "wasm_fail_stream";

/// gRPC status `UNAVAILABLE`, which Envoy gives the local reply of a failed filter.
const GRPC_UNAVAILABLE: i32 = 14;

pub use tollgate_abi::{Direction, FailurePolicy};

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
    /// sizes are skipped, except a last one: it is an empty last chunk that
    /// carries end_of_stream, as Envoy's HTTP/1 codec delivers a body (the
    /// data, then an empty end-of-stream frame; `[n, 0]`). Bytes beyond the
    /// sizes' sum form one more chunk, sizes beyond the body's end are cut short.
    Sizes(Vec<usize>),
    /// Envoy's HTTP/1 codec: the whole body as one chunk that does not end
    /// the stream, then an empty chunk that does (`(N, false)` then
    /// `(0, true)`). When trailers follow, they end the stream instead (no
    /// empty chunk), as the codec delivers a chunked body with trailers.
    Http1,
}

/// How the bodies of a recording that does not record its own chunking are
/// delivered to the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyDelivery {
    /// As Envoy 1.40's codec for the exchange's recorded HTTP version
    /// (HTTP/1.1 when none is recorded): [`ChunkPlan::Http1`] for HTTP/1,
    /// one chunk carrying the end of stream for HTTP/2 and HTTP/3 (a last
    /// DATA frame with END_STREAM is one data callback).
    #[default]
    Envoy,
    /// One chunk carrying the end of stream, whatever the version (the
    /// harness's earlier default; `tollgate replay --one-chunk-bodies`).
    OneChunk,
}

impl BodyDelivery {
    /// The plan for an unchunked body of an exchange recorded with `version`.
    pub fn plan(self, version: Option<tollgate_traffic::HttpVersion>) -> ChunkPlan {
        use tollgate_traffic::HttpVersion;
        match (self, version) {
            (Self::OneChunk, _) => ChunkPlan::Whole,
            (Self::Envoy, None | Some(HttpVersion::Http1)) => ChunkPlan::Http1,
            (Self::Envoy, Some(HttpVersion::Http2 | HttpVersion::Http3)) => ChunkPlan::Whole,
        }
    }
}

impl ChunkPlan {
    /// The plan for recorded chunk sizes: [`ChunkPlan::Whole`] for none or
    /// one, else [`ChunkPlan::Sizes`].
    pub fn recorded(sizes: &[usize]) -> Self {
        let empty_end = sizes.len() > 1 && sizes.last() == Some(&0);
        if sizes.iter().filter(|&&n| n > 0).count() <= 1 && !empty_end {
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
            Self::Http1 => return vec![body.to_vec(), Vec::new()],
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
                if sizes.last() == Some(&0) {
                    out.push(Vec::new());
                }
                return out;
            }
        };
        body.chunks(size.max(1)).map(<[u8]>::to_vec).collect()
    }
}

/// A body's chunks as [`Prepared`] keeps them: the usual plans (one chunk,
/// Envoy's HTTP/1 codec) as the body itself, copied only as each chunk is
/// delivered; any other plan cut up front.
#[derive(Debug, Clone)]
enum Chunks {
    /// The whole body as one chunk, then an empty one when `empty_end`.
    Body { empty_end: bool },
    /// These chunks (none for an empty body).
    Cut(Vec<Vec<u8>>),
}

impl Chunks {
    /// `body` cut as `plan` says. Trailers end the stream: an empty
    /// end-of-stream chunk before them would be a data callback Envoy
    /// never makes.
    fn new(plan: &ChunkPlan, body: &[u8], trailers: bool) -> Self {
        match plan {
            _ if body.is_empty() => Self::Cut(Vec::new()),
            ChunkPlan::Whole => Self::Body { empty_end: false },
            ChunkPlan::Http1 => Self::Body {
                empty_end: !trailers,
            },
            _ => {
                let mut c = plan.split(body);
                if trailers && c.len() > 1 && c.last().is_some_and(Vec::is_empty) {
                    c.pop();
                }
                Self::Cut(c)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Body { empty_end } => 1 + usize::from(*empty_end),
            Self::Cut(c) => c.len(),
        }
    }

    /// Chunk `j` of `body`, to deliver.
    fn chunk(&self, j: usize, body: &[u8]) -> Vec<u8> {
        match self {
            Self::Body { .. } if j == 0 => body.to_vec(),
            Self::Body { .. } => Vec::new(),
            Self::Cut(c) => c.get(j).cloned().unwrap_or_default(),
        }
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
    /// The exchange's own properties (dotted paths, values as the guest
    /// reads them): they take precedence over the VM's and the built-in ones.
    pub properties: Vec<(String, Vec<u8>)>,
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
            properties: Vec::new(),
        }
    }

    /// The input for a recorded exchange with everything its
    /// [`details`](Exchange::details) say: the recorded body chunk sizes
    /// ([`ChunkPlan::Sizes`]), trailers, callout answers and properties
    /// ([`property_value`]); bodies the recording did not chunk are
    /// delivered as Envoy's codec does ([`BodyDelivery::Envoy`]).
    pub fn from_recording(exchange: &Exchange) -> Self {
        Self::from_recording_with(exchange, BodyDelivery::Envoy)
    }

    /// [`Self::from_recording`], the bodies the recording did not chunk
    /// delivered as `delivery` says.
    pub fn from_recording_with(exchange: &Exchange, delivery: BodyDelivery) -> Self {
        let d = &exchange.details;
        let plan = |sizes: &[usize]| {
            if sizes.is_empty() {
                delivery.plan(d.http_version)
            } else {
                ChunkPlan::recorded(sizes)
            }
        };
        Self {
            properties: d
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), property_value(k, v)))
                .collect(),
            request_trailers: d.request_trailers.clone(),
            response_trailers: d.response_trailers.clone(),
            request_chunks: plan(&d.request_chunks),
            response_chunks: plan(&d.response_chunks),
            callouts: d.callouts.clone(),
            ..Self::from_exchange(exchange)
        }
    }
}

/// A recorded property's value as Envoy encodes it for the guest: the
/// attributes Envoy gives as integers (ports, sizes, codes, ids) as 8-byte
/// little-endian integers when the text is one, anything else as its bytes.
pub fn property_value(path: &str, text: &str) -> Vec<u8> {
    match property_integer(path, text) {
        Some(n) => n.to_le_bytes().to_vec(),
        None => text.as_bytes().to_vec(),
    }
}

/// The integer [`property_value`] encodes `text` as, if it does.
fn property_integer(path: &str, text: &str) -> Option<i64> {
    let numeric = path.ends_with(".port")
        || path.ends_with("size")
        || path.ends_with(".code")
        || path == "connection.id";
    numeric.then(|| text.trim().parse::<i64>().ok()).flatten()
}

/// `value` is [`property_value`] of `path` and `text` (compared, not built).
fn is_property_value(path: &str, text: &str, value: &[u8]) -> bool {
    match property_integer(path, text) {
        Some(n) => value == n.to_le_bytes(),
        None => value == text.as_bytes(),
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
    pub steps: Vec<Step>,
}

/// One entry of a filter's step log. The frequent ones (a callback and its
/// result) are kept typed and made text only when printed ([`Display`]),
/// so a replay that prints no steps builds no string for them.
///
/// [`Display`]: std::fmt::Display
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A headers callback and what it returned:
    /// `proxy_on_request_headers(eos=false) -> Continue`.
    Headers {
        /// The callback.
        callback: &'static str,
        /// The end of stream it was given.
        end_of_stream: bool,
        /// Its result's name.
        action: &'static str,
    },
    /// A body callback and what it returned:
    /// `proxy_on_request_body(5 bytes, eos=true) -> Continue`.
    Body {
        /// The callback.
        callback: &'static str,
        /// The body size it was given.
        size: usize,
        /// The end of stream it was given.
        end_of_stream: bool,
        /// Its result's name.
        action: &'static str,
    },
    /// Anything else, as text (changes, local replies, failures, waits).
    Text(String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Headers {
                callback,
                end_of_stream,
                action,
            } => write!(f, "{callback}(eos={end_of_stream}) -> {action}"),
            Self::Body {
                callback,
                size,
                end_of_stream,
                action,
            } => write!(
                f,
                "{callback}({size} bytes, eos={end_of_stream}) -> {action}"
            ),
            Self::Text(t) => f.write_str(t),
        }
    }
}

impl From<String> for Step {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl FilterSteps {
    /// The filter's file name (its path without the folders).
    pub fn filter_name(&self) -> &str {
        std::path::Path::new(&self.filter)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&self.filter)
    }
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
    /// The local reply [`Self::local_response`] replaced: a filter sent it
    /// (or failed) while this one was encoded back through the chain.
    pub replaced_local: Option<LocalResponse>,
    /// The filter reset the stream (`proxy_close_stream`) in this callback.
    pub reset_in: Option<&'static str>,
    /// The filter paused in this callback and never resumed.
    pub stalled_in: Option<&'static str>,
    /// What reached the upstream of a request that never ended there: its
    /// headers (and the body passed on), then Envoy reset the upstream
    /// request ([`Self::upstream_request`] stays `None`: the request as a
    /// whole never reached it).
    pub upstream_reset: Option<HttpRequest>,
    /// The client got the response's status and headers (and
    /// [`Self::client_response`]'s body so far) but the stream never ended:
    /// a filter held the rest (e.g. paused in the response trailers).
    pub client_stream_open: bool,
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
    /// The callouts the filters made, with their headers and bodies, in order
    /// (refused ones included; see [`crate::callouts`]).
    pub callout_requests: Vec<crate::callouts::CalloutRecord>,
}

/// A header name as a map keeps it: lower-case (a recording's names
/// already are: then one copy, no second pass).
fn lower(name: &str) -> String {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    }
}

/// A recorded header list as map entries (names lower-case), after `first`.
fn entries(first: usize, headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut pairs = Vec::with_capacity(first + headers.len());
    pairs.extend(std::iter::repeat_n((String::new(), String::new()), first));
    pairs.extend(headers.iter().map(|(k, v)| (lower(k), v.clone())));
    pairs
}

fn request_map(req: &HttpRequest) -> HeaderMap {
    // One string per name and per value, the vector sized once.
    let mut pairs = entries(4, &req.headers);
    pairs[0] = (":authority".into(), req.authority.clone());
    pairs[1] = (":path".into(), req.path.clone());
    pairs[2] = (":method".into(), req.method.clone());
    pairs[3] = (":scheme".into(), req.scheme.clone());
    // Envoy's codec folds a repeated inline header (`authorization`, `via`...) into one value.
    HeaderMap::from_lowercase_entries(crate::abi::fold_inline(pairs, crate::abi::REQUEST_INLINE))
}

fn response_map(status: u16, headers: &[(String, String)]) -> HeaderMap {
    let mut pairs = entries(1, headers);
    pairs[0] = (":status".into(), status.to_string());
    HeaderMap::from_lowercase_entries(crate::abi::fold_inline(pairs, crate::abi::RESPONSE_INLINE))
}

/// The map's entries without the pseudo-headers (`:method`, `:status`, ...).
fn regular_headers(map: &HeaderMap) -> Vec<(String, String)> {
    let entries = map.entries();
    // Sized once: the pseudo-headers come first and are few.
    let pseudo = entries.iter().filter(|(k, _)| k.starts_with(':')).count();
    let mut out = Vec::with_capacity(entries.len() - pseudo);
    out.extend(entries.iter().filter(|(k, _)| !k.starts_with(':')).cloned());
    out
}

/// [`to_request`] taking the map: its strings move into the request when
/// nothing else holds the map.
fn into_request(map: HeaderMap, body: Vec<u8>, mut spare: Option<&mut Spare>) -> HttpRequest {
    let mut headers = match map.into_entries_keeping(spare.as_deref_mut().map(|s| &mut s.maps)) {
        Ok(entries) => entries,
        Err(map) => return to_request(&map, body),
    };
    // The map as built (`request_map`): the four pseudo-headers first, in
    // this order, and no other; they leave in one move.
    const BUILT: [&str; 4] = [":authority", ":path", ":method", ":scheme"];
    let [method, scheme, authority, path] = if headers.len() >= 4
        && headers.iter().zip(BUILT).all(|((k, _), n)| k == n)
        && !headers[4..].iter().any(|(k, _)| k.starts_with(':'))
    {
        let mut values: [String; 4] = Default::default();
        for (slot, (k, v)) in values.iter_mut().zip(headers.drain(..4)) {
            *slot = v;
            if let Some(s) = spare.as_deref_mut() {
                s.keep(k);
            }
        }
        let [authority, path, method, scheme] = values;
        [method, scheme, authority, path]
    } else {
        let mut pseudo = [
            (":method", None),
            (":scheme", None),
            (":authority", None),
            (":path", None),
        ];
        for (k, v) in headers.iter_mut().filter(|(k, _)| k.starts_with(':')) {
            // The first of each, as `HeaderMap::get` finds it.
            if let Some((_, slot)) = pseudo
                .iter_mut()
                .find(|(name, slot)| slot.is_none() && k.eq_ignore_ascii_case(name))
            {
                *slot = Some(std::mem::take(v));
            }
        }
        drop_pseudo(&mut headers, spare);
        pseudo.map(|(_, v)| v.unwrap_or_default())
    };
    HttpRequest {
        method,
        scheme,
        authority,
        path,
        headers,
        body,
    }
}

/// [`to_response`] taking the map, as [`into_request`].
fn into_response(map: HeaderMap, body: Vec<u8>, mut spare: Option<&mut Spare>) -> HttpResponse {
    let mut headers = match map.into_entries_keeping(spare.as_deref_mut().map(|s| &mut s.maps)) {
        Ok(entries) => entries,
        Err(map) => return to_response(&map, body),
    };
    // The map as built (`response_map`): `:status` first and no other
    // pseudo-header.
    if headers.first().is_some_and(|(k, _)| k == ":status")
        && !headers[1..].iter().any(|(k, _)| k.starts_with(':'))
    {
        let (k, v) = headers.remove(0);
        let status = v.parse().unwrap_or(NO_RESPONSE);
        if let Some(s) = spare {
            s.keep(k);
            s.keep(v);
        }
        return HttpResponse {
            status,
            headers,
            body,
        };
    }
    let status = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(":status"))
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(NO_RESPONSE);
    drop_pseudo(&mut headers, spare);
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Removes the pseudo-headers (their strings kept in `spare`, if any).
fn drop_pseudo(headers: &mut Vec<(String, String)>, spare: Option<&mut Spare>) {
    let Some(spare) = spare else {
        headers.retain(|(k, _)| !k.starts_with(':'));
        return;
    };
    let mut kept = 0;
    for i in 0..headers.len() {
        if headers[i].0.starts_with(':') {
            let (k, v) = std::mem::take(&mut headers[i]);
            spare.keep(k);
            spare.keep(v);
        } else {
            headers.swap(kept, i);
            kept += 1;
        }
    }
    headers.truncate(kept);
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

/// The response Envoy builds for a local reply (`Utility::sendLocalReply`),
/// as the filters on its way back see it: the gRPC form for a gRPC
/// request, else the filter's headers, then (with a body) `content-length`
/// set to the body's size, replacing any the filter gave, and
/// `content-type: text/plain` only when the filter set none. A reply to a
/// `HEAD` keeps those headers and ends with them: no body, no body
/// callbacks (checked by
/// `callout_parity::local_replies_to_head_requests_carry_no_body_as_in_envoy`).
/// What the codec adds on the wire is [`frame_headers_only`]'s.
fn local_reply(l: &LocalResponse, request: &HeaderMap) -> HttpResponse {
    let mut reply = if is_grpc_request(request) {
        grpc_local_reply(l)
    } else {
        plain_local_reply(l)
    };
    if is_head_request(request) {
        reply.body.clear();
    }
    reply
}

fn plain_local_reply(l: &LocalResponse) -> HttpResponse {
    let mut headers = Vec::new();
    if !l.body.is_empty() {
        headers.push(("content-length".to_string(), l.body.len().to_string()));
        if !l
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".to_string(), "text/plain".to_string()));
        }
    }
    headers.extend(
        l.headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
            .cloned(),
    );
    HttpResponse {
        status: u16::try_from(l.status).unwrap_or(NO_RESPONSE),
        headers,
        body: l.body.clone(),
    }
}

/// What Envoy's HTTP/1 codec adds to a reply that ends with its headers
/// and declares no length (`codec_impl.cc`, `encodeHeaders`):
/// `content-length: 0`, or on a reply to a `HEAD` `transfer-encoding:
/// chunked` (with no chunk following); nothing for 1xx and 204.
fn frame_headers_only(response: &mut HttpResponse, request: &HeaderMap) {
    frame_reply(response, is_head_request(request));
}

/// [`frame_headers_only`] for a request known to be a `HEAD` or not.
fn frame_reply(response: &mut HttpResponse, head: bool) {
    let declared = response.headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    });
    if declared || !response.body.is_empty() || response.status < 200 || response.status == 204 {
        return;
    }
    if head {
        response
            .headers
            .push(("transfer-encoding".to_string(), "chunked".to_string()));
    } else {
        response
            .headers
            .push(("content-length".to_string(), "0".to_string()));
    }
}

/// Whether the request is a `HEAD` (Envoy's `is_head_request`).
fn is_head_request(request: &HeaderMap) -> bool {
    request.get(":method") == Some("HEAD")
}

/// Whether Envoy answers `request` as a gRPC request (its `content-type`
/// is `application/grpc` or `application/grpc+...`).
fn is_grpc_request(request: &HeaderMap) -> bool {
    request
        .get("content-type")
        .is_some_and(|ct| ct == "application/grpc" || ct.starts_with("application/grpc+"))
}

/// gRPC's status for an HTTP status (Envoy's mapping for local replies).
fn grpc_status_of(http: u32) -> u32 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A local reply to a gRPC request as Envoy 1.40 sends it (checked by
/// `callout_parity::local_replies_to_grpc_requests_match_envoy`): HTTP 200,
/// `content-type: application/grpc`, `grpc-status` (the call's, else mapped
/// from the HTTP status), the body as `grpc-message` (percent-encoded where
/// gRPC requires it), no body (the codec adds `content-length: 0`).
fn grpc_local_reply(l: &LocalResponse) -> HttpResponse {
    let status = u32::try_from(l.grpc_status).unwrap_or_else(|_| grpc_status_of(l.status));
    let mut headers = vec![
        ("content-type".to_string(), "application/grpc".to_string()),
        ("grpc-status".to_string(), status.to_string()),
    ];
    if !l.body.is_empty() {
        let mut message = String::new();
        for &b in &l.body {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                message.push(char::from(b));
            } else {
                message.push_str(&format!("%{b:02X}"));
            }
        }
        headers.push(("grpc-message".to_string(), message));
    }
    headers.extend(l.headers.iter().cloned());
    HttpResponse {
        status: 200,
        headers,
        body: Vec::new(),
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
    /// The VM trapped in a callback after which Envoy sends nothing: the
    /// stream stays held until the client gives up.
    Hang(&'static str),
}

/// The callbacks whose trap leaves the stream held with no reply in Envoy
/// 1.40 (checked by `tests/tests/it/failure_parity.rs`): they run on the
/// root context, which has no stream to fail (proxy-wasm-cpp-host calls
/// them without the stream's failure check); a failed VM gets no further
/// callbacks, so nothing resumes or answers the stream.
const TRAP_HANGS_IN: &[&str] = &[
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
];

/// One direction's data as it flows.
#[derive(Default)]
struct Flow {
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    out_headers: Option<HeaderMap>,
    out_body: Vec<u8>,
    /// A filter changed a body chunk of this direction. Without that, the
    /// filters only pass on, hold, merge or drop the bytes they are given,
    /// never alter them: a body that left the chain whole (its length)
    /// is the one that entered it, uncompared.
    body_changed: bool,
    out_trailers: Option<HeaderMap>,
    out_eos: bool,
    started: bool,
    /// What left the chain (headers, body) becomes the outcome's message
    /// when the exchange ends ([`conclude`]): moved out of the map when
    /// nothing else holds it by then, copied otherwise.
    to_outcome: bool,
    /// A local reply that ends with its headers gets the codec's framing
    /// ([`frame_headers_only`]) once it is the outcome's: `Some(true)` for
    /// a reply to a `HEAD`.
    frame_reply: Option<bool>,
}

impl Flow {
    /// What left the chain is `body` (the one that entered it, as recorded).
    fn body_is(&self, body: &[u8]) -> bool {
        self.out_body.len() == body.len() && (!self.body_changed || self.out_body == body)
    }
}

struct Driver<'l, 'a> {
    lanes: &'l mut [Lane<'a>],
    st: Vec<LaneState>,
    req: Flow,
    resp: Flow,
    out: StreamOutcome,
    req_body_len: usize,
    resp_body_len: usize,
    /// Set while ContinueAndEndStream forwards headers as the last frame.
    more_after_headers_override: Option<bool>,
    /// What is recorded besides the verdict.
    detail: Detail,
    /// The next stage to run.
    stage: Stage,
}

/// A direction's filters in the order it visits them (the response's is
/// the chain reversed), without allocating.
#[derive(Clone, Copy)]
struct Order {
    n: usize,
    reverse: bool,
}

impl Order {
    fn len(self) -> usize {
        self.n
    }

    /// The filter at position `k` of the direction.
    fn at(self, k: usize) -> usize {
        if self.reverse { self.n - 1 - k } else { k }
    }

    /// The position of filter `i` in the direction.
    fn position(self, i: usize) -> Option<usize> {
        (i < self.n).then(|| self.at(i))
    }

    fn iter(self) -> impl Iterator<Item = usize> {
        (0..self.n).map(move |k| self.at(k))
    }
}

/// `to` becomes `from` (shared), unless it is that very map already.
#[inline]
fn share(to: &mut HeaderMap, from: &HeaderMap) {
    if !to.same(from) {
        *to = from.clone();
    }
}

fn vm_stream(vm: &mut Vm) -> Option<&mut StreamState> {
    vm.stream_mut()
}

impl<'a> Driver<'_, 'a> {
    fn step(&mut self, i: usize, step: impl Into<Step>) {
        if let Some(f) = self.out.steps.get_mut(i) {
            f.steps.push(step.into());
        }
    }

    /// The step log is kept (not in [`Detail::Verdict`] runs).
    fn logging(&self) -> bool {
        self.detail == Detail::Full
    }

    fn order(&self, dir: Direction) -> Order {
        Order {
            n: self.lanes.len(),
            reverse: dir.is_response(),
        }
    }

    /// Copies the flowing maps into lane `i`'s stream state.
    fn load(&mut self, i: usize, phase: Phase, body: Option<(Direction, Vec<u8>)>) {
        if let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) {
            s.phase = phase;
            // (A map the lane holds already is not handed over again: no
            // reference counting for the usual case, nothing changed.)
            share(&mut s.request_headers, &self.req.headers);
            // Without trailers in the stream, the lane keeps those its filter
            // created in its last body callback (Envoy's `addDecodedTrailers`:
            // the map exists for the filter from then on; the harness does
            // not pass them on).
            if let Some(t) = &self.req.trailers {
                share(&mut s.request_trailers, t);
            }
            match (&mut s.response_headers, self.resp.started) {
                (Some(h), true) => share(h, &self.resp.headers),
                (h, true) => *h = Some(self.resp.headers.clone()),
                (h, false) => *h = None,
            }
            if let Some(t) = &self.resp.trailers {
                share(&mut s.response_trailers, t);
            }
            s.continued_request = false;
            s.continued_response = false;
            match body {
                Some((Direction::Request, b)) => s.request_body = Some(b),
                Some((Direction::Response, b)) => s.response_body = Some(b),
                None => {}
            }
            s.body_written = false;
        }
    }

    /// Lane `i`'s filter no longer holds the headers of `dir` (its headers
    /// callback returned Continue): Envoy's map is gone for it.
    fn close_headers(&mut self, i: usize, dir: Direction) {
        if let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) {
            if dir.is_response() {
                s.response_headers_open = false;
            } else {
                s.request_headers_open = false;
            }
        }
    }

    /// Copies lane `i`'s maps back.
    fn store(&mut self, i: usize) {
        let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) else {
            return;
        };
        share(&mut self.req.headers, &s.request_headers);
        if let Some(t) = &mut self.req.trailers {
            share(t, &s.request_trailers);
        }
        if self.resp.started {
            if let Some(h) = &s.response_headers {
                share(&mut self.resp.headers, h);
            }
            if let Some(t) = &mut self.resp.trailers {
                share(t, &s.response_trailers);
            }
        }
    }

    /// Lane `i`'s body of `dir` after its body callback, when it is not
    /// `visible` (what the callback was given) any more: a copy of it
    /// (`None` for a body left as it was, which then goes on without one).
    fn changed_body(&mut self, i: usize, dir: Direction, visible: &[u8]) -> Option<Vec<u8>> {
        let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) else {
            return Some(Vec::new());
        };
        if !s.body_written {
            // Nothing wrote a body since `load` handed this one over.
            return None;
        }
        let now = if dir.is_response() {
            &s.response_body
        } else {
            &s.request_body
        };
        let now = now.as_deref().unwrap_or(&[]);
        (now != visible).then(|| now.to_vec())
    }

    fn port(&mut self, i: usize, dir: Direction) -> &mut Port {
        if dir.is_response() {
            &mut self.st[i].resp
        } else {
            &mut self.st[i].req
        }
    }

    fn flow(&mut self, dir: Direction) -> &mut Flow {
        if dir.is_response() {
            &mut self.resp
        } else {
            &mut self.req
        }
    }

    /// Handles a failed call of lane `i`. `Ok` when the policy lets the
    /// stream go on (FAIL_OPEN), else the halt.
    fn failed(&mut self, i: usize, error: CallError) -> Result<(), Halt> {
        self.st[i].dead = true;
        let hang_cb = error.callback;
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
            _ => match TRAP_HANGS_IN.iter().find(|c| **c == hang_cb) {
                Some(cb) => {
                    self.step(i, format!("Envoy sends no reply after a trap in {cb}: the stream stays held until the client gives up"));
                    Err(Halt::Hang(cb))
                }
                None => Err(Halt::Local(fail_stream_reply())),
            },
        }
    }

    /// After a callback of lane `i`: local reply, reset, continue.
    /// Returns whether the filter asked to continue (`proxy_continue_stream`).
    fn after(&mut self, i: usize, dir: Direction, cb: &'static str) -> Result<bool, Halt> {
        let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) else {
            return Ok(false);
        };
        let local = (!s.local_response_taken)
            .then(|| s.local_response.clone())
            .flatten();
        s.local_response_taken = true;
        let closed = s.closed;
        let continued = if dir.is_response() {
            s.continued_response
        } else {
            s.continued_request
        };
        if let Some(l) = local {
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
    fn push(&mut self, dir: Direction, from: usize, ev: Event) -> Result<(), Halt> {
        let order = self.order(dir);
        let mut ev = ev;
        let mut k = from;
        while k < order.len() {
            let i = order.at(k);
            let passive = self.lanes[i].vm.is_none()
                || self.st[i].dead
                || (dir.is_response() && !self.st[i].created);
            if passive {
                if self.lanes[i].vm.is_none()
                    && !self.st[i].dead
                    && self.lanes[i].policy != FailurePolicy::FailOpen
                    && !dir.is_response()
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
            let port = self.port(i, dir);
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
                    if !dir.is_response() && !self.st[i].created {
                        self.create(i)?;
                        if self.st[i].dead {
                            k += 1;
                            continue;
                        }
                    }
                    let cb = if dir.is_response() {
                        "proxy_on_response_headers"
                    } else {
                        "proxy_on_request_headers"
                    };
                    let eos = !self.more_after_headers(dir);
                    let phase = if dir.is_response() {
                        Phase::ResponseHeaders
                    } else {
                        Phase::RequestHeaders
                    };
                    self.load(i, phase, None);
                    let before = self.flow(dir).headers.clone();
                    let n = before.len() as u32;
                    let r = self.call_vm(i, |vm, ctx| vm.call_headers(dir, ctx, n, eos));
                    self.store(i);
                    let action = match r {
                        Ok(a) => a,
                        Err(e) => {
                            self.failed(i, e)?;
                            k += 1;
                            continue;
                        }
                    };
                    let (name, result) = headers_action(action);
                    if self.logging() {
                        self.step(
                            i,
                            Step::Headers {
                                callback: cb,
                                end_of_stream: eos,
                                action: name,
                            },
                        );
                    }
                    if action == 0 {
                        // Envoy lets go of the map once the callback continued.
                        self.close_headers(i, dir);
                    }
                    self.changes(i, dir, &before);
                    let continued = self.after(i, dir, cb)?;
                    match result {
                        HeadersResult::Continue => {}
                        HeadersResult::ContinueAndEnd => {
                            self.port(i, dir).ended = true;
                            self.flow(dir).trailers = None;
                            self.forward_end(dir, k + 1)?;
                            return Ok(());
                        }
                        HeadersResult::StopAll => {
                            self.port(i, dir).stop = Some((Stop::All, cb));
                            return self.stopped(i, dir, continued);
                        }
                    }
                }
                Event::Data(chunk, eos) => {
                    let cb = if dir.is_response() {
                        "proxy_on_response_body"
                    } else {
                        "proxy_on_request_body"
                    };
                    let port = self.port(i, dir);
                    let visible = if port.buffering {
                        let mut b = std::mem::take(&mut port.buffered);
                        b.extend_from_slice(&chunk);
                        b
                    } else {
                        chunk
                    };
                    port.eos = eos;
                    let phase = if dir.is_response() {
                        Phase::ResponseBody
                    } else {
                        Phase::RequestBody
                    };
                    let size = visible.len();
                    self.load(i, phase, Some((dir, visible.clone())));
                    if let Some(s) = self.lanes[i].vm.as_deref_mut().and_then(vm_stream) {
                        s.end_of_stream = eos;
                    }
                    let r = self.call_vm(i, |vm, ctx| vm.call_body(dir, ctx, size as u32, eos));
                    self.store(i);
                    let changed = self.changed_body(i, dir, &visible);
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
                    if self.logging() {
                        self.step(
                            i,
                            Step::Body {
                                callback: cb,
                                size,
                                end_of_stream: eos,
                                action: name,
                            },
                        );
                    }
                    if let (true, Some(body)) = (self.logging(), &changed) {
                        let text = format!(
                            "{} body: changed ({} bytes -> {} bytes)",
                            dir.as_str(),
                            visible.len(),
                            body.len()
                        );
                        self.step(i, text);
                    }
                    if changed.is_some() {
                        self.flow(dir).body_changed = true;
                    }
                    let body = changed.unwrap_or(visible);
                    let continued = self.after(i, dir, cb)?;
                    let port = self.port(i, dir);
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
                            return self.stopped(i, dir, continued);
                        }
                        DataResult::NoBuffer => {
                            port.buffering = false;
                            port.buffered.clear();
                            port.stop = Some((Stop::Data, cb));
                            return self.stopped(i, dir, continued);
                        }
                    }
                }
                Event::Trailers => {
                    let cb = if dir.is_response() {
                        "proxy_on_response_trailers"
                    } else {
                        "proxy_on_request_trailers"
                    };
                    self.load(i, phase_of(dir), None);
                    let before = self.flow(dir).trailers.clone().unwrap_or_default();
                    let n = before.len() as u32;
                    let r = self.call_vm(i, |vm, ctx| vm.call_trailers(dir, ctx, n));
                    self.store(i);
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
                    if self.logging() {
                        self.step(i, format!("{cb} -> {name}"));
                    }
                    let after = self.flow(dir).trailers.clone().unwrap_or_default();
                    let mut diffs = Vec::new();
                    crate::verdict::diff_headers(
                        if dir.is_response() {
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
                    let continued = self.after(i, dir, cb)?;
                    if action != 0 {
                        self.port(i, dir).stop = Some((Stop::Trailers, cb));
                        return self.stopped(i, dir, continued);
                    }
                    let port = self.port(i, dir);
                    if port.stop.is_some() || port.buffering {
                        // Continue on trailers releases what the filter buffered.
                        port.stop = None;
                        port.buffering = false;
                        let data = std::mem::take(&mut port.buffered);
                        if !data.is_empty() {
                            self.push(dir, k + 1, Event::Data(data, false))?;
                        }
                    }
                }
            }
            k += 1;
        }
        self.exit(dir, ev);
        Ok(())
    }

    /// Ends the stream after ContinueAndEndStream at position `from - 1`.
    fn forward_end(&mut self, dir: Direction, from: usize) -> Result<(), Halt> {
        // The headers go on as the last frame.
        let order = self.order(dir);
        let saved = self.more_after_headers_override;
        self.more_after_headers_override = Some(false);
        let r = if from < order.len() {
            self.push(dir, from, Event::Headers)
        } else {
            self.exit(dir, Event::Headers);
            Ok(())
        };
        self.more_after_headers_override = saved;
        let f = self.flow(dir);
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
    fn stopped(&mut self, i: usize, dir: Direction, continued: bool) -> Result<(), Halt> {
        if continued {
            self.resume(i, dir)
        } else {
            Ok(())
        }
    }

    /// A stopped filter continues: what it held goes on.
    fn resume(&mut self, i: usize, dir: Direction) -> Result<(), Halt> {
        let order = self.order(dir);
        let Some(k) = order.position(i) else {
            return Ok(());
        };
        let port = self.port(i, dir);
        let Some((stop, cb)) = port.stop.take() else {
            return Ok(());
        };
        self.step(i, format!("resumed after {cb} (proxy_continue_stream)"));
        match stop {
            Stop::All => {
                let held = std::mem::take(&mut self.port(i, dir).held);
                self.push(dir, k + 1, Event::Headers)?;
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
                    self.push(dir, k, Event::Data(b, eos))?;
                }
                if trailers {
                    self.push(dir, k, Event::Trailers)?;
                }
            }
            Stop::Data => {
                let port = self.port(i, dir);
                port.buffering = false;
                let data = std::mem::take(&mut port.buffered);
                let eos = port.eos && self.flow(dir).trailers.is_none();
                if !data.is_empty() || eos {
                    self.push(dir, k + 1, Event::Data(data, eos))?;
                }
            }
            Stop::Trailers => {
                let port = self.port(i, dir);
                port.buffering = false;
                let data = std::mem::take(&mut port.buffered);
                if !data.is_empty() {
                    self.push(dir, k + 1, Event::Data(data, false))?;
                }
                self.push(dir, k + 1, Event::Trailers)?;
            }
        }
        Ok(())
    }

    /// An event left the last filter of its direction.
    fn exit(&mut self, dir: Direction, ev: Event) {
        let has_trailers = self.flow(dir).trailers.is_some();
        let more = self.more_after_headers(dir);
        let f = self.flow(dir);
        match ev {
            Event::Headers => {
                f.out_headers = Some(f.headers.clone());
                f.out_eos = f.out_eos || !more;
            }
            Event::Data(b, eos) => {
                if f.out_body.is_empty() {
                    f.out_body = b;
                } else {
                    f.out_body.extend_from_slice(&b);
                }
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

    fn more_after_headers(&self, dir: Direction) -> bool {
        if let Some(v) = self.more_after_headers_override {
            return v;
        }
        let (body, trailers) = if dir.is_response() {
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

    fn changes(&mut self, i: usize, dir: Direction, before: &HeaderMap) {
        if self.flow(dir).headers.same(before) || !self.logging() {
            // Untouched by the filter (the map is shared copy-on-write).
            return;
        }
        let after = self.flow(dir).headers.clone();
        let mut diffs = Vec::new();
        crate::verdict::diff_headers(dir.as_str(), before.entries(), after.entries(), &mut diffs);
        for d in diffs {
            self.step(i, d);
        }
    }

    /// The first filter (in the direction's order) still holding the stream.
    fn holder(&self, dir: Direction) -> Option<(usize, &'static str)> {
        for i in self.order(dir).iter() {
            let p = if dir.is_response() {
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

fn phase_of(dir: Direction) -> Phase {
    if dir.is_response() {
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
    run_once(&mut lanes, Prepared::from_exchange(exchange))
}

/// Runs one exchange through a chain of filters.
pub fn run_chain(lanes: &mut [Lane<'_>], input: &StreamInput) -> StreamOutcome {
    run_once(lanes, Prepared::new(input))
}

/// [`run_chain`] with an exchange already prepared (its maps and chunks
/// built once: [`Prepared::from_recording_with`] borrows the recording),
/// to drive it again: the outcome's messages are copies.
pub fn run_prepared(lanes: &mut [Lane<'_>], prepared: &Prepared<'_>) -> StreamOutcome {
    let mut d = Parked::start(lanes, prepared, Detail::Full);
    while d.stage != Stage::Done {
        advance(&mut d, prepared);
    }
    conclude(&mut d)
}

/// [`run_prepared`] for an exchange driven once: the prepared maps are
/// dropped before the outcome is made, so the messages that left the chain
/// untouched move into it instead of being copied.
pub fn run_once(lanes: &mut [Lane<'_>], prepared: Prepared<'_>) -> StreamOutcome {
    let mut d = Parked::start(lanes, &prepared, Detail::Full);
    while d.stage != Stage::Done {
        advance(&mut d, &prepared);
    }
    drop(prepared);
    conclude(&mut d)
}

/// [`run_once`] that also gives back the recorded messages where they
/// differ from the outcome's ([`Recorded`]): with an exchange prepared by
/// [`Prepared::from_recording_owned`], an exchange the filters left alone
/// is never copied (its strings go from the recording into the maps and
/// from the maps into the outcome).
///
/// The pseudo-headers' strings go back to `spare` for the next exchange.
pub fn run_owned(
    lanes: &mut [Lane<'_>],
    prepared: Prepared<'_>,
    spare: &mut Spare,
) -> (StreamOutcome, Recorded) {
    let mut d = Parked::start(lanes, &prepared, Detail::Full);
    while d.stage != Stage::Done {
        advance(&mut d, &prepared);
    }
    // The outcome is finished in place in the driver and moved out once.
    end_streams(&mut d);
    let recorded = prepared.into_recorded(&d, &d.out, spare);
    settle(&mut d, Some(spare));
    (take_outcome(&mut d), recorded)
}

/// Runs one exchange through a chain of filters for its verdict only: the
/// same callbacks in the same order as [`run_chain`], without the step log,
/// the change lists or copies of the messages (for throughput).
///
/// A verdict carries no cost: the guest calls are not timed one by one for
/// [`Vm::take_cost`] while it runs (whoever wants its time measures the
/// call; per-call records, [`Vm::record_calls`], are still taken).
pub fn run_chain_verdict(lanes: &mut [Lane<'_>], input: &Prepared<'_>) -> StreamVerdict {
    // Which lanes had per-call timing on (a bit per lane; lanes past the
    // 64th get it back on, the state every VM is in outside this driver).
    let mut timed = 0u64;
    for (i, lane) in lanes.iter_mut().enumerate() {
        if let Some(vm) = lane.vm.as_deref_mut()
            && vm.set_call_timing(false)
        {
            timed |= 1u64.checked_shl(i as u32).unwrap_or(0);
        }
    }
    let verdict = {
        let mut d = Parked::start(lanes, input, Detail::Verdict);
        while d.stage != Stage::Done {
            advance(&mut d, input);
        }
        let many = d.lanes.len() > 1;
        let out = conclude(&mut d);
        verdict_of(&d, input, out, many)
    };
    for (i, lane) in lanes.iter_mut().enumerate() {
        if let Some(vm) = lane.vm.as_deref_mut() {
            vm.set_call_timing(i >= 64 || timed & (1u64 << i) != 0);
        }
    }
    verdict
}

/// Runs several exchanges through a chain at once, interleaving their
/// callbacks as a proxy with that many streams in flight sees them: every
/// stream's request headers, then every stream's request body and
/// trailers, then every stream's response headers, response body and
/// trailers, then every stream's `on_log`/`on_done`/`on_delete`. A stream
/// that ends early (local reply, reset, failure) skips to the last round.
/// Each stream gets its own context in every filter, so the filters hold
/// all of them at the same time. `after_round` runs after each round
/// (e.g. to sample the VMs' memory). Callouts made while several streams
/// are in flight are reported with the stream that finishes first. A filter
/// that fails in one stream is skipped by that stream only; what a failure
/// means for the VM is the caller's decision (as `tollgate_replay::Chain`
/// decides between exchanges).
pub fn run_interleaved(
    lanes: &mut [Lane<'_>],
    inputs: &[&Prepared<'_>],
    mut after_round: impl FnMut(&mut [Lane<'_>]),
) -> Vec<StreamOutcome> {
    let mut parked: Vec<Parked> = inputs
        .iter()
        .map(|p| Parked::new(lanes, p, Detail::Full))
        .collect();
    let mut outcomes: Vec<Option<StreamOutcome>> = inputs.iter().map(|_| None).collect();
    for round in Stage::ROUNDS {
        for (j, p) in parked.iter_mut().enumerate() {
            if p.stage != round {
                continue;
            }
            let mut d = std::mem::take(p).driver(lanes);
            advance(&mut d, inputs[j]);
            if d.stage == Stage::Done {
                outcomes[j] = Some(conclude(&mut d));
            }
            *p = Parked::from_driver(d);
        }
        after_round(lanes);
    }
    outcomes.into_iter().flatten().collect()
}

/// An exchange made ready to drive: its header maps built and its bodies
/// cut once, so it can be driven again and again without rebuilding them
/// (the maps are shared copy-on-write with the filters). It borrows the
/// recording: nothing of the exchange is copied but what the maps hold.
#[derive(Debug, Clone)]
pub struct Prepared<'i> {
    /// The request as recorded; only its body when [`Self::moved`].
    request: Cow<'i, HttpRequest>,
    /// The upstream's answer (a 200 with no body when none was recorded);
    /// only its status and body when [`Self::moved`].
    response: Cow<'i, HttpResponse>,
    /// The recorded messages' strings moved into the maps
    /// ([`Prepared::from_recording_owned`]): the maps are the recording.
    moved: bool,
    callouts: Cow<'i, [Callout]>,
    /// Shared with every filter's stream state.
    properties: Arc<[(String, Vec<u8>)]>,
    request_headers: HeaderMap,
    request_trailers: Option<HeaderMap>,
    request_chunks: Chunks,
    response_headers: HeaderMap,
    response_trailers: Option<HeaderMap>,
    response_chunks: Chunks,
    /// The request map, as is, judges as the recorded request (the codec's
    /// folding of repeated headers can make it differ); worked out once,
    /// when first needed.
    request_pristine: OnceCell<bool>,
    /// The same for the response.
    response_pristine: OnceCell<bool>,
}

/// What a [`Prepared`] is built from.
struct Parts<'i, 't> {
    request: Cow<'i, HttpRequest>,
    response: Cow<'i, HttpResponse>,
    request_trailers: &'t [(String, String)],
    response_trailers: &'t [(String, String)],
    request_chunks: &'t ChunkPlan,
    response_chunks: &'t ChunkPlan,
    callouts: Cow<'i, [Callout]>,
    properties: Arc<[(String, Vec<u8>)]>,
    /// The request's and response's maps, when already built from them
    /// (their strings moved in).
    moved_maps: Option<(HeaderMap, HeaderMap)>,
}

/// An exchange's properties as the guest reads them, shared by the filters.
type Properties = Arc<[(String, Vec<u8>)]>;

/// A recording's properties as the guest reads them ([`property_value`]),
/// in one allocation (none when there are none) shared by the filters.
fn recorded_properties(recorded: &[(String, String)]) -> Arc<[(String, Vec<u8>)]> {
    if recorded.is_empty() {
        return Arc::default();
    }
    recorded
        .iter()
        .map(|(k, v)| (k.clone(), property_value(k, v)))
        .collect()
}

/// The response driven when the recording has none: a 200 with no body.
fn default_response() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl<'i> Prepared<'i> {
    /// Builds the maps and chunks of `input`.
    pub fn new(input: &'i StreamInput) -> Self {
        Self::build(Parts {
            request: Cow::Borrowed(&input.request),
            response: Cow::Borrowed(&input.response),
            request_trailers: &input.request_trailers,
            response_trailers: &input.response_trailers,
            request_chunks: &input.request_chunks,
            response_chunks: &input.response_chunks,
            callouts: Cow::Borrowed(&input.callouts),
            properties: if input.properties.is_empty() {
                Arc::default()
            } else {
                input.properties.iter().cloned().collect()
            },
            moved_maps: None,
        })
    }

    /// [`Self::new`] of [`StreamInput::from_exchange`] without copying the
    /// exchange: bodies in one chunk, no trailers, no callouts.
    pub fn from_exchange(exchange: &'i Exchange) -> Self {
        Self::build(Parts {
            request: Cow::Borrowed(&exchange.request),
            response: exchange
                .response
                .as_ref()
                .map_or_else(|| Cow::Owned(default_response()), Cow::Borrowed),
            request_trailers: &[],
            response_trailers: &[],
            request_chunks: &ChunkPlan::Whole,
            response_chunks: &ChunkPlan::Whole,
            callouts: Cow::Borrowed(&[]),
            properties: Arc::default(),
            moved_maps: None,
        })
    }

    /// [`Self::new`] of [`StreamInput::from_recording_with`] without
    /// copying the exchange (only its properties are converted, when it
    /// records some).
    pub fn from_recording_with(exchange: &'i Exchange, delivery: BodyDelivery) -> Self {
        let d = &exchange.details;
        let plan = |sizes: &[usize]| {
            if sizes.is_empty() {
                delivery.plan(d.http_version)
            } else {
                ChunkPlan::recorded(sizes)
            }
        };
        let properties = recorded_properties(&d.properties);
        Self::build(Parts {
            request: Cow::Borrowed(&exchange.request),
            response: exchange
                .response
                .as_ref()
                .map_or_else(|| Cow::Owned(default_response()), Cow::Borrowed),
            request_trailers: &d.request_trailers,
            response_trailers: &d.response_trailers,
            request_chunks: &plan(&d.request_chunks),
            response_chunks: &plan(&d.response_chunks),
            callouts: Cow::Borrowed(&d.callouts),
            properties,
            moved_maps: None,
        })
    }

    fn build(parts: Parts<'i, '_>) -> Self {
        let trailers = |t: &[(String, String)]| {
            (!t.is_empty()).then(|| HeaderMap::from_lowercase_entries(entries(0, t)))
        };
        let chunks = |plan: &ChunkPlan, body: &[u8], trailers: &[(String, String)]| {
            Chunks::new(plan, body, !trailers.is_empty())
        };
        let Parts {
            request,
            response,
            request_trailers,
            response_trailers,
            request_chunks,
            response_chunks,
            callouts,
            properties,
            moved_maps,
        } = parts;
        let moved = moved_maps.is_some();
        let (request_headers, response_headers) = moved_maps.unwrap_or_else(|| {
            (
                request_map(&request),
                response_map(response.status, &response.headers),
            )
        });
        Self {
            request_headers,
            request_trailers: trailers(request_trailers),
            request_chunks: chunks(request_chunks, &request.body, request_trailers),
            request,
            moved,
            response_headers,
            response_trailers: trailers(response_trailers),
            response_chunks: chunks(response_chunks, &response.body, response_trailers),
            response,
            callouts,
            properties,
            request_pristine: OnceCell::new(),
            response_pristine: OnceCell::new(),
        }
    }

    fn request_pristine(&self) -> bool {
        self.moved
            || *self.request_pristine.get_or_init(|| {
                !crate::verdict::request_differs(
                    &self.request,
                    &to_request(&self.request_headers, self.request.body.clone()),
                )
            })
    }

    fn response_pristine(&self) -> bool {
        self.moved
            || *self.response_pristine.get_or_init(|| {
                !crate::verdict::response_differs(
                    &self.response,
                    &to_response(&self.response_headers, self.response.body.clone()),
                )
            })
    }

    /// The request as recorded.
    pub fn recorded_request(&self) -> Cow<'_, HttpRequest> {
        if self.moved {
            Cow::Owned(to_request(&self.request_headers, self.request.body.clone()))
        } else {
            Cow::Borrowed(&self.request)
        }
    }

    /// The upstream's response as recorded (a 200 with no body when none was).
    pub fn recorded_response(&self) -> Cow<'_, HttpResponse> {
        if self.moved {
            Cow::Owned(to_response(
                &self.response_headers,
                self.response.body.clone(),
            ))
        } else {
            Cow::Borrowed(&self.response)
        }
    }

    /// The recorded messages, given back after a run: `None` for one that
    /// is exactly what the run's outcome carries (the filters left it as
    /// recorded, and the outcome takes it: see [`run_owned`]).
    fn into_recorded(self, d: &Driver<'_, '_>, out: &StreamOutcome, spare: &mut Spare) -> Recorded {
        let untouched = |flow: &Flow, map: &HeaderMap, body: &[u8]| {
            self.moved
                && flow.to_outcome
                && flow.out_headers.as_ref().is_some_and(|h| h.same(map))
                && flow.body_is(body)
        };
        let request_same = untouched(&d.req, &self.request_headers, &self.request.body);
        let response_same = out.reset_in.is_none()
            && out.stalled_in.is_none()
            && untouched(&d.resp, &self.response_headers, &self.response.body);
        let Prepared {
            request,
            response,
            moved,
            request_headers,
            response_headers,
            ..
        } = self;
        let request = match (request_same, moved) {
            (true, _) => None,
            (false, true) => Some(into_request(
                request_headers,
                request.into_owned().body,
                Some(&mut *spare),
            )),
            (false, false) => Some(request.into_owned()),
        };
        let response = match (response_same, moved) {
            (true, _) => None,
            (false, true) => Some(into_response(
                response_headers,
                response.into_owned().body,
                Some(&mut *spare),
            )),
            (false, false) => Some(response.into_owned()),
        };
        Recorded { request, response }
    }
}

impl Prepared<'static> {
    /// [`Prepared::from_recording_with`] taking the exchange's request and
    /// response (the exchange keeps its id and details, the rest is
    /// emptied): their strings move into the maps instead of being copied,
    /// when the header names are as a recording gives them (lower-case, no
    /// pseudo-header, no repeated header Envoy's codec would fold); else
    /// they are copied and the recording kept as it is. [`run_owned`] gives
    /// them back ([`Recorded`]).
    pub fn from_recording_owned(
        exchange: &mut Exchange,
        delivery: BodyDelivery,
        spare: &mut Spare,
    ) -> Self {
        let request = std::mem::replace(&mut exchange.request, empty_request());
        let response = exchange.response.take().unwrap_or_else(default_response);
        let d = &exchange.details;
        let plan = |sizes: &[usize]| {
            if sizes.is_empty() {
                delivery.plan(d.http_version)
            } else {
                ChunkPlan::recorded(sizes)
            }
        };
        let (request_plan, response_plan) = (plan(&d.request_chunks), plan(&d.response_chunks));
        let properties = spare.properties(&d.properties);
        let (mut request, mut response) = (request, response);
        let moved_maps = (movable(&request.headers, crate::abi::REQUEST_INLINE)
            && movable(&response.headers, crate::abi::RESPONSE_INLINE))
        .then(|| {
            (
                request_map_moving(&mut request, spare),
                response_map_moving(&mut response, spare),
            )
        });
        Prepared::build(Parts {
            request: Cow::Owned(request),
            response: Cow::Owned(response),
            request_trailers: &d.request_trailers,
            response_trailers: &d.response_trailers,
            request_chunks: &request_plan,
            response_chunks: &response_plan,
            callouts: Cow::Owned(d.callouts.clone()),
            properties,
            moved_maps,
        })
    }
}

fn empty_request() -> HttpRequest {
    HttpRequest {
        method: String::new(),
        scheme: String::new(),
        authority: String::new(),
        path: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// Strings one exchange's maps leave behind for the next: the
/// pseudo-headers' names (`:authority`, `:path`, `:method`, `:scheme`,
/// `:status`) and the status's text, which [`run_owned`] hands back
/// instead of freeing and [`Prepared::from_recording_owned`] takes, so an
/// exchange the filters leave alone costs no allocation for them. Holds at
/// most a few short strings.
///
/// It also keeps the allocations a map is made of (its entry vector and the
/// shared box around it: the recording's emptied vector and the box of an
/// outcome's map come back here) and the last exchange's properties as the
/// guest reads them, shared again by the next exchange that records the
/// same ones (a recording's `destination.address` rarely changes).
#[derive(Debug, Default)]
pub struct Spare {
    strings: Vec<String>,
    lists: Vec<Vec<(String, String)>>,
    maps: Vec<crate::state::MapBox>,
    properties: Option<Properties>,
}

impl Spare {
    /// At most this many strings are kept.
    const KEEP: usize = 16;
    /// At most this many vectors and map boxes (two maps per exchange).
    const KEEP_MAPS: usize = 4;

    /// An empty entry vector with room for `n` entries.
    fn list(&mut self, n: usize) -> Vec<(String, String)> {
        let mut v = self.lists.pop().unwrap_or_default();
        v.clear();
        v.reserve(n);
        v
    }

    /// Keeps `v`'s allocation (emptied) for a later map.
    fn keep_list(&mut self, mut v: Vec<(String, String)>) {
        if v.capacity() > 0 && self.lists.len() < Self::KEEP_MAPS {
            v.clear();
            self.lists.push(v);
        }
    }

    /// A map of `entries` (lower-case names), in a kept box when there is one.
    fn map(&mut self, entries: Vec<(String, String)>) -> HeaderMap {
        HeaderMap::from_lowercase_entries_in(entries, self.maps.pop())
    }

    /// `recorded`'s properties as the guest reads them: the last ones
    /// again when they are the same.
    fn properties(&mut self, recorded: &[(String, String)]) -> Properties {
        if recorded.is_empty() {
            return Arc::default();
        }
        if let Some(last) = &self.properties
            && last.len() == recorded.len()
            && last
                .iter()
                .zip(recorded)
                .all(|((k, v), (rk, rv))| k == rk && is_property_value(rk, rv, v))
        {
            return last.clone();
        }
        let made = recorded_properties(recorded);
        self.properties = Some(made.clone());
        made
    }

    /// `text` in a kept string (room for any pseudo-header name or status).
    fn text(&mut self, text: &str) -> String {
        let mut s = self
            .strings
            .pop()
            .unwrap_or_else(|| String::with_capacity(16));
        s.clear();
        s.push_str(text);
        s
    }

    /// A status's text in a kept string.
    fn status(&mut self, status: u16) -> String {
        use std::fmt::Write as _;
        let mut s = self.text("");
        let _ = write!(s, "{status}");
        s
    }

    fn keep(&mut self, s: String) {
        if self.strings.len() < Self::KEEP && s.capacity() >= 16 {
            self.strings.push(s);
        }
    }
}

/// The recorded messages after [`run_owned`], where they differ from what
/// the outcome carries.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The recorded request; `None` when it is the outcome's
    /// `upstream_request` (it went upstream untouched).
    pub request: Option<HttpRequest>,
    /// The recorded response (a 200 with no body when none was); `None`
    /// when it is the outcome's `client_response` (untouched).
    pub response: Option<HttpResponse>,
}

/// A recorded header list whose strings can move into a map as they are:
/// lower-case names, no pseudo-header, nothing the codec folds.
fn movable(headers: &[(String, String)], inline: &[&str]) -> bool {
    // One pass: a name is compared with the earlier ones only when a
    // 64-bit summary of (length, first and last byte) says one of them may
    // be equal to it, which for a recording's distinct names is rare (the
    // pairwise check of every name was the hottest part of preparing).
    let mut seen = 0u64;
    for (i, (k, _)) in headers.iter().enumerate() {
        let b = k.as_bytes();
        if b.first() == Some(&b':') || has_uppercase(b) {
            return false;
        }
        let (first, last) = (
            b.first().copied().unwrap_or(0),
            b.last().copied().unwrap_or(0),
        );
        let bit = 1u64
            << ((b.len() as u64)
                .wrapping_mul(31)
                .wrapping_add(u64::from(first).wrapping_mul(7))
                .wrapping_add(u64::from(last))
                % 64);
        if seen & bit != 0
            && headers[..i].iter().any(|(p, _)| p == k)
            && inline.contains(&k.as_str())
        {
            return false;
        }
        seen |= bit;
    }
    true
}

/// `b` has an ASCII upper-case letter (eight bytes at a time).
fn has_uppercase(b: &[u8]) -> bool {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // Per byte, on its low seven bits (no carry crosses a byte): the
        // high bit of `x + 0x3f` is set for x >= 'A', of `x + 0x25` for
        // x > 'Z'; bytes with their own high bit set are not ASCII.
        let x = w & LOW7;
        let upper = (x + 0x3f3f_3f3f_3f3f_3f3f) & !(x + 0x2525_2525_2525_2525) & !w & HIGH;
        if upper != 0 {
            return true;
        }
    }
    words.remainder().iter().any(u8::is_ascii_uppercase)
}

/// [`request_map`], the request's strings moved into the map.
fn request_map_moving(req: &mut HttpRequest, spare: &mut Spare) -> HeaderMap {
    let mut pairs = spare.list(4 + req.headers.len());
    pairs.push((spare.text(":authority"), std::mem::take(&mut req.authority)));
    pairs.push((spare.text(":path"), std::mem::take(&mut req.path)));
    pairs.push((spare.text(":method"), std::mem::take(&mut req.method)));
    pairs.push((spare.text(":scheme"), std::mem::take(&mut req.scheme)));
    pairs.append(&mut req.headers);
    spare.keep_list(std::mem::take(&mut req.headers));
    spare.map(pairs)
}

/// [`response_map`], the response's strings moved into the map.
fn response_map_moving(resp: &mut HttpResponse, spare: &mut Spare) -> HeaderMap {
    let mut pairs = spare.list(1 + resp.headers.len());
    pairs.push((spare.text(":status"), spare.status(resp.status)));
    pairs.append(&mut resp.headers);
    spare.keep_list(std::mem::take(&mut resp.headers));
    spare.map(pairs)
}

/// The verdict of a [`run_chain_verdict`] run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamVerdict {
    /// What the chain did, judged as the replay report judges it.
    pub verdict: crate::verdict::Verdict,
    /// The status the client received ([`NO_RESPONSE`] when none).
    pub status: u16,
    /// The request reached the upstream.
    pub reached_upstream: bool,
}

/// What the driver records besides the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Detail {
    /// The full outcome: messages as they left the chain, step log.
    #[default]
    Full,
    /// Only what the verdict needs.
    Verdict,
}

/// Where an exchange is in the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Stage {
    #[default]
    RequestHeaders,
    RequestRest,
    ResponseHeaders,
    ResponseRest,
    Finish,
    Done,
}

impl Stage {
    /// The rounds of an interleaved run, in order.
    const ROUNDS: [Stage; 5] = [
        Stage::RequestHeaders,
        Stage::RequestRest,
        Stage::ResponseHeaders,
        Stage::ResponseRest,
        Stage::Finish,
    ];
}

/// A driver's state while another stream's callbacks run: everything but
/// the lanes, plus each filter's stream state and the callout answers.
#[derive(Default)]
struct Parked {
    st: Vec<LaneState>,
    req: Flow,
    resp: Flow,
    out: Option<StreamOutcome>,
    req_body_len: usize,
    resp_body_len: usize,
    more_after_headers_override: Option<bool>,
    detail: Detail,
    stage: Stage,
    streams: Vec<Option<StreamState>>,
    callouts: ExchangeCallouts,
}

impl Parked {
    /// A new exchange: a context id in every filter, its stream state.
    fn new(lanes: &mut [Lane<'_>], p: &Prepared<'_>, detail: Detail) -> Self {
        let (st, streams, callouts) = Self::lane_states(lanes, p, false);
        Self {
            st,
            req: Self::request_flow(p),
            resp: Flow::default(),
            out: Some(StreamOutcome {
                steps: Self::steps(lanes, detail),
                ..empty_outcome()
            }),
            req_body_len: p.request.body.len(),
            resp_body_len: 0,
            more_after_headers_override: None,
            detail,
            stage: Stage::RequestHeaders,
            streams,
            callouts,
        }
    }

    /// A new exchange driven at once: its stream state goes straight into
    /// the filters' VMs, and the driver is built in place (not parked
    /// first and moved: the outcome and the flows are most of a kilobyte).
    fn start<'l, 'a>(
        lanes: &'l mut [Lane<'a>],
        p: &Prepared<'_>,
        detail: Detail,
    ) -> Driver<'l, 'a> {
        let (st, _, _) = Self::lane_states(lanes, p, true);
        let steps = Self::steps(lanes, detail);
        Driver {
            st,
            req: Self::request_flow(p),
            resp: Flow::default(),
            out: StreamOutcome {
                steps,
                ..empty_outcome()
            },
            req_body_len: p.request.body.len(),
            resp_body_len: 0,
            more_after_headers_override: None,
            detail,
            stage: Stage::RequestHeaders,
            lanes,
        }
    }

    /// The request as it enters the chain.
    fn request_flow(p: &Prepared<'_>) -> Flow {
        Flow {
            headers: p.request_headers.clone(),
            trailers: p.request_trailers.clone(),
            started: true,
            ..Flow::default()
        }
    }

    /// The step log's entries, one per filter (none for a verdict).
    fn steps(lanes: &[Lane<'_>], detail: Detail) -> Vec<FilterSteps> {
        if detail == Detail::Full {
            lanes
                .iter()
                .map(|l| FilterSteps {
                    filter: l.name.clone(),
                    // Room for an exchange with bodies (headers and two
                    // body callbacks each way): one allocation.
                    steps: Vec::with_capacity(8),
                })
                .collect()
        } else {
            Vec::new()
        }
    }

    /// A context id in every filter and the stream state for it: handed to
    /// the VM with `attach`, else returned (parked) with the callout answers.
    fn lane_states(
        lanes: &mut [Lane<'_>],
        p: &Prepared<'_>,
        attach: bool,
    ) -> (Vec<LaneState>, Vec<Option<StreamState>>, ExchangeCallouts) {
        let req = &p.request;
        // One queue for the chain: the recording lists the exchange's
        // callouts in order, whichever filter makes them.
        let callouts = if p.callouts.is_empty() {
            ExchangeCallouts::default()
        } else {
            ExchangeCallouts::new(p.callouts.iter().cloned())
        };
        let mut st = Vec::with_capacity(lanes.len());
        let mut streams = Vec::with_capacity(if attach { 0 } else { lanes.len() });
        for lane in lanes.iter_mut() {
            let (ctx, stream) = match lane.vm.as_deref_mut() {
                Some(vm) => {
                    vm.begin_exchange();
                    let ctx = vm.new_context_id();
                    let start = vm.state().clock().realtime;
                    let mut s = StreamState::at_request_headers(
                        ctx,
                        p.request_headers.clone(),
                        start,
                        req.body.len() as u64,
                    );
                    s.properties = p.properties.clone();
                    if attach {
                        vm.attach_stream(Some(s), callouts.clone());
                        (ctx, None)
                    } else {
                        (ctx, Some(s))
                    }
                }
                None => (0, None),
            };
            if !attach {
                streams.push(stream);
            }
            st.push(LaneState {
                ctx,
                created: false,
                dead: false,
                closed: false,
                req: Port::default(),
                resp: Port::default(),
            });
        }
        (st, streams, callouts)
    }

    /// Puts the stream back into the filters' VMs and resumes driving it.
    fn driver<'l, 'a>(mut self, lanes: &'l mut [Lane<'a>]) -> Driver<'l, 'a> {
        for (lane, s) in lanes.iter_mut().zip(self.streams.iter_mut()) {
            if let Some(vm) = lane.vm.as_deref_mut() {
                vm.attach_stream(s.take(), self.callouts.clone());
            }
        }
        Driver {
            lanes,
            st: self.st,
            req: self.req,
            resp: self.resp,
            out: self.out.unwrap_or_else(empty_outcome),
            req_body_len: self.req_body_len,
            resp_body_len: self.resp_body_len,
            more_after_headers_override: self.more_after_headers_override,
            detail: self.detail,
            stage: self.stage,
        }
    }

    /// Takes the stream out of the filters' VMs to let another one run.
    fn from_driver(d: Driver<'_, '_>) -> Self {
        let mut streams = Vec::with_capacity(d.lanes.len());
        let mut callouts = ExchangeCallouts::default();
        for lane in d.lanes.iter_mut() {
            match lane.vm.as_deref_mut() {
                Some(vm) => {
                    let (stream, answers) = vm.detach_stream();
                    streams.push(stream);
                    callouts = answers;
                }
                None => streams.push(None),
            }
        }
        Self {
            st: d.st,
            req: d.req,
            resp: d.resp,
            out: Some(d.out),
            req_body_len: d.req_body_len,
            resp_body_len: d.resp_body_len,
            more_after_headers_override: d.more_after_headers_override,
            detail: d.detail,
            stage: d.stage,
            streams,
            callouts,
        }
    }
}

fn empty_outcome() -> StreamOutcome {
    StreamOutcome {
        upstream_request: None,
        client_response: HttpResponse {
            status: NO_RESPONSE,
            headers: Vec::new(),
            body: Vec::new(),
        },
        local_response: None,
        local_in_response: false,
        replaced_local: None,
        reset_in: None,
        stalled_in: None,
        upstream_reset: None,
        client_stream_open: false,
        failure: None,
        failures: Vec::new(),
        upstream_trailers: Vec::new(),
        client_trailers: Vec::new(),
        steps: Vec::new(),
        callouts: Vec::new(),
        callout_requests: Vec::new(),
    }
}

/// The end of an exchange: the filters forget the stream, callouts are
/// collected, a reset or stalled stream sent the client nothing.
fn conclude(d: &mut Driver<'_, '_>) -> StreamOutcome {
    end_streams(d);
    settle(d, None);
    take_outcome(d)
}

/// The driver's finished outcome, moved out.
fn take_outcome(d: &mut Driver<'_, '_>) -> StreamOutcome {
    std::mem::replace(&mut d.out, empty_outcome())
}

/// The filters forget the stream; its callouts are collected.
fn end_streams(d: &mut Driver<'_, '_>) {
    let out = &mut d.out;
    for lane in d.lanes.iter_mut() {
        if let Some(vm) = lane.vm.as_deref_mut() {
            let (descriptions, records) = vm.end_stream();
            for c in descriptions {
                let name = std::path::Path::new(&lane.name)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&lane.name)
                    .to_string();
                out.callouts.push(format!("{name}: {c}"));
            }
            for mut r in records {
                r.filter = std::path::Path::new(&lane.name)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(&lane.name)
                    .to_string();
                out.callout_requests.push(r);
            }
        }
    }
}

/// What left the chain becomes the outcome's (moved out of maps no one
/// else holds by now); a reset or stalled stream sent the client nothing.
fn settle(d: &mut Driver<'_, '_>, mut spare: Option<&mut Spare>) {
    let out = &mut d.out;
    if std::mem::take(&mut d.req.to_outcome)
        && let Some(h) = d.req.out_headers.take()
    {
        d.req.headers = HeaderMap::default();
        out.upstream_request = Some(into_request(
            h,
            std::mem::take(&mut d.req.out_body),
            spare.as_deref_mut(),
        ));
    }
    if std::mem::take(&mut d.resp.to_outcome)
        && let Some(h) = d.resp.out_headers.take()
    {
        d.resp.headers = HeaderMap::default();
        out.client_response = into_response(h, std::mem::take(&mut d.resp.out_body), spare);
        if let Some(head) = d.resp.frame_reply.take() {
            frame_reply(&mut out.client_response, head);
        }
    }
    if out.reset_in.is_some() || (out.stalled_in.is_some() && !out.client_stream_open) {
        out.client_response = HttpResponse {
            status: NO_RESPONSE,
            headers: Vec::new(),
            body: Vec::new(),
        };
        out.client_trailers.clear();
    }
}

/// Judges a verdict-only run, comparing what left the chain with the
/// input; the messages are rebuilt only when they are not the input's own
/// maps and bodies (the filters changed something).
fn verdict_of(
    d: &Driver<'_, '_>,
    p: &Prepared<'_>,
    out: StreamOutcome,
    many: bool,
) -> StreamVerdict {
    use crate::verdict::Verdict;
    let reached_upstream = d.req.out_headers.is_some();
    let status = if out.reset_in.is_some() || out.stalled_in.is_some() {
        NO_RESPONSE
    } else if out.local_response.is_some() && out.client_response.status != NO_RESPONSE {
        out.client_response.status
    } else {
        d.resp
            .out_headers
            .as_ref()
            .and_then(|h| h.get(":status"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(NO_RESPONSE)
    };
    let verdict = if let Some(v) = crate::verdict::decided_verdict(&out, many) {
        v
    } else if out.reset_in.is_some() || out.stalled_in.is_some() {
        Verdict::Modified
    } else {
        let request_changed = match &d.req.out_headers {
            Some(h) if h.same(&p.request_headers) && d.req.body_is(&p.request.body) => {
                !p.request_pristine()
            }
            Some(h) => crate::verdict::request_differs(
                &p.recorded_request(),
                &to_request(h, d.req.out_body.clone()),
            ),
            None => false,
        };
        let response_changed = match &d.resp.out_headers {
            Some(h) if h.same(&p.response_headers) && d.resp.body_is(&p.response.body) => {
                !p.response_pristine()
            }
            Some(h) => crate::verdict::response_differs(
                &p.recorded_response(),
                &to_response(h, d.resp.out_body.clone()),
            ),
            None => true,
        };
        if request_changed || response_changed {
            Verdict::Modified
        } else {
            Verdict::Passed
        }
    };
    StreamVerdict {
        verdict,
        status,
        reached_upstream,
    }
}

/// Runs the driver's current stage and moves it to the next.
fn advance(d: &mut Driver<'_, '_>, p: &Prepared<'_>) {
    d.stage = match d.stage {
        Stage::RequestHeaders => {
            let r = d.push(Direction::Request, 0, Event::Headers);
            if request_halted(d, r) {
                Stage::Finish
            } else {
                Stage::RequestRest
            }
        }
        Stage::RequestRest => request_rest(d, p),
        Stage::ResponseHeaders => {
            // The upstream takes time to answer too: callout answers due
            // within an undelayed answer's time (calls the filters did not
            // wait for) come first.
            if let Err(h) = answers_before_upstream(d) {
                let _ = response_halted(d, Err(h));
                d.stage = Stage::Finish;
                return;
            }
            d.resp.headers = p.response_headers.clone();
            d.resp.trailers = p.response_trailers.clone();
            d.resp.started = true;
            d.resp_body_len = p.response.body.len();
            let r = d.push(Direction::Response, 0, Event::Headers);
            if response_halted(d, r) {
                Stage::Finish
            } else {
                Stage::ResponseRest
            }
        }
        Stage::ResponseRest => {
            let r = response_rest(d, p).and_then(|()| wait_for_callouts(d, Direction::Response));
            if !response_halted(d, r) {
                client_response(d);
            }
            Stage::Finish
        }
        Stage::Finish => {
            finish(d);
            Stage::Done
        }
        Stage::Done => Stage::Done,
    };
}

/// The request's body chunks and trailers; then whether it reached the upstream.
fn request_rest(d: &mut Driver<'_, '_>, p: &Prepared<'_>) -> Stage {
    let mut r = Ok(());
    let last = p.request_chunks.len();
    for j in 0..last {
        if r.is_err() {
            break;
        }
        let eos = j + 1 == last && d.req.trailers.is_none();
        let c = p.request_chunks.chunk(j, &p.request.body);
        r = d.push(Direction::Request, 0, Event::Data(c, eos));
    }
    if r.is_ok() && d.req.trailers.is_some() {
        r = d.push(Direction::Request, 0, Event::Trailers);
    }
    if request_halted(d, r) {
        return Stage::Finish;
    }
    let r = wait_for_callouts(d, Direction::Request);
    if request_halted(d, r) {
        return Stage::Finish;
    }
    if d.req.out_headers.is_none() {
        stall(d, Direction::Request);
        return Stage::Finish;
    }
    if d.logging() {
        d.req.to_outcome = true;
        d.out.upstream_trailers = d
            .req
            .out_trailers
            .as_ref()
            .map(|t| t.entries().to_vec())
            .unwrap_or_default();
    }
    if !d.req.out_eos {
        stall(d, Direction::Request);
        return Stage::Finish;
    }
    Stage::ResponseHeaders
}

/// Handles a halt of the request path; `true` when it halted.
fn request_halted(d: &mut Driver<'_, '_>, r: Result<(), Halt>) -> bool {
    if r.is_err()
        && !d.req.out_eos
        && let Some(headers) = d.req.out_headers.as_ref()
    {
        // The headers went upstream before the request ended: the
        // upstream has them (and any body passed on), then a reset.
        d.out.upstream_reset = Some(to_request(headers, d.req.out_body.clone()));
    }
    match r {
        Err(Halt::Hang(cb)) => {
            d.out.stalled_in = Some(cb);
            true
        }
        Err(Halt::Local(l)) => {
            local_via_chain(d, l);
            true
        }
        Err(Halt::Reset(cb)) => {
            d.out.reset_in = Some(cb);
            true
        }
        Ok(()) => false,
    }
}

/// The response's body chunks and trailers.
fn response_rest(d: &mut Driver<'_, '_>, p: &Prepared<'_>) -> Result<(), Halt> {
    let last = p.response_chunks.len();
    for j in 0..last {
        let eos = j + 1 == last && d.resp.trailers.is_none();
        let c = p.response_chunks.chunk(j, &p.response.body);
        d.push(Direction::Response, 0, Event::Data(c, eos))?;
    }
    if d.resp.trailers.is_some() {
        d.push(Direction::Response, 0, Event::Trailers)?;
    }
    Ok(())
}

/// Handles a halt of the response path; `true` when it halted.
fn response_halted(d: &mut Driver<'_, '_>, r: Result<(), Halt>) -> bool {
    match r {
        Err(Halt::Hang(cb)) => {
            d.out.stalled_in = Some(cb);
            true
        }
        Err(Halt::Local(l)) => {
            d.out.local_in_response = true;
            if d.resp.out_headers.is_some() {
                // The client already has the response headers: Envoy resets.
                d.out.reset_in = Some("the response (local reply after headers were sent)");
                d.out.local_response = Some(l);
            } else {
                d.out.client_response = local_reply(&l, &d.req.headers);
                frame_headers_only(&mut d.out.client_response, &d.req.headers);
                d.out.local_response = Some(l);
            }
            true
        }
        Err(Halt::Reset(cb)) => {
            d.out.reset_in = Some(cb);
            true
        }
        Ok(()) => false,
    }
}

fn respond(d: &mut Driver<'_, '_>, chunks: Vec<Vec<u8>>) -> Result<(), Halt> {
    d.push(Direction::Response, 0, Event::Headers)?;
    let last = chunks.len();
    for (j, c) in chunks.into_iter().enumerate() {
        let eos = j + 1 == last && d.resp.trailers.is_none();
        d.push(Direction::Response, 0, Event::Data(c, eos))?;
    }
    if d.resp.trailers.is_some() {
        d.push(Direction::Response, 0, Event::Trailers)?;
    }
    Ok(())
}

fn client_response(d: &mut Driver<'_, '_>) {
    match d.resp.out_headers.clone() {
        Some(_) if d.resp.out_eos && !d.logging() => {}
        Some(_) if d.resp.out_eos => {
            // The response is complete: it becomes the client's when the
            // exchange ends (`conclude`).
            d.resp.to_outcome = true;
            d.out.client_trailers = d
                .resp
                .out_trailers
                .as_ref()
                .map(|t| t.entries().to_vec())
                .unwrap_or_default();
        }
        Some(h) => {
            // The headers and the body so far went to the client; the end
            // never comes (Envoy keeps the stream open until a timeout).
            d.out.client_response = to_response(&h, d.resp.out_body.clone());
            d.out.client_stream_open = true;
            stall(d, Direction::Response);
        }
        None => stall(d, Direction::Response),
    }
}

/// Longest a held stream waits for callout answers (virtual time): Envoy's
/// default stream idle timeout.
const MAX_CALLOUT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// While a filter holds one direction and callout answers are on their
/// way, moves every filter's virtual clock to the next answer (ticks due
/// before it fire first) and lets the holder act on it: continue, answer
/// locally, reset. Envoy keeps a paused stream open meanwhile.
fn wait_for_callouts(d: &mut Driver<'_, '_>, dir: Direction) -> Result<(), Halt> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        let f = d.flow(dir);
        if f.out_headers.is_some() && f.out_eos {
            return Ok(());
        }
        let Some((i, cb)) = d.holder(dir) else {
            return Ok(());
        };
        let next = d
            .lanes
            .iter()
            .filter_map(|l| l.vm.as_deref())
            .filter_map(|vm| {
                let due = vm.next_callout_due()?;
                Some(due.saturating_sub(vm.state().clock().monotonic))
            })
            .min();
        let Some(dt) = next.map(std::time::Duration::from_nanos) else {
            return Ok(());
        };
        waited += dt;
        if waited > MAX_CALLOUT_WAIT {
            return Ok(());
        }
        for j in 0..d.lanes.len() {
            if let Err(e) = d.call_vm(j, |vm, _| vm.advance_clock(dt)) {
                d.failed(j, e)?;
            }
        }
        d.step(
            i,
            format!("waited {dt:?} (virtual) for callout answers while held in {cb}"),
        );
        d.store(i);
        if d.port(i, dir).buffering {
            let body = d.changed_body(i, dir, &[]).unwrap_or_default();
            d.port(i, dir).buffered = body;
        }
        if d.after(i, dir, "a callout answer")? {
            d.resume(i, dir)?;
        }
    }
}

/// Delivers the callout answers due within
/// [`crate::callouts::UNDELAYED_ANSWER_AFTER`] of now, advancing the VMs'
/// clocks to the last of them.
fn answers_before_upstream(d: &mut Driver<'_, '_>) -> Result<(), Halt> {
    let window = u64::try_from(crate::callouts::UNDELAYED_ANSWER_AFTER.as_nanos()).unwrap_or(0);
    let dt = d
        .lanes
        .iter()
        .filter_map(|l| l.vm.as_deref())
        .filter_map(|vm| {
            let due = vm
                .next_callout_due()?
                .saturating_sub(vm.state().clock().monotonic);
            (due <= window).then_some(due)
        })
        .max();
    let Some(dt) = dt.map(std::time::Duration::from_nanos) else {
        return Ok(());
    };
    for j in 0..d.lanes.len() {
        if let Err(e) = d.call_vm(j, |vm, _| vm.advance_clock(dt)) {
            d.failed(j, e)?;
        }
    }
    Ok(())
}

fn stall(d: &mut Driver<'_, '_>, dir: Direction) {
    if let Some((i, cb)) = d.holder(dir) {
        d.out.stalled_in = Some(cb);
        d.step(i, format!("held the stream in {cb} and never resumed"));
    } else {
        d.out.stalled_in = Some(if dir.is_response() {
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
    let reply = local_reply(&l, &d.req.headers);
    for p in &mut d.st {
        p.resp = Port::default();
    }
    d.resp.headers = response_map(reply.status, &reply.headers);
    d.resp.trailers = None;
    d.resp.started = true;
    d.resp_body_len = reply.body.len();
    let chunks = ChunkPlan::Whole.split(&reply.body);
    match respond(d, chunks) {
        Err(Halt::Reset(cb) | Halt::Hang(cb)) => d.out.reset_in = Some(cb),
        Err(Halt::Local(next)) => {
            // A filter answered (or failed: its 503) while the reply was
            // encoded. Envoy's filter manager already holds the reply's
            // headers, so it sends the new one straight to the client
            // (`sendDirectLocalReply`; no filter sees it), or resets the
            // stream when the headers already went out.
            if d.resp.out_headers.is_some() {
                d.out.reset_in = Some("the response (local reply after headers were sent)");
            } else {
                d.out.client_response = local_reply(&next, &d.req.headers);
                frame_headers_only(&mut d.out.client_response, &d.req.headers);
            }
            d.out.replaced_local = d.out.local_response.replace(next);
        }
        Ok(()) => {
            client_response(d);
            if d.resp.to_outcome {
                // The reply becomes the outcome's when the exchange ends
                // (`settle`), framed then.
                d.resp.frame_reply = Some(is_head_request(&d.req.headers));
            } else if d.out.client_response.status != NO_RESPONSE && !d.out.client_stream_open {
                frame_headers_only(&mut d.out.client_response, &d.req.headers);
            }
        }
    }
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
            d.step(i, "context created for the access log only".to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_uppercase_agrees_with_the_bytewise_check() {
        // Every byte value at every position of words and remainders.
        for len in [1usize, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = byte;
                    assert_eq!(
                        has_uppercase(&b),
                        b.iter().any(u8::is_ascii_uppercase),
                        "{b:?}"
                    );
                }
            }
        }
        assert!(!has_uppercase(b""));
    }

    fn pairs(names: &[&str]) -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (n.to_string(), "v".to_string()))
            .collect()
    }

    #[test]
    fn movable_refuses_what_a_map_would_change() {
        let inline = crate::abi::REQUEST_INLINE;
        assert!(movable(
            &pairs(&["accept", "x-a", "x-b", "user-agent"]),
            inline
        ));
        // Repeated names the codec does not fold stay movable.
        assert!(movable(&pairs(&["x-a", "cookie", "x-a", "cookie"]), inline));
        // A repeated inline header is folded: not movable.
        assert!(!movable(&pairs(&["via", "x-a", "via"]), inline));
        assert!(!movable(&pairs(&["accept", "Accept-Encoding"]), inline));
        assert!(!movable(&pairs(&["x-a", ":path"]), inline));
        // Many distinct names (summary collisions) and one repeat at the end.
        let many: Vec<String> = (0..80).map(|i| format!("x-h{i}")).collect();
        let mut names: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(movable(&pairs(&names), inline));
        names.push("accept");
        names.push("accept");
        assert!(!movable(&pairs(&names), inline));
    }

    #[test]
    fn chunks_kept_whole_cut_as_the_plan_splits() {
        let body = b"0123456789".to_vec();
        for plan in [
            ChunkPlan::Whole,
            ChunkPlan::Http1,
            ChunkPlan::Chunks(3),
            ChunkPlan::Sizes(vec![4, 0]),
        ] {
            for trailers in [false, true] {
                for b in [&body[..], &[][..]] {
                    let c = Chunks::new(&plan, b, trailers);
                    let got: Vec<Vec<u8>> = (0..c.len()).map(|j| c.chunk(j, b)).collect();
                    let mut want = plan.split(b);
                    if trailers && want.len() > 1 && want.last().is_some_and(Vec::is_empty) {
                        want.pop();
                    }
                    assert_eq!(got, want, "{plan:?}, trailers {trailers}");
                }
            }
        }
    }
}
