//! A real upstream for Envoy: a small threaded HTTP/1.1 server on
//! `127.0.0.1:0` that records every request it receives and answers each with
//! the configured response, or with what a responder function picks for that
//! request ([`Upstream::start_with`], e.g. a recording's own answers). It
//! stops (and closes its connections) on `Drop`.

use std::io::BufReader;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tollgate_traffic::HttpResponse;

use tollgate_envoy::http1::{self, BodyFraming};

/// A request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, e.g. `/a?b=c`.
    pub path: String,
    /// Every header in wire order, names lower-cased (includes `host`).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// A plain `200` whose `text/plain` body is `body`: what a test upstream typically answers.
pub fn text_response(body: &[u8]) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: body.to_vec(),
    }
}

/// Picks the answer for one request.
pub type Responder = dyn Fn(&ReceivedRequest) -> HttpResponse + Send + Sync;

struct Shared {
    stopping: AtomicBool,
    requests: Mutex<Vec<ReceivedRequest>>,
    response: Mutex<HttpResponse>,
    responder: Option<Box<Responder>>,
    connections: Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
    errors: Mutex<Vec<String>>,
}

/// The running server. Dropping it stops it.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts a server answering every request with `response`. A missing
    /// `content-length` header is added to the response (see [`Upstream::response`]).
    pub fn start(response: HttpResponse) -> Result<Upstream> {
        Self::spawn(response, None)
    }

    /// Starts a server answering each request with what `responder` returns
    /// for it (a missing `content-length` is added, as with [`Upstream::start`]).
    pub fn start_with(
        responder: impl Fn(&ReceivedRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> Result<Upstream> {
        let placeholder = HttpResponse {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        };
        Self::spawn(placeholder, Some(Box::new(responder)))
    }

    fn spawn(response: HttpResponse, responder: Option<Box<Responder>>) -> Result<Upstream> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding the upstream to 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("reading the upstream's address")?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            response: Mutex::new(with_length(response)),
            responder,
            connections: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("upstream-accept".into())
            .spawn(move || accept_loop(&listener, &accepting))
            .context("spawning the upstream's accept thread")?;
        Ok(Upstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The response the server sends, exactly as it goes on the wire (with `content-length`).
    pub fn response(&self) -> HttpResponse {
        lock(&self.shared.response).clone()
    }

    /// Changes the response for the following requests.
    pub fn set_response(&self, response: HttpResponse) {
        *lock(&self.shared.response) = with_length(response);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Removes and returns the requests received so far.
    pub fn take_requests(&self) -> Vec<ReceivedRequest> {
        std::mem::take(&mut *lock(&self.shared.requests))
    }

    /// Protocol errors seen on the server's connections (malformed requests).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throwaway connection.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let connections = std::mem::take(&mut *lock(&self.shared.connections));
        for (stream, _) in &connections {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for (_, handle) in connections {
            let _ = handle.join();
        }
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn with_length(mut response: HttpResponse) -> HttpResponse {
    let framed = http1::header(&response.headers, "content-length").is_some()
        || http1::header(&response.headers, "transfer-encoding").is_some();
    if !framed {
        response.headers.push((
            "content-length".to_string(),
            response.body.len().to_string(),
        ));
    }
    response
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(handle_stream) = stream.try_clone() else {
            continue;
        };
        let serving = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("upstream-conn".into())
            .spawn(move || serve(handle_stream, &serving));
        if let Ok(handle) = spawned {
            lock(&shared.connections).push((stream, handle));
        }
    }
}

/// Serves one keep-alive connection until the peer closes it or the server stops.
fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(&stream);
    while !shared.stopping.load(Ordering::SeqCst) {
        match serve_one(&mut reader, &stream, shared) {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                if !shared.stopping.load(Ordering::SeqCst) {
                    lock(&shared.errors).push(format!("{error:#}"));
                }
                return;
            }
        }
    }
}

/// Reads one request and answers it; `Ok(false)` when the peer closed the connection.
fn serve_one(
    reader: &mut BufReader<&TcpStream>,
    stream: &TcpStream,
    shared: &Shared,
) -> Result<bool> {
    let Some(head) = http1::read_head(reader)? else {
        return Ok(false);
    };
    let mut parts = head.start_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let body = http1::read_framed_body(reader, &head, BodyFraming::Request)?;
    let request = ReceivedRequest {
        method: method.clone(),
        path,
        headers: head.headers,
        body,
    };
    let response = match &shared.responder {
        Some(responder) => with_length(responder(&request)),
        None => lock(&shared.response).clone(),
    };
    lock(&shared.requests).push(request);

    let start_line = format!(
        "HTTP/1.1 {} {}",
        response.status,
        http1::reason(response.status)
    );
    let body: &[u8] = if method.eq_ignore_ascii_case("HEAD") {
        &[]
    } else {
        &response.body
    };
    let mut writer = stream;
    http1::write_message(&mut writer, &start_line, &response.headers, body)?;
    Ok(true)
}
