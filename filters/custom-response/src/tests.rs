//! Native tests of the custom-response logic.

use std::rc::Rc;

use serde_json::{Value, json};
use tollgate_sdk::{ConfigError, HeaderList, HttpFilter, LocalReply, Request, Response};

use crate::{CustomResponseConfig, CustomResponseFilter, StatusRange};

const DEMO: &str = include_str!("../demo.json");

fn config(json: &str) -> Result<Rc<CustomResponseConfig>, ConfigError> {
    tollgate_sdk::config::parse(json.as_bytes()).map(Rc::new)
}

/// The local reply sent on the request, or else on the upstream's `status` response.
fn run(
    json: &str,
    request: &[(&str, &str)],
    status: u16,
) -> Result<(Option<LocalReply>, Option<LocalReply>), ConfigError> {
    let mut filter = CustomResponseFilter::new(config(json)?);
    let mut req: HeaderList = request.iter().copied().collect();
    let mut view = Request::new(&mut req);
    filter.on_request_headers(&mut view, true);
    let local = view.take_local_reply();
    if local.is_some() {
        return Ok((local, None));
    }
    let status = status.to_string();
    let mut resp = HeaderList::from([(":status", status.as_str()), ("content-length", "5")]);
    let mut view = Response::new(&mut resp);
    filter.on_response_headers(&mut view, false);
    Ok((None, view.take_local_reply()))
}

fn req<'a>(method: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", method),
        (":path", path),
        ("x-request-id", "rid-1"),
    ]
}

fn body_json(reply: &LocalReply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
}

fn header<'a>(reply: &'a LocalReply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn maintenance_answers_writes_with_json_carrying_the_request_id() -> Result<(), ConfigError> {
    let (local, _) = run(DEMO, &req("POST", "/admin/users"), 200)?;
    let reply = local.ok_or_else(|| ConfigError::at("", "no local reply"))?;
    assert_eq!(reply.status, 503);
    assert_eq!(header(&reply, "retry-after"), Some("120"));
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    assert_eq!(
        body_json(&reply),
        json!({"error": "maintenance", "message": "writes are paused", "request_id": "rid-1"})
    );
    // Reads of /admin/ go through.
    let (local, replaced) = run(DEMO, &req("GET", "/admin/users"), 200)?;
    assert!(local.is_none() && replaced.is_none());
    Ok(())
}

#[test]
fn text_bodies_paths_and_headers_match() -> Result<(), ConfigError> {
    let (local, _) = run(DEMO, &req("GET", "/v1/orders?x=1"), 200)?;
    let reply = local.ok_or_else(|| ConfigError::at("", "no local reply"))?;
    assert_eq!(reply.status, 410);
    assert_eq!(header(&reply, "content-type"), Some("text/plain"));
    assert_eq!(reply.body, b"API v1 is retired; use /v2/v1/orders?x=1\n");
    let mut blocked = req("GET", "/x");
    blocked.push(("x-client", "legacy-app"));
    assert_eq!(run(DEMO, &blocked, 200)?.0.map(|r| r.status), Some(403));
    let mut other = req("GET", "/x");
    other.push(("x-client", "legacy-app-2"));
    assert!(run(DEMO, &other, 200)?.0.is_none());
    Ok(())
}

#[test]
fn upstream_5xx_become_json_errors_with_the_request_id() -> Result<(), ConfigError> {
    for status in [500u16, 502, 503, 504, 599] {
        let (_, replaced) = run(DEMO, &req("GET", "/orders"), status)?;
        let reply =
            replaced.ok_or_else(|| ConfigError::at("", format!("{status} not replaced")))?;
        assert_eq!(reply.status, 502);
        assert_eq!(
            body_json(&reply),
            json!({"error": "upstream_error", "status": status, "request_id": "rid-1"})
        );
        assert!(
            header(&reply, "content-length").is_none(),
            "the proxy computes it"
        );
    }
    for status in [200u16, 301, 400, 404, 499] {
        let (_, replaced) = run(DEMO, &req("GET", "/orders"), status)?;
        assert!(replaced.is_none(), "{status}");
    }
    Ok(())
}

#[test]
fn error_rules_follow_their_request_match_and_keep_the_status_by_default() -> Result<(), ConfigError>
{
    let (_, replaced) = run(DEMO, &req("GET", "/api/items/7"), 404)?;
    let reply = replaced.ok_or_else(|| ConfigError::at("", "404 not replaced"))?;
    assert_eq!(reply.status, 404);
    assert_eq!(
        body_json(&reply),
        json!({"error": "not_found", "path": "/api/items/7"})
    );
    let (_, replaced) = run(DEMO, &req("GET", "/web/items/7"), 404)?;
    assert!(replaced.is_none());
    Ok(())
}

#[test]
fn substituted_values_are_escaped_in_json() -> Result<(), ConfigError> {
    let (_, replaced) = run(
        DEMO,
        &[
            (":method", "GET"),
            (":path", "/api/\"}x"),
            ("x-request-id", "a\"b\\c"),
        ],
        404,
    )?;
    let reply = replaced.ok_or_else(|| ConfigError::at("", "not replaced"))?;
    assert_eq!(
        body_json(&reply),
        json!({"error": "not_found", "path": "/api/\"}x"})
    );
    let (_, replaced) = run(
        DEMO,
        &[(":method", "GET"), (":path", "/"), ("x-request-id", "a\"b")],
        500,
    )?;
    let reply = replaced.ok_or_else(|| ConfigError::at("", "not replaced"))?;
    assert_eq!(body_json(&reply)["request_id"], "a\"b");
    Ok(())
}

#[test]
fn status_ranges() {
    let r = |t: &str| StatusRange::parse(t).map(|s| (s.lo, s.hi));
    assert_eq!(r("5xx"), Ok((500, 599)));
    assert_eq!(r("404"), Ok((404, 404)));
    assert_eq!(r("500-504"), Ok((500, 504)));
    for bad in ["6xx", "0xx", "55xx", "abc", "600", "99", "504-500", ""] {
        assert!(r(bad).is_err(), "{bad}");
    }
}

#[test]
fn metrics_count_by_rule() -> Result<(), ConfigError> {
    tollgate_sdk::metrics::mock::reset();
    run(DEMO, &req("POST", "/admin/x"), 200)?;
    run(DEMO, &req("GET", "/x"), 503)?;
    run(DEMO, &req("GET", "/x"), 503)?;
    run(DEMO, &req("GET", "/x"), 200)?;
    let v = tollgate_sdk::metrics::mock::value;
    assert_eq!(v("rule=.=maintenance;.;custom_response_replies"), Some(1));
    assert_eq!(v("rule=.=upstream_5xx;.;custom_response_replies"), Some(2));
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    tollgate_sdk::testing::assert_refused_at::<CustomResponseConfig>(&[
        (r#"{}"#, "local"),
        (
            r#"{"local": [{"respond": {"body": "x"}}]}"#,
            "local[0].respond.status",
        ),
        (
            r#"{"local": [{"respond": {"status": 99}}]}"#,
            "local[0].respond.status",
        ),
        (
            r#"{"local": [{"respond": {"status": 200, "body": "{{nope}}"}}]}"#,
            "local[0].respond.body",
        ),
        (
            r#"{"local": [{"respond": {"status": 200, "json": {"a": ["{{x}}"]}}}]}"#,
            "local[0].respond.json",
        ),
        (
            r#"{"local": [{"respond": {"status": 200, "body": "a", "json": {}}}]}"#,
            "local[0].respond",
        ),
        (
            r#"{"local": [{"respond": {"status": 200, "headers": [["content-length", "1"]]}}]}"#,
            "local[0].respond.headers[0]",
        ),
        (
            r#"{"local": [{"respond": {"status": 200, "headers": [["bad name", "1"]]}}]}"#,
            "local[0].respond.headers[0]",
        ),
        (
            r#"{"local": [{"match": {"path_prefix": "admin"}, "respond": {"status": 200}}]}"#,
            "local[0].match.path_prefix",
        ),
        (
            r#"{"local": [{"match": {"methods": ["get"]}, "respond": {"status": 200}}]}"#,
            "local[0].match.methods[0]",
        ),
        (
            r#"{"errors": [{"status": ["7xx"], "respond": {}}]}"#,
            "errors[0].status[0]",
        ),
        (
            r#"{"errors": [{"status": [], "respond": {}}]}"#,
            "errors[0].status",
        ),
    ]);
}
