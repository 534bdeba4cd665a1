//! `tollgate envoy` through its library (`tollgate_envoy`) with the
//! real Envoy: the demo recording through the `headers` filter matches the
//! harness's prediction, a different prediction is caught header by header,
//! Envoy refusing a configuration is reported with its log, and `--compare`
//! reports every configuration with a worker CPU time per request. Filters
//! that call a service (ext-authz, jwt-auth's JWKS) get it from a stub server
//! (`--stub`), in every configuration, the native alternatives included.

use anyhow::{Context, Result, ensure};
use tollgate_envoy::bootstrap::Alternative;
use tollgate_envoy::services::ServiceSpec;
use tollgate_envoy::{LiveError, WasmFilter, compare, diff};
use tollgate_host::callouts::HttpClusterStub;
use tollgate_replay::Replay;
use tollgate_tests::paths;
use tollgate_traffic::{self as traffic, Traffic};

fn demo_traffic() -> Result<Traffic> {
    let path = paths::root().join("traffic").join("demo.har");
    traffic::load(&path).with_context(|| format!("loading {}", path.display()))
}

fn headers_filter(config: String) -> Result<WasmFilter> {
    Ok(WasmFilter::new(paths::filter_wasm("headers")?).with_config(config))
}

/// What the harness predicts for `traffic` through `by` (default: the
/// options' chain), with the options' stubs answering their clusters, as
/// `tollgate envoy` computes it before running Envoy.
fn prediction(
    o: &diff::DiffOptions,
    by: Option<&[WasmFilter]>,
    traffic: &Traffic,
) -> Result<Vec<diff::Prediction>> {
    let mut replay = Replay::chain();
    for s in &o.services {
        if let ServiceSpec::Stub(stub) = s {
            replay = replay.http_cluster(stub.clone());
        }
    }
    for (i, f) in by.unwrap_or(&o.filters).iter().enumerate() {
        replay = replay.filter(&f.path);
        // The identity the generated bootstrap gives the filter.
        replay = replay.identity(&tollgate_envoy::bootstrap::identity_of(i, f));
        if let Some(c) = &f.config {
            replay = replay.config(c.clone());
        }
        if let Some(c) = &f.vm_config {
            replay = replay.vm_config(c.clone());
        }
        if let Some(p) = f.failure_policy {
            replay = replay.failure_policy(p);
        }
    }
    let report = replay.traffic(traffic.clone()).run()?;
    Ok(report
        .exchanges
        .into_iter()
        .map(|e| diff::Prediction {
            upstream_request: e.upstream_request,
            client_response: e.client_response,
        })
        .collect())
}

fn options(filters: Vec<WasmFilter>) -> Result<diff::DiffOptions> {
    Ok(diff::DiffOptions::new(paths::envoy_binary()?, filters))
}

#[test]
fn demo_recording_through_envoy_matches_the_harness() -> Result<()> {
    let traffic = demo_traffic()?;
    let o = options(vec![headers_filter(paths::demo_config("headers")?)?])?;
    let report = diff::run(&o, &traffic, &prediction(&o, None, &traffic)?)?;
    ensure!(report.exchanges.len() == traffic.exchanges.len());
    let differences: Vec<String> = report
        .exchanges
        .iter()
        .flat_map(|e| e.differences.iter().map(move |d| format!("{}: {d}", e.id)))
        .collect();
    ensure!(
        differences.is_empty(),
        "Envoy and the harness differ:\n{}",
        differences.join("\n")
    );
    for (e, recorded) in report.exchanges.iter().zip(&traffic.exchanges) {
        let status = recorded.response.as_ref().map(|r| r.status);
        ensure!(
            Some(e.envoy_response.status) == status,
            "{}: Envoy answered {} where the recording has {status:?}",
            e.id,
            e.envoy_response.status
        );
        // The filter really ran in Envoy: the upstream saw its header.
        let seen = e
            .envoy_upstream
            .as_ref()
            .with_context(|| format!("{}: never reached the upstream", e.id))?;
        ensure!(
            seen.headers
                .iter()
                .any(|(n, v)| n == "x-tollgate" && v == "demo"),
            "{}: the upstream got no x-tollgate: demo: {:?}",
            e.id,
            seen.headers
        );
        ensure!(e.predicted_upstream && e.predicted_status == e.envoy_response.status);
    }
    Ok(())
}

#[test]
fn a_different_prediction_is_reported_header_by_header() -> Result<()> {
    let traffic = demo_traffic()?;
    let demo = paths::demo_config("headers")?;
    let other = demo.replace(
        r#"{"name": "x-tollgate", "value": "demo"}"#,
        r#"{"name": "x-tollgate", "value": "other"}"#,
    );
    ensure!(other != demo, "demo.json no longer sets x-tollgate: demo");
    let o = options(vec![headers_filter(demo)?])?;
    let by = [headers_filter(other)?];
    let report = diff::run(&o, &traffic, &prediction(&o, Some(&by), &traffic)?)?;
    ensure!(report.differing_exchanges() == traffic.exchanges.len());
    for e in &report.exchanges {
        for expected in [
            r#"request header x-tollgate: Envoy "demo", harness "other""#,
            r#"response header x-tollgate: Envoy "demo", harness "other""#,
        ] {
            ensure!(
                e.differences.iter().any(|d| d == expected),
                "{}: missing {expected:?} in {:?}",
                e.id,
                e.differences
            );
        }
        ensure!(
            e.differences.len() == 2,
            "{}: unexpected differences {:?}",
            e.id,
            e.differences
        );
    }
    let json = report.to_json();
    ensure!(json["summary"]["differences"] == 2 * traffic.exchanges.len());
    Ok(())
}

/// The error `result` must be; `accepted` says what went wrong if it is not one.
fn refused<T>(result: Result<T, LiveError>, accepted: &str) -> Result<LiveError> {
    match result {
        Ok(_) => anyhow::bail!("{accepted}"),
        Err(e) => Ok(e),
    }
}

#[test]
fn envoy_refusing_the_filter_configuration_is_reported_with_its_log() -> Result<()> {
    let traffic = demo_traffic()?;
    let mut o = options(vec![headers_filter(r#"{"request": 5}"#.to_owned())?])?;
    // A fixed folder: the log an error points to is kept, and overwritten next run.
    o.work_dir = Some(paths::work_dir()?.join("envoy-cli-refused-filter"));
    let by = [headers_filter(paths::demo_config("headers")?)?];
    let predicted = prediction(&o, Some(&by), &traffic)?;
    let err = refused(
        diff::run(&o, &traffic, &predicted),
        "Envoy accepted a configuration the filter rejects",
    )?;
    ensure!(matches!(err, LiveError::Envoy { .. }), "{err}");
    let text = err.to_string();
    ensure!(
        text.contains("exited") && text.contains("Wasm plugin headers"),
        "the error does not say Envoy exited or name the filter: {text}"
    );
    Ok(())
}

#[test]
fn a_missing_envoy_is_named() -> Result<()> {
    let traffic = demo_traffic()?;
    let mut o = options(vec![headers_filter(paths::demo_config("headers")?)?])?;
    o.envoy = paths::work_dir()?.join("no-such-envoy");
    let predicted = prediction(&o, None, &traffic)?;
    let err = refused(
        diff::run(&o, &traffic, &predicted),
        "ran without an Envoy binary",
    )?;
    ensure!(matches!(err, LiveError::EnvoyMissing(_)), "{err}");
    ensure!(err.to_string().contains("no-such-envoy"), "{err}");
    Ok(())
}

const LUA: &str = r#"
http_filters:
  - name: envoy.filters.http.lua
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
      default_source_code:
        inline_string: |
          function envoy_on_request(handle)
            handle:headers():add("x-tollgate", "lua")
          end
"#;

#[test]
fn compare_reports_every_configuration_with_cpu_per_request() -> Result<()> {
    let traffic = demo_traffic()?;
    let mut o = compare::CompareOptions::new(
        paths::envoy_binary()?,
        vec![headers_filter(paths::demo_config("headers")?)?],
    );
    o.chain_name = "headers".into();
    o.alternatives = vec![("lua".into(), Alternative::parse("lua.yaml", LUA)?)];
    o.rounds = 2;
    o.requests_per_round = 20;
    o.client_concurrency = 2;
    let report = compare::run(&o, &traffic)?;
    let names: Vec<&str> = report.configs.iter().map(|c| c.name.as_str()).collect();
    ensure!(
        names == ["none", "noop-wasm", "headers", "lua"],
        "{names:?}"
    );
    for c in &report.configs {
        ensure!(
            c.errors == 0,
            "{}: {} errors: {:?}",
            c.name,
            c.errors,
            report.first_errors
        );
        ensure!(c.requests == 40, "{}: {} requests", c.name, c.requests);
        ensure!(
            c.cpu_us_rounds.len() == 2,
            "{}: {:?}",
            c.name,
            c.cpu_us_rounds
        );
        ensure!(
            c.cpu_us_rounds.iter().all(|v| *v > 0.0) && c.cpu_us_mean > 0.0,
            "{}: no worker CPU measured: {:?}",
            c.name,
            c.cpu_us_rounds
        );
        ensure!(c.cpu_us_min <= c.cpu_us_mean && c.cpu_us_mean <= c.cpu_us_max);
        ensure!(c.latency_p50_us > 0.0 && c.latency_p50_us <= c.latency_p99_us);
        ensure!(c.statuses.values().sum::<u64>() == 40);
        ensure!(c.added_vs_none_us.is_some() && c.ratio_vs_noop.is_some());
    }
    let none = report.configs[0].added_vs_none_us.context("none vs none")?;
    ensure!(
        none.mean == 0.0 && none.min == 0.0 && none.max == 0.0,
        "{none:?}"
    );
    let noop = report.configs[1].ratio_vs_noop.context("noop vs noop")?;
    ensure!((noop.mean - 1.0).abs() < 1e-9, "{noop:?}");
    let json = report.to_json();
    ensure!(json["configurations"].as_array().map(Vec::len) == Some(4));
    ensure!(report.to_text().lines().count() >= 6);
    Ok(())
}

#[test]
fn compare_names_the_alternative_envoy_refuses() -> Result<()> {
    let traffic = demo_traffic()?;
    let mut o = compare::CompareOptions::new(paths::envoy_binary()?, Vec::new());
    o.alternatives = vec![(
        "bogus".into(),
        Alternative::parse("bogus.yaml", "- name: envoy.filters.http.no_such_filter\n")?,
    )];
    o.rounds = 1;
    o.requests_per_round = 1;
    o.work_dir = Some(paths::work_dir()?.join("envoy-cli-refused-alternative"));
    let err = refused(
        compare::run(&o, &traffic),
        "Envoy accepted an unknown filter",
    )?;
    let text = err.to_string();
    ensure!(
        text.contains("Envoy (bogus)") && text.contains("envoy.filters.http.no_such_filter"),
        "{text}"
    );
    Ok(())
}

/// Local replies with a body and the filter's own `content-type` (basic-auth's
/// and key-auth's 401/403): Envoy keeps the filter's value and sets
/// `content-length` itself; the harness must predict exactly that.
#[test]
fn credential_filters_local_replies_match_envoy() -> Result<()> {
    let traffic = demo_traffic()?;
    for name in ["basic-auth", "key-auth"] {
        let filter =
            WasmFilter::new(paths::filter_wasm(name)?).with_config(paths::demo_config(name)?);
        let o = options(vec![filter])?;
        let report = diff::run(&o, &traffic, &prediction(&o, None, &traffic)?)?;
        let local = report
            .exchanges
            .iter()
            .filter(|e| !e.predicted_upstream)
            .count();
        ensure!(
            local > 0,
            "{name}: no request of the demo recording was answered locally"
        );
        let differences: Vec<String> = report
            .exchanges
            .iter()
            .flat_map(|e| e.differences.iter().map(move |d| format!("{}: {d}", e.id)))
            .collect();
        ensure!(
            differences.is_empty(),
            "{name}: Envoy and the harness differ:\n{}",
            differences.join("\n")
        );
    }
    Ok(())
}

fn stub(cluster: &str, filter: &str) -> Result<ServiceSpec> {
    let file = paths::root()
        .join("filters")
        .join(filter)
        .join("demo-stub.yaml");
    let (http, _) = tollgate_replay::suite::stub_arg(&format!("{cluster}={}", file.display()))
        .map_err(anyhow::Error::msg)?;
    Ok(ServiceSpec::Stub(
        http.context("the demo stub has no HTTP answer")?,
    ))
}

fn demo_filter(name: &str) -> Result<WasmFilter> {
    Ok(WasmFilter::new(paths::filter_wasm(name)?).with_config(paths::demo_config(name)?))
}

fn no_differences(report: &diff::DiffReport, what: &str) -> Result<()> {
    let differences: Vec<String> = report
        .exchanges
        .iter()
        .flat_map(|e| e.differences.iter().map(move |d| format!("{}: {d}", e.id)))
        .collect();
    ensure!(
        differences.is_empty(),
        "{what}: Envoy and the harness differ:\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// ext-authz calls the `authz` cluster: served by a stub server in Envoy and
/// by the same stub in the prediction; every check reaches the stub server and
/// the allowed headers reach the upstream, the others do not.
#[test]
fn ext_authz_with_its_stub_matches_the_harness() -> Result<()> {
    let traffic = demo_traffic()?;
    let mut o = options(vec![demo_filter("ext-authz")?])?;
    o.services = vec![stub("authz", "ext-authz")?];
    let report = diff::run(&o, &traffic, &prediction(&o, None, &traffic)?)?;
    no_differences(&report, "ext-authz")?;
    let [service] = report.services.as_slice() else {
        anyhow::bail!("one service expected: {:?}", report.services);
    };
    ensure!(service.cluster == "authz" && service.kind == "stub");
    ensure!(
        service.requests.len() == traffic.exchanges.len(),
        "{} checks reached the stub server for {} requests",
        service.requests.len(),
        traffic.exchanges.len()
    );
    ensure!(
        service.requests.iter().all(|r| r.path.starts_with("/check")
            && r.headers.contains(&("host".into(), "authz.local".into()))),
        "{:?}",
        service.requests.first()
    );
    for e in &report.exchanges {
        let seen = e
            .envoy_upstream
            .as_ref()
            .with_context(|| format!("{}: refused (status {})", e.id, e.envoy_response.status))?;
        let has = |n: &str| seen.headers.iter().any(|(k, _)| k == n);
        ensure!(
            seen.headers
                .contains(&("x-auth-user".into(), "demo-user".into()))
                && !has("x-not-allowed"),
            "{}: {:?}",
            e.id,
            seen.headers
        );
    }
    Ok(())
}

/// The same with the authorization service failing (reset, nobody
/// listening): the filter fails closed with its `status_on_error` in both.
#[test]
fn ext_authz_with_a_failing_service_fails_closed_in_both() -> Result<()> {
    let traffic = demo_traffic()?;
    for failure in [
        HttpClusterStub::reset("authz"),
        HttpClusterStub::connect_failure("authz"),
    ] {
        let mut o = options(vec![demo_filter("ext-authz")?])?;
        o.services = vec![ServiceSpec::Stub(failure.clone())];
        let report = diff::run(&o, &traffic, &prediction(&o, None, &traffic)?)?;
        no_differences(&report, &format!("{:?}", failure.answer))?;
        ensure!(
            report
                .exchanges
                .iter()
                .all(|e| e.envoy_response.status == 403 && e.envoy_upstream.is_none()),
            "{:?}: not every request was refused",
            failure.answer
        );
    }
    Ok(())
}

/// jwt-auth fetches its JWKS from the `jwks` cluster: with the demo stub,
/// Envoy and the harness agree on the demo recording (no tokens: refused) and
/// on the jwt requests of traffic/auth.yaml, whose valid tokens reach the
/// upstream only because the JWKS came from the stub server.
#[test]
fn jwt_auth_with_its_stub_matches_the_harness() -> Result<()> {
    let demo = demo_traffic()?;
    let auth_path = paths::root().join("traffic").join("auth.yaml");
    let mut auth = traffic::load(&auth_path)?;
    auth.exchanges.retain(|e| e.id.starts_with("jwt-"));
    ensure!(
        !auth.exchanges.is_empty(),
        "no jwt exchange in {}",
        auth_path.display()
    );
    for (what, traffic) in [("demo.har", &demo), ("auth.yaml", &auth)] {
        let mut o = options(vec![demo_filter("jwt-auth")?])?;
        o.services = vec![stub("jwks", "jwt-auth")?];
        let report = diff::run(&o, traffic, &prediction(&o, None, traffic)?)?;
        no_differences(&report, what)?;
        let fetched = &report.services[0].requests;
        ensure!(
            !fetched.is_empty() && fetched.iter().all(|r| r.path == "/.well-known/jwks.json"),
            "{what}: JWKS fetches {fetched:?}"
        );
        if what == "auth.yaml" {
            for e in &report.exchanges {
                let valid = e.id.contains("-valid");
                ensure!(
                    e.envoy_upstream.is_some() == valid,
                    "{}: upstream reached {} (status {})",
                    e.id,
                    e.envoy_upstream.is_some(),
                    e.envoy_response.status
                );
            }
        }
    }
    Ok(())
}

/// `--compare` with ext-authz and Envoy's native ext_authz: the stub serves
/// `authz` to every configuration (replacing native.yaml's own `authz`), so
/// neither fails closed: every configuration answers each request with the
/// upstream's recorded status, as the router alone does.
#[test]
fn compare_gives_the_wasm_filter_and_the_native_one_the_same_service() -> Result<()> {
    let traffic = demo_traffic()?;
    let mut o =
        compare::CompareOptions::new(paths::envoy_binary()?, vec![demo_filter("ext-authz")?]);
    o.chain_name = "ext-authz".into();
    o.alternatives = vec![(
        "native".into(),
        Alternative::load(&paths::root().join("envoy/ext-authz/native.yaml"))?,
    )];
    o.services = vec![stub("authz", "ext-authz")?];
    o.rounds = 1;
    // Once through the recording per configuration and round.
    o.requests_per_round = traffic.exchanges.len();
    let report = compare::run(&o, &traffic)?;
    let names: Vec<&str> = report.configs.iter().map(|c| c.name.as_str()).collect();
    ensure!(
        names == ["none", "noop-wasm", "ext-authz", "native"],
        "{names:?}"
    );
    let none = &report.configs[0].statuses;
    let mut recorded = std::collections::BTreeMap::<u16, u64>::new();
    for e in &traffic.exchanges {
        if let Some(r) = &e.response {
            *recorded.entry(r.status).or_default() += 1;
        }
    }
    ensure!(none == &recorded, "none: {none:?}, recorded: {recorded:?}");
    for c in &report.configs {
        ensure!(c.errors == 0, "{}: {:?}", c.name, report.first_errors);
        ensure!(
            &c.statuses == none,
            "{} answered {:?} where the router alone answered {none:?}",
            c.name,
            c.statuses
        );
    }
    // Warm-up and one round, for both configurations that check.
    let checks = report.services[0].requests.len();
    ensure!(checks == 4 * traffic.exchanges.len(), "{checks} checks");
    ensure!(report.to_text().contains("cluster authz -> stub"));
    Ok(())
}
