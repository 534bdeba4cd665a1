//! Recorded HTTP traffic: the model every reader produces and the replay consumes.
//!
//! A [`Traffic`] is an ordered list of [`Exchange`]s, each one request as the
//! client sent it and, when the recording has it, the response the upstream
//! gave. Readers for concrete formats live in submodules (`har`); they never
//! panic on bad input and name the file and the entry in their errors.

pub mod har;

use std::path::PathBuf;

/// A recording: exchanges in the order they were captured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Where the recording came from (a file path), for messages.
    pub source: Option<PathBuf>,
    /// The exchanges, in capture order.
    pub exchanges: Vec<Exchange>,
    /// Non-fatal oddities found while reading, each naming the entry.
    pub warnings: Vec<String>,
}

/// One request and, when recorded, its upstream response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// A stable label for reports, e.g. `entry 3` (zero-based index in the file).
    pub id: String,
    /// The request as the client sent it.
    pub request: HttpRequest,
    /// The upstream's recorded answer; `None` when the recording has none.
    pub response: Option<HttpResponse>,
}

/// A request in the form a proxy sees it after HTTP parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Host (and port when not the default), as in `:authority`.
    pub authority: String,
    /// Path and query, as in `:path` (always starts with `/`).
    pub path: String,
    /// Regular headers (no pseudo-headers), names lower-cased, in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty when none).
    pub body: Vec<u8>,
}

/// A response as the proxy receives it from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Regular headers (no pseudo-headers), names lower-cased, in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The decoded body (empty when none).
    pub body: Vec<u8>,
}
