//! `tollgate traffic inspect | convert | filter | anonymize`, `tollgate record`
//! and the streaming `tollgate replay --stream`: argument parsing and
//! printing; the work is in `tollgate_traffic::{tools, record, streaming}`.

use crate::out::outln;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use tollgate_envoy::record::{Recorder, RecorderConfig};
use tollgate_files::{self as atomic_write, AtomicFile};
use tollgate_replay::ReplayBuilder;
use tollgate_replay::streaming;
use tollgate_traffic::tools::{Anonymizer, Inspection, OutputFormat, Selection, Sink};
use tollgate_traffic::{self as traffic, Exchanges, Leniency};

/// `tollgate traffic ...`
#[derive(Subcommand)]
pub enum TrafficCommand {
    /// Summarise a recording: methods, statuses, hosts, body sizes.
    Inspect {
        /// The recording (HAR, Envoy tap file or directory, native YAML/JSON/JSONL).
        input: PathBuf,
        /// Skip unusable entries with a warning instead of failing.
        #[arg(long)]
        lenient: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert a recording to another format.
    Convert {
        /// The recording.
        input: PathBuf,
        /// Output options.
        #[command(flatten)]
        out: OutArgs,
    },
    /// Keep the exchanges matching every given criterion.
    Filter {
        /// The recording.
        input: PathBuf,
        /// Host (`:authority` without port; `*.example.com` for subdomains). Repeatable.
        #[arg(long)]
        host: Vec<String>,
        /// Path prefix (the query counts as part of the path). Repeatable.
        #[arg(long)]
        path: Vec<String>,
        /// Status: `404`, a class like `5xx`, or `none`. Repeatable.
        #[arg(long)]
        status: Vec<String>,
        /// Method. Repeatable.
        #[arg(long)]
        method: Vec<String>,
        /// Output options.
        #[command(flatten)]
        out: OutArgs,
    },
    /// Hash (or remove) cookies, Authorization, API keys, JWTs and e-mail addresses.
    Anonymize {
        /// The recording.
        input: PathBuf,
        /// Key for the keyed hashes (same key and secret, same token); `@path` reads it
        /// from a file. Default: a random key, so tokens differ between runs.
        #[arg(long)]
        key: Option<String>,
        /// Remove secret headers and write `REDACTED` elsewhere instead of hashing.
        #[arg(long, conflicts_with = "key")]
        remove: bool,
        /// Output options.
        #[command(flatten)]
        out: OutArgs,
    },
}

/// Where and how to write a recording.
#[derive(Args)]
pub struct OutArgs {
    /// The output file; its extension picks the format unless `--to` is given.
    #[arg(short, long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    to: Option<ToFormat>,
    /// Skip unusable input entries with a warning instead of failing.
    #[arg(long)]
    lenient: bool,
}

/// Output formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum ToFormat {
    /// HAR 1.2.
    Har,
    /// Native YAML document.
    Yaml,
    /// Native JSON document.
    Json,
    /// Native JSON lines (streams; for large recordings).
    Jsonl,
}

fn leniency(lenient: bool) -> Leniency {
    if lenient {
        Leniency::Lenient
    } else {
        Leniency::Strict
    }
}

fn open(input: &Path, lenient: bool) -> Result<Exchanges> {
    Ok(traffic::open(input, leniency(lenient))?)
}

fn warn_all(s: &mut Exchanges) {
    for w in s.take_warnings() {
        eprintln!("warning: {w}");
    }
}

/// Runs `tollgate traffic ...`.
pub fn run(cmd: TrafficCommand) -> Result<()> {
    match cmd {
        TrafficCommand::Inspect {
            input,
            lenient,
            json,
        } => inspect(&input, lenient, json),
        TrafficCommand::Convert { input, out } => transform(&input, &out, |_| true, |_| {}),
        TrafficCommand::Filter {
            input,
            host,
            path,
            status,
            method,
            out,
        } => {
            let sel = Selection {
                hosts: host,
                path_prefixes: path,
                statuses: status,
                methods: method,
            };
            sel.validate().map_err(anyhow::Error::msg)?;
            transform(&input, &out, |e| sel.matches(e), |_| {})
        }
        TrafficCommand::Anonymize {
            input,
            key,
            remove,
            out,
        } => {
            let mut anon = if remove {
                Anonymizer::removing()
            } else {
                let key = match key {
                    Some(k) => match k.strip_prefix('@') {
                        Some(p) => {
                            std::fs::read(p).with_context(|| format!("--key: cannot read {p}"))?
                        }
                        None => k.into_bytes(),
                    },
                    None => random_key()?,
                };
                Anonymizer::hashing(&key)
            };
            transform(&input, &out, |_| true, |e| anon.exchange(e))?;
            eprintln!("{} secrets replaced", anon.replaced());
            Ok(())
        }
    }
}

fn random_key() -> Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    let mut f = File::open("/dev/urandom")
        .context("cannot read /dev/urandom for a random key; give --key")?;
    std::io::Read::read_exact(&mut f, &mut key).context("reading /dev/urandom")?;
    Ok(key)
}

fn inspect(input: &Path, lenient: bool, json: bool) -> Result<()> {
    let mut stream = open(input, lenient)?;
    let mut i = Inspection::default();
    for e in stream.by_ref() {
        i.add(&e?);
    }
    warn_all(&mut stream);
    if json {
        outln!("{}", serde_json::to_string_pretty(&i.to_json())?);
        return Ok(());
    }
    outln!("{}: {} exchanges", input.display(), i.exchanges);
    let line = |title: &str, m: &std::collections::BTreeMap<String, usize>| {
        let items: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!("  {title:<9} {}", items.join(", "));
    };
    line("methods", &i.methods);
    line("statuses", &i.statuses);
    line("hosts", &i.hosts);
    for (title, s) in [
        ("requests", &i.request_bodies),
        ("responses", &i.response_bodies),
    ] {
        outln!(
            "  {title:<9} {} bodies, {} bytes in all, largest {} bytes",
            s.count,
            s.total,
            s.max
        );
    }
    if i.truncated + i.with_trailers + i.with_callouts > 0 {
        outln!(
            "  also      {} truncated, {} with trailers, {} with callout stubs",
            i.truncated,
            i.with_trailers,
            i.with_callouts
        );
    }
    Ok(())
}

fn transform(
    input: &Path,
    out: &OutArgs,
    mut keep: impl FnMut(&traffic::Exchange) -> bool,
    mut change: impl FnMut(&mut traffic::Exchange),
) -> Result<()> {
    let format = match out.to {
        Some(ToFormat::Har) => OutputFormat::Har,
        Some(ToFormat::Yaml) => OutputFormat::NativeYaml,
        Some(ToFormat::Json) => OutputFormat::NativeJson,
        Some(ToFormat::Jsonl) => OutputFormat::NativeLines,
        None => OutputFormat::from_path(&out.out).with_context(|| {
            format!(
                "{}: cannot tell the output format from the extension; use .har, .yaml, .json, .jsonl or --to",
                out.out.display()
            )
        })?,
    };
    let mut stream = open(input, out.lenient)?;
    // Written beside the output and renamed over it at the end: the input may
    // be the output, and a failed or interrupted run leaves the earlier file.
    let file = AtomicFile::create(&out.out)
        .with_context(|| format!("cannot create {}", out.out.display()))?;
    let mut sink = Sink::new(file, format);
    let (mut read, mut written) = (0usize, 0usize);
    for e in stream.by_ref() {
        let mut e = e?;
        read += 1;
        if keep(&e) {
            change(&mut e);
            sink.push(e)
                .with_context(|| format!("writing {}", out.out.display()))?;
            written += 1;
        }
    }
    sink.finish()
        .and_then(AtomicFile::commit)
        .with_context(|| format!("writing {}", out.out.display()))?;
    warn_all(&mut stream);
    eprintln!(
        "{read} exchanges read, {written} written to {}",
        out.out.display()
    );
    Ok(())
}

/// `tollgate record`.
#[derive(Args)]
pub struct RecordArgs {
    /// The service to record (`host:port`).
    #[arg(long)]
    upstream: String,
    /// Where clients connect (`host:port`); Envoy listens here.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: String,
    /// Output folder; the recording is `<out>/traffic.jsonl`.
    #[arg(long)]
    out: PathBuf,
    /// The Envoy binary (default: ENVOY_BIN, else target/envoy-venv).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Stop after this many exchanges (default: until Ctrl-C or --duration).
    #[arg(long)]
    count: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Largest body kept per direction, in bytes (longer ones are truncated).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_body: u64,
}

/// Runs `tollgate record`.
pub fn record(args: RecordArgs) -> Result<()> {
    let envoy = match args.envoy {
        Some(e) => e,
        None => tollgate_envoy::record::envoy_binary()?,
    };
    let config = RecorderConfig {
        envoy,
        upstream: args.upstream.clone(),
        listen: args.listen.clone(),
        out_dir: args.out.clone(),
        max_body: args.max_body,
    };
    // Ctrl-C (or SIGTERM) stops the recording and keeps it; a second one aborts.
    atomic_write::stop_on_signal();
    let mut rec = Recorder::start(config)?;
    eprintln!(
        "recording: clients -> {} -> Envoy (tap) -> {}; writing {}{}",
        rec.listen_addr(),
        args.upstream,
        rec.traffic_path().display(),
        match (args.count, args.duration) {
            (Some(n), _) => format!("; stopping after {n} exchanges"),
            (None, Some(s)) => format!("; stopping after {s} s"),
            (None, None) => "; Ctrl-C stops".to_owned(),
        }
    );
    let deadline = args
        .duration
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    loop {
        let n = match rec.poll() {
            Ok(n) => n,
            Err(e) => {
                let kept = rec.keep_partial();
                let e = anyhow::Error::from(e);
                return Err(match kept {
                    Some(p) => e.context(format!(
                        "recording failed; what it got is in {} ({} untouched)",
                        p.display(),
                        rec.traffic_path().display()
                    )),
                    None => e,
                });
            }
        };
        for w in rec.take_warnings() {
            eprintln!("warning: {w}");
        }
        if args.count.is_some_and(|c| n >= c)
            || deadline.is_some_and(|d| std::time::Instant::now() >= d)
            || atomic_write::stop_requested()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = rec.stop()?;
    eprintln!("{n} exchanges recorded in {}", rec.traffic_path().display());
    Ok(())
}

/// One exchange's line of a streamed replay: `id: METHOD authority/path
/// [verdict] guest COST`; a failure's line carries the first line of its
/// cause (the callback, the trap).
fn write_stream_line(
    w: &mut impl Write,
    e: &tollgate_traffic::Exchange,
    v: &tollgate_replay::Verdict,
    cost: std::time::Duration,
) -> std::io::Result<()> {
    use tollgate_replay::Verdict;
    let r = &e.request;
    write!(w, "{}: {} {}{} [", e.id, r.method, r.authority, r.path)?;
    match v {
        Verdict::Passed => w.write_all(b"passed")?,
        Verdict::Modified => w.write_all(b"modified")?,
        Verdict::AnsweredLocally { status } => write!(w, "answered locally ({status})")?,
        Verdict::Failed { message } => {
            write!(w, "FAILED: {}", message.lines().next().unwrap_or_default())?;
        }
    }
    writeln!(w, "] guest {cost:?}")
}

/// Streams `input` through the chain in `builder`, printing one line per
/// exchange (unless `quiet`) and a progress bar on a terminal, holding no
/// per-exchange state.
pub fn replay_streaming(
    builder: ReplayBuilder,
    input: &Path,
    lenient: bool,
    quiet: bool,
) -> Result<()> {
    let mut stream = open(input, lenient)?;
    let bar = match stream.known_len() {
        Some(n) => indicatif::ProgressBar::new(n as u64),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} exchanges ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let stdout = std::io::stdout();
    // Lines go out as they come on a terminal; into a pipe or a file they
    // are buffered (a system call per exchange would bound the rate).
    let terminal = std::io::IsTerminal::is_terminal(&stdout);
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    // The bar moves every `BAR_STEP` exchanges (each move reads the clock
    // and takes the bar's lock: per exchange that was a measurable part of
    // a streamed replay of a fast filter).
    const BAR_STEP: u64 = 256;
    let mut unshown = 0u64;
    let totals = streaming::replay_verdicts(builder, stream.by_ref(), |_, e, v, cost| {
        unshown += 1;
        if unshown == BAR_STEP {
            bar.inc(unshown);
            unshown = 0;
        }
        if !quiet && write_err.is_none() {
            // Written straight into the buffer (no line or verdict string
            // made per exchange); the bar is cleared around a line only
            // when both share the terminal.
            let written = if terminal {
                bar.suspend(|| write_stream_line(&mut out, e, v, cost).and_then(|()| out.flush()))
            } else {
                write_stream_line(&mut out, e, v, cost)
            };
            if let Err(err) = written {
                write_err = Some(err);
            }
        }
    });
    bar.inc(unshown);
    if let Err(err) = out.flush()
        && write_err.is_none()
    {
        write_err = Some(err);
    }
    drop(out);
    bar.finish_and_clear();
    warn_all(&mut stream);
    let t = totals?;
    if let Some(e) = write_err {
        crate::out::failed(&e);
    }
    if t.requests == 0 {
        bail!("{}: {}", input.display(), crate::replay_cli::NO_EXCHANGES);
    }
    outln!(
        "\n{} requests: {} passed, {} modified, {} answered locally, {} failed; guest time p50 {:?}, p99 {:?}",
        t.requests,
        t.passed,
        t.modified,
        t.answered_locally,
        t.failed,
        t.p50,
        t.p99
    );
    Ok(())
}
