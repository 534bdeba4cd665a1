//! Bodies written in many small pieces, for the body filters' chunking evidence: a client that
//! sends a request body in writes of given sizes ([`send`]) and an upstream that answers with its
//! body in writes of given sizes ([`TrickleUpstream`]), each write flushed and followed by a short
//! pause so that Envoy reads (and hands its filters) the pieces separately.
//!
//! Both count what they read: the upstream records each request's body as de-framed from the
//! wire; the client returns the response body it read, so a test compares byte counts with what
//! the other side sent.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tollgate_envoy::http1::{self, BodyFraming};
use tollgate_traffic::{HttpRequest, HttpResponse};

use crate::upstream::ReceivedRequest;

/// The pause after each write: long enough for Envoy to read each piece on its own.
const PAUSE: Duration = Duration::from_millis(1);

/// How a body is cut into writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writes {
    /// One write.
    Whole,
    /// Writes of this many bytes (the last may be shorter).
    Every(usize),
    /// Writes of these sizes, in order (what is left goes in one more).
    Sizes(Vec<usize>),
}

impl Writes {
    /// The pieces of `body`.
    pub fn split<'a>(&self, body: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Writes::Whole => vec![body],
            Writes::Every(n) => body.chunks((*n).max(1)).collect(),
            Writes::Sizes(sizes) => {
                let mut out = Vec::new();
                let mut rest = body;
                for size in sizes {
                    if rest.is_empty() {
                        break;
                    }
                    let (piece, after) = rest.split_at((*size).clamp(1, rest.len()));
                    out.push(piece);
                    rest = after;
                }
                if !rest.is_empty() {
                    out.push(rest);
                }
                out
            }
        }
    }
}

fn write_pieces(stream: &TcpStream, head: &[u8], pieces: &[&[u8]]) -> Result<()> {
    let mut writer = stream;
    writer.write_all(head).context("writing a head")?;
    writer.flush().context("flushing a head")?;
    for piece in pieces {
        std::thread::sleep(PAUSE);
        writer.write_all(piece).context("writing a body piece")?;
        writer.flush().context("flushing a body piece")?;
    }
    Ok(())
}

fn head_bytes(start_line: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(start_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends `request` (with its headers as given, plus `host`) to `addr`, the body in `writes`,
/// and reads the response on the same connection.
pub fn send(addr: SocketAddr, request: &HttpRequest, writes: &Writes) -> Result<HttpResponse> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .context("read timeout")?;
    let mut headers = vec![("host".to_string(), request.authority.clone())];
    headers.extend(request.headers.iter().cloned());
    let start_line = format!("{} {} HTTP/1.1", request.method, request.path);
    write_pieces(
        &stream,
        &head_bytes(&start_line, &headers),
        &writes.split(&request.body),
    )?;
    let mut reader = BufReader::new(&stream);
    let head = http1::read_head(&mut reader)?
        .context("the server closed the connection without answering")?;
    let status = head
        .start_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {:?}", head.start_line))?;
    let body = http1::read_framed_body(&mut reader, &head, BodyFraming::Response)?;
    Ok(HttpResponse {
        status,
        headers: head.headers,
        body,
    })
}

/// The open connections and their threads, closed and joined on `Drop`.
type Connections = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

struct Shared {
    stopping: AtomicBool,
    requests: Mutex<Vec<ReceivedRequest>>,
    response: Mutex<(HttpResponse, Writes)>,
}

/// An upstream that answers every request with one response, its body in small writes: framed
/// with the response's own `content-length` (added when missing), or, when the response says
/// `transfer-encoding: chunked`, one chunk per write and no `content-length`. A `HEAD` gets the
/// head only. It records what it read.
pub struct TrickleUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    connections: Connections,
}

impl TrickleUpstream {
    /// Starts the server on 127.0.0.1.
    pub fn start(response: HttpResponse, writes: Writes) -> Result<TrickleUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the upstream")?;
        let addr = listener.local_addr().context("the upstream's address")?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            response: Mutex::new((response, writes)),
        });
        let connections: Connections = Arc::default();
        let (s, c) = (Arc::clone(&shared), Arc::clone(&connections));
        let acceptor = std::thread::Builder::new()
            .name("trickle-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if s.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    let serving = Arc::clone(&s);
                    if let Ok(handle) = std::thread::Builder::new()
                        .name("trickle-conn".into())
                        .spawn(move || serve(&clone, &serving))
                    {
                        c.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((stream, handle));
                    }
                }
            })
            .context("spawning the accept thread")?;
        Ok(TrickleUpstream {
            addr,
            shared,
            acceptor: Some(acceptor),
            connections,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the response and its writes for the following requests.
    pub fn set_response(&self, response: HttpResponse, writes: Writes) {
        *self
            .shared
            .response
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (response, writes);
    }

    /// Removes and returns the requests received so far.
    pub fn take_requests(&self) -> Vec<ReceivedRequest> {
        std::mem::take(
            &mut *self
                .shared
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

/// Each write as one chunk of chunked framing, then the last chunk (an
/// empty body: the last chunk alone).
fn chunk_framed(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = pieces
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut chunk = format!("{:x}\r\n", p.len()).into_bytes();
            chunk.extend_from_slice(p);
            chunk.extend_from_slice(b"\r\n");
            chunk
        })
        .collect();
    out.push(b"0\r\n\r\n".to_vec());
    out
}

fn serve(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    while !shared.stopping.load(Ordering::SeqCst) {
        let Ok(Some(head)) = http1::read_head(&mut reader) else {
            return;
        };
        let Ok(body) = http1::read_framed_body(&mut reader, &head, BodyFraming::Request) else {
            return;
        };
        let mut parts = head.start_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ReceivedRequest {
                method: method.clone(),
                path,
                headers: head.headers,
                body,
            });
        let (mut response, writes) = shared
            .response
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let chunked = http1::header(&response.headers, "transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        if !chunked && http1::header(&response.headers, "content-length").is_none() {
            response
                .headers
                .push(("content-length".into(), response.body.len().to_string()));
        }
        let start_line = format!(
            "HTTP/1.1 {} {}",
            response.status,
            http1::reason(response.status)
        );
        let head = head_bytes(&start_line, &response.headers);
        // A HEAD gets the head only (its framing says what a GET would get).
        let body: &[u8] = if method.eq_ignore_ascii_case("HEAD") {
            &[]
        } else {
            &response.body
        };
        let pieces = writes.split(body);
        let written = if chunked && !method.eq_ignore_ascii_case("HEAD") {
            let framed = chunk_framed(&pieces);
            let framed: Vec<&[u8]> = framed.iter().map(Vec::as_slice).collect();
            write_pieces(stream, &head, &framed)
        } else {
            write_pieces(stream, &head, &pieces)
        };
        if written.is_err() {
            return;
        }
    }
}

impl Drop for TrickleUpstream {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let connections =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        for (stream, _) in &connections {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, handle) in connections {
            let _ = handle.join();
        }
    }
}

/// Random piece sizes (1 to 40 bytes) adding up to at least `total`, the same for the same
/// `seed`: for `Writes::Sizes`, so that a failing chunking can be replayed.
pub fn random_sizes(seed: u64, total: usize) -> Vec<usize> {
    let mut x = seed;
    let mut sizes = Vec::new();
    let mut sum = 0;
    while sum < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 1 + (x % 40) as usize;
        sizes.push(n);
        sum += n;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::{TrickleUpstream, Writes, send};
    use tollgate_envoy::http1;
    use tollgate_traffic::{HttpRequest, HttpResponse};

    fn request(method: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            scheme: "http".into(),
            authority: "trickle.test".into(),
            path: "/".into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    #[test]
    fn a_chunked_response_is_chunk_framed_without_a_content_length() -> anyhow::Result<()> {
        let upstream = TrickleUpstream::start(
            HttpResponse {
                status: 200,
                headers: vec![("transfer-encoding".into(), "chunked".into())],
                body: b"hello world".to_vec(),
            },
            Writes::Every(4),
        )?;
        let got = send(upstream.addr(), &request("GET"), &Writes::Whole)?;
        assert_eq!(http1::header(&got.headers, "content-length"), None);
        assert_eq!(
            http1::header(&got.headers, "transfer-encoding"),
            Some("chunked")
        );
        assert_eq!(got.body, b"hello world");
        upstream.set_response(
            HttpResponse {
                status: 200,
                headers: Vec::new(),
                body: b"plain".to_vec(),
            },
            Writes::Every(2),
        );
        let got = send(upstream.addr(), &request("GET"), &Writes::Whole)?;
        assert_eq!(http1::header(&got.headers, "content-length"), Some("5"));
        assert_eq!(http1::header(&got.headers, "transfer-encoding"), None);
        assert_eq!(got.body, b"plain");
        Ok(())
    }

    #[test]
    fn a_head_gets_the_head_only() -> anyhow::Result<()> {
        let upstream = TrickleUpstream::start(
            HttpResponse {
                status: 200,
                headers: Vec::new(),
                body: b"plain".to_vec(),
            },
            Writes::Whole,
        )?;
        // Two requests on one connection: a body after the HEAD's head would be read as the
        // second response's status line.
        let stream = std::net::TcpStream::connect(upstream.addr())?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let mut writer = &stream;
        std::io::Write::write_all(
            &mut writer,
            b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n",
        )?;
        let mut reader = std::io::BufReader::new(&stream);
        let head = http1::read_head(&mut reader)?.ok_or_else(|| anyhow::anyhow!("no answer"))?;
        assert_eq!(head.header("content-length"), Some("5"));
        let next = http1::read_head(&mut reader)?.ok_or_else(|| anyhow::anyhow!("no 2nd"))?;
        assert!(next.start_line.starts_with("HTTP/1.1 200"), "{next:?}");
        let body = http1::read_framed_body(&mut reader, &next, http1::BodyFraming::Response)?;
        assert_eq!(body, b"plain");
        Ok(())
    }

    #[test]
    fn writes_cover_the_body_exactly() {
        let body = b"0123456789";
        assert_eq!(Writes::Whole.split(body), vec![&body[..]]);
        assert_eq!(Writes::Every(4).split(body).len(), 3);
        assert_eq!(
            Writes::Sizes(vec![1, 2, 30]).split(body).concat(),
            body.to_vec()
        );
        assert_eq!(Writes::Sizes(vec![3]).split(body).len(), 2);
    }
}
