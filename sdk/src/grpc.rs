//! Unary gRPC callouts (`proxy_grpc_call`): a filter asks a gRPC service (a rate limit service,
//! an authorization service) and decides what to do with the stream when the answer arrives.
//!
//! They go through the same queue as HTTP callouts: in a callback the filter calls
//! [`Callouts::dispatch_grpc`](crate::callout::Callouts::dispatch_grpc) with a [`GrpcCall`]
//! (cluster, `service`, `method`, metadata and the request message, already serialised) and a
//! continuation; the SDK sends it when the callback returns and pauses the stream; the
//! continuation gets the response message, or a [`GrpcError`]: a non-OK gRPC status (Envoy 1.40
//! reports both a call past its timeout, `upstream request timeout`, and a service it cannot
//! reach as `UNAVAILABLE`, 14), or a call the host refused.
//!
//! The message is bytes: the filter encodes and decodes it (protobuf), so the SDK carries no
//! protobuf runtime.
//!
//! ```
//! use std::rc::Rc;
//! use std::time::Duration;
//! use tollgate_sdk::callout::Callouts;
//! use tollgate_sdk::grpc::{GrpcCall, GrpcError};
//! use tollgate_sdk::{Action, HeaderList, HttpFilter, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {}
//! impl tollgate_sdk::FilterConfig for Config {}
//!
//! /// Asks `checker` about every request; an empty answer lets it through.
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
//!     fn on_request_headers(&mut self, _req: &mut Request<'_>, _eos: bool) -> Action {
//!         let call = GrpcCall::new("checker", "example.Checker", "Check", vec![])
//!             .with_timeout(Duration::from_millis(100));
//!         self.callouts.dispatch_grpc(call, |_f: &mut Ask, req: &mut Request<'_>, answer| {
//!             match answer {
//!                 Ok(message) if message.is_empty() => Action::Continue,
//!                 _ => {
//!                     req.send_response(403, &[], "no\n");
//!                     Action::Pause
//!                 }
//!             }
//!         });
//!         Action::Pause
//!     }
//! }
//!
//! let mut filter = Ask::new(Rc::new(Config {}));
//! let mut headers = HeaderList::from([(":path", "/")]);
//! filter.on_request_headers(&mut Request::new(&mut headers), true);
//! let call = filter.callouts.take_grpc().remove(0);
//! assert_eq!(call.call().method, "Check");
//! let mut req = Request::new(&mut headers);
//! let timeout = GrpcError::Status { cluster: "checker".into(), code: 4, message: String::new() };
//! call.complete(&mut filter, &mut req, Err(timeout));
//! assert_eq!(req.local_reply().map(|r| r.status), Some(403));
//! ```

use std::fmt;
use std::time::Duration;

use crate::filter::Action;
use crate::headers;
use crate::http::Request;

/// gRPC status `OK`.
pub const OK: u32 = 0;
/// gRPC status `DEADLINE_EXCEEDED`.
pub const DEADLINE_EXCEEDED: u32 = 4;
/// gRPC status `UNAVAILABLE` (what Envoy reports when it cannot reach the service, or when the
/// call's timeout expires).
pub const UNAVAILABLE: u32 = 14;

/// A unary gRPC call to a cluster.
///
/// ```
/// use std::time::Duration;
/// let call = tollgate_sdk::grpc::GrpcCall::new("rls", "envoy.service.ratelimit.v3.RateLimitService", "ShouldRateLimit", vec![1, 2])
///     .with_metadata("x-tenant", "acme")
///     .with_timeout(Duration::from_millis(20));
/// assert!(call.check().is_ok());
/// assert_eq!(call.path(), "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// The Envoy cluster (must exist in the proxy's configuration and speak HTTP/2).
    pub cluster: String,
    /// The fully qualified service, e.g. `envoy.service.ratelimit.v3.RateLimitService`.
    pub service: String,
    /// The method, e.g. `ShouldRateLimit`.
    pub method: String,
    /// Initial metadata (lower-case names).
    pub metadata: Vec<(String, String)>,
    /// The serialised request message.
    pub message: Vec<u8>,
    /// How long Envoy waits for the answer.
    pub timeout: Duration,
}

impl GrpcCall {
    /// A call of `service`/`method` on `cluster` with `message`, no metadata, the default
    /// timeout ([`crate::callout::DEFAULT_TIMEOUT`]).
    ///
    /// ```
    /// let call = tollgate_sdk::grpc::GrpcCall::new("c", "s.S", "M", vec![]);
    /// assert_eq!(call.timeout, tollgate_sdk::callout::DEFAULT_TIMEOUT);
    /// ```
    pub fn new(cluster: &str, service: &str, method: &str, message: Vec<u8>) -> Self {
        Self {
            cluster: cluster.to_string(),
            service: service.to_string(),
            method: method.to_string(),
            metadata: Vec::new(),
            message,
            timeout: crate::callout::DEFAULT_TIMEOUT,
        }
    }

    /// Adds initial metadata.
    ///
    /// ```
    /// let call = tollgate_sdk::grpc::GrpcCall::new("c", "s.S", "M", vec![]).with_metadata("a", "1");
    /// assert_eq!(call.metadata, vec![("a".to_string(), "1".to_string())]);
    /// ```
    pub fn with_metadata(mut self, name: &str, value: &str) -> Self {
        self.metadata.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let call = tollgate_sdk::grpc::GrpcCall::new("c", "s.S", "M", vec![]).with_timeout(Duration::from_millis(5));
    /// assert_eq!(call.timeout.as_millis(), 5);
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `/service/method`, the HTTP/2 path of the call.
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::grpc::GrpcCall::new("c", "a.B", "C", vec![]).path(), "/a.B/C");
    /// ```
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }

    /// Checks what the host would refuse (or, for an empty service, what makes Envoy 1.40 abort
    /// the whole process), naming the culprit.
    ///
    /// ```
    /// use tollgate_sdk::grpc::{GrpcCall, GrpcError};
    /// let err = GrpcCall::new("rls", "", "M", vec![]).check().unwrap_err();
    /// assert!(err.to_string().contains("service"));
    /// ```
    pub fn check(&self) -> Result<(), GrpcError> {
        let bad = |problem: String| GrpcError::BadCall {
            cluster: self.cluster.clone(),
            problem,
        };
        if self.cluster.is_empty() {
            return Err(GrpcError::UnknownCluster {
                cluster: String::new(),
            });
        }
        if self.service.is_empty() {
            return Err(bad("empty service".into()));
        }
        if self.method.is_empty() {
            return Err(bad("empty method".into()));
        }
        if self.timeout.is_zero() || self.timeout.as_millis() > u128::from(u32::MAX) {
            return Err(bad(format!(
                "timeout {:?} must be between 1 ms and 2^32 ms",
                self.timeout
            )));
        }
        for (name, value) in &self.metadata {
            let checked = headers::check_name(name).and_then(|()| headers::check_value(value));
            if headers::is_pseudo_header(name) {
                return Err(bad(format!(
                    "metadata {name:?}: pseudo-headers cannot be set"
                )));
            }
            if let Err(err) = checked {
                return Err(bad(format!("metadata {name:?}: {err}")));
            }
        }
        Ok(())
    }
}

/// Why a gRPC call produced no response message.
///
/// ```
/// let err = tollgate_sdk::grpc::GrpcError::Status { cluster: "rls".into(), code: 14, message: "upstream connect error".into() };
/// assert!(err.to_string().contains("status 14"));
/// assert_eq!(err.code(), Some(14));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrpcError {
    /// The host refused the call because it knows no such cluster.
    #[error(
        "grpc callout to unknown cluster `{cluster}` (add the cluster to the proxy configuration)"
    )]
    UnknownCluster {
        /// The cluster named in the call.
        cluster: String,
    },
    /// The call cannot be sent as it is.
    #[error("grpc callout to cluster `{cluster}`: {problem}")]
    BadCall {
        /// The cluster named in the call.
        cluster: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The host refused the call for another reason.
    #[error("grpc callout to cluster `{cluster}`: the host refused it ({status})")]
    Refused {
        /// The cluster named in the call.
        cluster: String,
        /// The host's status, e.g. `InternalFailure`.
        status: String,
    },
    /// The call ended with a non-OK gRPC status (unreachable or too slow: 14...).
    #[error("grpc callout to cluster `{cluster}`: status {code} {message:?}")]
    Status {
        /// The cluster named in the call.
        cluster: String,
        /// The gRPC status code.
        code: u32,
        /// The status message.
        message: String,
    },
}

impl GrpcError {
    /// The gRPC status code, when the call ended with one.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What runs when a gRPC call's answer arrives: gets the filter, the request headers and the
/// response message (or the error), and returns whether the stream goes on.
pub type GrpcContinuation<F> =
    Box<dyn FnOnce(&mut F, &mut Request<'_>, Result<Vec<u8>, GrpcError>) -> Action>;

/// A gRPC call queued by [`Callouts::dispatch_grpc`](crate::callout::Callouts::dispatch_grpc),
/// not yet sent.
pub struct PendingGrpc<F> {
    pub(crate) call: GrpcCall,
    pub(crate) continuation: GrpcContinuation<F>,
}

impl<F> PendingGrpc<F> {
    /// The call to send.
    pub fn call(&self) -> &GrpcCall {
        &self.call
    }

    /// Runs the continuation with `answer` (what the SDK does when the answer arrives; tests do
    /// it by hand).
    pub fn complete(
        self,
        filter: &mut F,
        req: &mut Request<'_>,
        answer: Result<Vec<u8>, GrpcError>,
    ) -> Action {
        (self.continuation)(filter, req, answer)
    }

    /// Splits into call and continuation.
    pub fn into_parts(self) -> (GrpcCall, GrpcContinuation<F>) {
        (self.call, self.continuation)
    }
}

impl<F> fmt::Debug for PendingGrpc<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingGrpc")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// Sends `call` with `proxy_grpc_call` and returns its token; the answer arrives in the
/// context's `on_grpc_call_response` (read it with [`read_answer`]).
pub fn send(call: &GrpcCall) -> Result<u32, GrpcError> {
    call.check()?;
    let metadata: Vec<(&str, &[u8])> = call
        .metadata
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    crate::abi::dispatch_grpc_call(
        &call.cluster,
        &call.service,
        &call.method,
        &metadata,
        call.message.as_slice(),
        call.timeout,
    )
    .map_err(|status| match status {
        // Envoy parses the name as a `GrpcService`, then looks the cluster up.
        crate::abi::Status::ParseFailure | crate::abi::Status::BadArgument => {
            GrpcError::UnknownCluster {
                cluster: call.cluster.clone(),
            }
        }
        other => GrpcError::Refused {
            cluster: call.cluster.clone(),
            status: format!("{other:?}"),
        },
    })
}

/// Reads the answer inside `on_grpc_call_response` (`status` and `size` as given there): the
/// message on OK, else the status and its message.
pub fn read_answer(cluster: &str, status: u32, size: usize) -> Result<Vec<u8>, GrpcError> {
    if status == OK {
        if size == 0 {
            return Ok(Vec::new());
        }
        return crate::abi::get_buffer(crate::abi::BufferType::GrpcReceiveBuffer, 0, size)
            .map(Option::unwrap_or_default)
            .map_err(|s| GrpcError::Refused {
                cluster: cluster.to_string(),
                status: format!("{s:?}"),
            });
    }
    Err(GrpcError::Status {
        cluster: cluster.to_string(),
        code: status,
        message: status_message(),
    })
}

/// The status message of the call being answered (empty when the host has none).
#[cfg(target_arch = "wasm32")]
fn status_message() -> String {
    // The raw import: the `proxy-wasm` crate's wrapper panics on a non-UTF-8 message.
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_status(
            return_code: *mut u32,
            return_data: *mut *mut u8,
            return_size: *mut usize,
        ) -> u32;
    }
    let mut code = 0u32;
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the three out-pointers are valid for writes for the duration of the call.
    let status = unsafe { proxy_get_status(&mut code, &mut data, &mut size) };
    if status != 0 || data.is_null() {
        return String::new();
    }
    // SAFETY: the host allocated `size` bytes at `data` through the module's
    // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes from the global
    // allocator) and hands them over: the Vec owns them and frees them with that layout.
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(not(target_arch = "wasm32"))]
fn status_message() -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_each_problem() {
        let base = GrpcCall::new("rls", "a.B", "C", vec![]);
        assert_eq!(base.check(), Ok(()));
        let mut c = base.clone();
        c.method.clear();
        assert!(
            c.check()
                .is_err_and(|e| e.to_string().contains("empty method"))
        );
        let c = base.clone().with_timeout(Duration::ZERO);
        assert!(c.check().is_err_and(|e| e.to_string().contains("timeout")));
        let c = base.clone().with_metadata(":path", "/x");
        assert!(c.check().is_err_and(|e| e.to_string().contains("pseudo")));
        let c = base.clone().with_metadata("x", "a\nb");
        assert!(c.check().is_err_and(|e| e.to_string().contains("\"x\"")));
        let mut c = base;
        c.cluster.clear();
        assert!(matches!(c.check(), Err(GrpcError::UnknownCluster { .. })));
    }
}
