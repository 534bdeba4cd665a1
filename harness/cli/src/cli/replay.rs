//! `tollgate replay`: recorded traffic through a filter chain in the
//! harness, reported as text or JSON.

use crate::out::outln;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::Path;
use tollgate_host::state::LogLevel;
use tollgate_replay::{Replay, Report, Verdict};
use tollgate_traffic::{HttpRequest, HttpResponse};

use crate::{Format, chain_args, traffic_cli, value_arg};

/// How `tollgate replay` reads its recording.
pub(crate) struct ReplayInput {
    pub(crate) lenient: bool,
    pub(crate) stream: bool,
    pub(crate) quiet: bool,
    /// `--stub CLUSTER=FILE` arguments.
    pub(crate) stubs: Vec<String>,
    /// `--memory-limit`, `--max-callouts-per-exchange`...
    pub(crate) limits: crate::limit_args::LimitArgs,
    /// Per `--filter`, in order: `--plugin-name`, `--root-id`, `--vm-id`, `--env`, `--host-env`.
    pub(crate) identities: Vec<tollgate_abi::PluginIdentity>,
    /// `--one-chunk-bodies`.
    pub(crate) one_chunk_bodies: bool,
    /// `--immediate-callout-answers`.
    pub(crate) immediate_callout_answers: bool,
}

pub(crate) fn replay(
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
    let limits = input.limits.apply()?;
    // Compiled modules are cached as `tollgate bench` caches them.
    let mut replay = Replay::chain()
        .limits(limits)
        .log_level(level)
        .workers(workers)
        .module_cache(tollgate_host::cache::ModuleCache::default_location());
    if trace {
        replay = replay.trace_calls();
    }
    if input.one_chunk_bodies {
        replay = replay.body_delivery(tollgate_replay::BodyDelivery::OneChunk);
    }
    if input.immediate_callout_answers {
        replay = replay.answer_timing(tollgate_host::callouts::AnswerTiming::Immediate);
    }
    for (i, f) in filters.into_iter().enumerate() {
        replay = replay.filter(&f.path);
        if let Some(id) = input.identities.get(i).filter(|id| !id.is_default()) {
            replay = replay.identity(id);
        }
        if let Some(c) = f.config {
            replay = replay.config(value_arg(&c, "config")?);
        }
        if let Some(c) = f.vm_config {
            replay = replay.vm_config(value_arg(&c, "vm-config")?);
        }
        if let Some(p) = f.failure_policy {
            let policy: tollgate_replay::FailurePolicy = p
                .parse()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("--failure-policy for {}", f.path.display()))?;
            replay = replay.failure_policy(policy);
        }
    }
    for arg in &input.stubs {
        let (http, grpc) = tollgate_replay::suite::stub_arg(arg)
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
        tollgate_traffic::Leniency::Lenient
    } else {
        tollgate_traffic::Leniency::Strict
    };
    let traffic = tollgate_traffic::load_with(traffic_path, leniency)?;
    if traffic.exchanges.is_empty() {
        // One rule for every format: an empty recording is an error.
        anyhow::bail!("{}: {}", traffic_path.display(), NO_EXCHANGES);
    }
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
        Format::Text => {
            // One buffered writer for the whole report: a write per line
            // (standard output's line buffering) would cost a system call
            // per exchange on a large recording.
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            if let Err(e) = write_text(&mut w, &report).and_then(|()| w.flush()) {
                crate::out::failed(&e);
            }
        }
        Format::Json => outln!("{}", serde_json::to_string_pretty(&to_json(&report))?),
    }
    Ok(())
}

fn verdict_text(v: &Verdict) -> std::borrow::Cow<'static, str> {
    match v {
        Verdict::Passed => "passed".into(),
        Verdict::Modified => "modified".into(),
        Verdict::AnsweredLocally { status } => format!("answered locally ({status})").into(),
        Verdict::Failed { .. } => "FAILED".into(),
    }
}

/// Where an exchange went upstream, for its report line.
struct Target<'a>(Option<&'a HttpRequest>);

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => write!(f, "{} {}{}", r.method, r.authority, r.path),
            None => f.write_str("(not sent upstream)"),
        }
    }
}

/// The text report.
fn write_text(w: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for f in &report.filters {
        writeln!(
            w,
            "filter {} ({} bytes, proxy-wasm ABI {})",
            f.path.display(),
            f.wasm_bytes,
            f.abi
        )?;
    }
    for l in &report.startup_logs {
        writeln!(w, "  [start] {:<8} {}", l.level, l.message)?;
    }
    for e in &report.exchanges {
        writeln!(
            w,
            "{}: {} -> {} [{}] guest {:?}",
            e.id,
            Target(e.upstream_request.as_ref()),
            e.client_response.status,
            verdict_text(&e.verdict),
            e.cost
        )?;
        if let Verdict::Failed { message } = &e.verdict {
            for line in message.lines() {
                writeln!(w, "    ! {line}")?;
            }
        }
        for c in &e.changes {
            writeln!(w, "    * {c}")?;
        }
        if report.filters.len() > 1 {
            for f in &e.filters {
                for step in &f.steps {
                    writeln!(w, "    [{}] {step}", f.filter)?;
                }
            }
        }
        for l in &e.logs {
            writeln!(w, "    {:<8} {}", l.level, l.message)?;
        }
    }
    let s = report.summary();
    writeln!(
        w,
        "\n{} requests: {} passed, {} modified, {} answered locally, {} failed; guest time p50 {:?}, p99 {:?}",
        s.requests, s.passed, s.modified, s.answered_locally, s.failed, s.p50, s.p99
    )
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
                "upstream_reset": e.upstream_reset.as_ref().map(request_json),
                "client_response": response_json(&e.client_response),
                "changes": e.changes,
                "cost_ns": u64::try_from(e.cost.as_nanos()).unwrap_or(u64::MAX),
                "filters": e.filters.iter().map(|f| serde_json::json!({ "filter": f.filter, "steps": f.steps.iter().map(ToString::to_string).collect::<Vec<_>>() })).collect::<Vec<_>>(),
                "logs": e.logs.iter().map(|l| serde_json::json!({ "level": l.level.as_str(), "message": l.message })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "filter": { "path": report.filter.path, "wasm_bytes": report.filter.wasm_bytes, "abi": report.filter.abi },
        "startup_logs": report.startup_logs.iter().map(|l| serde_json::json!({ "level": l.level.as_str(), "message": l.message })).collect::<Vec<_>>(),
        "exchanges": exchanges,
        "summary": {
            "requests": s.requests, "passed": s.passed, "modified": s.modified,
            "answered_locally": s.answered_locally, "failed": s.failed,
            "p50_ns": u64::try_from(s.p50.as_nanos()).unwrap_or(u64::MAX),
            "p99_ns": u64::try_from(s.p99.as_nanos()).unwrap_or(u64::MAX),
        },
    })
}

/// What a recording with no exchanges (every format, streamed or not) is told.
pub(crate) const NO_EXCHANGES: &str = "the recording has no exchanges: nothing to replay";
