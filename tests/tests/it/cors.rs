//! The `cors` filter with its demo configuration (`envoy/cors/envoy.yaml`):
//! - native parity: the same requests (preflights and actual requests; exact, wildcard, regex,
//!   disallowed origins; both routes) through our filter and through Envoy's native
//!   `envoy.filters.http.cors` with the routes' CORS policies (`envoy/cors/native.yaml`): the
//!   same status, the same `access-control-*` headers, the same upstream reach; `Vary: Origin`
//!   is ours only (README);
//! - the same requests in the harness (status and CORS headers as in Envoy);
//! - refused configurations name the field at start-up in Envoy.

use anyhow::{Context, Result, ensure};
use tollgate_replay::Replay;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

const FILTER: &str = "cors";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

struct Case {
    what: &'static str,
    /// The Envoy route it takes (`xds.route_name`).
    route: &'static str,
    request: HttpRequest,
    /// Whether the filter answers it locally (a preflight from an allowed origin).
    answered: bool,
    /// Whether the response carries `access-control-allow-origin`.
    cors: bool,
}

fn cases() -> Vec<Case> {
    let preflight = |path: &str, origin: &str, method: &str| {
        client::request(
            "OPTIONS",
            "api.example.com",
            path,
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type"),
            ],
            b"",
        )
    };
    let get = |path: &str, origin: &str| {
        client::request("GET", "api.example.com", path, &[("origin", origin)], b"")
    };
    let case = |what, route, request, answered, cors| Case {
        what,
        route,
        request,
        answered,
        cors,
    };
    vec![
        case(
            "preflight, exact origin",
            "api",
            preflight("/orders", "https://app.example.com", "PUT"),
            true,
            true,
        ),
        case(
            "preflight, exact origin in capitals",
            "api",
            preflight("/orders", "HTTPS://APP.EXAMPLE.COM", "PUT"),
            true,
            true,
        ),
        case(
            "preflight, wildcard origin",
            "api",
            preflight("/orders", "https://eu.shop.example.org", "POST"),
            true,
            true,
        ),
        case(
            "preflight, regex origin",
            "api",
            preflight("/orders", "https://localhost:3000", "GET"),
            true,
            true,
        ),
        case(
            "preflight, disallowed origin goes upstream",
            "api",
            preflight("/orders", "https://evil.example.net", "GET"),
            false,
            false,
        ),
        case(
            "preflight, suffix trick",
            "api",
            preflight("/orders", "https://app.example.com.evil.net", "GET"),
            false,
            false,
        ),
        case(
            "preflight, bare wildcard domain",
            "api",
            preflight("/orders", "https://example.org", "GET"),
            false,
            false,
        ),
        case(
            "preflight, wrong scheme",
            "api",
            preflight("/orders", "http://app.example.com", "GET"),
            false,
            false,
        ),
        case(
            "preflight, regex prefix only",
            "api",
            preflight("/orders", "https://localhost:3000.evil.net", "GET"),
            false,
            false,
        ),
        case(
            "actual GET, exact origin",
            "api",
            get("/orders", "https://app.example.com"),
            false,
            true,
        ),
        case(
            "actual GET, wildcard origin",
            "api",
            get("/orders", "https://a.example.org"),
            false,
            true,
        ),
        case(
            "actual GET, disallowed origin",
            "api",
            get("/orders", "https://evil.example.net"),
            false,
            false,
        ),
        case(
            "actual GET, no origin",
            "api",
            client::request("GET", "api.example.com", "/orders", &[], b""),
            false,
            false,
        ),
        case(
            "OPTIONS without request method",
            "api",
            client::request(
                "OPTIONS",
                "api.example.com",
                "/orders",
                &[("origin", "https://app.example.com")],
                b"",
            ),
            false,
            true,
        ),
        case(
            "public route preflight, any origin",
            "public",
            preflight("/public/logo.png", "https://anyone.test", "GET"),
            true,
            true,
        ),
        case(
            "public route GET, any origin",
            "public",
            get("/public/logo.png", "https://anyone.test"),
            false,
            true,
        ),
    ]
}

/// Status, whether the upstream saw it, and the sorted `access-control-*` headers.
type Seen = (u16, bool, Vec<(String, String)>);

fn cors_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .cloned()
        .collect();
    out.sort();
    out
}

fn has_vary_origin(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n == "vary"
            && v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("origin"))
    })
}

fn through_envoy(
    config: &EnvoyConfig,
    label: &str,
    upstream: &Upstream,
) -> Result<Vec<(Seen, bool)>> {
    let envoy = Envoy::start(config, label)?;
    envoy.explain((|| {
        let mut out = Vec::new();
        for case in cases() {
            let response = client::send(envoy.listener(), &case.request)?;
            let reached = !upstream.take_requests().is_empty();
            out.push((
                (response.status, reached, cors_headers(&response.headers)),
                has_vary_origin(&response.headers),
            ));
        }
        Ok(out)
    })())
}

#[test]
fn same_answers_as_native_cors_in_envoy_and_in_the_harness() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let wasm = through_envoy(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "cors",
        &upstream,
    )?;
    let mut native_config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    native_config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .use_native_alternative(&paths::root().join("envoy/cors/native.yaml"))?;
    let native = through_envoy(&native_config, "cors-native", &upstream)?;
    let cases = cases();
    let mut problems = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let ((w, w_vary), (n, _)) = (&wasm[i], &native[i]);
        eprintln!("{:<45} wasm {:?}\n{:<45} native {:?}", case.what, w, "", n);
        if w != n {
            problems.push(format!("{}: wasm {w:?}, native {n:?}", case.what));
        }
        if w.1 == case.answered {
            problems.push(format!("{}: upstream reached: {}", case.what, w.1));
        }
        let allow_origin = w.2.iter().any(|(n, _)| n == "access-control-allow-origin");
        if allow_origin != case.cors {
            problems.push(format!(
                "{}: access-control-allow-origin present: {allow_origin}",
                case.what
            ));
        }
        let has_origin = case.request.headers.iter().any(|(n, _)| n == "origin");
        if *w_vary != has_origin {
            problems.push(format!("{}: Vary: Origin present: {w_vary}", case.what));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));

    // The harness: the same status and CORS headers as in Envoy (one replay per route name).
    for route in ["api", "public"] {
        let picked: Vec<usize> = (0..cases.len())
            .filter(|&i| cases[i].route == route)
            .collect();
        let traffic = Traffic {
            source: None,
            exchanges: picked
                .iter()
                .map(|&i| Exchange {
                    id: cases[i].what.to_string(),
                    request: cases[i].request.clone(),
                    response: Some(ok_response()),
                    details: tollgate_traffic::ExchangeDetails::default(),
                })
                .collect(),
            warnings: Vec::new(),
        };
        let report = Replay::filter(paths::filter_wasm(FILTER)?)
            .config(paths::demo_config(FILTER)?)
            .property("xds.route_name", route)
            .traffic(traffic)
            .run()?;
        for (&i, exchange) in picked.iter().zip(&report.exchanges) {
            let ((status, _, headers), _) = &wasm[i];
            let client = &exchange.client_response;
            let what = cases[i].what;
            ensure!(
                client.status == *status,
                "harness, {what}: {} (Envoy {status})",
                client.status
            );
            let seen = cors_headers(&client.headers);
            ensure!(
                seen == *headers,
                "harness, {what}: {seen:?} (Envoy {headers:?})"
            );
        }
    }
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    for (config, field) in [
        (
            r#"{"default": {"allow_origins": ["https://a.com/"]}}"#,
            "default.allow_origins[0]",
        ),
        (
            r#"{"default": {"allow_origins": ["*"], "allow_credentials": true}}"#,
            "default.allow_origins[0]",
        ),
        (
            r#"{"routes": [{"match": {"route": "r"}, "config": {"allow_origin_regex": ["(a"]}}]}"#,
            "routes[0].config.allow_origin_regex[0]",
        ),
    ] {
        let mut envoy_config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
        envoy_config.set_plugin_configuration(config)?;
        let line = Envoy::refusal(&envoy_config, "cors-refused", FILTER)
            .with_context(|| format!("{field}: {config}"))?;
        ensure!(line.contains(field), "{field}: {line}");
    }
    Ok(())
}
