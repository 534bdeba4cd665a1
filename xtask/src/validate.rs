//! `cargo xtask validate`: `envoy --mode validate` on every `envoy/*/envoy.yaml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// Builds the filters (the configurations load them) and validates every configuration.
pub fn run() -> Result<()> {
    let envoy = crate::envoy::ensure()?;
    crate::build::run()?;
    validate_all(&envoy)
}

/// Validates every `envoy/*/envoy.yaml` with the given Envoy, from the repository root.
pub fn validate_all(envoy: &Path) -> Result<()> {
    let configs = configs()?;
    if configs.is_empty() {
        bail!("no Envoy configurations found: expected envoy/<name>/envoy.yaml");
    }
    crate::step(format!(
        "validating {} Envoy configuration(s)",
        configs.len()
    ));
    let mut failures = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let shown = crate::build::relative(config);
        let mut command = Command::new(envoy);
        command
            .current_dir(crate::root())
            .args(["--mode", "validate", "--log-level", "warn", "-c"])
            .arg(&shown)
            .arg("--base-id")
            .arg(base_id(index).to_string());
        let output = process::capture(&mut command)?;
        if output.status.success() {
            println!("    ok      {shown}");
        } else {
            println!("    INVALID {shown}");
            failures.push(format!(
                "{shown}:\n{}",
                indent(&envoy_message(&process::combined_output(&output)))
            ));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} Envoy configuration(s) are invalid (fix them, then run `cargo xtask validate`):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// `envoy/*/envoy.yaml`, sorted.
fn configs() -> Result<Vec<PathBuf>> {
    let dir = crate::root().join("envoy");
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?;
    let mut configs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
        let config = entry.path().join("envoy.yaml");
        if config.is_file() {
            configs.push(config);
        }
    }
    configs.sort();
    Ok(configs)
}

/// A base id no other Envoy on the machine is likely to use: derived from this
/// process id and the run's index, so parallel validations never share hot
/// restart shared memory.
fn base_id(index: usize) -> u32 {
    (std::process::id() % 100_000) * 100 + (index as u32 % 100) + 7
}

/// The lines of Envoy's output that explain a failure (all of it when none stand out).
fn envoy_message(output: &str) -> String {
    let interesting: Vec<&str> = output
        .lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("error")
                || lower.contains("critical")
                || lower.contains("exception")
                || lower.contains("invalid")
                || lower.contains("unable")
                || lower.contains("failed")
        })
        .collect();
    if interesting.is_empty() {
        output.to_string()
    } else {
        interesting.join("\n")
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
