//! `tollgate bench`: what a filter costs per request, measured precisely.
//!
//! A traffic file is replayed through the filter many times (warm-up, then N
//! iterations or a time budget). For every request the wall time of the whole
//! exchange through the harness goes into an HDR histogram, and every guest
//! call into a per-callback histogram. The same lifecycle through the bundled
//! no-op module ([`tollgate_host::bare::NOOP_WAT`]) is the harness floor; the cost
//! attributed to the filter is its time above that floor.
//!
//! A separate, deterministic pass runs the traffic once through a metered VM
//! (wasmtime fuel) and counts wasm instructions per callback, host calls, and
//! bytes copied across the boundary: these do not change between runs or
//! machines.
//!
//! A baseline (another build of the module, or a saved JSON report) is
//! compared by interleaving rounds; the ratio of mean per-request time comes
//! with a bootstrap 95% confidence interval.
//!
//! With [`BenchOptions::streams`] above one, the traffic goes through in
//! batches of that many streams in flight at once, their callbacks
//! interleaved as a proxy sees them ([`stream::run_interleaved`]): each
//! stream holds its context in the filter until the batch ends, so the
//! report's linear-memory figures show what concurrent streams cost.
//!
//! The traffic ([`TrafficSource`]) is a recording in memory or a JSON-lines
//! file read again for every pass, [`BATCH`] exchanges at a time, so a
//! benchmark of any recording runs in memory bounded by the batch; the
//! counts are the same either way.
//!
//! The report reads as a table ([`BenchReport::text`]), JSON, an SVG
//! picture ([`BenchReport::svg`]) or one self-contained HTML page with the
//! tables and the picture ([`BenchReport::html`]).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tollgate_host::bare;
use tollgate_host::cache::{CacheOutcome, ModuleCache};
use tollgate_host::plugin::{LoadError, Plugin};
use tollgate_host::state::VmSettings;
use tollgate_host::stream::{self, FailurePolicy, Lane, Prepared, StreamInput};
use tollgate_host::vm::{CallRecord, Vm, VmError};
use tollgate_traffic::{Exchange, Traffic};

mod html;
mod source;
mod svg;

use source::SourceRef;
pub use source::{BATCH, TrafficSource};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The module could not be read or compiled.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A VM could not be started (configuration refused, trap in start-up).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The traffic has no exchanges.
    #[error("the traffic {traffic} has no exchanges to benchmark")]
    NoTraffic {
        /// The traffic file.
        traffic: String,
    },
    /// A bad option.
    #[error("{0}")]
    Option(String),
    /// The recording could not be read (a bad entry, or a file that cannot
    /// be re-read pass by pass).
    #[error(transparent)]
    Traffic(#[from] tollgate_traffic::TrafficError),
    /// The baseline report could not be read.
    #[error("baseline report {path}: {message}")]
    Baseline {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The bundled no-op module did not assemble.
    #[error(transparent)]
    Bundled(#[from] bare::BundledModuleError),
    /// A guest call failed during the benchmark. A failed VM is dead, as in
    /// Envoy (its streams fail at once), so the benchmark stops at the first
    /// failure instead of measuring a dead VM.
    #[error(
        "{filter}: request {request} of pass {pass} failed, and a failed VM is dead (Envoy fails its streams from then on), so the benchmark stopped: {message}"
    )]
    Failed {
        /// The module that failed.
        filter: String,
        /// The pass (0-based; warm-up passes count) it failed in.
        pass: usize,
        /// The request of the pass (0-based) that failed.
        request: usize,
        /// The callback and what happened.
        message: String,
    },
}

/// How long to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// This many passes over the traffic.
    Iterations(usize),
    /// Passes over the traffic until this much time has gone by (at least one).
    Time(Duration),
}

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The filter module.
    pub filter: PathBuf,
    /// Its plugin configuration.
    pub config: String,
    /// The traffic: in memory, or a file streamed in bounded batches
    /// ([`TrafficSource`]; a [`Traffic`] converts with `.into()`).
    pub traffic: TrafficSource,
    /// Measured passes.
    pub budget: Budget,
    /// Warm-up passes (not measured).
    pub warmup: usize,
    /// Compiled-module cache (`None`: compile every time).
    pub cache: Option<ModuleCache>,
    /// Streams in flight at once (1: one exchange after the other).
    pub streams: usize,
    /// Answers for the filter's HTTP callouts, per cluster (`--stub`).
    pub http_clusters: Vec<tollgate_host::callouts::HttpClusterStub>,
    /// Answers for the filter's gRPC callouts, per cluster (`--stub`).
    pub grpc_clusters: Vec<tollgate_host::callouts::GrpcClusterStub>,
    /// The bounds every VM runs under (memory, callouts and wall time per
    /// exchange, guest log): `Limits::default()` is Envoy's.
    pub limits: tollgate_host::limits::Limits,
    /// The filter's name, root id, vm id and VM environment (`--plugin-name`,
    /// `--root-id`, `--vm-id`, `--env`, `--host-env`); `Default` keeps the
    /// harness's defaults. Every subject (filter, baseline, floor) runs under it.
    pub identity: tollgate_abi::PluginIdentity,
}

impl BenchOptions {
    /// The VM settings of a subject run with `config`: the plugin
    /// configuration and the stubbed clusters (the same for every subject,
    /// so the floor and a baseline see the services the filter sees).
    fn settings(&self, config: &str) -> VmSettings {
        VmSettings {
            plugin_config: config.as_bytes().to_vec(),
            http_clusters: self.http_clusters.clone(),
            grpc_clusters: self.grpc_clusters.clone(),
            limits: self.limits,
            ..VmSettings::default()
        }
        .identified(&self.identity)
    }
}

/// [`VmSettings`] under a [`tollgate_abi::PluginIdentity`] (checked by [`run`] first).
trait Identified {
    fn identified(self, identity: &tollgate_abi::PluginIdentity) -> Self;
}

impl Identified for VmSettings {
    fn identified(mut self, identity: &tollgate_abi::PluginIdentity) -> Self {
        if let Some(n) = &identity.name {
            self.plugin_name = n.clone();
        }
        if let Some(r) = &identity.root_id {
            self.root_id = r.clone();
        }
        if let Some(v) = &identity.vm_id {
            self.vm_id = v.clone();
        }
        if let Ok(env) = identity.process_environment() {
            self.env = env;
        }
        self
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// One callback's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackCost {
    /// The export, e.g. `proxy_on_request_headers`.
    pub callback: String,
    /// Wall time per call (measured passes).
    pub latency: Latency,
    /// The same callback's median through the no-op module (0 when it never ran there).
    pub floor_p50_ns: u64,
    /// Calls in the metered pass (one pass over the traffic).
    pub calls: u64,
    /// Wasm instructions executed in it over the metered pass.
    pub instructions: u64,
}

/// One histogram bucket for the report's picture: requests whose time was at most `le_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, ns.
    pub le_ns: u64,
    /// Requests in the bucket.
    pub count: u64,
}

/// Deterministic counts from the metered pass (one pass over the traffic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Wasm instructions executed in stream callbacks (wasmtime fuel).
    pub instructions: u64,
    /// Host functions the guest called.
    pub host_calls: u64,
    /// Bytes the host read from guest memory.
    pub bytes_in: u64,
    /// Bytes the host wrote into guest memory.
    pub bytes_out: u64,
}

/// One module's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterBench {
    /// The module.
    pub filter: String,
    /// Module size.
    pub wasm_bytes: u64,
    /// Compile time (compile or cache read, and link), µs.
    pub compile_us: f64,
    /// The compiled module came from the on-disk cache.
    pub compiled_from_cache: bool,
    /// VM creation time from the compiled module (instantiate, start, configure), µs.
    pub vm_start_us: f64,
    /// Wall time per request through the harness.
    pub request: Latency,
    /// Per callback.
    pub callbacks: Vec<CallbackCost>,
    /// Deterministic counts for one pass over the traffic.
    pub counts: Counts,
    /// Linear memory once the VM started (before warm-up), bytes.
    pub memory_start: u64,
    /// Linear memory at the end, bytes.
    pub memory_end: u64,
    /// Largest linear memory seen during the measured passes, bytes
    /// (sampled after every exchange, or every round of interleaved streams).
    #[serde(default)]
    pub memory_peak: u64,
    /// Streams in flight at once during the measured passes.
    #[serde(default = "one")]
    pub streams: usize,
    /// Mean per-request time of each measured pass, ns (for baseline comparison).
    pub pass_means_ns: Vec<f64>,
    /// Latency histogram (log buckets).
    pub histogram: Vec<Bucket>,
    /// Requests that failed (trap or timeout) in the measured passes.
    pub failed_requests: u64,
}

/// A comparison against a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// What the baseline was (a module path or a report file).
    pub baseline: String,
    /// Mean per-request time of the filter / of the baseline.
    pub ratio: f64,
    /// 95% confidence interval of the ratio (bootstrap over passes).
    pub ci_low: f64,
    /// Upper end of the interval.
    pub ci_high: f64,
    /// Threshold given, percent (`None`: none given).
    pub threshold_pct: Option<f64>,
    /// The filter is slower than the baseline by more than the threshold,
    /// with the whole confidence interval past it.
    pub regression: bool,
    /// The baseline's measurements.
    pub baseline_bench: FilterBench,
}

/// The whole report (`--format json` prints it; `--baseline report.json` reads it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The traffic file.
    pub traffic: String,
    /// Requests in one pass over the traffic (with `--streams N`, rounded
    /// up to a multiple of N).
    pub requests_per_pass: usize,
    /// Requests in the deterministic counting pass (the traffic once, one
    /// stream at a time): what the per-request counts are divided by.
    #[serde(default)]
    pub counted_requests: usize,
    /// Measured passes.
    pub passes: usize,
    /// The filter.
    pub filter: FilterBench,
    /// The harness floor: the same lifecycle through the no-op module.
    pub floor: FilterBench,
    /// Median time above the floor, ns (the filter's own cost).
    pub above_floor_p50_ns: i64,
    /// Mean time above the floor, ns.
    pub above_floor_mean_ns: f64,
    /// The baseline comparison, when one was asked for.
    pub comparison: Option<Comparison>,
}

fn one() -> usize {
    1
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s, 3 significant digits; cannot fail for these bounds.
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A module loaded and a VM started, with the times each took.
struct Subject {
    name: String,
    plugin: Plugin,
    vm: Vm,
    compile_us: f64,
    from_cache: bool,
    vm_start_us: f64,
    wasm: Vec<u8>,
}

impl Subject {
    fn new(
        name: &str,
        wasm: Vec<u8>,
        settings: VmSettings,
        cache: Option<&ModuleCache>,
    ) -> Result<Self, BenchError> {
        let plugin = match cache {
            Some(c) => Plugin::from_bytes_cached(name, &wasm, c)?,
            None => Plugin::from_bytes(name, &wasm)?,
        };
        let compile_us = micros(plugin.compile_time());
        let from_cache = plugin.cache_outcome() == Some(CacheOutcome::Hit);
        // VM creation: the median of a few starts (the first one warms caches).
        let mut starts = Vec::new();
        let mut vm = None;
        for _ in 0..5 {
            let t = Instant::now();
            let v = Vm::start(&plugin, settings.clone())?;
            starts.push(t.elapsed());
            vm = Some(v);
        }
        starts.sort();
        let vm = match vm {
            Some(vm) => vm,
            None => Vm::start(&plugin, settings.clone())?,
        };
        Ok(Self {
            name: name.to_string(),
            plugin,
            vm,
            compile_us,
            from_cache,
            vm_start_us: micros(starts[starts.len() / 2]),
            wasm,
        })
    }
}

/// Accumulates one module's measured passes.
struct Tally {
    request: Histogram<u64>,
    callbacks: Vec<(&'static str, Histogram<u64>)>,
    pass_means_ns: Vec<f64>,
    failed: u64,
    records: Vec<CallRecord>,
    memory_peak: u64,
    /// Passes run so far (warm-up included).
    passes: usize,
    /// The first failure: (pass, request, what happened). The VM is dead after it.
    failure: Option<(usize, usize, String)>,
}

/// One lane around `vm` for the stream driver.
fn lane(vm: &mut Vm) -> [Lane<'_>; 1] {
    [Lane {
        vm: Some(vm),
        name: String::new(),
        policy: FailurePolicy::FailClosed,
    }]
}

/// Requests in one pass over `exchanges` with `streams` in flight.
pub fn requests_per_pass(exchanges: usize, streams: usize) -> usize {
    let n = streams.max(1);
    exchanges.div_ceil(n) * n
}

impl Tally {
    fn new() -> Self {
        Self {
            request: histogram(),
            callbacks: Vec::new(),
            pass_means_ns: Vec::new(),
            failed: 0,
            records: Vec::new(),
            memory_peak: 0,
            passes: 0,
            failure: None,
        }
    }

    /// One pass over the traffic; `record` false for warm-up. A streamed
    /// source is read again, a batch of exchanges at a time.
    fn pass(&mut self, vm: &mut Vm, p: &Pass<'_>, record: bool) -> Result<(), BenchError> {
        let mut acc = (Duration::ZERO, 0usize);
        let pass = self.passes;
        self.passes += 1;
        if self.failure.is_some() {
            // A dead VM is not called again.
            return Ok(());
        }
        let s = p.streams.max(1);
        // Whole batches of streams in flight per read.
        let chunk = s * (BATCH / s).max(1);
        let head_inputs: Vec<StreamInput> =
            p.head.iter().map(StreamInput::from_recording).collect();
        let head: Vec<Prepared<'_>> = head_inputs.iter().map(Prepared::new).collect();
        p.source.each_batch(chunk, |first, exchanges| {
            let inputs: Vec<StreamInput> =
                exchanges.iter().map(StreamInput::from_recording).collect();
            let prepared: Vec<Prepared<'_>> = inputs.iter().map(Prepared::new).collect();
            for (k, group) in prepared.chunks(s).enumerate() {
                let mut batch: Vec<&Prepared<'_>> = group.iter().collect();
                // The last batch is filled up from the start of the traffic.
                let mut g = first + k * s + group.len();
                while batch.len() < s {
                    batch.push(&head[g % p.exchanges]);
                    g += 1;
                }
                if !self.batch(vm, &batch, (pass, first / s + k), record, &mut acc) {
                    return false;
                }
            }
            true
        })?;
        if record {
            let n = acc.1.max(1) as f64;
            self.pass_means_ns.push(acc.0.as_nanos() as f64 / n);
        }
        Ok(())
    }

    /// One batch of `group.len()` streams in flight (batch `at.1` of pass
    /// `at.0`); false when a guest call failed (the VM is dead).
    fn batch(
        &mut self,
        vm: &mut Vm,
        group: &[&Prepared<'_>],
        at: (usize, usize),
        record: bool,
        acc: &mut (Duration, usize),
    ) -> bool {
        let (pass, b) = at;
        let streams = group.len();
        let t = Instant::now();
        let failed = if streams <= 1 {
            let v = stream::run_chain_verdict(&mut lane(vm), group[0]);
            if let crate::Verdict::Failed { message } = &v.verdict {
                self.failure = Some((pass, b, message.clone()));
            }
            u64::from(matches!(v.verdict, crate::Verdict::Failed { .. }))
        } else {
            let mut peak = self.memory_peak;
            let outs = stream::run_interleaved(&mut lane(vm), group, |lanes| {
                if let Some(vm) = lanes[0].vm.as_deref() {
                    peak = peak.max(vm.memory_size());
                }
            });
            self.memory_peak = peak;
            if let Some((k, f)) = outs
                .iter()
                .enumerate()
                .find_map(|(k, o)| o.failure.as_ref().map(|f| (k, f)))
            {
                self.failure = Some((pass, b * streams + k, f.to_string()));
            }
            outs.iter().filter(|o| o.failure.is_some()).count() as u64
        };
        if self.failure.is_some() {
            return false;
        }
        let took = t.elapsed();
        self.memory_peak = self.memory_peak.max(vm.memory_size());
        vm.drain_calls(&mut self.records);
        if !record {
            self.records.clear();
            return true;
        }
        acc.0 += took;
        acc.1 += streams;
        self.failed += failed;
        // Interleaved streams share the batch's time evenly.
        let each = (took.as_nanos() as u64 / streams as u64).max(1);
        for _ in group {
            let _ = self.request.record(each);
        }
        for r in self.records.drain(..) {
            let h = match self.callbacks.iter().position(|(n, _)| *n == r.callback) {
                Some(i) => &mut self.callbacks[i].1,
                None => {
                    self.callbacks.push((r.callback, histogram()));
                    let last = self.callbacks.len() - 1;
                    &mut self.callbacks[last].1
                }
            };
            let _ = h.record((r.wall.as_nanos() as u64).max(1));
        }
        true
    }
}

/// What one pass runs: the traffic, its size, its first exchanges (to fill
/// the last batch) and the streams in flight.
struct Pass<'a> {
    source: SourceRef<'a>,
    exchanges: usize,
    head: &'a [Exchange],
    streams: usize,
}

/// Per callback of a metered pass: (export, calls, wasm instructions).
pub type CallbackCounts = Vec<(String, u64, u64)>;

/// Runs the traffic once through a fresh metered VM: instruction counts per
/// callback, host calls and bytes across the boundary. Deterministic.
pub fn count_pass(
    name: &str,
    wasm: &[u8],
    config: &str,
    traffic: &Traffic,
) -> Result<(Counts, CallbackCounts), BenchError> {
    let settings = VmSettings {
        plugin_config: config.as_bytes().to_vec(),
        ..VmSettings::default()
    };
    count_pass_with(name, wasm, settings, traffic)
}

/// [`count_pass`] with the VM's settings given whole (stubbed clusters...).
pub fn count_pass_with(
    name: &str,
    wasm: &[u8],
    settings: VmSettings,
    traffic: &Traffic,
) -> Result<(Counts, CallbackCounts), BenchError> {
    count_source(name, wasm, settings, SourceRef::Memory(&traffic.exchanges))
}

/// [`count_pass_with`] over any source, a batch at a time.
fn count_source(
    name: &str,
    wasm: &[u8],
    settings: VmSettings,
    source: SourceRef<'_>,
) -> Result<(Counts, CallbackCounts), BenchError> {
    let plugin = Plugin::from_bytes_metered(name, wasm)?;
    let mut vm = Vm::start(&plugin, settings)?;
    vm.record_calls(true);
    let mut records = Vec::new();
    vm.drain_calls(&mut records);
    records.clear();
    let before = vm.state().boundary();
    let mut per: Vec<(String, u64, u64)> = Vec::new();
    let mut instructions = 0u64;
    source.each_batch(BATCH, |_, exchanges| {
        for e in exchanges {
            let input = StreamInput::from_recording(e);
            stream::run_chain_verdict(&mut lane(&mut vm), &Prepared::new(&input));
            vm.drain_calls(&mut records);
        }
        for r in records.drain(..) {
            instructions += r.instructions;
            match per.iter_mut().find(|(n, _, _)| n == r.callback) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += r.instructions;
                }
                None => per.push((r.callback.to_string(), 1, r.instructions)),
            }
        }
        true
    })?;
    let after = vm.state().boundary();
    let counts = Counts {
        instructions,
        host_calls: after.host_calls - before.host_calls,
        bytes_in: after.bytes_in - before.bytes_in,
        bytes_out: after.bytes_out - before.bytes_out,
    };
    Ok((counts, per))
}

fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    // Log buckets, 4 per power of two, from the minimum to the maximum.
    let mut out = Vec::new();
    let mut le = h.min().max(1) as f64;
    let max = h.max() as f64;
    let mut below = 0u64;
    loop {
        let bound = le.ceil() as u64;
        let upto = h
            .iter_recorded()
            .filter(|v| v.value_iterated_to() <= bound)
            .map(|v| v.count_at_value())
            .sum::<u64>();
        out.push(Bucket {
            le_ns: bound,
            count: upto - below,
        });
        below = upto;
        if le >= max {
            break;
        }
        le *= 2f64.powf(0.25);
    }
    out
}

fn finish(
    s: &Subject,
    tally: Tally,
    memory_start: u64,
    settings: VmSettings,
    traffic: SourceRef<'_>,
    streams: usize,
) -> Result<FilterBench, BenchError> {
    let (counts, per) = count_source(&s.name, &s.wasm, settings, traffic)?;
    let mut callbacks: Vec<CallbackCost> = tally
        .callbacks
        .iter()
        .map(|(name, h)| {
            let (calls, instructions) = per
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or((0, 0), |(_, c, i)| (*c, *i));
            CallbackCost {
                callback: (*name).to_string(),
                latency: Latency::of(h),
                floor_p50_ns: 0,
                calls,
                instructions,
            }
        })
        .collect();
    callbacks.sort_by_key(|c| callback_order(&c.callback));
    Ok(FilterBench {
        filter: s.name.clone(),
        wasm_bytes: s.plugin.wasm_bytes(),
        compile_us: s.compile_us,
        compiled_from_cache: s.from_cache,
        vm_start_us: s.vm_start_us,
        request: Latency::of(&tally.request),
        callbacks,
        counts,
        memory_start,
        memory_end: s.vm.memory_size(),
        memory_peak: tally.memory_peak.max(s.vm.memory_size()),
        streams: streams.max(1),
        pass_means_ns: tally.pass_means_ns,
        histogram: buckets(&tally.request),
        failed_requests: tally.failed,
    })
}

fn callback_order(name: &str) -> usize {
    const ORDER: [&str; 9] = [
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_response_trailers",
        "proxy_on_log",
        "proxy_on_done",
    ];
    ORDER
        .iter()
        .position(|n| *n == name)
        .unwrap_or(if name == "proxy_on_delete" { 9 } else { 10 })
}

/// Runs the benchmark: the filter and the floor interleaved pass by pass,
/// and with a baseline module, the baseline too.
pub fn run(options: &BenchOptions, baseline: Option<&Baseline>) -> Result<BenchReport, BenchError> {
    let traffic = options.traffic.as_ref();
    let source = options.traffic.name();
    let streams = options.streams.max(1);
    // One reading pass: the size, and the first exchanges (the last batch of
    // streams in flight is filled up from them); bad entries stop here.
    options
        .identity
        .check()
        .map_err(|e| BenchError::Option(format!("--env/--host-env: {e}")))?;
    let (exchanges, head) = traffic.scan(streams)?;
    if exchanges == 0 {
        return Err(BenchError::NoTraffic { traffic: source });
    }
    if options.budget == Budget::Iterations(0) {
        return Err(BenchError::Option(
            "--iterations must be at least 1".to_string(),
        ));
    }
    let wasm = std::fs::read(&options.filter).map_err(|error| LoadError::Read {
        path: options.filter.clone(),
        error,
    })?;
    let name = options.filter.display().to_string();
    let mut subjects = vec![
        Subject::new(
            &name,
            wasm,
            options.settings(&options.config),
            options.cache.as_ref(),
        )?,
        Subject::new(
            "floor (no-op module)",
            bare::noop_module()?,
            options.settings(""),
            options.cache.as_ref(),
        )?,
    ];
    let mut base_label = None;
    let mut base_report = None;
    match baseline {
        Some(Baseline::Module(path)) => {
            let wasm = std::fs::read(path).map_err(|error| LoadError::Read {
                path: path.clone(),
                error,
            })?;
            subjects.push(Subject::new(
                &path.display().to_string(),
                wasm,
                options.settings(&options.config),
                options.cache.as_ref(),
            )?);
            base_label = Some(path.display().to_string());
        }
        Some(Baseline::Report(path, report)) => {
            base_label = Some(path.display().to_string());
            base_report = Some(report.filter.clone());
        }
        None => {}
    }
    let prepared = Pass {
        source: traffic,
        exchanges,
        head: &head,
        streams,
    };
    let mut tallies: Vec<Tally> = subjects.iter().map(|_| Tally::new()).collect();
    for s in subjects.iter_mut() {
        s.vm.record_calls(true);
    }
    let memory_start: Vec<u64> = subjects.iter().map(|s| s.vm.memory_size()).collect();
    for _ in 0..options.warmup {
        for (s, t) in subjects.iter_mut().zip(tallies.iter_mut()) {
            t.pass(&mut s.vm, &prepared, false)?;
        }
    }
    let started = Instant::now();
    let mut passes = 0;
    loop {
        // Alternate the order so neither module always runs first.
        let n = subjects.len();
        for k in 0..n {
            let i = if passes % 2 == 0 { k } else { n - 1 - k };
            tallies[i].pass(&mut subjects[i].vm, &prepared, true)?;
        }
        passes += 1;
        let done = match options.budget {
            Budget::Iterations(n) => passes >= n,
            Budget::Time(d) => started.elapsed() >= d,
        } || tallies.iter().any(|t| t.failure.is_some());
        if done {
            break;
        }
    }
    for (s, t) in subjects.iter().zip(&tallies) {
        if let Some((pass, request, message)) = &t.failure {
            return Err(BenchError::Failed {
                filter: s.name.clone(),
                pass: *pass,
                request: *request,
                message: message.clone(),
            });
        }
    }
    let mut benches = Vec::new();
    for ((s, t), m) in subjects.iter().zip(tallies).zip(memory_start) {
        benches.push(finish(
            s,
            t,
            m,
            options.settings(if s.name.starts_with("floor") {
                ""
            } else {
                &options.config
            }),
            traffic,
            streams,
        )?);
    }
    let base_bench = if benches.len() > 2 {
        benches.pop()
    } else {
        base_report
    };
    let floor = benches
        .pop()
        .ok_or_else(|| BenchError::Option("internal: no floor".into()))?;
    let mut filter = benches
        .pop()
        .ok_or_else(|| BenchError::Option("internal: no filter".into()))?;
    for c in filter.callbacks.iter_mut() {
        c.floor_p50_ns = floor
            .callbacks
            .iter()
            .find(|f| f.callback == c.callback)
            .map_or(0, |f| f.latency.p50_ns);
    }
    let comparison = match (base_label, base_bench) {
        (Some(label), Some(b)) => Some(compare(label, &filter, b)),
        _ => None,
    };
    Ok(BenchReport {
        traffic: source,
        requests_per_pass: requests_per_pass(exchanges, streams),
        counted_requests: exchanges,
        passes,
        above_floor_p50_ns: filter.request.p50_ns as i64 - floor.request.p50_ns as i64,
        above_floor_mean_ns: filter.request.mean_ns - floor.request.mean_ns,
        filter,
        floor,
        comparison,
    })
}

/// What to compare against.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// Another build of the module, run interleaved with the filter.
    Module(PathBuf),
    /// A report saved with `--format json`.
    Report(PathBuf, Box<BenchReport>),
}

impl Baseline {
    /// A `.json` path is a saved report; anything else a module.
    pub fn from_path(path: &Path) -> Result<Self, BenchError> {
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(path).map_err(|e| BenchError::Baseline {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let report: BenchReport =
                serde_json::from_str(&text).map_err(|e| BenchError::Baseline {
                    path: path.to_path_buf(),
                    message: format!("not a `tollgate bench --format json` report: {e}"),
                })?;
            if report.filter.pass_means_ns.is_empty() {
                return Err(BenchError::Baseline {
                    path: path.to_path_buf(),
                    message: "field `filter.pass_means_ns` is empty".to_string(),
                });
            }
            Ok(Self::Report(path.to_path_buf(), Box::new(report)))
        } else {
            Ok(Self::Module(path.to_path_buf()))
        }
    }
}

/// A small deterministic generator for the bootstrap (xorshift64*).
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Ratio of means (new / old) and a 95% bootstrap interval (resampling the
/// passes of each side independently, 2000 resamples, fixed seed).
pub fn ratio_ci(new: &[f64], old: &[f64]) -> (f64, f64, f64) {
    let ratio = mean(new) / mean(old);
    if new.is_empty() || old.is_empty() {
        return (ratio, ratio, ratio);
    }
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut ratios: Vec<f64> = (0..2000)
        .map(|_| {
            let a: f64 = (0..new.len())
                .map(|_| new[rng.below(new.len())])
                .sum::<f64>()
                / new.len() as f64;
            let b: f64 = (0..old.len())
                .map(|_| old[rng.below(old.len())])
                .sum::<f64>()
                / old.len() as f64;
            a / b
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (
        ratio,
        ratios[ratios.len() * 25 / 1000],
        ratios[ratios.len() * 975 / 1000],
    )
}

fn compare(label: String, filter: &FilterBench, base: FilterBench) -> Comparison {
    let (ratio, ci_low, ci_high) = ratio_ci(&filter.pass_means_ns, &base.pass_means_ns);
    Comparison {
        baseline: label,
        ratio,
        ci_low,
        ci_high,
        threshold_pct: None,
        regression: false,
        baseline_bench: base,
    }
}

impl BenchReport {
    /// Applies a regression threshold (percent slower than the baseline):
    /// a regression when the whole confidence interval lies past it.
    pub fn apply_threshold(&mut self, threshold_pct: f64) {
        if let Some(c) = self.comparison.as_mut() {
            c.threshold_pct = Some(threshold_pct);
            c.regression = c.ci_low > 1.0 + threshold_pct / 100.0;
        }
    }

    /// The terminal table.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let f = &self.filter;
        let _ = writeln!(
            o,
            "{} on {}: {} requests x {} passes",
            f.filter, self.traffic, self.requests_per_pass, self.passes
        );
        let _ = writeln!(
            o,
            "compile {:.1} ms{}, VM start {:.1} us; {} in flight; linear memory {} -> {} KiB (peak {} KiB; floor {} KiB){}",
            f.compile_us / 1000.0,
            if f.compiled_from_cache {
                " (from the module cache)"
            } else {
                ""
            },
            f.vm_start_us,
            if f.streams == 1 {
                "1 stream".to_string()
            } else {
                format!("streams = {}", f.streams)
            },
            f.memory_start / 1024,
            f.memory_end / 1024,
            f.memory_peak / 1024,
            self.floor.memory_peak / 1024,
            if f.failed_requests > 0 {
                format!("; {} failed requests", f.failed_requests)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "\n{:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "per request (ns)", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (name, l) in [
            ("filter", &f.request),
            ("floor (no-op module)", &self.floor.request),
        ] {
            let _ = writeln!(
                o,
                "{name:<30} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.0}",
                l.p50_ns, l.p90_ns, l.p99_ns, l.p999_ns, l.max_ns, l.mean_ns
            );
        }
        let _ = writeln!(
            o,
            "{:<30} {:>9} {:>49.0}",
            "above floor", self.above_floor_p50_ns, self.above_floor_mean_ns
        );
        let _ = writeln!(
            o,
            "\n{:<28} {:>7} {:>9} {:>9} {:>9} {:>9} {:>13}",
            "per callback (ns)", "calls", "p50", "p99", "max", "floor p50", "instr (pass)"
        );
        for c in &f.callbacks {
            let _ = writeln!(
                o,
                "{:<28} {:>7} {:>9} {:>9} {:>9} {:>9} {:>13}",
                c.callback,
                c.calls,
                c.latency.p50_ns,
                c.latency.p99_ns,
                c.latency.max_ns,
                c.floor_p50_ns,
                c.instructions
            );
        }
        let n = self.counted_requests.max(1) as f64;
        let k = &f.counts;
        let _ = writeln!(
            o,
            "\nper request (deterministic): {:.0} wasm instructions, {:.1} host calls, {:.0} bytes in, {:.0} bytes out (floor: {:.0} instructions, {:.1} host calls)",
            k.instructions as f64 / n,
            k.host_calls as f64 / n,
            k.bytes_in as f64 / n,
            k.bytes_out as f64 / n,
            self.floor.counts.instructions as f64 / n,
            self.floor.counts.host_calls as f64 / n,
        );
        if let Some(c) = &self.comparison {
            let _ = writeln!(
                o,
                "\nvs baseline {}: {:.3}x (95% CI {:.3}..{:.3}){}",
                c.baseline,
                c.ratio,
                c.ci_low,
                c.ci_high,
                match (c.threshold_pct, c.regression) {
                    (Some(t), true) => format!(": REGRESSION past {t}%"),
                    (Some(t), false) => format!(": within {t}%"),
                    (None, _) => String::new(),
                }
            );
        }
        o
    }
}
