//! Stream control: local responses stop the request and travel back through
//! the response callbacks; pausing without resuming stalls; resuming works.

use super::*;
use tollgate_replay::{Replay, Verdict};
use tollgate_traffic::Traffic;

const LOCAL: &str = r#"
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
"#;

const LOCAL_BODY: &str = r#"
  (data (i32.const 1100) "denied")
  (data (i32.const 1110) "policy_denied")
  (data (i32.const 1200) "\01\00\00\00\05\00\00\00\06\00\00\00x-why\00policy\00")
  (data (i32.const 1300) "x-seen")
  (data (i32.const 1310) "1")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $report (call $local (i32.const 403) (i32.const 1110) (i32.const 13) (i32.const 1100) (i32.const 6)
                               (i32.const 1200) (i32.const 25) (i32.const -1)))
    (call $report (call $local (i32.const 403) (i32.const -16) (i32.const 13) (i32.const 1100) (i32.const 6)
                               (i32.const 1200) (i32.const 25) (i32.const -1)))
    ;; Continue: the host must still stop the request
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (call $report (i32.const 200)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $report (i32.const 100))
    (drop (call $add (i32.const 2) (i32.const 1300) (i32.const 6) (i32.const 1310) (i32.const 1)))
    (i32.const 0))
"#;

#[test]
fn a_local_response_stops_the_request_and_passes_the_response_callbacks() {
    let wasm = guest("0_2_1", LOCAL, LOCAL_BODY);
    let (out, statuses, _) = run_one(&wasm, "", &exchange("POST", "/admin", &[], b"payload"));
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(
        statuses,
        vec![0, 6, 100],
        "no request body callback; response headers seen"
    );
    assert!(out.upstream_request.is_none());
    let r = &out.client_response;
    assert_eq!(r.status, 403);
    assert_eq!(r.body, b"denied");
    assert_eq!(header(&r.headers, "x-why"), Some("policy"));
    assert_eq!(header(&r.headers, "content-type"), Some("text/plain"));
    assert_eq!(header(&r.headers, "x-seen"), Some("1"));
}

#[test]
fn replay_reports_a_local_answer() {
    let wasm = guest("0_2_1", LOCAL, LOCAL_BODY);
    let report = Replay::module("deny.wasm", wasm)
        .traffic(Traffic {
            exchanges: vec![exchange("GET", "/admin", &[], b"")],
            ..Traffic::default()
        })
        .run()
        .unwrap();
    let e = &report.exchanges[0];
    assert_eq!(e.verdict, Verdict::AnsweredLocally { status: 403 });
    assert!(e.upstream_request.is_none());
    assert!(
        e.changes
            .iter()
            .any(|c| c.contains("answered locally with status 403 (policy_denied)")),
        "{:?}",
        e.changes
    );
    assert_eq!(report.summary().answered_locally, 1);
}

const PAUSE: &str = r#"
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
"#;

fn pause_body(resume: bool) -> String {
    format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $report (call $continue (i32.const 7)))
             {}
             (i32.const 1))"#,
        if resume {
            "(call $report (call $continue (i32.const 0)))"
        } else {
            ""
        }
    )
}

#[test]
fn pausing_without_resuming_stalls_the_request() {
    let wasm = guest("0_2_1", PAUSE, &pause_body(false));
    let report = Replay::module("pause.wasm", wasm)
        .traffic(Traffic {
            exchanges: vec![exchange("GET", "/", &[], b"")],
            ..Traffic::default()
        })
        .run()
        .unwrap();
    let e = &report.exchanges[0];
    assert_eq!(e.verdict, Verdict::Modified);
    assert!(e.upstream_request.is_none());
    assert_eq!(e.client_response.status, 0);
    assert!(
        e.changes[0].contains("paused in proxy_on_request_headers and never resumed"),
        "{:?}",
        e.changes
    );
}

#[test]
fn pausing_and_resuming_lets_the_request_through() {
    let wasm = guest("0_2_1", PAUSE, &pause_body(true));
    let (out, statuses, _) = run_one(&wasm, "", &exchange("GET", "/", &[], b""));
    assert_eq!(statuses, vec![2, 0], "bad stream type, then resume");
    assert!(out.stalled_in.is_none());
    assert!(out.upstream_request.is_some());
    assert_eq!(out.client_response.status, 200);
}
