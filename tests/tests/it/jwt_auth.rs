//! The `jwt-auth` filter in the harness (JWKS answered by a stub) and in a real Envoy fetching its
//! JWKS from a real server on 127.0.0.1, with key rotation. Keys are generated at test time; every
//! algorithm is signed and checked, and every forged token must be answered 401 with nothing
//! reaching the upstream.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::http1::{header, header_values};
use tollgate_tests::jwt::{self, Issuer};
use tollgate_tests::paths;
use tollgate_tests::upstream::{ReceivedRequest, Upstream};
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

/// The filter under test.
const FILTER: &str = "jwt-auth";
const ISS: &str = "https://idp.example.com";
const AUD: &str = "shop-api";
/// The harness clock at the first exchange (2024-01-01T00:00:00Z).
const HARNESS_NOW: u64 = 1_704_067_200;

/// One issuer per algorithm; the RSA algorithms share one generated key.
fn issuers() -> Result<&'static [Issuer]> {
    static ISSUERS: OnceLock<Vec<Issuer>> = OnceLock::new();
    if let Some(all) = ISSUERS.get() {
        return Ok(all);
    }
    let rsa = jwt::rsa_key()?;
    let all = vec![
        Issuer::rsa("rs256", "RS256", &rsa),
        Issuer::rsa("rs384", "RS384", &rsa),
        Issuer::rsa("rs512", "RS512", &rsa),
        Issuer::rsa("ps256", "PS256", &rsa),
        Issuer::es256("es256")?,
        Issuer::es384("es384")?,
        Issuer::eddsa("eddsa")?,
        Issuer::hs256("hs256")?,
    ];
    Ok(ISSUERS.get_or_init(|| all))
}

fn jwks_of(all: &[Issuer]) -> Value {
    jwt::jwks(&all.iter().collect::<Vec<_>>())
}

fn claims_at(now: u64) -> Value {
    json!({"iss": ISS, "aud": [AUD, "other"], "sub": "user-42", "scope": "orders:read",
           "iat": now, "nbf": now - 5, "exp": now + 600})
}

fn request_with(token: &str) -> HttpRequest {
    client::request(
        "GET",
        "api.example.com",
        "/v1/orders",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-sub", "spoofed-by-client"),
        ],
        b"",
    )
}

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"orders")
}

/// Forged and broken tokens, each with what it tries, built from a valid `good` token.
fn attacks(rs: &Issuer, good: &str, now: u64) -> Vec<(&'static str, String)> {
    let with = |field: &str, value: Value| {
        let mut c = claims_at(now);
        c[field] = value;
        rs.token(&c)
    };
    let mut admin = claims_at(now);
    admin["sub"] = json!("admin");
    let parts: Vec<&str> = good.split('.').collect();
    vec![
        ("changed payload", jwt::with_payload(good, &admin)),
        ("expired", with("exp", json!(now - 3600))),
        ("not yet valid", with("nbf", json!(now + 3600))),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example.com")),
        ),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("alg none", jwt::alg_none(&claims_at(now))),
        (
            "HS256 signed with the RSA public key",
            jwt::forged_hs256("rs256", &rs.public_key_bytes(), &claims_at(now)),
        ),
        (
            "malformed base64",
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
        ),
        ("signature dropped", format!("{}.{}.", parts[0], parts[1])),
        (
            "algorithm switched in the header (same key, same signature)",
            format!(
                "{}.{}.{}",
                jwt::b64(
                    json!({"alg": "PS256", "kid": rs.kid, "typ": "JWT"})
                        .to_string()
                        .as_bytes()
                ),
                parts[1],
                parts[2]
            ),
        ),
        (
            "kid of another key",
            format!(
                "{}.{}.{}",
                jwt::b64(
                    json!({"alg": rs.alg, "kid": "es256"})
                        .to_string()
                        .as_bytes()
                ),
                parts[1],
                parts[2]
            ),
        ),
        ("huge token", format!("{good}{}", "A".repeat(12_000))),
    ]
}

fn demo_config_with(edit: impl FnOnce(&mut Value)) -> Result<String> {
    let mut config: Value = serde_json::from_str(&paths::demo_config(FILTER)?)?;
    edit(&mut config);
    Ok(config.to_string())
}

fn replay(
    config: &str,
    jwks: &Value,
    requests: Vec<HttpRequest>,
) -> Result<Vec<tollgate_replay::ExchangeReport>> {
    let exchanges = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| Exchange {
            id: format!("request {i}"),
            request,
            response: Some(ok_response()),
            details: Default::default(),
        })
        .collect();
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(config.to_string())
        .traffic(Traffic {
            source: None,
            exchanges,
            warnings: Vec::new(),
        })
        .http_call_stub(HttpCallStub {
            headers: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: jwks.to_string().into_bytes(),
        })
        .run()?;
    Ok(report.exchanges)
}

#[test]
fn harness_accepts_every_algorithm_and_copies_claims() -> Result<()> {
    let all = issuers()?;
    let config = paths::demo_config(FILTER)?;
    let requests = all
        .iter()
        .map(|i| request_with(&i.token(&claims_at(HARNESS_NOW))))
        .collect();
    let reports = replay(&config, &jwks_of(all), requests)?;
    for (issuer, report) in all.iter().zip(&reports) {
        if issuer.alg == "HS256" {
            // A symmetric key published in a fetched JWKS is ignored by default.
            ensure!(
                report.verdict == Verdict::AnsweredLocally { status: 401 }
                    && report.upstream_request.is_none(),
                "HS256 with a key from a fetched JWKS must be refused: {report:?}"
            );
            continue;
        }
        let up = report
            .upstream_request
            .as_ref()
            .with_context(|| format!("{}: nothing upstream: {report:?}", issuer.alg))?;
        ensure!(
            header(&up.headers, "x-jwt-sub") == Some("user-42"),
            "{}: {up:?}",
            issuer.alg
        );
        ensure!(header(&up.headers, "x-jwt-scope") == Some("orders:read"));
        ensure!(
            header(&up.headers, "authorization").is_none(),
            "{}: token forwarded",
            issuer.alg
        );
    }
    Ok(())
}

#[test]
fn harness_accepts_fetched_symmetric_keys_only_when_allowed() -> Result<()> {
    let all = issuers()?;
    let hs = all
        .iter()
        .find(|i| i.alg == "HS256")
        .context("no HS256 issuer")?;
    let allowed = demo_config_with(|c| {
        c["providers"][0]["remote_jwks"]["allow_symmetric_keys"] = json!(true);
    })?;
    let token = hs.token(&claims_at(HARNESS_NOW));
    let reports = replay(&allowed, &jwks_of(all), vec![request_with(&token)])?;
    ensure!(
        reports[0].upstream_request.is_some(),
        "allowed symmetric key: {:?}",
        reports[0]
    );
    let reports = replay(
        &paths::demo_config(FILTER)?,
        &jwks_of(all),
        vec![request_with(&token)],
    )?;
    ensure!(
        reports[0].verdict == Verdict::AnsweredLocally { status: 401 }
            && reports[0].upstream_request.is_none(),
        "default: {:?}",
        reports[0]
    );
    Ok(())
}

#[test]
fn harness_refuses_every_forgery_with_401() -> Result<()> {
    let all = issuers()?;
    let good = all[0].token(&claims_at(HARNESS_NOW));
    let cases = attacks(&all[0], &good, HARNESS_NOW);
    let requests = cases.iter().map(|(_, t)| request_with(t)).collect();
    let reports = replay(&paths::demo_config(FILTER)?, &jwks_of(all), requests)?;
    for ((label, _), report) in cases.iter().zip(&reports) {
        ensure!(
            report.verdict == Verdict::AnsweredLocally { status: 401 },
            "{label}: {report:?}"
        );
        ensure!(
            report.upstream_request.is_none(),
            "{label}: reached upstream"
        );
        ensure!(
            header(&report.client_response.headers, "www-authenticate")
                == Some("Bearer error=\"invalid_token\""),
            "{label}: {:?}",
            report.client_response
        );
    }
    Ok(())
}

fn start_envoy(
    config_json: &str,
    upstream: &Upstream,
    jwks: &Upstream,
    label: &str,
) -> Result<Envoy> {
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("jwks", jwks.addr())?
        .set_plugin_configuration(config_json)?;
    config.use_filters_from(&paths::filters_dir()?)?;
    Envoy::start(&config, label)
}

fn jwks_response(jwks: &Value) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: jwks.to_string().into_bytes(),
    }
}

/// Sends a request carrying `token` through the started Envoy.
fn send_token(envoy: &Envoy, token: &str) -> Result<HttpResponse> {
    client::send(envoy.listener(), &request_with(token))
}

/// The JWKS server publishes only `key` from now on; waits past the filter's refetch interval
/// for unknown kids (1 s in these tests) so that a token of `key` makes it fetch again.
fn rotate_to(jwks_server: &Upstream, key: &Issuer) {
    jwks_server.set_response(jwks_response(&jwt::jwks(&[key])));
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn envoy_verifies_every_algorithm_with_a_fetched_jwks_and_refuses_forgeries() -> Result<()> {
    let all = issuers()?;
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(jwks_response(&jwks_of(all)))?;
    let config = paths::demo_config(FILTER)?;
    let envoy = start_envoy(&config, &upstream, &jwks_server, "jwt-auth-algorithms")?;
    envoy.explain((|| {
        let now = jwt::now();
        for issuer in all {
            let got = send_token(&envoy, &issuer.token(&claims_at(now)))?;
            if issuer.alg == "HS256" {
                // A symmetric key published in a fetched JWKS is ignored by default.
                ensure!(got.status == 401, "HS256 from a fetched JWKS: {got:?}");
                ensure!(
                    upstream.take_requests().is_empty(),
                    "HS256 reached upstream"
                );
                continue;
            }
            ensure!(got.status == 200, "{}: client got {got:?}", issuer.alg);
            let ups = upstream.take_requests();
            ensure!(ups.len() == 1, "{}: upstream got {ups:?}", issuer.alg);
            ensure!(
                header(&ups[0].headers, "x-jwt-sub") == Some("user-42"),
                "{}: {:?}",
                issuer.alg,
                ups[0].headers
            );
            ensure!(header(&ups[0].headers, "authorization").is_none());
        }
        let fetches = jwks_server.take_requests();
        ensure!(
            fetches.len() == 1,
            "the JWKS should be fetched once and cached, got {} fetches",
            fetches.len()
        );
        ensure!(
            fetches[0].path == "/.well-known/jwks.json",
            "{:?}",
            fetches[0]
        );

        let good = all[0].token(&claims_at(now));
        for (label, token) in attacks(&all[0], &good, now) {
            let got = send_token(&envoy, &token)?;
            ensure!(got.status == 401, "{label}: client got {got:?}");
            ensure!(
                header(&got.headers, "www-authenticate") == Some("Bearer error=\"invalid_token\""),
                "{label}: {got:?}"
            );
            ensure!(
                upstream.take_requests().is_empty(),
                "{label}: reached the upstream"
            );
        }
        // No token, an empty bearer, and the token in the wrong scheme: missing.
        for (label, value) in [
            ("empty bearer", "Bearer "),
            ("whitespace bearer", "Bearer  \t  "),
            ("basic", "Basic dXNlcjpwdw=="),
        ] {
            let req = client::request(
                "GET",
                "api.example.com",
                "/",
                &[("authorization", value)],
                b"",
            );
            let got = client::send(envoy.listener(), &req)?;
            ensure!(got.status == 401, "{label}: {got:?}");
            ensure!(
                header(&got.headers, "www-authenticate") == Some("Bearer"),
                "{label}"
            );
            ensure!(upstream.take_requests().is_empty(), "{label}");
        }
        // Header name and scheme case do not matter.
        let req = client::request(
            "GET",
            "api.example.com",
            "/",
            &[("AUTHORIZATION", &format!("bearer {good}"))],
            b"",
        );
        let got = client::send(envoy.listener(), &req)?;
        ensure!(
            got.status == 200,
            "upper-case name, lower-case scheme: {got:?}"
        );
        let ups = upstream.take_requests();
        ensure!(
            ups.len() == 1 && header(&ups[0].headers, "authorization").is_none(),
            "{ups:?}"
        );
        // A valid token followed by a second, forged authorization header: Envoy joins the
        // two values with a comma (authorization is one of its inline headers), which is not a
        // token, so the request is refused rather than half-checked.
        let req = client::request(
            "GET",
            "api.example.com",
            "/",
            &[
                ("authorization", &format!("Bearer {good}")),
                (
                    "authorization",
                    &format!("Bearer {}", jwt::alg_none(&claims_at(now))),
                ),
            ],
            b"",
        );
        let got = client::send(envoy.listener(), &req)?;
        ensure!(
            got.status == 401,
            "duplicate authorization headers: {got:?}"
        );
        ensure!(
            upstream.take_requests().is_empty(),
            "duplicate headers reached the upstream"
        );
        ensure!(
            jwks_server.take_requests().is_empty(),
            "unexpected JWKS fetch"
        );
        Ok(())
    })())
}

/// Sends `GET path` with `headers` through `envoy`: answered 200, and the one
/// request `upstream` got.
fn passed_through(
    envoy: &Envoy,
    upstream: &Upstream,
    path: &str,
    headers: &[(&str, &str)],
    what: &str,
) -> Result<ReceivedRequest> {
    let req = client::request("GET", "api.example.com", path, headers, b"");
    let got = client::send(envoy.listener(), &req)?;
    ensure!(got.status == 200, "{what}: {got:?}");
    let mut ups = upstream.take_requests();
    ensure!(ups.len() == 1, "{what}: {ups:?}");
    Ok(ups.remove(0))
}

#[test]
fn envoy_removes_the_token_from_the_query_and_cookie_unless_forwarded() -> Result<()> {
    let issuer = Issuer::eddsa("strip")?;
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(jwks_response(&jwt::jwks(&[&issuer])))?;
    let envoy = start_envoy(
        &paths::demo_config(FILTER)?,
        &upstream,
        &jwks_server,
        "jwt-auth-strip",
    )?;
    let token = issuer.token(&claims_at(jwt::now()));
    envoy.explain((|| {
        let path = format!("/v1/orders?page=2&access_token={token}&sort=asc");
        let up = passed_through(&envoy, &upstream, &path, &[], "token in the query")?;
        ensure!(
            up.path == "/v1/orders?page=2&sort=asc",
            "the upstream saw {:?}",
            up.path
        );
        ensure!(
            !format!("{up:?}").contains(&token),
            "token reached upstream"
        );

        let cookie = format!("theme=dark; id_token={token}; lang=en");
        let up = passed_through(
            &envoy,
            &upstream,
            "/v1/orders",
            &[("cookie", &cookie)],
            "token in a cookie",
        )?;
        ensure!(
            header(&up.headers, "cookie") == Some("theme=dark; lang=en"),
            "{:?}",
            up.headers
        );
        ensure!(
            !format!("{up:?}").contains(&token),
            "token reached upstream"
        );

        let cookie = format!("id_token={token}");
        let up = passed_through(
            &envoy,
            &upstream,
            "/v1/orders",
            &[("cookie", &cookie)],
            "only cookie",
        )?;
        ensure!(header(&up.headers, "cookie").is_none(), "{up:?}");
        Ok(())
    })())?;
    drop(envoy);

    // `forward: true` leaves them all in place.
    let forward = demo_config_with(|c| c["providers"][0]["forward"] = json!(true))?;
    let envoy = start_envoy(&forward, &upstream, &jwks_server, "jwt-auth-forward")?;
    envoy.explain((|| {
        let path = format!("/v1/orders?access_token={token}");
        let up = passed_through(&envoy, &upstream, &path, &[], "forwarded")?;
        ensure!(up.path == path, "{up:?}");
        Ok(())
    })())
}

#[test]
fn envoy_refetches_the_jwks_when_a_new_kid_appears() -> Result<()> {
    let first = Issuer::es256("rot-1")?;
    let second = Issuer::eddsa("rot-2")?;
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(jwks_response(&jwt::jwks(&[&first])))?;
    let config = demo_config_with(|c| {
        c["providers"][0]["remote_jwks"]["refetch_interval_seconds"] = json!(1);
    })?;
    let envoy = start_envoy(&config, &upstream, &jwks_server, "jwt-auth-rotation")?;
    envoy.explain((|| {
        let now = jwt::now();
        let got = send_token(&envoy, &first.token(&claims_at(now)))?;
        ensure!(got.status == 200, "first key: {got:?}");
        ensure!(jwks_server.take_requests().len() == 1);

        // Rotate: the provider now publishes only the second key.
        rotate_to(&jwks_server, &second);
        let got = send_token(&envoy, &second.token(&claims_at(now)))?;
        ensure!(got.status == 200, "rotated key: {got:?}");
        ensure!(
            jwks_server.take_requests().len() == 1,
            "the new kid should cause exactly one refetch"
        );
        // The first key is gone from the JWKS: its tokens are refused from now on
        // (within the refetch interval, so without another fetch).
        let got = send_token(&envoy, &first.token(&claims_at(now)))?;
        ensure!(got.status == 401, "retired key: {got:?}");
        ensure!(
            jwks_server.take_requests().is_empty(),
            "refetched within the interval"
        );
        ensure!(upstream.take_requests().len() == 2);
        Ok(())
    })())
}

#[test]
fn envoy_jwks_server_down_is_401() -> Result<()> {
    let issuer = Issuer::eddsa("k")?;
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(HttpResponse {
        status: 503,
        headers: Vec::new(),
        body: b"down".to_vec(),
    })?;
    let envoy = start_envoy(
        &paths::demo_config(FILTER)?,
        &upstream,
        &jwks_server,
        "jwt-auth-jwks-down",
    )?;
    envoy.explain((|| {
        let got = send_token(&envoy, &issuer.token(&claims_at(jwt::now())))?;
        if got.status != 401 {
            bail!("JWKS down: client got {got:?}");
        }
        ensure!(upstream.take_requests().is_empty());
        Ok(())
    })())
}

/// Requests carrying a valid token and, somewhere else the filter reads tokens from, a forged
/// one (or a second copy of the location): every one must be refused with nothing upstream.
fn second_token_attacks(good: &str, forged: &str) -> Vec<(&'static str, HttpRequest)> {
    let get = |path: String, headers: &[(&str, &str)]| {
        let mut all = vec![("x-jwt-sub", "spoofed-by-client")];
        all.extend_from_slice(headers);
        client::request("GET", "api.example.com", &path, &all, b"")
    };
    let bearer = format!("Bearer {good}");
    vec![
        (
            "valid bearer, unsigned token claiming admin in the query",
            get(
                format!("/v1/orders?access_token={forged}"),
                &[("authorization", &bearer)],
            ),
        ),
        (
            "valid bearer, unsigned token in the id_token cookie",
            get(
                "/v1/orders".into(),
                &[
                    ("authorization", &bearer),
                    ("cookie", &format!("theme=dark; id_token={forged}")),
                ],
            ),
        ),
        (
            "valid token in the query, forged bearer",
            get(
                format!("/v1/orders?access_token={good}"),
                &[("authorization", &format!("Bearer {forged}"))],
            ),
        ),
        (
            "the parameter twice, valid then forged",
            get(
                format!("/v1/orders?access_token={good}&access_token={forged}"),
                &[],
            ),
        ),
        (
            "the forged parameter percent-encoded",
            get(
                format!("/v1/orders?access_token={good}&access%5Ftoken={forged}"),
                &[],
            ),
        ),
        (
            "the cookie in two cookie headers",
            get(
                "/v1/orders".into(),
                &[
                    ("cookie", &format!("id_token={good}")),
                    ("cookie", &format!("id_token={forged}")),
                ],
            ),
        ),
    ]
}

fn admin_claims(now: u64) -> Value {
    let mut admin = claims_at(now);
    admin["sub"] = json!("admin");
    admin
}

/// Valid tokens in several places at once: let through, none forwarded.
fn two_valid_tokens(good: &str, other: &str) -> HttpRequest {
    client::request(
        "GET",
        "api.example.com",
        &format!("/v1/orders?page=2&access_token={other}"),
        &[
            ("authorization", &format!("Bearer {good}")),
            ("cookie", &format!("lang=en; id_token={good}")),
        ],
        b"",
    )
}

#[test]
fn harness_refuses_a_second_unverified_token_anywhere() -> Result<()> {
    let all = issuers()?;
    let good = all[0].token(&claims_at(HARNESS_NOW));
    let forged = jwt::alg_none(&admin_claims(HARNESS_NOW));
    let cases = second_token_attacks(&good, &forged);
    let mut requests: Vec<HttpRequest> = cases.iter().map(|(_, r)| r.clone()).collect();
    requests.push(two_valid_tokens(
        &good,
        &all[4].token(&claims_at(HARNESS_NOW)),
    ));
    let reports = replay(&paths::demo_config(FILTER)?, &jwks_of(all), requests)?;
    for ((label, _), report) in cases.iter().zip(&reports) {
        ensure!(
            report.verdict == Verdict::AnsweredLocally { status: 401 },
            "{label}: {report:?}"
        );
        ensure!(
            report.upstream_request.is_none(),
            "{label}: reached upstream"
        );
    }
    let last = reports.last().context("no report")?;
    let up = last
        .upstream_request
        .as_ref()
        .with_context(|| format!("two valid tokens refused: {last:?}"))?;
    ensure!(up.path == "/v1/orders?page=2", "{up:?}");
    ensure!(header(&up.headers, "authorization").is_none(), "{up:?}");
    ensure!(header(&up.headers, "cookie") == Some("lang=en"), "{up:?}");
    ensure!(
        header(&up.headers, "x-jwt-sub") == Some("user-42"),
        "{up:?}"
    );
    Ok(())
}

#[test]
fn envoy_refuses_a_second_unverified_token_anywhere() -> Result<()> {
    let issuer = Issuer::eddsa("multi")?;
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(jwks_response(&jwt::jwks(&[&issuer])))?;
    let envoy = start_envoy(
        &paths::demo_config(FILTER)?,
        &upstream,
        &jwks_server,
        "jwt-auth-multi",
    )?;
    envoy.explain((|| {
        let now = jwt::now();
        let good = issuer.token(&claims_at(now));
        let forged = jwt::alg_none(&admin_claims(now));
        for (label, request) in second_token_attacks(&good, &forged) {
            let got = client::send(envoy.listener(), &request)?;
            ensure!(got.status == 401, "{label}: client got {got:?}");
            ensure!(
                upstream.take_requests().is_empty(),
                "{label}: reached the upstream"
            );
        }
        let got = client::send(envoy.listener(), &two_valid_tokens(&good, &good))?;
        ensure!(got.status == 200, "two valid tokens: {got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(ups[0].path == "/v1/orders?page=2", "{:?}", ups[0]);
        ensure!(header(&ups[0].headers, "authorization").is_none());
        ensure!(header(&ups[0].headers, "cookie") == Some("lang=en"));
        ensure!(
            header_values(&ups[0].headers, "x-jwt-sub") == ["user-42"],
            "{:?}",
            ups[0].headers
        );
        ensure!(
            jwks_server.take_requests().len() == 1,
            "the JWKS is fetched once"
        );
        Ok(())
    })())
}

/// Configurations jwt-auth refuses, each with an inline HS256 secret, and the field named.
fn refused_configurations(secret: &str) -> Vec<(&'static str, String, &'static str)> {
    let provider = |extra: Value| {
        let mut p = json!({
            "name": "idp", "issuer": ISS,
            "jwks": {"keys": [{"kty": "oct", "kid": "h", "k": secret}]}
        });
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        json!({"providers": [p]}).to_string()
    };
    vec![
        (
            "clock skew that disables exp",
            provider(json!({"clock_skew_seconds": 18_446_744_073_709_551_615u64})),
            "providers[0].clock_skew_seconds",
        ),
        (
            "the secret where a number belongs",
            provider(json!({"clock_skew_seconds": secret})),
            "providers[0].clock_skew_seconds",
        ),
        (
            "a 10 MB value of the wrong type",
            provider(json!({"require_expiration": "x".repeat(10 * 1024 * 1024)})),
            "providers[0].require_expiration",
        ),
    ]
}

/// The longest refusal line allowed, bytes.
const MAX_REFUSAL_LINE: usize = 4096;

#[test]
fn harness_refusals_name_the_field_never_the_secret_and_stay_short() -> Result<()> {
    let secret = jwt::b64(b"an-inline-hs256-secret-of-32-bytes!");
    for (label, config, field) in refused_configurations(&secret) {
        let err = match replay(&config, &json!({"keys": []}), vec![request_with("x")]) {
            Ok(reports) => bail!("{label}: accepted: {reports:?}"),
            Err(err) => format!("{err:#}"),
        };
        ensure!(err.contains(field), "{label}: {err}");
        ensure!(!err.contains(&secret), "{label}: the secret is in {err}");
        ensure!(
            err.len() < MAX_REFUSAL_LINE && !err.contains('\n'),
            "{label}: {} bytes",
            err.len()
        );
    }
    Ok(())
}

#[test]
fn envoy_refusals_name_the_field_never_the_secret_and_stay_short() -> Result<()> {
    let secret = jwt::b64(b"an-inline-hs256-secret-of-32-bytes!");
    let upstream = Upstream::start(ok_response())?;
    for (label, config, field) in refused_configurations(&secret) {
        let mut envoy_config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
        envoy_config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream.addr())?
            .route_cluster_to("jwks", upstream.addr())?
            .set_plugin_configuration(&config)?;
        envoy_config.use_filters_from(&paths::filters_dir()?)?;
        match Envoy::launch(&envoy_config, "jwt-auth-refused")? {
            Launch::Ready(envoy) => bail!("{label}: Envoy started\n{}", envoy.log_tail()),
            Launch::Exited { status, log } => {
                ensure!(!status.success(), "{label}: Envoy exited with {status}");
                // The filter's own line, as Envoy logs it.
                let line = log
                    .lines()
                    .find(|l| l.contains("jwt-auth: bad configuration"))
                    .with_context(|| format!("{label}: no refusal in Envoy's log:\n{log}"))?;
                ensure!(line.contains(field), "{label}: {line}");
                ensure!(
                    line.len() < MAX_REFUSAL_LINE,
                    "{label}: {} bytes",
                    line.len()
                );
                ensure!(
                    !log.contains(&secret),
                    "{label}: the secret is in Envoy's log"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn envoy_caches_verified_tokens_until_they_expire() -> Result<()> {
    let first = Issuer::es256("cache-1")?;
    let second = Issuer::eddsa("cache-2")?;
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(jwks_response(&jwt::jwks(&[&first])))?;
    let config = demo_config_with(|c| {
        let p = &mut c["providers"][0];
        p["remote_jwks"]["refetch_interval_seconds"] = json!(1);
        p["clock_skew_seconds"] = json!(0);
        p["jwt_cache"] = json!({"size": 10});
    })?;
    let envoy = start_envoy(&config, &upstream, &jwks_server, "jwt-auth-token-cache")?;
    envoy.explain((|| {
        let now = jwt::now();
        let mut short = claims_at(now);
        short["exp"] = json!(now + 6);
        let cached = first.token(&short);
        let got = send_token(&envoy, &cached)?;
        ensure!(got.status == 200, "first request: {got:?}");
        // Rotate: the provider now publishes only the second key, fetched for a new kid.
        rotate_to(&jwks_server, &second);
        let got = send_token(&envoy, &second.token(&claims_at(now)))?;
        ensure!(got.status == 200, "rotated key: {got:?}");
        ensure!(
            jwks_server.take_requests().len() == 2,
            "one fetch, one refetch"
        );
        // The verified token is served from the cache (as native jwt_authn's cache does), with
        // its claims; another token of the retired key is verified, and refused.
        let got = send_token(&envoy, &cached)?;
        ensure!(got.status == 200, "cached token: {got:?}");
        let got = send_token(&envoy, &first.token(&claims_at(now)))?;
        ensure!(got.status == 401, "retired key, not cached: {got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 3, "upstream got {ups:?}");
        ensure!(
            header(&ups[2].headers, "x-jwt-sub") == Some("user-42")
                && header(&ups[2].headers, "authorization").is_none(),
            "claims from the cache: {:?}",
            ups[2].headers
        );
        // Past its exp the entry is dropped: verified again, expired.
        std::thread::sleep(Duration::from_secs((now + 7).saturating_sub(jwt::now())));
        let got = send_token(&envoy, &cached)?;
        ensure!(got.status == 401, "expired cached token: {got:?}");
        ensure!(upstream.take_requests().is_empty());
        Ok(())
    })())
}
