//! One real Envoy process: started with `--concurrency 1` on a written
//! bootstrap, ready once its admin API reports the listener's bound address,
//! killed on `Drop` (also on every error path).
//!
//! Its single worker thread (`comm` `wrk:worker_0` in Envoy 1.40) is found in
//! `/proc/<pid>/task/*/comm`; [`EnvoyProcess::worker_cpu_ns`] reads the first
//! field of its `schedstat` (time spent on a CPU, in nanoseconds).

use std::fs::File;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{LiveError, http1, io};

/// How long Envoy may take to start listening (V8 compiles the modules first).
const STARTUP: Duration = Duration::from_secs(120);
/// Lines of Envoy's log quoted in errors.
const LOG_TAIL: usize = 25;
/// The worker thread's name prefix (`wrk:worker_0`, truncated to 15 bytes by the kernel).
const WORKER_PREFIX: &str = "wrk:worker_";

static STARTS: AtomicU32 = AtomicU32::new(0);

/// How one Envoy is started: the project's one Envoy command line, used by
/// [`EnvoyProcess`], the recorder ([`crate::record`]) and the integration
/// tests' launcher (local binary and container alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The bootstrap file.
    pub config: PathBuf,
    /// Where Envoy writes its admin address (`--admin-address-path`).
    pub admin_address: PathBuf,
    /// Envoy's `--base-id` (shared memory names; distinct per running Envoy).
    pub base_id: u32,
    /// `--log-level`.
    pub log_level: String,
    /// `--component-log-level wasm:<level>`, when set.
    pub wasm_log_level: Option<String>,
    /// `--concurrency`: worker threads, each with its own Wasm VMs (default 1).
    pub concurrency: u32,
}

impl Launch {
    /// Envoy on `config`, writing its admin address to `admin_address`, at
    /// log level `warning`.
    pub fn new(
        config: impl Into<PathBuf>,
        admin_address: impl Into<PathBuf>,
        base_id: u32,
    ) -> Launch {
        Launch {
            config: config.into(),
            admin_address: admin_address.into(),
            base_id,
            log_level: "warning".into(),
            wasm_log_level: None,
            concurrency: 1,
        }
    }

    /// The arguments: `concurrency` workers (one by default), hot restart disabled.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "-c".to_string(),
            self.config.display().to_string(),
            "--base-id".into(),
            self.base_id.to_string(),
            "--disable-hot-restart".into(),
            "--concurrency".into(),
            self.concurrency.max(1).to_string(),
            "--log-level".into(),
            self.log_level.clone(),
        ];
        if let Some(level) = &self.wasm_log_level {
            args.push("--component-log-level".into());
            args.push(format!("wasm:{level}"));
        }
        args.push("--admin-address-path".into());
        args.push(self.admin_address.display().to_string());
        args
    }

    /// Starts the local binary `envoy` with these arguments, its standard
    /// output and error going to `log` (created), in `cwd` when given. A
    /// signal that ends this process kills it (`tollgate_files`); stop it
    /// with [`crate::record::stop_child`] or forget it there first.
    pub fn spawn(&self, envoy: &Path, log: &Path, cwd: Option<&Path>) -> std::io::Result<Child> {
        // scratch: Envoy's log, in the run's own folder.
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let mut command = Command::new(envoy);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .inspect(|child| tollgate_files::kill_child_on_signal(child.id()))
    }
}

/// A running Envoy; dropping it kills the process.
pub struct EnvoyProcess {
    name: String,
    child: Option<Child>,
    listen: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    worker_tid: Option<u32>,
}

impl EnvoyProcess {
    /// Writes `bootstrap` to `<dir>/<name>.json`, starts `envoy` on it
    /// (`--concurrency 1`, log to `<dir>/<name>.log`) and waits until it listens.
    pub fn start(
        envoy: &Path,
        name: &str,
        bootstrap: &Value,
        dir: &Path,
    ) -> Result<EnvoyProcess, LiveError> {
        super::check_envoy(envoy)?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let boot = dir.join(format!("{safe}.json"));
        let text = serde_json::to_vec_pretty(bootstrap)
            .map_err(|e| LiveError::Config(format!("bootstrap for {name}: {e}")))?;
        // scratch: the run's own folder.
        std::fs::write(&boot, text).map_err(io(format!("writing {}", boot.display())))?;
        let admin_path = dir.join(format!("{safe}.admin"));
        let _ = std::fs::remove_file(&admin_path);
        let log = dir.join(format!("{safe}.log"));
        let base_id =
            20_000 + (std::process::id() % 1000) * 20 + STARTS.fetch_add(1, Ordering::Relaxed) % 20;
        let child = Launch::new(&boot, &admin_path, base_id)
            .spawn(envoy, &log, None)
            .map_err(|e| LiveError::Envoy {
                config: name.to_owned(),
                message: format!(
                    "could not start {} (log {}): {e}",
                    envoy.display(),
                    log.display()
                ),
            })?;
        let mut p = EnvoyProcess {
            name: name.to_owned(),
            child: Some(child),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            worker_tid: None,
        };
        p.wait_ready(&admin_path)?;
        p.worker_tid = p.find_worker();
        Ok(p)
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the listener is bound.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of Envoy's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }

    fn fail(&self, message: String) -> LiveError {
        LiveError::Envoy {
            config: self.name.clone(),
            message: format!(
                "{message}; end of {}:\n{}",
                self.log.display(),
                self.log_tail()
            ),
        }
    }

    /// Fails when Envoy has exited.
    pub fn check_alive(&mut self) -> Result<(), LiveError> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            self.child = None;
            return Err(self.fail(format!("exited ({status})")));
        }
        Ok(())
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), LiveError> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(self.fail(format!(
                    "exited ({status}) before listening: it refused the configuration or could not bind"
                )));
            }
            if let Ok(text) = std::fs::read_to_string(admin_path)
                && let Ok(admin) = text.trim().parse::<SocketAddr>()
            {
                self.admin = admin;
                if let Some(addr) = listener_address(admin) {
                    if !addr.ip().is_loopback() {
                        return Err(self.fail(format!(
                            "listens on {addr}; Tollgate only sends traffic to 127.0.0.1"
                        )));
                    }
                    self.listen = addr;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.fail(format!("did not start listening within {STARTUP:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn find_worker(&self) -> Option<u32> {
        let pid = self.pid()?;
        let mut found: Vec<(String, u32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let tid: u32 = e.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                let comm = comm.trim().to_owned();
                comm.starts_with(WORKER_PREFIX).then_some((comm, tid))
            })
            .collect();
        found.sort();
        found.first().map(|(_, tid)| *tid)
    }

    /// CPU time of the worker thread so far, in nanoseconds (`schedstat`'s first field).
    pub fn worker_cpu_ns(&self) -> Result<u64, LiveError> {
        let pid = self
            .pid()
            .ok_or_else(|| self.fail("is not running".into()))?;
        let tid = self.worker_tid.ok_or_else(|| {
            self.fail(format!(
                "has no worker thread named {WORKER_PREFIX}* in /proc/{pid}/task"
            ))
        })?;
        let path = format!("/proc/{pid}/task/{tid}/schedstat");
        let text = std::fs::read_to_string(&path).map_err(io(format!("reading {path}")))?;
        text.split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| LiveError::Config(format!("{path}: unexpected content {text:?}")))
    }

    /// Stops Envoy now.
    pub fn kill(&mut self) {
        crate::record::stop_child(&mut self.child);
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET on the admin API, the body as text.
pub fn admin_get(admin: SocketAddr, path: &str) -> Option<String> {
    let s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut w = s.try_clone().ok()?;
    std::io::Write::write_all(
        &mut w,
        format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut r = BufReader::new(s);
    let head = http1::read_head(&mut r).ok()??;
    if head.start_line.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let body = http1::read_body(&mut r, &head, true).ok()?;
    String::from_utf8(body).ok()
}

/// The first listener's bound address, from the admin API.
fn listener_address(admin: SocketAddr) -> Option<SocketAddr> {
    let body = admin_get(admin, "/listeners?format=json")?;
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let sa = v.pointer("/listener_statuses/0/local_address/socket_address")?;
    let ip = sa.get("address")?.as_str()?;
    let port = u16::try_from(sa.get("port_value")?.as_u64()?)
        .ok()
        .filter(|p| *p != 0)?;
    format!("{ip}:{port}").parse().ok()
}
