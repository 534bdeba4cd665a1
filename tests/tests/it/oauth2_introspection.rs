//! The `oauth2-introspection` filter against the real OpenID provider (npm `oidc-provider`,
//! tests/oidc-provider) through a real Envoy: tokens the provider issued are introspected,
//! scope and audience checked, the answer cached until revocation would matter, the provider
//! down or refusing the filter's client fails closed. In the harness, the provider's own
//! introspection answers (fetched live) are the callout stubs: same verdicts as Envoy.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use base64::Engine;
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::header;
use tollgate_tests::oidc::{self, Provider};
use tollgate_tests::paths;
use tollgate_tests::upstream::{Upstream, text_response};
use tollgate_traffic::{Exchange, HttpRequest, Traffic};

/// The filter under test.
const FILTER: &str = "oauth2-introspection";

fn basic(client: (&str, &str)) -> String {
    let pair = format!("{}:{}", client.0, client.1);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// POSTs a form to the provider as `auth`; status and body.
fn provider_post(
    provider: &Provider,
    path: &str,
    auth: (&str, &str),
    form: &str,
) -> Result<(u16, Vec<u8>)> {
    let authority = provider.addr().to_string();
    let authorization = basic(auth);
    let request = client::request(
        "POST",
        &authority,
        path,
        &[
            ("authorization", authorization.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    );
    let response = client::send(provider.addr(), &request)?;
    Ok((response.status, response.body))
}

/// A fresh access token for the service client with `scope`.
fn access_token(provider: &Provider, scope: &str) -> Result<String> {
    let form = format!(
        "grant_type=client_credentials&scope={}",
        scope.replace(':', "%3A").replace(' ', "+")
    );
    let (status, body) = provider_post(provider, "/token", oidc::SERVICE_CLIENT, &form)?;
    ensure!(
        status == 200,
        "token: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(json["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string())
}

/// Revokes `token` at the provider (RFC 7009).
fn revoke(provider: &Provider, token: &str) -> Result<()> {
    let (status, body) = provider_post(
        provider,
        "/token/revocation",
        oidc::SERVICE_CLIENT,
        &format!("token={token}"),
    )?;
    ensure!(
        status == 200,
        "revocation: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

fn api_request(authorization: Option<&str>) -> HttpRequest {
    let mut headers = vec![("x-consumer", "forged"), ("x-token-scope", "admin")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    client::request("GET", "api.tollgate.test", "/orders/7", &headers, b"")
}

fn start_envoy(
    upstream: SocketAddr,
    idp: SocketAddr,
    configuration: Option<&str>,
    label: &str,
) -> Result<Envoy> {
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream)?
        .route_cluster_to("idp", idp)?;
    if let Some(c) = configuration {
        config.set_plugin_configuration(c)?;
    }
    config.use_filters_from(&paths::filters_dir()?)?;
    Envoy::start(&config, label)
}

#[test]
fn envoy_checks_real_tokens_with_the_real_provider() -> Result<()> {
    let provider = Provider::start()?;
    let upstream = Upstream::start(text_response(b"order 7"))?;
    let envoy = start_envoy(
        upstream.addr(),
        provider.addr(),
        None,
        "oauth2-introspection",
    )?;
    envoy.explain((|| {
        // A token with the required scope: admitted, identity from the provider's answer only.
        let token = access_token(&provider, "orders:read")?;
        let bearer = format!("Bearer {token}");
        let got = client::send(envoy.listener(), &api_request(Some(&bearer)))?;
        ensure!(got.status == 200 && got.body == b"order 7", "{got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(
            header(&ups[0].headers, "x-consumer") == Some(oidc::SERVICE_CLIENT.0),
            "{ups:?}"
        );
        ensure!(
            header(&ups[0].headers, "x-token-scope") == Some("orders:read"),
            "{ups:?}"
        );
        ensure!(header(&ups[0].headers, "authorization") == Some(bearer.as_str()));

        // A body sent while the filter waits for the provider: the module exports no body
        // callback (`export_filter!(.., headers_only)`), Envoy holds the body while the headers
        // are paused and passes it on whole once the token is admitted.
        let fresh = format!("Bearer {}", access_token(&provider, "orders:read")?);
        let body: Vec<u8> = (0..65_536u32).map(|i| b'a' + (i % 26) as u8).collect();
        let post = client::request(
            "POST",
            "api.tollgate.test",
            "/orders",
            &[
                ("authorization", fresh.as_str()),
                ("content-type", "text/plain"),
            ],
            &body,
        );
        let got = client::send(envoy.listener(), &post)?;
        ensure!(got.status == 200, "{got:?}");
        let ups = upstream.take_requests();
        ensure!(
            ups.len() == 1 && ups[0].method == "POST" && ups[0].body == body,
            "the paused request's body did not reach the upstream whole: {} request(s), {:?} bytes",
            ups.len(),
            ups.iter().map(|u| u.body.len()).collect::<Vec<_>>()
        );

        // Cached until exp (at most max_ttl_s = 60): revoked at the provider, still admitted.
        revoke(&provider, &token)?;
        let got = client::send(envoy.listener(), &api_request(Some(&bearer)))?;
        ensure!(got.status == 200, "a cached answer was not used: {got:?}");
        ensure!(upstream.take_requests().len() == 1);

        // A token revoked before its first use: the provider says inactive.
        let revoked = access_token(&provider, "orders:read")?;
        revoke(&provider, &revoked)?;
        let got = client::send(
            envoy.listener(),
            &api_request(Some(&format!("Bearer {revoked}"))),
        )?;
        ensure!(got.status == 401, "{got:?}");
        ensure!(
            header(&got.headers, "www-authenticate")
                == Some("Bearer realm=\"tollgate\", error=\"invalid_token\""),
            "{got:?}"
        );

        // A made-up token: inactive.
        let got = client::send(envoy.listener(), &api_request(Some("Bearer made-up-token")))?;
        ensure!(got.status == 401, "{got:?}");

        // A real token without the required scope: 403 insufficient_scope.
        let write_only = access_token(&provider, "orders:write")?;
        let got = client::send(
            envoy.listener(),
            &api_request(Some(&format!("Bearer {write_only}"))),
        )?;
        ensure!(got.status == 403, "{got:?}");
        ensure!(
            header(&got.headers, "www-authenticate")
                .is_some_and(|v| v.contains("insufficient_scope")),
            "{got:?}"
        );

        // No token at all.
        let got = client::send(envoy.listener(), &api_request(None))?;
        ensure!(got.status == 401, "{got:?}");
        ensure!(
            header(&got.headers, "www-authenticate") == Some("Bearer realm=\"tollgate\""),
            "{got:?}"
        );
        ensure!(
            upstream.take_requests().is_empty(),
            "a refused request went upstream"
        );
        Ok(())
    })())
}

#[test]
fn envoy_fails_closed_when_the_provider_refuses_the_client_or_is_down() -> Result<()> {
    let mut provider = Some(Provider::start()?);
    let upstream = Upstream::start(text_response(b"order 7"))?;
    let idp = provider.as_ref().map(Provider::addr).context("provider")?;
    let demo = paths::demo_config(FILTER)?;
    let wrong_secret = demo.replace("tollgate-gateway-secret", "not-the-secret");
    ensure!(
        wrong_secret != demo,
        "the demo configuration has no client secret to change"
    );
    let wrong = start_envoy(
        upstream.addr(),
        idp,
        Some(&wrong_secret),
        "oauth2-introspection-wrong-secret",
    )?;
    let envoy = start_envoy(upstream.addr(), idp, None, "oauth2-introspection-down")?;
    let result = (|| {
        let token = access_token(provider.as_ref().context("provider")?, "orders:read")?;
        let bearer = format!("Bearer {token}");
        // The provider refuses the filter's client (401 invalid_client): fail closed, 503.
        let got = client::send(wrong.listener(), &api_request(Some(&bearer)))?;
        ensure!(got.status == 503, "wrong client secret: {got:?}");
        // The provider gone: 503 for a token not cached.
        provider = None;
        let got = client::send(envoy.listener(), &api_request(Some(&bearer)))?;
        ensure!(got.status == 503, "provider down: {got:?}");
        ensure!(
            upstream.take_requests().is_empty(),
            "let through while failing"
        );
        Ok(())
    })();
    envoy.explain(wrong.explain(result))
}

/// A server that accepts connections and never answers (held until the test ends).
struct Silent {
    addr: SocketAddr,
    _listener: std::net::TcpListener,
}

impl Silent {
    fn start() -> Result<Silent> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the silent server")?;
        Ok(Silent {
            addr: listener.local_addr()?,
            _listener: listener,
        })
    }
}

#[test]
fn envoy_fails_closed_when_the_provider_is_slower_than_the_timeout() -> Result<()> {
    // The kernel completes the handshakes (backlog) but nothing ever answers.
    let silent = Silent::start()?;
    let upstream = Upstream::start(text_response(b"order 7"))?;
    let demo = paths::demo_config(FILTER)?;
    let fast = demo.replace("\"timeout_ms\": 1000", "\"timeout_ms\": 300");
    ensure!(
        fast != demo,
        "the demo configuration has no timeout_ms of 1000 to change"
    );
    let envoy = start_envoy(
        upstream.addr(),
        silent.addr,
        Some(&fast),
        "oauth2-introspection-slow",
    )?;
    envoy.explain((|| {
        let started = std::time::Instant::now();
        let got = client::send(envoy.listener(), &api_request(Some("Bearer waits-forever")))?;
        ensure!(got.status == 503, "{got:?}");
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the answer took {:?}: the timeout was not applied",
            started.elapsed()
        );
        ensure!(upstream.take_requests().is_empty());
        Ok(())
    })())
}

fn now_s() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// Replays one request with the provider's `answer` (its live introspection JSON) as the stub.
fn replay(request: HttpRequest, answer: &[u8]) -> Result<tollgate_replay::ExchangeReport> {
    let traffic = Traffic {
        source: None,
        exchanges: vec![Exchange {
            id: "api".into(),
            request,
            response: Some(text_response(b"order 7")),
            details: Default::default(),
        }],
        warnings: Vec::new(),
    };
    let mut report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .clock_unix_nanos(now_s()?.saturating_mul(1_000_000_000))
        .http_call_stub(HttpCallStub {
            headers: vec![
                (":status".into(), "200".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: answer.to_vec(),
        })
        .traffic(traffic)
        .run()?;
    report
        .exchanges
        .pop()
        .context("the replay reported no exchange")
}

#[test]
fn harness_with_the_providers_answers_gives_envoys_verdicts() -> Result<()> {
    let provider = Provider::start()?;
    let introspect = |token: &str| -> Result<Vec<u8>> {
        let (status, body) = provider_post(
            &provider,
            "/token/introspection",
            oidc::GATEWAY_CLIENT,
            &format!("token={token}"),
        )?;
        ensure!(status == 200, "introspection: {status}");
        Ok(body)
    };
    let read = access_token(&provider, "orders:read")?;
    let report = replay(
        api_request(Some(&format!("Bearer {read}"))),
        &introspect(&read)?,
    )?;
    ensure!(report.verdict == Verdict::Modified, "{report:?}");
    let up = report.upstream_request.context("nothing went upstream")?;
    ensure!(
        header(&up.headers, "x-consumer") == Some(oidc::SERVICE_CLIENT.0),
        "{up:?}"
    );
    ensure!(
        header(&up.headers, "x-token-scope") == Some("orders:read"),
        "{up:?}"
    );

    let write_only = access_token(&provider, "orders:write")?;
    let report = replay(
        api_request(Some(&format!("Bearer {write_only}"))),
        &introspect(&write_only)?,
    )?;
    ensure!(
        report.verdict == Verdict::AnsweredLocally { status: 403 },
        "{report:?}"
    );

    revoke(&provider, &read)?;
    let report = replay(
        api_request(Some(&format!("Bearer {read}"))),
        &introspect(&read)?,
    )?;
    ensure!(
        report.verdict == Verdict::AnsweredLocally { status: 401 },
        "{report:?}"
    );
    ensure!(report.upstream_request.is_none());
    Ok(())
}
