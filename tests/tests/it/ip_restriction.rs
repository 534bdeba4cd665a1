//! The `ip-restriction` filter with its demo configuration (one trusted hop):
//! - bypass attempts (forged `X-Forwarded-For` entries, IPv6 and IPv4-mapped forms, garbage)
//!   through a real Envoy (`envoy/ip-restriction/envoy.yaml`) and, the same requests, through
//!   Envoy's native `rbac` configured alike (`envoy/ip-restriction/native.yaml`): the same
//!   statuses and upstream reach, except the differences named here and in the README;
//! - with no trusted hop, a spoofed `X-Forwarded-For` changes nothing in Envoy;
//! - the same requests in the harness;
//! - refused configurations name the field at start-up in Envoy.

use anyhow::{Context, Result, ensure};
use tollgate_replay::Verdict;
use tollgate_tests::client;
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse};

const FILTER: &str = "ip-restriction";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

fn with_xff(values: &[&str]) -> HttpRequest {
    let headers: Vec<(&str, &str)> = values.iter().map(|v| ("x-forwarded-for", *v)).collect();
    client::request("GET", "api.example.com", "/", &headers, b"")
}

/// A request, what the filter answers, and what native rbac answers when it differs.
struct Case {
    what: &'static str,
    request: HttpRequest,
    status: u16,
    native: Option<(u16, &'static str)>,
}

fn cases() -> Vec<Case> {
    let case = |what, xff: &[&str], status| Case {
        what,
        request: with_xff(xff),
        status,
        native: None,
    };
    vec![
        case("allowed client", &["10.1.2.3"], 200),
        case("denied range", &["10.66.0.1"], 403),
        case("denied single address", &["192.168.13.37"], 403),
        case("outside the allow list", &["203.0.113.9"], 403),
        case(
            "allowed address forged before the appended one",
            &["10.1.2.3, 198.51.100.7"],
            403,
        ),
        case(
            "denied address hidden behind an allowed one",
            &["10.66.0.1, 10.1.2.3"],
            200,
        ),
        case("no space after the comma", &["10.1.2.3,198.51.100.7"], 403),
        case("allowed IPv6", &["2001:db8::1"], 200),
        case("denied IPv6 range", &["2001:db8:bad::1"], 403),
        case("IPv6 outside the allow list", &["2001:db9::1"], 403),
        case("denied address IPv4-mapped", &["::ffff:10.66.0.9"], 403),
        case("no X-Forwarded-For: the peer (127.0.0.1) decides", &[], 200),
        Case {
            what: "allowed address IPv4-mapped",
            request: with_xff(&["::ffff:10.1.2.3"]),
            status: 200,
            native: Some((
                403,
                "native rbac does not match an IPv4-mapped IPv6 address against IPv4 blocks",
            )),
        },
        Case {
            what: "last entry not an address",
            request: with_xff(&["10.1.2.3, unknown"]),
            status: 403,
            native: Some((
                200,
                "Envoy ignores an X-Forwarded-For it cannot parse and falls back to the peer (127.0.0.1, allowed); the filter refuses",
            )),
        },
    ]
}

/// Status and whether the upstream saw it, per case, through Envoy on `config`.
fn through_envoy(
    config: &EnvoyConfig,
    label: &str,
    upstream: &Upstream,
) -> Result<Vec<(u16, bool)>> {
    let envoy = Envoy::start(config, label)?;
    envoy.explain((|| {
        let mut out = Vec::new();
        for case in cases() {
            let response = client::send(envoy.listener(), &case.request)?;
            let reached = !upstream.take_requests().is_empty();
            out.push((response.status, reached));
        }
        Ok(out)
    })())
}

#[test]
fn bypass_attempts_in_envoy_next_to_native_rbac_and_in_the_harness() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let wasm = through_envoy(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "ip-restriction",
        &upstream,
    )?;
    // Native rbac reads the client address the connection manager derives: have it trust the
    // one hop the filter trusts (the demo bootstrap keeps it at 0 for the filter).
    let text = std::fs::read_to_string(paths::envoy_config(FILTER))?;
    ensure!(text.contains("xff_num_trusted_hops: 0\n"));
    let native_bootstrap = paths::work_dir()?.join("ip-restriction-native-bootstrap.yaml");
    std::fs::write(
        &native_bootstrap,
        text.replace("xff_num_trusted_hops: 0\n", "xff_num_trusted_hops: 1\n"),
    )?;
    let mut native_config = EnvoyConfig::load(&native_bootstrap)?;
    native_config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .use_native_alternative(&paths::root().join("envoy/ip-restriction/native.yaml"))?;
    let native = through_envoy(&native_config, "ip-restriction-native", &upstream)?;
    let cases = cases();
    let mut problems = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (w, n) = (wasm[i], native[i]);
        eprintln!("{:<55} wasm {:?} native {:?}", case.what, w, n);
        if w != (case.status, case.status == 200) {
            problems.push(format!(
                "{}: wasm {w:?}, expected {}",
                case.what, case.status
            ));
        }
        let expected_native = case.native.map_or(case.status, |(s, _)| s);
        if n != (expected_native, expected_native == 200) {
            problems.push(format!(
                "{}: native {n:?}, expected {expected_native}",
                case.what
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));

    // The harness: the peer is the test client (127.0.0.1, Envoy's view), the same answers.
    let exchanges = cases
        .iter()
        .map(|c| {
            let mut details = tollgate_traffic::ExchangeDetails::default();
            details
                .properties
                .push(("source.address".into(), "127.0.0.1:50000".into()));
            Exchange {
                id: c.what.to_string(),
                request: c.request.clone(),
                response: Some(ok_response()),
                details,
            }
        })
        .collect();
    let report = demo::replay(FILTER, exchanges)?;
    for (case, exchange) in cases.iter().zip(&report.exchanges) {
        let ok = match exchange.verdict {
            Verdict::Passed | Verdict::Modified => case.status == 200,
            Verdict::AnsweredLocally { status } => status == case.status,
            Verdict::Failed { .. } => false,
        };
        ensure!(ok, "harness, {}: {:?}", case.what, exchange.verdict);
    }
    Ok(())
}

#[test]
fn with_no_trusted_hop_a_spoofed_forwarded_for_is_ignored_in_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    // Only 10.0.0.0/8 is allowed; the test client is 127.0.0.1 and claims to be 10.1.2.3.
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(r#"{"allow": ["10.0.0.0/8"], "xff_trusted_hops": 0}"#)?;
    let envoy = Envoy::start(&config, "ip-restriction-hops0")?;
    envoy.explain((|| {
        for xff in [
            vec!["10.1.2.3"],
            vec!["10.1.2.3, 10.1.2.4"],
            vec!["10.1.2.3", "10.9.9.9"],
        ] {
            let response = client::send(envoy.listener(), &with_xff(&xff))?;
            ensure!(response.status == 403, "{xff:?}: {}", response.status);
            ensure!(
                upstream.take_requests().is_empty(),
                "{xff:?} reached the upstream"
            );
        }
        let log = envoy.log();
        ensure!(
            log.contains("ip-restriction: denied 127.0.0.1 (not_allowed)"),
            "no log line"
        );
        Ok(())
    })())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    for (config, field) in [
        (r#"{"allow": ["10.0.0.0/8", "10.0.0.1/8"]}"#, "allow[1]"),
        (r#"{"deny": ["10.0.0.0/33"]}"#, "deny[0]"),
        (
            r#"{"deny": ["::/0"], "xff_trusted_hops": 100}"#,
            "xff_trusted_hops",
        ),
    ] {
        let mut envoy_config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
        envoy_config.set_plugin_configuration(config)?;
        let line = Envoy::refusal(&envoy_config, "ip-restriction-refused", FILTER)
            .with_context(|| format!("{field}: {config}"))?;
        ensure!(line.contains(field), "{field}: {line}");
    }
    Ok(())
}
