//! The Envoy v3 bootstraps `tollgate envoy` runs: generated ([`generate`]:
//! admin and one listener on 127.0.0.1 port 0, the configuration's HTTP
//! filters, then the router with `suppress_envoy_headers`, one route to the
//! replay upstream) or the user's own (`--envoy-config`, [`rewrite_user`]).
//!
//! A [`Configuration`] is what sits before the router: nothing (`none`),
//! proxy-wasm modules on `envoy.wasm.runtime.v8`, or an [`Alternative`]
//! (native filters from a YAML file; format at the top of `harness/docs/envoy.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{LiveError, WasmFilter};
use tollgate_abi::FailurePolicy;

/// The name of the replay upstream's cluster in generated bootstraps.
pub const UPSTREAM_CLUSTER: &str = "tollgate_upstream";

/// An `--alternative`: native (or Lua...) HTTP filters inserted before the
/// router, and the clusters they need.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    /// The file it was read from.
    pub source: PathBuf,
    /// `http_filters` entries, in order.
    pub http_filters: Vec<Value>,
    /// Extra `static_resources.clusters` entries.
    pub clusters: Vec<Value>,
}

impl Alternative {
    /// Reads an alternative file: a mapping with `http_filters` (and optional
    /// `clusters`), or a bare list of `http_filters` entries.
    pub fn load(path: &Path) -> Result<Alternative, LiveError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| LiveError::Config(format!("--alternative {file}: cannot read: {e}")))?;
        Alternative::parse(&file, &text).map(|mut a| {
            a.source = path.to_path_buf();
            a
        })
    }

    /// Parses the text of an alternative file (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Alternative, LiveError> {
        let err = |m: String| LiveError::Config(format!("--alternative {file}: {m}"));
        let value: Value =
            yaml_serde::from_str(text).map_err(|e| err(format!("not valid YAML: {e}")))?;
        let (filters, clusters) = match value {
            Value::Array(list) => (list, Vec::new()),
            Value::Object(map) => {
                if let Some(k) = map
                    .keys()
                    .find(|k| *k != "http_filters" && *k != "clusters")
                {
                    return Err(err(format!(
                        "unknown key `{k}` (expected `http_filters` and optionally `clusters`)"
                    )));
                }
                let list = |key: &str| -> Result<Vec<Value>, LiveError> {
                    match map.get(key) {
                        None | Some(Value::Null) => Ok(Vec::new()),
                        Some(Value::Array(l)) => Ok(l.clone()),
                        Some(_) => Err(err(format!("`{key}` must be a list"))),
                    }
                };
                (list("http_filters")?, list("clusters")?)
            }
            _ => {
                return Err(err(
                    "expected a mapping with `http_filters` (and `clusters`) or a list of http_filters entries"
                        .into(),
                ));
            }
        };
        if filters.is_empty() {
            return Err(err("`http_filters` is empty".into()));
        }
        for (i, f) in filters.iter().enumerate() {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("http_filters[{i}] has no `name` (a string)")))?;
            if name == "envoy.filters.http.router" {
                return Err(err(format!(
                    "http_filters[{i}] is the router; Tollgate adds it last itself"
                )));
            }
        }
        for (i, c) in clusters.iter().enumerate() {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("clusters[{i}] has no `name` (a string)")))?;
            if name == UPSTREAM_CLUSTER {
                return Err(err(format!(
                    "clusters[{i}]: the name {UPSTREAM_CLUSTER} is reserved for the replay upstream"
                )));
            }
        }
        Ok(Alternative {
            source: PathBuf::from(file),
            http_filters: filters,
            clusters,
        })
    }
}

/// What runs before the router in one Envoy.
#[derive(Debug, Clone, PartialEq)]
pub enum Configuration {
    /// The router only.
    RouterOnly,
    /// Proxy-wasm filters on V8, in order.
    Wasm(Vec<WasmFilter>),
    /// Native filters from an `--alternative` file.
    Alternative(Alternative),
}

/// The identity the generated bootstrap gives the filter at `index`: what
/// the filter sets, else `name` and `root_id` the module's file stem and
/// `vm_id` `<index>-<stem>` (a VM per filter). The harness's prediction runs
/// under the same identity.
pub fn identity_of(index: usize, filter: &WasmFilter) -> tollgate_abi::PluginIdentity {
    let stem = filter
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "filter".into());
    let mut id = filter.identity.clone();
    id.name.get_or_insert_with(|| stem.clone());
    id.root_id.get_or_insert_with(|| stem.clone());
    id.vm_id.get_or_insert_with(|| format!("{index}-{stem}"));
    id
}

/// The `envoy.filters.http.wasm` entry of one module (`index`: its position,
/// for a unique VM id; see [`identity_of`]).
pub fn wasm_filter_entry(index: usize, filter: &WasmFilter) -> Result<Value, LiveError> {
    let abs = std::fs::canonicalize(&filter.path)
        .map_err(|e| LiveError::Config(format!("--filter {}: {e}", filter.path.display())))?;
    let id = identity_of(index, filter);
    id.check()
        .map_err(|e| LiveError::Config(format!("--filter {}: {e}", filter.path.display())))?;
    let mut vm = json!({
        "vm_id": id.vm_id,
        "runtime": "envoy.wasm.runtime.v8",
        "code": { "local": { "filename": abs.display().to_string() } },
    });
    if let Some(c) = &filter.vm_config {
        vm["configuration"] =
            json!({ "@type": "type.googleapis.com/google.protobuf.StringValue", "value": c });
    }
    if !id.key_values.is_empty() || !id.host_env_keys.is_empty() {
        let key_values: serde_json::Map<String, Value> = id
            .key_values
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        vm["environment_variables"] =
            json!({ "host_env_keys": id.host_env_keys, "key_values": key_values });
    }
    let mut config = json!({ "name": id.name, "root_id": id.root_id, "vm_config": vm });
    if let Some(c) = &filter.config {
        config["configuration"] =
            json!({ "@type": "type.googleapis.com/google.protobuf.StringValue", "value": c });
    }
    if let Some(p) = filter.failure_policy {
        config["failure_policy"] = json!(match p {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        });
    }
    Ok(json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        }
    }))
}

/// A plain `STATIC` HTTP/1.1 cluster `name` with one endpoint, `addr`.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": {
            "address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } }
        }}]}]}
    })
}

/// The generated bootstrap for `config`, routing everything to `upstream`.
pub fn generate(config: &Configuration, upstream: SocketAddr) -> Result<Value, LiveError> {
    generate_with(config, upstream, &[])
}

/// [`generate`] with `shared` clusters added (the services of `--stub` and
/// `--cluster`, every alternative's clusters: see
/// [`super::services::shared_clusters`]); an alternative's own cluster of a
/// name already in `shared` is left out.
pub fn generate_with(
    config: &Configuration,
    upstream: SocketAddr,
    shared: &[Value],
) -> Result<Value, LiveError> {
    let mut filters = Vec::new();
    let mut clusters = vec![static_cluster(UPSTREAM_CLUSTER, upstream)];
    clusters.extend(shared.iter().cloned());
    match config {
        Configuration::RouterOnly => {}
        Configuration::Wasm(list) => {
            for (i, f) in list.iter().enumerate() {
                filters.push(wasm_filter_entry(i, f)?);
            }
        }
        Configuration::Alternative(a) => {
            filters.extend(a.http_filters.iter().cloned());
            for c in &a.clusters {
                let name = c.get("name");
                if !shared.iter().any(|s| s.get("name") == name) {
                    clusters.push(c.clone());
                }
            }
        }
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": true
        }
    }));
    Ok(json!({
        "node": { "id": tollgate_abi::NODE.id, "cluster": tollgate_abi::NODE.cluster },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": [{
                "name": "tollgate",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "tollgate",
                        "server_header_transformation": "PASS_THROUGH",
                        "route_config": { "virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": UPSTREAM_CLUSTER, "timeout": "30s" } }]
                        }]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    }))
}

/// A user's bootstrap (`--envoy-config`, YAML or JSON) made runnable here:
/// admin and every listener on 127.0.0.1 port 0, and the cluster
/// `upstream_cluster` replaced by a plain `STATIC` one to the replay upstream.
pub fn rewrite_user(
    path: &Path,
    upstream_cluster: &str,
    upstream: SocketAddr,
) -> Result<Value, LiveError> {
    let file = path.display().to_string();
    let err = |m: String| LiveError::Config(format!("--envoy-config {file}: {m}"));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut v: Value =
        yaml_serde::from_str(&text).map_err(|e| err(format!("not valid YAML: {e}")))?;
    let local = json!({ "address": "127.0.0.1", "port_value": 0 });
    match v.pointer_mut("/admin/address/socket_address") {
        Some(a) => *a = local.clone(),
        None => {
            v["admin"] = json!({ "address": { "socket_address": local.clone() } });
        }
    }
    let listeners = v
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| err("no static_resources.listeners list".into()))?;
    for (i, l) in listeners.iter_mut().enumerate() {
        let a = l.pointer_mut("/address/socket_address").ok_or_else(|| {
            err(format!(
                "static_resources.listeners[{i}]: no address.socket_address"
            ))
        })?;
        *a = local.clone();
    }
    let clusters = v
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| err("no static_resources.clusters list".into()))?;
    let cluster = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(upstream_cluster))
        .ok_or_else(|| {
            err(format!(
                "no cluster named {upstream_cluster:?} (choose it with --upstream-cluster)"
            ))
        })?;
    *cluster = static_cluster(upstream_cluster, upstream);
    Ok(v)
}

/// Puts `clusters` into a bootstrap's `static_resources.clusters`, each
/// replacing the cluster of its name or added (`--stub`/`--cluster` with
/// `--envoy-config`).
pub fn replace_clusters(bootstrap: &mut Value, clusters: &[Value]) -> Result<(), LiveError> {
    if clusters.is_empty() {
        return Ok(());
    }
    let list = bootstrap
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| {
            LiveError::Config("the bootstrap has no static_resources.clusters".into())
        })?;
    for c in clusters {
        match list.iter_mut().find(|o| o.get("name") == c.get("name")) {
            Some(o) => *o = c.clone(),
            None => list.push(c.clone()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternative_forms_and_errors() {
        let a = Alternative::parse(
            "a.yaml",
            "http_filters:\n  - name: envoy.filters.http.lua\n    typed_config: {}\nclusters:\n  - name: authz\n",
        )
        .unwrap();
        assert_eq!(a.http_filters.len(), 1);
        assert_eq!(a.clusters.len(), 1);
        let b = Alternative::parse("b.yaml", "- name: envoy.filters.http.basic_auth\n").unwrap();
        assert_eq!(b.http_filters.len(), 1);
        let e = Alternative::parse("c.yaml", "http_filter: []\n").unwrap_err();
        assert!(
            e.to_string().contains("c.yaml: unknown key `http_filter`"),
            "{e}"
        );
        let e = Alternative::parse("d.yaml", "- name: envoy.filters.http.router\n").unwrap_err();
        assert!(e.to_string().contains("router"), "{e}");
        let e = Alternative::parse("e.yaml", "- typed_config: {}\n").unwrap_err();
        assert!(
            e.to_string().contains("http_filters[0] has no `name`"),
            "{e}"
        );
    }

    #[test]
    fn generated_bootstrap_orders_filters_before_the_router() {
        let up: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let alt = Alternative::parse("a", "- name: x.one\n- name: x.two\n").unwrap();
        let v = generate(&Configuration::Alternative(alt), up).unwrap();
        let names: Vec<&str> = v
            .pointer(
                "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
            )
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(|f| f.get("name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, ["x.one", "x.two", "envoy.filters.http.router"]);
        assert_eq!(
            v.pointer("/static_resources/clusters/0/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value"),
            Some(&json!(4000))
        );
    }

    #[test]
    fn shared_clusters_go_everywhere_and_replace_an_alternatives_own() {
        let up: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stub = static_cluster("authz", "127.0.0.1:5000".parse().unwrap());
        let alt = Alternative::parse(
            "a",
            "http_filters: [{name: x}]\nclusters: [{name: authz, port: 9191}, {name: other}]\n",
        )
        .unwrap();
        let names = |v: &Value| -> Vec<String> {
            v.pointer("/static_resources/clusters")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let shared = [stub.clone()];
        let none = generate_with(&Configuration::RouterOnly, up, &shared).unwrap();
        assert_eq!(names(&none), [UPSTREAM_CLUSTER, "authz"]);
        let v = generate_with(&Configuration::Alternative(alt), up, &shared).unwrap();
        assert_eq!(names(&v), [UPSTREAM_CLUSTER, "authz", "other"]);
        assert_eq!(v.pointer("/static_resources/clusters/1"), Some(&stub));
        let mut user = none.clone();
        let other = static_cluster("authz", "127.0.0.1:6000".parse().unwrap());
        replace_clusters(&mut user, &[other.clone(), static_cluster("jwks", up)]).unwrap();
        assert_eq!(names(&user), [UPSTREAM_CLUSTER, "authz", "jwks"]);
        assert_eq!(user.pointer("/static_resources/clusters/1"), Some(&other));
    }

    #[test]
    fn user_bootstrap_is_moved_to_local_ports_and_the_replay_upstream() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/headers/envoy.yaml");
        let up: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let v = rewrite_user(&path, "upstream", up).unwrap();
        assert_eq!(
            v.pointer("/admin/address/socket_address/port_value"),
            Some(&json!(0))
        );
        assert_eq!(
            v.pointer("/static_resources/listeners/0/address/socket_address"),
            Some(&json!({ "address": "127.0.0.1", "port_value": 0 }))
        );
        let cluster = v
            .pointer("/static_resources/clusters")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["name"] == "upstream"))
            .unwrap();
        assert_eq!(
            cluster.pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value"),
            Some(&json!(4321))
        );
        let e = rewrite_user(&path, "nope", up).unwrap_err().to_string();
        assert!(e.contains("no cluster named \"nope\""), "{e}");
    }
}
