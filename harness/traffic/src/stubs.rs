//! The answers services give a filter's callouts, per cluster: an HTTP
//! response (status, headers, body, trailers), a reset, a connection failure,
//! or a gRPC exchange, each after a delay. The host delivers them on its
//! virtual clock (`tollgate_host::callouts`); Envoy's side serves them from
//! real stub servers (`tollgate_envoy::services`).

use std::time::Duration;

/// Body of the 504 Envoy's router answers when a call times out.
pub const TIMEOUT_BODY: &str = "upstream request timeout";
/// Body of the 503 Envoy's router answers when it cannot connect (Envoy 1.40,
/// checked against a cluster nobody listens on).
pub const CONNECT_FAILURE_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
/// Body of the 503 Envoy's router answers when the service closes the
/// connection before answering (Envoy 1.40).
pub const CLOSED_BEFORE_ANSWER_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
/// `proxy_get_status` code during the callback of a reset http call (`BrokenConnection`).
pub const RESET_STATUS: u32 = 11;
/// gRPC status `UNAVAILABLE`.
pub const GRPC_UNAVAILABLE: u32 = 14;
/// Response code details of an answer that came from the service.
pub const VIA_UPSTREAM: &str = "via_upstream";
/// Response code details of Envoy's router answer when the connection is
/// refused (Envoy 1.40 on Linux, a cluster nobody listens on).
pub const CONNECT_FAILURE_DETAILS: &str = "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}";
/// Response code details of Envoy's router answer when a call's timeout expires.
pub const TIMEOUT_DETAILS: &str = "upstream_response_timeout";

/// The message Envoy's gRPC client gives `proxy_on_grpc_close` /
/// `proxy_get_status`: the `grpc-message` with the stream's response code
/// details in braces (`denied{via_upstream}`), the details alone when there
/// is no message, the message alone when there are no details.
pub fn grpc_close_message(message: &str, details: &str) -> String {
    match (message.is_empty(), details.is_empty()) {
        (true, _) => details.to_string(),
        (false, true) => message.to_string(),
        (false, false) => format!("{message}{{{details}}}"),
    }
}

/// What a cluster answers an http call with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAnswer {
    /// A response.
    Response {
        /// Status.
        status: u16,
        /// Headers (without `:status`).
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
        /// Trailers.
        trailers: Vec<(String, String)>,
    },
    /// The stream is reset before a response (Envoy's `onFailure(Reset)`).
    Reset,
    /// The cluster cannot be reached: Envoy's router answers 503 itself.
    ConnectFailure,
}

/// How one cluster answers the http calls sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClusterStub {
    /// The cluster name, as the guest passes it to `proxy_http_call`.
    pub cluster: String,
    /// The answer.
    pub answer: HttpAnswer,
    /// Virtual time between the call and its answer.
    pub delay: Duration,
}

impl HttpClusterStub {
    /// `cluster` answers with `status`, no headers, no body, at once.
    pub fn respond(cluster: impl Into<String>, status: u16) -> Self {
        Self {
            cluster: cluster.into(),
            answer: HttpAnswer::Response {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                trailers: Vec::new(),
            },
            delay: Duration::ZERO,
        }
    }

    /// Calls to `cluster` are reset before any response.
    pub fn reset(cluster: impl Into<String>) -> Self {
        Self {
            answer: HttpAnswer::Reset,
            ..Self::respond(cluster, 0)
        }
    }

    /// `cluster` cannot be connected to.
    pub fn connect_failure(cluster: impl Into<String>) -> Self {
        Self {
            answer: HttpAnswer::ConnectFailure,
            ..Self::respond(cluster, 0)
        }
    }

    /// `cluster` accepts the call and closes the connection before
    /// answering: the guest gets the 503 Envoy's router answers itself
    /// ([`CLOSED_BEFORE_ANSWER_BODY`], `content-length`, `content-type:
    /// text/plain`), as a response.
    pub fn closed_before_answer(cluster: impl Into<String>) -> Self {
        Self::respond(cluster, 503)
            .header(
                "content-length",
                &CLOSED_BEFORE_ANSWER_BODY.len().to_string(),
            )
            .header("content-type", "text/plain")
            .body(CLOSED_BEFORE_ANSWER_BODY)
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let HttpAnswer::Response { headers, .. } = &mut self.answer {
            headers.push((name.to_ascii_lowercase(), value.to_string()));
        }
        self
    }

    /// Adds a response trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        if let HttpAnswer::Response { trailers, .. } = &mut self.answer {
            trailers.push((name.to_ascii_lowercase(), value.to_string()));
        }
        self
    }

    /// Sets the response body.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        if let HttpAnswer::Response { body, .. } = &mut self.answer {
            *body = bytes.into();
        }
        self
    }

    /// Answers after `delay` of virtual time.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// How one cluster answers gRPC calls and streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcClusterStub {
    /// The cluster name (the `service` argument as a plain cluster name).
    pub cluster: String,
    /// Response headers (initial metadata) of a stream.
    pub initial_metadata: Vec<(String, String)>,
    /// The response messages (serialized protobuf); a unary call gets the first.
    pub messages: Vec<Vec<u8>>,
    /// Trailing metadata of a stream.
    pub trailing_metadata: Vec<(String, String)>,
    /// gRPC status (0 OK).
    pub status: u32,
    /// Status message (`proxy_get_status` in `proxy_on_grpc_close`).
    pub status_message: String,
    /// Virtual time between the call (or a stream's first message) and the answer.
    pub delay: Duration,
    /// When a stream's answer starts (unary calls answer the request).
    pub opening: StreamOpening,
    /// Only calls to this `service/method` (`None`: any method); a stub for
    /// the method called wins over one for any method.
    pub method: Option<String>,
}

/// When the service behind a gRPC stream starts answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamOpening {
    /// After the guest's first message (or its half-close): a request/response service.
    #[default]
    AfterFirstMessage,
    /// As soon as the stream is open, whatever the guest sends: a service
    /// that speaks first (a watch or subscription).
    ServerFirst,
}

impl GrpcClusterStub {
    /// `cluster` answers OK with no message.
    pub fn ok(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            initial_metadata: Vec::new(),
            messages: Vec::new(),
            trailing_metadata: Vec::new(),
            status: 0,
            status_message: String::new(),
            delay: Duration::ZERO,
            opening: StreamOpening::AfterFirstMessage,
            method: None,
        }
    }

    /// Answers only calls to `service/method` (e.g. `svc.Checker/Watch`).
    pub fn for_method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Streams are answered as soon as they open (the service speaks first).
    pub fn server_first(mut self) -> Self {
        self.opening = StreamOpening::ServerFirst;
        self
    }

    /// `cluster` fails with `status` and `message`.
    pub fn fail(cluster: impl Into<String>, status: u32, message: &str) -> Self {
        Self {
            status,
            status_message: message.to_string(),
            ..Self::ok(cluster)
        }
    }

    /// `cluster` cannot be connected to: UNAVAILABLE with Envoy's message.
    pub fn connect_failure(cluster: impl Into<String>) -> Self {
        Self::fail(cluster, GRPC_UNAVAILABLE, CONNECT_FAILURE_BODY)
    }

    /// Whether this is [`GrpcClusterStub::connect_failure`]: Envoy's router
    /// answers, not the service.
    pub fn is_connect_failure(&self) -> bool {
        self.status == GRPC_UNAVAILABLE && self.status_message == CONNECT_FAILURE_BODY
    }

    /// The response code details Envoy's gRPC client appends to the close
    /// message (Envoy 1.40, checked live): `via_upstream` when the service
    /// answered, the router's details when Envoy answered in its place.
    pub fn close_details(&self) -> &'static str {
        if self.is_connect_failure() {
            CONNECT_FAILURE_DETAILS
        } else {
            VIA_UPSTREAM
        }
    }

    /// Whether the answer is gRPC's trailers-only response (one HEADERS
    /// frame): a failure with no initial metadata and no message, or
    /// Envoy's own local reply.
    pub fn trailers_only(&self) -> bool {
        self.is_connect_failure()
            || (self.status != 0 && self.initial_metadata.is_empty() && self.messages.is_empty())
    }

    /// Adds a response message.
    pub fn message(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.messages.push(bytes.into());
        self
    }

    /// Adds initial metadata.
    pub fn initial(mut self, name: &str, value: &str) -> Self {
        self.initial_metadata
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Adds trailing metadata.
    pub fn trailing(mut self, name: &str, value: &str) -> Self {
        self.trailing_metadata
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Answers after `delay` of virtual time.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}
