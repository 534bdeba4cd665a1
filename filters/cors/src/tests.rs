//! Native tests: origin matching (exact, wildcard, regex, `*`), preflights, allowed and
//! disallowed responses, `Vary`, per-route policies, metrics and configuration errors.

use std::rc::Rc;

use tollgate_sdk::metrics::{mock as metrics, stat_name};
use tollgate_sdk::routes::mock::set_route_name;
use tollgate_sdk::{ConfigError, HeaderList, HeaderMap, HttpFilter, Request, Response};

use crate::{CorsConfig, CorsFilter, METRIC};

const DEMO: &str = include_str!("../demo.json");

fn config(json: &str) -> Result<Rc<CorsConfig>, ConfigError> {
    tollgate_sdk::config::parse::<CorsConfig>(json.as_bytes()).map(Rc::new)
}

/// Status (200 when forwarded) and the CORS/Vary headers the client sees.
fn run(
    config: &Rc<CorsConfig>,
    route: Option<&str>,
    request: &[(&str, &str)],
) -> (u16, Vec<(String, String)>) {
    set_route_name(route);
    let mut headers = HeaderList::from([(":path", "/")]);
    for (n, v) in request {
        headers.add(n, v);
    }
    let mut filter = CorsFilter::new(Rc::clone(config));
    let mut req = Request::new(&mut headers);
    filter.on_request_headers(&mut req, true);
    let pick = |h: Vec<(String, String)>| {
        let mut h: Vec<_> = h
            .into_iter()
            .filter(|(n, _)| n.starts_with("access-control-") || n == "vary")
            .collect();
        h.sort();
        h
    };
    if let Some(reply) = req.local_reply() {
        return (reply.status, pick(reply.headers.clone()));
    }
    let mut response = HeaderList::from([(":status", "200"), ("vary", "accept-encoding")]);
    let mut resp = Response::new(&mut response);
    filter.on_response_headers(&mut resp, true);
    (200, pick(resp.headers()))
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn origins_exact_wildcard_regex() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let p = c
        .default
        .as_ref()
        .ok_or_else(|| ConfigError::at("default", "missing"))?;
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("HTTPS://APP.EXAMPLE.COM", true),
        ("http://app.example.com", false),
        ("https://app.example.com:8443", false),
        ("https://app.example.com.evil.com", false),
        ("https://a.example.org", true),
        ("https://a.b.example.org", true),
        ("https://example.org", false),
        ("https://.example.org", false),
        ("https://evil.com/.example.org", false),
        ("https://evil.com?.example.org", false),
        ("https://evilexample.org", false),
        ("http://a.example.org", false),
        ("https://localhost", true),
        ("https://localhost:3000", true),
        ("https://localhost.evil.com", false),
        ("https://localhost:3000x", false),
        ("null", false),
        ("", false),
    ] {
        assert_eq!(p.allows_origin(origin), allowed, "{origin:?}");
    }
    Ok(())
}

#[test]
fn preflight_from_an_allowed_origin_is_answered() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let (status, headers) = run(
        &c,
        Some("api"),
        &[
            (":method", "OPTIONS"),
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type"),
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(
        headers,
        h(&[
            ("access-control-allow-origin", "https://app.example.com"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET,POST,PUT"),
            ("access-control-allow-headers", "content-type,authorization"),
            ("access-control-max-age", "600"),
            ("access-control-expose-headers", "x-request-id"),
            ("vary", "Origin"),
        ])
    );
    Ok(())
}

#[test]
fn options_without_request_method_is_not_a_preflight() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let (status, headers) = run(
        &c,
        None,
        &[
            (":method", "OPTIONS"),
            ("origin", "https://app.example.com"),
        ],
    );
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .all(|(n, _)| n != "access-control-allow-methods")
    );
    assert!(headers.contains(&(
        "access-control-allow-origin".into(),
        "https://app.example.com".into()
    )));
    Ok(())
}

#[test]
fn allowed_actual_request_gets_origin_credentials_expose_and_vary() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let (status, headers) = run(
        &c,
        None,
        &[(":method", "GET"), ("origin", "https://x.example.org")],
    );
    assert_eq!(status, 200);
    assert_eq!(
        headers,
        h(&[
            ("access-control-allow-origin", "https://x.example.org"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-request-id"),
            ("vary", "accept-encoding"),
            ("vary", "Origin"),
        ])
    );
    Ok(())
}

#[test]
fn disallowed_origins_get_no_cors_headers_and_preflights_go_upstream() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let before = metrics::value(&stat_name(METRIC, &[("result", "disallowed")])).unwrap_or(0);
    for method in ["GET", "OPTIONS"] {
        let (status, headers) = run(
            &c,
            None,
            &[
                (":method", method),
                ("origin", "https://evil.com"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert_eq!(status, 200, "forwarded");
        assert_eq!(
            headers,
            h(&[("vary", "accept-encoding"), ("vary", "Origin")])
        );
    }
    let after = metrics::value(&stat_name(METRIC, &[("result", "disallowed")])).unwrap_or(0);
    assert_eq!(after - before, 2);
    Ok(())
}

#[test]
fn no_origin_is_left_alone() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let (_, headers) = run(&c, None, &[(":method", "GET")]);
    assert_eq!(headers, h(&[("vary", "accept-encoding")]));
    Ok(())
}

#[test]
fn per_route_policy_and_routes_without_policy() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let (status, headers) = run(
        &c,
        Some("public"),
        &[
            (":method", "OPTIONS"),
            ("origin", "https://anyone.test"),
            ("access-control-request-method", "GET"),
        ],
    );
    assert_eq!(status, 200);
    assert_eq!(
        headers,
        h(&[
            ("access-control-allow-origin", "https://anyone.test"),
            ("access-control-allow-methods", "GET"),
            ("access-control-max-age", "3600"),
            ("vary", "Origin"),
        ])
    );
    let only_public = config(
        r#"{"routes": [{"match": {"route": "public"}, "config": {"allow_origins": ["*"]}}]}"#,
    )?;
    let (_, headers) = run(
        &only_public,
        Some("private"),
        &[(":method", "GET"), ("origin", "https://a.test")],
    );
    assert_eq!(
        headers,
        h(&[("vary", "accept-encoding")]),
        "no policy: untouched"
    );
    set_route_name(None);
    Ok(())
}

#[test]
fn vary_origin_is_not_added_twice() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    set_route_name(None);
    let mut headers = HeaderList::from([(":method", "GET"), ("origin", "https://app.example.com")]);
    let mut filter = CorsFilter::new(Rc::clone(&c));
    filter.on_request_headers(&mut Request::new(&mut headers), true);
    let mut response = HeaderList::from([(":status", "200"), ("vary", "Accept, origin")]);
    filter.on_response_headers(&mut Response::new(&mut response), true);
    let vary: Vec<_> = Response::new(&mut response)
        .headers()
        .into_iter()
        .filter(|(n, _)| n == "vary")
        .collect();
    assert_eq!(vary.len(), 1);
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    let err = |json: &str| match config(json) {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    };
    for (json, at) in [
        (r#"{"default": {}}"#, "default.allow_origins"),
        (
            r#"{"default": {"allow_origins": ["https://a.com/"]}}"#,
            "default.allow_origins[0]",
        ),
        (
            r#"{"default": {"allow_origins": ["a.com"]}}"#,
            "default.allow_origins[0]",
        ),
        (
            r#"{"default": {"allow_origins": ["https://a.*.com"]}}"#,
            "default.allow_origins[0]",
        ),
        (
            r#"{"default": {"allow_origins": ["*"], "allow_credentials": true}}"#,
            "default.allow_origins[0]",
        ),
        (
            r#"{"default": {"allow_origin_regex": ["https://(a"]}}"#,
            "default.allow_origin_regex[0]",
        ),
        (
            r#"{"default": {"allow_origins": ["*"], "allow_methods": ["GET", "PO ST"]}}"#,
            "default.allow_methods[1]",
        ),
        (
            r#"{"default": {"allow_origins": ["*"], "allow_headers": ["a,b"]}}"#,
            "default.allow_headers[0]",
        ),
        (
            r#"{"default": {"allow_origins": ["*"], "max_age": 999999}}"#,
            "default.max_age",
        ),
        (
            r#"{"routes": [{"match": {"route": "r"}, "config": {"allow_origins": ["x"]}}]}"#,
            "routes[0].config.allow_origins[0]",
        ),
    ] {
        let e = err(json);
        assert!(
            e.starts_with(&format!("bad configuration at {at}:")),
            "{json}: {e}"
        );
    }
    assert!(
        err(r#"{"default": {"allow_origins": ["*"], "allow_origin": 1}}"#)
            .contains("unknown field")
    );
}
