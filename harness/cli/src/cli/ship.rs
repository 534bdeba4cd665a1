//! `tollgate package`, `tollgate manifest` and `tollgate validate`: the
//! command-line side of [`tollgate_ship`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tollgate_ship::manifest::{
    self, Attachment, EnvoyCode, FailStrategy, Mode, Phase, PluginManifest, TargetRef, TrafficMatch,
};
use tollgate_ship::oci::{self, Package};
use tollgate_ship::validate::Crd;

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
    /// WasmPlugin manifests (YAML, several documents allowed).
    #[arg(required = true)]
    manifests: Vec<PathBuf>,
    /// The WasmPlugin CustomResourceDefinition.
    #[arg(long, default_value = "../shared/istio/wasmplugins.crd.yaml")]
    crd: PathBuf,
}

/// `tollgate package`.
pub fn package(args: PackageArgs) -> Result<()> {
    let package = Package::from_file(&args.wasm)?
        .root_ids(args.root_ids)
        .tag(args.tag);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    println!(
        "module {} (proxy-wasm ABI {}, sha256 {})",
        args.wasm.display(),
        package.abi(),
        package.wasm_sha256()
    );
    for written in package.write(&args.out)? {
        println!(
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
    let config = std::fs::read_to_string(&config_path)
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
    let yaml = plugin.to_yaml()?;
    match &args.out {
        Some(out) => {
            tollgate_files::write(out, &yaml)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {}", out.display());
        }
        None => print!("{yaml}"),
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
    let crd = Crd::load(&args.crd)
        .context("cannot load the WasmPlugin CRD (pass --crd <path to wasmplugins.crd.yaml>)")?;
    let mut rejected = 0;
    let mut accepted = 0;
    for path in &args.manifests {
        for report in crd.validate_file(path)? {
            let name = report.name.as_deref().unwrap_or("(no name)");
            if report.errors.is_empty() {
                accepted += 1;
                println!(
                    "ok      {} document {} ({name})",
                    path.display(),
                    report.index
                );
            } else {
                rejected += 1;
                println!(
                    "INVALID {} document {} ({name})",
                    path.display(),
                    report.index
                );
                for error in &report.errors {
                    println!("    {error}");
                }
            }
        }
    }
    if rejected > 0 {
        bail!("{rejected} WasmPlugin document(s) rejected, {accepted} accepted");
    }
    println!("{accepted} WasmPlugin document(s) accepted");
    Ok(())
}
