//! The `transformer` filter (`envoy/transformer/envoy.yaml`):
//! - JSON body edits in both directions through a real Envoy, with the client writing the
//!   request body and an upstream writing the response body whole, in 1-byte writes and in
//!   random small writes: the upstream and the client read the same edited bytes every time,
//!   and the byte counts match what was sent (no stale `content-length`); the documents' key
//!   order survives the edits (exact bytes); the same bodies cut the same ways in the harness
//!   give the same bytes;
//! - headers, query parameters, prefix and regex path rewrites and a redirect in Envoy and in
//!   the harness; the counters on `/stats/prometheus`;
//! - refused configurations name the field at start-up in Envoy.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tollgate_envoy::http1::{self, BodyFraming};
use tollgate_replay::Replay;
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, ExchangeDetails, HttpResponse, Traffic};

const FILTER: &str = "transformer";

/// Written by hand, keys in no sorted order: what the filter does not edit keeps its place.
fn request_doc() -> Vec<u8> {
    br#"{
  "user": {"mail": "ada@example.com", "fullName": "Ada Lovelace", "id": 7},
  "client": {"name": "app", "debug": true},
  "note": "\u00fcn\u00efc\u00f6d\u00e9 \"q\" {}",
  "items": [1, 2, 3]
}"#
    .to_vec()
}

fn request_expected() -> Value {
    json!({"user": {"full_name": "Ada Lovelace", "id": 7}, "contact": {"email": "ada@example.com"},
        "client": {"name": "app"}, "items": [1, 2, 3], "note": "ünïcödé \"q\" {}", "meta": {"via": "tollgate"}})
}

/// `request_expected()` as the filter writes it: the members in the request's order (the
/// renamed `full_name` in `fullName`'s place), moved and set ones last.
const REQUEST_EXPECTED_BYTES: &str = r#"{"user":{"full_name":"Ada Lovelace","id":7},"client":{"name":"app"},"note":"ünïcödé \"q\" {}","items":[1,2,3],"contact":{"email":"ada@example.com"},"meta":{"via":"tollgate"}}"#;

fn response_doc() -> Vec<u8> {
    let doc = format!(
        r#"{{"internal": {{"trace": "{}", "host": "10.0.0.1"}}, "data": {{"orders": [{{"total": 12.5, "id": 1}}, {{"total": 3, "id": 2}}]}}}}"#,
        "x".repeat(300)
    );
    doc.into_bytes()
}

/// The response as the filter writes it: `data` renamed `result` in place, `api_version` last.
const RESPONSE_EXPECTED_BYTES: &str =
    r#"{"result":{"orders":[{"total":12.5,"id":1},{"total":3,"id":2}]},"api_version":2}"#;

fn response_expected() -> Value {
    json!({"result": {"orders": [{"id": 1, "total": 12.5}, {"id": 2, "total": 3}]}, "api_version": 2})
}

/// Chunk sizes covering `len` bytes: whole, 1 byte each, or random sizes from 1 to 40.
fn plan(kind: &str, len: usize, seed: u64) -> Vec<usize> {
    match kind {
        "whole" => vec![len],
        "1-byte" => vec![1; len],
        _ => {
            let mut state = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut out = Vec::new();
            let mut left = len;
            while left > 0 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = ((state >> 33) as usize % 40 + 1).min(left);
                out.push(n);
                left -= n;
            }
            out
        }
    }
}

/// Writes `bytes` in pieces of `sizes`, each flushed, with a pause between them so the proxy
/// reads them apart.
fn write_in_pieces(stream: &mut TcpStream, bytes: &[u8], sizes: &[usize]) -> Result<()> {
    let mut at = 0;
    for &n in sizes {
        stream.write_all(&bytes[at..at + n])?;
        stream.flush()?;
        at += n;
        if sizes.len() > 1 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    Ok(())
}

/// What the streaming upstream saw of one request.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An upstream that answers every request with `response_doc()` as a chunked body written in
/// the pieces of the current plan, and records what it received.
struct StreamingUpstream {
    addr: SocketAddr,
    plan: Arc<Mutex<Vec<usize>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl StreamingUpstream {
    fn start() -> Result<StreamingUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let plan = Arc::new(Mutex::new(vec![response_doc().len()]));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (p, r) = (Arc::clone(&plan), Arc::clone(&received));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (p, r) = (Arc::clone(&p), Arc::clone(&r));
                std::thread::spawn(move || {
                    let _ = serve(stream, &p, &r);
                });
            }
        });
        Ok(StreamingUpstream {
            addr,
            plan,
            received,
        })
    }

    fn set_plan(&self, sizes: Vec<usize>) {
        if let Ok(mut p) = self.plan.lock() {
            *p = sizes;
        }
    }

    fn take(&self) -> Vec<Received> {
        self.received
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

fn serve(
    stream: TcpStream,
    plan: &Mutex<Vec<usize>>,
    received: &Mutex<Vec<Received>>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(head) = http1::read_head(&mut reader)? {
        let body = http1::read_framed_body(&mut reader, &head, BodyFraming::Request)?;
        let path = head
            .start_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        if let Ok(mut r) = received.lock() {
            r.push(Received {
                path,
                headers: head.headers.clone(),
                body,
            });
        }
        let sizes = plan.lock().map(|p| p.clone()).unwrap_or_default();
        let doc = response_doc();
        writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nserver: test-upstream\r\ntransfer-encoding: chunked\r\n\r\n")?;
        let mut at = 0;
        for n in sizes {
            let mut piece = format!("{n:x}\r\n").into_bytes();
            piece.extend_from_slice(&doc[at..at + n]);
            piece.extend_from_slice(b"\r\n");
            writer.write_all(&piece)?;
            writer.flush()?;
            at += n;
            std::thread::sleep(Duration::from_micros(300));
        }
        writer.write_all(b"0\r\n\r\n")?;
        writer.flush()?;
    }
    Ok(())
}

/// Sends a POST with `body` written in `sizes` pieces (with `content-length`), returns the
/// response head's headers and the body read.
fn post_in_pieces(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    sizes: &[usize],
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: api.example.com\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    write_in_pieces(&mut stream, body, sizes)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let head = http1::read_head(&mut reader)?.context("no response")?;
    let status: u16 = head
        .start_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = http1::read_framed_body(&mut reader, &head, BodyFraming::Response)?;
    Ok(HttpResponse {
        status,
        headers: head.headers,
        body,
    })
}

fn length_matches(headers: &[(String, String)], body: &[u8]) -> bool {
    match http1::header(headers, "content-length") {
        Some(n) => n.trim() == body.len().to_string(),
        None => true,
    }
}

#[test]
fn json_bodies_edited_the_same_for_every_chunking_in_envoy_and_in_the_harness() -> Result<()> {
    let upstream = StreamingUpstream::start()?;
    let config = EnvoyConfig::for_filter(FILTER, upstream.addr)?;
    let envoy = Envoy::start(&config, "transformer")?;
    let request = request_doc();
    let response = response_doc();
    let mut seen: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let stats = envoy.explain((|| {
        for (i, kind) in ["whole", "1-byte", "random", "random"].iter().enumerate() {
            let label = format!("{kind} #{i}");
            let req_plan = plan(kind, request.len(), i as u64);
            upstream.set_plan(plan(kind, response.len(), 100 + i as u64));
            let answer = post_in_pieces(envoy.listener(), "/api/users", &request, &req_plan)?;
            let got = upstream.take();
            let up = got.first().context("the upstream saw no request")?;
            ensure!(answer.status == 200, "{label}: status {}", answer.status);
            ensure!(
                up.path == "/v2/users?source=gateway",
                "{label}: upstream path {}",
                up.path
            );
            ensure!(
                length_matches(&up.headers, &up.body),
                "{label}: upstream content-length {:?}, {} bytes read",
                http1::header(&up.headers, "content-length"),
                up.body.len()
            );
            let doc: Value = serde_json::from_slice(&up.body).with_context(|| {
                format!(
                    "{label}: upstream body {:?}",
                    String::from_utf8_lossy(&up.body)
                )
            })?;
            ensure!(doc == request_expected(), "{label}: upstream got {doc}");
            ensure!(
                length_matches(&answer.headers, &answer.body),
                "{label}: client content-length {:?}, {} bytes read",
                http1::header(&answer.headers, "content-length"),
                answer.body.len()
            );
            let doc: Value = serde_json::from_slice(&answer.body).with_context(|| {
                format!(
                    "{label}: client body {:?}",
                    String::from_utf8_lossy(&answer.body)
                )
            })?;
            ensure!(doc == response_expected(), "{label}: client got {doc}");
            ensure!(
                http1::header(&answer.headers, "server").is_none_or(|s| s != "test-upstream"),
                "{label}: server header kept"
            );
            seen.push((label, up.body.clone(), answer.body.clone()));
        }
        stats::prometheus(envoy.admin())
    })())?;
    for (label, up, down) in &seen[1..] {
        ensure!(
            up == &seen[0].1 && down == &seen[0].2,
            "{label}: other bytes than whole"
        );
    }
    // The key order of the documents survives the edits (nothing sorted), byte for byte.
    ensure!(
        seen[0].1 == REQUEST_EXPECTED_BYTES.as_bytes(),
        "upstream body {:?}",
        String::from_utf8_lossy(&seen[0].1)
    );
    ensure!(
        seen[0].2 == RESPONSE_EXPECTED_BYTES.as_bytes(),
        "client body {:?}",
        String::from_utf8_lossy(&seen[0].2)
    );
    stats::ensure_lines(
        &stats,
        "transformer_",
        &[
            "transformer_actions{action=\"request_body\"} 4",
            "transformer_actions{action=\"response_body\"} 4",
        ],
    )?;

    // The harness: the same bodies cut the same ways give the same bytes as Envoy.
    for (i, kind) in ["whole", "1-byte", "random"].iter().enumerate() {
        let req = client::request(
            "POST",
            "api.example.com",
            "/api/users",
            &[("content-type", "application/json")],
            &request,
        );
        let exchanges = vec![Exchange {
            id: kind.to_string(),
            request: req,
            response: Some(HttpResponse {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("content-length".into(), response.len().to_string()),
                ],
                body: response.clone(),
            }),
            details: ExchangeDetails {
                request_chunks: plan(kind, request.len(), i as u64),
                response_chunks: plan(kind, response.len(), 100 + i as u64),
                ..ExchangeDetails::default()
            },
        }];
        let report = demo::replay(FILTER, exchanges)?;
        let exchange = report.exchanges.first().context("no exchange")?;
        let up = exchange
            .upstream_request
            .as_ref()
            .context("harness: upstream not reached")?;
        ensure!(
            up.body == seen[0].1,
            "harness {kind}: upstream body {:?}",
            String::from_utf8_lossy(&up.body)
        );
        ensure!(
            length_matches(&up.headers, &up.body),
            "harness {kind}: upstream content-length"
        );
        ensure!(
            exchange.client_response.body == seen[0].2,
            "harness {kind}: client body {:?}",
            String::from_utf8_lossy(&exchange.client_response.body)
        );
        ensure!(
            length_matches(
                &exchange.client_response.headers,
                &exchange.client_response.body
            ),
            "harness {kind}: client content-length {:?}",
            exchange.client_response.headers
        );
    }
    Ok(())
}

#[test]
fn headers_query_paths_and_redirects_in_envoy_and_in_the_harness() -> Result<()> {
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"ok"))?;
    let envoy = Envoy::start(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "transformer-headers",
    )?;
    let requests = [
        client::request(
            "GET",
            "api.example.com",
            "/api/acme/orders?q=shoes&debug=1&page=2",
            &[
                ("x-debug", "1"),
                ("x-client-version", "7.1"),
                ("x-consumer", "alice"),
            ],
            b"",
        ),
        client::request("GET", "api.example.com", "/users/42/profile?x=1", &[], b""),
        client::request("GET", "shop.example.com", "/old/catalog/x?a=b", &[], b""),
    ];
    let answers = envoy.explain(
        requests
            .iter()
            .map(|r| {
                let answer = client::send(envoy.listener(), r)?;
                Ok((answer, upstream.take_requests()))
            })
            .collect::<Result<Vec<_>>>(),
    )?;
    let h = |headers: &[(String, String)], n: &str| http1::header(headers, n).map(str::to_string);
    let (a0, up0) = &answers[0];
    let up = up0
        .first()
        .context("request 0 did not reach the upstream")?;
    ensure!(
        a0.status == 200 && up.path == "/v2/acme/orders?search=shoes&page=2&source=gateway",
        "{}",
        up.path
    );
    ensure!(
        h(&up.headers, "x-debug").is_none() && h(&up.headers, "x-client-version").is_none(),
        "{:?}",
        up.headers
    );
    for (name, value) in [
        ("x-app-version", "7.1"),
        ("x-forwarded-consumer", "alice"),
        ("x-original-path", "/api/acme/orders"),
        ("x-tenant", "acme"),
    ] {
        ensure!(
            h(&up.headers, name).as_deref() == Some(value),
            "{name}: {:?}",
            up.headers
        );
    }
    ensure!(
        h(&a0.headers, "x-request-path").as_deref() == Some("/api/acme/orders"),
        "{:?}",
        a0.headers
    );
    let (_, up1) = &answers[1];
    ensure!(
        up1.first().map(|r| r.path.as_str()) == Some("/v2/profiles/42?x=1"),
        "{up1:?}"
    );
    let (a2, up2) = &answers[2];
    ensure!(
        up2.is_empty() && a2.status == 308,
        "redirect: {} {up2:?}",
        a2.status
    );
    ensure!(
        h(&a2.headers, "location").as_deref() == Some("https://shop.example.com/api/catalog?a=b"),
        "{:?}",
        a2.headers
    );

    let exchanges = requests
        .iter()
        .enumerate()
        .map(|(i, r)| Exchange {
            id: format!("request {i}"),
            request: r.clone(),
            response: Some(tollgate_tests::upstream::text_response(b"ok")),
            details: ExchangeDetails::default(),
        })
        .collect();
    let report = demo::replay(FILTER, exchanges)?;
    let e0 = report.exchanges.first().context("no exchange")?;
    let up = e0
        .upstream_request
        .as_ref()
        .context("harness: request 0 not forwarded")?;
    if up.path != "/v2/acme/orders?search=shoes&page=2&source=gateway" {
        bail!("harness path {}", up.path);
    }
    let e2 = report.exchanges.get(2).context("no exchange 2")?;
    ensure!(
        e2.upstream_request.is_none() && e2.client_response.status == 308,
        "harness redirect"
    );
    ensure!(
        h(&e2.client_response.headers, "location") == h(&a2.headers, "location"),
        "harness location"
    );
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"ok"))?;
    Envoy::refusals_name_the_field(
        FILTER,
        upstream.addr(),
        &[
            (
                r#"{"default": {"redirect": {"status": 200, "location": "/x"}}}"#,
                "default.redirect.status",
            ),
            (
                r#"{"default": {"request": {"path": {"regex": {"pattern": "(", "substitution": ""}}}}}"#,
                "default.request.path.regex.pattern",
            ),
            (
                r#"{"default": {"request": {"body": {"remove": ["a..b"]}}}}"#,
                "default.request.body.remove[0]",
            ),
        ],
    )
}

/// A JSON body above `max_body_bytes` (here 64 KiB, under Envoy's 1 MiB buffer limit) passes
/// unchanged, with the bytes the client sent, in Envoy and in the harness.
#[test]
fn bodies_above_the_limit_pass_unchanged_in_envoy_and_in_the_harness() -> Result<()> {
    let upstream = StreamingUpstream::start()?;
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr)?;
    let policy = r#"{"default": {"request": {"body": {"set": [["edited", true]], "max_body_bytes": 65536}}}}"#;
    config.set_plugin_configuration(policy)?;
    let envoy = Envoy::start(&config, "transformer-limit")?;
    let items: Vec<Value> = (0..20_000).map(|i| json!({"id": i})).collect();
    let big = serde_json::to_vec(&json!({ "items": items }))?;
    let small = br#"{"a": 1}"#.to_vec();
    envoy.explain((|| {
        for (body, edited) in [(&big, false), (&small, true)] {
            // Pieces of up to 4 KiB for the big body (a few hundred writes), random ones else.
            let sizes: Vec<usize> = if edited {
                plan("random", body.len(), 7)
            } else {
                body.chunks(4096).map(<[u8]>::len).collect()
            };
            let answer = post_in_pieces(envoy.listener(), "/x", body, &sizes)?;
            ensure!(answer.status == 200, "status {}", answer.status);
            let got = upstream.take();
            let up = got.first().context("the upstream saw no request")?;
            ensure!(
                length_matches(&up.headers, &up.body),
                "upstream content-length"
            );
            if edited {
                ensure!(
                    up.body == br#"{"a":1,"edited":true}"#,
                    "{:?}",
                    String::from_utf8_lossy(&up.body)
                );
            } else {
                ensure!(
                    &up.body == body,
                    "a {} byte body changed ({} bytes arrived)",
                    body.len(),
                    up.body.len()
                );
            }
        }
        Ok(())
    })())?;
    let traffic = Traffic {
        source: None,
        exchanges: vec![Exchange {
            id: "big".into(),
            request: client::request(
                "POST",
                "api.example.com",
                "/x",
                &[("content-type", "application/json")],
                &big,
            ),
            response: Some(tollgate_tests::upstream::text_response(b"ok")),
            details: ExchangeDetails {
                request_chunks: big.chunks(4096).map(<[u8]>::len).collect(),
                ..ExchangeDetails::default()
            },
        }],
        warnings: Vec::new(),
    };
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(policy)
        .traffic(traffic)
        .run()?;
    let up = report
        .exchanges
        .first()
        .and_then(|e| e.upstream_request.as_ref())
        .context("harness: not forwarded")?;
    ensure!(
        up.body == big,
        "harness: the body changed ({} bytes)",
        up.body.len()
    );
    Ok(())
}

/// With the default `max_body_bytes` (960 KiB), a 2 MB JSON body stops being buffered before
/// Envoy's own 1 MiB buffer limit would answer 413: it reaches the upstream unchanged, whole.
#[test]
fn a_body_above_envoys_buffer_limit_passes_unchanged_with_the_default_limit() -> Result<()> {
    let upstream = StreamingUpstream::start()?;
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr)?;
    config.set_plugin_configuration(
        r#"{"default": {"request": {"body": {"set": [["edited", true]]}}}}"#,
    )?;
    let envoy = Envoy::start(&config, "transformer-default-limit")?;
    let items: Vec<Value> = (0..150_000).map(|i| json!({ "id": i })).collect();
    let big = serde_json::to_vec(&json!({ "items": items }))?;
    let sizes: Vec<usize> = big.chunks(16384).map(<[u8]>::len).collect();
    envoy.explain((|| {
        let answer = post_in_pieces(envoy.listener(), "/x", &big, &sizes)?;
        ensure!(
            answer.status == 200,
            "a {} byte body: status {}",
            big.len(),
            answer.status
        );
        let got = upstream.take();
        let up = got.first().context("the upstream saw no request")?;
        ensure!(
            up.body == big,
            "the body changed ({} of {} bytes arrived)",
            up.body.len(),
            big.len()
        );
        Ok(())
    })())
}
