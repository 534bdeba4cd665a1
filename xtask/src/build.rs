//! `cargo xtask build`: every `filters/<name>/` built for `wasm32-wasip1` with
//! the size profile `wasm` (workspace Cargo.toml), optimised with `wasm-opt -Oz`
//! (`wasm_opt`) into `target/filters/<name>.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

mod schemas;
mod wasm_opt;

/// The compilation target of the filters.
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// The cargo profile the filters ship with: `[profile.wasm]` in the workspace
/// Cargo.toml (small modules; `release` is for the native tools).
pub const WASM_PROFILE: &str = "wasm";

/// One built filter.
#[derive(Debug, Clone)]
pub struct BuiltFilter {
    /// The folder name under `filters/`.
    pub name: String,
    /// `target/filters/<name>.wasm`.
    pub wasm: PathBuf,
    /// Size of the module in bytes.
    pub bytes: u64,
}

/// Builds all filters and prints their sizes.
pub fn run() -> Result<Vec<BuiltFilter>> {
    ensure_wasm_target()?;
    let wasm_opt = wasm_opt::ensure()?;
    let names = filter_names()?;
    if names.is_empty() {
        bail!("no filters found: expected folders with a Cargo.toml under filters/");
    }

    crate::step(format!(
        "building {} filter(s) for {WASM_TARGET} (profile {WASM_PROFILE}): {}",
        names.len(),
        names.join(", ")
    ));
    let mut command = process::cargo();
    command.args(["build", "--profile", WASM_PROFILE, "--target", WASM_TARGET]);
    for name in &names {
        command.args(["-p", &format!("tollgate-{name}")]);
    }
    // The bench guests (bench/guests/<name>, `tollgate-bench-<name>`) are built with the
    // filters, in the same profile, so their sizes and instructions compare like with like.
    let guests = bench_guest_names()?;
    for name in &guests {
        command.args(["-p", &format!("tollgate-bench-{name}")]);
    }
    let artifacts = process::cargo_build(&mut command)
        .context("building the filters failed (see the compiler output above)")?;

    let out_dir = crate::filters_out_dir();
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;
    let mut built = Vec::new();
    let mut jobs = Vec::new();
    for name in names {
        let lib = format!("tollgate_{}", name.replace('-', "_"));
        let artefact = artifacts
            .iter()
            .filter(|artifact| artifact.target.name == lib)
            .flat_map(|artifact| &artifact.filenames)
            .find(|file| file.extension().is_some_and(|ext| ext == "wasm"))
            .with_context(|| {
                format!(
                    "cargo built tollgate-{name} but no {lib}.wasm: is its crate-type [\"cdylib\", \"rlib\"] and its lib name {lib}?"
                )
            })?;
        let wasm = out_dir.join(format!("{name}.wasm"));
        jobs.push(wasm_opt::Job {
            built: artefact,
            dest: wasm.clone(),
        });
        built.push(BuiltFilter {
            name,
            wasm,
            bytes: 0,
        });
    }
    jobs.extend(bench_guest_jobs(&artifacts, &guests)?);
    crate::step(format!(
        "wasm-opt {} ({})",
        wasm_opt::LEVEL,
        wasm_opt.display()
    ));
    wasm_opt::optimize_all(&wasm_opt, &jobs)?;
    for filter in &mut built {
        filter.bytes = std::fs::metadata(&filter.wasm)
            .with_context(|| format!("could not read {}", filter.wasm.display()))?
            .len();
    }
    schemas::embed(&mut built)?;
    for filter in &built {
        println!(
            "    {:<20} {:>9.1} KiB  {}",
            filter.name,
            filter.bytes as f64 / 1024.0,
            relative(&filter.wasm)
        );
    }
    Ok(built)
}

/// The folder names under `filters/` that hold a crate, sorted.
pub fn filter_names() -> Result<Vec<String>> {
    crate_dirs("filters")
}

/// The folder names under `bench/guests/` that hold a crate, sorted.
pub fn bench_guest_names() -> Result<Vec<String>> {
    crate_dirs("bench/guests")
}

/// The bench guests cargo built, to optimise into `target/bench-guests/<name>.wasm`.
fn bench_guest_jobs<'a>(
    artifacts: &'a [process::Artifact],
    names: &[String],
) -> Result<Vec<wasm_opt::Job<'a>>> {
    let out_dir = crate::root().join("target").join("bench-guests");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;
    let mut jobs = Vec::new();
    for name in names {
        let lib = format!("tollgate_bench_{}", name.replace('-', "_"));
        let artefact = artifacts
            .iter()
            .filter(|artifact| artifact.target.name == lib)
            .flat_map(|artifact| &artifact.filenames)
            .find(|file| file.extension().is_some_and(|ext| ext == "wasm"))
            .with_context(|| format!("cargo built tollgate-bench-{name} but no {lib}.wasm"))?;
        jobs.push(wasm_opt::Job {
            built: artefact,
            dest: out_dir.join(format!("{name}.wasm")),
        });
    }
    Ok(jobs)
}

/// The folder names under `dir` (from the root) that hold a crate, sorted.
fn crate_dirs(dir: &str) -> Result<Vec<String>> {
    let dir = crate::root().join(dir);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("could not list {}", dir.display()))?;
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The toolchain's `wasm32-wasip1` standard library: already there, or
/// `rustup target add wasm32-wasip1` (its download progress shown), or a clear
/// error when rustup is absent.
fn ensure_wasm_target() -> Result<()> {
    crate::step(format!("ensuring the {WASM_TARGET} target"));
    if sysroot_has_target()? {
        return Ok(());
    }
    println!("    rustup target add {WASM_TARGET}");
    let mut rustup = Command::new("rustup");
    rustup
        .args(["target", "add", WASM_TARGET])
        .current_dir(crate::root());
    match rustup.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => {
            bail!("`rustup target add {WASM_TARGET}` failed ({status}): see its output above")
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "rustup is not installed and this Rust toolchain has no {WASM_TARGET} standard library; \
             install rustup (https://rustup.rs) or a toolchain that ships {WASM_TARGET}"
        ),
        Err(error) => Err(error).context("could not run rustup"),
    }
}

/// Whether `rustc --print sysroot` holds the wasm target's standard library.
fn sysroot_has_target() -> Result<bool> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = process::capture(
        Command::new(rustc)
            .args(["--print", "sysroot"])
            .current_dir(crate::root()),
    )?;
    if !output.status.success() {
        bail!(
            "`rustc --print sysroot` failed: {}",
            process::combined_output(&output)
        );
    }
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok(Path::new(&sysroot)
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .is_dir())
}

/// A path shown relative to the repository root when it is inside it.
pub fn relative(path: &Path) -> String {
    path.strip_prefix(crate::root())
        .unwrap_or(path)
        .display()
        .to_string()
}
