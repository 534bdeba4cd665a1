//! Configuration schemas in the built filters (`cargo xtask build` stores each in the module's
//! custom section `tollgate.config_schema`): every filter under `filters/` carries one, its demo
//! configuration and every shipped manifest's `pluginConfig` fit it, a configuration of the
//! wrong type is refused naming the field, and a real Envoy still loads every module with the
//! section and runs it.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_ship::schema::{self, SECTION};
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::HttpResponse;

/// The folder names under `filters/` (each a filter crate), sorted.
fn filter_names() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(paths::root().join("filters"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    ensure!(!names.is_empty(), "no filters/*/Cargo.toml");
    Ok(names)
}

fn schema_of(name: &str) -> Result<Value> {
    let wasm_path = paths::filter_wasm(name)?;
    let wasm = std::fs::read(&wasm_path)?;
    schema::from_module(name, &wasm)?.with_context(|| {
        format!(
            "{} has no custom section {SECTION}: filters/{name} needs examples/schema.rs and the `schema` feature (see filters/headers), then `cargo xtask build`",
            wasm_path.display()
        )
    })
}

#[test]
fn every_filter_carries_a_schema_its_configurations_fit() -> Result<()> {
    for name in filter_names()? {
        let schema = schema_of(&name)?;
        ensure!(
            schema["title"] == name.as_str(),
            "{name}: title {}",
            schema["title"]
        );
        ensure!(
            schema["$schema"] == "https://json-schema.org/draft/2020-12/schema",
            "{name}: {}",
            schema["$schema"]
        );
        ensure!(
            schema["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name}: the configuration type's doc comment is the schema's description"
        );
        let demo: Value = serde_json::from_str(&paths::demo_config(&name)?)?;
        let errors = schema::check(&schema, &demo, "demo.json");
        ensure!(
            errors.is_empty(),
            "{name}: demo.json does not fit: {errors:?}"
        );
        for (file, pointer) in [
            ("wasmplugin.yaml", "/spec/pluginConfig"),
            ("trafficextension.yaml", "/spec/wasm/pluginConfig"),
        ] {
            let path = paths::root().join("envoy").join(&name).join(file);
            if !path.is_file() {
                continue;
            }
            let doc: Value = yaml_serde::from_str(&std::fs::read_to_string(&path)?)?;
            let config = doc.pointer(pointer).context("no pluginConfig")?;
            let errors = schema::check(&schema, config, pointer);
            ensure!(errors.is_empty(), "{}: {errors:?}", path.display());
        }
    }
    Ok(())
}

/// The schema's SECTION is the SDK's.
#[test]
fn the_section_name_is_the_sdks() {
    assert_eq!(SECTION, "tollgate.config_schema");
}

/// What the proxy would refuse at start-up is refused here first, naming the field.
#[test]
fn wrong_types_are_refused_naming_the_field() -> Result<()> {
    let headers = schema_of("headers")?;
    let check = |schema: &Value, json: &str| -> Result<Vec<String>> {
        Ok(
            schema::check(schema, &serde_json::from_str(json)?, "spec.pluginConfig")
                .into_iter()
                .map(|e| e.message)
                .collect(),
        )
    };
    let errors = check(
        &headers,
        r#"{"request": {"set": [{"name": "x-a", "value": 7}]}}"#,
    )?;
    ensure!(
        errors == ["spec.pluginConfig.request.set[0].value: expected string, found integer 7"],
        "{errors:?}"
    );
    let errors = check(&headers, r#"{"request": {"sett": []}}"#)?;
    ensure!(
        errors.len() == 1 && errors[0].starts_with("spec.pluginConfig.request.sett: unknown field"),
        "{errors:?}"
    );
    let errors = check(
        &headers,
        r#"{"rules": [{"when": [{"present": "bad name"}]}]}"#,
    )?;
    ensure!(
        errors.len() == 1
            && errors[0].starts_with(
                "spec.pluginConfig.rules[0].when[0].present: \"bad name\" does not match"
            ),
        "{errors:?}"
    );
    let ext_authz = schema_of("ext-authz")?;
    let errors = check(
        &ext_authz,
        r#"{"cluster": "authz", "status_on_error": 70000}"#,
    )?;
    ensure!(
        errors == ["spec.pluginConfig.status_on_error: 70000 is above the maximum 65535"],
        "{errors:?}"
    );
    let errors = check(&ext_authz, r#"{"timeout_ms": 5}"#)?;
    ensure!(
        errors == ["spec.pluginConfig.cluster: missing (required)"],
        "{errors:?}"
    );
    Ok(())
}

/// Envoy (V8) ignores the custom section: every built module, section included, loads with its
/// demo configuration and answers a request.
#[test]
fn envoy_loads_modules_that_carry_the_schema() -> Result<()> {
    let upstream = Upstream::start(HttpResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"ok".to_vec(),
    })?;
    // headers: its demo configuration stamps responses, so the request proves it ran.
    let wasm = std::fs::read(paths::filter_wasm("headers")?)?;
    ensure!(
        schema::from_module("headers", &wasm)?.is_some(),
        "headers.wasm has no schema"
    );
    let config = EnvoyConfig::for_filter("headers", upstream.addr())?;
    let envoy = Envoy::start(&config, "schema-section")?;
    let request = client::request("GET", "shop.example.com", "/", &[], b"");
    let response = envoy.explain(client::send(envoy.listener(), &request))?;
    ensure!(response.status == 200, "{response:?}");
    ensure!(
        response
            .headers
            .iter()
            .any(|(n, v)| n == "x-tollgate" && v == "demo"),
        "the filter did not run: {:?}",
        response.headers
    );
    Ok(())
}
