//! `tollgate envoy --compare`: the same traffic through several Envoy
//! configurations, each in its own Envoy (`--concurrency 1`), interleaved in
//! rounds so that drift of the machine affects them all alike.
//!
//! Configurations: `none` (router only), `noop-wasm` (the harness's no-op
//! module, `harness/host/src/wat/noop.wat`, assembled to binary wasm for V8), the
//! filter chain, and every `--alternative`. Every Envoy is started first, then
//! warmed with one round's worth of requests (not measured). In a round every
//! configuration sends `requests_per_round` requests (cycling through the
//! traffic) from `client_concurrency` keep-alive connections on 127.0.0.1, in
//! slices of [`SLICE`] requests taking turns (`ABCABC...`, the first rotating
//! with the round), so that the machine's load changing within a round
//! affects them all alike; a configuration stops early after spending
//! `round_timeout` in the round.
//!
//! Measured per configuration and round: the CPU time of Envoy's single
//! worker thread (`/proc/<pid>/task/<tid>/schedstat`, first field) read
//! before and after the round, divided by the requests answered in it (an
//! idle worker between its slices spends next to nothing); and each request's
//! client latency (first byte written to last byte read), in one
//! HDR histogram over all rounds. The report gives the CPU mean, min, max and
//! standard deviation over rounds; the cost added to `none` and the ratio to
//! `noop-wasm`, both paired by round (this configuration against the other in
//! the same round, so that load changing between rounds cancels out) with
//! their mean, min and max; latency p50/p99 and the statuses seen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use tollgate_traffic::Traffic;

use super::bootstrap::{self, Alternative, Configuration};
use super::http1::Client;
use super::process::EnvoyProcess;
use super::services::{self, RunningServices, ServiceReport, ServiceSpec};
use super::upstream::ReplayUpstream;
use super::{LiveError, WasmFilter, io};

/// The name of the router-only configuration.
pub const NONE: &str = "none";
/// The name of the no-op module configuration.
pub const NOOP: &str = "noop-wasm";
/// Requests a configuration sends before the next one takes its turn.
pub const SLICE: usize = 50;

/// What `--compare` runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The Envoy binary.
    pub envoy: PathBuf,
    /// The filter chain (empty: only `none`, `noop-wasm` and the alternatives).
    pub filters: Vec<WasmFilter>,
    /// The chain's name in the report.
    pub chain_name: String,
    /// Named alternatives.
    pub alternatives: Vec<(String, Alternative)>,
    /// Rounds.
    pub rounds: usize,
    /// Requests per configuration and round.
    pub requests_per_round: usize,
    /// Longest a configuration's round may last.
    pub round_timeout: Duration,
    /// Client connections sending at once.
    pub client_concurrency: usize,
    /// Where bootstraps and logs go (default: the system's temp folder).
    pub work_dir: Option<PathBuf>,
    /// Per-request read/write timeout.
    pub timeout: Duration,
    /// The clusters the filters call (`--stub`, `--cluster`), given to every
    /// configuration with every alternative's clusters.
    pub services: Vec<ServiceSpec>,
}

impl CompareOptions {
    /// Defaults: 5 rounds of 1000 requests (at most 60 s each), 1 connection.
    pub fn new(envoy: impl Into<PathBuf>, filters: Vec<WasmFilter>) -> CompareOptions {
        CompareOptions {
            envoy: envoy.into(),
            filters,
            chain_name: "filters".into(),
            alternatives: Vec::new(),
            rounds: 5,
            requests_per_round: 1000,
            round_timeout: Duration::from_secs(60),
            client_concurrency: 1,
            work_dir: None,
            timeout: Duration::from_secs(30),
            services: Vec::new(),
        }
    }
}

/// Mean, smallest and largest of per-round values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let (mean, min, max, _) = stats(values);
        (!values.is_empty()).then_some(Spread { mean, min, max })
    }

    fn json(&self) -> Value {
        json!({ "mean": self.mean, "min": self.min, "max": self.max })
    }
}

/// One configuration's results.
#[derive(Debug, Clone)]
pub struct ConfigResult {
    /// Its name.
    pub name: String,
    /// Worker CPU per request in each round, µs.
    pub cpu_us_rounds: Vec<f64>,
    /// Mean over rounds, µs.
    pub cpu_us_mean: f64,
    /// Smallest round, µs.
    pub cpu_us_min: f64,
    /// Largest round, µs.
    pub cpu_us_max: f64,
    /// Standard deviation over rounds, µs.
    pub cpu_us_stddev: f64,
    /// CPU added to `none`, µs: this configuration minus `none` in the same
    /// round (paired, so that load changes between rounds cancel out), over rounds.
    pub added_vs_none_us: Option<Spread>,
    /// This configuration over `noop-wasm` in the same round, over rounds.
    pub ratio_vs_noop: Option<Spread>,
    /// Client latency median, µs.
    pub latency_p50_us: f64,
    /// Client latency 99th percentile, µs.
    pub latency_p99_us: f64,
    /// Requests answered (all rounds, not the warm-up).
    pub requests: u64,
    /// Requests that got no response.
    pub errors: u64,
    /// How many responses of each status.
    pub statuses: BTreeMap<u16, u64>,
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct CompareReport {
    /// One entry per configuration: `none`, `noop-wasm`, the chain, the alternatives.
    pub configs: Vec<ConfigResult>,
    /// Rounds run.
    pub rounds: usize,
    /// Requests per configuration and round asked for.
    pub requests_per_round: usize,
    /// Client connections.
    pub client_concurrency: usize,
    /// The first error a request got, per configuration (for the text report).
    pub first_errors: Vec<(String, String)>,
    /// The services behind the called clusters and what they received (all
    /// configurations, warm-up included).
    pub services: Vec<ServiceReport>,
}

impl CompareReport {
    /// The report as JSON (`--format json`).
    pub fn to_json(&self) -> Value {
        let configs: Vec<Value> = self
            .configs
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "cpu_us_per_request": {
                        "mean": c.cpu_us_mean, "min": c.cpu_us_min, "max": c.cpu_us_max,
                        "stddev": c.cpu_us_stddev, "rounds": c.cpu_us_rounds,
                    },
                    "added_vs_none_us": c.added_vs_none_us.map(|s| s.json()),
                    "ratio_vs_noop": c.ratio_vs_noop.map(|s| s.json()),
                    "latency_us": { "p50": c.latency_p50_us, "p99": c.latency_p99_us },
                    "requests": c.requests,
                    "errors": c.errors,
                    "statuses": c.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        json!({
            "rounds": self.rounds,
            "requests_per_round": self.requests_per_round,
            "client_concurrency": self.client_concurrency,
            "configurations": configs,
            "first_errors": self.first_errors.iter().map(|(n, e)| json!({ "configuration": n, "error": e })).collect::<Vec<_>>(),
            "services": services::report_json(&self.services),
        })
    }

    /// The report as a text table.
    pub fn to_text(&self) -> String {
        let w = self
            .configs
            .iter()
            .map(|c| c.name.chars().count())
            .chain([13])
            .max()
            .unwrap_or(13);
        let mut out = format!(
            "{} rounds x {} requests per configuration, {} client connection(s); worker CPU per request (µs) over rounds\n",
            self.rounds, self.requests_per_round, self.client_concurrency
        );
        out.push_str(&format!(
            "{:<w$} {:>9} {:>15} {:>7} {:>24} {:>17} {:>7} {:>7} {:>6}  statuses\n",
            "configuration",
            "cpu mean",
            "min..max",
            "stddev",
            "+vs none (min..max)",
            "x noop (min..max)",
            "p50 µs",
            "p99 µs",
            "errors"
        ));
        for c in &self.configs {
            let statuses: Vec<String> =
                c.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
            out.push_str(&format!(
                "{:<w$} {:>9.1} {:>15} {:>7.1} {:>24} {:>17} {:>7.0} {:>7.0} {:>6}  {}\n",
                c.name,
                c.cpu_us_mean,
                format!("{:.1}..{:.1}", c.cpu_us_min, c.cpu_us_max),
                c.cpu_us_stddev,
                c.added_vs_none_us.map_or("-".into(), |v| format!(
                    "{:+.1} ({:+.1}..{:+.1})",
                    v.mean, v.min, v.max
                )),
                c.ratio_vs_noop.map_or("-".into(), |v| format!(
                    "{:.2} ({:.2}..{:.2})",
                    v.mean, v.min, v.max
                )),
                c.latency_p50_us,
                c.latency_p99_us,
                c.errors,
                statuses.join(" ")
            ));
        }
        for (n, e) in &self.first_errors {
            out.push_str(&format!("first error in {n}: {e}\n"));
        }
        out.push_str(&services::report_text(&self.services));
        out
    }
}

struct Running {
    name: String,
    envoy: EnvoyProcess,
    clients: Vec<Client>,
    /// Per round: worker CPU per request (µs), `None` when nothing was answered.
    cpu_rounds: Vec<Option<f64>>,
    latency: Histogram<u64>,
    requests: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    first_error: Option<String>,
    offset: usize,
}

fn histogram() -> Result<Histogram<u64>, LiveError> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .map_err(|e| LiveError::Config(format!("latency histogram: {e}")))
}

struct Batch {
    done: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    latency: Histogram<u64>,
    first_error: Option<String>,
}

/// Sends `count` requests (from `offset`, cycling through `traffic`) over
/// the configuration's clients, stopping at `deadline`.
fn send_batch(
    clients: &mut [Client],
    traffic: &Traffic,
    offset: usize,
    count: usize,
    deadline: Instant,
) -> Result<Batch, LiveError> {
    let next = AtomicUsize::new(0);
    let total = traffic.exchanges.len();
    let results: Vec<Result<Batch, LiveError>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .map(|client| {
                let next = &next;
                s.spawn(move || -> Result<Batch, LiveError> {
                    let mut b = Batch {
                        done: 0,
                        errors: 0,
                        statuses: BTreeMap::new(),
                        latency: histogram()?,
                        first_error: None,
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || Instant::now() > deadline {
                            return Ok(b);
                        }
                        let req = &traffic.exchanges[(offset + i) % total].request;
                        match client.send(req) {
                            Ok((r, t)) => {
                                b.done += 1;
                                *b.statuses.entry(r.status).or_default() += 1;
                                let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
                                b.latency.saturating_record(ns.max(1));
                            }
                            Err(e) => {
                                b.errors += 1;
                                b.first_error.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LiveError::Http("a client thread panicked".into())))
            })
            .collect()
    });
    let mut total_batch = Batch {
        done: 0,
        errors: 0,
        statuses: BTreeMap::new(),
        latency: histogram()?,
        first_error: None,
    };
    for r in results {
        let b = r?;
        total_batch.done += b.done;
        total_batch.errors += b.errors;
        for (s, n) in b.statuses {
            *total_batch.statuses.entry(s).or_default() += n;
        }
        let _ = total_batch.latency.add(&b.latency);
        if total_batch.first_error.is_none() {
            total_batch.first_error = b.first_error;
        }
    }
    Ok(total_batch)
}

/// The no-op module as a binary `.wasm` file in `dir`.
fn noop_wasm(dir: &std::path::Path) -> Result<PathBuf, LiveError> {
    let bytes = tollgate_abi::guests::noop_module()
        .map_err(|e| LiveError::Config(format!("assembling the no-op module: {e}")))?;
    let path = dir.join("noop.wasm");
    // scratch: the run's own folder.
    std::fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}

fn stats(values: &[f64]) -> (f64, f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, min, max, var.sqrt())
}

/// Per round where both were measured, `f(this, base)`, summarised.
fn paired(
    this: &[Option<f64>],
    base: Option<&[Option<f64>]>,
    f: fn(f64, f64) -> Option<f64>,
) -> Option<Spread> {
    let values: Vec<f64> = this
        .iter()
        .zip(base?)
        .filter_map(|(a, b)| f((*a)?, (*b)?))
        .collect();
    Spread::of(&values)
}

/// Runs the comparison.
pub fn run(options: &CompareOptions, traffic: &Traffic) -> Result<CompareReport, LiveError> {
    if traffic.exchanges.is_empty() {
        return Err(LiveError::Config("the recording has no exchanges".into()));
    }
    if options.rounds == 0 || options.requests_per_round == 0 || options.client_concurrency == 0 {
        return Err(LiveError::Config(
            "--rounds, --requests-per-round and --concurrency-client must be at least 1".into(),
        ));
    }
    let reserved = [NONE, NOOP, options.chain_name.as_str()];
    for (name, _) in &options.alternatives {
        if reserved.contains(&name.as_str()) {
            return Err(LiveError::Config(format!(
                "--alternative {name}: the name is taken (none, noop-wasm, {})",
                options.chain_name
            )));
        }
    }
    super::check_envoy(&options.envoy)?;
    let dir = super::ScratchDir::new(options.work_dir.as_deref())?;
    let noop = noop_wasm(dir.path())?;
    let upstream = ReplayUpstream::start(traffic)?;
    let running_services = RunningServices::start(&services::for_envoy(&options.services))?;
    let shared = services::shared_clusters(&running_services, &options.alternatives)?;
    let mut configs: Vec<(String, Configuration)> = vec![
        (NONE.into(), Configuration::RouterOnly),
        (
            NOOP.into(),
            Configuration::Wasm(vec![WasmFilter::new(noop)]),
        ),
    ];
    if !options.filters.is_empty() {
        configs.push((
            options.chain_name.clone(),
            Configuration::Wasm(options.filters.clone()),
        ));
    }
    for (name, alt) in &options.alternatives {
        configs.push((name.clone(), Configuration::Alternative(alt.clone())));
    }
    // Every Envoy first (each is killed on drop, whatever fails later).
    let mut running: Vec<Running> = Vec::with_capacity(configs.len());
    for (name, config) in &configs {
        let boot = bootstrap::generate_with(config, upstream.addr(), &shared)?;
        let envoy = EnvoyProcess::start(&options.envoy, name, &boot, dir.path())?;
        envoy.worker_cpu_ns()?;
        let clients = (0..options.client_concurrency)
            .map(|_| Client::new(envoy.listen_addr(), options.timeout))
            .collect();
        running.push(Running {
            name: name.clone(),
            envoy,
            clients,
            cpu_rounds: Vec::new(),
            latency: histogram()?,
            requests: 0,
            errors: 0,
            statuses: BTreeMap::new(),
            first_error: None,
            offset: 0,
        });
    }
    // Warm-up: one round's worth (connections, V8's optimising tier), not measured.
    let warm = options.requests_per_round;
    for r in &mut running {
        let deadline = Instant::now() + options.round_timeout;
        send_batch(&mut r.clients, traffic, 0, warm, deadline)?;
        r.envoy.check_alive()?;
        r.offset = warm % traffic.exchanges.len();
    }
    let n = running.len();
    for round in 0..options.rounds {
        // Per configuration in this round: CPU at its start, answered, sent, time spent.
        let mut before = Vec::with_capacity(n);
        for r in &running {
            before.push(r.envoy.worker_cpu_ns()?);
        }
        let mut done = vec![0u64; n];
        let mut sent = vec![0usize; n];
        let mut spent = vec![Duration::ZERO; n];
        loop {
            let mut progressed = false;
            for k in 0..n {
                let i = (round + k) % n;
                if sent[i] >= options.requests_per_round || spent[i] >= options.round_timeout {
                    continue;
                }
                progressed = true;
                let count = SLICE.min(options.requests_per_round - sent[i]);
                let r = &mut running[i];
                let started = Instant::now();
                let deadline = started + (options.round_timeout - spent[i]);
                let b = send_batch(&mut r.clients, traffic, r.offset, count, deadline)?;
                spent[i] += started.elapsed();
                r.envoy.check_alive()?;
                let attempted = (b.done + b.errors) as usize;
                r.offset = (r.offset + attempted) % traffic.exchanges.len();
                done[i] += b.done;
                // A slice cut short by the deadline ends the round for this configuration.
                sent[i] += attempted.max(1);
                r.requests += b.done;
                r.errors += b.errors;
                for (s, c) in b.statuses {
                    *r.statuses.entry(s).or_default() += c;
                }
                let _ = r.latency.add(&b.latency);
                if r.first_error.is_none() {
                    r.first_error = b.first_error;
                }
            }
            if !progressed {
                break;
            }
        }
        for (i, r) in running.iter_mut().enumerate() {
            let cpu_ns = r.envoy.worker_cpu_ns()?.saturating_sub(before[i]);
            r.cpu_rounds
                .push((done[i] > 0).then(|| cpu_ns as f64 / 1000.0 / done[i] as f64));
        }
    }
    let mut results: Vec<ConfigResult> = running
        .iter()
        .map(|r| {
            let measured: Vec<f64> = r.cpu_rounds.iter().flatten().copied().collect();
            let (mean, min, max, sd) = stats(&measured);
            ConfigResult {
                name: r.name.clone(),
                cpu_us_rounds: measured,
                cpu_us_mean: mean,
                cpu_us_min: min,
                cpu_us_max: max,
                cpu_us_stddev: sd,
                added_vs_none_us: None,
                ratio_vs_noop: None,
                latency_p50_us: r.latency.value_at_quantile(0.5) as f64 / 1000.0,
                latency_p99_us: r.latency.value_at_quantile(0.99) as f64 / 1000.0,
                requests: r.requests,
                errors: r.errors,
                statuses: r.statuses.clone(),
            }
        })
        .collect();
    let rounds_of = |name: &str| {
        running
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.cpu_rounds.clone())
    };
    let none = rounds_of(NONE);
    let noop = rounds_of(NOOP);
    for (c, r) in results.iter_mut().zip(&running) {
        c.added_vs_none_us = paired(&r.cpu_rounds, none.as_deref(), |a, b| Some(a - b));
        c.ratio_vs_noop = paired(&r.cpu_rounds, noop.as_deref(), |a, b| {
            (b > 0.0).then(|| a / b)
        });
    }
    let first_errors = running
        .iter()
        .filter_map(|r| r.first_error.clone().map(|e| (r.name.clone(), e)))
        .collect();
    drop(running);
    dir.discard();
    Ok(CompareReport {
        configs: results,
        rounds: options.rounds,
        requests_per_round: options.requests_per_round,
        client_concurrency: options.client_concurrency,
        first_errors,
        services: running_services.report(),
    })
}
