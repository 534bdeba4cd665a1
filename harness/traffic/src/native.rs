//! Tollgate's own traffic format, for hand-written and converted recordings.
//!
//! It comes in two spellings of the same schema:
//!
//! * a **document** (`.yaml`, `.yml`, `.json`): `{ tollgate_traffic: 1, exchanges: [...] }`;
//! * **JSON lines** (`.jsonl`, `.ndjson`): one exchange object per line, no
//!   header line. This is the spelling for large recordings: [`Lines`] reads
//!   it one exchange at a time, so replaying it takes constant memory.
//!
//! # Schema of one exchange
//!
//! ```yaml
//! id: login                      # optional; default `entry N` (zero-based)
//! request:
//!   method: POST                 # default GET
//!   scheme: https                # default http
//!   authority: api.example.com   # required (host[:port], as `:authority`)
//!   path: /login?next=%2F        # default /
//!   headers:                     # a list of [name, value] pairs (order and
//!     - [content-type, application/json]   #   duplicates kept) or a mapping
//!   body: '{"user":"ann"}'       # see "Bodies"
//!   trailers: []                 # same shapes as headers
//! response:                      # optional; without it the replay answers 200
//!   status: 200                  # required
//!   headers: { content-type: text/plain }
//!   body: [ "hel", "lo" ]        # two chunks
//!   trailers: [[grpc-status, "0"]]
//! timing:                        # optional
//!   started: 2026-11-28T03:48:49.854551Z
//!   response_after_ms: 12.5      # request start -> response headers
//!   total_ms: 14                 # request start -> response end
//! properties:                    # optional, Envoy attribute names
//!   source.address: 10.0.0.7:51234
//!   connection.tls_version: TLSv1.3
//! callouts:                      # optional stub answers for proxy_http_call
//!   - cluster: auth
//!     response: { status: 200, headers: [[x-user, ann]], body: ok }
//! truncated: false               # optional: bodies are cut short
//! http_version: "1.1"            # optional: 1.1, 2 or 3 (how Envoy's codec
//!                                #   delivers unchunked bodies; default 1.1)
//! ```
//!
//! Header names are lower-cased on reading. A mapping of headers may give a
//! list of strings as a value to repeat a header; a mapping yields headers in
//! name order, so use the list form when the order matters. Properties are
//! likewise kept in name order.
//!
//! # Bodies
//!
//! A body is one of: a string (UTF-8 text, one chunk); `{base64: "..."}`
//! (bytes, one chunk); `{json: <any value>}` (the value written as compact
//! JSON, one chunk); or a list of those, one item per chunk, which fixes the
//! chunk boundaries the filter sees. An absent body is empty.
//!
//! The writer ([`to_value`], [`write_yaml`], [`write_json`], [`write_line`]) uses text for
//! UTF-8 bodies and base64 otherwise, a list when chunk boundaries are known.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{
    Callout, Exchange, ExchangeDetails, HttpRequest, HttpResponse, Leniency, Timing, Traffic,
    TrafficError,
};

/// The version written in (and required of) `tollgate_traffic`.
pub const VERSION: u64 = 1;

/// Reads a native document (YAML or JSON; JSON is YAML, both parse).
pub fn parse_document(
    file: &str,
    bytes: &[u8],
    leniency: Leniency,
) -> Result<Traffic, TrafficError> {
    let text = std::str::from_utf8(bytes).map_err(|e| TrafficError::Document {
        file: file.to_owned(),
        field: "(document)".to_owned(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    let mut root: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| TrafficError::Json {
            file: file.to_owned(),
            entry: None,
            line: e.line(),
            column: e.column(),
            message: super::json_message(&e),
        })?
    } else {
        crate::input::check_yaml_depth(text, crate::input::MAX_YAML_DEPTH).map_err(|message| {
            TrafficError::Document {
                file: file.to_owned(),
                field: "(document)".to_owned(),
                message,
            }
        })?;
        yaml_serde::from_str(text).map_err(|e| TrafficError::Document {
            file: file.to_owned(),
            field: "(document)".to_owned(),
            message: format!("malformed YAML: {e}"),
        })?
    };
    let doc_err = |field: &str, message: String| TrafficError::Document {
        file: file.to_owned(),
        field: field.to_owned(),
        message,
    };
    let obj = root.as_object().ok_or_else(|| {
        doc_err(
            "(document)",
            format!("expected a mapping, found {}", kind(&root)),
        )
    })?;
    match obj.get("tollgate_traffic") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(doc_err(
                "tollgate_traffic",
                format!("unsupported version {v} (this Tollgate reads version {VERSION})"),
            ));
        }
        None => {
            return Err(doc_err(
                "tollgate_traffic",
                format!("missing required field (write `tollgate_traffic: {VERSION}`)"),
            ));
        }
    }
    match obj.get("exchanges") {
        Some(Value::Array(_)) => {}
        Some(other) => {
            return Err(doc_err(
                "exchanges",
                format!("expected a list, found {}", kind(other)),
            ));
        }
        None => return Err(doc_err("exchanges", "missing required field".to_owned())),
    }
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "tollgate_traffic" | "exchanges"))
    {
        return Err(doc_err(
            key,
            "unknown field (expected tollgate_traffic, exchanges)".to_owned(),
        ));
    }
    // The entries are taken out of the document: their strings move into
    // the exchanges.
    let entries = match root.get_mut("exchanges") {
        Some(Value::Array(a)) => std::mem::take(a),
        _ => Vec::new(),
    };
    let mut traffic = Traffic {
        source: Some(PathBuf::from(file)),
        exchanges: Vec::with_capacity(entries.len()),
        warnings: Vec::new(),
    };
    for (index, entry) in entries.into_iter().enumerate() {
        match exchange_from_owned(file, index, &format!("exchanges[{index}]"), entry) {
            Ok(e) => traffic.exchanges.push(e),
            Err(e) if leniency == Leniency::Lenient => {
                traffic.warnings.push(format!("{e}; entry skipped"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(traffic)
}

/// Streams a JSON-lines recording one exchange at a time. Blank lines are
/// skipped; the entry index counts non-blank lines. With
/// [`Leniency::Lenient`], a bad line becomes a warning (see [`Lines::take_warnings`]).
pub struct Lines<R> {
    file: String,
    reader: R,
    line_no: usize,
    index: usize,
    leniency: Leniency,
    warnings: Vec<String>,
    buf: String,
    done: bool,
    /// The input cap, read once (it is read from the environment).
    max: u64,
}

impl<R: BufRead> Lines<R> {
    /// Reads exchanges from `reader`; `file` names it in messages.
    pub fn new(file: impl Into<String>, reader: R, leniency: Leniency) -> Self {
        Self {
            file: file.into(),
            reader,
            line_no: 0,
            index: 0,
            leniency,
            warnings: Vec::new(),
            buf: String::new(),
            done: false,
            max: crate::input::max_input_bytes(),
        }
    }

    /// Warnings gathered so far (skipped lines), emptied.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn next_line(&mut self) -> Option<Result<Exchange, TrafficError>> {
        loop {
            self.buf.clear();
            // A line is bounded by the input cap (a file without newlines
            // is not read into memory whole).
            let max = self.max;
            let read = std::io::Read::take(&mut self.reader, max.saturating_add(1))
                .read_line(&mut self.buf);
            match read {
                Ok(0) => return None,
                Ok(n) if n as u64 > max => {
                    return Some(Err(TrafficError::Read {
                        file: self.file.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::FileTooLarge,
                            format!(
                                "line {}: longer than the input cap of {max} bytes (--max-input-bytes or {} reads more)",
                                self.line_no + 1,
                                crate::input::MAX_INPUT_ENV
                            ),
                        ),
                    }));
                }
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(TrafficError::Read {
                        file: self.file.clone(),
                        source,
                    }));
                }
            }
            self.line_no += 1;
            let line = self.buf.trim();
            if line.is_empty() {
                continue;
            }
            let index = self.index;
            self.index += 1;
            // The usual shape straight into an exchange; anything else (and
            // every error) the general way.
            if let Some(e) = fast::exchange(line, index) {
                return Some(Ok(e));
            }
            let value: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => {
                    return Some(Err(TrafficError::Json {
                        file: self.file.clone(),
                        entry: Some(index),
                        line: self.line_no,
                        column: e.column(),
                        message: super::json_message(&e),
                    }));
                }
            };
            return Some(exchange_from_owned(
                &self.file,
                index,
                &format!("line {}", self.line_no),
                value,
            ));
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<Exchange, TrafficError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.next_line() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) if self.leniency == Leniency::Lenient && !is_io(&e) => {
                    self.warnings.push(format!("{e}; entry skipped"));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(x)) => return Some(Ok(x)),
            }
        }
    }
}

fn is_io(e: &TrafficError) -> bool {
    matches!(e, TrafficError::Read { .. })
}

/// Reads a whole JSON-lines recording into memory.
pub fn parse_lines(file: &str, bytes: &[u8], leniency: Leniency) -> Result<Traffic, TrafficError> {
    let mut lines = Lines::new(file, bytes, leniency);
    let mut exchanges = Vec::new();
    for e in lines.by_ref() {
        exchanges.push(e?);
    }
    Ok(Traffic {
        source: Some(PathBuf::from(file)),
        exchanges,
        warnings: lines.take_warnings(),
    })
}

// ---------------------------------------------------------------------------
// Reading one exchange.
// ---------------------------------------------------------------------------

struct Cx<'a> {
    file: &'a str,
    index: usize,
    base: &'a str,
}

impl Cx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> TrafficError {
        TrafficError::Entry {
            file: self.file.to_owned(),
            index: self.index,
            field: if field.is_empty() {
                self.base.to_owned()
            } else {
                format!("{}.{field}", self.base)
            },
            message: message.into(),
        }
    }

    fn object<'v>(
        &self,
        v: &'v Value,
        field: &str,
    ) -> Result<&'v Map<String, Value>, TrafficError> {
        v.as_object()
            .ok_or_else(|| self.err(field, format!("expected a mapping, found {}", kind(v))))
    }

    fn string<'v>(&self, v: &'v Value, field: &str) -> Result<&'v str, TrafficError> {
        v.as_str()
            .ok_or_else(|| self.err(field, format!("expected a string, found {}", kind(v))))
    }

    fn known(
        &self,
        o: &Map<String, Value>,
        field: &str,
        allowed: &[&str],
    ) -> Result<(), TrafficError> {
        match o.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.err(
                &join(field, k),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}.{b}")
    }
}

/// A short description of a JSON value's type, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Converts one exchange object; `base` is the field path used in messages
/// (e.g. `exchanges[3]` or `line 4`).
pub fn exchange_from_value(
    file: &str,
    index: usize,
    base: &str,
    v: &Value,
) -> Result<Exchange, TrafficError> {
    exchange_from_owned(file, index, base, v.clone())
}

/// [`exchange_from_value`] taking the value: its strings move into the
/// exchange instead of being copied (how [`Lines`] reads each line).
pub fn exchange_from_owned(
    file: &str,
    index: usize,
    base: &str,
    mut v: Value,
) -> Result<Exchange, TrafficError> {
    let cx = Cx { file, index, base };
    let Some(o) = v.as_object_mut() else {
        return Err(cx.err("", format!("expected a mapping, found {}", kind(&v))));
    };
    cx.known(
        o,
        "",
        &[
            "id",
            "request",
            "response",
            "timing",
            "properties",
            "callouts",
            "truncated",
            "http_version",
        ],
    )?;
    let id = match o.get_mut("id") {
        None => format!("entry {index}"),
        Some(v) => take_string(&cx, v, &|| "id".to_owned())?,
    };
    let mut details = ExchangeDetails::default();
    let request = {
        let r = o
            .get_mut("request")
            .ok_or_else(|| cx.err("request", "missing required field"))?;
        let r = object_mut(&cx, r, "request")?;
        cx.known(
            r,
            "request",
            &[
                "method",
                "scheme",
                "authority",
                "path",
                "headers",
                "body",
                "trailers",
            ],
        )?;
        let authority = match r.get_mut("authority") {
            None => return Err(cx.err("request.authority", "missing required field")),
            Some(v) => take_string(&cx, v, &|| "request.authority".to_owned())?,
        };
        let path = text(&cx, r, "path", "/")?;
        if !path.starts_with('/') && path != "*" {
            return Err(cx.err(
                "request.path",
                format!("must start with `/`, found {path:?}"),
            ));
        }
        let (body, chunks) = body(&cx, r.get_mut("body"), &|| "request.body".to_owned())?;
        details.request_chunks = chunks;
        details.request_trailers = headers(&cx, r.get_mut("trailers"), &|| {
            "request.trailers".to_owned()
        })?;
        let method = text(&cx, r, "method", "GET")?;
        let scheme = text(&cx, r, "scheme", "http")?;
        HttpRequest {
            method,
            scheme,
            authority,
            path,
            headers: headers(&cx, r.get_mut("headers"), &|| "request.headers".to_owned())?,
            body,
        }
    };
    let response = match o.get_mut("response") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let (resp, chunks, trailers) = read_response(&cx, v, "response")?;
            details.response_chunks = chunks;
            details.response_trailers = trailers;
            Some(resp)
        }
    };
    if let Some(t) = o.get("timing") {
        let t = cx.object(t, "timing")?;
        cx.known(t, "timing", &["started", "response_after_ms", "total_ms"])?;
        details.timing = Timing {
            started: match t.get("started") {
                None => None,
                Some(v) => Some(cx.string(v, "timing.started")?.to_owned()),
            },
            response_after: millis(&cx, t.get("response_after_ms"), "timing.response_after_ms")?,
            total: millis(&cx, t.get("total_ms"), "timing.total_ms")?,
        };
    }
    if let Some(p) = o.get_mut("properties") {
        for (k, v) in object_mut(&cx, p, "properties")? {
            let value = match v {
                Value::String(s) => std::mem::take(s),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(cx.err(
                        &format!("properties.{k}"),
                        format!(
                            "expected a string, number or boolean, found {}",
                            kind(other)
                        ),
                    ));
                }
            };
            details.properties.push((k.clone(), value));
        }
    }
    if let Some(c) = o.get_mut("callouts") {
        let kind_of = kind(c);
        let list = c
            .as_array_mut()
            .ok_or_else(|| cx.err("callouts", format!("expected a list, found {kind_of}")))?;
        for (i, c) in list.iter_mut().enumerate() {
            let field = format!("callouts[{i}]");
            let co = object_mut(&cx, c, &field)?;
            cx.known(co, &field, &["cluster", "response"])?;
            let cluster = match co.get_mut("cluster") {
                None => String::new(),
                Some(v) => take_string(&cx, v, &|| format!("{field}.cluster"))?,
            };
            let r = co
                .get_mut("response")
                .ok_or_else(|| cx.err(&format!("{field}.response"), "missing required field"))?;
            let (response, _, _) = read_response(&cx, r, &format!("{field}.response"))?;
            details.callouts.push(Callout { cluster, response });
        }
    }
    if let Some(v) = o.get("http_version") {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(cx.err(
                    "http_version",
                    format!("expected \"1.1\", \"2\" or \"3\", found {}", kind(other)),
                ));
            }
        };
        details.http_version = Some(crate::HttpVersion::parse(&text).ok_or_else(|| {
            cx.err(
                "http_version",
                format!("expected \"1.1\", \"2\" or \"3\", found {text:?}"),
            )
        })?);
    }
    if let Some(t) = o.get("truncated") {
        details.truncated = t.as_bool().ok_or_else(|| {
            cx.err(
                "truncated",
                format!("expected a boolean, found {}", kind(t)),
            )
        })?;
    }
    Ok(Exchange {
        id,
        request,
        response,
        details,
    })
}

/// A field path, made only when an error names it (reading a recording
/// builds none for the fields that are fine).
type Field<'a> = &'a dyn Fn() -> String;

/// `v` as a mapping to take strings from, or an error naming `field`.
fn object_mut<'v>(
    cx: &Cx<'_>,
    v: &'v mut Value,
    field: &str,
) -> Result<&'v mut Map<String, Value>, TrafficError> {
    let found = kind(v);
    v.as_object_mut()
        .ok_or_else(|| cx.err(field, format!("expected a mapping, found {found}")))
}

/// The string `v`, taken out of it, or an error naming `field`.
fn take_string(cx: &Cx<'_>, v: &mut Value, field: Field<'_>) -> Result<String, TrafficError> {
    match v {
        Value::String(s) => Ok(std::mem::take(s)),
        other => Err(cx.err(
            &field(),
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

/// The request's text field `k` (taken), or `default` when absent.
fn text(
    cx: &Cx<'_>,
    r: &mut Map<String, Value>,
    k: &str,
    default: &str,
) -> Result<String, TrafficError> {
    match r.get_mut(k) {
        None => Ok(default.to_owned()),
        Some(v) => take_string(cx, v, &|| format!("request.{k}")),
    }
}

type Headers = Vec<(String, String)>;

fn read_response(
    cx: &Cx<'_>,
    v: &mut Value,
    field: &str,
) -> Result<(HttpResponse, Vec<usize>, Headers), TrafficError> {
    let r = object_mut(cx, v, field)?;
    cx.known(r, field, &["status", "headers", "body", "trailers"])?;
    let status = match r.get("status") {
        None => return Err(cx.err(&format!("{field}.status"), "missing required field")),
        Some(v) => v
            .as_u64()
            .filter(|s| (100..=999).contains(s))
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| {
                cx.err(
                    &format!("{field}.status"),
                    format!("expected a status code 100-999, found {v}"),
                )
            })?,
    };
    let (body, chunks) = body(cx, r.get_mut("body"), &|| format!("{field}.body"))?;
    Ok((
        HttpResponse {
            status,
            headers: headers(cx, r.get_mut("headers"), &|| format!("{field}.headers"))?,
            body,
        },
        chunks,
        headers(cx, r.get_mut("trailers"), &|| format!("{field}.trailers"))?,
    ))
}

fn millis(cx: &Cx<'_>, v: Option<&Value>, field: &str) -> Result<Option<Duration>, TrafficError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let ms = v
                .as_f64()
                .filter(|m| m.is_finite() && *m >= 0.0 && *m < 1e12)
                .ok_or_else(|| {
                    cx.err(
                        field,
                        format!("expected milliseconds (a number >= 0), found {v}"),
                    )
                })?;
            Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
        }
    }
}

fn headers(cx: &Cx<'_>, v: Option<&mut Value>, field: Field<'_>) -> Result<Headers, TrafficError> {
    let mut out = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            out.reserve_exact(list.len());
            for (i, pair) in list.iter_mut().enumerate() {
                let f = || format!("{}[{i}]", field());
                match pair.as_array_mut().map(Vec::as_mut_slice) {
                    Some([Value::String(k), Value::String(v)]) => {
                        out.push((name(cx, k, &f)?, std::mem::take(v)));
                    }
                    _ => {
                        return Err(cx.err(
                            &f(),
                            format!("expected a [name, value] pair of strings, found {pair}"),
                        ));
                    }
                }
            }
        }
        Some(Value::Object(map)) => {
            let field = field();
            for (k, v) in map.iter_mut() {
                let f = format!("{field}.{k}");
                let mut k = k.clone();
                let n = name(cx, &mut k, &|| f.clone())?;
                match v {
                    Value::String(s) => out.push((n, std::mem::take(s))),
                    Value::Number(x) => out.push((n, x.to_string())),
                    Value::Array(vs) => {
                        for (i, v) in vs.iter_mut().enumerate() {
                            out.push((n.clone(), take_string(cx, v, &|| format!("{f}[{i}]"))?));
                        }
                    }
                    other => {
                        return Err(cx.err(&f, format!("expected a string, found {}", kind(other))));
                    }
                }
            }
        }
        Some(other) => {
            return Err(cx.err(
                &field(),
                format!(
                    "expected a list of [name, value] pairs or a mapping, found {}",
                    kind(other)
                ),
            ));
        }
    }
    // A CR or LF would inject headers into what the filter (or, for
    // callouts, the upstream stub) sends on.
    for (k, v) in &out {
        crate::header_syntax::check(k, v).map_err(|e| cx.err(&field(), e))?;
    }
    Ok(out)
}

/// The header name `k`, taken and lower-cased in place.
/// What a recording may give as a header name (before lower-casing).
fn is_header_name(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b == b':' || crate::header_syntax::is_token_byte(b))
}

fn name(cx: &Cx<'_>, k: &mut String, field: Field<'_>) -> Result<String, TrafficError> {
    if is_header_name(k) {
        let mut k = std::mem::take(k);
        k.make_ascii_lowercase();
        Ok(k)
    } else {
        Err(cx.err(&field(), format!("{k:?} is not a valid header name")))
    }
}

/// A body value: the bytes and, when given as a list, the chunk sizes.
fn body(
    cx: &Cx<'_>,
    v: Option<&mut Value>,
    field: Field<'_>,
) -> Result<(Vec<u8>, Vec<usize>), TrafficError> {
    match v {
        None | Some(Value::Null) => Ok((Vec::new(), Vec::new())),
        Some(Value::Array(parts)) => {
            let mut body = Vec::new();
            let mut chunks = Vec::with_capacity(parts.len());
            for (i, p) in parts.iter_mut().enumerate() {
                let bytes = chunk(cx, p, &|| format!("{}[{i}]", field()))?;
                chunks.push(bytes.len());
                body.extend_from_slice(&bytes);
            }
            Ok((body, chunks))
        }
        Some(v) => Ok((chunk(cx, v, field)?, Vec::new())),
    }
}

fn chunk(cx: &Cx<'_>, v: &mut Value, field: Field<'_>) -> Result<Vec<u8>, TrafficError> {
    match v {
        Value::String(s) => Ok(std::mem::take(s).into_bytes()),
        Value::Object(o) if o.len() == 1 => {
            if let Some(b) = o.get("base64") {
                let field = field();
                let s = cx.string(b, &format!("{field}.base64"))?;
                decode_base64(s)
                    .map_err(|e| cx.err(&format!("{field}.base64"), format!("bad base64: {e}")))
            } else if let Some(j) = o.get("json") {
                Ok(j.to_string().into_bytes())
            } else {
                Err(cx.err(&field(), "expected `base64` or `json`"))
            }
        }
        other => Err(cx.err(
            &field(),
            format!(
                "expected a string, {{base64: ...}}, {{json: ...}} or a list of those, found {}",
                kind(other)
            ),
        )),
    }
}

/// Decodes standard base64, padded or not, ignoring line breaks.
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(clean.trim_end_matches('='))
}

// ---------------------------------------------------------------------------
// Writing.
// ---------------------------------------------------------------------------

fn headers_value(h: &[(String, String)]) -> Value {
    Value::Array(h.iter().map(|(k, v)| json!([k, v])).collect())
}

fn chunk_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

fn body_value(b: &[u8], chunks: &[usize]) -> Option<Value> {
    if chunks.is_empty() || chunks.iter().sum::<usize>() != b.len() {
        return (!b.is_empty()).then(|| chunk_value(b));
    }
    let mut out = Vec::with_capacity(chunks.len());
    let mut at = 0;
    for &n in chunks {
        out.push(chunk_value(&b[at..at + n]));
        at += n;
    }
    Some(Value::Array(out))
}

fn response_value(r: &HttpResponse, chunks: &[usize], trailers: &[(String, String)]) -> Value {
    let mut o = Map::new();
    o.insert("status".into(), json!(r.status));
    o.insert("headers".into(), headers_value(&r.headers));
    if let Some(b) = body_value(&r.body, chunks) {
        o.insert("body".into(), b);
    }
    if !trailers.is_empty() {
        o.insert("trailers".into(), headers_value(trailers));
    }
    Value::Object(o)
}

/// One exchange in the native schema.
pub fn to_value(e: &Exchange) -> Value {
    let d = &e.details;
    let mut req = Map::new();
    req.insert("method".into(), json!(e.request.method));
    req.insert("scheme".into(), json!(e.request.scheme));
    req.insert("authority".into(), json!(e.request.authority));
    req.insert("path".into(), json!(e.request.path));
    req.insert("headers".into(), headers_value(&e.request.headers));
    if let Some(b) = body_value(&e.request.body, &d.request_chunks) {
        req.insert("body".into(), b);
    }
    if !d.request_trailers.is_empty() {
        req.insert("trailers".into(), headers_value(&d.request_trailers));
    }
    let mut o = Map::new();
    o.insert("id".into(), json!(e.id));
    o.insert("request".into(), Value::Object(req));
    if let Some(r) = &e.response {
        o.insert(
            "response".into(),
            response_value(r, &d.response_chunks, &d.response_trailers),
        );
    }
    let t = &d.timing;
    if t != &Timing::default() {
        let mut tm = Map::new();
        if let Some(s) = &t.started {
            tm.insert("started".into(), json!(s));
        }
        if let Some(x) = t.response_after {
            tm.insert("response_after_ms".into(), json!(x.as_secs_f64() * 1000.0));
        }
        if let Some(x) = t.total {
            tm.insert("total_ms".into(), json!(x.as_secs_f64() * 1000.0));
        }
        o.insert("timing".into(), Value::Object(tm));
    }
    if !d.properties.is_empty() {
        let props: BTreeMap<&str, &str> = d
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        o.insert("properties".into(), json!(props));
    }
    if let Some(v) = d.http_version {
        o.insert("http_version".into(), json!(v.name()));
    }
    if !d.callouts.is_empty() {
        let list: Vec<Value> = d
            .callouts
            .iter()
            .map(|c| json!({ "cluster": c.cluster, "response": response_value(&c.response, &[], &[]) }))
            .collect();
        o.insert("callouts".into(), Value::Array(list));
    }
    if d.truncated {
        o.insert("truncated".into(), json!(true));
    }
    Value::Object(o)
}

/// The whole recording as a native document value.
pub fn document_value<'a>(exchanges: impl IntoIterator<Item = &'a Exchange>) -> Value {
    json!({
        "tollgate_traffic": VERSION,
        "exchanges": exchanges.into_iter().map(to_value).collect::<Vec<_>>(),
    })
}

/// Writes a native document as YAML (`tollgate_traffic` first, so the
/// format is recognisable from the file's head).
pub fn write_yaml(out: &mut impl Write, traffic: &Traffic) -> std::io::Result<()> {
    let list: Vec<Value> = traffic.exchanges.iter().map(to_value).collect();
    let text = yaml_serde::to_string(&list).map_err(std::io::Error::other)?;
    writeln!(out, "tollgate_traffic: {VERSION}")?;
    if list.is_empty() {
        return writeln!(out, "exchanges: []");
    }
    writeln!(out, "exchanges:")?;
    out.write_all(text.as_bytes())
}

/// Writes a native document as pretty JSON (`tollgate_traffic` first).
pub fn write_json(out: &mut impl Write, traffic: &Traffic) -> std::io::Result<()> {
    write!(
        out,
        "{{\n  \"tollgate_traffic\": {VERSION},\n  \"exchanges\": ["
    )?;
    for (i, e) in traffic.exchanges.iter().enumerate() {
        out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut *out, &to_value(e))?;
    }
    out.write_all(if traffic.exchanges.is_empty() {
        b"]\n}\n"
    } else {
        b"\n  ]\n}\n"
    })
}

/// Writes one exchange as one JSON line.
pub fn write_line(out: &mut impl Write, exchange: &Exchange) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &to_value(exchange))?;
    out.write_all(b"\n")
}

mod fast;

#[cfg(test)]
mod tests;
