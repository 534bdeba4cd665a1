//! `bench/envoy-probes/probe.wat`, the module `bench/envoy-probes/run.sh` prices Envoy's host
//! calls with, does what its letters say: checked in the harness on `traffic/demo.har` (the
//! probe's figures are only as good as this).

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use tollgate_replay::Replay;
use tollgate_replay::bench::{self, BenchOptions, Budget};
use tollgate_tests::paths;
use tollgate_traffic::{Traffic, har};

/// The probe's source.
fn source() -> Result<String> {
    let path = paths::root().join("bench/envoy-probes/probe.wat");
    std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))
}

/// The probe as `run.sh` builds it: as written, or with the `;;+delete` line uncommented.
fn probe(delete: bool) -> Result<Vec<u8>> {
    let mut text = source()?;
    if delete {
        ensure!(
            text.contains(";;+delete "),
            "probe.wat has no `;;+delete` line"
        );
        text = text.replace(";;+delete ", "");
    }
    wat::parse_str(&text).context("probe.wat does not assemble")
}

fn demo() -> Result<Traffic> {
    Ok(har::load(&paths::root().join("traffic/demo.har"))?)
}

/// Each exchange's (upstream request headers, client response headers) with the probe run with
/// `config`.
type Maps = Vec<(Vec<(String, String)>, Vec<(String, String)>)>;

fn maps(config: &str) -> Result<Maps> {
    let report = Replay::module("probe.wasm", probe(false)?)
        .config(config)
        .traffic(demo()?)
        .run()?;
    report
        .exchanges
        .iter()
        .map(|e| {
            let upstream = e
                .upstream_request
                .as_ref()
                .with_context(|| format!("{}: no upstream request", e.id))?;
            Ok((upstream.headers.clone(), e.client_response.headers.clone()))
        })
        .collect()
}

fn probes(from: usize, count: usize) -> Vec<(String, String)> {
    (from..from + count)
        .map(|i| (format!("x-probe-{i}"), "1".to_string()))
        .collect()
}

/// `p` then `w` writes the map read back as it was, with the pairs `n` queued after it, on
/// both sides; `|` patterns take turns by stream; `a` adds `x-probe-<position>`.
#[test]
fn whole_map_writes_and_patterns_change_the_maps_as_documented() -> Result<()> {
    let floor = maps("")?;
    let written = maps("pnnnwPNNNW")?;
    ensure!(floor.len() == written.len() && !floor.is_empty());
    for (i, ((request, response), (request_after, response_after))) in
        floor.iter().zip(&written).enumerate()
    {
        let mut expected = request.clone();
        expected.extend(probes(1, 3));
        ensure!(
            *request_after == expected,
            "exchange {i}: request {request_after:?}, expected {expected:?}"
        );
        let mut expected = response.clone();
        expected.extend(probes(6, 3));
        ensure!(
            *response_after == expected,
            "exchange {i}: response {response_after:?}, expected {expected:?}"
        );
    }
    // Two patterns: even streams add x-probe-0 to the request and x-probe-1 to the response,
    // odd ones nothing.
    let alternating = maps("aA|")?;
    for (i, ((request, response), (request_after, response_after))) in
        floor.iter().zip(&alternating).enumerate()
    {
        let (mut request, mut response) = (request.clone(), response.clone());
        if i % 2 == 0 {
            request.extend(probes(0, 1));
            response.extend(probes(1, 1));
        }
        ensure!(
            *request_after == request && *response_after == response,
            "exchange {i}: {request_after:?} / {response_after:?}"
        );
    }
    Ok(())
}

/// `x` runs 10,128 counted instructions and no host call (the figure `bench.md` prices an
/// instruction with); the `+delete` build exports `proxy_on_delete` and nothing else more.
#[test]
fn the_burn_letter_and_the_delete_build_are_what_run_sh_says() -> Result<()> {
    let dir = paths::work_dir()?.join(format!("envoy-probes-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("probe.wasm");
    std::fs::write(&file, probe(false)?)?;
    let counts = |config: &str| -> Result<(u64, u64, usize)> {
        let report = bench::run(
            &BenchOptions {
                filter: file.clone(),
                config: config.into(),
                traffic: demo()?.into(),
                budget: Budget::Iterations(1),
                warmup: 0,
                cache: None,
                streams: 1,
                http_clusters: Vec::new(),
                grpc_clusters: Vec::new(),
                limits: Default::default(),
                identity: Default::default(),
            },
            None,
        )?;
        let k = report.filter.counts;
        Ok((k.instructions, k.host_calls, report.counted_requests))
    };
    let (floor, floor_calls, requests) = counts("")?;
    let (burnt, burnt_calls, _) = counts("xX")?;
    ensure!(requests > 0 && floor_calls == 0 && burnt_calls == 0);
    ensure!(
        burnt - floor == 2 * 10_128 * requests as u64,
        "x burns {} instructions per letter, probe.wat and bench.md say 10,128",
        (burnt - floor) as f64 / (2 * requests) as f64
    );

    let exports = |wasm: &[u8]| -> Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::ExportSection(section) = payload? {
                for export in section {
                    names.insert(export?.name.to_string());
                }
            }
        }
        Ok(names)
    };
    let plain = exports(&probe(false)?)?;
    let with_delete = exports(&probe(true)?)?;
    ensure!(!plain.contains("proxy_on_delete"), "{plain:?}");
    let added: Vec<&String> = with_delete.difference(&plain).collect();
    ensure!(added == ["proxy_on_delete"], "{added:?}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
