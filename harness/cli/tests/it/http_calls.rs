//! HTTP callouts answered from the stub: the answer reaches the root
//! context (as in Envoy), whose handler can resume the paused stream through
//! `proxy_set_effective_context`.

use super::*;
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_traffic::Traffic;

#[test]
fn a_callout_answer_reaches_the_stream_that_paused_and_resumes_it() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))"#,
        r#"(data (i32.const 1100) "authz")
           ;; pairs: 3 headers (:method GET, :path /check, :authority authz)
           (data (i32.const 1200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\05\00\00\00:method\00GET\00:path\00/check\00:authority\00authz\00")
           (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
             (i32.store (i32.const 960) (local.get $ctx))
             (call $report (call $call (i32.const 1100) (i32.const 5) (i32.const 1200) (i32.const 70)
               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 700)))
             (i32.const 1))
           (func (export "proxy_on_http_call_response") (param $ctx i32) (param $token i32) (param i32 i32 i32)
             (call $report (i32.add (i32.const 100) (local.get $ctx)))
             (drop (call $effective (i32.load (i32.const 960))))
             (drop (call $continue (i32.const 0))))"#,
    );
    let report = Replay::module("callout.wasm", wasm)
        .http_call_stub(HttpCallStub {
            headers: vec![(":status".into(), "200".into())],
            body: b"ok".to_vec(),
        })
        .traffic(Traffic {
            exchanges: vec![exchange("GET", "/", &[], b"")],
            ..Traffic::default()
        })
        .run()
        .unwrap();
    let e = &report.exchanges[0];
    assert_eq!(
        e.verdict,
        Verdict::Passed,
        "{:?} {:?}",
        e.changes,
        e.filters
    );
    assert!(e.upstream_request.is_some());
    assert!(
        e.filters[0].steps.iter().any(|s| s
            .to_string()
            .contains("resumed after proxy_on_request_headers")),
        "{:?}",
        e.filters[0].steps
    );
}

/// proxy-wasm-cpp-host makes every call on the root context
/// (`contextOrEffectiveContext()->root_context()`), so Envoy answers there.
#[test]
fn the_answer_comes_to_the_root_context_as_in_envoy() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "authz")
           (data (i32.const 1200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\05\00\00\00:method\00GET\00:path\00/check\00:authority\00authz\00")
           (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
             (call $report (call $call (i32.const 1100) (i32.const 5) (i32.const 1200) (i32.const 70)
               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 700)))
             (i32.const 0))
           (func (export "proxy_on_http_call_response") (param $ctx i32) (param i32 i32 i32 i32)
             (call $report (i32.add (i32.const 100) (local.get $ctx))))"#,
    );
    let plugin = Plugin::from_bytes("c.wasm", &wasm).unwrap();
    let settings = VmSettings {
        http_call_stub: Some(HttpCallStub {
            headers: vec![(":status".into(), "200".into())],
            body: Vec::new(),
        }),
        ..VmSettings::default()
    };
    let mut vm = Vm::start(&plugin, settings).unwrap();
    let out = stream::run(&mut vm, &exchange("GET", "/", &[], b""));
    assert!(out.failure.is_none());
    assert_eq!(
        statuses(&vm),
        [0, 101],
        "call Ok, answer on the root context (1), not the stream (2)"
    );
}
