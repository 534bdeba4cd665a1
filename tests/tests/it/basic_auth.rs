//! The `basic-auth` filter with its demo configuration (`filters/basic-auth/demo.json`):
//! - in the harness on `traffic/demo.har` (who gets through, what the upstream sees);
//! - attacks (header case and duplicates, empty and whitespace credentials, bad base64, no
//!   colon, huge header, wrong and unknown users) through a real Envoy (`envoy/basic-auth/envoy.yaml`)
//!   and the harness: the right status, the challenge, and nothing at the upstream;
//! - the tagged counters as labels on Envoy's `/stats/prometheus`.

use anyhow::{Context, Result, ensure};
use base64::Engine;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::{header, header_values};
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, har};

const FILTER: &str = "basic-auth";
const API: &str = "api.example.com";
const TOKEN: &str = "/v1/auth/token";

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

fn envoy_config(upstream: &Upstream) -> Result<EnvoyConfig> {
    EnvoyConfig::for_filter(FILTER, upstream.addr())
}

/// One attack: the request, the status expected, and the metric reason it must count as.
struct Attack {
    what: &'static str,
    request: HttpRequest,
    status: u16,
    reason: &'static str,
}

fn attacks() -> Vec<Attack> {
    let good = basic("demo-client:demo-secret-do-not-use");
    let req = |headers: &[(&str, &str)]| client::request("GET", API, TOKEN, headers, b"");
    let huge = format!("Basic {}", "QUFB".repeat(3000));
    let attack = |what, request, status, reason| Attack {
        what,
        request,
        status,
        reason,
    };
    vec![
        attack("no authorization", req(&[]), 401, "missing"),
        attack(
            "empty authorization",
            req(&[("authorization", "")]),
            401,
            "missing",
        ),
        attack(
            "whitespace authorization",
            req(&[("authorization", "   ")]),
            401,
            "missing",
        ),
        attack(
            "scheme only",
            req(&[("authorization", "Basic")]),
            401,
            "malformed",
        ),
        attack(
            "bearer scheme",
            req(&[("authorization", "Bearer abc")]),
            401,
            "malformed",
        ),
        attack(
            "malformed base64",
            req(&[("authorization", "Basic ZGVtby1jbGllbnQ6*!")]),
            401,
            "malformed",
        ),
        attack(
            "missing colon",
            req(&[("authorization", &basic("demo-client"))]),
            401,
            "malformed",
        ),
        attack(
            "empty user",
            req(&[("authorization", &basic(":demo-secret-do-not-use"))]),
            401,
            "malformed",
        ),
        attack(
            "huge header",
            req(&[("authorization", &huge)]),
            401,
            "malformed",
        ),
        attack(
            "two authorization headers",
            req(&[
                ("authorization", &good),
                ("Authorization", &basic("ops:wrong")),
            ]),
            401,
            "malformed",
        ),
        attack(
            "same header twice",
            req(&[("AUTHORIZATION", &good), ("authorization", &good)]),
            401,
            "malformed",
        ),
        attack(
            "wrong password",
            req(&[("authorization", &basic("demo-client:wrong-password"))]),
            401,
            "bad_password",
        ),
        attack(
            "empty password",
            req(&[("authorization", &basic("demo-client:"))]),
            401,
            "bad_password",
        ),
        attack(
            "user name in another case",
            req(&[(
                "authorization",
                &basic("DEMO-CLIENT:demo-secret-do-not-use"),
            )]),
            401,
            "unknown_consumer",
        ),
        attack(
            "unknown user",
            req(&[("authorization", &basic("root:root"))]),
            401,
            "unknown_consumer",
        ),
        attack(
            "consumer not admitted on the route",
            client::request(
                "GET",
                API,
                "/v1/reports/x.csv",
                &[("authorization", &basic("legacy:demo-secret-do-not-use"))],
                b"",
            ),
            403,
            "forbidden",
        ),
        attack(
            "admin path without credentials, slashes doubled",
            client::request("GET", "shop.example.com", "//admin/", &[], b""),
            401,
            "missing",
        ),
    ]
}

fn check_challenge(what: &str, response: &HttpResponse, status: u16) -> Result<()> {
    ensure!(
        response.status == status,
        "{what}: status {} (expected {status})",
        response.status
    );
    if status == 401 {
        ensure!(
            header(&response.headers, "www-authenticate")
                == Some("Basic realm=\"api.example.com\""),
            "{what}: challenge {:?}",
            response.headers
        );
    }
    Ok(())
}

/// Every attack answered by the filter in Envoy, nothing at the upstream, and the same answer
/// from the harness; then the counters on /stats/prometheus.
#[test]
fn attacks_are_refused_in_envoy_and_the_harness_and_counted_with_labels() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = Envoy::start(&envoy_config(&upstream)?, "basic-auth-attacks")?;
    let attacks = attacks();
    envoy.explain((|| {
        for attack in &attacks {
            let response = client::send(envoy.listener(), &attack.request)?;
            check_challenge(&format!("Envoy, {}", attack.what), &response, attack.status)?;
            let reached = upstream.take_requests();
            ensure!(
                reached.is_empty(),
                "{}: {} request(s) reached the upstream",
                attack.what,
                reached.len()
            );
        }
        // A good request, with a spoofed consumer header: forwarded with the verified consumer,
        // without Authorization.
        let good = client::request(
            "POST",
            API,
            TOKEN,
            &[
                (
                    "authorization",
                    &basic("demo-client:demo-secret-do-not-use"),
                ),
                ("x-consumer", "ops"),
            ],
            b"grant_type=client_credentials",
        );
        let response = client::send(envoy.listener(), &good)?;
        ensure!(
            response.status == 200,
            "good credentials: status {}",
            response.status
        );
        let mut reached = upstream.take_requests();
        ensure!(
            reached.len() == 1,
            "good credentials reached the upstream {} times",
            reached.len()
        );
        let received = reached.remove(0);
        ensure!(
            header_values(&received.headers, "x-consumer") == ["demo-client"],
            "{:?}",
            received.headers
        );
        ensure!(
            header(&received.headers, "authorization").is_none(),
            "authorization not stripped"
        );
        ensure!(
            received.body == b"grant_type=client_credentials",
            "body changed"
        );

        let text = stats::prometheus(envoy.admin())?;
        for (result, reason) in [
            ("denied", "missing"),
            ("denied", "malformed"),
            ("denied", "bad_password"),
            ("denied", "unknown_consumer"),
            ("denied", "forbidden"),
            ("allowed", "ok"),
        ] {
            let expected = if result == "allowed" {
                1
            } else {
                attacks.iter().filter(|a| a.reason == reason).count()
            };
            let line = format!(
                "basic_auth_requests{{result=\"{result}\",reason=\"{reason}\"}} {expected}"
            );
            ensure!(
                text.lines().any(|l| l == line),
                "/stats/prometheus has no line {line:?}; basic_auth lines: {:?}",
                text.lines()
                    .filter(|l| l.contains("basic_auth_requests"))
                    .collect::<Vec<_>>()
            );
        }
        Ok(())
    })())?;

    let exchanges = attacks
        .iter()
        .map(|a| Exchange {
            id: a.what.to_string(),
            request: a.request.clone(),
            response: Some(ok_response()),
            details: Default::default(),
        })
        .collect();
    let report =
        demo::replay(FILTER, exchanges).context("the harness could not replay the attacks")?;
    for (attack, exchange) in attacks.iter().zip(&report.exchanges) {
        // Envoy normalises `//admin/` to `/admin/` before the filter; the harness does not, so
        // there the doubled slashes miss the /admin/ rule and the default (skip) applies.
        if attack.request.path.starts_with("//") {
            ensure!(
                exchange.upstream_request.is_some(),
                "harness: {} was expected to pass",
                attack.what
            );
            continue;
        }
        ensure!(
            matches!(exchange.verdict, Verdict::AnsweredLocally { status } if status == attack.status),
            "harness, {}: verdict {:?}",
            attack.what,
            exchange.verdict
        );
        ensure!(
            exchange.upstream_request.is_none(),
            "harness, {}: reached the upstream",
            attack.what
        );
        check_challenge(
            &format!("harness, {}", attack.what),
            &exchange.client_response,
            attack.status,
        )?;
    }
    Ok(())
}

/// The demo recording through the harness: the recorded wrong password and the `/admin/` visit
/// without credentials are refused; the two requests with the right password reach the
/// upstream as `demo-client`, without `Authorization`; everything else passes untouched.
#[test]
fn demo_traffic_in_the_harness() -> Result<()> {
    let traffic = har::load(&paths::root().join("traffic/demo.har"))?;
    let total = traffic.exchanges.len();
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .traffic(traffic)
        .run()?;
    let summary = report.summary();
    ensure!(
        summary.requests == total && summary.failed == 0,
        "{summary:?}"
    );
    ensure!(
        summary.answered_locally == 2,
        "answered locally: {summary:?}"
    );
    ensure!(summary.modified == 2, "modified: {summary:?}");
    let mut consumers = 0;
    let mut refused = Vec::new();
    for exchange in &report.exchanges {
        match &exchange.verdict {
            Verdict::AnsweredLocally { status } => {
                ensure!(*status == 401, "{}: {status}", exchange.id);
                ensure!(exchange.upstream_request.is_none(), "{}", exchange.id);
                refused.push(request_path(&exchange.id)?);
            }
            Verdict::Modified => {
                let up = exchange
                    .upstream_request
                    .as_ref()
                    .context("modified but not forwarded")?;
                ensure!(
                    header_values(&up.headers, "x-consumer") == ["demo-client"],
                    "{}: {:?}",
                    exchange.id,
                    up.headers
                );
                ensure!(
                    header(&up.headers, "authorization").is_none(),
                    "{}",
                    exchange.id
                );
                consumers += 1;
            }
            Verdict::Passed => {}
            Verdict::Failed { message } => anyhow::bail!("{}: {message}", exchange.id),
        }
    }
    ensure!(consumers == 2);
    ensure!(
        refused == ["/admin/", "/v1/auth/token"],
        "refused: {refused:?}"
    );
    Ok(())
}

/// The path of the recorded request with this exchange id.
fn request_path(id: &str) -> Result<String> {
    let traffic = har::load(&paths::root().join("traffic/demo.har"))?;
    traffic
        .exchanges
        .iter()
        .find(|e| e.id == id)
        .map(|e| e.request.path.clone())
        .with_context(|| format!("no exchange {id}"))
}
