//! Buffers: configuration visibility, get/set rules, body edits.

use super::*;

const IMPORTS: &str = r#"
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $status (param i32 i32 i32) (result i32)))
"#;

const BODY: &str = r#"
  (data (i32.const 1100) "HOWDY")
  (data (i32.const 1110) "!")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $report (call $get (i32.const 7) (i32.const 0) (i32.const 100) (i32.const 512) (i32.const 516)))
    (call $report (i32.load (i32.const 516)))
    (call $report (call $set (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 1100) (i32.const 5)))
    ;; accept only a configuration starting with '{'
    (i32.eq (i32.load8_u (i32.load (i32.const 512))) (i32.const 123)))
  (func (export "proxy_on_request_body") (param i32) (param $size i32) (param i32) (result i32)
    (call $report (local.get $size))
    (call $report (call $get (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 512) (i32.const 516)))
    (call $report (call $set (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 1100) (i32.const 5)))
    (call $report (call $set (i32.const 0) (i32.const 3) (i32.const 1) (i32.const 1110) (i32.const 1)))
    (call $report (call $set (i32.const 0) (i32.const 1000) (i32.const 0) (i32.const 1110) (i32.const 1)))
    (call $report (call $set (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -16) (i32.const 4)))
    (call $report (call $get (i32.const 99) (i32.const 0) (i32.const 1) (i32.const 512) (i32.const 516)))
    (call $report (call $get (i32.const 0) (i32.const 6) (i32.const 5) (i32.const 512) (i32.const 516)))
    (call $report (i32.load (i32.const 516)))
    (call $report (i32.load8_u (i32.load (i32.const 512))))
    (call $report (call $get (i32.const 1) (i32.const 0) (i32.const 5) (i32.const 512) (i32.const 516)))
    (call $report (call $status (i32.const 0) (i32.const 520) (i32.const 524)))
    (call $report (i32.load (i32.const 520)))
    (call $report (call $get (i32.const 0) (i32.const 50) (i32.const 5) (i32.const 512) (i32.const 516)))
    (call $report (i32.load (i32.const 516)))
    (i32.const 0))
"#;

#[test]
fn body_and_configuration_buffers_follow_envoy_rules() {
    let wasm = guest("0_2_1", IMPORTS, BODY);
    let (out, statuses, _) = run_one(
        &wasm,
        "{\"a\":1}",
        &exchange("POST", "/", &[], b"hello world"),
    );
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(
        statuses,
        vec![
            0,
            7,  // plugin configuration readable in on_configure, 7 bytes
            2,  // and read-only
            11, // body size
            1,  // configuration not available outside on_configure
            0,  // start 0: replace the first 5 bytes
            2,  // start inside the body: BadArgument
            0,  // start past the end: append
            6,  // data pointer out of bounds
            2,  // buffer type 99
            0,
            5,
            u64::from(b'w'), // read "world" (after the edits: "HOWDY world!")
            0, // response body before the response: Ok, empty (Envoy 1.40; trace_diff's phase guest)
            0,
            12, // status: 12 bytes
            0,
            0, // read past the end: nothing
        ]
    );
    let up = out.upstream_request.unwrap();
    assert_eq!(up.body, b"HOWDY world!");
}

#[test]
fn a_configuration_the_filter_rejects_stops_it_from_starting() {
    let wasm = guest("0_2_1", IMPORTS, BODY);
    let plugin = Plugin::from_bytes("cfg.wasm", &wasm).unwrap();
    let settings = VmSettings {
        plugin_config: b"not json".to_vec(),
        ..VmSettings::default()
    };
    let err = Vm::start(&plugin, settings).err().expect("refused");
    // The refusal names the configuration by its size, never by its values
    // (they may be secrets; ARCHITECTURE.md).
    let text = err.to_string();
    assert!(text.contains("configuration of 8 bytes"), "{err}");
    assert!(!text.contains("not json"), "{err}");
}

/// A guest that rewrites the first five bytes of each body in place (the
/// length stays): the driver compares a body only once the guest wrote
/// one, and must still see this change.
const SAME_LENGTH: &str = r#"
  (data (i32.const 1100) "HOWDY")
  (func (export "proxy_on_request_body") (param i32) (param $size i32) (param i32) (result i32)
    (if (local.get $size) (then
      (drop (call $set (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 1100) (i32.const 5)))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32) (param $size i32) (param i32) (result i32)
    (if (local.get $size) (then
      (drop (call $set (i32.const 1) (i32.const 0) (i32.const 2) (i32.const 1100) (i32.const 2)))))
    (i32.const 0))
"#;

#[test]
fn a_body_rewritten_to_the_same_length_is_a_change() {
    use tollgate_host::stream::{BodyDelivery, FailurePolicy, Lane, Prepared, Spare};
    use tollgate_host::verdict::Verdict;
    let wasm = guest("0_2_1", IMPORTS, SAME_LENGTH);
    let plugin = Plugin::from_bytes("same.wasm", &wasm).unwrap();
    let mut vm = Vm::start(&plugin, VmSettings::default()).unwrap();
    let recorded = exchange("POST", "/", &[], b"hello world");
    // As `tollgate replay` drives it: the exchange handed over, the
    // recording given back where it differs from the outcome.
    let mut ex = recorded.clone();
    let mut spare = Spare::default();
    let input = Prepared::from_recording_owned(&mut ex, BodyDelivery::Envoy, &mut spare);
    let mut lanes = [Lane {
        vm: Some(&mut vm),
        name: "same.wasm".into(),
        policy: FailurePolicy::FailClosed,
    }];
    let (out, back) = stream::run_owned(&mut lanes, input, &mut spare);
    assert_eq!(out.upstream_request.unwrap().body, b"HOWDY world");
    assert_eq!(out.client_response.body, b"HO");
    assert_eq!(back.request.unwrap().body, b"hello world");
    assert_eq!(back.response.unwrap().body, b"ok");
    let steps: Vec<String> = out.steps[0].steps.iter().map(ToString::to_string).collect();
    for dir in ["request", "response"] {
        let n = if dir == "request" { 11 } else { 2 };
        let want = format!("{dir} body: changed ({n} bytes -> {n} bytes)");
        assert!(steps.contains(&want), "{want} in {steps:?}");
    }
    // The verdict-only driver judges it modified too.
    let prepared = Prepared::from_recording_with(&recorded, BodyDelivery::Envoy);
    let v = stream::run_chain_verdict(&mut lanes, &prepared);
    assert_eq!(v.verdict, Verdict::Modified);
}
