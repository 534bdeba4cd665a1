//! `cargo xtask demo`: `traffic/demo.har` replayed through every built filter
//! with its `filters/<name>/demo.json` configuration by `tollgate replay`,
//! summarised in one table.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use serde::Deserialize;

use crate::process;

/// The recording the demo replays, relative to the repository root.
const DEMO_TRAFFIC: &str = "traffic/demo.har";

/// How many failure messages are printed under the table.
const FAILURES_SHOWN: usize = 5;

/// Builds the filters and `tollgate`, replays the demo traffic through each
/// filter and prints the table.
pub fn run() -> Result<()> {
    let filters = crate::build::run()?;
    let tollgate = crate::tollgate::build()?;

    let mut rows = Vec::new();
    for (index, filter) in filters.iter().enumerate() {
        let mut command = Command::new(&tollgate);
        command.current_dir(crate::root()).args(replay_args(
            &filter.name,
            &crate::build::relative(&filter.wasm),
        )?);
        crate::step(format!(
            "[{}/{}] {} {}",
            index + 1,
            filters.len(),
            crate::tollgate::BIN,
            process::describe(&command)
                .split_once(' ')
                .map_or("", |(_, args)| args)
        ));
        let started = Instant::now();
        // tollgate's progress bar and warnings go to the terminal (stderr); the
        // JSON report comes back on stdout.
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start {}", tollgate.display()))?;
        if !output.status.success() {
            bail!(
                "`tollgate replay` failed on {} ({}): see its error above",
                filter.name,
                output.status
            );
        }
        let report: ReplayReport = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "`tollgate replay --format json` on {} printed a report xtask does not understand",
                filter.name
            )
        })?;
        let s = &report.summary;
        println!(
            "    {} requests: {} passed, {} modified, {} answered locally, {} failed ({:.1?})",
            s.requests,
            s.passed,
            s.modified,
            s.answered_locally,
            s.failed,
            started.elapsed()
        );
        rows.push((filter.name.clone(), report));
    }

    println!("{}", table(&rows));
    for (name, report) in &rows {
        let failures: Vec<String> = report
            .exchanges
            .iter()
            .filter_map(|exchange| match &exchange.verdict {
                Verdict {
                    kind,
                    message: Some(message),
                } if kind == "failed" => Some(format!("{}: {message}", exchange.id)),
                _ => None,
            })
            .collect();
        for failure in failures.iter().take(FAILURES_SHOWN) {
            println!("{name}: failed {failure}");
        }
        if failures.len() > FAILURES_SHOWN {
            println!(
                "{name}: ... and {} more failures",
                failures.len() - FAILURES_SHOWN
            );
        }
    }
    Ok(())
}

/// The arguments of `tollgate replay` for one filter (paths relative to the
/// repository root, so that the step line is a command one can copy).
fn replay_args(filter: &str, wasm: &str) -> Result<Vec<String>> {
    let dir = format!("filters/{filter}");
    let config_path = format!("{dir}/demo.json");
    let config = std::fs::read_to_string(crate::root().join(&config_path)).with_context(|| {
        format!("could not read {config_path} (every filter needs a demo.json configuration)")
    })?;
    let mut args = vec![
        "replay".to_string(),
        DEMO_TRAFFIC.to_string(),
        "--filter".to_string(),
        wasm.to_string(),
        "--config".to_string(),
        format!("@{config_path}"),
    ];
    for stub in stub_args(&dir, &config)? {
        args.push("--stub".to_string());
        args.push(stub);
    }
    args.extend(["--format".to_string(), "json".to_string()]);
    Ok(args)
}

/// The demo has no services behind the filters' callouts; a filter that calls one
/// (an authorization service, a JWKS endpoint) ships `filters/<name>/demo-stub.yaml`,
/// a stub in the format of a suite's `clusters:` entry (`status`, `headers`, `body`;
/// harness/docs/suite.md): the answer of every cluster its `demo.json` names
/// (a `"cluster"` field at any depth), given to `tollgate replay` as
/// `--stub CLUSTER=filters/<name>/demo-stub.yaml`, the file `tollgate envoy --stub`
/// takes too. Without it, callouts fail as in an Envoy whose cluster is missing.
fn stub_args(dir: &str, config: &str) -> Result<Vec<String>> {
    let stub = format!("{dir}/demo-stub.yaml");
    if !crate::root().join(&stub).is_file() {
        return Ok(Vec::new());
    }
    let config: serde_json::Value = serde_json::from_str(config)
        .with_context(|| format!("{dir}/demo.json: not JSON (needed to find its clusters)"))?;
    let mut clusters = Vec::new();
    clusters_named(&config, &mut clusters);
    if clusters.is_empty() {
        bail!("{stub} answers callouts, but {dir}/demo.json names no \"cluster\" to call");
    }
    Ok(clusters
        .into_iter()
        .map(|cluster| format!("{cluster}={stub}"))
        .collect())
}

/// Every string value of a `"cluster"` field in a JSON document, once each, in order.
fn clusters_named(value: &serde_json::Value, clusters: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                match field {
                    serde_json::Value::String(name) if key == "cluster" => {
                        if !clusters.contains(name) {
                            clusters.push(name.clone());
                        }
                    }
                    _ => clusters_named(field, clusters),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                clusters_named(item, clusters);
            }
        }
        _ => {}
    }
}

/// What the demo reads of `tollgate replay --format json`.
#[derive(Debug, Deserialize)]
struct ReplayReport {
    filter: ReportFilter,
    exchanges: Vec<Exchange>,
    summary: Summary,
}

#[derive(Debug, Deserialize)]
struct ReportFilter {
    wasm_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Exchange {
    id: String,
    verdict: Verdict,
}

#[derive(Debug, Deserialize)]
struct Verdict {
    kind: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Summary {
    requests: u64,
    passed: u64,
    modified: u64,
    answered_locally: u64,
    failed: u64,
    p50_ns: u64,
    p99_ns: u64,
}

/// The summary table: one row per filter.
fn table(rows: &[(String, ReplayReport)]) -> Table {
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
        "filter",
        "wasm (KiB)",
        "requests",
        "passed",
        "modified",
        "answered locally",
        "failed",
        "cost p50 (µs)",
        "cost p99 (µs)",
    ]);
    for (name, report) in rows {
        let s = &report.summary;
        table.add_row(vec![
            name.clone(),
            format!("{:.1}", report.filter.wasm_bytes as f64 / 1024.0),
            s.requests.to_string(),
            s.passed.to_string(),
            s.modified.to_string(),
            s.answered_locally.to_string(),
            s.failed.to_string(),
            micros(s.p50_ns),
            micros(s.p99_ns),
        ]);
    }
    for column in 1..9 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn micros(nanos: u64) -> String {
    format!("{:.1}", nanos as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::replay_args;

    #[test]
    fn demo_stubs_answer_the_clusters_the_demo_configs_name() -> anyhow::Result<()> {
        let args = replay_args("ext-authz", "target/filters/ext-authz.wasm")?;
        assert_eq!(
            args,
            [
                "replay",
                "traffic/demo.har",
                "--filter",
                "target/filters/ext-authz.wasm",
                "--config",
                "@filters/ext-authz/demo.json",
                "--stub",
                "authz=filters/ext-authz/demo-stub.yaml",
                "--format",
                "json"
            ]
        );
        let jwt = replay_args("jwt-auth", "target/filters/jwt-auth.wasm")?;
        assert!(jwt.contains(&"jwks=filters/jwt-auth/demo-stub.yaml".to_string()));
        let headers = replay_args("headers", "target/filters/headers.wasm")?;
        assert!(!headers.contains(&"--stub".to_string()));
        Ok(())
    }

    #[test]
    fn a_stub_without_a_cluster_to_answer_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-demo-stub-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        std::fs::write(dir.join("demo-stub.yaml"), "status: 200\n").ok();
        let error = super::stub_args(&dir.display().to_string(), r#"{"header": "x"}"#)
            .expect_err("no cluster named");
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            error.to_string().contains("names no \"cluster\""),
            "{error}"
        );
    }
}
