//! HTTP/1.1 framing, the project's one implementation: for the replay
//! upstream, the stub servers and the keep-alive client here, and for the
//! integration tests' upstream and client (`tests/src`): reading a message
//! head and its body (`content-length`, chunked, or none), and writing
//! requests and responses with framing Tollgate controls, or as given
//! ([`write_message`]).
//!
//! Framing and hop-by-hop headers of the recording ([`FRAMING`]) are never
//! written as recorded: a message carries `content-length` for its actual body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tollgate_traffic::HttpRequest;

use super::LiveError;

/// Headers about the connection or the framing, not the message: written by
/// Tollgate itself, never copied from a recording.
pub const FRAMING: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Largest head accepted (bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (bytes).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A message head: the start line and the headers (names lower-cased, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET /path HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start_line: String,
    /// The headers, names lower-cased, values trimmed, duplicates kept.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the peer asked to close the connection after this message.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

fn bad(what: impl Into<String>) -> LiveError {
    LiveError::Http(what.into())
}

/// Reads a head; `Ok(None)` when the peer closed the connection before sending one.
pub fn read_head<R: BufRead>(r: &mut R) -> Result<Option<Head>, LiveError> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| bad(format!("reading a message head: {e}")))?;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(bad("connection closed in the middle of a message head"));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(bad(format!("message head longer than {MAX_HEAD} bytes")));
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerated empty line between messages
            }
            break;
        }
        lines.push(text);
    }
    let start = lines.remove(0);
    let mut headers = Vec::with_capacity(lines.len());
    for l in lines {
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("malformed header line {l:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        start_line: start,
        headers,
    }))
}

/// Reads the body that `head` announces (`content-length`, chunked, or none).
/// `close_delimited`: with neither, the body runs to the end of the connection
/// (responses only).
pub fn read_body<R: BufRead>(
    r: &mut R,
    head: &Head,
    close_delimited: bool,
) -> Result<Vec<u8>, LiveError> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(r);
    }
    if let Some(len) = head.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        if len > MAX_BODY {
            return Err(bad(format!("body of {len} bytes is too large")));
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)
            .map_err(|e| bad(format!("reading a {len}-byte body: {e}")))?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if close_delimited {
        r.take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .map_err(|e| bad(format!("reading a body: {e}")))?;
    }
    Ok(body)
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, LiveError> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| bad(format!("reading a chunk size: {e}")))?;
        let size = line.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size {:?}", line.trim())))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = String::new();
                let n = r
                    .read_line(&mut t)
                    .map_err(|e| bad(format!("reading trailers: {e}")))?;
                if n == 0 || t.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("chunked body too large"));
        }
        let at = body.len();
        body.resize(at + size, 0);
        r.read_exact(&mut body[at..])
            .map_err(|e| bad(format!("reading a chunk: {e}")))?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)
            .map_err(|e| bad(format!("reading a chunk end: {e}")))?;
    }
}

/// Whether a response to `method` with `status` has no body by definition.
pub fn bodiless(method: &str, status: u16) -> bool {
    method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || status < 200
}

fn is_framing(name: &str) -> bool {
    FRAMING.contains(&name)
}

/// How a body is delimited when its headers give no length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body whatever the headers say (HEAD responses, 204, 304).
    None,
    /// A request: no length headers means no body.
    Request,
    /// A response: no length headers means the body runs to the end of the connection.
    Response,
}

/// Reads the body that follows `head`, delimited as `framing` says.
pub fn read_framed_body<R: BufRead>(
    r: &mut R,
    head: &Head,
    framing: BodyFraming,
) -> Result<Vec<u8>, LiveError> {
    match framing {
        BodyFraming::None => Ok(Vec::new()),
        BodyFraming::Request => read_body(r, head, false),
        BodyFraming::Response => read_body(r, head, true),
    }
}

/// Writes a message as given: start line, headers (order and duplicates
/// kept, nothing added), a blank line, the body.
pub fn write_message(
    w: &mut impl Write,
    start_line: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), LiveError> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(start_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(&out)
        .and_then(|()| w.flush())
        .map_err(|e| bad(format!("writing a message: {e}")))
}

/// The first value of a header (name compared case-insensitively).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of a header, in order (name compared case-insensitively).
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The request as written to Envoy: `host` from the authority, the recorded
/// headers minus [`FRAMING`], and `content-length` when there is a body or the
/// recording had one.
pub fn encode_request(req: &HttpRequest) -> Vec<u8> {
    let mut out = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\n",
        req.method, req.path, req.authority
    );
    for (n, v) in &req.headers {
        if !is_framing(n) {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    let recorded_length = req.headers.iter().any(|(n, _)| n == "content-length");
    if !req.body.is_empty() || recorded_length {
        out.push_str(&format!("content-length: {}\r\n", req.body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&req.body);
    bytes
}

/// A response as written by the replay upstream: the recorded headers minus
/// [`FRAMING`], then `content-length` (none for 1xx/204; for `HEAD` and 304
/// the recorded length, no body).
pub fn encode_response(
    method: &str,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        if !is_framing(n) {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    let no_body = bodiless(method, status);
    if status >= 200 && status != 204 {
        if no_body {
            if let Some((_, v)) = headers.iter().find(|(n, _)| n == "content-length") {
                out.push_str(&format!("content-length: {v}\r\n"));
            }
        } else {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        }
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !no_body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// The reason phrase written after `status` in a status line (`Status` for codes not listed:
/// HTTP/1.1 readers, Envoy included, ignore the phrase).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A response read by the [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `HEAD`, 204, 304).
    pub body: Vec<u8>,
}

/// A keep-alive HTTP/1.1 client to one address (127.0.0.1): one connection,
/// reopened when the server closes it.
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client to `addr`; each read or write may block up to `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client {
            addr,
            timeout,
            conn: None,
        }
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, LiveError> {
        let s = TcpStream::connect_timeout(&self.addr, self.timeout)
            .map_err(|e| bad(format!("connecting to Envoy at {}: {e}", self.addr)))?;
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| bad(format!("setting timeouts: {e}")))?;
        Ok(BufReader::new(s))
    }

    /// Sends `req` and reads the response; a reused connection that the server
    /// closed meanwhile is reopened once. Returns the response and the time
    /// from the first byte written to the last byte read.
    pub fn send(&mut self, req: &HttpRequest) -> Result<(Response, Duration), LiveError> {
        let bytes = encode_request(req);
        let reused = self.conn.is_some();
        match self.try_send(req, &bytes) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.conn = None;
                self.try_send(req, &bytes)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| {
            self.conn = None;
            LiveError::Http(format!("{} {}: {e}", req.method, req.path))
        })
    }

    fn try_send(
        &mut self,
        req: &HttpRequest,
        bytes: &[u8],
    ) -> Result<(Response, Duration), LiveError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect()?,
        };
        let started = Instant::now();
        conn.get_mut()
            .write_all(bytes)
            .map_err(|e| bad(format!("writing the request: {e}")))?;
        let head = loop {
            let head = read_head(&mut conn)?
                .ok_or_else(|| bad("Envoy closed the connection without answering"))?;
            let status = status_of(&head)?;
            if status >= 200 {
                break head;
            }
        };
        let status = status_of(&head)?;
        let no_body = bodiless(&req.method, status);
        let body = if no_body {
            Vec::new()
        } else {
            read_body(&mut conn, &head, true)?
        };
        let elapsed = started.elapsed();
        let closes = head.closes()
            || (!no_body
                && head.header("content-length").is_none()
                && head.header("transfer-encoding").is_none());
        if !closes {
            self.conn = Some(conn);
        }
        Ok((
            Response {
                status,
                headers: head.headers,
                body,
            },
            elapsed,
        ))
    }
}

fn status_of(head: &Head) -> Result<u16, LiveError> {
    head.start_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("malformed status line {:?}", head.start_line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_length_and_chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabcHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n3;x=y\r\nyou\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let h = read_head(&mut r).unwrap().unwrap();
        assert_eq!(h.start_line, "HTTP/1.1 200 OK");
        assert_eq!(h.header("x-a"), Some("1"));
        assert_eq!(read_body(&mut r, &h, true).unwrap(), b"abc");
        let h = read_head(&mut r).unwrap().unwrap();
        assert_eq!(read_body(&mut r, &h, true).unwrap(), b"hiyou");
        assert!(read_head(&mut r).unwrap().is_none());
    }

    #[test]
    fn request_framing_is_ours() {
        let req = HttpRequest {
            method: "POST".into(),
            scheme: "https".into(),
            authority: "a.example".into(),
            path: "/x".into(),
            headers: vec![
                ("content-length".into(), "99".into()),
                ("connection".into(), "close".into()),
                ("x-b".into(), "2".into()),
            ],
            body: b"hello".to_vec(),
        };
        let text = String::from_utf8(encode_request(&req)).unwrap();
        assert_eq!(
            text,
            "POST /x HTTP/1.1\r\nhost: a.example\r\nx-b: 2\r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn head_and_304_responses_carry_no_body() {
        let h = vec![("content-length".to_owned(), "10".to_owned())];
        let text = String::from_utf8(encode_response("HEAD", 200, &h, b"0123456789")).unwrap();
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n");
        let text = String::from_utf8(encode_response("GET", 204, &h, b"")).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        assert!(read_head(&mut BufReader::new(&b"bad\r\nnocolon\r\n\r\n"[..])).is_err());
    }
}
