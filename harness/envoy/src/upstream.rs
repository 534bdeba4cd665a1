//! The replay upstream: a real HTTP/1.1 server on 127.0.0.1 (std threads, one
//! per connection) that answers each request with a recorded response.
//!
//! When the sender says which exchange comes next ([`ReplayUpstream::answer_next`],
//! sequential runs), the next request gets that exchange's recorded response
//! whatever path it arrives with, as in the harness (a filter may rewrite the
//! path or strip a query parameter). Otherwise responses are matched by method
//! and path (with query), then by method and path without the query: the
//! recorded responses of one key are given in recording order, wrapping
//! around when the traffic is sent again (`--compare` cycles through it). A
//! request nothing matches gets `404` with `x-tollgate-upstream: no-match`;
//! an exchange recorded without a response gets `502` with
//! `x-tollgate-upstream: no-response`.
//!
//! Every request received is kept ([`ReplayUpstream::take_seen`]) so that a
//! sequential run can tell which request reached the upstream and as what.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tollgate_traffic::{HttpResponse, Traffic};

use super::server::{Request, Server};
use super::{LiveError, http1};

/// A request as it reached the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lower-cased, in order (with `host`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status the upstream answered with.
    pub answered: u16,
}

/// Method (upper-case) and path.
type Key = (String, String);

/// The recorded responses of one key, and how many were given.
type Queue = (Vec<Option<HttpResponse>>, usize);

#[derive(Default)]
struct Table {
    by_path: HashMap<Key, Queue>,
    by_path_without_query: HashMap<Key, Queue>,
}

fn without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn take(map: &mut HashMap<Key, Queue>, key: Key) -> Option<Option<HttpResponse>> {
    let (list, at) = map.get_mut(&key)?;
    let r = list.get(*at % list.len()).cloned();
    *at += 1;
    r
}

impl Table {
    fn next(&mut self, method: &str, path: &str) -> Option<Option<HttpResponse>> {
        let method = method.to_ascii_uppercase();
        take(&mut self.by_path, (method.clone(), path.to_owned())).or_else(|| {
            take(
                &mut self.by_path_without_query,
                (method, without_query(path).to_owned()),
            )
        })
    }
}

struct Shared {
    table: Mutex<Table>,
    /// The response for the next request, set by [`ReplayUpstream::answer_next`].
    next: Mutex<Option<Option<HttpResponse>>>,
    seen: Mutex<Vec<SeenRequest>>,
}

/// A running replay upstream; dropping it stops accepting connections.
pub struct ReplayUpstream {
    server: Server,
    shared: Arc<Shared>,
}

impl ReplayUpstream {
    /// Binds 127.0.0.1 on a port the kernel picks and serves `traffic`'s responses.
    pub fn start(traffic: &Traffic) -> Result<ReplayUpstream, LiveError> {
        let mut table = Table::default();
        for e in &traffic.exchanges {
            let method = e.request.method.to_ascii_uppercase();
            table
                .by_path
                .entry((method.clone(), e.request.path.clone()))
                .or_default()
                .0
                .push(e.response.clone());
            table
                .by_path_without_query
                .entry((method, without_query(&e.request.path).to_owned()))
                .or_default()
                .0
                .push(e.response.clone());
        }
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            next: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let server = Server::start("the replay upstream", "tollgate-upstream", move |req| {
            Some(answer(req, &s))
        })?;
        Ok(ReplayUpstream { server, shared })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Answers the next request with `response` (`None`: the exchange was
    /// recorded without one), whatever its method and path; later requests
    /// are matched again.
    pub fn answer_next(&self, response: Option<HttpResponse>) {
        if let Ok(mut next) = self.shared.next.lock() {
            *next = Some(response);
        }
    }

    /// The requests received since the last call, in arrival order.
    pub fn take_seen(&self) -> Vec<SeenRequest> {
        self.shared
            .seen
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// The recorded answer to `req` (or `404`/`502`, see the module doc).
fn answer(req: Request, shared: &Shared) -> Vec<u8> {
    let given = shared.next.lock().ok().and_then(|mut n| n.take());
    let found = given.or_else(|| {
        shared
            .table
            .lock()
            .ok()
            .and_then(|mut t| t.next(&req.method, &req.path))
    });
    let bytes = match &found {
        Some(Some(r)) => http1::encode_response(&req.method, r.status, &r.headers, &r.body),
        Some(None) => http1::encode_response(
            &req.method,
            502,
            &[("x-tollgate-upstream".into(), "no-response".into())],
            b"recorded without a response\n",
        ),
        None => http1::encode_response(
            &req.method,
            404,
            &[("x-tollgate-upstream".into(), "no-match".into())],
            b"no recorded response for this method and path\n",
        ),
    };
    let answered = match &found {
        Some(Some(r)) => r.status,
        Some(None) => 502,
        None => 404,
    };
    if let Ok(mut seen) = shared.seen.lock() {
        seen.push(SeenRequest {
            method: req.method,
            path: req.path,
            headers: req.head.headers,
            body: req.body,
            answered,
        });
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tollgate_traffic::{Exchange, HttpRequest};

    fn exchange(path: &str, status: u16) -> Exchange {
        Exchange {
            id: path.into(),
            request: HttpRequest {
                method: "GET".into(),
                scheme: "http".into(),
                authority: "a".into(),
                path: path.into(),
                headers: vec![],
                body: vec![],
            },
            response: Some(HttpResponse {
                status,
                headers: vec![("x-r".into(), status.to_string())],
                body: format!("{status}").into_bytes(),
            }),
            details: Default::default(),
        }
    }

    #[test]
    fn answers_in_recorded_order_and_wraps() {
        let traffic = Traffic {
            source: None,
            exchanges: vec![
                exchange("/a", 200),
                exchange("/a", 304),
                exchange("/b", 201),
            ],
            warnings: vec![],
        };
        let up = ReplayUpstream::start(&traffic).unwrap();
        let mut c = http1::Client::new(up.addr(), Duration::from_secs(10));
        let mut got = Vec::new();
        for p in ["/a", "/b", "/a", "/a", "/nope", "/b?x=1", "/c"] {
            if p == "/c" {
                up.answer_next(traffic.exchanges[2].response.clone());
            }
            let mut req = traffic.exchanges[0].request.clone();
            req.path = p.into();
            got.push(c.send(&req).unwrap().0.status);
        }
        assert_eq!(got, [200, 201, 304, 200, 404, 201, 201]);
        let seen = up.take_seen();
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[1].path, "/b");
        assert_eq!(seen[4].answered, 404);
        assert!(up.take_seen().is_empty());
    }
}
