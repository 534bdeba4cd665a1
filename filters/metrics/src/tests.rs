//! Native tests of the metrics filter: labels, counters, histograms, refusals.

use std::rc::Rc;

use tollgate_sdk::metrics::mock;
use tollgate_sdk::{Body, ConfigError, HeaderList, HttpFilter, Request, Response};

use crate::{MetricsConfig, MetricsFilter, status_class};

const DEMO: &str = include_str!("../demo.json");

fn config(json: &str) -> Result<Rc<MetricsConfig>, ConfigError> {
    tollgate_sdk::config::parse(json.as_bytes()).map(Rc::new)
}

/// One stream: `(method, path)`, a request body in `req_chunks`, `(status, chunks)` of the
/// response (no status: reset before a response), taking `ms`.
fn stream(
    json: &str,
    route: Option<&str>,
    (method, path): (&str, &str),
    req_chunks: &[&[u8]],
    (status, resp_chunks): (Option<&str>, &[&[u8]]),
    ms: u64,
) -> Result<(), ConfigError> {
    tollgate_sdk::routes::mock::set_route_name(route);
    let mut f = MetricsFilter::new(config(json)?);
    let mut req = HeaderList::from([(":method", method), (":path", path)]);
    f.on_request_headers(&mut Request::new(&mut req), req_chunks.is_empty());
    for (i, c) in req_chunks.iter().enumerate() {
        let mut buf = c.to_vec();
        f.on_request_body(&mut Body::new(&mut buf), i + 1 == req_chunks.len());
    }
    crate::clock::mock::advance_ms(ms);
    if let Some(s) = status {
        let mut resp = HeaderList::from([(":status", s)]);
        f.on_response_headers(&mut Response::new(&mut resp), resp_chunks.is_empty());
        for (i, c) in resp_chunks.iter().enumerate() {
            let mut buf = c.to_vec();
            f.on_response_body(&mut Body::new(&mut buf), i + 1 == resp_chunks.len());
        }
    }
    f.on_done();
    Ok(())
}

#[test]
fn counters_and_histograms_by_route_method_and_status_class() -> Result<(), ConfigError> {
    mock::reset();
    stream(
        DEMO,
        Some("api"),
        ("POST", "/x"),
        &[b"abc", b"de"],
        (Some("201"), &[b"0123456789"]),
        12,
    )?;
    stream(
        DEMO,
        Some("api"),
        ("POST", "/x"),
        &[b"a"],
        (Some("200"), &[]),
        3,
    )?;
    stream(
        DEMO,
        Some("api"),
        ("GET", "/x"),
        &[],
        (Some("503"), &[b"err"]),
        1,
    )?;
    stream(DEMO, None, ("GET", "/orders/7"), &[], (Some("404"), &[]), 0)?;
    stream(DEMO, None, ("BREW", "/nowhere"), &[], (None, &[]), 0)?;
    let v = mock::value;
    assert_eq!(
        v("route=.=api;.;method=.=POST;.;status_class=.=2xx;.;tollgate_requests"),
        Some(2)
    );
    assert_eq!(
        v("route=.=api;.;method=.=GET;.;status_class=.=5xx;.;tollgate_requests"),
        Some(1)
    );
    assert_eq!(
        v("route=.=orders;.;method=.=GET;.;status_class=.=4xx;.;tollgate_requests"),
        Some(1)
    );
    assert_eq!(
        v("route=.=unknown;.;method=.=other;.;status_class=.=none;.;tollgate_requests"),
        Some(1)
    );
    assert_eq!(
        mock::records("route=.=api;.;method=.=POST;.;tollgate_request_bytes"),
        vec![5, 1]
    );
    assert_eq!(
        mock::records("route=.=api;.;method=.=POST;.;status_class=.=2xx;.;tollgate_response_bytes"),
        vec![10, 0]
    );
    assert_eq!(
        mock::records("route=.=api;.;method=.=POST;.;status_class=.=2xx;.;tollgate_duration_ms"),
        vec![12, 3]
    );
    assert_eq!(
        mock::records("route=.=api;.;method=.=GET;.;status_class=.=5xx;.;tollgate_response_bytes"),
        vec![3]
    );
    Ok(())
}

#[test]
fn route_labels_prefer_the_route_name_unless_told_and_stay_sanitised() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    assert_eq!(c.route_label(Some("api"), "/orders/1"), "api");
    assert_eq!(c.route_label(None, "/orders/1?x"), "orders");
    assert_eq!(c.route_label(Some(""), "/static/a.css"), "static");
    assert_eq!(c.route_label(None, "/other"), "unknown");
    assert_eq!(c.route_label(Some("a.b;c=d"), "/"), "a_b_c_d");
    let prefer = config(
        r#"{"path_routes": [{"prefix": "/orders/", "name": "orders"}], "prefer_paths": true}"#,
    )?;
    assert_eq!(prefer.route_label(Some("api"), "/orders/1"), "orders");
    assert_eq!(prefer.route_label(Some("api"), "/x"), "api");
    assert_eq!(c.method_label("GET"), "GET");
    assert_eq!(c.method_label("get"), "other");
    assert_eq!(c.method_label("PROPFIND"), "other");
    assert_eq!(status_class(Some(101)), "1xx");
    assert_eq!(status_class(Some(600)), "none");
    Ok(())
}

#[test]
fn a_custom_prefix_names_the_metrics() -> Result<(), ConfigError> {
    mock::reset();
    stream(
        r#"{"prefix": "shop"}"#,
        Some("r"),
        ("GET", "/"),
        &[],
        (Some("200"), &[]),
        0,
    )?;
    assert_eq!(
        mock::value("route=.=r;.;method=.=GET;.;status_class=.=2xx;.;shop_requests"),
        Some(1)
    );
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    for (json, at) in [
        (r#"{"prefix": "Bad-Name"}"#, "prefix"),
        (r#"{"prefix": ""}"#, "prefix"),
        (r#"{"methods": ["get"]}"#, "methods[0]"),
        (
            r#"{"path_routes": [{"prefix": "orders", "name": "o"}]}"#,
            "path_routes[0].prefix",
        ),
        (
            r#"{"path_routes": [{"prefix": "/o", "name": "a b"}]}"#,
            "path_routes[0].name",
        ),
        (r#"{"prefer_paths": true}"#, "prefer_paths"),
        (r#"{"unknown": 1}"#, ""),
    ] {
        let e = match config(json) {
            Ok(_) => format!("accepted: {json}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.starts_with(&format!("bad configuration at {at}"))
                || (at.is_empty() && e.contains("unknown field")),
            "{json}: {e}"
        );
    }
}

#[test]
fn per_route_labels_and_routes_without_metrics() -> Result<(), ConfigError> {
    mock::reset();
    let ok = (Some("200"), &[][..]);
    // The demo: /healthz not counted, /api/v2/ on route `api` labelled `api-v2`.
    stream(DEMO, Some("api"), ("GET", "/healthz"), &[], ok, 1)?;
    stream(DEMO, Some("api"), ("GET", "/healthz/deep?x=1"), &[], ok, 1)?;
    stream(DEMO, Some("api"), ("GET", "/api/v2/items"), &[], ok, 1)?;
    stream(DEMO, Some("other"), ("GET", "/api/v2/items"), &[], ok, 1)?;
    stream(DEMO, Some("api"), ("GET", "/api/v1/items"), &[], ok, 1)?;
    let v = mock::value;
    assert_eq!(
        v("route=.=api-v2;.;method=.=GET;.;status_class=.=2xx;.;tollgate_requests"),
        Some(1)
    );
    assert_eq!(
        mock::records("route=.=api-v2;.;method=.=GET;.;status_class=.=2xx;.;tollgate_duration_ms"),
        vec![1]
    );
    assert_eq!(
        v("route=.=other;.;method=.=GET;.;status_class=.=2xx;.;tollgate_requests"),
        Some(1),
        "the rule needs route api too"
    );
    assert_eq!(
        v("route=.=api;.;method=.=GET;.;status_class=.=2xx;.;tollgate_requests"),
        Some(1),
        "/healthz is not counted"
    );
    // A default: every request no rule matches is uncounted, a route is counted under a label.
    let only = r#"{"routes": {"default": {"enabled": false}, "routes": [{"match": {"route": "checkout"}, "config": {"label": "shop"}}]}}"#;
    stream(only, Some("checkout"), ("POST", "/pay"), &[b"xy"], ok, 0)?;
    stream(only, Some("browse"), ("GET", "/"), &[], ok, 0)?;
    assert_eq!(
        v("route=.=shop;.;method=.=POST;.;status_class=.=2xx;.;tollgate_requests"),
        Some(1)
    );
    assert_eq!(
        mock::records("route=.=shop;.;method=.=POST;.;tollgate_request_bytes"),
        vec![2]
    );
    assert_eq!(
        v("route=.=browse;.;method=.=GET;.;status_class=.=2xx;.;tollgate_requests"),
        None
    );
    // An empty rule config: counted as without the rule.
    let plain = r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {}}]}}"#;
    stream(plain, Some("r"), ("GET", "/"), &[], ok, 0)?;
    assert_eq!(
        v("route=.=r;.;method=.=GET;.;status_class=.=2xx;.;tollgate_requests"),
        Some(1)
    );
    Ok(())
}

#[test]
fn bad_route_rules_name_the_field() {
    tollgate_sdk::testing::assert_refused_at::<MetricsConfig>(&[
        (
            r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {"label": "a.b"}}]}}"#,
            "routes.routes[0].config.label",
        ),
        (
            r#"{"routes": {"default": {"label": "x", "enabled": false}}}"#,
            "routes.default.label",
        ),
        (
            r#"{"routes": {"routes": [{"match": {"host": "a:80"}, "config": {}}]}}"#,
            "routes.routes[0].match.host",
        ),
        (
            r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {"label": "unknown"}}]}}"#,
            "routes.routes[0].config.label",
        ),
    ]);
}
