//! Test helpers shared by the filters' unit tests (feature `testing`): reading a filter's
//! deployment files (`envoy/<name>/envoy.yaml`, `envoy/<name>/wasmplugin.yaml`) and checking
//! that they carry exactly its `demo.json`; running a request through a filter; and checking
//! that bad configurations are refused naming the field.

use serde_json::Value;

/// Where, inside an Envoy bootstrap, the wasm filter's `typed_config` sits.
pub const BOOTSTRAP_WASM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/0/typed_config";

/// Parses JSON `text` read from `file`; the error names the file.
pub fn json(text: &str, file: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))
}

/// Parses YAML `text` read from `file`; the error names the file.
pub fn yaml(text: &str, file: &str) -> Result<Value, String> {
    yaml_serde::from_str(text).map_err(|e| format!("{file}: {e}"))
}

/// The value at JSON `pointer` in `value` (read from `file`); the error names both.
pub fn at<'a>(value: &'a Value, pointer: &str, file: &str) -> Result<&'a Value, String> {
    value
        .pointer(pointer)
        .ok_or_else(|| format!("{file}: nothing at {pointer}"))
}

/// Checks the bootstrap `envoy/<name>/envoy.yaml` (text `bootstrap`): its wasm filter loads
/// `target/filters/<name>.wasm` on the V8 runtime and embeds exactly `demo`. Returns the parsed
/// bootstrap and the embedded configuration text.
pub fn check_bootstrap(
    name: &str,
    bootstrap: &str,
    demo: &Value,
) -> Result<(Value, String), String> {
    let file = format!("envoy/{name}/envoy.yaml");
    let file = file.as_str();
    let bootstrap = yaml(bootstrap, file)?;
    let wasm = at(&bootstrap, BOOTSTRAP_WASM, file)?;
    assert_eq!(
        at(wasm, "/config/vm_config/code/local/filename", file)?,
        format!("target/filters/{name}.wasm").as_str()
    );
    assert_eq!(
        at(wasm, "/config/vm_config/runtime", file)?,
        "envoy.wasm.runtime.v8"
    );
    let text = at(wasm, "/config/configuration/value", file)?
        .as_str()
        .ok_or_else(|| format!("{file}: configuration value is not a string"))?
        .to_string();
    let embedded = json(&text, file)?;
    assert_eq!(&embedded, demo);
    Ok((bootstrap, text))
}

/// Checks that the bootstrap defines the cluster named `called` (a JSON string).
pub fn check_cluster(name: &str, bootstrap: &Value, called: &Value) -> Result<(), String> {
    let file = format!("envoy/{name}/envoy.yaml");
    let clusters = at(bootstrap, "/static_resources/clusters", &file)?
        .as_array()
        .ok_or_else(|| format!("{file}: clusters is not a list"))?;
    assert!(
        clusters.iter().any(|c| c.get("name") == Some(called)),
        "{file}: no cluster {called}"
    );
    Ok(())
}

/// Checks the Istio `envoy/<name>/wasmplugin.yaml` (text `plugin`): a `WasmPlugin` that fails
/// closed and carries exactly `demo`. Returns its configuration as JSON text.
pub fn check_wasmplugin(name: &str, plugin: &str, demo: &Value) -> Result<String, String> {
    let file = format!("envoy/{name}/wasmplugin.yaml");
    let file = file.as_str();
    let plugin = yaml(plugin, file)?;
    assert_eq!(at(&plugin, "/kind", file)?, "WasmPlugin");
    assert_eq!(at(&plugin, "/spec/failStrategy", file)?, "FAIL_CLOSE");
    let config = at(&plugin, "/spec/pluginConfig", file)?;
    assert_eq!(config, demo);
    Ok(config.to_string())
}

/// Runs one request's headers through a fresh `F` configured with `json`, on the Envoy route
/// `route`: the headers after it, and the local reply if any.
#[cfg(not(target_family = "wasm"))]
pub fn run_request_headers<F: crate::HttpFilter>(
    json: &str,
    route: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<(crate::HeaderList, Option<crate::LocalReply>), crate::ConfigError> {
    crate::routes::mock::set_route_name(route);
    let config = crate::config::parse::<F::Config>(json.as_bytes())?;
    let mut filter = F::new(std::rc::Rc::new(config));
    let mut list: crate::HeaderList = headers.iter().copied().collect();
    let mut req = crate::Request::new(&mut list);
    filter.on_request_headers(&mut req, true);
    let reply = req.take_local_reply();
    Ok((list, reply))
}

/// Why the configuration `json` is refused by `C`'s parser (the error's one line), or
/// `accepted: <json>` when it is not refused.
pub fn refusal<C: crate::FilterConfig>(json: &str) -> String {
    match crate::config::parse::<C>(json.as_bytes()) {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

/// Each `(json, at)` of `cases` is refused by `C`'s parser with an error starting
/// `bad configuration at <at>`; fails naming the first configuration that is not.
pub fn assert_refused_at<C: crate::FilterConfig>(cases: &[(&str, &str)]) {
    for (json, at) in cases {
        let e = refusal::<C>(json);
        assert!(
            e.starts_with(&format!("bad configuration at {at}")),
            "{json}: {e}"
        );
    }
}
