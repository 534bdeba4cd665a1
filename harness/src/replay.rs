//! Replaying recorded traffic through a filter and reporting, per exchange,
//! what the filter did (passed, modified, answered locally, failed), what it
//! changed, what it logged and how long it ran.
//!
//! ```no_run
//! # use tollgate_harness::replay::Replay;
//! # use tollgate_harness::traffic::har;
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
//! Replay is reproducible: the VM's clock starts at a fixed instant and
//! advances 1 ms per exchange, randomness is seeded. When the filter traps,
//! the exchange is `Failed` and a fresh VM takes over for the rest (like
//! Envoy's `FAIL_RELOAD` policy).

pub use crate::host::LogLine;
use crate::host::{HttpCallStub, LogLevel, VmSettings};
use crate::plugin::{LoadError, Plugin};
use crate::stream::{self, StreamOutcome};
use crate::traffic::{HttpRequest, HttpResponse, Traffic};
use crate::vm::{Vm, VmError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Virtual time between two exchanges.
const EXCHANGE_SPACING: Duration = Duration::from_millis(1);

/// What the filter did with one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Request and response went through unchanged.
    Passed,
    /// The request reaching the upstream or the response reaching the client
    /// differs from the recording (or the filter reset or stalled the stream).
    Modified,
    /// The filter answered itself with `proxy_send_local_response`.
    AnsweredLocally {
        /// The status it answered with.
        status: u16,
    },
    /// A guest call trapped or ran too long.
    Failed {
        /// What happened, with the guest backtrace.
        message: String,
    },
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
    /// What the client got back (status 0: no response, the stream was reset or stalled).
    pub client_response: HttpResponse,
    /// Each difference, readable, e.g. `request header x-foo: added "bar"`.
    pub changes: Vec<String>,
    /// Wall time spent inside the guest for this exchange.
    pub cost: Duration,
    /// What the guest logged during this exchange.
    pub logs: Vec<LogLine>,
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
    /// The filter.
    pub filter: FilterInfo,
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
}

enum Source {
    Path(PathBuf),
    Bytes(String, Vec<u8>),
}

/// A replay being set up; [`Replay::run`] runs it.
pub struct Replay {
    source: Source,
    settings: VmSettings,
    traffic: Traffic,
    on_progress: Option<Box<dyn FnMut(usize, usize)>>,
}

impl Replay {
    /// A replay through the module at `path`.
    pub fn filter(path: impl AsRef<Path>) -> Self {
        Self::with_source(Source::Path(path.as_ref().to_path_buf()))
    }

    /// A replay through a module given as bytes (`name` is used in messages).
    pub fn module(name: impl Into<String>, wasm: impl Into<Vec<u8>>) -> Self {
        Self::with_source(Source::Bytes(name.into(), wasm.into()))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            settings: VmSettings::default(),
            traffic: Traffic::default(),
            on_progress: None,
        }
    }

    /// The plugin configuration (what `on_configure` reads).
    pub fn config(mut self, config: impl Into<String>) -> Self {
        self.settings.plugin_config = config.into().into_bytes();
        self
    }

    /// The VM configuration (what `on_vm_start` reads).
    pub fn vm_config(mut self, config: impl Into<String>) -> Self {
        self.settings.vm_config = config.into().into_bytes();
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
        self.settings.log_level = level;
        self
    }

    /// Longest one guest call may run (default 5 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.settings.call_timeout = timeout;
        self
    }

    /// Answer every `proxy_http_call` with this response.
    pub fn http_call_stub(mut self, stub: HttpCallStub) -> Self {
        self.settings.http_call_stub = Some(stub);
        self
    }

    /// Replaces all VM settings (identity, clock start, seed, addresses...);
    /// set the configuration after this.
    pub fn settings(mut self, settings: VmSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Runs the replay.
    pub fn run(self) -> Result<Report, ReplayError> {
        let Replay {
            source,
            settings,
            traffic,
            mut on_progress,
        } = self;
        let (plugin, path) = match source {
            Source::Path(p) => (Plugin::load(&p)?, p),
            Source::Bytes(name, bytes) => (Plugin::from_bytes(&name, &bytes)?, PathBuf::from(name)),
        };
        let mut vm = Vm::start(&plugin, settings.clone())?;
        let startup_logs = vm.state_mut().take_logs();
        let total = traffic.exchanges.len();
        let mut exchanges = Vec::with_capacity(total);
        for (i, exchange) in traffic.exchanges.iter().enumerate() {
            vm.take_cost();
            let outcome = match vm.advance_clock(EXCHANGE_SPACING) {
                Ok(()) => stream::run(&mut vm, exchange),
                Err(e) => StreamOutcome {
                    upstream_request: None,
                    client_response: HttpResponse {
                        status: stream::NO_RESPONSE,
                        headers: Vec::new(),
                        body: Vec::new(),
                    },
                    local_response: None,
                    local_in_response: false,
                    reset_in: None,
                    stalled_in: None,
                    failure: Some(e),
                },
            };
            let cost = vm.take_cost();
            let logs = vm.state_mut().take_logs();
            let failed = outcome.failure.is_some();
            exchanges.push(judge(exchange, outcome, cost, logs));
            if failed {
                vm = Vm::start(&plugin, settings.clone())?;
                vm.state_mut().take_logs();
            }
            if let Some(f) = on_progress.as_mut() {
                f(i + 1, total);
            }
        }
        Ok(Report {
            filter: FilterInfo {
                path,
                wasm_bytes: plugin.wasm_bytes(),
                abi: plugin.abi().to_string(),
            },
            exchanges,
            startup_logs,
        })
    }
}

fn judge(
    exchange: &crate::traffic::Exchange,
    out: StreamOutcome,
    cost: Duration,
    logs: Vec<LogLine>,
) -> ExchangeReport {
    let recorded_response = exchange.response.clone().unwrap_or(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    });
    let mut changes = Vec::new();
    if let Some(up) = &out.upstream_request {
        diff_request(&exchange.request, up, &mut changes);
    }
    if let Some(l) = &out.local_response {
        let when = if out.local_in_response {
            "while processing the response"
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
    if let Some(cb) = out.stalled_in {
        changes.push(format!(
            "the filter paused in {cb} and never resumed; Envoy would hold the stream until a timeout"
        ));
    }
    if out.reset_in.is_none() && out.stalled_in.is_none() && out.failure.is_none() {
        diff_response(&recorded_response, &out.client_response, &mut changes);
    }
    let verdict = if let Some(f) = &out.failure {
        Verdict::Failed {
            message: f.to_string(),
        }
    } else if let Some(l) = &out.local_response {
        Verdict::AnsweredLocally {
            status: u16::try_from(l.status).unwrap_or(0),
        }
    } else if changes.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Modified
    };
    ExchangeReport {
        id: exchange.id.clone(),
        verdict,
        upstream_request: out.upstream_request,
        client_response: out.client_response,
        changes,
        cost,
        logs,
    }
}

fn show(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Header differences by name (order-insensitive across names, ordered within one).
fn diff_headers(
    what: &str,
    before: &[(String, String)],
    after: &[(String, String)],
    out: &mut Vec<String>,
) {
    let mut names: Vec<&str> = Vec::new();
    for (k, _) in before.iter().chain(after) {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    for name in names {
        let b: Vec<&str> = before
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        let a: Vec<&str> = after
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if a == b {
            continue;
        }
        out.push(if b.is_empty() {
            format!("{what} header {name}: added {}", show(&a))
        } else if a.is_empty() {
            format!("{what} header {name}: removed (was {})", show(&b))
        } else {
            format!("{what} header {name}: changed {} -> {}", show(&b), show(&a))
        });
    }
}

fn diff_body(what: &str, before: &[u8], after: &[u8], out: &mut Vec<String>) {
    if before != after {
        out.push(format!(
            "{what} body: changed ({} bytes -> {} bytes)",
            before.len(),
            after.len()
        ));
    }
}

fn diff_request(before: &HttpRequest, after: &HttpRequest, out: &mut Vec<String>) {
    for (field, b, a) in [
        ("method", &before.method, &after.method),
        ("scheme", &before.scheme, &after.scheme),
        ("authority", &before.authority, &after.authority),
        ("path", &before.path, &after.path),
    ] {
        if b != a {
            out.push(format!("request {field}: changed {b:?} -> {a:?}"));
        }
    }
    diff_headers("request", &before.headers, &after.headers, out);
    diff_body("request", &before.body, &after.body, out);
}

fn diff_response(before: &HttpResponse, after: &HttpResponse, out: &mut Vec<String>) {
    if before.status != after.status {
        out.push(format!(
            "response status: changed {} -> {}",
            before.status, after.status
        ));
    }
    diff_headers("response", &before.headers, &after.headers, out);
    diff_body("response", &before.body, &after.body, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_diff_reads_well() {
        let mut out = Vec::new();
        diff_headers(
            "request",
            &h(&[("a", "1"), ("b", "2"), ("c", "3")]),
            &h(&[("b", "2"), ("a", "9"), ("d", "4")]),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "request header a: changed \"1\" -> \"9\"",
                "request header c: removed (was \"3\")",
                "request header d: added \"4\"",
            ]
        );
    }

    #[test]
    fn summary_counts_and_percentiles() {
        let ex = |verdict: Verdict, ms: u64| ExchangeReport {
            id: "x".into(),
            verdict,
            upstream_request: None,
            client_response: HttpResponse {
                status: 200,
                headers: vec![],
                body: vec![],
            },
            changes: vec![],
            cost: Duration::from_millis(ms),
            logs: vec![],
        };
        let report = Report {
            filter: FilterInfo {
                path: "f.wasm".into(),
                wasm_bytes: 1,
                abi: "0.2.1".into(),
            },
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
