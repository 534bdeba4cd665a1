//! Suite inputs added for issue 13: who the plugin is (a filter's `name`,
//! `root_id`, `vm_id`, `env` and `host_env`, as Envoy's plugin
//! configuration), what it logs (`log_level`, the suite's and a test's over
//! it), gRPC services that speak first (`grpc: {server_first: true}`), and
//! the same identity flags on `tollgate replay` and `bench`; each with a
//! variant that must fail, and bad input naming the field.

use super::*;
use tollgate_replay::suite::{Suite, SuiteError, SuiteReport};

/// Adds `x-name`, `x-root`, `x-vm` (the properties `plugin_name`,
/// `plugin_root_id`, `plugin_vm_id`) and `x-env` (the whole WASI
/// environment, entries joined by `;`) to the request; logs `a debug line`
/// at debug and `an info line` at info.
fn identity_wasm() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "plugin_name")
           (data (i32.const 1120) "plugin_root_id")
           (data (i32.const 1140) "plugin_vm_id")
           (data (i32.const 1160) "x-name")
           (data (i32.const 1170) "x-root")
           (data (i32.const 1180) "x-vm")
           (data (i32.const 1190) "x-env")
           (data (i32.const 1200) "a debug line")
           (data (i32.const 1220) "an info line")
           (func $copy_prop (param $path i32) (param $plen i32) (param $name i32) (param $len i32)
             (if (i32.eqz (call $prop (local.get $path) (local.get $plen) (i32.const 900) (i32.const 904)))
               (then (drop (call $add (i32.const 0) (local.get $name) (local.get $len)
                 (i32.load (i32.const 900)) (i32.load (i32.const 904)))))))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (local $i i32) (local $size i32)
             (drop (call $log (i32.const 1) (i32.const 1200) (i32.const 12)))
             (drop (call $log (i32.const 2) (i32.const 1220) (i32.const 12)))
             (call $copy_prop (i32.const 1100) (i32.const 11) (i32.const 1160) (i32.const 6))
             (call $copy_prop (i32.const 1120) (i32.const 14) (i32.const 1170) (i32.const 6))
             (call $copy_prop (i32.const 1140) (i32.const 12) (i32.const 1180) (i32.const 4))
             (drop (call $env_sizes (i32.const 920) (i32.const 924)))
             (drop (call $env_get (i32.const 2048) (i32.const 4096)))
             (local.set $size (i32.load (i32.const 924)))
             ;; NULs between entries become `;`, the last one is left out
             (block $done (loop $next
               (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
               (if (i32.eqz (i32.load8_u (i32.add (i32.const 4096) (local.get $i))))
                 (then (i32.store8 (i32.add (i32.const 4096) (local.get $i)) (i32.const 59))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br $next)))
             (if (i32.gt_u (local.get $size) (i32.const 0))
               (then (drop (call $add (i32.const 0) (i32.const 1190) (i32.const 5)
                 (i32.const 4096) (i32.sub (local.get $size) (i32.const 1))))))
             (i32.const 0))"#,
    )
}

fn load(tag: &str, yaml: &str) -> Result<Suite, SuiteError> {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-suite-identity-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("id.wasm"), identity_wasm()).unwrap();
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
fn a_filters_identity_and_environment_reach_the_guest() {
    let home = std::env::var("HOME").expect("HOME is set");
    let r = run(
        "ids",
        &format!(
            r#"
filters:
  - path: id.wasm
    name: my-plugin
    root_id: my-root
    vm_id: my-vm
    env: {{B: "2", A: "one=1"}}
    host_env: [HOME, TOLLGATE_SUITE_IDENTITY_NEVER_SET]
  - path: id.wasm
tests:
  - name: "ok: the first filter's identity, the second's defaults"
    expect:
      upstream:
        headers:
          exact: [[x-name, my-plugin], [x-root, my-root], [x-vm, my-vm],
                  [x-env, "A=one=1;B=2;HOME={home}"], [x-name, tollgate], [x-root, ""], [x-vm, ""]]
  - name: "fail: another vm_id"
    expect:
      upstream:
        headers:
          exact: [[x-vm, other-vm]]
"#
        ),
    );
    assert_outcomes(&r);
}

#[test]
fn the_log_level_keeps_debug_lines_when_asked() {
    let r = run(
        "levels",
        r#"
filters: [{path: id.wasm}]
log_level: debug
tests:
  - name: "ok: the suite's debug level keeps debug lines"
    expect:
      logs: {has: [{level: debug, message: "a debug line"}, "an info line"]}
  - name: "ok: a test's warn level over the suite's drops both"
    log_level: warn
    expect:
      logs: {no: ["a debug line", "an info line"]}
  - name: "fail: a test's info level drops the debug line"
    log_level: info
    expect:
      logs: {has: ["a debug line"]}
"#,
    );
    assert_outcomes(&r);
}

#[test]
fn bad_identity_and_level_inputs_name_the_field() {
    let e = load(
        "dup",
        "filters: [{path: id.wasm, env: {HOME: x}, host_env: [HOME]}]\ntests: []\n",
    )
    .err()
    .expect("a key in env and host_env is refused, as Envoy refuses it")
    .to_string();
    assert!(
        e.contains("filters[0].env/host_env") && e.contains("HOME is given twice"),
        "{e}"
    );
    let e = load(
        "level",
        "filters: [{path: id.wasm}]\nlog_level: loud\ntests: []\n",
    )
    .err()
    .expect("an unknown level is refused")
    .to_string();
    assert!(e.contains("log_level") && e.contains("loud"), "{e}");
}

/// `tollgate replay` with `--plugin-name`, `--root-id`, `--vm-id`, `--env`
/// and `--host-env`, each belonging to the `--filter` before it; `bench`
/// takes the same flags; a key given twice is refused naming it.
#[test]
fn replay_and_bench_take_the_identity_flags_per_filter() {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("tollgate-cli-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("id.wasm");
    std::fs::write(&wasm, identity_wasm()).unwrap();
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    let w = wasm.to_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["replay", har, "--format", "json", "--filter", w])
        .args([
            "--plugin-name",
            "first",
            "--vm-id",
            "vm-a",
            "--env",
            "K=v=1",
        ])
        .args(["--host-env", "TOLLGATE_CLI_IDENTITY_TEST", "--filter", w])
        .args(["--root-id", "second-root"])
        .env("TOLLGATE_CLI_IDENTITY_TEST", "from the host")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let headers = &report["exchanges"][0]["upstream_request"]["headers"];
    let values = |name: &str| -> Vec<String> {
        headers
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(values("x-name"), ["first", "tollgate"], "{headers}");
    assert_eq!(values("x-root"), ["", "second-root"], "{headers}");
    assert_eq!(values("x-vm"), ["vm-a", ""], "{headers}");
    assert_eq!(
        values("x-env"),
        ["K=v=1;TOLLGATE_CLI_IDENTITY_TEST=from the host"]
    );

    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "replay",
            har,
            "--filter",
            w,
            "--env",
            "K=1",
            "--host-env",
            "K",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("K is given twice"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "bench",
            har,
            "--filter",
            w,
            "--iterations",
            "1",
            "--warmup",
            "0",
        ])
        .args(["--no-cache", "--env", "K=1", "--env", "K=2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("K is given twice"),
        "{err}"
    );
}

/// Opens a gRPC stream to `checker` without sending anything and holds the
/// request; `proxy_on_grpc_close` lets it go on.
fn watcher_wasm() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))"#,
        r#"(data (i32.const 1100) "checker")
           (data (i32.const 1120) "svc.Checker")
           (data (i32.const 1140) "Watch")
           (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
             (i32.store (i32.const 960) (local.get $ctx))
             (drop (call $stream (i32.const 1100) (i32.const 7) (i32.const 1120) (i32.const 11)
               (i32.const 1140) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 964)))
             (i32.const 1))
           (func (export "proxy_on_grpc_close") (param i32 i32 i32)
             (drop (call $effective (i32.load (i32.const 960))))
             (drop (call $continue (i32.const 0))))"#,
    )
}

#[test]
fn a_server_first_grpc_stream_answers_before_the_guest_sends() {
    let dir = std::env::temp_dir().join(format!("tollgate-suite-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("watch.wasm"), watcher_wasm()).unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(
        &path,
        r#"
filters: [{path: watch.wasm}]
clusters:
  checker: {grpc: {server_first: true, messages: [{text: hi}]}}
tests:
  - name: "ok: the service speaks first, the close lets the request go on"
    expect: {upstream_reached: true}
  - name: "fail: a service that waits for the guest's first message never answers"
    clusters:
      checker: {grpc: {messages: [{text: hi}]}}
    expect: {upstream_reached: true}
"#,
    )
    .unwrap();
    let r = Suite::load(&path).expect("suite loads").run();
    assert_outcomes(&r);
}

/// `combined:` matches the values of a repeated header joined with `, `,
/// whether they came as one header or several.
#[test]
fn a_combined_header_matcher_takes_one_value_or_several() {
    let r = run(
        "combined",
        r#"
filters: [{path: id.wasm}]
tests:
  - name: "ok: separate entries and one joined entry"
    request: {headers: [[x-a, one], [x-a, two], [x-b, "one, two"]]}
    expect:
      upstream:
        headers:
          combined: [[x-a, "one, two"], [x-b, "one, two"]]
          not: {combined: [[x-a, "two, one"], [x-c, ""]]}
  - name: "fail: the order counts"
    request: {headers: [[x-a, one], [x-a, two]]}
    expect: {upstream: {headers: {combined: [[x-a, "two, one"]]}}}
  - name: "fail: an absent header combines to nothing"
    expect: {upstream: {headers: {combined: [[x-a, ""]]}}}
"#,
    );
    assert_outcomes(&r);
    let f = &r
        .all()
        .find(|t| t.name == "fail: the order counts")
        .unwrap()
        .failures;
    assert!(
        f[0].contains("expected combined x-a: \"two, one\"; actual \"one, two\""),
        "{f:?}"
    );
}

/// Calls `authz` twice over http, then `checker` over gRPC for `svc.A/One`
/// and `svc.A/Two`; adds each answer to the held request (`x-http: <status>`,
/// `x-grpc: ok` for a message, `x-grpc: <status>` for a close) and lets the
/// request go on after the fourth.
fn twice_wasm() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_http_call" (func $http (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_grpc_call" (func $grpc (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))"#,
        r#"(data (i32.const 1100) "authz")
           (data (i32.const 1110) "checker")
           (data (i32.const 1120) "svc.A")
           (data (i32.const 1130) "One")
           (data (i32.const 1140) "Two")
           (data (i32.const 1150) ":status")
           (data (i32.const 1160) "x-http")
           (data (i32.const 1170) "x-grpc")
           (data (i32.const 1180) "ok")
           (data (i32.const 1190) "0123456789")
           ;; :method GET, :path /, :authority authz (pairs)
           (data (i32.const 1200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\05\00\00\00:method\00GET\00:path\00/\00:authority\00authz\00")
           (global $answers (mut i32) (i32.const 0))
           (func $answered
             (global.set $answers (i32.add (global.get $answers) (i32.const 1)))
             (if (i32.eq (global.get $answers) (i32.const 4))
               (then (drop (call $continue (i32.const 0))))))
           (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
             (i32.store (i32.const 960) (local.get $ctx))
             (drop (call $http (i32.const 1100) (i32.const 5) (i32.const 1200) (i32.const 65)
               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 700)))
             (drop (call $http (i32.const 1100) (i32.const 5) (i32.const 1200) (i32.const 65)
               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 700)))
             (drop (call $grpc (i32.const 1110) (i32.const 7) (i32.const 1120) (i32.const 5)
               (i32.const 1130) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1180) (i32.const 2)
               (i32.const 1000) (i32.const 700)))
             (drop (call $grpc (i32.const 1110) (i32.const 7) (i32.const 1120) (i32.const 5)
               (i32.const 1140) (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1180) (i32.const 2)
               (i32.const 1000) (i32.const 700)))
             (i32.const 1))
           (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
             (drop (call $get (i32.const 6) (i32.const 1150) (i32.const 7) (i32.const 900) (i32.const 904)))
             (drop (call $effective (i32.load (i32.const 960))))
             (drop (call $add (i32.const 0) (i32.const 1160) (i32.const 6)
               (i32.load (i32.const 900)) (i32.load (i32.const 904))))
             (call $answered))
           (func (export "proxy_on_grpc_receive") (param i32 i32 i32)
             (drop (call $effective (i32.load (i32.const 960))))
             (drop (call $add (i32.const 0) (i32.const 1170) (i32.const 6) (i32.const 1180) (i32.const 2)))
             (call $answered))
           (func (export "proxy_on_grpc_close") (param i32 i32) (param $status i32)
             (drop (call $effective (i32.load (i32.const 960))))
             (drop (call $add (i32.const 0) (i32.const 1170) (i32.const 6)
               (i32.add (i32.const 1190) (local.get $status)) (i32.const 1)))
             (call $answered))"#,
    )
}

/// `answers:` answers a cluster's calls in turn (the last repeats);
/// `grpc.methods` answers one method each, before the cluster's answer for
/// any other method.
#[test]
fn answer_sequences_and_per_method_grpc_answers() {
    let dir = std::env::temp_dir().join(format!("tollgate-suite-twice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("twice.wasm"), twice_wasm()).unwrap();
    let path = dir.join("suite.yaml");
    std::fs::write(
        &path,
        r#"
filters: [{path: twice.wasm}]
clusters:
  authz:
    answers: [{status: 503}, {status: 200}]
  checker:
    grpc:
      status: 7
      methods:
        svc.A/One: {messages: [{text: yes}]}
tests:
  - name: "ok: the first call gets the first answer, the second the second; One its own answer"
    expect:
      upstream: {headers: {combined: [[x-http, "503, 200"], [x-grpc, "ok, 7"]]}}
  - name: "ok: a test's own sequence, the last answer repeating"
    clusters:
      authz: {answers: [{status: 429}]}
    expect:
      upstream: {headers: {combined: [[x-http, "429, 429"]]}}
  - name: "fail: not in the other order"
    expect:
      upstream: {headers: {combined: [[x-http, "200, 503"]]}}
"#,
    )
    .unwrap();
    let r = Suite::load(&path).expect("suite loads").run();
    assert_outcomes(&r);
    let nested = load(
        "nested",
        "filters: [{path: id.wasm}]\nclusters: {a: {answers: [{answers: [{status: 200}]}]}}\ntests: []\n",
    )
    .err()
    .expect("nested answers are refused")
    .to_string();
    assert!(nested.contains("`answers` cannot nest"), "{nested}");
}

/// `chains:` holds several chains in one file, each with its own filters
/// and tests over the file's clusters, properties and log level; `tollgate
/// test` runs each as a suite named `file [chain]`.
#[test]
fn several_chains_in_one_file() {
    let dir = std::env::temp_dir().join(format!("tollgate-suite-chains-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("id.wasm"), identity_wasm()).unwrap();
    let path = dir.join("chains.yaml");
    std::fs::write(
        &path,
        r#"
log_level: debug
chains:
  - name: alpha
    filters: [{path: id.wasm, name: alpha}]
    tests:
      - name: "ok: alpha's name and the file's debug level"
        expect:
          upstream: {headers: {exact: [[x-name, alpha]]}}
          logs: {has: ["a debug line"]}
  - name: beta
    filters: [{path: id.wasm, vm_id: beta-vm}, {path: id.wasm, name: second}]
    log_level: warn
    tests:
      - name: "ok: two filters, the chain's own level"
        expect:
          upstream: {headers: {combined: [[x-vm, "beta-vm, "], [x-name, "tollgate, second"]]}}
          logs: {no: ["an info line"]}
      - name: "fail: alpha's name is not beta's"
        expect:
          upstream: {headers: {exact: [[x-name, alpha]]}}
"#,
    )
    .unwrap();
    let suites = Suite::load_all(&path).expect("the chains load");
    assert_eq!(suites.len(), 2);
    let reports: Vec<SuiteReport> = suites.iter().map(Suite::run).collect();
    assert!(
        reports[0].file.ends_with("chains.yaml [alpha]"),
        "{}",
        reports[0].file
    );
    assert!(
        reports[1].file.ends_with("chains.yaml [beta]"),
        "{}",
        reports[1].file
    );
    for r in &reports {
        assert_outcomes(r);
    }
    let e = Suite::load(&path)
        .err()
        .expect("one suite cannot hold chains")
        .to_string();
    assert!(e.contains("load_all"), "{e}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["test", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the failing test fails the run");
    assert!(
        text.contains("chains.yaml [alpha]") && text.contains("chains.yaml [beta]"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 test(s) failed"));
    let mixed = dir.join("mixed.yaml");
    std::fs::write(
        &mixed,
        "filters: [{path: id.wasm}]\nchains: [{name: a, filters: [{path: id.wasm}]}]\n",
    )
    .unwrap();
    let e = Suite::load_all(&mixed).err().expect("refused").to_string();
    assert!(e.contains("inside each chain"), "{e}");
}
