//! The `custom-response` filter (`envoy/custom-response/envoy.yaml`):
//! - local answers (maintenance for writes, a retired API, a blocked client) and upstream errors
//!   replaced (every 5xx a 502 JSON document with the request id; 404s under /api/ a JSON
//!   document) in a real Envoy: status, content type, body, and a `content-length` equal to the
//!   bytes the client read; whether the upstream was reached; the counters on
//!   `/stats/prometheus`; the same requests in the harness;
//! - next to Envoy's native `custom_response` (`envoy/custom-response/native.yaml`) replacing
//!   5xx responses: the same status, content type and document;
//! - refused configurations name the field at start-up in Envoy.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tollgate_replay::Replay;
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::upstream::{ReceivedRequest, Upstream};
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

const FILTER: &str = "custom-response";

/// The upstream: `/status/<n>` answers `n` with a text body, `/api/missing` and `/web/missing`
/// 404, anything else 200.
fn upstream_answer(path: &str) -> HttpResponse {
    let status = if let Some(n) = path.strip_prefix("/status/") {
        n.parse().unwrap_or(500)
    } else if path.ends_with("/missing") {
        404
    } else {
        200
    };
    let body = format!("upstream says {status} for {path}\n").into_bytes();
    HttpResponse {
        status,
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("content-length".into(), body.len().to_string()),
        ],
        body,
    }
}

fn start_upstream() -> Result<Upstream> {
    Upstream::start_with(|r: &ReceivedRequest| upstream_answer(&r.path))
}

struct Case {
    request: HttpRequest,
    status: u16,
    reached: bool,
    /// The JSON document expected, or the text body.
    body: Result<Value, String>,
}

fn request(method: &str, path: &str, id: &str, extra: &[(&str, &str)]) -> HttpRequest {
    let mut headers = vec![("x-request-id", id)];
    headers.extend_from_slice(extra);
    client::request(method, "api.example.com", path, &headers, b"")
}

fn cases() -> Vec<Case> {
    let case = |request, status, reached, body| Case {
        request,
        status,
        reached,
        body,
    };
    vec![
        case(
            request("POST", "/admin/users", "rid-1", &[]),
            503,
            false,
            Ok(
                json!({"error": "maintenance", "message": "writes are paused", "request_id": "rid-1"}),
            ),
        ),
        case(
            request("GET", "/admin/users", "rid-2", &[]),
            200,
            true,
            Err("upstream says 200 for /admin/users\n".into()),
        ),
        case(
            request("GET", "/v1/orders?page=2", "rid-3", &[]),
            410,
            false,
            Err("API v1 is retired; use /v2/v1/orders?page=2\n".into()),
        ),
        case(
            request("GET", "/orders", "rid-4", &[("x-client", "legacy-app")]),
            403,
            false,
            Ok(json!({"error": "client_blocked"})),
        ),
        case(
            request("GET", "/status/503", "rid-5", &[]),
            502,
            true,
            Ok(json!({"error": "upstream_error", "status": 503, "request_id": "rid-5"})),
        ),
        case(
            request("DELETE", "/status/500", "rid-6", &[]),
            502,
            true,
            Ok(json!({"error": "upstream_error", "status": 500, "request_id": "rid-6"})),
        ),
        case(
            request("GET", "/api/missing", "rid-7", &[]),
            404,
            true,
            Ok(json!({"error": "not_found", "path": "/api/missing"})),
        ),
        case(
            request("GET", "/web/missing", "rid-8", &[]),
            404,
            true,
            Err("upstream says 404 for /web/missing\n".into()),
        ),
        case(
            request("GET", "/status/429", "rid-9", &[]),
            429,
            true,
            Err("upstream says 429 for /status/429\n".into()),
        ),
    ]
}

/// Checks one answer against its case: status, body, content type, and a content-length equal
/// to the body read.
fn check(what: &str, case: &Case, response: &HttpResponse) -> Result<()> {
    ensure!(
        response.status == case.status,
        "{what}: status {} (expected {})",
        response.status,
        case.status
    );
    let header = |name: &str| {
        response
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let length = header("content-length");
    ensure!(
        length == [response.body.len().to_string()],
        "{what}: content-length {length:?}, body {} bytes",
        response.body.len()
    );
    match &case.body {
        Ok(doc) => {
            let got: Value = serde_json::from_slice(&response.body).with_context(|| {
                format!(
                    "{what}: not JSON: {:?}",
                    String::from_utf8_lossy(&response.body)
                )
            })?;
            ensure!(&got == doc, "{what}: {got} (expected {doc})");
            ensure!(
                header("content-type") == ["application/json"],
                "{what}: {:?}",
                header("content-type")
            );
        }
        Err(text) => {
            ensure!(
                response.body == text.as_bytes(),
                "{what}: {:?}",
                String::from_utf8_lossy(&response.body)
            );
        }
    }
    Ok(())
}

#[test]
fn local_answers_and_replaced_errors_in_envoy_and_in_the_harness() -> Result<()> {
    let upstream = start_upstream()?;
    let cases = cases();
    let envoy = Envoy::start(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "custom-response",
    )?;
    let stats = envoy.explain((|| {
        for case in &cases {
            let what = format!("envoy {} {}", case.request.method, case.request.path);
            let response = client::send(envoy.listener(), &case.request)?;
            check(&what, case, &response)?;
            let reached = !upstream.take_requests().is_empty();
            ensure!(
                reached == case.reached,
                "{what}: upstream reached: {reached}"
            );
        }
        stats::prometheus(envoy.admin())
    })())?;
    stats::ensure_lines(
        &stats,
        "custom_response",
        &[
            "custom_response_replies{rule=\"maintenance\"} 1",
            "custom_response_replies{rule=\"retired\"} 1",
            "custom_response_replies{rule=\"blocked_client\"} 1",
            "custom_response_replies{rule=\"upstream_5xx\"} 2",
            "custom_response_replies{rule=\"not_found\"} 1",
        ],
    )?;

    let exchanges = cases
        .iter()
        .enumerate()
        .map(|(i, c)| Exchange {
            id: format!("case {i}"),
            request: c.request.clone(),
            response: Some(upstream_answer(&c.request.path)),
            details: tollgate_traffic::ExchangeDetails::default(),
        })
        .collect();
    let report = demo::replay(FILTER, exchanges)?;
    for (case, exchange) in cases.iter().zip(&report.exchanges) {
        let what = format!("harness {} {}", case.request.method, case.request.path);
        check(&what, case, &exchange.client_response)?;
        ensure!(
            exchange.upstream_request.is_some() == case.reached,
            "{what}: upstream reached: {}",
            exchange.upstream_request.is_some()
        );
    }
    Ok(())
}

#[test]
fn replaces_upstream_5xx_as_envoys_native_custom_response_does() -> Result<()> {
    let upstream = start_upstream()?;
    let requests = [
        request("GET", "/status/503", "rid-a", &[]),
        request("POST", "/status/500", "rid-b", &[]),
        request("GET", "/status/599", "rid-c", &[]),
        request("GET", "/status/404", "rid-d", &[]),
        request("GET", "/ok", "rid-e", &[]),
    ];
    let mut ours = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    ours.set_plugin_configuration(
        r#"{"errors": [{"status": ["5xx"], "respond": {"status": 502,
            "json": {"error": "upstream_error", "request_id": "{{request_id}}"}}}]}"#,
    )?;
    let mut native = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    native.use_native_alternative(&paths::root().join("envoy/custom-response/native.yaml"))?;
    let mut seen = Vec::new();
    for (label, config) in [
        ("custom-response-ours", &ours),
        ("custom-response-native", &native),
    ] {
        let envoy = Envoy::start(config, label)?;
        let answers = envoy.explain(
            requests
                .iter()
                .map(|r| client::send(envoy.listener(), r))
                .collect::<Result<Vec<_>>>(),
        )?;
        seen.push(answers);
    }
    for (i, r) in requests.iter().enumerate() {
        let (w, n) = (&seen[0][i], &seen[1][i]);
        let what = format!("{} {}", r.method, r.path);
        ensure!(
            w.status == n.status,
            "{what}: ours {}, native {}",
            w.status,
            n.status
        );
        let doc = |resp: &HttpResponse| serde_json::from_slice::<Value>(&resp.body).ok();
        if n.status == 502 {
            ensure!(
                doc(w).is_some() && doc(w) == doc(n),
                "{what}: ours {:?}, native {:?}",
                String::from_utf8_lossy(&w.body),
                String::from_utf8_lossy(&n.body)
            );
            ensure!(
                doc(w).and_then(|d| d.get("request_id").cloned()) == Some(json!(r.headers[0].1)),
                "{what}: the request id is not in the document"
            );
        } else {
            ensure!(w.body == n.body, "{what}: bodies differ");
        }
        for resp in [w, n] {
            let length: Vec<&String> = resp
                .headers
                .iter()
                .filter(|(n, _)| n == "content-length")
                .map(|(_, v)| v)
                .collect();
            ensure!(
                length == [&resp.body.len().to_string()],
                "{what}: content-length {length:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = start_upstream()?;
    Envoy::refusals_name_the_field(
        FILTER,
        upstream.addr(),
        &[
            (
                r#"{"local": [{"respond": {"body": "x"}}]}"#,
                "local[0].respond.status",
            ),
            (
                r#"{"errors": [{"status": ["7xx"], "respond": {}}]}"#,
                "errors[0].status[0]",
            ),
            (
                r#"{"errors": [{"status": ["5xx"], "respond": {"body": "{{oops}}"}}]}"#,
                "errors[0].respond.body",
            ),
        ],
    )
}

/// A local reply of a filter placed after custom-response (request-block's 403) comes back
/// through custom-response's response path: with an `errors` rule for 403 Envoy sends the
/// replacement straight to the client (its filter manager holds the first reply's headers,
/// so the second local reply is a direct one). The harness must answer the same.
#[test]
fn a_later_filters_local_reply_is_replaced_like_an_upstream_answer() -> Result<()> {
    let upstream = start_upstream()?;
    let ours = r#"{"errors": [{"status": [403], "respond": {"status": 403,
        "json": {"error": "forbidden", "request_id": "{{request_id}}"}}}]}"#;
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(ours)?;
    let block_wasm = paths::filter_wasm("request-block")?;
    let block_config = paths::demo_config("request-block")?;
    let filters = config
        .value_mut()
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .context("no http_filters")?;
    let mut block = filters.first().cloned().context("no wasm filter")?;
    let wasm = block
        .pointer_mut("/typed_config/config")
        .and_then(Value::as_object_mut)
        .context("no wasm config")?;
    wasm.insert("name".into(), json!("request-block"));
    wasm.insert("root_id".into(), json!("request-block"));
    wasm.insert(
        "vm_config".into(),
        json!({"vm_id": "request-block", "runtime": "envoy.wasm.runtime.v8",
               "code": {"local": {"filename": block_wasm.display().to_string()}}}),
    );
    wasm.insert(
        "configuration".into(),
        json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": block_config}),
    );
    filters.insert(1, block);
    let envoy = Envoy::start(&config, "custom-response-chain")?;
    let blocked = request("GET", "/admin/users", "rid-x", &[]);
    let answer = envoy.explain(client::send(envoy.listener(), &blocked))?;
    let doc: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    ensure!(
        upstream.take_requests().is_empty(),
        "the blocked request reached the upstream"
    );
    ensure!(answer.status == 403, "status {}", answer.status);
    ensure!(
        doc == json!({"error": "forbidden", "request_id": "rid-x"}),
        "envoy: {doc}"
    );

    let report = Replay::chain()
        .filter(paths::filter_wasm(FILTER)?)
        .config(ours)
        .filter(block_wasm)
        .config(block_config)
        .traffic(Traffic {
            source: None,
            exchanges: vec![Exchange {
                id: "blocked".into(),
                request: blocked.clone(),
                response: Some(upstream_answer(&blocked.path)),
                details: tollgate_traffic::ExchangeDetails::default(),
            }],
            warnings: Vec::new(),
        })
        .run()?;
    let e = report.exchanges.first().context("no exchange")?;
    let theirs: Value = serde_json::from_slice(&e.client_response.body).unwrap_or(Value::Null);
    ensure!(
        e.upstream_request.is_none(),
        "the harness sent the blocked request upstream"
    );
    ensure!(
        e.client_response.status == answer.status && theirs == doc,
        "the harness answered {} {:?}, Envoy {} {doc}; steps: {:?}",
        e.client_response.status,
        String::from_utf8_lossy(&e.client_response.body),
        answer.status,
        e.changes
    );
    let content_type = |h: &[(String, String)]| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
    };
    ensure!(
        content_type(&e.client_response.headers) == content_type(&answer.headers),
        "content-type: harness {:?}, Envoy {:?}",
        e.client_response.headers,
        answer.headers
    );
    ensure!(
        e.changes
            .iter()
            .any(|c| c.starts_with("answered locally with status 403")
                && c.contains("while the local reply 403 was encoded")),
        "{:?}",
        e.changes
    );
    Ok(())
}
