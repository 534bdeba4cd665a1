//! Unary gRPC calls answered from stubs: receive with the message, close
//! with a status, unknown clusters refused.

use super::*;
use tollgate_host::state::GrpcCallStub;
use tollgate_replay::{Replay, StreamInput};

/// Calls cluster `cluster` (5 bytes at 1100) from the request headers
/// callback and pauses; reports the call's status, the received size and
/// first byte, or the close status and `proxy_get_status`'s code; resumes
/// its stream (answers come on the root context, as in Envoy).
pub fn caller(cluster: &str) -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_grpc_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_status" (func $status (param i32 i32 i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))"#,
        &format!(
            r#"(data (i32.const 1100) "{cluster}")
               (data (i32.const 1110) "svc.Check")
               (data (i32.const 1120) "Check")
               (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
                 (i32.store (i32.const 960) (local.get $ctx))
                 (call $report (call $call (i32.const 1100) (i32.const 5) (i32.const 1110) (i32.const 9)
                   (i32.const 1120) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 1120) (i32.const 5)
                   (i32.const 1000) (i32.const 700)))
                 (call $report (i32.load (i32.const 700)))
                 (i32.const 1))
               (func (export "proxy_on_grpc_receive") (param $ctx i32) (param $token i32) (param $size i32)
                 (call $report (i32.add (i32.const 1000) (local.get $size)))
                 (drop (call $get_buf (i32.const 5) (i32.const 0) (local.get $size) (i32.const 720) (i32.const 724)))
                 (call $report (i32.load8_u (i32.load (i32.const 720))))
                 (drop (call $effective (i32.load (i32.const 960))))
                 (drop (call $continue (i32.const 0))))
               (func (export "proxy_on_grpc_close") (param $ctx i32) (param $token i32) (param $status i32)
                 (call $report (i32.add (i32.const 2000) (local.get $status)))
                 (drop (call $status (i32.const 730) (i32.const 734) (i32.const 738)))
                 (call $report (i32.add (i32.const 3000) (i32.load (i32.const 730))))
                 (call $report (i32.add (i32.const 4000) (i32.load (i32.const 738))))
                 (drop (call $effective (i32.load (i32.const 960))))
                 (drop (call $continue (i32.const 0))))"#
        ),
    )
}

fn run(wasm: Vec<u8>, stub: GrpcCallStub) -> (Vec<u64>, bool) {
    let (mut chain, _) = Replay::module("grpc.wasm", wasm)
        .grpc_call_stub(stub)
        .start()
        .expect("starts");
    let (out, _, _) = chain.exchange(&StreamInput::from_exchange(&exchange("GET", "/", &[], b"")));
    (
        statuses(chain.vm(0).expect("vm")),
        out.upstream_request.is_some(),
    )
}

#[test]
fn a_successful_call_delivers_the_message() {
    let (r, through) = run(
        caller("authz"),
        GrpcCallStub {
            cluster: "authz".into(),
            status: 0,
            message: b"\x08\x01".to_vec(),
            status_message: String::new(),
        },
    );
    assert_eq!(
        r,
        [0, 5, 1002, 8],
        "Ok, token 5 (Envoy's first gRPC call id), 2 bytes, first byte 0x08"
    );
    assert!(through, "resumed from the receive callback");
}

#[test]
fn a_failed_call_is_closed_with_its_status() {
    let (r, through) = run(
        caller("authz"),
        GrpcCallStub {
            cluster: "authz".into(),
            status: 14,
            message: Vec::new(),
            status_message: "unavailable".into(),
        },
    );
    // `unavailable{via_upstream}`: Envoy appends the response code details.
    assert_eq!(r, [0, 5, 2014, 3014, 4025]);
    assert!(through);
}

#[test]
fn a_cluster_without_a_stub_is_refused() {
    let (r, through) = run(
        caller("other"),
        GrpcCallStub {
            cluster: "authz".into(),
            status: 0,
            message: Vec::new(),
            status_message: String::new(),
        },
    );
    assert_eq!(
        r,
        [4, 0],
        "ParseFailure (Envoy's answer for an unknown gRPC cluster), no token"
    );
    assert!(!through, "paused and never resumed");
}
