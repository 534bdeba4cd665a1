//! `tollgate bench <traffic> --filter x.wasm`: per-request and per-callback
//! cost of a filter above the harness floor, as a table, JSON, SVG or one
//! HTML page, with an optional baseline comparison that fails past a
//! threshold (for CI), one stream at a time or `--streams N` in flight.

use crate::out::{out, outln};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Duration;
use tollgate_host::cache::ModuleCache;
use tollgate_replay::bench::{self, Baseline, BenchOptions, Budget};

/// Output format of `tollgate bench`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BenchFormat {
    /// A terminal table.
    Text,
    /// The full report as JSON (readable back with --baseline).
    Json,
}

/// Arguments of `tollgate bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The recording: HAR, Envoy tap file or folder, native YAML/JSON/JSONL.
    pub traffic: PathBuf,
    /// The filter module (.wasm).
    #[arg(long)]
    pub filter: PathBuf,
    /// Plugin configuration: inline JSON, or @path to read it from a file.
    #[arg(long)]
    pub config: Option<String>,
    /// Measured passes over the traffic (default 200 unless --duration).
    #[arg(long, conflicts_with = "duration")]
    pub iterations: Option<usize>,
    /// Measure for this many seconds instead (e.g. 2.5).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Unmeasured warm-up passes.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: BenchFormat,
    /// Compare with another build (.wasm, run interleaved) or a saved JSON report.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Exit non-zero when slower than the baseline by more than this many
    /// percent (the whole 95% confidence interval past it).
    #[arg(long, requires = "baseline")]
    pub threshold: Option<f64>,
    /// Also write an SVG report (latency histograms, per-callback breakdown).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also write a self-contained HTML report (tables and the SVG inline).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Streams in flight at once, their callbacks interleaved as a proxy
    /// sees them (memory figures show what concurrent streams cost).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Answer a cluster's callouts from a stub, `CLUSTER=FILE` (YAML or JSON,
    /// the same file as `tollgate replay --stub`); repeatable.
    #[arg(long)]
    pub stub: Vec<String>,
    /// Compile afresh instead of using the compiled-module cache
    /// ($XDG_CACHE_HOME/tollgate/modules).
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub limits: crate::limit_args::LimitArgs,
    #[command(flatten)]
    pub identity: crate::identity_args::IdentityArgs,
}

/// Runs `tollgate bench`.
pub fn bench(args: BenchArgs) -> Result<()> {
    let budget = match (args.iterations, args.duration) {
        (Some(0), _) => bail!("--iterations must be at least 1"),
        (Some(n), _) => Budget::Iterations(n),
        (None, Some(s)) if !(s.is_finite() && s > 0.0) => {
            bail!("--duration must be a positive number of seconds, got {s}")
        }
        (None, Some(s)) => Budget::Time(Duration::from_secs_f64(s)),
        (None, None) => Budget::Iterations(200),
    };
    if let Some(t) = args.threshold
        && !(t.is_finite() && t >= 0.0)
    {
        bail!("--threshold must be a percentage >= 0, got {t}");
    }
    if args.streams == 0 {
        bail!("--streams must be at least 1");
    }
    let limits = args.limits.apply()?;
    let config = match &args.config {
        None => String::new(),
        Some(c) => match c.strip_prefix('@') {
            Some(path) => tollgate_traffic::input::read_to_string(std::path::Path::new(path))
                .with_context(|| format!("--config: cannot read {path}"))?,
            None => c.clone(),
        },
    };
    // Streamed: a JSON-lines recording is read again for every pass, a batch
    // at a time, never held whole.
    let (traffic, warnings) = bench::TrafficSource::open(&args.traffic)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let baseline = args
        .baseline
        .as_deref()
        .map(Baseline::from_path)
        .transpose()?;
    let mut http_clusters = Vec::new();
    let mut grpc_clusters = Vec::new();
    for arg in &args.stub {
        let (http, grpc) = tollgate_replay::suite::stub_arg(arg)
            .map_err(anyhow::Error::msg)
            .context("--stub")?;
        http_clusters.extend(http);
        grpc_clusters.extend(grpc);
    }
    let options = BenchOptions {
        filter: args.filter.clone(),
        config,
        traffic,
        budget,
        warmup: args.warmup,
        cache: (!args.no_cache).then(ModuleCache::default_location),
        streams: args.streams,
        http_clusters,
        grpc_clusters,
        limits,
        identity: args.identity.single()?,
    };
    let mut report = bench::run(&options, baseline.as_ref())?;
    if let Some(t) = args.threshold {
        report.apply_threshold(t);
    }
    if let Some(path) = &args.svg {
        tollgate_files::write(path, report.svg())
            .with_context(|| format!("--svg: cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        tollgate_files::write(path, report.html())
            .with_context(|| format!("--html: cannot write {}", path.display()))?;
    }
    match args.format {
        BenchFormat::Text => out!("{}", report.text()),
        BenchFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
    }
    if let Some(c) = &report.comparison
        && c.regression
    {
        bail!(
            "regression: {:.3}x the baseline {} (95% CI {:.3}..{:.3}), past the {}% threshold",
            c.ratio,
            c.baseline,
            c.ci_low,
            c.ci_high,
            c.threshold_pct.unwrap_or(0.0)
        );
    }
    Ok(())
}
