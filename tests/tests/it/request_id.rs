//! The `request-id` filter (`envoy/request-id/envoy.yaml`):
//! - in a real Envoy: ids made (UUID v4, all distinct), kept, replaced when untrusted, echoed on
//!   the response; W3C trace context started, propagated as is, restarted when invalid (and the
//!   orphan `tracestate` dropped); the counters as labels on `/stats/prometheus`;
//! - next to Envoy's own request ids (the connection manager's `generate_request_id`,
//!   `preserve_external_request_id`, `always_set_request_id_in_response`, without the Wasm
//!   filter): the same shapes and the same keep/replace decisions;
//! - the same requests in the harness (shapes and decisions as in Envoy);
//! - refused configurations name the field at start-up in Envoy.

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tollgate_replay::Replay;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

const FILTER: &str = "request-id";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn ok_response() -> HttpResponse {
    tollgate_tests::upstream::text_response(b"upstream")
}

fn get(headers: &[(&str, &str)]) -> HttpRequest {
    client::request("GET", "api.example.com", "/orders", headers, b"")
}

fn is_uuid_v4(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What one exchange showed: the id the upstream got, the id echoed to the client, the
/// upstream's `traceparent` and `tracestate`.
#[derive(Debug, Clone)]
struct Seen {
    upstream_id: Vec<String>,
    echoed: Vec<String>,
    traceparent: Vec<String>,
    tracestate: Vec<String>,
}

fn seen(upstream: &[(String, String)], client: &[(String, String)]) -> Seen {
    let own = |v: Vec<&str>| v.into_iter().map(str::to_string).collect();
    Seen {
        upstream_id: own(header(upstream, "x-request-id")),
        echoed: own(header(client, "x-request-id")),
        traceparent: own(header(upstream, "traceparent")),
        tracestate: own(header(upstream, "tracestate")),
    }
}

/// The request headers the upstream got and the response headers the client got.
type Headers = (Vec<(String, String)>, Vec<(String, String)>);

/// Sends `requests` through a started Envoy, each expecting a 200; returns what each showed and
/// the text of `/stats/prometheus` after them.
fn send_all(
    envoy: &Envoy,
    upstream: &Upstream,
    requests: &[HttpRequest],
) -> Result<(Vec<Headers>, String)> {
    envoy.explain((|| {
        let mut out = Vec::new();
        for request in requests {
            let response = client::send(envoy.listener(), request)?;
            ensure!(
                response.status == 200,
                "{}: status {}",
                request.path,
                response.status
            );
            let got = upstream.take_requests();
            let received = got.first().context("the upstream saw no request")?;
            out.push((received.headers.clone(), response.headers));
        }
        Ok((out, stats::prometheus(envoy.admin())?))
    })())
}

fn through_envoy(
    config: &EnvoyConfig,
    label: &str,
    upstream: &Upstream,
    requests: &[HttpRequest],
) -> Result<(Vec<Seen>, String)> {
    let envoy = Envoy::start(config, label)?;
    let (runs, stats) = send_all(&envoy, upstream, requests).context(label.to_string())?;
    let seen = runs.iter().map(|(up, down)| seen(up, down)).collect();
    Ok((seen, stats))
}

/// The requests both the filter and the Lua alternative are checked with: no id, a client's id,
/// a valid trace context, an invalid one (zero span id), a malformed client id.
fn sample_requests() -> Vec<HttpRequest> {
    vec![
        get(&[]),
        get(&[("x-request-id", "client-abc-123")]),
        get(&[("traceparent", TP), ("tracestate", "congo=t61rcWkgMzE")]),
        get(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]),
        get(&[("x-request-id", "has space")]),
    ]
}

/// What `sample_requests` (then any number of requests without headers) must show, in `who`:
/// one id each, echoed, all distinct, UUIDs v4 but for the client's (kept, request 1); the valid
/// trace context propagated as is; the invalid one and the missing one started afresh (not
/// sampled), with the orphan `tracestate` dropped.
fn check_ids_and_trace(who: &str, runs: &[Seen]) -> Result<()> {
    let mut ids = std::collections::HashSet::new();
    for (i, s) in runs.iter().enumerate() {
        ensure!(
            s.upstream_id.len() == 1 && s.echoed == s.upstream_id,
            "{who} {i}: {s:?}"
        );
        ensure!(
            s.traceparent.len() == 1 && s.traceparent[0].len() == 55,
            "{who} {i}: {s:?}"
        );
        ids.insert(s.upstream_id[0].clone());
        ensure!(i == 1 || is_uuid_v4(&s.upstream_id[0]), "{who} {i}: {s:?}");
    }
    ensure!(ids.len() == runs.len(), "{who}: ids repeat: {runs:?}");
    ensure!(
        runs[1].upstream_id[0] == "client-abc-123",
        "{who}: {:?}",
        runs[1]
    );
    ensure!(
        runs[2].traceparent[0] == TP && runs[2].tracestate == ["congo=t61rcWkgMzE"],
        "{who}: {:?}",
        runs[2]
    );
    ensure!(
        !runs[3].traceparent[0].contains("4bf92f3577b34da6a3ce929d0e0e4736")
            && runs[3].tracestate.is_empty(),
        "{who}: invalid traceparent kept: {:?}",
        runs[3]
    );
    ensure!(
        runs[0].tracestate.is_empty() && runs[0].traceparent[0].ends_with("-00"),
        "{who}: {:?}",
        runs[0]
    );
    Ok(())
}

fn through_harness(config: &str, requests: &[HttpRequest]) -> Result<Vec<Seen>> {
    let traffic = Traffic {
        source: None,
        exchanges: requests
            .iter()
            .enumerate()
            .map(|(i, r)| Exchange {
                id: format!("request {i}"),
                request: r.clone(),
                response: Some(ok_response()),
                details: tollgate_traffic::ExchangeDetails::default(),
            })
            .collect(),
        warnings: Vec::new(),
    };
    let report = Replay::filter(paths::filter_wasm(FILTER)?)
        .config(config)
        .traffic(traffic)
        .run()?;
    report
        .exchanges
        .iter()
        .map(|e| {
            let up = e
                .upstream_request
                .as_ref()
                .context("the upstream was not reached")?;
            Ok(seen(&up.headers, &e.client_response.headers))
        })
        .collect()
}

/// Envoy's own request ids: the bootstrap without the Wasm filter, the connection manager
/// generating ids, echoing them, and keeping a client's (`preserve`) or not.
fn native(upstream: &Upstream, preserve: bool) -> Result<EnvoyConfig> {
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    let hcm = config
        .value_mut()
        .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config")
        .and_then(Value::as_object_mut)
        .context("envoy/request-id/envoy.yaml: no connection manager")?;
    hcm.insert("generate_request_id".into(), json!(true));
    hcm.insert("always_set_request_id_in_response".into(), json!(true));
    hcm.insert("preserve_external_request_id".into(), json!(preserve));
    // Every request is an edge request: the client's address is the remote address, and
    // 127.0.0.1 is not internal (an empty list would mean Envoy's default, loopback included).
    hcm.insert("use_remote_address".into(), json!(true));
    hcm.insert(
        "internal_address_config".into(),
        json!({"cidr_ranges": [{"address_prefix": "192.0.2.1", "prefix_len": 32}]}),
    );
    let filters = hcm
        .get_mut("http_filters")
        .and_then(Value::as_array_mut)
        .context("no http_filters")?;
    filters.retain(|f| f.get("name").and_then(Value::as_str) != Some("envoy.filters.http.wasm"));
    Ok(config)
}

#[test]
fn ids_and_trace_context_in_envoy_next_to_envoys_own_ids_and_in_the_harness() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let mut requests = sample_requests();
    requests.extend([get(&[]), get(&[])]);
    let demo = paths::demo_config(FILTER)?;
    let (wasm, stats) = through_envoy(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "request-id",
        &upstream,
        &requests,
    )?;
    let harness = through_harness(&demo, &requests)?;

    for (where_, runs) in [("envoy", &wasm), ("harness", &harness)] {
        check_ids_and_trace(where_, runs)?;
    }
    stats::ensure_lines(
        &stats,
        "request_id_",
        &[
            "request_id_ids{source=\"generated\"} 5",
            "request_id_ids{source=\"kept\"} 1",
            "request_id_ids{source=\"replaced\"} 1",
            "request_id_traces{trace=\"started\"} 5",
            "request_id_traces{trace=\"propagated\"} 1",
            "request_id_traces{trace=\"restarted\"} 1",
        ],
    )?;

    // Envoy's own ids, keeping the client's: the same shapes and decisions for ids (Envoy
    // keeps even a malformed one: ours replaces it, README).
    let (own, _) = through_envoy(
        &native(&upstream, true)?,
        "request-id-native",
        &upstream,
        &requests[..3],
    )?;
    for (i, s) in own.iter().enumerate() {
        ensure!(
            s.upstream_id.len() == 1 && s.echoed == s.upstream_id,
            "native {i}: {s:?}"
        );
    }
    ensure!(
        is_uuid_v4(&own[0].upstream_id[0]) && is_uuid_v4(&own[2].upstream_id[0]),
        "native: {own:?}"
    );
    ensure!(
        own[1].upstream_id[0] == "client-abc-123",
        "native keeps the client's id: {own:?}"
    );
    ensure!(
        own[0].traceparent.is_empty(),
        "native without tracing adds no traceparent: {own:?}"
    );

    // Untrusted client ids: Envoy's `preserve_external_request_id: false` at the edge, ours
    // `trust_client_id: false`; both replace the id with a fresh UUID v4 and echo it.
    let (own, _) = through_envoy(
        &native(&upstream, false)?,
        "request-id-native-edge",
        &upstream,
        &requests[1..2],
    )?;
    let mut untrusting = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    untrusting.set_plugin_configuration(r#"{"trust_client_id": false}"#)?;
    let (ours, _) = through_envoy(
        &untrusting,
        "request-id-untrusting",
        &upstream,
        &requests[1..2],
    )?;
    for (who, s) in [("native", &own[0]), ("ours", &ours[0])] {
        ensure!(
            s.upstream_id.len() == 1 && is_uuid_v4(&s.upstream_id[0]) && s.echoed == s.upstream_id,
            "{who}: the client's id was not replaced: {s:?}"
        );
    }
    Ok(())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    Envoy::refusals_name_the_field(
        FILTER,
        upstream.addr(),
        &[
            (r#"{"header": "traceparent"}"#, "header"),
            (r#"{"max_client_id_length": 0}"#, "max_client_id_length"),
            (
                r#"{"trace_context": "off", "new_span": true}"#,
                "trace_context",
            ),
            (
                r#"{"routes": {"routes": [{"match": {"route": "r"}, "config": {"max_client_id_length": 0}}]}}"#,
                "routes.routes[0].config.max_client_id_length",
            ),
        ],
    )
}

/// The demo's per-route rules in a real Envoy (`envoy/request-id/envoy.yaml` has a `partner`
/// route): `/healthz` is left alone, the `partner` route (matched by Envoy's route name) uses
/// `x-correlation-id`, replaces the client's id and leaves the trace context; other routes get
/// the top-level configuration. The path rule gives the same in the harness.
#[test]
fn per_route_configuration_reaches_the_filter_in_envoy() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let envoy = Envoy::start(
        &EnvoyConfig::for_filter(FILTER, upstream.addr())?,
        "request-id-routes",
    )?;
    // A UUID v1: well formed, but the partner route never keeps a client's id.
    let v1 = "0b1e5a8e-2f4b-1c1d-9a3e-5f6a7b8c9d0e";
    let requests = [
        client::request("GET", "api.example.com", "/healthz", &[], b""),
        client::request(
            "GET",
            "api.example.com",
            "/partner/orders",
            &[
                ("x-correlation-id", v1),
                ("x-request-id", "client-abc"),
                ("traceparent", "garbage"),
            ],
            b"",
        ),
        client::request(
            "GET",
            "api.example.com",
            "/orders",
            &[("x-request-id", "client-abc")],
            b"",
        ),
    ];
    let (runs, stats) = send_all(&envoy, &upstream, &requests)?;

    let (up, down) = &runs[0];
    ensure!(
        header(up, "x-request-id").is_empty()
            && header(up, "traceparent").is_empty()
            && header(down, "x-request-id").is_empty(),
        "/healthz: the filter ran: upstream {up:?}, client {down:?}"
    );

    let (up, down) = &runs[1];
    let made = header(up, "x-correlation-id");
    ensure!(
        made.len() == 1 && is_uuid_v4(made[0]) && header(down, "x-correlation-id") == made,
        "partner: x-correlation-id not replaced and echoed: upstream {up:?}, client {down:?}"
    );
    ensure!(
        header(up, "x-request-id") == ["client-abc"] && header(up, "traceparent") == ["garbage"],
        "partner: the top-level header or the trace context was touched: {up:?}"
    );
    ensure!(
        header(down, "x-request-id").is_empty(),
        "partner: x-request-id echoed: {down:?}"
    );

    let (up, down) = &runs[2];
    ensure!(
        header(up, "x-request-id") == ["client-abc"]
            && header(down, "x-request-id") == ["client-abc"]
            && header(up, "traceparent").first().map(|t| t.len()) == Some(55)
            && header(up, "x-correlation-id").is_empty(),
        "api: not the top-level configuration: upstream {up:?}, client {down:?}"
    );

    // Counted: the partner's replaced id and the api's kept one; /healthz not at all.
    stats::ensure_lines(
        &stats,
        "request_id_",
        &[
            "request_id_ids{source=\"replaced\"} 1",
            "request_id_ids{source=\"kept\"} 1",
            "request_id_traces{trace=\"started\"} 1",
        ],
    )?;
    ensure!(
        !stats
            .lines()
            .any(|l| l.starts_with("request_id_ids{source=\"generated\"} ") && !l.ends_with(" 0")),
        "an id was generated (for /healthz?): {stats}"
    );

    // The path rule in the harness: /healthz untouched there too.
    let harness = through_harness(&paths::demo_config(FILTER)?, &requests[..1])?;
    ensure!(
        harness[0].upstream_id.is_empty() && harness[0].traceparent.is_empty(),
        "harness /healthz: {:?}",
        harness[0]
    );
    Ok(())
}

/// `envoy/request-id/lua.yaml` (the Lua alternative of the README's comparison) starts in the
/// real Envoy and does what the README says: ids kept or made (UUID v4) and echoed, a valid
/// trace context propagated, an invalid or missing one started with `tracestate` dropped.
#[test]
fn the_lua_alternative_runs_in_envoy_and_does_what_the_readme_says() -> Result<()> {
    let upstream = Upstream::start(ok_response())?;
    let mut lua = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    lua.use_native_alternative(&paths::root().join("envoy/request-id/lua.yaml"))?;
    let requests = sample_requests();
    let (runs, _) = through_envoy(&lua, "request-id-lua", &upstream, &requests)?;
    check_ids_and_trace("lua", &runs)?;
    Ok(())
}
