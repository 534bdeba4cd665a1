//! The `tollgate` command, built with cargo and run as a process: xtask never
//! links the harness (nor wasmtime), so it compiles in seconds and the long
//! build of the harness shows cargo's own progress.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::process;

/// The binary's name; which package holds it is cargo's business.
pub const BIN: &str = "tollgate";

/// The cargo arguments that build `tollgate`: the dev profile and the feature
/// set of `cargo test --workspace` (features resolved for the whole workspace,
/// not `-p` one package, whose smaller feature set would make cargo compile
/// wasmtime a second time), so the demo, `cargo tollgate` and the tests share
/// one build of wasmtime.
pub const BUILD_ARGS: [&str; 4] = ["build", "--workspace", "--bin", BIN];

/// Builds `tollgate` and returns its path.
pub fn build() -> Result<PathBuf> {
    crate::step(format!(
        "building the {BIN} command (cargo {})",
        BUILD_ARGS.join(" ")
    ));
    let artifacts = process::cargo_build(process::cargo().args(BUILD_ARGS))
        .with_context(|| format!("building {BIN} failed (see the compiler output above)"))?;
    artifacts
        .into_iter()
        .filter(|artifact| artifact.target.name == BIN)
        .find_map(|artifact| artifact.executable)
        .with_context(|| format!("cargo built no {BIN} executable"))
}
