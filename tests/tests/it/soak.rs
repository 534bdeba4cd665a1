//! Soak: a bounded run through the full chain (`envoy/chain/envoy.yaml`: every
//! filter, its JWKS, its authorization service) in the real Envoy, at a fixed
//! concurrency on 127.0.0.1. Every request is one the configuration answers
//! with 200, 401 or 403; any other status (a 5xx above all: a
//! `wasm_fail_stream`) fails the run, and so does Envoy's resident memory
//! growing after warm-up (sampled from `/proc/<pid>/status`).
//!
//! CI-sized by default (`TOLLGATE_SOAK_REQUESTS`, 4,000 requests); the full
//! run of the README's Reliability section:
//! `TOLLGATE_SOAK_REQUESTS=200000 cargo test --workspace --test it soak -- --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::Client;
use tollgate_tests::jwt::{self, Issuer};
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::HttpResponse;

/// Concurrent connections (keep-alive), each sending its share in turn.
const CONCURRENCY: usize = 4;

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    h.push(("content-length".into(), body.len().to_string()));
    HttpResponse {
        status,
        headers: h,
        body: body.as_bytes().to_vec(),
    }
}

/// Envoy's resident memory, KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// The requests the soak cycles through, with the status the chain's
/// configuration calls for.
fn mix(issuer: &Issuer) -> Vec<(tollgate_traffic::HttpRequest, u16)> {
    let mut claims = jwt::claims("https://idp.example.com", "shop-api");
    claims["scope"] = json!("orders:read");
    let bearer = format!("Bearer {}", issuer.token(&claims));
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "demo-client:demo-secret-do-not-use"
        )
    );
    let req = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        tollgate_tests::client::request(
            if body.is_empty() { "GET" } else { "POST" },
            "api.example.com",
            path,
            headers,
            body,
        )
    };
    vec![
        (req("/public/status", &[], b""), 200),
        (req("/api/orders", &[("authorization", &bearer)], b""), 200),
        (
            req(
                "/api/orders",
                &[("authorization", &bearer)],
                b"{\"item\": 1}",
            ),
            200,
        ),
        (
            req(
                "/api/orders",
                &[("authorization", "Bearer not.a.token")],
                b"",
            ),
            401,
        ),
        (
            req(
                "/partner/hooks",
                &[("x-api-key", "tg_demo_partner_7c1e9a4f")],
                b"",
            ),
            200,
        ),
        (
            req("/partner/hooks", &[("x-api-key", "tg_demo_guess")], b""),
            403,
        ),
        (req("/admin/users", &[("authorization", &basic)], b""), 200),
        (req("/admin/users", &[], b""), 401),
    ]
}

#[test]
fn the_chain_soaks_in_envoy_without_5xx_or_memory_growth() -> Result<()> {
    let total: usize = std::env::var("TOLLGATE_SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let issuer = Issuer::es256("soak")?;
    let upstream = Upstream::start(response(200, &[("content-type", "text/plain")], "origin"))?;
    let authz = Upstream::start(response(200, &[("x-auth-user", "authz-approved")], ""))?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("chain"))?;
    let filters = config
        .value()
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let jwt_text = filters
        .iter()
        .find(|f| {
            f.pointer("/typed_config/config/name")
                .and_then(Value::as_str)
                == Some("jwt-auth")
        })
        .and_then(|f| f.pointer("/typed_config/config/configuration/value"))
        .and_then(Value::as_str)
        .context("the chain has no jwt-auth configuration")?;
    let mut jwt_config: Value = serde_json::from_str(jwt_text)?;
    *jwt_config
        .pointer_mut("/providers/0/jwks")
        .context("no inline jwks to rewrite")? = jwt::jwks(&[&issuer]);
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("authz", authz.addr())?
        .set_named_plugin_configuration("jwt-auth", &jwt_config.to_string())?;
    // The soak comes from one address: the chain's per-address rate limit (100 a minute)
    // would answer 429 after the first hundred; the soak keeps the filter, with a limit it
    // never reaches, so every request still runs through it.
    config.set_named_plugin_configuration(
        "rate-limit",
        r#"{"limits": [{"name": "per-ip", "key": ["source_ip"], "max_tokens": 1000000000, "fill_interval_ms": 1000}]}"#,
    )?;
    config.use_filters_from(&paths::filters_dir()?)?;
    let envoy = Envoy::start(&config, "soak")?;
    let pid = envoy.pid().context("Envoy runs as a local process")?;
    let listener = envoy.listener();
    let requests = Arc::new(mix(&issuer));

    let warmup = (total / 5).max(requests.len());
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut rss_after_warmup = None;
    let mut rss_peak = 0u64;
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (requests, sent) = (requests.clone(), sent.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut client = Client::new(listener, Duration::from_secs(30));
                let mut i = w;
                loop {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok(());
                    }
                    let (req, want) = &requests[i % requests.len()];
                    let (got, _) = client
                        .send(req)
                        .map_err(|e| anyhow::anyhow!("request {n}: {e}"))?;
                    if got.status != *want {
                        bail!(
                            "request {n} ({} {}): status {}, the configuration calls for {want}: {}",
                            req.method,
                            req.path,
                            got.status,
                            String::from_utf8_lossy(&got.body)
                        );
                    }
                    i += CONCURRENCY;
                }
            })
        })
        .collect();
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let rss = rss_kib(pid)?;
        rss_peak = rss_peak.max(rss);
        if rss_after_warmup.is_none() && sent.load(Ordering::Relaxed) >= warmup {
            rss_after_warmup = Some(rss);
        }
    }
    for w in workers {
        envoy.explain(
            w.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?,
        )?;
    }
    let took = started.elapsed();
    let rss_end = rss_kib(pid)?;
    let rss_warm = rss_after_warmup.unwrap_or(rss_end);
    let stats =
        tollgate_envoy::process::admin_get(envoy.admin(), "/stats?filter=downstream_rq_5xx")
            .unwrap_or_default();
    println!(
        "soak: {total} requests at concurrency {CONCURRENCY} in {took:.1?} ({:.0} req/s); Envoy RSS after warm-up {rss_warm} KiB, end {rss_end} KiB, peak {rss_peak} KiB; {}",
        total as f64 / took.as_secs_f64(),
        stats.trim().replace('\n', ", ")
    );
    ensure!(
        !stats
            .lines()
            .any(|l| l.contains("downstream_rq_5xx") && !l.trim_end().ends_with(": 0")),
        "Envoy counted 5xx responses: {stats}"
    );
    // Flat after warm-up: allocator pools may settle, a leak grows with the run.
    let allowed = rss_warm + rss_warm / 10 + 16 * 1024;
    ensure!(
        rss_end <= allowed,
        "Envoy's RSS grew from {rss_warm} KiB after warm-up to {rss_end} KiB (allowed {allowed} KiB)"
    );
    Ok(())
}
