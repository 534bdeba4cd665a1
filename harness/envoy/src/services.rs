//! The services behind the clusters a filter calls (`tollgate envoy --stub`,
//! `--cluster`): an ext-authz check, a JWKS fetch...
//!
//! - A **stub** ([`ServiceSpec::Stub`], the same files as `tollgate replay
//!   --stub`, a suite's `clusters:` entry) is served by a real HTTP/1.1 server
//!   on 127.0.0.1 ([`StubServer`], a thread per connection) that answers every
//!   request with the stub's status, headers and body, after the stub's delay
//!   slept for real (at most [`MAX_DELAY`]). `failure: reset` reads the request
//!   and closes the connection without answering; `failure: connection` is a
//!   cluster pointing at a port nobody listens on (bound, then closed).
//!   Trailers are not sent (the cluster speaks HTTP/1.1 without trailers).
//! - A **user's service** ([`ServiceSpec::Address`]) is a cluster pointing at
//!   an address where the user runs it.
//!
//! Every service becomes a `STATIC` cluster of its name in every generated
//! configuration ([`RunningServices::clusters`]), next to the clusters of the
//! `--alternative` files ([`shared_clusters`]), so that the wasm filters and
//! the native alternatives call the same services.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use tollgate_traffic::stubs::{HttpAnswer, HttpClusterStub};

use super::bootstrap::{Alternative, UPSTREAM_CLUSTER};
use super::server::{Request, Server};
use super::{LiveError, http1};

/// The longest a stub's `delay_ms` is slept for real.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// What answers one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceSpec {
    /// A stub served by Tollgate (also what the harness predicts with).
    Stub(HttpClusterStub),
    /// The user's own service at this address.
    Address {
        /// The cluster's name.
        cluster: String,
        /// Where the service listens.
        addr: SocketAddr,
    },
}

impl ServiceSpec {
    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        match self {
            ServiceSpec::Stub(s) => &s.cluster,
            ServiceSpec::Address { cluster, .. } => cluster,
        }
    }

    /// Parses `--cluster NAME=HOST:PORT` (an IP address and a port).
    pub fn address_arg(arg: &str) -> Result<ServiceSpec, LiveError> {
        let err = |m: &str| LiveError::Config(format!("--cluster {arg:?}: {m}"));
        let (name, addr) = arg
            .split_once('=')
            .filter(|(n, a)| !n.is_empty() && !a.is_empty())
            .ok_or_else(|| err("expected NAME=IP:PORT, e.g. authz=127.0.0.1:9191"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| err("the address must be IP:PORT, e.g. 127.0.0.1:9191"))?;
        Ok(ServiceSpec::Address {
            cluster: name.to_owned(),
            addr,
        })
    }
}

/// What Envoy gets of `specs`: a user's service (`--cluster`) replaces a stub
/// of the same cluster (which then only answers in the harness's prediction).
pub fn for_envoy(specs: &[ServiceSpec]) -> Vec<ServiceSpec> {
    let user = |name: &str| {
        specs
            .iter()
            .any(|o| matches!(o, ServiceSpec::Address { .. }) && o.cluster() == name)
    };
    specs
        .iter()
        .filter(|s| matches!(s, ServiceSpec::Address { .. }) || !user(s.cluster()))
        .cloned()
        .collect()
}

/// A request as it reached a stub server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubRequest {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, names lower-cased, in order (with `host`).
    pub headers: Vec<(String, String)>,
}

struct Shared {
    stub: HttpClusterStub,
    seen: Mutex<Vec<StubRequest>>,
}

/// A running stub server; dropping it stops accepting connections.
pub struct StubServer {
    server: Server,
    shared: Arc<Shared>,
}

impl StubServer {
    /// Binds 127.0.0.1 on a port the kernel picks and answers with `stub`.
    pub fn start(stub: HttpClusterStub) -> Result<StubServer, LiveError> {
        let what = format!("the stub server of cluster {}", stub.cluster);
        let shared = Arc::new(Shared {
            stub,
            seen: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let server = Server::start(&what, "tollgate-stub", move |req| answer(req, &s))?;
        Ok(StubServer { server, shared })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, in arrival order.
    pub fn seen(&self) -> Vec<StubRequest> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// The stub's answer to `req` after its delay; `None` (reset): close without
/// a response.
fn answer(req: Request, shared: &Shared) -> Option<Vec<u8>> {
    if let Ok(mut seen) = shared.seen.lock() {
        seen.push(StubRequest {
            method: req.method.clone(),
            path: req.path,
            headers: req.head.headers,
        });
    }
    let delay = shared.stub.delay.min(MAX_DELAY);
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    match &shared.stub.answer {
        HttpAnswer::Response {
            status,
            headers,
            body,
            ..
        } => Some(http1::encode_response(&req.method, *status, headers, body)),
        // Reset: the request was read; close without a response.
        HttpAnswer::Reset | HttpAnswer::ConnectFailure => None,
    }
}

/// One service while a run lasts.
pub struct RunningService {
    /// The cluster's name.
    pub cluster: String,
    /// Where its cluster points.
    pub addr: SocketAddr,
    /// What it is: `stub`, `stub (reset)`, `closed port` or `user service`.
    pub kind: &'static str,
    server: Option<StubServer>,
}

impl RunningService {
    /// The requests its stub server received (none for other kinds).
    pub fn seen(&self) -> Vec<StubRequest> {
        self.server
            .as_ref()
            .map(StubServer::seen)
            .unwrap_or_default()
    }
}

/// The services of a run, started by [`RunningServices::start`].
#[derive(Default)]
pub struct RunningServices {
    /// In the order given.
    pub services: Vec<RunningService>,
}

/// A port on 127.0.0.1 nobody listens on (bound by the kernel, then closed).
/// Port 1 (tcpmux) on loopback: privileged, so no test or user process can
/// be listening there, unlike a just-released ephemeral port that another
/// process may take again.
fn closed_port() -> Result<SocketAddr, LiveError> {
    Ok(SocketAddr::from(([127, 0, 0, 1], 1)))
}

impl RunningServices {
    /// Starts a server per stub; checks names (unique, not the replay upstream's).
    pub fn start(specs: &[ServiceSpec]) -> Result<RunningServices, LiveError> {
        let mut out = RunningServices::default();
        for spec in specs {
            let cluster = spec.cluster().to_owned();
            if cluster == UPSTREAM_CLUSTER {
                return Err(LiveError::Config(format!(
                    "cluster {cluster}: the name is reserved for the replay upstream"
                )));
            }
            if out.services.iter().any(|s| s.cluster == cluster) {
                return Err(LiveError::Config(format!(
                    "cluster {cluster} is given twice (--stub and --cluster name one cluster each)"
                )));
            }
            let (addr, kind, server) = match spec {
                ServiceSpec::Address { addr, .. } => (*addr, "user service", None),
                ServiceSpec::Stub(stub) => match stub.answer {
                    HttpAnswer::ConnectFailure => (closed_port()?, "closed port", None),
                    HttpAnswer::Reset => {
                        let s = StubServer::start(stub.clone())?;
                        (s.addr(), "stub (reset)", Some(s))
                    }
                    HttpAnswer::Response { .. } => {
                        let s = StubServer::start(stub.clone())?;
                        (s.addr(), "stub", Some(s))
                    }
                },
            };
            out.services.push(RunningService {
                cluster,
                addr,
                kind,
                server,
            });
        }
        Ok(out)
    }

    /// A `STATIC` cluster per service.
    pub fn clusters(&self) -> Vec<Value> {
        self.services
            .iter()
            .map(|s| super::bootstrap::static_cluster(&s.cluster, s.addr))
            .collect()
    }

    /// What each service received so far.
    pub fn report(&self) -> Vec<ServiceReport> {
        self.services
            .iter()
            .map(|s| ServiceReport {
                cluster: s.cluster.clone(),
                kind: s.kind,
                addr: s.addr,
                requests: s.seen(),
            })
            .collect()
    }
}

/// One service in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReport {
    /// The cluster's name.
    pub cluster: String,
    /// `stub`, `stub (reset)`, `closed port` or `user service`.
    pub kind: &'static str,
    /// Where its cluster pointed.
    pub addr: SocketAddr,
    /// The requests its stub server received (none for other kinds).
    pub requests: Vec<StubRequest>,
}

/// Services as JSON: cluster, kind, address, requests received and their paths.
pub fn report_json(services: &[ServiceReport]) -> Value {
    Value::Array(
        services
            .iter()
            .map(|s| {
                json!({
                    "cluster": s.cluster, "kind": s.kind, "address": s.addr.to_string(),
                    "requests": s.requests.len(),
                    "paths": s.requests.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// One line per service, for text reports.
pub fn report_text(services: &[ServiceReport]) -> String {
    services
        .iter()
        .map(|s| match s.kind {
            "closed port" => format!(
                "cluster {} -> closed port {} (nobody listens: connection failure)\n",
                s.cluster, s.addr
            ),
            "user service" => format!("cluster {} -> your service at {}\n", s.cluster, s.addr),
            kind => format!(
                "cluster {} -> {kind} {}: {} request(s) received\n",
                s.cluster,
                s.addr,
                s.requests.len()
            ),
        })
        .collect()
}

/// The clusters every configuration of a run gets: the services' (first), then
/// the clusters of every `--alternative` file. A service replaces an
/// alternative's cluster of the same name (that is how `--stub authz=..` serves
/// `envoy/ext-authz/native.yaml`'s `authz`); the same cluster in two files is
/// kept once when identical, and is an error naming both files otherwise.
pub fn shared_clusters(
    services: &RunningServices,
    alternatives: &[(String, Alternative)],
) -> Result<Vec<Value>, LiveError> {
    let mut out = services.clusters();
    let mut from: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (_, alt) in alternatives {
        for c in &alt.clusters {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if services.services.iter().any(|s| s.cluster == name) {
                continue;
            }
            if let Some(first) = from.get(name) {
                let same = out
                    .iter()
                    .any(|o| o.get("name").and_then(Value::as_str) == Some(name) && o == c);
                if same {
                    continue;
                }
                return Err(LiveError::Config(format!(
                    "cluster {name} is defined differently in --alternative {} and --alternative {} \
                     (every configuration gets the clusters of all alternatives: rename one, or \
                     point both at the same service, e.g. with --stub {name}=FILE or --cluster {name}=IP:PORT)",
                    first.display(),
                    alt.source.display()
                )));
            }
            from.insert(name.to_owned(), alt.source.clone());
            out.push(c.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_traffic::HttpRequest;

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            scheme: "http".into(),
            authority: "authz.local".into(),
            path: path.into(),
            headers: vec![("x-api-key".into(), "k".into())],
            body: vec![],
        }
    }

    #[test]
    fn a_stub_server_answers_every_request_with_the_stub() {
        let stub = HttpClusterStub::respond("authz", 200)
            .header("x-auth-user", "demo")
            .body("ok");
        let running = RunningServices::start(&[ServiceSpec::Stub(stub)]).unwrap();
        let s = &running.services[0];
        let mut c = http1::Client::new(s.addr, Duration::from_secs(10));
        for p in ["/check/a", "/check/b?x=1"] {
            let (r, _) = c.send(&get(p)).unwrap();
            assert_eq!(r.status, 200);
            assert!(r.headers.contains(&("x-auth-user".into(), "demo".into())));
            assert_eq!(r.body, b"ok");
        }
        let seen = s.seen();
        assert_eq!(
            seen.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["/check/a", "/check/b?x=1"]
        );
        assert!(seen[0].headers.contains(&("x-api-key".into(), "k".into())));
        let clusters = running.clusters();
        assert_eq!(clusters[0]["name"], "authz");
        assert_eq!(
            clusters[0].pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value"),
            Some(&json!(s.addr.port()))
        );
    }

    #[test]
    fn reset_closes_and_connection_failure_points_at_a_closed_port() {
        let running = RunningServices::start(&[
            ServiceSpec::Stub(HttpClusterStub::reset("a")),
            ServiceSpec::Stub(HttpClusterStub::connect_failure("b")),
        ])
        .unwrap();
        let mut c = http1::Client::new(running.services[0].addr, Duration::from_secs(10));
        assert!(c.send(&get("/")).is_err());
        assert_eq!(running.services[0].seen().len(), 1);
        assert_eq!(running.services[1].kind, "closed port");
        assert!(std::net::TcpStream::connect(running.services[1].addr).is_err());
    }

    #[test]
    fn names_and_alternative_clusters_are_checked() {
        let e = RunningServices::start(&[ServiceSpec::Stub(HttpClusterStub::respond(
            UPSTREAM_CLUSTER,
            200,
        ))])
        .err()
        .unwrap();
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = ServiceSpec::address_arg("authz=localhost").unwrap_err();
        assert!(e.to_string().contains("IP:PORT"), "{e}");
        let spec = ServiceSpec::address_arg("authz=127.0.0.1:9191").unwrap();
        let running = RunningServices::start(&[spec]).unwrap();
        let alt = |file: &str, port: u16| {
            let mut a = Alternative::parse(
                file,
                &format!(
                    "http_filters: [{{name: x}}]\nclusters:\n  - {{name: authz, port: 1}}\n  - {{name: jwks, port: {port}}}\n"
                ),
            )
            .unwrap();
            a.source = PathBuf::from(file);
            a
        };
        // authz comes from --cluster; jwks once when identical.
        let same = [
            ("a".into(), alt("a.yaml", 2)),
            ("b".into(), alt("b.yaml", 2)),
        ];
        let c = shared_clusters(&running, &same).unwrap();
        let names: Vec<&str> = c.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["authz", "jwks"]);
        assert_eq!(c[0]["type"], "STATIC");
        let differ = [
            ("a".into(), alt("a.yaml", 2)),
            ("b".into(), alt("b.yaml", 3)),
        ];
        let e = shared_clusters(&running, &differ).unwrap_err().to_string();
        assert!(
            e.contains("cluster jwks") && e.contains("a.yaml") && e.contains("b.yaml"),
            "{e}"
        );
    }
}
