//! `tollgate new`: the files of a new filter crate, ready to build, test and replay.
//!
//! Two layouts: inside this workspace (`filters/<name>/` with workspace-inherited metadata and
//! dependencies, `envoy/<name>/` beside the other filters; `cargo xtask build` picks it up), or
//! standalone (one folder with its own `[workspace]`, the SDK by path, a size profile, and the
//! deployment files in `deploy/`). Both get the SDK dependency, a typed configuration with a
//! JSON Schema, an `HttpFilter`, native unit tests, a `tollgate test` suite, recorded traffic,
//! an Envoy bootstrap, an Istio `WasmPlugin` and `TrafficExtension`, and a README skeleton.
//! Nothing is written here: [`Scaffold::files`] returns the files, the caller writes them.

use std::path::{Path, PathBuf};

use super::ShipError;
use super::manifest::{self, EnvoyCode, ManifestKind, Phase, PluginManifest};

/// Where the new filter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `filters/<name>/` and `envoy/<name>/` of the workspace at this root.
    Workspace {
        /// The workspace root (with `filters/` and `envoy/`).
        root: PathBuf,
    },
    /// A standalone crate in `dir`, depending on the SDK at `sdk`.
    Standalone {
        /// The new crate's folder.
        dir: PathBuf,
        /// The SDK crate's folder (`tollgate-sdk`).
        sdk: PathBuf,
    },
}

/// A new filter: its name and where it goes.
#[derive(Debug, Clone)]
pub struct Scaffold {
    name: String,
    layout: Layout,
}

/// The demo configuration every scaffold starts with.
pub const DEMO_CONFIG: &str =
    "{\n  \"header\": \"x-NAME\",\n  \"value\": \"hello\",\n  \"deny_header\": \"x-block\"\n}\n";

impl Scaffold {
    /// A filter called `name`: lower-case letters, digits and `-`, starting with a letter.
    pub fn new(name: &str, layout: Layout) -> Result<Scaffold, ShipError> {
        let valid = name.len() <= 40
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(ShipError::invalid(
                name,
                "a filter name is lower-case letters, digits and '-', starts with a letter, at most 40 characters (e.g. demo-filter)",
            ));
        }
        Ok(Scaffold {
            name: name.to_string(),
            layout,
        })
    }

    /// The crate's folder.
    pub fn crate_dir(&self) -> PathBuf {
        match &self.layout {
            Layout::Workspace { root } => root.join("filters").join(&self.name),
            Layout::Standalone { dir, .. } => dir.clone(),
        }
    }

    /// The folder of the Envoy and Istio files.
    pub fn deploy_dir(&self) -> PathBuf {
        match &self.layout {
            Layout::Workspace { root } => root.join("envoy").join(&self.name),
            Layout::Standalone { dir, .. } => dir.join("deploy"),
        }
    }

    /// The module `cargo` builds, relative to the crate's folder (standalone) or the workspace
    /// root (after `cargo xtask build`).
    pub fn wasm_from_root(&self) -> String {
        match &self.layout {
            Layout::Workspace { .. } => format!("target/filters/{}.wasm", self.name),
            Layout::Standalone { .. } => {
                format!("target/wasm32-wasip1/release/{}.wasm", self.lib_name())
            }
        }
    }

    /// The library name, `tollgate_<name with _>`.
    pub fn lib_name(&self) -> String {
        format!("tollgate_{}", self.name.replace('-', "_"))
    }

    /// The filter type, `DemoFilter` for `demo-filter`.
    pub fn type_name(&self) -> String {
        self.name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect::<String>()
            + "Filter"
    }

    /// Every file, with its path; refuses to overwrite (the caller checks [`Scaffold::existing`]).
    pub fn files(&self) -> Result<Vec<(PathBuf, String)>, ShipError> {
        let name = &self.name;
        let crate_dir = self.crate_dir();
        let deploy = self.deploy_dir();
        let (root_prefix, build, unit_test) = match &self.layout {
            Layout::Workspace { .. } => (
                format!("filters/{name}/"),
                "cargo xtask build".to_string(),
                format!("cargo test -p tollgate-{name}"),
            ),
            Layout::Standalone { .. } => (
                String::new(),
                "cargo build --release --target wasm32-wasip1".to_string(),
                "cargo test".to_string(),
            ),
        };
        let envoy_dir = match &self.layout {
            Layout::Workspace { .. } => format!("envoy/{name}"),
            Layout::Standalone { .. } => "deploy".to_string(),
        };
        let wasm_from_root = self.wasm_from_root();
        let wasm_from_suite = match &self.layout {
            Layout::Workspace { .. } => format!("../../../{wasm_from_root}"),
            Layout::Standalone { .. } => format!("../{wasm_from_root}"),
        };
        let fill = |template: &str| {
            template
                .replace("{{name}}", name)
                .replace("{{Type}}", &self.type_name())
                .replace("{{lib}}", &self.lib_name())
                .replace(
                    "{{suite_from_root}}",
                    &format!("{root_prefix}tests/suite.yaml"),
                )
                .replace(
                    "{{traffic_from_root}}",
                    &format!("{root_prefix}tests/traffic.yaml"),
                )
                .replace("{{demo_from_root}}", &format!("{root_prefix}demo.json"))
                .replace("{{wasm_from_root}}", &wasm_from_root)
                .replace("{{wasm_from_suite}}", &wasm_from_suite)
                .replace("{{envoy_dir}}", &envoy_dir)
                .replace("{{build}}", &build)
                .replace("{{unit_test}}", &unit_test)
        };
        let demo = DEMO_CONFIG.replace("NAME", name);
        let mut files = vec![
            (crate_dir.join("Cargo.toml"), self.cargo_toml()),
            (
                crate_dir.join("src/lib.rs"),
                fill(include_str!("scaffold/lib.rs.tmpl")),
            ),
            (
                crate_dir.join("examples/schema.rs"),
                format!(
                    "//! Prints the JSON Schema of the `{name}` configuration (stored in the module by\n//! `cargo xtask build`, read by `tollgate schema`).\n\nfn main() {{\n    tollgate_sdk::schema::print::<{}::{}>();\n}}\n",
                    self.lib_name(),
                    self.type_name()
                ),
            ),
            (crate_dir.join("demo.json"), demo.clone()),
            (
                crate_dir.join("README.md"),
                fill(include_str!("scaffold/README.md.tmpl")),
            ),
            (
                crate_dir.join("tests/suite.yaml"),
                fill(include_str!("scaffold/suite.yaml.tmpl")),
            ),
            (
                crate_dir.join("tests/traffic.yaml"),
                fill(include_str!("scaffold/traffic.yaml.tmpl")),
            ),
        ];
        if let Layout::Standalone { .. } = self.layout {
            files.push((crate_dir.join(".gitignore"), "/target\n".to_string()));
        }
        // Deployment files, from the same generators as `tollgate manifest`.
        let url = format!("oci://ghcr.io/example/{name}:0.1.0");
        let mut plugin = PluginManifest::new(name, &url, &demo)?;
        plugin.phase = Phase::Stats;
        let header = |kind: &str| {
            format!(
                "# Istio {kind} running the `{name}` filter on the ingress gateway (written by `tollgate new`;\n# check it with `tollgate validate`). Push the module as an OCI image and set `url` (and `sha256`).\n"
            )
        };
        files.push((
            deploy.join("wasmplugin.yaml"),
            header("WasmPlugin")
                + &manifest::to_yaml(&plugin.resource(ManifestKind::WasmPlugin)?, name)?,
        ));
        files.push((
            deploy.join("trafficextension.yaml"),
            header("TrafficExtension (Istio 1.30+)")
                + &manifest::to_yaml(&plugin.resource(ManifestKind::TrafficExtension)?, name)?,
        ));
        let envoy_wasm = match &self.layout {
            Layout::Workspace { .. } => wasm_from_root.clone(),
            Layout::Standalone { .. } => wasm_from_root.clone(),
        };
        let bootstrap = manifest::envoy_bootstrap(
            name,
            &demo,
            &EnvoyCode::Local {
                filename: envoy_wasm,
            },
        )?;
        files.push((
            deploy.join("envoy.yaml"),
            format!(
                "# Envoy running the `{name}` filter (written by `tollgate new`): listener 127.0.0.1:10000,\n# upstream 127.0.0.1:8080, admin 127.0.0.1:9901. Run from {}: envoy -c {envoy_dir}/envoy.yaml\n",
                if matches!(self.layout, Layout::Workspace { .. }) { "the workspace root" } else { "this folder" }
            ) + &manifest::to_yaml(&bootstrap, name)?,
        ));
        Ok(files)
    }

    /// The files that already exist (a scaffold never overwrites).
    pub fn existing(&self) -> Result<Vec<PathBuf>, ShipError> {
        Ok(self
            .files()?
            .into_iter()
            .map(|(path, _)| path)
            .filter(|p| p.exists())
            .collect())
    }

    fn cargo_toml(&self) -> String {
        let name = &self.name;
        let lib = self.lib_name();
        let common_tail = format!(
            r#"
[features]
# Native only: `examples/schema.rs` prints the configuration's JSON Schema.
schema = ["dep:schemars", "tollgate-sdk/schema"]

[[example]]
name = "{name}-schema"
path = "examples/schema.rs"
required-features = ["schema"]
"#
        );
        match &self.layout {
            Layout::Workspace { .. } => format!(
                r#"[package]
name = "tollgate-{name}"
description = "{name}: a proxy-wasm HTTP filter built with the Tollgate SDK."
version.workspace = true
edition.workspace = true
license.workspace = true
rust-version.workspace = true
publish.workspace = true

[lib]
name = "{lib}"
# cdylib: the wasm32-wasip1 module; rlib: native unit tests of the filter logic.
crate-type = ["cdylib", "rlib"]

[dependencies]
tollgate-sdk.workspace = true
serde.workspace = true
log.workspace = true
schemars = {{ workspace = true, optional = true }}
{common_tail}
[lints]
workspace = true
"#
            ),
            Layout::Standalone { sdk, .. } => format!(
                r#"[package]
name = "tollgate-{name}"
description = "{name}: a proxy-wasm HTTP filter built with the Tollgate SDK."
version = "0.1.0"
edition = "2024"
publish = false

[lib]
name = "{lib}"
# cdylib: the wasm32-wasip1 module; rlib: native unit tests of the filter logic.
crate-type = ["cdylib", "rlib"]

[dependencies]
tollgate-sdk = {{ path = {sdk} }}
serde = {{ version = "1", features = ["derive"] }}
log = "0.4"
schemars = {{ version = "1.2", default-features = false, features = ["derive", "std"], optional = true }}
{common_tail}
# A crate of its own, not a member of an enclosing workspace.
[workspace]

# The module: small, no unwinding, no symbols.
[profile.release]
opt-level = "z"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#,
                sdk = toml_string(sdk)
            ),
        }
    }
}

fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
