//! `envoy/chain/envoy.yaml`: key-auth, basic-auth and headers chained in one
//! real Envoy. Each auth filter guards its own paths, the header transforms
//! run only on admitted requests, after the credentials were consumed.
//! key-auth reports its consumer in `x-api-consumer` there: with a shared
//! `x-consumer`, basic-auth (which scrubs that header from every request)
//! would erase it.

use anyhow::{Result, ensure};
use serde_json::Value;
use tollgate_harness::traffic::HttpResponse;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::http1::header;
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;

/// The chained filters, in order.
const CHAIN: [&str; 3] = ["key-auth", "basic-auth", "headers"];

fn chain_config() -> Result<EnvoyConfig> {
    EnvoyConfig::load(&paths::envoy_config("chain"))
}

#[test]
fn chain_carries_each_filters_demo_json_in_order() -> Result<()> {
    let config = chain_config()?;
    let embedded = config.plugin_configurations();
    ensure!(
        embedded.len() == CHAIN.len(),
        "expected {} plugins, found {}",
        CHAIN.len(),
        embedded.len()
    );
    let names: Vec<String> = config
        .value()
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            f.pointer("/typed_config/config/root_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    ensure!(names == CHAIN, "chain order {names:?}");
    for (name, text) in CHAIN.iter().zip(&embedded) {
        let embedded: Value = serde_json::from_str(text)?;
        let mut demo: Value = serde_json::from_str(&paths::demo_config(name)?)?;
        if *name == "key-auth" {
            // The one documented change: its own consumer header (see the file's comment).
            demo["consumer_header"] = Value::from("x-api-consumer");
        }
        ensure!(
            embedded == demo,
            "envoy/chain/envoy.yaml's {name} configuration differs from filters/{name}/demo.json"
        );
    }
    Ok(())
}

fn basic(credentials: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

#[test]
fn the_chain_authenticates_then_transforms_in_envoy() -> Result<()> {
    let upstream = Upstream::start(HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"origin".to_vec(),
    })?;
    let mut config = chain_config()?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?;
    config.use_filters_from(&paths::filters_dir()?)?;
    let envoy = Envoy::start(&config, "chain")?;
    let send = |path: &str, headers: &[(&str, &str)]| {
        client::send(
            envoy.listener(),
            &client::request("GET", "api.example.com", path, headers, b""),
        )
    };
    envoy.explain((|| {
        // Neither auth filter covers /public: it passes both, headers transforms it.
        let r = send("/public", &[])?;
        ensure!(r.status == 200, "/public: {}", r.status);
        ensure!(
            header(&r.headers, "x-tollgate") == Some("demo"),
            "/public response {:?}",
            r.headers
        );
        let got = upstream.take_requests();
        ensure!(
            got.len() == 1 && header(&got[0].headers, "x-tollgate") == Some("demo"),
            "/public upstream {got:?}"
        );

        // basic-auth guards /v1/reports/: refused without a password, before headers runs.
        let r = send("/v1/reports/q", &[])?;
        ensure!(
            r.status == 401,
            "/v1/reports/ without credentials: {}",
            r.status
        );
        ensure!(
            upstream.take_requests().is_empty(),
            "a refused request reached the upstream"
        );
        let auth = basic("demo-client:demo-secret-do-not-use");
        let r = send("/v1/reports/q", &[("authorization", auth.as_str())])?;
        ensure!(
            r.status == 200,
            "/v1/reports/ with a password: {}",
            r.status
        );
        let got = upstream.take_requests();
        ensure!(got.len() == 1, "upstream got {got:?}");
        ensure!(
            header(&got[0].headers, "x-consumer") == Some("demo-client"),
            "{:?}",
            got[0].headers
        );
        ensure!(
            header(&got[0].headers, "authorization").is_none(),
            "the password reached the upstream"
        );
        ensure!(
            header(&got[0].headers, "x-tollgate") == Some("demo"),
            "headers did not run after basic-auth"
        );

        // key-auth guards /v1/webhooks/: refused without a key, admitted with one.
        let r = send("/v1/webhooks/x", &[])?;
        ensure!(r.status == 401, "/v1/webhooks/ without a key: {}", r.status);
        ensure!(
            upstream.take_requests().is_empty(),
            "a refused request reached the upstream"
        );
        let r = send(
            "/v1/webhooks/x",
            &[("x-api-key", "tg_demo_partner_7c1e9a4f")],
        )?;
        ensure!(r.status == 200, "/v1/webhooks/ with a key: {}", r.status);
        let got = upstream.take_requests();
        ensure!(got.len() == 1, "upstream got {got:?}");
        ensure!(
            header(&got[0].headers, "x-api-consumer") == Some("payments-provider"),
            "{:?}",
            got[0].headers
        );
        ensure!(
            header(&got[0].headers, "x-consumer").is_none(),
            "{:?}",
            got[0].headers
        );
        ensure!(
            header(&got[0].headers, "x-api-key").is_none(),
            "the key reached the upstream"
        );
        ensure!(
            header(&got[0].headers, "x-tollgate") == Some("demo"),
            "headers did not run after key-auth"
        );
        Ok(())
    })())
}
