//! `tollgate bench` and its library: the parts that do not depend on timing
//! (deterministic counts, baseline comparison logic, reports, bad input).

use std::path::PathBuf;
use std::process::Command;
use tollgate_host::bare;
use tollgate_replay::bench::{self, Baseline, BenchError, BenchOptions, Budget};
use tollgate_traffic::Traffic;

fn traffic(n: usize) -> Traffic {
    Traffic {
        source: Some(PathBuf::from("test traffic")),
        exchanges: (0..n)
            .map(|i| {
                super::exchange(
                    "GET",
                    &format!("/item/{i}"),
                    &[("user-agent", "test/1.0"), ("x-request-id", "abc-123")],
                    b"",
                )
            })
            .collect(),
        warnings: Vec::new(),
    }
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

#[test]
fn fuel_pass_is_deterministic_and_counts_the_boundary() {
    let wasm = bare::headers_module().expect("bundled module assembles");
    let t = traffic(7);
    let (a, per_a) = bench::count_pass("headers.wat", &wasm, "", &t).expect("first pass");
    let (b, per_b) = bench::count_pass("headers.wat", &wasm, "", &t).expect("second pass");
    assert_eq!(a, b, "two metered passes must count the same");
    assert_eq!(per_a, per_b);
    assert!(a.instructions > 0);
    // Three header reads and one header add per request.
    assert_eq!(a.host_calls, 4 * 7);
    // Keys read: ":path" 5 + "user-agent" 10 + "x-request-id" 12; added: "x-filter" 8 + "seen" 4.
    assert_eq!(a.bytes_in, (5 + 10 + 12 + 8 + 4) * 7);
    // Values written: the path, "test/1.0", "abc-123", plus pointer and size (8 bytes) per read.
    let paths: u64 = (0..7).map(|i| format!("/item/{i}").len() as u64).sum();
    assert_eq!(a.bytes_out, paths + (8 + 7 + 3 * 8) * 7);
    let req = per_a
        .iter()
        .find(|(n, _, _)| n == "proxy_on_request_headers")
        .expect("request headers counted");
    assert_eq!(req.1, 7, "one call per request");
}

#[test]
fn the_noop_floor_makes_no_host_calls() {
    let wasm = bare::noop_module().expect("bundled module assembles");
    let (c, _) = bench::count_pass("noop.wat", &wasm, "", &traffic(3)).expect("pass");
    assert_eq!(c.host_calls, 0);
    assert_eq!(c.bytes_in + c.bytes_out, 0);
}

#[test]
fn a_module_against_itself_is_not_a_regression() {
    let path = temp_file(
        "self.wasm",
        &bare::headers_module().expect("bundled module assembles"),
    );
    let options = BenchOptions {
        filter: path.clone(),
        config: String::new(),
        traffic: traffic(5).into(),
        budget: Budget::Iterations(30),
        warmup: 2,
        cache: None,
        streams: 1,
        http_clusters: Vec::new(),
        grpc_clusters: Vec::new(),
        limits: tollgate_host::limits::Limits::default(),
        identity: Default::default(),
    };
    let baseline = Baseline::from_path(&path).expect("a module baseline");
    let mut report = bench::run(&options, Some(&baseline)).expect("bench runs");
    report.apply_threshold(25.0);
    let c = report.comparison.as_ref().expect("a comparison");
    assert!(!c.regression, "self comparison flagged: {c:?}");
    assert!(c.ci_low <= c.ratio && c.ratio <= c.ci_high);
    assert_eq!(report.passes, 30);
    assert_eq!(report.filter.request.count, 150);
    assert_eq!(report.floor.request.count, 150);
    assert_eq!(report.filter.failed_requests, 0);
    // The JSON report reads back as a baseline.
    let json = serde_json::to_string(&report).expect("serialises");
    let saved = temp_file("report.json", json.as_bytes());
    assert!(matches!(
        Baseline::from_path(&saved),
        Ok(Baseline::Report(_, _))
    ));
    let svg = report.svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("proxy_on_request_headers"));
    assert!(report.text().contains("proxy_on_response_headers"));
}

#[test]
fn ratio_interval_brackets_the_ratio() {
    let old = [100.0, 102.0, 98.0, 101.0, 99.0];
    let same = bench::ratio_ci(&old, &old);
    assert!((same.0 - 1.0).abs() < 1e-12);
    assert!(same.1 <= 1.0 && same.2 >= 1.0);
    let doubled: Vec<f64> = old.iter().map(|v| v * 2.0).collect();
    let (r, lo, hi) = bench::ratio_ci(&doubled, &old);
    assert!((r - 2.0).abs() < 1e-12);
    assert!(lo > 1.9 && hi < 2.1, "{lo}..{hi}");
}

#[test]
fn bad_input_is_named() {
    let options = BenchOptions {
        filter: PathBuf::from("/nonexistent/filter.wasm"),
        config: String::new(),
        traffic: traffic(1).into(),
        budget: Budget::Iterations(1),
        warmup: 0,
        cache: None,
        streams: 1,
        http_clusters: Vec::new(),
        grpc_clusters: Vec::new(),
        limits: tollgate_host::limits::Limits::default(),
        identity: Default::default(),
    };
    let e = bench::run(&options, None).expect_err("missing module");
    assert!(e.to_string().contains("/nonexistent/filter.wasm"), "{e}");
    let empty = BenchOptions {
        traffic: traffic(0).into(),
        ..options
    };
    assert!(matches!(
        bench::run(&empty, None),
        Err(BenchError::NoTraffic { .. })
    ));
    let junk = temp_file("junk.json", b"{\"not\": \"a report\"}");
    let e = Baseline::from_path(&junk).expect_err("not a report");
    assert!(e.to_string().contains("junk.json"), "{e}");
}

#[test]
fn cli_rejects_bad_arguments_clearly() {
    let har = concat!(env!("CARGO_MANIFEST_DIR"), "/../../traffic/demo.har");
    let wasm = temp_file("cli.wasm", &bare::noop_module().expect("assembles"));
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("bench")
            .args(args)
            .output()
            .expect("tollgate runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let w = wasm.to_str().expect("utf-8 path");
    let (ok, err) = run(&[har, "--filter", w, "--iterations", "0"]);
    assert!(
        !ok && err.contains("--iterations must be at least 1"),
        "{err}"
    );
    let (ok, err) = run(&[har, "--filter", w, "--duration", "0"]);
    assert!(!ok && err.contains("--duration"), "{err}");
    let (ok, err) = run(&[har, "--filter", w, "--threshold", "5"]);
    assert!(!ok && err.contains("--baseline"), "{err}");
    let (ok, err) = run(&[har, "--filter", "/nonexistent/x.wasm", "--iterations", "1"]);
    assert!(!ok && err.contains("/nonexistent/x.wasm"), "{err}");
    let (ok, out) = run(&[har, "--filter", w, "--iterations", "2", "--warmup", "0"]);
    assert!(ok, "{out}");
}

#[test]
fn the_module_cache_skips_compilation_and_rejects_corrupt_entries() {
    use tollgate_host::cache::{CacheOutcome, ModuleCache};
    use tollgate_host::plugin::Plugin;
    let dir = std::env::temp_dir().join(format!("tollgate-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = ModuleCache::at(&dir);
    let wasm = bare::headers_module().expect("assembles");
    let first = Plugin::from_bytes_cached("h.wasm", &wasm, &cache).expect("compiles");
    assert_eq!(first.cache_outcome(), Some(CacheOutcome::Stored));
    let second = Plugin::from_bytes_cached("h.wasm", &wasm, &cache).expect("loads");
    assert_eq!(second.cache_outcome(), Some(CacheOutcome::Hit));
    // The cached module behaves as the compiled one.
    let t = traffic(2);
    let mut vm = tollgate_host::vm::Vm::start(&second, Default::default()).expect("starts");
    let out = tollgate_host::stream::run(&mut vm, &t.exchanges[0]);
    assert!(
        out.client_response
            .headers
            .iter()
            .any(|(k, v)| k == "x-filter" && v == "seen"),
        "{:?}",
        out.client_response.headers
    );
    // A corrupted entry is ignored and replaced.
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).expect("entry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entries[0], &bytes).expect("corrupt");
    let third = Plugin::from_bytes_cached("h.wasm", &wasm, &cache).expect("recompiles");
    assert_eq!(third.cache_outcome(), Some(CacheOutcome::Stored));
    let _ = std::fs::remove_dir_all(&dir);
}
