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

/// The Envoy binary: `ENVOY_BIN`, else the project's virtualenv
/// (`target/envoy-venv/lib/python3.*/site-packages/envoy/_bin/envoy`).
/// Missing Envoy is a failure, never a skip.
pub fn envoy_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = from_root(PathBuf::from(bin));
        if !bin.is_file() {
            bail!(
                "ENVOY_BIN={} does not exist; run `cargo xtask test` (it installs Envoy and exports ENVOY_BIN)",
                bin.display()
            );
        }
        return Ok(bin);
    }
    let venv = root().join("target").join("envoy-venv");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
        .filter(|path| path.is_file())
        .collect();
    candidates.sort();
    candidates.pop().with_context(|| {
        format!(
            "Envoy not found: ENVOY_BIN is not set and {} has no envoy binary; \
             run `cargo xtask test` (or `cargo xtask envoy` and set ENVOY_BIN)",
            venv.display()
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
