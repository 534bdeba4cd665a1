//! The `global-rate-limit` filter against a real rate limit service (`tollgate-rls`, this
//! crate's binary: Envoy's v3 `RateLimitService/ShouldRateLimit` over gRPC on 127.0.0.1),
//! next to Envoy's native `envoy.filters.http.ratelimit` pointed at the same kind of service:
//! - the same traffic gets the same decisions, `x-ratelimit-*`, `x-envoy-ratelimited`, service
//!   headers and body from both, and both send the service the same descriptors;
//! - with the service down or too slow, both let requests through, or both refuse them with
//!   `failure_mode_deny`;
//! - a bad configuration is refused at start-up naming the field.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::header;
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;

const FILTER: &str = "global-rate-limit";

/// A running `tollgate-rls`; killed on drop.
pub(crate) struct Rls {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Rls {
    /// Starts the service with `envoy/global-rate-limit/rls-limits.json`, answering `delay_ms`
    /// late; its calls are logged to `target/tollgate-tests/<label>-rls.log`.
    pub(crate) fn start(label: &str, delay_ms: u64) -> Result<Rls> {
        let limits = paths::root().join("envoy/global-rate-limit/rls-limits.json");
        let log = paths::work_dir()?.join(format!("{label}-rls.log"));
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-rls"))
            .arg("--config")
            .arg(&limits)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--delay-ms",
                &delay_ms.to_string(),
            ])
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting tollgate-rls")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Rls { child, addr, log }),
            None => {
                let _ = child.kill();
                bail!("tollgate-rls did not start: {line:?}")
            }
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The calls it received, one line each: `domain|hits|entries;hits|...`.
    pub(crate) fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Rls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on.
fn closed_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr)
}

/// Our filter with `plugin` (JSON), or the native one from `native` (a native.yaml), in front of
/// `upstream`, asking the service at `rls`.
fn envoy(
    label: &str,
    upstream: SocketAddr,
    rls: SocketAddr,
    plugin: Option<&str>,
    native: Option<&Path>,
) -> Result<Envoy> {
    let mut config = EnvoyConfig::for_filter(FILTER, upstream)?;
    config.route_cluster_to("rate_limit_service", rls)?;
    if let Some(json) = plugin {
        config.set_plugin_configuration(json)?;
    }
    if let Some(native) = native {
        config.use_native_alternative(native)?;
    }
    Envoy::start(&config, label)
}

/// What a client and the upstream saw of one request, the reset rounded to tens of seconds
/// (two runs a few seconds apart).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: Vec<(String, Option<String>)>,
    body: String,
    upstream_got_rls_header: bool,
}

const COMPARED: [&str; 6] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-envoy-ratelimited",
    "x-rls",
    "content-type",
    "x-ratelimit-reset",
];

/// One request of the parity traffic: method, path, headers.
type Sent = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// The parity traffic.
fn traffic() -> Vec<Sent> {
    vec![
        ("POST", "/login", vec![]),
        ("POST", "/login", vec![]),
        ("POST", "/login", vec![]),
        ("POST", "/login", vec![("x-client-id", "app")]),
        ("GET", "/items", vec![("x-tenant", "acme")]),
        ("GET", "/items", vec![("x-tenant", "acme")]),
        ("GET", "/items", vec![("x-tenant", "acme")]),
        ("GET", "/items", vec![]),
        ("POST", "/items", vec![("x-tenant", "acme")]),
    ]
}

fn run(envoy: &Envoy, upstream: &Upstream) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    for (method, path, headers) in traffic() {
        upstream.take_requests();
        let request = client::request(method, "api.example.com", path, &headers, b"");
        let response = client::send(envoy.listener(), &request)?;
        let reached = upstream.take_requests();
        let headers = COMPARED
            .iter()
            .map(|name| {
                let value = header(&response.headers, name).map(|v| {
                    if *name == "x-ratelimit-reset" {
                        // Seconds until the window ends: the two services started apart.
                        v.parse::<u64>()
                            .map_or(v.to_string(), |s| format!("~{}", s.div_ceil(10) * 10))
                    } else {
                        v.to_string()
                    }
                });
                (name.to_string(), value)
            })
            .collect();
        seen.push(Seen {
            status: response.status,
            headers,
            body: String::from_utf8_lossy(&response.body).into_owned(),
            upstream_got_rls_header: reached.iter().any(|r| {
                r.headers
                    .iter()
                    .any(|(n, v)| n == "x-rls-checked" && v == "1")
            }),
        });
    }
    Ok(seen)
}

#[test]
fn same_traffic_same_decisions_and_headers_as_native_ratelimit() -> Result<()> {
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"upstream"))?;

    let rls = Rls::start("grl-parity-wasm", 0)?;
    let ours_envoy = envoy("grl-parity-wasm", upstream.addr(), rls.addr(), None, None)?;
    let ours = ours_envoy.explain(run(&ours_envoy, &upstream))?;
    let ours_calls = rls.calls();
    drop(ours_envoy);
    drop(rls);

    let rls = Rls::start("grl-parity-native", 0)?;
    let native_file = paths::root().join("envoy/global-rate-limit/native.yaml");
    let native_envoy = envoy(
        "grl-parity-native",
        upstream.addr(),
        rls.addr(),
        None,
        Some(&native_file),
    )?;
    let native = native_envoy.explain(run(&native_envoy, &upstream))?;
    let native_calls = rls.calls();

    for (i, (o, n)) in ours.iter().zip(&native).enumerate() {
        eprintln!("{i}: ours   {o:?}\n{i}: native {n:?}");
    }
    let statuses: Vec<u16> = ours.iter().map(|s| s.status).collect();
    ensure!(
        statuses == [200, 200, 429, 429, 200, 200, 429, 200, 200],
        "our statuses {statuses:?}"
    );
    ensure!(ours == native, "ours and native differ (see above)");
    ensure!(
        ours_calls == native_calls,
        "different descriptors sent:\nours   {ours_calls:#?}\nnative {native_calls:#?}"
    );
    ensure!(ours_calls.len() == traffic().len(), "{ours_calls:#?}");
    ensure!(
        ours_calls[0]
            == "tollgate|0|generic_key=login,remote_address=127.0.0.1;|header_match=no-client;",
        "{}",
        ours_calls[0]
    );
    // Admitted requests carry the service's request header to the upstream; refusals have the
    // service's body, headers and x-envoy-ratelimited.
    ensure!(
        ours.iter()
            .all(|s| (s.status == 200) == s.upstream_got_rls_header)
    );
    let refused = &ours[2];
    ensure!(refused.body == "rate limited by the service\n");
    ensure!(
        refused
            .headers
            .contains(&("x-envoy-ratelimited".into(), Some("true".into())))
    );
    ensure!(refused.headers.contains(&(
        "x-ratelimit-limit".into(),
        Some("3, 3;w=3600;name=\"login\", 2;w=3600;name=\"no-client\"".into())
    )));
    Ok(())
}

/// `demo.json` with `failure_mode_deny` set.
fn demo_with_deny(deny: bool) -> Result<String> {
    let mut demo: Value = serde_json::from_str(&paths::demo_config(FILTER)?)?;
    demo["failure_mode_deny"] = Value::Bool(deny);
    Ok(demo.to_string())
}

/// `native.yaml` with `failure_mode_deny` set, written to the work folder.
fn native_with_deny(deny: bool) -> Result<PathBuf> {
    let text = std::fs::read_to_string(paths::root().join("envoy/global-rate-limit/native.yaml"))?;
    let text = text.replace(
        "failure_mode_deny: false",
        &format!("failure_mode_deny: {deny}"),
    );
    let path = paths::work_dir()?.join(format!("grl-native-deny-{deny}.yaml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Status, body and `x-envoy-ratelimited` of one request to `/items`.
fn one(envoy: &Envoy) -> Result<(u16, String, Option<String>)> {
    let request = client::request(
        "GET",
        "api.example.com",
        "/items",
        &[("x-tenant", "t")],
        b"",
    );
    let response = client::send(envoy.listener(), &request)?;
    Ok((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
        header(&response.headers, "x-envoy-ratelimited").map(str::to_string),
    ))
}

#[test]
fn service_down_or_slow_fails_open_or_closed_as_native_does() -> Result<()> {
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"upstream"))?;
    // Slow: answers after 1 s, the filters wait 100 ms.
    let slow = Rls::start("grl-slow", 1000)?;
    let down = closed_port()?;
    for (service, addr) in [("down", down), ("slow", slow.addr())] {
        for deny in [false, true] {
            let label = format!("grl-{service}-deny-{deny}");
            let ours = envoy(
                &label,
                upstream.addr(),
                addr,
                Some(&demo_with_deny(deny)?),
                None,
            )?;
            let got_ours = ours.explain(one(&ours))?;
            drop(ours);
            let native_file = native_with_deny(deny)?;
            let native = envoy(
                &format!("{label}-native"),
                upstream.addr(),
                addr,
                None,
                Some(&native_file),
            )?;
            let got_native = native.explain(one(&native))?;
            drop(native);
            eprintln!(
                "service {service}, failure_mode_deny {deny}: ours {got_ours:?}, native {got_native:?}"
            );
            let expected = if deny { 500 } else { 200 };
            ensure!(
                got_ours.0 == expected,
                "{service}, deny {deny}: ours {got_ours:?}"
            );
            ensure!(
                got_ours == got_native,
                "{service}, deny {deny}: ours {got_ours:?}, native {got_native:?}"
            );
        }
    }
    // The slow service did get the four calls (each answered too late).
    let calls = slow.calls();
    ensure!(calls.len() == 4, "{calls:#?}");
    Ok(())
}

#[test]
fn bad_configuration_is_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"upstream"))?;
    let mut demo: Value = serde_json::from_str(&paths::demo_config(FILTER)?)?;
    demo["rate_limited_status"] = Value::from(42);
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(&demo.to_string())?;
    let line = Envoy::refusal(&config, "grl-refusal", FILTER)?;
    ensure!(line.contains("rate_limited_status"), "{line}");
    Ok(())
}
