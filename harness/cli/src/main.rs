//! The `tollgate` command: replay recorded traffic through a proxy-wasm
//! filter (`tollgate replay`) or describe a module (`tollgate inspect`).

#[path = "cli/bench.rs"]
mod bench_cli;
#[path = "cli/chain_args.rs"]
mod chain_args;
#[path = "cli/envoy.rs"]
mod envoy_cli;
#[path = "cli/identity_args.rs"]
mod identity_args;
#[path = "cli/inspect.rs"]
mod inspect_cli;
#[path = "cli/limit_args.rs"]
mod limit_args;
#[path = "cli/new.rs"]
mod new_cli;
mod out;
#[path = "cli/replay.rs"]
mod replay_cli;
#[path = "cli/ship.rs"]
mod ship_cli;
#[path = "cli/test.rs"]
mod test_cli;
#[path = "cli/traffic.rs"]
mod traffic_cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

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
        /// Deliver each body the recording did not chunk as one chunk that
        /// ends the stream, instead of as Envoy's codec does for the
        /// exchange's HTTP version (HTTP/1: the body, then an empty
        /// end-of-stream chunk).
        #[arg(long)]
        one_chunk_bodies: bool,
        /// Deliver callout answers that have no delay of their own right
        /// after the call, instead of after the input the client already
        /// sent (a real service never answers in zero time).
        #[arg(long)]
        immediate_callout_answers: bool,
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
        #[command(flatten)]
        limits: limit_args::LimitArgs,
        #[command(flatten)]
        identity: identity_args::IdentityArgs,
    },
    /// Show a module's ABI version, exports, imports, and imports the host lacks.
    Inspect {
        /// The module (.wasm).
        module: PathBuf,
    },
    /// Package a filter as OCI image layouts (Istio's compat form and the Wasm OCI artifact).
    Package(ship_cli::PackageArgs),
    /// Write an Istio WasmPlugin or TrafficExtension, or an Envoy Gateway EnvoyExtensionPolicy
    /// (and optionally an Envoy bootstrap) for a filter.
    Manifest(ship_cli::ManifestArgs),
    /// Check WasmPlugin, TrafficExtension and EnvoyExtensionPolicy manifests against their
    /// CRD's schema and CEL rules.
    Validate(ship_cli::ValidateArgs),
    /// Print the JSON Schema of a filter's configuration (from its module or image).
    Schema(ship_cli::SchemaArgs),
    /// Scaffold a new filter crate (in this workspace, or standalone) that builds, tests and
    /// replays at once.
    New(new_cli::NewArgs),
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
        Some(path) => tollgate_traffic::input::read_to_string(std::path::Path::new(path))
            .with_context(|| format!("--{flag}: cannot read {path}")),
        None => Ok(v.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    // Ctrl-C / SIGTERM remove the temporary files of outputs not yet
    // written (harness/files); the targets are never touched.
    if let Err(e) = tollgate_files::cleanup_on_signals() {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: a cause whose text
/// the message already carries (typed errors often quote their source) is
/// not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
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
            one_chunk_bodies,
            immediate_callout_answers,
            filter,
            config,
            vm_config,
            failure_policy,
            stub,
            workers,
            trace,
            log_level,
            format,
            limits,
            identity,
        } => {
            let m = matches.subcommand_matches("replay");
            let filters = chain_args::pair(
                m,
                filter,
                [
                    ("config", config),
                    ("vm_config", vm_config),
                    ("failure_policy", failure_policy),
                ],
            )?;
            let identities = identity.pair(m, &filters)?;
            replay_cli::replay(
                &traffic,
                replay_cli::ReplayInput {
                    lenient,
                    stream,
                    quiet,
                    stubs: stub,
                    limits,
                    identities,
                    one_chunk_bodies,
                    immediate_callout_answers,
                },
                filters,
                workers,
                trace,
                &log_level,
                format,
            )
        }
        Command::Inspect { module } => inspect_cli::inspect(&module),
        Command::Package(args) => ship_cli::package(args),
        Command::Manifest(args) => ship_cli::manifest(args),
        Command::Validate(args) => ship_cli::validate(args),
        Command::Schema(args) => ship_cli::schema(args),
        Command::New(args) => new_cli::new(args),
        Command::Test(args) => test_cli::test(args),
        Command::Traffic(cmd) => traffic_cli::run(cmd),
        Command::Record(args) => traffic_cli::record(args),
        Command::Bench(args) => bench_cli::bench(args),
        Command::Envoy(args) => envoy_cli::envoy(args, matches.subcommand_matches("envoy")),
    }
}
