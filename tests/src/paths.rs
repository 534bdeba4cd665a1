//! Where things are: the repository root, the Envoy binary, the built filters
//! and the folder for test logs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The repository root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A path from the environment: relative paths are taken from the repository
/// root when they do not exist from the current directory (tests run in `tests/`).
fn from_root(path: PathBuf) -> PathBuf {
    if path.is_relative() && !path.exists() {
        root().join(path)
    } else {
        path
    }
}

/// The Envoy binary, found as everything in the project finds it
/// ([`tollgate_envoy::locate::envoy_binary`]: `ENVOY_BIN`, else
/// `target/envoy-venv`). Missing Envoy is a failure, never a skip.
pub fn envoy_binary() -> Result<PathBuf> {
    tollgate_envoy::locate::envoy_binary().map_err(|e| {
        anyhow::anyhow!(
            "{e}; run `cargo xtask test` (it installs Envoy and exports ENVOY_BIN), \
             or `cargo xtask envoy` and set ENVOY_BIN"
        )
    })
}

/// The folder of built filters: `TOLLGATE_FILTERS_DIR`, else `<root>/target/filters`.
pub fn filters_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("TOLLGATE_FILTERS_DIR") {
        Some(dir) => from_root(PathBuf::from(dir)),
        None => root().join("target").join("filters"),
    };
    if !dir.is_dir() {
        bail!(
            "built filters not found in {}; run `cargo xtask build` (or `cargo xtask test`)",
            dir.display()
        );
    }
    Ok(dir)
}

/// `<filters dir>/<name>.wasm`, which must exist.
pub fn filter_wasm(name: &str) -> Result<PathBuf> {
    let wasm = filters_dir()?.join(format!("{name}.wasm"));
    if !wasm.is_file() {
        bail!(
            "{} is missing; run `cargo xtask build` to build filters/{name}",
            wasm.display()
        );
    }
    Ok(wasm)
}

/// `filters/<name>/demo.json`, the configuration the demo and the Envoy test use.
pub fn demo_config(name: &str) -> Result<String> {
    let path = root().join("filters").join(name).join("demo.json");
    std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))
}

/// `envoy/<name>/envoy.yaml`.
pub fn envoy_config(name: &str) -> PathBuf {
    root().join("envoy").join(name).join("envoy.yaml")
}

/// A folder for test artefacts (Envoy configurations and logs): `<root>/target/tollgate-tests`.
pub fn work_dir() -> Result<PathBuf> {
    let dir = root().join("target").join("tollgate-tests");
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}
