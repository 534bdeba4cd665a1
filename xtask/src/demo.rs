//! `cargo xtask demo`: `traffic/demo.har` replayed through every built filter
//! with its `filters/<name>/demo.json` configuration, summarised in one table.

use std::time::Duration;

use anyhow::{Context, Result};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use indicatif::{ProgressBar, ProgressStyle};
use tollgate_host::callouts::HttpAnswer;
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Report, Verdict};
use tollgate_traffic::har;

/// How many failure messages are printed under the table.
const FAILURES_SHOWN: usize = 5;

/// Builds the filters, replays the demo traffic and prints the table.
pub fn run() -> Result<()> {
    let filters = crate::build::run()?;

    let har_path = crate::root().join("traffic").join("demo.har");
    crate::step(format!("loading {}", crate::build::relative(&har_path)));
    let traffic =
        har::load(&har_path).with_context(|| format!("could not load {}", har_path.display()))?;
    println!("    {} exchange(s)", traffic.exchanges.len());
    for warning in &traffic.warnings {
        println!("    warning: {warning}");
    }

    let mut configs = Vec::new();
    for filter in &filters {
        let path = crate::root()
            .join("filters")
            .join(&filter.name)
            .join("demo.json");
        let config = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "could not read {} (every filter needs a demo.json configuration)",
                path.display()
            )
        })?;
        configs.push((config, callout_answer(&filter.name)?));
    }

    crate::step(format!("replaying through {} filter(s)", filters.len()));
    let per_filter = traffic.exchanges.len() as u64;
    let progress = ProgressBar::new(per_filter * filters.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("    {bar:40} {pos}/{len} exchanges {msg}")
            .context("invalid progress bar template")?,
    );
    let mut reports = Vec::new();
    for (index, (filter, (config, callout))) in filters.iter().zip(configs).enumerate() {
        progress.set_message(filter.name.clone());
        let base = per_filter * index as u64;
        let bar = progress.clone();
        let mut replay = Replay::filter(&filter.wasm)
            .config(config)
            .traffic(traffic.clone())
            .on_progress(move |done: usize, _total: usize| bar.set_position(base + done as u64));
        if let Some(stub) = callout {
            replay = replay.http_call_stub(stub);
        }
        let report = replay.run();
        match report {
            Ok(report) => reports.push((filter.name.clone(), report)),
            Err(error) => {
                progress.abandon();
                return Err(error).with_context(|| {
                    format!(
                        "replaying {} through {} failed",
                        har_path.display(),
                        filter.wasm.display()
                    )
                });
            }
        }
    }
    progress.finish_and_clear();

    println!("{}", table(&reports));
    for (name, report) in &reports {
        let failures: Vec<String> = report
            .exchanges
            .iter()
            .filter_map(|exchange| match &exchange.verdict {
                Verdict::Failed { message } => Some(format!("{}: {message}", exchange.id)),
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

/// The summary table: one row per filter.
fn table(reports: &[(String, Report)]) -> Table {
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
    for (name, report) in reports {
        let summary = report.summary();
        table.add_row(vec![
            name.clone(),
            format!("{:.1}", report.filter.wasm_bytes as f64 / 1024.0),
            summary.requests.to_string(),
            summary.passed.to_string(),
            summary.modified.to_string(),
            summary.answered_locally.to_string(),
            summary.failed.to_string(),
            micros(summary.p50),
            micros(summary.p99),
        ]);
    }
    for column in 1..9 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

/// The demo has no services behind the filters' callouts; a filter that calls one
/// (an authorization service, a JWKS endpoint) ships `filters/<name>/demo-stub.yaml`,
/// a stub in the format of a suite's `clusters:` entry (`status`, `headers`, `body`;
/// harness/docs/suite.md), the answer every callout gets in the demo. The same file
/// is what `tollgate replay --stub` and `tollgate envoy --stub` serve. Without it,
/// callouts fail as in an Envoy whose cluster is missing.
fn callout_answer(filter: &str) -> Result<Option<HttpCallStub>> {
    let path = crate::root()
        .join("filters")
        .join(filter)
        .join("demo-stub.yaml");
    if !path.is_file() {
        return Ok(None);
    }
    let (http, _) = tollgate_replay::suite::stub_arg(&format!("demo={}", path.display()))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}: not a stub", path.display()))?;
    match http.map(|stub| stub.answer) {
        Some(HttpAnswer::Response {
            status,
            headers,
            body,
            ..
        }) => {
            let mut all = vec![(":status".to_string(), status.to_string())];
            all.extend(headers);
            Ok(Some(HttpCallStub { headers: all, body }))
        }
        _ => anyhow::bail!(
            "{}: the demo stub must be a response (status, headers, body), not a failure or gRPC",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::callout_answer;
    use anyhow::Context;

    #[test]
    fn demo_stubs_become_the_callout_answer() -> anyhow::Result<()> {
        let authz = callout_answer("ext-authz")?.context("ext-authz ships demo-stub.yaml")?;
        assert_eq!(authz.headers[0], (":status".into(), "200".into()));
        assert!(
            authz
                .headers
                .contains(&("x-auth-user".into(), "demo-user".into()))
        );
        let jwks = callout_answer("jwt-auth")?.context("jwt-auth ships demo-stub.yaml")?;
        let keys: serde_json::Value = serde_json::from_slice(&jwks.body)?;
        assert!(keys["keys"].as_array().is_some_and(|k| !k.is_empty()));
        assert!(callout_answer("headers")?.is_none());
        Ok(())
    }
}
