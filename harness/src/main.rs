//! The `tollgate` command: replay recorded traffic through a proxy-wasm
//! filter (`tollgate replay`) or describe a module (`tollgate inspect`).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use tollgate_harness::host::LogLevel;
use tollgate_harness::plugin;
use tollgate_harness::replay::{Replay, Report, Verdict};
use tollgate_harness::traffic::{HttpRequest, HttpResponse, har};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Run proxy-wasm filters outside Envoy: replay recorded traffic, inspect modules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a HAR recording through a filter and report what it changed.
    Replay {
        /// The recording (HAR file).
        traffic: PathBuf,
        /// The filter module (.wasm).
        #[arg(long)]
        filter: PathBuf,
        /// Plugin configuration: inline JSON, or @path to read it from a file.
        #[arg(long)]
        config: Option<String>,
        /// VM configuration: inline, or @path.
        #[arg(long)]
        vm_config: Option<String>,
        /// Lowest guest log level shown (trace, debug, info, warn, error, critical).
        #[arg(long, default_value = "info")]
        log_level: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show a module's ABI version, exports, imports, and imports the host lacks.
    Inspect {
        /// The module (.wasm).
        module: PathBuf,
    },
}

fn value_arg(v: &str, flag: &str) -> Result<String> {
    match v.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("--{flag}: cannot read {path}"))
        }
        None => Ok(v.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Replay {
            traffic,
            filter,
            config,
            vm_config,
            log_level,
            format,
        } => replay(&traffic, &filter, config, vm_config, &log_level, format),
        Command::Inspect { module } => inspect(&module),
    }
}

fn replay(
    traffic_path: &Path,
    filter: &Path,
    config: Option<String>,
    vm_config: Option<String>,
    log_level: &str,
    format: Format,
) -> Result<()> {
    let level: LogLevel = log_level
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--log-level")?;
    let traffic = har::load(traffic_path)?;
    for w in &traffic.warnings {
        eprintln!("warning: {w}");
    }
    let mut replay = Replay::filter(filter).traffic(traffic).log_level(level);
    if let Some(c) = config {
        replay = replay.config(value_arg(&c, "config")?);
    }
    if let Some(c) = vm_config {
        replay = replay.vm_config(value_arg(&c, "vm-config")?);
    }
    let report = replay.run()?;
    match format {
        Format::Text => print_text(&report),
        Format::Json => println!("{}", serde_json::to_string_pretty(&to_json(&report))?),
    }
    Ok(())
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Passed => "passed".into(),
        Verdict::Modified => "modified".into(),
        Verdict::AnsweredLocally { status } => format!("answered locally ({status})"),
        Verdict::Failed { .. } => "FAILED".into(),
    }
}

fn print_text(report: &Report) {
    println!(
        "filter {} ({} bytes, proxy-wasm ABI {})",
        report.filter.path.display(),
        report.filter.wasm_bytes,
        report.filter.abi
    );
    for l in &report.startup_logs {
        println!("  [start] {:<8} {}", l.level, l.message);
    }
    for e in &report.exchanges {
        let target = e
            .upstream_request
            .as_ref()
            .map(|r| format!("{} {}{}", r.method, r.authority, r.path))
            .unwrap_or_else(|| "(not sent upstream)".into());
        println!(
            "{}: {} -> {} [{}] guest {:?}",
            e.id,
            target,
            e.client_response.status,
            verdict_text(&e.verdict),
            e.cost
        );
        if let Verdict::Failed { message } = &e.verdict {
            for line in message.lines() {
                println!("    ! {line}");
            }
        }
        for c in &e.changes {
            println!("    * {c}");
        }
        for l in &e.logs {
            println!("    {:<8} {}", l.level, l.message);
        }
    }
    let s = report.summary();
    println!(
        "\n{} requests: {} passed, {} modified, {} answered locally, {} failed; guest time p50 {:?}, p99 {:?}",
        s.requests, s.passed, s.modified, s.answered_locally, s.failed, s.p50, s.p99
    );
}

fn headers_json(h: &[(String, String)]) -> serde_json::Value {
    h.iter().map(|(k, v)| serde_json::json!([k, v])).collect()
}

fn body_json(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::json!({ "text": s }),
        Err(_) => {
            use base64::Engine;
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    }
}

fn request_json(r: &HttpRequest) -> serde_json::Value {
    serde_json::json!({
        "method": r.method, "scheme": r.scheme, "authority": r.authority, "path": r.path,
        "headers": headers_json(&r.headers), "body": body_json(&r.body),
    })
}

fn response_json(r: &HttpResponse) -> serde_json::Value {
    serde_json::json!({ "status": r.status, "headers": headers_json(&r.headers), "body": body_json(&r.body) })
}

fn to_json(report: &Report) -> serde_json::Value {
    let s = report.summary();
    let exchanges: Vec<serde_json::Value> = report
        .exchanges
        .iter()
        .map(|e| {
            let verdict = match &e.verdict {
                Verdict::Passed => serde_json::json!({ "kind": "passed" }),
                Verdict::Modified => serde_json::json!({ "kind": "modified" }),
                Verdict::AnsweredLocally { status } => serde_json::json!({ "kind": "answered_locally", "status": status }),
                Verdict::Failed { message } => serde_json::json!({ "kind": "failed", "message": message }),
            };
            serde_json::json!({
                "id": e.id,
                "verdict": verdict,
                "upstream_request": e.upstream_request.as_ref().map(request_json),
                "client_response": response_json(&e.client_response),
                "changes": e.changes,
                "cost_ns": u64::try_from(e.cost.as_nanos()).unwrap_or(u64::MAX),
                "logs": e.logs.iter().map(|l| serde_json::json!({ "level": l.level, "message": l.message })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "filter": { "path": report.filter.path, "wasm_bytes": report.filter.wasm_bytes, "abi": report.filter.abi },
        "startup_logs": report.startup_logs.iter().map(|l| serde_json::json!({ "level": l.level, "message": l.message })).collect::<Vec<_>>(),
        "exchanges": exchanges,
        "summary": {
            "requests": s.requests, "passed": s.passed, "modified": s.modified,
            "answered_locally": s.answered_locally, "failed": s.failed,
            "p50_ns": u64::try_from(s.p50.as_nanos()).unwrap_or(u64::MAX),
            "p99_ns": u64::try_from(s.p99.as_nanos()).unwrap_or(u64::MAX),
        },
    })
}

fn inspect(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let info = plugin::inspect(&path.display().to_string(), &bytes)?;
    println!("module {} ({} bytes)", path.display(), bytes.len());
    match info.abi {
        Some(abi) => println!("proxy-wasm ABI {abi}"),
        None => println!("not a proxy-wasm module (no proxy_abi_version_* export)"),
    }
    println!("exports ({}):", info.exports.len());
    for (name, kind) in &info.exports {
        println!("  {kind:<6} {name}");
    }
    println!("imports ({}):", info.imports.len());
    for i in &info.imports {
        let mark = if i.problem.is_some() { "MISSING" } else { "ok" };
        println!("  {mark:<7} {}.{} ({})", i.module, i.name, i.kind);
    }
    let unknown = info.unknown_imports();
    if unknown.is_empty() {
        println!("all imports are provided by the host");
    } else {
        println!("imports the host does not provide ({}):", unknown.len());
        for u in &unknown {
            println!("  {u}");
        }
        bail!("{} imports the host does not provide", path.display());
    }
    Ok(())
}
