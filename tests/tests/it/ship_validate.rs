//! `tollgate validate`'s engine against the WasmPlugin CRD in `../shared/istio`:
//! it must agree with the API server on every fixture document, accept every
//! `envoy/*/wasmplugin.yaml` the project ships, and name the field it rejects.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tollgate_ship::validate::{Crd, documents};
use tollgate_tests::paths;

/// `../shared` from the project root (read-only test data).
pub fn shared_dir() -> Result<std::path::PathBuf> {
    let dir = paths::root().join("..").join("shared");
    ensure!(
        dir.is_dir(),
        "{} is missing (the shared test data)",
        dir.display()
    );
    Ok(dir)
}

fn crd() -> Result<Crd> {
    Ok(Crd::load(
        &shared_dir()?.join("istio/wasmplugins.crd.yaml"),
    )?)
}

/// The documents of a fixture file, each with its `_err` fragment (removed from the document).
fn fixture(name: &str) -> Result<Vec<(Value, Option<String>)>> {
    let path = shared_dir()?.join("istio").join(name);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for doc in documents(name, &text)?.into_iter().flatten() {
        let mut doc = doc;
        let err = doc
            .as_object_mut()
            .and_then(|o| o.remove("_err"))
            .and_then(|e| e.as_str().map(str::to_string));
        out.push((doc, err));
    }
    ensure!(!out.is_empty(), "{} has no documents", path.display());
    Ok(out)
}

fn messages(crd: &Crd, doc: &Value) -> Vec<String> {
    crd.validate(doc)
        .iter()
        .map(|e| e.message.clone())
        .collect()
}

#[test]
fn the_crd_loads_with_its_cel_rules() -> Result<()> {
    let crd = crd()?;
    assert_eq!(crd.api_version(), "extensions.istio.io/v1alpha1");
    assert_eq!(crd.kind(), "WasmPlugin");
    // url scheme, env value/valueFrom, one-of attachment, two label-key rules,
    // label value wildcard, targetRef namespace (shared by targetRef and targetRefs).
    assert_eq!(crd.rule_count(), 7);
    Ok(())
}

#[test]
fn every_valid_fixture_is_accepted() -> Result<()> {
    let crd = crd()?;
    let docs = fixture("wasmplugin-valid.yaml")?;
    assert_eq!(docs.len(), 4);
    for (doc, _) in &docs {
        let errors = messages(&crd, doc);
        ensure!(
            errors.is_empty(),
            "{} rejected: {errors:?}",
            doc.pointer("/metadata/name").unwrap_or(&Value::Null)
        );
    }
    Ok(())
}

#[test]
fn every_invalid_fixture_is_rejected_with_the_api_server_message() -> Result<()> {
    let crd = crd()?;
    let docs = fixture("wasmplugin-invalid.yaml")?;
    assert_eq!(docs.len(), 15);
    for (doc, err) in &docs {
        let name = doc
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        let Some(err) = err else {
            bail!("fixture {name} has no _err");
        };
        let errors = messages(&crd, doc);
        ensure!(
            errors.iter().any(|m| m.contains(err.as_str())),
            "{name}: expected a message containing {err:?}, got {errors:?}"
        );
    }
    Ok(())
}

#[test]
fn every_shipped_wasmplugin_is_accepted() -> Result<()> {
    let crd = crd()?;
    let envoy = paths::root().join("envoy");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&envoy)?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("wasmplugin.yaml"))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        for report in crd.validate_file(&path)? {
            ensure!(
                report.errors.is_empty(),
                "{} document {} rejected: {:?}",
                path.display(),
                report.index,
                report.errors
            );
            checked += 1;
        }
    }
    ensure!(checked >= 1, "no envoy/*/wasmplugin.yaml found");
    Ok(())
}

fn yaml(text: &str) -> Value {
    match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("test YAML does not parse: {e}\n{text}"),
    }
}

fn spec(spec_yaml: &str) -> Value {
    let indented: String = spec_yaml.lines().map(|l| format!("  {l}\n")).collect();
    yaml(&format!(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: t\nspec:\n{indented}"
    ))
}

fn assert_rejected(crd: &Crd, doc: &Value, fragment: &str) {
    let errors = messages(crd, doc);
    assert!(
        errors.iter().any(|m| m.contains(fragment)),
        "expected a message containing {fragment:?}, got {errors:?}"
    );
}

#[test]
fn schema_rules_beyond_the_fixtures_name_the_field() -> Result<()> {
    let crd = crd()?;
    assert_rejected(
        &crd,
        &spec("url: http://x\nphase: LATE"),
        "spec.phase: Unsupported value: \"LATE\": supported values: \"UNSPECIFIED_PHASE\", \"AUTHN\", \"AUTHZ\", \"STATS\"",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\nfrobnicate: true"),
        "unknown field \"spec.frobnicate\"",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\npriority: 3000000000"),
        "spec.priority in body must be of type int32",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\npriority: high"),
        "spec.priority in body must be of type integer: \"string\"",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\nmatch:\n- ports:\n  - number: 70000"),
        "spec.match[0].ports[0].number in body should be less than or equal to 65535",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\nmatch:\n- ports:\n  - number: 80\n  - number: 80"),
        "spec.match[0].ports[1]: Duplicate value",
    );
    let refs: String = (0..17)
        .map(|i| format!("- kind: Gateway\n  name: g{i}\n"))
        .collect();
    assert_rejected(
        &crd,
        &spec(&format!("url: http://x\ntargetRefs:\n{refs}")),
        "spec.targetRefs: Too many: 17: must have at most 16 items",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\ntargetRefs:\n- kind: Gateway\n  name: g\n  namespace: other"),
        "spec.targetRefs[0].namespace: Invalid value: \"string\": cross namespace referencing is not currently supported",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\ntargetRefs:\n- kind: 9Gateway\n  name: g"),
        "spec.targetRefs[0].kind in body should match",
    );
    assert_rejected(
        &crd,
        &spec(
            "url: http://x\nselector:\n  matchLabels:\n    app: a\ntargetRefs:\n- kind: Gateway\n  name: g",
        ),
        "spec: Invalid value: \"object\": only one of targetRefs or selector can be set",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\nselector:\n  matchLabels:\n    \"\": a"),
        "spec.selector.matchLabels: Invalid value: \"object\": key must not be empty",
    );
    assert_rejected(
        &crd,
        &spec(&format!(
            "url: http://x\nselector:\n  matchLabels:\n    app: {}",
            "a".repeat(64)
        )),
        "spec.selector.matchLabels.app in body should be at most 63 chars long",
    );
    assert_rejected(
        &crd,
        &spec("url: http://x\nvmConfig:\n  env:\n  - value: v"),
        "spec.vmConfig.env[0].name: Required value",
    );
    // Neither a request URI nor one after prefixing http:// (bad escape in the host).
    assert_rejected(&crd, &spec("url: \"%zz\""), "url must have schema one of");
    assert_rejected(
        &crd,
        &spec("url: \"ftp://example.com/f.wasm\""),
        "url must have schema one of",
    );
    assert_rejected(
        &crd,
        &yaml("apiVersion: v1\nkind: WasmPlugin\nmetadata:\n  name: t\nspec:\n  url: http://x"),
        "apiVersion: Unsupported value: \"v1\"",
    );
    assert_rejected(
        &crd,
        &yaml(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {}\nspec:\n  url: http://x",
        ),
        "metadata.name: Required value",
    );
    assert_rejected(
        &crd,
        &yaml("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: t"),
        "spec: Required value",
    );
    Ok(())
}

#[test]
fn accepted_shapes_beyond_the_fixtures() -> Result<()> {
    let crd = crd()?;
    for ok in [
        "url: oci://ghcr.io/tollgate/headers:0.1.0\npriority: null",
        "url: oci://ghcr.io/tollgate/headers:0.1.0\npriority: -5\nfailStrategy: FAIL_OPEN",
        "url: https://example.com/f.wasm\nsha256: \"\"",
        "url: ghcr.io/tollgate/headers:0.1.0",
        // Go's ParseRequestURI rejects the host, but "http://" + it parses (host "http:"),
        // so the rule's fallback accepts it, as the API server does.
        "url: \"http://host:port/x\"",
        "url: file:///opt/f.wasm\ntargetRefs:\n- group: gateway.networking.k8s.io\n  kind: Gateway\n  name: gw\n  namespace: \"\"",
        "url: http://x\nmatch:\n- mode: SERVER\n  ports:\n  - number: 80\n  - number: 443",
        "url: http://x\npluginConfig:\n  anything:\n    goes: [1, {deep: true}]",
    ] {
        let errors = messages(&crd, &spec(ok));
        ensure!(errors.is_empty(), "{ok:?} rejected: {errors:?}");
    }
    Ok(())
}

#[test]
fn bad_input_files_are_errors_naming_the_file() -> Result<()> {
    let crd = crd()?;
    let dir = paths::work_dir()?;
    let bad = dir.join("ship-validate-not-yaml.yaml");
    std::fs::write(&bad, "spec: [unclosed")?;
    let message = match crd.validate_file(&bad) {
        Ok(r) => bail!("a broken file validated: {r:?}"),
        Err(e) => e.to_string(),
    };
    ensure!(message.contains("ship-validate-not-yaml.yaml"), "{message}");
    let missing = dir.join("ship-validate-missing.yaml");
    let message = match crd.validate_file(&missing) {
        Ok(r) => bail!("a missing file validated: {r:?}"),
        Err(e) => e.to_string(),
    };
    ensure!(message.contains("ship-validate-missing.yaml"), "{message}");
    Ok(())
}

/// `tollgate manifest`'s WasmPlugins pass the same validation, in every attachment form.
#[test]
fn generated_manifests_are_accepted() -> Result<()> {
    use tollgate_ship::manifest::{
        Attachment, FailStrategy, Mode, Phase, PluginManifest, TargetRef, TrafficMatch,
    };
    let crd = crd()?;
    let config = paths::demo_config("headers")?;
    let mut plugin =
        PluginManifest::new("headers", "oci://ghcr.io/tollgate/headers:0.1.0", &config)?;
    plugin.sha256 = Some("ab".repeat(32));
    plugin.phase = Phase::Authn;
    plugin.priority = Some(-3);
    plugin.fail_strategy = FailStrategy::Open;
    plugin.matches = vec![TrafficMatch {
        mode: Some(Mode::Server),
        ports: vec![80, 8080],
    }];
    let check = |plugin: &PluginManifest| -> Result<()> {
        let text = plugin.to_yaml()?;
        let reports = crd.validate_text("generated", &text)?;
        ensure!(
            reports.len() == 1 && reports[0].errors.is_empty(),
            "{text}\n{reports:?}"
        );
        let doc: Value = yaml_serde::from_str(&text)?;
        let demo: Value = serde_json::from_str(&config)?;
        ensure!(
            doc["spec"]["pluginConfig"] == demo,
            "pluginConfig is not demo.json"
        );
        Ok(())
    };
    check(&plugin)?;
    plugin.attachment = Attachment::TargetRefs(vec![
        "Gateway/public"
            .parse::<TargetRef>()
            .map_err(anyhow::Error::msg)?,
    ]);
    check(&plugin)?;
    plugin.attachment = Attachment::Namespace;
    check(&plugin)?;
    // A sha256 that is not 64 hex digits is caught by the schema, naming the field.
    plugin.sha256 = Some("sha256:abc".into());
    let reports = crd.validate_text("generated", &plugin.to_yaml()?)?;
    ensure!(
        reports[0].errors.iter().any(|e| e.path == "spec.sha256"),
        "{reports:?}"
    );
    Ok(())
}
