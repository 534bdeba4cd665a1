//! Suite inputs and expectations for callouts and the filter's environment:
//! `clusters:` (delays, failures, timeouts) with `callout_requests`,
//! `properties:`, `clock:`, `start.metrics`, `end.logs`; each with a
//! variant that must fail, and bad input naming the field.

use super::*;
use tollgate_replay::suite::{Suite, SuiteError, SuiteReport};

/// Copies a property to a request header (`x-src` from `source.address`,
/// `x-route` from `xds.route_name`), adds `x-now` (the clock, in seconds)
/// and `x-req-time` (`request.time`, in seconds); logs `starting` and sets
/// the gauge `configured` to 7 at configure time, `headers phase` in the
/// request headers, `log phase` in `proxy_on_log`, `done phase` in
/// `proxy_on_done`.
fn env_wasm() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))"#,
        r#"(data (i32.const 1100) "source\00address")
           (data (i32.const 1120) "xds\00route_name")
           (data (i32.const 1140) "request\00time")
           (data (i32.const 1160) "x-src")
           (data (i32.const 1170) "x-route")
           (data (i32.const 1180) "x-now")
           (data (i32.const 1190) "x-req-time")
           (data (i32.const 1210) "configured")
           (data (i32.const 1230) "log phase")
           (data (i32.const 1240) "done phase")
           (data (i32.const 1260) "headers phase")
           (data (i32.const 1280) "starting")
           ;; The decimal digits of $v, ending at 1640; returns where they start.
           (func $itoa (param $v i64) (result i32) (local $p i32)
             (local.set $p (i32.const 1640))
             (loop $l
               (local.set $p (i32.sub (local.get $p) (i32.const 1)))
               (i64.store8 (local.get $p) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
               (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
               (br_if $l (i64.ne (local.get $v) (i64.const 0))))
             (local.get $p))
           (func $add_num (param $name i32) (param $len i32) (param $v i64) (local $p i32)
             (local.set $p (call $itoa (local.get $v)))
             (drop (call $add (i32.const 0) (local.get $name) (local.get $len) (local.get $p)
               (i32.sub (i32.const 1640) (local.get $p)))))
           (func $copy_prop (param $path i32) (param $plen i32) (param $name i32) (param $len i32)
             (if (i32.eqz (call $prop (local.get $path) (local.get $plen) (i32.const 900) (i32.const 904)))
               (then (drop (call $add (i32.const 0) (local.get $name) (local.get $len)
                 (i32.load (i32.const 900)) (i32.load (i32.const 904)))))))
           (func (export "proxy_on_configure") (param i32 i32) (result i32)
             (drop (call $log (i32.const 2) (i32.const 1280) (i32.const 8)))
             (drop (call $define_metric (i32.const 1) (i32.const 1210) (i32.const 10) (i32.const 604)))
             (drop (call $record_metric (i32.load (i32.const 604)) (i64.const 7)))
             (i32.const 1))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $log (i32.const 2) (i32.const 1260) (i32.const 13)))
             (call $copy_prop (i32.const 1100) (i32.const 14) (i32.const 1160) (i32.const 5))
             (call $copy_prop (i32.const 1120) (i32.const 14) (i32.const 1170) (i32.const 7))
             (drop (call $now (i32.const 944)))
             (call $add_num (i32.const 1180) (i32.const 5)
               (i64.div_u (i64.load (i32.const 944)) (i64.const 1000000000)))
             (if (i32.eqz (call $prop (i32.const 1140) (i32.const 12) (i32.const 900) (i32.const 904)))
               (then (call $add_num (i32.const 1190) (i32.const 10)
                 (i64.div_u (i64.load (i32.load (i32.const 900))) (i64.const 1000000000)))))
             (i32.const 0))
           (func (export "proxy_on_log") (param i32)
             (drop (call $log (i32.const 2) (i32.const 1230) (i32.const 9))))
           (func (export "proxy_on_done") (param i32) (result i32)
             (drop (call $log (i32.const 2) (i32.const 1240) (i32.const 10)))
             (i32.const 1))"#,
    )
}

/// Writes the guest and `yaml` into a fresh folder and loads the suite.
fn load(tag: &str, yaml: &str) -> Result<Suite, SuiteError> {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-suite-inputs-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("env.wasm"), env_wasm()).unwrap();
    std::fs::write(
        dir.join("grpc.wasm"),
        super::callouts::grpc_guest("checker"),
    )
    .unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(&path, yaml).unwrap();
    Suite::load(&path)
}

fn run(tag: &str, yaml: &str) -> SuiteReport {
    match load(tag, yaml) {
        Ok(s) => s.run(),
        Err(e) => panic!("suite loads: {e}"),
    }
}

fn failures<'a>(r: &'a SuiteReport, name: &str) -> &'a [String] {
    &r.all()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no test {name}"))
        .failures
}

/// Every test named `ok: ...` passed; every `fail: ...` failed.
fn assert_outcomes(r: &SuiteReport) {
    for t in r.all() {
        if t.name.starts_with("fail:") {
            assert!(!t.passed(), "{} should fail:\n{}", t.name, r.text());
        } else {
            assert!(t.passed(), "{} should pass:\n{}", t.name, r.text());
        }
    }
}

#[test]
fn properties_and_the_clock_reach_the_guest() {
    let r = run(
        "props",
        r#"
filters: [{path: env.wasm}]
clock: 2026-01-01T00:00:00Z
properties:
  source.address: 10.1.2.3:4567
  xds.route_name: checkout
tests:
  - name: "ok: suite properties and clock"
    expect:
      upstream:
        headers:
          exact: [[x-src, "10.1.2.3:4567"], [x-route, checkout], [x-now, "1767225600"], [x-req-time, "1767225600"]]
  - name: "ok: a test's own properties and clock (epoch ns)"
    clock: 1000000000000
    properties:
      source.address: 192.168.0.1:1
      request.time: {timestamp: 2030-01-01T00:00:00Z}
    expect:
      upstream:
        headers:
          exact: [[x-src, "192.168.0.1:1"], [x-route, checkout], [x-now, "1000"], [x-req-time, "1893456000"]]
  - name: "fail: the wrong address"
    expect:
      upstream:
        headers:
          exact: [[x-src, "10.9.9.9:1"]]
"#,
    );
    assert_outcomes(&r);
    let f = failures(&r, "fail: the wrong address");
    assert!(
        f[0].contains("expected x-src: \"10.9.9.9:1\"; actual [\"10.1.2.3:4567\"]"),
        "{f:?}"
    );
    assert!(f[0].contains("actual upstream headers:"), "{f:?}");
}

#[test]
fn start_metrics_and_end_logs_are_checked() {
    let yaml = |metric: i64, end: &str| {
        format!(
            r#"
filters: [{{path: env.wasm}}]
start:
  logs: {{has: [starting]}}
  metrics: {{configured: {metric}}}
tests:
  - name: "ok: the end of the stream"
    expect:
      end:
        logs: {{has: ["log phase", "done phase"], no: ["headers phase"]}}
      logs: {{has: ["headers phase", "log phase"]}}
  - name: "fail: {end}"
    expect:
      end:
        logs: {{has: ["{end}"]}}
"#
        )
    };
    let r = run("start-end", &yaml(7, "headers phase"));
    assert_outcomes(&r);
    let f = failures(&r, "fail: headers phase");
    assert!(f[0].starts_with("end logs: no line matches"), "{f:?}");
    assert!(
        f[0].contains("log phase") && !f[0].contains("[host->vm]"),
        "the end's lines, without the call trace: {f:?}"
    );
    let r = run("start-bad", &yaml(8, "x"));
    assert_eq!(
        failures(&r, "plugin start"),
        ["start metric configured: expected 8, got 7"]
    );
}

#[test]
fn bad_inputs_name_the_field() {
    let cases = [
        (
            "clusters: {authz: {failure: boom}}",
            "clusters.authz.failure: unknown failure `boom` (reset, connection)",
        ),
        (
            "clusters: {authz: {failure: reset, status: 200}}",
            "clusters.authz: give `failure` or a response",
        ),
        (
            "clusters: {authz: {body: {file: missing.txt}}}",
            "clusters.authz.body.file: cannot read",
        ),
        (
            "properties: {x.y: {int: 1, bool: true}}",
            "properties.x.y: give exactly one of",
        ),
        (
            "clock: yesterday",
            "clock: \"yesterday\" is not an RFC 3339 time",
        ),
        ("clusters: {authz: {delay: 5}}", "unknown field `delay`"),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let yaml = format!("filters: [{{path: env.wasm}}]\n{extra}\n");
        match load(&format!("bad{i}"), &yaml) {
            Ok(_) => panic!("{extra}: loaded"),
            Err(e) => assert!(e.to_string().contains(want), "{extra}: {e}"),
        }
    }
    // A test's own bad cluster fails that test only, naming the field.
    let r = run(
        "bad-test",
        "filters: [{path: env.wasm}]\ntests:\n  - name: t\n    clusters: {a: {grpc: {failure: nope}}}\n",
    );
    assert_eq!(
        failures(&r, "t"),
        ["bad test input: clusters.a.grpc.failure: unknown failure `nope` (connection)"]
    );
}

/// A stub header a CR or LF (or another byte HTTP does not allow) would
/// smuggle into what the filter and the upstream get: refused when the stub
/// is loaded, on one line naming the file, the field and the header.
#[test]
fn stub_headers_with_line_breaks_are_refused_on_load() {
    let cases = [
        (
            r#"clusters: {authz: {headers: {x-auth-user: "bob\r\nx-admin: 1"}}}"#,
            "clusters.authz.headers: header \"x-auth-user\": the value has a carriage return (CR)",
        ),
        (
            r#"clusters: {authz: {headers: [[x-auth-user, "bob\nx-admin: 1"]]}}"#,
            "clusters.authz.headers: header \"x-auth-user\": the value has a line feed (LF)",
        ),
        (
            r#"clusters: {authz: {trailers: {x-t: "a\0b"}}}"#,
            "clusters.authz.trailers: header \"x-t\": the value has a NUL byte",
        ),
        (
            r#"clusters: {authz: {headers: {"x-a\r\nx-b": "v"}}}"#,
            "clusters.authz.headers: header name \"x-a\\r\\nx-b\" is not a valid HTTP header name",
        ),
        (
            r#"clusters: {g: {grpc: {initial_metadata: {x-m: "a\rb"}}}}"#,
            "clusters.g.grpc.initial_metadata: header \"x-m\"",
        ),
        (
            r#"clusters: {g: {grpc: {trailing_metadata: {x-m: "a\nb"}}}}"#,
            "clusters.g.grpc.trailing_metadata: header \"x-m\"",
        ),
        (
            r#"http_call_stub: {headers: {x-a: "1\r\nx-b: 2"}}"#,
            "http_call_stub.headers: header \"x-a\"",
        ),
        (
            "tests:\n  - name: t\n    clusters: {a: {headers: {x-a: \"1\\r\\nx-b: 2\"}}}",
            "tests[0] (t): clusters.a.headers: header \"x-a\"",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let yaml = format!("filters: [{{path: env.wasm}}]\n{extra}\n");
        match load(&format!("crlf{i}"), &yaml) {
            Ok(_) => panic!("{extra}: loaded"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(want), "{extra}: {e}");
                assert!(e.contains("suite.yaml"), "names the file: {e}");
                assert!(!e.contains(['\r', '\n']), "one line: {e:?}");
            }
        }
    }
    // `--stub CLUSTER=FILE` reads the same entry from a file.
    let dir = std::env::temp_dir().join(format!("tollgate-stub-crlf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("authz.yaml");
    std::fs::write(
        &file,
        "status: 200\nheaders:\n  - [x-auth-user, \"bob\\r\\nx-admin: yes\"]\n",
    )
    .unwrap();
    let e = tollgate_replay::suite::stub_arg(&format!("authz={}", file.display()))
        .expect_err("refused");
    assert!(
        e.starts_with(&format!(
            "{}: clusters.authz.headers: header \"x-auth-user\"",
            file.display()
        )),
        "{e}"
    );
    assert!(!e.contains(['\r', '\n']), "one line: {e:?}");
    std::fs::write(
        &file,
        "status: 200\nheaders:\n  - [x-auth-user, \"bob\\tsmith\"]\n",
    )
    .unwrap();
    assert!(tollgate_replay::suite::stub_arg(&format!("authz={}", file.display())).is_ok());
    // The callouts of a native recording too.
    let rec = br#"{"request": {"method": "GET", "authority": "a.example", "path": "/"}, "callouts": [{"cluster": "authz", "response": {"status": 200, "headers": {"x-auth-user": "bob\r\nx-admin: yes"}}}]}"#;
    let e =
        tollgate_traffic::native::parse_lines("rec.jsonl", rec, tollgate_traffic::Leniency::Strict)
            .expect_err("refused")
            .to_string();
    assert!(
        e.contains("rec.jsonl") && e.contains("callouts[0]") && e.contains("x-auth-user"),
        "{e}"
    );
    assert!(!e.contains(['\r', '\n']), "one line: {e:?}");
}

/// The built ext-authz filter and its demo configuration (`cargo xtask build`).
fn ext_authz() -> (String, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let wasm = format!("{target}/filters/ext-authz.wasm");
    assert!(
        std::path::Path::new(&wasm).exists(),
        "{wasm} is missing: run `cargo xtask build` first"
    );
    (wasm, format!("{root}/filters/ext-authz/demo.json"))
}

#[test]
fn ext_authz_against_cluster_stubs_with_delays_failures_and_timeouts() {
    let (wasm, demo) = ext_authz();
    let r = run(
        "ext-authz",
        &format!(
            r#"
filters:
  - path: {wasm}
    config_file: {demo}
clusters:
  authz:
    status: 200
    headers: {{x-auth-user: alice}}
    delay_ms: 30
tests:
  - name: "ok: allowed after 30 ms"
    request: {{path: /orders, headers: {{x-api-key: k1}}}}
    expect:
      upstream:
        headers: {{exact: [[x-auth-user, alice]]}}
      callout_requests:
        - cluster: authz
          kind: http
          timeout_ms: 500
          accepted: true
          headers:
            exact: [[":path", /check/orders], [":authority", authz.local], [x-api-key, k1]]
      callouts: {{has: ["ext-authz.wasm: http authz GET /check/orders"]}}
      steps: {{has: ["waited 30ms \\(virtual\\)"]}}
  - name: "ok: slower than the call's 500 ms timeout is a failure"
    clusters: {{authz: {{status: 200, delay_ms: 800}}}}
    expect: {{local_reply: {{status: 403}}, upstream_reached: false}}
  - name: "ok: a reset is a failure"
    clusters: {{authz: {{failure: reset}}}}
    expect: {{local_reply: {{status: 403}}}}
  - name: "ok: a connection failure is a failure"
    clusters: {{authz: {{failure: connection, delay_ms: 5}}}}
    expect: {{local_reply: {{status: 403}}}}
  - name: "ok: denied"
    clusters: {{authz: {{status: 401, body: {{text: nope}}}}}}
    expect: {{client: {{status: 401, body: {{exact: nope}}}}}}
  - name: "fail: the callout carried another key"
    request: {{headers: {{x-api-key: k1}}}}
    expect:
      callout_requests:
        - cluster: authz
          headers: {{exact: [[x-api-key, k2]]}}
  - name: "fail: no callout to that cluster"
    expect:
      callout_requests:
        - cluster: jwks
"#
        ),
    );
    assert_outcomes(&r);
    let f = failures(&r, "fail: the callout carried another key");
    assert!(
        f[0].starts_with("callout_requests[0]: no callout matches (ext-authz.wasm: http authz: headers: expected x-api-key: \"k2\"; actual [\"k1\"])"),
        "{f:?}"
    );
    assert!(
        f[0].contains(
            "callouts made:\n    ext-authz.wasm: http authz timeout_ms=500 accepted=true"
        ),
        "{f:?}"
    );
    let f = failures(&r, "fail: no callout to that cluster");
    assert!(f[0].contains("cluster \"authz\""), "{f:?}");
}

#[test]
fn grpc_clusters_answer_streams() {
    let r = run(
        "grpc",
        r#"
filters: [{path: grpc.wasm}]
clusters:
  checker:
    grpc:
      initial_metadata: {x-init: "1"}
      messages: [{text: ab}, {base64: Y2Rl}]
      trailing_metadata: {x-t: "1"}
      delay_ms: 20
tests:
  - name: "ok: answered after 20 ms, the request resumes"
    expect:
      upstream_reached: true
      callout_requests:
        - {cluster: checker, kind: grpc-stream, method: "^svc\\.Checker/Watch$", accepted: true}
      callouts: {has: ["grpc.wasm: grpc checker svc.Checker/Watch stream"]}
      steps: {has: ["waited 20ms \\(virtual\\)"]}
  - name: "ok: a connection failure still closes the stream"
    clusters: {checker: {grpc: {failure: connection}}}
    expect:
      upstream_reached: true
  - name: "fail: it is not a unary call"
    expect:
      callout_requests: [{kind: grpc}]
"#,
    );
    assert_outcomes(&r);
    let f = failures(&r, "fail: it is not a unary call");
    assert!(
        f[0].contains("grpc.wasm: grpc-stream checker svc.Checker/Watch: kind grpc-stream"),
        "{f:?}"
    );
}
