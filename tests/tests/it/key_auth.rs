//! The `key-auth` filter with its demo configuration (`filters/key-auth/demo.json`):
//! - keys from a header, a query parameter and a cookie through a real Envoy
//!   (`envoy/key-auth/envoy.yaml`): admitted, hidden from the upstream, consumer forwarded;
//! - attacks (missing, empty, unknown, duplicated, oversized keys, a consumer on a route it is
//!   not admitted to, by path and by Envoy route name): 401/403 and nothing at the upstream,
//!   in Envoy and in the harness;
//! - the tagged counters as labels on Envoy's `/stats/prometheus`;
//! - the demo recording through the harness.

use anyhow::{Context, Result, ensure};
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::{header, header_values};
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, har};

const FILTER: &str = "key-auth";
const API: &str = "api.example.com";
const PARTNER: &str = "tg_demo_partner_7c1e9a4f";
const OPS: &str = "tg_demo_ops_2b8d5e60";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

fn envoy_config(upstream: &Upstream) -> Result<EnvoyConfig> {
    EnvoyConfig::for_filter(FILTER, upstream.addr())
}

struct Attack {
    what: &'static str,
    request: HttpRequest,
    status: u16,
    reason: &'static str,
    /// Whether the harness sees it the same way (it has no Envoy route names).
    in_harness: bool,
}

fn attacks() -> Vec<Attack> {
    let hook = |headers: &[(&str, &str)]| {
        client::request("POST", API, "/v1/webhooks/payments", headers, b"{}")
    };
    let huge = "k".repeat(5000);
    let attack = |what, request, status, reason| Attack {
        what,
        request,
        status,
        reason,
        in_harness: true,
    };
    vec![
        attack("no key", hook(&[]), 401, "missing"),
        attack("empty key", hook(&[("x-api-key", "")]), 401, "missing"),
        attack(
            "whitespace key",
            hook(&[("x-api-key", "   ")]),
            401,
            "missing",
        ),
        attack(
            "empty query key",
            client::request("GET", API, "/v1/events?api_key=", &[], b""),
            401,
            "missing",
        ),
        attack(
            "unknown key",
            hook(&[("x-api-key", "tg_demo_guess")]),
            403,
            "unknown_key",
        ),
        attack(
            "key in another case",
            hook(&[("x-api-key", &PARTNER.to_uppercase())]),
            403,
            "unknown_key",
        ),
        attack(
            "two key headers",
            hook(&[("x-api-key", PARTNER), ("X-Api-Key", OPS)]),
            401,
            "malformed",
        ),
        attack(
            "oversized key",
            hook(&[("x-api-key", &huge)]),
            401,
            "malformed",
        ),
        attack(
            "two query keys",
            client::request(
                "GET",
                API,
                &format!("/v1/events?api_key={PARTNER}&api_key={OPS}"),
                &[],
                b"",
            ),
            401,
            "malformed",
        ),
        attack(
            "bad percent-encoding",
            client::request("GET", API, "/v1/events?api_key=%zz", &[], b""),
            401,
            "malformed",
        ),
        attack(
            "consumer not admitted on the path",
            hook(&[("x-api-key", OPS)]),
            403,
            "forbidden",
        ),
        Attack {
            what: "consumer not admitted on the Envoy route named admin",
            request: client::request(
                "GET",
                "shop.example.com",
                "/admin/",
                &[("x-api-key", PARTNER)],
                b"",
            ),
            status: 403,
            reason: "forbidden",
            in_harness: false,
        },
    ]
}

#[test]
fn keys_are_checked_hidden_and_counted_in_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = Envoy::start(&envoy_config(&upstream)?, "key-auth")?;
    let attacks = attacks();
    envoy.explain((|| {
        for attack in &attacks {
            let response = client::send(envoy.listener(), &attack.request)?;
            ensure!(
                response.status == attack.status,
                "{}: status {}",
                attack.what,
                response.status
            );
            if attack.status == 401 {
                ensure!(
                    header(&response.headers, "www-authenticate")
                        == Some("ApiKey realm=\"api.example.com\""),
                    "{}: {:?}",
                    attack.what,
                    response.headers
                );
            }
            let reached = upstream.take_requests();
            ensure!(reached.is_empty(), "{}: reached the upstream", attack.what);
        }

        // Admitted: header, query parameter, cookie; each hidden, consumer forwarded.
        let admitted = [
            client::request(
                "POST",
                API,
                "/v1/webhooks/payments",
                &[("x-api-key", PARTNER), ("x-consumer", "ops")],
                b"{}",
            ),
            client::request(
                "POST",
                API,
                &format!("/v1/webhooks/payments?a=1&api_key={PARTNER}&b=2"),
                &[],
                b"{}",
            ),
            client::request(
                "POST",
                API,
                "/v1/webhooks/payments",
                &[("cookie", &format!("s=1; api_key={PARTNER}; t=2"))],
                b"{}",
            ),
            client::request(
                "GET",
                "shop.example.com",
                "/admin/",
                &[("x-api-key", OPS)],
                b"",
            ),
        ];
        let mut received = Vec::new();
        for request in &admitted {
            let response = client::send(envoy.listener(), request)?;
            ensure!(
                response.status == 200,
                "{} {}: status {}",
                request.method,
                request.path,
                response.status
            );
            let mut got = upstream.take_requests();
            ensure!(
                got.len() == 1,
                "{}: reached the upstream {} times",
                request.path,
                got.len()
            );
            received.push(got.remove(0));
        }
        ensure!(
            header(&received[0].headers, "x-api-key").is_none(),
            "header key not hidden"
        );
        ensure!(
            header_values(&received[0].headers, "x-consumer") == ["payments-provider"],
            "{:?}",
            received[0].headers
        );
        ensure!(
            received[1].path == "/v1/webhooks/payments?a=1&b=2",
            "query key not hidden: {}",
            received[1].path
        );
        ensure!(
            header_values(&received[2].headers, "cookie") == ["s=1; t=2"],
            "cookie key not hidden: {:?}",
            received[2].headers
        );
        ensure!(
            header_values(&received[3].headers, "x-consumer") == ["ops"],
            "admin route: {:?}",
            received[3].headers
        );

        let text = stats::prometheus(envoy.admin())?;
        for (result, reason) in [
            ("denied", "missing"),
            ("denied", "malformed"),
            ("denied", "unknown_key"),
            ("denied", "forbidden"),
            ("allowed", "ok"),
        ] {
            let expected = if result == "allowed" {
                admitted.len()
            } else {
                attacks.iter().filter(|a| a.reason == reason).count()
            };
            let line =
                format!("key_auth_requests{{result=\"{result}\",reason=\"{reason}\"}} {expected}");
            ensure!(
                text.lines().any(|l| l == line),
                "/stats/prometheus has no line {line:?}; key_auth lines: {:?}",
                text.lines()
                    .filter(|l| l.contains("key_auth_requests"))
                    .collect::<Vec<_>>()
            );
        }
        Ok(())
    })())?;

    let harness_attacks: Vec<&Attack> = attacks.iter().filter(|a| a.in_harness).collect();
    let exchanges = harness_attacks
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
    for (attack, exchange) in harness_attacks.iter().zip(&report.exchanges) {
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
    }
    Ok(())
}

/// The demo recording through the harness: the webhook and the events call carry no key and
/// are refused with 401; everything else is on skipped routes and passes.
#[test]
fn demo_traffic_in_the_harness() -> Result<()> {
    let traffic = har::load(&paths::root().join("traffic/demo.har"))?;
    let paths_by_id: Vec<(String, String)> = traffic
        .exchanges
        .iter()
        .map(|e| (e.id.clone(), e.request.path.clone()))
        .collect();
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .traffic(traffic)
        .run()?;
    let summary = report.summary();
    ensure!(
        summary.failed == 0 && summary.requests == paths_by_id.len(),
        "{summary:?}"
    );
    let mut refused = Vec::new();
    for exchange in &report.exchanges {
        match exchange.verdict {
            Verdict::AnsweredLocally { status } => {
                ensure!(status == 401, "{}: {status}", exchange.id);
                ensure!(exchange.upstream_request.is_none());
                let path = paths_by_id
                    .iter()
                    .find(|(id, _)| *id == exchange.id)
                    .map(|(_, p)| p.clone());
                refused.push(path.context("unknown exchange id")?);
            }
            Verdict::Passed => {}
            ref other => anyhow::bail!("{}: unexpected verdict {other:?}", exchange.id),
        }
    }
    ensure!(
        refused == ["/v1/events", "/v1/webhooks/payments"],
        "refused: {refused:?}"
    );
    Ok(())
}
