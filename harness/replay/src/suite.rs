//! Declarative test suites: `tollgate test suite.yaml`, and the same from
//! Rust ([`Suite::load`], [`Suite::run`]).
//!
//! A suite names a chain of filters and lists tests; each test gives the
//! request (and the upstream response) with bodies as text, file or base64,
//! trailers and a chunking plan, and expectations on what reached the
//! upstream, what the client got, the local reply, logs and metrics. Every
//! matcher block takes a `not:` block with the same matchers, inverted.
//! Suites and tests name how clusters answer callouts (`clusters:`, with
//! delays and failures on the virtual clock, see [`tollgate_host::callouts`]), the
//! properties the filters read and the clock; expectations cover the
//! callouts made (`callout_requests`), plugin start (logs, metrics) and the
//! end of the stream (`end.logs`).
//! The format is documented in `harness/docs/suite.md`.
//!
//! Tests run in parallel, each on fresh VMs (modules are compiled once per
//! suite); nothing is global.

use crate::{ChunkPlan, FailurePolicy, Replay, ReplayBuilder, StreamInput};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_host::callouts::{CalloutRecord, GrpcClusterStub, HttpClusterStub};
use tollgate_host::plugin::{LoadError, Plugin};
use tollgate_host::state::{LogLevel, LogLine};
use tollgate_host::stream::StreamOutcome;
use tollgate_traffic::{HttpRequest, HttpResponse};

/// Why a suite could not be loaded or started.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The suite file could not be read.
    #[error("cannot read suite {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The YAML is malformed or does not follow the format.
    #[error("{file}: {message}")]
    Format {
        /// The file.
        file: String,
        /// What is wrong, with the location.
        message: String,
    },
    /// A filter module could not be loaded.
    #[error("{file}: filters[{index}]: {error}")]
    Load {
        /// The suite file.
        file: String,
        /// The filter's position.
        index: usize,
        /// The load error.
        error: LoadError,
    },
}

/// A value given inline, from a file (relative to the suite), or as base64.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodySpec {
    /// Inline text.
    pub text: Option<String>,
    /// A file, relative to the suite file.
    pub file: Option<PathBuf>,
    /// Base64 bytes.
    pub base64: Option<String>,
}

/// Headers as a mapping (`name: value`) or a list of `[name, value]` pairs
/// (for duplicates and order).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Headers {
    /// `[[name, value], ...]`
    List(Vec<(String, String)>),
    /// `{name: value}`
    Map(BTreeMap<String, String>),
}

impl Headers {
    fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Self::List(l) => l
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            Self::Map(m) => m
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        }
    }
}

/// One filter of the suite's chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// The module, relative to the suite file.
    pub path: PathBuf,
    /// Plugin configuration: a string, or any YAML value (sent as JSON).
    pub config: Option<yaml_serde::Value>,
    /// Plugin configuration read from a file (relative to the suite).
    pub config_file: Option<PathBuf>,
    /// VM configuration (string).
    pub vm_config: Option<String>,
    /// `FAIL_CLOSED` (default), `FAIL_OPEN` or `FAIL_RELOAD`.
    pub failure_policy: Option<String>,
    /// The plugin's `name` (the `plugin_name` property; default `tollgate`).
    pub name: Option<String>,
    /// The plugin's `root_id` (the `plugin_root_id` property; default empty).
    pub root_id: Option<String>,
    /// The VM's `vm_id` (the `plugin_vm_id` property; shared data and queues
    /// are named per vm_id; default empty).
    pub vm_id: Option<String>,
    /// The VM's environment variables (`key_values`), read with WASI `environ_get`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of the harness's own environment the VM may read (`host_env_keys`).
    #[serde(default)]
    pub host_env: Vec<String>,
}

/// Expectations on starting the filters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartExpect {
    /// Whether the chain starts (default true).
    pub ok: Option<bool>,
    /// A regex the start error must match (implies `ok: false`).
    pub error: Option<String>,
    /// What the filters log while starting.
    pub logs: Option<LogExpect>,
    /// Metric values once started (counters, gauges; histograms: last value).
    pub metrics: Option<BTreeMap<String, i64>>,
}

/// The request a test sends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Method (default `GET`).
    pub method: Option<String>,
    /// Path (default `/`).
    pub path: Option<String>,
    /// Authority (default `example.com`).
    pub authority: Option<String>,
    /// Scheme (default `http`).
    pub scheme: Option<String>,
    /// Headers.
    pub headers: Option<Headers>,
    /// Body.
    pub body: Option<BodySpec>,
    /// Trailers.
    pub trailers: Option<Headers>,
    /// Deliver the body in this many chunks.
    pub chunks: Option<usize>,
    /// Deliver the body in chunks of this many bytes.
    pub chunk_size: Option<usize>,
    /// Deliver the body in chunks of exactly these sizes (a last `0`: then
    /// an empty end-of-stream chunk).
    pub chunk_sizes: Option<Vec<usize>>,
    /// How an unchunked body is delivered: `http1` (default: the body, then
    /// an empty end-of-stream chunk, as Envoy's HTTP/1 codec), `http2` or
    /// `one-chunk` (one chunk carrying the end of stream).
    pub delivery: Option<String>,
}

/// The upstream's answer (default: 200, no headers, no body).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Status (default 200).
    pub status: Option<u16>,
    /// Headers.
    pub headers: Option<Headers>,
    /// Body.
    pub body: Option<BodySpec>,
    /// Trailers.
    pub trailers: Option<Headers>,
    /// Deliver the body in this many chunks.
    pub chunks: Option<usize>,
    /// Deliver the body in chunks of this many bytes.
    pub chunk_size: Option<usize>,
    /// Deliver the body in chunks of exactly these sizes (a last `0`: then
    /// an empty end-of-stream chunk).
    pub chunk_sizes: Option<Vec<usize>>,
    /// How an unchunked body is delivered: `http1` (default: the body, then
    /// an empty end-of-stream chunk, as Envoy's HTTP/1 codec), `http2` or
    /// `one-chunk` (one chunk carrying the end of stream).
    pub delivery: Option<String>,
}

/// Matchers on a header map.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderExpect {
    /// Names that must be present.
    #[serde(default)]
    pub has: Vec<String>,
    /// Names that must be absent.
    #[serde(default)]
    pub no: Vec<String>,
    /// Exact lines: the header must have exactly this value (one of its values).
    pub exact: Option<Headers>,
    /// Lines whose value must match a regex.
    pub regex: Option<Headers>,
    /// Combined values: every value of the name, in order, joined with `, `
    /// (as HTTP combines a repeated header), must be exactly this; `a, b`
    /// matches one `a, b` header as well as `a` and `b` given separately.
    pub combined: Option<Headers>,
    /// The same matchers, each inverted.
    pub not: Option<Box<HeaderExpect>>,
}

/// Matchers on a body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyExpect {
    /// Exactly this text.
    pub exact: Option<String>,
    /// Matches this regex.
    pub regex: Option<String>,
    /// Exactly the bytes of this file (relative to the suite).
    pub file: Option<PathBuf>,
    /// The same matchers, each inverted.
    pub not: Option<Box<BodyExpect>>,
}

/// Expectations on a request or response message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageExpect {
    /// Status (responses only).
    pub status: Option<u16>,
    /// Headers (pseudo-headers `:method`, `:path`, `:authority`, `:scheme`,
    /// `:status` included).
    pub headers: Option<HeaderExpect>,
    /// Body.
    pub body: Option<BodyExpect>,
    /// Trailers.
    pub trailers: Option<HeaderExpect>,
}

/// A log line matcher: a regex on the message, or a level and a regex.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LogMatcher {
    /// Regex on the message.
    Message(String),
    /// Level and regex.
    Leveled {
        /// `trace` ... `critical`.
        level: String,
        /// Regex on the message.
        message: String,
    },
}

/// Expectations on log lines.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogExpect {
    /// Lines one of which must match each matcher.
    #[serde(default)]
    pub has: Vec<LogMatcher>,
    /// Matchers no line may match.
    #[serde(default)]
    pub no: Vec<LogMatcher>,
}

/// Expectations on the local reply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalReplyExpect {
    /// Its status.
    pub status: Option<u32>,
    /// Its response code details (regex).
    pub details: Option<String>,
}

/// Everything a test can expect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The request as it reached the upstream (`false`-like: use `upstream_reached`).
    pub upstream: Option<MessageExpect>,
    /// Whether the request reached the upstream.
    pub upstream_reached: Option<bool>,
    /// The response the client got.
    pub client: Option<MessageExpect>,
    /// A local reply was sent (with these properties).
    pub local_reply: Option<LocalReplyExpect>,
    /// No local reply was sent.
    pub no_local_reply: Option<bool>,
    /// Whether a filter failed (trapped).
    pub failed: Option<bool>,
    /// Guest log lines during the exchange.
    pub logs: Option<LogExpect>,
    /// Metric values after the exchange, by name (counters, gauges; last
    /// value for histograms).
    pub metrics: Option<BTreeMap<String, i64>>,
    /// Regexes on the callouts made (`file.wasm: http <cluster> <method> <path>`,
    /// `file.wasm: grpc <cluster> <service>/<method>`).
    pub callouts: Option<LogExpect>,
    /// Regexes on the per-filter steps (`filter: step`), e.g.
    /// `"headers.wasm: proxy_on_request_headers\\(eos=true\\) -> Continue"`.
    pub steps: Option<LogExpect>,
    /// Callouts that must have been made, each matched against every
    /// callout (cluster, kind, headers, body, timeout, accepted).
    #[serde(default)]
    pub callout_requests: Vec<CalloutExpect>,
    /// What happened at the end of the stream (`proxy_on_log`, `proxy_on_done`,
    /// `proxy_on_delete`).
    pub end: Option<EndExpect>,
}

/// Expectations on one callout the filters made.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalloutExpect {
    /// The cluster (exact).
    pub cluster: Option<String>,
    /// `http`, `grpc` or `grpc-stream`.
    pub kind: Option<String>,
    /// The request headers (http, pseudo-headers included) or initial metadata (gRPC).
    pub headers: Option<HeaderExpect>,
    /// The request body (http) or message (unary gRPC).
    pub body: Option<BodyExpect>,
    /// `service/method` (gRPC; regex).
    pub method: Option<String>,
    /// The call's `timeout_ms`.
    pub timeout_ms: Option<u32>,
    /// Whether the host accepted it.
    pub accepted: Option<bool>,
}

/// Expectations on the end of the stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndExpect {
    /// What the filters logged in `proxy_on_log`, `proxy_on_done` and `proxy_on_delete`.
    pub logs: Option<LogExpect>,
}

/// How one cluster answers callouts (`clusters:`, by name).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Http response status (default 200).
    pub status: Option<u16>,
    /// Http response headers.
    pub headers: Option<Headers>,
    /// Http response body.
    pub body: Option<BodySpec>,
    /// Http response trailers.
    pub trailers: Option<Headers>,
    /// Virtual time before the answer, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Instead of a response: `reset` (the stream is reset, Envoy calls back
    /// with no headers) or `connection` (Envoy's 503 local reply).
    pub failure: Option<String>,
    /// The cluster answers gRPC (calls and streams) this way.
    pub grpc: Option<GrpcClusterSpec>,
    /// Answers in call order instead (the first call gets the first, ...;
    /// the last repeats), each an entry as this one.
    #[serde(default)]
    pub answers: Vec<ClusterSpec>,
}

/// How a cluster answers gRPC.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcClusterSpec {
    /// Initial metadata (stream response headers).
    pub initial_metadata: Option<Headers>,
    /// Response messages (a unary call gets the first).
    #[serde(default)]
    pub messages: Vec<BodySpec>,
    /// Trailing metadata.
    pub trailing_metadata: Option<Headers>,
    /// gRPC status (default 0).
    #[serde(default)]
    pub status: u32,
    /// Status message.
    #[serde(default)]
    pub message: String,
    /// Virtual time before the answer, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// `connection`: UNAVAILABLE with Envoy's connection failure message.
    pub failure: Option<String>,
    /// `true`: the service answers a stream as soon as it opens, before the
    /// guest sends anything (a watch or subscription service).
    #[serde(default)]
    pub server_first: bool,
    /// Answers for one method each (`service/method`, e.g.
    /// `svc.Checker/Watch`), before this answer for any other method.
    #[serde(default)]
    pub methods: BTreeMap<String, GrpcClusterSpec>,
}

/// A property value: a string (raw bytes), an integer (8-byte little-endian),
/// a boolean (one byte), or a typed form.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// Raw bytes of the text.
    Text(String),
    /// `int64`, little-endian.
    Int(i64),
    /// One byte.
    Bool(bool),
    /// Typed.
    Typed(TypedProperty),
}

/// A property value with its Envoy encoding named.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedProperty {
    /// Raw bytes of the text.
    pub string: Option<String>,
    /// `int64`, little-endian.
    pub int: Option<i64>,
    /// One byte.
    pub bool: Option<bool>,
    /// RFC 3339 time or ns since the epoch: `int64` ns, little-endian.
    pub timestamp: Option<ClockSpec>,
    /// Duration in milliseconds: `int64` ns, little-endian.
    pub duration_ms: Option<i64>,
    /// Raw bytes, base64.
    pub base64: Option<String>,
    /// A map in the pairs encoding (as header maps).
    pub map: Option<BTreeMap<String, String>>,
}

/// A point in time: RFC 3339 (`2026-01-01T00:00:00Z`) or ns since the Unix epoch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClockSpec {
    /// ns since the Unix epoch.
    Nanos(u64),
    /// RFC 3339.
    Text(String),
}

impl ClockSpec {
    /// ns since the Unix epoch.
    pub fn nanos(&self) -> Result<u64, String> {
        match self {
            Self::Nanos(n) => Ok(*n),
            Self::Text(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("{t:?} is not an RFC 3339 time ({e})"))
                .and_then(|d| {
                    d.timestamp_nanos_opt()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| format!("{t:?} is out of range (1970..2262)"))
                }),
        }
    }
}

/// One test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Its name.
    pub name: String,
    /// The request.
    #[serde(default)]
    pub request: RequestSpec,
    /// The upstream's answer.
    #[serde(default)]
    pub response: ResponseSpec,
    /// The expectations.
    #[serde(default)]
    pub expect: Expect,
    /// Time the test: run it repeatedly and report the guest time per run.
    #[serde(default)]
    pub benchmark: bool,
    /// Cluster answers for this test (replacing the suite's of the same name).
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Property values for this test (over the suite's).
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// The wall clock when the request arrives (over the suite's).
    pub clock: Option<ClockSpec>,
    /// The lowest guest log level kept for this test (over the suite's).
    pub log_level: Option<String>,
    /// Virtual milliseconds that pass between the plugin's start and the
    /// request: `proxy_on_tick` fires once per elapsed tick period (and
    /// callout answers due on the way arrive), as Envoy's timer would.
    pub advance_ms: Option<u64>,
}

/// The answer to every `proxy_http_call` (the harness has no clusters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpStubSpec {
    /// Status (default 200).
    pub status: Option<u16>,
    /// Headers.
    pub headers: Option<Headers>,
    /// Body.
    pub body: Option<BodySpec>,
}

/// The answer to unary `proxy_grpc_call`s to one cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcStubSpec {
    /// The cluster (empty or absent: any).
    #[serde(default)]
    pub cluster: String,
    /// gRPC status (default 0: the message is delivered).
    #[serde(default)]
    pub status: u32,
    /// The response message bytes.
    pub message: Option<BodySpec>,
    /// Status message for failures.
    #[serde(default)]
    pub status_message: String,
}

/// A suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteSpec {
    /// The chain of filters.
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    /// Several chains in one file, each with its own filters and tests (and
    /// clusters, properties, clock, log level over the file's); instead of
    /// `filters` and `tests` at the top.
    #[serde(default)]
    pub chains: Vec<ChainSpec>,
    /// Answer for http callouts.
    pub http_call_stub: Option<HttpStubSpec>,
    /// Answers for gRPC callouts, by cluster.
    #[serde(default)]
    pub grpc_stubs: Vec<GrpcStubSpec>,
    /// How clusters answer callouts, by name.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Property values the filters read (`proxy_get_property`), by path.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// The wall clock when a test's request arrives (plugin start: 1 ms earlier).
    pub clock: Option<ClockSpec>,
    /// Expectations on starting the chain.
    pub start: Option<StartExpect>,
    /// The lowest guest log level kept (`trace` ... `critical`; default `info`, as Envoy's).
    pub log_level: Option<String>,
    /// When callout answers without a delay of their own arrive:
    /// `after-input` (default: the request body reaches the filters first,
    /// as with a real service) or `immediate` (right after the call).
    pub callout_answers: Option<CalloutAnswers>,
    /// The tests.
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

/// One chain of a file with `chains:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// Its name (reported as `file [name]`).
    pub name: String,
    /// Its filters.
    pub filters: Vec<FilterSpec>,
    /// Cluster answers over the file's.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterSpec>,
    /// Properties over the file's.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// The clock over the file's.
    pub clock: Option<ClockSpec>,
    /// The guest log level over the file's.
    pub log_level: Option<String>,
    /// Expectations on starting this chain.
    pub start: Option<StartExpect>,
    /// Its tests.
    #[serde(default)]
    pub tests: Vec<TestSpec>,
}

/// A suite's `callout_answers:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalloutAnswers {
    /// [`tollgate_host::callouts::AnswerTiming::AfterInput`].
    AfterInput,
    /// [`tollgate_host::callouts::AnswerTiming::Immediate`].
    Immediate,
}

/// A loaded suite, ready to run.
pub struct Suite {
    file: String,
    base: PathBuf,
    spec: SuiteSpec,
    http_stub: Option<tollgate_host::state::HttpCallStub>,
    grpc_stubs: Vec<tollgate_host::state::GrpcCallStub>,
    plugins: Vec<(Arc<Plugin>, PathBuf, String, String, FailurePolicy)>,
    /// Each filter's name, root id, vm id and environment, in chain order.
    identities: Vec<tollgate_abi::PluginIdentity>,
    /// The bounds the tests' VMs run under (`None`: the defaults).
    limits: Option<tollgate_host::limits::Limits>,
}

/// The result of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// What did not hold, readable; empty when the test passed.
    pub failures: Vec<String>,
    /// Wall time of the test.
    pub duration: Duration,
    /// For `benchmark: true`: runs and guest time per run (median).
    pub benchmark: Option<(usize, Duration)>,
}

impl TestResult {
    /// No expectation failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The result of a suite.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The suite file.
    pub file: String,
    /// Plugin-start result, as a pseudo-test named `plugin start`.
    pub start: TestResult,
    /// One result per test.
    pub tests: Vec<TestResult>,
}

impl SuiteReport {
    /// Every result (start first).
    pub fn all(&self) -> impl Iterator<Item = &TestResult> {
        std::iter::once(&self.start).chain(&self.tests)
    }

    /// Number of failed tests (start included).
    pub fn failed(&self) -> usize {
        self.all().filter(|t| !t.passed()).count()
    }

    /// A JUnit XML report.
    pub fn junit(&self) -> String {
        let total: f64 = self.all().map(|t| t.duration.as_secs_f64()).sum();
        let mut x = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{}\" time=\"{total:.6}\">\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{total:.6}\">\n",
            self.tests.len() + 1,
            self.failed(),
            xml(&self.file),
            self.tests.len() + 1,
            self.failed()
        );
        for t in self.all() {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
                xml(&self.file),
                xml(&t.name),
                t.duration.as_secs_f64()
            ));
            if t.passed() {
                x.push_str("/>\n");
            } else {
                x.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml(t.failures.first().map_or("", String::as_str)),
                    xml(&t.failures.join("\n"))
                ));
            }
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }

    /// A readable text report.
    pub fn text(&self) -> String {
        let mut out = format!("suite {}\n", self.file);
        for t in self.all() {
            let mark = if t.passed() { "ok  " } else { "FAIL" };
            out.push_str(&format!("  {mark} {}", t.name));
            if let Some((runs, per)) = t.benchmark {
                out.push_str(&format!(
                    "  [benchmark: {runs} runs, guest {per:?} per run]"
                ));
            }
            out.push('\n');
            for f in &t.failures {
                for (j, line) in f.lines().enumerate() {
                    out.push_str(if j == 0 { "       - " } else { "         " });
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out.push_str(&format!(
            "{} tests, {} passed, {} failed\n",
            self.tests.len() + 1,
            self.tests.len() + 1 - self.failed(),
            self.failed()
        ));
        out
    }
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => o.push(c),
        }
    }
    o
}

fn show_headers(h: &[(String, String)]) -> String {
    if h.is_empty() {
        return "    (none)".into();
    }
    h.iter()
        .map(|(k, v)| format!("    {k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn show_body(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("<{} bytes, not UTF-8>", b.len()),
    }
}

impl Suite {
    /// Loads a suite file and compiles its filters.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SuiteError> {
        let path = path.as_ref();
        let text =
            tollgate_traffic::input::read_to_string(path).map_err(|error| SuiteError::Read {
                path: path.to_path_buf(),
                error,
            })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_yaml(&path.display().to_string(), &text, base)
    }

    /// A suite from YAML text; relative paths resolve against `base`.
    pub fn from_yaml(file: &str, yaml: &str, base: PathBuf) -> Result<Self, SuiteError> {
        let format = |message: String| SuiteError::Format {
            file: file.to_string(),
            message,
        };
        tollgate_traffic::input::check_yaml_depth(yaml, tollgate_traffic::input::MAX_YAML_DEPTH)
            .map_err(format)?;
        let spec: SuiteSpec = yaml_serde::from_str(yaml).map_err(|e| format(e.to_string()))?;
        if !spec.chains.is_empty() {
            return Err(format(
                "the file holds several `chains`: load it with `Suite::load_all`".into(),
            ));
        }
        Self::from_spec(file, spec, base)
    }

    /// Loads every chain of a suite file: one suite for a file with
    /// `filters` and `tests`, one per entry of `chains:` (named `file [name]`)
    /// for a file with several chains.
    pub fn load_all(path: impl AsRef<Path>) -> Result<Vec<Self>, SuiteError> {
        let path = path.as_ref();
        let text =
            tollgate_traffic::input::read_to_string(path).map_err(|error| SuiteError::Read {
                path: path.to_path_buf(),
                error,
            })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let file = path.display().to_string();
        let format = |message: String| SuiteError::Format {
            file: file.clone(),
            message,
        };
        tollgate_traffic::input::check_yaml_depth(&text, tollgate_traffic::input::MAX_YAML_DEPTH)
            .map_err(format)?;
        let spec: SuiteSpec = yaml_serde::from_str(&text).map_err(|e| format(e.to_string()))?;
        if spec.chains.is_empty() {
            return Ok(vec![Self::from_spec(&file, spec, base)?]);
        }
        if !spec.filters.is_empty() || !spec.tests.is_empty() || spec.start.is_some() {
            return Err(format(
                "with `chains`, give `filters`, `tests` and `start` inside each chain".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut suites = Vec::new();
        for (i, c) in spec.chains.iter().enumerate() {
            if !names.insert(c.name.as_str()) {
                return Err(format(format!(
                    "chains[{i}]: the name `{}` is used twice",
                    c.name
                )));
            }
            let mut one = spec.clone();
            one.chains = Vec::new();
            one.filters = c.filters.clone();
            one.tests = c.tests.clone();
            one.start = c.start.clone();
            one.clusters.extend(c.clusters.clone());
            one.properties.extend(c.properties.clone());
            one.clock = c.clock.clone().or(one.clock);
            one.log_level = c.log_level.clone().or(one.log_level);
            suites.push(Self::from_spec(
                &format!("{file} [{}]", c.name),
                one,
                base.clone(),
            )?);
        }
        Ok(suites)
    }

    /// A suite from its parsed file (one chain).
    fn from_spec(file: &str, spec: SuiteSpec, base: PathBuf) -> Result<Self, SuiteError> {
        let format = |message: String| SuiteError::Format {
            file: file.to_string(),
            message,
        };
        if spec.filters.is_empty() {
            return Err(format(
                "`filters` is empty: name at least one filter".into(),
            ));
        }
        let mut plugins = Vec::new();
        let mut identities = Vec::new();
        for (index, f) in spec.filters.iter().enumerate() {
            let identity = tollgate_abi::PluginIdentity {
                name: f.name.clone(),
                root_id: f.root_id.clone(),
                vm_id: f.vm_id.clone(),
                key_values: f.env.clone().into_iter().collect(),
                host_env_keys: f.host_env.clone(),
            };
            identity
                .check()
                .map_err(|e| format(format!("filters[{index}].env/host_env: {e}")))?;
            identities.push(identity);
            let path = base.join(&f.path);
            let plugin = Plugin::load(&path).map_err(|error| SuiteError::Load {
                file: file.to_string(),
                index,
                error,
            })?;
            let config = match (&f.config, &f.config_file) {
                (Some(_), Some(_)) => {
                    return Err(format(format!(
                        "filters[{index}]: give `config` or `config_file`, not both"
                    )));
                }
                (None, Some(p)) => {
                    tollgate_traffic::input::read_to_string(&base.join(p)).map_err(|e| {
                        format(format!(
                            "filters[{index}].config_file: cannot read {}: {e}",
                            base.join(p).display()
                        ))
                    })?
                }
                (Some(yaml_serde::Value::String(s)), None) => s.clone(),
                (Some(v), None) => serde_json::to_string(v).map_err(|e| {
                    format(format!(
                        "filters[{index}].config: cannot turn into JSON: {e}"
                    ))
                })?,
                (None, None) => String::new(),
            };
            let policy = match &f.failure_policy {
                Some(p) => p
                    .parse()
                    .map_err(|e: String| format(format!("filters[{index}].failure_policy: {e}")))?,
                None => FailurePolicy::default(),
            };
            plugins.push((
                Arc::new(plugin),
                path,
                config,
                f.vm_config.clone().unwrap_or_default(),
                policy,
            ));
        }
        let mut suite = Self {
            file: file.to_string(),
            base,
            spec,
            plugins,
            identities,
            limits: None,
            http_stub: None,
            grpc_stubs: Vec::new(),
        };
        if let Some(h) = suite.spec.http_call_stub.clone() {
            let mut headers = vec![(":status".to_string(), h.status.unwrap_or(200).to_string())];
            headers.extend(h.headers.as_ref().map(Headers::pairs).unwrap_or_default());
            for (k, v) in &headers {
                tollgate_traffic::header_syntax::check(k, v)
                    .map_err(|e| format(format!("http_call_stub.headers: {e}")))?;
            }
            suite.http_stub = Some(tollgate_host::state::HttpCallStub {
                headers,
                body: suite.body(&h.body, "http_call_stub.body").map_err(format)?,
            });
        }
        // Suite-level clusters, properties and clock: bad input is a load error.
        suite.builder_for(None).map_err(format)?;
        // A test's stub header HTTP does not allow (CR, LF...) refuses the
        // whole suite too; its other bad input fails that test only.
        for (i, t) in suite.spec.tests.iter().enumerate() {
            for (name, c) in &t.clusters {
                check_stub_headers(name, c)
                    .map_err(|e| format(format!("tests[{i}] ({}): {e}", t.name)))?;
            }
        }
        for (i, g) in suite.spec.grpc_stubs.clone().into_iter().enumerate() {
            let message = suite
                .body(&g.message, &format!("grpc_stubs[{i}].message"))
                .map_err(format)?;
            suite.grpc_stubs.push(tollgate_host::state::GrpcCallStub {
                cluster: g.cluster,
                status: g.status,
                message,
                status_message: g.status_message,
            });
        }
        Ok(suite)
    }

    /// The tests' names, in order.
    pub fn test_names(&self) -> Vec<&str> {
        self.spec.tests.iter().map(|t| t.name.as_str()).collect()
    }

    /// Runs the tests' VMs under `limits` (memory, callouts and wall time
    /// per exchange, guest log) instead of the defaults.
    pub fn limits(mut self, limits: tollgate_host::limits::Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    fn builder(&self) -> ReplayBuilder {
        let mut b = Replay::chain();
        if let Some(l) = self.limits {
            b = b.limits(l);
        }
        if let Some(h) = &self.http_stub {
            b = b.http_call_stub(h.clone());
        }
        for g in &self.grpc_stubs {
            b = b.grpc_call_stub(g.clone());
        }
        if let Some(t) = self.spec.callout_answers {
            b = b.answer_timing(match t {
                CalloutAnswers::AfterInput => tollgate_host::callouts::AnswerTiming::AfterInput,
                CalloutAnswers::Immediate => tollgate_host::callouts::AnswerTiming::Immediate,
            });
        }
        for (i, (plugin, path, config, vm_config, policy)) in self.plugins.iter().enumerate() {
            b = b
                .plugin(plugin.clone(), path.clone())
                .config(config.clone())
                .vm_config(vm_config.clone())
                .failure_policy(*policy);
            if let Some(id) = self.identities.get(i).filter(|id| !id.is_default()) {
                b = b.identity(id);
            }
        }
        b
    }

    /// Runs every test (in parallel, each on fresh VMs).
    pub fn run(&self) -> SuiteReport {
        let start = self.check_start();
        let n = self.spec.tests.len();
        let workers = std::thread::available_parallelism()
            .map_or(2, std::num::NonZeroUsize::get)
            .min(n.max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(vec![None; n]);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let r = self.run_test(&self.spec.tests[i]);
                        if let Ok(mut v) = results.lock() {
                            v[i] = Some(r);
                        }
                    }
                });
            }
        });
        let tests = results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .into_iter()
            .zip(&self.spec.tests)
            .map(|(r, t)| {
                r.unwrap_or_else(|| TestResult {
                    name: t.name.clone(),
                    failures: vec!["the test did not run (its worker panicked)".into()],
                    duration: Duration::ZERO,
                    benchmark: None,
                })
            })
            .collect();
        SuiteReport {
            file: self.file.clone(),
            start,
            tests,
        }
    }

    fn check_start(&self) -> TestResult {
        let began = Instant::now();
        let exp = self.spec.start.clone().unwrap_or_default();
        let want_ok = exp.ok.unwrap_or(exp.error.is_none());
        let mut failures = Vec::new();
        match self.builder_for(None).map(ReplayBuilder::start) {
            Err(e) => failures.push(format!("bad suite input: {e}")),
            Ok(Ok((mut chain, _))) => {
                if !want_ok {
                    failures.push("expected the filters to fail to start, they started".into());
                }
                let logs = chain.take_startup_logs();
                if let Some(l) = &exp.logs {
                    check_logs("start logs", l, &leveled(&logs), &mut failures);
                }
                if let Some(m) = &exp.metrics {
                    let metrics: Vec<(String, i64)> = (0..self.plugins.len())
                        .filter_map(|i| chain.vm(i))
                        .flat_map(|vm| {
                            vm.state()
                                .metrics()
                                .all()
                                .iter()
                                .map(|m| (m.name.clone(), m.value))
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    check_metrics("start metric", m, &metrics, &mut failures);
                }
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if want_ok {
                    failures.push(format!("the filters failed to start: {msg}"));
                } else if let Some(re) = &exp.error {
                    match regex::Regex::new(re) {
                        Ok(r) if r.is_match(&msg) => {}
                        Ok(_) => failures.push(format!(
                            "start error does not match /{re}/:\n  actual: {msg}"
                        )),
                        Err(e) => failures.push(format!("start.error: bad regex: {e}")),
                    }
                }
            }
        }
        TestResult {
            name: "plugin start".into(),
            failures,
            duration: began.elapsed(),
            benchmark: None,
        }
    }

    fn body(&self, b: &Option<BodySpec>, what: &str) -> Result<Vec<u8>, String> {
        body_bytes(&self.base, b, what)
    }

    /// The builder for a test (`None`: the suite alone): the chain, the
    /// suite's stubs and clusters, properties and clock, the test's over them.
    fn builder_for(&self, t: Option<&TestSpec>) -> Result<ReplayBuilder, String> {
        let mut b = self.builder();
        let mut clusters = self.spec.clusters.clone();
        let mut properties = self.spec.properties.clone();
        let mut clock = self.spec.clock.clone();
        let mut log_level = self.spec.log_level.clone();
        if let Some(t) = t {
            clusters.extend(t.clusters.clone());
            properties.extend(t.properties.clone());
            clock = t.clock.clone().or(clock);
            log_level = t.log_level.clone().or(log_level);
        }
        if let Some(l) = log_level {
            let level: LogLevel = l.parse().map_err(|e| format!("log_level: {e}"))?;
            b = b.log_level(level);
        }
        for (name, c) in &clusters {
            for (http, grpc) in cluster_answers(name, c, &self.base)? {
                if !http.is_empty() {
                    b = b.http_cluster_answers(http);
                }
                if !grpc.is_empty() {
                    b = b.grpc_cluster_answers(grpc);
                }
            }
        }
        for (path, v) in &properties {
            b = b.property(
                path.clone(),
                property_bytes(v, &format!("properties.{path}"))?,
            );
        }
        if let Some(c) = clock {
            let at = c.nanos().map_err(|e| format!("clock: {e}"))?;
            // The request arrives one exchange spacing (1 ms) after the start.
            b = b.clock_unix_nanos(at.saturating_sub(1_000_000));
        }
        if t.is_some_and(|t| t.expect.end.is_some()) {
            // The call trace marks where the stream's end begins.
            b = b.trace_calls();
        }
        Ok(b)
    }

    fn input(&self, t: &TestSpec) -> Result<StreamInput, String> {
        let r = &t.request;
        let q = &t.response;
        let plan = |chunks: Option<usize>,
                    size: Option<usize>,
                    sizes: &Option<Vec<usize>>,
                    delivery: &Option<String>,
                    what: &str| {
            let given = [
                chunks.is_some(),
                size.is_some(),
                sizes.is_some(),
                delivery.is_some(),
            ];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err(format!(
                    "{what}: give one of chunks, chunk_size, chunk_sizes, delivery"
                ));
            }
            match (chunks, size, sizes, delivery.as_deref()) {
                (Some(0), ..) | (_, Some(0), ..) => {
                    Err(format!("{what}: chunks and chunk_size must be > 0"))
                }
                (Some(n), ..) => Ok(ChunkPlan::Chunks(n)),
                (_, Some(n), ..) => Ok(ChunkPlan::ChunkSize(n)),
                (_, _, Some(v), _) => Ok(ChunkPlan::Sizes(v.clone())),
                (_, _, _, None | Some("http1")) => Ok(ChunkPlan::Http1),
                (_, _, _, Some("http2" | "one-chunk")) => Ok(ChunkPlan::Whole),
                (_, _, _, Some(other)) => Err(format!(
                    "{what}.delivery: expected http1, http2 or one-chunk, found {other:?}"
                )),
            }
        };
        Ok(StreamInput {
            request: HttpRequest {
                method: r.method.clone().unwrap_or_else(|| "GET".into()),
                scheme: r.scheme.clone().unwrap_or_else(|| "http".into()),
                authority: r.authority.clone().unwrap_or_else(|| "example.com".into()),
                path: r.path.clone().unwrap_or_else(|| "/".into()),
                headers: r.headers.as_ref().map(Headers::pairs).unwrap_or_default(),
                body: self.body(&r.body, "request.body")?,
            },
            request_trailers: r.trailers.as_ref().map(Headers::pairs).unwrap_or_default(),
            response: HttpResponse {
                status: q.status.unwrap_or(200),
                headers: q.headers.as_ref().map(Headers::pairs).unwrap_or_default(),
                body: self.body(&q.body, "response.body")?,
            },
            response_trailers: q.trailers.as_ref().map(Headers::pairs).unwrap_or_default(),
            request_chunks: plan(
                r.chunks,
                r.chunk_size,
                &r.chunk_sizes,
                &r.delivery,
                "request",
            )?,
            response_chunks: plan(
                q.chunks,
                q.chunk_size,
                &q.chunk_sizes,
                &q.delivery,
                "response",
            )?,
            callouts: Vec::new(),
            // A test's properties go to the VM's settings (`settings()`).
            properties: Vec::new(),
        })
    }

    fn run_test(&self, t: &TestSpec) -> TestResult {
        let began = Instant::now();
        let mut failures = Vec::new();
        let mut benchmark = None;
        match self.input(t) {
            Err(e) => failures.push(format!("bad test input: {e}")),
            Ok(input) => match self.builder_for(Some(t)).map(ReplayBuilder::start) {
                Err(e) => failures.push(format!("bad test input: {e}")),
                Ok(Err(e)) => failures.push(format!("the filters failed to start: {e}")),
                Ok(Ok((mut chain, _))) => {
                    chain.take_startup_logs();
                    if let Some(ms) = t.advance_ms {
                        chain.advance(Duration::from_millis(ms));
                    }
                    let (out, _, logs) = chain.exchange(&input);
                    let (logs, end_logs) = split_end_logs(logs);
                    let metrics: Vec<(String, i64)> = (0..self.plugins.len())
                        .filter_map(|i| chain.vm(i))
                        .flat_map(|vm| {
                            vm.state()
                                .metrics()
                                .all()
                                .iter()
                                .map(|m| (m.name.clone(), m.value))
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    self.check(t, &out, &logs, &metrics, &mut failures);
                    if let Some(l) = t.expect.end.as_ref().and_then(|e| e.logs.as_ref()) {
                        check_logs("end logs", l, &leveled(&end_logs), &mut failures);
                    }
                    if t.benchmark {
                        benchmark = self.bench(t, &input).map_err(|e| failures.push(e)).ok();
                    }
                }
            },
        }
        TestResult {
            name: t.name.clone(),
            failures,
            duration: began.elapsed(),
            benchmark,
        }
    }

    fn bench(&self, t: &TestSpec, input: &StreamInput) -> Result<(usize, Duration), String> {
        const RUNS: usize = 200;
        let (mut chain, _) = self
            .builder_for(Some(t))?
            .start()
            .map_err(|e| e.to_string())?;
        let mut costs: Vec<Duration> = (0..RUNS).map(|_| chain.exchange(input).1).collect();
        costs.sort();
        Ok((RUNS, costs[RUNS / 2]))
    }

    fn check(
        &self,
        t: &TestSpec,
        out: &StreamOutcome,
        logs: &[LogLine],
        metrics: &[(String, i64)],
        failures: &mut Vec<String>,
    ) {
        let before = failures.len();
        self.check_expectations(t, out, logs, metrics, failures);
        // Whatever expectation a failed filter broke, its cause goes with it
        // (the callback and the trap), unless a failure line already says it.
        if failures.len() > before
            && !out.failures.is_empty()
            && !failures[before..]
                .iter()
                .any(|f| f.starts_with("a filter failed: "))
        {
            failures.push(format!(
                "because a filter failed: {}",
                out.failures
                    .iter()
                    .map(|x| format!(
                        "{}: {}",
                        x.filter,
                        x.error.to_string().lines().next().unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }

    fn check_expectations(
        &self,
        t: &TestSpec,
        out: &StreamOutcome,
        logs: &[LogLine],
        metrics: &[(String, i64)],
        failures: &mut Vec<String>,
    ) {
        let e = &t.expect;
        if let Some(reached) = e.upstream_reached
            && reached != out.upstream_request.is_some()
        {
            failures.push(if reached {
                "expected the request to reach the upstream; it did not".into()
            } else {
                "expected the request not to reach the upstream; it did".into()
            });
        }
        if let Some(m) = &e.upstream {
            match &out.upstream_request {
                None => failures.push(
                    "upstream: the request never reached the upstream".to_string()
                        + &local_note(out),
                ),
                Some(r) => {
                    let mut h = vec![
                        (":method".to_string(), r.method.clone()),
                        (":path".to_string(), r.path.clone()),
                        (":authority".to_string(), r.authority.clone()),
                        (":scheme".to_string(), r.scheme.clone()),
                    ];
                    h.extend(r.headers.iter().cloned());
                    self.check_message(
                        "upstream",
                        m,
                        None,
                        &h,
                        &r.body,
                        &out.upstream_trailers,
                        failures,
                    );
                }
            }
        }
        if let Some(m) = &e.client {
            let r = &out.client_response;
            let mut h = vec![(":status".to_string(), r.status.to_string())];
            h.extend(r.headers.iter().cloned());
            self.check_message(
                "client",
                m,
                Some(r.status),
                &h,
                &r.body,
                &out.client_trailers,
                failures,
            );
        }
        if let Some(l) = &e.local_reply {
            match &out.local_response {
                None => failures.push("expected a local reply; none was sent".into()),
                Some(lr) => {
                    if let Some(s) = l.status
                        && s != lr.status
                    {
                        failures.push(format!(
                            "local reply status: expected {s}, got {}",
                            lr.status
                        ));
                    }
                    if let Some(d) = &l.details {
                        regex_check("local reply details", d, &lr.details, true, failures);
                    }
                }
            }
        }
        if e.no_local_reply == Some(true)
            && let Some(lr) = &out.local_response
        {
            failures.push(format!(
                "expected no local reply; got {} ({})",
                lr.status, lr.details
            ));
        }
        if let Some(f) = e.failed {
            let did = !out.failures.is_empty();
            if f != did {
                failures.push(if f {
                    "expected a filter to fail; none did".into()
                } else {
                    format!(
                        "a filter failed: {}",
                        out.failures
                            .iter()
                            .map(|x| format!("{}: {}", x.filter, x.error))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                });
            }
        }
        if let Some(l) = &e.logs {
            check_logs("logs", l, &leveled(logs), failures);
        }
        if let Some(m) = &e.metrics {
            check_metrics("metric", m, metrics, failures);
        }
        for (i, c) in e.callout_requests.iter().enumerate() {
            self.check_callout(i, c, &out.callout_requests, failures);
        }
        if let Some(c) = &e.callouts {
            let lines: Vec<(&str, &str)> = out
                .callouts
                .iter()
                .map(|c| ("callout", c.as_str()))
                .collect();
            check_logs("callouts", c, &lines, failures);
        }
        if let Some(s) = &e.steps {
            let messages: Vec<String> = out
                .steps
                .iter()
                .flat_map(|f| f.steps.iter().map(|s| format!("{}: {s}", f.filter_name())))
                .collect();
            let lines: Vec<(&str, &str)> = messages.iter().map(|m| ("step", m.as_str())).collect();
            check_logs("steps", s, &lines, failures);
        }
    }

    /// `want` (entry `i` of `callout_requests`) must match one of the callouts made.
    fn check_callout(
        &self,
        i: usize,
        want: &CalloutExpect,
        made: &[CalloutRecord],
        failures: &mut Vec<String>,
    ) {
        let mut reasons = Vec::new();
        for c in made {
            let mut f = Vec::new();
            if let Some(cl) = &want.cluster
                && *cl != c.cluster
            {
                f.push(format!("cluster {:?}", c.cluster));
            }
            if let Some(k) = &want.kind
                && k != c.kind
            {
                f.push(format!("kind {}", c.kind));
            }
            if let Some(t) = want.timeout_ms
                && t != c.timeout_ms
            {
                f.push(format!("timeout_ms {}", c.timeout_ms));
            }
            if let Some(a) = want.accepted
                && a != c.accepted
            {
                f.push(format!("accepted {}", c.accepted));
            }
            if let Some(m) = &want.method {
                regex_check("method", m, &c.method, true, &mut f);
            }
            if let Some(h) = &want.headers {
                check_headers("headers", h, &c.headers, true, &mut f);
            }
            if let Some(b) = &want.body {
                self.check_body("body", b, &c.body, true, &mut f);
            }
            if f.is_empty() {
                return;
            }
            let what = [c.kind, c.cluster.as_str(), c.method.as_str()]
                .iter()
                .filter(|x| !x.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            reasons.push(format!(
                "{}: {what}: {}",
                c.filter,
                f.iter()
                    .map(|x| x.lines().next().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let made_text = if made.is_empty() {
            "    (none)".to_string()
        } else {
            made.iter()
                .map(|c| {
                    format!(
                        "    {}: {} {} {}timeout_ms={} accepted={}\n{}",
                        c.filter,
                        c.kind,
                        c.cluster,
                        if c.method.is_empty() {
                            String::new()
                        } else {
                            format!("{} ", c.method)
                        },
                        c.timeout_ms,
                        c.accepted,
                        c.headers
                            .iter()
                            .map(|(k, v)| format!("      {k}: {v}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        failures.push(format!(
            "callout_requests[{i}]: no callout matches{}\n  callouts made:\n{made_text}",
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(" | "))
            }
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn check_message(
        &self,
        what: &str,
        m: &MessageExpect,
        status: Option<u16>,
        headers: &[(String, String)],
        body: &[u8],
        trailers: &[(String, String)],
        failures: &mut Vec<String>,
    ) {
        if let (Some(want), Some(got)) = (m.status, status)
            && want != got
        {
            failures.push(format!("{what} status: expected {want}, got {got}"));
        }
        if let Some(h) = &m.headers {
            check_headers(&format!("{what} headers"), h, headers, true, failures);
        }
        if let Some(t) = &m.trailers {
            check_headers(&format!("{what} trailers"), t, trailers, true, failures);
        }
        if let Some(b) = &m.body {
            self.check_body(&format!("{what} body"), b, body, true, failures);
        }
    }

    fn check_body(
        &self,
        what: &str,
        b: &BodyExpect,
        body: &[u8],
        positive: bool,
        failures: &mut Vec<String>,
    ) {
        let text = String::from_utf8_lossy(body);
        if let Some(want) = &b.exact
            && (want.as_bytes() == body) != positive
        {
            failures.push(if positive {
                format!(
                    "{what}: not as expected\n  expected: {:?}\n  actual:   {}{}",
                    want,
                    show_body(body),
                    first_difference(want.as_bytes(), body)
                )
            } else {
                format!("{what}: expected anything but {want:?}")
            });
        }
        if let Some(re) = &b.regex {
            regex_check(what, re, &text, positive, failures);
        }
        if let Some(f) = &b.file {
            match tollgate_traffic::input::read(&self.base.join(f)) {
                Err(e) => failures.push(format!(
                    "{what}.file: cannot read {}: {e}",
                    self.base.join(f).display()
                )),
                Ok(want) if (want == body) != positive => failures.push(format!(
                    "{what}: {} the contents of {} ({} bytes); actual {} bytes: {}{}",
                    if positive {
                        "expected"
                    } else {
                        "expected anything but"
                    },
                    f.display(),
                    want.len(),
                    body.len(),
                    show_body(body),
                    if positive {
                        first_difference(&want, body)
                    } else {
                        String::new()
                    }
                )),
                Ok(_) => {}
            }
        }
        if let Some(n) = &b.not {
            self.check_body(&format!("{what} (not)"), n, body, !positive, failures);
        }
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!("\n  first difference at byte {at}")
}

fn local_note(out: &StreamOutcome) -> String {
    if let Some(l) = &out.local_response {
        format!(" (a local reply {} {} was sent)", l.status, l.details)
    } else if let Some(cb) = out.stalled_in {
        format!(" (the stream stalled in {cb})")
    } else if let Some(cb) = out.reset_in {
        format!(" (the stream was reset in {cb})")
    } else {
        String::new()
    }
}

fn regex_check(what: &str, re: &str, text: &str, positive: bool, failures: &mut Vec<String>) {
    match regex::Regex::new(re) {
        Err(e) => failures.push(format!("{what}: bad regex /{re}/: {e}")),
        Ok(r) if r.is_match(text) != positive => failures.push(format!(
            "{what}: {} /{re}/\n  actual: {text:?}",
            if positive {
                "does not match"
            } else {
                "unexpectedly matches"
            }
        )),
        Ok(_) => {}
    }
}

fn check_headers(
    what: &str,
    h: &HeaderExpect,
    actual: &[(String, String)],
    positive: bool,
    failures: &mut Vec<String>,
) {
    let before = failures.len();
    let values = |name: &str| -> Vec<&str> {
        actual
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let (present, absent) = if positive {
        ("has", "no")
    } else {
        ("not.has", "not.no")
    };
    for name in &h.has {
        if values(name).is_empty() == positive {
            failures.push(format!(
                "{what}: {present} {name}: {}",
                if positive { "missing" } else { "present" }
            ));
        }
    }
    for name in &h.no {
        if values(name).is_empty() != positive {
            failures.push(format!(
                "{what}: {absent} {name}: {}",
                if positive {
                    format!("present ({:?})", values(name))
                } else {
                    "missing".into()
                }
            ));
        }
    }
    if let Some(ex) = &h.exact {
        for (name, want) in ex.pairs() {
            let got = values(&name);
            if got.contains(&want.as_str()) != positive {
                failures.push(format!(
                    "{what}: {} {name}: {want:?}; actual {}",
                    if positive {
                        "expected"
                    } else {
                        "expected anything but"
                    },
                    if got.is_empty() {
                        "absent".to_string()
                    } else {
                        format!("{got:?}")
                    }
                ));
            }
        }
    }
    if let Some(cb) = &h.combined {
        for (name, want) in cb.pairs() {
            let got = values(&name);
            let joined = got.join(", ");
            if (!got.is_empty() && joined == want) != positive {
                failures.push(format!(
                    "{what}: {} {name}: {want:?}; actual {}",
                    if positive {
                        "expected combined"
                    } else {
                        "expected anything but combined"
                    },
                    if got.is_empty() {
                        "absent".to_string()
                    } else {
                        format!("{joined:?}")
                    }
                ));
            }
        }
    }
    if let Some(rx) = &h.regex {
        for (name, re) in rx.pairs() {
            let got = values(&name);
            match regex::Regex::new(&re) {
                Err(e) => failures.push(format!("{what}: {name}: bad regex /{re}/: {e}")),
                Ok(r) => {
                    if got.iter().any(|v| r.is_match(v)) != positive {
                        failures.push(format!(
                            "{what}: {name} {} /{re}/; actual {}",
                            if positive {
                                "does not match"
                            } else {
                                "unexpectedly matches"
                            },
                            if got.is_empty() {
                                "absent".to_string()
                            } else {
                                format!("{got:?}")
                            }
                        ));
                    }
                }
            }
        }
    }
    if let Some(n) = &h.not {
        check_headers(what, n, actual, !positive, failures);
    }
    if failures.len() > before
        && positive
        && let Some(last) = failures.last_mut()
    {
        last.push_str(&format!("\n  actual {what}:\n{}", show_headers(actual)));
    }
}

/// Log lines as the checks read them: a label (the level, or `callout`,
/// `step`) and the message.
fn leveled(logs: &[LogLine]) -> Vec<(&str, &str)> {
    logs.iter()
        .map(|l| (l.level.as_str(), l.message.as_str()))
        .collect()
}

fn check_logs(what: &str, l: &LogExpect, logs: &[(&str, &str)], failures: &mut Vec<String>) {
    let matches = |m: &LogMatcher| -> Result<bool, String> {
        let (level, re) = match m {
            LogMatcher::Message(re) => (None, re),
            LogMatcher::Leveled { level, message } => (Some(level), message),
        };
        let r = regex::Regex::new(re).map_err(|e| format!("{what}: bad regex /{re}/: {e}"))?;
        Ok(logs.iter().any(|line| {
            level.is_none_or(|lv| lv.eq_ignore_ascii_case(line.0)) && r.is_match(line.1)
        }))
    };
    let all = || {
        if logs.is_empty() {
            "    (none)".to_string()
        } else {
            logs.iter()
                .map(|(level, message)| format!("    {level:<8} {message}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    for m in &l.has {
        match matches(m) {
            Err(e) => failures.push(e),
            Ok(false) => failures.push(format!(
                "{what}: no line matches {m:?}\n  actual:\n{}",
                all()
            )),
            Ok(true) => {}
        }
    }
    for m in &l.no {
        match matches(m) {
            Err(e) => failures.push(e),
            Ok(true) => failures.push(format!(
                "{what}: a line matches {m:?}\n  actual:\n{}",
                all()
            )),
            Ok(false) => {}
        }
    }
}

/// Reads a body given inline, from a file (relative to `base`) or as base64.
fn body_bytes(base: &Path, b: &Option<BodySpec>, what: &str) -> Result<Vec<u8>, String> {
    let Some(b) = b else { return Ok(Vec::new()) };
    match (&b.text, &b.file, &b.base64) {
        (Some(t), None, None) => Ok(t.as_bytes().to_vec()),
        (None, Some(f), None) => tollgate_traffic::input::read(&base.join(f))
            .map_err(|e| format!("{what}.file: cannot read {}: {e}", base.join(f).display())),
        (None, None, Some(s)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| format!("{what}.base64: {e}"))
        }
        (None, None, None) => Ok(Vec::new()),
        _ => Err(format!("{what}: give one of text, file, base64")),
    }
}

/// Checks the header names and values of a `clusters:` entry
/// ([`tollgate_traffic::header_syntax`]); the error names the field and the header.
fn check_stub_headers(name: &str, c: &ClusterSpec) -> Result<(), String> {
    let what = format!("clusters.{name}");
    let grpc = c.grpc.as_ref();
    for (field, h) in [
        ("headers", c.headers.as_ref()),
        ("trailers", c.trailers.as_ref()),
        (
            "grpc.initial_metadata",
            grpc.and_then(|g| g.initial_metadata.as_ref()),
        ),
        (
            "grpc.trailing_metadata",
            grpc.and_then(|g| g.trailing_metadata.as_ref()),
        ),
    ] {
        for (k, v) in h.map(Headers::pairs).unwrap_or_default() {
            tollgate_traffic::header_syntax::check(&k, &v)
                .map_err(|e| format!("{what}.{field}: {e}"))?;
        }
    }
    Ok(())
}

/// Every answer of a `clusters:` entry, as lists of stubs each answered in
/// turn: the entry's own answer (or its `answers:` in order), then one list
/// per gRPC `methods:` entry.
#[allow(clippy::type_complexity)]
pub fn cluster_answers(
    name: &str,
    c: &ClusterSpec,
    base: &Path,
) -> Result<Vec<(Vec<HttpClusterStub>, Vec<GrpcClusterStub>)>, String> {
    let single = |c: &ClusterSpec| cluster_stubs(name, c, base);
    let mut lists = Vec::new();
    if c.answers.is_empty() {
        let (h, g) = single(c)?;
        lists.push((h.into_iter().collect(), g.into_iter().collect()));
    } else {
        let (mut hs, mut gs) = (Vec::new(), Vec::new());
        for (i, a) in c.answers.iter().enumerate() {
            if !a.answers.is_empty() {
                return Err(format!(
                    "clusters.{name}.answers[{i}]: `answers` cannot nest"
                ));
            }
            let (h, g) = single(a).map_err(|e| format!("answers[{i}]: {e}"))?;
            hs.extend(h);
            gs.extend(g);
        }
        lists.push((hs, gs));
    }
    let methods = c.grpc.iter().flat_map(|g| g.methods.iter());
    for (method, g) in methods {
        if !g.methods.is_empty() {
            return Err(format!(
                "clusters.{name}.grpc.methods.{method}: `methods` cannot nest"
            ));
        }
        let entry = ClusterSpec {
            grpc: Some(g.clone()),
            ..ClusterSpec::default()
        };
        let (_, stub) = single(&entry).map_err(|e| format!("grpc.methods.{method}: {e}"))?;
        lists.push((
            Vec::new(),
            stub.map(|s| s.for_method(method)).into_iter().collect(),
        ));
    }
    Ok(lists)
}

/// The http and gRPC stubs a `clusters:` entry describes (file paths
/// relative to `base`); errors name the field (`clusters.authz.failure: ...`).
pub fn cluster_stubs(
    name: &str,
    c: &ClusterSpec,
    base: &Path,
) -> Result<(Option<HttpClusterStub>, Option<GrpcClusterStub>), String> {
    let what = format!("clusters.{name}");
    let delay = |ms: u64| Duration::from_millis(ms);
    // Every stub is loaded here: headers HTTP does not allow are refused.
    check_stub_headers(name, c)?;
    let has_response =
        c.status.is_some() || c.headers.is_some() || c.body.is_some() || c.trailers.is_some();
    let http = if c.grpc.is_none() || has_response || c.failure.is_some() {
        let stub = match c.failure.as_deref() {
            None => {
                let mut h = HttpClusterStub::respond(name, c.status.unwrap_or(200))
                    .body(body_bytes(base, &c.body, &format!("{what}.body"))?);
                for (k, v) in c.headers.as_ref().map(Headers::pairs).unwrap_or_default() {
                    h = h.header(&k, &v);
                }
                for (k, v) in c.trailers.as_ref().map(Headers::pairs).unwrap_or_default() {
                    h = h.trailer(&k, &v);
                }
                h
            }
            Some(_) if has_response => {
                return Err(format!(
                    "{what}: give `failure` or a response (status, headers, body, trailers), not both"
                ));
            }
            Some("reset") => HttpClusterStub::reset(name),
            Some("connection") => HttpClusterStub::connect_failure(name),
            Some(other) => {
                return Err(format!(
                    "{what}.failure: unknown failure `{other}` (reset, connection)"
                ));
            }
        };
        Some(stub.delay(delay(c.delay_ms)))
    } else {
        None
    };
    let grpc = match &c.grpc {
        None => None,
        Some(g) => {
            let what = format!("{what}.grpc");
            let mut stub = match g.failure.as_deref() {
                None => GrpcClusterStub::fail(name, g.status, &g.message),
                Some("connection") => GrpcClusterStub::connect_failure(name),
                Some(other) => {
                    return Err(format!(
                        "{what}.failure: unknown failure `{other}` (connection)"
                    ));
                }
            };
            for (k, v) in g
                .initial_metadata
                .as_ref()
                .map(Headers::pairs)
                .unwrap_or_default()
            {
                stub = stub.initial(&k, &v);
            }
            for (i, m) in g.messages.iter().enumerate() {
                stub = stub.message(body_bytes(
                    base,
                    &Some(m.clone()),
                    &format!("{what}.messages[{i}]"),
                )?);
            }
            for (k, v) in g
                .trailing_metadata
                .as_ref()
                .map(Headers::pairs)
                .unwrap_or_default()
            {
                stub = stub.trailing(&k, &v);
            }
            if g.server_first {
                stub = stub.server_first();
            }
            Some(stub.delay(delay(g.delay_ms)))
        }
    };
    Ok((http, grpc))
}

/// The stubs of a `CLUSTER=FILE` argument (`tollgate replay --stub`): FILE
/// is YAML or JSON in the form of a `clusters:` entry; its paths are
/// relative to FILE's folder.
pub fn stub_arg(arg: &str) -> Result<(Option<HttpClusterStub>, Option<GrpcClusterStub>), String> {
    let Some((name, file)) = arg
        .split_once('=')
        .filter(|(n, f)| !n.is_empty() && !f.is_empty())
    else {
        return Err(format!(
            "`{arg}`: expected CLUSTER=FILE, e.g. authz=authz-stub.json"
        ));
    };
    let text = tollgate_traffic::input::read_to_string(Path::new(file))
        .map_err(|e| format!("{file}: cannot read: {e}"))?;
    tollgate_traffic::input::check_yaml_depth(&text, tollgate_traffic::input::MAX_YAML_DEPTH)
        .map_err(|e| format!("{file}: {e}"))?;
    let spec: ClusterSpec = yaml_serde::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let base = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    cluster_stubs(name, &spec, &base).map_err(|e| format!("{file}: {e}"))
}

/// A property value as Envoy encodes it.
fn property_bytes(v: &PropertyValue, what: &str) -> Result<Vec<u8>, String> {
    let int = |n: i64| n.to_le_bytes().to_vec();
    Ok(match v {
        PropertyValue::Text(t) => t.as_bytes().to_vec(),
        PropertyValue::Int(n) => int(*n),
        PropertyValue::Bool(b) => vec![u8::from(*b)],
        PropertyValue::Typed(t) => {
            let given = [
                t.string.is_some(),
                t.int.is_some(),
                t.bool.is_some(),
                t.timestamp.is_some(),
                t.duration_ms.is_some(),
                t.base64.is_some(),
                t.map.is_some(),
            ];
            if given.iter().filter(|&&g| g).count() != 1 {
                return Err(format!(
                    "{what}: give exactly one of string, int, bool, timestamp, duration_ms, base64, map"
                ));
            }
            if let Some(s) = &t.string {
                s.as_bytes().to_vec()
            } else if let Some(n) = t.int {
                int(n)
            } else if let Some(b) = t.bool {
                vec![u8::from(b)]
            } else if let Some(c) = &t.timestamp {
                let n = c.nanos().map_err(|e| format!("{what}.timestamp: {e}"))?;
                int(i64::try_from(n).map_err(|_| format!("{what}.timestamp: out of range"))?)
            } else if let Some(ms) = t.duration_ms {
                int(ms.saturating_mul(1_000_000))
            } else if let Some(b) = &t.base64 {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| format!("{what}.base64: {e}"))?
            } else {
                let map = t.map.clone().unwrap_or_default();
                tollgate_abi::pairs::encode(map.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            }
        }
    })
}

/// Whether a log line is a call-trace line (`[host->vm] ...`), possibly
/// prefixed with its filter's name in a chain.
fn is_trace(l: &LogLine) -> bool {
    l.level == "trace"
        && ["[host->vm] ", "[host<-vm] ", "[vm->host] ", "[vm<-host] "]
            .iter()
            .any(|m| l.message.starts_with(m) || l.message.contains(&format!("] {m}")))
}

/// Splits an exchange's logs (with the call trace on) into what the
/// filters logged and what they logged from the first `proxy_on_log` on.
fn split_end_logs(logs: Vec<LogLine>) -> (Vec<LogLine>, Vec<LogLine>) {
    let end = logs
        .iter()
        .position(|l| is_trace(l) && l.message.contains("[host->vm] proxy_on_log("))
        .unwrap_or(logs.len());
    let tail = logs[end..]
        .iter()
        .filter(|l| !is_trace(l))
        .cloned()
        .collect();
    let all = logs.into_iter().filter(|l| !is_trace(l)).collect();
    (all, tail)
}

fn check_metrics(
    what: &str,
    want: &BTreeMap<String, i64>,
    metrics: &[(String, i64)],
    failures: &mut Vec<String>,
) {
    for (name, want) in want {
        match metrics.iter().find(|(n, _)| n == name) {
            None => failures.push(format!(
                "{what} {name}: not defined (defined: {})",
                metrics
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some((_, v)) if v != want => {
                failures.push(format!("{what} {name}: expected {want}, got {v}"));
            }
            Some(_) => {}
        }
    }
}

/// Loads and runs a suite (what `tollgate test` does).
pub fn run_file(path: impl AsRef<Path>) -> Result<SuiteReport, SuiteError> {
    Ok(Suite::load(path)?.run())
}
