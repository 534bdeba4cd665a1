//! Callouts: the per-cluster answers the harness gives `proxy_http_call`,
//! `proxy_grpc_call` and `proxy_grpc_stream`, and their delivery on the
//! VM's virtual clock.
//!
//! The harness has no clusters; a cluster exists when a stub names it
//! ([`HttpClusterStub`], [`GrpcClusterStub`]), or through the catch-all
//! `http_call_stub` / `grpc_call_stubs` of [`crate::state::VmSettings`], or a
//! replayed exchange's recorded answer. A call to any other cluster is
//! refused as Envoy refuses a cluster it does not know (`BadArgument` for
//! http, `ParseFailure` for gRPC).
//!
//! Answers behave as Envoy 1.40 (proxy-wasm-cpp-host) delivers them:
//! - tokens as Envoy numbers them: http calls `4, 8, 12...`, unary gRPC calls
//!   `5, 9, 13...`, gRPC streams `6, 10, 14...` (the low two bits say which);
//! - calls are owned by the root context (cpp-host makes them on
//!   `root_context()`), so every callback runs as the root context with the
//!   root context's id; the guest sets the effective context itself (the
//!   Rust SDK does) to act on the stream that made the call. A call outlives
//!   the stream that made it;
//! - an answer with no delay of its own, to a call made while a stream is
//!   processed, comes [`UNDELAYED_ANSWER_AFTER`] later by default
//!   ([`AnswerTiming::AfterInput`]): a real service never answers in zero
//!   time, so what the client already sent (the body) reaches the filters
//!   first, as in Envoy; [`AnswerTiming::Immediate`] (suite
//!   `callout_answers: immediate`, `tollgate replay --immediate-callout-answers`)
//!   delivers it right after the callback that made the call returns (calls
//!   made outside a stream, e.g. at start-up, are always answered so);
//!   with a delay, when the virtual clock has advanced that
//!   much ([`crate::vm::Vm::advance_clock`], or the stream driver waiting for
//!   it while a filter holds the stream); answers and ticks interleave in
//!   time order;
//! - http: a response is `proxy_on_http_call_response` with its headers
//!   (`:status` first, a repeated inline header folded into one value as
//!   Envoy's codec does), body and trailers; a reset ([`HttpAnswer::Reset`],
//!   Envoy's `onFailure`) has 0 headers, 0 body, 0 trailers (a header value
//!   is `BadArgument`, the pairs are empty, the body `NotFound`) and
//!   `proxy_get_status` says `BrokenConnection` (11) `"reset"` (the code
//!   stays for later callbacks, the message does not, as in Envoy); a
//!   service closing before answering is the router's 503 `... connection
//!   termination` ([`HttpClusterStub::closed_before_answer`]); a connection
//!   failure is the 503 local reply Envoy's router gives; a delay beyond the
//!   call's own `timeout_ms` (when not 0) is the router's 504 `upstream
//!   request timeout`, delivered when the timeout expires (both checked with
//!   Envoy 1.40: `:status`, `content-length`, `content-type: text/plain`,
//!   `proxy_get_status` 0, on the root context with token 4; all of them
//!   compared with Envoy by `tests/tests/it/callout_parity.rs`);
//! - unary gRPC: status 0 is `proxy_on_grpc_receive` with the first message,
//!   any other status `proxy_on_grpc_close` (`proxy_get_status` gives status
//!   and message); a delay beyond the call's timeout closes with 14
//!   (UNAVAILABLE, what Envoy maps its 504 local reply to) `upstream request
//!   timeout`;
//! - gRPC streams: once the guest sent its first message (or closed its
//!   side), after the delay: `proxy_on_grpc_receive_initial_metadata`, one
//!   `proxy_on_grpc_receive` per message, `proxy_on_grpc_receive_trailing_metadata`,
//!   `proxy_on_grpc_close`, as Envoy's gRPC async stream calls them: the
//!   initial metadata start with `:status: 200` and `content-type:
//!   application/grpc`, the trailing metadata with `grpc-status` (and
//!   `grpc-message`); a failure without initial metadata or messages is a
//!   trailers-only answer (empty initial metadata, every header of the one
//!   frame as trailing metadata). The close message carries Envoy's response
//!   code details: `denied{via_upstream}`, `via_upstream` alone without a
//!   message, the router's details when Envoy answered (connection refused,
//!   timeout); checked live by `tests/tests/it/grpc_parity.rs`. `proxy_grpc_cancel` drops
//!   what is left; `proxy_grpc_close` half-closes (the answers still come).
//!   A service that speaks first ([`tollgate_traffic::stubs::StreamOpening::ServerFirst`])
//!   answers as soon as the stream is open, whatever the guest sends.

use crate::state::{HeaderMap, HttpCallResponse};

/// The virtual time an answer without a delay of its own takes under
/// [`AnswerTiming::AfterInput`].
pub const UNDELAYED_ANSWER_AFTER: Duration = Duration::from_millis(1);

/// When a callout answer with no delay of its own arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnswerTiming {
    /// After [`UNDELAYED_ANSWER_AFTER`] of virtual time, for a call made
    /// while a stream is processed: the input the client already sent (its
    /// body, trailers) reaches the filters first, as with a real service
    /// behind Envoy.
    #[default]
    AfterInput,
    /// Right after the callback that made the call returns (the harness's
    /// earlier ordering).
    Immediate,
}

impl AnswerTiming {
    /// The delay an answer takes: `delay` when it has one, else as the
    /// timing says for a call made `in_stream` or not.
    pub fn delay(self, delay: Duration, in_stream: bool) -> Duration {
        if delay.is_zero() && in_stream && self == Self::AfterInput {
            UNDELAYED_ANSWER_AFTER
        } else {
            delay
        }
    }
}
use crate::vm::{CallError, Vm};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

pub use tollgate_traffic::stubs::{
    CLOSED_BEFORE_ANSWER_BODY, CONNECT_FAILURE_BODY, GRPC_UNAVAILABLE, GrpcClusterStub, HttpAnswer,
    HttpClusterStub, RESET_STATUS, TIMEOUT_BODY, TIMEOUT_DETAILS, grpc_close_message,
};

/// The stub for a legacy [`crate::state::GrpcCallStub`].
pub(crate) fn grpc_stub_from_call_stub(
    s: &crate::state::GrpcCallStub,
    cluster: &str,
) -> GrpcClusterStub {
    let mut out = GrpcClusterStub::fail(cluster, s.status, &s.status_message);
    if s.status == 0 {
        out.messages.push(s.message.clone());
    }
    out
}

/// One answer waiting for its time.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    HttpResponse(HttpCallResponse),
    HttpReset,
    GrpcInitialMetadata(HeaderMap),
    GrpcMessage(Vec<u8>),
    GrpcTrailingMetadata(HeaderMap),
    GrpcClose(u32, String),
}

impl Event {
    /// The guest callback that receives the event.
    fn callback(&self) -> &'static str {
        match self {
            Self::HttpResponse(_) | Self::HttpReset => "proxy_on_http_call_response",
            Self::GrpcInitialMetadata(_) => "proxy_on_grpc_receive_initial_metadata",
            Self::GrpcMessage(_) => "proxy_on_grpc_receive",
            Self::GrpcTrailingMetadata(_) => "proxy_on_grpc_receive_trailing_metadata",
            Self::GrpcClose(..) => "proxy_on_grpc_close",
        }
    }
}

#[derive(Debug, Clone)]
struct Scheduled {
    due: u64,
    seq: u64,
    token: u32,
    event: Event,
}

/// A gRPC stream the guest opened.
#[derive(Debug, Clone)]
struct OpenStream {
    stub: GrpcClusterStub,
    answered: bool,
    local_closed: bool,
    remote_closed: bool,
}

/// The callouts of one VM: tokens, open gRPC calls and streams, answers
/// waiting for their time (monotonic ns).
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    next_http: u32,
    next_grpc_call: u32,
    next_grpc_stream: u32,
    seq: u64,
    queue: Vec<Scheduled>,
    grpc_calls: HashSet<u32>,
    grpc_streams: HashMap<u32, OpenStream>,
    records: Vec<CalloutRecord>,
    /// Callouts dispatched since the VM started (see [`crate::limits`]).
    pub(crate) dispatched: u64,
}

/// A callout the guest made, as it asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutRecord {
    /// The filter that made it (its file name), set by the stream driver.
    pub filter: String,
    /// `http`, `grpc` (unary) or `grpc-stream`.
    pub kind: &'static str,
    /// The cluster.
    pub cluster: String,
    /// Request headers (http, pseudo-headers included) or initial metadata (gRPC).
    pub headers: Vec<(String, String)>,
    /// Request body (http) or message (unary gRPC).
    pub body: Vec<u8>,
    /// `service/method` for gRPC, empty for http.
    pub method: String,
    /// The call's `timeout_ms` (0: none).
    pub timeout_ms: u32,
    /// Whether the host accepted it (`Ok` and a token).
    pub accepted: bool,
}

/// Why a gRPC token operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not a token of that kind (`BadArgument`).
    WrongKind,
    /// No such call or stream (`NotFound`).
    Unknown,
}

const HTTP: u32 = 0;
const GRPC_CALL: u32 = 1;
const GRPC_STREAM: u32 = 2;

fn kind(token: u32) -> u32 {
    token & 3
}

fn answer_response(status: u16, headers: &[(String, String)], body: &[u8]) -> HttpCallResponse {
    let mut pairs = vec![(":status".to_string(), status.to_string())];
    pairs.extend(headers.iter().cloned());
    HttpCallResponse {
        // Envoy's codec folds a repeated inline header (`cache-control`
        // twice is one `a,b`) in a callout's response as in any response.
        headers: HeaderMap::from_pairs(crate::abi::fold_inline(pairs, crate::abi::RESPONSE_INLINE)),
        body: body.to_vec(),
        trailers: HeaderMap::default(),
    }
}

/// The event that delivers `answer`.
pub(crate) fn http_event(answer: &HttpAnswer) -> Event {
    match answer {
        HttpAnswer::Response {
            status,
            headers,
            body,
            trailers,
        } => {
            let mut r = answer_response(*status, headers, body);
            r.trailers = HeaderMap::from_pairs(trailers.iter().cloned());
            Event::HttpResponse(r)
        }
        HttpAnswer::Reset => Event::HttpReset,
        HttpAnswer::ConnectFailure => Event::HttpResponse(local_reply(503, CONNECT_FAILURE_BODY)),
    }
}

fn local_reply(status: u16, body: &str) -> HttpCallResponse {
    answer_response(
        status,
        &[
            ("content-length".into(), body.len().to_string()),
            ("content-type".into(), "text/plain".into()),
        ],
        body.as_bytes(),
    )
}

impl Outstanding {
    fn push(&mut self, due: u64, token: u32, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            due,
            seq: self.seq,
            token,
            event,
        });
    }

    /// Starts an http call answered by `answer` after `delay`, given the
    /// call's timeout (0: none). Returns the token.
    #[cfg(test)]
    pub(crate) fn http_call(
        &mut self,
        now: u64,
        answer: &HttpAnswer,
        delay: Duration,
        timeout_ms: u32,
    ) -> u32 {
        self.http_call_with(now, http_event(answer), delay, timeout_ms)
    }

    /// Starts an http call answered with `event` after `delay` (or Envoy's
    /// 504 when the call's timeout, if not 0, expires first). Returns the token.
    pub(crate) fn http_call_with(
        &mut self,
        now: u64,
        event: Event,
        delay: Duration,
        timeout_ms: u32,
    ) -> u32 {
        self.dispatched += 1;
        self.next_http = self.next_http.wrapping_add(4);
        let token = (self.next_http & !3) | HTTP;
        let delay_ns = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let timeout_ns = u64::from(timeout_ms) * 1_000_000;
        let (due, event) = if timeout_ms > 0 && delay_ns > timeout_ns {
            (
                now.saturating_add(timeout_ns),
                Event::HttpResponse(local_reply(504, TIMEOUT_BODY)),
            )
        } else {
            (now.saturating_add(delay_ns), event)
        };
        self.push(due, token, event);
        token
    }

    /// Records a callout the guest made (refused ones included).
    pub(crate) fn record(&mut self, record: CalloutRecord) {
        self.records.push(record);
    }

    /// The callouts recorded so far, emptied.
    pub(crate) fn take_records(&mut self) -> Vec<CalloutRecord> {
        std::mem::take(&mut self.records)
    }

    /// Starts a unary gRPC call answered by `stub`. Returns the token.
    pub(crate) fn grpc_call(&mut self, now: u64, stub: &GrpcClusterStub, timeout_ms: u32) -> u32 {
        self.dispatched += 1;
        self.next_grpc_call = self.next_grpc_call.wrapping_add(4);
        let token = (self.next_grpc_call & !3) | GRPC_CALL;
        self.grpc_calls.insert(token);
        let delay_ns = u64::try_from(stub.delay.as_nanos()).unwrap_or(u64::MAX);
        let timeout_ns = u64::from(timeout_ms) * 1_000_000;
        if timeout_ms > 0 && delay_ns > timeout_ns {
            let message = grpc_close_message(TIMEOUT_BODY, TIMEOUT_DETAILS);
            let event = Event::GrpcClose(GRPC_UNAVAILABLE, message);
            self.push(now.saturating_add(timeout_ns), token, event);
        } else if stub.status == 0 {
            let message = stub.messages.first().cloned().unwrap_or_default();
            self.push(
                now.saturating_add(delay_ns),
                token,
                Event::GrpcMessage(message),
            );
        } else {
            let message = grpc_close_message(&stub.status_message, stub.close_details());
            let event = Event::GrpcClose(stub.status, message);
            self.push(now.saturating_add(delay_ns), token, event);
        }
        token
    }

    /// Opens a gRPC stream answered by `stub` (at once when the service
    /// speaks first). Returns the token.
    pub(crate) fn grpc_stream(&mut self, now: u64, stub: GrpcClusterStub) -> u32 {
        self.dispatched += 1;
        self.next_grpc_stream = self.next_grpc_stream.wrapping_add(4);
        let token = (self.next_grpc_stream & !3) | GRPC_STREAM;
        let opening = stub.opening;
        self.grpc_streams.insert(
            token,
            OpenStream {
                stub,
                answered: false,
                local_closed: false,
                remote_closed: false,
            },
        );
        if opening == tollgate_traffic::stubs::StreamOpening::ServerFirst {
            self.answer_stream(now, token);
        }
        token
    }

    /// The server's answer to stream `token` starts (first message or half-close).
    fn answer_stream(&mut self, now: u64, token: u32) {
        let Some(s) = self.grpc_streams.get_mut(&token) else {
            return;
        };
        if s.answered {
            return;
        }
        s.answered = true;
        let stub = s.stub.clone();
        let due = now.saturating_add(u64::try_from(stub.delay.as_nanos()).unwrap_or(u64::MAX));
        let status = stub.status.to_string();
        let grpc_headers = [
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "application/grpc".to_string()),
        ];
        let mut trailing = vec![("grpc-status".to_string(), status)];
        if !stub.status_message.is_empty() {
            trailing.push(("grpc-message".to_string(), stub.status_message.clone()));
        }
        trailing.extend(stub.trailing_metadata.iter().cloned());
        if stub.trailers_only() {
            // One HEADERS frame: Envoy hands over empty initial metadata and
            // the whole frame (`:status`, `content-type` too) as trailers.
            self.push(due, token, Event::GrpcInitialMetadata(HeaderMap::default()));
            let all = grpc_headers.iter().cloned().chain(trailing);
            self.push(
                due,
                token,
                Event::GrpcTrailingMetadata(HeaderMap::from_pairs(all)),
            );
        } else {
            let initial = grpc_headers
                .iter()
                .cloned()
                .chain(stub.initial_metadata.iter().cloned());
            self.push(
                due,
                token,
                Event::GrpcInitialMetadata(HeaderMap::from_pairs(initial)),
            );
            for m in &stub.messages {
                self.push(due, token, Event::GrpcMessage(m.clone()));
            }
            self.push(
                due,
                token,
                Event::GrpcTrailingMetadata(HeaderMap::from_pairs(trailing)),
            );
        }
        let message = grpc_close_message(&stub.status_message, stub.close_details());
        self.push(due, token, Event::GrpcClose(stub.status, message));
    }

    /// `proxy_grpc_send`.
    pub(crate) fn grpc_send(&mut self, now: u64, token: u32, end: bool) -> Result<(), TokenError> {
        if kind(token) != GRPC_STREAM {
            return Err(TokenError::WrongKind);
        }
        let s = self
            .grpc_streams
            .get_mut(&token)
            .ok_or(TokenError::Unknown)?;
        if end {
            s.local_closed = true;
        }
        self.answer_stream(now, token);
        Ok(())
    }

    /// `proxy_grpc_close`: a unary call is cancelled; a stream is half-closed
    /// (forgotten once the server closed too).
    pub(crate) fn grpc_close(&mut self, now: u64, token: u32) -> Result<(), TokenError> {
        match kind(token) {
            GRPC_CALL => self.grpc_cancel(token),
            GRPC_STREAM => {
                let s = self
                    .grpc_streams
                    .get_mut(&token)
                    .ok_or(TokenError::Unknown)?;
                if s.remote_closed {
                    self.grpc_streams.remove(&token);
                } else {
                    s.local_closed = true;
                    self.answer_stream(now, token);
                }
                Ok(())
            }
            _ => Err(TokenError::WrongKind),
        }
    }

    /// `proxy_grpc_cancel`: forgets the call or stream; nothing more is delivered.
    pub(crate) fn grpc_cancel(&mut self, token: u32) -> Result<(), TokenError> {
        let known = match kind(token) {
            GRPC_CALL => self.grpc_calls.remove(&token),
            GRPC_STREAM => self.grpc_streams.remove(&token).is_some(),
            _ => return Err(TokenError::WrongKind),
        };
        if !known {
            return Err(TokenError::Unknown);
        }
        self.queue.retain(|s| s.token != token);
        Ok(())
    }

    /// The earliest time an answer is due.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.queue.iter().map(|s| s.due).min()
    }

    /// Takes the first answer due at or before `now` (time order, then call order).
    fn pop_due(&mut self, now: u64) -> Option<(u32, Event)> {
        let at = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, s)| s.due <= now)
            .min_by_key(|(_, s)| (s.due, s.seq))
            .map(|(i, _)| i)?;
        let s = self.queue.remove(at);
        match &s.event {
            Event::GrpcMessage(_) if kind(s.token) == GRPC_CALL => {
                self.grpc_calls.remove(&s.token);
            }
            Event::GrpcClose(..) => {
                if kind(s.token) == GRPC_CALL {
                    self.grpc_calls.remove(&s.token);
                } else if let Some(st) = self.grpc_streams.get_mut(&s.token) {
                    if st.local_closed {
                        self.grpc_streams.remove(&s.token);
                    } else {
                        st.remote_closed = true;
                    }
                }
            }
            _ => {}
        }
        Some((s.token, s.event))
    }
}

impl crate::state::HostState {
    /// The callouts made so far, with what they asked for, emptied.
    pub fn take_callout_records(&mut self) -> Vec<CalloutRecord> {
        self.outstanding.take_records()
    }
}

/// Most answers delivered in one go (a guest answering each answer with a
/// new immediate call would otherwise never stop).
const MAX_DELIVERIES: usize = 1_000;

impl Vm {
    /// The virtual (monotonic) time at which the next callout answer is due,
    /// in ns; `None` when no answer is waiting.
    pub fn next_callout_due(&self) -> Option<u64> {
        self.state().outstanding.next_due()
    }

    /// Delivers every callout answer due by now, in time order. Returns
    /// whether any was delivered.
    pub(crate) fn deliver_due_callouts(&mut self) -> Result<bool, CallError> {
        let mut any = false;
        let budget = &mut self.state_mut().exchange_budget;
        if budget.started.is_none() {
            // The wall-time bound counts from the exchange's first delivery.
            budget.started = Some(std::time::Instant::now());
        }
        for _ in 0..MAX_DELIVERIES {
            let now = self.state().clock.monotonic;
            let Some((token, event)) = self.state_mut().outstanding.pop_due(now) else {
                break;
            };
            any = true;
            let callback = event.callback();
            self.deliver(token, event)?;
            if let Some(overrun) = self.exchange_overrun() {
                // The storm ends here: nothing it scheduled is delivered.
                self.state_mut().outstanding.queue.clear();
                return Err(CallError {
                    callback,
                    message: overrun.to_string(),
                });
            }
        }
        Ok(any)
    }

    /// A new exchange starts: its callout and wall-time budgets start again.
    #[inline]
    pub(crate) fn begin_exchange(&mut self) {
        let state = self.state_mut();
        state.exchange_budget = crate::limits::ExchangeBudget {
            dispatched_at_start: state.outstanding.dispatched,
            started: None,
        };
    }

    /// The bound of [`crate::limits::Limits`] the current exchange passed, if any.
    pub(crate) fn exchange_overrun(&self) -> Option<crate::limits::Overrun> {
        let state = self.state();
        let limits = state.settings.limits;
        let budget = &state.exchange_budget;
        let dispatched = state
            .outstanding
            .dispatched
            .saturating_sub(budget.dispatched_at_start);
        if dispatched > limits.callouts_per_exchange {
            return Some(crate::limits::Overrun::Callouts {
                dispatched,
                limit: limits.callouts_per_exchange,
            });
        }
        if budget
            .started
            .is_some_and(|t| t.elapsed() > limits.exchange_wall)
        {
            return Some(crate::limits::Overrun::Wall {
                limit: limits.exchange_wall,
                dispatched,
            });
        }
        None
    }

    fn deliver(&mut self, token: u32, event: Event) -> Result<(), CallError> {
        let root = self.root_id();
        let cb = std::sync::Arc::clone(&self.cb);
        match event {
            Event::HttpResponse(r) => {
                let (nh, nb, nt) = (
                    r.headers.len() as u32,
                    r.body.len() as u32,
                    r.trailers.len() as u32,
                );
                self.state_mut().http_call_response = Some(r);
                let out = match &cb.on_http_call_response {
                    Some(f) => self
                        .call(
                            "proxy_on_http_call_response",
                            root,
                            f,
                            (root, token, nh, nb, nt),
                        )
                        .map(drop),
                    None => Ok(()),
                };
                self.state_mut().http_call_response = None;
                out
            }
            Event::HttpReset => {
                // No response (Envoy 1.40): pairs are empty, values
                // BadArgument, the body NotFound; the status says why.
                self.state_mut().http_call_reset = true;
                self.state_mut().grpc_status = (RESET_STATUS, "reset".into());
                let out = match &cb.on_http_call_response {
                    Some(f) => self
                        .call(
                            "proxy_on_http_call_response",
                            root,
                            f,
                            (root, token, 0, 0, 0),
                        )
                        .map(drop),
                    None => Ok(()),
                };
                let state = self.state_mut();
                state.http_call_reset = false;
                state.grpc_status.1.clear();
                out
            }
            Event::GrpcInitialMetadata(m) => {
                let n = m.len() as u32;
                self.state_mut().grpc_initial_metadata = Some(m);
                let out = match &cb.on_grpc_receive_initial_metadata {
                    Some(f) => self.call(
                        "proxy_on_grpc_receive_initial_metadata",
                        root,
                        f,
                        (root, token, n),
                    ),
                    None => Ok(()),
                };
                self.state_mut().grpc_initial_metadata = None;
                out
            }
            Event::GrpcMessage(m) => {
                let n = m.len() as u32;
                self.state_mut().grpc_receive = Some(m);
                let out = match &cb.on_grpc_receive {
                    Some(f) => self.call("proxy_on_grpc_receive", root, f, (root, token, n)),
                    None => Ok(()),
                };
                self.state_mut().grpc_receive = None;
                out
            }
            Event::GrpcTrailingMetadata(m) => {
                let n = m.len() as u32;
                self.state_mut().grpc_trailing_metadata = Some(m);
                let out = match &cb.on_grpc_receive_trailing_metadata {
                    Some(f) => self.call(
                        "proxy_on_grpc_receive_trailing_metadata",
                        root,
                        f,
                        (root, token, n),
                    ),
                    None => Ok(()),
                };
                self.state_mut().grpc_trailing_metadata = None;
                out
            }
            Event::GrpcClose(status, message) => {
                self.state_mut().grpc_status = (status, message);
                let out = match &cb.on_grpc_close {
                    Some(f) => self.call("proxy_on_grpc_close", root, f, (root, token, status)),
                    None => Ok(()),
                };
                self.state_mut().grpc_status.1.clear();
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_envoys_numbering() {
        let mut o = Outstanding::default();
        let a = HttpAnswer::Reset;
        assert_eq!(o.http_call(0, &a, Duration::ZERO, 0), 4);
        assert_eq!(o.http_call(0, &a, Duration::ZERO, 0), 8);
        let g = GrpcClusterStub::ok("c");
        assert_eq!(o.grpc_call(0, &g, 0), 5);
        assert_eq!(o.grpc_stream(0, g.clone()), 6);
        assert_eq!(o.grpc_stream(0, g), 10);
    }

    #[test]
    fn a_repeated_inline_header_of_an_answer_is_folded_as_envoy_does() {
        let stub = HttpClusterStub::respond("c", 200)
            .header("cache-control", "no-cache")
            .header("x-svc", "1")
            .header("cache-control", "no-store")
            .header("x-svc", "2");
        let Event::HttpResponse(r) = http_event(&stub.answer) else {
            panic!("not a response");
        };
        let got: Vec<(&str, &str)> = r
            .headers
            .entries()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (":status", "200"),
                ("cache-control", "no-cache,no-store"),
                ("x-svc", "1"),
                ("x-svc", "2"),
            ]
        );
    }

    #[test]
    fn a_delay_beyond_the_timeout_answers_504_at_the_timeout() {
        let mut o = Outstanding::default();
        let answer = HttpClusterStub::respond("c", 200).answer;
        o.http_call(1000, &answer, Duration::from_millis(300), 100);
        assert_eq!(o.next_due(), Some(1000 + 100_000_000));
        assert!(o.pop_due(1000).is_none());
        match o.pop_due(u64::MAX) {
            Some((4, Event::HttpResponse(r))) => {
                assert_eq!(r.headers.get(":status"), Some("504"));
                assert_eq!(r.body, TIMEOUT_BODY.as_bytes());
            }
            other => panic!("{other:?}"),
        }
        // Within the timeout: the stub's answer at its delay.
        o.http_call(0, &answer, Duration::from_millis(50), 100);
        assert_eq!(o.next_due(), Some(50_000_000));
    }

    #[test]
    fn stream_answers_come_in_envoys_order_and_cancel_drops_them() {
        let mut o = Outstanding::default();
        let stub = GrpcClusterStub::ok("c")
            .initial("x-a", "1")
            .message(b"m1".to_vec())
            .message(b"m2".to_vec())
            .trailing("x-t", "2");
        let t = o.grpc_stream(0, stub.clone());
        assert!(o.next_due().is_none(), "nothing before the first message");
        assert_eq!(o.grpc_send(0, 5, false), Err(TokenError::WrongKind));
        assert_eq!(o.grpc_send(0, 14, false), Err(TokenError::Unknown));
        o.grpc_send(0, t, false).unwrap();
        let mut order = Vec::new();
        while let Some((_, e)) = o.pop_due(0) {
            order.push(match e {
                Event::GrpcInitialMetadata(_) => "initial".to_string(),
                Event::GrpcMessage(m) => String::from_utf8(m).unwrap(),
                Event::GrpcTrailingMetadata(_) => "trailing".into(),
                Event::GrpcClose(s, _) => format!("close {s}"),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(order, ["initial", "m1", "m2", "trailing", "close 0"]);
        // The server closed, the guest has not: close forgets it.
        assert_eq!(o.grpc_close(0, t), Ok(()));
        assert_eq!(o.grpc_close(0, t), Err(TokenError::Unknown));
        let t2 = o.grpc_stream(0, stub);
        o.grpc_send(0, t2, true).unwrap();
        assert_eq!(o.grpc_cancel(t2), Ok(()));
        assert!(o.next_due().is_none());
        assert_eq!(o.grpc_cancel(t2), Err(TokenError::Unknown));
        assert_eq!(o.grpc_cancel(4), Err(TokenError::WrongKind));
    }
}
