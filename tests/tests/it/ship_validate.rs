//! `tollgate validate`'s engine against the WasmPlugin and TrafficExtension CRDs in
//! `../shared/istio` and Envoy Gateway's EnvoyExtensionPolicy CRD in `../shared/envoy-gateway`:
//! it must agree with the API server on every fixture document of both Istio CRDs, accept every
//! `envoy/*/wasmplugin.yaml` and `trafficextension.yaml` the project ships and every manifest
//! `tollgate manifest` writes, and name the field it rejects.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tollgate_ship::validate::{Crd, CrdSet, documents};
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

fn traffic_extension_crd() -> Result<Crd> {
    Ok(Crd::load(
        &shared_dir()?.join("istio/trafficextensions.crd.yaml"),
    )?)
}

fn gateway_crd() -> Result<Crd> {
    Ok(Crd::load(
        &shared_dir()?.join("envoy-gateway/envoyextensionpolicies.crd.yaml"),
    )?)
}

/// The three CRDs `tollgate validate` loads by default, dispatched by `kind`.
fn crd_set() -> Result<CrdSet> {
    Ok(CrdSet::new(vec![
        crd()?,
        traffic_extension_crd()?,
        gateway_crd()?,
    ]))
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

/// Every document of `file` is accepted, by its own CRD and by the set (dispatch by `kind`).
fn check_valid_fixture(file: &str, crd: &Crd, expected: usize) -> Result<()> {
    let set = crd_set()?;
    let docs = fixture(file)?;
    assert_eq!(docs.len(), expected, "{file}");
    for (doc, _) in &docs {
        for errors in [
            messages(crd, doc),
            set.validate(doc)
                .iter()
                .map(|e| e.message.clone())
                .collect(),
        ] {
            ensure!(
                errors.is_empty(),
                "{file}: {} rejected: {errors:?}",
                doc.pointer("/metadata/name").unwrap_or(&Value::Null)
            );
        }
    }
    Ok(())
}

/// Every document of `file` is rejected with a message containing its `_err`.
fn check_invalid_fixture(file: &str, crd: &Crd, expected: usize) -> Result<()> {
    let set = crd_set()?;
    let docs = fixture(file)?;
    assert_eq!(docs.len(), expected, "{file}");
    for (doc, err) in &docs {
        let name = doc
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        let Some(err) = err else {
            bail!("{file}: fixture {name} has no _err");
        };
        for errors in [
            messages(crd, doc),
            set.validate(doc)
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>(),
        ] {
            ensure!(
                errors.iter().any(|m| m.contains(err.as_str())),
                "{file}: {name}: expected a message containing {err:?}, got {errors:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn every_valid_fixture_is_accepted() -> Result<()> {
    check_valid_fixture("wasmplugin-valid.yaml", &crd()?, 4)
}

#[test]
fn every_invalid_fixture_is_rejected_with_the_api_server_message() -> Result<()> {
    check_invalid_fixture("wasmplugin-invalid.yaml", &crd()?, 15)
}

#[test]
fn the_traffic_extension_crd_loads_with_its_cel_rules() -> Result<()> {
    let crd = traffic_extension_crd()?;
    assert_eq!(crd.api_version(), "extensions.istio.io/v1alpha1");
    assert_eq!(crd.kind(), "TrafficExtension");
    // url scheme, env value/valueFrom, one-of attachment, wasm xor lua, two label-key rules,
    // label value wildcard, targetRef namespace.
    assert_eq!(crd.rule_count(), 8);
    Ok(())
}

#[test]
fn every_valid_traffic_extension_fixture_is_accepted() -> Result<()> {
    check_valid_fixture("trafficextension-valid.yaml", &traffic_extension_crd()?, 4)
}

#[test]
fn every_invalid_traffic_extension_fixture_is_rejected_with_the_api_server_message() -> Result<()> {
    check_invalid_fixture(
        "trafficextension-invalid.yaml",
        &traffic_extension_crd()?,
        10,
    )
}

/// A WasmPlugin fixture is not a TrafficExtension: the set checks each by its own `kind`,
/// and a kind it does not know is refused naming the ones it does.
#[test]
fn the_set_checks_each_document_by_its_kind() -> Result<()> {
    let set = crd_set()?;
    assert_eq!(
        set.kinds(),
        ["WasmPlugin", "TrafficExtension", "EnvoyExtensionPolicy"]
    );
    // A valid WasmPlugin spec under kind TrafficExtension: `url` is not a TrafficExtension field.
    let (mut doc, _) = fixture("wasmplugin-valid.yaml")?.remove(0);
    doc["kind"] = Value::from("TrafficExtension");
    let errors: Vec<String> = set.validate(&doc).into_iter().map(|e| e.message).collect();
    ensure!(
        errors
            .iter()
            .any(|m| m.contains("unknown field \"spec.url\"")),
        "{errors:?}"
    );
    doc["kind"] = Value::from("Gateway");
    let errors: Vec<String> = set.validate(&doc).into_iter().map(|e| e.message).collect();
    ensure!(
        errors
            == [
                "kind: Unsupported value: \"Gateway\": supported values: \"WasmPlugin\", \"TrafficExtension\", \"EnvoyExtensionPolicy\""
            ],
        "{errors:?}"
    );
    Ok(())
}

/// Every `envoy/<name>/` with a `wasmplugin.yaml` also ships a `trafficextension.yaml`; both are
/// accepted, and they carry the same module, plugin, phase, priority, attachment and configuration.
#[test]
fn every_shipped_wasmplugin_and_traffic_extension_is_accepted() -> Result<()> {
    let set = crd_set()?;
    let envoy = paths::root().join("envoy");
    let mut dirs: Vec<_> = std::fs::read_dir(&envoy)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("wasmplugin.yaml").is_file())
        .collect();
    dirs.sort();
    ensure!(!dirs.is_empty(), "no envoy/*/wasmplugin.yaml found");
    for dir in dirs {
        let mut specs = Vec::new();
        for (file, kind) in [
            ("wasmplugin.yaml", "WasmPlugin"),
            ("trafficextension.yaml", "TrafficExtension"),
        ] {
            let path = dir.join(file);
            ensure!(path.is_file(), "{} is missing", path.display());
            let reports = set.validate_file(&path)?;
            ensure!(
                reports.len() == 1,
                "{}: one document expected",
                path.display()
            );
            let report = &reports[0];
            ensure!(
                report.errors.is_empty() && report.kind.as_deref() == Some(kind),
                "{} rejected: {:?} (kind {:?})",
                path.display(),
                report.errors,
                report.kind
            );
            let text = std::fs::read_to_string(&path)?;
            let doc: Value = yaml_serde::from_str(&text)?;
            specs.push(doc);
        }
        let (plugin, extension) = (&specs[0]["spec"], &specs[1]["spec"]);
        for field in [
            "url",
            "sha256",
            "imagePullPolicy",
            "pluginName",
            "type",
            "failStrategy",
            "pluginConfig",
        ] {
            ensure!(
                plugin.get(field) == extension["wasm"].get(field),
                "{}: spec.{field} differs from spec.wasm.{field}",
                dir.display()
            );
        }
        for field in ["selector", "targetRefs", "phase", "priority", "match"] {
            ensure!(
                plugin.get(field) == extension.get(field),
                "{}: spec.{field} differs",
                dir.display()
            );
        }
        ensure!(
            specs[0]["metadata"] == specs[1]["metadata"],
            "{}: metadata differs",
            dir.display()
        );
    }
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

/// `tollgate manifest --kind trafficextension` passes the TrafficExtension CRD in every
/// attachment form, with the configuration under `spec.wasm.pluginConfig`.
#[test]
fn generated_traffic_extensions_are_accepted() -> Result<()> {
    use tollgate_ship::manifest::{
        Attachment, FailStrategy, ManifestKind, Mode, Phase, PluginManifest, TargetRef,
        TrafficMatch,
    };
    let set = crd_set()?;
    let config = paths::demo_config("headers")?;
    let demo: Value = serde_json::from_str(&config)?;
    let mut plugin =
        PluginManifest::new("headers", "oci://ghcr.io/tollgate/headers:0.1.0", &config)?;
    plugin.sha256 = Some("ab".repeat(32));
    plugin.phase = Phase::Authz;
    plugin.priority = Some(7);
    plugin.fail_strategy = FailStrategy::Open;
    plugin.matches = vec![TrafficMatch {
        mode: Some(Mode::ClientAndServer),
        ports: vec![443],
    }];
    let attachments = [
        plugin.attachment.clone(),
        Attachment::TargetRefs(vec![
            "Gateway/public"
                .parse::<TargetRef>()
                .map_err(anyhow::Error::msg)?,
        ]),
        Attachment::Namespace,
    ];
    for attachment in attachments {
        plugin.attachment = attachment;
        let doc = plugin.resource(ManifestKind::TrafficExtension)?;
        let errors = set.validate(&doc);
        ensure!(errors.is_empty(), "{doc:#}\n{errors:?}");
        ensure!(doc["kind"] == "TrafficExtension");
        ensure!(doc["spec"]["wasm"]["pluginConfig"] == demo);
        ensure!(doc["spec"]["phase"] == "AUTHZ" && doc["spec"]["priority"] == 7);
        ensure!(doc["spec"]["wasm"]["failStrategy"] == "FAIL_OPEN");
    }
    // The schema's sha256 pattern names the field under `wasm`.
    plugin.sha256 = Some("sha256:abc".into());
    let errors = set.validate(&plugin.resource(ManifestKind::TrafficExtension)?);
    ensure!(
        errors.iter().any(|e| e.path == "spec.wasm.sha256"),
        "{errors:?}"
    );
    Ok(())
}

fn gateway_policy(url: &str, options: &tollgate_ship::manifest::GatewayOptions) -> Result<Value> {
    use tollgate_ship::manifest::{Attachment, FailStrategy, PluginManifest, TargetRef};
    let config = paths::demo_config("headers")?;
    let mut plugin = PluginManifest::new("headers", url, &config)?;
    plugin.sha256 = Some("cd".repeat(32));
    plugin.fail_strategy = FailStrategy::Open;
    plugin.attachment = Attachment::TargetRefs(vec![
        "Gateway/eg"
            .parse::<TargetRef>()
            .map_err(anyhow::Error::msg)?,
        "gateway.networking.k8s.io/HTTPRoute/backend"
            .parse::<TargetRef>()
            .map_err(anyhow::Error::msg)?,
    ]);
    Ok(plugin.envoy_extension_policy(options)?)
}

/// `tollgate manifest --kind envoyextensionpolicy` is accepted by Envoy Gateway's CRD (schema
/// and CEL rules) with code from an OCI image and from an HTTP URL, and says what was asked.
#[test]
fn generated_envoy_extension_policies_are_accepted_by_the_envoy_gateway_crd() -> Result<()> {
    use tollgate_ship::manifest::{GatewayOptions, PullPolicy};
    let crd = gateway_crd()?;
    assert_eq!(crd.api_version(), "gateway.envoyproxy.io/v1alpha1");
    assert_eq!(crd.kind(), "EnvoyExtensionPolicy");
    let demo: Value = serde_json::from_str(&paths::demo_config("headers")?)?;
    let options = GatewayOptions {
        pull_policy: Some(PullPolicy::Always),
        env_host_keys: vec!["POD_NAME".into(), "HOSTNAME".into()],
    };
    let image = gateway_policy("oci://ghcr.io/tollgate/headers:0.1.0", &options)?;
    let http = gateway_policy(
        "https://downloads.example.com/headers.wasm",
        &GatewayOptions::default(),
    )?;
    for doc in [&image, &http] {
        let errors = messages(&crd, doc);
        ensure!(errors.is_empty(), "{doc:#}\n{errors:?}");
        let wasm = &doc["spec"]["wasm"][0];
        ensure!(wasm["rootID"] == "headers" && wasm["name"] == "headers");
        ensure!(wasm["failOpen"] == true);
        ensure!(wasm["config"] == demo);
        ensure!(doc["spec"]["targetRefs"][0]["group"] == "gateway.networking.k8s.io");
    }
    let code = &image["spec"]["wasm"][0]["code"];
    ensure!(code["type"] == "Image", "{code}");
    ensure!(
        code["image"]["url"] == "ghcr.io/tollgate/headers:0.1.0",
        "{code}"
    );
    ensure!(code["image"]["sha256"] == "cd".repeat(32));
    ensure!(code["pullPolicy"] == "Always");
    ensure!(
        image["spec"]["wasm"][0]["env"]["hostKeys"] == serde_json::json!(["POD_NAME", "HOSTNAME"])
    );
    let code = &http["spec"]["wasm"][0]["code"];
    ensure!(
        code["type"] == "HTTP"
            && code["http"]["url"] == "https://downloads.example.com/headers.wasm",
        "{code}"
    );
    ensure!(code.get("pullPolicy").is_none() && http["spec"]["wasm"][0].get("env").is_none());
    Ok(())
}

/// The Envoy Gateway CRD's rules really run: shapes Envoy Gateway refuses are refused, naming
/// the field; and shapes it cannot express are refused by the generator, not dropped.
#[test]
fn envoy_extension_policy_mistakes_are_named() -> Result<()> {
    use tollgate_ship::manifest::{
        Attachment, GatewayOptions, ManifestKind, PluginManifest, TrafficMatch,
    };
    let crd = gateway_crd()?;
    let good = gateway_policy(
        "oci://ghcr.io/tollgate/headers:0.1.0",
        &GatewayOptions::default(),
    )?;
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        f(&mut doc);
        messages(&crd, &doc)
    };
    type Change = dyn Fn(&mut Value);
    let cases: [(&Change, &str); 6] = [
        (
            &|d| d["spec"]["wasm"][0]["code"]["type"] = "HTTP".into(),
            "spec.wasm[0].code: Invalid value: \"object\": If type is HTTP, http field needs to be set.",
        ),
        (
            &|d| d["spec"]["wasm"][0]["code"]["type"] = "ConfigMap".into(),
            "spec.wasm[0].code.type: Unsupported value: \"ConfigMap\": supported values: \"HTTP\", \"Image\"",
        ),
        (
            &|d| d["spec"]["wasm"][0]["code"]["pullPolicy"] = "Never".into(),
            "spec.wasm[0].code.pullPolicy: Unsupported value: \"Never\"",
        ),
        (
            &|d| d["spec"]["wasm"][0]["failOpen"] = "yes".into(),
            "spec.wasm[0].failOpen in body must be of type boolean: \"string\"",
        ),
        (
            &|d| {
                d["spec"]["wasm"][0]["code"]["image"]["pullSecretRef"] =
                    serde_json::json!({"name": "creds", "kind": "ConfigMap"})
            },
            "spec.wasm[0].code.image.pullSecretRef: Invalid value: \"object\": only support Secret kind.",
        ),
        (
            &|d| {
                d["spec"].as_object_mut().map(|s| s.remove("targetRefs"));
            },
            "spec: Invalid value: \"object\": either targetRef or targetRefs must be used",
        ),
    ];
    for (change, fragment) in cases {
        let errors = mutate(change);
        ensure!(
            errors.iter().any(|m| m.contains(fragment)),
            "expected {fragment:?}, got {errors:?}"
        );
    }
    // A pull secret of the defaulted kind (Secret) is accepted: defaults apply before the rules.
    let errors = mutate(&|d| {
        d["spec"]["wasm"][0]["code"]["image"]["pullSecretRef"] =
            serde_json::json!({"name": "creds"})
    });
    ensure!(errors.is_empty(), "{errors:?}");

    let config = paths::demo_config("headers")?;
    let mut plugin =
        PluginManifest::new("headers", "oci://ghcr.io/tollgate/headers:0.1.0", &config)?;
    let refused =
        |plugin: &PluginManifest| match plugin.resource(ManifestKind::EnvoyExtensionPolicy) {
            Ok(doc) => format!("accepted: {doc}"),
            Err(e) => e.to_string(),
        };
    // The default selector attachment has no Envoy Gateway form.
    ensure!(
        refused(&plugin).contains("--target-ref"),
        "{}",
        refused(&plugin)
    );
    plugin.attachment =
        Attachment::TargetRefs(vec!["Gateway/eg".parse().map_err(anyhow::Error::msg)?]);
    plugin.matches = vec![TrafficMatch {
        mode: None,
        ports: vec![80],
    }];
    ensure!(
        refused(&plugin).contains("match and priority"),
        "{}",
        refused(&plugin)
    );
    plugin.matches.clear();
    plugin.url = "file:///opt/headers.wasm".into();
    ensure!(
        refused(&plugin).contains("http(s):// or oci://"),
        "{}",
        refused(&plugin)
    );
    Ok(())
}
