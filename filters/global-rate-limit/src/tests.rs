//! Native tests of the filter logic: descriptors, the service's answers, failures, headers.
// Test code only (never in the module): a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::rc::Rc;

use tollgate_sdk::grpc::{DEADLINE_EXCEEDED, GrpcError, UNAVAILABLE};
use tollgate_sdk::{Action, HeaderList, HttpFilter, Request, Response};

use crate::proto::{self, Descriptor, put_bytes, put_uint};
use crate::{GlobalRateLimitConfig, GlobalRateLimitFilter};

fn config(json: &str) -> Rc<GlobalRateLimitConfig> {
    Rc::new(tollgate_sdk::config::parse::<GlobalRateLimitConfig>(json.as_bytes()).unwrap())
}

const ALL_ACTIONS: &str = r#"{
  "domain": "shop", "cluster": "rls", "timeout_ms": 50,
  "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
  "rate_limits": [
    {"actions": [{"remote_address": {}}]},
    {"actions": [{"request_headers": {"header_name": "x-tenant", "descriptor_key": "tenant"}},
                 {"request_headers": {"header_name": ":method", "descriptor_key": "method"}}]},
    {"actions": [{"generic_key": {"descriptor_value": "all"}},
                 {"request_headers": {"header_name": "x-plan", "descriptor_key": "plan", "skip_if_absent": true}}],
     "hits_addend": {"number": 3}},
    {"actions": [{"header_value_match": {"descriptor_value": "admin", "headers": [
        {"name": ":path", "string_match": {"prefix": "/ADMIN", "ignore_case": true}}]}}]},
    {"actions": [{"header_value_match": {"descriptor_key": "anon", "descriptor_value": "yes", "expect_match": false,
        "headers": [{"name": "authorization"}]}}]}
  ]
}"#;

/// Runs the request callback and returns the descriptors sent (decoded back from the message).
fn descriptors_for(
    cfg: &Rc<GlobalRateLimitConfig>,
    headers: &[(&str, &str)],
) -> Option<Vec<Descriptor>> {
    let mut filter = GlobalRateLimitFilter::new(Rc::clone(cfg));
    let mut h = HeaderList::from_iter(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let action = filter.on_request_headers(&mut Request::new(&mut h), true);
    let calls = filter.take_calls();
    if calls.is_empty() {
        assert_eq!(action, Action::Continue);
        return None;
    }
    assert_eq!(action, Action::Pause);
    let call = calls[0].call();
    assert_eq!(
        (
            call.cluster.as_str(),
            call.service.as_str(),
            call.method.as_str()
        ),
        (
            "rls",
            "envoy.service.ratelimit.v3.RateLimitService",
            "ShouldRateLimit"
        )
    );
    assert_eq!(call.timeout.as_millis(), 50);
    Some(decode_request(&call.message))
}

/// A minimal reader of our own request encoding (domain checked, descriptors returned).
fn decode_request(bytes: &[u8]) -> Vec<Descriptor> {
    fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>, u64)> {
        let mut out = Vec::new();
        let varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte < 0x80 {
                    return v;
                }
            }
        };
        while !b.is_empty() {
            let tag = varint(&mut b);
            if tag & 7 == 2 {
                let len = varint(&mut b) as usize;
                out.push((tag >> 3, b[..len].to_vec(), 0));
                b = &b[len..];
            } else {
                let v = varint(&mut b);
                out.push((tag >> 3, Vec::new(), v));
            }
        }
        out
    }
    let top = fields(bytes);
    assert_eq!(top[0], (1, b"shop".to_vec(), 0));
    top[1..]
        .iter()
        .map(|(n, d, _)| {
            assert_eq!(*n, 2);
            let mut desc = Descriptor::default();
            for (f, b, _) in fields(d) {
                match f {
                    1 => {
                        let e = fields(&b);
                        desc.entries.push((
                            String::from_utf8(e[0].1.clone()).unwrap(),
                            String::from_utf8(e[1].1.clone()).unwrap(),
                        ));
                    }
                    3 => desc.hits_addend = Some(fields(&b).first().map_or(0, |x| x.2)),
                    _ => panic!("field {f}"),
                }
            }
            desc
        })
        .collect()
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_action_builds_its_entry_and_missing_parts_drop_the_descriptor() {
    let cfg = config(ALL_ACTIONS);
    tollgate_sdk::peer::mock::set_source_address(Some("10.1.2.3:4567"));
    let got = descriptors_for(
        &cfg,
        &[
            (":method", "GET"),
            (":path", "/admin/users"),
            ("x-tenant", "acme"),
            ("x-plan", "gold"),
        ],
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            Descriptor {
                entries: entries(&[("remote_address", "10.1.2.3")]),
                hits_addend: None
            },
            Descriptor {
                entries: entries(&[("tenant", "acme"), ("method", "GET")]),
                hits_addend: None
            },
            Descriptor {
                entries: entries(&[("generic_key", "all"), ("plan", "gold")]),
                hits_addend: Some(3)
            },
            Descriptor {
                entries: entries(&[("header_match", "admin")]),
                hits_addend: None
            },
            Descriptor {
                entries: entries(&[("anon", "yes")]),
                hits_addend: None
            },
        ]
    );
    // No peer, no tenant, no plan (skipped entry), a public path, authenticated.
    tollgate_sdk::peer::mock::set_source_address(None);
    let got = descriptors_for(
        &cfg,
        &[
            (":method", "GET"),
            (":path", "/shop"),
            ("authorization", "x"),
        ],
    )
    .unwrap();
    assert_eq!(
        got,
        vec![Descriptor {
            entries: entries(&[("generic_key", "all")]),
            hits_addend: Some(3)
        }]
    );
}

#[test]
fn a_request_without_any_descriptor_is_not_sent() {
    let cfg = config(
        r#"{"domain": "shop", "cluster": "rls", "timeout_ms": 50,
            "rate_limits": [{"actions": [{"request_headers": {"header_name": "x-key", "descriptor_key": "key"}}]}]}"#,
    );
    assert_eq!(descriptors_for(&cfg, &[(":path", "/")]), None);
}

#[test]
fn routes_pick_their_descriptor_sets() {
    let cfg = config(
        r#"{"domain": "shop", "cluster": "rls", "timeout_ms": 50, "routes": {
            "default": {"rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "default"}}]}]},
            "routes": [
              {"match": {"path_prefix": "/login"}, "config": {"rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "login"}}]}]}},
              {"match": {"path_prefix": "/health"}, "config": {"rate_limits": []}}
            ]}}"#,
    );
    let one = |path| descriptors_for(&cfg, &[(":path", path)]).map(|d| d[0].entries[0].1.clone());
    assert_eq!(one("/login"), Some("login".into()));
    assert_eq!(one("/items"), Some("default".into()));
    assert_eq!(one("/health"), None);
}

/// A `RateLimitResponse` with one status per `(code, limit, unit, name, remaining, reset)`.
fn response(
    overall: u64,
    statuses: &[(u64, u32, u32, &str, u32, i64)],
    extra: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut msg = Vec::new();
    put_uint(&mut msg, 1, overall);
    for (code, rpu, unit, name, remaining, reset) in statuses {
        let mut s = Vec::new();
        put_uint(&mut s, 1, *code);
        let mut l = Vec::new();
        put_uint(&mut l, 1, u64::from(*rpu));
        put_uint(&mut l, 2, u64::from(*unit));
        put_bytes(&mut l, 3, name.as_bytes());
        put_bytes(&mut s, 2, &l);
        put_uint(&mut s, 3, u64::from(*remaining));
        let mut d = Vec::new();
        put_uint(&mut d, 1, *reset as u64);
        put_bytes(&mut s, 4, &d);
        put_bytes(&mut msg, 2, &s);
    }
    extra(&mut msg);
    msg
}

fn header(field: u32, key: &str, value: &str) -> impl FnOnce(&mut Vec<u8>) {
    let (key, value) = (key.to_string(), value.to_string());
    move |msg: &mut Vec<u8>| {
        let mut h = Vec::new();
        put_bytes(&mut h, 1, key.as_bytes());
        put_bytes(&mut h, 2, value.as_bytes());
        put_bytes(msg, field, &h);
    }
}

/// Sends a request through `cfg`, answers its call with `answer`; returns the request headers,
/// the action, the local reply and the upstream response's headers.
fn exchange(
    cfg: &Rc<GlobalRateLimitConfig>,
    answer: Result<Vec<u8>, GrpcError>,
) -> (
    HeaderList,
    Action,
    Option<tollgate_sdk::LocalReply>,
    HeaderList,
) {
    tollgate_sdk::peer::mock::set_source_address(Some("10.1.2.3:4567"));
    let mut filter = GlobalRateLimitFilter::new(Rc::clone(cfg));
    let mut h = HeaderList::from([(":method", "GET"), (":path", "/"), ("x-tenant", "acme")]);
    filter.on_request_headers(&mut Request::new(&mut h), true);
    let call = filter.take_calls().remove(0);
    let mut req = Request::new(&mut h);
    let action = call.complete(&mut filter, &mut req, answer);
    let reply = req.take_local_reply();
    let mut resp_headers = HeaderList::from([(":status", "200")]);
    if reply.is_none() {
        filter.on_response_headers(&mut Response::new(&mut resp_headers), true);
    }
    (h, action, reply, resp_headers)
}

#[test]
fn ok_adds_the_services_headers_and_x_ratelimit() {
    let cfg = config(ALL_ACTIONS);
    let msg = response(
        1,
        &[(1, 10, 2, "per-ip", 7, 42), (1, 100, 3, "", 99, 3000)],
        |m| {
            header(3, "x-resp", "r")(m);
            header(4, "x-req", "q")(m);
        },
    );
    let (req, action, reply, resp) = exchange(&cfg, Ok(msg));
    assert_eq!(action, Action::Continue);
    assert!(reply.is_none());
    assert_eq!(req.get_all("x-req"), vec!["q"]);
    assert_eq!(resp.get_all("x-resp"), vec!["r"]);
    assert_eq!(
        resp.get_all("x-ratelimit-limit"),
        vec!["10, 10;w=60;name=\"per-ip\", 100;w=3600"]
    );
    assert_eq!(resp.get_all("x-ratelimit-remaining"), vec!["7"]);
    assert_eq!(resp.get_all("x-ratelimit-reset"), vec!["42"]);
}

#[test]
fn over_limit_answers_429_with_body_and_headers() {
    let cfg = config(ALL_ACTIONS);
    let msg = response(2, &[(2, 2, 1, "", 0, 1)], |m| {
        header(3, "x-why", "busy")(m);
        put_bytes(m, 5, b"slow down\n");
    });
    let (_, action, reply, _) = exchange(&cfg, Ok(msg));
    assert_eq!(action, Action::Pause);
    let reply = reply.unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, b"slow down\n");
    let get = |n: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-why"), Some("busy"));
    assert_eq!(get("x-envoy-ratelimited"), Some("true"));
    assert_eq!(get("x-ratelimit-limit"), Some("2, 2;w=1"));
    assert_eq!(get("x-ratelimit-remaining"), Some("0"));
    assert_eq!(get("content-type"), Some("text/plain"));
    let stat = tollgate_sdk::metrics::stat_name(crate::config::METRIC, &[("result", "over_limit")]);
    assert!(
        tollgate_sdk::metrics::mock::value(&stat).is_some_and(|v| v > 0),
        "{stat}"
    );
}

#[test]
fn configured_status_and_no_envoy_header() {
    let cfg = config(
        r#"{"domain": "shop", "cluster": "rls", "timeout_ms": 50, "rate_limited_status": 503,
            "disable_x_envoy_ratelimited_header": true,
            "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "x"}}]}]}"#,
    );
    let (_, _, reply, _) = exchange(&cfg, Ok(response(2, &[], |_| {})));
    let reply = reply.unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body.is_empty());
    assert!(
        reply
            .headers
            .iter()
            .all(|(n, _)| n != "x-envoy-ratelimited" && n != "content-type")
    );
}

#[test]
fn failures_let_through_unless_failure_mode_deny() {
    let timeout = || GrpcError::Status {
        cluster: "rls".into(),
        code: DEADLINE_EXCEEDED,
        message: String::new(),
    };
    let down = || GrpcError::Status {
        cluster: "rls".into(),
        code: UNAVAILABLE,
        message: "no healthy upstream".into(),
    };
    let allow = config(ALL_ACTIONS);
    for answer in [
        Err(timeout()),
        Err(down()),
        Ok(b"\x12\x05ab".to_vec()),
        Ok(response(0, &[], |_| {})),
    ] {
        let (_, action, reply, resp) = exchange(&allow, answer);
        assert_eq!(action, Action::Continue);
        assert!(reply.is_none());
        assert!(resp.get_all("x-ratelimit-limit").is_empty());
    }
    let deny = config(
        r#"{"domain": "shop", "cluster": "rls", "timeout_ms": 50, "failure_mode_deny": true, "status_on_error": 503,
            "rate_limits": [{"actions": [{"generic_key": {"descriptor_value": "x"}}]}]}"#,
    );
    for answer in [Err(timeout()), Err(down())] {
        let (_, action, reply, _) = exchange(&deny, answer);
        assert_eq!(action, Action::Pause);
        let reply = reply.unwrap();
        assert_eq!(reply.status, 503);
        assert!(reply.body.is_empty());
    }
}

#[test]
fn x_ratelimit_headers_skip_statuses_without_limit_or_unit() {
    let statuses = vec![
        proto::DescriptorStatus {
            code: proto::Code::Ok,
            current_limit: None,
            limit_remaining: 0,
            reset_seconds: 0,
        },
        proto::DescriptorStatus {
            code: proto::Code::Ok,
            current_limit: Some(proto::CurrentLimit {
                requests_per_unit: 5,
                unit: 0,
                name: "n".into(),
            }),
            limit_remaining: 4,
            reset_seconds: 9,
        },
    ];
    assert_eq!(
        crate::x_ratelimit_headers(&statuses),
        vec![
            ("x-ratelimit-limit".to_string(), "5".to_string()),
            ("x-ratelimit-remaining".to_string(), "4".to_string()),
            ("x-ratelimit-reset".to_string(), "9".to_string()),
        ]
    );
    assert!(crate::x_ratelimit_headers(&[]).is_empty());
}

#[test]
fn bad_configurations_name_the_field() {
    let bad = |json: &str, field: &str| {
        let err =
            tollgate_sdk::config::parse::<GlobalRateLimitConfig>(json.as_bytes()).unwrap_err();
        assert_eq!(err.path(), field, "{json}: {err}");
    };
    let set = r#"[{"actions": [{"generic_key": {"descriptor_value": "x"}}]}]"#;
    bad(
        &format!(r#"{{"domain": "", "cluster": "rls", "rate_limits": {set}}}"#),
        "domain",
    );
    bad(
        &format!(r#"{{"domain": "d", "cluster": "", "rate_limits": {set}}}"#),
        "cluster",
    );
    bad(
        &format!(r#"{{"domain": "d", "cluster": "c", "timeout_ms": 0, "rate_limits": {set}}}"#),
        "timeout_ms",
    );
    bad(
        &format!(
            r#"{{"domain": "d", "cluster": "c", "rate_limited_status": 99, "rate_limits": {set}}}"#
        ),
        "rate_limited_status",
    );
    bad(
        &format!(
            r#"{{"domain": "d", "cluster": "c", "status_on_error": 600, "rate_limits": {set}}}"#
        ),
        "status_on_error",
    );
    bad(r#"{"domain": "d", "cluster": "c"}"#, "rate_limits");
    bad(
        r#"{"domain": "d", "cluster": "c", "rate_limits": [{"actions": []}]}"#,
        "rate_limits[0].actions",
    );
    bad(
        r#"{"domain": "d", "cluster": "c", "rate_limits": [{"actions": [{"request_headers": {"header_name": "x", "descriptor_key": ""}}]}]}"#,
        "rate_limits[0].actions[0].request_headers.descriptor_key",
    );
    bad(
        r#"{"domain": "d", "cluster": "c", "rate_limits": [{"actions": [{"header_value_match": {"descriptor_value": "v", "headers": [{"name": "x", "string_match": {"exact": "a", "prefix": "b"}}]}}]}]}"#,
        "rate_limits[0].actions[0].header_value_match.headers[0].string_match",
    );
    bad(
        &format!(
            r#"{{"domain": "d", "cluster": "c", "rate_limits": {set}, "routes": {{"default": {{"rate_limits": {set}}}}}}}"#
        ),
        "rate_limits",
    );
    bad(
        r#"{"domain": "d", "cluster": "c", "enable_x_ratelimit_headers": "DRAFT_VERSION_04", "rate_limits": []}"#,
        "enable_x_ratelimit_headers",
    );
}
