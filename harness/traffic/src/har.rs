//! HAR 1.2 reader: turns an HTTP Archive (as exported by browser devtools and
//! recording proxies) into [`Traffic`], shaped the way Envoy hands requests
//! and responses to a proxy-wasm filter.
//!
//! # Mapping
//!
//! Each `log.entries[i]` becomes one [`Exchange`] with id `entry i`.
//!
//! * **Request line**: `request.method` as recorded; `request.url` gives the
//!   scheme (`http`/`https`; `ws`/`wss` become `http`/`https` with a
//!   warning), the authority (`host[:port]`, host lower-cased, user info
//!   removed, the port left out when it is the scheme's default) and the path
//!   with its query (`/` when empty; the `#fragment` is dropped; bytes that a
//!   client would percent-encode are percent-encoded, with a warning).
//! * **Headers** (both directions): names lower-cased, order and duplicates
//!   kept, values trimmed of surrounding blanks. HTTP/2 pseudo-headers
//!   (`:authority`, `:method`, `:path`, `:scheme`, `:status`, as Chrome and
//!   Firefox export them) are not kept as headers. Hop-by-hop headers
//!   (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
//!   `upgrade`) are dropped, since a proxy never forwards them to a filter.
//!   `cookie` and `set-cookie` are kept exactly as recorded.
//! * **Authority**: as Envoy turns `Host` into `:authority`, a request's
//!   `host` header (or its `:authority` pseudo-header, which wins) is folded
//!   into [`HttpRequest::authority`] and not kept as a header. When it
//!   disagrees with the URL, the header wins and a warning names the entry.
//! * **Request body**: `postData.text` (base64-decoded when the non-standard
//!   `postData.encoding` says `base64`); when `text` is absent, `postData.params`
//!   are encoded as `multipart/form-data` (when `mimeType` names a boundary) or
//!   as `application/x-www-form-urlencoded`. A `content-length` header that
//!   disagrees with the body is set to the body's size, with a warning.
//! * **Response**: `status`, headers as above, and `content.text` as the body,
//!   base64-decoded when `content.encoding` is `base64`.
//! * **Details**: `startedDateTime`, `time` and `timings` (blocked + dns +
//!   connect + send + wait, the time to the response's first byte) become
//!   [`super::Timing`]; `serverIPAddress` the property `destination.address`.
//!
//! # Bodies are decoded, so some response headers are rewritten
//!
//! HAR `content.text` holds the body *after* the browser undid any
//! `Content-Encoding` (gzip, br, ...). Replaying the recorded headers with it
//! would describe bytes that are not there, so for responses that carry a body:
//!
//! * `content-encoding` headers (other than `identity`) are dropped;
//! * every `content-length` header is replaced by one giving the size of the
//!   decoded body (only when the recording had a `content-length`; none is
//!   added otherwise).
//!
//! Responses that carry no body in HTTP (to a `HEAD` request, `1xx`, `204`,
//! `304`) keep their headers as recorded, since there `content-length` and
//! `content-encoding` describe the representation, not a body; any body the
//! recording holds for them (browsers store the cached body of a `304`) is
//! dropped with a warning.
//!
//! # Real-world deviations
//!
//! Errors ([`TrafficError`]) name the file, the entry and the field path.
//! These deviations are tolerated with a warning naming the entry instead
//! (see [`Traffic::warnings`]):
//!
//! * `response.status` of `0` (aborted or blocked request): the exchange has
//!   no response;
//! * a missing `response`: the exchange has no response;
//! * a missing or non-list `cookies`, a missing or non-string `httpVersion`
//!   (none of these are needed: cookies travel in the `cookie` header);
//! * `bodySize` of `-1` (size unknown) when the body is not otherwise recorded;
//! * `postData.params[].value` that is not a string (numbers, booleans,
//!   objects and lists are written as JSON, `null` as empty);
//! * a header value holding several lines (Firefox and WebPageTest join the
//!   values of a repeated header, `set-cookie` above all, with line breaks):
//!   one header per non-empty line;
//! * a header entry whose name is not a header name (a request or status
//!   line such as `GET /x HTTP/1.1`, a fragment, an empty name): that header
//!   is dropped (no client could have sent it), the entry kept;
//! * a response whose `content` is missing, or whose body was not recorded
//!   although its size says there was one (the body is replayed empty);
//! * entries whose URL is not fetched over the network (`data:`, `blob:`,
//!   `about:`, browser-extension schemes) are skipped; the ids of the other
//!   entries keep their index in the file.
//!
//! Only what cannot be replayed faithfully fails an entry: a header value
//! holding NUL, a CR inside a line or another control character (no HTTP
//! message carries it), bad URLs, bodies or statuses. When lenient
//! ([`super::Leniency::Lenient`]) such a header is dropped with a warning
//! and the entry kept; any other such entry is skipped with a warning.
//!
//! A UTF-8 byte-order mark before the JSON is ignored; base64 is accepted with
//! or without padding and with embedded line breaks.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Exchange, HttpRequest, HttpResponse, Traffic, TrafficError};

/// Headers a proxy consumes itself and never passes on (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// URL schemes of resources a browser loads without a network request.
const LOCAL_SCHEMES: [&str; 5] = ["data", "blob", "about", "javascript", "file"];

/// Reads and converts the HAR file at `path`.
pub fn load(path: &Path) -> Result<Traffic, TrafficError> {
    let file = path.display().to_string();
    let bytes = crate::input::read(path).map_err(|source| TrafficError::Read {
        file: file.clone(),
        source,
    })?;
    let mut traffic = parse(&file, &bytes)?;
    traffic.source = Some(path.to_path_buf());
    Ok(traffic)
}

/// Converts HAR bytes; `source_name` is used in errors and warnings and as
/// [`Traffic::source`].
pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Traffic, TrafficError> {
    parse_with(source_name, bytes, super::Leniency::Strict)
}

/// As [`parse`]; with [`super::Leniency::Lenient`] an unusable entry becomes
/// a warning naming it and is skipped (document-level errors still fail).
pub fn parse_with(
    source_name: &str,
    bytes: &[u8],
    leniency: super::Leniency,
) -> Result<Traffic, TrafficError> {
    let entries = read_entries(source_name, bytes)?;
    let mut traffic = Traffic {
        source: Some(PathBuf::from(source_name)),
        exchanges: Vec::with_capacity(entries.len()),
        warnings: Vec::new(),
    };
    for (index, entry) in entries.iter().enumerate() {
        let mut cx = Cx {
            file: source_name,
            index,
            warnings: &mut traffic.warnings,
            leniency,
        };
        match convert_entry(&mut cx, entry) {
            Ok(Some(exchange)) => traffic.exchanges.push(exchange),
            Ok(None) => {}
            Err(e) if leniency == super::Leniency::Lenient => {
                traffic.warnings.push(format!("{e}; entry skipped"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(traffic)
}

// ---------------------------------------------------------------------------
// Document level: JSON syntax and the `log.entries` list.
// ---------------------------------------------------------------------------

/// How far the streaming parse got, to say where a syntax error sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The top-level value.
    Root,
    /// Inside `log`.
    Log,
    /// Inside `log.entries`, between entries.
    Entries,
    /// Inside `log.entries[i]`.
    Entry(usize),
}

impl Place {
    /// The field path of this place, for messages.
    fn field(self) -> String {
        match self {
            Place::Root => "(document)".to_owned(),
            Place::Log => "log".to_owned(),
            Place::Entries => "log.entries".to_owned(),
            Place::Entry(i) => format!("log.entries[{i}]"),
        }
    }
}

/// Parses the JSON and returns the raw entries, streaming so that a syntax
/// error can be attributed to the entry it occurs in.
fn read_entries(file: &str, bytes: &[u8]) -> Result<Vec<Value>, TrafficError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(TrafficError::Document {
            file: file.to_owned(),
            field: Place::Root.field(),
            message: "the file is empty".to_owned(),
        });
    }
    let place = Cell::new(Place::Root);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = DocumentSeed { place: &place }
        .deserialize(&mut de)
        .and_then(|doc| de.end().map(|()| doc));
    let doc = parsed.map_err(|e| json_error(file, place.get(), &e))?;
    match doc.entries {
        Some(entries) => Ok(entries),
        None => Err(TrafficError::Document {
            file: file.to_owned(),
            field: if doc.has_log {
                "log.entries".to_owned()
            } else {
                "log".to_owned()
            },
            message: if doc.has_log {
                "missing required field (a HAR `log` lists its requests in `entries`)".to_owned()
            } else {
                "missing required field (is this a HAR file?)".to_owned()
            },
        }),
    }
}

/// Turns a serde_json error into a [`TrafficError`] naming where it happened.
fn json_error(file: &str, place: Place, e: &serde_json::Error) -> TrafficError {
    if e.is_data() {
        // A structural type error (e.g. `log` is a list); serde_json appends
        // " at line L column C" to the message, which we keep.
        TrafficError::Document {
            file: file.to_owned(),
            field: place.field(),
            message: e.to_string(),
        }
    } else {
        let full = e.to_string();
        let location = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&location).unwrap_or(&full).to_owned();
        TrafficError::Json {
            file: file.to_owned(),
            entry: match place {
                Place::Entry(i) => Some(i),
                _ => None,
            },
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

/// What the streaming parse keeps of the document.
struct Document {
    /// Whether a `log` object was present.
    has_log: bool,
    /// `log.entries`, when present.
    entries: Option<Vec<Value>>,
}

/// Parses the top-level object, keeping only `log`.
struct DocumentSeed<'a> {
    /// Progress marker shared with the nested seeds.
    place: &'a Cell<Place>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a HAR document (a JSON object with a `log` field)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut doc = Document {
            has_log: false,
            entries: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == "log" {
                self.place.set(Place::Log);
                doc.entries = map.next_value_seed(LogSeed { place: self.place })?;
                doc.has_log = true;
                self.place.set(Place::Root);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(doc)
    }
}

/// Parses `log`, keeping only `entries`.
struct LogSeed<'a> {
    /// Progress marker.
    place: &'a Cell<Place>,
}

impl<'de> DeserializeSeed<'de> for LogSeed<'_> {
    type Value = Option<Vec<Value>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LogSeed<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the HAR `log` object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "entries" {
                self.place.set(Place::Entries);
                entries = Some(map.next_value_seed(EntriesSeed { place: self.place })?);
                self.place.set(Place::Log);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(entries)
    }
}

/// Parses `log.entries`, recording the index of the entry being read.
struct EntriesSeed<'a> {
    /// Progress marker.
    place: &'a Cell<Place>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of HAR entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        loop {
            self.place.set(Place::Entry(entries.len()));
            match seq.next_element::<Value>()? {
                Some(entry) => entries.push(entry),
                None => break,
            }
        }
        self.place.set(Place::Entries);
        Ok(entries)
    }
}

// ---------------------------------------------------------------------------
// Entry level: typed access to the JSON with field paths in every error.
// ---------------------------------------------------------------------------

/// The entry being converted: where errors and warnings go.
struct Cx<'a> {
    /// The file name for errors.
    file: &'a str,
    /// Zero-based entry index.
    index: usize,
    /// Where warnings are collected.
    warnings: &'a mut Vec<String>,
    /// Lenient: a header that cannot be replayed is dropped (with a warning),
    /// not the entry.
    leniency: super::Leniency,
}

impl Cx<'_> {
    /// An error about `field` of this entry.
    fn error(&self, field: &str, message: impl Into<String>) -> TrafficError {
        TrafficError::Entry {
            file: self.file.to_owned(),
            index: self.index,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Records a warning about `field` of this entry.
    fn warn(&mut self, field: &str, message: impl fmt::Display) {
        self.warnings
            .push(format!("entry {}: {field}: {message}", self.index));
    }

    /// `value` as an object, or an error naming `field`.
    fn object<'v>(
        &self,
        value: &'v Value,
        field: &str,
    ) -> Result<&'v Map<String, Value>, TrafficError> {
        value.as_object().ok_or_else(|| {
            self.error(
                field,
                format!("expected an object, found {}", describe(value)),
            )
        })
    }

    /// `value` as a list, or an error naming `field`.
    fn array<'v>(&self, value: &'v Value, field: &str) -> Result<&'v [Value], TrafficError> {
        value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.error(field, format!("expected a list, found {}", describe(value))))
    }

    /// `value` as a string, or an error naming `field`.
    fn string<'v>(&self, value: &'v Value, field: &str) -> Result<&'v str, TrafficError> {
        value.as_str().ok_or_else(|| {
            self.error(
                field,
                format!("expected a string, found {}", describe(value)),
            )
        })
    }

    /// The required member `key` of `object` (at `parent`), with its path.
    fn required<'v>(
        &self,
        object: &'v Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Result<(&'v Value, String), TrafficError> {
        let field = format!("{parent}.{key}");
        match object.get(key) {
            Some(Value::Null) | None => Err(self.error(&field, "missing required field")),
            Some(value) => Ok((value, field)),
        }
    }

    /// The required string member `key` of `object` (at `parent`).
    fn required_str<'v>(
        &self,
        object: &'v Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Result<(&'v str, String), TrafficError> {
        let (value, field) = self.required(object, parent, key)?;
        Ok((self.string(value, &field)?, field))
    }

    /// The optional string member `key` of `object`; `null` counts as absent.
    fn optional_str<'v>(
        &self,
        object: &'v Map<String, Value>,
        parent: &str,
        key: &str,
    ) -> Result<Option<&'v str>, TrafficError> {
        match present(object, key) {
            None => Ok(None),
            Some(value) => self.string(value, &format!("{parent}.{key}")).map(Some),
        }
    }

    /// Checks the members HAR requires but the model does not need, warning
    /// rather than failing when they are missing or odd.
    fn tolerate_unused(&mut self, object: &Map<String, Value>, parent: &str) {
        match present(object, "cookies") {
            None => self.warn(&format!("{parent}.cookies"), "missing; treated as empty"),
            Some(Value::Array(_)) => {}
            Some(other) => self.warn(
                &format!("{parent}.cookies"),
                format_args!("expected a list, found {}; ignored", describe(other)),
            ),
        }
        match present(object, "httpVersion") {
            None => self.warn(&format!("{parent}.httpVersion"), "missing; ignored"),
            Some(Value::String(_)) => {}
            Some(other) => self.warn(
                &format!("{parent}.httpVersion"),
                format_args!("expected a string, found {}; ignored", describe(other)),
            ),
        }
    }
}

/// The member `key` of `object`, with `null` counted as absent.
fn present<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// A short description of a JSON value for messages, e.g. `a number (42)`.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".to_owned(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => return "a list".to_owned(),
        Value::Object(_) => return "an object".to_owned(),
    };
    let mut shown = value.to_string();
    if shown.chars().count() > 40 {
        shown = shown.chars().take(37).collect::<String>() + "...";
    }
    format!("{kind} ({shown})")
}

/// Whether `object` (a request or response) records its body size as
/// unknown (`bodySize: -1`).
fn body_size_unknown(object: &Map<String, Value>) -> bool {
    present(object, "bodySize").and_then(Value::as_i64) == Some(-1)
}

/// Converts one entry; `None` when the entry is skipped (non-network URL).
fn convert_entry(cx: &mut Cx<'_>, value: &Value) -> Result<Option<Exchange>, TrafficError> {
    let base = format!("log.entries[{}]", cx.index);
    let entry = cx.object(value, &base)?;
    let (request_value, request_field) = cx.required(entry, &base, "request")?;
    let Some(request) = convert_request(cx, request_value, &request_field)? else {
        return Ok(None);
    };
    let response_field = format!("{base}.response");
    let response = match present(entry, "response") {
        None => {
            cx.warn(
                &response_field,
                "missing; the exchange has no recorded response",
            );
            None
        }
        Some(value) => convert_response(cx, value, &response_field, &request.method)?,
    };
    Ok(Some(Exchange {
        id: format!("entry {}", cx.index),
        request,
        response,
        details: super::ExchangeDetails {
            http_version: http_version(entry),
            timing: timing(entry),
            properties: present(entry, "serverIPAddress")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty())
                .map(|ip| vec![("destination.address".to_owned(), ip.to_owned())])
                .unwrap_or_default(),
            ..super::ExchangeDetails::default()
        },
    }))
}

/// The entry's HTTP version: the request's `httpVersion`, else the
/// response's; `None` when neither names one.
fn http_version(entry: &Map<String, Value>) -> Option<super::HttpVersion> {
    ["request", "response"].iter().find_map(|side| {
        present(entry, side)
            .and_then(|r| present(r.as_object()?, "httpVersion"))
            .and_then(Value::as_str)
            .and_then(super::HttpVersion::parse)
    })
}

/// `startedDateTime`, `time` and `timings` (send + wait) when they are
/// usable; timing is informative, so odd values are left out silently.
fn timing(entry: &Map<String, Value>) -> super::Timing {
    let ms = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .filter(|m| m.is_finite() && *m >= 0.0 && *m < 1e12)
            .map(|m| std::time::Duration::from_secs_f64(m / 1000.0))
    };
    let timings = present(entry, "timings").and_then(Value::as_object);
    let part = |k: &str| timings.and_then(|t| ms(t.get(k)));
    let before_wait = ["blocked", "dns", "connect", "send"]
        .iter()
        .filter_map(|k| part(k))
        .sum::<std::time::Duration>();
    super::Timing {
        started: present(entry, "startedDateTime")
            .and_then(Value::as_str)
            .map(str::to_owned),
        response_after: part("wait").map(|w| before_wait + w),
        total: ms(present(entry, "time")),
    }
}

/// Converts `request`; `None` for URLs that are not fetched over the network.
fn convert_request(
    cx: &mut Cx<'_>,
    value: &Value,
    base: &str,
) -> Result<Option<HttpRequest>, TrafficError> {
    let request = cx.object(value, base)?;

    let (url, url_field) = cx.required_str(request, base, "url")?;
    let url = match parse_url(url) {
        Ok(Url::Local(scheme)) => {
            cx.warn(
                &url_field,
                format_args!("a `{scheme}:` URL is not fetched over the network; entry skipped"),
            );
            return Ok(None);
        }
        Ok(Url::Network(url)) => url,
        Err(message) => return Err(cx.error(&url_field, format!("{message}: {url:?}"))),
    };
    if url.websocket {
        cx.warn(
            &url_field,
            "a WebSocket URL; replayed as its HTTP upgrade request only",
        );
    }
    if url.encoded {
        cx.warn(
            &url_field,
            "contains bytes a client would percent-encode; percent-encoded",
        );
    }

    let (method, method_field) = cx.required_str(request, base, "method")?;
    if !is_token(method) {
        return Err(cx.error(
            &method_field,
            format!("not a valid HTTP method: {method:?}"),
        ));
    }

    cx.tolerate_unused(request, base);

    let (headers_value, headers_field) = cx.required(request, base, "headers")?;
    let raw = read_headers(cx, headers_value, &headers_field)?;

    let mut authority = url.authority.clone();
    let mut from_header: Option<(&str, &str)> = None;
    for (name, value) in &raw {
        if name == ":authority" && from_header.is_none_or(|(n, _)| n != ":authority") {
            from_header = Some((":authority", value));
        } else if name == "host" && from_header.is_none() {
            from_header = Some(("host", value));
        }
    }
    if let Some((name, value)) = from_header {
        match normalize_authority(value, &url.scheme) {
            Ok(normalized) => {
                if normalized != url.authority {
                    cx.warn(
                        &headers_field,
                        format_args!(
                            "`{name}: {value}` disagrees with the URL's authority {:?}; using the header, as a proxy would",
                            url.authority
                        ),
                    );
                }
                authority = normalized;
            }
            Err(message) => cx.warn(
                &headers_field,
                format_args!("`{name}: {value}` ignored ({message}); using the URL's authority"),
            ),
        }
    }
    if raw.iter().filter(|(n, _)| n == "host").count() > 1 {
        cx.warn(&headers_field, "several `host` headers; the first is used");
    }
    let mut headers = keep_regular(raw, &["host"]);

    let body = match present(request, "postData") {
        Some(post) => read_post_data(cx, post, &format!("{base}.postData"))?,
        None => {
            if body_size_unknown(request) {
                cx.warn(
                    &format!("{base}.bodySize"),
                    "is -1 (size unknown) and there is no postData; replaying an empty body",
                );
            }
            Vec::new()
        }
    };
    if let Some(recorded) = set_content_length(&mut headers, body.len()) {
        cx.warn(
            &headers_field,
            format_args!(
                "content-length {recorded:?} does not match the {}-byte body; set to the body's size",
                body.len()
            ),
        );
    }

    Ok(Some(HttpRequest {
        method: method.to_owned(),
        scheme: url.scheme,
        authority,
        path: url.path,
        headers,
        body,
    }))
}

/// Converts `response`; `None` for status 0 (aborted or blocked).
fn convert_response(
    cx: &mut Cx<'_>,
    value: &Value,
    base: &str,
    method: &str,
) -> Result<Option<HttpResponse>, TrafficError> {
    let response = cx.object(value, base)?;

    let (status_value, status_field) = cx.required(response, base, "status")?;
    let status = match status_value.as_u64() {
        Some(0) => {
            cx.warn(
                &status_field,
                "is 0 (the request was aborted or blocked); the exchange has no recorded response",
            );
            return Ok(None);
        }
        Some(code) if (100..=999).contains(&code) => {
            u16::try_from(code).map_err(|_| cx.error(&status_field, "status out of range"))?
        }
        Some(_) => {
            return Err(cx.error(
                &status_field,
                format!("not an HTTP status code (100-999): {status_value}"),
            ));
        }
        None => {
            return Err(cx.error(
                &status_field,
                format!("expected a status code, found {}", describe(status_value)),
            ));
        }
    };

    cx.tolerate_unused(response, base);

    let (headers_value, headers_field) = cx.required(response, base, "headers")?;
    let raw = read_headers(cx, headers_value, &headers_field)?;
    let mut headers = keep_regular(raw, &[]);

    let is_head = method.eq_ignore_ascii_case("HEAD");
    let bodiless = is_head || status < 200 || status == 204 || status == 304;
    let content_field = format!("{base}.content");
    let mut body = match present(response, "content") {
        None => {
            cx.warn(&content_field, "missing; replaying an empty body");
            Vec::new()
        }
        Some(content) => read_content(cx, content, &content_field)?,
    };
    if bodiless {
        if !body.is_empty() {
            let what = if is_head {
                "a response to HEAD".to_owned()
            } else {
                format!("a {status} response")
            };
            cx.warn(
                &format!("{content_field}.text"),
                format_args!(
                    "{what} carries no body; the {} recorded bytes are dropped",
                    body.len()
                ),
            );
            body.clear();
        }
        // Headers stay as recorded: they describe the representation.
    } else {
        warn_if_body_missing(cx, response, &headers, base);
        let encoded = headers
            .iter()
            .any(|(n, v)| n == "content-encoding" && !v.eq_ignore_ascii_case("identity"));
        if encoded {
            headers.retain(|(n, _)| n != "content-encoding");
        }
        set_content_length(&mut headers, body.len());
    }

    Ok(Some(HttpResponse {
        status,
        headers,
        body,
    }))
}

/// Warns when a response that should have a body has none recorded although
/// the recording says there was one (or cannot tell: `bodySize: -1`).
fn warn_if_body_missing(
    cx: &mut Cx<'_>,
    response: &Map<String, Value>,
    headers: &[(String, String)],
    base: &str,
) {
    let Some(content) = present(response, "content").and_then(Value::as_object) else {
        return;
    };
    if present(content, "text").is_some() {
        return;
    }
    let recorded_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let recorded_size = present(content, "size")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let note = match present(content, "comment").and_then(Value::as_str) {
        Some(comment) if !comment.is_empty() => format!(" (the recording says: {comment:?})"),
        _ => String::new(),
    };
    if recorded_length > 0 || recorded_size > 0 {
        cx.warn(
            &format!("{base}.content.text"),
            format_args!("missing although the response had a body; replaying an empty body{note}"),
        );
    } else if body_size_unknown(response) {
        cx.warn(
            &format!("{base}.bodySize"),
            format_args!(
                "is -1 (size unknown) and content.text is missing; replaying an empty body{note}"
            ),
        );
    }
}

/// Reads a HAR `headers` list as (lower-cased name, trimmed value) pairs,
/// pseudo-headers included, as browsers export them:
///
/// - a value holding several lines (Firefox and WebPageTest join the values
///   of a repeated header, `set-cookie` above all, with line breaks) becomes
///   one header per non-empty line, with a warning;
/// - an entry whose name is not a header name (a request or status line, a
///   fragment of one, an empty name) is dropped with a warning naming it:
///   no client could have sent it, so nothing is lost;
/// - a value no HTTP message can carry (NUL, a CR inside a line, other
///   control characters), or one that is not a string, fails the entry; when
///   lenient, only that header is dropped, with a warning.
fn read_headers(
    cx: &mut Cx<'_>,
    value: &Value,
    field: &str,
) -> Result<Vec<(String, String)>, TrafficError> {
    let list = cx.array(value, field)?;
    let mut headers = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let item_field = format!("{field}[{i}]");
        match read_header(cx, item, &item_field) {
            Ok(mut some) => headers.append(&mut some),
            Err(e) if cx.leniency == super::Leniency::Lenient => {
                cx.warnings.push(format!("{e}; header dropped, entry kept"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(headers)
}

/// One item of a HAR `headers` list: no header (a broken name), one, or
/// several (a multi-line value).
fn read_header(
    cx: &mut Cx<'_>,
    item: &Value,
    item_field: &str,
) -> Result<Vec<(String, String)>, TrafficError> {
    let header = cx.object(item, item_field)?;
    let (name, name_field) = cx.required_str(header, item_field, "name")?;
    let bare = name.strip_prefix(':').unwrap_or(name);
    if !is_token(bare) {
        let what = if is_start_line(name) {
            "a request or status line, not a header"
        } else {
            "not a valid header name"
        };
        cx.warn(
            &name_field,
            format_args!("{name:?} is {what}; that header is dropped, the entry kept"),
        );
        return Ok(Vec::new());
    }
    let value_field = format!("{item_field}.value");
    let value = match header.get("value") {
        None => return Err(cx.error(&value_field, "missing required field")),
        Some(Value::Null) => "",
        Some(v) => cx.string(v, &value_field)?,
    };
    let name = name.to_ascii_lowercase();
    if !value.contains('\n') {
        check_value(cx, &name, value, &value_field)?;
        return Ok(vec![(name, value.trim_matches([' ', '\t']).to_owned())]);
    }
    let mut out = Vec::new();
    for line in value.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        check_value(cx, &name, line, &value_field)?;
        let line = line.trim_matches([' ', '\t']);
        if !line.is_empty() {
            out.push((name.clone(), line.to_owned()));
        }
    }
    cx.warn(
        &value_field,
        format_args!(
            "header {name:?} holds {} values on separate lines; replayed as {} headers",
            out.len(),
            out.len()
        ),
    );
    Ok(out)
}

/// Whether one line of a header value can be sent: no control character but tab.
fn check_value(cx: &Cx<'_>, name: &str, line: &str, field: &str) -> Result<(), TrafficError> {
    match line
        .bytes()
        .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        None => Ok(()),
        Some(b) => Err(cx.error(
            field,
            format!(
                "header {name:?} has {} in its value, which no HTTP message can carry",
                match b {
                    b'\r' => "a line break (CR)".to_owned(),
                    0 => "a NUL byte".to_owned(),
                    _ => format!("the control byte 0x{b:02x}"),
                }
            ),
        )),
    }
}

/// Whether `name` looks like an HTTP/1 request line (`GET /x HTTP/1.1`) or
/// status line (`HTTP/1.1 200 OK`), which some exporters list as a header.
fn is_start_line(name: &str) -> bool {
    let mut words = name.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(first), Some(_), _) if first.starts_with("HTTP/") => true,
        (Some(method), Some(_), Some(version)) => is_token(method) && version.starts_with("HTTP/"),
        _ => false,
    }
}

/// Drops pseudo-headers, hop-by-hop headers and the names in `also`.
fn keep_regular(headers: Vec<(String, String)>, also: &[&str]) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, _)| {
            !name.starts_with(':')
                && !HOP_BY_HOP.contains(&name.as_str())
                && !also.contains(&name.as_str())
        })
        .collect()
}

/// Makes `content-length` (when present) say `size`: the first one is
/// rewritten in place and any others removed. Returns the recorded value when
/// it said something else.
fn set_content_length(headers: &mut Vec<(String, String)>, size: usize) -> Option<String> {
    let wanted = size.to_string();
    let mut seen = false;
    let mut changed = None;
    headers.retain_mut(|(name, value)| {
        if name != "content-length" {
            return true;
        }
        if seen {
            if changed.is_none() && *value != wanted {
                changed = Some(value.clone());
            }
            return false;
        }
        seen = true;
        if *value != wanted {
            changed = Some(std::mem::replace(value, wanted.clone()));
        }
        true
    });
    changed
}

/// Reads `postData` into the request body.
fn read_post_data(cx: &mut Cx<'_>, value: &Value, base: &str) -> Result<Vec<u8>, TrafficError> {
    let post = cx.object(value, base)?;
    let mime = cx.optional_str(post, base, "mimeType")?.unwrap_or("");
    if let Some(text) = cx.optional_str(post, base, "text")? {
        let encoding = cx.optional_str(post, base, "encoding")?;
        return decode_text(cx, text, encoding, base);
    }
    let Some(params_value) = present(post, "params") else {
        cx.warn(base, "has neither text nor params; replaying an empty body");
        return Ok(Vec::new());
    };
    let params_field = format!("{base}.params");
    let list = cx.array(params_value, &params_field)?;
    let mut params = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let item_field = format!("{params_field}[{i}]");
        let param = cx.object(item, &item_field)?;
        let (name, _) = cx.required_str(param, &item_field, "name")?;
        let value = match param.get("value") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // Numbers, booleans, and the objects and lists some exporters
            // write (Chrome for structured form fields): as JSON text.
            Some(other) => {
                cx.warn(
                    &format!("{item_field}.value"),
                    format_args!(
                        "expected a string, found {}; written as {other}",
                        describe(other)
                    ),
                );
                other.to_string()
            }
        };
        let file_name = cx.optional_str(param, &item_field, "fileName")?;
        let content_type = cx.optional_str(param, &item_field, "contentType")?;
        params.push(Param {
            name: name.to_owned(),
            value,
            file_name: file_name.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
        });
    }
    match multipart_boundary(mime) {
        Some(boundary) => Ok(encode_multipart(&params, boundary)),
        None => Ok(encode_form(&params).into_bytes()),
    }
}

/// One `postData.params` item.
struct Param {
    /// Field name.
    name: String,
    /// Field value (file content for uploads, when recorded).
    value: String,
    /// File name for uploads.
    file_name: Option<String>,
    /// Content type for uploads.
    content_type: Option<String>,
}

/// The boundary of a `multipart/form-data; boundary=...` media type.
fn multipart_boundary(mime: &str) -> Option<&str> {
    let mut parts = mime.split(';');
    let essence = parts.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
            .filter(|b| !b.is_empty())
    })
}

/// `application/x-www-form-urlencoded` serialisation of `params`.
fn encode_form(params: &[Param]) -> String {
    let mut out = String::new();
    for (i, param) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_escape(&mut out, &param.name);
        out.push('=');
        form_escape(&mut out, &param.value);
    }
    out
}

/// Appends `s` escaped for a form body (space as `+`).
fn form_escape(out: &mut String, s: &str) {
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

/// `multipart/form-data` serialisation of `params`.
fn encode_multipart(params: &[Param], boundary: &str) -> Vec<u8> {
    let mut out = String::new();
    for param in params {
        out.push_str("--");
        out.push_str(boundary);
        out.push_str("\r\nContent-Disposition: form-data; name=\"");
        out.push_str(&param.name.replace('"', "%22"));
        out.push('"');
        if let Some(file_name) = &param.file_name {
            out.push_str("; filename=\"");
            out.push_str(&file_name.replace('"', "%22"));
            out.push('"');
        }
        out.push_str("\r\n");
        if let Some(content_type) = &param.content_type {
            out.push_str("Content-Type: ");
            out.push_str(content_type);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&param.value);
        out.push_str("\r\n");
    }
    out.push_str("--");
    out.push_str(boundary);
    out.push_str("--\r\n");
    out.into_bytes()
}

/// Reads `response.content` into the body.
fn read_content(cx: &mut Cx<'_>, value: &Value, base: &str) -> Result<Vec<u8>, TrafficError> {
    let content = cx.object(value, base)?;
    let Some(text) = cx.optional_str(content, base, "text")? else {
        return Ok(Vec::new());
    };
    let encoding = cx.optional_str(content, base, "encoding")?;
    decode_text(cx, text, encoding, base)
}

/// The bytes of a HAR `text` field under `encoding` (none or `base64`).
fn decode_text(
    cx: &Cx<'_>,
    text: &str,
    encoding: Option<&str>,
    base: &str,
) -> Result<Vec<u8>, TrafficError> {
    match encoding {
        None | Some("") => Ok(text.as_bytes().to_vec()),
        Some(e) if e.eq_ignore_ascii_case("base64") => {
            let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
                .decode(&compact)
                .map_err(|e| cx.error(&format!("{base}.text"), format!("invalid base64: {e}")))
        }
        Some(other) => Err(cx.error(
            &format!("{base}.encoding"),
            format!("unsupported encoding {other:?} (only base64 is defined)"),
        )),
    }
}

// ---------------------------------------------------------------------------
// URLs and authorities.
// ---------------------------------------------------------------------------

/// What `parse_url` found.
#[derive(Debug, PartialEq, Eq)]
enum Url {
    /// A URL fetched over HTTP.
    Network(NetworkUrl),
    /// A URL the browser resolves locally (`data:`, `blob:`, ...): its scheme.
    Local(String),
}

/// The parts of an `http(s)` URL a proxy sees.
#[derive(Debug, PartialEq, Eq)]
struct NetworkUrl {
    /// `http` or `https`.
    scheme: String,
    /// `host[:port]`, port omitted when default.
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
    /// The URL was `ws:`/`wss:`.
    websocket: bool,
    /// Some bytes had to be percent-encoded.
    encoded: bool,
}

/// Splits an absolute URL into scheme, authority and path.
fn parse_url(url: &str) -> Result<Url, String> {
    let url = url.trim_matches([' ', '\t', '\r', '\n']);
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err("not an absolute URL (no scheme)".to_owned());
    };
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err("not an absolute URL (no scheme)".to_owned());
    }
    let scheme = scheme.to_ascii_lowercase();
    if LOCAL_SCHEMES.contains(&scheme.as_str()) || scheme.ends_with("-extension") {
        return Ok(Url::Local(scheme));
    }
    let (http_scheme, websocket) = match scheme.as_str() {
        "http" => ("http", false),
        "https" => ("https", false),
        "ws" => ("http", true),
        "wss" => ("https", true),
        _ => {
            return Err(format!(
                "unsupported scheme {scheme:?} (expected http or https)"
            ));
        }
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err("not an absolute URL (no `//` after the scheme)".to_owned());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = normalize_authority(authority, http_scheme)?;
    let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
    let mut path = String::with_capacity(tail.len() + 1);
    if !tail.starts_with('/') {
        path.push('/');
    }
    let mut encoded = false;
    for &byte in tail.as_bytes() {
        if byte.is_ascii_graphic() {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
            encoded = true;
        }
    }
    Ok(Url::Network(NetworkUrl {
        scheme: http_scheme.to_owned(),
        authority,
        path,
        websocket,
        encoded,
    }))
}

/// Normalises `[userinfo@]host[:port]` for `scheme`: user info removed, host
/// lower-cased, the default port left out.
fn normalize_authority(authority: &str, scheme: &str) -> Result<String, String> {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err("unclosed `[` in the host".to_owned());
        };
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'))
        {
            return Err("not a valid IPv6 address".to_owned());
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "unexpected text after the IPv6 address".to_owned())?,
            ),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        let valid = host.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.'
                        | '_'
                        | '~'
                        | '%'
                        | '!'
                        | '$'
                        | '&'
                        | '\''
                        | '('
                        | ')'
                        | '*'
                        | '+'
                        | ','
                        | ';'
                        | '='
                )
        });
        if !valid {
            return Err("not a valid host".to_owned());
        }
        (host.to_ascii_lowercase(), port)
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    match port {
        None | Some("") => Ok(host),
        Some(p) => {
            if !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("not a valid port: {p:?}"));
            }
            match p.parse::<u16>() {
                Ok(0) => Err("port 0 is not a valid port".to_owned()),
                Ok(n) if n == default_port => Ok(host),
                Ok(n) => Ok(format!("{host}:{n}")),
                Err(_) => Err(format!("port out of range: {p}")),
            }
        }
    }
}

/// Whether `s` is an HTTP token (method or header name, RFC 9110 section 5.6.2).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests;
