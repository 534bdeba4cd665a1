//! Replaying recorded traffic through a filter and reporting, per exchange,
//! what the filter did (passed, modified, answered locally, failed), what it
//! changed, what it logged and how long it ran.
//!
//! ```no_run
//! # use tollgate_replay::Replay;
//! # use tollgate_traffic::har;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let traffic = har::load(std::path::Path::new("traffic/demo.har"))?;
//! let report = Replay::filter("target/filters/headers.wasm")
//!     .config(r#"{"request":{}}"#)
//!     .traffic(traffic)
//!     .run()?;
//! println!("{:?}", report.summary());
//! # Ok(()) }
//! ```
//!
//! Each exchange is replayed as recorded ([`StreamInput::from_recording`]):
//! bodies in the recorded chunk sizes, with the recorded trailers, and the
//! exchange's recorded callout answers for its `proxy_http_call`s (before
//! the builder's per-cluster stubs, [`ReplayBuilder::http_cluster`] and
//! [`ReplayBuilder::grpc_cluster`], with their delays on the virtual clock,
//! and the catch-all [`ReplayBuilder::http_call_stub`]).
//!
//! Several filters form a chain (`Replay::filter(a).config(..).filter(b)`):
//! the request goes through them in order, the response in reverse, as in
//! Envoy's filter manager (see [`tollgate_host::stream`]).
//!
//! Replay is reproducible: the VM's clock starts at a fixed instant and
//! advances 1 ms per exchange, randomness is seeded. When a filter traps,
//! the exchange is `Failed` and the filter's [`FailurePolicy`] decides what
//! follows (Envoy's default, `FailClosed`: 503 `wasm_fail_stream` for every
//! later request; `FailOpen`: the filter is skipped; `FailReload`: a fresh
//! VM after the reload backoff).

pub mod bench;
pub mod streaming;
pub mod suite;
#[cfg(test)]
mod trace_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tollgate_host::cache::ModuleCache;
use tollgate_host::plugin::{LoadError, Plugin};
pub use tollgate_host::state::LogLine;
use tollgate_host::state::{GrpcCallStub, HttpCallStub, LogLevel, SharedRegistry, VmSettings};
use tollgate_host::stream::{self, FilterFailure, Lane, StreamOutcome};
pub use tollgate_host::stream::{BodyDelivery, ChunkPlan, FailurePolicy, FilterSteps, StreamInput};
pub use tollgate_host::verdict::Verdict;
use tollgate_host::verdict::{decided_verdict, diff_request, diff_response};
use tollgate_host::vm::{Vm, VmError};
use tollgate_traffic::{HttpRequest, HttpResponse, Traffic};

/// Virtual time between two exchanges.
const EXCHANGE_SPACING: Duration = Duration::from_millis(1);

/// The longest recorded gap between two exchanges the replay lets pass on
/// the virtual clock (ticks fire for all of it): longer idle times in a
/// recording are cut to this.
pub const MAX_RECORDED_GAP: Duration = Duration::from_secs(600);

/// The virtual time between two recorded exchanges: the gap between their
/// recorded starts (`timing.started`, RFC 3339) when both have one and
/// `next` started later, at most [`MAX_RECORDED_GAP`]; `None` otherwise
/// (the exchanges then follow each other 1 ms apart).
pub fn recorded_gap(
    prev: &tollgate_traffic::Exchange,
    next: &tollgate_traffic::Exchange,
) -> Option<Duration> {
    gap_between(started_at(prev)?, started_at(next)?)
}

/// When a recorded exchange started (`timing.started`), if recorded.
fn started_at(e: &tollgate_traffic::Exchange) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    e.details
        .timing
        .started
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
}

/// [`recorded_gap`] of two start times.
fn gap_between(
    prev: chrono::DateTime<chrono::FixedOffset>,
    next: chrono::DateTime<chrono::FixedOffset>,
) -> Option<Duration> {
    let gap = (next - prev).to_std().ok()?;
    Some(gap.min(MAX_RECORDED_GAP))
}

/// The report for one exchange.
#[derive(Debug, Clone)]
pub struct ExchangeReport {
    /// The exchange's id from the recording.
    pub id: String,
    /// What the filter did.
    pub verdict: Verdict,
    /// The request as it reached the upstream (`None` when it never did).
    pub upstream_request: Option<HttpRequest>,
    /// What reached the upstream of a request that never ended there (its
    /// headers and the body passed on), before Envoy reset it.
    pub upstream_reset: Option<HttpRequest>,
    /// What the client got back (status 0: no response, the stream was reset or stalled).
    pub client_response: HttpResponse,
    /// Each difference, readable, e.g. `request header x-foo: added "bar"`.
    pub changes: Vec<String>,
    /// Wall time spent inside the guest for this exchange.
    pub cost: Duration,
    /// What the guest logged during this exchange.
    pub logs: Vec<LogLine>,
    /// Per filter, in chain order: its callbacks, results and changes.
    pub filters: Vec<FilterSteps>,
}

/// The filter a report is about.
#[derive(Debug, Clone)]
pub struct FilterInfo {
    /// The module's path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub wasm_bytes: u64,
    /// Its proxy-wasm ABI version, e.g. `0.2.1`.
    pub abi: String,
}

/// The result of a replay.
#[derive(Debug, Clone)]
pub struct Report {
    /// The (first) filter.
    pub filter: FilterInfo,
    /// Every filter of the chain, in order.
    pub filters: Vec<FilterInfo>,
    /// One report per exchange, in order.
    pub exchanges: Vec<ExchangeReport>,
    /// What the guest logged while starting (`on_vm_start`, `on_configure`).
    pub startup_logs: Vec<LogLine>,
}

/// Totals over a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Exchanges replayed.
    pub requests: usize,
    /// Passed unchanged.
    pub passed: usize,
    /// Modified.
    pub modified: usize,
    /// Answered locally.
    pub answered_locally: usize,
    /// Failed.
    pub failed: usize,
    /// Median guest time per exchange.
    pub p50: Duration,
    /// 99th percentile guest time per exchange.
    pub p99: Duration,
}

impl Report {
    /// Counts and guest-time percentiles.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            requests: self.exchanges.len(),
            passed: 0,
            modified: 0,
            answered_locally: 0,
            failed: 0,
            p50: Duration::ZERO,
            p99: Duration::ZERO,
        };
        for e in &self.exchanges {
            match e.verdict {
                Verdict::Passed => s.passed += 1,
                Verdict::Modified => s.modified += 1,
                Verdict::AnsweredLocally { .. } => s.answered_locally += 1,
                Verdict::Failed { .. } => s.failed += 1,
            }
        }
        if let Ok(mut h) = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        {
            for e in &self.exchanges {
                let ns = u64::try_from(e.cost.as_nanos()).unwrap_or(u64::MAX);
                h.saturating_record(ns.max(1));
            }
            if !h.is_empty() {
                s.p50 = Duration::from_nanos(h.value_at_quantile(0.5));
                s.p99 = Duration::from_nanos(h.value_at_quantile(0.99));
            }
        }
        s
    }
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The filter could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The filter could not be started or configured.
    #[error(transparent)]
    Start(#[from] VmError),
    /// No filter was given.
    #[error("no filter given to the replay")]
    NoFilter,
    /// A filter's identity Envoy would refuse (an environment key given twice...).
    #[error("{filter}: {source}")]
    Identity {
        /// The filter it was given to.
        filter: String,
        /// What is wrong.
        #[source]
        source: tollgate_abi::IdentityError,
    },
}

enum Source {
    Path(PathBuf),
    Bytes(String, Vec<u8>),
    Loaded(Arc<Plugin>, PathBuf),
}

/// One filter of the chain being set up.
struct FilterSpec {
    source: Source,
    settings: VmSettings,
    policy: FailurePolicy,
}

/// Entry point of the replay builder: `Replay::filter(path)` or
/// `Replay::module(name, bytes)` start a [`ReplayBuilder`].
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    _private: (),
}

impl Replay {
    /// A replay through the module at `path`.
    pub fn filter(path: impl AsRef<Path>) -> ReplayBuilder {
        ReplayBuilder::new().filter(path)
    }

    /// A replay through a module given as bytes (`name` is used in messages).
    pub fn module(name: impl Into<String>, wasm: impl Into<Vec<u8>>) -> ReplayBuilder {
        ReplayBuilder::new().module(name, wasm)
    }

    /// An empty chain; add filters with [`ReplayBuilder::filter`],
    /// [`ReplayBuilder::module`] or [`ReplayBuilder::plugin`].
    pub fn chain() -> ReplayBuilder {
        ReplayBuilder::new()
    }
}

/// A replay being set up; [`ReplayBuilder::run`] runs it. Filter settings
/// (`config`, `vm_config`, `failure_policy`, `settings`) apply to the filter
/// added last; `log_level`, `call_timeout` and `http_call_stub` to all.
pub struct ReplayBuilder {
    filters: Vec<FilterSpec>,
    traffic: Traffic,
    on_progress: Option<Box<dyn FnMut(usize, usize)>>,
    log_level: Option<LogLevel>,
    call_timeout: Option<Duration>,
    http_call_stub: Option<HttpCallStub>,
    grpc_call_stubs: Vec<GrpcCallStub>,
    http_clusters: Vec<tollgate_host::callouts::HttpClusterStub>,
    grpc_clusters: Vec<tollgate_host::callouts::GrpcClusterStub>,
    properties: Vec<(String, Vec<u8>)>,
    clock: Option<u64>,
    reload_backoff: Duration,
    workers: usize,
    trace: bool,
    cache: Option<ModuleCache>,
    limits: Option<tollgate_host::limits::Limits>,
    identity_error: Option<ReplayError>,
    body_delivery: BodyDelivery,
    answer_timing: Option<tollgate_host::callouts::AnswerTiming>,
}

impl ReplayBuilder {
    fn new() -> Self {
        Self {
            cache: None,
            filters: Vec::new(),
            traffic: Traffic::default(),
            on_progress: None,
            log_level: None,
            call_timeout: None,
            http_call_stub: None,
            grpc_call_stubs: Vec::new(),
            http_clusters: Vec::new(),
            grpc_clusters: Vec::new(),
            properties: Vec::new(),
            clock: None,
            reload_backoff: DEFAULT_RELOAD_BACKOFF,
            workers: 1,
            trace: false,
            limits: None,
            identity_error: None,
            body_delivery: BodyDelivery::Envoy,
            answer_timing: None,
        }
    }

    /// When callout answers without a delay of their own arrive (default:
    /// after the input the client already sent, [`AnswerTiming::AfterInput`]).
    ///
    /// [`AnswerTiming::AfterInput`]: tollgate_host::callouts::AnswerTiming::AfterInput
    pub fn answer_timing(mut self, timing: tollgate_host::callouts::AnswerTiming) -> Self {
        self.answer_timing = Some(timing);
        self
    }

    /// How bodies the recording did not chunk reach the filters (default:
    /// as Envoy's codec delivers them, [`BodyDelivery::Envoy`]).
    pub fn body_delivery(mut self, delivery: BodyDelivery) -> Self {
        self.body_delivery = delivery;
        self
    }

    fn push(mut self, source: Source) -> Self {
        self.filters.push(FilterSpec {
            source,
            settings: VmSettings::default(),
            policy: FailurePolicy::default(),
        });
        self
    }

    fn last(&mut self) -> Option<&mut FilterSpec> {
        self.filters.last_mut()
    }

    /// Adds the module at `path` to the chain (after the filters so far:
    /// it sees the request after them and the response before them).
    pub fn filter(self, path: impl AsRef<Path>) -> Self {
        self.push(Source::Path(path.as_ref().to_path_buf()))
    }

    /// Adds a module given as bytes to the chain.
    pub fn module(self, name: impl Into<String>, wasm: impl Into<Vec<u8>>) -> Self {
        self.push(Source::Bytes(name.into(), wasm.into()))
    }

    /// Adds an already loaded module to the chain (no recompilation; each
    /// run still starts fresh VMs).
    pub fn plugin(self, plugin: Arc<Plugin>, path: impl Into<PathBuf>) -> Self {
        self.push(Source::Loaded(plugin, path.into()))
    }

    /// The plugin configuration of the last filter (what `on_configure` reads).
    pub fn config(mut self, config: impl Into<String>) -> Self {
        if let Some(f) = self.last() {
            f.settings.plugin_config = config.into().into_bytes();
        }
        self
    }

    /// The VM configuration of the last filter (what `on_vm_start` reads).
    pub fn vm_config(mut self, config: impl Into<String>) -> Self {
        if let Some(f) = self.last() {
            f.settings.vm_config = config.into().into_bytes();
        }
        self
    }

    /// The identity of the last filter as Envoy's plugin configuration gives
    /// it: `name`, `root_id`, `vm_id` (what is `None` keeps the default:
    /// `tollgate`, empty, empty) and the VM's environment variables
    /// (`key_values`, and `host_env_keys` read from this process's
    /// environment, as Envoy reads its own). A key given twice fails the run
    /// ([`ReplayError::Identity`]), as Envoy refuses the configuration.
    pub fn identity(mut self, identity: &tollgate_abi::PluginIdentity) -> Self {
        let env = identity.process_environment();
        let Some(f) = self.filters.last_mut() else {
            return self;
        };
        if let Some(n) = &identity.name {
            f.settings.plugin_name = n.clone();
        }
        if let Some(r) = &identity.root_id {
            f.settings.root_id = r.clone();
        }
        if let Some(v) = &identity.vm_id {
            f.settings.vm_id = v.clone();
        }
        match env {
            Ok(env) => f.settings.env = env,
            Err(source) => {
                let filter = match &f.source {
                    Source::Path(p) | Source::Loaded(_, p) => p.display().to_string(),
                    Source::Bytes(name, _) => name.clone(),
                };
                self.identity_error
                    .get_or_insert(ReplayError::Identity { filter, source });
            }
        }
        self
    }

    /// The failure policy of the last filter (default `FailClosed`, as Envoy).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        if let Some(f) = self.last() {
            f.policy = policy;
        }
        self
    }

    /// How long a `FailReload` filter answers 503 before its VM is
    /// reloaded, in virtual time (default 1 s, Envoy's base interval).
    pub fn reload_backoff(mut self, backoff: Duration) -> Self {
        self.reload_backoff = backoff;
        self
    }

    /// Worker VMs per filter (default 1). Envoy runs one VM per worker
    /// thread; exchanges go to the workers in turn, so state a filter keeps
    /// in its VM instead of shared data diverges as it would in Envoy. All
    /// VMs of a chain share shared data and queues.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Records every call across the boundary, both ways (callbacks, host
    /// calls, the host's allocations in the guest), with its arguments and
    /// return value as `trace` log lines, in the shape Envoy prints with
    /// `-l trace` (`[host->vm] proxy_on_request_headers(2, 5, 1)`,
    /// `[vm->host] env.proxy_log(1, 1088192, 49)`, `[vm<-host] env.proxy_log
    /// return: 0`, `[host<-vm] proxy_on_request_headers return: 0`); see
    /// `harness/docs/trace.md` and [`tollgate_host::trace`] to compare with Envoy's.
    pub fn trace_calls(mut self) -> Self {
        self.trace = true;
        self
    }

    /// Reads and stores compiled modules given by path in `cache` (as
    /// `tollgate bench` does) instead of compiling them on every run.
    pub fn module_cache(mut self, cache: ModuleCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The traffic to replay.
    pub fn traffic(mut self, traffic: Traffic) -> Self {
        self.traffic = traffic;
        self
    }

    /// Called after each exchange with `(done, total)`.
    pub fn on_progress(mut self, f: impl FnMut(usize, usize) + 'static) -> Self {
        self.on_progress = Some(Box::new(f));
        self
    }

    /// Lowest level of guest logs kept (default `info`, as Envoy).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Longest one guest call may run (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// What every VM may use: memory (Envoy's 1 GiB by default), callouts and
    /// wall time per exchange, guest log ([`tollgate_host::limits`]).
    pub fn limits(mut self, limits: tollgate_host::limits::Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Answer every `proxy_http_call` with this response.
    pub fn http_call_stub(mut self, stub: HttpCallStub) -> Self {
        self.http_call_stub = Some(stub);
        self
    }

    /// Answer unary `proxy_grpc_call`s to `stub.cluster` (all filters).
    pub fn grpc_call_stub(mut self, stub: GrpcCallStub) -> Self {
        self.grpc_call_stubs.push(stub);
        self
    }

    /// Answers `proxy_http_call`s to `stub.cluster` (all filters), before
    /// the catch-all [`ReplayBuilder::http_call_stub`]; see [`tollgate_host::callouts`].
    pub fn http_cluster(mut self, stub: tollgate_host::callouts::HttpClusterStub) -> Self {
        self.http_clusters.retain(|s| s.cluster != stub.cluster);
        self.http_clusters.push(stub);
        self
    }

    /// Answers gRPC calls and streams to `stub.cluster` (all filters); with
    /// `stub.method` set, only calls to that method (before the cluster's
    /// stub for any method).
    pub fn grpc_cluster(mut self, stub: tollgate_host::callouts::GrpcClusterStub) -> Self {
        self.grpc_clusters
            .retain(|s| s.cluster != stub.cluster || s.method != stub.method);
        self.grpc_clusters.push(stub);
        self
    }

    /// Answers the calls to a cluster in turn: the first call gets
    /// `stubs[0]`, the second `stubs[1]`..., the last repeats (counted per
    /// VM). Replaces the cluster's answers so far.
    pub fn http_cluster_answers(
        mut self,
        stubs: Vec<tollgate_host::callouts::HttpClusterStub>,
    ) -> Self {
        if let Some(first) = stubs.first() {
            let cluster = first.cluster.clone();
            self.http_clusters.retain(|s| s.cluster != cluster);
            self.http_clusters
                .extend(stubs.into_iter().filter(|s| s.cluster == cluster));
        }
        self
    }

    /// [`ReplayBuilder::http_cluster_answers`] for gRPC calls and streams
    /// (of one cluster and method).
    pub fn grpc_cluster_answers(
        mut self,
        stubs: Vec<tollgate_host::callouts::GrpcClusterStub>,
    ) -> Self {
        if let Some(first) = stubs.first() {
            let (cluster, method) = (first.cluster.clone(), first.method.clone());
            self.grpc_clusters
                .retain(|s| s.cluster != cluster || s.method != method);
            self.grpc_clusters.extend(
                stubs
                    .into_iter()
                    .filter(|s| s.cluster == cluster && s.method == method),
            );
        }
        self
    }

    /// A property value every filter reads with `proxy_get_property` (path
    /// segments joined by `.`, e.g. `source.address`; the value as Envoy
    /// encodes it), in place of the built-in one.
    pub fn property(mut self, path: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let path = path.into();
        self.properties.retain(|(p, _)| *p != path);
        self.properties.push((path, value.into()));
        self
    }

    /// The virtual wall clock when the VMs start, ns since the Unix epoch
    /// (every exchange comes 1 ms of virtual time after the previous one).
    pub fn clock_unix_nanos(mut self, nanos: u64) -> Self {
        self.clock = Some(nanos);
        self
    }

    /// Replaces all VM settings of the last filter (identity, clock start,
    /// seed, addresses...); set its configuration after this.
    pub fn settings(mut self, settings: VmSettings) -> Self {
        if let Some(f) = self.last() {
            f.settings = settings;
        }
        self
    }

    /// Loads and starts the chain (for callers driving exchanges themselves).
    pub fn start(self) -> Result<(Chain, Traffic), ReplayError> {
        let ReplayBuilder {
            filters,
            traffic,
            log_level,
            call_timeout,
            http_call_stub,
            grpc_call_stubs,
            http_clusters,
            grpc_clusters,
            properties,
            clock,
            reload_backoff,
            workers,
            trace,
            cache,
            limits,
            identity_error,
            body_delivery,
            answer_timing,
            ..
        } = self;
        if let Some(e) = identity_error {
            return Err(e);
        }
        if filters.is_empty() {
            return Err(ReplayError::NoFilter);
        }
        let mut slots = Vec::with_capacity(filters.len());
        // One registry for the chain: Envoy shares data per vm_id process-wide.
        let shared: Arc<SharedRegistry> = Arc::default();
        for spec in filters {
            let (plugin, path) = match spec.source {
                Source::Path(p) => match &cache {
                    Some(cache) => (Arc::new(Plugin::load_cached(&p, cache)?), p),
                    None => (Arc::new(Plugin::load(&p)?), p),
                },
                Source::Bytes(name, bytes) => (
                    Arc::new(Plugin::from_bytes(&name, &bytes)?),
                    PathBuf::from(name),
                ),
                Source::Loaded(plugin, path) => (plugin, path),
            };
            let mut settings = spec.settings;
            if let Some(l) = log_level {
                settings.log_level = l;
            }
            if let Some(t) = call_timeout {
                settings.call_timeout = t;
            }
            if let Some(l) = limits {
                settings.limits = l;
            }
            if let Some(t) = answer_timing {
                settings.answer_timing = t;
            }
            if let Some(s) = &http_call_stub {
                settings.http_call_stub = Some(s.clone());
            }
            settings
                .grpc_call_stubs
                .extend(grpc_call_stubs.iter().cloned());
            settings.http_clusters.extend(http_clusters.iter().cloned());
            settings.grpc_clusters.extend(grpc_clusters.iter().cloned());
            settings.properties.extend(properties.iter().cloned());
            if let Some(c) = clock {
                settings.start_unix_nanos = c;
            }
            let mut vms = Vec::with_capacity(workers);
            for w in 0..workers {
                let mut vm = start_vm(&plugin, settings.clone(), shared.clone(), trace)?;
                if w > 0 {
                    // Every worker logs the same start; keep the first's.
                    vm.take_logs();
                }
                vms.push(Worker {
                    vm: Some(vm),
                    failed_at: None,
                    synced: Duration::ZERO,
                });
            }
            slots.push(Slot {
                name: plugin.name().to_string(),
                info: FilterInfo {
                    path,
                    wasm_bytes: plugin.wasm_bytes(),
                    abi: plugin.abi().to_string(),
                },
                plugin,
                settings,
                policy: spec.policy,
                workers: vms,
            });
        }
        let chain = Chain {
            shared,
            slots,
            now: Duration::ZERO,
            reload_backoff,
            startup_logs: Vec::new(),
            next_worker: 0,
            workers,
            trace,
            body_delivery,
            spare: stream::Spare::default(),
        };
        Ok((chain, traffic))
    }

    /// Runs the replay.
    pub fn run(mut self) -> Result<Report, ReplayError> {
        let mut on_progress = self.on_progress.take();
        let (mut chain, traffic) = self.start()?;
        let startup_logs = chain.take_startup_logs();
        let total = traffic.exchanges.len();
        let mut exchanges = Vec::with_capacity(total);
        let mut prev_start = None;
        let many = chain.slots.len() > 1;
        // Each exchange is taken, not copied: its strings move into the
        // driver's maps and, where the filters left them alone, on into
        // the report.
        for (i, mut exchange) in traffic.exchanges.into_iter().enumerate() {
            let start = started_at(&exchange);
            if let Some(gap) = prev_start.zip(start).and_then(|(p, n)| gap_between(p, n)) {
                chain.advance(gap);
            }
            prev_start = start;
            let id = std::mem::take(&mut exchange.id);
            let (outcome, recorded, cost, logs) = chain.exchange_owned(&mut exchange);
            exchanges.push(judge(
                id,
                recorded.request.as_ref(),
                recorded.response.as_ref(),
                outcome,
                cost,
                logs,
                many,
            ));
            if let Some(f) = on_progress.as_mut() {
                f(i + 1, total);
            }
        }
        let filters: Vec<FilterInfo> = chain.slots.iter().map(|s| s.info.clone()).collect();
        Ok(Report {
            filter: filters[0].clone(),
            filters,
            exchanges,
            startup_logs,
        })
    }
}

/// Default FAIL_RELOAD backoff: Envoy's `ReloadConfig.backoff` base interval.
pub const DEFAULT_RELOAD_BACKOFF: Duration = Duration::from_secs(1);

struct Slot {
    name: String,
    info: FilterInfo,
    plugin: Arc<Plugin>,
    settings: VmSettings,
    policy: FailurePolicy,
    workers: Vec<Worker>,
}

/// One worker's VM of a filter.
struct Worker {
    /// `None` after a failure.
    vm: Option<Vm>,
    /// Virtual time of the last failure (for FAIL_RELOAD's backoff).
    failed_at: Option<Duration>,
    /// Chain time the VM's clock has been advanced to.
    synced: Duration,
}

/// A started chain of filters, driven one exchange at a time.
pub struct Chain {
    shared: Arc<SharedRegistry>,
    slots: Vec<Slot>,
    now: Duration,
    reload_backoff: Duration,
    startup_logs: Vec<LogLine>,
    next_worker: usize,
    workers: usize,
    trace: bool,
    body_delivery: BodyDelivery,
    /// Strings one exchange leaves for the next ([`stream::Spare`]).
    spare: stream::Spare,
}

fn start_vm(
    plugin: &Plugin,
    settings: VmSettings,
    shared: Arc<SharedRegistry>,
    trace: bool,
) -> Result<Vm, VmError> {
    if trace {
        Vm::start_traced(plugin, settings, shared)
    } else {
        Vm::start_shared(plugin, settings, shared)
    }
}

impl Chain {
    /// Lets `by` of virtual time pass before the next exchange (which comes
    /// `by` after the previous one rather than 1 ms after it): every
    /// filter's clock moves on when that exchange starts, firing
    /// `proxy_on_tick` once per elapsed tick period, as Envoy's timer does,
    /// and delivering callout answers due on the way; their logs are that
    /// exchange's.
    pub fn advance(&mut self, by: Duration) {
        self.now += by.saturating_sub(EXCHANGE_SPACING);
    }

    /// The driver input for a recorded exchange
    /// ([`StreamInput::from_recording_with`] and the builder's
    /// [`BodyDelivery`]).
    pub fn input_for(&self, exchange: &tollgate_traffic::Exchange) -> StreamInput {
        StreamInput::from_recording_with(exchange, self.body_delivery)
    }

    /// The exchange prepared for the driver as [`Self::input_for`] gives
    /// it, borrowing the recording instead of copying it.
    pub fn prepare<'e>(&self, exchange: &'e tollgate_traffic::Exchange) -> stream::Prepared<'e> {
        stream::Prepared::from_recording_with(exchange, self.body_delivery)
    }

    /// What the guests logged while starting, emptied.
    pub fn take_startup_logs(&mut self) -> Vec<LogLine> {
        let many = self.slots.len() > 1;
        let mut out = std::mem::take(&mut self.startup_logs);
        for s in &mut self.slots {
            for w in &mut s.workers {
                if let Some(vm) = w.vm.as_mut() {
                    collect_logs(vm, &s.name, many, &mut out);
                }
            }
        }
        out
    }

    /// The running VM of filter `index` on the first worker (`None` after a failure).
    pub fn vm(&self, index: usize) -> Option<&Vm> {
        self.vm_on(index, 0)
    }

    /// The running VM of filter `index` on worker `worker`.
    pub fn vm_on(&self, index: usize, worker: usize) -> Option<&Vm> {
        self.slots
            .get(index)
            .and_then(|s| s.workers.get(worker))
            .and_then(|w| w.vm.as_ref())
    }

    /// Number of filters in the chain.
    pub fn filters(&self) -> usize {
        self.slots.len()
    }

    /// Number of worker VMs per filter.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs one exchange through the chain (on the next worker in turn);
    /// returns the outcome, the guest time it cost and what the guests logged.
    pub fn exchange(&mut self, input: &StreamInput) -> (StreamOutcome, Duration, Vec<LogLine>) {
        self.exchange_prepared(stream::Prepared::new(input))
    }

    /// [`Self::exchange`] of an exchange already prepared ([`Self::prepare`]).
    pub fn exchange_prepared(
        &mut self,
        input: stream::Prepared<'_>,
    ) -> (StreamOutcome, Duration, Vec<LogLine>) {
        let (outcome, (), cost, logs) = self.drive(|lanes| (stream::run_once(lanes, input), ()));
        (outcome, cost, logs)
    }

    /// [`Self::exchange_prepared`] giving back the recorded messages where
    /// they differ from the outcome's ([`stream::run_owned`]; with
    /// [`stream::Prepared::from_recording_owned`] an exchange the filters
    /// leave alone is never copied).
    pub fn exchange_owned(
        &mut self,
        exchange: &mut tollgate_traffic::Exchange,
    ) -> (StreamOutcome, stream::Recorded, Duration, Vec<LogLine>) {
        let mut spare = std::mem::take(&mut self.spare);
        let input =
            stream::Prepared::from_recording_owned(exchange, self.body_delivery, &mut spare);
        let r = self.drive(|lanes| stream::run_owned(lanes, input, &mut spare));
        self.spare = spare;
        r
    }

    /// Runs one exchange on the next worker with `run`, which drives it
    /// through the lanes.
    fn drive<R>(
        &mut self,
        run: impl FnOnce(&mut [Lane<'_>]) -> (StreamOutcome, R),
    ) -> (StreamOutcome, R, Duration, Vec<LogLine>) {
        self.now += EXCHANGE_SPACING;
        let now = self.now;
        let wi = self.next_worker;
        self.next_worker = (wi + 1) % self.workers.max(1);
        let many = self.slots.len() > 1;
        let mut early_failures = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let w = &mut s.workers[wi];
            if w.vm.is_none()
                && s.policy == FailurePolicy::FailReload
                && w.failed_at
                    .is_some_and(|t| now.saturating_sub(t) >= self.reload_backoff)
            {
                match start_vm(
                    &s.plugin,
                    s.settings.clone(),
                    self.shared.clone(),
                    self.trace,
                ) {
                    Ok(mut vm) => {
                        vm.take_logs();
                        w.vm = Some(vm);
                        w.failed_at = None;
                        w.synced = Duration::ZERO;
                    }
                    Err(_) => w.failed_at = Some(now),
                }
            }
            if let Some(vm) = w.vm.as_mut() {
                vm.take_cost();
                let by = now.saturating_sub(w.synced);
                w.synced = now;
                if let Err(e) = vm.advance_clock(by) {
                    early_failures.push((i, e));
                }
            }
        }
        let mut logs = Vec::new();
        let mut cost = Duration::ZERO;
        let mut pre = Vec::new();
        for (i, e) in early_failures {
            let s = &mut self.slots[i];
            let w = &mut s.workers[wi];
            if let Some(vm) = w.vm.as_mut() {
                cost += vm.take_cost();
                collect_logs(vm, &s.name, many, &mut logs);
            }
            w.vm = None;
            w.failed_at = Some(now);
            pre.push(FilterFailure {
                index: i,
                filter: s.name.clone(),
                error: e,
            });
        }
        let mut lanes: Vec<Lane<'_>> = self
            .slots
            .iter_mut()
            .map(|s| Lane {
                name: s.name.clone(),
                policy: s.policy,
                vm: s.workers[wi].vm.as_mut(),
            })
            .collect();
        let clocks: Vec<Option<u64>> = lanes
            .iter()
            .map(|l| l.vm.as_deref().map(|vm| vm.state().clock().monotonic))
            .collect();
        let (mut outcome, extra) = run(&mut lanes);
        drop(lanes);
        // Virtual time the exchange waited (callout delays) moves the chain on.
        let mut waited = Duration::ZERO;
        for (s, before) in self.slots.iter_mut().zip(clocks) {
            let w = &mut s.workers[wi];
            if let (Some(vm), Some(before)) = (w.vm.as_ref(), before) {
                let d = Duration::from_nanos(vm.state().clock().monotonic.saturating_sub(before));
                w.synced += d;
                waited = waited.max(d);
            }
        }
        self.now += waited;
        for s in &mut self.slots {
            if let Some(vm) = s.workers[wi].vm.as_mut() {
                // The exchange's callout answers end with it (a tick later
                // must not take them).
                vm.clear_exchange_callouts();
                cost += vm.take_cost();
                collect_logs(vm, &s.name, many, &mut logs);
            }
        }
        for f in &outcome.failures {
            let w = &mut self.slots[f.index].workers[wi];
            w.vm = None;
            w.failed_at = Some(now);
        }
        if !pre.is_empty() {
            if outcome.failure.is_none() {
                outcome.failure = Some(pre[0].error.clone());
            }
            pre.extend(std::mem::take(&mut outcome.failures));
            outcome.failures = pre;
        }
        (outcome, extra, cost, logs)
    }
}

fn collect_logs(vm: &mut Vm, name: &str, many: bool, out: &mut Vec<LogLine>) {
    for mut l in vm.take_logs() {
        if many {
            l.message = format!("[{name}] {}", l.message);
        }
        out.push(l);
    }
}

/// A warning when a filter changed a body and left its `content-length`
/// saying another size: Envoy never fixes it, so `reader` would read that
/// many bytes, not the body sent.
fn stale_length(
    what: &str,
    reader: &str,
    headers: &[(String, String)],
    body: &[u8],
    changes: &mut Vec<String>,
) {
    let declared = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n != body.len()) {
        changes.push(format!(
            "warning: the {what} body is now {} bytes but its content-length still says {n}; Envoy does not fix it, so {reader} would read {n} bytes",
            body.len()
        ));
    }
}

/// The verdict on one exchange, its changes and the report (shared with
/// the streamed replay, [`crate::streaming`]), from the recorded messages
/// where they differ from the outcome's (`None`: the outcome carries the
/// recording itself, so there is no difference to find; see
/// [`stream::Recorded`]).
pub(crate) fn judge(
    id: String,
    recorded_request: Option<&HttpRequest>,
    recorded_response: Option<&HttpResponse>,
    out: StreamOutcome,
    cost: Duration,
    logs: Vec<LogLine>,
    many: bool,
) -> ExchangeReport {
    let mut changes = Vec::new();
    if let (Some(up), Some(recorded)) = (&out.upstream_request, recorded_request) {
        diff_request(recorded, up, &mut changes);
        if up.body != recorded.body {
            stale_length(
                "request",
                "the upstream",
                &up.headers,
                &up.body,
                &mut changes,
            );
        }
    }
    if let Some(recorded_response) = recorded_response
        && out.local_response.is_none()
        && out.client_response.body != recorded_response.body
    {
        stale_length(
            "response",
            "the client",
            &out.client_response.headers,
            &out.client_response.body,
            &mut changes,
        );
    }
    if let Some(l) = &out.local_response {
        let replacing = out.replaced_local.as_ref().map(|r| {
            format!(
                "while the local reply {} was encoded back through the chain (Envoy sends the new one in its place)",
                r.status
            )
        });
        let when = if let Some(replacing) = &replacing {
            replacing.as_str()
        } else if out.local_in_response {
            "while processing the response"
        } else if out.upstream_reset.is_some() {
            "after the request's headers had gone upstream (the upstream got them, then a reset)"
        } else {
            "instead of sending the request upstream"
        };
        let details = if l.details.is_empty() {
            String::new()
        } else {
            format!(" ({})", l.details)
        };
        changes.push(format!(
            "answered locally with status {}{details} {when}",
            l.status
        ));
    }
    if let Some(cb) = out.reset_in {
        changes.push(format!(
            "the filter reset the stream (proxy_close_stream) in {cb}; the client got no response"
        ));
    }
    if out.upstream_reset.is_some() && out.local_response.is_none() {
        changes.push(
            "the upstream got the request's headers, then a reset (the request never ended)".into(),
        );
    }
    if let Some(cb) = out.stalled_in {
        if out.failure.as_ref().is_some_and(|f| f.callback == cb) {
            changes.push(format!(
                "the filter trapped in {cb}; Envoy sends no reply: the client waits until its own timeout"
            ));
        } else if out.client_stream_open {
            changes.push(format!(
                "the filter paused in {cb} and never resumed; the client got status {}, the headers and {} body bytes, and the stream never ended (Envoy holds it until a timeout)",
                out.client_response.status,
                out.client_response.body.len()
            ));
        } else {
            changes.push(format!(
                "the filter paused in {cb} and never resumed; Envoy would hold the stream until a timeout"
            ));
        }
    }
    if let Some(recorded_response) = recorded_response
        && out.reset_in.is_none()
        && out.stalled_in.is_none()
        && out.failure.is_none()
    {
        diff_response(recorded_response, &out.client_response, &mut changes);
    }
    let verdict = if let Some(v) = decided_verdict(&out, many) {
        v
    } else if changes.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Modified
    };
    ExchangeReport {
        id,
        verdict,
        upstream_request: out.upstream_request,
        upstream_reset: out.upstream_reset,
        client_response: out.client_response,
        changes,
        cost,
        logs,
        filters: out.steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_percentiles() {
        let ex = |verdict: Verdict, ms: u64| ExchangeReport {
            id: "x".into(),
            verdict,
            upstream_request: None,
            upstream_reset: None,
            client_response: HttpResponse {
                status: 200,
                headers: vec![],
                body: vec![],
            },
            changes: vec![],
            cost: Duration::from_millis(ms),
            logs: vec![],
            filters: vec![],
        };
        let info = FilterInfo {
            path: "f.wasm".into(),
            wasm_bytes: 1,
            abi: "0.2.1".into(),
        };
        let report = Report {
            filter: info.clone(),
            filters: vec![info],
            exchanges: vec![
                ex(Verdict::Passed, 1),
                ex(Verdict::Modified, 2),
                ex(Verdict::AnsweredLocally { status: 403 }, 3),
                ex(
                    Verdict::Failed {
                        message: "boom".into(),
                    },
                    100,
                ),
            ],
            startup_logs: vec![],
        };
        let s = report.summary();
        assert_eq!(
            (
                s.requests,
                s.passed,
                s.modified,
                s.answered_locally,
                s.failed
            ),
            (4, 1, 1, 1, 1)
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        assert!((ms(s.p50) - 2.0).abs() < 0.01, "p50 {:?}", s.p50);
        assert!((ms(s.p99) - 100.0).abs() < 0.1, "p99 {:?}", s.p99);
    }
}
