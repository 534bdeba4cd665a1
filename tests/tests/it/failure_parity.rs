//! Traps Envoy answers in unusual ways, the real Envoy 1.40 next to the
//! harness (`harness/docs/fidelity.md`, "Replies and failures").
//!
//! A WAT guest of its own, told by the request's `x-mode` header what to do:
//! - `callout`: `proxy_http_call` to cluster `upstream` (path `/callout`)
//!   from the request headers, which pause; `proxy_on_http_call_response`
//!   traps. Envoy sends the client nothing at all (the client waits until
//!   its own timeout); the harness must say so, not invent a 503.
//! - `body`: the request headers continue (they go upstream); the first
//!   request body callback traps. Envoy answers 503 and resets the upstream
//!   request, which had the headers: the harness must report the headers
//!   as having reached the upstream, then a reset.
//!
//! - `trailers`: the response trailers callback pauses (StopIteration) and
//!   never resumes. Envoy has sent the client the status, the headers and
//!   the body; the stream never ends. The harness must report what the
//!   client received and that the stream stayed open.
//!
//! Two more guests: a chain of two filters where the outer one answers (or
//! traps) in `proxy_on_response_headers` of the inner one's local reply
//! (Envoy sends the new reply, or the 503, in its place), and a gRPC stream
//! to a real HTTP/2 service whose callbacks trap (Envoy sends nothing).
//!
//! The upstream is a raw TCP server here that answers `/callout` and only
//! records what reaches it for anything else. The client sends the body
//! 300 ms after the headers, so the upstream connection is up before the
//! trap (as with a real client streaming a body).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tollgate_host::callouts::GrpcClusterStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::guest;
use tollgate_tests::paths;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

const GUEST: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-mode")     ;; 6
  (data (i32.const 1040) "upstream")   ;; 8
  ;; :method GET, :path /callout, :authority svc (70 bytes)
  (data (i32.const 2048) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\08\00\00\00\0a\00\00\00\03\00\00\00:method\00GET\00:path\00/callout\00:authority\00svc\00")
  (global $heap (mut i32) (i32.const 32768))
  ;; the mode of the last request (its headers are no longer readable in
  ;; the body callback once they continued)
  (global $m (mut i32) (i32.const 0))
  ;; the first byte of x-mode: `c` (callout), `b` (body), 0 (none)
  (func $mode (result i32)
    (if (call $get_hdr (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 256) (i32.const 260))
      (then (return (i32.const 0))))
    (i32.load8_u (i32.load (i32.const 256))))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $m (call $mode))
    (if (i32.eq (global.get $m) (i32.const 99))
      (then
        (drop (call $http_call (i32.const 1040) (i32.const 8) (i32.const 2048) (i32.const 70)
                               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                               (i32.const 5000) (i32.const 264)))
        (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (i32.eq (global.get $m) (i32.const 98)) (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    unreachable)
  ;; `trailers`: the response trailers pause and never resume
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (i32.eq (global.get $m) (i32.const 116)))
)"#;

/// A raw upstream: answers `/callout` with 200, records the bytes of every
/// other connection until the peer closes it.
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A chunked response with a trailer, for the `trailers` case.
const WITH_TRAILERS: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n";

impl RawUpstream {
    /// Answers other requests with `answer` once their head is in (`None`: never).
    fn start(answer: Option<&'static [u8]>) -> Result<RawUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut slot = None;
                    loop {
                        let n = match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        got.extend_from_slice(&buf[..n]);
                        if got.starts_with(b"GET /callout")
                            && got.windows(4).any(|w| w == b"\r\n\r\n")
                        {
                            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                            got.clear();
                            continue;
                        }
                        if let Ok(mut s) = record.lock() {
                            let i = *slot.get_or_insert_with(|| {
                                s.push(Vec::new());
                                s.len() - 1
                            });
                            s[i] = got.clone();
                        }
                        if let Some(a) = answer
                            && got.windows(4).any(|w| w == b"\r\n\r\n")
                        {
                            let _ = conn.write_all(a);
                            got.clear();
                        }
                    }
                });
            }
        });
        Ok(RawUpstream { addr, seen })
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| {
                s.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Sends the head, then (after 300 ms) the body; returns what came back
/// within `wait` (empty: nothing) and whether the connection was closed.
fn send_slowly(
    addr: SocketAddr,
    mode: &str,
    body: &[u8],
    wait: Duration,
) -> Result<(String, bool)> {
    let mut c = TcpStream::connect(addr)?;
    let head = format!(
        "POST /f HTTP/1.1\r\nhost: fail.example.com\r\nx-mode: {mode}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(body)?;
    c.set_read_timeout(Some(wait))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Ok((String::from_utf8_lossy(&got).into_owned(), closed))
}

fn launch(config: &EnvoyConfig) -> Result<Envoy> {
    Envoy::start_local(config, "failure-parity")
}

fn request(mode: &str, body: &[u8]) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "fail.example.com".into(),
        path: "/f".into(),
        headers: vec![
            ("x-mode".into(), mode.into()),
            ("content-length".into(), body.len().to_string()),
        ],
        body: body.to_vec(),
    }
}

#[test]
fn traps_after_a_callout_and_after_the_headers_went_upstream_are_reported_as_envoy_behaves()
-> Result<()> {
    let wasm = guest::assemble(GUEST, "test guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("failure-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &wasm)?;

    // Each case on a fresh Envoy: a trap fails the VM for later requests.
    let mut envoy_saw = Vec::new();
    for (mode, body) in [("callout", &b"hello"[..]), ("body", &b"hello"[..])] {
        let upstream = RawUpstream::start(None)?;
        let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
        config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream.addr)?;
        config.use_filters_from(&dir)?;
        config.set_plugin_configuration("{}")?;
        let envoy = launch(&config)?;
        let got = envoy.explain(send_slowly(
            envoy.listener(),
            mode,
            body,
            Duration::from_secs(2),
        ))?;
        std::thread::sleep(Duration::from_millis(200));
        envoy_saw.push((got, upstream.seen()));
        drop(envoy);
    }
    // Envoy 1.40: a trap in proxy_on_http_call_response sends nothing (the
    // connection stays open past 2 s); nothing but the callout reached the upstream.
    let (callout, callout_up) = &envoy_saw[0];
    ensure!(
        callout.0.is_empty() && !callout.1,
        "Envoy answered a trap in proxy_on_http_call_response: {callout:?}"
    );
    ensure!(callout_up.is_empty(), "the upstream got {callout_up:?}");
    // A trap in the body callback: 503, and the upstream had the headers only.
    let (body, body_up) = &envoy_saw[1];
    ensure!(
        body.0.starts_with("HTTP/1.1 503"),
        "Envoy answered {body:?}, the upstream got {body_up:?}"
    );
    ensure!(
        body_up.len() == 1
            && body_up[0].starts_with("POST /f HTTP/1.1")
            && body_up[0].ends_with("\r\n\r\n"),
        "the upstream got {body_up:?}"
    );

    // The harness, each case on fresh VMs too.
    let run = |mode: &str| -> Result<tollgate_replay::ExchangeReport> {
        let report = Replay::module("failure-guest.wasm", wasm.clone())
            .config("{}")
            .http_cluster(tollgate_host::callouts::HttpClusterStub::respond(
                "upstream", 200,
            ))
            .traffic(Traffic {
                source: None,
                exchanges: vec![Exchange {
                    id: mode.into(),
                    request: request(mode, b"hello"),
                    response: Some(HttpResponse {
                        status: 200,
                        headers: Vec::new(),
                        body: Vec::new(),
                    }),
                    details: Default::default(),
                }],
                warnings: Vec::new(),
            })
            .run()?;
        report.exchanges.into_iter().next().context("no exchange")
    };
    let callout = run("callout")?;
    ensure!(
        callout.client_response.status == tollgate_host::stream::NO_RESPONSE,
        "the harness answered {} to a trap in proxy_on_http_call_response",
        callout.client_response.status
    );
    ensure!(callout.upstream_request.is_none());
    ensure!(
        callout
            .changes
            .iter()
            .any(|c| c.contains("trapped in proxy_on_http_call_response; Envoy sends no reply")),
        "{:?}",
        callout.changes
    );
    ensure!(matches!(callout.verdict, Verdict::Failed { .. }));

    let body = run("body")?;
    ensure!(
        body.client_response.status == 503,
        "{:?}",
        body.client_response
    );
    ensure!(
        body.upstream_request.is_none(),
        "the request as a whole never reached the upstream"
    );
    let up = body
        .upstream_reset
        .as_ref()
        .context("the harness says the headers never went upstream")?;
    ensure!(up.path == "/f" && up.body.is_empty(), "{up:?}");
    ensure!(
        body.changes.iter().any(|c| c.contains(
            "after the request's headers had gone upstream (the upstream got them, then a reset)"
        )),
        "{:?}",
        body.changes
    );
    Ok(())
}

#[test]
fn a_pause_in_the_response_trailers_is_reported_as_what_the_client_got_and_a_stream_left_open()
-> Result<()> {
    let wasm = guest::assemble(GUEST, "test guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("trailers-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &wasm)?;
    let upstream = RawUpstream::start(Some(WITH_TRAILERS))?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr)?;
    // Envoy's HTTP/1 codec passes an upstream's trailers on only when the
    // cluster enables them.
    let cluster = config
        .value_mut()
        .pointer_mut("/static_resources/clusters/0")
        .and_then(serde_json::Value::as_object_mut)
        .context("no first cluster")?;
    cluster.insert(
        "typed_extension_protocol_options".into(),
        serde_json::json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": true}}
            }
        }),
    );
    config.use_filters_from(&dir)?;
    config.set_plugin_configuration("{}")?;
    let envoy = launch(&config)?;
    let (got, closed) = envoy.explain(send_slowly(
        envoy.listener(),
        "trailers",
        b"",
        Duration::from_secs(2),
    ))?;
    drop(envoy);
    // Envoy 1.40: status, headers and the body chunk went out; the last
    // chunk never comes and the connection stays open.
    ensure!(got.starts_with("HTTP/1.1 200"), "Envoy sent {got:?}");
    ensure!(
        got.contains("hello") && !got.ends_with("0\r\n\r\n") && !closed,
        "Envoy sent {got:?} (closed: {closed})"
    );

    let mut e = Exchange {
        id: "trailers".into(),
        request: request("trailers", b""),
        response: Some(HttpResponse {
            status: 200,
            headers: vec![("transfer-encoding".into(), "chunked".into())],
            body: b"hello".to_vec(),
        }),
        details: Default::default(),
    };
    e.details.response_trailers = vec![("x-t".into(), "1".into())];
    let report = Replay::module("trailers-guest.wasm", wasm)
        .config("{}")
        .traffic(Traffic {
            source: None,
            exchanges: vec![e],
            warnings: Vec::new(),
        })
        .run()?;
    let x = &report.exchanges[0];
    ensure!(x.client_response.status == 200, "{:?}", x.client_response);
    ensure!(
        x.client_response.body == b"hello",
        "{:?}",
        x.client_response
    );
    ensure!(
        x.changes.iter().any(|c| c.contains(
            "paused in proxy_on_response_trailers and never resumed; the client got status 200, the headers and 5 body bytes, and the stream never ended"
        )),
        "{:?}",
        x.changes
    );
    Ok(())
}

/// Two filters for a local reply sent while another one is encoded. The
/// inner one (later in the chain) answers every request locally with 403
/// (body `inner`) from its request headers. The outer one (first in the
/// chain, so last to see the reply) acts in `proxy_on_response_headers` by
/// the request's `x-mode`: `replace` answers locally with 418 (body
/// `outer`), `fail` traps, anything else continues. With `same` the inner
/// one answers again, 451 (body `again`), in `proxy_on_response_headers`
/// of its own reply.
const INNER: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "inner")
  (data (i32.const 1040) "x-mode")
  (data (i32.const 1056) "again")
  (global $heap (mut i32) (i32.const 32768))
  (global $m (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $m (i32.const 0))
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1040) (i32.const 6) (i32.const 256) (i32.const 260)))
      (then (global.set $m (i32.load8_u (i32.load (i32.const 256))))))
    (drop (call $local (i32.const 403) (i32.const 1024) (i32.const 5) (i32.const 1024) (i32.const 5)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (global.get $m) (i32.const 115))
      (then
        (drop (call $local (i32.const 451) (i32.const 1056) (i32.const 5) (i32.const 1056) (i32.const 5)
                           (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 0))
)"#;

const OUTER: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-mode")
  (data (i32.const 1040) "outer")
  (global $heap (mut i32) (i32.const 32768))
  (global $m (mut i32) (i32.const 0))
  ;; the first byte of x-mode: `r` (replace), `f` (fail), 0 (none)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $m (i32.const 0))
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 256) (i32.const 260)))
      (then (global.set $m (i32.load8_u (i32.load (i32.const 256))))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (global.get $m) (i32.const 102)) (then unreachable))
    (if (i32.eq (global.get $m) (i32.const 114))
      (then
        (drop (call $local (i32.const 418) (i32.const 1040) (i32.const 5) (i32.const 1040) (i32.const 5)
                           (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 0))
)"#;

#[test]
fn a_local_reply_or_a_trap_while_another_filters_local_reply_is_encoded_replaces_it_as_in_envoy()
-> Result<()> {
    use tollgate_tests::client;
    let outer = guest::assemble(OUTER, "outer guest")?;
    let inner = guest::assemble(INNER, "inner guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("local-twice-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &outer)?;
    std::fs::write(dir.join("inner.wasm"), &inner)?;
    let get =
        |mode: &str| client::request("GET", "fail.example.com", "/f", &[("x-mode", mode)], b"");
    // (mode, status, body) Envoy answers; each on a fresh Envoy (a trap
    // fails the VM for later requests).
    let mut envoy_saw = Vec::new();
    for mode in ["none", "replace", "fail", "same"] {
        let upstream = RawUpstream::start(None)?;
        let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
        config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream.addr)?;
        config.use_filters_from(&dir)?;
        config.set_plugin_configuration("{}")?;
        let filters = config
            .value_mut()
            .pointer_mut(
                "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
            )
            .and_then(serde_json::Value::as_array_mut)
            .context("no http_filters")?;
        let mut second = filters.first().cloned().context("no wasm filter")?;
        let wasm_config = second
            .pointer_mut("/typed_config/config")
            .and_then(serde_json::Value::as_object_mut)
            .context("no wasm config")?;
        wasm_config.insert("name".into(), "inner".into());
        wasm_config.insert("root_id".into(), "inner".into());
        wasm_config.insert(
            "vm_config".into(),
            serde_json::json!({"vm_id": "inner", "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": dir.join("inner.wasm").display().to_string()}}}),
        );
        filters.insert(1, second);
        let envoy = launch(&config)?;
        let got = envoy.explain(client::send(envoy.listener(), &get(mode)))?;
        drop(envoy);
        ensure!(
            upstream.seen().is_empty(),
            "{mode}: the upstream got {:?}",
            upstream.seen()
        );
        envoy_saw.push((mode, got));
    }
    // Envoy 1.40: the inner 403 as is; the outer's 418 in its place; the
    // failed outer filter's 503 in its place; the inner one's second reply
    // in place of its first.
    let expected = [
        ("none", 403, "inner"),
        ("replace", 418, "outer"),
        ("fail", 503, ""),
        ("same", 451, "again"),
    ];
    for ((mode, got), (_, status, body)) in envoy_saw.iter().zip(expected) {
        ensure!(
            got.status == status && got.body == body.as_bytes(),
            "{mode}: Envoy answered {} {:?}",
            got.status,
            String::from_utf8_lossy(&got.body)
        );
    }

    for (mode, got) in &envoy_saw {
        let report = Replay::module("outer.wasm", outer.clone())
            .config("{}")
            .module("inner.wasm", inner.clone())
            .config("{}")
            .traffic(Traffic {
                source: None,
                exchanges: vec![Exchange {
                    id: (*mode).into(),
                    request: get(mode),
                    response: Some(HttpResponse {
                        status: 200,
                        headers: Vec::new(),
                        body: Vec::new(),
                    }),
                    details: Default::default(),
                }],
                warnings: Vec::new(),
            })
            .run()?;
        let e = report.exchanges.first().context("no exchange")?;
        ensure!(
            e.client_response.status == got.status && e.client_response.body == got.body,
            "{mode}: the harness answered {} {:?}, Envoy {} {:?}; {:?}",
            e.client_response.status,
            String::from_utf8_lossy(&e.client_response.body),
            got.status,
            String::from_utf8_lossy(&got.body),
            e.changes
        );
        ensure!(e.upstream_request.is_none(), "{mode}: reached the upstream");
        let replaced = e
            .changes
            .iter()
            .any(|c| c.contains("while the local reply 403 was encoded"));
        ensure!(replaced == (*mode != "none"), "{mode}: {:?}", e.changes);
        ensure!(
            matches!(e.verdict, Verdict::Failed { .. }) == (*mode == "fail"),
            "{mode}: {:?}",
            e.verdict
        );
    }
    Ok(())
}

/// A guest that opens a gRPC stream (`svc.Checker/Watch`, cluster
/// `grpc_watch`) from its request headers and holds the request; the
/// request's `x-mode` names the stream callback that traps: `i` initial
/// metadata, `m` a message (`proxy_on_grpc_receive`), `t` trailing
/// metadata, `c` the close. Otherwise the close answers the request with
/// 200 `closed` (the control: the callbacks ran).
const GRPC_GUEST: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-mode")        ;; 6
  (data (i32.const 1032) "grpc_watch")    ;; 10
  (data (i32.const 1048) "svc.Checker")   ;; 11
  (data (i32.const 1064) "Watch")         ;; 5
  (data (i32.const 1072) "closed")        ;; 6
  (global $heap (mut i32) (i32.const 32768))
  (global $m (mut i32) (i32.const 0))
  (global $ctx (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param $c i32) (param i32 i32) (result i32)
    (global.set $ctx (local.get $c))
    (global.set $m (i32.const 0))
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 256) (i32.const 260)))
      (then (global.set $m (i32.load8_u (i32.load (i32.const 256))))))
    (drop (call $stream (i32.const 1032) (i32.const 10) (i32.const 1048) (i32.const 11)
                        (i32.const 1064) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 264)))
    (i32.const 1))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param i32 i32 i32)
    (if (i32.eq (global.get $m) (i32.const 105)) (then unreachable)))
  (func (export "proxy_on_grpc_receive") (param i32 i32 i32)
    (if (i32.eq (global.get $m) (i32.const 109)) (then unreachable)))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param i32 i32 i32)
    (if (i32.eq (global.get $m) (i32.const 116)) (then unreachable)))
  (func (export "proxy_on_grpc_close") (param i32 i32 i32)
    (if (i32.eq (global.get $m) (i32.const 99)) (then unreachable))
    (drop (call $set_ctx (global.get $ctx)))
    (drop (call $local (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 1072) (i32.const 6)
                       (i32.const 0) (i32.const 0) (i32.const -1))))
)"#;

#[test]
fn a_trap_in_a_grpc_stream_callback_sends_no_reply_as_in_envoy() -> Result<()> {
    use tollgate_tests::grpc::{GrpcScript, GrpcServer};
    let wasm = guest::assemble(GRPC_GUEST, "gRPC guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("grpc-trap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &wasm)?;
    let script = GrpcScript {
        initial_metadata: vec![("x-init".into(), "1".into())],
        messages: vec![b"ab".to_vec()],
        status: 0,
        message: None,
        trailing_metadata: vec![("x-t".into(), "2".into())],
        trailers_only: false,
    };
    let cases = [
        ("none", ""),
        ("i", "proxy_on_grpc_receive_initial_metadata"),
        ("m", "proxy_on_grpc_receive"),
        ("t", "proxy_on_grpc_receive_trailing_metadata"),
        ("c", "proxy_on_grpc_close"),
    ];
    // Each case on a fresh Envoy: a trap fails the VM for later requests.
    for (mode, cb) in cases {
        let upstream = RawUpstream::start(None)?;
        let service = GrpcServer::start(script.clone())?;
        let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
        config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream.addr)?;
        config.add_cluster_like("upstream", "grpc_watch", service.addr())?;
        config.use_http2("grpc_watch")?;
        config.use_filters_from(&dir)?;
        config.set_plugin_configuration("{}")?;
        let envoy = launch(&config)?;
        let (got, closed) = envoy.explain(send_slowly(
            envoy.listener(),
            mode,
            b"",
            Duration::from_millis(1500),
        ))?;
        drop(envoy);
        ensure!(service.streams() >= 1, "{mode}: Envoy opened no stream");
        ensure!(upstream.seen().is_empty(), "{mode}: {:?}", upstream.seen());
        // Envoy 1.40: the callbacks run on the root context, which has no
        // stream to fail: a trap sends nothing (the connection stays open
        // past 1.5 s); without one the close answers.
        if cb.is_empty() {
            ensure!(
                got.starts_with("HTTP/1.1 200") && got.ends_with("closed"),
                "{mode}: Envoy sent {got:?}"
            );
        } else {
            ensure!(
                got.is_empty() && !closed,
                "{mode}: Envoy answered a trap in {cb}: {got:?} (closed: {closed})"
            );
        }

        let stub = GrpcClusterStub::ok("grpc_watch")
            .server_first()
            .initial("x-init", "1")
            .message(b"ab".to_vec())
            .trailing("x-t", "2");
        let report = Replay::module("grpc-trap.wasm", wasm.clone())
            .config("{}")
            .grpc_cluster(stub)
            .traffic(Traffic {
                source: None,
                exchanges: vec![Exchange {
                    id: mode.into(),
                    request: request(mode, b""),
                    response: None,
                    details: Default::default(),
                }],
                warnings: Vec::new(),
            })
            .run()?;
        let e = report.exchanges.first().context("no exchange")?;
        ensure!(e.upstream_request.is_none(), "{mode}: reached the upstream");
        if cb.is_empty() {
            ensure!(
                e.client_response.status == 200 && e.client_response.body == b"closed",
                "{mode}: the harness answered {:?}",
                e.client_response
            );
        } else {
            ensure!(
                e.client_response.status == tollgate_host::stream::NO_RESPONSE,
                "{mode}: the harness answered {} to a trap in {cb}; {:?}",
                e.client_response.status,
                e.changes
            );
            ensure!(
                e.changes
                    .iter()
                    .any(|c| c.contains(&format!("trapped in {cb}; Envoy sends no reply"))),
                "{mode}: {:?}",
                e.changes
            );
            ensure!(matches!(e.verdict, Verdict::Failed { .. }), "{mode}");
        }
    }
    Ok(())
}
