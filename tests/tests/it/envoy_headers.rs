//! The `headers` filter with its demo configuration (`filters/headers/demo.json`)
//! in a real Envoy (`envoy/headers/envoy.yaml`) and in the harness: the same
//! requests through both, then the headers the upstream received and the
//! headers the client received compared, after checking Envoy's own result.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::headers::{self, ENVOY_REQUEST_HEADERS, ENVOY_RESPONSE_HEADERS};
use tollgate_tests::http1::{header, header_values};
use tollgate_tests::paths;
use tollgate_tests::upstream::{ReceivedRequest, Upstream};
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

/// The filter under test.
const FILTER: &str = "headers";

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// `envoy/headers/envoy.yaml` aimed at `upstream`, on kernel-picked ports,
/// loading the built module, with `configuration` as the plugin configuration.
fn envoy_config(upstream: &Upstream, configuration: &str) -> Result<EnvoyConfig> {
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(configuration)?;
    Ok(config)
}

/// The response a typical origin sends: headers the demo configuration removes,
/// overrides and leaves alone.
fn origin_response() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: pairs(&[
            ("content-type", "text/html; charset=utf-8"),
            ("server", "gunicorn"),
            ("x-powered-by", "Express"),
            ("cache-control", "no-cache"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]),
        body: b"<html>shop</html>".to_vec(),
    }
}

/// One request of the scenario: what the client sends and what the upstream answers.
struct Step {
    request: HttpRequest,
    response: HttpResponse,
}

/// Requests that exercise every part of the demo configuration: unconditional
/// changes, the `authorization` rule on and off (also with an empty value),
/// `%REQ(...)%` references, `add_if_absent` with the header present and absent.
fn scenario() -> Vec<Step> {
    let with_ids = {
        let mut response = origin_response();
        response
            .headers
            .push(("referrer-policy".into(), "no-referrer".into()));
        response
            .headers
            .push(("x-request-id".into(), "from-origin".into()));
        response
    };
    vec![
        Step {
            request: client::request(
                "GET",
                "shop.example.com",
                "/products?page=2",
                &[
                    ("x-request-id", "req-1"),
                    ("accept", "text/html"),
                    ("x-debug-trace", "1"),
                    ("X-Debug-User", "bob"),
                    ("via", "1.0 corp-proxy"),
                    ("x-tollgate", "from-client"),
                    ("x-tollgate", "twice"),
                ],
                b"",
            ),
            response: origin_response(),
        },
        Step {
            request: client::request(
                "POST",
                "shop.example.com:8443",
                "/cart",
                &[
                    ("x-request-id", "req-2"),
                    ("authorization", "Bearer abc.def"),
                    ("content-type", "application/json"),
                ],
                br#"{"sku":"tg-1","qty":2}"#,
            ),
            response: origin_response(),
        },
        Step {
            // No x-request-id from the client: Envoy generates one (the harness
            // does not); the origin sends its own, so `add_if_absent` keeps it on both.
            request: client::request(
                "GET",
                "api.example.com",
                "/health",
                &[("accept", "*/*")],
                b"",
            ),
            response: with_ids,
        },
        Step {
            request: client::request(
                "DELETE",
                "api.example.com",
                "/cart/7",
                &[
                    ("x-request-id", "req-4"),
                    ("authorization", ""),
                    ("x-debug-", "bare-prefix"),
                ],
                b"",
            ),
            response: HttpResponse {
                status: 204,
                headers: pairs(&[("x-powered-by", "PHP")]),
                body: Vec::new(),
            },
        },
    ]
}

/// What Envoy did with one request.
struct EnvoyResult {
    upstream_request: ReceivedRequest,
    upstream_response: HttpResponse,
    client_response: HttpResponse,
}

fn run_in_envoy(envoy: &Envoy, upstream: &Upstream, steps: &[Step]) -> Result<Vec<EnvoyResult>> {
    let mut results = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        upstream.set_response(step.response.clone());
        let client_response = client::send(envoy.listener(), &step.request)?;
        let mut received = upstream.take_requests();
        ensure!(
            received.len() == 1,
            "request {index}: the upstream received {} requests (client got {} {:?})",
            received.len(),
            client_response.status,
            String::from_utf8_lossy(&client_response.body)
        );
        results.push(EnvoyResult {
            upstream_request: received.remove(0),
            upstream_response: upstream.response(),
            client_response,
        });
    }
    ensure!(
        upstream.errors().is_empty(),
        "upstream protocol errors: {:?}",
        upstream.errors()
    );
    Ok(results)
}

/// What the demo configuration must do in Envoy, checked on Envoy alone.
fn check_envoy(results: &[EnvoyResult]) -> Result<()> {
    let [first, second, third, fourth] = results else {
        bail!("expected 4 results, got {}", results.len());
    };

    // Request 0: unconditional request changes, no authorization.
    let up = &first.upstream_request.headers;
    ensure!(
        header(up, "x-debug-trace").is_none() && header(up, "x-debug-user").is_none(),
        "x-debug-* not removed: {up:?}"
    );
    ensure!(
        header_values(up, "x-tollgate") == ["demo"],
        "x-tollgate not set once to demo: {up:?}"
    );
    ensure!(
        header(up, "x-original-host") == Some("shop.example.com"),
        "x-original-host: {up:?}"
    );
    ensure!(
        header_values(up, "via").join(",") == "1.0 corp-proxy,1.1 tollgate",
        "via not appended: {up:?}"
    );
    ensure!(
        header(up, "x-tollgate-auth").is_none(),
        "authorization rule applied without authorization: {up:?}"
    );
    ensure!(
        header(up, "accept") == Some("text/html"),
        "accept changed: {up:?}"
    );
    let down = &first.client_response.headers;
    ensure!(
        first.client_response.status == 200,
        "status {}",
        first.client_response.status
    );
    ensure!(
        header(down, "server").is_none() && header(down, "x-powered-by").is_none(),
        "server/x-powered-by kept: {down:?}"
    );
    ensure!(
        header(down, "strict-transport-security") == Some("max-age=31536000; includeSubDomains"),
        "hsts: {down:?}"
    );
    ensure!(
        header(down, "x-content-type-options") == Some("nosniff"),
        "nosniff: {down:?}"
    );
    ensure!(
        header(down, "x-tollgate") == Some("demo"),
        "response x-tollgate: {down:?}"
    );
    ensure!(
        header(down, "referrer-policy") == Some("strict-origin-when-cross-origin"),
        "referrer-policy: {down:?}"
    );
    ensure!(
        header(down, "x-request-id") == Some("req-1"),
        "x-request-id not copied from the request: {down:?}"
    );
    ensure!(
        header(down, "cache-control") == Some("no-cache"),
        "cache-control changed without authorization: {down:?}"
    );
    ensure!(
        header_values(down, "set-cookie") == ["a=1", "b=2"],
        "set-cookie: {down:?}"
    );
    ensure!(
        first.client_response.body == b"<html>shop</html>",
        "body changed"
    );

    // Request 1: the authorization rule applies on both sides; the body passes.
    let up = &second.upstream_request;
    ensure!(
        header(&up.headers, "x-tollgate-auth") == Some("present"),
        "x-tollgate-auth: {:?}",
        up.headers
    );
    ensure!(
        header(&up.headers, "x-original-host") == Some("shop.example.com:8443"),
        "x-original-host: {:?}",
        up.headers
    );
    ensure!(
        header(&up.headers, "authorization") == Some("Bearer abc.def"),
        "authorization changed"
    );
    ensure!(
        up.body == br#"{"sku":"tg-1","qty":2}"#,
        "request body changed: {:?}",
        up.body
    );
    ensure!(
        header(&second.client_response.headers, "cache-control") == Some("private, no-store"),
        "cache-control not overwritten by the rule: {:?}",
        second.client_response.headers
    );

    // Request 2: Envoy generated an x-request-id; the origin's own values stay.
    let generated = header(&third.upstream_request.headers, "x-request-id");
    ensure!(
        generated.is_some_and(|id| !id.is_empty()),
        "Envoy generated no x-request-id"
    );
    let down = &third.client_response.headers;
    ensure!(
        header_values(down, "x-request-id") == ["from-origin"],
        "x-request-id: {down:?}"
    );
    ensure!(
        header_values(down, "referrer-policy") == ["no-referrer"],
        "referrer-policy: {down:?}"
    );

    // Request 3: an empty authorization still counts as present; 204 without body.
    let up = &fourth.upstream_request.headers;
    ensure!(
        header(up, "x-tollgate-auth") == Some("present"),
        "empty authorization: {up:?}"
    );
    ensure!(
        header(up, "x-debug-").is_none(),
        "x-debug- (the bare prefix) not removed: {up:?}"
    );
    ensure!(
        fourth.client_response.status == 204,
        "status {}",
        fourth.client_response.status
    );
    ensure!(
        header(&fourth.client_response.headers, "x-powered-by").is_none(),
        "x-powered-by kept"
    );
    ensure!(
        header(&fourth.client_response.headers, "x-request-id") == Some("req-4"),
        "x-request-id on 204"
    );
    Ok(())
}

/// The same requests through the harness, each with the upstream's actual
/// response as the recorded one; the result must equal Envoy's.
fn compare_with_harness(steps: &[Step], results: &[EnvoyResult]) -> Result<()> {
    let traffic = Traffic {
        source: None,
        exchanges: steps
            .iter()
            .zip(results)
            .enumerate()
            .map(|(index, (step, result))| Exchange {
                id: format!("request {index}"),
                request: step.request.clone(),
                response: Some(result.upstream_response.clone()),
                details: Default::default(),
            })
            .collect(),
        warnings: Vec::new(),
    };
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .traffic(traffic)
        .run()
        .context("the harness could not replay the requests")?;
    ensure!(
        report.exchanges.len() == results.len(),
        "the harness reported {} exchanges",
        report.exchanges.len()
    );

    for (index, (exchange, envoy)) in report.exchanges.iter().zip(results).enumerate() {
        let what = format!("request {index} ({})", steps[index].request.path);
        ensure!(
            matches!(exchange.verdict, Verdict::Modified),
            "{what}: harness verdict {:?}, expected Modified (changes: {:?})",
            verdict_name(&exchange.verdict),
            exchange.changes
        );
        let upstream = exchange.upstream_request.as_ref().with_context(|| {
            format!("{what}: the harness answered locally, Envoy forwarded the request")
        })?;
        let received = &envoy.upstream_request;
        ensure!(
            upstream.method == received.method,
            "{what}: method {} vs {}",
            upstream.method,
            received.method
        );
        ensure!(
            upstream.path == received.path,
            "{what}: path {} vs {}",
            upstream.path,
            received.path
        );
        ensure!(
            Some(upstream.authority.as_str()) == header(&received.headers, "host"),
            "{what}: authority {:?} vs host {:?}",
            upstream.authority,
            header(&received.headers, "host")
        );
        ensure!(
            upstream.body == received.body,
            "{what}: request bodies differ"
        );
        headers::assert_same(
            &format!("{what}: headers at the upstream"),
            &received.headers,
            &upstream.headers,
            ENVOY_REQUEST_HEADERS,
        )?;

        let client = &exchange.client_response;
        ensure!(
            client.status == envoy.client_response.status,
            "{what}: status {} vs {}",
            client.status,
            envoy.client_response.status
        );
        ensure!(
            client.body == envoy.client_response.body,
            "{what}: response bodies differ"
        );
        headers::assert_same(
            &format!("{what}: headers at the client"),
            &envoy.client_response.headers,
            &client.headers,
            ENVOY_RESPONSE_HEADERS,
        )?;
        // `server` is in the default list (Envoy overwrites it unless told not to);
        // this configuration passes it through, so the filter's removal must show on both.
        ensure!(
            header(&client.headers, "server").is_none()
                && header(&envoy.client_response.headers, "server").is_none(),
            "{what}: server header not removed on both sides"
        );
    }
    Ok(())
}

fn verdict_name(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Passed => "Passed".into(),
        Verdict::Modified => "Modified".into(),
        Verdict::AnsweredLocally { status } => format!("AnsweredLocally({status})"),
        Verdict::Failed { message } => format!("Failed({message})"),
    }
}

#[test]
fn demo_config_in_envoy_matches_the_harness() -> Result<()> {
    let upstream = Upstream::start(origin_response())?;
    let config = envoy_config(&upstream, &paths::demo_config(FILTER)?)?;
    let envoy = Envoy::start(&config, "headers-demo")?;
    let steps = scenario();
    envoy.explain((|| {
        let results = run_in_envoy(&envoy, &upstream, &steps)?;
        check_envoy(&results)
            .context("Envoy did not apply the demo configuration as documented")?;
        compare_with_harness(&steps, &results)
    })())
}

#[test]
fn envoy_yaml_carries_demo_json() -> Result<()> {
    let config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    let embedded = config.plugin_configurations();
    ensure!(
        embedded.len() == 1,
        "expected one Wasm plugin in envoy/{FILTER}/envoy.yaml, found {}",
        embedded.len()
    );
    let embedded: Value =
        serde_json::from_str(&embedded[0]).context("the embedded configuration is not JSON")?;
    let demo: Value =
        serde_json::from_str(&paths::demo_config(FILTER)?).context("demo.json is not JSON")?;
    ensure!(
        embedded == demo,
        "envoy/{FILTER}/envoy.yaml's configuration differs from filters/{FILTER}/demo.json"
    );
    Ok(())
}

/// A configuration the filter refuses: Envoy must not start and the harness
/// must refuse it too, both naming the offending field.
fn assert_refused(configuration: &str, field: &str) -> Result<()> {
    let upstream = Upstream::start(origin_response())?;
    let config = envoy_config(&upstream, configuration)?;
    match Envoy::launch(&config, "headers-bad")? {
        Launch::Ready(envoy) => {
            let probe = client::send(
                envoy.listener(),
                &client::request("GET", "h", "/", &[], b""),
            );
            bail!(
                "Envoy started with the bad configuration {configuration} (a request got {:?})\n{}",
                probe.map(|r| r.status),
                envoy.log_tail()
            );
        }
        Launch::Exited { status, log } => {
            ensure!(
                !status.success(),
                "Envoy exited with {status} on a bad configuration"
            );
            ensure!(
                log.contains(field),
                "Envoy's log does not name {field}:\n{}",
                log.lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    ensure!(
        upstream.requests().is_empty(),
        "a request reached the upstream"
    );

    let traffic = Traffic {
        source: None,
        exchanges: vec![Exchange {
            id: "entry 0".into(),
            request: client::request("GET", "h", "/", &[], b""),
            response: None,
            details: Default::default(),
        }],
        warnings: Vec::new(),
    };
    match Replay::filter(paths::filter_wasm(FILTER)?)
        .config(configuration)
        .traffic(traffic)
        .run()
    {
        Ok(report) => bail!(
            "the harness accepted the bad configuration {configuration}: {} exchange(s) replayed",
            report.exchanges.len()
        ),
        Err(error) => {
            let message = format!("{:#}", anyhow::Error::new(error));
            ensure!(
                message.contains(field),
                "the harness's error does not name {field}: {message}"
            );
            ensure!(
                message.contains(FILTER),
                "the harness's error does not name the filter: {message}"
            );
        }
    }
    Ok(())
}

#[test]
fn pseudo_header_target_is_refused_by_envoy_and_the_harness() -> Result<()> {
    assert_refused(
        r#"{"request": {"set": [{"name": ":path", "value": "/admin"}]}}"#,
        "request.set[0].name",
    )
}

#[test]
fn unknown_field_is_refused_by_envoy_and_the_harness() -> Result<()> {
    assert_refused(
        r#"{"response": {"add": [{"name": "x-a", "value": "b"}]}}"#,
        "response.add",
    )
}
