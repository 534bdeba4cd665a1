//! The accept loop and connection loop shared by the in-process HTTP/1.1
//! servers of a live run ([`super::upstream`], [`super::services`]): a
//! listener on 127.0.0.1 on a port the kernel picks, a thread per connection,
//! keep-alive until the peer closes, asks to close, or stays idle too long.
//! Dropping the [`Server`] stops accepting connections.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{LiveError, http1, io};

/// How long an idle connection waits for the next request.
const IDLE: Duration = Duration::from_secs(120);

/// A request as read by the connection loop.
pub(super) struct Request {
    /// The head (start line and headers).
    pub head: http1::Head,
    /// The method, as sent.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
}

/// A running server; dropping it stops accepting connections.
pub(super) struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1 and answers every request with `answer`'s bytes
    /// (`None`: close the connection without answering). `what` names the
    /// server in errors, `thread` its threads.
    pub(super) fn start<F>(what: &str, thread: &str, answer: F) -> Result<Server, LiveError>
    where
        F: Fn(Request) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).map_err(io(format!("binding {what}")))?;
        let addr = listener
            .local_addr()
            .map_err(io(format!("reading the address of {what}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let answer = Arc::new(answer);
        let (s, conn_thread) = (Arc::clone(&stop), format!("{thread}-conn"));
        let accept = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (s, answer) = (Arc::clone(&s), Arc::clone(&answer));
                    let _ = std::thread::Builder::new()
                        .name(conn_thread.clone())
                        .spawn(move || serve(conn, &s, &*answer));
                }
            })
            .map_err(io(format!("starting {what}")))?;
        Ok(Server {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, stop: &AtomicBool, answer: &dyn Fn(Request) -> Option<Vec<u8>>) {
    let _ = conn.set_read_timeout(Some(IDLE));
    let _ = conn.set_nodelay(true);
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let head = match http1::read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        let mut parts = head.start_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("/").to_owned();
        let Ok(body) = http1::read_body(&mut reader, &head, false) else {
            return;
        };
        let closes = head.closes();
        let Some(bytes) = answer(Request {
            head,
            method,
            path,
            body,
        }) else {
            return;
        };
        if writer.write_all(&bytes).is_err() || closes {
            return;
        }
    }
}
