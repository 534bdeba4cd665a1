//! `tollgate envoy <traffic> --filter a.wasm [--config ..] ..`: the recording
//! through the real Envoy, compared with the harness's prediction; with
//! `--compare`, Envoy's worker CPU per request and client latency for
//! `none`, `noop-wasm`, the chain and `--alternative`s, in interleaved rounds.
//! See `harness/docs/envoy.md`.

use crate::out::{out, outln};
use anyhow::{Context, Result, bail};
use clap::ArgMatches;
use std::path::PathBuf;
use std::time::Duration;
use tollgate_envoy::bootstrap::Alternative;
use tollgate_envoy::services::{self, ServiceSpec};
use tollgate_envoy::{self as live, WasmFilter, compare, diff};
use tollgate_traffic::Leniency;

use crate::chain_args;

/// Output format of `tollgate envoy`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum EnvoyFormat {
    /// A terminal table.
    Text,
    /// The full report as JSON.
    Json,
}

/// Arguments of `tollgate envoy`.
#[derive(clap::Args)]
pub struct EnvoyArgs {
    /// The recording: HAR, Envoy tap file or folder, native YAML/JSON/JSONL.
    pub traffic: PathBuf,
    /// The harness's side (its prediction) runs under these; Envoy's own
    /// memory limit is fixed at 1 GiB, so another --memory-limit shows as a
    /// difference where a filter reaches either.
    #[command(flatten)]
    pub limits: crate::limit_args::LimitArgs,
    /// Each filter's name, root id, vm id and VM environment, in the
    /// generated bootstrap and the prediction alike.
    #[command(flatten)]
    pub identity: crate::identity_args::IdentityArgs,
    /// Skip unusable entries of the recording with a warning instead of failing.
    #[arg(long)]
    pub lenient: bool,
    /// The filter module (.wasm); repeat for a chain, in order.
    #[arg(long)]
    pub filter: Vec<PathBuf>,
    /// Plugin configuration of the --filter before it: inline JSON, or @path.
    #[arg(long)]
    pub config: Vec<String>,
    /// VM configuration of the --filter before it: inline, or @path.
    #[arg(long)]
    pub vm_config: Vec<String>,
    /// Failure policy of the --filter before it: FAIL_CLOSED (default),
    /// FAIL_OPEN, FAIL_RELOAD (Envoy's PluginConfig.failure_policy).
    #[arg(long)]
    pub failure_policy: Vec<String>,
    /// Run this Envoy bootstrap (YAML/JSON) instead of the generated one; the
    /// --filter chain is still what the harness predicts with.
    #[arg(long, conflicts_with = "compare")]
    pub envoy_config: Option<PathBuf>,
    /// With --envoy-config: the cluster to point at the replay upstream.
    #[arg(long, default_value = "upstream", requires = "envoy_config")]
    pub upstream_cluster: String,
    /// The Envoy binary (default: ENVOY_BIN, else target/envoy-venv's).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Exit 0 even when Envoy and the harness differ.
    #[arg(long)]
    pub allow_differences: bool,
    /// Compare configurations (none, noop-wasm, the chain, alternatives) by
    /// Envoy worker CPU per request and client latency.
    #[arg(long)]
    pub compare: bool,
    /// With --compare: NAME=PATH.yaml, native http_filters (and clusters)
    /// inserted before the router; repeatable. Format: harness/docs/envoy.md.
    #[arg(long, requires = "compare")]
    pub alternative: Vec<String>,
    /// With --compare: rounds.
    #[arg(long, default_value_t = 5, requires = "compare")]
    pub rounds: usize,
    /// With --compare: requests per configuration and round.
    #[arg(long, default_value_t = 1000, requires = "compare")]
    pub requests_per_round: usize,
    /// With --compare: longest a configuration's round may last, in seconds.
    #[arg(long, default_value_t = 60.0, requires = "compare")]
    pub round_seconds: f64,
    /// With --compare: client connections sending at once (127.0.0.1 only).
    #[arg(long, default_value_t = 1, requires = "compare")]
    pub concurrency_client: usize,
    /// CLUSTER=FILE: serve this stub (a suite `clusters:` entry, as
    /// `tollgate replay --stub`) on 127.0.0.1 as cluster CLUSTER in every
    /// configuration, and predict with it; repeatable.
    #[arg(long)]
    pub stub: Vec<String>,
    /// CLUSTER=IP:PORT: a cluster to your own service, in every configuration
    /// (the prediction uses a --stub of the same name, else cannot know its
    /// answers); repeatable.
    #[arg(long)]
    pub cluster: Vec<String>,
    /// Keep generated bootstraps and Envoy logs in this folder (default: a
    /// temporary folder, removed after a successful run).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: EnvoyFormat,
}

/// Runs `tollgate envoy`.
pub fn envoy(args: EnvoyArgs, matches: Option<&ArgMatches>) -> Result<()> {
    let paired = chain_args::pair(
        matches,
        args.filter.clone(),
        [
            ("config", args.config.clone()),
            ("vm_config", args.vm_config.clone()),
            ("failure_policy", args.failure_policy.clone()),
        ],
    )?;
    let identities = args.identity.pair(matches, &paired)?;
    let mut filters = Vec::with_capacity(paired.len());
    for (f, identity) in paired.into_iter().zip(identities) {
        if !f.path.is_file() {
            bail!("--filter {}: no such file", f.path.display());
        }
        let mut w = WasmFilter::new(&f.path);
        w.identity = identity;
        if let Some(c) = f.config {
            w.config = Some(crate::value_arg(&c, "config")?);
        }
        if let Some(c) = f.vm_config {
            w.vm_config = Some(crate::value_arg(&c, "vm-config")?);
        }
        if let Some(p) = f.failure_policy {
            w.failure_policy = Some(
                p.parse()
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("--failure-policy for {}", f.path.display()))?,
            );
        }
        filters.push(w);
    }
    let envoy = match &args.envoy {
        Some(p) => {
            live::check_envoy(p)?;
            p.clone()
        }
        None => live::envoy_binary()?,
    };
    let limits = args.limits.apply()?;
    let leniency = if args.lenient {
        Leniency::Lenient
    } else {
        Leniency::Strict
    };
    let traffic = tollgate_traffic::load_with(&args.traffic, leniency)?;
    for w in &traffic.warnings {
        eprintln!("warning: {w}");
    }
    let services = services_of(&args)?;
    if args.compare {
        return run_compare(&args, envoy, filters, services, &traffic);
    }
    if filters.is_empty() {
        bail!("--filter is required: the harness predicts with that chain");
    }
    let mut options = diff::DiffOptions::new(envoy, filters);
    options.work_dir = args.work_dir.clone();
    options.services = services;
    if let Some(p) = &args.envoy_config {
        options.user_bootstrap = Some((p.clone(), args.upstream_cluster.clone()));
    }
    let predicted = predict(&options.filters, &options.services, &traffic, limits)
        .context("harness prediction failed")?;
    let report = diff::run(&options, &traffic, &predicted)?;
    match args.format {
        EnvoyFormat::Json => outln!("{}", serde_json::to_string_pretty(&report.to_json())?),
        EnvoyFormat::Text => print_diff(&report),
    }
    let n = report.differences();
    if n > 0 && !args.allow_differences {
        bail!(
            "{n} differences between Envoy and the harness in {} of {} exchanges (--allow-differences to exit 0)",
            report.differing_exchanges(),
            report.exchanges.len()
        );
    }
    Ok(())
}

/// What the harness predicts for `traffic` through `filters`, the stubs
/// answering their clusters' callouts (a user's service is Envoy's only).
pub(crate) fn predict(
    filters: &[WasmFilter],
    services: &[ServiceSpec],
    traffic: &tollgate_traffic::Traffic,
    limits: tollgate_host::limits::Limits,
) -> Result<Vec<diff::Prediction>, tollgate_replay::ReplayError> {
    let mut replay = tollgate_replay::Replay::chain().limits(limits);
    for s in services {
        if let ServiceSpec::Stub(stub) = s {
            replay = replay.http_cluster(stub.clone());
        }
    }
    for (i, f) in filters.iter().enumerate() {
        replay = replay.filter(&f.path);
        // The identity the generated bootstrap gives it (name, ids, environment).
        replay = replay.identity(&live::bootstrap::identity_of(i, f));
        if let Some(c) = &f.config {
            replay = replay.config(c.clone());
        }
        if let Some(c) = &f.vm_config {
            replay = replay.vm_config(c.clone());
        }
        if let Some(p) = f.failure_policy {
            replay = replay.failure_policy(p);
        }
    }
    let report = replay.traffic(traffic.clone()).run()?;
    Ok(report
        .exchanges
        .into_iter()
        .map(|e| diff::Prediction {
            upstream_request: e.upstream_request,
            client_response: e.client_response,
        })
        .collect())
}

/// `--stub` and `--cluster`, in that order.
fn services_of(args: &EnvoyArgs) -> Result<Vec<ServiceSpec>> {
    let mut out = Vec::new();
    for arg in &args.stub {
        let (http, grpc) = tollgate_replay::suite::stub_arg(arg)
            .map_err(anyhow::Error::msg)
            .context("--stub")?;
        match (http, grpc) {
            (Some(h), _) => out.push(ServiceSpec::Stub(h)),
            (None, Some(_)) => bail!(
                "--stub {arg}: only HTTP answers are served by `tollgate envoy` (gRPC needs HTTP/2); \
                 give status/headers/body or failure"
            ),
            (None, None) => bail!("--stub {arg}: the stub has no answer"),
        }
    }
    for arg in &args.cluster {
        out.push(ServiceSpec::address_arg(arg)?);
    }
    Ok(out)
}

fn print_diff(report: &diff::DiffReport) {
    outln!(
        "{:<10} {:<8} {:<48} {:>8} {:>6} {:>8} {:>8} {:>8}",
        "exchange",
        "method",
        "path",
        "recorded",
        "envoy",
        "upstream",
        "harness",
        "upstream"
    );
    for e in &report.exchanges {
        let path: String = if e.path.chars().count() > 48 {
            e.path.chars().take(45).chain("...".chars()).collect()
        } else {
            e.path.clone()
        };
        let yn = |b: bool| if b { "yes" } else { "no" };
        outln!(
            "{:<10} {:<8} {:<48} {:>8} {:>6} {:>8} {:>8} {:>8}",
            e.id,
            e.method,
            path,
            e.recorded_status.map_or("-".into(), |s| s.to_string()),
            e.envoy_response.status,
            yn(e.envoy_upstream.is_some()),
            e.predicted_status,
            yn(e.predicted_upstream)
        );
        if let Some(err) = &e.error {
            outln!("    ! {err}");
        }
        for d in &e.differences {
            outln!("    * {d}");
        }
    }
    outln!(
        "\n{} requests through Envoy: {} differ from the harness ({} differences)",
        report.exchanges.len(),
        report.differing_exchanges(),
        report.differences(),
    );
    out!("{}", services::report_text(&report.services));
    for c in &report.unpredicted_clusters {
        outln!(
            "note: cluster {c} is your service (--cluster); the harness has no stub for it \
             (add --stub {c}=FILE), so exchanges that call it may differ"
        );
    }
    if let Some(log) = &report.envoy_log {
        outln!("Envoy log: {}", log.display());
    }
}

fn run_compare(
    args: &EnvoyArgs,
    envoy: PathBuf,
    filters: Vec<WasmFilter>,
    services: Vec<ServiceSpec>,
    traffic: &tollgate_traffic::Traffic,
) -> Result<()> {
    if !(args.round_seconds.is_finite() && args.round_seconds > 0.0) {
        bail!(
            "--round-seconds must be a positive number, got {}",
            args.round_seconds
        );
    }
    let mut options = compare::CompareOptions::new(envoy, filters);
    if !options.filters.is_empty() {
        options.chain_name = options
            .filters
            .iter()
            .filter_map(|f| f.path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join("+");
    }
    for a in &args.alternative {
        let (name, path) = a
            .split_once('=')
            .with_context(|| format!("--alternative {a:?}: expected NAME=PATH.yaml"))?;
        if name.is_empty() {
            bail!("--alternative {a:?}: empty name");
        }
        if options.alternatives.iter().any(|(n, _)| n == name) {
            bail!("--alternative {name} given twice");
        }
        options
            .alternatives
            .push((name.to_owned(), Alternative::load(path.as_ref())?));
    }
    options.rounds = args.rounds;
    options.requests_per_round = args.requests_per_round;
    options.round_timeout = Duration::from_secs_f64(args.round_seconds);
    options.client_concurrency = args.concurrency_client;
    options.work_dir = args.work_dir.clone();
    options.services = services;
    let report = compare::run(&options, traffic)?;
    match args.format {
        EnvoyFormat::Json => outln!("{}", serde_json::to_string_pretty(&report.to_json())?),
        EnvoyFormat::Text => out!("{}", report.to_text()),
    }
    Ok(())
}
