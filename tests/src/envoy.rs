//! A real Envoy: a project configuration rewritten for a test (ports the
//! kernel picks, the test's upstream, the built filters' absolute paths), and
//! a guard that starts it through a [`Launcher`] (local binary or container),
//! waits until Envoy serves and stops it on `Drop`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::launcher::{Guard, LaunchFiles, Launcher};
use crate::{client, paths};

/// How long Envoy may take to become ready before the start counts as failed
/// (a hang guard, generous for a loaded two-core machine; not a speed check).
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between readiness polls.
const POLL: Duration = Duration::from_millis(50);
/// Lines of Envoy's log quoted in failure messages.
const LOG_TAIL_LINES: usize = 60;

/// The protobuf type Envoy uses for a plugin configuration given as a string.
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// Runs counter, for unique file names and base ids within this process.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// An Envoy bootstrap configuration being prepared for a test.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    source: PathBuf,
    value: Value,
}

impl EnvoyConfig {
    /// Parses a YAML (or JSON) bootstrap file.
    pub fn load(path: &Path) -> Result<EnvoyConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let value: Value = yaml_serde::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", path.display()))?;
        if !value.is_object() {
            bail!("{}: the bootstrap is not a mapping", path.display());
        }
        Ok(EnvoyConfig {
            source: path.to_path_buf(),
            value,
        })
    }

    /// The parsed bootstrap.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The parsed bootstrap, to change what no other method covers (e.g. connection manager
    /// fields a native comparison needs).
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }

    /// The file it was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The admin interface and every listener on `127.0.0.1` port 0: the kernel
    /// picks free ports and [`Envoy::start`] reads them back from the admin API.
    pub fn use_ephemeral_ports(&mut self) -> Result<&mut Self> {
        let source = self.source.display().to_string();
        let admin = self
            .value
            .pointer_mut("/admin/address/socket_address")
            .with_context(|| format!("{source}: no admin.address.socket_address"))?;
        set_socket_address(admin, "127.0.0.1", 0);
        let listeners = self
            .value
            .pointer_mut("/static_resources/listeners")
            .and_then(Value::as_array_mut)
            .with_context(|| format!("{source}: no static_resources.listeners list"))?;
        for (index, listener) in listeners.iter_mut().enumerate() {
            let address = listener.pointer_mut("/address/socket_address").with_context(|| {
                format!("{source}: static_resources.listeners[{index}] has no address.socket_address")
            })?;
            set_socket_address(address, "127.0.0.1", 0);
        }
        Ok(self)
    }

    /// Puts the first listener on `127.0.0.1:port`: for configurations that must name their
    /// own address before Envoy starts (an OpenID redirect URI). Take the port from
    /// [`free_port`].
    pub fn set_first_listener_port(&mut self, port: u16) -> Result<&mut Self> {
        let source = self.source.display().to_string();
        let address = self
            .value
            .pointer_mut("/static_resources/listeners/0/address/socket_address")
            .with_context(|| format!("{source}: no static_resources.listeners[0].address"))?;
        set_socket_address(address, "127.0.0.1", port);
        Ok(self)
    }

    /// Points every endpoint of the cluster named `cluster` at `addr`.
    pub fn route_cluster_to(&mut self, cluster: &str, addr: SocketAddr) -> Result<&mut Self> {
        let source = self.source.display().to_string();
        let clusters = self
            .value
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
            .with_context(|| format!("{source}: no static_resources.clusters list"))?;
        let found = clusters
            .iter_mut()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(cluster))
            .with_context(|| format!("{source}: no cluster named {cluster:?}"))?;
        let endpoints = found
            .pointer_mut("/load_assignment/endpoints")
            .and_then(Value::as_array_mut)
            .with_context(|| {
                format!("{source}: cluster {cluster:?} has no load_assignment.endpoints")
            })?;
        let mut rewritten = 0;
        for locality in endpoints {
            let Some(lb_endpoints) = locality
                .get_mut("lb_endpoints")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for endpoint in lb_endpoints {
                if let Some(address) = endpoint.pointer_mut("/endpoint/address/socket_address") {
                    set_socket_address(address, &addr.ip().to_string(), addr.port());
                    rewritten += 1;
                }
            }
        }
        if rewritten == 0 {
            bail!(
                "{source}: cluster {cluster:?} has no endpoint.address.socket_address to rewrite"
            );
        }
        Ok(self)
    }

    /// Adds a cluster `name`, a copy of the cluster `template` (timeouts,
    /// protocol) with its endpoints sent to `addr`.
    pub fn add_cluster_like(
        &mut self,
        template: &str,
        name: &str,
        addr: SocketAddr,
    ) -> Result<&mut Self> {
        let source = self.source.display().to_string();
        let clusters = self
            .value
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
            .with_context(|| format!("{source}: no static_resources.clusters list"))?;
        let mut copy = clusters
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(template))
            .cloned()
            .with_context(|| format!("{source}: no cluster named {template:?}"))?;
        if let Some(object) = copy.as_object_mut() {
            object.insert("name".into(), json!(name));
        }
        if let Some(assignment) = copy
            .pointer_mut("/load_assignment")
            .and_then(Value::as_object_mut)
        {
            assignment.insert("cluster_name".into(), json!(name));
        }
        clusters.retain(|c| c.get("name").and_then(Value::as_str) != Some(name));
        clusters.push(copy);
        self.route_cluster_to(name, addr)
    }

    /// Makes Envoy speak HTTP/2 (prior knowledge, cleartext) to the cluster
    /// `name`, as a gRPC service needs.
    pub fn use_http2(&mut self, name: &str) -> Result<&mut Self> {
        let source = self.source.display().to_string();
        let cluster = self
            .value
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
            .and_then(|cs| {
                cs.iter_mut()
                    .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(Value::as_object_mut)
            .with_context(|| format!("{source}: no cluster named {name:?}"))?;
        cluster.insert(
            "typed_extension_protocol_options".into(),
            json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }}),
        );
        Ok(self)
    }

    /// The bootstrap `envoy/<filter>/envoy.yaml` made runnable in a test: ephemeral ports, the
    /// `upstream` cluster sent to `upstream`, and the modules built into the filters directory.
    pub fn for_filter(filter: &str, upstream: SocketAddr) -> Result<EnvoyConfig> {
        let mut config = EnvoyConfig::load(&paths::envoy_config(filter))?;
        config
            .use_ephemeral_ports()?
            .route_cluster_to("upstream", upstream)?;
        config.use_filters_from(&paths::filters_dir()?)?;
        Ok(config)
    }

    /// Rewrites every `*.wasm` file name (e.g. `target/filters/headers.wasm`)
    /// to the module of the same name in `dir`, which must exist. Returns them.
    pub fn use_filters_from(&mut self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut rewritten = Vec::new();
        rewrite_wasm_filenames(&mut self.value, dir, &mut rewritten);
        if rewritten.is_empty() {
            bail!(
                "{}: no vm_config.code.local.filename ending in .wasm",
                self.source.display()
            );
        }
        for wasm in &rewritten {
            if !wasm.is_file() {
                bail!(
                    "{} loads {} which does not exist; run `cargo xtask build`",
                    self.source.display(),
                    wasm.display()
                );
            }
        }
        Ok(rewritten)
    }

    /// The `configuration` string of every Wasm plugin, in document order.
    pub fn plugin_configurations(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut plugins = Vec::new();
        collect_plugins(&self.value, &mut plugins);
        for plugin in plugins {
            if let Some(value) = plugin
                .pointer("/configuration/value")
                .and_then(Value::as_str)
            {
                found.push(value.to_string());
            }
        }
        found
    }

    /// Replaces the `configuration` of every Wasm plugin with `json`.
    pub fn set_plugin_configuration(&mut self, json: &str) -> Result<&mut Self> {
        let mut count = 0;
        set_plugin_configurations(&mut self.value, json, &mut count);
        if count == 0 {
            bail!(
                "{}: no Wasm plugin (an object with vm_config) to configure",
                self.source.display()
            );
        }
        Ok(self)
    }

    /// Replaces the `configuration` of the Wasm plugin whose `config.name` is `plugin`
    /// (for chains of several plugins); an error names the file when there is none.
    pub fn set_named_plugin_configuration(
        &mut self,
        plugin: &str,
        json: &str,
    ) -> Result<&mut Self> {
        let mut plugins = Vec::new();
        collect_plugins_mut(&mut self.value, &mut plugins);
        let found = plugins
            .into_iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(plugin))
            .with_context(|| {
                format!("{}: no Wasm plugin named {plugin:?}", self.source.display())
            })?;
        if let Some(object) = found.as_object_mut() {
            object.insert(
                "configuration".into(),
                json!({ "@type": STRING_VALUE, "value": json }),
            );
        }
        Ok(self)
    }

    /// Swaps every Wasm HTTP filter (`envoy.filters.http.wasm`) for the native filters of an
    /// alternative file (`envoy/<filter>/native.yaml`, format at the top of
    /// `harness/docs/envoy.md`: a mapping with `http_filters` and optional `clusters`, or a bare
    /// list of `http_filters`), in place, and adds its clusters (replacing same-named ones).
    pub fn use_native_alternative(&mut self, path: &Path) -> Result<&mut Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let alternative: Value = yaml_serde::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", path.display()))?;
        let (filters, clusters) = match &alternative {
            Value::Array(filters) => (filters.clone(), Vec::new()),
            Value::Object(map) => {
                if let Some(key) = map
                    .keys()
                    .find(|k| *k != "http_filters" && *k != "clusters")
                {
                    bail!("{}: unknown key {key:?}", path.display());
                }
                let list = |key: &str| -> Result<Vec<Value>> {
                    match map.get(key) {
                        None => Ok(Vec::new()),
                        Some(Value::Array(items)) => Ok(items.clone()),
                        Some(_) => bail!("{}: `{key}` is not a list", path.display()),
                    }
                };
                (list("http_filters")?, list("clusters")?)
            }
            _ => bail!(
                "{}: expected a mapping or a list of http_filters",
                path.display()
            ),
        };
        if filters.is_empty() {
            bail!("{}: no http_filters", path.display());
        }
        let mut replaced = 0;
        replace_wasm_filters(&mut self.value, &filters, &mut replaced);
        if replaced == 0 {
            bail!(
                "{}: no envoy.filters.http.wasm filter to replace",
                self.source.display()
            );
        }
        let source = self.source.display().to_string();
        let existing = self
            .value
            .pointer_mut("/static_resources/clusters")
            .and_then(Value::as_array_mut)
            .with_context(|| format!("{source}: no static_resources.clusters list"))?;
        for cluster in clusters {
            let name = cluster.get("name").cloned();
            existing.retain(|c| name.is_none() || c.get("name") != name.as_ref());
            existing.push(cluster);
        }
        Ok(self)
    }

    /// Writes the configuration as JSON (which Envoy reads by its extension).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.value)
            .context("serialising the Envoy configuration")?;
        std::fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
    }
}

/// Replaces, in every `http_filters` list, the Wasm filters with `native` (once per list, where
/// the first Wasm filter was).
fn replace_wasm_filters(value: &mut Value, native: &[Value], replaced: &mut usize) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "http_filters"
                    && let Value::Array(list) = child
                {
                    let is_wasm = |f: &Value| {
                        f.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm")
                    };
                    if let Some(at) = list.iter().position(is_wasm) {
                        list.retain(|f| !is_wasm(f));
                        for (i, filter) in native.iter().enumerate() {
                            list.insert(at + i, filter.clone());
                        }
                        *replaced += 1;
                    }
                } else {
                    replace_wasm_filters(child, native, replaced);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                replace_wasm_filters(item, native, replaced);
            }
        }
        _ => {}
    }
}

fn set_socket_address(address: &mut Value, ip: &str, port: u16) {
    if let Some(object) = address.as_object_mut() {
        object.insert("address".into(), json!(ip));
        object.insert("port_value".into(), json!(port));
        object.remove("named_port");
    }
}

fn rewrite_wasm_filenames(value: &mut Value, dir: &Path, rewritten: &mut Vec<PathBuf>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "filename"
                    && let Some(name) = child.as_str()
                    && name.ends_with(".wasm")
                {
                    let file = Path::new(name)
                        .file_name()
                        .map(PathBuf::from)
                        .unwrap_or_default();
                    let absolute = dir.join(file);
                    *child = json!(absolute.display().to_string());
                    rewritten.push(absolute);
                } else {
                    rewrite_wasm_filenames(child, dir, rewritten);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_wasm_filenames(item, dir, rewritten)),
        _ => {}
    }
}

fn collect_plugins<'a>(value: &'a Value, plugins: &mut Vec<&'a Value>) {
    match value {
        Value::Object(object) => {
            if object.contains_key("vm_config") {
                plugins.push(value);
            }
            object
                .values()
                .for_each(|child| collect_plugins(child, plugins));
        }
        Value::Array(items) => items.iter().for_each(|item| collect_plugins(item, plugins)),
        _ => {}
    }
}

fn collect_plugins_mut<'a>(value: &'a mut Value, plugins: &mut Vec<&'a mut Value>) {
    let is_plugin = value
        .as_object()
        .is_some_and(|object| object.contains_key("vm_config"));
    if is_plugin {
        plugins.push(value);
        return;
    }
    match value {
        Value::Object(object) => object
            .values_mut()
            .for_each(|child| collect_plugins_mut(child, plugins)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| collect_plugins_mut(item, plugins)),
        _ => {}
    }
}

fn set_plugin_configurations(value: &mut Value, json: &str, count: &mut usize) {
    match value {
        Value::Object(object) => {
            if object.contains_key("vm_config") {
                object.insert(
                    "configuration".into(),
                    json!({ "@type": STRING_VALUE, "value": json }),
                );
                *count += 1;
            }
            object
                .values_mut()
                .for_each(|child| set_plugin_configurations(child, json, count));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| set_plugin_configurations(item, json, count)),
        _ => {}
    }
}

/// What became of a launched Envoy.
pub enum Launch {
    /// It serves: admin `/ready` says LIVE and the listener accepts connections.
    Ready(Envoy),
    /// It exited before becoming ready.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its whole log.
        log: String,
    },
}

/// A running Envoy. Dropping it kills the process and waits for it.
pub struct Envoy {
    child: Guard,
    log: PathBuf,
    admin: SocketAddr,
    listeners: Vec<(String, SocketAddr)>,
}

impl Envoy {
    /// Starts Envoy on `config` and waits until it serves; an exit or a hang
    /// before that is an error quoting the end of Envoy's log.
    pub fn start(config: &EnvoyConfig, label: &str) -> Result<Envoy> {
        match Envoy::launch(config, label)? {
            Launch::Ready(envoy) => Ok(envoy),
            Launch::Exited { status, log } => {
                bail!(
                    "Envoy exited before it was ready ({status}); end of its log:\n{}",
                    tail(&log)
                )
            }
        }
    }

    /// [`Envoy::start`] on the local binary whatever the environment asks: for the parity
    /// tests, which compare the harness with this machine's Envoy (a missing Envoy is a
    /// failure, never a skip).
    pub fn start_local(config: &EnvoyConfig, label: &str) -> Result<Envoy> {
        match Envoy::launch_with(&Launcher::local()?, config, label)? {
            Launch::Ready(envoy) => Ok(envoy),
            Launch::Exited { status, log } => {
                bail!(
                    "Envoy exited before it was ready ({status}); end of its log:\n{}",
                    tail(&log)
                )
            }
        }
    }

    /// Starts Envoy on `config`, which must refuse `filter`'s plugin configuration: Envoy must
    /// exit unsuccessfully before it serves. Returns the filter's own refusal line from Envoy's
    /// log (the one holding `<filter>: bad configuration`); any other outcome is an error.
    pub fn refusal(config: &EnvoyConfig, label: &str, filter: &str) -> Result<String> {
        match Envoy::launch(config, label)? {
            Launch::Ready(envoy) => bail!("{label}: Envoy started\n{}", envoy.log_tail()),
            Launch::Exited { status, log } => {
                if status.success() {
                    bail!("{label}: Envoy exited with {status}");
                }
                let needle = format!("{filter}: bad configuration");
                log.lines()
                    .find(|l| l.contains(&needle))
                    .map(str::to_string)
                    .with_context(|| format!("{label}: no refusal in Envoy's log:\n{log}"))
            }
        }
    }

    /// For each `(configuration, field)` of `cases`: `filter`'s bootstrap (upstream `upstream`)
    /// with that plugin configuration is refused at start-up with a line naming `at <field>`.
    pub fn refusals_name_the_field(
        filter: &str,
        upstream: SocketAddr,
        cases: &[(&str, &str)],
    ) -> Result<()> {
        for (configuration, field) in cases {
            let mut config = EnvoyConfig::for_filter(filter, upstream)?;
            config.set_plugin_configuration(configuration)?;
            let line = Envoy::refusal(&config, &format!("{filter}-refused"), filter)
                .with_context(|| format!("{field}: {configuration}"))?;
            anyhow::ensure!(line.contains(&format!("at {field}")), "{field}: {line}");
        }
        Ok(())
    }

    /// Starts Envoy on `config` and waits until it either serves or exits.
    /// Envoy runs from the repository root with one worker thread, a unique
    /// base id, hot restart disabled, and its output in `target/tollgate-tests/<label>-*.log`.
    pub fn launch(config: &EnvoyConfig, label: &str) -> Result<Launch> {
        Envoy::launch_with(&Launcher::from_env()?, config, label)
    }

    /// [`Envoy::launch`] on a given backend.
    pub fn launch_with(launcher: &Launcher, config: &EnvoyConfig, label: &str) -> Result<Launch> {
        let work = paths::work_dir()?;
        let run = RUNS.fetch_add(1, Ordering::SeqCst);
        let stem = format!("{label}-{}-{run}", std::process::id());
        let config_path = work.join(format!("{stem}.json"));
        let log = work.join(format!("{stem}.log"));
        let admin_path = work.join(format!("{stem}.admin"));
        config.write(&config_path)?;
        let _ = std::fs::remove_file(&admin_path);
        let base_id = (std::process::id() % 100_000) * 100 + run % 100;
        let child = launcher.spawn(&LaunchFiles {
            config: config_path,
            admin_address: admin_path.clone(),
            log: log.clone(),
            base_id,
        })?;
        let mut starting = Starting {
            child: Some(child),
            log: log.clone(),
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = starting.try_wait()? {
                let _ = std::fs::remove_file(&admin_path);
                return Ok(Launch::Exited {
                    status,
                    log: read_log(&log),
                });
            }
            if let Some((admin, listeners)) = ready(&admin_path)? {
                let _ = std::fs::remove_file(&admin_path);
                let child = starting.child.take().context("Envoy process handle lost")?;
                return Ok(Launch::Ready(Envoy {
                    child,
                    log,
                    admin,
                    listeners,
                }));
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy did not become ready within {STARTUP_DEADLINE:?}; end of its log ({}):\n{}",
                    log.display(),
                    tail(&read_log(&log))
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The first listener's address.
    pub fn listener(&self) -> SocketAddr {
        self.listeners[0].1
    }

    /// Every listener, by name.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The Envoy process's id (`None` when it runs in a container).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// The admin interface's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's whole log so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// The last lines of Envoy's log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "end of Envoy's log ({}):\n{}",
            self.log.display(),
            tail(&self.log())
        )
    }

    /// Adds the tail of Envoy's log to an error, so every failure shows what Envoy said.
    pub fn explain<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|error| anyhow!("{error:#}\n\n{}", self.log_tail()))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.child.stop();
    }
}

/// Kills Envoy if launching fails half-way.
struct Starting {
    child: Option<Guard>,
    log: PathBuf,
}

impl Starting {
    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .with_context(|| format!("waiting for Envoy (log {})", self.log.display())),
            None => Ok(None),
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
    }
}

/// The admin address and every listener's name and address.
type Addresses = (SocketAddr, Vec<(String, SocketAddr)>);

/// `Some` once the admin address is known, `/ready` answers LIVE and every
/// listener accepts a connection.
fn ready(admin_path: &Path) -> Result<Option<Addresses>> {
    let Ok(text) = std::fs::read_to_string(admin_path) else {
        return Ok(None);
    };
    let Ok(admin) = text.trim().parse::<SocketAddr>() else {
        return Ok(None);
    };
    let get = |path: &str| {
        client::send(
            admin,
            &client::request("GET", &admin.to_string(), path, &[], b""),
        )
    };
    match get("/ready") {
        Ok(response)
            if response.status == 200
                && String::from_utf8_lossy(&response.body).trim() == "LIVE" => {}
        _ => return Ok(None),
    }
    let Ok(response) = get("/listeners?format=json") else {
        return Ok(None);
    };
    let listeners = parse_listeners(&response.body)?;
    if listeners.is_empty() {
        return Ok(None);
    }
    for (_, addr) in &listeners {
        if TcpStream::connect(addr).is_err() {
            return Ok(None);
        }
    }
    Ok(Some((admin, listeners)))
}

/// Reads `{"listener_statuses":[{"name":..,"local_address":{"socket_address":{..}}}]}`.
fn parse_listeners(body: &[u8]) -> Result<Vec<(String, SocketAddr)>> {
    let value: Value =
        serde_json::from_slice(body).context("admin /listeners did not answer JSON")?;
    let mut listeners = Vec::new();
    for status in value
        .get("listener_statuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = status
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let address = status.pointer("/local_address/socket_address");
        let ip = address
            .and_then(|a| a.get("address"))
            .and_then(Value::as_str);
        let port = address
            .and_then(|a| a.get("port_value"))
            .and_then(Value::as_u64);
        if let (Some(ip), Some(port)) = (ip, port)
            && port != 0
        {
            let addr = format!("{ip}:{port}")
                .parse()
                .with_context(|| format!("admin /listeners gave a bad address {ip}:{port}"))?;
            listeners.push((name, addr));
        }
    }
    Ok(listeners)
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|error| format!("(could not read {}: {error})", path.display()))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A port on 127.0.0.1 free at the time of the call, for a configuration that must name its
/// own address before Envoy binds it (an OAuth2 `redirect_uri`). Chosen at random below the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`), so the port-0 binds of the tests
/// running alongside (every other Envoy listener, upstream and service here) cannot take it in
/// the moment between this check and Envoy's bind: a port taken from the ephemeral range was
/// once taken that way ("cannot bind: Address already in use"). Falls back to a port-0 bind
/// when the range leaves no room below it.
pub fn free_port() -> Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1000 {
        let span = u64::from(ephemeral_low - LOWEST);
        let random = std::collections::hash_map::RandomState::new();
        for attempt in 0..200u64 {
            let mut hasher = random.build_hasher();
            hasher.write_u64(attempt);
            let port = LOWEST + u16::try_from(hasher.finish() % span).unwrap_or(0);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
