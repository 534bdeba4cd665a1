//! Envoy tap traces (the `envoy.filters.http.tap` filter's JSON output) as
//! [`Traffic`].
//!
//! A tap file holds one or more JSON trace objects, one after the other (the
//! `file_per_tap` sink writes one buffered trace per file, or every segment
//! of one streamed trace into the same file). Both body formats are read:
//! `JSON_BODY_AS_STRING` (`as_string`) and `JSON_BODY_AS_BYTES` (`as_bytes`,
//! base64).
//!
//! * `http_buffered_trace` becomes one [`Exchange`]: `request` and `response`
//!   each with `headers`, `body`, `trailers` and `headers_received_time`, and
//!   `downstream_connection` when the tap records it.
//! * `http_streamed_trace_segment`s are gathered by `trace_id` (across all
//!   files of a directory) and become one exchange per trace, in the order the
//!   traces first appear: `request_headers`, `request_body_chunk`s (their
//!   boundaries kept as [`ExchangeDetails::request_chunks`]),
//!   `request_trailers`, and the same for the response.
//!
//! Pseudo-headers become the request line (`:method`, `:scheme`,
//! `:authority`, `:path`) and the status (`:status`); everything else is kept
//! as the tap saw it, which is what a filter at the tap's position sees
//! (including headers Envoy adds, such as `x-request-id`). A header whose
//! `value` is empty but whose `raw_value` is set is decoded from `raw_value`
//! (base64 bytes).
//!
//! `downstream_connection` gives the properties `source.address` (the
//! client) and `destination.address` (Envoy's listener);
//! `headers_received_time` gives [`super::Timing::started`] and
//! [`super::Timing::response_after`].
//!
//! A body with `truncated: true` (the tap's `max_buffered_rx_bytes` /
//! `max_buffered_tx_bytes` cut it) is kept as the prefix the tap saved, the
//! exchange is marked [`ExchangeDetails::truncated`] and a warning names it.
//! Socket traces (`socket_buffered_trace`, ...) and other unknown variants are
//! an error naming the file and the trace, or a skipped trace with a warning
//! under [`Leniency::Lenient`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::native::{decode_base64, kind};
use super::{
    Exchange, ExchangeDetails, HttpRequest, HttpResponse, Leniency, Traffic, TrafficError,
};

/// Reads one tap file.
pub fn load(path: &Path, leniency: Leniency) -> Result<Traffic, TrafficError> {
    let file = path.display().to_string();
    let bytes = crate::input::read(path).map_err(|source| TrafficError::Read {
        file: file.clone(),
        source,
    })?;
    let mut t = parse(&file, &bytes, leniency)?;
    t.source = Some(path.to_path_buf());
    Ok(t)
}

/// Reads every regular file in `dir` whose name ends in `.json` (sorted by
/// name), pairing streamed segments across files by trace id.
pub fn load_dir(dir: &Path, leniency: Leniency) -> Result<Traffic, TrafficError> {
    let dir_name = dir.display().to_string();
    let read_err = |source| TrafficError::Read {
        file: dir_name.clone(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut reader = Reader::new(leniency);
    for f in &files {
        let file = f.display().to_string();
        let bytes = crate::input::read(f).map_err(|source| TrafficError::Read {
            file: file.clone(),
            source,
        })?;
        reader.add(&file, &bytes)?;
    }
    let mut t = reader.finish();
    t.source = Some(dir.to_path_buf());
    if files.is_empty() {
        t.warnings.push(format!(
            "{dir_name}: no tap files (*.json) in this directory"
        ));
    }
    Ok(t)
}

/// Converts the bytes of one tap file.
pub fn parse(file: &str, bytes: &[u8], leniency: Leniency) -> Result<Traffic, TrafficError> {
    let mut reader = Reader::new(leniency);
    reader.add(file, bytes)?;
    let mut t = reader.finish();
    t.source = Some(PathBuf::from(file));
    Ok(t)
}

/// Builds traffic from tap files added one by one.
pub struct Reader {
    leniency: Leniency,
    /// Exchanges from buffered traces, and placeholders for streamed ones, in order.
    slots: Vec<Slot>,
    streams: HashMap<String, usize>,
    warnings: Vec<String>,
    traces: usize,
}

enum Slot {
    Done(Box<Exchange>),
    Stream(Box<Partial>),
}

/// A streamed trace being assembled.
struct Partial {
    file: String,
    index: usize,
    trace_id: String,
    request_headers: Option<Vec<(String, String)>>,
    request_body: Vec<u8>,
    request_chunks: Vec<usize>,
    request_trailers: Vec<(String, String)>,
    response_headers: Option<Vec<(String, String)>>,
    response_body: Vec<u8>,
    response_chunks: Vec<usize>,
    response_trailers: Vec<(String, String)>,
    truncated: bool,
}

impl Reader {
    /// An empty reader.
    pub fn new(leniency: Leniency) -> Self {
        Self {
            leniency,
            slots: Vec::new(),
            streams: HashMap::new(),
            warnings: Vec::new(),
            traces: 0,
        }
    }

    /// Adds the traces of one file. Syntax errors fail even when lenient
    /// (the rest of the file cannot be found), naming the trace they are in.
    pub fn add(&mut self, file: &str, bytes: &[u8]) -> Result<(), TrafficError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
        let mut in_file = 0usize;
        loop {
            let value = match stream.next() {
                None => break,
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    let err = TrafficError::Json {
                        file: file.to_owned(),
                        entry: Some(in_file),
                        line: e.line(),
                        column: e.column(),
                        message: super::json_message(&e),
                    };
                    if self.leniency == Leniency::Lenient {
                        self.warnings
                            .push(format!("{err}; the rest of the file is skipped"));
                        break;
                    }
                    return Err(err);
                }
            };
            let index = in_file;
            in_file += 1;
            if let Err(e) = self.trace(file, index, &value) {
                if self.leniency == Leniency::Lenient {
                    self.warnings.push(format!("{e}; trace skipped"));
                } else {
                    return Err(e);
                }
            }
        }
        if in_file == 0 {
            let err = TrafficError::Document {
                file: file.to_owned(),
                field: "(document)".to_owned(),
                message: "the file holds no tap trace".to_owned(),
            };
            if self.leniency == Leniency::Lenient {
                self.warnings.push(format!("{err}; file skipped"));
            } else {
                return Err(err);
            }
        }
        Ok(())
    }

    fn trace(&mut self, file: &str, index: usize, v: &Value) -> Result<(), TrafficError> {
        let cx = Cx {
            file,
            index,
            base: String::new(),
        };
        let o = v
            .as_object()
            .ok_or_else(|| cx.err("", format!("expected a trace object, found {}", kind(v))))?;
        let (variant, body) = match o.iter().next() {
            Some((k, b)) if o.len() == 1 => (k.as_str(), b),
            _ => {
                return Err(cx.err(
                    "",
                    format!(
                        "expected exactly one of http_buffered_trace, http_streamed_trace_segment; found keys {:?}",
                        o.keys().collect::<Vec<_>>()
                    ),
                ));
            }
        };
        let cx = Cx {
            file,
            index,
            base: variant.to_owned(),
        };
        match variant {
            "http_buffered_trace" => {
                let n = self.traces;
                self.traces += 1;
                let ex = self.buffered(&cx, body, n)?;
                self.slots.push(Slot::Done(Box::new(ex)));
                Ok(())
            }
            "http_streamed_trace_segment" => self.segment(&cx, body),
            other => Err(cx.err(
                "",
                format!(
                    "unsupported tap trace variant `{other}` (Tollgate reads http_buffered_trace and http_streamed_trace_segment{})",
                    if other.starts_with("socket_") { "; this is a socket (L4) tap" } else { "" }
                ),
            )),
        }
    }

    fn buffered(&mut self, cx: &Cx<'_>, v: &Value, n: usize) -> Result<Exchange, TrafficError> {
        let o = cx.object(v, "")?;
        let mut details = ExchangeDetails::default();
        let req = o
            .get("request")
            .ok_or_else(|| cx.err("request", "missing required field"))?;
        let req = cx.object(req, "request")?;
        let headers = header_list(cx, req.get("headers"), "request.headers")?;
        let (body, truncated) = read_body(cx, req.get("body"), "request.body")?;
        if truncated {
            self.truncated(cx, "request.body", &mut details);
        }
        details.request_trailers =
            regular(header_list(cx, req.get("trailers"), "request.trailers")?);
        let request = request(cx, headers, body, "request.headers")?;
        let started = time(
            cx,
            req.get("headers_received_time"),
            "request.headers_received_time",
        )?;
        let mut response = None;
        if let Some(resp) = o.get("response") {
            let resp = cx.object(resp, "response")?;
            let headers = header_list(cx, resp.get("headers"), "response.headers")?;
            let (body, truncated) = read_body(cx, resp.get("body"), "response.body")?;
            if truncated {
                self.truncated(cx, "response.body", &mut details);
            }
            details.response_trailers =
                regular(header_list(cx, resp.get("trailers"), "response.trailers")?);
            let answered = time(
                cx,
                resp.get("headers_received_time"),
                "response.headers_received_time",
            )?;
            if let (Some((_, sent)), Some((_, answered))) = (&started, &answered) {
                details.timing.response_after = answered.checked_sub(*sent);
            }
            if !headers.is_empty() {
                response = Some(response_of(cx, headers, body, "response.headers")?);
            }
        }
        details.timing.started = started.map(|(s, _)| s);
        if let Some(c) = o.get("downstream_connection") {
            details.properties = connection(cx, c)?;
        }
        Ok(Exchange {
            id: format!("{} trace {n}", short(cx.file)),
            request,
            response,
            details,
        })
    }

    fn truncated(&mut self, cx: &Cx<'_>, field: &str, details: &mut ExchangeDetails) {
        details.truncated = true;
        self.warnings.push(format!(
            "{}: trace {}: {}.{field}: truncated by the tap (raise max_buffered_rx_bytes/max_buffered_tx_bytes); replaying the saved prefix",
            cx.file, cx.index, cx.base
        ));
    }

    fn segment(&mut self, cx: &Cx<'_>, v: &Value) -> Result<(), TrafficError> {
        let o = cx.object(v, "")?;
        let id = match o.get("trace_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(cx.err(
                    "trace_id",
                    format!("expected a string, found {}", kind(other)),
                ));
            }
            None => return Err(cx.err("trace_id", "missing required field")),
        };
        let parts: Vec<(&String, &Value)> = o.iter().filter(|(k, _)| *k != "trace_id").collect();
        let [(part, value)] = parts.as_slice() else {
            return Err(cx.err(
                "",
                format!(
                    "expected trace_id and one segment field, found {:?}",
                    o.keys().collect::<Vec<_>>()
                ),
            ));
        };
        let slot = match self.streams.get(&id) {
            Some(&s) => s,
            None => {
                self.slots.push(Slot::Stream(Box::new(Partial {
                    file: cx.file.to_owned(),
                    index: cx.index,
                    trace_id: id.clone(),
                    request_headers: None,
                    request_body: Vec::new(),
                    request_chunks: Vec::new(),
                    request_trailers: Vec::new(),
                    response_headers: None,
                    response_body: Vec::new(),
                    response_chunks: Vec::new(),
                    response_trailers: Vec::new(),
                    truncated: false,
                })));
                self.streams.insert(id.clone(), self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        let part = part.as_str();
        let headers_of = |field: &str| -> Result<Vec<(String, String)>, TrafficError> {
            let m = cx.object(value, field)?;
            header_list(cx, m.get("headers"), &format!("{field}.headers"))
        };
        let mut truncated_note = None;
        let Some(Slot::Stream(p)) = self.slots.get_mut(slot) else {
            return Err(cx.err("trace_id", format!("trace {id} is not a streamed trace")));
        };
        match part {
            "request_headers" => p.request_headers = Some(headers_of(part)?),
            "response_headers" => p.response_headers = Some(headers_of(part)?),
            "request_trailers" => p.request_trailers = regular(headers_of(part)?),
            "response_trailers" => p.response_trailers = regular(headers_of(part)?),
            "request_body_chunk" | "response_body_chunk" => {
                let (bytes, truncated) = read_body(cx, Some(value), part)?;
                let (buf, chunks) = if part == "request_body_chunk" {
                    (&mut p.request_body, &mut p.request_chunks)
                } else {
                    (&mut p.response_body, &mut p.response_chunks)
                };
                chunks.push(bytes.len());
                buf.extend_from_slice(&bytes);
                if truncated {
                    p.truncated = true;
                    truncated_note = Some(part);
                }
            }
            other => {
                return Err(cx.err(
                    other,
                    "unknown segment (expected request_headers, request_body_chunk, request_trailers, response_headers, response_body_chunk, response_trailers)",
                ));
            }
        }
        if let Some(part) = truncated_note {
            self.warnings.push(format!(
                "{}: trace {}: {}.{part}: truncated by the tap; replaying the saved prefix",
                cx.file, cx.index, cx.base
            ));
        }
        Ok(())
    }

    /// The traffic read so far. Streamed traces without request headers
    /// become warnings, not errors: a tap can end before a stream does.
    pub fn finish(self) -> Traffic {
        let mut warnings = self.warnings;
        let mut exchanges = Vec::with_capacity(self.slots.len());
        for slot in self.slots {
            match slot {
                Slot::Done(e) => exchanges.push(*e),
                Slot::Stream(p) => match finish_stream(*p) {
                    Ok(e) => exchanges.push(e),
                    Err(w) => warnings.push(w),
                },
            }
        }
        Traffic {
            source: None,
            exchanges,
            warnings,
        }
    }
}

fn finish_stream(p: Partial) -> Result<Exchange, String> {
    let cx = Cx {
        file: &p.file,
        index: p.index,
        base: "http_streamed_trace_segment".to_owned(),
    };
    let Some(headers) = p.request_headers else {
        return Err(format!(
            "{}: trace {} (trace_id {}): no request_headers segment; stream skipped",
            p.file, p.index, p.trace_id
        ));
    };
    let request = request(&cx, headers, p.request_body, "request_headers.headers")
        .map_err(|e| format!("{e}; stream skipped"))?;
    let response = match p.response_headers {
        Some(h) => Some(
            response_of(&cx, h, p.response_body, "response_headers.headers")
                .map_err(|e| format!("{e}; stream skipped"))?,
        ),
        None => None,
    };
    let chunks = |c: Vec<usize>| if c.len() > 1 { c } else { Vec::new() };
    Ok(Exchange {
        id: format!("trace {}", p.trace_id),
        request,
        response,
        details: ExchangeDetails {
            request_chunks: chunks(p.request_chunks),
            request_trailers: p.request_trailers,
            response_chunks: chunks(p.response_chunks),
            response_trailers: p.response_trailers,
            truncated: p.truncated,
            ..ExchangeDetails::default()
        },
    })
}

fn short(file: &str) -> String {
    Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_owned())
}

struct Cx<'a> {
    file: &'a str,
    index: usize,
    base: String,
}

impl Cx<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> TrafficError {
        let field = match (self.base.is_empty(), field.is_empty()) {
            (true, _) => field.to_owned(),
            (false, true) => self.base.clone(),
            (false, false) => format!("{}.{field}", self.base),
        };
        TrafficError::Entry {
            file: self.file.to_owned(),
            index: self.index,
            field: if field.is_empty() {
                "(trace)".to_owned()
            } else {
                field
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
            .ok_or_else(|| self.err(field, format!("expected an object, found {}", kind(v))))
    }
}

fn header_list(
    cx: &Cx<'_>,
    v: Option<&Value>,
    field: &str,
) -> Result<Vec<(String, String)>, TrafficError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(cx.err(field, format!("expected a list, found {}", kind(other))));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, h) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let o = cx.object(h, &f)?;
        let key = match o.get("key") {
            Some(Value::String(k)) if !k.is_empty() => k.to_ascii_lowercase(),
            Some(other) => {
                return Err(cx.err(
                    &format!("{f}.key"),
                    format!("expected a non-empty string, found {other}"),
                ));
            }
            None => return Err(cx.err(&format!("{f}.key"), "missing required field")),
        };
        let value = match (o.get("value"), o.get("raw_value")) {
            (Some(Value::String(v)), Some(Value::String(raw)))
                if v.is_empty() && !raw.is_empty() =>
            {
                let bytes = decode_base64(raw)
                    .map_err(|e| cx.err(&format!("{f}.raw_value"), format!("bad base64: {e}")))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            (Some(Value::String(v)), _) => v.clone(),
            (None, Some(Value::String(raw))) => {
                let bytes = decode_base64(raw)
                    .map_err(|e| cx.err(&format!("{f}.raw_value"), format!("bad base64: {e}")))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            (None, None) => String::new(),
            (Some(other), _) | (None, Some(other)) => {
                return Err(cx.err(
                    &format!("{f}.value"),
                    format!("expected a string, found {}", kind(other)),
                ));
            }
        };
        out.push((key, value));
    }
    Ok(out)
}

fn regular(h: Vec<(String, String)>) -> Vec<(String, String)> {
    h.into_iter().filter(|(k, _)| !k.starts_with(':')).collect()
}

fn take(h: &[(String, String)], name: &str) -> Option<String> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn request(
    cx: &Cx<'_>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    field: &str,
) -> Result<HttpRequest, TrafficError> {
    let need = |name: &str| {
        take(&headers, name).ok_or_else(|| cx.err(field, format!("no `{name}` pseudo-header")))
    };
    let method = need(":method")?;
    let path = need(":path")?;
    let authority = take(&headers, ":authority")
        .or_else(|| take(&headers, "host"))
        .ok_or_else(|| cx.err(field, "no `:authority` pseudo-header or `host` header"))?;
    let scheme = take(&headers, ":scheme").unwrap_or_else(|| "http".to_owned());
    Ok(HttpRequest {
        method,
        scheme,
        authority,
        path,
        headers: headers
            .into_iter()
            .filter(|(k, _)| !k.starts_with(':') && k != "host")
            .collect(),
        body,
    })
}

fn response_of(
    cx: &Cx<'_>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    field: &str,
) -> Result<HttpResponse, TrafficError> {
    let status =
        take(&headers, ":status").ok_or_else(|| cx.err(field, "no `:status` pseudo-header"))?;
    let status: u16 = status
        .parse()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| cx.err(field, format!("`:status` {status:?} is not a status code")))?;
    Ok(HttpResponse {
        status,
        headers: regular(headers),
        body,
    })
}

/// A tap body: `{as_string | as_bytes, truncated}`.
fn read_body(cx: &Cx<'_>, v: Option<&Value>, field: &str) -> Result<(Vec<u8>, bool), TrafficError> {
    let o = match v {
        None | Some(Value::Null) => return Ok((Vec::new(), false)),
        Some(v) => cx.object(v, field)?,
    };
    let truncated = match o.get("truncated") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(cx.err(
                &format!("{field}.truncated"),
                format!("expected a boolean, found {}", kind(other)),
            ));
        }
    };
    let bytes = match (o.get("as_string"), o.get("as_bytes")) {
        (Some(Value::String(s)), None) => s.as_bytes().to_vec(),
        (None, Some(Value::String(b))) => decode_base64(b)
            .map_err(|e| cx.err(&format!("{field}.as_bytes"), format!("bad base64: {e}")))?,
        (None, None) => Vec::new(),
        (Some(other), None) => {
            return Err(cx.err(
                &format!("{field}.as_string"),
                format!("expected a string, found {}", kind(other)),
            ));
        }
        (None, Some(other)) => {
            return Err(cx.err(
                &format!("{field}.as_bytes"),
                format!("expected a base64 string, found {}", kind(other)),
            ));
        }
        (Some(_), Some(_)) => return Err(cx.err(field, "both as_string and as_bytes are set")),
    };
    Ok((bytes, truncated))
}

/// An RFC 3339 timestamp, kept as written, with its offset from the epoch.
fn time(
    cx: &Cx<'_>,
    v: Option<&Value>,
    field: &str,
) -> Result<Option<(String, Duration)>, TrafficError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match rfc3339(s) {
            Some(d) => Ok(Some((s.clone(), d))),
            None => Err(cx.err(field, format!("{s:?} is not an RFC 3339 UTC time"))),
        },
        Some(other) => Err(cx.err(field, format!("expected a string, found {}", kind(other)))),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (what Envoy writes) into time since the epoch.
pub(crate) fn rfc3339(s: &str) -> Option<Duration> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi, sec): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{digits:0<9}").parse().ok()?
    };
    Some(Duration::new(
        days * 86_400 + h * 3600 + mi * 60 + sec,
        nanos,
    ))
}

fn connection(cx: &Cx<'_>, v: &Value) -> Result<Vec<(String, String)>, TrafficError> {
    let o = cx.object(v, "downstream_connection")?;
    let mut out = Vec::new();
    for (key, prop) in [
        ("remote_address", "source.address"),
        ("local_address", "destination.address"),
    ] {
        if let Some(a) = o.get(key) {
            let field = format!("downstream_connection.{key}");
            let sa = cx.object(a, &field)?.get("socket_address");
            if let Some(sa) = sa {
                let sa = cx.object(sa, &format!("{field}.socket_address"))?;
                let addr = sa.get("address").and_then(Value::as_str).unwrap_or("");
                let port = sa.get("port_value").and_then(Value::as_u64).unwrap_or(0);
                let text = if addr.contains(':') {
                    format!("[{addr}]:{port}")
                } else {
                    format!("{addr}:{port}")
                };
                out.push((prop.to_owned(), text));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
