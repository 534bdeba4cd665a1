//! Native tests: every bypass attempt of the README's table, the body limit, metrics, logs and
//! configuration errors.

use std::rc::Rc;

use tollgate_sdk::body::{Outcome, feed_request};
use tollgate_sdk::metrics::{mock as metrics, stat_name};
use tollgate_sdk::{ConfigError, HeaderList, HeaderMap, HttpFilter, Request};

use crate::{METRIC, RequestBlockConfig, RequestBlockFilter};

const DEMO: &str = include_str!("../demo.json");

fn config(json: &str) -> Result<Rc<RequestBlockConfig>, ConfigError> {
    tollgate_sdk::config::parse::<RequestBlockConfig>(json.as_bytes()).map(Rc::new)
}

fn status(config: &Rc<RequestBlockConfig>, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut list = HeaderList::from([(":method", "GET"), (":path", path)]);
    for (n, v) in headers {
        list.add(n, v);
    }
    let mut req = Request::new(&mut list);
    RequestBlockFilter::new(Rc::clone(config)).on_request_headers(&mut req, true);
    req.local_reply().map_or(200, |r| r.status)
}

/// Every bypass attempt of the README's table: (path, rule expected to block it).
const ATTEMPTS: &str = include_str!("../tests/bypass.tsv");

fn attempts() -> impl Iterator<Item = (&'static str, &'static str)> {
    ATTEMPTS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split_once('\t'))
}

#[test]
fn every_bypass_attempt_is_blocked_by_its_rule() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    assert!(attempts().count() >= 30);
    for (path, rule) in attempts() {
        let index = c.match_headers(path, &[]);
        let name = index.and_then(|i| c.rules.get(i)).map(|r| r.name.as_str());
        assert_eq!(name, Some(rule), "{path}");
        assert_eq!(status(&c, path, &[]), 403, "{path}");
    }
    Ok(())
}

#[test]
fn ordinary_requests_go_through() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    for path in [
        "/",
        "/shop/administration-guide",
        "/public/admin",
        "/public/a/b",
        "/search?q=union%20station",
        "/search?q=select",
        "/files/..foo",
        "/.well-known/security.txt",
        "/a%2",
    ] {
        assert_eq!(status(&c, path, &[("user-agent", "curl/8")]), 200, "{path}");
    }
    Ok(())
}

#[test]
fn header_values_and_the_log_and_metric() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let name = stat_name(METRIC, &[("rule", "scanner")]);
    let before = metrics::value(&name).unwrap_or(0);
    assert_eq!(status(&c, "/", &[("user-agent", "SQLMap/1.7")]), 403);
    assert_eq!(
        status(&c, "/", &[("User-Agent", "x"), ("user-agent", "nikto")]),
        403
    );
    assert_eq!(status(&c, "/", &[("user-agent", "Mozilla/5.0")]), 200);
    assert_eq!(metrics::value(&name).unwrap_or(0) - before, 2);
    Ok(())
}

#[test]
fn body_inspected_up_to_the_limit() -> Result<(), ConfigError> {
    let c = config(&DEMO.replace("\"max_body_bytes\": 8192", "\"max_body_bytes\": 64"))?;
    let run = |chunks: &[&[u8]]| {
        let mut filter = RequestBlockFilter::new(Rc::clone(&c));
        let mut list = HeaderList::from([(":method", "POST"), (":path", "/comment")]);
        filter.on_request_headers(&mut Request::new(&mut list), false);
        feed_request(&mut filter, chunks)
    };
    let blocked = |o: &Outcome| matches!(o, Outcome::Answered(403));
    assert!(blocked(&run(&[b"hello <scr", b"ipt>alert(1)</script>"])));
    assert!(blocked(&run(&[b"text=%3CSCRIPT%3Ealert(1)"])));
    assert!(blocked(&run(&[b"text=%253Cscript"])));
    assert!(!blocked(&run(&[b"hello world"])));
    let padded = [vec![b'a'; 64], b"<script>".to_vec()].concat();
    assert!(
        !blocked(&run(&[&padded])),
        "past max_body_bytes the body is not read (documented)"
    );
    Ok(())
}

#[test]
fn case_sensitive_patterns_when_asked() -> Result<(), ConfigError> {
    let c = config(
        r#"{"rules": [{"name": "x", "path": {"prefix": "/Admin", "ignore_case": false}}]}"#,
    )?;
    assert_eq!(status(&c, "/Admin", &[]), 403);
    assert_eq!(status(&c, "/admin", &[]), 200);
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    let err = |json: &str| match config(json) {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    };
    for (json, at) in [
        (r#"{"rules": []}"#, "rules"),
        (
            r#"{"rules": [{"name": "a b", "path": {"prefix": "/"}}]}"#,
            "rules[0].name",
        ),
        (
            r#"{"rules": [{"name": "a", "path": {"prefix": "/"}}, {"name": "a", "path": {"prefix": "/"}}]}"#,
            "rules[1].name",
        ),
        (r#"{"rules": [{"name": "a"}]}"#, "rules[0]"),
        (
            r#"{"rules": [{"name": "a", "path": {"prefix": "/"}, "query": {"prefix": "x"}}]}"#,
            "rules[0]",
        ),
        (
            r#"{"rules": [{"name": "a", "header": "x"}]}"#,
            "rules[0].value",
        ),
        (
            r#"{"rules": [{"name": "a", "header": "X-A", "value": {"contains": "x"}}]}"#,
            "rules[0].header",
        ),
        (
            r#"{"rules": [{"name": "a", "path": {"regex": "(a"}}]}"#,
            "rules[0].path.regex",
        ),
        (
            r#"{"rules": [{"name": "a", "path": {"prefix": "/", "exact": "/"}}]}"#,
            "rules[0].path",
        ),
        (
            r#"{"rules": [{"name": "a", "body": {"contains": ""}}]}"#,
            "rules[0].body.contains",
        ),
        (
            r#"{"rules": [{"name": "a", "path": {"prefix": "/"}}], "max_body_bytes": 99999999}"#,
            "max_body_bytes",
        ),
        (
            r#"{"rules": [{"name": "a", "body": {"contains": "x"}}], "max_body_bytes": 0}"#,
            "max_body_bytes",
        ),
        (
            r#"{"rules": [{"name": "a", "path": {"prefix": "/"}}], "status": 99}"#,
            "status",
        ),
    ] {
        let e = err(json);
        assert!(
            e.starts_with(&format!("bad configuration at {at}:")),
            "{json}: {e}"
        );
    }
}
