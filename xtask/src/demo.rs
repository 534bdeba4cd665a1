//! `cargo xtask demo`: `traffic/demo.har` replayed through every built filter
//! with its `filters/<name>/demo.json` configuration, summarised in one table.

use std::time::Duration;

use anyhow::{Context, Result};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use indicatif::{ProgressBar, ProgressStyle};
use tollgate_harness::host::HttpCallStub;
use tollgate_harness::replay::{Replay, Report, Verdict};
use tollgate_harness::traffic::har;

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
/// (an authorization service, say) may ship `filters/<name>/demo-callout.json`,
/// `{"status": 200, "headers": [["name", "value"]], "body": "..."}`, the answer
/// every callout gets in the demo. Without it, callouts fail as in an Envoy
/// whose cluster is missing.
fn callout_answer(filter: &str) -> Result<Option<HttpCallStub>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Answer {
        status: u16,
        #[serde(default)]
        headers: Vec<(String, String)>,
        #[serde(default)]
        body: String,
    }
    let path = crate::root()
        .join("filters")
        .join(filter)
        .join("demo-callout.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("could not read {}", path.display()));
        }
    };
    let answer: Answer = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a callout answer", path.display()))?;
    let mut headers = vec![(":status".to_string(), answer.status.to_string())];
    headers.extend(answer.headers);
    Ok(Some(HttpCallStub {
        headers,
        body: answer.body.into_bytes(),
    }))
}
