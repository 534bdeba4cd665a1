//! Hostile guests are contained with a report, never a hang, a crash or
//! unbounded memory: callout storms, memory past Envoy's 1 GiB, huge log
//! lines, and VMs that died (see `tollgate_host::limits`).

use super::*;
use std::time::{Duration, Instant};
use tollgate_host::limits::Limits;
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_traffic::Traffic;

/// A guest whose every callout answer dispatches `fan_out` new callouts
/// (the first one is dispatched by the request headers, which pause).
fn storm_guest(fan_out: u32) -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        &format!(
            r#"(data (i32.const 1100) "authz")
           (data (i32.const 1200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\05\00\00\00:method\00GET\00:path\00/check\00:authority\00authz\00")
           (func $dispatch
             (drop (call $call (i32.const 1100) (i32.const 5) (i32.const 1200) (i32.const 70)
               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 700))))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $dispatch)
             (i32.const 1))
           (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
             (local $n i32)
             (local.set $n (i32.const {fan_out}))
             (block $done (loop $more
               (br_if $done (i32.eqz (local.get $n)))
               (call $dispatch)
               (local.set $n (i32.sub (local.get $n) (i32.const 1)))
               (br $more))))"#
        ),
    )
}

fn instant_answer() -> HttpCallStub {
    HttpCallStub {
        headers: vec![(":status".into(), "200".into())],
        body: b"ok".to_vec(),
    }
}

fn two_requests() -> Traffic {
    Traffic {
        exchanges: vec![
            exchange("GET", "/first", &[], b""),
            exchange("GET", "/second", &[], b""),
        ],
        ..Traffic::default()
    }
}

fn failure(v: &Verdict) -> &str {
    match v {
        Verdict::Failed { message } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_callout_storm_fails_its_exchange_naming_what_the_module_did() {
    for fan_out in [1, 2] {
        let began = Instant::now();
        let report = Replay::module("storm.wasm", storm_guest(fan_out))
            .http_call_stub(instant_answer())
            .traffic(two_requests())
            .run()
            .expect("the replay runs");
        let first = &report.exchanges[0];
        let message = failure(&first.verdict);
        assert!(
            message.contains("callout storm")
                && message.contains("callouts in one exchange (limit 10000")
                && message.contains("proxy_on_http_call_response"),
            "fan-out {fan_out}: {message}"
        );
        // The dead VM fails the next stream at once (FAIL_CLOSED: 503).
        assert_eq!(
            report.exchanges[1].verdict,
            Verdict::AnsweredLocally { status: 503 }
        );
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "fan-out {fan_out}: took {:?}",
            began.elapsed()
        );
    }
}

#[test]
fn the_callout_bound_is_configurable_and_so_is_the_wall_time_per_exchange() {
    let few = Limits {
        callouts_per_exchange: 50,
        ..Limits::default()
    };
    let report = Replay::module("storm.wasm", storm_guest(1))
        .http_call_stub(instant_answer())
        .limits(few)
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    let message = failure(&report.exchanges[0].verdict);
    assert!(
        message.contains("dispatched 51 callouts in one exchange (limit 50"),
        "{message}"
    );

    // No bound on the count: the wall-time bound stops the storm.
    let timed = Limits {
        callouts_per_exchange: u64::MAX,
        exchange_wall: Duration::from_millis(300),
        ..Limits::default()
    };
    let report = Replay::module("storm.wasm", storm_guest(1))
        .http_call_stub(instant_answer())
        .limits(timed)
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    let message = failure(&report.exchanges[0].verdict);
    assert!(
        message.contains("more than 300ms of wall time"),
        "{message}"
    );
}

#[test]
fn a_callout_storm_in_a_streamed_replay_ends_with_its_cause() {
    let builder = Replay::module("storm.wasm", storm_guest(2)).http_call_stub(instant_answer());
    let exchanges = two_requests().exchanges.into_iter().map(Ok);
    let mut outcomes = Vec::new();
    let totals =
        tollgate_replay::streaming::replay(builder, exchanges, |_, _, o, _| outcomes.push(o))
            .expect("the streamed replay runs");
    // The storm fails its exchange; the dead VM answers the next one 503 at once.
    assert_eq!(
        outcomes,
        [
            tollgate_replay::streaming::Outcome::Failed,
            tollgate_replay::streaming::Outcome::AnsweredLocally(503)
        ]
    );
    assert_eq!(totals.failed, 1);
}

/// A guest whose request headers grow its memory (2 pages) by `pages` and
/// trap when `memory.grow` fails, as a Rust guest aborts when allocation fails.
fn grow_guest(pages: u32) -> Vec<u8> {
    guest(
        "0_2_1",
        "",
        &format!(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))
             (i32.const 0))"#
        ),
    )
}

#[test]
fn memory_past_envoys_1_gib_is_refused_and_the_trap_says_so() {
    // 2 + 16,382 pages: exactly 1 GiB, allowed.
    let report = Replay::module("grow.wasm", grow_guest(16_382))
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    assert_eq!(report.exchanges[0].verdict, Verdict::Passed);

    // One page more: memory.grow returns -1 as in Envoy's V8, the guest traps.
    let report = Replay::module("grow.wasm", grow_guest(16_383))
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    let message = failure(&report.exchanges[0].verdict);
    assert!(
        message.contains("reached its limit of 1 GiB") && message.contains("returned -1"),
        "{message}"
    );

    // The limit is configurable.
    let more = Limits {
        memory_bytes: 2 << 30,
        ..Limits::default()
    };
    let report = Replay::module("grow.wasm", grow_guest(16_383))
        .limits(more)
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    assert_eq!(report.exchanges[0].verdict, Verdict::Passed);
}

#[test]
fn a_module_whose_initial_memory_is_past_the_limit_does_not_start() {
    let wasm = wat::parse_str(
        r#"(module
          (memory (export "memory") 16385)
          (func (export "malloc") (param i32) (result i32) (i32.const 1024))
          (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .expect("assembles");
    let err = Replay::module("big.wasm", wasm)
        .traffic(two_requests())
        .run()
        .expect_err("the module does not start");
    let text = err.to_string();
    assert!(text.contains("limit of 1 GiB"), "{text}");
}

/// A guest logging `lines` lines of `size` bytes (zeros) per request.
fn log_guest(lines: u32, size: u32) -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#,
        &format!(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (local $n i32)
             (if (i32.lt_u (memory.size) (i32.const 40)) (then (drop (memory.grow (i32.const 38)))))
             (local.set $n (i32.const {lines}))
             (block $done (loop $more
               (br_if $done (i32.eqz (local.get $n)))
               (drop (call $log (i32.const 2) (i32.const 65536) (i32.const {size})))
               (local.set $n (i32.sub (local.get $n) (i32.const 1)))
               (br $more)))
             (i32.const 0))"#
        ),
    )
}

#[test]
fn huge_log_lines_are_cut_and_the_log_per_exchange_is_bounded() {
    // 20 lines of 2 MB: each cut to 64 KiB, all kept (1.3 MB < 4 MiB).
    let report = Replay::module("log.wasm", log_guest(20, 2_000_000))
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    let logs = &report.exchanges[0].logs;
    let guest_lines: Vec<_> = logs
        .iter()
        .filter(|l| l.message.contains("line of 2000000 bytes cut to 65536"))
        .collect();
    assert_eq!(guest_lines.len(), 20, "{} lines", logs.len());
    assert!(logs.iter().all(|l| l.message.len() < 70_000));

    // A small budget per exchange: what is dropped is said.
    let small = Limits {
        log_bytes_per_exchange: 200_000,
        ..Limits::default()
    };
    let report = Replay::module("log.wasm", log_guest(20, 2_000_000))
        .limits(small)
        .traffic(two_requests())
        .run()
        .expect("the replay runs");
    for e in &report.exchanges {
        let kept: usize = e.logs.iter().map(|l| l.message.len()).sum();
        assert!(kept < 300_000, "{kept} bytes kept");
        assert!(
            e.logs.iter().any(|l| l
                .message
                .contains("17 guest log line(s) (34000000 bytes) dropped: past the 200000 bytes")),
            "{:?}",
            e.logs
                .iter()
                .map(|l| &l.message[..l.message.len().min(120)])
                .collect::<Vec<_>>()
        );
    }
}

/// A guest that traps (`unreachable`) on every request.
fn trap_guest() -> Vec<u8> {
    guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             unreachable)"#,
    )
}

fn temp_wasm(name: &str, wasm: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, wasm).expect("write the guest");
    path
}

#[test]
fn bench_stops_at_a_dead_vm_and_names_the_failure() {
    use tollgate_replay::bench::{self, BenchError, BenchOptions, Budget};
    let path = temp_wasm("trap.wasm", &trap_guest());
    let options = BenchOptions {
        filter: path.clone(),
        config: String::new(),
        traffic: Traffic {
            source: Some("test traffic".into()),
            ..two_requests()
        }
        .into(),
        budget: Budget::Time(Duration::from_secs(600)),
        warmup: 1,
        cache: None,
        streams: 1,
        http_clusters: Vec::new(),
        grpc_clusters: Vec::new(),
        limits: tollgate_host::limits::Limits::default(),
        identity: Default::default(),
    };
    let began = Instant::now();
    let err = bench::run(&options, None).expect_err("a trapping filter fails the bench");
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "{:?}",
        began.elapsed()
    );
    assert!(
        matches!(
            err,
            BenchError::Failed {
                pass: 0,
                request: 0,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("trap.wasm")
            && text.contains("proxy_on_request_headers")
            && text.contains("unreachable"),
        "{text}"
    );

    // The command says so and exits non-zero.
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["bench", har, "--filter"])
        .arg(&path)
        .args(["--iterations", "3"])
        .output()
        .expect("tollgate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the benchmark stopped"), "{stderr}");
}

#[test]
fn a_failure_carries_its_callback_and_trap_to_streamed_replays_suites_and_junit() {
    let path = temp_wasm("trap-cause.wasm", &trap_guest());
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["replay", har, "--stream", "--filter"])
        .arg(&path)
        .output()
        .expect("tollgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[FAILED: proxy_on_request_headers failed: wasm trap: wasm `unreachable`"),
        "{stdout}"
    );

    let dir = path.parent().expect("a folder").to_path_buf();
    let suite = dir.join("cause-suite.yaml");
    std::fs::write(
        &suite,
        "filters:\n  - path: trap-cause.wasm\ntests:\n  - name: reaches the upstream\n    request: {path: /}\n    expect:\n      client: {status: 200}\n",
    )
    .expect("write the suite");
    let report = tollgate_replay::suite::run_file(&suite).expect("the suite loads");
    let failures = &report.tests[0].failures;
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("because a filter failed: ")
                && f.contains("proxy_on_request_headers failed: wasm trap")),
        "{failures:?}"
    );
    let junit = report.junit();
    assert!(
        junit.contains("proxy_on_request_headers failed: wasm trap"),
        "{junit}"
    );
}

#[test]
fn a_callout_storm_in_a_suite_fails_its_test_with_the_cause() {
    let path = temp_wasm("storm-suite.wasm", &storm_guest(2));
    let suite = path.parent().expect("a folder").join("storm-suite.yaml");
    std::fs::write(
        &suite,
        "filters:\n  - path: storm-suite.wasm\nclusters:\n  authz: {status: 200}\ntests:\n  - name: storm\n    request: {path: /}\n    expect:\n      client: {status: 200}\n",
    )
    .expect("write the suite");
    let began = Instant::now();
    let report = tollgate_replay::suite::run_file(&suite).expect("the suite loads");
    assert!(began.elapsed() < Duration::from_secs(60));
    let failures = &report.tests[0].failures;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("callout storm: the module dispatched 10001 callouts")),
        "{failures:?}"
    );
}

/// `tollgate <args>`: (exit success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("tollgate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_limit_flags_change_what_replay_bench_and_test_allow() {
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    // Memory: a guest of 2 pages growing by 1 passes under the default 1 GiB
    // and is refused under --memory-limit 2 pages (128KiB).
    let grow = temp_wasm("grow-one.wasm", &grow_guest(1));
    let grow = grow.to_str().expect("utf-8 path");
    let (_, out, err) = cli(&["replay", har, "--filter", grow]);
    assert!(
        !out.contains("FAILED") && out.contains("0 failed"),
        "{out}{err}"
    );
    let (_, out, err) = cli(&["replay", har, "--filter", grow, "--memory-limit", "128KiB"]);
    assert!(
        out.contains("FAILED")
            && out.contains("reached its limit of 128 KiB")
            && out.contains("from 131072 to 196608 bytes"),
        "{out}{err}"
    );

    // Callouts: a storm stopped at 6 dispatches under a bound of 5, in
    // replay (and --stream), bench and test.
    let storm = temp_wasm("storm-flag.wasm", &storm_guest(1));
    let dir = storm.parent().expect("a folder").to_path_buf();
    let storm = storm.to_str().expect("utf-8 path");
    let stub = dir.join("authz-ok.yaml");
    std::fs::write(&stub, "status: 200\nbody: {text: ok}\n").expect("write the stub");
    let stub = format!("authz={}", stub.display());
    let bound = ["--max-callouts-per-exchange", "5"];
    let (_, out, err) = cli(&[
        &["replay", har, "--filter", storm, "--stub", &stub][..],
        &bound,
    ]
    .concat());
    assert!(
        out.contains("dispatched 6 callouts in one exchange (limit 5"),
        "{out}{err}"
    );
    let (_, out, err) = cli(&[
        &[
            "replay", har, "--stream", "--filter", storm, "--stub", &stub,
        ][..],
        &bound,
    ]
    .concat());
    assert!(
        out.contains("dispatched 6 callouts in one exchange (limit 5"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(&[
        &[
            "bench",
            har,
            "--filter",
            storm,
            "--stub",
            &stub,
            "--iterations",
            "1",
            "--warmup",
            "0",
        ][..],
        &bound,
    ]
    .concat());
    assert!(
        !ok && err.contains("dispatched 6 callouts in one exchange (limit 5"),
        "{err}"
    );
    let suite = dir.join("storm-suite.yaml");
    std::fs::write(
        &suite,
        "filters:\n  - path: storm-flag.wasm\nclusters:\n  authz: {status: 200}\ntests:\n  - name: one request\n    request: {path: /}\n    expect:\n      client: {status: 200}\n",
    )
    .expect("write the suite");
    let suite = suite.to_str().expect("utf-8 path");
    let (ok, out, err) = cli(&[&["test", suite][..], &bound].concat());
    assert!(
        !ok && out.contains("dispatched 6 callouts in one exchange (limit 5"),
        "{out}{err}"
    );
    let (_, out, err) = cli(&["test", suite, "--max-callouts-per-exchange", "40"]);
    assert!(
        out.contains("dispatched 41 callouts in one exchange (limit 40"),
        "{out}{err}"
    );

    // Wall time: no count bound, 0.3 s per exchange.
    let (_, out, err) = cli(&[
        "replay",
        har,
        "--filter",
        storm,
        "--stub",
        &stub,
        "--max-callouts-per-exchange",
        "18446744073709551615",
        "--exchange-timeout",
        "0.3",
    ]);
    assert!(out.contains("more than 300ms of wall time"), "{out}{err}");

    // Inputs: the recording past --max-input-bytes is refused, naming the flag.
    let (ok, _, err) = cli(&["replay", har, "--filter", grow, "--max-input-bytes", "100"]);
    assert!(
        !ok && err.contains("past the input cap of 100 bytes") && err.contains("--max-input-bytes"),
        "{err}"
    );

    // Every command that runs VMs shows the flags in its --help.
    for command in ["replay", "bench", "test", "envoy"] {
        let (ok, out, err) = cli(&[command, "--help"]);
        assert!(ok, "{err}");
        for flag in [
            "Limits:",
            "--memory-limit <BYTES>",
            "--max-callouts-per-exchange <N>",
            "--exchange-timeout <SECONDS>",
            "--max-log-bytes-per-exchange <BYTES>",
            "--max-log-line-bytes <BYTES>",
            "--max-input-bytes <BYTES>",
        ] {
            assert!(
                out.contains(flag),
                "tollgate {command} --help lacks {flag}:\n{out}"
            );
        }
    }
}

#[test]
fn the_log_flags_bound_the_guest_log_in_a_replay() {
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    let log = temp_wasm("log-flag.wasm", &log_guest(20, 2_000_000));
    let log = log.to_str().expect("utf-8 path");
    let (_, out, err) = cli(&[
        "replay",
        har,
        "--filter",
        log,
        "--log-level",
        "trace",
        "--max-log-line-bytes",
        "1KiB",
        "--max-log-bytes-per-exchange",
        "10KiB",
    ]);
    assert!(
        out.contains("line of 2000000 bytes cut to 1024"),
        "{}{err}",
        &out[..out.len().min(2000)]
    );
    assert!(
        out.contains("10 guest log line(s) (20000000 bytes) dropped: past the 10 KiB"),
        "{}{err}",
        &out[..out.len().min(2000)]
    );
    // At most 10 KiB of guest log per exchange (and a line per exchange of
    // its own); the defaults would keep 20 lines of 64 KiB each.
    let exchanges = out.lines().filter(|l| l.starts_with("entry ")).count();
    assert!(exchanges > 0, "{}", &out[..out.len().min(2000)]);
    assert!(
        out.len() < exchanges * 12 * 1024,
        "{} bytes of output for {exchanges} exchanges",
        out.len()
    );
}
