//! Native tests of the filter: every source, every refusal, hiding keys, per-route policies,
//! configuration errors and the metrics.

use tollgate_sdk::metrics::{mock, stat_name};
use tollgate_sdk::{ConfigError, HeaderList, LocalReply};

use crate::config::METRIC;
use crate::{KeyAuthConfig, KeyAuthFilter};

/// Keys: payments-provider "tg_demo_partner_7c1e9a4f", ops "tg_demo_ops_2b8d5e60".
const DEMO: &str = include_str!("../demo.json");
const PARTNER: &str = "tg_demo_partner_7c1e9a4f";
const OPS: &str = "tg_demo_ops_2b8d5e60";
const API: (&str, &str) = (":authority", "api.example.com");
const HOOK: (&str, &str) = (":path", "/v1/webhooks/payments");

fn config(json: &str) -> Result<KeyAuthConfig, ConfigError> {
    tollgate_sdk::config::parse::<KeyAuthConfig>(json.as_bytes())
}

fn run(
    json: &str,
    route: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<(HeaderList, Option<LocalReply>), ConfigError> {
    tollgate_sdk::testing::run_request_headers::<KeyAuthFilter>(json, route, headers)
}

fn status(reply: &Option<LocalReply>) -> Option<u16> {
    reply.as_ref().map(|r| r.status)
}

fn count(result: &str, reason: &str) -> i64 {
    mock::value(&stat_name(
        METRIC,
        &[("result", result), ("reason", reason)],
    ))
    .unwrap_or(-1)
}

#[test]
fn key_from_each_source_is_accepted_and_hidden() -> Result<(), ConfigError> {
    let (h, reply) = run(
        DEMO,
        None,
        &[API, HOOK, ("x-api-key", PARTNER), ("x-consumer", "ops")],
    )?;
    assert_eq!(reply, None);
    assert!(h.get_all("x-api-key").is_empty());
    assert_eq!(h.get_all("x-consumer"), vec!["payments-provider"]);

    let path = format!("/v1/webhooks/payments?a=1&api_key={PARTNER}&b=2");
    let (h, reply) = run(DEMO, None, &[API, (":path", &path)])?;
    assert_eq!(reply, None);
    assert_eq!(h.get_all(":path"), vec!["/v1/webhooks/payments?a=1&b=2"]);

    let cookie = format!("session=s1; api_key={PARTNER}; theme=dark");
    let (h, reply) = run(DEMO, None, &[API, HOOK, ("cookie", &cookie)])?;
    assert_eq!(reply, None);
    assert_eq!(h.get_all("cookie"), vec!["session=s1; theme=dark"]);
    let only = format!("api_key={PARTNER}");
    let (h, _) = run(DEMO, None, &[API, HOOK, ("cookie", &only)])?;
    assert!(h.get_all("cookie").is_empty());
    assert_eq!(count("allowed", "ok"), 4);
    Ok(())
}

#[test]
fn missing_is_401_with_challenge_unknown_is_403() -> Result<(), ConfigError> {
    let (h, reply) = run(DEMO, None, &[API, HOOK, ("x-consumer", "spoof")])?;
    assert_eq!(status(&reply), Some(401));
    assert!(reply.is_some_and(|r| r.headers.contains(&(
        "www-authenticate".into(),
        "ApiKey realm=\"api.example.com\"".into()
    ))));
    assert!(h.get_all("x-consumer").is_empty());
    for empty in ["", "   "] {
        let (_, reply) = run(DEMO, None, &[API, HOOK, ("x-api-key", empty)])?;
        assert_eq!(status(&reply), Some(401), "{empty:?}");
    }
    let (_, reply) = run(
        DEMO,
        None,
        &[API, HOOK, ("x-api-key", "tg_demo_partner_7c1e9a4F")],
    )?;
    assert_eq!(status(&reply), Some(403));
    let (_, reply) = run(DEMO, None, &[API, HOOK, ("X-API-KEY", PARTNER)])?;
    assert_eq!(status(&reply), None, "header names are case-insensitive");
    assert_eq!(count("denied", "missing"), 3);
    assert_eq!(count("denied", "unknown_key"), 1);
    Ok(())
}

#[test]
fn ambiguous_or_oversized_keys_are_401() -> Result<(), ConfigError> {
    let huge = "k".repeat(5000);
    let twice = format!("/v1/webhooks/x?api_key={PARTNER}&api_key={OPS}");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![API, HOOK, ("x-api-key", PARTNER), ("x-api-key", PARTNER)],
        vec![API, HOOK, ("x-api-key", PARTNER), ("X-Api-Key", OPS)],
        vec![API, HOOK, ("x-api-key", &huge)],
        vec![API, (":path", &twice)],
        vec![API, (":path", "/v1/webhooks/x?api_key=%zz")],
    ];
    for headers in &cases {
        let (_, reply) = run(DEMO, None, headers)?;
        assert_eq!(status(&reply), Some(401), "{headers:?}");
    }
    assert_eq!(count("denied", "malformed"), 5);
    Ok(())
}

#[test]
fn header_source_wins_over_query() -> Result<(), ConfigError> {
    // The first source present decides: a wrong header key is not rescued by a good query key.
    let path = format!("/v1/webhooks/x?api_key={PARTNER}");
    let (_, reply) = run(DEMO, None, &[API, (":path", &path), ("x-api-key", "nope")])?;
    assert_eq!(status(&reply), Some(403));
    Ok(())
}

#[test]
fn per_route_consumers() -> Result<(), ConfigError> {
    // ops has a valid key, but webhooks admit only payments-provider.
    let (h, reply) = run(DEMO, None, &[API, HOOK, ("x-api-key", OPS)])?;
    assert_eq!(status(&reply), Some(403));
    assert!(h.get_all("x-consumer").is_empty());
    // The "admin" Envoy route admits only ops.
    let admin = (":path", "/admin/");
    let (_, reply) = run(DEMO, Some("admin"), &[API, admin, ("x-api-key", PARTNER)])?;
    assert_eq!(status(&reply), Some(403));
    let (h, reply) = run(DEMO, Some("admin"), &[API, admin, ("x-api-key", OPS)])?;
    assert_eq!(reply, None);
    assert_eq!(h.get_all("x-consumer"), vec!["ops"]);
    // Elsewhere: skipped, but keys are still hidden and the consumer header removed.
    let path = format!("/v1/products?api_key={OPS}");
    let (h, reply) = run(DEMO, None, &[API, (":path", &path), ("x-consumer", "ops")])?;
    assert_eq!(reply, None);
    assert_eq!(h.get_all(":path"), vec!["/v1/products"]);
    assert!(h.get_all("x-consumer").is_empty());
    assert_eq!(count("allowed", "skipped"), 1);
    assert_eq!(count("denied", "forbidden"), 2);
    Ok(())
}

#[test]
fn keys_stay_when_not_hidden() -> Result<(), ConfigError> {
    let json = r#"{"sources": [{"header": "x-api-key"}],
      "consumers": [{"name": "ops", "key_sha256": "915a4d3f33b47d94898a20586673bc6173874795366505547d77cb9b738ddc94"}]}"#;
    let (h, reply) = run(json, None, &[(":path", "/"), ("x-api-key", OPS)])?;
    assert_eq!(reply, None);
    assert_eq!(h.get_all("x-api-key"), vec![OPS]);
    let (_, reply) = run(json, None, &[(":path", "/")])?;
    assert_eq!(
        status(&reply),
        Some(401),
        "no rules: every route needs a key"
    );
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    let err = |json: &str| match config(json) {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    };
    let c = r#"{"name": "a", "key_sha256": "915a4d3f33b47d94898a20586673bc6173874795366505547d77cb9b738ddc94"}"#;
    assert!(err(r#"{"sources": [{"header": "x"}], "consumers": [{"name": "a", "key_sha256": "plain-key"}]}"#)
        .starts_with("bad configuration at consumers[0].key_sha256: expected 64 hex digits"));
    assert!(err(&format!(r#"{{"sources": [], "consumers": [{c}]}}"#)).contains("at sources"));
    assert!(
        err(&format!(
            r#"{{"sources": [{{"body": "k"}}], "consumers": [{c}]}}"#
        ))
        .contains("sources[0]")
    );
    assert!(
        err(&format!(
            r#"{{"sources": [{{"query": "a b"}}], "consumers": [{c}]}}"#
        ))
        .contains("sources[0]")
    );
    assert!(
        err(&format!(
            r#"{{"sources": [{{"header": ":path"}}], "consumers": [{c}]}}"#
        ))
        .contains("sources[0].header")
    );
    let c2 = c.replace("\"a\"", "\"b\"");
    assert!(
        err(&format!(
            r#"{{"sources": [{{"header": "x"}}], "consumers": [{c}, {c2}]}}"#
        ))
        .contains("consumers[1].key_sha256: the same key")
    );
    assert!(err(&format!(
        r#"{{"sources": [{{"header": "x"}}], "consumers": [{c}], "rules": {{"routes": [{{"match": {{"route": "r"}}, "config": {{"allow": ["zz"]}}}}]}}}}"#
    ))
    .contains("rules.routes[0].config.allow[0]"));
}

#[test]
fn envoy_and_istio_files_carry_demo_json() -> Result<(), Box<dyn std::error::Error>> {
    let demo: serde_json::Value = serde_json::from_str(DEMO)?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/key-auth");
    let envoy: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root.join("envoy.yaml"))?)?;
    let text = envoy.pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/0/typed_config/config/configuration/value")
        .and_then(|v| v.as_str())
        .ok_or("no wasm configuration in envoy.yaml")?;
    assert_eq!(serde_json::from_str::<serde_json::Value>(text)?, demo);
    let istio: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root.join("wasmplugin.yaml"))?)?;
    assert_eq!(istio["spec"]["pluginConfig"], demo);
    Ok(())
}
