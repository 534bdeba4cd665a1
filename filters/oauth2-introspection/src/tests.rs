//! Native tests of the decision, the introspection request, the cache and the stream flow
//! (callouts answered by hand).

use super::*;
use crate::env::mock;
use crate::verdict::{Identity, Refusal, Verdict, judge};
use serde_json::json;
use tollgate_sdk::callout::{CalloutError, CalloutResponse, PendingCallout};
use tollgate_sdk::{HeaderList, HeaderMap};

const NOW: u64 = 1_800_000_000;

fn parse(json: &str) -> Config {
    match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(config) => config,
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

fn demo() -> Config {
    parse(include_str!("../demo.json"))
}

fn answer(value: serde_json::Value) -> verdict::Answer {
    match value {
        serde_json::Value::Object(map) => map,
        other => unreachable!("not an object: {other}"),
    }
}

fn active() -> serde_json::Value {
    json!({
        "active": true, "client_id": "tollgate-service", "scope": "orders:read orders:write",
        "aud": "https://api.tollgate.test", "iat": NOW - 10, "exp": NOW + 100,
        "iss": "http://127.0.0.1:1"
    })
}

fn ok(body: serde_json::Value) -> Result<CalloutResponse, CalloutError> {
    Ok(CalloutResponse::new(
        200,
        vec![("content-type".into(), "application/json".into())],
        body.to_string().into_bytes(),
    ))
}

fn bad(json: &str) -> String {
    match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(c) => unreachable!("accepted {c:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn demo_config_parses_and_bad_fields_are_named() {
    let config = demo();
    assert_eq!(config.client_auth, ClientAuth::ClientSecretBasic);
    let base = r#""cluster": "idp", "authority": "a", "path": "/i", "client_id": "c", "client_secret": "s""#;
    assert!(bad(&format!("{{{base}, \"timeout_ms\": 0}}")).contains("at timeout_ms"));
    assert!(bad(&format!("{{{base}, \"status_on_error\": 200}}")).contains("at status_on_error"));
    assert!(
        bad(&format!("{{{base}, \"required_scopes\": [\"a b\"]}}"))
            .contains("at required_scopes[0]")
    );
    assert!(
        bad(&format!("{{{base}, \"cache\": {{\"slots\": 2000000}}}}")).contains("at cache.slots")
    );
    assert!(
        bad(&format!("{{{base}, \"client_auth\": \"private_key_jwt\"}}")).contains("client_auth")
    );
    assert!(bad(r#"{"cluster": "idp", "authority": "a", "path": "i", "client_id": "c", "client_secret": "s"}"#).contains("at path"));
    assert!(bad(r#"{"cluster": "idp", "authority": "a", "path": "/i", "client_id": "", "client_secret": "s"}"#).contains("at client_id"));
}

#[test]
fn bearer_tokens_are_taken_only_from_the_bearer_scheme() {
    assert_eq!(bearer_token("Bearer abc.DEF-_~+/="), Some("abc.DEF-_~+/="));
    assert_eq!(bearer_token("bearer abc"), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("Bearer a\"b"), None);
    assert_eq!(bearer_token("Bearer a,b"), None);
}

#[test]
fn the_request_authenticates_the_client_as_configured() {
    let config = demo();
    let call = introspection_request(&config, "tok+en/=");
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/token/introspection");
    assert_eq!(
        call.body,
        b"token=tok%2Ben%2F%3D&token_type_hint=access_token".to_vec()
    );
    let basic = call
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone());
    // base64("tollgate-gateway:tollgate-gateway-secret")
    assert_eq!(
        basic.as_deref(),
        Some("Basic dG9sbGdhdGUtZ2F0ZXdheTp0b2xsZ2F0ZS1nYXRld2F5LXNlY3JldA==")
    );
    assert_eq!(call.check(), Ok(()));

    let mut post = demo();
    post.client_auth = ClientAuth::ClientSecretPost;
    post.client_secret = "s&x=1".into();
    let call = introspection_request(&post, "t");
    assert!(call.headers.iter().all(|(n, _)| n != "authorization"));
    assert_eq!(
        String::from_utf8_lossy(&call.body),
        "token=t&token_type_hint=access_token&client_id=tollgate-gateway&client_secret=s%26x%3D1"
    );
}

#[test]
fn active_in_scope_and_audience_is_allowed_with_its_identity() {
    let verdict = judge(&demo(), &answer(active()), NOW);
    assert_eq!(
        verdict,
        Verdict::Allow(Identity {
            consumer: Some("tollgate-service".into()),
            claims: vec![("x-token-scope".into(), "orders:read orders:write".into())],
        })
    );
    let mut with_sub = active();
    with_sub["sub"] = json!("alice");
    let Verdict::Allow(identity) = judge(&demo(), &answer(with_sub), NOW) else {
        unreachable!()
    };
    assert_eq!(identity.consumer.as_deref(), Some("alice"));
}

#[test]
fn every_failed_check_is_refused_with_its_challenge() {
    let config = demo();
    let refused = |mutate: &dyn Fn(&mut serde_json::Value), now: u64| {
        let mut value = active();
        mutate(&mut value);
        match judge(&config, &answer(value), now) {
            Verdict::Refuse(refusal) => refusal,
            Verdict::Allow(identity) => unreachable!("allowed {identity:?}"),
        }
    };
    assert_eq!(
        refused(&|v| v["active"] = json!(false), NOW),
        Refusal::Inactive
    );
    assert_eq!(
        refused(&|v| v["active"] = json!("true"), NOW),
        Refusal::Inactive
    );
    // exp with the 30 s skew.
    assert_eq!(refused(&|_| {}, NOW + 130), Refusal::Expired);
    assert_eq!(
        refused(&|v| v["exp"] = json!("soon"), NOW),
        Refusal::Expired
    );
    assert_eq!(
        refused(&|v| v["nbf"] = json!(NOW + 31), NOW),
        Refusal::NotYetValid
    );
    assert_eq!(
        refused(&|v| v["aud"] = json!("https://other.test"), NOW),
        Refusal::WrongAudience
    );
    assert_eq!(
        refused(
            &|v| {
                v.as_object_mut().map(|o| o.remove("aud"));
            },
            NOW
        ),
        Refusal::WrongAudience
    );
    assert_eq!(
        refused(&|v| v["scope"] = json!("orders:write orders:readonly"), NOW),
        Refusal::InsufficientScope(vec!["orders:read".into()])
    );
    // aud as a list naming ours is fine.
    let mut listed = active();
    listed["aud"] = json!(["x", "https://api.tollgate.test"]);
    assert!(matches!(
        judge(&config, &answer(listed), NOW),
        Verdict::Allow(_)
    ));

    assert_eq!(
        Refusal::InsufficientScope(vec![]).reply(&config),
        (
            403,
            Some(
                "Bearer realm=\"tollgate\", error=\"insufficient_scope\", scope=\"orders:read\""
                    .into()
            )
        )
    );
    assert_eq!(
        Refusal::Expired.reply(&config),
        (
            401,
            Some("Bearer realm=\"tollgate\", error=\"invalid_token\"".into())
        )
    );
    assert_eq!(Refusal::Unavailable.reply(&config), (503, None));
}

#[test]
fn failures_to_answer_are_failures_never_answers() {
    assert!(
        verdict::answer(Err(CalloutError::NoResponse {
            cluster: "idp".into()
        }))
        .is_err()
    );
    assert!(
        verdict::answer(Ok(CalloutResponse::new(
            500,
            vec![],
            b"{\"active\":true}".to_vec()
        )))
        .is_err()
    );
    assert!(verdict::answer(Ok(CalloutResponse::new(200, vec![], b"active".to_vec()))).is_err());
    assert!(verdict::answer(Ok(CalloutResponse::new(200, vec![], b"{}".to_vec()))).is_err());
    let huge = format!(
        "{{\"active\":true,\"x\":\"{}\"}}",
        "a".repeat(verdict::MAX_BODY_BYTES)
    );
    assert!(verdict::answer(Ok(CalloutResponse::new(200, vec![], huge.into_bytes()))).is_err());
    assert!(verdict::answer(ok(json!({"active": false}))).is_ok());
}

fn request(authorization: Option<&str>) -> HeaderList {
    let mut headers = HeaderList::from([
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "api.example.com"),
        ("x-consumer", "forged"),
        ("x-token-scope", "admin"),
    ]);
    if let Some(value) = authorization {
        headers.add("authorization", value);
    }
    headers
}

fn one_call(filter: &mut Introspection) -> PendingCallout<Introspection> {
    let mut calls = filter.callouts.take();
    assert_eq!(calls.len(), 1, "expected one callout, got {calls:?}");
    calls.remove(0)
}

fn fresh() -> Rc<Config> {
    mock::reset_store();
    mock::set_now_s(NOW);
    Rc::new(demo())
}

#[test]
fn missing_token_is_401_and_forged_identity_headers_never_pass() {
    let config = fresh();
    let mut headers = request(None);
    let mut filter = Introspection::new(Rc::clone(&config));
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    let reply = req.take_local_reply().map(|r| (r.status, r.headers));
    assert!(
        matches!(&reply, Some((401, h)) if h.iter().any(|(n, v)| n == "www-authenticate" && v == "Bearer realm=\"tollgate\"")),
        "{reply:?}"
    );
    assert!(filter.callouts.take().is_empty());
    // Two authorization headers: refused, not the first or the last picked.
    let mut headers = request(Some("Bearer a"));
    headers.add("authorization", "Bearer b");
    let mut req = Request::new(&mut headers);
    assert_eq!(
        Introspection::new(config).on_request_headers(&mut req, true),
        Action::Pause
    );
    assert_eq!(req.take_local_reply().map(|r| r.status), Some(401));
}

#[test]
fn active_answer_admits_sets_identity_and_is_cached_until_exp() {
    let config = fresh();
    let mut headers = request(Some("Bearer good"));
    let mut filter = Introspection::new(Rc::clone(&config));
    assert_eq!(
        filter.on_request_headers(&mut Request::new(&mut headers), true),
        Action::Pause
    );
    let call = one_call(&mut filter);
    assert_eq!(
        String::from_utf8_lossy(&call.request().body),
        "token=good&token_type_hint=access_token"
    );
    let mut req = Request::new(&mut headers);
    assert_eq!(
        call.complete(&mut filter, &mut req, ok(active())),
        Action::Continue
    );
    assert!(req.local_reply().is_none());
    assert_eq!(headers.get_all("x-consumer"), vec!["tollgate-service"]);
    assert_eq!(
        headers.get_all("x-token-scope"),
        vec!["orders:read orders:write"]
    );

    // The same token again: no callout, same identity.
    let mut headers = request(Some("Bearer good"));
    let mut filter = Introspection::new(Rc::clone(&config));
    assert_eq!(
        filter.on_request_headers(&mut Request::new(&mut headers), true),
        Action::Continue
    );
    assert!(filter.callouts.take().is_empty());
    assert_eq!(headers.get_all("x-consumer"), vec!["tollgate-service"]);

    // Past exp (+ skew): the cached answer is not used, the server is asked again.
    mock::set_now_s(NOW + 100);
    let mut headers = request(Some("Bearer good"));
    let mut filter = Introspection::new(Rc::clone(&config));
    assert_eq!(
        filter.on_request_headers(&mut Request::new(&mut headers), true),
        Action::Pause
    );
    assert_eq!(filter.callouts.take().len(), 1);
}

#[test]
fn inactive_and_failed_answers_are_refused_and_never_cached() {
    let config = fresh();
    for (result, status) in [
        (ok(json!({"active": false})), 401),
        (
            Err(CalloutError::NoResponse {
                cluster: "idp".into(),
            }),
            503,
        ),
        (
            Ok(CalloutResponse::new(
                401,
                vec![],
                b"{\"error\":\"invalid_client\"}".to_vec(),
            )),
            503,
        ),
    ] {
        let mut headers = request(Some("Bearer revoked"));
        let mut filter = Introspection::new(Rc::clone(&config));
        assert_eq!(
            filter.on_request_headers(&mut Request::new(&mut headers), true),
            Action::Pause
        );
        let call = one_call(&mut filter);
        let mut req = Request::new(&mut headers);
        assert_eq!(call.complete(&mut filter, &mut req, result), Action::Pause);
        assert_eq!(req.take_local_reply().map(|r| r.status), Some(status));
        assert!(headers.get_all("x-consumer").is_empty());
    }
    assert_eq!(mock::store_len(), 0);
}

#[test]
fn the_cache_is_bounded_by_its_slots_and_keyed_by_configuration() {
    let config = fresh();
    let slots = 4;
    let cache = CacheConfig {
        slots,
        max_ttl_s: 60,
    };
    for i in 0..200 {
        let key = cache::Key::of(&config, &format!("token-{i}"));
        cache::put(&cache, &key, &answer(active()), NOW);
    }
    assert!(
        mock::store_len() <= slots as usize,
        "{} keys",
        mock::store_len()
    );
    // The last token put is found; under another client id it is not.
    let key = cache::Key::of(&config, "token-199");
    assert!(cache::get(&cache, &key, NOW).is_some());
    let mut other = demo();
    other.client_id = "someone-else".into();
    assert!(cache::get(&cache, &cache::Key::of(&other, "token-199"), NOW).is_none());
    // max_ttl_s caps a long exp.
    assert!(cache::get(&cache, &key, NOW + 60).is_none());
}

/// `envoy/oauth2-introspection/envoy.yaml`, `wasmplugin.yaml` and `trafficextension.yaml` must
/// carry exactly `demo.json`.
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
            "oauth2-introspection",
            include_str!("../../../envoy/oauth2-introspection/envoy.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&text));
        check_cluster(
            "oauth2-introspection",
            &bootstrap,
            &demo()?["cluster"].clone(),
        )
    }

    #[test]
    fn wasmplugin_carries_the_demo_configuration() -> Result<(), String> {
        let config = check_wasmplugin(
            "oauth2-introspection",
            include_str!("../../../envoy/oauth2-introspection/wasmplugin.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&config));
        Ok(())
    }
}
