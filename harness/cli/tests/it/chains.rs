//! Filter chains: request in order, response in reverse, local replies and
//! pauses propagating as in Envoy's filter manager.

use super::*;
use tollgate_replay::{Replay, ReplayBuilder, Report, Verdict};
use tollgate_traffic::Traffic;

const IMPORTS: &str = r#"
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// A filter that appends `x-order: <tag>` to the request and `x-resp: <tag>`
/// to the response; `extra` runs in its request headers callback, which
/// returns `ret`.
fn tagger(tag: char, extra: &str, ret: u32) -> Vec<u8> {
    guest(
        "0_2_1",
        IMPORTS,
        &format!(
            r#"(data (i32.const 1100) "x-order")
               (data (i32.const 1110) "{tag}")
               (data (i32.const 1120) "x-resp")
               (data (i32.const 1130) "denied")
               (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 (drop (call $add (i32.const 0) (i32.const 1100) (i32.const 7) (i32.const 1110) (i32.const 1)))
                 {extra}
                 (i32.const {ret}))
               (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
                 (drop (call $add (i32.const 2) (i32.const 1120) (i32.const 6) (i32.const 1110) (i32.const 1)))
                 (i32.const 0))"#
        ),
    )
}

const DENY: &str = "(drop (call $local (i32.const 403) (i32.const 1130) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))";

fn one() -> Traffic {
    Traffic {
        exchanges: vec![exchange("GET", "/", &[], b"")],
        ..Traffic::default()
    }
}

fn values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn run(b: ReplayBuilder) -> Report {
    b.traffic(one()).run().expect("chain runs")
}

fn called(report: &Report, filter: usize, callback: &str) -> bool {
    report.exchanges[0].filters[filter]
        .steps
        .iter()
        .any(|s| s.to_string().starts_with(callback))
}

#[test]
fn the_request_goes_in_order_and_the_response_in_reverse() {
    let report = run(Replay::module("a.wasm", tagger('a', "", 0))
        .module("b.wasm", tagger('b', "", 0))
        .module("c.wasm", tagger('c', "", 0)));
    let e = &report.exchanges[0];
    assert_eq!(report.filters.len(), 3);
    assert_eq!(e.verdict, Verdict::Modified);
    let up = e.upstream_request.as_ref().expect("reached upstream");
    assert_eq!(values(&up.headers, "x-order"), ["a", "b", "c"]);
    assert_eq!(
        values(&e.client_response.headers, "x-resp"),
        ["c", "b", "a"]
    );
    let names: Vec<&str> = e.filters.iter().map(|f| f.filter.as_str()).collect();
    assert_eq!(names, ["a.wasm", "b.wasm", "c.wasm"]);
    assert!(
        e.filters[1]
            .steps
            .iter()
            .any(|s| s.to_string() == "request header x-order: changed \"a\" -> \"a\", \"b\""),
        "{:?}",
        e.filters[1].steps
    );
}

#[test]
fn a_local_reply_skips_later_filters_and_goes_back_through_earlier_ones() {
    let report = run(Replay::module("a.wasm", tagger('a', "", 0))
        .module("b.wasm", tagger('b', DENY, 1))
        .module("c.wasm", tagger('c', "", 0)));
    let e = &report.exchanges[0];
    assert_eq!(e.verdict, Verdict::AnsweredLocally { status: 403 });
    assert!(e.upstream_request.is_none());
    assert_eq!(e.client_response.status, 403);
    // b's and a's response callbacks ran on the local reply, in that order; c never saw it.
    assert_eq!(values(&e.client_response.headers, "x-resp"), ["b", "a"]);
    assert!(called(&report, 1, "proxy_on_response_headers"));
    assert!(!called(&report, 2, "proxy_on_request_headers"));
    assert!(!called(&report, 2, "proxy_on_response_headers"));
    assert!(
        e.filters[2].steps.iter().any(|s| s
            .to_string()
            .contains("context created for the access log only")),
        "{:?}",
        e.filters[2].steps
    );
    assert!(
        e.filters[1]
            .steps
            .iter()
            .any(|s| s.to_string().contains("sent a local reply 403 (denied)")),
        "{:?}",
        e.filters[1].steps
    );
}

#[test]
fn a_pause_without_resume_holds_the_chain_at_that_filter() {
    let report =
        run(Replay::module("a.wasm", tagger('a', "", 1)).module("b.wasm", tagger('b', "", 0)));
    let e = &report.exchanges[0];
    assert!(e.upstream_request.is_none());
    assert_eq!(e.client_response.status, 0);
    assert!(!called(&report, 1, "proxy_on_request_headers"));
    assert!(
        e.changes
            .iter()
            .any(|c| c.contains("paused in proxy_on_request_headers")),
        "{:?}",
        e.changes
    );
}

#[test]
fn a_pause_resumed_in_the_callback_lets_later_filters_run() {
    let resume = r#"(drop (call $continue (i32.const 0)))"#;
    let imports = format!(
        "{IMPORTS}(import \"env\" \"proxy_continue_stream\" (func $continue (param i32) (result i32)))"
    );
    let a = guest(
        "0_2_1",
        &imports,
        &format!(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 {resume} (i32.const 1))"#
        ),
    );
    let report = run(Replay::module("a.wasm", a).module("b.wasm", tagger('b', "", 0)));
    let e = &report.exchanges[0];
    let up = e.upstream_request.as_ref().expect("resumed");
    assert_eq!(values(&up.headers, "x-order"), ["b"]);
    assert!(called(&report, 1, "proxy_on_request_headers"));
}

#[test]
fn a_single_filter_replay_reports_one_filter() {
    let report = run(Replay::module("a.wasm", tagger('a', "", 0)));
    assert_eq!(report.filters.len(), 1);
    assert_eq!(report.filter.path, std::path::PathBuf::from("a.wasm"));
    assert_eq!(report.exchanges[0].filters.len(), 1);
}

/// Records the global order of its `on_log` and `on_done` calls through a
/// shared-data counter (`100 + seq` for log, `200 + seq` for done); denies
/// with 403 from its request headers callback when `deny`.
fn recorder(deny: bool) -> Vec<u8> {
    let imports = format!(
        "{IMPORTS}
  (import \"env\" \"proxy_get_shared_data\" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import \"env\" \"proxy_set_shared_data\" (func $set (param i32 i32 i32 i32 i32) (result i32)))"
    );
    guest(
        "0_2_1",
        &imports,
        &format!(
            r#"(data (i32.const 1100) "seq")
               (data (i32.const 1130) "denied")
               (func $next (result i32) (local $v i32)
                 (if (i32.eqz (call $get (i32.const 1100) (i32.const 3) (i32.const 512) (i32.const 516) (i32.const 520)))
                   (then (local.set $v (i32.load (i32.load (i32.const 512))))))
                 (i32.store (i32.const 600) (i32.add (local.get $v) (i32.const 1)))
                 (drop (call $set (i32.const 1100) (i32.const 3) (i32.const 600) (i32.const 4) (i32.const 0)))
                 (local.get $v))
               (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 {}
                 (i32.const 0))
               (func (export "proxy_on_log") (param i32)
                 (call $report (i32.add (i32.const 100) (call $next))))
               (func (export "proxy_on_done") (param i32) (result i32)
                 (call $report (i32.add (i32.const 200) (call $next)))
                 (i32.const 1))"#,
            if deny { DENY } else { "" }
        ),
    )
}

#[test]
fn the_stream_ends_with_every_log_then_every_done_as_in_envoy() {
    let (mut chain, _) = Replay::module("a.wasm", recorder(false))
        .module("b.wasm", recorder(true))
        .module("c.wasm", recorder(false))
        .start()
        .expect("starts");
    let input = tollgate_replay::StreamInput::from_exchange(&exchange("GET", "/", &[], b""));
    let (out, _, _) = chain.exchange(&input);
    assert_eq!(out.local_response.map(|l| l.status), Some(403));
    let seen: Vec<Vec<u64>> = (0..3)
        .map(|i| statuses(chain.vm(i).expect("alive")))
        .collect();
    // Envoy 1.40 (-l trace): log a, log b, (create c) log c, then done a, b, c.
    assert_eq!(seen, [vec![100, 203], vec![101, 204], vec![102, 205]]);
}
