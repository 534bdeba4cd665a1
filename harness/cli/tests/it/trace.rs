//! The call trace: every host->guest call with its arguments and return
//! value, in the shape of Envoy's `-l trace` log.

use super::*;
use tollgate_replay::Replay;
use tollgate_traffic::Traffic;

#[test]
fn calls_are_traced_in_envoys_shape_and_order() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_context_create") (param i32 i32))
           (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
           (func (export "proxy_on_log") (param i32))
           (func (export "proxy_on_delete") (param i32))"#,
    );
    let report = Replay::module("t.wasm", wasm)
        .config("{}")
        .trace_calls()
        .traffic(Traffic {
            exchanges: vec![exchange("GET", "/", &[("accept", "*/*")], b"")],
            ..Traffic::default()
        })
        .run()
        .unwrap();
    let start: Vec<&str> = report
        .startup_logs
        .iter()
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(
        start,
        [
            "[host->vm] proxy_on_context_create(1, 0)",
            "[host<-vm] proxy_on_context_create return: void",
            "[host->vm] proxy_on_configure(1, 2)",
            "[host<-vm] proxy_on_configure return: 1",
        ]
    );
    let lines: Vec<&str> = report.exchanges[0]
        .logs
        .iter()
        .filter(|l| l.level == "trace")
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(
        lines,
        [
            "[host->vm] proxy_on_context_create(2, 1)",
            "[host<-vm] proxy_on_context_create return: void",
            "[host->vm] proxy_on_request_headers(2, 5, 1)",
            "[host<-vm] proxy_on_request_headers return: 0",
            "[host->vm] proxy_on_response_headers(2, 2, 0)",
            "[host<-vm] proxy_on_response_headers return: 0",
            // Envoy 1.40's order (seen with -l trace): log, done, delete.
            "[host->vm] proxy_on_log(2)",
            "[host<-vm] proxy_on_log return: void",
            "[host->vm] proxy_on_done(2)",
            "[host<-vm] proxy_on_done return: 1",
            "[host->vm] proxy_on_delete(2)",
            "[host<-vm] proxy_on_delete return: void",
        ]
    );
}
