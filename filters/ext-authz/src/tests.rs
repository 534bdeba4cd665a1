//! Native tests of the decision logic and of the stream flow, callouts answered by hand.

use super::*;
use tollgate_sdk::body;
use tollgate_sdk::callout::PendingCallout;
use tollgate_sdk::{HeaderList, HeaderMap};

fn parse(json: &str) -> Config {
    match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(config) => config,
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

fn demo() -> Config {
    parse(include_str!("../demo.json"))
}

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> CalloutResponse {
    CalloutResponse::new(
        status,
        headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body.as_bytes().to_vec(),
    )
}

fn request() -> HeaderList {
    HeaderList::from([
        (":method", "POST"),
        (":path", "/orders?id=1"),
        (":authority", "shop.example.com"),
        ("Authorization", "Bearer abc"),
        ("x-api-key", "k1"),
        ("X-Api-Key", "k2"),
        ("x-secret", "not for the service"),
        ("content-length", "5"),
    ])
}

fn one_call(filter: &mut ExtAuthz) -> PendingCallout<ExtAuthz> {
    let mut calls = filter.callouts.take();
    assert_eq!(calls.len(), 1, "expected one callout, got {calls:?}");
    calls.remove(0)
}

#[test]
fn demo_config_parses_and_bad_fields_are_named() {
    assert_eq!(demo().cluster, "authz");
    let bad = |json: &str| match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(c) => unreachable!("accepted {c:?}"),
        Err(err) => err.to_string(),
    };
    assert!(bad(r#"{"cluster": ""}"#).contains("at cluster"));
    assert!(bad(r#"{"cluster": "a", "timeout_ms": 0}"#).contains("at timeout_ms"));
    assert!(bad(r#"{"cluster": "a", "status_on_error": 99}"#).contains("at status_on_error"));
    assert!(bad(r#"{"cluster": "a", "path_prefix": "x"}"#).contains("at path_prefix"));
    assert!(
        bad(r#"{"cluster": "a", "allowed_request_headers": ["ok", "bad name"]}"#)
            .contains("at allowed_request_headers[1]")
    );
    assert!(bad(r#"{"cluster": "a", "clustr": "b"}"#).contains("unknown field `clustr`"));
}

#[test]
fn check_request_carries_method_prefixed_path_and_selected_headers() {
    let config = demo();
    let mut headers = request();
    let call = ExtAuthz::check_request(&config, &Request::new(&mut headers));
    assert_eq!(call.cluster, "authz");
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/check/orders?id=1");
    assert_eq!(call.authority, "authz.local");
    assert_eq!(call.timeout, Duration::from_millis(500));
    let names: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    // Both duplicates of x-api-key, authorization always, never x-secret or content-length.
    assert_eq!(
        names,
        vec![
            ("authorization", "Bearer abc"),
            ("x-api-key", "k1"),
            ("x-api-key", "k2")
        ]
    );
    assert_eq!(call.check(), Ok(()));
}

#[test]
fn decisions_match_envoy_http_mode() {
    let config = demo();
    // 2xx allows, copying only the allowed headers.
    let allow = ExtAuthz::decide(
        &config,
        Ok(resp(
            200,
            &[("X-Auth-User", "ada"), ("x-internal", "no")],
            "",
        )),
    );
    assert_eq!(
        allow,
        Decision::Allow(vec![("x-auth-user".into(), "ada".into())])
    );
    // Other statuses deny with the service's status, headers and body.
    let deny = ExtAuthz::decide(
        &config,
        Ok(resp(
            401,
            &[("www-authenticate", "Bearer"), ("content-length", "4")],
            "nope",
        )),
    );
    assert_eq!(
        deny,
        Decision::Deny {
            status: 401,
            headers: vec![("www-authenticate".into(), "Bearer".into())],
            body: b"nope".to_vec()
        }
    );
    // 5xx and no response are failures: status_on_error (403), or allow in failure mode.
    let down = Err(CalloutError::NoResponse {
        cluster: "authz".into(),
    });
    let forbidden = Decision::Deny {
        status: 403,
        headers: vec![],
        body: vec![],
    };
    assert_eq!(ExtAuthz::decide(&config, down.clone()), forbidden);
    assert_eq!(
        ExtAuthz::decide(&config, Ok(resp(503, &[], "oops"))),
        forbidden
    );
    let open = parse(r#"{"cluster": "authz", "failure_mode_allow": true}"#);
    assert_eq!(ExtAuthz::decide(&open, down), Decision::Allow(vec![]));
}

#[test]
fn stream_pauses_then_allow_copies_headers() {
    let mut filter = ExtAuthz::new(Rc::new(demo()));
    let mut headers = request();
    let action = filter.on_request_headers(&mut Request::new(&mut headers), true);
    assert_eq!(action, Action::Pause);
    let call = one_call(&mut filter);
    let mut req = Request::new(&mut headers);
    let action = call.complete(
        &mut filter,
        &mut req,
        Ok(resp(200, &[("x-auth-user", "ada")], "")),
    );
    assert_eq!(action, Action::Continue);
    assert!(req.local_reply().is_none());
    assert_eq!(headers.get_all("x-auth-user"), vec!["ada"]);
}

#[test]
fn stream_denied_gets_the_services_answer() {
    let mut filter = ExtAuthz::new(Rc::new(demo()));
    let mut headers = request();
    filter.on_request_headers(&mut Request::new(&mut headers), true);
    let call = one_call(&mut filter);
    let mut req = Request::new(&mut headers);
    call.complete(
        &mut filter,
        &mut req,
        Ok(resp(302, &[("location", "/login")], "")),
    );
    let reply = req.local_reply().cloned();
    assert_eq!(reply.as_ref().map(|r| r.status), Some(302));
    assert_eq!(
        reply.map(|r| r.headers),
        Some(vec![("location".into(), "/login".into())])
    );
}

/// Runs `headers` through a filter for `config` whose service answers `answer`: what the
/// check request carried, and the local reply status if any.
fn through(
    config: Config,
    headers: &mut HeaderList,
    answer: Result<CalloutResponse, CalloutError>,
) -> (Vec<(String, String)>, Option<u16>) {
    let mut filter = ExtAuthz::new(Rc::new(config));
    assert_eq!(
        filter.on_request_headers(&mut Request::new(headers), true),
        Action::Pause
    );
    let call = one_call(&mut filter);
    let sent = call.request().headers.clone();
    let mut req = Request::new(headers);
    call.complete(&mut filter, &mut req, answer);
    (sent, req.local_reply().map(|r| r.status))
}

#[test]
fn client_copies_of_upstream_headers_never_reach_the_upstream() {
    let spoofed = || {
        let mut headers = request();
        headers.add("X-Auth-User", "admin");
        headers.add("x-auth-scopes", "everything");
        headers
    };
    // The service allows without setting them: the client's copies are gone.
    let mut headers = spoofed();
    let (_, reply) = through(demo(), &mut headers, Ok(resp(200, &[], "")));
    assert_eq!(reply, None);
    assert!(headers.get_all("x-auth-user").is_empty(), "{headers:?}");
    assert!(headers.get_all("x-auth-scopes").is_empty());
    assert_eq!(headers.get_all("x-secret"), vec!["not for the service"]);
    // It sets one: only its value.
    let mut headers = spoofed();
    through(
        demo(),
        &mut headers,
        Ok(resp(200, &[("x-auth-user", "ada")], "")),
    );
    assert_eq!(headers.get_all("x-auth-user"), vec!["ada"]);
    assert!(headers.get_all("x-auth-scopes").is_empty());
    // The service is down and failure_mode_allow lets the request through: still gone.
    let mut open = demo();
    open.failure_mode_allow = true;
    let mut headers = spoofed();
    let (_, reply) = through(
        open,
        &mut headers,
        Err(CalloutError::NoResponse {
            cluster: "authz".into(),
        }),
    );
    assert_eq!(reply, None);
    assert!(headers.get_all("x-auth-user").is_empty(), "{headers:?}");
    // A header the service reads and may set: it still gets the client's value to judge.
    let mut reads = demo();
    reads.allowed_request_headers.push("x-auth-user".into());
    let mut headers = spoofed();
    let (sent, _) = through(reads, &mut headers, Ok(resp(200, &[], "")));
    assert!(
        sent.contains(&("x-auth-user".into(), "admin".into())),
        "{sent:?}"
    );
    assert!(headers.get_all("x-auth-user").is_empty());
}

#[test]
fn stripping_client_copies_can_be_turned_off() {
    let config = parse(
        r#"{"cluster": "authz", "allowed_upstream_headers": ["x-auth-user"], "strip_client_upstream_headers": false}"#,
    );
    let mut headers = request();
    headers.add("x-auth-user", "admin");
    through(config, &mut headers, Ok(resp(200, &[], "")));
    // As native ext_authz: kept when the service sets nothing.
    assert_eq!(headers.get_all("x-auth-user"), vec!["admin"]);
    assert!(demo().strip_client_upstream_headers, "on by default");
}

#[test]
fn statuses_http_does_not_allow_as_an_answer_are_service_failures() {
    let forbidden = Decision::Deny {
        status: 403,
        headers: vec![],
        body: vec![],
    };
    let open = parse(r#"{"cluster": "authz", "failure_mode_allow": true}"#);
    for status in [0, 1, 99, 100, 101, 103, 199, 600, 999, 1000, u16::MAX] {
        let answer = || Ok(resp(status, &[("x-auth-user", "ada")], "continue"));
        assert_eq!(ExtAuthz::decide(&demo(), answer()), forbidden, "{status}");
        assert_eq!(
            ExtAuthz::decide(&open, answer()),
            Decision::Allow(vec![]),
            "{status}"
        );
    }
    // Through the stream: never a 1xx local reply.
    let mut headers = request();
    let (_, reply) = through(demo(), &mut headers, Ok(resp(100, &[], "")));
    assert_eq!(reply, Some(403));
    // The edges of what is allowed still decide as before.
    assert!(matches!(
        ExtAuthz::decide(&demo(), Ok(resp(200, &[], ""))),
        Decision::Allow(_)
    ));
    assert!(matches!(
        ExtAuthz::decide(&demo(), Ok(resp(499, &[], ""))),
        Decision::Deny { status: 499, .. }
    ));
}

/// A filter for `config` that has seen the request headers of a request with a body.
fn with_body(config: &str) -> ExtAuthz {
    let mut filter = ExtAuthz::new(Rc::new(parse(config)));
    let mut headers = request();
    // The headers go on (Envoy would hold the body back otherwise); nothing asked yet.
    assert_eq!(
        filter.on_request_headers(&mut Request::new(&mut headers), false),
        Action::Continue
    );
    assert!(filter.callouts.is_empty());
    filter
}

fn header_of<'a>(call: &'a PendingCallout<ExtAuthz>, name: &str) -> Option<&'a str> {
    call.request()
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

const PARTIAL: &str = r#"{"cluster": "authz", "with_request_body": {"max_request_bytes": 4, "allow_partial_message": true}}"#;
const STRICT: &str = r#"{"cluster": "authz", "with_request_body": {"max_request_bytes": 4}}"#;

#[test]
fn partial_body_sends_the_first_max_bytes_as_soon_as_they_are_in() {
    // Through the SDK's buffering (body::feed_request plays the host).
    let mut filter = with_body(PARTIAL);
    assert_eq!(
        body::feed_request(&mut filter, &[b"ab", b"cdef", b"gh"]),
        body::Outcome::Paused,
        "the stream waits for the service once 4 bytes are in"
    );
    let call = one_call(&mut filter);
    assert_eq!(call.request().body, b"abcd");
    assert_eq!(header_of(&call, "x-envoy-auth-partial-body"), Some("true"));

    // A body within the limit is sent whole.
    let mut filter = with_body(PARTIAL);
    assert_eq!(
        body::feed_request(&mut filter, &[b"a", b"b"]),
        body::Outcome::Paused
    );
    let call = one_call(&mut filter);
    assert_eq!(call.request().body, b"ab");
    assert_eq!(header_of(&call, "x-envoy-auth-partial-body"), Some("false"));
}

#[test]
fn body_past_the_limit_without_partial_is_413_and_the_service_is_not_asked() {
    let mut filter = with_body(STRICT);
    assert_eq!(
        body::feed_request(&mut filter, &[b"abc", b"def"]),
        body::Outcome::Answered(413)
    );
    assert!(filter.callouts.is_empty());
    // Exactly the limit: sent.
    let mut filter = with_body(STRICT);
    assert_eq!(
        body::feed_request(&mut filter, &[b"ab", b"cd"]),
        body::Outcome::Paused
    );
    assert_eq!(one_call(&mut filter).request().body, b"abcd");
    // A content-length above the limit is refused at the headers by the SDK.
    let filter = with_body(STRICT);
    let limit = filter.request_body_limit();
    assert_eq!(limit, Some(body::BodyLimit::refuse_above(4)));
    assert!(body::announced_too_large(4, Some("5")));
}

#[test]
fn allowed_body_streams_on_after_the_answer() {
    let mut filter = with_body(PARTIAL);
    body::feed_request(&mut filter, &[b"abcdef"]);
    let call = one_call(&mut filter);
    let mut headers = request();
    let mut req = Request::new(&mut headers);
    assert_eq!(
        call.complete(&mut filter, &mut req, Ok(resp(200, &[], ""))),
        Action::Continue
    );
    // Later chunks go through untouched, and the SDK asks for no more buffering.
    assert_eq!(filter.request_body_limit(), None);
    let mut rest: Vec<u8> = b"gh".to_vec();
    assert_eq!(
        filter.on_request_body(&mut Body::new(&mut rest), true),
        Action::Continue
    );
}

/// `envoy/ext-authz/envoy.yaml` and `wasmplugin.yaml` must carry exactly `demo.json`.
mod deployment_files {
    use serde_json::Value;
    use tollgate_sdk::testing::{check_bootstrap, check_cluster, check_wasmplugin, json};

    fn demo() -> Result<Value, String> {
        json(include_str!("../demo.json"), "demo.json")
    }

    fn accepted(json: &str) -> bool {
        tollgate_sdk::config::parse::<super::Config>(json.as_bytes()).is_ok()
    }

    #[test]
    fn envoy_bootstrap_embeds_the_demo_configuration() -> Result<(), String> {
        let (bootstrap, text) = check_bootstrap(
            "ext-authz",
            include_str!("../../../envoy/ext-authz/envoy.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&text));
        // The cluster the filter calls is defined.
        check_cluster("ext-authz", &bootstrap, &demo()?["cluster"].clone())
    }

    #[test]
    fn wasmplugin_carries_the_demo_configuration() -> Result<(), String> {
        let config = check_wasmplugin(
            "ext-authz",
            include_str!("../../../envoy/ext-authz/wasmplugin.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&config));
        Ok(())
    }
}
