//! `cargo xtask oidc-provider`: the OpenID provider the identity filters' tests run against,
//! npm's `oidc-provider` (OpenID Certified) at the version pinned by
//! `tests/oidc-provider/package-lock.json`, installed with `npm ci` into
//! `target/oidc-provider/node_modules` (never committed). The tests start
//! `node tests/oidc-provider/server.cjs` with `NODE_PATH` pointing there (tests/src/oidc.rs).
//!
//! [`ensure`] is the one way xtask installs it: a no-op when the installed lock file matches.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// The oldest Node major version the pinned `oidc-provider` supports (8.x: Node 18 LTS and later).
const NODE_MAJOR_MIN: u32 = 18;

/// Ensures the provider is installed and prints its folder alone on the last line.
pub fn run() -> Result<PathBuf> {
    let dir = ensure()?;
    println!("{}", dir.display());
    Ok(dir)
}

/// `<root>/target/oidc-provider`, with `node_modules` installed from the committed lock file.
pub fn ensure() -> Result<PathBuf> {
    let source = crate::root().join("tests").join("oidc-provider");
    let dir = crate::root().join("target").join("oidc-provider");
    crate::step(format!(
        "ensuring the OpenID provider (npm oidc-provider) in {}",
        crate::build::relative(&dir)
    ));
    let node = node_version()?;
    println!("    node {node}");

    let lock = read(&source.join("package-lock.json"))?;
    let installed_lock = dir.join("package-lock.json");
    if std::fs::read_to_string(&installed_lock).ok().as_deref() == Some(lock.as_str())
        && dir.join("node_modules").join("oidc-provider").is_dir()
    {
        println!("    up to date");
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    std::fs::write(
        dir.join("package.json"),
        read(&source.join("package.json"))?,
    )
    .with_context(|| format!("could not write {}", dir.join("package.json").display()))?;
    // The lock goes in last of all, after a successful install, so that a failed
    // install is retried next time.
    let _ = std::fs::remove_file(&installed_lock);
    let staging = dir.join("package-lock.json.new");
    std::fs::write(&staging, &lock)
        .with_context(|| format!("could not write {}", staging.display()))?;
    std::fs::rename(&staging, &installed_lock)
        .with_context(|| format!("could not write {}", installed_lock.display()))?;
    println!("    npm ci (downloads ~3 MB the first time)");
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund", "--omit=dev"])
        .current_dir(&dir)
        .stdout(std::io::stderr());
    let status = npm
        .status()
        .context("npm is needed to install the OpenID provider the identity tests use (Debian: apt-get install npm)")?;
    if !status.success() {
        let _ = std::fs::remove_file(&installed_lock);
        bail!(
            "`npm ci` in {} failed ({status}; its output is above); check access to the npm registry",
            dir.display()
        );
    }
    if !dir.join("node_modules").join("oidc-provider").is_dir() {
        let _ = std::fs::remove_file(&installed_lock);
        bail!(
            "`npm ci` succeeded but {} has no node_modules/oidc-provider",
            dir.display()
        );
    }
    Ok(dir)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
}

/// `node --version` without its `v`, refused when older than [`NODE_MAJOR_MIN`].
fn node_version() -> Result<String> {
    let output = process::capture(Command::new("node").arg("--version"))
        .context("Node.js is needed to run the OpenID provider the identity tests use (Debian: apt-get install nodejs)")?;
    if !output.status.success() {
        bail!(
            "`node --version` failed: {}",
            process::combined_output(&output)
        );
    }
    let version = String::from_utf8_lossy(&output.stdout)
        .trim()
        .trim_start_matches('v')
        .to_string();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("`node --version` printed {version:?}, not a version"))?;
    if major < NODE_MAJOR_MIN {
        bail!(
            "node {version} is too old for oidc-provider: Node {NODE_MAJOR_MIN} or later is needed"
        );
    }
    Ok(version)
}
