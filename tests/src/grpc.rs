//! A real gRPC service for Envoy's gRPC async client: a small HTTP/2
//! (cleartext, prior knowledge) server on `127.0.0.1:0` that answers every
//! stream the moment its request headers arrive, whatever the client sends
//! after: response headers (initial metadata), the scripted messages, then
//! trailers (`grpc-status`, and `grpc-message` when given). That is a server
//! that speaks first, as a watch or subscription service does.
//!
//! Only what Envoy's client needs is spoken: the connection preface,
//! SETTINGS (and their acknowledgement), PING acknowledgements, HEADERS in,
//! HEADERS and DATA out. Headers are written as HPACK literals without
//! indexing or Huffman coding (RFC 7541 section 6.2.2); request headers are
//! never decoded. Each connection runs on a thread; everything stops on `Drop`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

/// What the service answers on every stream.
#[derive(Debug, Clone, Default)]
pub struct GrpcScript {
    /// Response headers after `:status: 200` and `content-type: application/grpc`.
    pub initial_metadata: Vec<(String, String)>,
    /// Messages, each sent as one gRPC frame in its own DATA frame.
    pub messages: Vec<Vec<u8>>,
    /// The `grpc-status` trailer.
    pub status: u32,
    /// The `grpc-message` trailer (`None`: not sent).
    pub message: Option<String>,
    /// Further trailers.
    pub trailing_metadata: Vec<(String, String)>,
    /// Answer with one HEADERS frame ending the stream (`:status`,
    /// `content-type`, then the trailers): gRPC's trailers-only response;
    /// `initial_metadata` and `messages` are not sent.
    pub trailers_only: bool,
}

/// The running service. Dropping it stops it.
pub struct GrpcServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
    streams: Arc<Mutex<usize>>,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;

impl GrpcServer {
    /// Starts serving `script` on `127.0.0.1:0`.
    pub fn start(script: GrpcScript) -> Result<GrpcServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the gRPC service")?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let streams: Arc<Mutex<usize>> = Arc::default();
        let (stop, conns, count) = (stopping.clone(), connections.clone(), streams.clone());
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    conns.lock().unwrap_or_else(|p| p.into_inner()).push(c);
                }
                let (script, count) = (script.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &script, &count);
                });
            }
        });
        Ok(GrpcServer {
            addr,
            stopping,
            connections,
            acceptor: Some(acceptor),
            streams,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Streams answered so far.
    pub fn streams(&self) -> usize {
        *self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for c in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 section 5.1), H bit clear.
fn hpack_len(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literals without indexing, new names.
fn header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in headers {
        out.push(0);
        hpack_len(&mut out, k.len());
        out.extend_from_slice(k.as_bytes());
        hpack_len(&mut out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn answer(conn: &mut TcpStream, stream: u32, script: &GrpcScript) -> std::io::Result<()> {
    let mut initial = vec![
        (":status".to_string(), "200".to_string()),
        ("content-type".to_string(), "application/grpc".to_string()),
    ];
    let mut out = Vec::new();
    if !script.trailers_only {
        initial.extend(script.initial_metadata.iter().cloned());
        out = frame(HEADERS, END_HEADERS, stream, &header_block(&initial));
    }
    for m in script.messages.iter().filter(|_| !script.trailers_only) {
        let mut grpc = vec![0];
        grpc.extend_from_slice(&(m.len() as u32).to_be_bytes());
        grpc.extend_from_slice(m);
        out.extend(frame(DATA, 0, stream, &grpc));
    }
    let mut trailers = vec![("grpc-status".to_string(), script.status.to_string())];
    if let Some(m) = &script.message {
        trailers.push(("grpc-message".to_string(), m.clone()));
    }
    trailers.extend(script.trailing_metadata.iter().cloned());
    if script.trailers_only {
        initial.extend(trailers);
        trailers = initial;
    }
    out.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &header_block(&trailers),
    ));
    conn.write_all(&out)
}

fn serve(mut conn: TcpStream, script: &GrpcScript, count: &Mutex<usize>) -> std::io::Result<()> {
    let mut preface = [0u8; 24];
    conn.read_exact(&mut preface)?;
    if preface != PREFACE {
        return Ok(());
    }
    conn.write_all(&frame(SETTINGS, 0, 0, &[]))?;
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head)?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload)?;
        match kind {
            SETTINGS if flags & ACK == 0 => conn.write_all(&frame(SETTINGS, ACK, 0, &[]))?,
            PING if flags & ACK == 0 => conn.write_all(&frame(PING, ACK, 0, &payload))?,
            HEADERS => {
                *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                answer(&mut conn, stream, script)?;
            }
            _ => {}
        }
    }
}
