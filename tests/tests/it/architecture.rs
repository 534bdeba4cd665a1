//! The architecture invariants of `ARCHITECTURE.md` that a machine can check:
//! the crate dependency graph (`cargo metadata`) and, where a crate boundary
//! is not enough, the sources themselves. A violation fails here, naming the
//! crate, the dependency and the invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tollgate_tests::paths;

/// The workspace's packages and their normal (non-dev, non-build)
/// dependencies as their manifests declare them (`cargo metadata --no-deps`:
/// no registry access). Only workspace crates are followed transitively: a
/// registry crate does not bring wasmtime or the workspace's crates in.
struct Graph {
    direct: BTreeMap<String, BTreeSet<String>>,
    workspace: BTreeSet<String>,
    /// The workspace packages under `filters/`.
    filters: BTreeSet<String>,
}

impl Graph {
    fn load() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
                "--manifest-path",
            ])
            .arg(paths::root().join("Cargo.toml"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
        let packages = meta["packages"].as_array().expect("packages");
        let mut direct = BTreeMap::new();
        let mut workspace = BTreeSet::new();
        let mut filters = BTreeSet::new();
        for p in packages {
            let name = p["name"].as_str().expect("name").to_string();
            let under_filters = Path::new(p["manifest_path"].as_str().unwrap_or(""))
                .parent()
                .and_then(Path::parent)
                .is_some_and(|d| d.ends_with("filters"));
            if under_filters {
                filters.insert(name.clone());
            }
            let deps: BTreeSet<String> = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().expect("dependency name").to_string())
                .collect();
            workspace.insert(name.clone());
            direct.insert(name, deps);
        }
        Graph {
            direct,
            workspace,
            filters,
        }
    }

    fn direct(&self, package: &str) -> &BTreeSet<String> {
        self.direct
            .get(package)
            .unwrap_or_else(|| panic!("{package} is not in the workspace"))
    }

    /// What `package` links through workspace crates, transitively (normal
    /// dependencies only): its own dependencies and theirs.
    fn closure(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![package.to_string()];
        while let Some(p) = todo.pop() {
            for d in self.direct(&p) {
                if seen.insert(d.clone()) && self.workspace.contains(d) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    }

    /// The workspace crates `package` depends on directly.
    fn workspace_deps(&self, package: &str) -> BTreeSet<String> {
        self.direct(package)
            .iter()
            .filter(|d| self.workspace.contains(*d))
            .cloned()
            .collect()
    }
}

/// The harness crates from the bottom up: each may depend only on the
/// crates listed for it (dependencies point one way, down this list).
const LAYERS: &[(&str, &[&str])] = &[
    ("tollgate-abi", &[]),
    ("tollgate-files", &[]),
    ("tollgate-traffic", &["tollgate-files"]),
    (
        "tollgate-host",
        &["tollgate-abi", "tollgate-files", "tollgate-traffic"],
    ),
    (
        "tollgate-replay",
        &["tollgate-abi", "tollgate-traffic", "tollgate-host"],
    ),
    (
        "tollgate-envoy",
        &["tollgate-abi", "tollgate-files", "tollgate-traffic"],
    ),
    ("tollgate-ship", &["tollgate-abi", "tollgate-files"]),
    (
        "tollgate-cli",
        &[
            "tollgate-abi",
            "tollgate-files",
            "tollgate-traffic",
            "tollgate-host",
            "tollgate-replay",
            "tollgate-envoy",
            "tollgate-ship",
        ],
    ),
];

#[test]
fn harness_crates_depend_only_on_the_crates_below_them() {
    let g = Graph::load();
    let mut violations = Vec::new();
    for (package, allowed) in LAYERS {
        for dep in g.workspace_deps(package) {
            if !allowed.contains(&dep.as_str()) {
                violations.push(format!("{package} depends on {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "one-way dependencies broken: {violations:?}"
    );
}

#[test]
fn only_the_host_links_wasmtime_directly_and_data_crates_never_do() {
    let g = Graph::load();
    // Architecture invariant: the ABI types, the traffic model, Envoy's side,
    // shipping, the SDK and the filters never link a wasm runtime.
    let mut free: Vec<String> = [
        "tollgate-abi",
        "tollgate-files",
        "tollgate-traffic",
        "tollgate-envoy",
        "tollgate-ship",
        "tollgate-sdk",
        "tollgate-jose",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    free.extend(g.filters.iter().cloned());
    for package in &free {
        let linked = g.closure(package);
        assert!(
            !linked.contains("wasmtime"),
            "{package} links wasmtime (through {:?})",
            g.workspace_deps(package)
        );
    }
    let direct: Vec<&String> = g
        .workspace
        .iter()
        .filter(|p| g.direct(p).contains("wasmtime"))
        .collect();
    assert_eq!(
        direct,
        ["tollgate-host"],
        "crates depending on wasmtime directly"
    );
}

#[test]
fn terminal_and_shipping_dependencies_stay_in_their_crate() {
    let g = Graph::load();
    // Architecture invariant: only the cli (and xtask, the project's own
    // tool) parses arguments and draws on the terminal; only ship pulls the
    // OCI, archive and CEL crates (the tests crate reads archives to check them).
    for (dependency, owners) in [
        ("clap", &["tollgate-cli", "xtask"][..]),
        ("indicatif", &["tollgate-cli", "xtask"]),
        ("comfy-table", &["tollgate-cli", "xtask"]),
        ("oci-spec", &["tollgate-ship"]),
        ("cel", &["tollgate-ship"]),
        ("tar", &["tollgate-ship", "tollgate-tests"]),
        ("flate2", &["tollgate-ship", "tollgate-tests"]),
        ("libc", &["tollgate-files"]),
    ] {
        let users: Vec<&String> = g
            .workspace
            .iter()
            .filter(|p| g.direct(p).contains(dependency))
            .collect();
        for user in users {
            assert!(
                owners.contains(&user.as_str()),
                "{user} depends on {dependency}, which belongs to {owners:?}"
            );
        }
    }
}

#[test]
fn filters_depend_on_the_sdk_and_no_other_workspace_crate() {
    let g = Graph::load();
    assert!(!g.filters.is_empty(), "no filter crates found");
    for f in &g.filters {
        let deps = g.workspace_deps(f);
        assert!(
            deps.iter()
                .all(|d| d == "tollgate-sdk" || d == "tollgate-jose"),
            "{f} depends on workspace crates {deps:?}; filters use the SDK (and tollgate-jose) only"
        );
    }
    assert!(
        g.workspace_deps("tollgate-sdk").is_empty(),
        "the SDK depends on no workspace crate"
    );
    assert!(
        g.workspace_deps("tollgate-jose").is_empty(),
        "tollgate-jose depends on no workspace crate"
    );
}

/// Rust sources under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_cli_prints() {
    // Architecture invariant: library crates return data and errors; the
    // cli decides what reaches the terminal. Unit tests (`tests.rs`
    // files and `mod tests` blocks) may print.
    let root = paths::root().join("harness");
    let mut offenders = Vec::new();
    for krate in ["abi", "files", "traffic", "host", "replay", "envoy", "ship"] {
        let mut files = Vec::new();
        sources(&root.join(krate).join("src"), &mut files);
        for file in files {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source reads");
            let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                if [
                    "println!",
                    "eprintln!",
                    "print!(",
                    "eprint!(",
                    "dbg!(",
                    "io::stdout()",
                    "io::stderr()",
                ]
                .iter()
                .any(|p| line.contains(p))
                {
                    offenders.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "printing outside the cli: {offenders:?}"
    );
}

#[test]
fn only_the_envoy_crate_starts_processes() {
    // Architecture invariant: finding and starting Envoy lives in one place;
    // the data crates and the host never spawn a process.
    let root = paths::root().join("harness");
    let mut offenders = Vec::new();
    for krate in ["abi", "files", "traffic", "host", "replay", "ship"] {
        let mut files = Vec::new();
        sources(&root.join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source reads");
            for (n, line) in text.lines().enumerate() {
                if line.contains("Command::new") || line.contains("process::Command") {
                    offenders.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "processes started outside tollgate-envoy: {offenders:?}"
    );
}

/// The names a module exports.
fn exports(wasm: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let mut names = BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        let payload = payload.unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        if let wasmparser::Payload::ExportSection(section) = payload {
            for export in section {
                let export = export.unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
                names.insert(export.name.to_string());
            }
        }
    }
    names
}

#[test]
fn every_filter_exports_the_stream_callbacks_it_implements_and_no_other() {
    // Architecture invariant: a built filter exports a stream callback exactly when its crate
    // implements it (`export_filter!`'s forms, `sdk/src/lib.rs`). One it implements but does not
    // export would never run in Envoy; one it exports without using costs a guest call per
    // request (about a microsecond of Envoy's CPU: bench/envoy-probes). `proxy_on_done` is never
    // exported (the SDK runs `on_done` in `proxy_on_delete`).
    let optional = [
        (
            "proxy_on_request_body",
            &["fn on_request_body(", "fn request_body_limit("][..],
        ),
        (
            "proxy_on_response_headers",
            &["fn on_response_headers("][..],
        ),
        (
            "proxy_on_response_body",
            &["fn on_response_body(", "fn response_body_limit("][..],
        ),
    ];
    let root = paths::root().join("filters");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("filters/") {
        let dir = entry.expect("directory entry").path();
        if !dir.join("Cargo.toml").is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a name")
            .to_string();
        let mut files = Vec::new();
        sources(&dir.join("src"), &mut files);
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("a source file"))
            .collect();
        let wasm = paths::filter_wasm(&name).unwrap_or_else(|e| panic!("{e:#}"));
        let exported = exports(&wasm);
        for required in [
            "proxy_on_context_create",
            "proxy_on_request_headers",
            "proxy_on_delete",
        ] {
            assert!(
                exported.contains(required),
                "filters/{name} does not export {required}"
            );
        }
        assert!(
            !exported.contains("proxy_on_done"),
            "filters/{name} exports proxy_on_done: the SDK runs on_done in proxy_on_delete"
        );
        for (callback, uses) in optional {
            let used = uses.iter().any(|u| text.contains(u));
            let has = exported.contains(callback);
            assert!(
                used == has,
                "filters/{name}: {callback} is {} but the crate {} it; choose the \
                 export_filter! form that matches (sdk/src/lib.rs)",
                if has { "exported" } else { "not exported" },
                if used {
                    "implements"
                } else {
                    "never implements"
                }
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} filters checked");
}
