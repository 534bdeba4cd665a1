//! Native tests: configuration, token parsing, signatures, claims and the request flow with
//! an in-memory shared store and callouts answered by hand. Keys are generated at test time.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde_json::json;
use tollgate_sdk::shared::MemoryShared;
use tollgate_sdk::{HeaderList, HeaderMap};

use super::*;

/// Fixed test clock: 2024-01-01T00:00:00Z.
const NOW: u64 = 1_704_067_200;

fn clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Ed {
    key: ed25519_dalek::SigningKey,
    kid: String,
}

impl Ed {
    fn new(kid: &str) -> Ed {
        let mut seed = [0u8; 32];
        assert!(getrandom::fill(&mut seed).is_ok());
        Ed {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
            kid: kid.into(),
        }
    }
    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(self.key.verifying_key().as_bytes())})
    }
    fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": "EdDSA", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }
}

fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    use hmac::{KeyInit, Mac};
    let header = json!({"alg": "HS256", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let Ok(mut mac) = hmac::Hmac::<sha2_next::Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC takes any key length");
    };
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn claims() -> Value {
    json!({"iss": "https://idp.example.com", "aud": ["shop", "other"], "sub": "ada", "exp": NOW + 60, "nbf": NOW - 60})
}

fn parse_config(json: &Value) -> Result<Config, ConfigError> {
    tollgate_sdk::config::parse::<Config>(json.to_string().as_bytes())
}

fn inline_config(jwks: Value) -> Rc<Config> {
    let config = json!({"providers": [{
        "name": "idp", "issuer": "https://idp.example.com", "audiences": ["shop"],
        "jwks": jwks,
        "from_params": ["access_token"], "from_cookies": ["session"],
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
        "clock_skew_seconds": 30
    }]});
    match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

fn remote_config() -> Rc<Config> {
    let config = json!({"providers": [{
        "name": "idp", "issuer": "https://idp.example.com",
        "remote_jwks": {"cluster": "jwks", "authority": "idp.example.com", "path": "/jwks.json",
                        "cache_duration_seconds": 300, "refetch_interval_seconds": 0}
    }]});
    match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

fn filter(config: Rc<Config>) -> JwtAuth {
    JwtAuth::with_host(config, Box::new(MemoryShared::new()), clock)
}

fn run(filter: &mut JwtAuth, headers: &mut HeaderList) -> (Action, Option<u16>) {
    let mut req = Request::new(headers);
    let action = filter.on_request_headers(&mut req, true);
    (action, req.local_reply().map(|r| r.status))
}

fn bearer(token: &str) -> HeaderList {
    HeaderList::from([
        (":path", "/orders"),
        ("authorization", format!("Bearer {token}").as_str()),
    ])
}

/// Completes the one callout (the JWKS fetch) the filter started for `headers` with `answer`;
/// the action and the status of any local reply.
fn complete_fetch(
    filter: &mut JwtAuth,
    headers: &mut HeaderList,
    answer: Result<CalloutResponse, CalloutError>,
) -> (Action, Option<u16>) {
    let mut calls = filter.callouts.take();
    assert_eq!(calls.len(), 1);
    let mut req = Request::new(headers);
    let action = calls.remove(0).complete(filter, &mut req, answer);
    (action, req.local_reply().map(|r| r.status))
}

/// A JWKS endpoint's `200` with `jwks` as its body.
fn jwks_answer(jwks: &Value) -> Result<CalloutResponse, CalloutError> {
    Ok(CalloutResponse::new(
        200,
        vec![],
        jwks.to_string().into_bytes(),
    ))
}

#[test]
fn config_errors_name_the_field() {
    let err = |v: Value| match parse_config(&v) {
        Ok(_) => unreachable!("accepted {v}"),
        Err(err) => err.to_string(),
    };
    assert!(err(json!({"providers": []})).contains("at providers"));
    assert!(err(json!({"providers": [{"name": "a"}]})).contains("providers[0].jwks"));
    assert!(
        err(json!({"providers": [{"name": "a", "jwks": {"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}}]}))
            .contains("keys[0]: HMAC secret of 5 bytes")
    );
    assert!(
        err(json!({"providers": [{"name": "a", "jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}}]}))
            .contains("RSA modulus of 17 bits")
    );
    let ed = Ed::new("k");
    assert!(
        err(json!({"providers": [{"name": "a", "jwks": {"keys": [ed.jwk()]}}, {"name": "a", "jwks": {"keys": [ed.jwk()]}}]}))
            .contains("providers[1].name: duplicate")
    );
}

#[test]
fn valid_token_passes_and_claims_replace_spoofed_headers() {
    let ed = Ed::new("k1");
    let mut f = filter(inline_config(json!({"keys": [ed.jwk()]})));
    let mut headers = bearer(&ed.token(&claims()));
    headers.add("x-jwt-sub", "spoofed");
    assert_eq!(run(&mut f, &mut headers), (Action::Continue, None));
    assert_eq!(headers.get_all("x-jwt-sub"), vec!["ada"]);
    // Not forwarded by default.
    assert!(headers.get_all("authorization").is_empty());
}

#[test]
fn token_from_query_and_cookie() {
    let ed = Ed::new("k1");
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    let token = ed.token(&claims());
    let mut q = HeaderList::from([(":path", format!("/a?x=1&access_token={token}").as_str())]);
    assert_eq!(
        run(&mut filter(Rc::clone(&config)), &mut q),
        (Action::Continue, None)
    );
    // Not forwarded: the parameter is gone, the others stay in order.
    assert_eq!(q.get_all(":path"), vec!["/a?x=1"]);
    let mut c = HeaderList::from([
        (":path", "/a?keep=1&x=2"),
        (
            "cookie",
            format!("theme=dark; session={token}; lang=en").as_str(),
        ),
        // A second copy is a second token: checked too (a junk one is a 401, see
        // `a_second_unverified_token_anywhere_is_a_401`), and removed with the first.
        ("cookie", format!("session={token}").as_str()),
    ]);
    assert_eq!(
        run(&mut filter(Rc::clone(&config)), &mut c),
        (Action::Continue, None)
    );
    assert_eq!(c.get_all("cookie"), vec!["theme=dark; lang=en"]);
    // Only the location the token came from is touched.
    assert_eq!(c.get_all(":path"), vec!["/a?keep=1&x=2"]);
    let mut only = HeaderList::from([
        (":path", "/a"),
        ("cookie", format!("session={token}").as_str()),
    ]);
    assert_eq!(
        run(&mut filter(config), &mut only),
        (Action::Continue, None)
    );
    assert!(only.get_all("cookie").is_empty());
}

#[test]
fn forward_keeps_the_token_wherever_it_was() {
    let ed = Ed::new("k1");
    let config = json!({"providers": [{
        "name": "idp", "issuer": "https://idp.example.com", "audiences": ["shop"],
        "jwks": {"keys": [ed.jwk()]}, "forward": true,
        "from_params": ["access_token"], "from_cookies": ["session"]
    }]});
    let config = match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    };
    let token = ed.token(&claims());
    let path = format!("/a?access_token={token}");
    let mut q = HeaderList::from([(":path", path.as_str())]);
    assert_eq!(
        run(&mut filter(Rc::clone(&config)), &mut q),
        (Action::Continue, None)
    );
    assert_eq!(q.get_all(":path"), vec![path.as_str()]);
    let cookie = format!("session={token}");
    let mut c = HeaderList::from([(":path", "/a"), ("cookie", cookie.as_str())]);
    assert_eq!(run(&mut filter(config), &mut c), (Action::Continue, None));
    assert_eq!(c.get_all("cookie"), vec![cookie.as_str()]);
}

#[test]
fn every_forgery_is_a_401() {
    let ed = Ed::new("k1");
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    let good = ed.token(&claims());
    let mut changed = claims();
    changed["sub"] = json!("admin");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(changed.to_string().as_bytes()),
        parts[2]
    );
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        ed.token(&c)
    };
    let cases = [
        ("changed payload", tampered),
        ("expired", with("exp", json!(NOW - 31))),
        ("not yet valid", with("nbf", json!(NOW + 31))),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example.com")),
        ),
        ("wrong audience", with("aud", json!("other"))),
        ("exp not a number", with("exp", json!("tomorrow"))),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none"}"#),
                b64(claims().to_string().as_bytes())
            ),
        ),
        (
            "bad base64",
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
        ),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("huge", format!("{}{}", good, "A".repeat(9000))),
        ("unknown kid", {
            let other = Ed::new("k2");
            other.token(&claims())
        }),
        ("empty", String::new()),
    ];
    for (label, token) in cases {
        let mut headers = bearer(&token);
        headers.add("x-jwt-sub", "spoofed");
        let mut req = Request::new(&mut headers);
        filter(Rc::clone(&config)).on_request_headers(&mut req, true);
        let reply = req.local_reply().cloned();
        assert_eq!(reply.as_ref().map(|r| r.status), Some(401), "{label}");
        let www = reply
            .map(|r| r.headers)
            .unwrap_or_default()
            .into_iter()
            .find(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v);
        if label == "empty" {
            // "Bearer " with nothing after it is a missing token.
            assert_eq!(www.as_deref(), Some("Bearer"), "{label}");
        } else {
            assert_eq!(www.as_deref(), Some(BEARER_INVALID), "{label}");
        }
        assert!(
            headers.get_all("x-jwt-sub").is_empty(),
            "{label}: spoofed header kept"
        );
    }
}

#[test]
fn skew_tolerates_small_clock_differences() {
    let ed = Ed::new("k1");
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    let mut c = claims();
    c["exp"] = json!(NOW - 29);
    c["nbf"] = json!(NOW + 29);
    assert_eq!(run(&mut filter(config), &mut bearer(&ed.token(&c))).1, None);
}

#[test]
fn hmac_token_is_never_checked_against_an_asymmetric_key() {
    // The classic confusion: sign HS256 with the public key's bytes as the secret.
    let ed = Ed::new("k1");
    let public = ed.key.verifying_key().to_bytes();
    let mut secret = public.to_vec();
    secret.extend_from_slice(&public); // 64 bytes: long enough for any HMAC key rule
    let forged = hs256(&secret, "k1", &claims());
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    assert_eq!(run(&mut filter(config), &mut bearer(&forged)).1, Some(401));
    let parsed = token::parse(&forged, 8192);
    let Ok(parsed) = parsed else {
        unreachable!("forged token parses");
    };
    let keys = match keys::parse_jwks(&json!({"keys": [ed.jwk()]})) {
        Ok(keys) => keys,
        Err(err) => unreachable!("{err}"),
    };
    assert!(matches!(
        parsed.verify_signature(&keys),
        Err(TokenError::NoKey { .. })
    ));
}

#[test]
fn hs256_with_its_own_secret_verifies() {
    let secret = [7u8; 32];
    let config = inline_config(json!({"keys": [{"kty": "oct", "kid": "h", "k": b64(&secret)}]}));
    let token = hs256(&secret, "h", &claims());
    assert_eq!(
        run(&mut filter(Rc::clone(&config)), &mut bearer(&token)),
        (Action::Continue, None)
    );
    let wrong = hs256(&[8u8; 32], "h", &claims());
    assert_eq!(run(&mut filter(config), &mut bearer(&wrong)).1, Some(401));
}

#[test]
fn remote_jwks_is_fetched_cached_and_refetched_on_unknown_kid() {
    let k1 = Ed::new("k1");
    let k2 = Ed::new("k2");
    let config = remote_config();
    let mut f = filter(Rc::clone(&config));
    let mut headers = bearer(&k1.token(&claims()));
    // First request: nothing cached, the stream waits for the fetch.
    assert_eq!(run(&mut f, &mut headers), (Action::Pause, None));
    let mut calls = f.callouts.take();
    assert_eq!(calls.len(), 1);
    let call = calls.remove(0);
    assert_eq!(
        (
            call.request().cluster.as_str(),
            call.request().path.as_str()
        ),
        ("jwks", "/jwks.json")
    );
    let body = json!({"keys": [k1.jwk()]}).to_string().into_bytes();
    let mut req = Request::new(&mut headers);
    let action = call.complete(
        &mut f,
        &mut req,
        Ok(CalloutResponse::new(200, vec![], body)),
    );
    assert_eq!(action, Action::Continue);
    assert!(req.local_reply().is_none());

    // Second request on the same VM and store: served from the cache.
    let mut headers = bearer(&k1.token(&claims()));
    assert_eq!(run(&mut f, &mut headers), (Action::Continue, None));
    assert!(f.callouts.is_empty());

    // A token with a new kid: fetched again, and the rotated JWKS verifies it.
    let mut headers = bearer(&k2.token(&claims()));
    assert_eq!(run(&mut f, &mut headers), (Action::Pause, None));
    let jwks = json!({"keys": [k2.jwk()]});
    assert_eq!(
        complete_fetch(&mut f, &mut headers, jwks_answer(&jwks)).0,
        Action::Continue
    );
}

/// Runs one request against a remote-JWKS config whose fetch answers `jwks`; the status answered.
fn fetched_then(config: Rc<Config>, token: &str, jwks: &Value) -> Option<u16> {
    let mut f = filter(config);
    let mut headers = bearer(token);
    assert_eq!(run(&mut f, &mut headers), (Action::Pause, None));
    complete_fetch(&mut f, &mut headers, jwks_answer(jwks)).1
}

#[test]
fn symmetric_keys_in_a_fetched_jwks_are_ignored_unless_allowed() {
    let secret = [7u8; 32];
    let token = hs256(&secret, "h", &claims());
    let ed = Ed::new("k1");
    let jwks = json!({"keys": [{"kty": "oct", "kid": "h", "k": b64(&secret)}, ed.jwk()]});
    // Default: the published secret is dropped, the HS256 token finds no key.
    assert_eq!(fetched_then(remote_config(), &token, &jwks), Some(401));
    // The public key of the same document still works.
    assert_eq!(
        fetched_then(remote_config(), &ed.token(&claims()), &jwks),
        None
    );
    // Explicitly allowed: accepted.
    let allowed = json!({"providers": [{
        "name": "idp", "issuer": "https://idp.example.com",
        "remote_jwks": {"cluster": "jwks", "authority": "idp.example.com", "path": "/jwks.json",
                        "allow_symmetric_keys": true}
    }]});
    let allowed = match parse_config(&allowed) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    };
    assert_eq!(fetched_then(allowed, &token, &jwks), None);
    // Inline secrets are configuration, not published: accepted as before.
    let (kept, dropped) = match keys::parse_jwks(&jwks) {
        Ok(keys) => keys::without_secrets(keys),
        Err(err) => unreachable!("{err}"),
    };
    assert_eq!((kept.len(), dropped), (1, 1));
}

#[test]
fn failed_fetch_is_a_401() {
    let k1 = Ed::new("k1");
    let mut f = filter(remote_config());
    let mut headers = bearer(&k1.token(&claims()));
    run(&mut f, &mut headers);
    let answer = Err(CalloutError::NoResponse {
        cluster: "jwks".into(),
    });
    assert_eq!(complete_fetch(&mut f, &mut headers, answer).1, Some(401));
}

#[test]
fn missing_token_is_401_unless_allowed() {
    let ed = Ed::new("k1");
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    let mut headers = HeaderList::from([(":path", "/"), ("x-jwt-sub", "spoofed")]);
    assert_eq!(run(&mut filter(config), &mut headers).1, Some(401));
    let open = json!({"allow_missing": true, "providers": [{"name": "idp", "jwks": {"keys": [ed.jwk()]},
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]}]});
    let Ok(open) = parse_config(&open) else {
        unreachable!("valid config");
    };
    let mut headers = HeaderList::from([(":path", "/"), ("x-jwt-sub", "spoofed")]);
    assert_eq!(
        run(&mut filter(Rc::new(open)), &mut headers),
        (Action::Continue, None)
    );
    assert!(headers.get_all("x-jwt-sub").is_empty());
}

/// An unsigned token (`alg: none`) claiming to be `sub`.
fn unsigned(sub: &str) -> String {
    let mut c = claims();
    c["sub"] = json!(sub);
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(c.to_string().as_bytes())
    )
}

/// Runs one request; the status answered, if any.
fn status_of(config: &Rc<Config>, headers: &mut HeaderList) -> Option<u16> {
    run(&mut filter(Rc::clone(config)), headers).1
}

#[test]
fn a_second_unverified_token_anywhere_is_a_401() {
    let ed = Ed::new("k1");
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    let good = ed.token(&claims());
    let forged = unsigned("admin");
    // A token signed by a key the provider does not know, and one whose signature is wrong.
    let foreign = Ed::new("k1").token(&claims());
    let cases: Vec<(&str, HeaderList)> = vec![
        (
            "valid bearer, forged token in the query",
            HeaderList::from([
                (":path", format!("/orders?access_token={forged}").as_str()),
                ("authorization", format!("Bearer {good}").as_str()),
            ]),
        ),
        (
            "valid bearer, forged token in a cookie",
            HeaderList::from([
                (":path", "/orders"),
                ("authorization", format!("Bearer {good}").as_str()),
                ("cookie", format!("theme=dark; session={foreign}").as_str()),
            ]),
        ),
        (
            "valid token in the query, forged bearer",
            HeaderList::from([
                (":path", format!("/orders?access_token={good}").as_str()),
                ("authorization", format!("Bearer {forged}").as_str()),
            ]),
        ),
        (
            "the parameter twice, valid then forged",
            HeaderList::from([(
                ":path",
                format!("/orders?access_token={good}&access_token={forged}").as_str(),
            )]),
        ),
        (
            "the parameter twice, forged one percent-encoded",
            HeaderList::from([(
                ":path",
                format!("/orders?access_token={good}&access%5Ftoken={forged}").as_str(),
            )]),
        ),
        (
            "the cookie twice in one header",
            HeaderList::from([
                (":path", "/orders"),
                (
                    "cookie",
                    format!("session={good}; session={forged}").as_str(),
                ),
            ]),
        ),
        (
            "the cookie again in a second cookie header, quoted",
            HeaderList::from([
                (":path", "/orders"),
                ("cookie", format!("session={good}").as_str()),
                ("cookie", format!("session=\"{forged}\"").as_str()),
            ]),
        ),
        (
            "valid bearer, a parameter that is not a token",
            HeaderList::from([
                (":path", "/orders?access_token=admin"),
                ("authorization", format!("Bearer {good}").as_str()),
            ]),
        ),
    ];
    for (label, mut headers) in cases {
        headers.add("x-jwt-sub", "spoofed");
        assert_eq!(status_of(&config, &mut headers), Some(401), "{label}");
        assert!(
            headers.get_all("x-jwt-sub").is_empty(),
            "{label}: claim header set"
        );
    }
}

#[test]
fn repeated_headers_are_each_a_token() {
    let ed = Ed::new("k1");
    let config = json!({"providers": [{
        "name": "idp", "jwks": {"keys": [ed.jwk()]},
        "from_headers": [{"name": "x-token"}],
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]
    }]});
    let config = match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    };
    let good = ed.token(&claims());
    let mut two = HeaderList::from([
        (":path", "/"),
        ("x-token", good.as_str()),
        ("X-Token", unsigned("admin").as_str()),
    ]);
    assert_eq!(status_of(&config, &mut two), Some(401));
    let mut same_twice = HeaderList::from([
        (":path", "/"),
        ("x-token", good.as_str()),
        ("x-token", good.as_str()),
    ]);
    assert_eq!(status_of(&config, &mut same_twice), None);
    assert!(same_twice.get_all("x-token").is_empty());
    assert_eq!(same_twice.get_all("x-jwt-sub"), vec!["ada"]);
}

#[test]
fn several_valid_tokens_pass_and_none_is_forwarded() {
    let ed = Ed::new("k1");
    let config = inline_config(json!({"keys": [ed.jwk()]}));
    let ada = ed.token(&claims());
    let mut grace = claims();
    grace["sub"] = json!("grace");
    let grace = ed.token(&grace);
    let mut headers = HeaderList::from([
        (
            ":path",
            format!("/orders?x=1&access_token={grace}").as_str(),
        ),
        ("authorization", format!("Bearer {ada}").as_str()),
        ("cookie", format!("lang=en; session={ada}").as_str()),
    ]);
    assert_eq!(status_of(&config, &mut headers), None);
    // Every token is removed from where it was; each verified identity is a claim header.
    assert!(headers.get_all("authorization").is_empty());
    assert_eq!(headers.get_all(":path"), vec!["/orders?x=1"]);
    assert_eq!(headers.get_all("cookie"), vec!["lang=en"]);
    assert_eq!(headers.get_all("x-jwt-sub"), vec!["ada", "grace"]);
}

#[test]
fn a_shared_location_picks_the_provider_by_issuer() {
    let first = Ed::new("a");
    let second = Ed::new("b");
    let config = json!({"providers": [
        {"name": "one", "issuer": "https://one.example.com", "jwks": {"keys": [first.jwk()]}},
        {"name": "two", "issuer": "https://idp.example.com", "jwks": {"keys": [second.jwk()]}}
    ]});
    let config = match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    };
    // Both read `authorization`; the token of the second issuer is the second provider's.
    assert_eq!(
        status_of(&config, &mut bearer(&second.token(&claims()))),
        None
    );
    // Claiming the second issuer does not make a token of the first key valid.
    assert_eq!(
        status_of(&config, &mut bearer(&first.token(&claims()))),
        Some(401)
    );
}

#[test]
fn remote_keys_are_fetched_once_for_every_token_of_a_request() {
    let k1 = Ed::new("k1");
    let config = json!({"providers": [{
        "name": "idp", "issuer": "https://idp.example.com",
        "remote_jwks": {"cluster": "jwks", "authority": "idp.example.com", "path": "/jwks.json",
                        "refetch_interval_seconds": 0},
        "from_params": ["access_token"]
    }]});
    let config = match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    };
    let jwks = json!({"keys": [k1.jwk()]});
    let good = k1.token(&claims());
    // A forged second token (a kid the JWKS does not have) after a valid one: one fetch, 401.
    for (second, expected) in [
        (Ed::new("k2").token(&claims()), Some(401)),
        (good.clone(), None),
    ] {
        let mut f = filter(Rc::clone(&config));
        let mut headers = HeaderList::from([
            (":path", format!("/?access_token={second}").as_str()),
            ("authorization", format!("Bearer {good}").as_str()),
        ]);
        assert_eq!(run(&mut f, &mut headers), (Action::Pause, None));
        let (_, status) = complete_fetch(&mut f, &mut headers, jwks_answer(&jwks));
        assert_eq!(status, expected);
        assert!(f.callouts.is_empty(), "fetched again");
    }
}

#[test]
fn clock_skew_is_bounded() {
    let ed = Ed::new("k");
    let with_skew = |skew: Value| {
        parse_config(
            &json!({"providers": [{"name": "a", "jwks": {"keys": [ed.jwk()]},
            "clock_skew_seconds": skew}]}),
        )
    };
    for skew in [
        json!(18_446_744_073_709_551_615u64),
        json!(4_294_967_295u64),
        json!(601),
    ] {
        match with_skew(skew.clone()) {
            Ok(_) => unreachable!("clock_skew_seconds {skew} accepted"),
            Err(err) => {
                assert_eq!(err.path(), "providers[0].clock_skew_seconds", "{err}");
                assert!(err.message().contains("600"), "{err}");
            }
        }
    }
    assert!(with_skew(json!(600)).is_ok());
    assert!(with_skew(json!(0)).is_ok());
}

#[test]
fn refused_configurations_never_quote_keys() {
    let secret = "c2VjcmV0LWtleS10aGF0LWlzLW5vdC1sb25nLWVub3VnaA";
    let cases = [
        // The raw secret pasted where a JWK belongs.
        json!({"providers": [{"name": "a", "jwks": {"keys": [secret]}}]}),
        json!({"providers": [{"name": "a", "jwks": {"keys": secret}}]}),
        // A secret with a character base64url does not have.
        json!({"providers": [{"name": "a", "jwks": {"keys": [{"kty": "oct", "k": format!("{secret}!")}]}}]}),
        // A secret where a number belongs.
        json!({"providers": [{"name": "a", "jwks": {"keys": []}, "clock_skew_seconds": secret}]}),
    ];
    for config in cases {
        match parse_config(&config) {
            Ok(_) => unreachable!("accepted {config}"),
            Err(err) => {
                let text = err.to_string();
                assert!(!text.contains("c2VjcmV0"), "secret in {text}");
                assert!(text.contains("providers[0]"), "{text}");
            }
        }
    }
}

/// `envoy/jwt-auth/envoy.yaml` and `wasmplugin.yaml` must carry exactly `demo.json`.
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
            "jwt-auth",
            include_str!("../../../envoy/jwt-auth/envoy.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&text));
        // The cluster the filter calls is defined.
        check_cluster(
            "jwt-auth",
            &bootstrap,
            &demo()?["providers"][0]["remote_jwks"]["cluster"].clone(),
        )
    }

    #[test]
    fn wasmplugin_carries_the_demo_configuration() -> Result<(), String> {
        let config = check_wasmplugin(
            "jwt-auth",
            include_str!("../../../envoy/jwt-auth/wasmplugin.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&config));
        Ok(())
    }
}

/// A provider with an inline Ed25519 key, `sub` copied to `x-jwt-sub` and `jwt_cache` of
/// `size`.
fn cached_provider(ed: &Ed, size: usize) -> Rc<Config> {
    let config = json!({"providers": [{
        "name": "idp", "issuer": "https://idp.example.com", "audiences": ["shop"],
        "jwks": {"keys": [ed.jwk()]}, "clock_skew_seconds": 30,
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
        "jwt_cache": {"size": size}
    }]});
    match parse_config(&config) {
        Ok(config) => Rc::new(config),
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

/// The request's status and `x-jwt-sub` values after the filter, at `clock`.
fn through(
    config: &Rc<Config>,
    clock: fn() -> SystemTime,
    token: &str,
) -> (Option<u16>, Vec<String>) {
    let mut f = JwtAuth::with_host(Rc::clone(config), Box::new(MemoryShared::new()), clock);
    let mut headers = bearer(token);
    headers.add("x-jwt-sub", "spoofed");
    let (_, status) = run(&mut f, &mut headers);
    let subs = headers
        .get_all("x-jwt-sub")
        .into_iter()
        .map(str::to_string)
        .collect();
    (status, subs)
}

fn after_exp_and_skew() -> SystemTime {
    // claims(): exp NOW + 60; the providers here have 30 s of skew.
    UNIX_EPOCH + Duration::from_secs(NOW + 90)
}

fn just_before_exp_and_skew() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW + 89)
}

#[test]
fn a_repeated_token_is_served_from_the_cache_without_parsing_it() {
    let ed = Ed::new("k1");
    let text = ed.token(&claims());
    let config = cached_provider(&ed, 4);
    let provider = &config.providers[0];
    assert_eq!(through(&config, clock, &text), (None, vec!["ada".into()]));
    assert_eq!(provider.token_cache.borrow().len(), 1);
    assert_eq!(
        JwtAuth::cached(provider, &text, clock()).map(|v| v.claim_values.clone()),
        Some(vec![Some("ada".to_string())])
    );
    // A hit is taken as it was verified: an entry for something that is not even a token
    // (put there by hand) lets it through with the remembered claims, which shows the hit
    // path neither parses nor checks a signature.
    provider.token_cache.borrow_mut().insert(
        "opaque",
        cache::Validity {
            from: 0,
            until: NOW + 10,
        },
        Rc::new(cache::Verified {
            claim_values: vec![Some("eve".into())],
        }),
        4,
    );
    assert_eq!(
        through(&config, clock, "opaque"),
        (None, vec!["eve".into()])
    );
    let mut headers = bearer("opaque");
    assert_eq!(run(&mut filter(Rc::clone(&config)), &mut headers).1, None);
    assert!(
        headers.get_all("authorization").is_empty(),
        "the token is still removed"
    );
    // Without the cache (size 0, or no `jwt_cache`) nothing is remembered.
    for config in [
        cached_provider(&ed, 0),
        inline_config(json!({"keys": [ed.jwk()]})),
    ] {
        assert_eq!(through(&config, clock, &text), (None, vec!["ada".into()]));
        assert!(config.providers[0].token_cache.borrow().is_empty());
        assert_eq!(through(&config, clock, "opaque").0, Some(401));
    }
}

#[test]
fn a_cached_token_is_used_until_exp_plus_skew_then_refused() {
    let ed = Ed::new("k1");
    let text = ed.token(&claims());
    let config = cached_provider(&ed, 4);
    let provider = &config.providers[0];
    assert_eq!(through(&config, clock, &text).0, None);
    assert_eq!(
        through(&config, just_before_exp_and_skew, &text),
        (None, vec!["ada".into()])
    );
    assert_eq!(provider.token_cache.borrow().len(), 1);
    // Past exp + skew the cache lets go, and the token is verified again: expired.
    assert_eq!(through(&config, after_exp_and_skew, &text).0, Some(401));
    assert!(
        provider.token_cache.borrow().is_empty(),
        "an expired token leaves the cache"
    );
    // `nbf` bounds an entry too: valid from nbf - skew (claims(): nbf NOW - 60).
    let mut c = claims();
    c["nbf"] = json!(NOW + 20);
    let early = ed.token(&c);
    assert_eq!(through(&config, clock, &early).0, None, "within the skew");
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    assert!(JwtAuth::cached(provider, &early, at(NOW - 10)).is_some());
    assert!(
        JwtAuth::cached(provider, &early, at(NOW - 11)).is_none(),
        "before nbf - skew the cache does not accept it"
    );
    // A token not valid yet is refused and never cached.
    c["nbf"] = json!(NOW + 31);
    let too_early = ed.token(&c);
    assert_eq!(through(&config, clock, &too_early).0, Some(401));
    assert!(JwtAuth::cached(provider, &too_early, at(NOW + 40)).is_none());
}

#[test]
fn a_forged_token_never_hits_the_cache_and_the_size_is_bounded() {
    let ed = Ed::new("k1");
    let config = cached_provider(&ed, 2);
    let provider = &config.providers[0];
    let good = ed.token(&claims());
    assert_eq!(through(&config, clock, &good).0, None);
    // Same header and claims, another signature: not the cached token, verified and refused.
    let (head, _) = good.rsplit_once('.').unwrap_or((&good, ""));
    let forged = format!("{head}.{}", b64(&[7u8; 64]));
    assert_eq!(through(&config, clock, &forged).0, Some(401));
    assert_eq!(
        through(&config, clock, &format!("{good} ")).0,
        None,
        "trimmed: the same token"
    );
    assert_eq!(through(&config, clock, &format!("{good}x")).0, Some(401));
    assert_eq!(
        provider.token_cache.borrow().len(),
        1,
        "refused tokens are not cached"
    );
    for sub in ["a", "b", "c"] {
        let mut c = claims();
        c["sub"] = json!(sub);
        assert_eq!(
            through(&config, clock, &ed.token(&c)),
            (None, vec![sub.to_string()])
        );
    }
    assert_eq!(provider.token_cache.borrow().len(), 2);
    let err = parse_config(
        &json!({"providers": [{"name": "a", "jwks": {"keys": [ed.jwk()]},
        "jwt_cache": {"size": 100_001}}]}),
    );
    assert!(matches!(err, Err(e) if e.to_string().contains("providers[0].jwt_cache.size")));
    let default = parse_config(
        &json!({"providers": [{"name": "a", "jwks": {"keys": [ed.jwk()]},
        "jwt_cache": {}}]}),
    );
    assert!(
        matches!(default, Ok(c) if c.providers[0].jwt_cache == Some(cache::CacheConfig { size: 100 }))
    );
}

#[test]
fn a_fetched_jwks_is_parsed_once_per_vm() {
    let ed = Ed::new("k1");
    let config = remote_config();
    let mut f = filter(Rc::clone(&config));
    let mut headers = bearer(&ed.token(&claims()));
    assert_eq!(run(&mut f, &mut headers), (Action::Pause, None));
    let jwks = json!({"keys": [ed.jwk()]});
    assert_eq!(
        complete_fetch(&mut f, &mut headers, jwks_answer(&jwks)).0,
        Action::Continue
    );
    // The fetch's own parse is this VM's parse of the stored version...
    let parsed_at_fetch = config.providers[0]
        .remote_keys
        .borrow()
        .as_ref()
        .map(|(_, fetched)| Rc::clone(&fetched.keys));
    assert!(parsed_at_fetch.is_some(), "the fetched keys are remembered");
    // ...so the next requests use those keys (and the tables built on them), not a new parse.
    for _ in 0..2 {
        let mut headers = bearer(&ed.token(&claims()));
        assert_eq!(run(&mut f, &mut headers), (Action::Continue, None));
        let now = config.providers[0]
            .remote_keys
            .borrow()
            .as_ref()
            .map(|(_, fetched)| Rc::clone(&fetched.keys));
        assert!(matches!((&parsed_at_fetch, &now), (Some(a), Some(b)) if Rc::ptr_eq(a, b)));
    }
}
