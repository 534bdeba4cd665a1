//! `tollgate inspect`: a module's ABI version, exports and imports, and
//! the imports the host does not provide.

use crate::out::outln;
use anyhow::{Context, Result, bail};
use std::path::Path;
use tollgate_host::plugin;

pub(crate) fn inspect(path: &Path) -> Result<()> {
    let bytes = tollgate_traffic::input::read(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let info = plugin::inspect(&path.display().to_string(), &bytes)?;
    outln!("module {} ({} bytes)", path.display(), bytes.len());
    match info.abi {
        Some(abi) => outln!("proxy-wasm ABI {abi}"),
        None => outln!("not a proxy-wasm module (no proxy_abi_version_* export)"),
    }
    outln!("exports ({}):", info.exports.len());
    for (name, kind) in &info.exports {
        outln!("  {kind:<6} {name}");
    }
    outln!("imports ({}):", info.imports.len());
    for i in &info.imports {
        let mark = if i.problem.is_some() { "MISSING" } else { "ok" };
        outln!("  {mark:<7} {}.{} ({})", i.module, i.name, i.kind);
    }
    let unknown = info.unknown_imports();
    if unknown.is_empty() {
        outln!("all imports are provided by the host");
    } else {
        outln!("imports the host does not provide ({}):", unknown.len());
        for u in &unknown {
            outln!("  {u}");
        }
        bail!("{} imports the host does not provide", path.display());
    }
    Ok(())
}
