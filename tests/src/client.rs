//! A plain HTTP/1.1 client over `TcpStream` that sends a request exactly as
//! given and returns every response header, duplicates and order kept.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tollgate_traffic::{HttpRequest, HttpResponse};

use tollgate_envoy::http1::{self, BodyFraming};

/// How long a read or write may block before the request fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to `authority` with the given headers; a non-empty body gets a
/// `content-length` header so that the same value can be sent to Envoy and
/// replayed in the harness.
pub fn request(
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpRequest {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), (*value).to_string()))
        .collect();
    if !body.is_empty() && http1::header(&headers, "content-length").is_none() {
        headers.push(("content-length".to_string(), body.len().to_string()));
    }
    HttpRequest {
        method: method.to_string(),
        scheme: "http".to_string(),
        authority: authority.to_string(),
        path: path.to_string(),
        headers,
        body: body.to_vec(),
    }
}

/// A response with `status`, the given headers (as given, in order) and `body`: what a test
/// upstream answers or a replayed exchange records.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    HttpResponse {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.to_vec(),
    }
}

/// Sends `request` to `addr` on a new connection: `host` from the request's
/// authority, then its headers and body as they are. Returns the response.
pub fn send(addr: SocketAddr, request: &HttpRequest) -> Result<HttpResponse> {
    let what = format!("{} {} to {addr}", request.method, request.path);
    exchange(addr, request).with_context(|| format!("HTTP request {what} failed"))
}

fn exchange(addr: SocketAddr, request: &HttpRequest) -> Result<HttpResponse> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connecting")?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .context("setting a read timeout")?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .context("setting a write timeout")?;
    let mut headers = vec![("host".to_string(), request.authority.clone())];
    headers.extend(request.headers.iter().cloned());
    let start_line = format!("{} {} HTTP/1.1", request.method, request.path);
    let mut writer = &stream;
    http1::write_message(&mut writer, &start_line, &headers, &request.body)?;

    let mut reader = BufReader::new(&stream);
    loop {
        let head = http1::read_head(&mut reader)?
            .context("the server closed the connection without answering")?;
        let status = parse_status(&head.start_line)?;
        if (100..200).contains(&status) {
            continue;
        }
        let framing =
            if request.method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
                BodyFraming::None
            } else {
                BodyFraming::Response
            };
        let body = http1::read_framed_body(&mut reader, &head, framing)?;
        return Ok(HttpResponse {
            status,
            headers: head.headers,
            body,
        });
    }
}

fn parse_status(line: &str) -> Result<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1 status line: {line:?}");
    }
    parts
        .next()
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status code in {line:?}"))
}
