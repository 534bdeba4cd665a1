//! Envoy fetching a filter over HTTP: `vm_config.code.remote` with `http_uri`
//! and `sha256`, from a module server on 127.0.0.1 (the test upstream serving
//! the built `headers.wasm`). The bootstrap comes from `tollgate manifest`'s
//! library ([`envoy_bootstrap`]). With the right sha256 the filter runs; with
//! a wrong one Envoy 1.40 still starts but the plugin fails to load, so a
//! fail-closed plugin answers every request 503 and a fail-open one lets it
//! through unfiltered.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_ship::manifest::{EnvoyCode, envoy_bootstrap};
use tollgate_ship::oci::sha256_hex;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::header;
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::HttpResponse;

const FILTER: &str = "headers";

fn module_server(wasm: Vec<u8>) -> Result<Upstream> {
    Upstream::start(HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/wasm".into())],
        body: wasm,
    })
}

fn origin() -> Result<Upstream> {
    Upstream::start(HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"origin".to_vec(),
    })
}

/// The generated bootstrap, its module URL pointing at `server`, ports ephemeral,
/// `upstream` routed to `origin`; `fail_open` set on the plugin when asked.
fn config(
    server: &Upstream,
    origin: &Upstream,
    sha256: &str,
    label: &str,
    fail_open: bool,
) -> Result<EnvoyConfig> {
    let code = EnvoyCode::Remote {
        uri: format!("http://{}/filters/{FILTER}.wasm", server.addr()),
        sha256: sha256.to_string(),
    };
    let mut bootstrap = envoy_bootstrap(FILTER, &paths::demo_config(FILTER)?, &code)?;
    if fail_open {
        let plugin = bootstrap
            .pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/0/typed_config/config")
            .and_then(Value::as_object_mut)
            .context("no wasm plugin config in the generated bootstrap")?;
        plugin.insert("fail_open".into(), Value::Bool(true));
    }
    let path = paths::work_dir()?.join(format!("{label}-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string_pretty(&bootstrap)?)?;
    let mut config = EnvoyConfig::load(&path)?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", origin.addr())?;
    Ok(config)
}

fn fetches(server: &Upstream) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn envoy_fetches_the_filter_and_serves_through_it() -> Result<()> {
    let wasm = std::fs::read(paths::filter_wasm(FILTER)?)?;
    let server = module_server(wasm.clone())?;
    let origin = origin()?;
    let config = config(&server, &origin, &sha256_hex(&wasm), "remote-good", false)?;
    let envoy = Envoy::start(&config, "remote-good")?;
    envoy.explain((|| {
        let fetched = fetches(&server);
        ensure!(
            !fetched.is_empty() && fetched.iter().all(|f| f == "GET /filters/headers.wasm"),
            "the module server saw {fetched:?}"
        );
        let response = client::send(
            envoy.listener(),
            &client::request("GET", "shop.example", "/", &[("x-debug-trace", "1")], b""),
        )?;
        ensure!(response.status == 200, "status {}", response.status);
        ensure!(
            response.body == b"origin",
            "body {:?}",
            String::from_utf8_lossy(&response.body)
        );
        ensure!(
            header(&response.headers, "x-tollgate") == Some("demo"),
            "response headers {:?}",
            response.headers
        );
        ensure!(header(&response.headers, "x-content-type-options") == Some("nosniff"));
        let received = origin.requests();
        ensure!(
            received.len() == 1,
            "the origin got {} requests",
            received.len()
        );
        ensure!(
            header(&received[0].headers, "x-tollgate") == Some("demo"),
            "upstream headers {:?}",
            received[0].headers
        );
        ensure!(header(&received[0].headers, "x-original-host") == Some("shop.example"));
        ensure!(
            header(&received[0].headers, "x-debug-trace").is_none(),
            "x-debug-* not removed"
        );
        Ok(())
    })())
}

/// A sha256 that is not the module's (it is the sha256 of the empty string).
const WRONG_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn a_module_with_the_wrong_sha256_is_refused_and_fails_closed() -> Result<()> {
    let wasm = std::fs::read(paths::filter_wasm(FILTER)?)?;
    ensure!(sha256_hex(&wasm) != WRONG_SHA256);
    let server = module_server(wasm)?;
    let origin = origin()?;
    let config = config(&server, &origin, WRONG_SHA256, "remote-bad-sha", false)?;
    // Envoy 1.40 does not exit: it retries the fetch, gives up, starts, and the
    // fail-closed plugin answers every request itself.
    let envoy = Envoy::start(&config, "remote-bad-sha")?;
    envoy.explain((|| {
        ensure!(
            !fetches(&server).is_empty(),
            "Envoy never fetched the module"
        );
        let response = client::send(
            envoy.listener(),
            &client::request("GET", "shop.example", "/", &[], b""),
        )?;
        ensure!(
            response.status == 503,
            "status {} (expected 503 from the fail-closed plugin)",
            response.status
        );
        ensure!(
            header(&response.headers, "x-tollgate").is_none(),
            "the filter ran: {:?}",
            response.headers
        );
        ensure!(origin.requests().is_empty(), "a request reached the origin");
        let log = envoy.log();
        ensure!(
            log.contains("Plugin headers failed to load"),
            "Envoy's log does not say the plugin failed to load"
        );
        ensure!(
            log.contains("fail closed"),
            "Envoy's log does not mention failing closed"
        );
        Ok(())
    })())
}

#[test]
fn a_module_with_the_wrong_sha256_fails_open_when_configured() -> Result<()> {
    let wasm = std::fs::read(paths::filter_wasm(FILTER)?)?;
    let server = module_server(wasm)?;
    let origin = origin()?;
    let config = config(&server, &origin, WRONG_SHA256, "remote-bad-sha-open", true)?;
    let envoy = Envoy::start(&config, "remote-bad-sha-open")?;
    envoy.explain((|| {
        let response = client::send(
            envoy.listener(),
            &client::request("GET", "shop.example", "/", &[], b""),
        )?;
        ensure!(response.status == 200, "status {}", response.status);
        ensure!(response.body == b"origin");
        ensure!(
            header(&response.headers, "x-tollgate").is_none(),
            "the refused module ran anyway"
        );
        let received = origin.requests();
        ensure!(
            received.len() == 1 && header(&received[0].headers, "x-tollgate").is_none(),
            "upstream saw {received:?}"
        );
        Ok(())
    })())
}
