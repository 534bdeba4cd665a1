//! Which way a message travels through a filter chain.

/// The request (client to upstream, filters in order) or the response
/// (upstream to client, filters in reverse), as Envoy's filter manager
/// drives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

impl Direction {
    /// Whether this is the response.
    pub const fn is_response(self) -> bool {
        matches!(self, Self::Response)
    }

    /// `request` or `response`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}
