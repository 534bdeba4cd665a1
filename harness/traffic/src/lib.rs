//! Recorded HTTP traffic: the model every reader produces and the replay consumes.
//!
//! A [`Traffic`] is an ordered list of [`Exchange`]s, each one request as the
//! client sent it and, when the recording has it, the response the upstream
//! gave. Readers for concrete formats live in submodules (`har`); they never
//! panic on bad input and name the file and the entry in their errors.

pub mod har;
pub mod header_syntax;
/// Bounded, regular-file-only reading and the YAML depth pre-scan live in
/// `tollgate-files` (shared with `tollgate-ship`); re-exported here for the
/// readers and their callers.
pub use tollgate_files::input;
pub mod native;
pub mod stubs;
pub mod tap;
pub mod tools;

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
    /// What some recordings add beyond the request and response: body chunk
    /// boundaries, trailers, timings, connection properties, callout stubs.
    /// All empty by default (one body chunk each way, no trailers...).
    pub details: ExchangeDetails,
}

/// The optional parts of an [`Exchange`]; every field defaults to "not recorded".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeDetails {
    /// Sizes of the request body chunks as they arrived, summing to the body's
    /// length; empty when the recording does not say (one chunk).
    pub request_chunks: Vec<usize>,
    /// Request trailers, names lower-cased, in order.
    pub request_trailers: Vec<(String, String)>,
    /// Sizes of the response body chunks, as [`Self::request_chunks`].
    pub response_chunks: Vec<usize>,
    /// Response trailers, names lower-cased, in order.
    pub response_trailers: Vec<(String, String)>,
    /// When the exchange happened and how long it took, when recorded.
    pub timing: Timing,
    /// Connection and stream properties as Envoy names its attributes, e.g.
    /// `source.address` = `10.0.0.7:51234`, `connection.tls_version` = `TLSv1.3`.
    pub properties: Vec<(String, String)>,
    /// Canned answers for the HTTP callouts (`proxy_http_call`) the filter makes
    /// while handling this exchange, in the order they are expected.
    pub callouts: Vec<Callout>,
    /// The recording cut a body short (Envoy tap `truncated`): the bodies here
    /// are prefixes of what was sent.
    pub truncated: bool,
    /// The HTTP version the exchange was recorded with (HAR `httpVersion`,
    /// native `http_version`); it decides how Envoy's codec delivers bodies
    /// the recording did not chunk. `None`: not recorded (HTTP/1.1 assumed).
    pub http_version: Option<HttpVersion>,
}

/// An HTTP version as a recording names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 (`h2`).
    Http2,
    /// HTTP/3 (`h3`).
    Http3,
}

impl HttpVersion {
    /// Reads a recorded version, case-insensitively: `HTTP/1.0`, `HTTP/1.1`,
    /// `1.1`, `h2`, `HTTP/2`, `HTTP/2.0`, `2`, `h3`, `HTTP/3`, `3`; `None`
    /// for anything else (e.g. the empty string browsers write for cached entries).
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.strip_prefix("http/").unwrap_or(&t);
        match t {
            "1.0" | "1.1" | "1" | "http1" => Some(Self::Http1),
            "2" | "2.0" | "h2" | "h2c" => Some(Self::Http2),
            "3" | "3.0" | "h3" => Some(Self::Http3),
            _ => None,
        }
    }

    /// The name the native format writes: `1.1`, `2`, `3`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http1 => "1.1",
            Self::Http2 => "2",
            Self::Http3 => "3",
        }
    }
}

/// When an exchange happened, as far as the recording says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    /// When the request started, RFC 3339 as recorded (e.g. `2026-11-28T03:48:49.854551Z`).
    pub started: Option<String>,
    /// From the request's start to the response's headers.
    pub response_after: Option<std::time::Duration>,
    /// From the request's start to the response's end.
    pub total: Option<std::time::Duration>,
}

/// A stub answer for one HTTP callout the filter makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// The cluster (upstream) the callout goes to; empty matches any.
    pub cluster: String,
    /// The answer the host gives back.
    pub response: HttpResponse,
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

/// A serde_json syntax error's message without its " at line L column C"
/// suffix (the error variants print the position themselves).
pub(crate) fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let location = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&location).unwrap_or(&full).to_owned()
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

/// What a reader does with an entry it cannot use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Leniency {
    /// Stop with an error naming the file and the entry (the default).
    #[default]
    Strict,
    /// Record a warning naming the file and the entry, skip it, go on.
    /// Errors about the file as a whole (unreadable, not the format) still fail.
    Lenient,
}

/// The recording formats [`load`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HTTP Archive 1.2 (browser devtools, proxies): `.har`.
    Har,
    /// Envoy tap traces (`http_buffered_trace`, `http_streamed_trace_segment`),
    /// JSON; a file or a directory of them.
    Tap,
    /// Tollgate's native document, YAML or JSON (`.yaml`, `.yml`, `.json`).
    Native,
    /// Tollgate's native format, one exchange per line (`.jsonl`, `.ndjson`).
    NativeLines,
}

impl Format {
    /// The format a file name's extension implies, if any. `.json` is
    /// ambiguous (native or tap) and gives `None`: the content decides.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "har" => Some(Format::Har),
            "yaml" | "yml" => Some(Format::Native),
            "jsonl" | "ndjson" => Some(Format::NativeLines),
            _ => None,
        }
    }
}

/// Reads a recording, picking the reader from the file's extension and, when
/// the extension says nothing, from its content. A directory is read as a
/// directory of Envoy tap files.
pub fn load(path: &Path) -> Result<Traffic, TrafficError> {
    load_with(path, Leniency::Strict)
}

/// As [`load`], choosing what happens to unusable entries.
pub fn load_with(path: &Path, leniency: Leniency) -> Result<Traffic, TrafficError> {
    let file = path.display().to_string();
    if path.is_dir() {
        let mut traffic = tap::load_dir(path, leniency)?;
        traffic.source = Some(path.to_path_buf());
        return Ok(traffic);
    }
    let bytes = input::read(path).map_err(|source| TrafficError::Read {
        file: file.clone(),
        source,
    })?;
    let format = detect(path, &bytes)?;
    let mut traffic = match format {
        Format::Har => har::parse_with(&file, &bytes, leniency)?,
        Format::Tap => tap::parse(&file, &bytes, leniency)?,
        Format::Native => native::parse_document(&file, &bytes, leniency)?,
        Format::NativeLines => native::parse_lines(&file, &bytes, leniency)?,
    };
    traffic.source = Some(path.to_path_buf());
    Ok(traffic)
}

/// The format of the file at `path` whose content is `bytes`.
pub fn detect(path: &Path, bytes: &[u8]) -> Result<Format, TrafficError> {
    if let Some(f) = Format::from_extension(path) {
        return Ok(f);
    }
    sniff(bytes).ok_or_else(|| TrafficError::UnknownFormat {
        file: path.display().to_string(),
        reason: "expected a HAR file (`.har`, or a JSON object with a `log` field), an Envoy tap \
                 trace (`http_buffered_trace` / `http_streamed_trace_segment`), or Tollgate's \
                 native format (`.yaml`/`.json` with `tollgate_traffic`, `.jsonl`)"
            .to_owned(),
    })
}

/// Guesses the format from the first 4 KiB: the first JSON key that names a
/// format (`log`, `http_buffered_trace`, `tollgate_traffic`...).
fn sniff(bytes: &[u8]) -> Option<Format> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &bytes[start..bytes.len().min(start + 4096)];
    let has = |key: &[u8]| head.windows(key.len()).position(|w| w == key);
    let first = [
        (has(b"\"log\""), Format::Har),
        (has(b"\"http_buffered_trace\""), Format::Tap),
        (has(b"\"http_streamed_trace_segment\""), Format::Tap),
        (has(b"\"socket_buffered_trace\""), Format::Tap),
        (has(b"\"socket_streamed_trace_segment\""), Format::Tap),
        (has(b"tollgate_traffic"), Format::Native),
        (has(b"\"request\""), Format::NativeLines),
    ]
    .into_iter()
    .filter_map(|(at, f)| at.map(|a| (a, f)))
    .min_by_key(|(a, _)| *a)?;
    match (head.first(), first.1) {
        (Some(b'{'), f) => Some(f),
        (_, Format::Native) => Some(Format::Native),
        _ => None,
    }
}

/// Opens a recording as a stream of exchanges. Native JSON-lines files are
/// read one line at a time (constant memory, whatever the file's size); other
/// formats are read whole first.
pub fn open(path: &Path, leniency: Leniency) -> Result<Exchanges, TrafficError> {
    let file = path.display().to_string();
    let lines = !path.is_dir()
        && match Format::from_extension(path) {
            Some(f) => f == Format::NativeLines,
            None => {
                let mut head = Vec::with_capacity(4096);
                let f = input::open_stream(path).map_err(|source| TrafficError::Read {
                    file: file.clone(),
                    source,
                })?;
                std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut head).map_err(
                    |source| TrafficError::Read {
                        file: file.clone(),
                        source,
                    },
                )?;
                sniff(&head) == Some(Format::NativeLines)
            }
        };
    if lines {
        let f = input::open_stream(path).map_err(|source| TrafficError::Read {
            file: file.clone(),
            source,
        })?;
        let reader: Box<dyn std::io::BufRead> = Box::new(std::io::BufReader::new(f));
        return Ok(Exchanges {
            inner: ExchangesInner::Lines(native::Lines::new(file, reader, leniency)),
            warnings: Vec::new(),
        });
    }
    let traffic = load_with(path, leniency)?;
    Ok(Exchanges {
        inner: ExchangesInner::Loaded(traffic.exchanges.into_iter()),
        warnings: traffic.warnings,
    })
}

/// A stream of exchanges from [`open`].
pub struct Exchanges {
    inner: ExchangesInner,
    warnings: Vec<String>,
}

enum ExchangesInner {
    Lines(native::Lines<Box<dyn std::io::BufRead>>),
    Loaded(std::vec::IntoIter<Exchange>),
}

impl Exchanges {
    /// Warnings gathered so far, emptied (for JSON lines they grow as the
    /// stream is read, so take them again at the end).
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.warnings);
        if let ExchangesInner::Lines(l) = &mut self.inner {
            w.extend(l.take_warnings());
        }
        w
    }

    /// How many exchanges remain, when known without reading them.
    pub fn known_len(&self) -> Option<usize> {
        match &self.inner {
            ExchangesInner::Lines(_) => None,
            ExchangesInner::Loaded(it) => Some(it.len()),
        }
    }
}

impl Iterator for Exchanges {
    type Item = Result<Exchange, TrafficError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            ExchangesInner::Lines(l) => l.next(),
            ExchangesInner::Loaded(it) => it.next().map(Ok),
        }
    }
}
