//! Native tests: the RFC 9421 test vector, the parser's strictness, every refusal, replay
//! protection and the body digest through the stream flow.

use super::*;
use crate::env::mock;
use tollgate_sdk::{HeaderList, HeaderMap};

const NOW: u64 = 1_800_000_000;
const BILLING_SECRET: &str = "billing-demo-secret-do-not-use-01234567";

fn parse(json: &str) -> Config {
    match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(config) => config,
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

fn demo() -> Config {
    parse(include_str!("../demo.json"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hmac_b64(secret: &[u8], base: &str) -> String {
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!()
    };
    mac.update(base.as_bytes());
    b64(&mac.finalize().into_bytes())
}

fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", b64(&Sha256::digest(body)))
}

/// Signs a POST to `api.example.com` `path` with `body` the way a client does (the signature
/// base written out here by hand, not by the filter's code).
fn signed(
    path: &str,
    body: &[u8],
    created: u64,
    nonce: &str,
    secret: &str,
    key_id: &str,
) -> HeaderList {
    let (p, q) = path.split_once('?').unwrap_or((path, ""));
    let params = format!(
        "(\"@method\" \"@authority\" \"@path\" \"@query\" \"content-digest\");created={created};keyid=\"{key_id}\";nonce=\"{nonce}\";alg=\"hmac-sha256\""
    );
    let digest = content_digest(body);
    let base = format!(
        "\"@method\": POST\n\"@authority\": api.example.com\n\"@path\": {p}\n\"@query\": ?{q}\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    let signature = hmac_b64(secret.as_bytes(), &base);
    HeaderList::from([
        (":method", "POST"),
        (":path", path),
        (":authority", "api.example.com"),
        (":scheme", "https"),
        ("content-digest", digest.as_str()),
        ("signature-input", format!("sig1={params}").as_str()),
        ("signature", format!("sig1=:{signature}:").as_str()),
        ("x-consumer", "admin"),
    ])
}

fn fresh() -> Rc<Config> {
    mock::reset_store();
    mock::set_now_s(NOW);
    let config = demo();
    if let Err(err) = config.on_configured() {
        unreachable!("{err}");
    }
    Rc::new(config)
}

/// Runs headers then the body; the status of a local reply, or `None` when let through.
fn run(config: &Rc<Config>, headers: &mut HeaderList, body: &[u8]) -> Option<u16> {
    let mut filter = HmacAuth::new(Rc::clone(config));
    let mut req = Request::new(headers);
    let action = filter.on_request_headers(&mut req, body.is_empty());
    if let Some(reply) = req.take_local_reply() {
        assert_eq!(action, Action::Pause);
        return Some(reply.status);
    }
    if body.is_empty() {
        return None;
    }
    assert!(
        filter.request_body_limit().is_some(),
        "the body must be buffered"
    );
    let mut buffer = body.to_vec();
    let mut view = Body::new(&mut buffer);
    filter.on_request_body_buffered(&mut view, Extent::Whole);
    view.take_local_reply().map(|r| r.status)
}

#[test]
fn rfc_9421_hmac_test_vector_verifies() {
    // RFC 9421, appendix B.2.5: HMAC-SHA256 over date, @authority and content-type.
    let secret =
        "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
    let config = parse(&format!(
        r#"{{"consumers": [{{"name": "rfc", "key_id": "test-shared-secret", "secret_base64": "{secret}"}}],
            "required_components": ["@authority"], "require_nonce": false, "max_skew_s": 3600}}"#
    ));
    mock::reset_store();
    let headers: Vec<(String, String)> = [
        ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("content-type", "application/json"),
        ("signature-input", r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#),
        ("signature", "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let parts = RequestParts {
        method: "POST",
        authority: "example.com",
        scheme: "https",
        path: "/foo?param=Value&Pet=dog",
        headers: &headers,
    };
    assert_eq!(
        verify(&config, &parts, 1_618_884_473),
        Ok(Verified {
            consumer: "rfc".into(),
            body_sha256: None
        })
    );
    // One byte of a covered header changed: refused.
    let mut altered = headers.clone();
    altered[1].1 = "application/json ".into();
    altered[1].1.push('x');
    let parts = RequestParts {
        headers: &altered,
        ..parts
    };
    assert_eq!(
        verify(&config, &parts, 1_618_884_473),
        Err(Refusal::BadSignature)
    );
}

#[test]
fn demo_config_parses_and_bad_fields_are_named() {
    assert_eq!(demo().consumers.len(), 2);
    let bad = |json: &str| match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(c) => unreachable!("accepted {c:?}"),
        Err(err) => err.to_string(),
    };
    let key = "YmlsbGluZy1kZW1vLXNlY3JldC1kby1ub3QtdXNlLTAxMjM0NTY3";
    assert!(bad(r#"{"consumers": []}"#).contains("at consumers"));
    assert!(
        bad(r#"{"consumers": [{"name": "a", "key_id": "k", "secret_base64": "c2hvcnQ="}]}"#)
            .contains("at consumers[0].secret_base64")
    );
    assert!(bad(&format!(r#"{{"consumers": [{{"name": "a", "key_id": "k", "secret_base64": "{key}"}}, {{"name": "b", "key_id": "k", "secret_base64": "{key}"}}]}}"#)).contains("at consumers[1].key_id"));
    assert!(bad(&format!(r#"{{"consumers": [{{"name": "a", "key_id": "k", "secret_base64": "{key}"}}], "required_components": ["@status"]}}"#)).contains("at required_components[0]"));
    assert!(bad(&format!(r#"{{"consumers": [{{"name": "a", "key_id": "k", "secret_base64": "{key}"}}], "max_skew_s": 0}}"#)).contains("at max_skew_s"));
}

#[test]
fn a_signed_request_is_admitted_as_its_consumer_and_forged_identity_is_replaced() {
    let config = fresh();
    let body = br#"{"amount": 10}"#;
    let mut headers = signed(
        "/pay?to=bob",
        body,
        NOW,
        "n-1",
        BILLING_SECRET,
        "billing-2026",
    );
    assert_eq!(run(&config, &mut headers, body), None);
    assert_eq!(headers.get_all("x-consumer"), vec!["billing"]);
}

#[test]
fn a_replayed_signature_is_refused() {
    let config = fresh();
    let body = b"x=1";
    let mut first = signed("/pay", body, NOW, "once", BILLING_SECRET, "billing-2026");
    let mut again = first.clone();
    assert_eq!(run(&config, &mut first, body), None);
    assert_eq!(run(&config, &mut again, body), Some(401));
    // The same nonce under another key id is another nonce.
    let secret = "reports-demo-secret-do-not-use-01234567";
    let mut other = signed("/pay", body, NOW, "once", secret, "reports-2026");
    assert_eq!(run(&config, &mut other, body), None);
}

#[test]
fn a_signature_over_another_body_is_refused() {
    let config = fresh();
    let mut headers = signed(
        "/pay",
        b"amount=10",
        NOW,
        "n-2",
        BILLING_SECRET,
        "billing-2026",
    );
    assert_eq!(run(&config, &mut headers, b"amount=10000"), Some(401));
    // No body where one was signed.
    let mut headers = signed(
        "/pay",
        b"amount=10",
        NOW,
        "n-3",
        BILLING_SECRET,
        "billing-2026",
    );
    assert_eq!(run(&config, &mut headers, b""), Some(401));
}

#[test]
fn every_alteration_and_missing_part_is_refused() {
    let config = fresh();
    let body = b"a";
    let status = |mutate: &dyn Fn(&mut HeaderList), nonce: &str| {
        let mut headers = signed("/pay?x=1", body, NOW, nonce, BILLING_SECRET, "billing-2026");
        mutate(&mut headers);
        run(&config, &mut headers, body)
    };
    assert_eq!(status(&|_| {}, "ok"), None);
    assert_eq!(status(&|h| h.set(":path", "/refund?x=1"), "p"), Some(401));
    assert_eq!(status(&|h| h.set(":path", "/pay?x=2"), "q"), Some(401));
    assert_eq!(status(&|h| h.set(":method", "PUT"), "m"), Some(401));
    assert_eq!(
        status(&|h| h.set(":authority", "evil.example.com"), "a"),
        Some(401)
    );
    assert_eq!(
        status(
            &|h| {
                h.remove("signature");
            },
            "s"
        ),
        Some(401)
    );
    assert_eq!(
        status(&|h| h.add("signature", "sig2=:AAAA:"), "d"),
        Some(401)
    );
    // Another consumer's key id with this consumer's signature.
    assert_eq!(
        status(
            &|h| {
                let input = h
                    .get_all("signature-input")
                    .join("")
                    .replace("billing-2026", "reports-2026");
                h.set("signature-input", &input);
            },
            "k"
        ),
        Some(401)
    );
    // Wrong secret.
    let mut headers = signed(
        "/pay",
        body,
        NOW,
        "w",
        "not-the-billing-secret-0123456789abcdef",
        "billing-2026",
    );
    assert_eq!(run(&config, &mut headers, body), Some(401));
    // Too old, too new (beyond 300 s), and just inside.
    for (created, expect) in [
        (NOW - 301, Some(401)),
        (NOW + 301, Some(401)),
        (NOW - 299, None),
    ] {
        let mut headers = signed(
            "/pay",
            body,
            created,
            &format!("t{created}"),
            BILLING_SECRET,
            "billing-2026",
        );
        assert_eq!(
            run(&config, &mut headers, body),
            expect,
            "created {created}"
        );
    }
}

#[test]
fn signatures_that_leave_out_required_parts_are_refused() {
    let config = fresh();
    let body = b"a";
    let digest = content_digest(body);
    let header_list = |params: &str, base: &str| {
        let signature = hmac_b64(BILLING_SECRET.as_bytes(), base);
        HeaderList::from([
            (":method", "POST"),
            (":path", "/pay"),
            (":authority", "api.example.com"),
            ("content-digest", digest.as_str()),
            ("signature-input", format!("sig1={params}").as_str()),
            ("signature", format!("sig1=:{signature}:").as_str()),
        ])
    };
    // Correctly signed, but without content-digest covered.
    let params = r#"("@method" "@authority" "@path" "@query");created=1800000000;keyid="billing-2026";nonce="z""#;
    let base = format!(
        "\"@method\": POST\n\"@authority\": api.example.com\n\"@path\": /pay\n\"@query\": ?\n\"@signature-params\": {params}"
    );
    assert_eq!(
        run(&config, &mut header_list(params, &base), body),
        Some(401)
    );
    // Correctly signed, covering everything, but no nonce.
    let params = r#"("@method" "@authority" "@path" "@query" "content-digest");created=1800000000;keyid="billing-2026""#;
    let base = format!(
        "\"@method\": POST\n\"@authority\": api.example.com\n\"@path\": /pay\n\"@query\": ?\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    assert_eq!(
        run(&config, &mut header_list(params, &base), body),
        Some(401)
    );
    // The same with a nonce and another alg: refused; with hmac-sha256: admitted.
    for (alg, expect) in [("rsa-pss-sha512", Some(401)), ("hmac-sha256", None)] {
        let params = format!(
            r#"("@method" "@authority" "@path" "@query" "content-digest");created=1800000000;keyid="billing-2026";nonce="{alg}";alg="{alg}""#
        );
        let base = format!(
            "\"@method\": POST\n\"@authority\": api.example.com\n\"@path\": /pay\n\"@query\": ?\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
        );
        assert_eq!(
            run(&config, &mut header_list(&params, &base), body),
            expect,
            "{alg}"
        );
    }
}

#[test]
fn the_parser_refuses_what_it_does_not_understand() {
    for bad in [
        r#"sig1=("@method";req);created=1;keyid="k""#,
        r#"sig1=("@method" "@method");created=1;keyid="k""#,
        r#"sig1=("@method");created=1;created=2;keyid="k""#,
        r#"sig1=("@method");keyid="k", sig1=("@path");keyid="k""#,
        r#"sig1=("@method";created=1"#,
        r#"sig1=("@method");created;keyid="k""#,
        r#"Sig1=("@method");created=1"#,
        r#"sig1=("@method");created=1,"#,
    ] {
        assert!(
            message::parse_signature_input(bad).is_err(),
            "accepted {bad}"
        );
    }
    assert!(message::parse_signature("sig1=:not base64!:").is_err());
    let parsed = message::parse_signature_input(r#"sig1=("@method" "x-a");created=1;keyid="a\"b""#);
    let Ok(parsed) = parsed else {
        unreachable!("{parsed:?}")
    };
    assert_eq!(
        parsed[0].1.serialize(),
        r#"("@method" "x-a");created=1;keyid="a\"b""#
    );
}

#[test]
fn the_nonce_store_is_bounded_and_fails_closed_when_full() {
    mock::reset_store();
    if let Err(err) = replay::prepare(1) {
        unreachable!("{err}");
    }
    for i in 0..replay::PER_SLOT {
        assert_eq!(
            replay::record("k", &format!("n{i}"), NOW + 10, NOW, 1),
            Ok(replay::Seen::New)
        );
    }
    assert_eq!(
        replay::record("k", "n0", NOW + 10, NOW, 1),
        Ok(replay::Seen::Replayed)
    );
    assert_eq!(
        replay::record("k", "another", NOW + 10, NOW, 1),
        Ok(replay::Seen::Full)
    );
    // Once their window has passed, the slot makes room.
    assert_eq!(
        replay::record("k", "another", NOW + 20, NOW + 10, 1),
        Ok(replay::Seen::New)
    );
    assert_eq!(mock::store_len(), 1);
}

/// `envoy/hmac-auth/envoy.yaml`, `wasmplugin.yaml` and `trafficextension.yaml` must carry
/// exactly `demo.json`.
mod deployment_files {
    use serde_json::Value;
    use tollgate_sdk::testing::{check_bootstrap, check_wasmplugin, json};

    fn demo() -> Result<Value, String> {
        json(include_str!("../demo.json"), "demo.json")
    }

    fn accepted(json: &str) -> bool {
        tollgate_sdk::config::parse::<super::Config>(json.as_bytes()).is_ok()
    }

    #[test]
    fn envoy_bootstrap_embeds_the_demo_configuration() -> Result<(), String> {
        let (_, text) = check_bootstrap(
            "hmac-auth",
            include_str!("../../../envoy/hmac-auth/envoy.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&text));
        Ok(())
    }

    #[test]
    fn wasmplugin_carries_the_demo_configuration() -> Result<(), String> {
        let config = check_wasmplugin(
            "hmac-auth",
            include_str!("../../../envoy/hmac-auth/wasmplugin.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&config));
        Ok(())
    }
}
