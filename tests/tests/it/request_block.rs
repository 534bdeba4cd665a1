//! The `request-block` filter with its demo configuration (`envoy/request-block/envoy.yaml`):
//! - every bypass attempt of `filters/request-block/tests/bypass.tsv` (encoded dots and slashes,
//!   double encoding, `//`, mixed case, overlong UTF-8, `;params`, `%u`, backslashes, NUL) through
//!   a real Envoy: 403, never at the upstream, a log line naming the expected rule; then the same
//!   requests in the harness (the same 403s);
//! - header values and a chunked body in Envoy; ordinary requests reach the upstream unchanged;
//! - refused configurations name the field at start-up in Envoy.

use anyhow::{Context, Result, ensure};
use tollgate_replay::Verdict;
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse};

const FILTER: &str = "request-block";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

fn attempts() -> Result<Vec<(String, String)>> {
    let file = paths::root().join("filters/request-block/tests/bypass.tsv");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("could not read {}", file.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect())
}

fn get(path: &str) -> HttpRequest {
    client::request("GET", "api.example.com", path, &[], b"")
}

#[test]
fn bypass_attempts_are_blocked_in_envoy_and_in_the_harness() -> Result<()> {
    let attempts = attempts()?;
    ensure!(attempts.len() >= 30, "{} attempts", attempts.len());
    let upstream = Upstream::start(ok_response())?;
    let envoy = Envoy::start(&EnvoyConfig::for_filter(FILTER, upstream.addr())?, FILTER)?;
    envoy.explain((|| {
        let mut problems = Vec::new();
        for (path, rule) in &attempts {
            let response = client::send(envoy.listener(), &get(path))?;
            let reached = !upstream.take_requests().is_empty();
            eprintln!(
                "{path:<45} {} {}",
                response.status,
                if reached { "REACHED" } else { "" }
            );
            if response.status != 403 || reached || response.body != b"blocked by policy\n" {
                problems.push(format!("{path}: {} reached={reached}", response.status));
            }
            let _ = rule;
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        // Each rule is named in the log, once per attempt it blocked.
        let log = envoy.log();
        for rule in ["admin", "dotfiles", "traversal", "sqli"] {
            let expected = attempts.iter().filter(|(_, r)| r == rule).count();
            let logged = log
                .matches(&format!("request-block: blocked by rule {rule} (headers)"))
                .count();
            ensure!(
                logged == expected,
                "rule {rule}: {logged} log lines, {expected} attempts"
            );
        }
        // Header values and a body.
        let scanner = client::request(
            "GET",
            "api.example.com",
            "/",
            &[("user-agent", "sqlmap/1.7")],
            b"",
        );
        let response = client::send(envoy.listener(), &scanner)?;
        ensure!(response.status == 403, "user-agent: {}", response.status);
        let post = client::request(
            "POST",
            "api.example.com",
            "/comment",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"text=hello+%3CScRiPt%3Ealert(1)",
        );
        let response = client::send(envoy.listener(), &post)?;
        ensure!(response.status == 403, "body: {}", response.status);
        ensure!(
            envoy
                .log()
                .contains("request-block: blocked by rule script-body (body)")
        );
        ensure!(
            upstream.take_requests().is_empty(),
            "a blocked request reached the upstream"
        );
        // Ordinary requests reach the upstream, path untouched.
        for path in [
            "/shop/administration-guide",
            "/public/admin",
            "/search?q=union%20station",
            "/a%2fb",
        ] {
            let response = client::send(envoy.listener(), &get(path))?;
            ensure!(response.status == 200, "{path}: {}", response.status);
            let seen = upstream.take_requests();
            ensure!(
                seen.iter().any(|r| r.path == path),
                "{path}: the upstream saw {:?}",
                seen.iter().map(|r| &r.path).collect::<Vec<_>>()
            );
        }
        let harmless = client::request(
            "POST",
            "api.example.com",
            "/comment",
            &[],
            b"text=hello+world",
        );
        let response = client::send(envoy.listener(), &harmless)?;
        ensure!(response.status == 200, "harmless body: {}", response.status);
        let seen = upstream.take_requests();
        ensure!(
            seen.iter().any(|r| r.body == b"text=hello+world"),
            "body not forwarded whole"
        );
        Ok(())
    })())?;

    // The harness: the same attempts, the same 403s.
    let exchanges = attempts
        .iter()
        .map(|(path, _)| Exchange {
            id: path.clone(),
            request: get(path),
            response: Some(ok_response()),
            details: tollgate_traffic::ExchangeDetails::default(),
        })
        .collect();
    let report = demo::replay(FILTER, exchanges)?;
    for exchange in &report.exchanges {
        ensure!(
            matches!(exchange.verdict, Verdict::AnsweredLocally { status: 403 }),
            "harness, {}: {:?}",
            exchange.id,
            exchange.verdict
        );
    }
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    for (config, field) in [
        (
            r#"{"rules": [{"name": "a", "path": {"regex": "(a"}}]}"#,
            "rules[0].path.regex",
        ),
        (
            r#"{"rules": [{"name": "a", "header": "x-a"}]}"#,
            "rules[0].value",
        ),
        (
            r#"{"rules": [{"name": "a", "path": {"prefix": "/"}}], "max_body_bytes": 99999999}"#,
            "max_body_bytes",
        ),
    ] {
        let mut envoy_config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
        envoy_config.set_plugin_configuration(config)?;
        let line = Envoy::refusal(&envoy_config, "request-block-refused", FILTER)
            .with_context(|| format!("{field}: {config}"))?;
        ensure!(line.contains(field), "{field}: {line}");
    }
    Ok(())
}
