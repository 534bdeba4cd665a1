//! Declarative suites: matchers pass and fail as they should, inverted
//! matchers, local replies, logs, metrics, plugin start, JUnit, bad input.

use super::*;
use tollgate_replay::suite::{Suite, SuiteError, SuiteReport};

/// A filter that logs the request path, counts requests in `requests`,
/// adds `x-filtered: yes` to the request, and answers 403 `denied` with a
/// body when the request has `x-deny`. The configuration must not be `bad`.
fn filter_wasm() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))"#,
        r#"(data (i32.const 1100) "x-deny")
           (data (i32.const 1110) "x-filtered")
           (data (i32.const 1130) "yes")
           (data (i32.const 1140) "denied")
           (data (i32.const 1150) "go away")
           (data (i32.const 1160) ":path")
           (data (i32.const 1170) "requests")
           (data (i32.const 1180) "started")
           (func (export "proxy_on_configure") (param i32 i32) (result i32)
             (drop (call $log (i32.const 2) (i32.const 1180) (i32.const 7)))
             (drop (call $get_buf (i32.const 7) (i32.const 0) (i32.const 3) (i32.const 520) (i32.const 524)))
             ;; refuse the configuration "bad"
             (if (result i32) (i32.and (i32.eq (i32.load (i32.const 524)) (i32.const 3))
                   (i32.eq (i32.load (i32.load (i32.const 520))) (i32.const 0x00646162)))
               (then (i32.const 0))
               (else
                 (drop (call $define_metric (i32.const 0) (i32.const 1170) (i32.const 8) (i32.const 600)))
                 (i32.const 1))))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $inc (i32.load (i32.const 600)) (i64.const 1)))
             (drop (call $get_hv (i32.const 0) (i32.const 1160) (i32.const 5) (i32.const 512) (i32.const 516)))
             (drop (call $log (i32.const 2) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
             (drop (call $add (i32.const 0) (i32.const 1110) (i32.const 10) (i32.const 1130) (i32.const 3)))
             (if (i32.eqz (call $get_hv (i32.const 0) (i32.const 1100) (i32.const 6) (i32.const 512) (i32.const 516)))
               (then
                 (drop (call $local (i32.const 403) (i32.const 1140) (i32.const 6) (i32.const 1150) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const -1)))
                 (return (i32.const 1))))
             (i32.const 0))"#,
    )
}

/// Writes the filter and `yaml` (with `{wasm}` replaced) into a fresh
/// folder and loads the suite.
fn suite(tag: &str, yaml: &str) -> Result<Suite, SuiteError> {
    let dir = std::env::temp_dir().join(format!("tollgate-suite-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.wasm"), filter_wasm()).unwrap();
    std::fs::write(dir.join("expected.txt"), "go away").unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(&path, yaml).unwrap();
    Suite::load(&path)
}

fn run(tag: &str, yaml: &str) -> SuiteReport {
    suite(tag, yaml).expect("suite loads").run()
}

fn failures<'a>(r: &'a SuiteReport, name: &str) -> &'a [String] {
    &r.all()
        .find(|t| t.name == name)
        .expect("test exists")
        .failures
}

const HEADER: &str = "filters:\n  - path: f.wasm\n    config: ok\n";

#[test]
fn true_expectations_pass() {
    let r = run(
        "pass",
        &format!(
            r#"{HEADER}
start:
  logs:
    has: [started]
tests:
  - name: through
    request:
      path: /hello
      headers: {{accept: "*/*"}}
    expect:
      no_local_reply: true
      upstream:
        headers:
          has: [x-filtered]
          exact: [[x-filtered, "yes"], [":path", /hello]]
          regex: [[accept, "^\\*/\\*$"]]
          no: [x-deny]
          not:
            exact: [[x-filtered, "no"]]
            has: [x-deny]
      client:
        status: 200
      logs:
        has: [{{level: info, message: "^/hello$"}}]
        no: [denied]
      metrics: {{requests: 1}}
  - name: denied
    request:
      headers: [[x-deny, "1"]]
    expect:
      upstream_reached: false
      local_reply: {{status: 403, details: "^denied$"}}
      client:
        status: 403
        body:
          exact: go away
          file: expected.txt
          regex: "^go"
          not:
            exact: come in
        headers:
          exact: [[content-type, text/plain]]
      steps:
        has: ["f.wasm: sent a local reply 403 \\(denied\\)"]
"#
        ),
    );
    assert_eq!(r.failed(), 0, "{}", r.text());
    assert_eq!(r.tests.len(), 2);
}

#[test]
fn false_expectations_fail_with_readable_messages() {
    let r = run(
        "fail",
        &format!(
            r#"{HEADER}
tests:
  - name: wrong
    request:
      headers: [[x-deny, "1"]]
    expect:
      no_local_reply: true
      upstream:
        headers:
          has: [x-filtered]
      client:
        status: 200
        body:
          exact: welcome
  - name: inverted
    expect:
      upstream:
        headers:
          not:
            has: [x-filtered]
      logs:
        no: ["^/$"]
      metrics: {{requests: 5, nope: 1}}
"#
        ),
    );
    let wrong = failures(&r, "wrong");
    assert!(
        wrong
            .iter()
            .any(|f| f.contains("expected no local reply; got 403")),
        "{wrong:?}"
    );
    assert!(
        wrong
            .iter()
            .any(|f| f.contains("never reached the upstream (a local reply 403 denied was sent)")),
        "{wrong:?}"
    );
    assert!(
        wrong
            .iter()
            .any(|f| f == "client status: expected 200, got 403")
    );
    assert!(
        wrong
            .iter()
            .any(|f| f.contains("client body: not as expected")
                && f.contains("expected: \"welcome\"")
                && f.contains("actual:   \"go away\"")),
        "{wrong:?}"
    );
    let inv = failures(&r, "inverted");
    assert!(
        inv.iter()
            .any(|f| f.starts_with("upstream headers: not.has x-filtered: present")),
        "{inv:?}"
    );
    assert!(inv.iter().any(|f| f.starts_with("logs: a line matches")));
    assert!(
        inv.iter()
            .any(|f| f == "metric requests: expected 5, got 1")
    );
    assert!(
        inv.iter()
            .any(|f| f.starts_with("metric nope: not defined"))
    );
    assert_eq!(r.failed(), 2);
    let junit = r.junit();
    assert!(junit.contains("failures=\"2\""), "{junit}");
    assert!(junit.contains("<testcase classname="), "{junit}");
    assert!(
        junit.contains("<failure message=\"upstream: the request never reached"),
        "{junit}"
    );
    assert!(junit.contains("expected: &quot;welcome&quot;"), "{junit}");
    assert!(r.text().contains("FAIL wrong"));
}

#[test]
fn plugin_start_expectations() {
    let refused = run(
        "start",
        "filters:\n  - path: f.wasm\n    config: bad\nstart:\n  error: rejected its plugin configuration\n",
    );
    assert_eq!(refused.failed(), 0, "{}", refused.text());
    let unexpected = run("start2", "filters:\n  - path: f.wasm\n    config: bad\n");
    assert_eq!(unexpected.failed(), 1);
    assert!(unexpected.start.failures[0].contains("the filters failed to start"));
}

#[test]
fn chunking_and_trailers_inputs_are_accepted() {
    let r = run(
        "chunks",
        &format!(
            r#"{HEADER}
tests:
  - name: chunked
    request:
      method: POST
      body: {{base64: aGVsbG8gd29ybGQ=}}
      chunks: 3
      trailers: {{x-sum: "1"}}
    response:
      body: {{text: fine}}
      chunk_size: 1
      trailers: [[grpc-status, "0"]]
    expect:
      upstream:
        body: {{exact: hello world}}
        trailers: {{exact: [[x-sum, "1"]]}}
      client:
        body: {{exact: fine}}
        trailers: {{exact: [[grpc-status, "0"]]}}
  - name: bad plan
    request:
      body: {{text: x}}
      chunks: 0
"#
        ),
    );
    assert!(failures(&r, "chunked").is_empty(), "{}", r.text());
    assert!(failures(&r, "bad plan")[0].contains("chunks and chunk_size must be > 0"));
}

#[test]
fn bad_suites_are_errors_naming_the_field() {
    let err = suite("bad1", "filters:\n  - path: f.wasm\n    confg: x\n")
        .err()
        .expect("error");
    let msg = err.to_string();
    assert!(msg.contains("unknown field `confg`"), "{msg}");
    assert!(msg.contains("suite.yaml"), "{msg}");
    let err = suite("bad2", "filters:\n  - path: missing.wasm\n")
        .err()
        .expect("error");
    assert!(err.to_string().contains("filters[0]"), "{err}");
    assert!(err.to_string().contains("missing.wasm"), "{err}");
    let err = suite(
        "bad3",
        "filters:\n  - path: f.wasm\n    failure_policy: sometimes\n",
    )
    .err()
    .expect("error");
    assert!(
        err.to_string().contains("filters[0].failure_policy"),
        "{err}"
    );
    let err = suite("bad4", "filters: []\n").err().expect("error");
    assert!(err.to_string().contains("`filters` is empty"), "{err}");
}

#[test]
fn a_benchmark_reports_runs() {
    let r = run(
        "bench",
        &format!("{HEADER}\ntests:\n  - name: timed\n    benchmark: true\n"),
    );
    let t = &r.tests[0];
    assert!(t.passed());
    assert_eq!(t.benchmark.map(|b| b.0), Some(200));
}

#[test]
fn callout_stubs_and_expectations() {
    let dir = std::env::temp_dir().join(format!("tollgate-suite-{}-grpc", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("g.wasm"), super::grpc::caller("authz")).unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(
        &path,
        r#"filters:
  - path: g.wasm
grpc_stubs:
  - cluster: authz
    message: {base64: CAE=}
tests:
  - name: answered
    expect:
      upstream_reached: true
      callouts:
        has: ["^g.wasm: grpc authz svc.Check/Check$"]
  - name: wrong
    expect:
      callouts:
        no: [grpc]
"#,
    )
    .unwrap();
    let r = Suite::load(&path).expect("loads").run();
    assert!(failures(&r, "answered").is_empty(), "{}", r.text());
    assert!(failures(&r, "wrong")[0].starts_with("callouts: a line matches"));
    // Without the stub the call is refused and the stream stays paused.
    std::fs::write(
        &path,
        "filters:\n  - path: g.wasm\ntests:\n  - name: refused\n    expect:\n      upstream_reached: false\n      callouts: {has: [grpc authz]}\n",
    )
    .unwrap();
    let r = Suite::load(&path).expect("loads").run();
    assert_eq!(r.failed(), 0, "{}", r.text());
}

#[test]
fn a_test_advances_the_clock_and_ticks_fire_and_bodies_follow_its_plan() {
    let dir = std::env::temp_dir().join(format!("tollgate-suite-{}-ticks", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Ticks every 200 ms, logging `tick`; logs each request body call as
    // `body <size> <end>` (sizes and ends below 10).
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
           (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "tick")
           (data (i32.const 1200) "body 0 0")
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $tick (i32.const 200))) (i32.const 1))
           (func (export "proxy_on_tick") (param i32)
             (drop (call $log (i32.const 2) (i32.const 1100) (i32.const 4))))
           (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
             (i32.store8 (i32.const 1205) (i32.add (i32.const 48) (local.get 1)))
             (i32.store8 (i32.const 1207) (i32.add (i32.const 48) (local.get 2)))
             (drop (call $log (i32.const 2) (i32.const 1200) (i32.const 8)))
             (i32.const 0))"#,
    );
    std::fs::write(dir.join("t.wasm"), wasm).unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(
        &path,
        r#"filters:
  - path: t.wasm
tests:
  - name: a second passes
    advance_ms: 1000
    expect: {logs: {has: ["^tick$"]}}
  - name: no time passes
    expect: {logs: {no: ["^tick$"]}}
  - name: http1 delivery by default
    request: {method: POST, body: {text: hello}}
    expect: {logs: {has: ["^body 5 0$", "^body 0 1$"]}}
  - name: one chunk
    request: {method: POST, body: {text: hello}, delivery: one-chunk}
    expect: {logs: {has: ["^body 5 1$"], no: ["^body 0 1$"]}}
  - name: exact sizes
    request: {method: POST, body: {text: hello}, chunk_sizes: [2, 3, 0]}
    expect: {logs: {has: ["^body 2 0$", "^body 3 0$", "^body 0 1$"]}}
"#,
    )
    .unwrap();
    let r = Suite::load(&path).expect("suite loads").run();
    for t in r.all() {
        assert!(t.failures.is_empty(), "{}", r.text());
    }
    std::fs::write(
        &path,
        r#"filters:
  - path: t.wasm
callout_answers: immediate
tests:
  - name: bad delivery
    request: {body: {text: x}, delivery: http9}
"#,
    )
    .unwrap();
    let r = Suite::load(&path).expect("suite loads").run();
    assert!(
        failures(&r, "bad delivery")[0]
            .contains("request.delivery: expected http1, http2 or one-chunk"),
        "{}",
        r.text()
    );
    std::fs::write(
        &path,
        "filters:\n  - path: t.wasm\ncallout_answers: sometimes\ntests: []\n",
    )
    .unwrap();
    assert!(
        Suite::load(&path).is_err(),
        "an unknown callout_answers is refused"
    );
}
