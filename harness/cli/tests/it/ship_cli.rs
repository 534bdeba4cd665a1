//! `tollgate manifest`, `validate`, `schema` and `new` as a user runs them: the built binary,
//! from the repository root, against the CRDs in `../shared`.
//!
//! The schema tests need the filters built by `cargo xtask build` (which stores each
//! configuration's schema in its module); `tollgate new` is run end to end on a standalone
//! crate whose build reuses `target/scaffold/` across runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh scratch folder under target/.
fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/tmp/ship-cli").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    let program = if program == "tollgate" {
        env!("CARGO_BIN_EXE_tollgate").to_string()
    } else {
        program.to_string()
    };
    Command::new(&program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn tollgate(args: &[&str]) -> Output {
    run_in(&root(), "tollgate", args)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[track_caller]
fn ok(output: Output) -> String {
    let shown = text(&output);
    assert!(
        output.status.success(),
        "failed ({}):\n{shown}",
        output.status
    );
    shown
}

#[track_caller]
fn fails(output: Output) -> String {
    let shown = text(&output);
    assert!(!output.status.success(), "succeeded:\n{shown}");
    shown
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("not UTF-8: {}", path.display()))
}

/// The module of a built filter (`cargo xtask build`), or a clear failure.
fn built(name: &str) -> PathBuf {
    let wasm = std::env::var_os("TOLLGATE_FILTERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/filters"))
        .join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{} is missing: run `cargo xtask build` first",
        wasm.display()
    );
    wasm
}

/// Each kind `tollgate manifest` writes is accepted by `tollgate validate` (one run, several
/// files, each checked by its `kind`).
#[test]
fn every_manifest_kind_validates() {
    let dir = scratch("kinds");
    let plugin = dir.join("wasmplugin.yaml");
    let extension = dir.join("trafficextension.yaml");
    let policy = dir.join("envoyextensionpolicy.yaml");
    let image = dir.join("image-policy.yaml");
    ok(tollgate(&[
        "manifest",
        "headers",
        "--out",
        path_str(&plugin),
    ]));
    ok(tollgate(&[
        "manifest",
        "headers",
        "--kind",
        "trafficextension",
        "--phase",
        "AUTHZ",
        "--priority",
        "5",
        "--target-ref",
        "Gateway/public",
        "--out",
        path_str(&extension),
    ]));
    ok(tollgate(&[
        "manifest",
        "headers",
        "--kind",
        "envoyextensionpolicy",
        "--url",
        "https://downloads.example.com/headers.wasm",
        "--sha256",
        &"ab".repeat(32),
        "--target-ref",
        "HTTPRoute/backend",
        "--fail-strategy",
        "FAIL_OPEN",
        "--env-host-key",
        "POD_NAME",
        "--out",
        path_str(&policy),
    ]));
    ok(tollgate(&[
        "manifest",
        "headers",
        "--kind",
        "envoyextensionpolicy",
        "--target-ref",
        "Gateway/eg",
        "--pull-policy",
        "Always",
        "--out",
        path_str(&image),
    ]));
    let policy_text = std::fs::read_to_string(&policy).unwrap_or_default();
    assert!(
        policy_text.contains("kind: EnvoyExtensionPolicy"),
        "{policy_text}"
    );
    assert!(policy_text.contains("failOpen: true"), "{policy_text}");
    let image_text = std::fs::read_to_string(&image).unwrap_or_default();
    assert!(
        image_text.contains("url: ghcr.io/tollgate/headers:0.1.0"),
        "{image_text}"
    );
    let out = ok(tollgate(&[
        "validate",
        path_str(&plugin),
        path_str(&extension),
        path_str(&policy),
        path_str(&image),
        "envoy/headers/wasmplugin.yaml",
        "envoy/headers/trafficextension.yaml",
    ]));
    assert!(out.contains("6 document(s) accepted"), "{out}");
    assert!(out.contains("TrafficExtension tollgate-headers"), "{out}");

    // The fixtures of both Istio CRDs, through the command: every valid one accepted,
    // every invalid one refused.
    for file in ["wasmplugin-valid.yaml", "trafficextension-valid.yaml"] {
        ok(tollgate(&["validate", &format!("../shared/istio/{file}")]));
    }
    for file in ["wasmplugin-invalid.yaml", "trafficextension-invalid.yaml"] {
        let out = fails(tollgate(&["validate", &format!("../shared/istio/{file}")]));
        assert!(!out.contains("\nok "), "{out}");
    }
    // Selector attachment has no Envoy Gateway form: refused, naming the flag to use.
    let out = fails(tollgate(&[
        "manifest",
        "headers",
        "--kind",
        "envoyextensionpolicy",
    ]));
    assert!(out.contains("--target-ref"), "{out}");
    let out = fails(tollgate(&["manifest", "headers", "--kind", "gateway"]));
    assert!(
        out.contains("wasmplugin, trafficextension or envoyextensionpolicy"),
        "{out}"
    );
}

/// `tollgate schema` prints the schema a built module carries (by name, by path, and from
/// the image `tollgate package` writes), and `tollgate validate --module` refuses a
/// `pluginConfig` of the wrong type naming the field.
#[test]
fn schemas_travel_with_the_module_and_check_plugin_configs() {
    let wasm = built("key-auth");
    let by_name = ok(tollgate(&["schema", "key-auth"]));
    let by_path = ok(tollgate(&["schema", path_str(&wasm)]));
    assert_eq!(by_name, by_path);
    let schema: serde_json::Value = serde_json::from_str(&by_name).unwrap_or_default();
    assert_eq!(schema["title"], "key-auth", "{by_name}");
    assert!(
        schema["properties"]["hide_credentials"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Remove the key")),
        "descriptions come from the doc comments: {by_name}"
    );

    let dir = scratch("schema");
    let image = dir.join("image");
    ok(tollgate(&[
        "package",
        path_str(&wasm),
        "--out",
        path_str(&image),
    ]));
    for layout in ["wasm", "compat"] {
        let from_image = ok(tollgate(&["schema", path_str(&image.join(layout))]));
        assert_eq!(from_image, by_name, "{layout}");
    }

    let good = dir.join("good.yaml");
    ok(tollgate(&[
        "manifest",
        "key-auth",
        "--out",
        path_str(&good),
    ]));
    ok(tollgate(&[
        "validate",
        path_str(&good),
        "--module",
        "key-auth",
    ]));
    ok(tollgate(&[
        "validate",
        path_str(&good),
        "--module",
        path_str(&image),
    ]));
    // hide_credentials as a string, and an unknown field: both named.
    let text = std::fs::read_to_string(&good).unwrap_or_default();
    let bad_text = text.replace(
        "hide_credentials: true",
        "hide_credentials: \"yes\"\n    realmm: x",
    );
    assert_ne!(bad_text, text);
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, &bad_text).unwrap_or_else(|e| panic!("{e}"));
    let out = fails(tollgate(&[
        "validate",
        path_str(&bad),
        "--module",
        "key-auth",
    ]));
    assert!(
        out.contains("spec.pluginConfig.hide_credentials: expected boolean, found string \"yes\""),
        "{out}"
    );
    assert!(
        out.contains("spec.pluginConfig.realmm: unknown field"),
        "{out}"
    );
    // The same check through a TrafficExtension whose url is the local module.
    let extension = dir.join("extension.yaml");
    let url = format!(
        "file://{}",
        path_str(&wasm.canonicalize().unwrap_or(wasm.clone()))
    );
    ok(tollgate(&[
        "manifest",
        "key-auth",
        "--kind",
        "trafficextension",
        "--url",
        &url,
        "--out",
        path_str(&extension),
    ]));
    ok(tollgate(&["validate", path_str(&extension)]));
    let text = std::fs::read_to_string(&extension).unwrap_or_default();
    std::fs::write(
        &extension,
        text.replace("hide_credentials: true", "hide_credentials: 1"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = fails(tollgate(&["validate", path_str(&extension)]));
    assert!(
        out.contains("spec.wasm.pluginConfig.hide_credentials: expected boolean, found integer 1"),
        "{out}"
    );
    // A module without a schema is a clear error.
    let bare = dir.join("bare.wasm");
    std::fs::write(&bare, wat::parse_str("(module)").unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let out = fails(tollgate(&["schema", path_str(&bare)]));
    assert!(out.contains("carries no configuration schema"), "{out}");
}

/// `tollgate new demo-filter --standalone`: the crate builds for wasm32-wasip1, its unit tests
/// pass, its suite passes, its traffic replays, and its manifests validate. The crate's
/// `target` is shared across runs (`target/scaffold/`), so only the first run compiles its
/// dependencies.
#[test]
fn a_new_filter_builds_tests_and_replays_at_once() {
    let dir = scratch("new").join("demo-filter");
    ok(tollgate(&[
        "new",
        "demo-filter",
        "--standalone",
        path_str(&dir),
    ]));
    // Shared build cache, and the workspace's lock file so the versions are the tested ones.
    let shared = root().join("target/scaffold");
    std::fs::create_dir_all(&shared).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&shared, dir.join("target")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ok(run_in(
        &dir,
        &cargo,
        &["build", "--release", "--target", "wasm32-wasip1"],
    ));
    let wasm = dir.join("target/wasm32-wasip1/release/tollgate_demo_filter.wasm");
    assert!(wasm.is_file(), "{}", wasm.display());
    let out = ok(run_in(&dir, &cargo, &["test"]));
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    let out = ok(run_in(&dir, "tollgate", &["test", "tests/suite.yaml"]));
    assert!(out.contains("3 tests, 3 passed, 0 failed"), "{out}");
    let out = ok(run_in(
        &dir,
        "tollgate",
        &[
            "replay",
            "tests/traffic.yaml",
            "--filter",
            path_str(&wasm),
            "--config",
            "@demo.json",
        ],
    ));
    assert!(out.contains("home") && out.contains("api"), "{out}");
    let crds: Vec<String> = [
        "istio/wasmplugins.crd.yaml",
        "istio/trafficextensions.crd.yaml",
    ]
    .iter()
    .map(|c| format!("--crd={}", path_str(&root().join("../shared").join(c))))
    .collect();
    let mut args = vec![
        "validate",
        "deploy/wasmplugin.yaml",
        "deploy/trafficextension.yaml",
    ];
    args.extend(crds.iter().map(String::as_str));
    let out = ok(run_in(&dir, "tollgate", &args));
    assert!(out.contains("2 document(s) accepted"), "{out}");
    // The schema example prints the configuration's schema, descriptions included.
    let out = ok(run_in(
        &dir,
        &cargo,
        &[
            "run",
            "-q",
            "--example",
            "demo-filter-schema",
            "--features",
            "schema",
        ],
    ));
    assert!(
        out.contains("Response header set on every response"),
        "{out}"
    );
    // Never over an existing crate.
    let out = fails(tollgate(&[
        "new",
        "demo-filter",
        "--standalone",
        path_str(&dir),
    ]));
    assert!(out.contains("not overwriting"), "{out}");
}

/// In the workspace layout, `tollgate new` writes `filters/<name>/` and `envoy/<name>/` (here
/// into a scratch copy of the layout, never the real tree), with valid manifests.
#[test]
fn a_new_filter_in_a_workspace_gets_its_deployment_files() {
    let ws = scratch("workspace");
    for dir in ["filters", "envoy"] {
        std::fs::create_dir_all(ws.join(dir)).unwrap_or_else(|e| panic!("{e}"));
    }
    ok(run_in(&ws, "tollgate", &["new", "demo-filter"]));
    for file in [
        "filters/demo-filter/Cargo.toml",
        "filters/demo-filter/src/lib.rs",
        "filters/demo-filter/examples/schema.rs",
        "filters/demo-filter/demo.json",
        "filters/demo-filter/README.md",
        "filters/demo-filter/tests/suite.yaml",
        "filters/demo-filter/tests/traffic.yaml",
        "envoy/demo-filter/envoy.yaml",
        "envoy/demo-filter/wasmplugin.yaml",
        "envoy/demo-filter/trafficextension.yaml",
    ] {
        assert!(ws.join(file).is_file(), "{file} missing");
    }
    let cargo =
        std::fs::read_to_string(ws.join("filters/demo-filter/Cargo.toml")).unwrap_or_default();
    assert!(cargo.contains("tollgate-sdk.workspace = true"), "{cargo}");
    let crd = |c: &str| {
        format!(
            "--crd={}",
            path_str(&root().join("../shared/istio").join(c))
        )
    };
    let out = ok(run_in(
        &ws,
        "tollgate",
        &[
            "validate",
            "envoy/demo-filter/wasmplugin.yaml",
            "envoy/demo-filter/trafficextension.yaml",
            &crd("wasmplugins.crd.yaml"),
            &crd("trafficextensions.crd.yaml"),
        ],
    ));
    assert!(out.contains("2 document(s) accepted"), "{out}");
    let out = fails(run_in(&ws, "tollgate", &["new", "Demo_Filter"]));
    assert!(out.contains("lower-case"), "{out}");
}

/// The commands of the README's quick start, in a `sh` block after its heading.
fn readme_quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap_or_default();
    let section = readme
        .split("## Quick start: your first filter")
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no quick start"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("the quick start has no sh block"));
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split("  #").next().unwrap_or(l).trim().to_string())
        .collect()
}

/// Every command of the README's quick start, in order, from a scratch folder: with the
/// `tollgate` under test on PATH (the `cargo install` line is the one not run: a release build
/// of wasmtime takes most of an hour on two cores), `~/Downloads/site.har` = the Firefox
/// recording in `../shared/traffic`, the CRDs of `../shared/istio` linked where the README's
/// user puts theirs, and Envoy from `ENVOY_BIN` or `cargo xtask envoy`'s venv (required: missing is a failure).
#[test]
fn the_readme_quick_start_runs() {
    let commands = readme_quick_start();
    assert_eq!(
        commands.first().map(String::as_str),
        Some("cargo install --locked --path harness/cli")
    );
    let work = scratch("quick-start");
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tollgate"), bin.join("tollgate"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The new crate shares the build cache of `a_new_filter_builds_tests_and_replays_at_once`
    // and the workspace's lock file (tollgate new never writes either).
    let crate_dir = work.join("demo-filter");
    std::fs::create_dir_all(&crate_dir).unwrap_or_else(|e| panic!("{e}"));
    let shared_target = root().join("target/scaffold");
    std::fs::create_dir_all(&shared_target).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&shared_target, crate_dir.join("target"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(root().join("Cargo.lock"), crate_dir.join("Cargo.lock"))
        .unwrap_or_else(|e| panic!("{e}"));
    let shared = root().join("../shared");
    for crd in ["wasmplugins.crd.yaml", "trafficextensions.crd.yaml"] {
        std::os::unix::fs::symlink(shared.join("istio").join(crd), crate_dir.join(crd))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let har = shared.join("traffic/firefox.har");
    assert!(har.is_file(), "{} is missing", har.display());
    // Missing Envoy is a failure, never a skip (as everywhere in the project's tests).
    let envoy = tollgate_envoy::locate::envoy_binary().unwrap_or_else(|e| {
        panic!("Envoy is needed: {e}; run `cargo xtask envoy` and set ENVOY_BIN")
    });
    let mut script = String::from("set -euo pipefail\n");
    for command in &commands[1..] {
        let command = command.replace("~/Downloads/site.har", path_str(&har));
        script.push_str(&format!(
            "echo '+ {}'\n{command}\n",
            command.replace('\'', "")
        ));
    }
    let path = format!(
        "{}:{}",
        path_str(&bin),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = Command::new("bash");
    bash.args(["-c", &script])
        .current_dir(&work)
        .env("PATH", path);
    bash.env("ENVOY", &envoy);
    let out = ok(bash
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}")));
    assert!(out.contains("3 tests, 3 passed, 0 failed"), "{out}");
    assert!(out.contains("2 document(s) accepted"), "{out}");
    assert!(
        crate_dir.join("target/oci/wasm/index.json").is_file(),
        "{out}"
    );
    assert!(out.contains("OK"), "Envoy validated the bootstrap: {out}");
}
