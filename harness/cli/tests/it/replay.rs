//! The replay API end to end: pass-through, reports, progress, files.

use super::*;
use std::cell::RefCell;
use std::rc::Rc;
use tollgate_host::vm::VmError;
use tollgate_replay::{Replay, ReplayError, Verdict};
use tollgate_traffic::Traffic;

fn traffic(n: usize) -> Traffic {
    Traffic {
        exchanges: (0..n)
            .map(|i| {
                let mut e = exchange("GET", &format!("/item/{i}"), &[("accept", "*/*")], b"");
                e.id = format!("entry {i}");
                e
            })
            .collect(),
        ..Traffic::default()
    }
}

#[test]
fn a_pass_through_filter_passes_everything_unchanged() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))"#,
    );
    let t = traffic(3);
    let progress = Rc::new(RefCell::new(Vec::new()));
    let seen = progress.clone();
    let report = Replay::module("noop.wasm", wasm)
        .traffic(t.clone())
        .on_progress(move |done, total| seen.borrow_mut().push((done, total)))
        .run()
        .unwrap();
    assert_eq!(*progress.borrow(), vec![(1, 3), (2, 3), (3, 3)]);
    assert_eq!(report.filter.abi, "0.2.1");
    for (e, ex) in report.exchanges.iter().zip(&t.exchanges) {
        assert_eq!(e.id, ex.id);
        assert_eq!(e.verdict, Verdict::Passed, "{:?}", e.changes);
        assert!(e.changes.is_empty());
        assert_eq!(e.upstream_request.as_ref(), Some(&ex.request));
        assert_eq!(Some(&e.client_response), ex.response.as_ref());
    }
    let s = report.summary();
    assert_eq!((s.requests, s.passed, s.modified, s.failed), (3, 3, 0, 0));
    assert!(s.p50 <= s.p99);
}

#[test]
fn without_a_recorded_response_the_upstream_answers_200() {
    let wasm = guest("0_2_1", "", "");
    let mut t = traffic(1);
    t.exchanges[0].response = None;
    let report = Replay::module("noop.wasm", wasm).traffic(t).run().unwrap();
    let e = &report.exchanges[0];
    assert_eq!(e.verdict, Verdict::Passed);
    assert_eq!(e.client_response.status, 200);
    assert!(e.client_response.body.is_empty());
}

#[test]
fn a_filter_file_is_loaded_from_its_path() {
    let wasm = guest("0_2_0", "", "");
    let dir = std::env::temp_dir().join(format!("tollgate-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f.wasm");
    std::fs::write(&path, &wasm).unwrap();
    let report = Replay::filter(&path).traffic(traffic(1)).run().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(report.filter.path, path);
    assert_eq!(report.filter.wasm_bytes, wasm.len() as u64);
    assert_eq!(report.filter.abi, "0.2.0");
}

#[test]
fn a_refused_configuration_is_an_error_naming_the_filter() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let err = Replay::module("strict.wasm", wasm)
        .config("{}")
        .traffic(traffic(1))
        .run()
        .expect_err("refused");
    assert!(
        matches!(err, ReplayError::Start(VmError::ConfigureRefused { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("strict.wasm"), "{err}");
}

#[test]
fn a_missing_filter_file_is_a_load_error() {
    let err = Replay::filter("/no/such/filter.wasm")
        .traffic(traffic(1))
        .run()
        .expect_err("error");
    assert!(matches!(err, ReplayError::Load(_)), "{err:?}");
    assert!(err.to_string().contains("/no/such/filter.wasm"));
}

#[test]
fn ticks_fire_on_virtual_time() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))"#,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $tick (i32.const 2))) (i32.const 1))
           (func (export "proxy_on_tick") (param i32) (call $report (i32.const 1)))"#,
    );
    let plugin = Plugin::from_bytes("tick.wasm", &wasm).unwrap();
    let mut vm = Vm::start(&plugin, VmSettings::default()).unwrap();
    vm.advance_clock(std::time::Duration::from_millis(7))
        .unwrap();
    assert_eq!(statuses(&vm).len(), 3, "ticks at 2, 4 and 6 ms");
}

/// A guest whose tick period is 200 ms and which reports 1 per tick.
fn tick_guest() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
           (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "tick")
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $tick (i32.const 200))) (i32.const 1))
           (func (export "proxy_on_tick") (param i32)
             (drop (call $log (i32.const 2) (i32.const 1100) (i32.const 4)))
             (call $report (i32.const 1)))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $report (i32.const 2)) (i32.const 0))"#,
    )
}

#[test]
fn ticks_fire_between_exchanges_by_the_recorded_timing() {
    let at = |id: &str, started: Option<&str>| {
        let mut e = crate::exchange("GET", "/", &[], b"");
        e.id = id.into();
        e.details.timing.started = started.map(str::to_string);
        e
    };
    let recorded = Traffic {
        source: None,
        exchanges: vec![
            at("a", Some("2026-11-28T03:48:49.000Z")),
            // 1.05 s later: ticks at 200, 400, 600, 800 and 1000 ms.
            at("b", Some("2026-11-28T03:48:50.050Z")),
            // No recorded start: 1 ms later, no tick.
            at("c", None),
        ],
        warnings: Vec::new(),
    };
    let (mut chain, traffic) = Replay::module("tick.wasm", tick_guest())
        .traffic(recorded)
        .start()
        .unwrap();
    let mut seen = Vec::new();
    for (i, e) in traffic.exchanges.iter().enumerate() {
        if let Some(gap) = i
            .checked_sub(1)
            .and_then(|p| tollgate_replay::recorded_gap(&traffic.exchanges[p], e))
        {
            chain.advance(gap);
        }
        chain.exchange(&chain.input_for(e));
        seen.push(statuses(chain.vm(0).unwrap()).len());
    }
    // The metric keeps every report: 1 (a), then 5 ticks and 1 (b), then 1 (c).
    assert_eq!(seen, [1, 7, 8]);
    // `Replay::run` does the same.
    let report = Replay::module("tick.wasm", tick_guest())
        .traffic(Traffic {
            source: None,
            exchanges: traffic.exchanges.clone(),
            warnings: Vec::new(),
        })
        .run()
        .unwrap();
    let ticks: Vec<usize> = report
        .exchanges
        .iter()
        .map(|x| x.logs.iter().filter(|l| l.message == "tick").count())
        .collect();
    assert_eq!(
        ticks,
        [0, 5, 0],
        "the ticks are the logs of the exchange they precede"
    );
}
