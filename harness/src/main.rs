//! The `tollgate` command: replay recorded traffic through a proxy-wasm
//! filter (`tollgate replay`) or describe a module (`tollgate inspect`).

#[path = "cli/bench.rs"]
mod bench_cli;
#[path = "cli/chain_args.rs"]
mod chain_args;
#[path = "cli/envoy.rs"]
mod envoy_cli;
#[path = "cli/ship.rs"]
mod ship_cli;
#[path = "cli/test.rs"]
mod test_cli;
#[path = "cli/traffic.rs"]
mod traffic_cli;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use tollgate_harness::host::LogLevel;
use tollgate_harness::plugin;
use tollgate_harness::replay::{Replay, Report, Verdict};
use tollgate_harness::traffic::{HttpRequest, HttpResponse};

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
    /// Replay a recording through a filter and report what it changed.
    Replay {
        /// The recording: HAR, Envoy tap file or folder, native YAML/JSON/JSONL.
        traffic: PathBuf,
        /// Skip unusable entries with a warning instead of failing.
        #[arg(long)]
        lenient: bool,
        /// Stream: read, replay and report one exchange at a time (constant
        /// memory for any size; JSON lines are read lazily). Text output only.
        #[arg(long)]
        stream: bool,
        /// With --stream: print only the summary.
        #[arg(long, requires = "stream")]
        quiet: bool,
        /// The filter module (.wasm); repeat for a chain (request in order,
        /// response in reverse, as Envoy's filter manager).
        #[arg(long, required = true)]
        filter: Vec<PathBuf>,
        /// Plugin configuration of the --filter before it: inline JSON, or
        /// @path to read it from a file.
        #[arg(long)]
        config: Vec<String>,
        /// VM configuration of the --filter before it: inline, or @path.
        #[arg(long)]
        vm_config: Vec<String>,
        /// Failure policy of the --filter before it: FAIL_CLOSED (default),
        /// FAIL_OPEN, FAIL_RELOAD.
        #[arg(long)]
        failure_policy: Vec<String>,
        /// Answer the callouts to a cluster: CLUSTER=FILE, FILE a YAML or JSON
        /// stub as a suite's `clusters:` entry (status, headers, body,
        /// trailers, delay_ms, failure, grpc); repeat for more clusters.
        #[arg(long, value_name = "CLUSTER=FILE")]
        stub: Vec<String>,
        /// Worker VMs per filter (Envoy runs one per worker thread); exchanges
        /// go to them in turn, sharing shared data and queues.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Log every call across the boundary, both ways, with its arguments and
        /// return value, in the shape of Envoy's `-l trace`
        /// (`[host->vm] proxy_on_request_headers(2, 8, 1)`,
        /// `[vm->host] env.proxy_log(1, 1088192, 49)`); see harness/docs/trace.md.
        #[arg(long)]
        trace: bool,
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
    /// Package a filter as OCI image layouts (Istio's compat form and the Wasm OCI artifact).
    Package(ship_cli::PackageArgs),
    /// Write an Istio WasmPlugin (and optionally an Envoy bootstrap) for a filter.
    Manifest(ship_cli::ManifestArgs),
    /// Check WasmPlugin manifests against the CRD's schema and CEL rules.
    Validate(ship_cli::ValidateArgs),
    /// Run declarative test suites (YAML) against filters; non-zero exit on failure.
    Test(test_cli::TestArgs),
    /// Inspect, convert, filter or anonymize recordings.
    #[command(subcommand)]
    Traffic(traffic_cli::TrafficCommand),
    /// Record live traffic through Envoy (its tap filter) into a recording Tollgate replays.
    Record(traffic_cli::RecordArgs),
    /// Measure a filter's cost per request and per callback above the harness floor.
    Bench(bench_cli::BenchArgs),
    /// Send a recording through the real Envoy and diff it with the harness; --compare measures Envoy CPU per request.
    Envoy(envoy_cli::EnvoyArgs),
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
    // Ctrl-C / SIGTERM remove the temporary files of outputs not yet
    // written (harness/src/atomic_write.rs); the targets are never touched.
    if let Err(e) = tollgate_harness::atomic_write::cleanup_on_signals() {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    match cli.command {
        Command::Replay {
            traffic,
            lenient,
            stream,
            quiet,
            filter,
            config,
            vm_config,
            failure_policy,
            stub,
            workers,
            trace,
            log_level,
            format,
        } => replay(
            &traffic,
            ReplayInput {
                lenient,
                stream,
                quiet,
                stubs: stub,
            },
            chain_args::pair(
                matches.subcommand_matches("replay"),
                filter,
                [
                    ("config", config),
                    ("vm_config", vm_config),
                    ("failure_policy", failure_policy),
                ],
            )?,
            workers,
            trace,
            &log_level,
            format,
        ),
        Command::Inspect { module } => inspect(&module),
        Command::Package(args) => ship_cli::package(args),
        Command::Manifest(args) => ship_cli::manifest(args),
        Command::Validate(args) => ship_cli::validate(args),
        Command::Test(args) => test_cli::test(args),
        Command::Traffic(cmd) => traffic_cli::run(cmd),
        Command::Record(args) => traffic_cli::record(args),
        Command::Bench(args) => bench_cli::bench(args),
        Command::Envoy(args) => envoy_cli::envoy(args, matches.subcommand_matches("envoy")),
    }
}

/// How `tollgate replay` reads its recording.
struct ReplayInput {
    lenient: bool,
    stream: bool,
    quiet: bool,
    /// `--stub CLUSTER=FILE` arguments.
    stubs: Vec<String>,
}

fn replay(
    traffic_path: &Path,
    input: ReplayInput,
    filters: Vec<chain_args::FilterArg>,
    workers: usize,
    trace: bool,
    log_level: &str,
    format: Format,
) -> Result<()> {
    let level: LogLevel = log_level
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--log-level")?;
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    // Compiled modules are cached as `tollgate bench` caches them.
    let mut replay = Replay::chain()
        .log_level(level)
        .workers(workers)
        .module_cache(tollgate_harness::cache::ModuleCache::default_location());
    if trace {
        replay = replay.trace_calls();
    }
    for f in filters {
        replay = replay.filter(&f.path);
        if let Some(c) = f.config {
            replay = replay.config(value_arg(&c, "config")?);
        }
        if let Some(c) = f.vm_config {
            replay = replay.vm_config(value_arg(&c, "vm-config")?);
        }
        if let Some(p) = f.failure_policy {
            let policy: tollgate_harness::replay::FailurePolicy = p
                .parse()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--failure-policy for {}", f.path.display()))?;
            replay = replay.failure_policy(policy);
        }
    }
    for arg in &input.stubs {
        let (http, grpc) = tollgate_harness::suite::stub_arg(arg)
            .map_err(anyhow::Error::msg)
            .context("--stub")?;
        if let Some(h) = http {
            replay = replay.http_cluster(h);
        }
        if let Some(g) = grpc {
            replay = replay.grpc_cluster(g);
        }
    }
    if input.stream {
        return traffic_cli::replay_streaming(replay, traffic_path, input.lenient, input.quiet);
    }
    let leniency = if input.lenient {
        tollgate_harness::traffic::Leniency::Lenient
    } else {
        tollgate_harness::traffic::Leniency::Strict
    };
    let traffic = tollgate_harness::traffic::load_with(traffic_path, leniency)?;
    for w in &traffic.warnings {
        eprintln!("warning: {w}");
    }
    let bar = indicatif::ProgressBar::new(traffic.exchanges.len() as u64);
    let progress = bar.clone();
    let report = replay
        .traffic(traffic)
        .on_progress(move |done, _| progress.set_position(done as u64))
        .run()?;
    bar.finish_and_clear();
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
    for f in &report.filters {
        println!(
            "filter {} ({} bytes, proxy-wasm ABI {})",
            f.path.display(),
            f.wasm_bytes,
            f.abi
        );
    }
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
        if report.filters.len() > 1 {
            for f in &e.filters {
                for step in &f.steps {
                    println!("    [{}] {step}", f.filter);
                }
            }
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
                "filters": e.filters.iter().map(|f| serde_json::json!({ "filter": f.filter, "steps": f.steps })).collect::<Vec<_>>(),
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
