//! Just enough HTTP/1.1 framing for the test client and upstream: message
//! heads with every header kept (duplicates and order), and bodies framed by
//! `content-length`, `transfer-encoding: chunked` or the end of the connection.

use std::io::{BufRead, Read, Write};

use anyhow::{Context, Result, bail};

/// Longest accepted start or header line.
const MAX_LINE: usize = 64 * 1024;
/// Most headers accepted in one message.
const MAX_HEADERS: usize = 256;
/// Largest accepted body.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A message's start line and headers (names lower-cased, order and duplicates kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `GET /path HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start_line: String,
    /// The headers in wire order.
    pub headers: Vec<(String, String)>,
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body whatever the headers say (HEAD responses, 204, 304).
    None,
    /// A request: no length headers means no body.
    Request,
    /// A response: no length headers means the body runs to the end of the connection.
    Response,
}

/// Reads one message head; `Ok(None)` when the peer closed before sending a byte.
pub fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>> {
    let Some(start_line) = read_line(reader)? else {
        return Ok(None);
    };
    if start_line.is_empty() {
        bail!("empty start line");
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.context("connection closed inside the headers")?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header line without a colon: {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        if headers.len() > MAX_HEADERS {
            bail!("more than {MAX_HEADERS} headers");
        }
    }
    Ok(Some(Head {
        start_line,
        headers,
    }))
}

/// Reads the body that follows a head.
pub fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    framing: BodyFraming,
) -> Result<Vec<u8>> {
    if framing == BodyFraming::None {
        return Ok(Vec::new());
    }
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader);
    }
    if let Some(length) = header(headers, "content-length") {
        let length: usize = length
            .parse()
            .with_context(|| format!("bad content-length {length:?}"))?;
        if length > MAX_BODY {
            bail!("body of {length} bytes is over the {MAX_BODY} byte limit");
        }
        let mut body = vec![0; length];
        reader
            .read_exact(&mut body)
            .context("connection closed inside the body")?;
        return Ok(body);
    }
    match framing {
        BodyFraming::Response => {
            let mut body = Vec::new();
            reader
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .context("reading the body to the end of the connection")?;
            if body.len() > MAX_BODY {
                bail!("body over the {MAX_BODY} byte limit");
            }
            Ok(body)
        }
        _ => Ok(Vec::new()),
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?.context("connection closed before a chunk size")?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?
                .context("connection closed inside the trailers")?
                .is_empty()
            {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            bail!("chunked body over the {MAX_BODY} byte limit");
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .context("connection closed inside a chunk")?;
        let end = read_line(reader)?.context("connection closed after a chunk")?;
        if !end.is_empty() {
            bail!("chunk not followed by CRLF");
        }
    }
}

/// Reads a CRLF- (or LF-) terminated line without its terminator; `None` at EOF.
fn read_line(reader: &mut impl BufRead) -> Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .context("reading a line")?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            bail!("line longer than {MAX_LINE} bytes");
        }
        bail!("connection closed in the middle of a line");
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .context("line is not UTF-8")
}

/// Writes a message: start line, headers as given, a blank line, the body.
pub fn write_message(
    writer: &mut impl Write,
    start_line: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<()> {
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
    writer.write_all(&out).context("writing the message")?;
    writer.flush().context("flushing the message")
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
