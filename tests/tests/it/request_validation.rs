//! The `request-validation` filter with its demo configuration
//! (`envoy/request-validation/envoy.yaml`), in a real Envoy and in the harness:
//! - a valid order body written whole, byte by byte and in random pieces reaches the upstream
//!   byte for byte with its `content-length`; invalid ones get a 400 problem document naming the
//!   failing JSON Pointers and never reach it; not JSON 400, another content type 415;
//! - the search route's query parameters and headers against their declared types;
//! - the same requests in the harness give the same statuses and problem documents;
//! - refused configurations name the field at start-up.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1;
use tollgate_tests::stats;
use tollgate_tests::trickle::{self, TrickleUpstream, Writes};
use tollgate_traffic::{Exchange, ExchangeDetails, HttpRequest, HttpResponse};

const FILTER: &str = "request-validation";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

fn order(qty: i64, sku: &str) -> Vec<u8> {
    format!(
        r#"{{"customer": {{"id": 7, "email": "ada@example.com"}},
  "items": [{{"sku": "A-0001", "qty": 2}}, {{"sku": "{sku}", "qty": {qty}}}],
  "note": "{}"}}"#,
        "leave at the door ".repeat(20)
    )
    .into_bytes()
}

fn post(content_type: &str, body: &[u8]) -> HttpRequest {
    client::request(
        "POST",
        "shop.example.com",
        "/orders",
        &[("content-type", content_type)],
        body,
    )
}

fn get(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    client::request("GET", "shop.example.com", path, headers, b"")
}

/// Each case: the request, how its body is written, the expected status and failing pointers.
fn cases() -> Vec<(&'static str, HttpRequest, Writes, u16, Vec<&'static str>)> {
    let valid = order(3, "B-0002");
    vec![
        (
            "valid whole",
            post("application/json", &valid),
            Writes::Whole,
            200,
            vec![],
        ),
        (
            "valid 1-byte",
            post("application/json", &valid),
            Writes::Every(1),
            200,
            vec![],
        ),
        (
            "valid random",
            post("application/json", &valid),
            Writes::Sizes(vec![3, 17, 1, 40, 9, 2, 64, 5]),
            200,
            vec![],
        ),
        (
            "two bad items, 1-byte",
            post("application/json", &order(0, "b-2")),
            Writes::Every(1),
            400,
            vec!["/items/1/qty", "/items/1/sku"],
        ),
        (
            "missing and extra members",
            post(
                "application/json",
                br#"{"customer": {"id": 0}, "items": [], "coupon": "X"}"#,
            ),
            Writes::Every(5),
            400,
            vec!["/coupon", "/customer/email", "/customer/id", "/items"],
        ),
        (
            "not JSON",
            post("application/json", b"{\"customer\": "),
            Writes::Whole,
            400,
            vec![""],
        ),
        (
            "text",
            post("text/plain", b"qty=1"),
            Writes::Whole,
            415,
            vec![""],
        ),
        (
            "search ok",
            get(
                "/search?q=shoes&page=2&sort=price",
                &[("x-tenant", "acme-1")],
            ),
            Writes::Whole,
            200,
            vec![],
        ),
        (
            "search bad query",
            get("/search?page=0&sort=size", &[]),
            Writes::Whole,
            400,
            vec!["/q", "/page", "/sort"],
        ),
        (
            "search bad header",
            get("/search?q=a", &[("x-tenant", "Acme!")]),
            Writes::Whole,
            400,
            vec!["/x-tenant"],
        ),
    ]
}

fn pointers(body: &[u8]) -> Result<Vec<String>> {
    let problem: Value = serde_json::from_slice(body)
        .with_context(|| format!("not a problem document: {}", String::from_utf8_lossy(body)))?;
    Ok(problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

#[test]
fn requests_are_validated_in_envoy_and_in_the_harness() -> Result<()> {
    let upstream = TrickleUpstream::start(ok_response(), Writes::Whole)?;
    let envoy = Envoy::start(&EnvoyConfig::for_filter(FILTER, upstream.addr())?, FILTER)?;
    let mut envoy_bodies = Vec::new();
    envoy.explain((|| {
        for (label, request, writes, status, expected) in cases() {
            let response = trickle::send(envoy.listener(), &request, &writes)?;
            let seen = upstream.take_requests();
            ensure!(
                response.status == status,
                "{label}: {} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
            if status == 200 {
                ensure!(seen.len() == 1, "{label}: {} requests upstream", seen.len());
                ensure!(
                    seen[0].body == request.body,
                    "{label}: the body changed on the way"
                );
                if !request.body.is_empty() {
                    ensure!(
                        http1::header(&seen[0].headers, "content-length")
                            == Some(&*request.body.len().to_string()),
                        "{label}: content-length {:?}",
                        seen[0].headers
                    );
                }
            } else {
                ensure!(
                    seen.iter()
                        .all(|r| r.body != request.body || request.body.is_empty()),
                    "{label}: the body reached the upstream"
                );
                ensure!(
                    seen.is_empty() || !request.body.is_empty(),
                    "{label}: reached the upstream"
                );
                ensure!(
                    http1::header(&response.headers, "content-type")
                        == Some("application/problem+json"),
                    "{label}: {:?}",
                    response.headers
                );
                let got = pointers(&response.body)?;
                ensure!(
                    got == expected,
                    "{label}: pointers {got:?}, expected {expected:?}"
                );
            }
            envoy_bodies.push(response.body);
        }
        let stats = stats::prometheus(envoy.admin())?;
        stats::ensure_lines(
            &stats,
            "request_validation",
            &[
                "request_validation_requests{result=\"valid\"} 4",
                "request_validation_requests{result=\"invalid_body\"} 3",
                "request_validation_requests{result=\"invalid_query\"} 1",
                "request_validation_requests{result=\"invalid_headers\"} 1",
                "request_validation_requests{result=\"not_json\"} 1",
            ],
        )?;
        Ok(())
    })())?;
    drop(envoy);

    // The harness: the same requests, chunked as written, the same answers.
    let cases = cases();
    let exchanges = cases
        .iter()
        .map(|(label, request, writes, _, _)| Exchange {
            id: (*label).to_string(),
            request: request.clone(),
            response: Some(ok_response()),
            details: ExchangeDetails {
                request_chunks: writes
                    .split(&request.body)
                    .iter()
                    .map(|p| p.len())
                    .collect(),
                ..ExchangeDetails::default()
            },
        })
        .collect();
    let report = demo::replay(FILTER, exchanges).context("the harness could not replay")?;
    for ((e, (label, _, _, status, _)), envoy_body) in
        report.exchanges.iter().zip(&cases).zip(&envoy_bodies)
    {
        ensure!(
            e.client_response.status == *status,
            "harness {label}: {}",
            e.client_response.status
        );
        if *status != 200 {
            ensure!(
                &e.client_response.body == envoy_body,
                "harness {label}: {} / Envoy: {}",
                String::from_utf8_lossy(&e.client_response.body),
                String::from_utf8_lossy(envoy_body)
            );
        }
        ensure!(
            (e.upstream_request.is_some()) == (*status == 200),
            "harness {label}: upstream reached {}",
            e.upstream_request.is_some()
        );
    }
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = TrickleUpstream::start(ok_response(), Writes::Whole)?;
    for (config, field) in [
        (
            r#"{"default": {"body_schema": {"unevaluatedProperties": false}}}"#,
            "default.body_schema.unevaluatedProperties",
        ),
        (
            r##"{"default": {"body_schema": {"properties": {"a": {"$ref": "#/$defs/nope"}}}}}"##,
            "default.body_schema.properties.a.$ref",
        ),
        (
            r#"{"routes": [{"match": {"path_prefix": "/s"}, "config": {"query_schema": {"properties": {"q": {"pattern": "("}}}}}]}"#,
            "routes[0].config.query_schema.properties.q.pattern",
        ),
    ] {
        let mut envoy_config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
        envoy_config.set_plugin_configuration(config)?;
        let line = Envoy::refusal(&envoy_config, "request-validation-refused", FILTER)
            .with_context(|| format!("{field}: {config}"))?;
        ensure!(line.contains(field), "{field}: {line}");
    }
    Ok(())
}
