//! HTTP callouts: a filter asks another cluster (an authorization service, a JWKS endpoint...)
//! and decides what to do with the stream when the answer arrives.
//!
//! A filter keeps a [`Callouts`] queue and exposes it through
//! [`HttpFilter::callouts`](crate::HttpFilter::callouts). In a callback it calls
//! [`Callouts::dispatch`] with a typed [`CalloutRequest`] and a continuation; when the callback
//! returns, the SDK sends every queued request with `proxy_http_call` (pseudo-headers `:method`,
//! `:path`, `:authority` and `:scheme` filled in from the request) and **pauses the stream**.
//! When the answer (a [`CalloutResponse`]) or a failure (a [`CalloutError`]) arrives, the SDK runs
//! the continuation with the filter and a [`Request`] view of the request headers; the
//! continuation returns [`Action::Continue`] to resume the stream, or answers the client with
//! [`Request::send_response`].
//!
//! Envoy answers a call it cannot start with a bare `BadArgument`; the SDK checks the request first
//! (missing `:authority`, bad header names...) so that what remains is reported as
//! [`CalloutError::UnknownCluster`]. A timeout or a connection failure is reported by Envoy as a
//! response without `:status` ([`CalloutError::NoResponse`]) or, for failures inside Envoy's
//! async client, as a local 503/504 response from Envoy itself.
//!
//! Natively, nothing is sent: tests take the queued calls with [`Callouts::take`] and complete
//! them with [`PendingCallout::complete`], exactly as the SDK does inside the proxy.
//!
//! ```
//! use std::rc::Rc;
//! use std::time::Duration;
//! use tollgate_sdk::callout::{CalloutRequest, CalloutResponse, Callouts};
//! use tollgate_sdk::{Action, HeaderList, HttpFilter, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {}
//! impl tollgate_sdk::FilterConfig for Config {}
//!
//! /// Asks `authz` about every request; 200 lets it through, anything else is a 403.
//! struct Ask {
//!     callouts: Callouts<Self>,
//! }
//!
//! impl HttpFilter for Ask {
//!     const NAME: &'static str = "ask";
//!     type Config = Config;
//!     fn new(_config: Rc<Config>) -> Self {
//!         Ask { callouts: Callouts::new() }
//!     }
//!     fn callouts(&mut self) -> Option<&mut Callouts<Self>> {
//!         Some(&mut self.callouts)
//!     }
//!     fn on_request_headers(&mut self, req: &mut Request<'_>, _eos: bool) -> Action {
//!         let path = req.path().unwrap_or_default();
//!         let call = CalloutRequest::get("authz", "authz.local", &path)
//!             .with_timeout(Duration::from_millis(200));
//!         self.callouts.dispatch(call, |_filter: &mut Ask, req: &mut Request<'_>, result| {
//!             match result {
//!                 Ok(resp) if resp.status == 200 => Action::Continue,
//!                 _ => {
//!                     req.send_response(403, &[], "denied\n");
//!                     Action::Pause
//!                 }
//!             }
//!         });
//!         Action::Pause
//!     }
//! }
//!
//! // Natively: run the callback, then answer the queued call by hand.
//! let mut filter = Ask::new(Rc::new(Config {}));
//! let mut headers = HeaderList::from([(":path", "/admin")]);
//! filter.on_request_headers(&mut Request::new(&mut headers), true);
//! let mut calls = filter.callouts.take();
//! assert_eq!(calls.len(), 1);
//! assert_eq!(calls[0].request().path, "/admin");
//! let call = calls.remove(0);
//! let mut req = Request::new(&mut headers);
//! let action = call.complete(&mut filter, &mut req, Ok(CalloutResponse::new(401, vec![], b"no".to_vec())));
//! assert_eq!(action, Action::Pause);
//! assert_eq!(req.local_reply().map(|r| r.status), Some(403));
//! ```

use std::fmt;
use std::time::Duration;

use crate::filter::Action;
use crate::headers::{self, HeaderError};
use crate::http::Request;

/// Timeout used when a [`CalloutRequest`] does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// An HTTP request to another cluster.
///
/// ```
/// use std::time::Duration;
/// let call = tollgate_sdk::callout::CalloutRequest::post("authz", "authz.internal", "/check", b"{}".to_vec())
///     .with_header("content-type", "application/json")
///     .with_timeout(Duration::from_millis(250));
/// assert_eq!(call.method, "POST");
/// assert!(call.check().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutRequest {
    /// The Envoy cluster to send it to (must exist in the proxy's configuration).
    pub cluster: String,
    /// `:method`.
    pub method: String,
    /// `:path` (path and query).
    pub path: String,
    /// `:authority` (the `Host`); Envoy refuses a call without one.
    pub authority: String,
    /// `:scheme`, `http` unless set.
    pub scheme: String,
    /// Regular headers (no pseudo-headers).
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
    /// How long Envoy waits for the whole answer.
    pub timeout: Duration,
}

impl CalloutRequest {
    /// A request with `method` to `cluster`, no headers or body, the default timeout.
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::new("PUT", "store", "store.local", "/k");
    /// assert_eq!((call.method.as_str(), call.scheme.as_str()), ("PUT", "http"));
    /// ```
    pub fn new(method: &str, cluster: &str, authority: &str, path: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            authority: authority.to_string(),
            scheme: "http".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A `GET` request.
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::get("jwks", "idp.example.com", "/.well-known/jwks.json");
    /// assert_eq!(call.method, "GET");
    /// ```
    pub fn get(cluster: &str, authority: &str, path: &str) -> Self {
        Self::new("GET", cluster, authority, path)
    }

    /// A `POST` request with `body`.
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::post("c", "h", "/", b"x".to_vec());
    /// assert_eq!(call.body, b"x");
    /// ```
    pub fn post(cluster: &str, authority: &str, path: &str, body: Vec<u8>) -> Self {
        Self::new("POST", cluster, authority, path).with_body(body)
    }

    /// Adds a header (kept in order; repeat the name for several values).
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::get("c", "h", "/").with_header("accept", "application/json");
    /// assert_eq!(call.headers, vec![("accept".to_string(), "application/json".to_string())]);
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::get("c", "h", "/").with_body(b"abc".to_vec());
    /// assert_eq!(call.body.len(), 3);
    /// ```
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Sets the timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let call = tollgate_sdk::callout::CalloutRequest::get("c", "h", "/").with_timeout(Duration::from_secs(3));
    /// assert_eq!(call.timeout, Duration::from_secs(3));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets `:scheme` (`http` or `https`).
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::get("c", "h", "/").with_scheme("https");
    /// assert_eq!(call.scheme, "https");
    /// ```
    pub fn with_scheme(mut self, scheme: &str) -> Self {
        self.scheme = scheme.to_string();
        self
    }

    /// Checks what Envoy would refuse with a bare `BadArgument`, naming the culprit.
    ///
    /// ```
    /// use tollgate_sdk::callout::{CalloutError, CalloutRequest};
    /// let err = CalloutRequest::get("jwks", "", "/keys").check().unwrap_err();
    /// assert_eq!(err, CalloutError::MissingPseudoHeader { cluster: "jwks".into(), name: ":authority" });
    /// ```
    pub fn check(&self) -> Result<(), CalloutError> {
        let missing = |name: &'static str| CalloutError::MissingPseudoHeader {
            cluster: self.cluster.clone(),
            name,
        };
        if self.cluster.is_empty() {
            return Err(CalloutError::UnknownCluster {
                cluster: String::new(),
            });
        }
        if self.method.is_empty() {
            return Err(missing(":method"));
        }
        if self.path.is_empty() {
            return Err(missing(":path"));
        }
        if self.authority.is_empty() {
            return Err(missing(":authority"));
        }
        if self.timeout.is_zero() || self.timeout.as_millis() > u128::from(u32::MAX) {
            return Err(CalloutError::BadTimeout {
                cluster: self.cluster.clone(),
                timeout: self.timeout,
            });
        }
        for (name, value) in &self.headers {
            if headers::is_pseudo_header(name) {
                return Err(CalloutError::BadHeader {
                    cluster: self.cluster.clone(),
                    name: name.clone(),
                    problem: "pseudo-headers are set from the request's fields".into(),
                });
            }
            let checked = headers::check_name(name).and_then(|()| headers::check_value(value));
            if let Err(err) = checked {
                return Err(CalloutError::BadHeader {
                    cluster: self.cluster.clone(),
                    name: name.clone(),
                    problem: header_problem(&err),
                });
            }
        }
        Ok(())
    }

    /// Every header sent, pseudo-headers first (what goes to `proxy_http_call`).
    ///
    /// ```
    /// let call = tollgate_sdk::callout::CalloutRequest::get("c", "h", "/p").with_header("x", "1");
    /// let names: Vec<&str> = call.wire_headers().into_iter().map(|(n, _)| n).collect();
    /// assert_eq!(names, vec![":method", ":path", ":authority", ":scheme", "x"]);
    /// ```
    pub fn wire_headers(&self) -> Vec<(&str, &str)> {
        let mut out = vec![
            (":method", self.method.as_str()),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            (":scheme", self.scheme.as_str()),
        ];
        out.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        out
    }
}

fn header_problem(err: &HeaderError) -> String {
    err.to_string()
}

/// The answer to a [`CalloutRequest`].
///
/// ```
/// let resp = tollgate_sdk::callout::CalloutResponse::new(200, vec![("X-User".into(), "ada".into())], vec![]);
/// assert_eq!(resp.header("x-user"), Some("ada"));
/// assert!(resp.is_success());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutResponse {
    /// The `:status` code.
    pub status: u16,
    /// Response headers, without `:status`.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl CalloutResponse {
    /// A response with these parts.
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::callout::CalloutResponse::new(204, vec![], vec![]).status, 204);
    /// ```
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// Builds a response from the header pairs the host returns (with `:status`); `None` when
    /// there is no valid `:status` (Envoy's way of reporting a reset or a timeout).
    ///
    /// ```
    /// use tollgate_sdk::callout::CalloutResponse;
    /// let resp = CalloutResponse::from_pairs(vec![(":status".into(), "404".into())], vec![]);
    /// assert_eq!(resp.map(|r| r.status), Some(404));
    /// assert!(CalloutResponse::from_pairs(vec![], vec![]).is_none());
    /// ```
    pub fn from_pairs(pairs: Vec<(String, String)>, body: Vec<u8>) -> Option<Self> {
        let status = pairs
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.trim().parse::<u16>().ok())
            .filter(|s| (100..=999).contains(s))?;
        let headers = pairs
            .into_iter()
            .filter(|(n, _)| !n.starts_with(':'))
            .collect();
        Some(Self::new(status, headers, body))
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// let resp = tollgate_sdk::callout::CalloutResponse::new(200, vec![("a".into(), "1".into())], vec![]);
    /// assert_eq!(resp.header("A"), Some("1"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for a 2xx status.
    ///
    /// ```
    /// assert!(!tollgate_sdk::callout::CalloutResponse::new(302, vec![], vec![]).is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a callout produced no response.
///
/// ```
/// let err = tollgate_sdk::callout::CalloutError::UnknownCluster { cluster: "authz".into() };
/// assert!(err.to_string().contains("unknown cluster `authz`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalloutError {
    /// Envoy refused the call (`BadArgument`) although the request was well-formed: the cluster
    /// is not in the proxy's configuration.
    #[error(
        "http callout to unknown cluster `{cluster}` (Envoy refused the call with BadArgument; add the cluster to the proxy configuration)"
    )]
    UnknownCluster {
        /// The cluster named in the request.
        cluster: String,
    },
    /// A pseudo-header Envoy requires is empty.
    #[error("http callout to cluster `{cluster}`: missing {name} (Envoy refuses calls without it)")]
    MissingPseudoHeader {
        /// The cluster named in the request.
        cluster: String,
        /// `:method`, `:path` or `:authority`.
        name: &'static str,
    },
    /// A header cannot be sent.
    #[error("http callout to cluster `{cluster}`: header {name:?}: {problem}")]
    BadHeader {
        /// The cluster named in the request.
        cluster: String,
        /// The header name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The timeout is zero or does not fit the ABI's 32-bit milliseconds.
    #[error(
        "http callout to cluster `{cluster}`: timeout {timeout:?} must be between 1 ms and 2^32 ms"
    )]
    BadTimeout {
        /// The cluster named in the request.
        cluster: String,
        /// The timeout asked for.
        timeout: Duration,
    },
    /// The host refused the call for another reason.
    #[error("http callout to cluster `{cluster}`: the host refused it ({status})")]
    Refused {
        /// The cluster named in the request.
        cluster: String,
        /// The host's status, e.g. `InternalFailure`.
        status: String,
    },
    /// The call was started but ended without a response (reset, timeout, connection failure).
    #[error(
        "http callout to cluster `{cluster}`: no response (connection failure, reset or timeout)"
    )]
    NoResponse {
        /// The cluster named in the request.
        cluster: String,
    },
}

/// What runs when a callout's answer arrives: gets the filter, the request headers and the result,
/// and returns whether the stream goes on.
pub type Continuation<F> =
    Box<dyn FnOnce(&mut F, &mut Request<'_>, Result<CalloutResponse, CalloutError>) -> Action>;

/// A callout queued by [`Callouts::dispatch`], not yet sent.
pub struct PendingCallout<F> {
    request: CalloutRequest,
    continuation: Continuation<F>,
}

impl<F> PendingCallout<F> {
    /// The request to send.
    ///
    /// ```
    /// use tollgate_sdk::callout::{CalloutRequest, Callouts};
    /// let mut queue: Callouts<()> = Callouts::new();
    /// queue.dispatch(CalloutRequest::get("c", "h", "/x"), |_, _, _| tollgate_sdk::Action::Continue);
    /// assert_eq!(queue.take()[0].request().path, "/x");
    /// ```
    pub fn request(&self) -> &CalloutRequest {
        &self.request
    }

    /// Runs the continuation with `result` (what the SDK does when the answer arrives; tests do
    /// it by hand).
    pub fn complete(
        self,
        filter: &mut F,
        req: &mut Request<'_>,
        result: Result<CalloutResponse, CalloutError>,
    ) -> Action {
        (self.continuation)(filter, req, result)
    }

    /// Splits into request and continuation.
    pub fn into_parts(self) -> (CalloutRequest, Continuation<F>) {
        (self.request, self.continuation)
    }
}

impl<F> fmt::Debug for PendingCallout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCallout")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// A filter's queue of callouts to send when the current callback returns.
///
/// ```
/// use tollgate_sdk::callout::{CalloutRequest, Callouts};
/// let mut queue: Callouts<u32> = Callouts::new();
/// assert!(queue.is_empty());
/// queue.dispatch(CalloutRequest::get("c", "h", "/"), |n: &mut u32, _, _| { *n += 1; tollgate_sdk::Action::Continue });
/// assert!(!queue.is_empty());
/// ```
pub struct Callouts<F> {
    pending: Vec<PendingCallout<F>>,
    /// Unary gRPC calls ([`crate::grpc`]).
    grpc: Vec<crate::grpc::PendingGrpc<F>>,
}

impl<F> Default for Callouts<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> fmt::Debug for Callouts<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(&self.pending)
            .entries(&self.grpc)
            .finish()
    }
}

impl<F> Callouts<F> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            pending: Vec::new(),
            grpc: Vec::new(),
        }
    }

    /// Queues `request`; `then` runs with its answer. Return [`Action::Pause`] from the callback
    /// (the SDK pauses the stream anyway while a call is outstanding).
    pub fn dispatch(
        &mut self,
        request: CalloutRequest,
        then: impl FnOnce(&mut F, &mut Request<'_>, Result<CalloutResponse, CalloutError>) -> Action
        + 'static,
    ) {
        self.pending.push(PendingCallout {
            request,
            continuation: Box::new(then),
        });
    }

    /// Queues a unary gRPC `call` ([`crate::grpc`]); `then` runs with the response message or
    /// the error. Return [`Action::Pause`] from the callback.
    pub fn dispatch_grpc(
        &mut self,
        call: crate::grpc::GrpcCall,
        then: impl FnOnce(&mut F, &mut Request<'_>, Result<Vec<u8>, crate::grpc::GrpcError>) -> Action
        + 'static,
    ) {
        self.grpc.push(crate::grpc::PendingGrpc {
            call,
            continuation: Box::new(then),
        });
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.grpc.is_empty()
    }

    /// Takes every queued HTTP callout, oldest first.
    pub fn take(&mut self) -> Vec<PendingCallout<F>> {
        std::mem::take(&mut self.pending)
    }

    /// Takes every queued gRPC call, oldest first.
    pub fn take_grpc(&mut self) -> Vec<crate::grpc::PendingGrpc<F>> {
        std::mem::take(&mut self.grpc)
    }
}

/// Sends `request` with `proxy_http_call` and returns its token; the answer arrives in the
/// context's `on_http_call_response` (read it with [`read_response`]). This is the low-level
/// entry point, usable from a root context too; filters use [`Callouts`].
pub fn send(request: &CalloutRequest) -> Result<u32, CalloutError> {
    request.check()?;
    let body = (!request.body.is_empty()).then_some(request.body.as_slice());
    crate::abi::dispatch_http_call(
        &request.cluster,
        &request.wire_headers(),
        body,
        request.timeout,
    )
    .map_err(|status| match status {
        crate::abi::Status::BadArgument => CalloutError::UnknownCluster {
            cluster: request.cluster.clone(),
        },
        other => CalloutError::Refused {
            cluster: request.cluster.clone(),
            status: format!("{other:?}"),
        },
    })
}

/// Reads the answer to a callout inside `on_http_call_response` (`body_size` as given there).
pub fn read_response(cluster: &str, body_size: usize) -> Result<CalloutResponse, CalloutError> {
    use crate::abi as hostcalls;
    use crate::abi::{BufferType, MapType};
    let no_response = || CalloutError::NoResponse {
        cluster: cluster.to_string(),
    };
    let pairs = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .map_err(|_| no_response())?
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .map_err(|_| no_response())?
            .unwrap_or_default()
    };
    CalloutResponse::from_pairs(pairs, body).ok_or_else(no_response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderList;

    #[test]
    fn check_names_each_problem() {
        let base = CalloutRequest::get("authz", "authz.local", "/check");
        assert_eq!(base.check(), Ok(()));
        let mut r = base.clone();
        r.method.clear();
        assert_eq!(
            r.check(),
            Err(CalloutError::MissingPseudoHeader {
                cluster: "authz".into(),
                name: ":method"
            })
        );
        let mut r = base.clone();
        r.path.clear();
        assert!(r.check().is_err_and(|e| e.to_string().contains(":path")));
        let r = base.clone().with_header(":authority", "x");
        assert!(
            r.check()
                .is_err_and(|e| e.to_string().contains("pseudo-headers"))
        );
        let r = base.clone().with_header("bad name", "x");
        assert!(
            r.check()
                .is_err_and(|e| e.to_string().contains("\"bad name\""))
        );
        let r = base.clone().with_header("x", "a\nb");
        assert!(r.check().is_err());
        let r = base.clone().with_timeout(Duration::ZERO);
        assert!(matches!(r.check(), Err(CalloutError::BadTimeout { .. })));
        let mut r = base;
        r.cluster.clear();
        assert!(matches!(
            r.check(),
            Err(CalloutError::UnknownCluster { .. })
        ));
    }

    #[test]
    fn response_without_status_is_no_response() {
        assert_eq!(
            CalloutResponse::from_pairs(vec![(":status".into(), "abc".into())], vec![]),
            None
        );
        let resp = CalloutResponse::from_pairs(
            vec![
                (":status".into(), "403".into()),
                ("x-reason".into(), "nope".into()),
            ],
            b"body".to_vec(),
        );
        assert_eq!(
            resp,
            Some(CalloutResponse::new(
                403,
                vec![("x-reason".into(), "nope".into())],
                b"body".to_vec()
            ))
        );
    }

    #[test]
    fn continuation_gets_filter_request_and_result() {
        let mut queue: Callouts<Vec<u16>> = Callouts::new();
        queue.dispatch(CalloutRequest::get("c", "h", "/"), |seen, req, result| {
            match result {
                Ok(resp) => {
                    seen.push(resp.status);
                    req.set_header("x-from-callout", "yes");
                }
                Err(err) => req.send_response(503, &[], err.to_string()),
            }
            Action::Continue
        });
        queue.dispatch(CalloutRequest::get("c", "h", "/"), |_, req, result| {
            if let Err(err) = result {
                req.send_response(503, &[], err.to_string());
            }
            Action::Pause
        });
        let calls = queue.take();
        assert!(queue.is_empty());
        let mut seen = Vec::new();
        let mut headers = HeaderList::new();
        let mut iter = calls.into_iter();
        let first = iter.next();
        let second = iter.next();
        let (Some(first), Some(second)) = (first, second) else {
            unreachable!("two calls were queued");
        };
        let mut req = Request::new(&mut headers);
        let action = first.complete(
            &mut seen,
            &mut req,
            Ok(CalloutResponse::new(200, vec![], vec![])),
        );
        assert_eq!(action, Action::Continue);
        assert_eq!(req.header("x-from-callout").as_deref(), Some("yes"));
        let action = second.complete(
            &mut seen,
            &mut req,
            Err(CalloutError::NoResponse {
                cluster: "c".into(),
            }),
        );
        assert_eq!(action, Action::Pause);
        assert_eq!(req.local_reply().map(|r| r.status), Some(503));
        assert_eq!(seen, vec![200]);
    }
}
