//! Recording live traffic: the real Envoy as a recording proxy in front of a
//! service, its HTTP tap filter saving every exchange, converted on the fly
//! into a native JSON-lines recording (`<out>/traffic.jsonl`) that
//! `tollgate replay` reads.
//!
//! Envoy runs with a generated bootstrap (`<out>/.tap/envoy.json`): one
//! listener, the tap filter first (a `file_per_tap` sink writing buffered
//! traces with `JSON_BODY_AS_BYTES`, times and connection addresses) and the
//! router, whose `x-envoy-*` headers are suppressed and which passes the
//! service's `server` header through, so the recording holds what a filter in
//! that position sees. [`Recorder::poll`] turns finished tap files into lines
//! of the recording and deletes them. Bodies longer than
//! [`RecorderConfig::max_body`] are truncated (with a warning).
//!
//! The recording is written beside `traffic.jsonl` and renamed over it by
//! [`Recorder::stop`] ([`tollgate_files`]): an earlier recording stays
//! as it was until the new one is complete; [`Recorder::keep_partial`] saves
//! what a failed recording got as `traffic.partial.jsonl`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use tollgate_files::AtomicFile;
use tollgate_traffic::{Leniency, TrafficError, native, tap};

/// How long Envoy may take to start listening.
const STARTUP: Duration = Duration::from_secs(120);
/// How long a tap file may stay unparsable (being written) before it counts as broken.
const SETTLE: Duration = Duration::from_secs(5);

/// What to record and where.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The Envoy binary.
    pub envoy: PathBuf,
    /// The service, `host:port`.
    pub upstream: String,
    /// Where Envoy listens, `host:port` (port 0: the kernel picks; see [`Recorder::listen_addr`]).
    pub listen: String,
    /// The output folder.
    pub out_dir: PathBuf,
    /// Largest body kept per direction, in bytes.
    pub max_body: u64,
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A bad argument (address...).
    #[error("{0}")]
    Config(String),
    /// Envoy exited or did not start.
    #[error("Envoy {0}")]
    Envoy(String),
    /// A tap file could not be converted.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RecordError {
    let what = what.into();
    move |source| RecordError::Io { what, source }
}

/// The Envoy binary ([`crate::locate::envoy_binary`]).
pub fn envoy_binary() -> Result<PathBuf, RecordError> {
    crate::locate::envoy_binary().map_err(|e| RecordError::Config(e.0))
}

fn split_addr(s: &str, flag: &str) -> Result<(String, u16), RecordError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| RecordError::Config(format!("--{flag} {s:?}: expected host:port")))?;
    let port = port
        .parse()
        .map_err(|_| RecordError::Config(format!("--{flag} {s:?}: bad port")))?;
    Ok((host.trim_matches(|c| c == '[' || c == ']').to_owned(), port))
}

/// The bootstrap Envoy records with.
pub fn bootstrap(config: &RecorderConfig, tap_prefix: &Path) -> Result<Value, RecordError> {
    let (lhost, lport) = split_addr(&config.listen, "listen")?;
    let (uhost, uport) = split_addr(&config.upstream, "upstream")?;
    let upstream_ip = (uhost.as_str(), uport)
        .to_socket_addrs()
        .map_err(|e| RecordError::Config(format!("--upstream {}: {e}", config.upstream)))?
        .next()
        .ok_or_else(|| {
            RecordError::Config(format!("--upstream {}: no address", config.upstream))
        })?;
    Ok(json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": [{
                "name": "record",
                "address": { "socket_address": { "address": lhost, "port_value": lport } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "record",
                        "server_header_transformation": "PASS_THROUGH",
                        "route_config": { "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "upstream", "timeout": "0s" } }]
                        }]},
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.tap",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.tap.v3.Tap",
                                    "record_headers_received_time": true,
                                    "record_downstream_connection": true,
                                    "common_config": { "static_config": {
                                        "match": { "any_match": true },
                                        "output_config": {
                                            "max_buffered_rx_bytes": config.max_body,
                                            "max_buffered_tx_bytes": config.max_body,
                                            "sinks": [{
                                                "format": "JSON_BODY_AS_BYTES",
                                                "file_per_tap": { "path_prefix": tap_prefix.display().to_string() }
                                            }]
                                        }
                                    }}
                                }
                            },
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                    "suppress_envoy_headers": true
                                }
                            }
                        ]
                    }
                }]}]
            }],
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": { "cluster_name": "upstream", "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                    "address": { "socket_address": { "address": upstream_ip.ip().to_string(), "port_value": upstream_ip.port() } }
                }}]}]}
            }]
        }
    }))
}

/// A running recording proxy. Dropping it stops Envoy.
pub struct Recorder {
    child: Option<Child>,
    tap_dir: PathBuf,
    traffic_path: PathBuf,
    /// The recording being written (`None` once committed or abandoned).
    out: Option<AtomicFile>,
    listen: SocketAddr,
    recorded: usize,
    pending: HashMap<PathBuf, Instant>,
    warnings: Vec<String>,
    log: PathBuf,
}

impl Recorder {
    /// Writes the bootstrap, starts Envoy and waits until it listens.
    pub fn start(config: RecorderConfig) -> Result<Recorder, RecordError> {
        let tap_dir = config.out_dir.join(".tap");
        std::fs::create_dir_all(&tap_dir).map_err(io(format!("creating {}", tap_dir.display())))?;
        for e in
            std::fs::read_dir(&tap_dir).map_err(io(format!("reading {}", tap_dir.display())))?
        {
            let p = e.map_err(io("listing the tap folder"))?.path();
            if p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("tap_"))
            {
                std::fs::remove_file(&p).map_err(io(format!("removing stale {}", p.display())))?;
            }
        }
        let tap_dir = std::fs::canonicalize(&tap_dir).map_err(io("resolving the tap folder"))?;
        let boot = bootstrap(&config, &tap_dir.join("tap"))?;
        let boot_path = tap_dir.join("envoy.json");
        // scratch: the recorder's own folder, rewritten on every start.
        std::fs::write(
            &boot_path,
            serde_json::to_vec_pretty(&boot).unwrap_or_default(),
        )
        .map_err(io(format!("writing {}", boot_path.display())))?;
        let admin_path = tap_dir.join("admin.address");
        let _ = std::fs::remove_file(&admin_path);
        let log = tap_dir.join("envoy.log");
        let base_id = 40_000 + std::process::id() % 20_000;
        let child = crate::process::Launch::new(&boot_path, &admin_path, base_id)
            .spawn(&config.envoy, &log, None)
            .map_err(io(format!(
                "starting {} (log {})",
                config.envoy.display(),
                log.display()
            )))?;
        let traffic_path = config.out_dir.join("traffic.jsonl");
        let out = AtomicFile::create(&traffic_path)
            .map_err(io(format!("creating {}", traffic_path.display())))?;
        let mut rec = Recorder {
            child: Some(child),
            tap_dir,
            traffic_path,
            out: Some(out),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            recorded: 0,
            pending: HashMap::new(),
            warnings: Vec::new(),
            log,
        };
        rec.listen = rec.wait_ready(&admin_path)?;
        Ok(rec)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<SocketAddr, RecordError> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(RecordError::Envoy(format!(
                    "exited ({status}) before listening; end of {}:\n{}",
                    self.log.display(),
                    self.log_tail()
                )));
            }
            if let Ok(admin) = std::fs::read_to_string(admin_path)
                && let Some(addr) = listener_address(admin.trim())
            {
                return Ok(addr);
            }
            if Instant::now() > deadline {
                return Err(RecordError::Envoy(format!(
                    "did not start listening within {STARTUP:?}; end of {}:\n{}",
                    self.log.display(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where clients should connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The recording being written (it appears there when [`Recorder::stop`] succeeds).
    pub fn traffic_path(&self) -> &Path {
        &self.traffic_path
    }

    /// Warnings so far (truncated bodies, broken tap files), emptied.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Converts the tap files Envoy finished into lines of the recording;
    /// returns how many exchanges are recorded so far.
    pub fn poll(&mut self) -> Result<usize, RecordError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            return Err(RecordError::Envoy(format!(
                "exited ({status}) while recording; end of {}:\n{}",
                self.log.display(),
                self.log_tail()
            )));
        }
        self.convert()
    }

    /// Turns the finished tap files into lines of the recording.
    fn convert(&mut self) -> Result<usize, RecordError> {
        let Some(out) = self.out.as_mut() else {
            return Err(RecordError::Config(
                "the recording is already closed".into(),
            ));
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.tap_dir)
            .map_err(io(format!("reading {}", self.tap_dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("tap_"))
            })
            .collect();
        // Envoy names files by trace id; order them by when they were written.
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        for path in files {
            let file = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(io(format!("reading {file}")))?;
            match tap::parse(&file, &bytes, Leniency::Strict) {
                Ok(t) => {
                    self.warnings.extend(t.warnings);
                    for mut e in t.exchanges {
                        e.id = format!("entry {}", self.recorded);
                        native::write_line(&mut *out, &e)
                            .map_err(io(format!("writing {}", self.traffic_path.display())))?;
                        self.recorded += 1;
                    }
                    self.pending.remove(&path);
                    std::fs::remove_file(&path).map_err(io(format!("removing {file}")))?;
                }
                Err(e) => {
                    // Envoy may still be writing it: retry until it settles.
                    let first = *self
                        .pending
                        .entry(path.clone())
                        .or_insert_with(Instant::now);
                    if first.elapsed() > SETTLE {
                        self.warnings.push(format!("{e}; tap file left in place"));
                        self.pending.remove(&path);
                        let bad = path.with_extension("json.bad");
                        std::fs::rename(&path, &bad).map_err(io(format!("renaming {file}")))?;
                    }
                }
            }
        }
        out.flush()
            .map_err(io(format!("writing {}", self.traffic_path.display())))?;
        Ok(self.recorded)
    }

    /// Converts what remains, stops Envoy, renames the recording into place
    /// and returns the number of exchanges recorded. Envoy having exited
    /// already (a Ctrl-C in the terminal reaches it too) is no error here.
    pub fn stop(&mut self) -> Result<usize, RecordError> {
        self.convert()?;
        self.kill();
        let n = self.convert()?;
        let what = format!("writing {}", self.traffic_path.display());
        match self.out.take() {
            Some(out) => out.commit().map_err(io(what))?,
            None => {
                return Err(RecordError::Config(
                    "the recording is already closed".into(),
                ));
            }
        }
        Ok(n)
    }

    /// After a failure: stops Envoy and saves the exchanges recorded so far,
    /// if any, as `traffic.partial.jsonl` beside the recording (the earlier
    /// `traffic.jsonl` stays as it was). Returns that path.
    pub fn keep_partial(&mut self) -> Option<PathBuf> {
        self.kill();
        let _ = self.convert();
        let out = self.out.take()?;
        if self.recorded == 0 {
            return None;
        }
        let partial = self.traffic_path.with_file_name("traffic.partial.jsonl");
        out.commit_as(&partial).ok().map(|()| partial)
    }

    fn kill(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the Envoy in `child`, if any, and waits for it to exit (no zombie).
pub(crate) fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        tollgate_files::forget_child(c.id());
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Asks Envoy's admin API for the first listener's bound address.
fn listener_address(admin: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = admin.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /listeners?format=json HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let sa = v.pointer("/listener_statuses/0/local_address/socket_address")?;
    let ip = sa.get("address")?.as_str()?;
    let port = sa.get("port_value")?.as_u64()?;
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    format!("{ip}:{port}")
        .parse()
        .ok()
        .or_else(|| format!("[{ip}]:{port}").parse().ok())
}

/// Undoes HTTP/1.1 chunked transfer coding.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}
