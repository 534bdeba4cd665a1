//! The numbered kinds the ABI passes as `u32`: header maps, buffers and metrics. A
//! value outside the range converts to an error (the host answers
//! `BadArgument`).

/// Which header map a call is about (proxy-wasm `MapType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    /// The request headers.
    RequestHeaders,
    /// The request trailers.
    RequestTrailers,
    /// The response headers.
    ResponseHeaders,
    /// The response trailers.
    ResponseTrailers,
    /// A gRPC call's initial metadata, during its callback.
    GrpcReceiveInitialMetadata,
    /// A gRPC call's trailing metadata, during its callback.
    GrpcReceiveTrailingMetadata,
    /// An HTTP call's response headers, during its callback.
    HttpCallResponseHeaders,
    /// An HTTP call's response trailers, during its callback.
    HttpCallResponseTrailers,
}

impl TryFrom<u32> for MapType {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            other => return Err(other),
        })
    }
}

/// Which buffer a call is about (proxy-wasm `BufferType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// The request body.
    HttpRequestBody,
    /// The response body.
    HttpResponseBody,
    /// Downstream data (TCP filters).
    NetworkDownstreamData,
    /// Upstream data (TCP filters).
    NetworkUpstreamData,
    /// An HTTP call's response body, during its callback.
    HttpCallResponseBody,
    /// A gRPC call's message, during its callback.
    GrpcReceiveBuffer,
    /// The VM configuration.
    VmConfiguration,
    /// The plugin configuration, while configuring.
    PluginConfiguration,
    /// Foreign function arguments.
    CallData,
}

impl TryFrom<u32> for BufferType {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::HttpRequestBody,
            1 => Self::HttpResponseBody,
            2 => Self::NetworkDownstreamData,
            3 => Self::NetworkUpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            other => return Err(other),
        })
    }
}

/// A metric's kind (low two bits of its id, as in Envoy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Counter.
    Counter = 0,
    /// Gauge.
    Gauge = 1,
    /// Histogram.
    Histogram = 2,
}

impl TryFrom<u32> for MetricKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::Counter,
            1 => Self::Gauge,
            2 => Self::Histogram,
            other => return Err(other),
        })
    }
}
