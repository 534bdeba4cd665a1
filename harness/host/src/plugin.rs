//! Loading a proxy-wasm module: reading, compiling, detecting the ABI
//! version, checking imports against what the host (and Envoy) provides,
//! and building the `Engine`, `Linker` and `InstancePre` once. Each VM then
//! gets a fresh `Store` (see [`crate::vm`]).

use crate::abi;
use crate::cache::{CacheOutcome, ModuleCache};
use crate::state::{HostState, SharedRegistry, VmSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module, Store};

/// How often the engine's epoch advances (the granularity of call timeouts).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

pub use tollgate_abi::AbiVersion;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read filter {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not chained as a source).
        error: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("{name} is not a WebAssembly module (it does not start with the `\\0asm` magic bytes)")]
    NotWasm {
        /// The filter.
        name: String,
    },
    /// WebAssembly that does not validate or compile.
    #[error("{name} is not a valid WebAssembly module: {message}")]
    Invalid {
        /// The filter.
        name: String,
        /// Compiler message.
        message: String,
    },
    /// Valid WebAssembly without a proxy-wasm ABI export.
    #[error(
        "{name} is not a proxy-wasm module: it exports none of proxy_abi_version_0_2_1, proxy_abi_version_0_2_0, proxy_abi_version_0_1_0"
    )]
    NotProxyWasm {
        /// The filter.
        name: String,
    },
    /// Imports the host does not provide (every one is named).
    #[error("{name} imports what the host does not provide: {}", missing.join(", "))]
    MissingImports {
        /// The filter.
        name: String,
        /// `module.name` of each missing import, with a note where useful.
        missing: Vec<String>,
    },
    /// An import exists but with a different type, or another link error.
    #[error("{name} cannot be linked: {message}")]
    Link {
        /// The filter.
        name: String,
        /// Linker message.
        message: String,
    },
    /// The module lacks its memory or allocator export.
    #[error("{name}: {message}")]
    MissingExport {
        /// The filter.
        name: String,
        /// What is missing.
        message: String,
    },
}

/// One import of a module, as `tollgate inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInfo {
    /// Import module (`env`, `wasi_snapshot_preview1`, ...).
    pub module: String,
    /// Import name.
    pub name: String,
    /// `func`, `memory`, `table`, `global`, `tag`.
    pub kind: &'static str,
    /// `None` when provided; otherwise why it is not.
    pub problem: Option<String>,
}

/// What a module declares, as `tollgate inspect` shows it.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    /// The declared ABI version, `None` when not a proxy-wasm module.
    pub abi: Option<AbiVersion>,
    /// Export names with their kind.
    pub exports: Vec<(String, &'static str)>,
    /// Imports and whether the host provides them.
    pub imports: Vec<ImportInfo>,
}

impl ModuleInfo {
    /// Imports the host does not provide, as `module.name (reason)`.
    pub fn unknown_imports(&self) -> Vec<String> {
        self.imports
            .iter()
            .filter_map(|i| {
                i.problem
                    .as_ref()
                    .map(|p| format!("{}.{} ({p})", i.module, i.name))
            })
            .collect()
    }
}

fn kind_of(t: &ExternType) -> &'static str {
    match t {
        ExternType::Func(_) => "func",
        ExternType::Memory(_) => "memory",
        ExternType::Table(_) => "table",
        ExternType::Global(_) => "global",
        ExternType::Tag(_) => "tag",
    }
}

/// Advances an engine's epoch while alive; stops on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A compiled, linked proxy-wasm module, ready to start VMs.
pub struct Plugin {
    pub(crate) name: String,
    pub(crate) path: Option<PathBuf>,
    pub(crate) wasm_bytes: u64,
    pub(crate) abi: AbiVersion,
    pub(crate) engine: Engine,
    pub(crate) instance_pre: InstancePre<HostState>,
    /// The same module through the wrapping linker (metered and traced VMs).
    pub(crate) wrapped_pre: InstancePre<HostState>,
    pub(crate) info: ModuleInfo,
    pub(crate) shared: Arc<SharedRegistry>,
    /// Compiled with fuel metering: VMs count wasm instructions and host calls.
    pub(crate) metered: bool,
    /// Time to compile (or read from the cache) and link.
    compile_time: Duration,
    /// `Some` when loaded through a [`ModuleCache`].
    cache: Option<CacheOutcome>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("abi", &self.abi)
            .finish_non_exhaustive()
    }
}

/// An engine set up as the harness needs it (epoch interruption for call
/// timeouts), with fuel metering when `metered` (instruction counts).
fn engine_with(metered: bool) -> Result<Engine, String> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(metered);
    // `TOLLGATE_PERFMAP=1`: wasmtime writes /tmp/perf-<pid>.map, so `perf report` names the
    // guest's functions (harness/docs/bench.md, "Where a guest's instructions go").
    if std::env::var_os("TOLLGATE_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Engine::new(&config).map_err(|e| format!("{e}"))
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, String> {
    let mut linker = Linker::new(engine);
    abi::link(&mut linker).map_err(|e| format!("{e}"))?;
    Ok(linker)
}

/// The engine (metered or not) and the linked host functions for loading `name`.
fn engine_and_linker(name: &str, metered: bool) -> Result<(Engine, Linker<HostState>), LoadError> {
    let engine = engine_with(metered).map_err(|message| LoadError::Invalid {
        name: name.into(),
        message,
    })?;
    let linker = linker(&engine).map_err(|message| LoadError::Link {
        name: name.into(),
        message,
    })?;
    Ok((engine, linker))
}

/// Compiles `bytes` and describes its ABI, exports and imports.
fn analyse(
    engine: &Engine,
    linker: &Linker<HostState>,
    name: &str,
    bytes: &[u8],
) -> Result<(Module, ModuleInfo), LoadError> {
    analyse_cached(engine, linker, name, bytes, None).map(|(m, i, _)| (m, i))
}

/// [`analyse`], compiling through `cache` when given.
fn analyse_cached(
    engine: &Engine,
    linker: &Linker<HostState>,
    name: &str,
    bytes: &[u8],
    cache: Option<&ModuleCache>,
) -> Result<(Module, ModuleInfo, Option<CacheOutcome>), LoadError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm { name: name.into() });
    }
    let invalid = |e: wasmtime::Error| LoadError::Invalid {
        name: name.into(),
        message: format!("{e:#}"),
    };
    let (module, outcome) = match cache {
        Some(c) => {
            let (m, o) = c.load_or_compile(engine, bytes).map_err(invalid)?;
            (m, Some(o))
        }
        None => (Module::new(engine, bytes).map_err(invalid)?, None),
    };
    let exports: Vec<(String, &'static str)> = module
        .exports()
        .map(|e| (e.name().to_string(), kind_of(&e.ty())))
        .collect();
    let abi = AbiVersion::detect(exports.iter().map(|(n, _)| n.as_str()));
    let mut store = Store::new(
        engine,
        HostState::new(
            Arc::new(VmSettings::default()),
            Arc::default(),
            abi.unwrap_or(AbiVersion::V0_2_1),
        ),
    );
    let imports = module
        .imports()
        .map(|i| {
            let kind = kind_of(&i.ty());
            let host = linker.get(&mut store, i.module(), i.name()).ok();
            let provided = host.is_some();
            // Linking checks types too: a function imported with another
            // signature than the host's is as missing as an unknown one.
            let wrong_type = match (&host, i.ty()) {
                (Some(wasmtime::Extern::Func(f)), ExternType::Func(want)) => {
                    let have = f.ty(&store);
                    (!have.matches(&want)).then(|| {
                        format!(
                            "imported as {}, the host's is {}",
                            signature(&want),
                            signature(&have)
                        )
                    })
                }
                _ => None,
            };
            let problem = if let Some(why) = wrong_type {
                Some(why)
            } else if !provided {
                Some(if kind == "func" {
                    "no such host function".to_string()
                } else {
                    format!("the host provides no {kind} imports")
                })
            } else if let (Some(abi), "env", Some(versions)) =
                (abi, i.module(), abi::abi_specific_import(i.name()))
            {
                (!versions.contains(&abi)).then(|| {
                    let list: Vec<&str> = versions.iter().map(|v| v.as_str()).collect();
                    format!(
                        "Envoy provides it only to ABI {} modules, this one is {abi}",
                        list.join("/")
                    )
                })
            } else {
                None
            };
            ImportInfo {
                module: i.module().to_string(),
                name: i.name().to_string(),
                kind,
                problem,
            }
        })
        .collect();
    Ok((
        module,
        ModuleInfo {
            abi,
            exports,
            imports,
        },
        outcome,
    ))
}

/// A function type as WAT writes it: `(param i32 i32) (result i32)`.
fn signature(t: &wasmtime::FuncType) -> String {
    let list = |v: Vec<String>| v.join(" ");
    let params: Vec<String> = t.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = t.results().map(|r| r.to_string()).collect();
    let mut out = format!("(param {})", list(params));
    if !results.is_empty() {
        out.push_str(&format!(" (result {})", list(results)));
    }
    out
}

/// Describes a module without requiring it to be loadable (for `tollgate inspect`).
pub fn inspect(name: &str, bytes: &[u8]) -> Result<ModuleInfo, LoadError> {
    let (engine, linker) = engine_and_linker(name, false)?;
    analyse(&engine, &linker, name, bytes).map(|(_, info)| info)
}

impl Plugin {
    /// Loads the module at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let bytes = tollgate_traffic::input::read(path).map_err(|error| LoadError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut plugin = Self::from_bytes(&path.display().to_string(), &bytes)?;
        plugin.path = Some(path.to_path_buf());
        Ok(plugin)
    }

    /// Loads a module from bytes; `name` is used in messages.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        Self::from_bytes_inner(name, bytes, false, None)
    }

    /// Like [`Plugin::load`], compiling through `cache` (a second load of
    /// the same module skips compilation; see [`Plugin::compile_time`]).
    pub fn load_cached(path: impl AsRef<Path>, cache: &ModuleCache) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let bytes = tollgate_traffic::input::read(path).map_err(|error| LoadError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut plugin = Self::from_bytes_cached(&path.display().to_string(), &bytes, cache)?;
        plugin.path = Some(path.to_path_buf());
        Ok(plugin)
    }

    /// Like [`Plugin::from_bytes`], compiling through `cache`.
    pub fn from_bytes_cached(
        name: &str,
        bytes: &[u8],
        cache: &ModuleCache,
    ) -> Result<Self, LoadError> {
        Self::from_bytes_inner(name, bytes, false, Some(cache))
    }

    /// Like [`Plugin::from_bytes`], compiled with wasmtime fuel metering: its
    /// VMs count the wasm instructions each guest call executes and the host
    /// functions the guest calls (deterministic, and slower: `tollgate bench`
    /// uses it for a separate counting pass, never for timing).
    pub fn from_bytes_metered(name: &str, bytes: &[u8]) -> Result<Self, LoadError> {
        Self::from_bytes_inner(name, bytes, true, None)
    }

    fn from_bytes_inner(
        name: &str,
        bytes: &[u8],
        metered: bool,
        cache: Option<&ModuleCache>,
    ) -> Result<Self, LoadError> {
        let started = std::time::Instant::now();
        let (engine, linker) = engine_and_linker(name, metered)?;
        let (module, info, cache) = analyse_cached(&engine, &linker, name, bytes, cache)?;
        let Some(abi) = info.abi else {
            return Err(LoadError::NotProxyWasm { name: name.into() });
        };
        let missing = info.unknown_imports();
        if !missing.is_empty() {
            return Err(LoadError::MissingImports {
                name: name.into(),
                missing,
            });
        }
        let has_export = |n: &str| info.exports.iter().any(|(e, _)| e == n);
        if !info
            .exports
            .iter()
            .any(|(e, k)| e == "memory" && *k == "memory")
        {
            return Err(LoadError::MissingExport {
                name: name.into(),
                message: "the module exports no memory named `memory`".into(),
            });
        }
        if !has_export("malloc") && !has_export("proxy_on_memory_allocate") {
            return Err(LoadError::MissingExport {
                name: name.into(),
                message: "the module exports neither `malloc` nor `proxy_on_memory_allocate`; Envoy refuses such modules (\"Wasm module is missing malloc function\")".into(),
            });
        }
        let instance_pre = linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link {
                name: name.into(),
                message: format!("{e:#}"),
            })?;
        let wrapped_pre = abi::wrapped_linker(Arc::new(linker), &module)
            .and_then(|l| l.instantiate_pre(&module))
            .map_err(|e| LoadError::Link {
                name: name.into(),
                message: format!("{e:#}"),
            })?;
        Ok(Self {
            name: name.into(),
            path: None,
            wasm_bytes: bytes.len() as u64,
            abi,
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            instance_pre,
            wrapped_pre,
            info,
            shared: Arc::default(),
            metered,
            compile_time: started.elapsed(),
            cache,
        })
    }

    /// Time taken to compile (or read from the module cache) and link.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Whether the module came from the cache (`None`: loaded without one).
    pub fn cache_outcome(&self) -> Option<CacheOutcome> {
        self.cache
    }

    /// The name used in messages (the path for loaded files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared ABI version.
    pub fn abi(&self) -> AbiVersion {
        self.abi
    }

    /// Size of the module in bytes.
    pub fn wasm_bytes(&self) -> u64 {
        self.wasm_bytes
    }

    /// Exports and imports.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }
}

#[cfg(test)]
mod tests {
    use super::AbiVersion;

    #[test]
    fn newest_declared_abi_wins() {
        assert_eq!(
            AbiVersion::detect(["proxy_abi_version_0_1_0", "proxy_abi_version_0_2_0"]),
            Some(AbiVersion::V0_2_0)
        );
        assert_eq!(AbiVersion::detect(["memory", "malloc"]), None);
    }
}
