//! The `hmac-auth` filter in a real Envoy and in the harness: requests signed by a client
//! written here (RFC 9421, hmac-sha256, content-digest over the body) are admitted as their
//! consumer; replays (across Envoy's workers: the nonces live in shared data), signatures over
//! another body, altered requests and unsigned ones are refused, in both.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2_next::{Digest, Sha256};
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::http1::header;
use tollgate_tests::launcher::Launcher;
use tollgate_tests::paths;
use tollgate_tests::upstream::{Upstream, text_response};
use tollgate_traffic::{Exchange, HttpRequest, Traffic};

/// The filter under test.
const FILTER: &str = "hmac-auth";
/// The demo's `billing` consumer.
const KEY_ID: &str = "billing-2026";
const SECRET: &[u8] = b"billing-demo-secret-do-not-use-01234567";
const AUTHORITY: &str = "api.example.com";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now_s() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// A POST of `body` to `path`, signed over `signed_body`'s digest (the same, unless a test
/// swaps the body), with `nonce`.
fn signed_request(path: &str, body: &[u8], signed_body: &[u8], nonce: &str) -> Result<HttpRequest> {
    let created = now_s()?;
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let digest = format!("sha-256=:{}:", b64(&Sha256::digest(signed_body)));
    let params = format!(
        "(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\");created={created};keyid=\"{KEY_ID}\";nonce=\"{nonce}\";alg=\"hmac-sha256\""
    );
    let base = format!(
        "\"@method\": POST\n\"@authority\": {AUTHORITY}\n\"@path\": {p}\n\"@query\": ?{q}\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SECRET).context("hmac key")?;
    mac.update(base.as_bytes());
    let signature = format!("sig1=:{}:", b64(&mac.finalize().into_bytes()));
    let input = format!("sig1={params}");
    Ok(client::request(
        "POST",
        AUTHORITY,
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-digest", &digest),
            ("signature-input", &input),
            ("signature", &signature),
            ("x-consumer", "admin"),
        ],
        body,
    ))
}

fn start_envoy(upstream: &Upstream) -> Result<Envoy> {
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?;
    config.use_filters_from(&paths::filters_dir()?)?;
    // Several workers, so several VMs: the nonces must be shared through shared data.
    let launcher = Launcher::from_env()?.with_concurrency(WORKERS);
    match Envoy::launch_with(&launcher, &config, FILTER)? {
        Launch::Ready(envoy) => Ok(envoy),
        Launch::Exited { status, log } => anyhow::bail!("Envoy exited ({status}):\n{log}"),
    }
}

/// Envoy's worker threads in these tests.
const WORKERS: u32 = 4;

/// Connections each worker accepted (admin stats).
fn connections_per_worker(envoy: &Envoy) -> Result<Vec<u64>> {
    let stats = client::send(
        envoy.admin(),
        &client::request(
            "GET",
            "admin",
            "/stats?filter=worker_.*downstream_cx_total",
            &[],
            b"",
        ),
    )?;
    let text = String::from_utf8_lossy(&stats.body).into_owned();
    Ok(text
        .lines()
        .filter(|l| l.starts_with("listener.") && !l.contains("admin"))
        .filter_map(|l| l.rsplit_once(": ").and_then(|(_, n)| n.trim().parse().ok()))
        .collect())
}

#[test]
fn envoy_admits_one_of_many_simultaneous_copies_across_workers() -> Result<()> {
    let upstream = Upstream::start(text_response(b"paid"))?;
    let envoy = start_envoy(&upstream)?;
    envoy.explain((|| {
        for round in 0..3 {
            let body = format!("amount={round}&to=bob");
            let request = signed_request(
                "/pay",
                body.as_bytes(),
                body.as_bytes(),
                &format!("race-{round}"),
            )?;
            let statuses: Vec<u16> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| client::send(envoy.listener(), &request).map(|r| r.status))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
                    })
                    .collect::<Result<Vec<u16>>>()
            })?;
            let admitted = statuses.iter().filter(|s| **s == 200).count();
            let refused = statuses.iter().filter(|s| **s == 401).count();
            ensure!(admitted == 1 && refused == 7, "round {round}: {statuses:?}");
            ensure!(upstream.take_requests().len() == 1, "round {round}");
        }
        let workers = connections_per_worker(&envoy)?;
        ensure!(
            workers.iter().filter(|n| **n > 0).count() >= 2,
            "the connections did not spread over the workers: {workers:?}"
        );
        Ok(())
    })())
}

#[test]
fn envoy_admits_signed_requests_once_and_refuses_forgeries() -> Result<()> {
    let upstream = Upstream::start(text_response(b"paid"))?;
    let envoy = start_envoy(&upstream)?;
    envoy.explain((|| {
        let body = b"amount=10&to=bob";
        let request = signed_request("/pay?currency=eur", body, body, "envoy-1")?;
        let got = client::send(envoy.listener(), &request)?;
        ensure!(got.status == 200 && got.body == b"paid", "{got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(
            header(&ups[0].headers, "x-consumer") == Some("billing"),
            "{ups:?}"
        );
        ensure!(ups[0].body == body, "{ups:?}");

        // The same signed request again, on new connections (so on either worker): refused.
        for attempt in 0..4 {
            let got = client::send(envoy.listener(), &request)?;
            ensure!(got.status == 401, "replay {attempt}: {got:?}");
        }

        // Signed over one body, sent with another.
        let swapped = signed_request("/pay", b"amount=10000&to=eve", body, "envoy-2")?;
        let got = client::send(envoy.listener(), &swapped)?;
        ensure!(got.status == 401, "{got:?}");

        // Altered path; unsigned.
        let mut altered = signed_request("/pay", body, body, "envoy-3")?;
        altered.path = "/refund".into();
        let got = client::send(envoy.listener(), &altered)?;
        ensure!(got.status == 401, "{got:?}");
        let unsigned = client::request("POST", AUTHORITY, "/pay", &[("x-consumer", "admin")], body);
        let got = client::send(envoy.listener(), &unsigned)?;
        ensure!(got.status == 401, "{got:?}");
        ensure!(
            upstream.take_requests().is_empty(),
            "a refused request went upstream"
        );
        Ok(())
    })())
}

#[test]
fn harness_gives_envoys_verdicts() -> Result<()> {
    let body = b"amount=10&to=bob";
    let good = signed_request("/pay?currency=eur", body, body, "harness-1")?;
    let swapped = signed_request("/pay", b"amount=10000&to=eve", body, "harness-2")?;
    let exchanges = [
        ("signed", good.clone()),
        ("replayed", good),
        ("swapped", swapped),
    ]
    .into_iter()
    .map(|(id, request)| Exchange {
        id: id.into(),
        request,
        response: Some(text_response(b"paid")),
        details: Default::default(),
    })
    .collect();
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .clock_unix_nanos(now_s()?.saturating_mul(1_000_000_000))
        .traffic(Traffic {
            source: None,
            exchanges,
            warnings: Vec::new(),
        })
        .run()?;
    let verdicts: Vec<(&str, &Verdict)> = report
        .exchanges
        .iter()
        .map(|e| (e.id.as_str(), &e.verdict))
        .collect();
    ensure!(
        verdicts
            == [
                ("signed", &Verdict::Modified),
                ("replayed", &Verdict::AnsweredLocally { status: 401 }),
                ("swapped", &Verdict::AnsweredLocally { status: 401 }),
            ],
        "{verdicts:?}"
    );
    let up = report.exchanges[0]
        .upstream_request
        .as_ref()
        .context("nothing went upstream")?;
    ensure!(
        header(&up.headers, "x-consumer") == Some("billing"),
        "{up:?}"
    );
    Ok(())
}
