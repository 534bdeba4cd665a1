//! ABI-level differential: the same requests through a real Envoy with its
//! `wasm` log at trace level and through the harness with `trace_calls`, and
//! the two call traces compared after normalisation
//! (`tollgate_host::trace`, rules in `harness/docs/trace.md`): every
//! callback and host call in order, context ids, end_of_stream flags, header
//! counts, body sizes, statuses and returned actions.
//!
//! One test per filter (`headers`, `basic-auth`, `key-auth`, `jwt-auth`,
//! `ext-authz`, each with its `demo.json`, passing and refused requests) and
//! one for a WAT guest of our own that calls a varied set of host functions
//! (header maps, buffers, properties, shared data, metrics, logs, a local
//! reply), so the guest->host side is covered beyond what our filters use.
//!
//! Envoy is started with `--component-log-level wasm:trace`
//! (`Launcher::with_wasm_log_level`). These tests always use the local binary
//! (`ENVOY_BIN` or the project's virtualenv), whatever `TOLLGATE_ENVOY_BACKEND`
//! says; without it they fail, never skip.
//!
//! Differences a rule explains are printed, by name; any other fails the test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use tollgate_host::callouts::{HttpAnswer, HttpClusterStub};
use tollgate_host::state::{HttpCallStub, LogLevel, VmSettings};
use tollgate_host::trace::{self, Known, Normalised};
use tollgate_replay::{Replay, ReplayBuilder, Report, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::guest;
use tollgate_tests::http1::{header, header_values};
use tollgate_tests::launcher::Launcher;
use tollgate_tests::upstream::Upstream;
use tollgate_tests::{jwt, paths};
use tollgate_traffic::{Exchange, ExchangeDetails, HttpRequest, HttpResponse, Traffic};

/// How long Envoy may take to finish the last stream's `on_log`/`on_delete`
/// after the response reached the client (a hang guard, not a speed check).
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// A launcher running the project's local Envoy with the `wasm` log at trace level.
fn traced_launcher() -> Result<Launcher> {
    Ok(Launcher::local()?.with_wasm_log_level("trace"))
}

fn start_traced(config: &EnvoyConfig, label: &str) -> Result<Envoy> {
    match Envoy::launch_with(&traced_launcher()?, config, label)? {
        Launch::Ready(envoy) => Ok(envoy),
        Launch::Exited { status, log } => {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("Envoy exited ({status}):\n{}", tail.join("\n"))
        }
    }
}

/// The response as the test upstream sends it (it adds `content-length`).
fn as_sent(mut response: HttpResponse) -> HttpResponse {
    if header(&response.headers, "content-length").is_none()
        && header(&response.headers, "transfer-encoding").is_none()
    {
        response
            .headers
            .push(("content-length".into(), response.body.len().to_string()));
    }
    response
}

/// Request headers Envoy's connection manager adds before the filters when absent.
const HCM_ADDED: &[&str] = &["x-request-id", "x-forwarded-proto"];

/// One request of a scenario, what Envoy answered the client.
struct Sent {
    request: HttpRequest,
    envoy: HttpResponse,
    /// The client gave up before any answer (status 0 in `envoy`).
    abandoned: bool,
}

/// How the client sends a request of a scenario.
enum Send {
    /// Sends and reads the answer.
    Answered(HttpRequest),
    /// Sends, waits [`ABANDON_AFTER`] for an answer and closes the connection.
    Abandoned(HttpRequest),
}

/// How long a client that gives up waits for an answer.
const ABANDON_AFTER: Duration = Duration::from_millis(500);

/// Sends `request` to `addr`, waits [`ABANDON_AFTER`] and closes; an answer
/// in that time is an error (the scenario expects none).
fn send_and_abandon(addr: std::net::SocketAddr, request: &HttpRequest) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).context("connecting to Envoy")?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\n",
        request.method, request.path, request.authority
    );
    for (k, v) in &request.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&request.body)?;
    stream.set_read_timeout(Some(ABANDON_AFTER))?;
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => Ok(()),
        Ok(n) => bail!(
            "expected no answer, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// Waits until Envoy has deleted `streams` stream contexts (the last stream's
/// `on_log`/`on_done`/`on_delete` run after the client got its response).
fn settled_log(envoy: &Envoy, streams: usize) -> Result<String> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let mut log = envoy.log();
        // Only whole lines: Envoy may be half-way through writing the last one.
        log.truncate(log.rfind('\n').map_or(0, |i| i + 1));
        let deleted = log
            .lines()
            .filter(|l| l.contains("[host<-vm] proxy_on_delete return"))
            .count();
        if deleted >= streams {
            return Ok(log);
        }
        if Instant::now() > deadline {
            bail!(
                "Envoy deleted {deleted} of {streams} stream contexts within {SETTLE_DEADLINE:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Envoy's worker VM (the one VM that served streams), normalised.
fn envoy_trace(log: &str) -> Result<Normalised> {
    let vms = trace::parse(log.lines()).context("reading Envoy's trace")?;
    ensure!(!vms.is_empty(), "Envoy's log has no wasm trace lines");
    let serving: Vec<_> = vms.iter().filter(|v| v.has_streams()).collect();
    ensure!(
        serving.len() == 1,
        "expected one Envoy VM serving streams (one worker), found {} of {} VMs",
        serving.len(),
        vms.len()
    );
    Ok(trace::normalise(serving[0]))
}

/// The harness's trace of a replay, normalised.
fn harness_trace(report: &Report) -> Result<Normalised> {
    let lines = report
        .startup_logs
        .iter()
        .chain(report.exchanges.iter().flat_map(|e| e.logs.iter()))
        .filter(|l| l.level == "trace")
        .map(|l| l.message.as_str());
    let vms = trace::parse(lines).context("reading the harness's trace")?;
    ensure!(
        vms.len() == 1,
        "the harness traced {} VMs, expected 1",
        vms.len()
    );
    Ok(trace::normalise(&vms[0]))
}

fn show(n: &Normalised) -> String {
    let mut out = String::from("root:\n");
    for s in &n.root {
        out.push_str(&format!("  {s}\n"));
    }
    for (i, stream) in n.streams.iter().enumerate() {
        out.push_str(&format!("stream {}:\n", i + 1));
        for s in stream {
            out.push_str(&format!("  {s}\n"));
        }
    }
    out
}

/// The known differences for what was sent: headers Envoy's connection
/// manager added to each request, and `x-envoy-upstream-service-time`,
/// which Envoy's router adds to an upstream's response before the filters.
fn known_for(sent: &[Sent], extra: &[Known]) -> Vec<Known> {
    let mut known = extra.to_vec();
    for (i, s) in sent.iter().enumerate() {
        let added = HCM_ADDED
            .iter()
            .filter(|h| header(&s.request.headers, h).is_none())
            .count() as u64;
        if added > 0 {
            known.push(Known::EnvoyAddedRequestHeaders {
                stream: i,
                extra: added,
            });
        }
        // Only a response that came from the upstream has it (the client
        // sees it too: none of our filters removes it).
        if header(&s.envoy.headers, "x-envoy-upstream-service-time").is_some() {
            known.push(Known::EnvoyAddedResponseHeaders {
                stream: i,
                extra: 1,
            });
        }
    }
    known
}

/// Sends `requests` through the traced Envoy, replays them in the harness
/// (`replay`, with `response` as every upstream answer), and compares the
/// two traces. Returns what Envoy answered, for the caller's own checks.
fn differential(
    label: &str,
    envoy: Envoy,
    replay: ReplayBuilder,
    requests: Vec<HttpRequest>,
    response: HttpResponse,
    extra_known: &[Known],
) -> Result<(Vec<Sent>, Report)> {
    let sends = requests.into_iter().map(Send::Answered).collect();
    let (sent, report, _log) =
        differential_sends(label, envoy, replay, sends, response, extra_known)?;
    Ok((sent, report))
}

/// [`differential`] with requests the client may give up on.
fn differential_sends(
    label: &str,
    envoy: Envoy,
    replay: ReplayBuilder,
    sends: Vec<Send>,
    response: HttpResponse,
    extra_known: &[Known],
) -> Result<(Vec<Sent>, Report, String)> {
    let mut sent = Vec::new();
    for send in sends {
        match send {
            Send::Answered(request) => {
                let got = envoy.explain(client::send(envoy.listener(), &request))?;
                sent.push(Sent {
                    request,
                    envoy: got,
                    abandoned: false,
                });
            }
            Send::Abandoned(request) => {
                envoy.explain(send_and_abandon(envoy.listener(), &request))?;
                sent.push(Sent {
                    request,
                    envoy: HttpResponse {
                        status: 0,
                        headers: Vec::new(),
                        body: Vec::new(),
                    },
                    abandoned: true,
                });
            }
        }
    }
    let log = envoy.explain(settled_log(&envoy, sent.len()))?;
    // Kept for whoever reads a failure: Envoy's whole log of the scenario.
    std::fs::write(paths::work_dir()?.join(format!("{label}-envoy.log")), &log)?;
    let envoy_side = envoy_trace(&log)?;
    drop(envoy);

    let exchanges = sent
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let response = as_sent(response.clone());
            Exchange {
                id: format!("{label} {i}"),
                // No recorded chunking and no version: the harness's default
                // delivery (Envoy's HTTP/1 codec: the data, then an empty
                // end-of-stream frame) must match what Envoy did.
                details: ExchangeDetails::default(),
                request: s.request.clone(),
                response: Some(response),
            }
        })
        .collect();
    let report = replay
        .log_level(LogLevel::Trace)
        .trace_calls()
        .traffic(Traffic {
            source: None,
            exchanges,
            warnings: Vec::new(),
        })
        .run()
        .with_context(|| format!("{label}: the harness could not replay"))?;
    let harness_side = harness_trace(&report)?;

    // The outcome first: the same status on both sides.
    for (s, e) in sent.iter().zip(&report.exchanges) {
        if s.abandoned {
            ensure!(
                e.changes.iter().any(|c| c.contains("never resumed")),
                "{label} {} {}: the client got no answer from Envoy; the harness reports {:?}",
                s.request.method,
                s.request.path,
                e.changes
            );
            continue;
        }
        let harness_status = match &e.verdict {
            Verdict::AnsweredLocally { status } => *status,
            Verdict::Failed { message } => bail!("{label}: harness failed: {message}"),
            _ => e.client_response.status,
        };
        ensure!(
            harness_status == s.envoy.status,
            "{label} {} {}: Envoy answered {}, the harness {harness_status}",
            s.request.method,
            s.request.path,
            s.envoy.status
        );
    }
    ensure!(
        envoy_side.streams.len() == sent.len(),
        "{label}: Envoy's trace has {} streams for {} requests:\n{}",
        envoy_side.streams.len(),
        sent.len(),
        show(&envoy_side)
    );
    for (i, stream) in envoy_side.streams.iter().enumerate() {
        ensure!(
            stream
                .iter()
                .any(|s| s.function == "proxy_on_request_headers"),
            "{label}: Envoy's stream {} has no proxy_on_request_headers",
            i + 1
        );
    }

    let known = known_for(&sent, extra_known);
    let comparison = trace::compare(&envoy_side, &harness_side, &known);
    for d in comparison.explained() {
        eprintln!("{label}: {d}");
    }
    let unexplained = comparison.unexplained();
    if !unexplained.is_empty() {
        let list: Vec<String> = unexplained.iter().map(|d| d.to_string()).collect();
        bail!(
            "{label}: {} unexplained difference(s) between Envoy's and the harness's call traces:\n{}\n\nEnvoy (normalised):\n{}\nharness (normalised):\n{}",
            list.len(),
            list.join("\n"),
            show(&envoy_side),
            show(&harness_side)
        );
    }
    Ok((sent, report, log))
}

/// The values of `names` the upstream received from Envoy, request by
/// request, are exactly those the harness sent upstream (entries and order:
/// a folded value is one entry).
fn same_upstream_values(
    label: &str,
    upstream: &Upstream,
    report: &Report,
    names: &[&str],
) -> Result<()> {
    let received = upstream.take_requests();
    let harness: Vec<&HttpRequest> = report
        .exchanges
        .iter()
        .filter_map(|e| e.upstream_request.as_ref())
        .collect();
    ensure!(
        received.len() == harness.len(),
        "{label}: {} requests reached Envoy's upstream, {} the harness's",
        received.len(),
        harness.len()
    );
    for (i, (envoy, harness)) in received.iter().zip(harness).enumerate() {
        for name in names {
            let e = header_values(&envoy.headers, name);
            let h = header_values(&harness.headers, name);
            ensure!(
                e == h,
                "{label}, request {}: `{name}` reached Envoy's upstream as {e:?}, the harness's as {h:?}",
                i + 1
            );
        }
    }
    Ok(())
}

fn statuses(sent: &[Sent]) -> Vec<u16> {
    sent.iter().map(|s| s.envoy.status).collect()
}

fn demo_replay(filter: &str) -> Result<ReplayBuilder> {
    Ok(Replay::filter(paths::filter_wasm(filter)?).config(paths::demo_config(filter)?))
}

/// [`demo_replay`] with the name of the route Envoy matches (`envoy.yaml`
/// names its routes; the harness has none): the `xds.route_name` property.
fn demo_replay_on_route(filter: &str, route: &str) -> Result<ReplayBuilder> {
    Ok(Replay::filter(paths::filter_wasm(filter)?)
        .settings(VmSettings {
            properties: vec![("xds.route_name".into(), route.as_bytes().to_vec())],
            ..VmSettings::default()
        })
        .config(paths::demo_config(filter)?))
}

fn ok_response() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("cache-control".into(), "no-cache".into()),
            ("server".into(), "origin".into()),
        ],
        body: b"upstream says hi".to_vec(),
    }
}

#[test]
fn headers_filter_traces_match_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = start_traced(
        &EnvoyConfig::for_filter("headers", upstream.addr())?,
        "trace-headers",
    )?;
    let requests = vec![
        client::request(
            "GET",
            "shop.example.com",
            "/products?page=2",
            &[
                ("x-request-id", "req-1"),
                ("x-forwarded-proto", "http"),
                ("x-debug-trace", "1"),
                ("via", "1.0 corp"),
            ],
            b"",
        ),
        // Two `authorization` lines: Envoy's codec folds them into one value.
        client::request(
            "POST",
            "shop.example.com",
            "/cart",
            &[
                ("authorization", "Bearer a"),
                ("authorization", "Bearer b"),
                ("content-type", "application/json"),
                // The filter copies x-request-id to the response: give one, so that
                // Envoy does not generate one the harness would not have.
                ("x-request-id", "req-2"),
            ],
            br#"{"sku":"tg-1"}"#,
        ),
    ];
    let (sent, report) = differential(
        "headers",
        envoy,
        demo_replay("headers")?,
        requests,
        ok_response(),
        &[],
    )?;
    ensure!(statuses(&sent) == [200, 200], "{:?}", statuses(&sent));
    // Folded as Envoy folds inline headers: the client's two `authorization`
    // lines, and the filter's `via` added to the client's.
    same_upstream_values("headers", &upstream, &report, &["authorization", "via"])?;
    Ok(())
}

fn basic(user_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

#[test]
fn basic_auth_traces_match_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = start_traced(
        &EnvoyConfig::for_filter("basic-auth", upstream.addr())?,
        "trace-basic-auth",
    )?;
    let req = |path: &str, headers: &[(&str, &str)]| {
        client::request("GET", "api.example.com", path, headers, b"")
    };
    let good = basic("demo-client:demo-secret-do-not-use");
    let requests = vec![
        req("/v1/reports/q3", &[("authorization", &good)]),
        req(
            "/v1/reports/q3",
            &[("authorization", &basic("demo-client:wrong"))],
        ),
        req("/v1/reports/q3", &[]),
        req("/public", &[]),
    ];
    let (sent, _) = differential(
        "basic-auth",
        envoy,
        demo_replay_on_route("basic-auth", "default")?,
        requests,
        ok_response(),
        &[],
    )?;
    ensure!(
        statuses(&sent) == [200, 401, 401, 200],
        "{:?}",
        statuses(&sent)
    );
    Ok(())
}

#[test]
fn key_auth_traces_match_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = start_traced(
        &EnvoyConfig::for_filter("key-auth", upstream.addr())?,
        "trace-key-auth",
    )?;
    let req = |path: &str, headers: &[(&str, &str)]| {
        client::request("POST", "api.example.com", path, headers, b"{}")
    };
    let requests = vec![
        req(
            "/v1/webhooks/stripe",
            &[("x-api-key", "tg_demo_partner_7c1e9a4f")],
        ),
        req("/v1/webhooks/stripe", &[("x-api-key", "not-a-key")]),
        req("/v1/webhooks/stripe?api_key=tg_demo_ops_2b8d5e60", &[]),
        req("/v1/webhooks/stripe", &[]),
        req("/v1/other", &[]),
    ];
    let (sent, _) = differential(
        "key-auth",
        envoy,
        demo_replay_on_route("key-auth", "default")?,
        requests,
        ok_response(),
        &[],
    )?;
    ensure!(
        statuses(&sent) == [200, 403, 403, 401, 200],
        "{:?}",
        statuses(&sent)
    );
    Ok(())
}

#[test]
fn jwt_auth_traces_match_envoy() -> Result<()> {
    let issuer = jwt::Issuer::es256("trace-key")?;
    let jwks = jwt::jwks(&[&issuer]);
    let jwks_response = HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: jwks.to_string().into_bytes(),
    };
    let upstream = Upstream::start(ok_response())?;
    let jwks_server = Upstream::start(jwks_response.clone())?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("jwt-auth"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("jwks", jwks_server.addr())?;
    config.use_filters_from(&paths::filters_dir()?)?;
    let envoy = start_traced(&config, "trace-jwt-auth")?;
    let now = jwt::now();
    let token = issuer.token(&json!({
        "iss": "https://idp.example.com",
        "aud": "shop-api",
        "sub": "alice",
        "scope": "read",
        "iat": now,
        "exp": now + 3600,
    }));
    let bearer = format!("Bearer {token}");
    let req = |headers: &[(&str, &str)]| {
        client::request("GET", "shop.example.com", "/orders", headers, b"")
    };
    let requests = vec![
        req(&[("authorization", &bearer)]),
        req(&[("authorization", "Bearer not.a.token")]),
        req(&[]),
    ];
    // The JWKS as Envoy's cluster delivers it: the server's headers and the
    // ones Envoy adds on the way (`content-length` from the codec,
    // `x-envoy-upstream-service-time` from the router).
    let sent_jwks = as_sent(jwks_response);
    let mut stub_headers = vec![(":status".to_string(), "200".to_string())];
    stub_headers.extend(sent_jwks.headers.iter().cloned());
    stub_headers.push(("x-envoy-upstream-service-time".into(), "1".into()));
    let replay = demo_replay("jwt-auth")?.http_call_stub(HttpCallStub {
        headers: stub_headers,
        body: sent_jwks.body,
    });
    let (sent, _) = differential("jwt-auth", envoy, replay, requests, ok_response(), &[])?;
    ensure!(statuses(&sent) == [200, 401, 401], "{:?}", statuses(&sent));
    Ok(())
}

/// One ext-authz scenario: the service answers `answer` to every check.
fn ext_authz_case(
    label: &str,
    answer: HttpResponse,
    requests: Vec<HttpRequest>,
) -> Result<Vec<u16>> {
    let upstream = Upstream::start(ok_response())?;
    let authz = Upstream::start(answer.clone())?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("ext-authz"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .route_cluster_to("authz", authz.addr())?;
    config.use_filters_from(&paths::filters_dir()?)?;
    let envoy = start_traced(&config, label)?;
    // The answer as Envoy's cluster delivers it (`content-length` from the
    // codec, `x-envoy-upstream-service-time` from the router), with no delay
    // of its own: the harness's default timing (`AnswerTiming::AfterInput`)
    // must deliver it after the client's body, which then reaches the filter
    // held and merged, as in Envoy.
    let sent_answer = as_sent(answer);
    let mut headers = sent_answer.headers.clone();
    headers.push(("x-envoy-upstream-service-time".into(), "1".into()));
    let replay = demo_replay("ext-authz")?.http_cluster(HttpClusterStub {
        cluster: "authz".into(),
        answer: HttpAnswer::Response {
            status: sent_answer.status,
            headers,
            body: sent_answer.body,
            trailers: Vec::new(),
        },
        delay: Duration::ZERO,
    });
    let (sent, _) = differential(label, envoy, replay, requests, ok_response(), &[])?;
    Ok(statuses(&sent))
}

#[test]
fn ext_authz_traces_match_envoy() -> Result<()> {
    let guarded = |method: &str, body: &[u8]| {
        client::request(
            method,
            "shop.example.com",
            "/orders?id=7",
            &[("x-api-key", "k1"), ("x-secret", "stays")],
            body,
        )
    };
    let allow = HttpResponse {
        status: 200,
        headers: vec![("x-auth-user".into(), "alice".into())],
        body: Vec::new(),
    };
    let got = ext_authz_case(
        "trace-ext-authz-allow",
        allow,
        vec![guarded("POST", b"{\"qty\":1}"), guarded("GET", b"")],
    )?;
    ensure!(got == [200, 200], "allow: {got:?}");
    let deny = HttpResponse {
        status: 403,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"no".to_vec(),
    };
    let got = ext_authz_case(
        "trace-ext-authz-deny",
        deny,
        vec![guarded("GET", b""), guarded("POST", b"{}")],
    )?;
    ensure!(got == [403, 403], "deny: {got:?}");
    Ok(())
}

/// A guest of our own calling a varied set of host functions, with the
/// statuses it gets back logged by the trace itself.
const GUEST: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $rep_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $rm_hdr (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $hdr_size (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $hdr_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_sd (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_sd (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $def_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc_metric (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $rec_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; strings
  (data (i32.const 1024) "x-trace")          ;; 7
  (data (i32.const 1040) "x-absent")         ;; 8
  (data (i32.const 1056) "x-added")          ;; 7
  (data (i32.const 1072) "via")              ;; 3
  (data (i32.const 1088) "x-replaced")       ;; 10
  (data (i32.const 1104) ":status")          ;; 7
  (data (i32.const 1120) "request\00path")   ;; 12
  (data (i32.const 1136) "no_such_property") ;; 16
  (data (i32.const 1168) "tg-trace-key")     ;; 12
  (data (i32.const 1184) "tg-missing-key")   ;; 14
  (data (i32.const 1200) "tg_trace_count")   ;; 14
  (data (i32.const 1216) "tg_trace_gauge")   ;; 14
  (data (i32.const 1232) "tg_trace_hist")    ;; 13
  (data (i32.const 1248) "x-deny")           ;; 6
  (data (i32.const 1264) "denied by guest")  ;; 15
  (data (i32.const 1280) "trace guest")      ;; 11
  (data (i32.const 1296) "guest")            ;; 5
  (data (i32.const 1312) "response\00code")  ;; 13
  (data (i32.const 1328) "xds\00route_name") ;; 14
  (data (i32.const 1344) "x-set-pairs")      ;; 11
  ;; the pairs :authority, :path /set, :method GET, :scheme http, x-forwarded-proto
  ;; http (without it Envoy's router finds no route: 404), authorization a, x-set 1,
  ;; authorization b, x-set 2 (212 bytes)
  (data (i32.const 2048) "\09\00\00\00\0a\00\00\00\11\00\00\00\05\00\00\00\04\00\00\00\07\00\00\00\03\00\00\00\07\00\00\00\04\00\00\00\11\00\00\00\04\00\00\00\0d\00\00\00\01\00\00\00\05\00\00\00\01\00\00\00\0d\00\00\00\01\00\00\00\05\00\00\00\01\00\00\00\3a\61\75\74\68\6f\72\69\74\79\00\67\75\65\73\74\2e\65\78\61\6d\70\6c\65\2e\63\6f\6d\00\3a\70\61\74\68\00\2f\73\65\74\00\3a\6d\65\74\68\6f\64\00\47\45\54\00\3a\73\63\68\65\6d\65\00\68\74\74\70\00\78\2d\66\6f\72\77\61\72\64\65\64\2d\70\72\6f\74\6f\00\68\74\74\70\00\61\75\74\68\6f\72\69\7a\61\74\69\6f\6e\00\61\00\78\2d\73\65\74\00\31\00\61\75\74\68\6f\72\69\7a\61\74\69\6f\6e\00\62\00\78\2d\73\65\74\00\32\00")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $get_buf (i32.const 7) (i32.const 0) (local.get $size) (i32.const 256) (i32.const 260)))
    (drop (call $def_metric (i32.const 0) (i32.const 1200) (i32.const 14) (i32.const 272)))
    (drop (call $def_metric (i32.const 1) (i32.const 1216) (i32.const 14) (i32.const 276)))
    (drop (call $def_metric (i32.const 2) (i32.const 1232) (i32.const 13) (i32.const 280)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $get_hdr (i32.const 0) (i32.const 1024) (i32.const 7) (i32.const 256) (i32.const 260)))
    (drop (call $get_hdr (i32.const 0) (i32.const 1040) (i32.const 8) (i32.const 256) (i32.const 260)))
    (drop (call $get_hdr (i32.const 9) (i32.const 1024) (i32.const 7) (i32.const 256) (i32.const 260)))
    (drop (call $get_hdr (i32.const 2) (i32.const 1104) (i32.const 7) (i32.const 256) (i32.const 260)))
    (drop (call $add_hdr (i32.const 0) (i32.const 1056) (i32.const 7) (i32.const 1296) (i32.const 5)))
    (drop (call $add_hdr (i32.const 0) (i32.const 1072) (i32.const 3) (i32.const 1296) (i32.const 5)))
    (drop (call $rep_hdr (i32.const 0) (i32.const 1088) (i32.const 10) (i32.const 1296) (i32.const 5)))
    (drop (call $rm_hdr (i32.const 0) (i32.const 1024) (i32.const 7)))
    (drop (call $hdr_size (i32.const 0) (i32.const 264)))
    (drop (call $hdr_pairs (i32.const 0) (i32.const 256) (i32.const 260)))
    (drop (call $get_prop (i32.const 1120) (i32.const 12) (i32.const 256) (i32.const 260)))
    (drop (call $get_prop (i32.const 1136) (i32.const 16) (i32.const 256) (i32.const 260)))
    (drop (call $get_prop (i32.const 1328) (i32.const 14) (i32.const 256) (i32.const 260)))
    (drop (call $set_sd (i32.const 1168) (i32.const 12) (i32.const 1296) (i32.const 5) (i32.const 0)))
    (drop (call $get_sd (i32.const 1168) (i32.const 12) (i32.const 256) (i32.const 260) (i32.const 268)))
    (drop (call $get_sd (i32.const 1184) (i32.const 14) (i32.const 256) (i32.const 260) (i32.const 268)))
    (drop (call $inc_metric (i32.load (i32.const 272)) (i64.const 1)))
    (drop (call $rec_metric (i32.load (i32.const 276)) (i64.const 5)))
    (drop (call $rec_metric (i32.load (i32.const 280)) (i64.const 7)))
    (drop (call $get_metric (i32.load (i32.const 272)) (i32.const 288)))
    (drop (call $log (i32.const 2) (i32.const 1280) (i32.const 11)))
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1344) (i32.const 11) (i32.const 256) (i32.const 260)))
      (then (drop (call $set_pairs (i32.const 0) (i32.const 2048) (i32.const 212)))))
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1248) (i32.const 6) (i32.const 256) (i32.const 260)))
      (then
        (drop (call $local (i32.const 403) (i32.const 1296) (i32.const 5)
                           (i32.const 1264) (i32.const 15) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $get_buf (i32.const 0) (i32.const 0) (local.get $size) (i32.const 256) (i32.const 260)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $get_hdr (i32.const 2) (i32.const 1104) (i32.const 7) (i32.const 256) (i32.const 260)))
    (drop (call $add_hdr (i32.const 2) (i32.const 1056) (i32.const 7) (i32.const 1296) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $get_buf (i32.const 1) (i32.const 0) (local.get $size) (i32.const 256) (i32.const 260)))
    (i32.const 0))
  (func (export "proxy_on_log") (param $ctx i32)
    (drop (call $get_prop (i32.const 1312) (i32.const 13) (i32.const 256) (i32.const 260))))
)"#;

#[test]
fn a_guest_calling_many_host_functions_traces_like_envoy() -> Result<()> {
    let wasm = guest::assemble(GUEST, "test guest")?;
    // `envoy/headers/envoy.yaml` loads `headers.wasm`: the guest is written
    // under that name in a folder of its own.
    let dir: PathBuf = paths::work_dir()?.join(format!("trace-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &wasm)?;
    let upstream = Upstream::start(ok_response())?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?;
    config.use_filters_from(&dir)?;
    config.set_plugin_configuration("{\"guest\":true}")?;
    let envoy = start_traced(&config, "trace-guest")?;
    let requests = vec![
        client::request(
            "GET",
            "guest.example.com",
            "/a",
            &[("x-trace", "1"), ("via", "1.0 corp")],
            b"",
        ),
        client::request(
            "POST",
            "guest.example.com",
            "/b",
            &[("content-type", "text/plain")],
            b"hello body",
        ),
        client::request("GET", "guest.example.com", "/c", &[("x-deny", "1")], b""),
        // The guest replaces the whole map, with two `authorization` and two `x-set`.
        client::request(
            "GET",
            "guest.example.com",
            "/d",
            &[("x-set-pairs", "1")],
            b"",
        ),
    ];
    let replay = Replay::module("trace-guest.wasm", wasm).config("{\"guest\":true}");
    let (sent, report) = differential("guest", envoy, replay, requests, ok_response(), &[])?;
    ensure!(
        statuses(&sent) == [200, 200, 403, 200],
        "{:?}",
        statuses(&sent)
    );
    // Folded alike: `via` extended by the guest's add, and the two
    // `authorization` of the guest's whole new map (`x-set` is not inline).
    same_upstream_values(
        "guest",
        &upstream,
        &report,
        &["via", "x-added", "x-replaced", "authorization", "x-set"],
    )?;
    Ok(())
}

/// A guest probing, in every callback of a stream, every stream header map
/// (pairs, a value, an add, the size), both bodies (read, an empty prepend)
/// and the properties Envoy only knows at some point (`request.duration`,
/// `response.*`, `request.size`...), logging the statuses it got as one
/// `probe <phase> ...` line (the trace compares them call by call, the log
/// line lets the test name Envoy's answers). A request with `x-pause` is held
/// in its headers callback forever (the client gives up: `on_log` without a
/// response).
const PHASE_GUEST: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $hdr_size (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $hdr_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-probe")                   ;; 7
  (data (i32.const 1040) "1")                         ;; 1
  (data (i32.const 1100) "request\00duration")        ;; 16
  (data (i32.const 1120) "response\00code")           ;; 13
  (data (i32.const 1140) "response\00code_details")   ;; 21
  (data (i32.const 1170) "response\00flags")          ;; 14
  (data (i32.const 1190) "response\00size")           ;; 13
  (data (i32.const 1210) "response\00total_size")     ;; 19
  (data (i32.const 1240) "request\00total_size")      ;; 18
  (data (i32.const 1280) "request\00size")            ;; 12
  (data (i32.const 1400) "probe request_headers")     ;; 21
  (data (i32.const 1430) "probe request_body")        ;; 18
  (data (i32.const 1450) "probe response_headers")    ;; 22
  (data (i32.const 1480) "probe response_body")       ;; 19
  (data (i32.const 1500) "probe log")                 ;; 9
  (data (i32.const 1530) "probe request_trailers")    ;; 22
  (data (i32.const 1560) "probe response_trailers")   ;; 23
  (data (i32.const 1600) "x-pause")                   ;; 7
  (data (i32.const 1620) "probe details ")            ;; 14
  (global $heap (mut i32) (i32.const 65536))
  (global $cur (mut i32) (i32.const 16384))
  (func $put (param $p i32) (param $n i32)
    (memory.copy (global.get $cur) (local.get $p) (local.get $n))
    (global.set $cur (i32.add (global.get $cur) (local.get $n))))
  (func $putc (param $c i32)
    (i32.store8 (global.get $cur) (local.get $c))
    (global.set $cur (i32.add (global.get $cur) (i32.const 1))))
  (func $num (param $v i32)
    (if (i32.ge_u (local.get $v) (i32.const 10))
      (then (call $num (i32.div_u (local.get $v) (i32.const 10)))))
    (call $putc (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
  (func $prop (param $p i32) (param $n i32)
    (call $num (call $get_prop (local.get $p) (local.get $n) (i32.const 256) (i32.const 260)))
    (call $putc (i32.const 44)))
  ;; `<tag> m0:pairs,value,add,size ... m3:... b0:get,set b1:get,set p:props,`
  (func $probe (param $tag i32) (param $len i32)
    (local $k i32)
    (global.set $cur (i32.const 16384))
    (call $put (local.get $tag) (local.get $len))
    (local.set $k (i32.const 0))
    (block $maps_done
      (loop $maps
        (br_if $maps_done (i32.ge_u (local.get $k) (i32.const 4)))
        (call $putc (i32.const 32)) (call $putc (i32.const 109)) (call $num (local.get $k))
        (call $putc (i32.const 58))
        (call $num (call $hdr_pairs (local.get $k) (i32.const 256) (i32.const 260)))
        (call $putc (i32.const 44))
        (call $num (call $get_hdr (local.get $k) (i32.const 1024) (i32.const 7) (i32.const 256) (i32.const 260)))
        (call $putc (i32.const 44))
        (call $num (call $add_hdr (local.get $k) (i32.const 1024) (i32.const 7) (i32.const 1040) (i32.const 1)))
        (call $putc (i32.const 44))
        (call $num (call $hdr_size (local.get $k) (i32.const 264)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $maps)))
    (local.set $k (i32.const 0))
    (block $bufs_done
      (loop $bufs
        (br_if $bufs_done (i32.ge_u (local.get $k) (i32.const 2)))
        (call $putc (i32.const 32)) (call $putc (i32.const 98)) (call $num (local.get $k))
        (call $putc (i32.const 58))
        (call $num (call $get_buf (local.get $k) (i32.const 0) (i32.const 16) (i32.const 256) (i32.const 260)))
        (call $putc (i32.const 44))
        (call $num (call $set_buf (local.get $k) (i32.const 0) (i32.const 0) (i32.const 1040) (i32.const 0)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $bufs)))
    (call $putc (i32.const 32)) (call $putc (i32.const 112)) (call $putc (i32.const 58))
    (call $prop (i32.const 1100) (i32.const 16))
    (call $prop (i32.const 1120) (i32.const 13))
    (call $prop (i32.const 1140) (i32.const 21))
    (call $prop (i32.const 1170) (i32.const 14))
    (call $prop (i32.const 1190) (i32.const 13))
    (call $prop (i32.const 1210) (i32.const 19))
    (call $prop (i32.const 1240) (i32.const 18))
    (call $prop (i32.const 1280) (i32.const 12))
    (drop (call $log (i32.const 2) (i32.const 16384) (i32.sub (global.get $cur) (i32.const 16384)))))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $probe (i32.const 1400) (i32.const 21))
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1600) (i32.const 7) (i32.const 256) (i32.const 260)))
      (then (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $probe (i32.const 1430) (i32.const 18))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $probe (i32.const 1530) (i32.const 22))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $probe (i32.const 1450) (i32.const 22))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $probe (i32.const 1480) (i32.const 19))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $probe (i32.const 1560) (i32.const 23))
    (i32.const 0))
  (func (export "proxy_on_log") (param $ctx i32)
    (call $probe (i32.const 1500) (i32.const 9))
    ;; `probe details <response.code_details>`
    (global.set $cur (i32.const 16384))
    (call $put (i32.const 1620) (i32.const 14))
    (if (i32.eqz (call $get_prop (i32.const 1140) (i32.const 21) (i32.const 256) (i32.const 260)))
      (then (call $put (i32.load (i32.const 256)) (i32.load (i32.const 260)))))
    (drop (call $log (i32.const 2) (i32.const 16384) (i32.sub (global.get $cur) (i32.const 16384)))))
)"#;

/// The `probe ...` lines a guest logged, in order (Envoy's log prefixes them
/// with `wasm log ...: `).
fn probe_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .filter_map(|l| l.find("probe ").map(|at| l[at..].trim_end().to_string()))
        .collect()
}

#[test]
fn a_guest_probing_every_map_in_every_phase_traces_like_envoy() -> Result<()> {
    let wasm = guest::assemble(PHASE_GUEST, "phase guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("phase-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &wasm)?;
    let upstream = Upstream::start(ok_response())?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?;
    config.use_filters_from(&dir)?;
    config.set_plugin_configuration("{}")?;
    let envoy = start_traced(&config, "trace-phases")?;
    let sends = vec![
        Send::Answered(client::request(
            "GET",
            "phase.example.com",
            "/get",
            &[],
            b"",
        )),
        Send::Answered(client::request(
            "POST",
            "phase.example.com",
            "/post",
            &[("content-type", "text/plain")],
            b"hello body",
        )),
        // Held in its headers callback; the client gives up: `on_log` runs
        // without a response.
        Send::Abandoned(client::request(
            "GET",
            "phase.example.com",
            "/held",
            &[("x-pause", "1")],
            b"",
        )),
    ];
    let log_dir = dir.clone();
    let replay = Replay::module("phase-guest.wasm", wasm).config("{}");
    let (_sent, report, log) =
        differential_sends("phases", envoy, replay, sends, ok_response(), &[]).map_err(|e| {
            let _ = std::fs::write(log_dir.join("error.txt"), format!("{e:#}"));
            e
        })?;
    let envoy_lines = probe_lines(log.lines().filter(|l| l.contains("wasm log")));
    let harness_lines = probe_lines(
        report
            .exchanges
            .iter()
            .flat_map(|e| e.logs.iter())
            .map(|l| l.message.as_str()),
    );
    ensure!(
        envoy_lines == harness_lines,
        "the guest saw different statuses:\nEnvoy:\n{}\nharness:\n{}",
        envoy_lines.join("\n"),
        harness_lines.join("\n")
    );
    // Envoy 1.40's answers, as the issue states them (statuses: 0 Ok,
    // 1 NotFound, 2 BadArgument; maps m0 request headers, m1 request
    // trailers, m2 response headers, m3 response trailers: pairs, value,
    // add, size; bodies b0/b1: read, write; properties p: request.duration,
    // response.code, response.code_details, ...).
    let line = |prefix: &str, nth: usize| -> Result<&String> {
        envoy_lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .nth(nth)
            .with_context(|| format!("Envoy's guest logged no {nth}th `{prefix}`"))
    };
    let has = |l: &String, part: &str| -> Result<()> {
        ensure!(l.contains(part), "expected `{part}` in Envoy's `{l}`");
        Ok(())
    };
    // Request headers: no longer readable nor writable once the headers
    // callback continued; read-only in the access log.
    has(line("probe response_headers", 0)?, "m0:0,2,2,2")?;
    has(line("probe request_body", 0)?, "m0:0,2,2,2")?;
    has(line("probe log", 0)?, "m0:0,0,2,2")?;
    // Response headers in the access log: read-only; without any response
    // (the held request): NotFound, empty pairs.
    has(line("probe log", 0)?, "m2:0,0,2,2")?;
    has(line("probe log", 2)?, "m2:0,1,2,2")?;
    // A held request's headers stay writable, even in the access log.
    has(line("probe log", 2)?, "m0:0,0,0,0")?;
    // Trailers are created by a write in the last body callback only.
    has(line("probe request_body", 0)?, "m1:0,2,2,2")?;
    has(line("probe request_body", 1)?, "m1:0,2,0,0")?;
    // Bodies: read everywhere, written in their own callback only.
    has(line("probe request_headers", 0)?, "b0:0,2 b1:0,2")?;
    has(line("probe request_body", 0)?, "b0:0,0 b1:0,2")?;
    // request.duration only in the access log; response.* once a response came.
    has(line("probe request_headers", 0)?, "p:1,1,1,0,")?;
    has(line("probe response_headers", 0)?, "p:1,0,0,0,")?;
    has(line("probe log", 0)?, "p:0,0,0,0,")?;
    has(line("probe log", 2)?, "p:0,1,0,0,")?;
    has(line("probe details", 2)?, "downstream_remote_disconnect")?;
    Ok(())
}

/// Appends `!` in every body callback, both directions, after removing
/// `content-length` from both header maps (so the codec frames the edited
/// bodies chunked, as a real body-editing filter must).
const APPEND_GUEST: &str = r#"(module
  (import "env" "proxy_remove_header_map_value" (func $rm_hdr (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buf (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "content-length")   ;; 14
  (data (i32.const 1040) "!")
  (global $heap (mut i32) (i32.const 32768))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $rm_hdr (i32.const 0) (i32.const 1024) (i32.const 14)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $set_buf (i32.const 0) (local.get $size) (i32.const 0) (i32.const 1040) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $rm_hdr (i32.const 2) (i32.const 1024) (i32.const 14)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $set_buf (i32.const 1) (local.get $size) (i32.const 0) (i32.const 1040) (i32.const 1)))
    (i32.const 0))
)"#;

#[test]
fn a_filter_editing_every_body_call_edits_twice_as_in_envoy() -> Result<()> {
    let wasm = guest::assemble(APPEND_GUEST, "append guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("append-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), &wasm)?;
    let upstream = Upstream::start(ok_response())?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?;
    config.use_filters_from(&dir)?;
    config.set_plugin_configuration("{}")?;
    let envoy = start_traced(&config, "trace-append")?;
    let request = client::request(
        "POST",
        "append.example.com",
        "/a",
        &[("content-type", "text/plain")],
        b"hello",
    );
    let replay = Replay::module("append-guest.wasm", wasm).config("{}");
    let (sent, report) = differential("append", envoy, replay, vec![request], ok_response(), &[])?;
    // Envoy's HTTP/1 delivery: two request body calls (data, then the empty
    // end), so two `!`; the same for the response. The harness by default too.
    let received = upstream.take_requests();
    let up = received
        .first()
        .context("the upstream got nothing from Envoy")?;
    ensure!(
        up.body == b"hello!!",
        "the upstream got {:?} from Envoy",
        String::from_utf8_lossy(&up.body)
    );
    let harness_up = report.exchanges[0]
        .upstream_request
        .as_ref()
        .context("the harness sent nothing upstream")?;
    ensure!(
        harness_up.body == up.body,
        "harness upstream body {:?}",
        String::from_utf8_lossy(&harness_up.body)
    );
    let expected = [ok_response().body, b"!!".to_vec()].concat();
    ensure!(
        sent[0].envoy.body == expected,
        "Envoy's client got {:?}",
        String::from_utf8_lossy(&sent[0].envoy.body)
    );
    ensure!(
        report.exchanges[0].client_response.body == sent[0].envoy.body,
        "the harness's client got {:?}",
        String::from_utf8_lossy(&report.exchanges[0].client_response.body)
    );
    Ok(())
}
