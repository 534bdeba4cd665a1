//! Native tests of the filter: configuration errors, every way a request can be refused, the
//! consumer header, per-route policies and the metrics.

use tollgate_sdk::metrics::{mock, stat_name};
use tollgate_sdk::{ConfigError, HeaderList, LocalReply};

use crate::config::METRIC;
use crate::{BasicAuthConfig, BasicAuthFilter};

/// Passwords: demo-client "demo-secret-do-not-use" ({SSHA256}), ops "ops-password"
/// ({SSHA256}), legacy "demo-secret-do-not-use" ({SHA}).
const DEMO: &str = include_str!("../demo.json");

/// `Basic base64(user:password)`.
fn basic(user_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

fn config(json: &str) -> Result<BasicAuthConfig, ConfigError> {
    tollgate_sdk::config::parse::<BasicAuthConfig>(json.as_bytes())
}

/// Runs one request through a fresh filter: the headers after it, and the local reply if any.
fn run(
    json: &str,
    route: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<(HeaderList, Option<LocalReply>), ConfigError> {
    tollgate_sdk::testing::run_request_headers::<BasicAuthFilter>(json, route, headers)
}

fn count(result: &str, reason: &str) -> i64 {
    mock::value(&stat_name(
        METRIC,
        &[("result", result), ("reason", reason)],
    ))
    .unwrap_or(-1)
}

const TOKEN: (&str, &str) = (":path", "/v1/auth/token");
const API: (&str, &str) = (":authority", "api.example.com");

#[test]
fn demo_config_admits_the_right_password_and_forwards_the_consumer() -> Result<(), ConfigError> {
    let auth = basic("demo-client:demo-secret-do-not-use");
    let (headers, reply) = run(
        DEMO,
        None,
        &[
            API,
            TOKEN,
            ("authorization", &auth),
            ("x-consumer", "admin"),
        ],
    )?;
    assert_eq!(reply, None);
    assert_eq!(headers.get_all("x-consumer"), vec!["demo-client"]);
    assert!(headers.get_all("authorization").is_empty(), "stripped");
    assert_eq!(count("allowed", "ok"), 1);
    Ok(())
}

#[test]
fn sha1_htpasswd_hash_works() -> Result<(), ConfigError> {
    let auth = basic("legacy:demo-secret-do-not-use");
    let (headers, reply) = run(DEMO, None, &[API, TOKEN, ("authorization", &auth)])?;
    assert_eq!(reply, None);
    assert_eq!(headers.get_all("x-consumer"), vec!["legacy"]);
    Ok(())
}

fn assert_401(reply: Option<LocalReply>, realm: &str) {
    assert_eq!(reply.as_ref().map(|r| r.status), Some(401));
    let headers = reply.map(|r| r.headers).unwrap_or_default();
    assert!(
        headers.contains(&(
            "www-authenticate".into(),
            format!("Basic realm=\"{realm}\"")
        )),
        "{headers:?}"
    );
}

#[test]
fn every_bad_credential_is_401_with_the_realm() -> Result<(), ConfigError> {
    let good = basic("demo-client:demo-secret-do-not-use");
    let huge = format!("Basic {}", "QUFB".repeat(5000));
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "missing"),
        (vec![("authorization", "".to_string())], "missing"),
        (vec![("authorization", "   ".to_string())], "missing"),
        (vec![("authorization", "Basic".to_string())], "malformed"),
        (
            vec![("authorization", "Basic    ".to_string())],
            "malformed",
        ),
        (
            vec![("authorization", "Bearer abc".to_string())],
            "malformed",
        ),
        (
            vec![("authorization", "Basic %%%".to_string())],
            "malformed",
        ),
        (
            vec![("authorization", "Basic ZGVtby1jbGllbnQ".to_string())],
            "malformed",
        ),
        (
            vec![("authorization", basic("demo-client").to_string())],
            "malformed",
        ),
        (vec![("authorization", basic(":").to_string())], "malformed"),
        (vec![("authorization", huge.to_string())], "malformed"),
        (
            vec![
                ("authorization", good.to_string()),
                ("authorization", good.to_string()),
            ],
            "malformed",
        ),
        (
            vec![
                ("Authorization", good.to_string()),
                ("authorization", basic("x:y").to_string()),
            ],
            "malformed",
        ),
        (
            vec![(
                "authorization",
                basic("nobody:demo-secret-do-not-use").to_string(),
            )],
            "unknown_consumer",
        ),
        (
            vec![(
                "authorization",
                basic("Demo-Client:demo-secret-do-not-use").to_string(),
            )],
            "unknown_consumer",
        ),
        (
            vec![(
                "authorization",
                basic("demo-client:wrong-password").to_string(),
            )],
            "bad_password",
        ),
        (
            vec![("authorization", basic("demo-client:").to_string())],
            "bad_password",
        ),
        (
            vec![(
                "authorization",
                basic("demo-client: demo-secret-do-not-use").to_string(),
            )],
            "bad_password",
        ),
    ];
    for (extra, reason) in &cases {
        let mut headers = vec![API, TOKEN, ("x-consumer", "spoofed")];
        headers.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
        let (after, reply) = run(DEMO, None, &headers)?;
        assert_401(reply, "api.example.com");
        assert!(after.get_all("x-consumer").is_empty(), "{extra:?}");
        assert!(
            count("denied", reason) >= 1,
            "{extra:?} should count as {reason}"
        );
    }
    assert_eq!(count("denied", "missing"), 3);
    assert_eq!(count("denied", "malformed"), 10);
    assert_eq!(count("denied", "unknown_consumer"), 2);
    assert_eq!(count("denied", "bad_password"), 3);
    assert_eq!(count("allowed", "ok"), 0);
    Ok(())
}

#[test]
fn header_name_case_does_not_matter() -> Result<(), ConfigError> {
    let auth = basic("ops:ops-password");
    let (headers, reply) = run(DEMO, None, &[API, TOKEN, ("AUTHORIZATION", &auth)])?;
    assert_eq!(reply, None);
    assert_eq!(headers.get_all("x-consumer"), vec!["ops"]);
    Ok(())
}

#[test]
fn per_route_consumers_and_skip() -> Result<(), ConfigError> {
    let legacy = basic("legacy:demo-secret-do-not-use");
    let ops = basic("ops:ops-password");
    let reports = (":path", "/v1/reports/sales.csv?x=1");
    // legacy is a consumer, but not admitted on /v1/reports/: 403, nothing forwarded.
    let (headers, reply) = run(DEMO, None, &[API, reports, ("authorization", &legacy)])?;
    assert_eq!(reply.map(|r| r.status), Some(403));
    assert!(headers.get_all("x-consumer").is_empty());
    assert_eq!(count("denied", "forbidden"), 1);
    let (_, reply) = run(DEMO, None, &[API, reports, ("authorization", &ops)])?;
    assert_eq!(reply, None);
    // /admin/ on any host: only ops.
    let admin = [(":authority", "shop.example.com"), (":path", "/admin/")];
    let (_, reply) = run(DEMO, None, &[admin[0], admin[1]])?;
    assert_eq!(reply.map(|r| r.status), Some(401));
    // Default rule: skip; a spoofed consumer header is still removed.
    let (headers, reply) = run(
        DEMO,
        None,
        &[API, (":path", "/v1/products"), ("x-consumer", "ops")],
    )?;
    assert_eq!(reply, None);
    assert!(headers.get_all("x-consumer").is_empty());
    assert_eq!(count("allowed", "skipped"), 1);
    Ok(())
}

#[test]
fn rules_by_route_name() -> Result<(), ConfigError> {
    let json = r#"{"consumers": [{"name": "ops", "password_hash": "{SSHA256}lUd9fhNFAdYU8HP49S3yB7hf4EXIES413+3Rj+aKEfefHCt9TmqAUw=="}],
        "rules": {"default": {"skip": true}, "routes": [{"match": {"route": "private"}, "config": {"allow": ["ops"]}}]}}"#;
    let (_, reply) = run(json, Some("private"), &[API, (":path", "/")])?;
    assert_eq!(reply.map(|r| r.status), Some(401));
    let (_, reply) = run(json, Some("public"), &[API, (":path", "/")])?;
    assert_eq!(reply, None);
    Ok(())
}

#[test]
fn without_rules_every_route_needs_a_consumer_and_authorization_stays() -> Result<(), ConfigError> {
    let json = r#"{"consumers": [{"name": "legacy", "password_hash": "{SHA}H0WHlTkKgLwypOtQ16u+4XJYniY="}], "consumer_header": null}"#;
    let auth = basic("legacy:demo-secret-do-not-use");
    let (headers, reply) = run(json, None, &[(":path", "/any"), ("authorization", &auth)])?;
    assert_eq!(reply, None);
    assert_eq!(headers.get_all("authorization"), vec![auth.as_str()]);
    assert!(headers.get_all("x-consumer").is_empty());
    let (_, reply) = run(json, None, &[(":path", "/any")])?;
    assert_401(reply, "tollgate");
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    let err = |json: &str| match config(json) {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    };
    let hash = r#""password_hash": "{SHA}H0WHlTkKgLwypOtQ16u+4XJYniY=""#;
    assert!(
        err(r#"{"consumers": [{"name": "a", "password_hash": "secret"}]}"#).starts_with(
            "bad configuration at consumers[0].password_hash: unsupported hash format"
        )
    );
    assert!(
        err(&format!(r#"{{"consumers": [{{"name": "a:b", {hash}}}]}}"#))
            .contains("consumers[0].name")
    );
    assert!(
        err(&format!(
            r#"{{"consumers": [{{"name": "a", {hash}}}, {{"name": "a", {hash}}}]}}"#
        ))
        .contains("consumers[1].name: \"a\" is listed twice")
    );
    assert!(
        err(&format!(
            r#"{{"realm": "a\"b", "consumers": [{{"name": "a", {hash}}}]}}"#
        ))
        .contains("at realm")
    );
    assert!(
        err(&format!(
            r#"{{"consumer_header": "authorization", "consumers": [{{"name": "a", {hash}}}]}}"#
        ))
        .contains("at consumer_header")
    );
    assert!(
        err(&format!(
            r#"{{"consumers": [{{"name": "a", {hash}}}], "rules": {{"routes": [{{"match": {{"route": "r"}}, "config": {{"allow": ["b"]}}}}]}}}}"#
        ))
        .contains("rules.routes[0].config.allow[0]: \"b\" is not one of the consumers")
    );
    assert!(
        err(&format!(
            r#"{{"consumers": [{{"name": "a", {hash}}}], "rules": {{"default": {{}}}}}}"#
        ))
        .contains("rules.default.allow")
    );
    assert!(err(r#"{"consumers": [], "extra": 1}"#).contains("unknown field"));
}

#[test]
fn envoy_and_istio_files_carry_demo_json() -> Result<(), Box<dyn std::error::Error>> {
    let demo: serde_json::Value = serde_json::from_str(DEMO)?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/basic-auth");
    let envoy: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root.join("envoy.yaml"))?)?;
    let mut found = Vec::new();
    find_configurations(&envoy, &mut found);
    assert_eq!(found.len(), 1, "one wasm filter in envoy.yaml");
    for text in found {
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text)?, demo);
    }
    let istio: serde_json::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root.join("wasmplugin.yaml"))?)?;
    assert_eq!(istio["spec"]["pluginConfig"], demo);
    Ok(())
}

fn find_configurations(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(text)) =
                map.get("configuration").and_then(|c| c.get("value"))
            {
                out.push(text.clone());
            }
            map.values().for_each(|v| find_configurations(v, out));
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| find_configurations(v, out)),
        _ => {}
    }
}
