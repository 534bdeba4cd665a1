//! The `json-mask` filter with its demo configuration (`envoy/json-mask/envoy.yaml`):
//! - request and response bodies written whole, one byte at a time and in random pieces (a client
//!   and an upstream that write in small pieces): the same masked documents each time, exactly
//!   the bytes expected reaching the upstream and the client (the stale `content-length` gone),
//!   then the same exchanges in the harness with the same chunkings;
//! - non-JSON bodies and JSON without secrets pass byte for byte;
//! - past `max_body_bytes`, bodies pass whole (announced or discovered mid-body) or are refused
//!   (413 for requests, 502 for responses, problem+json) as configured;
//! - the metrics as Prometheus labels; refused configurations name the field at start-up.

use anyhow::{Context, Result, ensure};
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1;
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::trickle::{self, TrickleUpstream, Writes, random_sizes};
use tollgate_traffic::{Exchange, ExchangeDetails, HttpRequest, HttpResponse};

const FILTER: &str = "json-mask";

/// Padding items (no secret), as sent (spaced) and as the filter writes them (compact).
fn items(n: usize) -> (String, String) {
    let sent: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"sku\": \"A-{i:04}\", \"qty\": {}, \"price\": 1.50e1}}",
                i % 7
            )
        })
        .collect();
    let compact: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"sku\":\"A-{i:04}\",\"qty\":{},\"price\":1.50e1}}",
                i % 7
            )
        })
        .collect();
    (sent.join(",\n    "), compact.join(","))
}

/// The request document and what the demo configuration makes of it.
fn request_doc() -> (Vec<u8>, Vec<u8>) {
    let (sent, compact) = items(16);
    let doc = format!(
        r#"{{
  "customer": {{"name": "Ada Lovelace", "ssn": "123-45-6789", "email": "ada@example.com", "password": "hunter2"}},
  "payments": [
    {{"iban": "GB82WEST12345698765432", "card": "4111 1111 1111 1111", "note": "ok"}},
    {{"iban": "DE89370400440532013000", "card": 5555555555554444}}
  ],
  "national_id": "NID-12345678",
  "comment": "call me at bob@example.org about NID-87654321",
  "items": [
    {sent}
  ]
}}"#
    );
    let expected = format!(
        r#"{{"customer":{{"name":"Ada Lovelace","ssn":"[REDACTED]","email":"************com"}},"payments":[{{"iban":"******************5432","card":"***************1111","note":"ok"}},{{"iban":"******************3000","card":"************4444"}}],"national_id":"[REDACTED]","comment":"call me at ************org about [REDACTED]","items":[{compact}]}}"#
    );
    (doc.into_bytes(), expected.into_bytes())
}

/// The response document and its masked form.
fn response_doc() -> (Vec<u8>, Vec<u8>) {
    let (sent, compact) = items(8);
    let doc = format!(
        r#"{{"users": [{{"email": "eve@example.net", "card": "378282246310005", "password": "x"}}],
  "ok": true, "items": [{sent}]}}"#
    );
    let expected = format!(
        r#"{{"users":[{{"email":"************net","card":"************005"}}],"ok":true,"items":[{compact}]}}"#
    );
    (doc.into_bytes(), expected.into_bytes())
}

fn json_response(body: &[u8]) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_vec(),
    }
}

fn post(content_type: &str, body: &[u8]) -> HttpRequest {
    client::request(
        "POST",
        "api.example.com",
        "/orders",
        &[("content-type", content_type)],
        body,
    )
}

/// Whether a message's framing tells exactly `len` bytes (chunked, or a matching length).
fn framed_for(headers: &[(String, String)], len: usize) -> bool {
    match http1::header(headers, "content-length") {
        Some(v) => v.trim() == len.to_string(),
        None => http1::header(headers, "transfer-encoding").is_some_and(|t| t.contains("chunked")),
    }
}

#[test]
fn bodies_are_masked_whatever_the_chunking_in_envoy_and_in_the_harness() -> Result<()> {
    let (req_doc, req_masked) = request_doc();
    let (resp_doc, resp_masked) = response_doc();
    ensure!(
        req_doc.len() > 1000,
        "request document {} bytes",
        req_doc.len()
    );
    let chunkings = [
        ("whole", Writes::Whole, Writes::Whole),
        ("1-byte", Writes::Every(1), Writes::Every(1)),
        (
            "random",
            Writes::Sizes(random_sizes(7, req_doc.len())),
            Writes::Sizes(random_sizes(11, resp_doc.len())),
        ),
    ];
    let upstream = TrickleUpstream::start(json_response(&resp_doc), Writes::Whole)?;
    let envoy = Envoy::start(&EnvoyConfig::for_filter(FILTER, upstream.addr())?, FILTER)?;
    envoy.explain((|| {
        for (label, req_writes, resp_writes) in &chunkings {
            upstream.set_response(json_response(&resp_doc), resp_writes.clone());
            let response = trickle::send(
                envoy.listener(),
                &post("application/json", &req_doc),
                req_writes,
            )?;
            ensure!(
                response.status == 200,
                "{label}: status {}",
                response.status
            );
            let seen = upstream.take_requests();
            ensure!(seen.len() == 1, "{label}: {} requests upstream", seen.len());
            let got = &seen[0];
            ensure!(
                got.body == req_masked,
                "{label}: the upstream read\n{}\nexpected\n{}",
                String::from_utf8_lossy(&got.body),
                String::from_utf8_lossy(&req_masked)
            );
            ensure!(
                framed_for(&got.headers, req_masked.len()),
                "{label}: upstream framing {:?}",
                got.headers
            );
            ensure!(
                response.body == resp_masked,
                "{label}: the client read\n{}\nexpected\n{}",
                String::from_utf8_lossy(&response.body),
                String::from_utf8_lossy(&resp_masked)
            );
            ensure!(
                framed_for(&response.headers, resp_masked.len()),
                "{label}: client framing {:?}",
                response.headers
            );
        }

        // Not JSON: untouched, its content-length kept. JSON without secrets: byte for byte.
        upstream.set_response(json_response(b"{\"ok\": true}\n"), Writes::Every(3));
        let text = b"mail ada@example.com, card 4111111111111111";
        let response = trickle::send(
            envoy.listener(),
            &post("text/plain", text),
            &Writes::Every(5),
        )?;
        ensure!(
            response.body == b"{\"ok\": true}\n",
            "client read {:?}",
            response.body
        );
        let seen = upstream.take_requests();
        ensure!(
            seen.len() == 1 && seen[0].body == text,
            "text body changed: {seen:?}"
        );
        ensure!(
            http1::header(&seen[0].headers, "content-length") == Some(&*text.len().to_string()),
            "text body lost its content-length: {:?}",
            seen[0].headers
        );

        let stats = stats::prometheus(envoy.admin())?;
        stats::ensure_lines(
            &stats,
            "json_mask",
            &[
                "json_mask_bodies{direction=\"request\",result=\"masked\"} 3",
                "json_mask_bodies{direction=\"response\",result=\"masked\"} 3",
                "json_mask_bodies{direction=\"response\",result=\"unchanged\"} 1",
            ],
        )?;
        Ok(())
    })())?;
    drop(envoy);

    // The harness: the same exchanges, chunked the same ways.
    let exchanges = chunkings
        .iter()
        .map(|(label, req_writes, resp_writes)| {
            let sizes = |w: &Writes, body: &[u8]| w.split(body).iter().map(|p| p.len()).collect();
            let mut response = json_response(&resp_doc);
            response
                .headers
                .push(("content-length".into(), resp_doc.len().to_string()));
            Exchange {
                id: (*label).to_string(),
                request: post("application/json", &req_doc),
                response: Some(response),
                details: ExchangeDetails {
                    request_chunks: sizes(req_writes, &req_doc),
                    response_chunks: sizes(resp_writes, &resp_doc),
                    ..ExchangeDetails::default()
                },
            }
        })
        .collect();
    let report = demo::replay(FILTER, exchanges).context("the harness could not replay")?;
    for e in &report.exchanges {
        let upstream = e
            .upstream_request
            .as_ref()
            .with_context(|| format!("harness {}: never reached the upstream", e.id))?;
        ensure!(
            upstream.body == req_masked,
            "harness {}: upstream body {}",
            e.id,
            String::from_utf8_lossy(&upstream.body)
        );
        ensure!(
            http1::header(&upstream.headers, "content-length").is_none(),
            "harness {}: content-length left on a rewritten request",
            e.id
        );
        ensure!(
            e.client_response.body == resp_masked,
            "harness {}: client body {}",
            e.id,
            String::from_utf8_lossy(&e.client_response.body)
        );
        ensure!(
            http1::header(&e.client_response.headers, "content-length").is_none(),
            "harness {}: content-length left on a rewritten response",
            e.id
        );
    }
    Ok(())
}

/// A request whose body is sent with chunked framing (no length announced), in `piece` writes.
fn chunked_post(body: &[u8]) -> HttpRequest {
    let mut framed = Vec::new();
    for part in body.chunks(16) {
        framed.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        framed.extend_from_slice(part);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    HttpRequest {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "api.example.com".into(),
        path: "/orders".into(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("transfer-encoding".into(), "chunked".into()),
        ],
        body: framed,
    }
}

#[test]
fn oversize_bodies_pass_whole_or_are_refused() -> Result<()> {
    let big = format!(
        "{{\"password\": \"hunter2\", \"pad\": \"{}\"}}",
        "x".repeat(200)
    )
    .into_bytes();
    let upstream = TrickleUpstream::start(json_response(b"{\"ok\": true}"), Writes::Whole)?;

    // Pass: announced (content-length) or found mid-body (chunked), the body goes on whole.
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(r#"{"rules": [{"key": "password"}], "max_body_bytes": 64}"#)?;
    let envoy = Envoy::start(&config, "json-mask-oversize-pass")?;
    envoy.explain((|| {
        for (label, request) in [
            ("announced", post("application/json", &big)),
            ("chunked", chunked_post(&big)),
        ] {
            let response = trickle::send(envoy.listener(), &request, &Writes::Every(7))?;
            ensure!(response.status == 200, "{label}: {}", response.status);
            let seen = upstream.take_requests();
            ensure!(
                seen.len() == 1 && seen[0].body == big,
                "{label}: the upstream read {:?}",
                seen.iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            );
        }
        Ok(())
    })())?;
    drop(envoy);

    // Refuse: 413 for requests (announced or found), 502 for an announced large response.
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(
        r#"{"rules": [{"key": "password"}], "max_body_bytes": 64, "oversize": "refuse"}"#,
    )?;
    let envoy = Envoy::start(&config, "json-mask-oversize-refuse")?;
    envoy.explain((|| {
        for (label, request) in [
            ("announced", post("application/json", &big)),
            ("chunked", chunked_post(&big)),
        ] {
            let response = trickle::send(envoy.listener(), &request, &Writes::Every(7))?;
            ensure!(response.status == 413, "{label}: {}", response.status);
            let problem: serde_json::Value = serde_json::from_slice(&response.body)
                .with_context(|| format!("{label}: {:?}", response.body))?;
            ensure!(problem["status"] == 413, "{label}: {problem}");
            ensure!(
                http1::header(&response.headers, "content-type")
                    == Some("application/problem+json"),
                "{label}: {:?}",
                response.headers
            );
            let seen = upstream.take_requests();
            ensure!(
                seen.iter().all(|r| r.body != big),
                "{label}: the body reached the upstream"
            );
        }
        upstream.set_response(json_response(&big), Writes::Every(9));
        let response = trickle::send(
            envoy.listener(),
            &post("application/json", b"{}"),
            &Writes::Whole,
        )?;
        ensure!(
            response.status == 502,
            "large response: {}",
            response.status
        );
        ensure!(
            !String::from_utf8_lossy(&response.body).contains("hunter2"),
            "the secret reached the client"
        );
        Ok(())
    })())?;
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = TrickleUpstream::start(json_response(b"{}"), Writes::Whole)?;
    for (config, field) in [
        (r#"{"rules": [{"path": "user.name"}]}"#, "rules[0].path"),
        (
            r#"{"rules": [{"key": "a"}, {"regex": "(unclosed"}]}"#,
            "rules[1].regex",
        ),
        (
            r#"{"rules": [{"key": "a"}], "max_body_bytes": 0}"#,
            "max_body_bytes",
        ),
        (r#"{"rules": [{"detect": "iban"}]}"#, "rules[0].detect"),
    ] {
        let mut envoy_config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
        envoy_config.set_plugin_configuration(config)?;
        let line = Envoy::refusal(&envoy_config, "json-mask-refused", FILTER)
            .with_context(|| format!("{field}: {config}"))?;
        ensure!(line.contains(field), "{field}: {line}");
    }
    Ok(())
}

/// `envoy/json-mask/lua.yaml` (the Lua alternative of the README's comparison) starts in the
/// real Envoy and does what the README says on the demo documents: the same values masked,
/// removed and redacted as the Wasm filter (compared as JSON: Lua keeps the spacing), and
/// framing that matches the bytes.
#[test]
fn the_lua_alternative_runs_in_envoy_and_masks_the_demo_documents() -> Result<()> {
    let (request, request_expected) = request_doc();
    let (response, response_expected) = response_doc();
    let upstream = tollgate_tests::upstream::Upstream::start(json_response(&response))?;
    let mut lua = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    lua.use_native_alternative(&paths::root().join("envoy/json-mask/lua.yaml"))?;
    let envoy = Envoy::start(&lua, "json-mask-lua")?;
    let (up, answer) = envoy.explain((|| {
        let answer = client::send(envoy.listener(), &post("application/json", &request))?;
        let got = upstream.take_requests();
        let up = got
            .into_iter()
            .next()
            .context("the upstream saw no request")?;
        Ok((up, answer))
    })())?;
    let parse = |what: &str, bytes: &[u8]| -> Result<serde_json::Value> {
        serde_json::from_slice(bytes)
            .with_context(|| format!("{what}: not JSON: {}", String::from_utf8_lossy(bytes)))
    };
    // `who` got `body` with `headers`: the expected document, framed for its bytes.
    let check =
        |who: &str, headers: &[(String, String)], body: &[u8], expected: &[u8]| -> Result<()> {
            ensure!(
                parse(who, body)? == parse("expected", expected)?,
                "{who} got {}",
                String::from_utf8_lossy(body)
            );
            ensure!(
                framed_for(headers, body.len()),
                "{who} framing {headers:?} for {} bytes",
                body.len()
            );
            Ok(())
        };
    check("upstream", &up.headers, &up.body, &request_expected)?;
    ensure!(answer.status == 200, "status {}", answer.status);
    check("client", &answer.headers, &answer.body, &response_expected)
}
