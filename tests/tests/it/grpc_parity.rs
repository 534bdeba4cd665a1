//! gRPC streams to a service that speaks first, the real Envoy 1.40 next to
//! the harness.
//!
//! The guest (WAT, below) opens a gRPC stream (`svc.Checker/Watch`) to the
//! cluster its request's `x-cluster` header names, sends nothing, and holds
//! the request. Every stream callback appends what it got: initial metadata
//! (`im<count>` and `x-init`), each message (`msg<size>`), trailing metadata
//! (`tm<count>` and `x-t`), and the close (`close<status>:` and the message
//! `proxy_get_status` gives); the close answers the request with all of it.
//! The services are real HTTP/2 gRPC servers on 127.0.0.1
//! ([`tollgate_tests::grpc::GrpcServer`]) answering as soon as a stream opens;
//! the harness answers the same clusters with server-first stubs. The client
//! must get the same body from both.

use anyhow::{Context, Result, ensure};
use tollgate_host::callouts::GrpcClusterStub;
use tollgate_replay::Replay;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::grpc::{GrpcScript, GrpcServer};
use tollgate_tests::guest;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, Traffic};

const GUEST: &str = r#"(module
  (import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 1024) "x-cluster")     ;; 9
  (data (i32.const 1040) "svc.Checker")   ;; 11
  (data (i32.const 1056) "Watch")         ;; 5
  (data (i32.const 1064) "x-init")        ;; 6
  (data (i32.const 1072) "x-t")           ;; 3
  (global $heap (mut i32) (i32.const 65536))
  (global $cur (mut i32) (i32.const 16384))
  (func $put (param $p i32) (param $n i32)
    (memory.copy (global.get $cur) (local.get $p) (local.get $n))
    (global.set $cur (i32.add (global.get $cur) (local.get $n))))
  (func $putc (param $c i32)
    (i32.store8 (global.get $cur) (local.get $c))
    (global.set $cur (i32.add (global.get $cur) (i32.const 1))))
  (func $num (param $v i32)
    (if (i32.ge_u (local.get $v) (i32.const 10))
      (then (call $num (i32.div_u (local.get $v) (i32.const 10)))))
    (call $putc (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
  ;; `=value` of header $k of map $map, or `?status`
  (func $show (param $map i32) (param $k i32) (param $n i32)
    (local $rc i32)
    (call $put (local.get $k) (local.get $n))
    (local.set $rc (call $get_hdr (local.get $map) (local.get $k) (local.get $n) (i32.const 256) (i32.const 260)))
    (if (i32.eqz (local.get $rc))
      (then (call $putc (i32.const 61)) (call $put (i32.load (i32.const 256)) (i32.load (i32.const 260))))
      (else (call $putc (i32.const 63)) (call $num (local.get $rc))))
    (call $putc (i32.const 32)))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (i32.store (i32.const 960) (local.get $ctx))
    (global.set $cur (i32.const 16384))
    (drop (call $get_hdr (i32.const 0) (i32.const 1024) (i32.const 9) (i32.const 900) (i32.const 904)))
    (call $putc (i32.const 111))
    (call $num (call $stream (i32.load (i32.const 900)) (i32.load (i32.const 904))
      (i32.const 1040) (i32.const 11) (i32.const 1056) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 964)))
    (call $putc (i32.const 32))
    (i32.const 1))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param i32 i32) (param $n i32)
    (call $putc (i32.const 73))
    (call $num (local.get $n))
    (call $putc (i32.const 32))
    (call $show (i32.const 4) (i32.const 1064) (i32.const 6)))
  (func (export "proxy_on_grpc_receive") (param i32 i32) (param $size i32)
    (call $putc (i32.const 77))
    (call $num (local.get $size))
    (call $putc (i32.const 32)))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param i32 i32) (param $n i32)
    (call $putc (i32.const 84))
    (call $num (local.get $n))
    (call $putc (i32.const 32))
    (call $show (i32.const 5) (i32.const 1072) (i32.const 3)))
  (func (export "proxy_on_grpc_close") (param i32) (param $token i32) (param $code i32)
    (call $putc (i32.const 67))
    (call $num (local.get $code))
    (call $putc (i32.const 58))
    (drop (call $get_status (i32.const 910) (i32.const 914) (i32.const 918)))
    (call $put (i32.load (i32.const 914)) (i32.load (i32.const 918)))
    (drop (call $set_ctx (i32.load (i32.const 960))))
    (drop (call $local (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 16384) (i32.sub (global.get $cur) (i32.const 16384)) (i32.const 0) (i32.const 0) (i32.const -1))))
)"#;

/// The services: (cluster, what it answers).
fn services() -> Vec<(&'static str, GrpcScript)> {
    vec![
        (
            "grpc_watch",
            GrpcScript {
                initial_metadata: vec![("x-init".into(), "1".into())],
                messages: vec![b"ab".to_vec(), b"cde".to_vec()],
                status: 0,
                message: None,
                trailing_metadata: vec![("x-t".into(), "2".into())],
                trailers_only: false,
            },
        ),
        (
            "grpc_denied",
            GrpcScript {
                initial_metadata: vec![("x-init".into(), "0".into())],
                status: 7,
                message: Some("denied".into()),
                ..GrpcScript::default()
            },
        ),
        (
            "grpc_trailers_only",
            GrpcScript {
                status: 5,
                message: Some("no such watch".into()),
                trailing_metadata: vec![("x-t".into(), "3".into())],
                trailers_only: true,
                ..GrpcScript::default()
            },
        ),
        (
            "grpc_empty_close",
            GrpcScript {
                status: 13,
                trailers_only: true,
                ..GrpcScript::default()
            },
        ),
    ]
}

fn launch(config: &EnvoyConfig) -> Result<Envoy> {
    Envoy::start_local(config, "grpc-parity")
}

#[test]
fn server_first_grpc_streams_are_delivered_as_envoy_delivers_them() -> Result<()> {
    let wasm = guest::assemble(GUEST, "test guest")?;
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"ok"))?;
    let services = services();
    let servers = services
        .iter()
        .map(|(_, s)| GrpcServer::start(s.clone()))
        .collect::<Result<Vec<_>>>()?;
    let mut config = guest::headers_bootstrap(&wasm, "grpc-guest", upstream.addr())?;
    for ((name, _), server) in services.iter().zip(&servers) {
        config.add_cluster_like("upstream", name, server.addr())?;
        config.use_http2(name)?;
    }
    // Nobody listens on port 1.
    config.add_cluster_like("upstream", "grpc_down", "127.0.0.1:1".parse()?)?;
    config.use_http2("grpc_down")?;
    let envoy = launch(&config)?;
    let requests: Vec<_> = services
        .iter()
        .map(|(name, _)| *name)
        .chain(["grpc_down"])
        .map(|name| {
            client::request(
                "GET",
                "grpc.example.com",
                "/watch",
                &[("x-cluster", name)],
                b"",
            )
        })
        .collect();
    let mut from_envoy = Vec::new();
    for r in &requests {
        let response = envoy.explain(client::send(envoy.listener(), r))?;
        from_envoy.push(format!(
            "{} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    drop(envoy);
    // What Envoy 1.40 gave the guest: initial metadata with `:status` and
    // `content-type`, trailers with `grpc-status` (and `grpc-message`); a
    // trailers-only answer as empty initial metadata and every header as
    // trailers; close messages with the response code details appended.
    let expected = [
        "200 o0 I3 x-init=1 M2 M3 T2 x-t=2 C0:via_upstream",
        "200 o0 I3 x-init=0 T2 x-t?1 C7:denied{via_upstream}",
        "200 o0 I0 x-init?1 T5 x-t=3 C5:no such watch{via_upstream}",
        "200 o0 I0 x-init?1 T3 x-t?1 C13:via_upstream",
        "200 o0 I0 x-init?1 T4 x-t?1 C14:upstream connect error or disconnect/reset before headers. \
         reset reason: remote connection failure{upstream_reset_before_response_started\
         {remote_connection_failure|delayed_connect_error:_Connection_refused}}",
    ];
    ensure!(from_envoy == expected, "Envoy answered {from_envoy:#?}");
    for (s, (name, _)) in servers.iter().zip(&services) {
        ensure!(s.streams() >= 1, "{name}: Envoy opened no stream");
    }
    let mut replay = Replay::module("grpc-guest.wasm", wasm).config("{}");
    for (name, s) in &services {
        let mut stub = GrpcClusterStub::ok(*name).server_first();
        for (k, v) in &s.initial_metadata {
            stub = stub.initial(k, v);
        }
        for m in &s.messages {
            stub = stub.message(m.clone());
        }
        for (k, v) in &s.trailing_metadata {
            stub = stub.trailing(k, v);
        }
        stub.status = s.status;
        stub.status_message = s.message.clone().unwrap_or_default();
        replay = replay.grpc_cluster(stub);
    }
    replay = replay.grpc_cluster(GrpcClusterStub::connect_failure("grpc_down").server_first());
    let report = replay
        .traffic(Traffic {
            source: None,
            exchanges: requests
                .iter()
                .enumerate()
                .map(|(i, r)| Exchange {
                    id: format!("grpc {i}"),
                    request: r.clone(),
                    response: None,
                    details: Default::default(),
                })
                .collect(),
            warnings: Vec::new(),
        })
        .run()
        .context("the harness could not replay")?;
    let from_harness: Vec<String> = report
        .exchanges
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.client_response.status,
                String::from_utf8_lossy(&e.client_response.body)
            )
        })
        .collect();
    ensure!(
        from_envoy == from_harness,
        "server-first gRPC streams differ:\n  Envoy:   {from_envoy:#?}\n  harness: {from_harness:#?}"
    );
    Ok(())
}
