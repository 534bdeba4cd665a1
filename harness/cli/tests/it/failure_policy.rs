//! Failure policies as Envoy's `failure_policy`: FAIL_CLOSED (default),
//! FAIL_OPEN, FAIL_RELOAD with backoff.

use super::*;
use std::time::Duration;
use tollgate_replay::{FailurePolicy, Replay, ReplayBuilder, Report, Verdict};
use tollgate_traffic::Traffic;

/// Adds `x-seen: 1` to the request, then traps when the request has `x-crash`.
fn crasher() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "x-crash")
           (data (i32.const 1110) "x-seen")
           (data (i32.const 1120) "1")
           (func $explode (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $add (i32.const 0) (i32.const 1110) (i32.const 6) (i32.const 1120) (i32.const 1)))
             (if (i32.eqz (call $get_hv (i32.const 0) (i32.const 1100) (i32.const 7) (i32.const 512) (i32.const 516)))
               (then unreachable))
             (i32.const 0))"#,
    )
}

fn traffic(crash: &[bool]) -> Traffic {
    Traffic {
        exchanges: crash
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let h: &[(&str, &str)] = if c { &[("x-crash", "1")] } else { &[] };
                let mut e = exchange("GET", "/", h, b"");
                e.id = format!("entry {i}");
                e
            })
            .collect(),
        ..Traffic::default()
    }
}

fn run(b: ReplayBuilder, crash: &[bool]) -> Report {
    b.traffic(traffic(crash)).run().expect("replay runs")
}

fn seen(report: &Report, i: usize) -> bool {
    report.exchanges[i]
        .upstream_request
        .as_ref()
        .is_some_and(|r| header(&r.headers, "x-seen").is_some())
}

#[test]
fn fail_closed_is_the_default_and_answers_503_from_then_on() {
    let report = run(Replay::module("crash.wasm", crasher()), &[true, false]);
    let first = &report.exchanges[0];
    assert!(matches!(first.verdict, Verdict::Failed { .. }));
    assert_eq!(first.client_response.status, 503);
    assert!(first.upstream_request.is_none());
    assert!(
        first
            .changes
            .iter()
            .any(|c| c.contains("503 (wasm_fail_stream)")),
        "{:?}",
        first.changes
    );
    let second = &report.exchanges[1];
    assert_eq!(second.verdict, Verdict::AnsweredLocally { status: 503 });
    assert!(second.upstream_request.is_none());
    assert!(
        second.filters[0]
            .steps
            .iter()
            .any(|s| s.to_string().contains("VM failed earlier (FAIL_CLOSED)")),
        "{:?}",
        second.filters[0].steps
    );
}

#[test]
fn fail_open_skips_the_failed_filter() {
    let report = run(
        Replay::module("crash.wasm", crasher()).failure_policy(FailurePolicy::FailOpen),
        &[true, false],
    );
    let first = &report.exchanges[0];
    let msg = match &first.verdict {
        Verdict::Failed { message } => message.clone(),
        v => panic!("expected Failed, got {v:?}"),
    };
    assert!(msg.contains("explode"), "backtrace: {msg}");
    assert_eq!(first.client_response.status, 200, "the request went on");
    assert!(first.upstream_request.is_some());
    let second = &report.exchanges[1];
    assert_eq!(second.verdict, Verdict::Passed, "{:?}", second.changes);
    assert!(!seen(&report, 1), "the filter no longer runs");
}

#[test]
fn fail_reload_answers_503_during_the_backoff_then_reloads() {
    let report = run(
        Replay::module("crash.wasm", crasher())
            .failure_policy(FailurePolicy::FailReload)
            .reload_backoff(Duration::from_millis(2)),
        &[true, false, false],
    );
    assert!(matches!(
        report.exchanges[0].verdict,
        Verdict::Failed { .. }
    ));
    assert_eq!(
        report.exchanges[1].verdict,
        Verdict::AnsweredLocally { status: 503 },
        "1 ms after the failure: still backing off"
    );
    assert_eq!(report.exchanges[2].verdict, Verdict::Modified);
    assert!(seen(&report, 2), "a fresh VM runs the filter again");
}

#[test]
fn fail_reload_defaults_to_envoys_one_second_backoff() {
    let report = run(
        Replay::module("crash.wasm", crasher()).failure_policy(FailurePolicy::FailReload),
        &[true, false, false],
    );
    for e in &report.exchanges[1..] {
        assert_eq!(e.verdict, Verdict::AnsweredLocally { status: 503 });
    }
}

#[test]
fn a_trap_in_the_response_path_replaces_the_response_with_503() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) unreachable)"#,
    );
    let report = run(Replay::module("resp.wasm", wasm), &[false]);
    let e = &report.exchanges[0];
    assert!(matches!(e.verdict, Verdict::Failed { .. }));
    assert!(e.upstream_request.is_some());
    assert_eq!(e.client_response.status, 503);
}

#[test]
fn in_a_chain_only_the_failed_filter_is_affected() {
    let report = run(
        Replay::module("crash.wasm", crasher())
            .failure_policy(FailurePolicy::FailOpen)
            .module("noop.wasm", guest("0_2_1", "", "")),
        &[true],
    );
    let e = &report.exchanges[0];
    match &e.verdict {
        Verdict::Failed { message } => assert!(message.starts_with("crash.wasm: "), "{message}"),
        v => panic!("expected Failed, got {v:?}"),
    }
    assert_eq!(e.client_response.status, 200);
    assert!(
        e.filters[0]
            .steps
            .iter()
            .any(|s| s.to_string().contains("trapped (FAIL_OPEN)")),
        "{:?}",
        e.filters[0].steps
    );
}

#[test]
fn policies_parse_from_envoy_names() {
    assert_eq!("FAIL_OPEN".parse(), Ok(FailurePolicy::FailOpen));
    assert_eq!("fail-reload".parse(), Ok(FailurePolicy::FailReload));
    assert_eq!("UNSPECIFIED".parse(), Ok(FailurePolicy::FailClosed));
    assert!("sometimes".parse::<FailurePolicy>().is_err());
}
