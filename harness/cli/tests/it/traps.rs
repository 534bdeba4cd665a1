//! Failing guests: traps, endless loops, proc_exit — each a `Failed`
//! verdict with a readable message; with `FailReload` and no backoff, a
//! fresh VM for what follows.

use super::*;
use std::time::Duration;
use tollgate_host::state::LogLevel;
use tollgate_replay::{FailurePolicy, Replay, Report, Verdict};
use tollgate_traffic::Traffic;

fn replay(wasm: Vec<u8>, exchanges: Vec<Exchange>) -> Report {
    Replay::module("bad.wasm", wasm)
        .failure_policy(FailurePolicy::FailReload)
        .reload_backoff(Duration::ZERO)
        .call_timeout(Duration::from_millis(200))
        .traffic(Traffic {
            exchanges,
            ..Traffic::default()
        })
        .run()
        .unwrap()
}

fn failure(v: &Verdict) -> &str {
    match v {
        Verdict::Failed { message } => message,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_is_stopped_and_reported() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func $spin (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (loop $forever (br $forever)) (i32.const 0))"#,
    );
    let report = replay(
        wasm,
        vec![
            exchange("GET", "/", &[], b""),
            exchange("GET", "/2", &[], b""),
        ],
    );
    for e in &report.exchanges {
        let msg = failure(&e.verdict);
        assert!(msg.contains("proxy_on_request_headers"), "{msg}");
        assert!(msg.contains("was stopped"), "{msg}");
    }
    assert_eq!(report.summary().failed, 2);
}

#[test]
fn a_trap_is_reported_with_the_guest_message_and_backtrace() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "panicked at src/lib.rs: boom")
           (func $explode (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $log (i32.const 5) (i32.const 1100) (i32.const 28)))
             unreachable)"#,
    );
    let report = replay(wasm, vec![exchange("GET", "/", &[], b"")]);
    let e = &report.exchanges[0];
    let msg = failure(&e.verdict);
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(
        msg.contains("guest said: panicked at src/lib.rs: boom"),
        "{msg}"
    );
    assert!(
        msg.contains("explode"),
        "backtrace names the function: {msg}"
    );
    assert_eq!(e.logs.last().map(|l| l.level), Some(LogLevel::Critical));
}

#[test]
fn after_a_trap_a_fresh_vm_serves_the_next_request() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "x-crash")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (if (i32.eqz (call $get_hv (i32.const 0) (i32.const 1100) (i32.const 7) (i32.const 512) (i32.const 516)))
               (then unreachable))
             (i32.const 0))"#,
    );
    let report = replay(
        wasm,
        vec![
            exchange("GET", "/", &[("x-crash", "1")], b""),
            exchange("GET", "/", &[], b""),
        ],
    );
    failure(&report.exchanges[0].verdict);
    assert_eq!(report.exchanges[1].verdict, Verdict::Passed);
}

#[test]
fn proc_exit_fails_the_exchange() {
    let wasm = guest(
        "0_2_1",
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $exit (i32.const 3)) (i32.const 0))"#,
    );
    let report = replay(wasm, vec![exchange("GET", "/", &[], b"")]);
    assert!(failure(&report.exchanges[0].verdict).contains("proc_exit(3)"));
}
