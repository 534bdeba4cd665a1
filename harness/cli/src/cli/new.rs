//! `tollgate new`: scaffolds a filter crate ([`tollgate_ship::scaffold`]).

use crate::out::outln;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tollgate_ship::scaffold::{Layout, Scaffold};

/// Arguments of `tollgate new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The filter's name (lower-case, digits, '-'), e.g. `demo-filter`.
    name: String,
    /// Make a standalone crate in this folder (its own workspace, the SDK by path) instead of
    /// `filters/<name>/` in the Tollgate workspace of the current directory.
    #[arg(long)]
    standalone: Option<PathBuf>,
    /// The SDK for a standalone crate (default: the sdk/ of the Tollgate checkout this
    /// `tollgate` was built from).
    #[arg(long, requires = "standalone")]
    sdk: Option<PathBuf>,
}

/// `tollgate new`.
pub fn new(args: NewArgs) -> Result<()> {
    let layout = match &args.standalone {
        Some(dir) => {
            let sdk = match &args.sdk {
                Some(sdk) => sdk.clone(),
                None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sdk"),
            };
            let sdk = sdk.canonicalize().with_context(|| {
                format!(
                    "the SDK is not at {} (pass --sdk <path to tollgate's sdk/>)",
                    sdk.display()
                )
            })?;
            Layout::Standalone {
                dir: dir.clone(),
                sdk,
            }
        }
        None => {
            let root = std::env::current_dir().context("no current directory")?;
            if !root.join("filters").is_dir() || !root.join("envoy").is_dir() {
                bail!(
                    "{} is not the Tollgate workspace root (no filters/ and envoy/): run from there, or pass --standalone <dir>",
                    root.display()
                );
            }
            Layout::Workspace { root }
        }
    };
    let scaffold = Scaffold::new(&args.name, layout)?;
    let existing = scaffold.existing()?;
    if !existing.is_empty() {
        let list: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        bail!("not overwriting what exists: {}", list.join(", "));
    }
    for (path, text) in scaffold.files()? {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        tollgate_files::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?;
        outln!("wrote {}", path.display());
    }
    let dir = scaffold.crate_dir();
    match &args.standalone {
        Some(_) => outln!(
            "next, in {}: cargo build --release --target wasm32-wasip1 && cargo test && tollgate test tests/suite.yaml",
            dir.display()
        ),
        None => outln!(
            "next: cargo xtask build && cargo test -p tollgate-{} && tollgate test filters/{}/tests/suite.yaml",
            args.name,
            args.name
        ),
    }
    Ok(())
}
