//! Running external programs with messages that name the program and say what failed.

use std::ffi::OsStr;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// A `Command` for the `cargo` that runs xtask (env `CARGO`), in the repository root.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(crate::root());
    command
}

/// How a command is shown in messages: program and arguments.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&quote(arg));
    }
    text
}

fn quote(arg: &OsStr) -> String {
    let arg = arg.to_string_lossy();
    if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        format!("'{arg}'")
    } else {
        arg.into_owned()
    }
}

/// Runs a command with inherited stdio; fails unless it exits with status 0.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = describe(command);
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs a command capturing its output; an error only when it cannot be started.
pub fn capture(command: &mut Command) -> Result<Output> {
    let shown = describe(command);
    command
        .output()
        .with_context(|| format!("could not start `{shown}`"))
}

/// Stdout and stderr of a finished command, joined and trimmed, for messages.
pub fn combined_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr);
    }
    text
}

/// What cargo built for one target, from its `compiler-artifact` message
/// (`--message-format=json`).
#[derive(Debug, serde::Deserialize)]
pub struct Artifact {
    /// The target built.
    pub target: ArtifactTarget,
    /// Every file produced (`.rlib`, `.wasm`, ...), wherever the profile and target put them.
    #[serde(default)]
    pub filenames: Vec<std::path::PathBuf>,
    /// The executable, for a binary target.
    #[serde(default)]
    pub executable: Option<std::path::PathBuf>,
}

/// The target of an [`Artifact`].
#[derive(Debug, serde::Deserialize)]
pub struct ArtifactTarget {
    /// The target's name (`tollgate`, `tollgate_headers`).
    pub name: String,
}

/// Runs a cargo `build` command and returns what it built. Cargo's progress and
/// diagnostics go to the terminal as usual (stderr); its stdout carries the
/// JSON messages, read here, so no output path is assumed.
pub fn cargo_build(command: &mut Command) -> Result<Vec<Artifact>> {
    use std::io::BufRead;

    command
        .arg("--message-format=json-render-diagnostics")
        .stdout(std::process::Stdio::piped());
    let shown = describe(command);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let mut artifacts = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("could not read the output of `{shown}`"))?;
            let message: serde_json::Value = match serde_json::from_str(&line) {
                Ok(message) => message,
                // A build script may print to stdout: not a cargo message.
                Err(_) => continue,
            };
            if message["reason"] == "compiler-artifact" {
                let artifact: Artifact = serde_json::from_value(message).with_context(|| {
                    format!(
                        "`{shown}` printed a compiler-artifact message xtask does not understand"
                    )
                })?;
                artifacts.push(artifact);
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("could not wait for `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(artifacts)
}
