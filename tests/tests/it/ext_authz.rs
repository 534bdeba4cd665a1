//! The `ext-authz` filter with its demo configuration (`filters/ext-authz/demo.json`), in the
//! harness (the authorization service stubbed) and in a real Envoy with a real authorization
//! service on 127.0.0.1: allow, deny, slow (timeout) and down.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tollgate_host::state::HttpCallStub;
use tollgate_replay::{Replay, Verdict};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::{self, header, header_values};
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

/// The filter under test.
const FILTER: &str = "ext-authz";

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: pairs(headers),
        body: body.as_bytes().to_vec(),
    }
}

/// A request carrying what the demo configuration forwards to the service and what it must not.
fn guarded_request() -> HttpRequest {
    client::request(
        "POST",
        "shop.example.com",
        "/orders?id=7",
        &[
            ("authorization", "Bearer t0k3n"),
            ("x-api-key", "k1"),
            ("X-Api-Key", "k2"),
            ("x-secret", "stays here"),
        ],
        b"{\"qty\":1}",
    )
}

fn stub(status: u16, headers: &[(&str, &str)], body: &str) -> HttpCallStub {
    let mut all = vec![(":status".to_string(), status.to_string())];
    all.extend(pairs(headers));
    HttpCallStub {
        headers: all,
        body: body.as_bytes().to_vec(),
    }
}

/// Replays one request through the built module with the service answering `answer`
/// (`None`: no stub, so the call fails like an unknown cluster).
fn replay(answer: Option<HttpCallStub>) -> Result<tollgate_replay::ExchangeReport> {
    let traffic = Traffic {
        source: None,
        exchanges: vec![Exchange {
            id: "guarded".into(),
            request: guarded_request(),
            response: Some(response(200, &[("content-type", "text/plain")], "order")),
            details: Default::default(),
        }],
        warnings: Vec::new(),
    };
    let mut replay = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .traffic(traffic);
    if let Some(answer) = answer {
        replay = replay.http_call_stub(answer);
    }
    let mut report = replay.run()?;
    report
        .exchanges
        .pop()
        .context("the replay reported no exchange")
}

#[test]
fn harness_allow_copies_the_allowed_headers_upstream() -> Result<()> {
    let report = replay(Some(stub(
        200,
        &[("x-auth-user", "ada"), ("x-not-allowed", "1")],
        "",
    )))?;
    ensure!(report.verdict == Verdict::Modified, "{report:?}");
    let up = report
        .upstream_request
        .context("nothing reached the upstream")?;
    ensure!(header(&up.headers, "x-auth-user") == Some("ada"), "{up:?}");
    ensure!(header(&up.headers, "x-not-allowed").is_none(), "{up:?}");
    ensure!(header(&up.headers, "x-secret") == Some("stays here"));
    ensure!(report.client_response.status == 200);
    Ok(())
}

#[test]
fn harness_deny_answers_with_the_services_response() -> Result<()> {
    let report = replay(Some(stub(
        401,
        &[("www-authenticate", "Bearer realm=\"shop\"")],
        "who are you?",
    )))?;
    ensure!(
        report.verdict == Verdict::AnsweredLocally { status: 401 },
        "{report:?}"
    );
    ensure!(report.upstream_request.is_none());
    let client = &report.client_response;
    ensure!(
        header(&client.headers, "www-authenticate") == Some("Bearer realm=\"shop\""),
        "{client:?}"
    );
    ensure!(client.body == b"who are you?");
    Ok(())
}

#[test]
fn harness_service_errors_and_unknown_cluster_are_403() -> Result<()> {
    for (label, answer) in [
        ("503 from the service", Some(stub(503, &[], "down"))),
        ("no cluster", None),
    ] {
        let report = replay(answer)?;
        ensure!(
            report.verdict == Verdict::AnsweredLocally { status: 403 },
            "{label}: {report:?}"
        );
        ensure!(report.upstream_request.is_none(), "{label}");
        ensure!(report.client_response.body.is_empty(), "{label}");
    }
    Ok(())
}

/// [`guarded_request`] also claiming an identity the service may set upstream.
fn spoofing_request() -> HttpRequest {
    let mut request = guarded_request();
    request.headers.push(("x-auth-user".into(), "admin".into()));
    request
}

/// Replays [`spoofing_request`] with the service answering `answer`.
fn replay_spoofing(answer: HttpCallStub) -> Result<tollgate_replay::ExchangeReport> {
    let traffic = Traffic {
        source: None,
        exchanges: vec![Exchange {
            id: "spoofing".into(),
            request: spoofing_request(),
            response: Some(response(200, &[("content-type", "text/plain")], "order")),
            details: Default::default(),
        }],
        warnings: Vec::new(),
    };
    let mut report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(paths::demo_config(FILTER)?)
        .traffic(traffic)
        .http_call_stub(answer)
        .run()?;
    report
        .exchanges
        .pop()
        .context("the replay reported no exchange")
}

#[test]
fn harness_client_copies_of_upstream_headers_never_reach_the_upstream() -> Result<()> {
    // Allowed without naming a user: the client's `x-auth-user: admin` is gone.
    let report = replay_spoofing(stub(200, &[("x-auth-scopes", "orders:read")], ""))?;
    let up = report
        .upstream_request
        .context("nothing reached the upstream")?;
    ensure!(header(&up.headers, "x-auth-user").is_none(), "{up:?}");
    ensure!(header(&up.headers, "x-auth-scopes") == Some("orders:read"));
    // Naming one: only the service's value.
    let report = replay_spoofing(stub(200, &[("x-auth-user", "ada")], ""))?;
    let up = report
        .upstream_request
        .context("nothing reached the upstream")?;
    ensure!(
        header_values(&up.headers, "x-auth-user") == ["ada"],
        "{up:?}"
    );
    Ok(())
}

#[test]
fn harness_informational_answers_are_service_failures() -> Result<()> {
    for status in [100, 199] {
        let report = replay(Some(stub(status, &[("x-auth-user", "ada")], "")))?;
        ensure!(
            report.verdict == Verdict::AnsweredLocally { status: 403 },
            "{status}: {report:?}"
        );
        ensure!(report.upstream_request.is_none(), "{status}");
        ensure!(report.client_response.body.is_empty(), "{status}");
    }
    Ok(())
}

/// `envoy/ext-authz/envoy.yaml` on ephemeral ports, its clusters aimed at `upstream` and `authz`.
fn start_envoy(upstream: SocketAddr, authz: SocketAddr, label: &str) -> Result<Envoy> {
    start_configured(upstream, authz, None, label)
}

/// [`start_envoy`] with the plugin configured by `configuration`.
fn start_envoy_with(
    upstream: SocketAddr,
    authz: SocketAddr,
    configuration: &str,
    label: &str,
) -> Result<Envoy> {
    start_configured(upstream, authz, Some(configuration), label)
}

fn start_configured(
    upstream: SocketAddr,
    authz: SocketAddr,
    configuration: Option<&str>,
    label: &str,
) -> Result<Envoy> {
    let mut config = EnvoyConfig::load(&paths::envoy_config(FILTER))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream)?
        .route_cluster_to("authz", authz)?;
    if let Some(c) = configuration {
        config.set_plugin_configuration(c)?;
    }
    config.use_filters_from(&paths::filters_dir()?)?;
    Envoy::start(&config, label)
}

#[test]
fn envoy_allow_and_deny_with_a_real_service() -> Result<()> {
    let upstream = Upstream::start(response(200, &[("content-type", "text/plain")], "order"))?;
    let authz = Upstream::start(response(
        200,
        &[("x-auth-user", "ada"), ("x-auth-internal", "no")],
        "",
    ))?;
    let envoy = start_envoy(upstream.addr(), authz.addr(), "ext-authz-allow-deny")?;
    envoy.explain((|| {
        // Allowed.
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 200, "allow: client got {got:?}");
        ensure!(got.body == b"order");
        let checks = authz.take_requests();
        ensure!(checks.len() == 1, "the service got {checks:?}");
        let check = &checks[0];
        ensure!(
            check.method == "POST" && check.path == "/check/orders?id=7",
            "{check:?}"
        );
        ensure!(header(&check.headers, "authorization") == Some("Bearer t0k3n"));
        ensure!(
            header_values(&check.headers, "x-api-key") == ["k1", "k2"],
            "{check:?}"
        );
        ensure!(header(&check.headers, "x-secret").is_none(), "{check:?}");
        ensure!(
            check.body.is_empty(),
            "body sent without with_request_body: {check:?}"
        );
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "upstream got {ups:?}");
        ensure!(
            header(&ups[0].headers, "x-auth-user") == Some("ada"),
            "{ups:?}"
        );
        ensure!(header(&ups[0].headers, "x-auth-internal").is_none());

        // Denied: the service's status, headers and body; nothing upstream.
        authz.set_response(response(
            403,
            &[("x-deny-reason", "blocked"), ("content-type", "text/plain")],
            "go away",
        ));
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 403, "deny: client got {got:?}");
        ensure!(got.body == b"go away", "{got:?}");
        ensure!(http1::header(&got.headers, "x-deny-reason") == Some("blocked"));
        ensure!(
            upstream.take_requests().is_empty(),
            "a denied request went upstream"
        );

        // A redirect to a login page is passed on as it is.
        authz.set_response(response(
            302,
            &[("location", "https://login.example.com/")],
            "",
        ));
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 302, "{got:?}");
        ensure!(header(&got.headers, "location") == Some("https://login.example.com/"));
        ensure!(upstream.take_requests().is_empty());

        // The service failing (5xx) is a failure: 403 with no body.
        authz.set_response(response(500, &[], "oops"));
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 403 && got.body.is_empty(), "{got:?}");
        ensure!(upstream.take_requests().is_empty());
        Ok(())
    })())
}

/// An authorization service that reads the request and answers 200 only after `delay`.
struct SlowService {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl SlowService {
    fn start(delay: Duration) -> Result<SlowService> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the slow service")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(match stream.try_clone() {
                        Ok(s) => s,
                        Err(_) => return,
                    });
                    while let Ok(Some(_head)) = http1::read_head(&mut reader) {
                        std::thread::sleep(delay);
                        let answer =
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-auth-user: late\r\n\r\n";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(SlowService { addr, stop })
    }
}

impl Drop for SlowService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// An address where no service listens: TCP port 1 (tcpmux, never served here and outside the
/// range the kernel hands out for port 0, so no concurrently running test can bind it between
/// the choice and the connection; a freed ephemeral port could be).
fn down_service() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

#[test]
fn envoy_slow_and_down_services_fail_closed() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    // Slower than the demo's 500 ms timeout.
    let slow = SlowService::start(Duration::from_millis(1500))?;
    let envoy = start_envoy(upstream.addr(), slow.addr, "ext-authz-slow")?;
    envoy.explain((|| {
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 403, "slow service: client got {got:?}");
        ensure!(
            upstream.take_requests().is_empty(),
            "timed-out request went upstream"
        );
        Ok(())
    })())?;
    drop(envoy);

    // Down: a port nobody listens on.
    let closed = down_service();
    let envoy = start_envoy(upstream.addr(), closed, "ext-authz-down")?;
    envoy.explain((|| {
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 403, "service down: client got {got:?}");
        ensure!(upstream.take_requests().is_empty(), "request went upstream");
        Ok(())
    })())
}

/// An authorization service that answers each connection's first request with `answer` (raw
/// bytes) and closes the connection.
struct RawService {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl RawService {
    fn start(answer: &'static [u8]) -> Result<RawService> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the raw service")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                if let Ok(Some(_head)) = http1::read_head(&mut BufReader::new(clone)) {
                    let _ = stream.write_all(answer);
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Ok(RawService { addr, stop })
    }
}

impl Drop for RawService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

#[test]
fn envoy_informational_answers_are_service_failures() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    for (label, answer) in [
        (
            "199",
            &b"HTTP/1.1 199 Early\r\nx-auth-user: ada\r\n\r\n"[..],
        ),
        ("100", &b"HTTP/1.1 100 Continue\r\n\r\n"[..]),
    ] {
        let service = RawService::start(answer)?;
        let envoy = start_envoy(upstream.addr(), service.addr, &format!("ext-authz-{label}"))?;
        envoy.explain((|| {
            let got = client::send(envoy.listener(), &guarded_request())?;
            ensure!(
                got.status == 403 && got.body.is_empty(),
                "{label}: client got {got:?}"
            );
            ensure!(
                upstream.take_requests().is_empty(),
                "{label}: went upstream"
            );
            Ok(())
        })())?;
    }
    Ok(())
}

#[test]
fn envoy_client_copies_of_upstream_headers_never_reach_the_upstream() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    let authz = Upstream::start(response(200, &[("x-auth-scopes", "orders:read")], ""))?;
    let envoy = start_envoy(upstream.addr(), authz.addr(), "ext-authz-spoofing")?;
    envoy.explain((|| {
        // Allowed without naming a user.
        let got = client::send(envoy.listener(), &spoofing_request())?;
        ensure!(got.status == 200, "{got:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1, "{ups:?}");
        ensure!(
            header(&ups[0].headers, "x-auth-user").is_none(),
            "the client's identity reached the upstream: {:?}",
            ups[0].headers
        );
        ensure!(header(&ups[0].headers, "x-auth-scopes") == Some("orders:read"));
        // Naming one: only the service's value.
        authz.set_response(response(200, &[("x-auth-user", "ada")], ""));
        let got = client::send(envoy.listener(), &spoofing_request())?;
        ensure!(got.status == 200, "{got:?}");
        let ups = upstream.take_requests();
        ensure!(
            ups.len() == 1 && header_values(&ups[0].headers, "x-auth-user") == ["ada"],
            "{ups:?}"
        );
        Ok(())
    })())?;
    drop(envoy);

    // Failing open with the service down: still no client-sent identity.
    let envoy = start_envoy_with(
        upstream.addr(),
        down_service(),
        r#"{"cluster": "authz", "timeout_ms": 500, "failure_mode_allow": true, "allowed_upstream_headers": ["x-auth-user"]}"#,
        "ext-authz-spoofing-fail-open",
    )?;
    envoy.explain((|| {
        let got = client::send(envoy.listener(), &spoofing_request())?;
        ensure!(got.status == 200, "{got:?}");
        let ups = upstream.take_requests();
        ensure!(
            ups.len() == 1 && header(&ups[0].headers, "x-auth-user").is_none(),
            "{ups:?}"
        );
        Ok(())
    })())?;
    drop(envoy);

    // Turned off: the client's copy goes through, as with native ext_authz.
    let envoy = start_envoy_with(
        upstream.addr(),
        authz.addr(),
        r#"{"cluster": "authz", "allowed_upstream_headers": ["x-auth-user"], "strip_client_upstream_headers": false}"#,
        "ext-authz-spoofing-kept",
    )?;
    authz.set_response(response(200, &[], ""));
    envoy.explain((|| {
        let got = client::send(envoy.listener(), &spoofing_request())?;
        ensure!(got.status == 200, "{got:?}");
        let ups = upstream.take_requests();
        ensure!(
            ups.len() == 1 && header(&ups[0].headers, "x-auth-user") == Some("admin"),
            "{ups:?}"
        );
        Ok(())
    })())
}

#[test]
fn envoy_failure_mode_allow_lets_requests_through_when_down() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    let closed = down_service();
    let envoy = start_envoy_with(
        upstream.addr(),
        closed,
        r#"{"cluster": "authz", "timeout_ms": 500, "failure_mode_allow": true}"#,
        "ext-authz-fail-open",
    )?;
    envoy.explain((|| {
        let got = client::send(envoy.listener(), &guarded_request())?;
        ensure!(got.status == 200 && got.body == b"order", "{got:?}");
        ensure!(upstream.take_requests().len() == 1);
        Ok(())
    })())
}

#[test]
fn envoy_with_request_body_sends_the_body_and_holds_it_back_on_deny() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    let authz = Upstream::start(response(200, &[], ""))?;
    let envoy = start_envoy_with(
        upstream.addr(),
        authz.addr(),
        r#"{"cluster": "authz", "timeout_ms": 500, "with_request_body": {"max_request_bytes": 4}}"#,
        "ext-authz-body",
    )?;
    envoy.explain((|| {
        let small = client::request("POST", "shop.example.com", "/b", &[], b"abc");
        let got = client::send(envoy.listener(), &small)?;
        ensure!(got.status == 200, "{got:?}");
        let checks = authz.take_requests();
        ensure!(checks.len() == 1 && checks[0].body == b"abc", "{checks:?}");
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1 && ups[0].body == b"abc", "{ups:?}");

        // Past the limit without allow_partial_message: 413, the service is not asked.
        let big = client::request("POST", "shop.example.com", "/b", &[], b"abcdefgh");
        let got = client::send(envoy.listener(), &big)?;
        ensure!(got.status == 413, "{got:?}");
        ensure!(authz.take_requests().is_empty());

        // Denied: the body never reaches the upstream as a complete request.
        authz.set_response(response(403, &[], "no"));
        let got = client::send(envoy.listener(), &small)?;
        ensure!(got.status == 403 && got.body == b"no", "{got:?}");
        ensure!(
            upstream.take_requests().is_empty(),
            "denied body went upstream"
        );
        Ok(())
    })())
}

#[test]
fn envoy_partial_body_sends_the_first_bytes_and_the_upstream_gets_all() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    let authz = Upstream::start(response(200, &[], ""))?;
    let envoy = start_envoy_with(
        upstream.addr(),
        authz.addr(),
        r#"{"cluster": "authz", "timeout_ms": 500, "with_request_body": {"max_request_bytes": 4, "allow_partial_message": true}}"#,
        "ext-authz-partial-body",
    )?;
    envoy.explain((|| {
        // Past the limit: no 413; the service gets the first 4 bytes, flagged partial.
        let big = client::request("POST", "shop.example.com", "/b", &[], b"abcdefgh");
        let got = client::send(envoy.listener(), &big)?;
        ensure!(got.status == 200, "{got:?}");
        let checks = authz.take_requests();
        ensure!(checks.len() == 1 && checks[0].body == b"abcd", "{checks:?}");
        ensure!(
            header(&checks[0].headers, "x-envoy-auth-partial-body") == Some("true"),
            "{:?}",
            checks[0].headers
        );
        let ups = upstream.take_requests();
        ensure!(ups.len() == 1 && ups[0].body == b"abcdefgh", "{ups:?}");

        // Within the limit: all of it, not flagged.
        let small = client::request("POST", "shop.example.com", "/b", &[], b"abc");
        let got = client::send(envoy.listener(), &small)?;
        ensure!(got.status == 200, "{got:?}");
        let checks = authz.take_requests();
        ensure!(checks.len() == 1 && checks[0].body == b"abc", "{checks:?}");
        ensure!(
            header(&checks[0].headers, "x-envoy-auth-partial-body") == Some("false"),
            "{:?}",
            checks[0].headers
        );
        ensure!(upstream.take_requests().len() == 1);

        // Denied past the limit: the body does not reach the upstream as a complete request.
        authz.set_response(response(403, &[], "no"));
        let got = client::send(envoy.listener(), &big)?;
        ensure!(got.status == 403 && got.body == b"no", "{got:?}");
        ensure!(
            upstream
                .take_requests()
                .iter()
                .all(|r| r.body != b"abcdefgh"),
            "denied body went upstream"
        );
        Ok(())
    })())
}

#[test]
fn envoy_body_above_the_limit_is_413_also_when_announced() -> Result<()> {
    let upstream = Upstream::start(response(200, &[], "order"))?;
    let authz = Upstream::start(response(200, &[], ""))?;
    let envoy = start_envoy_with(
        upstream.addr(),
        authz.addr(),
        r#"{"cluster": "authz", "timeout_ms": 500, "with_request_body": {"max_request_bytes": 4}}"#,
        "ext-authz-413",
    )?;
    envoy.explain((|| {
        // content-length announces 8 bytes: refused at the headers, nothing goes upstream.
        let big = client::request("POST", "shop.example.com", "/b", &[], b"abcdefgh");
        let got = client::send(envoy.listener(), &big)?;
        ensure!(got.status == 413, "{got:?}");
        ensure!(authz.take_requests().is_empty(), "the service was asked");
        ensure!(upstream.take_requests().is_empty(), "the upstream got it");
        Ok(())
    })())
}
