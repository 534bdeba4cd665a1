//! Native tests of the login flow, the callback's checks, the session cookie and refresh
//! (the provider's answers given by hand to the callouts).

use super::*;
use crate::env::mock;
use ed25519_dalek::Signer;
use serde_json::json;
use tollgate_sdk::callout::PendingCallout;
use tollgate_sdk::{HeaderList, HeaderMap};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "http://127.0.0.1:9400";

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
    fn jwks(&self) -> Value {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(self.key.verifying_key().as_bytes())}]})
    }
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    }
    fn token(&self, claims: &Value) -> String {
        self.sign(&json!({"alg": "EdDSA", "kid": self.kid}), claims)
    }
}

fn parse(json: &str) -> Config {
    match tollgate_sdk::config::parse::<Config>(json.as_bytes()) {
        Ok(config) => config,
        Err(err) => unreachable!("test config refused: {err}"),
    }
}

fn demo() -> Config {
    parse(include_str!("../demo.json"))
}

fn bad(edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(include_str!("../demo.json")).unwrap_or_default();
    edit(&mut value);
    match tollgate_sdk::config::parse::<Config>(value.to_string().as_bytes()) {
        Ok(c) => unreachable!("accepted {c:?}"),
        Err(err) => err.to_string(),
    }
}

fn discovery_doc() -> Value {
    json!({
        "issuer": ISSUER,
        "authorization_endpoint": format!("{ISSUER}/auth"),
        "token_endpoint": format!("{ISSUER}/token"),
        "jwks_uri": format!("{ISSUER}/jwks"),
        "end_session_endpoint": format!("{ISSUER}/session/end"),
        "code_challenge_methods_supported": ["S256"],
    })
}

fn ok(body: Value) -> Result<CalloutResponse, CalloutError> {
    Ok(CalloutResponse::new(
        200,
        vec![("content-type".into(), "application/json".into())],
        body.to_string().into_bytes(),
    ))
}

fn one_call(filter: &mut Oidc) -> PendingCallout<Oidc> {
    let mut calls = filter.callouts.take();
    assert_eq!(calls.len(), 1, "expected one callout, got {calls:?}");
    calls.remove(0)
}

fn fresh() -> Rc<Config> {
    mock::reset_store();
    mock::set_now_s(NOW);
    Rc::new(demo())
}

fn get(path: &str, cookies: &[String]) -> HeaderList {
    let mut h = HeaderList::from([
        (":method", "GET"),
        (":path", path),
        (":authority", "127.0.0.1:10000"),
        ("accept", "text/html"),
    ]);
    for c in cookies {
        h.add("cookie", c);
    }
    h
}

/// `name=value` of each `Set-Cookie` of a reply.
fn set_cookies(reply: &tollgate_sdk::LocalReply) -> Vec<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap_or_default().to_string())
        .collect()
}

fn header<'a>(reply: &'a tollgate_sdk::LocalReply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A first request: discovery fetched, 302 to the provider. Returns (location, login cookie).
fn start(config: &Rc<Config>, path: &str) -> (String, String) {
    let mut filter = Oidc::new(Rc::clone(config));
    let mut headers = get(path, &[]);
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    // Discovery: fetched once, then from shared data.
    if let Some(call) = filter.callouts.take().pop() {
        assert_eq!(call.request().path, "/.well-known/openid-configuration");
        assert_eq!(call.request().authority, "127.0.0.1:9400");
        assert_eq!(
            call.complete(&mut filter, &mut req, ok(discovery_doc())),
            Action::Pause
        );
    }
    let reply = req
        .take_local_reply()
        .unwrap_or_else(|| unreachable!("no reply"));
    assert_eq!(reply.status, 302);
    let location = header(&reply, "location").unwrap_or_default().to_string();
    let cookies = set_cookies(&reply);
    assert_eq!(cookies.len(), 1);
    (location, cookies[0].clone())
}

struct Provider {
    ed: Ed,
}

impl Provider {
    fn id_token(&self, nonce: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = json!({
            "iss": ISSUER, "aud": "tollgate-web", "sub": "alice", "email": "alice@tollgate.test",
            "nonce": nonce, "iat": NOW, "exp": NOW + 300,
        });
        edit(&mut claims);
        self.ed.token(&claims)
    }
}

/// The callback with `query` and `cookies`; the token endpoint answers `tokens` (when asked),
/// the JWKS is the provider's. Returns the final reply.
fn callback(
    config: &Rc<Config>,
    query: &str,
    cookies: &[String],
    tokens: Option<Value>,
    jwks: &Value,
) -> tollgate_sdk::LocalReply {
    let mut filter = Oidc::new(Rc::clone(config));
    let mut headers = get(&format!("/oidc/callback?{query}"), cookies);
    let mut req = Request::new(&mut headers);
    let mut action = filter.on_request_headers(&mut req, true);
    // Discovery is cached from `start`; then the token endpoint, then the JWKS.
    let mut answers = vec![];
    if let Some(tokens) = tokens {
        answers.push(tokens);
        answers.push(jwks.clone());
    }
    for answer in answers {
        if req.local_reply().is_some() {
            break;
        }
        let calls = filter.callouts.take();
        if calls.is_empty() {
            break;
        }
        for call in calls {
            if call.request().path == "/token" {
                let body = String::from_utf8_lossy(&call.request().body).to_string();
                assert!(body.contains("grant_type=authorization_code"), "{body}");
                assert!(body.contains("code_verifier="), "{body}");
                assert_eq!(call.request().method, "POST");
            }
            action = call.complete(&mut filter, &mut req, ok(answer.clone()));
        }
    }
    assert_eq!(action, Action::Pause);
    req.take_local_reply()
        .unwrap_or_else(|| unreachable!("no reply"))
}

fn tokens_with(id_token: &str) -> Value {
    json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token, "refresh_token": "rt", "expires_in": 300})
}

/// Runs a full login; returns the session cookie (`name=value`).
fn login(config: &Rc<Config>, provider: &Provider) -> String {
    let (location, login_cookie) = start(config, "/app?x=1");
    let state = query_param(&location, "state").unwrap_or_default();
    let nonce = query_param(&location, "nonce").unwrap_or_default();
    let reply = callback(
        config,
        &format!("code=c1&state={state}"),
        &[login_cookie],
        Some(tokens_with(&provider.id_token(&nonce, |_| {}))),
        &provider.ed.jwks(),
    );
    assert_eq!(reply.status, 302, "{reply:?}");
    assert_eq!(header(&reply, "location"), Some("/app?x=1"));
    let cookies = set_cookies(&reply);
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert_eq!(
        cookies[1], "tollgate_session_login=",
        "login cookie cleared"
    );
    cookies[0].clone()
}

#[test]
fn demo_config_parses_and_bad_fields_are_named() {
    let config = demo();
    assert_eq!(config.callback_path(), "/oidc/callback");
    assert_eq!(config.keys().len(), 1);
    assert!(bad(|v| v["session_keys"] = json!([])).contains("at session_keys"));
    assert!(bad(|v| v["session_keys"] = json!(["c2hvcnQ="])).contains("at session_keys[0]"));
    assert!(
        bad(|v| v["session_keys"] =
            json!([v["session_keys"][0].clone(), v["session_keys"][0].clone()]))
        .contains("at session_keys[1]")
    );
    assert!(bad(|v| v["issuer"] = json!("not a url")).contains("at issuer"));
    assert!(bad(|v| v["redirect_uri"] = json!("/relative")).contains("at redirect_uri"));
    assert!(
        bad(|v| v["cookie"] = json!({"same_site": "None", "secure": false}))
            .contains("at cookie.same_site")
    );
    assert!(bad(|v| v["cookie"] = json!({"name": "a b"})).contains("at cookie.name"));
    assert!(bad(|v| v["pass_through"] = json!(["healthz"])).contains("at pass_through[0]"));
    assert!(bad(|v| v["logout_path"] = json!("/oidc/callback")).contains("at logout_path"));
    assert!(
        bad(|v| v["claim_headers"] = json!([{"claim": "sub", "header": "cookie"}]))
            .contains("at claim_headers[0].header")
    );
    assert!(bad(|v| v["timeout_ms"] = json!(0)).contains("at timeout_ms"));
}

#[test]
fn first_request_is_redirected_with_pkce_state_and_nonce() {
    let config = fresh();
    let (location, login_cookie) = start(&config, "/app?x=1");
    assert!(
        location
            .starts_with("http://127.0.0.1:9400/auth?response_type=code&client_id=tollgate-web&"),
        "{location}"
    );
    assert_eq!(
        query_param(&location, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&location, "scope").as_deref(),
        Some("openid profile email")
    );
    assert_eq!(
        query_param(&location, "redirect_uri").as_deref(),
        Some("http://127.0.0.1:10000/oidc/callback")
    );
    let state = query_param(&location, "state").unwrap_or_default();
    assert_eq!(state.len(), 43, "32 random bytes");
    // The login cookie holds state, nonce and the verifier whose S256 is the challenge.
    let (name, value) = login_cookie.split_once('=').unwrap_or_default();
    let plain = seal::open(config.keys(), name, value).unwrap_or_default();
    let login: Login = serde_json::from_slice(&plain).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(login.state, state);
    assert_eq!(query_param(&location, "nonce"), Some(login.nonce.clone()));
    assert_eq!(
        query_param(&location, "code_challenge"),
        Some(pkce_challenge(&login.verifier))
    );
    assert_eq!(login.return_to, "/app?x=1");
    // A second login: fresh randomness; discovery now comes from shared data (no callout).
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut headers = get("/", &[]);
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    assert!(filter.callouts.take().is_empty());
    let other = req
        .take_local_reply()
        .and_then(|r| header(&r, "location").map(str::to_string))
        .unwrap_or_default();
    assert_ne!(query_param(&other, "state"), Some(state));
}

#[test]
fn rfc7636_appendix_b_challenge() {
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn full_login_then_session_reaches_upstream_with_claims_only_from_the_filter() {
    let config = fresh();
    let provider = Provider { ed: Ed::new("k1") };
    let session = login(&config, &provider);
    let mut headers = get("/app", &[session.clone(), "other=1".into()]);
    headers.add("x-user", "mallory");
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Continue);
    assert!(req.local_reply().is_none());
    assert_eq!(headers.get_all("x-user"), vec!["alice"]);
    assert_eq!(headers.get_all("x-user-email"), vec!["alice@tollgate.test"]);
    assert_eq!(
        headers.get_all("cookie"),
        vec!["other=1"],
        "the session cookie is not forwarded"
    );
}

#[test]
fn api_clients_and_posts_get_401_and_pass_through_paths_skip_login() {
    let config = fresh();
    let mut headers = HeaderList::from([
        (":method", "GET"),
        (":path", "/api/x"),
        ("accept", "application/json"),
        ("x-user", "forged"),
    ]);
    let mut req = Request::new(&mut headers);
    assert_eq!(
        Oidc::new(Rc::clone(&config)).on_request_headers(&mut req, true),
        Action::Pause
    );
    assert_eq!(req.take_local_reply().map(|r| r.status), Some(401));
    let mut headers = HeaderList::from([
        (":method", "POST"),
        (":path", "/form"),
        ("accept", "text/html"),
    ]);
    let mut req = Request::new(&mut headers);
    assert_eq!(
        Oidc::new(Rc::clone(&config)).on_request_headers(&mut req, true),
        Action::Pause
    );
    assert_eq!(req.take_local_reply().map(|r| r.status), Some(401));
    let mut headers = HeaderList::from([
        (":method", "GET"),
        (":path", "/healthz?full"),
        ("x-user", "forged"),
    ]);
    let mut req = Request::new(&mut headers);
    assert_eq!(
        Oidc::new(config).on_request_headers(&mut req, true),
        Action::Continue
    );
    assert!(
        headers.get_all("x-user").is_empty(),
        "claim headers stripped on pass-through too"
    );
}

#[test]
fn forged_replayed_and_missing_state_are_refused() {
    let config = fresh();
    let provider = Provider { ed: Ed::new("k1") };
    let (location, login_cookie) = start(&config, "/");
    let state = query_param(&location, "state").unwrap_or_default();
    let nonce = query_param(&location, "nonce").unwrap_or_default();
    let tokens = tokens_with(&provider.id_token(&nonce, |_| {}));
    // Forged state (not this browser's).
    let reply = callback(
        &config,
        "code=c&state=forged",
        std::slice::from_ref(&login_cookie),
        None,
        &Value::Null,
    );
    assert_eq!(reply.status, 400);
    // No login cookie (a callback started elsewhere: login CSRF).
    let reply = callback(
        &config,
        &format!("code=c&state={state}"),
        &[],
        None,
        &Value::Null,
    );
    assert_eq!(reply.status, 400);
    // The right state, but the response names another issuer (RFC 9207 mix-up).
    let reply = callback(
        &config,
        &format!("code=c&state={state}&iss=http%3A%2F%2Fevil.test"),
        std::slice::from_ref(&login_cookie),
        None,
        &Value::Null,
    );
    assert_eq!(reply.status, 400);
    // The real one (with our `iss`) succeeds once...
    let reply = callback(
        &config,
        &format!("code=c&state={state}&iss=http%3A%2F%2F127.0.0.1%3A9400"),
        std::slice::from_ref(&login_cookie),
        Some(tokens.clone()),
        &provider.ed.jwks(),
    );
    assert_eq!(reply.status, 302);
    // ...and its replay (same cookie and state) is refused before any code exchange.
    let reply = callback(
        &config,
        &format!("code=c2&state={state}"),
        &[login_cookie],
        Some(tokens),
        &provider.ed.jwks(),
    );
    assert_eq!(reply.status, 400);
}

/// Makes an ID token for a nonce.
type MakeToken<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[test]
fn bad_id_tokens_are_refused() {
    let config = fresh();
    let provider = Provider { ed: Ed::new("k1") };
    let other = Ed::new("k1");
    let cases: Vec<(&str, MakeToken<'_>)> = vec![
        (
            "other issuer",
            Box::new(|n: &str| provider.id_token(n, |c| c["iss"] = json!("http://evil.test"))),
        ),
        (
            "other audience",
            Box::new(|n: &str| provider.id_token(n, |c| c["aud"] = json!("another-client"))),
        ),
        (
            "several audiences, no azp",
            Box::new(|n: &str| provider.id_token(n, |c| c["aud"] = json!(["tollgate-web", "x"]))),
        ),
        (
            "wrong nonce",
            Box::new(|_: &str| provider.id_token("not-the-nonce", |_| {})),
        ),
        (
            "expired",
            Box::new(|n: &str| provider.id_token(n, |c| c["exp"] = json!(NOW - 100))),
        ),
        (
            "not yet valid",
            Box::new(|n: &str| provider.id_token(n, |c| c["nbf"] = json!(NOW + 100))),
        ),
        (
            "no exp",
            Box::new(|n: &str| {
                provider.id_token(n, |c| {
                    c.as_object_mut().map(|m| m.remove("exp"));
                })
            }),
        ),
        (
            "alg none",
            Box::new(|n: &str| {
                let t = provider.id_token(n, |_| {});
                let parts: Vec<&str> = t.split('.').collect();
                format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1])
            }),
        ),
        (
            "another key",
            Box::new(|n: &str| {
                other.token(&json!({"iss": ISSUER, "aud": "tollgate-web", "sub": "alice", "nonce": n, "exp": NOW + 300}))
            }),
        ),
        (
            "HS256 keyed with the public key",
            Box::new(|n: &str| {
                use hmac_free::hs256;
                hs256(
                    &provider.ed.key.verifying_key().to_bytes(),
                    &json!({"iss": ISSUER, "aud": "tollgate-web", "sub": "alice", "nonce": n, "exp": NOW + 300}),
                )
            }),
        ),
    ];
    for (what, make) in cases {
        let (location, login_cookie) = start(&config, "/");
        let state = query_param(&location, "state").unwrap_or_default();
        let nonce = query_param(&location, "nonce").unwrap_or_default();
        let reply = callback(
            &config,
            &format!("code=c&state={state}"),
            &[login_cookie],
            Some(tokens_with(&make(&nonce))),
            &provider.ed.jwks(),
        );
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
        assert!(set_cookies(&reply).is_empty(), "{what}: no session");
    }
}

/// An HS256 token by hand (the JWS header and an HMAC), to show the filter never treats a
/// public key as an HMAC secret.
mod hmac_free {
    use super::*;

    pub fn hs256(secret: &[u8], claims: &Value) -> String {
        // HMAC-SHA256 (RFC 2104) over SHA-256, so the test needs no hmac crate.
        let mut key = [0u8; 64];
        key[..secret.len()].copy_from_slice(secret);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","kid":"k1"}"#),
            b64(claims.to_string().as_bytes())
        );
        let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::digest([ipad.as_slice(), input.as_bytes()].concat());
        let mac = Sha256::digest([opad.as_slice(), inner.as_slice()].concat());
        format!("{input}.{}", b64(&mac))
    }
}

#[test]
fn tampered_truncated_and_retired_key_sessions_are_refused() {
    let config = fresh();
    let provider = Provider { ed: Ed::new("k1") };
    let session = login(&config, &provider);
    let (name, value) = session.split_once('=').unwrap_or_default();
    let admitted = |config: &Rc<Config>, cookie: String| {
        let mut headers = get("/app", &[cookie]);
        let mut req = Request::new(&mut headers);
        let action = Oidc::new(Rc::clone(config)).on_request_headers(&mut req, true);
        (
            action == Action::Continue,
            req.take_local_reply().map(|r| r.status),
        )
    };
    assert_eq!(admitted(&config, session.clone()), (true, None));
    // Opened once, remembered: the same cookie again is a hit, and still admitted.
    assert_eq!(config.sessions().len(), 1);
    assert_eq!(admitted(&config, session.clone()), (true, None));
    assert_eq!(config.sessions().len(), 1);
    let mut bytes = URL_SAFE_NO_PAD.decode(value).unwrap_or_default();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        admitted(&config, format!("{name}={}", b64(&bytes))),
        (false, Some(302)),
        "tampered"
    );
    assert_eq!(
        admitted(&config, format!("{name}={}", &value[..value.len() - 10])),
        (false, Some(302)),
        "truncated"
    );
    // Rotation: a new key first, the old second: old sessions still open.
    let new_key = STANDARD.encode([9u8; 32]);
    let mut rotated = demo();
    rotated.session_keys = vec![new_key.clone(), rotated.session_keys[0].clone()];
    assert_eq!(admitted(&Rc::new(rotated), session.clone()), (true, None));
    // The old key retired: refused (a new configuration remembers nothing of the old one's).
    let mut retired = demo();
    retired.session_keys = vec![new_key];
    assert_eq!(
        admitted(&Rc::new(retired), session.clone()),
        (false, Some(302))
    );
    // Forged and truncated cookies were never remembered; without the cache, the same answers.
    assert_eq!(config.sessions().len(), 1);
    let mut uncached = demo();
    uncached.session_cache_size = 0;
    let uncached = Rc::new(uncached);
    assert_eq!(admitted(&uncached, session.clone()), (true, None));
    assert_eq!(admitted(&uncached, session), (true, None));
    assert!(uncached.sessions().is_empty());
}

#[test]
fn open_redirects_through_the_post_login_url_are_refused() {
    let config = fresh();
    for target in [
        "https://evil.test/",
        "//evil.test/",
        "/\\evil.test",
        "javascript:alert(1)",
    ] {
        let mut headers = get(
            &format!("/oidc/login?return_to={}", form_encode(target)),
            &[],
        );
        let mut req = Request::new(&mut headers);
        assert_eq!(
            Oidc::new(Rc::clone(&config)).on_request_headers(&mut req, true),
            Action::Pause
        );
        assert_eq!(
            req.take_local_reply().map(|r| r.status),
            Some(400),
            "{target}"
        );
    }
    // A request path that is protocol-relative is not kept as the target either.
    let (location, cookie) = start(&config, "//evil.test/x");
    assert!(location.starts_with(ISSUER));
    let (name, value) = cookie.split_once('=').unwrap_or_default();
    let login: Login =
        serde_json::from_slice(&seal::open(config.keys(), name, value).unwrap_or_default())
            .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(login.return_to, "/");
}

#[test]
fn sessions_refresh_before_expiry_and_end_at_session_max() {
    let config = fresh();
    let provider = Provider { ed: Ed::new("k1") };
    let session = login(&config, &provider);
    // Within refresh_before_s of the access token's expiry: refreshed, then admitted.
    mock::set_now_s(NOW + 300 - 30);
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut headers = get("/app", std::slice::from_ref(&session));
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    // Remembered from here on: the later requests of this test judge the remembered session.
    assert_eq!(config.sessions().len(), 1);
    let call = one_call(&mut filter);
    let body = String::from_utf8_lossy(&call.request().body).to_string();
    assert_eq!(body, "grant_type=refresh_token&refresh_token=rt");
    let refreshed = json!({"access_token": "at2", "token_type": "Bearer", "refresh_token": "rt2", "expires_in": 300});
    // No new ID token: no JWKS needed, the request goes on at once.
    assert_eq!(
        call.complete(&mut filter, &mut req, ok(refreshed)),
        Action::Continue
    );
    assert!(filter.callouts.take().is_empty());
    assert_eq!(headers.get_all("x-user"), vec!["alice"]);
    let mut resp_headers = HeaderList::from([(":status", "200")]);
    filter.on_response_headers(&mut Response::new(&mut resp_headers), true);
    let new_cookie = resp_headers.get_all("set-cookie");
    assert_eq!(new_cookie.len(), 1);
    assert!(new_cookie[0].starts_with("tollgate_session="));
    // A failed refresh ends the session (401 for an API client, cookie cleared).
    mock::set_now_s(NOW + 300 - 30);
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut headers = get("/app", std::slice::from_ref(&session));
    headers.set("accept", "application/json");
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    let call = one_call(&mut filter);
    let refused = Ok(CalloutResponse::new(
        400,
        vec![],
        br#"{"error":"invalid_grant"}"#.to_vec(),
    ));
    assert_eq!(call.complete(&mut filter, &mut req, refused), Action::Pause);
    let reply = req.take_local_reply().unwrap_or_else(|| unreachable!());
    assert_eq!(reply.status, 401);
    assert_eq!(set_cookies(&reply), vec!["tollgate_session=".to_string()]);
    // Past session_max_s: over, whatever the tokens.
    mock::set_now_s(NOW + config.session_max_s);
    let mut headers = get("/app", &[session]);
    let mut req = Request::new(&mut headers);
    let mut filter = Oidc::new(Rc::clone(&config));
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    // Discovery is stale by now (metadata_ttl_s): fetched again, then the login redirect.
    let call = one_call(&mut filter);
    call.complete(&mut filter, &mut req, ok(discovery_doc()));
    assert_eq!(req.take_local_reply().map(|r| r.status), Some(302));
    assert_eq!(
        config.sessions().len(),
        1,
        "each request found the remembered session"
    );
}

#[test]
fn logout_clears_the_session_and_goes_to_the_provider() {
    let config = fresh();
    let provider = Provider { ed: Ed::new("k1") };
    let _session = login(&config, &provider);
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut headers = get("/oidc/logout", &[]);
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    let reply = req.take_local_reply().unwrap_or_else(|| unreachable!());
    assert_eq!(reply.status, 302);
    assert_eq!(set_cookies(&reply), vec!["tollgate_session=".to_string()]);
    let location = header(&reply, "location").unwrap_or_default();
    assert!(location.starts_with("http://127.0.0.1:9400/session/end?client_id=tollgate-web&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A10000%2F"), "{location}");
}

#[test]
fn provider_failures_fail_closed() {
    let config = fresh();
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut headers = get("/", &[]);
    let mut req = Request::new(&mut headers);
    assert_eq!(filter.on_request_headers(&mut req, true), Action::Pause);
    let call = one_call(&mut filter);
    assert_eq!(
        call.complete(
            &mut filter,
            &mut req,
            Err(CalloutError::NoResponse {
                cluster: "idp".into()
            })
        ),
        Action::Pause
    );
    assert_eq!(req.take_local_reply().map(|r| r.status), Some(503));
    // A discovery document for another issuer is refused.
    let mut filter = Oidc::new(Rc::clone(&config));
    let mut headers = get("/", &[]);
    let mut req = Request::new(&mut headers);
    filter.on_request_headers(&mut req, true);
    let call = one_call(&mut filter);
    let mut doc = discovery_doc();
    doc["issuer"] = json!("http://evil.test");
    call.complete(&mut filter, &mut req, ok(doc));
    assert_eq!(req.take_local_reply().map(|r| r.status), Some(503));
}

/// `envoy/oidc/envoy.yaml`, `wasmplugin.yaml` and `trafficextension.yaml` must carry exactly
/// `demo.json`.
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
            "oidc",
            include_str!("../../../envoy/oidc/envoy.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&text));
        check_cluster("oidc", &bootstrap, &demo()?["cluster"].clone())
    }

    #[test]
    fn wasmplugin_carries_the_demo_configuration() -> Result<(), String> {
        let config = check_wasmplugin(
            "oidc",
            include_str!("../../../envoy/oidc/wasmplugin.yaml"),
            &demo()?,
        )?;
        assert!(accepted(&config));
        Ok(())
    }
}
