//! `cargo xtask test`: everything CI runs, in order, stopping at the first failure.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::process;

/// Formatting, Envoy, filters, configuration validation, clippy (the `docker` launcher included), then the workspace tests
/// with `ENVOY_BIN` and `TOLLGATE_FILTERS_DIR` exported.
pub fn run() -> Result<()> {
    let started = Instant::now();
    // Formatting first: it takes a second and names every file that is off.
    crate::step("cargo fmt --all --check");
    process::run(process::cargo().args(["fmt", "--all", "--check"]))
        .context("cargo fmt found unformatted code: run `cargo fmt --all`")?;
    let envoy = crate::envoy::run()?;
    let oidc_provider = crate::oidc_provider::run()?;
    crate::build::run()?;
    crate::validate::validate_all(&envoy)?;

    // The container backend of the Envoy launcher (tests/src/launcher.rs) is opt-in;
    // no Docker engine runs here, but it must keep compiling: clippy checks it with the
    // rest, in one pass (a separate `cargo check --features docker` would, with its
    // different feature set, check wasmtime and its dependencies a second time).
    crate::step(
        "cargo clippy --workspace --all-targets --features tollgate-tests/docker -- -D warnings",
    );
    process::run(process::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        "tollgate-tests/docker",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems: fix the warnings above")?;

    // The SDK and the filters also have wasm-only code (the entry points that
    // `export_filter!` generates): lint them as they ship, too.
    crate::step("cargo clippy --target wasm32-wasip1 (sdk and filters) -- -D warnings");
    let mut wasm_clippy = process::cargo();
    wasm_clippy.args([
        "clippy",
        "--target",
        "wasm32-wasip1",
        "-p",
        "tollgate-sdk",
        "-p",
        "tollgate-jose",
    ]);
    for name in crate::build::filter_names()? {
        wasm_clippy.args(["-p", &format!("tollgate-{name}")]);
    }
    for name in crate::build::bench_guest_names()? {
        wasm_clippy.args(["-p", &format!("tollgate-bench-{name}")]);
    }
    wasm_clippy.args(["--", "-D", "warnings"]);
    process::run(&mut wasm_clippy)
        .context("clippy found problems in the wasm build of the SDK or a filter")?;

    let filters_dir = crate::filters_out_dir();
    crate::step(format!(
        "cargo test --workspace --no-fail-fast (ENVOY_BIN={}, TOLLGATE_FILTERS_DIR={})",
        envoy.display(),
        filters_dir.display()
    ));
    process::run(
        process::cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .env("ENVOY_BIN", &envoy)
            .env("TOLLGATE_FILTERS_DIR", &filters_dir)
            .env("TOLLGATE_OIDC_PROVIDER_DIR", &oidc_provider),
    )
    .context("tests failed: see the failures above")?;

    crate::step(format!("all checks passed in {:.0?}", started.elapsed()));
    Ok(())
}
