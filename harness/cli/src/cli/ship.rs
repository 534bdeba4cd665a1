//! `tollgate package`, `tollgate manifest` and `tollgate validate`: the
//! command-line side of [`tollgate_ship`].

use crate::out::{out, outln};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tollgate_ship::manifest::{
    self, Attachment, EnvoyCode, FailStrategy, GatewayOptions, ManifestKind, Mode, Phase,
    PluginManifest, PullPolicy, TargetRef, TrafficMatch,
};
use tollgate_ship::oci::{self, Package};
use tollgate_ship::validate::CrdSet;

/// Arguments of `tollgate package`.
#[derive(clap::Args)]
pub struct PackageArgs {
    /// The filter module (.wasm).
    wasm: PathBuf,
    /// Output folder: gets compat/ + compat.tar and wasm/ + wasm.tar (OCI image layouts).
    #[arg(long)]
    out: PathBuf,
    /// Root id recorded in the Wasm artifact config (repeatable; default: the file stem).
    #[arg(long = "root-id")]
    root_ids: Vec<String>,
    /// Tag recorded in index.json (`org.opencontainers.image.ref.name`).
    #[arg(long, default_value = "latest")]
    tag: String,
}

/// Arguments of `tollgate manifest`.
#[derive(clap::Args)]
pub struct ManifestArgs {
    /// The filter's name (e.g. `headers`): plugin name, resource `tollgate-<name>`.
    filter: String,
    /// The resource to write: wasmplugin (Istio), trafficextension (Istio 1.30+) or
    /// envoyextensionpolicy (Envoy Gateway; needs --target-ref).
    #[arg(long, default_value = "wasmplugin")]
    kind: ManifestKind,
    /// Envoy Gateway only: `code.pullPolicy` (IfNotPresent or Always).
    #[arg(long)]
    pull_policy: Option<PullPolicy>,
    /// Envoy Gateway only: an environment variable of Envoy the VM may read (`env.hostKeys`, repeatable).
    #[arg(long = "env-host-key")]
    env_host_keys: Vec<String>,
    /// Plugin configuration file (JSON); default `filters/<name>/demo.json`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Module URL (oci://, https://, http://, file://); default `oci://ghcr.io/tollgate/<name>:0.1.0`.
    #[arg(long)]
    url: Option<String>,
    /// sha256 to pin (hex): the image manifest digest for oci://, the module's for http(s)://.
    #[arg(long)]
    sha256: Option<String>,
    /// The module file: its sha256 pins the WasmPlugin (unless --sha256) and the remote Envoy code.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// AUTHN, AUTHZ or STATS.
    #[arg(long, default_value = "STATS")]
    phase: Phase,
    /// Order within the phase (higher first).
    #[arg(long)]
    priority: Option<i32>,
    /// FAIL_CLOSE or FAIL_OPEN.
    #[arg(long, default_value = "FAIL_CLOSE")]
    fail_strategy: FailStrategy,
    /// Pod label selector entry `key=value` (repeatable; default istio=ingressgateway).
    #[arg(long)]
    selector: Vec<String>,
    /// Attach to a resource instead of a selector: `Kind/name` or `group/Kind/name` (repeatable).
    #[arg(long = "target-ref")]
    target_refs: Vec<TargetRef>,
    /// Traffic direction to match (CLIENT, SERVER, CLIENT_AND_SERVER).
    #[arg(long)]
    mode: Option<Mode>,
    /// Destination port to match (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Namespace of the WasmPlugin.
    #[arg(long, default_value = "istio-system")]
    namespace: String,
    /// Write the WasmPlugin here instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write an Envoy bootstrap for the same filter here.
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// In that bootstrap, fetch the module from this http:// URL (needs --wasm for its sha256)
    /// instead of loading `target/filters/<name>.wasm`.
    #[arg(long)]
    envoy_remote_url: Option<String>,
}

/// Arguments of `tollgate validate`.
#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Manifests (YAML, several documents allowed): WasmPlugin, TrafficExtension,
    /// EnvoyExtensionPolicy, each checked against the CRD of its `kind`.
    #[arg(required = true)]
    manifests: Vec<PathBuf>,
    /// The CustomResourceDefinitions (repeatable).
    #[arg(
        long = "crd",
        default_values = [
            "../shared/istio/wasmplugins.crd.yaml",
            "../shared/istio/trafficextensions.crd.yaml",
            "../shared/envoy-gateway/envoyextensionpolicies.crd.yaml",
        ]
    )]
    crds: Vec<PathBuf>,
    /// The filter the manifests load (a .wasm, a name under target/filters, or `tollgate
    /// package`'s output / an OCI image layout): each pluginConfig is checked against the
    /// configuration schema it carries. Without it, a `file://` url's module is used.
    #[arg(long)]
    module: Option<String>,
}

/// Arguments of `tollgate schema`.
#[derive(clap::Args)]
pub struct SchemaArgs {
    /// A module (.wasm), `tollgate package`'s output folder or an OCI image layout, or a
    /// filter's name (`headers`: target/filters/headers.wasm, or $TOLLGATE_FILTERS_DIR).
    filter: String,
    /// Write the schema here instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `tollgate package`.
pub fn package(args: PackageArgs) -> Result<()> {
    let package = Package::from_file(&args.wasm)?
        .root_ids(args.root_ids)
        .tag(args.tag);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    outln!(
        "module {} (proxy-wasm ABI {}, sha256 {})",
        args.wasm.display(),
        package.abi(),
        package.wasm_sha256()
    );
    for written in package.write(&args.out)? {
        outln!(
            "{:<6} {} and {}: manifest {}",
            written.variant.dir_name(),
            written.dir.display(),
            written.tar.display(),
            written.manifest_digest
        );
    }
    Ok(())
}

/// `tollgate manifest`.
pub fn manifest(args: ManifestArgs) -> Result<()> {
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| Path::new("filters").join(&args.filter).join("demo.json"));
    let config = tollgate_files::input::read_to_string(&config_path)
        .with_context(|| format!("cannot read the configuration {}", config_path.display()))?;
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("oci://ghcr.io/tollgate/{}:0.1.0", args.filter));
    let wasm_sha = match &args.wasm {
        Some(path) => Some(oci::sha256_hex(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => None,
    };
    let mut plugin = PluginManifest::new(&args.filter, &url, &config)
        .with_context(|| format!("in {}", config_path.display()))?;
    plugin.namespace = args.namespace.clone();
    plugin.sha256 = args.sha256.clone().or_else(|| wasm_sha.clone());
    plugin.phase = args.phase;
    plugin.priority = args.priority;
    plugin.fail_strategy = args.fail_strategy;
    if args.mode.is_some() || !args.ports.is_empty() {
        plugin.matches = vec![TrafficMatch {
            mode: args.mode,
            ports: args.ports.clone(),
        }];
    }
    if !args.target_refs.is_empty() {
        if !args.selector.is_empty() {
            bail!("--selector and --target-ref: only one of the two may be set");
        }
        plugin.attachment = Attachment::TargetRefs(args.target_refs.clone());
    } else if !args.selector.is_empty() {
        let mut labels = BTreeMap::new();
        for entry in &args.selector {
            let (k, v) = entry
                .split_once('=')
                .with_context(|| format!("--selector {entry:?}: expected key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        plugin.attachment = Attachment::Selector(labels);
    }
    let resource = match args.kind {
        ManifestKind::EnvoyExtensionPolicy => plugin.envoy_extension_policy(&GatewayOptions {
            pull_policy: args.pull_policy,
            env_host_keys: args.env_host_keys.clone(),
        })?,
        kind => {
            if args.pull_policy.is_some() || !args.env_host_keys.is_empty() {
                bail!("--pull-policy and --env-host-key are for --kind envoyextensionpolicy");
            }
            plugin.resource(kind)?
        }
    };
    let yaml = manifest::to_yaml(&resource, &args.filter)?;
    match &args.out {
        Some(out) => {
            tollgate_files::write(out, &yaml)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {}", out.display());
        }
        None => out!("{yaml}"),
    }
    if let Some(envoy) = &args.envoy {
        let code = match &args.envoy_remote_url {
            Some(uri) => EnvoyCode::Remote {
                uri: uri.clone(),
                sha256: wasm_sha
                    .clone()
                    .context("--envoy-remote-url needs --wasm (its sha256 pins the module)")?,
            },
            None => EnvoyCode::Local {
                filename: format!("target/filters/{}.wasm", args.filter),
            },
        };
        let bootstrap = manifest::envoy_bootstrap(&args.filter, &config, &code)?;
        let text = manifest::to_yaml(&bootstrap, &args.filter)?;
        tollgate_files::write(envoy, text)
            .with_context(|| format!("cannot write {}", envoy.display()))?;
        eprintln!("wrote {}", envoy.display());
    }
    Ok(())
}

/// `tollgate validate`: fails when any document is rejected.
pub fn validate(args: ValidateArgs) -> Result<()> {
    let crd = CrdSet::load(&args.crds)
        .context("cannot load the CRDs (pass --crd <path> for each: wasmplugins.crd.yaml, trafficextensions.crd.yaml, envoyextensionpolicies.crd.yaml)")?;
    let forced = match &args.module {
        Some(module) => Some(load_schema(module)?),
        None => None,
    };
    let mut rejected = 0;
    let mut accepted = 0;
    for path in &args.manifests {
        // Bounded, regular files only, nesting refused before parsing (as every input).
        let text = tollgate_ship::validate::read_yaml(path)?;
        let docs = tollgate_ship::validate::documents(&path.display().to_string(), &text)?;
        let mut reports = crd.validate_text(&path.display().to_string(), &text)?;
        for report in &mut reports {
            let Some(Some(doc)) = docs.get(report.index) else {
                continue;
            };
            for (at, url, config) in plugin_configs(doc) {
                let schema = match (&forced, url.strip_prefix("file://")) {
                    (Some(schema), _) => schema.clone(),
                    (None, Some(local)) if Path::new(local).is_file() => load_schema(local)?,
                    _ => continue,
                };
                report.errors.extend(
                    tollgate_ship::schema::check(&schema.1, config, &at)
                        .into_iter()
                        .map(|mut e| {
                            e.message = format!("{} (schema of {})", e.message, schema.0);
                            e
                        }),
                );
            }
        }
        for report in reports {
            let name = report.name.as_deref().unwrap_or("(no name)");
            let name = format!("{} {name}", report.kind.as_deref().unwrap_or("(no kind)"));
            if report.errors.is_empty() {
                accepted += 1;
                outln!(
                    "ok      {} document {} ({name})",
                    path.display(),
                    report.index
                );
            } else {
                rejected += 1;
                outln!(
                    "INVALID {} document {} ({name})",
                    path.display(),
                    report.index
                );
                for error in &report.errors {
                    outln!("    {error}");
                }
            }
        }
    }
    if rejected > 0 {
        bail!("{rejected} document(s) rejected, {accepted} accepted");
    }
    outln!("{accepted} document(s) accepted");
    Ok(())
}

/// Each plugin configuration of a manifest: its field path, the module URL and the value.
fn plugin_configs(doc: &serde_json::Value) -> Vec<(String, String, &serde_json::Value)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let spec = &doc["spec"];
    match doc["kind"].as_str() {
        Some("WasmPlugin") => spec
            .get("pluginConfig")
            .map(|c| vec![("spec.pluginConfig".into(), text(&spec["url"]), c)])
            .unwrap_or_default(),
        Some("TrafficExtension") => spec["wasm"]
            .get("pluginConfig")
            .map(|c| {
                vec![(
                    "spec.wasm.pluginConfig".into(),
                    text(&spec["wasm"]["url"]),
                    c,
                )]
            })
            .unwrap_or_default(),
        Some("EnvoyExtensionPolicy") => spec["wasm"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, w)| {
                let url = text(&w["code"]["http"]["url"]);
                w.get("config")
                    .map(|c| (format!("spec.wasm[{i}].config"), url, c))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Where a filter named on the command line is: a file or folder as given, else
/// `<filters dir>/<name>.wasm` ($TOLLGATE_FILTERS_DIR, or target/filters).
fn filter_path(filter: &str) -> PathBuf {
    let given = PathBuf::from(filter);
    if given.exists() || filter.contains('/') || filter.ends_with(".wasm") {
        return given;
    }
    let dir = std::env::var_os("TOLLGATE_FILTERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("target").join("filters"));
    dir.join(format!("{filter}.wasm"))
}

/// The configuration schema of a filter (module, image layout or name), with the path read.
fn load_schema(filter: &str) -> Result<(String, serde_json::Value)> {
    let path = filter_path(filter);
    let shown = path.display().to_string();
    let schema = if path.is_dir() {
        oci::config_schema_of_layout(&path)?
    } else {
        let wasm = std::fs::read(&path).with_context(|| {
            format!("cannot read {shown} (build the filters with `cargo xtask build`)")
        })?;
        tollgate_ship::schema::from_module(&shown, &wasm)?
    };
    let schema = schema.with_context(|| {
        format!(
            "{shown} carries no configuration schema (custom section {}): build it with `cargo xtask build`",
            tollgate_ship::schema::SECTION
        )
    })?;
    Ok((shown, schema))
}

/// `tollgate schema`: prints (or writes) the JSON Schema of a filter's configuration.
pub fn schema(args: SchemaArgs) -> Result<()> {
    let (_, schema) = load_schema(&args.filter)?;
    let text = serde_json::to_string_pretty(&schema)? + "\n";
    match &args.out {
        Some(out) => {
            tollgate_files::write(out, &text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {}", out.display());
        }
        None => out!("{text}"),
    }
    Ok(())
}
