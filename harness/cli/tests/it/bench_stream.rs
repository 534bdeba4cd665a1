//! `tollgate bench` streams a JSON-lines recording: re-read pass by pass in
//! batches of `bench::BATCH` exchanges, never held whole, with the same
//! counts as the same traffic in memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use tollgate_host::bare;
use tollgate_replay::bench::{self, BenchOptions, BenchReport, Budget, TrafficSource};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-bench-stream-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A JSON-lines recording of `n` exchanges whose paths (and so the filter's
/// work) differ one from the next.
fn write_recording(path: &Path, n: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..n {
        let e = super::exchange(
            "GET",
            &format!("/item/{i}/{}", "x".repeat(i % 17)),
            &[("user-agent", "test/1.0"), ("x-request-id", "abc-123")],
            b"",
        );
        let line = serde_json::to_string(&tollgate_traffic::native::to_value(&e)).expect("json");
        writeln!(out, "{line}").expect("write");
    }
    out.flush().expect("flush");
}

fn options(filter: PathBuf, traffic: TrafficSource, streams: usize) -> BenchOptions {
    BenchOptions {
        filter,
        config: String::new(),
        traffic,
        budget: Budget::Iterations(1),
        warmup: 1,
        cache: None,
        streams,
        http_clusters: Vec::new(),
        grpc_clusters: Vec::new(),
        limits: tollgate_host::limits::Limits::default(),
        identity: Default::default(),
    }
}

/// What does not depend on timing: requests, per-callback calls and
/// instructions, host calls and bytes across the boundary.
fn counts(r: &BenchReport) -> impl PartialEq + std::fmt::Debug {
    let per = |f: &bench::FilterBench| {
        (
            f.counts,
            f.request.count,
            f.failed_requests,
            f.callbacks
                .iter()
                .map(|c| (c.callback.clone(), c.calls, c.instructions))
                .collect::<Vec<_>>(),
        )
    };
    (
        r.requests_per_pass,
        r.counted_requests,
        r.passes,
        per(&r.filter),
        per(&r.floor),
    )
}

#[test]
fn a_streamed_recording_counts_as_the_same_traffic_in_memory() {
    let dir = temp_dir("lib");
    let n = 2 * bench::BATCH + 37;
    let path = dir.join("big.jsonl");
    write_recording(&path, n);
    let wasm = dir.join("headers.wasm");
    std::fs::write(&wasm, bare::headers_module().expect("assembles")).expect("write");

    let (source, warnings) = TrafficSource::open(&path).expect("opens");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        matches!(source, TrafficSource::Streamed(_)),
        "a JSON-lines file is streamed, not loaded: {source:?}"
    );
    let memory: TrafficSource = tollgate_traffic::load(&path).expect("loads").into();
    for streams in [1, 4, 7] {
        let streamed = bench::run(&options(wasm.clone(), source.clone(), streams), None)
            .expect("streamed bench runs");
        let in_memory = bench::run(&options(wasm.clone(), memory.clone(), streams), None)
            .expect("in-memory bench runs");
        assert_eq!(streamed.counted_requests, n);
        assert_eq!(streamed.requests_per_pass, n.div_ceil(streams) * streams);
        assert_eq!(
            streamed.filter.request.count as usize,
            streamed.requests_per_pass
        );
        let headers = streamed
            .filter
            .callbacks
            .iter()
            .find(|c| c.callback == "proxy_on_request_headers")
            .expect("request headers measured");
        assert_eq!(headers.calls as usize, n, "one metered call per exchange");
        assert!(headers.instructions > 0);
        assert_eq!(counts(&streamed), counts(&in_memory), "streams = {streams}");
        assert_eq!(streamed.traffic, path.display().to_string());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_streams_a_large_recording_and_refuses_a_pipe_it_cannot_reread() {
    let dir = temp_dir("cli");
    let n = bench::BATCH + 501;
    let path = dir.join("big.jsonl");
    write_recording(&path, n);
    let wasm = dir.join("headers.wasm");
    std::fs::write(&wasm, bare::headers_module().expect("assembles")).expect("write");
    let bench_of = |traffic: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("bench")
            .arg(traffic)
            .arg("--filter")
            .arg(&wasm)
            .args(["--iterations", "1", "--warmup", "0", "--no-cache"])
            .args(["--streams", "4", "--format", "json"])
            .output()
            .expect("tollgate runs")
    };
    let out = bench_of(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: BenchReport = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report.counted_requests, n);
    assert_eq!(report.requests_per_pass, n.div_ceil(4) * 4);
    // The library's streamed run of the same file counts the same.
    let (source, _) = TrafficSource::open(&path).expect("opens");
    let lib = bench::run(&options(wasm.clone(), source, 4), None).expect("runs");
    assert_eq!(report.filter.counts, lib.filter.counts);

    // A pipe cannot be read once per pass: refused, naming it and why.
    let fifo = dir.join("pipe.jsonl");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        let bytes = std::fs::read(&path).expect("read");
        std::thread::spawn(move || {
            // Errors (the reader went away) are expected.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                let _ = f.write_all(&bytes);
            }
        })
    };
    let out = bench_of(&fifo);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&fifo.display().to_string()), "{stderr}");
    assert!(stderr.contains("must be a regular file"), "{stderr}");
    drop(writer);
    let _ = std::fs::remove_dir_all(&dir);
}
