//! Header maps: validation statuses, edits reaching the upstream and the
//! client, the pairs format, availability per context and phase.

use super::*;
use tollgate_replay::{Replay, Verdict};
use tollgate_traffic::Traffic;

const IMPORTS: &str = r#"
  (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $get_size (param i32 i32) (result i32)))
"#;

const BODY: &str = r#"
  (data (i32.const 1100) "x-a")
  (data (i32.const 1110) "x-z")
  (data (i32.const 1120) "x-added")
  (data (i32.const 1130) "yes")
  (data (i32.const 1140) "x-gone")
  (data (i32.const 1150) "2")
  (data (i32.const 1160) "x-copy")
  (data (i32.const 1170) "x-resp")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    ;; the root context has no request headers
    (call $report (call $get_hv (i32.const 0) (i32.const 1100) (i32.const 3) (i32.const 512) (i32.const 516)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $report (call $get_hv (i32.const 0) (i32.const -16) (i32.const 4) (i32.const 512) (i32.const 516)))
    (call $report (call $get_hv (i32.const 9) (i32.const 1100) (i32.const 3) (i32.const 512) (i32.const 516)))
    (call $report (call $get_hv (i32.const 0) (i32.const 1110) (i32.const 3) (i32.const 512) (i32.const 516)))
    (call $report (call $get_hv (i32.const 2) (i32.const 1100) (i32.const 3) (i32.const 512) (i32.const 516)))
    (call $report (call $get_hv (i32.const 0) (i32.const 1100) (i32.const 3) (i32.const 512) (i32.const 516)))
    (call $report (call $add (i32.const 0) (i32.const 1160) (i32.const 6) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
    (call $report (call $add (i32.const 0) (i32.const 1120) (i32.const 7) (i32.const 1130) (i32.const 3)))
    (call $report (call $replace (i32.const 0) (i32.const 1100) (i32.const 3) (i32.const 1150) (i32.const 1)))
    (call $report (call $remove (i32.const 0) (i32.const 1140) (i32.const 6)))
    (call $report (call $add (i32.const 0) (i32.const 1120) (i32.const 7) (i32.const -16) (i32.const 3)))
    (call $report (call $get_pairs (i32.const 0) (i32.const 512) (i32.const 516)))
    (call $report (call $set_pairs (i32.const 0) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
    (call $report (call $set_pairs (i32.const 0) (i32.const 1100) (i32.const 3)))
    (call $report (call $get_size (i32.const 0) (i32.const 520)))
    (call $report (i32.load (i32.const 520)))
    (call $report (call $get_pairs (i32.const 0) (i32.const -4) (i32.const 516)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $report (call $add (i32.const 2) (i32.const 1170) (i32.const 6) (i32.const 1130) (i32.const 3)))
    (i32.const 0))
"#;

fn request() -> Exchange {
    exchange("GET", "/p", &[("x-a", "1"), ("x-gone", "bye")], b"")
}

#[test]
fn header_calls_answer_envoy_statuses_and_edit_the_request() {
    let wasm = guest("0_2_1", IMPORTS, BODY);
    let (out, statuses, _) = run_one(&wasm, "", &request());
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(
        statuses,
        vec![
            2, // root context: no stream map
            6, // key pointer out of bounds
            2, // map type 9
            1, // missing header
            2, // response headers do not exist yet
            0, 0, 0, 0, 0, // get, add copy, add, replace, remove
            6, // value pointer out of bounds
            0, 0, // get pairs, set the same pairs back
            2, // malformed pairs
            0, 70, // byte size of the map
            6,  // pairs written to an out-of-bounds pointer
            0,  // response header added
        ]
    );
    let up = out.upstream_request.expect("request went upstream");
    assert_eq!(
        up.headers,
        vec![
            ("x-a".to_string(), "2".to_string()),
            ("x-copy".into(), "1".into()),
            ("x-added".into(), "yes".into()),
        ]
    );
    assert_eq!((up.method.as_str(), up.path.as_str()), ("GET", "/p"));
    assert_eq!(header(&out.client_response.headers, "x-resp"), Some("yes"));
    assert_eq!(
        header(&out.client_response.headers, "server"),
        Some("upstream")
    );
}

#[test]
fn replay_lists_each_header_change() {
    let wasm = guest("0_2_1", IMPORTS, BODY);
    let report = Replay::module("headers.wasm", wasm)
        .traffic(Traffic {
            exchanges: vec![request()],
            ..Traffic::default()
        })
        .run()
        .unwrap();
    let e = &report.exchanges[0];
    assert_eq!(e.verdict, Verdict::Modified);
    assert_eq!(
        e.changes,
        vec![
            "request header x-a: changed \"1\" -> \"2\"",
            "request header x-gone: removed (was \"bye\")",
            "request header x-copy: added \"1\"",
            "request header x-added: added \"yes\"",
            "response header x-resp: added \"yes\"",
        ]
    );
}
