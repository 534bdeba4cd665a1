//! Binaryen's `wasm-opt` over every module `cargo xtask build` produces (filters and bench
//! guests alike, so sizes and instructions still compare like with like).
//!
//! rustc's output still carries what Binaryen removes at the wasm level: duplicate functions
//! left after monomorphisation, unused locals, redundant blocks and branches, loads and stores
//! that can merge. `-Oz` cut the filters' modules by 11-15% and their instructions per
//! request by 1-3% (harness/docs/bench.md, "Module sizes"). The wasm features are named, not
//! detected: the `wasm` profile strips the `target_features` section Binaryen would read, and
//! they are the ones rustc enables for `wasm32-wasip1` (Envoy's V8 and wasmtime run them all).
//!
//! `wasm-opt` comes from `WASM_OPT`, else the `PATH`, else Debian's `binaryen` package, which
//! this module installs with `apt-get` when it runs as root (as CI does); otherwise it says
//! how to install it. A build never skips the step: a module left unoptimised would be
//! measured as if it were the shipped one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// The optimisation level: for size, which here also lowers the instruction counts.
pub const LEVEL: &str = "-Oz";

/// The wasm features rustc enables for `wasm32-wasip1` (Rust 1.95), and SIMD128, which
/// tollgate-jose enables for its RSA arithmetic (`#[target_feature(enable = "simd128")]`):
/// what the modules may use. Binaryen does not vectorise, so only that code uses SIMD.
pub const FEATURES: &[&str] = &[
    "--enable-simd",
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// The oldest Binaryen release tried (Debian 12's `binaryen`).
const MIN_VERSION: u32 = 108;

/// The path of a working `wasm-opt`, installing Debian's `binaryen` as root when none is found.
pub fn ensure() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("WASM_OPT") {
        let bin = PathBuf::from(bin);
        check_version(&bin).with_context(|| format!("WASM_OPT={} does not run", bin.display()))?;
        return Ok(bin);
    }
    let bin = PathBuf::from("wasm-opt");
    if check_version(&bin).is_ok() {
        return Ok(bin);
    }
    if !is_root() {
        bail!(
            "wasm-opt (Binaryen) is needed to optimise the modules: install it (Debian: `apt-get install binaryen`; npm: `binaryen`) or set WASM_OPT to its path"
        );
    }
    crate::step("installing wasm-opt (Debian package binaryen)");
    let install = || {
        process::run(Command::new("apt-get").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "binaryen",
        ]))
    };
    if install().is_err() {
        // A fresh machine may have no package lists yet.
        process::run(Command::new("apt-get").args(["update", "-q"]))
            .context("`apt-get update` failed while installing binaryen (for wasm-opt)")?;
        install().context("`apt-get install binaryen` failed (wasm-opt optimises the modules)")?;
    }
    check_version(&bin).context("binaryen is installed but `wasm-opt --version` fails")?;
    Ok(bin)
}

/// `wasm-opt --version` runs and names release [`MIN_VERSION`] or later; returns the version line.
fn check_version(bin: &Path) -> Result<String> {
    let output = process::capture(Command::new(bin).arg("--version"))?;
    if !output.status.success() {
        bail!(
            "`{} --version` failed: {}",
            bin.display(),
            process::combined_output(&output)
        );
    }
    let line = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match version_number(&line) {
        Some(version) if version >= MIN_VERSION => Ok(line),
        Some(version) => bail!(
            "{} is Binaryen {version}; the project needs {MIN_VERSION} or later",
            bin.display()
        ),
        None => bail!("could not read a version in `{line}`"),
    }
}

/// The release number in `wasm-opt version 108` or `wasm-opt version 116 (version_116)`.
fn version_number(line: &str) -> Option<u32> {
    let rest = line.split("version").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether this process runs as root (so `apt-get install` may work).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// One module to ship: what cargo built and where the optimised copy goes.
pub struct Job<'a> {
    /// The module cargo wrote (`target/wasm32-wasip1/wasm/<lib>.wasm`).
    pub built: &'a Path,
    /// Where the optimised module is copied (`target/filters/<name>.wasm`, ...).
    pub dest: PathBuf,
}

/// Optimises each module into `dest`, two at a time (the machines have two cores). The
/// optimised module is kept next to cargo's (`<lib>.wasm-opt-Oz.wasm`, the level in its name) and
/// reused while it is newer than cargo's, so a build that changed one filter optimises that one only.
pub fn optimize_all(bin: &Path, jobs: &[Job<'_>]) -> Result<()> {
    let started = std::time::Instant::now();
    let (first, second) = jobs.split_at(jobs.len() / 2);
    let (ran_first, ran_second) = std::thread::scope(|scope| {
        let other = scope.spawn(|| optimize_each(bin, second));
        let mine = optimize_each(bin, first);
        let other = other
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a wasm-opt worker thread panicked")));
        Ok::<_, anyhow::Error>((mine?, other?))
    })?;
    println!(
        "    wasm-opt {LEVEL}: {} of {} module(s) optimised in {:.1} s (the others unchanged since)",
        ran_first + ran_second,
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs the jobs in order; how many needed `wasm-opt`.
fn optimize_each(bin: &Path, jobs: &[Job<'_>]) -> Result<usize> {
    let mut ran = 0;
    for job in jobs {
        let optimised = job.built.with_extension(format!("wasm-opt{LEVEL}.wasm"));
        if !is_newer(&optimised, job.built) {
            optimize(bin, job.built, &optimised)?;
            ran += 1;
        }
        std::fs::copy(&optimised, &job.dest).with_context(|| {
            format!(
                "could not copy {} to {}",
                optimised.display(),
                job.dest.display()
            )
        })?;
    }
    Ok(ran)
}

/// Whether `file` exists and was written after `than`.
fn is_newer(file: &Path, than: &Path) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified());
    matches!((modified(file), modified(than)), (Ok(a), Ok(b)) if a > b)
}

/// `wasm-opt -Oz` on one module, written to a temporary file then renamed to `out`.
fn optimize(bin: &Path, module: &Path, out: &Path) -> Result<()> {
    let partial = out.with_extension("partial");
    let mut command = Command::new(bin);
    command
        .arg(LEVEL)
        .args(FEATURES)
        .arg(module)
        .arg("-o")
        .arg(&partial);
    let shown = process::describe(&command);
    let output = process::capture(&mut command)?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            process::combined_output(&output)
        );
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("could not move {} to {}", partial.display(), out.display()))
}

#[cfg(test)]
mod tests {
    use super::version_number;

    #[test]
    fn reads_binaryen_versions() {
        assert_eq!(version_number("wasm-opt version 108"), Some(108));
        assert_eq!(
            version_number("wasm-opt version 116 (version_116)"),
            Some(116)
        );
        assert_eq!(version_number("wasm-opt"), None);
    }
}
