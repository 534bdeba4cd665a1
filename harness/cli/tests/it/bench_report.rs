//! `tollgate bench --html` and `--streams N`, and the stream driver's modes
//! under them: the HTML page's contents; streams in flight at once
//! (callback order, contexts alive together, the same outcomes as one at a
//! time); the memory a filter that allocates per stream needs with more
//! streams in flight; the verdict-only driver judging as the report does.

use std::path::PathBuf;
use std::process::Command;
use tollgate_host::bare;
use tollgate_host::plugin::Plugin;
use tollgate_host::state::VmSettings;
use tollgate_host::stream::{self, FailurePolicy, Lane, Prepared, StreamInput};
use tollgate_host::vm::Vm;
use tollgate_replay::bench::{self, BenchOptions, Budget};
use tollgate_traffic::Traffic;

const PAGE: u64 = 65536;

/// A proxy-wasm 0.2.1 guest that needs one more page of linear memory for
/// every stream alive at once beyond its high-water mark: it counts stream
/// contexts from `proxy_on_context_create` to `proxy_on_delete`.
const PER_STREAM_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $live (mut i32) (i32.const 0))
  (global $high (mut i32) (i32.const 0))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param $ctx i32) (param $root i32)
    (if (i32.ne (local.get $root) (i32.const 0))
      (then
        (global.set $live (i32.add (global.get $live) (i32.const 1)))
        (if (i32.gt_u (global.get $live) (global.get $high))
          (then
            (global.set $high (global.get $live))
            (drop (memory.grow (i32.const 1))))))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)
    (global.set $live (i32.sub (global.get $live) (i32.const 1)))))"#;

fn per_stream_module() -> Vec<u8> {
    match wat::parse_str(PER_STREAM_WAT) {
        Ok(b) => b,
        Err(e) => panic!("per-stream guest does not assemble: {e}"),
    }
}

fn traffic(n: usize) -> Traffic {
    Traffic {
        source: Some(PathBuf::from("bench report traffic")),
        exchanges: (0..n)
            .map(|i| {
                super::exchange(
                    "GET",
                    &format!("/r/{i}"),
                    &[("user-agent", "test/2.0"), ("x-request-id", "id-7")],
                    b"",
                )
            })
            .collect(),
        warnings: Vec::new(),
    }
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

fn options(filter: PathBuf, streams: usize) -> BenchOptions {
    BenchOptions {
        filter,
        config: String::new(),
        traffic: traffic(3).into(),
        budget: Budget::Iterations(2),
        warmup: 0,
        cache: None,
        streams,
        http_clusters: Vec::new(),
        grpc_clusters: Vec::new(),
        limits: tollgate_host::limits::Limits::default(),
        identity: Default::default(),
    }
}

#[test]
fn the_html_report_holds_the_filter_the_callback_rows_and_the_picture() {
    let path = temp_file(
        "headers-html.wasm",
        &bare::headers_module().expect("assembles"),
    );
    let report = bench::run(&options(path.clone(), 1), None).expect("bench runs");
    let html = report.html();
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    assert!(html.trim_end().ends_with("</html>"));
    let name = path.display().to_string();
    assert!(html.contains(&format!("<h1>tollgate bench: {name}</h1>")));
    for cb in [
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        "proxy_on_log",
    ] {
        assert!(
            html.contains(&format!("<tr class=\"callback\"><td>{cb}</td>")),
            "no row for {cb}"
        );
    }
    // The picture is inline, not linked.
    assert!(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(html.contains("</svg>"));
    assert!(!html.contains("<script") && !html.contains("<link"));
    assert!(html.contains("streams = 1 in flight"));
    // The floor's row is there, with the module it ran.
    assert!(html.contains("<td>floor</td><td>floor (no-op module)</td>"));
}

#[test]
fn more_streams_in_flight_raise_the_peak_of_a_filter_that_allocates_per_stream() {
    let path = temp_file("per-stream.wasm", &per_stream_module());
    let one = bench::run(&options(path.clone(), 1), None).expect("one stream");
    let eight = bench::run(&options(path, 8), None).expect("eight streams");
    assert_eq!(one.filter.streams, 1);
    assert_eq!(eight.filter.streams, 8);
    assert_eq!(one.filter.memory_start, PAGE);
    assert_eq!(eight.filter.memory_start, PAGE);
    // One stream at a time: one page more. Eight alive at once: eight more.
    assert_eq!(one.filter.memory_peak, 2 * PAGE);
    assert_eq!(eight.filter.memory_peak, 9 * PAGE);
    assert_eq!(eight.filter.memory_end, eight.filter.memory_peak);
    // Three exchanges, filled up to one batch of eight.
    assert_eq!(eight.requests_per_pass, 8);
    assert_eq!(eight.filter.request.count, 16);
    assert_eq!(eight.filter.failed_requests, 0);
    // The deterministic counts come from one sequential pass either way.
    assert_eq!(eight.counted_requests, 3);
    assert_eq!(one.filter.counts, eight.filter.counts);
    let text = eight.text();
    assert!(text.contains("streams = 8"), "{text}");
    assert!(text.contains("peak 576 KiB"), "{text}");
    let html = eight.html();
    assert!(html.contains("streams = 8 in flight"));
    // Start, end and peak in the setup table: 64, 576, 576 KiB.
    assert!(
        html.contains("<td>8</td><td>64</td><td>576</td><td>576</td>"),
        "{html}"
    );
}

fn lane(vm: &mut Vm) -> [Lane<'_>; 1] {
    [Lane {
        vm: Some(vm),
        name: "f".into(),
        policy: FailurePolicy::FailClosed,
    }]
}

#[test]
fn interleaved_streams_are_all_alive_at_once_and_end_as_one_at_a_time() {
    let t = traffic(4);
    let inputs: Vec<StreamInput> = t
        .exchanges
        .iter()
        .map(StreamInput::from_recording)
        .collect();
    let prepared: Vec<Prepared<'_>> = inputs.iter().map(Prepared::new).collect();
    let refs: Vec<&Prepared<'_>> = prepared.iter().collect();

    // A filter that adds a response header: same outcomes either way.
    let headers =
        Plugin::from_bytes("headers", &bare::headers_module().expect("assembles")).expect("loads");
    let mut seq_vm = Vm::start(&headers, VmSettings::default()).expect("starts");
    let sequential: Vec<_> = inputs
        .iter()
        .map(|i| stream::run_chain(&mut lane(&mut seq_vm), i))
        .collect();
    let mut vm = Vm::start(&headers, VmSettings::default()).expect("starts");
    vm.set_trace(true);
    vm.take_logs();
    let mut rounds = 0;
    let together = stream::run_interleaved(&mut lane(&mut vm), &refs, |_| rounds += 1);
    assert_eq!(rounds, 5);
    assert_eq!(together.len(), 4);
    for (a, b) in sequential.iter().zip(&together) {
        assert_eq!(a.upstream_request, b.upstream_request);
        assert_eq!(a.client_response, b.client_response);
        assert_eq!(a.steps, b.steps);
        assert!(
            b.client_response
                .headers
                .iter()
                .any(|(k, v)| k == "x-filter" && v == "seen")
        );
    }
    // The callbacks interleave: every request's headers before any response's.
    let calls: Vec<String> = vm
        .take_logs()
        .into_iter()
        .filter(|l| l.message.starts_with("[host->vm] "))
        .map(|l| l.message)
        .collect();
    let first_response = calls
        .iter()
        .position(|c| c.contains("proxy_on_response_headers"))
        .expect("responses delivered");
    let requests_before = calls[..first_response]
        .iter()
        .filter(|c| c.contains("proxy_on_request_headers"))
        .count();
    assert_eq!(requests_before, 4, "{calls:#?}");
    let first_delete = calls
        .iter()
        .position(|c| c.contains("proxy_on_delete"))
        .expect("contexts deleted");
    let responses_before = calls[..first_delete]
        .iter()
        .filter(|c| c.contains("proxy_on_response_headers"))
        .count();
    assert_eq!(responses_before, 4, "{calls:#?}");

    // Four contexts alive at once: the per-stream filter needs four pages.
    let per_stream = Plugin::from_bytes("per-stream", &per_stream_module()).expect("loads");
    let mut vm = Vm::start(&per_stream, VmSettings::default()).expect("starts");
    let mut sizes = Vec::new();
    stream::run_interleaved(&mut lane(&mut vm), &refs, |lanes| {
        if let Some(vm) = lanes[0].vm.as_deref() {
            sizes.push(vm.memory_size());
        }
    });
    assert_eq!(sizes.first(), Some(&(5 * PAGE)), "{sizes:?}");
}

#[test]
fn the_cli_writes_the_html_report_with_streams() {
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    let wasm = temp_file("cli-html.wasm", &bare::headers_module().expect("assembles"));
    let html = temp_file("report.html", b"");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("bench")
        .arg(har)
        .arg("--filter")
        .arg(&wasm)
        .args([
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--no-cache",
            "--streams",
            "4",
        ])
        .arg("--html")
        .arg(&html)
        .output()
        .expect("tollgate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("streams = 4"), "{stdout}");
    let page = std::fs::read_to_string(&html).expect("report written");
    assert!(page.contains(&wasm.display().to_string()));
    assert!(page.contains("streams = 4 in flight"));
    assert!(page.contains("<tr class=\"callback\"><td>proxy_on_response_headers</td>"));
    assert!(page.contains("<svg"));
    let bad = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("bench")
        .arg(har)
        .arg("--filter")
        .arg(&wasm)
        .args(["--streams", "0"])
        .output()
        .expect("tollgate runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--streams must be at least 1"));
}

const IMPORTS: &str = r#"
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// A guest whose request headers callback is `body` (its result included).
fn request_guest(body: &str) -> Vec<u8> {
    super::guest(
        "0_2_1",
        IMPORTS,
        &format!(
            r#"(data (i32.const 1100) "x-added")
               (data (i32.const 1110) "yes")
               (data (i32.const 1130) "denied")
               (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 {body})"#
        ),
    )
}

#[test]
fn the_verdict_only_driver_judges_as_the_replay_report() {
    use tollgate_replay::{Replay, Verdict};
    let mut t = traffic(3);
    // Repeated inline headers, which the codec folds into one before any
    // filter runs: judged the same way by both.
    t.exchanges.push(super::exchange(
        "GET",
        "/folded",
        &[("accept", "text/html"), ("accept", "*/*")],
        b"",
    ));
    let guests: Vec<(&str, Vec<u8>)> = vec![
        ("noop", bare::noop_module().expect("assembles")),
        (
            "adds a response header",
            bare::headers_module().expect("assembles"),
        ),
        (
            "adds a request header",
            request_guest(
                "(drop (call $add (i32.const 0) (i32.const 1100) (i32.const 7) (i32.const 1110) (i32.const 3))) (i32.const 0)",
            ),
        ),
        (
            "answers 403",
            request_guest(
                "(drop (call $local (i32.const 403) (i32.const 1130) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1))) (i32.const 1)",
            ),
        ),
        ("pauses forever", request_guest("(i32.const 1)")),
        ("traps", request_guest("unreachable")),
    ];
    let inputs: Vec<StreamInput> = t
        .exchanges
        .iter()
        .map(StreamInput::from_recording)
        .collect();
    let mut seen = Vec::new();
    for (name, wasm) in guests {
        let report = Replay::module(name, wasm.clone())
            .traffic(t.clone())
            .run()
            .expect("replays");
        let plugin = Plugin::from_bytes(name, &wasm).expect("loads");
        let mut vm = Vm::start(&plugin, VmSettings::default()).expect("starts");
        let mut failed = false;
        for (input, e) in inputs.iter().zip(&report.exchanges) {
            // After a failure the VM is gone (FAIL_CLOSED): no VM in the lane.
            let mut lanes = [Lane {
                vm: (!failed).then_some(&mut vm),
                name: name.into(),
                policy: FailurePolicy::FailClosed,
            }];
            let v = stream::run_chain_verdict(&mut lanes, &Prepared::new(input));
            assert_eq!(v.verdict, e.verdict, "{name}");
            assert_eq!(v.status, e.client_response.status, "{name}");
            assert_eq!(v.reached_upstream, e.upstream_request.is_some(), "{name}");
            failed |= matches!(v.verdict, Verdict::Failed { .. });
        }
        seen.push(report.exchanges[0].verdict.clone());
    }
    // Every kind of verdict was exercised.
    assert!(seen.contains(&Verdict::Passed));
    assert!(seen.contains(&Verdict::Modified));
    assert!(seen.contains(&Verdict::AnsweredLocally { status: 403 }));
    assert!(seen.iter().any(|v| matches!(v, Verdict::Failed { .. })));
}

#[test]
fn replay_reads_modules_through_the_module_cache() {
    use tollgate_host::cache::ModuleCache;
    use tollgate_replay::Replay;
    let dir = std::env::temp_dir().join(format!("tollgate-replay-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = temp_file(
        "replay-cached.wasm",
        &bare::headers_module().expect("assembles"),
    );
    let run = || {
        Replay::filter(&path)
            .module_cache(ModuleCache::at(&dir))
            .traffic(traffic(2))
            .run()
            .expect("replays")
    };
    let first = run();
    let entries = || {
        std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    assert_eq!(entries(), 1, "the compiled module was stored");
    let stamp = || {
        std::fs::read_dir(&dir)
            .expect("cache dir")
            .filter_map(Result::ok)
            .map(|e| e.metadata().and_then(|m| m.modified()).expect("mtime"))
            .next()
    };
    let stored = stamp();
    let second = run();
    assert_eq!(entries(), 1);
    assert_eq!(stamp(), stored, "read back, not written again");
    let verdicts = |r: &tollgate_replay::Report| {
        r.exchanges
            .iter()
            .map(|e| e.verdict.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(verdicts(&first), verdicts(&second));
    assert_eq!(first.filter.path, path);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--stub`: a filter that calls a service is measured on the path it takes
/// when the service answers; without the stub its callouts are refused (an
/// unknown cluster) and no answer callback ever runs.
#[test]
fn stubbed_clusters_answer_the_filters_callouts() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let wasm = PathBuf::from(format!("{target}/filters/ext-authz.wasm"));
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo xtask build` first",
        wasm.display()
    );
    let config = std::fs::read_to_string(format!("{root}/filters/ext-authz/demo.json"))
        .expect("ext-authz demo.json");
    let answers = |options: &BenchOptions| -> u64 {
        let report = bench::run(options, None).expect("bench runs");
        report
            .filter
            .callbacks
            .iter()
            .filter(|c| c.callback == "proxy_on_http_call_response")
            .map(|c| c.calls)
            .sum()
    };
    let mut unstubbed = options(wasm, 1);
    unstubbed.config = config;
    let mut stubbed = unstubbed.clone();
    stubbed.http_clusters = vec![tollgate_host::callouts::HttpClusterStub::respond(
        "authz", 200,
    )];
    assert_eq!(answers(&unstubbed), 0, "no cluster, no answer");
    assert!(answers(&stubbed) >= 3, "every request's check is answered");
}
