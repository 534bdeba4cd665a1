//! The on-disk cache of compiled modules: a second run of the same module
//! with the same wasmtime build and engine configuration skips compilation.
//!
//! Entries are named by the SHA-256 of the module bytes and a hash of
//! wasmtime's precompile compatibility key (its version and the engine
//! configuration, fuel metering included). Each file holds the SHA-256 of
//! the serialized module followed by the module, and is only deserialized
//! when that checksum matches: a truncated, corrupted or foreign file is
//! ignored and the module compiled afresh. Writes go to a temporary file
//! renamed into place, so readers never see a partial entry.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

/// Where compiled modules are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from the cache (no compilation).
    Hit,
    /// Compiled, and stored for next time.
    Stored,
    /// Compiled; the cache could not be written (the run goes on).
    Unwritable,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ModuleCache {
    /// A cache in `dir` (created on first store).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/tollgate/modules`, else `$HOME/.cache/tollgate/modules`,
    /// else `target/tollgate-cache/modules` under the current directory.
    pub fn default_location() -> Self {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .unwrap_or_else(|| PathBuf::from("target"));
        Self::at(base.join("tollgate").join("modules"))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry file for `bytes` compiled by `engine`.
    pub fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let module = hex(&Sha256::digest(bytes));
        self.dir.join(format!(
            "{module}-wasmtime{}-{:016x}.cwasm",
            wasmtime_version(),
            h.finish()
        ))
    }

    /// The compiled module for `bytes`: from the cache when a valid entry
    /// exists, else compiled (and stored).
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Module, CacheOutcome)> {
        let path = self.entry(engine, bytes);
        if let Some(module) = Self::read(engine, &path) {
            return Ok((module, CacheOutcome::Hit));
        }
        let module = Module::new(engine, bytes)?;
        let outcome = match self.write(&path, &module) {
            Ok(()) => CacheOutcome::Stored,
            Err(_) => CacheOutcome::Unwritable,
        };
        Ok((module, outcome))
    }

    fn read(engine: &Engine, path: &Path) -> Option<Module> {
        let file = std::fs::read(path).ok()?;
        if file.len() < 32 {
            return None;
        }
        let (sum, payload) = file.split_at(32);
        if Sha256::digest(payload).as_slice() != sum {
            return None;
        }
        // SAFETY: `Module::deserialize` trusts its input to be a module that
        // wasmtime serialized (it maps it as executable code). `payload` is
        // exactly what `write` below stored: the entry's name is derived from
        // the module bytes and this engine's compatibility key, and the
        // SHA-256 checksum written in front of the payload matched, so the
        // bytes are those `Module::serialize` produced, unaltered. wasmtime
        // itself also checks the version and engine settings in the header.
        unsafe { Module::deserialize(engine, payload) }.ok()
    }

    fn write(&self, path: &Path, module: &Module) -> std::io::Result<()> {
        let payload = module.serialize().map_err(std::io::Error::other)?;
        std::fs::create_dir_all(&self.dir)?;
        let mut file = Sha256::digest(&payload).to_vec();
        file.extend_from_slice(&payload);
        tollgate_files::write(path, &file)
    }
}

/// The wasmtime version compiled in (part of every cache key).
fn wasmtime_version() -> &'static str {
    // Kept in step with the workspace's wasmtime requirement; the engine's
    // compatibility hash guards the exact build as well.
    "48"
}
