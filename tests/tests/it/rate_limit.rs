//! The `rate-limit` filter:
//! - four worker VMs in the harness share one bucket: exactly the burst plus one token per
//!   refill interval of virtual time are admitted, whichever VM a request lands on;
//! - a real Envoy with four worker threads under concurrent load from eight client threads:
//!   the requests admitted stay within `max_tokens + elapsed / interval`, next to Envoy's native
//!   `local_ratelimit` on the same traffic;
//! - the demo configuration in a real Envoy: 429 with `Retry-After` and the IETF headers,
//!   nothing at the upstream, shadow mode, Prometheus labels;
//! - bad configurations refused at start-up naming the field, in the harness and in Envoy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::http1::header;
use tollgate_tests::launcher::Launcher;
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpResponse, Traffic};

const FILTER: &str = "rate-limit";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

/// One bucket for every request: `burst` tokens, one back every `interval_ms`.
fn global_limit(burst: u32, interval_ms: u64) -> String {
    format!(
        r#"{{"limits": [{{"name": "global", "key": [], "max_tokens": {burst}, "tokens_per_fill": 1, "fill_interval_ms": {interval_ms}}}]}}"#
    )
}

fn get(path: &str) -> tollgate_traffic::HttpRequest {
    client::request("GET", "api.example.com", path, &[], b"")
}

#[test]
fn four_harness_workers_share_one_bucket() -> Result<()> {
    // 200 exchanges, 1 ms of virtual time apart, dealt to 4 VMs in turn. Burst 10, one token
    // every 20 ms: the burst is spent at once, then one request every 20 ms gets through.
    let (burst, interval_ms, requests) = (10u64, 20u64, 200u64);
    let traffic = Traffic {
        source: None,
        exchanges: (0..requests)
            .map(|i| Exchange {
                id: format!("r{i}"),
                request: get("/"),
                response: Some(ok_response()),
                details: Default::default(),
            })
            .collect(),
        warnings: Vec::new(),
    };
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(global_limit(burst as u32, interval_ms))
        .workers(4)
        .traffic(traffic)
        .run()
        .context("replaying through four workers")?;
    let mut admitted_per_worker = [0u64; 4];
    let mut limited = 0u64;
    for (i, exchange) in report.exchanges.iter().enumerate() {
        match exchange.verdict {
            Verdict::Passed | Verdict::Modified => admitted_per_worker[i % 4] += 1,
            Verdict::AnsweredLocally { status: 429 } => {
                limited += 1;
                ensure!(
                    exchange.upstream_request.is_none(),
                    "{}: reached the upstream",
                    exchange.id
                );
                let retry = header(&exchange.client_response.headers, "retry-after");
                ensure!(retry == Some("1"), "{}: retry-after {retry:?}", exchange.id);
            }
            ref other => bail!("{}: {other:?}", exchange.id),
        }
    }
    let admitted: u64 = admitted_per_worker.iter().sum();
    // The exchanges span (requests - 1) ms: the burst, plus one token per full interval.
    let bound = burst + (requests - 1) / interval_ms;
    eprintln!(
        "harness, 4 workers: {admitted} admitted (per worker {admitted_per_worker:?}), {limited} limited, bound {bound}"
    );
    ensure!(
        admitted == bound,
        "admitted {admitted}, expected exactly {bound} (per worker {admitted_per_worker:?})"
    );
    ensure!(
        admitted_per_worker.iter().filter(|n| **n > 0).count() >= 2,
        "the admitted requests all came from one VM: {admitted_per_worker:?}"
    );
    ensure!(admitted + limited == requests);
    Ok(())
}

/// What `clients` threads sending `per_client` requests each on new connections got.
struct Load {
    ok: usize,
    limited: usize,
    other: Vec<u16>,
    elapsed: Duration,
    /// One of the 429s.
    sample: Option<HttpResponse>,
    /// Admitted when sent one by one once a refill interval has passed since the start.
    after_refill: usize,
}

fn blast(addr: std::net::SocketAddr, clients: usize, per_client: usize) -> Result<Load> {
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sample = Arc::new(std::sync::Mutex::new(None));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (ok, limited, other) = (ok.clone(), limited.clone(), other.clone());
            let sample = sample.clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..per_client {
                    let response = client::send(addr, &get(&format!("/load/{c}/{i}")))?;
                    match response.status {
                        200 => ok.fetch_add(1, Ordering::SeqCst),
                        429 => {
                            if let Ok(mut s) = sample.lock() {
                                s.get_or_insert(response);
                            }
                            limited.fetch_add(1, Ordering::SeqCst)
                        }
                        s => {
                            if let Ok(mut o) = other.lock() {
                                o.push(s);
                            }
                            0
                        }
                    };
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let elapsed = start.elapsed();
    // Refill on time: half an interval after the first token comes back, one by one.
    let refill = Duration::from_millis(INTERVAL_MS + INTERVAL_MS / 6);
    std::thread::sleep(refill.saturating_sub(start.elapsed()));
    let mut after_refill = 0;
    for i in 0..5 {
        if client::send(addr, &get(&format!("/refill/{i}")))?.status == 200 {
            after_refill += 1;
        }
    }
    let other = other.lock().map(|o| o.clone()).unwrap_or_default();
    let sample = sample.lock().ok().and_then(|mut s| s.take());
    Ok(Load {
        ok: ok.load(Ordering::SeqCst),
        limited: limited.load(Ordering::SeqCst),
        other,
        elapsed,
        sample,
        after_refill,
    })
}

/// Connections accepted per worker thread on the first listener (Envoy's per-worker stats).
fn connections_per_worker(envoy: &Envoy) -> Result<Vec<u64>> {
    let stats = client::send(
        envoy.admin(),
        &get("/stats?filter=worker_.*downstream_cx_total"),
    )?;
    let text = String::from_utf8_lossy(&stats.body).into_owned();
    Ok(text
        .lines()
        .filter(|l| l.starts_with("listener.") && !l.contains("admin"))
        .filter_map(|l| l.rsplit_once(": ").and_then(|(_, n)| n.trim().parse().ok()))
        .collect())
}

fn prometheus(envoy: &Envoy) -> Result<String> {
    tollgate_tests::stats::prometheus(envoy.admin())
}

fn metric_line(text: &str, limit: &str, result: &str) -> Option<u64> {
    let prefix = format!("rate_limit_requests{{limit=\"{limit}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
}

const WORKERS: u32 = 4;
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 40;
/// Burst and refill of the load test: 20 at once, one more every 3 s.
const BURST: u64 = 20;
const INTERVAL_MS: u64 = 3_000;

fn start_with_workers(config: &EnvoyConfig, label: &str) -> Result<Envoy> {
    let launcher = Launcher::from_env()?.with_concurrency(WORKERS);
    match Envoy::launch_with(&launcher, config, label)? {
        Launch::Ready(envoy) => Ok(envoy),
        Launch::Exited { status, log } => bail!("Envoy exited ({status}):\n{log}"),
    }
}

#[test]
fn envoy_workers_together_stay_within_the_limit_next_to_native_local_ratelimit() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let requests = CLIENTS * PER_CLIENT;

    // Ours: four workers, four VMs, one bucket in shared data.
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(&global_limit(BURST as u32, INTERVAL_MS))?;
    let envoy = start_with_workers(&config, "rate-limit-load")?;
    let wasm = envoy.explain((|| {
        let load = blast(envoy.listener(), CLIENTS, PER_CLIENT)?;
        let bound = BURST + load.elapsed.as_millis() as u64 / INTERVAL_MS;
        let workers = connections_per_worker(&envoy)?;
        let text = prometheus(&envoy)?;
        eprintln!(
            "wasm rate-limit, then {} of 5 admitted {INTERVAL_MS} ms + 1/6 after the start; ", load.after_refill
        );
        eprintln!(
            "wasm rate-limit, --concurrency {WORKERS}, {CLIENTS} clients x {PER_CLIENT}: {} admitted, {} limited in {:?} (bound {bound}); connections per worker {workers:?}",
            load.ok, load.limited, load.elapsed
        );
        ensure!(load.other.is_empty(), "other statuses: {:?}", load.other);
        ensure!(load.ok + load.limited == requests);
        ensure!(
            (BURST as usize..=bound as usize).contains(&load.ok),
            "{} admitted, outside [{BURST}, {bound}]",
            load.ok
        );
        ensure!(
            workers.iter().filter(|n| **n > 0).count() >= 2,
            "the connections did not spread over the workers: {workers:?}"
        );
        let reached = upstream.take_requests().len();
        ensure!(
            reached == load.ok + load.after_refill,
            "{reached} reached the upstream, {} admitted",
            load.ok + load.after_refill
        );
        ensure!(
            load.after_refill == 1,
            "one token back after {INTERVAL_MS} ms, {} admitted",
            load.after_refill
        );
        let sample = load.sample.as_ref().context("no 429")?;
        eprintln!("wasm 429: {:?} {:?}", sample.headers, String::from_utf8_lossy(&sample.body));
        ensure!(header(&sample.headers, "retry-after").is_some());
        ensure!(
            metric_line(&text, "global", "allowed") == Some((load.ok + load.after_refill) as u64)
                    && metric_line(&text, "global", "limited") == Some((load.limited + 5 - load.after_refill) as u64),
            "metrics disagree with the client's counts: {:?}",
            text.lines().filter(|l| l.contains("rate_limit")).collect::<Vec<_>>()
        );
        Ok(load)
    })())?;
    drop(envoy);

    // Native local_ratelimit, the same bucket, the same traffic.
    let native = paths::work_dir()?.join("rate-limit-native-load.yaml");
    std::fs::write(
        &native,
        format!(
            r#"http_filters:
  - name: envoy.filters.http.local_ratelimit
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
      stat_prefix: http_local_rate_limiter
      token_bucket: {{max_tokens: {BURST}, tokens_per_fill: 1, fill_interval: {}s}}
      filter_enabled: {{default_value: {{numerator: 100, denominator: HUNDRED}}}}
      filter_enforced: {{default_value: {{numerator: 100, denominator: HUNDRED}}}}
"#,
            INTERVAL_MS / 1000
        ),
    )?;
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.use_native_alternative(&native)?;
    let envoy = start_with_workers(&config, "rate-limit-load-native")?;
    let native = envoy.explain((|| {
        let load = blast(envoy.listener(), CLIENTS, PER_CLIENT)?;
        let workers = connections_per_worker(&envoy)?;
        eprintln!(
            "native local_ratelimit, --concurrency {WORKERS}, same load: {} admitted, {} limited in {:?}; connections per worker {workers:?}",
            load.ok, load.limited, load.elapsed
        );
        ensure!(load.other.is_empty(), "other statuses: {:?}", load.other);
        let sample = load.sample.as_ref().context("no native 429")?;
        eprintln!(
            "native: then {} of 5 admitted after the refill; 429: {:?} {:?}",
            load.after_refill,
            sample.headers,
            String::from_utf8_lossy(&sample.body)
        );
        ensure!(load.after_refill == 1, "native after refill: {}", load.after_refill);
        Ok(load)
    })())?;
    let native_bound = BURST + native.elapsed.as_millis() as u64 / INTERVAL_MS + 1;
    ensure!(
        (BURST as usize..=native_bound as usize).contains(&native.ok),
        "native admitted {} (wasm {}): the native bucket is not one per process any more?",
        native.ok,
        wasm.ok
    );
    Ok(())
}

#[test]
fn demo_limits_answer_429_with_retry_after_and_ietf_headers_in_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = start_with_workers(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "rate-limit",
    )?;
    envoy.explain((|| {
        let login = client::request("POST", "api.example.com", "/login", &[], b"");
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let response = client::send(envoy.listener(), &login)?;
            statuses.push(response.status);
            last = Some(response);
        }
        ensure!(statuses == [200, 200, 200, 429, 429], "{statuses:?}");
        ensure!(
            upstream.take_requests().len() == 3,
            "the 429s reached the upstream"
        );
        let last = last.context("no response")?;
        let h = |n| header(&last.headers, n).map(str::to_string);
        // login: 3 per minute, one token every 20 s; the clock moved a little since the first.
        let retry: u64 = h("retry-after").context("no retry-after")?.parse()?;
        ensure!((19..=20).contains(&retry), "retry-after {retry}");
        ensure!(
            h("ratelimit-policy").as_deref() == Some("\"per-ip\";q=10;w=1, \"login\";q=3;w=60"),
            "{:?}",
            last.headers
        );
        let state = h("ratelimit").context("no ratelimit header")?;
        ensure!(
            state.starts_with("\"per-ip\";r=")
                && state.ends_with(&format!("\"login\";r=0;t={retry}")),
            "{state}"
        );
        ensure!(
            last.body == b"rate limited\n",
            "{:?}",
            String::from_utf8_lossy(&last.body)
        );

        // Shadow: /search is never refused, the would-be 429s are counted.
        for _ in 0..25 {
            let response = client::send(envoy.listener(), &get("/search?q=x"))?;
            ensure!(
                response.status == 200,
                "shadow refused: {}",
                response.status
            );
            ensure!(header(&response.headers, "ratelimit").is_none());
        }
        let text = prometheus(&envoy)?;
        ensure!(metric_line(&text, "login", "allowed") == Some(3));
        ensure!(metric_line(&text, "login", "limited") == Some(2));
        // per-ip: 20 burst, 10 per second: 5 logins + 25 searches in a few hundred ms.
        let shadow = metric_line(&text, "per-ip", "shadow_limited").unwrap_or(0);
        let allowed = metric_line(&text, "per-ip", "allowed").unwrap_or(0);
        ensure!(
            shadow + allowed == 30 && shadow >= 1,
            "per-ip allowed {allowed}, shadow_limited {shadow}"
        );
        let log = envoy.log();
        ensure!(
            log.contains("rate-limit: \"login\" limited 127.0.0.1|/login"),
            "no log line naming the limit and descriptor"
        );
        ensure!(log.contains("rate-limit: \"per-ip\" would limit 127.0.0.1 (shadow)"));
        Ok(())
    })())
}

/// Configurations the filter refuses, and the field each refusal must name.
fn refused() -> Vec<(&'static str, &'static str)> {
    vec![
        (r#"{"limits": []}"#, "at limits"),
        (
            r#"{"limits": [{"name": "a", "key": ["ip"], "max_tokens": 1, "fill_interval_ms": 1}]}"#,
            "limits[0].key[0]",
        ),
        (
            r#"{"limits": [{"name": "a", "key": [], "max_tokens": 0, "fill_interval_ms": 1}]}"#,
            "limits[0].max_tokens",
        ),
        (
            r#"{"limits": [{"name": "a", "key": [], "max_tokens": 1, "fill_interval_ms": 1}], "routes": {"default": {"limits": ["b"]}}}"#,
            "routes.default.limits[0]",
        ),
    ]
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    for (config, field) in refused() {
        let err = match Replay::filter(paths::filter_wasm(FILTER)?)
            .config(config)
            .traffic(Traffic {
                source: None,
                exchanges: Vec::new(),
                warnings: Vec::new(),
            })
            .run()
        {
            Ok(_) => bail!("harness accepted {config}"),
            Err(err) => format!("{err:#}"),
        };
        ensure!(err.contains(field), "harness, {field}: {err}");

        let mut envoy_config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
        envoy_config.set_plugin_configuration(config)?;
        let line = Envoy::refusal(&envoy_config, "rate-limit-refused", FILTER)
            .with_context(|| format!("{field}: {config}"))?;
        ensure!(line.contains(field), "{field}: {line}");
    }
    Ok(())
}
