//! Recorded HTTP traffic: the model every reader produces and the replay consumes.
//!
//! A [`Traffic`] is an ordered list of [`Exchange`]s, each one request as the
//! client sent it and, when the recording has it, the response the upstream
//! gave. Readers for concrete formats live in submodules (`har`); they never
//! panic on bad input and name the file and the entry in their errors.

pub mod har;

use std::fmt;
use std::path::{Path, PathBuf};

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

/// Why a recording could not be read. Every variant names the file; entry
/// problems also name the zero-based entry index and the field path (for
/// example `log.entries[3].request.url`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// The file could not be read from disk.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file, as given.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed JSON.
    #[error("{file}: malformed JSON{}: {message} (line {line}, column {column})", EntryNote(*.entry))]
    Json {
        /// The file, as given.
        file: String,
        /// The entry being read when the syntax error was found, if inside `log.entries`.
        entry: Option<usize>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The document's outer structure is wrong (no `log`, `log.entries` not a list, ...).
    #[error("{file}: {field}: {message}")]
    Document {
        /// The file, as given.
        file: String,
        /// The field path, e.g. `log.entries`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// One entry is unusable: a missing required field, a wrong type, a bad URL, bad base64...
    #[error("{file}: entry {index}: {field}: {message}")]
    Entry {
        /// The file, as given.
        file: String,
        /// Zero-based index of the entry in the file.
        index: usize,
        /// The field path, e.g. `log.entries[3].request.url`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No reader recognises the file.
    #[error("{file}: unrecognised traffic format: {reason}")]
    UnknownFormat {
        /// The file, as given.
        file: String,
        /// Why it was not recognised.
        reason: String,
    },
}

/// Renders ` in entry N` when a JSON syntax error falls inside an entry.
struct EntryNote(Option<usize>);

impl fmt::Display for EntryNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(index) => write!(f, " in entry {index}"),
            None => Ok(()),
        }
    }
}

/// Reads a recording, picking the reader from the file's extension and, when
/// the extension says nothing, from its content. Only HAR is supported so far.
pub fn load(path: &Path) -> Result<Traffic, TrafficError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TrafficError::Read {
        file: file.clone(),
        source,
    })?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = match extension.as_deref() {
        Some("har") => Format::Har,
        _ => sniff(&bytes).ok_or_else(|| TrafficError::UnknownFormat {
            file: file.clone(),
            reason: "expected a HAR file (a `.har` extension or a JSON object with a `log` field)"
                .to_owned(),
        })?,
    };
    let mut traffic = match format {
        Format::Har => har::parse(&file, &bytes)?,
    };
    traffic.source = Some(path.to_path_buf());
    Ok(traffic)
}

/// The recording formats [`load`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// HTTP Archive 1.2 (browser devtools, proxies).
    Har,
}

/// Guesses the format from the first bytes: a JSON object that mentions a
/// `"log"` key within its first 4 KiB (HAR writers put `log` first).
fn sniff(bytes: &[u8]) -> Option<Format> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &bytes[start..bytes.len().min(start + 4096)];
    if head.first() == Some(&b'{') && head.windows(5).any(|w| w == b"\"log\"") {
        Some(Format::Har)
    } else {
        None
    }
}
