//! The Tollgate filters next to Envoy's native ones: the same requests through a real Envoy
//! running the `.wasm` (its `envoy/<filter>/envoy.yaml`) and through one where the Wasm filter
//! is swapped for the native filter configured equivalently (`envoy/<filter>/native.yaml`): same
//! status, same "reached the upstream or not", same forwarded headers where the features overlap.
//! Where the two knowingly differ, the case says how, and both sides are asserted (the
//! differences are documented in each filter's README).
//!
//! Also: `traffic/auth.yaml` (the credentials traffic `tollgate bench` measures the filters with)
//! replayed in the harness, each filter on its own exchanges: valid credentials pass, invalid ones
//! are refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail, ensure};
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::header;
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{self as traffic, HttpRequest, HttpResponse, Traffic};

const API: &str = "api.example.com";

fn auth_traffic() -> Result<Traffic> {
    Ok(traffic::load(&paths::root().join("traffic/auth.yaml"))?)
}

/// The exchanges of `traffic/auth.yaml` whose id starts with `prefix`.
fn exchanges_of(all: &Traffic, prefix: &str) -> Traffic {
    Traffic {
        source: all.source.clone(),
        exchanges: all
            .exchanges
            .iter()
            .filter(|e| e.id.starts_with(prefix))
            .cloned()
            .collect(),
        warnings: Vec::new(),
    }
}

/// `traffic/auth.yaml` through the harness, for each filter its own exchanges: every `-valid`
/// one reaches the upstream, every `-invalid-` one is answered 401 or 403 and does not.
#[test]
fn auth_traffic_passes_valid_and_refuses_invalid_credentials_in_the_harness() -> Result<()> {
    let all = auth_traffic()?;
    for (filter, prefix, valid, invalid) in [
        ("basic-auth", "basic-", 3, 3),
        ("key-auth", "key-", 3, 3),
        ("jwt-auth", "jwt-", 14, 11),
    ] {
        let subset = exchanges_of(&all, prefix);
        let report = Replay::filter(paths::filter_wasm(filter)?)
            .config(paths::demo_config(filter)?)
            .traffic(subset)
            .run()?;
        let (mut passed, mut refused) = (0, 0);
        for exchange in &report.exchanges {
            let id = &exchange.id;
            if id.contains("-invalid-") {
                ensure!(
                    matches!(
                        exchange.verdict,
                        Verdict::AnsweredLocally { status: 401 | 403 }
                    ) && exchange.upstream_request.is_none(),
                    "{filter}: {id} should be refused: {:?}",
                    exchange.verdict
                );
                refused += 1;
            } else if id.contains("-valid") {
                let up = exchange
                    .upstream_request
                    .as_ref()
                    .with_context(|| format!("{filter}: {id} refused: {:?}", exchange.verdict))?;
                ensure!(
                    exchange.verdict == Verdict::Modified,
                    "{filter}: {id}: {:?}",
                    exchange.verdict
                );
                // Each filter marks a verified request its own way.
                let mark = match filter {
                    "jwt-auth" => header(&up.headers, "x-jwt-sub"),
                    _ => header(&up.headers, "x-consumer"),
                };
                ensure!(mark.is_some(), "{filter}: {id}: {:?}", up.headers);
                passed += 1;
            } else {
                bail!("{filter}: {id} says neither -valid nor -invalid-");
            }
        }
        ensure!(
            (passed, refused) == (valid, invalid),
            "{filter}: {passed} passed and {refused} refused, expected {valid} and {invalid}"
        );
    }
    Ok(())
}

/// What the client and the upstream saw for one request through one Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    /// The client's body, when bodies are compared.
    body: Option<Vec<u8>>,
    /// The request as the upstream got it (path, selected headers), if it got there.
    upstream: Option<(String, BTreeMap<String, String>)>,
}

/// Runs `requests` through `envoy`, recording what `upstream` got of each.
fn run(
    envoy: &Envoy,
    upstream: &Upstream,
    requests: &[(String, HttpRequest)],
    compared: &[&str],
    bodies: bool,
) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    for (label, request) in requests {
        let got = client::send(envoy.listener(), request).with_context(|| label.clone())?;
        let ups = upstream.take_requests();
        ensure!(ups.len() <= 1, "{label}: {} upstream requests", ups.len());
        let upstream = ups.first().map(|u| {
            let headers = compared
                .iter()
                .filter_map(|name| header(&u.headers, name).map(|v| (name.to_string(), v.into())))
                .collect();
            (u.path.clone(), headers)
        });
        seen.push(Seen {
            status: got.status,
            body: bodies.then(|| got.body.clone()),
            upstream,
        });
    }
    Ok(seen)
}

/// How a case compares.
enum Expect {
    /// Status, upstream reached, path and compared headers all equal.
    Same,
    /// A documented difference: what the Wasm filter and the native filter answer.
    Differs {
        wasm: u16,
        native: u16,
        why: &'static str,
    },
    /// Same status and reach, but the upstream request differs (documented).
    ForwardsDifferently(&'static str),
}

/// Starts the filter's Envoy twice (Wasm, native) with the same clusters and compares `cases`.
fn compare(
    filter: &str,
    wasm_config: Option<&str>,
    clusters: &[(&str, SocketAddr)],
    compared: &[&str],
    bodies: bool,
    cases: Vec<(&str, HttpRequest, Expect)>,
) -> Result<()> {
    let requests: Vec<(String, HttpRequest)> = cases
        .iter()
        .map(|(label, req, _)| (label.to_string(), req.clone()))
        .collect();
    let mut results = Vec::new();
    for native in [false, true] {
        let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"ok"))?;
        let mut config = EnvoyConfig::load(&paths::envoy_config(filter))?;
        config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream.addr())?;
        if native {
            config.use_native_alternative(
                &paths::root().join(format!("envoy/{filter}/native.yaml")),
            )?;
        } else {
            config.use_filters_from(&paths::filters_dir()?)?;
            if let Some(json) = wasm_config {
                config.set_plugin_configuration(json)?;
            }
        }
        for (name, addr) in clusters {
            config.route_cluster_to(name, *addr)?;
        }
        let label = format!("parity-{filter}-{}", if native { "native" } else { "wasm" });
        let envoy = Envoy::start(&config, &label)?;
        let seen = envoy.explain(run(&envoy, &upstream, &requests, compared, bodies))?;
        results.push(seen);
    }
    let (wasm, native) = (&results[0], &results[1]);
    let mut failures = Vec::new();
    for (i, (label, _, expect)) in cases.iter().enumerate() {
        let (w, n) = (&wasm[i], &native[i]);
        let ok = match expect {
            Expect::Same => w == n,
            Expect::Differs {
                wasm: ws,
                native: ns,
                ..
            } => w.status == *ws && n.status == *ns,
            // The documented difference must be real: both reach the upstream, differently.
            Expect::ForwardsDifferently(_) => {
                w.status == n.status
                    && w.upstream.is_some()
                    && n.upstream.is_some()
                    && w.upstream != n.upstream
            }
        };
        if !ok {
            failures.push(format!(
                "{label}{}:\n  wasm   {w:?}\n  native {n:?}",
                match expect {
                    Expect::Same => String::new(),
                    Expect::Differs { why, .. } | Expect::ForwardsDifferently(why) =>
                        format!(" (expected difference: {why})"),
                }
            ));
        }
        let why = match expect {
            Expect::Same => "",
            Expect::Differs { why, .. } | Expect::ForwardsDifferently(why) => why,
        };
        if !why.is_empty() {
            // A difference in the answer never lets a refused request through on one side.
            ensure!(
                (w.status == 200) == w.upstream.is_some()
                    && (n.status == 200) == n.upstream.is_some(),
                "{label} ({why}): upstream reached without a 200:\n  wasm {w:?}\n  native {n:?}"
            );
        }
    }
    ensure!(
        failures.is_empty(),
        "{filter}: {} case(s) differ from the native filter:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

fn get(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    client::request("GET", API, path, headers, b"")
}

fn basic(user_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

#[test]
fn basic_auth_matches_native_basic_auth() -> Result<()> {
    // `/v1/auth/token` allows every demo consumer in the Wasm demo configuration; the native
    // filter guards every path.
    let path = "/v1/auth/token";
    let good = basic("demo-client:demo-secret-do-not-use");
    let cases = vec![
        (
            "valid {SSHA256} user",
            get(path, &[("authorization", &good)]),
            Expect::ForwardsDifferently(
                "the Wasm filter strips Authorization (strip_authorization), native keeps it",
            ),
        ),
        (
            "valid {SHA} user",
            get(
                path,
                &[("authorization", &basic("legacy:demo-secret-do-not-use"))],
            ),
            Expect::ForwardsDifferently("Authorization stripped by the Wasm filter only"),
        ),
        ("missing", get(path, &[]), Expect::Same),
        (
            "wrong password",
            get(
                path,
                &[("authorization", &basic("demo-client:wrong-password"))],
            ),
            Expect::Same,
        ),
        (
            "unknown user",
            get(path, &[("authorization", &basic("root:root"))]),
            Expect::Same,
        ),
        (
            "empty password",
            get(path, &[("authorization", &basic("demo-client:"))]),
            Expect::Same,
        ),
        (
            "no colon",
            get(path, &[("authorization", &basic("demo-client"))]),
            Expect::Same,
        ),
        (
            "not base64",
            get(path, &[("authorization", "Basic %%%not-base64%%%")]),
            Expect::Same,
        ),
        (
            "empty credentials",
            get(path, &[("authorization", "Basic ")]),
            Expect::Same,
        ),
        (
            "whitespace credentials",
            get(path, &[("authorization", "Basic    ")]),
            Expect::Same,
        ),
        (
            "bearer scheme",
            get(path, &[("authorization", "Bearer abc")]),
            Expect::Same,
        ),
        (
            "user name case",
            get(
                path,
                &[(
                    "authorization",
                    &basic("DEMO-CLIENT:demo-secret-do-not-use"),
                )],
            ),
            Expect::Same,
        ),
        (
            "spoofed consumer header",
            get(
                path,
                &[
                    ("authorization", &basic("demo-client:wrong")),
                    ("x-consumer", "ops"),
                ],
            ),
            Expect::Same,
        ),
    ];
    compare(
        "basic-auth",
        None,
        &[],
        // Bodies differ (documented): not compared.
        &["x-consumer", "authorization"],
        false,
        cases,
    )
}

/// The bearer tokens of `traffic/auth.yaml` by exchange id.
fn auth_tokens() -> Result<BTreeMap<String, String>> {
    let all = auth_traffic()?;
    let mut tokens = BTreeMap::new();
    for e in &all.exchanges {
        if let Some(value) = header(&e.request.headers, "authorization")
            && let Some(token) = value.strip_prefix("Bearer ")
        {
            tokens.insert(e.id.clone(), token.to_string());
        }
    }
    Ok(tokens)
}

/// The JWKS `traffic/auth.yaml` answers the jwt exchanges' callouts with.
fn auth_jwks() -> Result<HttpResponse> {
    let all = auth_traffic()?;
    let callout = all
        .exchanges
        .iter()
        .flat_map(|e| e.details.callouts.iter())
        .find(|c| c.cluster == "jwks")
        .context("traffic/auth.yaml has no jwks callout stub")?;
    Ok(HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: callout.response.body.clone(),
    })
}

#[test]
fn jwt_auth_matches_native_jwt_authn() -> Result<()> {
    let tokens = auth_tokens()?;
    let token = |id: &str| -> Result<String> {
        tokens
            .get(id)
            .cloned()
            .with_context(|| format!("no token {id} in traffic/auth.yaml"))
    };
    let jwks = Upstream::start(auth_jwks()?)?;
    let bearer = |t: &str| format!("Bearer {t}");
    let mut cases = Vec::new();
    for alg in [
        "rs256", "rs384", "rs512", "ps256", "es256", "es384", "eddsa",
    ] {
        let good = token(&format!("jwt-{alg}-valid"))?;
        cases.push((
            "valid token",
            get(
                &format!("/v1/orders/{alg}"),
                &[("authorization", &bearer(&good)), ("x-jwt-sub", "spoofed")],
            ),
            Expect::Same,
        ));
        cases.push((
            "bad signature",
            get(
                &format!("/v1/orders/{alg}"),
                &[(
                    "authorization",
                    &bearer(&token(&format!("jwt-{alg}-invalid-signature"))?),
                )],
            ),
            Expect::Same,
        ));
    }
    let good = token("jwt-es256-valid")?;
    let parts: Vec<&str> = good.split('.').collect();
    let simple = [
        ("expired", bearer(&token("jwt-rs256-invalid-expired")?)),
        ("alg none", bearer(&token("jwt-invalid-alg-none")?)),
        (
            "changed payload",
            bearer(&format!(
                "{}.{}.{}",
                parts[0],
                &token("jwt-rs256-valid")?
                    .split('.')
                    .nth(1)
                    .unwrap_or_default(),
                parts[2]
            )),
        ),
        (
            "malformed base64",
            bearer(&format!("{}.{}*.{}", parts[0], parts[1], parts[2])),
        ),
        ("two parts", bearer(&format!("{}.{}", parts[0], parts[1]))),
        ("garbage", bearer("not-a-jwt")),
    ];
    for (label, value) in simple {
        cases.push((
            label,
            get("/v1/orders", &[("authorization", value.as_str())]),
            Expect::Same,
        ));
    }
    cases.push((
        "upper-case header name, lower-case scheme",
        get(
            "/v1/orders",
            &[("AUTHORIZATION", &format!("bearer {good}"))],
        ),
        Expect::Differs {
            wasm: 200,
            native: 401,
            why: "the Wasm filter matches value_prefix case-insensitively, native exactly",
        },
    ));
    cases.push((
        "wrong audience",
        get(
            "/v1/orders",
            &[(
                "authorization",
                &bearer(&token("jwt-es256-invalid-audience")?),
            )],
        ),
        Expect::Differs {
            wasm: 401,
            native: 403,
            why: "native jwt_authn answers 403 for an audience it does not accept, the Wasm filter 401 invalid_token (RFC 6750)",
        },
    ));
    cases.push((
        "huge token",
        get(
            "/v1/orders",
            &[(
                "authorization",
                &bearer(&format!("{good}{}", "A".repeat(9000))),
            )],
        ),
        Expect::Same,
    ));
    cases.push(("missing", get("/v1/orders", &[]), Expect::Same));
    cases.push((
        "empty bearer",
        get("/v1/orders", &[("authorization", "Bearer ")]),
        Expect::Same,
    ));
    cases.push((
        "token in the query",
        get(&format!("/v1/orders?page=2&access_token={good}"), &[]),
        // forward: false: both remove the parameter, keep the others.
        Expect::Same,
    ));
    cases.push((
        "token in a cookie",
        get(
            "/v1/orders",
            &[("cookie", &format!("theme=dark; id_token={good}"))],
        ),
        Expect::ForwardsDifferently(
            "with forward: false the Wasm filter removes the cookie, native leaves it",
        ),
    ));
    // Several tokens: every one must verify (native authenticator.cc: all tokens must be valid).
    let forged = token("jwt-invalid-alg-none")?;
    cases.push((
        "valid bearer, forged token in the query",
        get(
            &format!("/v1/orders?access_token={forged}"),
            &[("authorization", &bearer(&good))],
        ),
        Expect::Same,
    ));
    cases.push((
        "valid bearer, forged token in a cookie",
        get(
            "/v1/orders",
            &[
                ("authorization", &bearer(&good)),
                ("cookie", &format!("id_token={forged}")),
            ],
        ),
        Expect::Same,
    ));
    cases.push((
        "forged bearer, valid token in the query",
        get(
            &format!("/v1/orders?access_token={good}"),
            &[("authorization", &bearer(&forged))],
        ),
        Expect::Same,
    ));
    cases.push((
        "valid bearer, a bad signature in the query",
        get(
            &format!(
                "/v1/orders?access_token={}",
                token("jwt-es256-invalid-signature")?
            ),
            &[("authorization", &bearer(&good))],
        ),
        Expect::Same,
    ));
    cases.push((
        "valid bearer and valid token in the query",
        get(
            &format!("/v1/orders?page=2&access_token={good}"),
            &[("authorization", &bearer(&good))],
        ),
        Expect::Same,
    ));
    cases.push((
        "the parameter twice, valid then forged",
        get(
            &format!("/v1/orders?access_token={good}&access_token={forged}"),
            &[],
        ),
        Expect::Differs {
            wasm: 401,
            native: 200,
            why: "native verifies only the first occurrence of a parameter (and removes them all); the Wasm filter verifies every occurrence",
        },
    ));
    compare(
        "jwt-auth",
        None,
        &[("jwks", jwks.addr())],
        &["x-jwt-sub", "x-jwt-scope", "authorization", "cookie"],
        false,
        cases,
    )
}

#[test]
fn ext_authz_matches_native_ext_authz_http_mode() -> Result<()> {
    let allow = HttpResponse {
        status: 200,
        headers: vec![
            ("x-auth-user".into(), "ada".into()),
            ("x-auth-scopes".into(), "orders:read".into()),
            ("x-not-allowed".into(), "leak".into()),
        ],
        body: Vec::new(),
    };
    let request = || {
        client::request(
            "GET",
            "shop.example.com",
            "/orders?id=7",
            &[
                ("authorization", "Bearer t0k3n"),
                ("x-api-key", "k1"),
                ("x-secret", "stays here"),
                ("x-auth-user", "spoofed"),
            ],
            b"",
        )
    };
    let mut outcomes = Vec::new();
    for (label, answer) in [
        ("allowed", Some(allow.clone())),
        (
            "denied 403",
            Some(HttpResponse {
                status: 403,
                headers: vec![("x-reason".into(), "no".into())],
                body: b"denied by policy".to_vec(),
            }),
        ),
        (
            "denied 401",
            Some(HttpResponse {
                status: 401,
                headers: vec![("www-authenticate".into(), "Bearer".into())],
                body: Vec::new(),
            }),
        ),
        (
            "service error 503",
            Some(HttpResponse {
                status: 503,
                headers: Vec::new(),
                body: b"down".to_vec(),
            }),
        ),
        (
            "allowed without naming a user",
            Some(HttpResponse {
                status: 200,
                headers: vec![("x-auth-scopes".into(), "orders:read".into())],
                body: Vec::new(),
            }),
        ),
        ("service down", None),
    ] {
        // One authorization service per case, answering as the case says (or none: down).
        // Down: TCP port 1, where nothing listens (a freed ephemeral port could be taken by a
        // concurrently running test).
        match answer {
            Some(answer) => {
                let service = Upstream::start(answer)?;
                outcomes.push((label, service.addr(), Some(service)));
            }
            None => outcomes.push((label, SocketAddr::from(([127, 0, 0, 1], 1)), None)),
        }
    }
    for (label, addr, service) in &outcomes {
        let expect = match *label {
            // The client sent `x-auth-user: spoofed`; the service set none.
            "allowed without naming a user" => Expect::ForwardsDifferently(
                "native keeps the client's x-auth-user when the service does not set it; the Wasm filter removes the client's copies of allowed_upstream_headers before asking",
            ),
            _ => Expect::Same,
        };
        let cases = vec![(*label, request(), expect)];
        compare(
            "ext-authz",
            None,
            &[("authz", *addr)],
            &["x-auth-user", "x-auth-scopes", "x-not-allowed", "x-secret"],
            true,
            cases,
        )?;
        if let Some(service) = service {
            // Both check requests: same path (prefix + original path) and the same selected
            // headers; never the ones not listed.
            let checks = service.take_requests();
            ensure!(
                checks.len() == 2,
                "{label}: {} check requests",
                checks.len()
            );
            for check in &checks {
                ensure!(check.path == "/check/orders?id=7", "{label}: {check:?}");
                ensure!(
                    header(&check.headers, "x-api-key") == Some("k1")
                        && header(&check.headers, "authorization") == Some("Bearer t0k3n"),
                    "{label}: {:?}",
                    check.headers
                );
                ensure!(
                    header(&check.headers, "x-secret").is_none(),
                    "{label}: x-secret sent to the service"
                );
            }
        }
    }
    Ok(())
}
