//! Native tests of the request-id logic (ids, trace context, echo, refusals).

use std::rc::Rc;

use tollgate_sdk::{ConfigError, HeaderList, HttpFilter, Request, Response};

use crate::trace::{TraceParent, is_uuid, tracestate_is_valid, uuid_v4};
use crate::{RequestIdConfig, RequestIdFilter};

const DEMO: &str = include_str!("../demo.json");
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn config(json: &str) -> Result<Rc<RequestIdConfig>, ConfigError> {
    tollgate_sdk::config::parse(json.as_bytes()).map(Rc::new)
}

/// The request headers after the filter, and the response headers it echoed on.
fn run(json: &str, request: &[(&str, &str)]) -> Result<(HeaderList, HeaderList), ConfigError> {
    let mut filter = RequestIdFilter::new(config(json)?);
    let mut req: HeaderList = request.iter().copied().collect();
    filter.on_request_headers(&mut Request::new(&mut req), true);
    let mut resp = HeaderList::from([(":status", "200"), ("x-request-id", "upstream-made")]);
    filter.on_response_headers(&mut Response::new(&mut resp), true);
    Ok((req, resp))
}

fn one(list: &HeaderList, name: &str) -> String {
    let all = list.get_all(name);
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    all[0].to_string()
}

#[test]
fn uuids_are_version_4_variant_1_and_differ() {
    tollgate_sdk::random::mock::seed(1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let id = uuid_v4();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(id, id.to_ascii_lowercase());
        assert!(seen.insert(id));
    }
}

#[test]
fn absent_id_is_generated_and_echoed() -> Result<(), ConfigError> {
    let (req, resp) = run(DEMO, &[(":path", "/")])?;
    let id = one(&req, "x-request-id");
    assert!(is_uuid(&id));
    assert_eq!(one(&resp, "x-request-id"), id);
    Ok(())
}

#[test]
fn client_id_is_kept_when_trusted_and_well_formed() -> Result<(), ConfigError> {
    let (req, resp) = run(DEMO, &[("x-request-id", "client-abc-123")])?;
    assert_eq!(one(&req, "x-request-id"), "client-abc-123");
    assert_eq!(one(&resp, "x-request-id"), "client-abc-123");
    for bad in ["has space", "", &"a".repeat(129), "tab\there"] {
        let (req, _) = run(DEMO, &[("x-request-id", bad)])?;
        let id = one(&req, "x-request-id");
        assert!(is_uuid(&id), "{bad:?} -> {id}");
    }
    Ok(())
}

#[test]
fn untrusted_or_non_uuid_client_ids_are_replaced() -> Result<(), ConfigError> {
    let (req, resp) = run(
        r#"{"trust_client_id": false}"#,
        &[("x-request-id", "0b1e5a8e-2f4b-4c1d-9a3e-5f6a7b8c9d0e")],
    )?;
    let id = one(&req, "x-request-id");
    assert_ne!(id, "0b1e5a8e-2f4b-4c1d-9a3e-5f6a7b8c9d0e");
    assert!(is_uuid(&id));
    assert_eq!(one(&resp, "x-request-id"), id);
    let uuid_only = r#"{"client_id_format": "uuid"}"#;
    let (req, _) = run(uuid_only, &[("x-request-id", "client-abc")])?;
    assert!(is_uuid(&one(&req, "x-request-id")));
    let (req, _) = run(
        uuid_only,
        &[("x-request-id", "0B1E5A8E-2F4B-4C1D-9A3E-5F6A7B8C9D0E")],
    )?;
    assert_eq!(
        one(&req, "x-request-id"),
        "0B1E5A8E-2F4B-4C1D-9A3E-5F6A7B8C9D0E"
    );
    Ok(())
}

#[test]
fn echo_off_leaves_the_response_alone_and_a_custom_header_is_used() -> Result<(), ConfigError> {
    let (_, resp) = run(r#"{"echo": false}"#, &[])?;
    assert_eq!(one(&resp, "x-request-id"), "upstream-made");
    let (req, resp) = run(r#"{"header": "X-Correlation-Id"}"#, &[])?;
    let id = one(&req, "x-correlation-id");
    assert!(req.get_all("x-request-id").is_empty());
    assert_eq!(one(&resp, "x-correlation-id"), id);
    Ok(())
}

#[test]
fn a_trace_is_started_when_none_comes() -> Result<(), ConfigError> {
    let (req, _) = run(DEMO, &[("tracestate", "a=b")])?;
    let tp = one(&req, "traceparent");
    let parsed = TraceParent::parse(&tp).ok_or_else(|| ConfigError::at("", tp.clone()))?;
    assert!(tp.ends_with("-00"));
    assert_eq!(parsed.render(), tp);
    assert!(
        req.get_all("tracestate").is_empty(),
        "orphan tracestate dropped"
    );
    let (req, _) = run(r#"{"sample_new_traces": true}"#, &[])?;
    assert!(one(&req, "traceparent").ends_with("-01"));
    Ok(())
}

#[test]
fn a_valid_trace_is_propagated_as_is_or_with_a_new_span() -> Result<(), ConfigError> {
    let (req, _) = run(
        DEMO,
        &[
            ("traceparent", TP),
            ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
        ],
    )?;
    assert_eq!(one(&req, "traceparent"), TP);
    assert_eq!(
        one(&req, "tracestate"),
        "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"
    );
    let (req, _) = run(r#"{"new_span": true}"#, &[("traceparent", TP)])?;
    let tp = one(&req, "traceparent");
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(tp.ends_with("-01"));
    assert_ne!(tp, TP);
    // A later version with extra fields: propagated.
    let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
    let (req, _) = run(DEMO, &[("traceparent", future)])?;
    assert_eq!(one(&req, "traceparent"), future);
    Ok(())
}

#[test]
fn invalid_trace_context_restarts_the_trace() -> Result<(), ConfigError> {
    for bad in [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x",
        "",
    ] {
        let (req, _) = run(DEMO, &[("traceparent", bad), ("tracestate", "a=b")])?;
        let tp = one(&req, "traceparent");
        assert!(TraceParent::parse(&tp).is_some(), "{bad} -> {tp}");
        assert!(
            !tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{bad} -> {tp}"
        );
        assert!(req.get_all("tracestate").is_empty(), "{bad}");
    }
    // Two traceparent headers: invalid.
    let (req, _) = run(DEMO, &[("traceparent", TP), ("traceparent", TP)])?;
    assert_ne!(one(&req, "traceparent"), TP);
    Ok(())
}

#[test]
fn tracestate_rules() -> Result<(), ConfigError> {
    assert!(tracestate_is_valid(
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    ));
    assert!(tracestate_is_valid("a=1, ,b=2"));
    assert!(tracestate_is_valid("tenant@system=x"));
    assert!(!tracestate_is_valid("A=1"));
    assert!(!tracestate_is_valid("a=1,a=2"));
    assert!(!tracestate_is_valid("a"));
    assert!(!tracestate_is_valid("a=b=c"));
    assert!(
        tracestate_is_valid("a=trailing-ows "),
        "spaces around a member are list whitespace"
    );
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert!(!tracestate_is_valid(&many.join(",")));
    assert!(tracestate_is_valid(&many[..32].join(",")));
    // A valid traceparent with an invalid tracestate: the trace goes on, the state is dropped.
    let (req, _) = run(DEMO, &[("traceparent", TP), ("tracestate", "BAD")])?;
    assert_eq!(one(&req, "traceparent"), TP);
    assert!(req.get_all("tracestate").is_empty());
    Ok(())
}

#[test]
fn trace_context_off_touches_nothing() -> Result<(), ConfigError> {
    let (req, _) = run(
        r#"{"trace_context": "off"}"#,
        &[("traceparent", "garbage"), ("tracestate", "BAD")],
    )?;
    assert_eq!(one(&req, "traceparent"), "garbage");
    assert_eq!(one(&req, "tracestate"), "BAD");
    Ok(())
}

#[test]
fn metrics_count_sources_and_traces() -> Result<(), ConfigError> {
    tollgate_sdk::metrics::mock::reset();
    run(DEMO, &[])?;
    run(DEMO, &[("x-request-id", "keep-me"), ("traceparent", TP)])?;
    run(
        r#"{"trust_client_id": false}"#,
        &[("x-request-id", "x"), ("traceparent", "bad")],
    )?;
    let v = |n: &str| tollgate_sdk::metrics::mock::value(n);
    assert_eq!(v("source=.=generated;.;request_id_ids"), Some(1));
    assert_eq!(v("source=.=kept;.;request_id_ids"), Some(1));
    assert_eq!(v("source=.=replaced;.;request_id_ids"), Some(1));
    assert_eq!(v("trace=.=started;.;request_id_traces"), Some(1));
    assert_eq!(v("trace=.=propagated;.;request_id_traces"), Some(1));
    assert_eq!(v("trace=.=restarted;.;request_id_traces"), Some(1));
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    tollgate_sdk::testing::assert_refused_at::<RequestIdConfig>(&[
        (r#"{"header": ":path"}"#, "header"),
        (r#"{"header": "traceparent"}"#, "header"),
        (r#"{"header": "bad name"}"#, "header"),
        (r#"{"max_client_id_length": 0}"#, "max_client_id_length"),
        (r#"{"client_id_format": "ulid"}"#, "client_id_format"),
        (
            r#"{"trace_context": "off", "new_span": true}"#,
            "trace_context",
        ),
    ]);
}

/// [`run`] with the route name Envoy would give (`xds.route_name`).
fn run_on(
    route: Option<&str>,
    json: &str,
    request: &[(&str, &str)],
) -> Result<(HeaderList, HeaderList), ConfigError> {
    tollgate_sdk::routes::mock::set_route_name(route);
    let out = run(json, request);
    tollgate_sdk::routes::mock::set_route_name(None);
    out
}

#[test]
fn per_route_configurations_and_routes_without_the_filter() -> Result<(), ConfigError> {
    tollgate_sdk::metrics::mock::reset();
    // Off on /healthz: no id, no trace context, the upstream's id left on the response.
    let (req, resp) = run_on(Some("api"), DEMO, &[(":path", "/healthz?full=1")])?;
    assert!(req.get_all("x-request-id").is_empty());
    assert!(req.get_all("traceparent").is_empty());
    assert_eq!(one(&resp, "x-request-id"), "upstream-made");
    assert_eq!(
        tollgate_sdk::metrics::mock::value("source=.=generated;.;request_id_ids"),
        None,
        "requests on a route without the filter are not counted"
    );
    // The partner route: its own header, client ids never kept, trace context untouched.
    let (req, resp) = run_on(
        Some("partner"),
        DEMO,
        &[
            (":path", "/partner/orders"),
            ("x-correlation-id", "0b1e5a8e-2f4b-4c1d-9a3e-5f6a7b8c9d0e"),
            ("x-request-id", "client-abc"),
            ("traceparent", "garbage"),
        ],
    )?;
    let id = one(&req, "x-correlation-id");
    assert!(is_uuid(&id));
    assert_ne!(id, "0b1e5a8e-2f4b-4c1d-9a3e-5f6a7b8c9d0e");
    assert_eq!(
        one(&req, "x-request-id"),
        "client-abc",
        "not this route's header"
    );
    assert_eq!(one(&req, "traceparent"), "garbage");
    assert_eq!(one(&resp, "x-correlation-id"), id);
    assert_eq!(one(&resp, "x-request-id"), "upstream-made");
    // Any other route: the top-level fields.
    let (req, resp) = run_on(
        Some("api"),
        DEMO,
        &[(":path", "/partner/orders"), ("x-request-id", "client-abc")],
    )?;
    assert_eq!(one(&req, "x-request-id"), "client-abc");
    assert_eq!(one(&resp, "x-request-id"), "client-abc");
    assert!(req.get_all("x-correlation-id").is_empty());
    assert_eq!(one(&req, "traceparent").len(), 55);
    // Off everywhere but one route.
    let only_api = r#"{"enabled": false, "routes": {"routes": [{"match": {"path_prefix": "/api/"}, "config": {}}]}}"#;
    let (req, _) = run_on(None, only_api, &[(":path", "/api/x")])?;
    assert!(is_uuid(&one(&req, "x-request-id")));
    let (req, _) = run_on(None, only_api, &[(":path", "/web/x")])?;
    assert!(req.get_all("x-request-id").is_empty());
    Ok(())
}

#[test]
fn bad_route_configurations_name_the_field() {
    tollgate_sdk::testing::assert_refused_at::<RequestIdConfig>(&[
        (r#"{"routes": {"default": {}}}"#, "routes.default"),
        (
            r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {"routes": {}}}]}}"#,
            "routes.routes[0].config.routes",
        ),
        (
            r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {"max_client_id_length": 0}}]}}"#,
            "routes.routes[0].config.max_client_id_length",
        ),
        (
            r#"{"routes": {"routes": [{"match": {}, "config": {}}]}}"#,
            "routes.routes[0].match",
        ),
        (
            r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {"header": "tracestate"}}]}}"#,
            "routes.routes[0].config.header",
        ),
    ]);
}
