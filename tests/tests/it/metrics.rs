//! The `metrics` filter (`envoy/metrics/envoy.yaml`) in a real Envoy: after a run of requests
//! on two routes, with several methods and status classes and request and response bodies, a
//! scrape of `/stats/prometheus` finds the counters and the histograms with the labels
//! `route`, `method`, `status_class` and the expected counts and sizes; refused configurations
//! name the field at start-up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::stats;
use tollgate_tests::upstream::{ReceivedRequest, Upstream};
use tollgate_traffic::HttpResponse;

const FILTER: &str = "metrics";

/// `/status/<n>` answers `n`; everything else 200. The body is 11 bytes either way.
fn answer(r: &ReceivedRequest) -> HttpResponse {
    let status = r
        .path
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|n| (200..600).contains(n))
        .unwrap_or(200);
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"hello world".to_vec(),
    }
}

/// One Prometheus sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect();
            Some((name.to_string(), labels, value))
        })
        .collect()
}

fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                && l.keys().filter(|k| *k != "le").count() == labels.len()
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn prometheus_shows_counters_and_histograms_with_route_method_and_status_labels() -> Result<()> {
    let upstream = Upstream::start_with(answer)?;
    let envoy = Envoy::start(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "metrics",
    )?;
    let text = envoy.explain((|| {
        let send = |method: &str, path: &str, body: &[u8]| -> Result<u16> {
            let r = client::request(method, "api.example.com", path, &[], body);
            Ok(client::send(envoy.listener(), &r)?.status)
        };
        for _ in 0..3 {
            ensure!(send("GET", "/orders/1", b"")? == 200, "GET /orders/1");
        }
        for _ in 0..2 {
            ensure!(
                send("POST", "/api/items/status/201", b"hello")? == 201,
                "POST"
            );
        }
        ensure!(send("GET", "/api/fail/status/503", b"")? == 503, "GET 503");
        ensure!(send("PROPFIND", "/api/dav", b"")? == 200, "PROPFIND");
        // Histograms appear once Envoy flushes its stats (every second here).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = stats::prometheus(envoy.admin())?;
            let all = samples(&text);
            let done = find(
                &all,
                "tollgate_duration_ms_count",
                &[
                    ("route", "api"),
                    ("method", "other"),
                    ("status_class", "2xx"),
                ],
            ) == Some(1.0);
            if done {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "no flushed histograms after 15 s: {:?}",
                    text.lines()
                        .filter(|l| l.starts_with("tollgate_"))
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })())?;
    let all = samples(&text);
    let show = || {
        text.lines()
            .filter(|l| l.starts_with("tollgate_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (labels, count) in [
        (
            [
                ("route", "orders"),
                ("method", "GET"),
                ("status_class", "2xx"),
            ],
            3.0,
        ),
        (
            [
                ("route", "api"),
                ("method", "POST"),
                ("status_class", "2xx"),
            ],
            2.0,
        ),
        (
            [("route", "api"), ("method", "GET"), ("status_class", "5xx")],
            1.0,
        ),
        (
            [
                ("route", "api"),
                ("method", "other"),
                ("status_class", "2xx"),
            ],
            1.0,
        ),
    ] {
        ensure!(
            find(&all, "tollgate_requests", &labels) == Some(count),
            "tollgate_requests{labels:?} != {count}:\n{}",
            show()
        );
        ensure!(
            find(&all, "tollgate_duration_ms_count", &labels) == Some(count),
            "tollgate_duration_ms_count{labels:?}:\n{}",
            show()
        );
        ensure!(
            find(&all, "tollgate_response_bytes_count", &labels) == Some(count),
            "tollgate_response_bytes_count{labels:?}:\n{}",
            show()
        );
        // Envoy's histogram sums are approximate (bucketed): 11 bytes per response, within 10%.
        let sum =
            find(&all, "tollgate_response_bytes_sum", &labels).context("no response_bytes_sum")?;
        ensure!(
            (sum - 11.0 * count).abs() <= 1.1 * count,
            "response bytes sum {sum} for {labels:?}"
        );
    }
    let post = [("route", "api"), ("method", "POST")];
    ensure!(
        find(&all, "tollgate_request_bytes_count", &post) == Some(2.0),
        "request_bytes_count:\n{}",
        show()
    );
    let sum = find(&all, "tollgate_request_bytes_sum", &post).context("no request_bytes_sum")?;
    ensure!(
        (sum - 10.0).abs() <= 1.0,
        "request bytes sum {sum} (2 x 5 bytes)"
    );
    ensure!(
        all.iter()
            .any(|(n, l, _)| n == "tollgate_duration_ms_bucket"
                && l.get("le").is_some()
                && l.get("route").map(String::as_str) == Some("orders")),
        "no duration buckets:\n{}",
        show()
    );
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start_with(answer)?;
    Envoy::refusals_name_the_field(
        FILTER,
        upstream.addr(),
        &[
            (r#"{"prefix": "Bad-Name"}"#, "prefix"),
            (r#"{"methods": ["get"]}"#, "methods[0]"),
            (
                r#"{"path_routes": [{"prefix": "orders", "name": "o"}]}"#,
                "path_routes[0].prefix",
            ),
            (
                r#"{"routes": {"routes": [{"match": {"route": "api"}, "config": {"label": "a.b"}}]}}"#,
                "routes.routes[0].config.label",
            ),
        ],
    )
}

/// The demo's per-route rules in a real Envoy: `/healthz` is not measured, `/api/v2/` on the
/// route named `api` (Envoy's route name reaching the filter) is labelled `api-v2`, the rest of
/// `api` keeps the route's name.
#[test]
fn per_route_rules_label_or_skip_requests_in_envoy() -> Result<()> {
    let upstream = Upstream::start_with(answer)?;
    let envoy = Envoy::start(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "metrics-routes",
    )?;
    let text = envoy.explain((|| {
        let send = |path: &str| -> Result<u16> {
            let r = client::request("GET", "api.example.com", path, &[], b"");
            Ok(client::send(envoy.listener(), &r)?.status)
        };
        for path in [
            "/healthz",
            "/healthz/ready",
            "/api/v2/items",
            "/api/v2/items/status/404",
            "/api/v1/items",
        ] {
            ensure!(send(path)? != 0, "{path}");
        }
        stats::prometheus(envoy.admin())
    })())?;
    let all = samples(&text);
    let show = || {
        text.lines()
            .filter(|l| l.starts_with("tollgate_requests"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (route, class, count) in [
        ("api-v2", "2xx", 1.0),
        ("api-v2", "4xx", 1.0),
        ("api", "2xx", 1.0),
    ] {
        let labels = [("route", route), ("method", "GET"), ("status_class", class)];
        ensure!(
            find(&all, "tollgate_requests", &labels) == Some(count),
            "tollgate_requests{labels:?} != {count}:\n{}",
            show()
        );
    }
    let counted: f64 = all
        .iter()
        .filter(|(n, _, _)| n == "tollgate_requests")
        .map(|(_, _, v)| v)
        .sum();
    ensure!(counted == 3.0, "/healthz was counted:\n{}", show());
    Ok(())
}
