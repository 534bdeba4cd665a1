//! Deployment manifests for one filter: an Istio `WasmPlugin` (url, sha256,
//! phase, priority, pluginConfig, failStrategy, match, targetRefs or
//! selector) and an Envoy v3 bootstrap that loads the same module with the
//! same configuration, from a local file or fetched from an HTTP server and
//! checked against its sha256.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::ShipError;

/// Where in Istio's filter chain the plugin goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Before Istio's authentication filters.
    #[serde(rename = "AUTHN")]
    Authn,
    /// After authentication, before authorization.
    #[serde(rename = "AUTHZ")]
    Authz,
    /// After authorization, before the stats filter.
    #[serde(rename = "STATS")]
    Stats,
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "AUTHN" => Ok(Phase::Authn),
            "AUTHZ" => Ok(Phase::Authz),
            "STATS" => Ok(Phase::Stats),
            _ => Err(format!(
                "unknown phase {s:?}: expected AUTHN, AUTHZ or STATS"
            )),
        }
    }
}

/// What the proxy does when the module cannot be fetched or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailStrategy {
    /// Stop traffic.
    #[serde(rename = "FAIL_CLOSE")]
    Close,
    /// Let traffic through without the plugin.
    #[serde(rename = "FAIL_OPEN")]
    Open,
}

impl std::str::FromStr for FailStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "FAIL_CLOSE" | "CLOSE" => Ok(FailStrategy::Close),
            "FAIL_OPEN" | "OPEN" => Ok(FailStrategy::Open),
            _ => Err(format!(
                "unknown fail strategy {s:?}: expected FAIL_CLOSE or FAIL_OPEN"
            )),
        }
    }
}

/// A Gateway API (or other) resource the plugin attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRef {
    /// API group, e.g. `gateway.networking.k8s.io` (empty for core).
    pub group: String,
    /// Kind, e.g. `Gateway` or `Service`.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl std::str::FromStr for TargetRef {
    type Err = String;
    /// `Kind/name` (group `gateway.networking.k8s.io` for `Gateway`, core otherwise) or `group/Kind/name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let (group, kind, name) = match parts.as_slice() {
            [kind, name] => {
                let group = if *kind == "Gateway" || *kind == "GatewayClass" {
                    "gateway.networking.k8s.io"
                } else {
                    ""
                };
                (group, *kind, *name)
            }
            [group, kind, name] => (*group, *kind, *name),
            _ => {
                return Err(format!(
                    "target ref {s:?}: expected Kind/name or group/Kind/name"
                ));
            }
        };
        if kind.is_empty() || name.is_empty() {
            return Err(format!("target ref {s:?}: kind and name must not be empty"));
        }
        Ok(TargetRef {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
        })
    }
}

/// Which proxies run the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// Every proxy in the namespace.
    Namespace,
    /// Pods whose labels match.
    Selector(BTreeMap<String, String>),
    /// Gateway API resources.
    TargetRefs(Vec<TargetRef>),
}

/// Traffic direction a `match` entry selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Outbound.
    #[serde(rename = "CLIENT")]
    Client,
    /// Inbound.
    #[serde(rename = "SERVER")]
    Server,
    /// Both.
    #[serde(rename = "CLIENT_AND_SERVER")]
    ClientAndServer,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "CLIENT" => Ok(Mode::Client),
            "SERVER" => Ok(Mode::Server),
            "CLIENT_AND_SERVER" => Ok(Mode::ClientAndServer),
            _ => Err(format!(
                "unknown mode {s:?}: expected CLIENT, SERVER or CLIENT_AND_SERVER"
            )),
        }
    }
}

/// One `match` entry: a direction and destination ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficMatch {
    /// Direction, `None` for any.
    pub mode: Option<Mode>,
    /// Destination ports (empty for any).
    pub ports: Vec<u16>,
}

/// Everything a `WasmPlugin` for one filter says.
#[derive(Debug, Clone)]
pub struct PluginManifest {
    /// The filter's name (`headers`): resource name `tollgate-<name>` and plugin (root id) name.
    pub filter: String,
    /// Namespace of the resource.
    pub namespace: String,
    /// Where Istio fetches the module: `oci://...`, `https://...` or `file://...`.
    pub url: String,
    /// sha256 (hex) of the module (for http) or image (for oci), when pinned.
    pub sha256: Option<String>,
    /// Phase.
    pub phase: Phase,
    /// Order within the phase (higher runs first).
    pub priority: Option<i32>,
    /// What happens when the module cannot be fetched or fails.
    pub fail_strategy: FailStrategy,
    /// The plugin configuration (the filter's JSON config).
    pub plugin_config: Value,
    /// Traffic selection.
    pub matches: Vec<TrafficMatch>,
    /// Which proxies.
    pub attachment: Attachment,
}

impl PluginManifest {
    /// A manifest for `filter` with the given module URL and JSON configuration, on
    /// the ingress gateway (`istio: ingressgateway`), phase `STATS`, fail closed.
    pub fn new(filter: &str, url: &str, config_json: &str) -> Result<PluginManifest, ShipError> {
        let plugin_config: Value = serde_json::from_str(config_json).map_err(|e| {
            ShipError::invalid(format!("{filter} configuration"), format!("not JSON: {e}"))
        })?;
        if !plugin_config.is_object() {
            return Err(ShipError::invalid(
                format!("{filter} configuration"),
                "pluginConfig must be a JSON object",
            ));
        }
        Ok(PluginManifest {
            filter: filter.to_string(),
            namespace: "istio-system".into(),
            url: url.to_string(),
            sha256: None,
            phase: Phase::Stats,
            priority: None,
            fail_strategy: FailStrategy::Close,
            plugin_config,
            matches: Vec::new(),
            attachment: Attachment::Selector(BTreeMap::from([(
                "istio".to_string(),
                "ingressgateway".to_string(),
            )])),
        })
    }

    /// The `WasmPlugin` resource.
    pub fn wasm_plugin(&self) -> Value {
        let mut spec = serde_json::Map::new();
        match &self.attachment {
            Attachment::Namespace => {}
            Attachment::Selector(labels) => {
                spec.insert("selector".into(), json!({ "matchLabels": labels }));
            }
            Attachment::TargetRefs(refs) => {
                spec.insert("targetRefs".into(), json!(refs));
            }
        }
        spec.insert("url".into(), json!(self.url));
        if let Some(sha) = &self.sha256 {
            spec.insert("sha256".into(), json!(sha));
        }
        spec.insert("imagePullPolicy".into(), json!("IfNotPresent"));
        spec.insert("pluginName".into(), json!(self.filter));
        spec.insert("type".into(), json!("HTTP"));
        spec.insert("phase".into(), json!(self.phase));
        if let Some(priority) = self.priority {
            spec.insert("priority".into(), json!(priority));
        }
        spec.insert("failStrategy".into(), json!(self.fail_strategy));
        if let Some(matches) = self.match_entries() {
            spec.insert("match".into(), matches);
        }
        spec.insert("pluginConfig".into(), self.plugin_config.clone());
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {
                "name": format!("tollgate-{}", self.filter),
                "namespace": self.namespace,
                "labels": { "app.kubernetes.io/name": format!("tollgate-{}", self.filter) },
            },
            "spec": Value::Object(spec),
        })
    }

    /// The `WasmPlugin` as YAML.
    pub fn to_yaml(&self) -> Result<String, ShipError> {
        to_yaml(&self.wasm_plugin(), &self.filter)
    }
}

/// Where Envoy gets the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvoyCode {
    /// A file, relative to Envoy's working directory.
    Local {
        /// The file.
        filename: String,
    },
    /// Fetched over HTTP from a cluster and checked against its sha256.
    Remote {
        /// `http://host:port/path`.
        uri: String,
        /// sha256 (hex) of the module.
        sha256: String,
    },
}

/// The cluster Envoy fetches remote modules through.
pub const CODE_CLUSTER: &str = "wasm_code";

/// An Envoy v3 bootstrap: listener `127.0.0.1:10000`, admin `127.0.0.1:9901`,
/// cluster `upstream` at `127.0.0.1:8080`, the filter in front of the router
/// with `config_json` as its configuration (and, for remote code, cluster
/// `wasm_code` to the module's server).
pub fn envoy_bootstrap(
    filter: &str,
    config_json: &str,
    code: &EnvoyCode,
) -> Result<Value, ShipError> {
    let parsed: Value = serde_json::from_str(config_json).map_err(|e| {
        ShipError::invalid(format!("{filter} configuration"), format!("not JSON: {e}"))
    })?;
    let pretty = serde_json::to_string_pretty(&parsed)
        .map_err(|e| ShipError::invalid(filter, e.to_string()))?;
    let (code_value, extra_cluster) = match code {
        EnvoyCode::Local { filename } => (json!({ "local": { "filename": filename } }), None),
        EnvoyCode::Remote { uri, sha256 } => {
            let (host, port) = host_port(uri)
                .ok_or_else(|| ShipError::invalid(uri, "expected http://<ip>:<port>/<path>"))?;
            (
                json!({ "remote": {
                    "http_uri": { "uri": uri, "cluster": CODE_CLUSTER, "timeout": "10s" },
                    "sha256": sha256,
                    "retry_policy": { "num_retries": 3 },
                }}),
                Some(static_cluster(CODE_CLUSTER, &host, port)),
            )
        }
    };
    let mut clusters = vec![static_cluster("upstream", "127.0.0.1", 8080)];
    clusters.extend(extra_cluster);
    Ok(json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 9901 } } },
        "static_resources": {
            "listeners": [{
                "name": "listener_0",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": 10000 } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress_http",
                        "route_config": {
                            "name": "local_route",
                            "virtual_hosts": [{
                                "name": "upstream",
                                "domains": ["*"],
                                "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "upstream" } }],
                            }],
                        },
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.wasm",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                    "config": {
                                        "name": filter,
                                        "root_id": filter,
                                        "vm_config": {
                                            "vm_id": filter,
                                            "runtime": "envoy.wasm.runtime.v8",
                                            "code": code_value,
                                        },
                                        "configuration": {
                                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                                            "value": pretty,
                                        },
                                    },
                                },
                            },
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                            },
                        ],
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }))
}

fn static_cluster(name: &str, host: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": host, "port_value": port }
            }}}]}],
        },
    })
}

/// `http://<host>:<port>/...` -> (host, port); port 80 when absent.
fn host_port(uri: &str) -> Option<(String, u16)> {
    let rest = uri.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), 80)),
    }
}

/// A value as YAML.
pub fn to_yaml(value: &Value, name: &str) -> Result<String, ShipError> {
    yaml_serde::to_string(value)
        .map_err(|e| ShipError::invalid(name, format!("cannot write YAML: {e}")))
}

/// Which resource `tollgate manifest` writes for a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// Istio's `WasmPlugin` (`extensions.istio.io/v1alpha1`).
    WasmPlugin,
    /// Istio 1.30's `TrafficExtension` (`extensions.istio.io/v1alpha1`), `wasm` code.
    TrafficExtension,
    /// Envoy Gateway's `EnvoyExtensionPolicy` (`gateway.envoyproxy.io/v1alpha1`), one `wasm` entry.
    EnvoyExtensionPolicy,
}

impl ManifestKind {
    /// Every kind, in the order the help lists them.
    pub const ALL: [ManifestKind; 3] = [
        ManifestKind::WasmPlugin,
        ManifestKind::TrafficExtension,
        ManifestKind::EnvoyExtensionPolicy,
    ];

    /// The resource's `kind` field.
    pub fn kind(self) -> &'static str {
        match self {
            ManifestKind::WasmPlugin => "WasmPlugin",
            ManifestKind::TrafficExtension => "TrafficExtension",
            ManifestKind::EnvoyExtensionPolicy => "EnvoyExtensionPolicy",
        }
    }

    /// The resource's `apiVersion` field.
    pub fn api_version(self) -> &'static str {
        match self {
            ManifestKind::WasmPlugin | ManifestKind::TrafficExtension => {
                "extensions.istio.io/v1alpha1"
            }
            ManifestKind::EnvoyExtensionPolicy => "gateway.envoyproxy.io/v1alpha1",
        }
    }
}

impl std::str::FromStr for ManifestKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ManifestKind::ALL
            .into_iter()
            .find(|k| k.kind().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown manifest kind {s:?}: expected wasmplugin, trafficextension or envoyextensionpolicy"
                )
            })
    }
}

/// When Envoy Gateway fetches the module again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PullPolicy {
    /// Fetch once per resource version.
    IfNotPresent,
    /// Fetch on every resource version change even when cached.
    Always,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ifnotpresent" => Ok(PullPolicy::IfNotPresent),
            "always" => Ok(PullPolicy::Always),
            _ => Err(format!(
                "unknown pull policy {s:?}: expected IfNotPresent or Always"
            )),
        }
    }
}

/// What an `EnvoyExtensionPolicy` says beyond a [`PluginManifest`]: Envoy Gateway's own knobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayOptions {
    /// `code.pullPolicy`, when set.
    pub pull_policy: Option<PullPolicy>,
    /// `env.hostKeys`: Envoy's environment variables the VM may read.
    pub env_host_keys: Vec<String>,
}

impl PluginManifest {
    /// The resource of `kind` (the Envoy Gateway policy with default [`GatewayOptions`]).
    pub fn resource(&self, kind: ManifestKind) -> Result<Value, ShipError> {
        match kind {
            ManifestKind::WasmPlugin => Ok(self.wasm_plugin()),
            ManifestKind::TrafficExtension => Ok(self.traffic_extension()),
            ManifestKind::EnvoyExtensionPolicy => {
                self.envoy_extension_policy(&GatewayOptions::default())
            }
        }
    }

    fn metadata(&self) -> Value {
        json!({
            "name": format!("tollgate-{}", self.filter),
            "namespace": self.namespace,
            "labels": { "app.kubernetes.io/name": format!("tollgate-{}", self.filter) },
        })
    }

    fn match_entries(&self) -> Option<Value> {
        if self.matches.is_empty() {
            return None;
        }
        let matches = self
            .matches
            .iter()
            .map(|m| {
                let mut entry = serde_json::Map::new();
                if let Some(mode) = m.mode {
                    entry.insert("mode".into(), json!(mode));
                }
                if !m.ports.is_empty() {
                    let ports: Vec<Value> =
                        m.ports.iter().map(|p| json!({ "number": p })).collect();
                    entry.insert("ports".into(), Value::Array(ports));
                }
                Value::Object(entry)
            })
            .collect();
        Some(Value::Array(matches))
    }

    /// The `TrafficExtension` resource: attachment, phase, priority and match on the
    /// extension, the module and its configuration under `wasm`.
    pub fn traffic_extension(&self) -> Value {
        let mut spec = serde_json::Map::new();
        match &self.attachment {
            Attachment::Namespace => {}
            Attachment::Selector(labels) => {
                spec.insert("selector".into(), json!({ "matchLabels": labels }));
            }
            Attachment::TargetRefs(refs) => {
                spec.insert("targetRefs".into(), json!(refs));
            }
        }
        spec.insert("phase".into(), json!(self.phase));
        if let Some(priority) = self.priority {
            spec.insert("priority".into(), json!(priority));
        }
        if let Some(matches) = self.match_entries() {
            spec.insert("match".into(), matches);
        }
        let mut wasm = serde_json::Map::new();
        wasm.insert("url".into(), json!(self.url));
        if let Some(sha) = &self.sha256 {
            wasm.insert("sha256".into(), json!(sha));
        }
        wasm.insert("imagePullPolicy".into(), json!("IfNotPresent"));
        wasm.insert("pluginName".into(), json!(self.filter));
        wasm.insert("type".into(), json!("HTTP"));
        wasm.insert("failStrategy".into(), json!(self.fail_strategy));
        wasm.insert("pluginConfig".into(), self.plugin_config.clone());
        spec.insert("wasm".into(), Value::Object(wasm));
        json!({
            "apiVersion": ManifestKind::TrafficExtension.api_version(),
            "kind": "TrafficExtension",
            "metadata": self.metadata(),
            "spec": Value::Object(spec),
        })
    }

    /// The Envoy Gateway `EnvoyExtensionPolicy`: one `wasm` entry whose code is an OCI image
    /// (`oci://` URLs, written as `registry/image:tag`) or an HTTP(S) URL, pinned by `sha256`,
    /// attached to Gateway API resources (`targetRefs`; a selector cannot be expressed and is
    /// refused). Phase, priority and `match` have no equivalent (Envoy Gateway orders
    /// extensions by the policy's list) and are refused rather than dropped.
    pub fn envoy_extension_policy(&self, options: &GatewayOptions) -> Result<Value, ShipError> {
        let who = format!("EnvoyExtensionPolicy for {}", self.filter);
        let refs = match &self.attachment {
            Attachment::TargetRefs(refs) if !refs.is_empty() => refs,
            _ => {
                return Err(ShipError::invalid(
                    who,
                    "an EnvoyExtensionPolicy attaches to Gateway API resources: give --target-ref (e.g. Gateway/eg or HTTPRoute/backend)",
                ));
            }
        };
        if !self.matches.is_empty() || self.priority.is_some() {
            return Err(ShipError::invalid(
                who,
                "match and priority have no EnvoyExtensionPolicy equivalent",
            ));
        }
        let target_refs: Vec<Value> = refs
            .iter()
            .map(|r| {
                let group = if r.group.is_empty() {
                    "gateway.networking.k8s.io"
                } else {
                    r.group.as_str()
                };
                json!({ "group": group, "kind": r.kind, "name": r.name })
            })
            .collect();
        let mut source = serde_json::Map::new();
        let code_type = if let Some(image) = self.url.strip_prefix("oci://") {
            source.insert("url".into(), json!(image));
            "Image"
        } else if self.url.starts_with("http://") || self.url.starts_with("https://") {
            source.insert("url".into(), json!(self.url));
            "HTTP"
        } else {
            return Err(ShipError::invalid(
                who,
                format!(
                    "url {:?}: Envoy Gateway fetches code from http(s):// or oci:// only",
                    self.url
                ),
            ));
        };
        if let Some(sha) = &self.sha256 {
            source.insert("sha256".into(), json!(sha));
        }
        let mut code = serde_json::Map::new();
        code.insert("type".into(), json!(code_type));
        code.insert(code_type.to_ascii_lowercase(), Value::Object(source));
        if let Some(policy) = options.pull_policy {
            code.insert("pullPolicy".into(), json!(policy));
        }
        let mut wasm = serde_json::Map::new();
        wasm.insert("name".into(), json!(self.filter));
        wasm.insert("rootID".into(), json!(self.filter));
        wasm.insert("code".into(), Value::Object(code));
        wasm.insert("config".into(), self.plugin_config.clone());
        wasm.insert(
            "failOpen".into(),
            json!(self.fail_strategy == FailStrategy::Open),
        );
        if !options.env_host_keys.is_empty() {
            wasm.insert("env".into(), json!({ "hostKeys": options.env_host_keys }));
        }
        Ok(json!({
            "apiVersion": ManifestKind::EnvoyExtensionPolicy.api_version(),
            "kind": "EnvoyExtensionPolicy",
            "metadata": self.metadata(),
            "spec": {
                "targetRefs": target_refs,
                "wasm": [Value::Object(wasm)],
            },
        }))
    }
}
