//! OCI images of a filter, in the two forms Istio's image fetcher accepts,
//! written as OCI image layouts (a folder and a `.tar` of it):
//!
//! - [`Variant::Compat`]: a regular image, one `tar+gzip` layer holding `plugin.wasm`.
//! - [`Variant::WasmArtifact`]: the Wasm OCI artifact, config
//!   `application/vnd.module.wasm.config.v1+json` (runtime type, ABI versions,
//!   root ids) and one `application/vnd.module.wasm.content.layer.v1+wasm` layer.
//!
//! Everything is reproducible byte for byte: fixed timestamps, owners and
//! modes in the tars, a fixed gzip header, sorted entries, JSON from the
//! `oci-spec` types in a fixed field order.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, SCHEMA_VERSION,
    Sha256Digest,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::ShipError;
use tollgate_abi::AbiVersion;
use tollgate_files::{self as atomic_write, AtomicDir};

/// Media type of the Wasm artifact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// Media type of the Wasm artifact's layer (the module itself).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The file name Istio looks for in a compat image's layer.
pub const COMPAT_FILE: &str = "plugin.wasm";
/// The timestamp every file and config carries (the Unix epoch), for reproducible output.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Which image form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// A regular OCI image with one tar+gzip layer holding `plugin.wasm`.
    Compat,
    /// The Wasm OCI artifact (module config + raw wasm layer).
    WasmArtifact,
}

impl Variant {
    /// Both forms, in output order.
    pub const ALL: [Variant; 2] = [Variant::Compat, Variant::WasmArtifact];

    /// The folder / tar name used for this form in the output directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Variant::Compat => "compat",
            Variant::WasmArtifact => "wasm",
        }
    }
}

/// The Wasm artifact config (`application/vnd.module.wasm.config.v1+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// Runtime type, `envoy_proxy`.
    #[serde(rename = "type")]
    pub kind: String,
    /// proxy-wasm ABI versions the module implements, e.g. `v0.2.1`.
    pub abi_versions: Vec<String>,
    /// Runtime-specific configuration.
    pub config: WasmRuntimeConfig,
}

/// `config` of [`WasmConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmRuntimeConfig {
    /// Root ids the module serves.
    pub root_ids: Vec<String>,
    /// The JSON Schema of the filter's configuration, when the module carries one
    /// (custom section [`crate::schema::SECTION`]); `tollgate validate` checks a
    /// `pluginConfig` against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
}

/// The label of the compat image's config that holds the configuration's JSON Schema (as text).
pub const SCHEMA_LABEL: &str = "io.tollgate.config-schema";

/// One image: its blobs (manifest, config, layers) and the manifest descriptor.
#[derive(Debug, Clone)]
pub struct Image {
    /// The form.
    pub variant: Variant,
    /// Descriptor of the manifest (as listed in `index.json`).
    pub manifest: Descriptor,
    /// Every blob by its hex sha256 digest: manifest, config, layers.
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    /// The manifest's `sha256:<hex>` digest.
    pub fn digest(&self) -> String {
        self.manifest.digest().to_string()
    }
}

/// What to package: the module and the names it carries.
#[derive(Debug, Clone)]
pub struct Package {
    name: String,
    wasm: Vec<u8>,
    abi: AbiVersion,
    root_ids: Vec<String>,
    tag: String,
    config_schema: Option<serde_json::Value>,
}

/// Files written by [`Package::write`].
#[derive(Debug, Clone)]
pub struct Written {
    /// The form.
    pub variant: Variant,
    /// The layout folder.
    pub dir: PathBuf,
    /// The tar of the layout.
    pub tar: PathBuf,
    /// The manifest digest, `sha256:<hex>`.
    pub manifest_digest: String,
    /// sha256 (hex) of the module itself.
    pub wasm_sha256: String,
}

impl Package {
    /// Reads a proxy-wasm module; its root id defaults to the file stem and its tag to `latest`.
    pub fn from_file(path: &Path) -> Result<Package, ShipError> {
        let wasm = std::fs::read(path).map_err(|e| ShipError::read(path, e))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        Package::from_bytes(&path.display().to_string(), &stem, wasm)
    }

    /// A module from memory; `name` appears in errors, `root_id` is the default root id.
    pub fn from_bytes(name: &str, root_id: &str, wasm: Vec<u8>) -> Result<Package, ShipError> {
        let abi = detect_abi(name, &wasm)?;
        let config_schema = crate::schema::from_module(name, &wasm)?;
        Ok(Package {
            name: name.to_string(),
            wasm,
            abi,
            root_ids: vec![root_id.to_string()],
            tag: "latest".into(),
            config_schema,
        })
    }

    /// Replaces the root ids recorded in the Wasm artifact's config.
    pub fn root_ids(mut self, ids: Vec<String>) -> Self {
        if !ids.is_empty() {
            self.root_ids = ids;
        }
        self
    }

    /// The tag recorded as `org.opencontainers.image.ref.name` in `index.json`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// The detected ABI version.
    pub fn abi(&self) -> AbiVersion {
        self.abi
    }

    /// The configuration schema the module carries, when it has one.
    pub fn config_schema(&self) -> Option<&serde_json::Value> {
        self.config_schema.as_ref()
    }

    /// sha256 (hex) of the module.
    pub fn wasm_sha256(&self) -> String {
        sha256_hex(&self.wasm)
    }

    /// Builds one form of the image in memory.
    pub fn image(&self, variant: Variant) -> Result<Image, ShipError> {
        let err = |e: &dyn std::fmt::Display| ShipError::invalid(&self.name, e.to_string());
        let (config_media, config_bytes, layer_media, layer_bytes, layer_annotations) =
            match variant {
                Variant::Compat => {
                    let tar = compat_layer_tar(&self.wasm)?;
                    let diff_id = format!("sha256:{}", sha256_hex(&tar));
                    let gz = gzip(&tar).map_err(|e| err(&e))?;
                    let rootfs = RootFsBuilder::default()
                        .typ("layers")
                        .diff_ids(vec![diff_id])
                        .build()
                        .map_err(|e| err(&e))?;
                    let mut builder = ImageConfigurationBuilder::default()
                        .architecture(Arch::Wasm)
                        .os(Os::Other("wasip1".into()))
                        .created(EPOCH)
                        .rootfs(rootfs);
                    if let Some(schema) = &self.config_schema {
                        let labels =
                            HashMap::from([(SCHEMA_LABEL.to_string(), schema.to_string())]);
                        builder = builder.config(
                            oci_spec::image::ConfigBuilder::default()
                                .labels(labels)
                                .build()
                                .map_err(|e| err(&e))?,
                        );
                    }
                    let config = builder.build().map_err(|e| err(&e))?;
                    let bytes = config.to_string().map_err(|e| err(&e))?.into_bytes();
                    (
                        MediaType::ImageConfig,
                        bytes,
                        MediaType::ImageLayerGzip,
                        gz,
                        None,
                    )
                }
                Variant::WasmArtifact => {
                    let config = WasmConfig {
                        kind: "envoy_proxy".into(),
                        abi_versions: vec![format!("v{}", self.abi.as_str())],
                        config: WasmRuntimeConfig {
                            root_ids: self.root_ids.clone(),
                            config_schema: self.config_schema.clone(),
                        },
                    };
                    let bytes = serde_json::to_vec(&config).map_err(|e| err(&e))?;
                    let annotations = HashMap::from([(
                        "org.opencontainers.image.title".to_string(),
                        COMPAT_FILE.to_string(),
                    )]);
                    (
                        MediaType::Other(WASM_CONFIG_MEDIA_TYPE.into()),
                        bytes,
                        MediaType::Other(WASM_LAYER_MEDIA_TYPE.into()),
                        self.wasm.clone(),
                        Some(annotations),
                    )
                }
            };
        let config_desc = descriptor(config_media, &config_bytes, None)?;
        let layer_desc = descriptor(layer_media, &layer_bytes, layer_annotations)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(vec![layer_desc])
            .build()
            .map_err(|e| err(&e))?;
        let manifest_bytes = manifest.to_string().map_err(|e| err(&e))?.into_bytes();
        let annotations = HashMap::from([(
            "org.opencontainers.image.ref.name".to_string(),
            self.tag.clone(),
        )]);
        let manifest_desc =
            descriptor(MediaType::ImageManifest, &manifest_bytes, Some(annotations))?;
        let mut blobs = vec![
            (sha256_hex(&manifest_bytes), manifest_bytes),
            (sha256_hex(&config_bytes), config_bytes),
            (sha256_hex(&layer_bytes), layer_bytes),
        ];
        blobs.sort_by(|a, b| a.0.cmp(&b.0));
        blobs.dedup_by(|a, b| a.0 == b.0);
        Ok(Image {
            variant,
            manifest: manifest_desc,
            blobs,
        })
    }

    /// Writes both forms under `out`: `compat/` + `compat.tar` and `wasm/` + `wasm.tar`.
    pub fn write(&self, out: &Path) -> Result<Vec<Written>, ShipError> {
        let mut written = Vec::new();
        // The output folder itself may be new; the layouts inside it are swapped in whole.
        std::fs::create_dir_all(out).map_err(|e| ShipError::write(out, e))?;
        for variant in Variant::ALL {
            let image = self.image(variant)?;
            let files = layout_files(&image)?;
            let dir = out.join(variant.dir_name());
            // Filled beside `dir` and swapped in whole (see `atomic_write`).
            let new = AtomicDir::create(&dir).map_err(|e| ShipError::write(&dir, e))?;
            for (relative, bytes) in &files {
                let path = new.path().join(relative);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| ShipError::write(parent, e))?;
                }
                // scratch: inside the temporary folder `new` commits below.
                std::fs::write(&path, bytes).map_err(|e| ShipError::write(&path, e))?;
            }
            let tar = out.join(format!("{}.tar", variant.dir_name()));
            let bytes = layout_tar(&files).map_err(|e| ShipError::write(&tar, e))?;
            atomic_write::write(&tar, bytes).map_err(|e| ShipError::write(&tar, e))?;
            new.commit().map_err(|e| ShipError::write(&dir, e))?;
            written.push(Written {
                variant,
                dir,
                tar,
                manifest_digest: image.digest(),
                wasm_sha256: self.wasm_sha256(),
            });
        }
        Ok(written)
    }
}

/// The files of an OCI image layout holding `image`, sorted by path:
/// `blobs/sha256/<hex>...`, `index.json`, `oci-layout`.
pub fn layout_files(image: &Image) -> Result<Vec<(String, Vec<u8>)>, ShipError> {
    let err = |e: &dyn std::fmt::Display| ShipError::invalid("OCI layout", e.to_string());
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(|e| err(&e))?;
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![image.manifest.clone()])
        .build()
        .map_err(|e| err(&e))?;
    let mut files = vec![
        (
            "oci-layout".to_string(),
            layout.to_string().map_err(|e| err(&e))?.into_bytes(),
        ),
        (
            "index.json".to_string(),
            index.to_string().map_err(|e| err(&e))?.into_bytes(),
        ),
    ];
    for (hex, bytes) in &image.blobs {
        files.push((format!("blobs/sha256/{hex}"), bytes.clone()));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// A tar of layout files: directories first as they appear, fixed owner, mode and mtime.
pub fn layout_tar(files: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, bytes) in files {
        let mut prefix = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
                builder.append_data(&mut header, &prefix, std::io::empty())?;
            }
        }
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        builder.append_data(&mut header, path, bytes.as_slice())?;
    }
    builder.into_inner()
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// The compat layer before compression: a tar with `plugin.wasm`.
fn compat_layer_tar(wasm: &[u8]) -> Result<Vec<u8>, ShipError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = fixed_header(tar::EntryType::Regular, 0o644, wasm.len() as u64);
    builder
        .append_data(&mut header, COMPAT_FILE, wasm)
        .and_then(|()| builder.into_inner())
        .map_err(|e| ShipError::invalid(COMPAT_FILE, format!("cannot build the layer tar: {e}")))
}

/// gzip with a fixed header (no name, mtime 0) and the best compression.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn descriptor(
    media_type: MediaType,
    bytes: &[u8],
    annotations: Option<HashMap<String, String>>,
) -> Result<Descriptor, ShipError> {
    let hex = sha256_hex(bytes);
    let digest: Sha256Digest = hex
        .parse()
        .map_err(|e| ShipError::invalid("digest", format!("{e}")))?;
    let mut builder = DescriptorBuilder::default()
        .media_type(media_type)
        .size(bytes.len() as u64)
        .digest(Digest::from(digest));
    if let Some(annotations) = annotations {
        builder = builder.annotations(annotations);
    }
    builder
        .build()
        .map_err(|e| ShipError::invalid("descriptor", e.to_string()))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The proxy-wasm ABI version a module exports (it must export one).
pub fn detect_abi(name: &str, wasm: &[u8]) -> Result<AbiVersion, ShipError> {
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload
            .map_err(|e| ShipError::invalid(name, format!("not a WebAssembly module: {e}")))?;
        if let wasmparser::Payload::ExportSection(reader) = payload {
            for export in reader {
                let export = export
                    .map_err(|e| ShipError::invalid(name, format!("bad export section: {e}")))?;
                exports.push(export.name.to_string());
            }
        }
    }
    AbiVersion::detect(exports.iter().map(String::as_str)).ok_or_else(|| {
        ShipError::invalid(
            name,
            "not a proxy-wasm module: no proxy_abi_version_* export",
        )
    })
}

/// The configuration schema recorded in an image layout written by [`Package::write`]: `dir` is
/// a layout (with `index.json`) or `tollgate package`'s output folder (its `wasm/` or `compat/`
/// layout). Reads the Wasm artifact's config (`config.configSchema`), the compat image's label
/// [`SCHEMA_LABEL`], or else the module's own custom section. `None` when the image has none.
pub fn config_schema_of_layout(dir: &Path) -> Result<Option<serde_json::Value>, ShipError> {
    let layout = if dir.join("index.json").is_file() {
        dir.to_path_buf()
    } else if let Some(found) = Variant::ALL
        .iter()
        .map(|v| dir.join(v.dir_name()))
        .find(|d| d.join("index.json").is_file())
    {
        found
    } else {
        return Err(ShipError::invalid(
            dir.display(),
            "not an OCI image layout (no index.json, nor wasm/index.json or compat/index.json)",
        ));
    };
    let read_json = |path: PathBuf| -> Result<serde_json::Value, ShipError> {
        let bytes = std::fs::read(&path).map_err(|e| ShipError::read(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ShipError::invalid(path.display(), format!("not JSON: {e}")))
    };
    let blob = |digest: &serde_json::Value| -> Result<PathBuf, ShipError> {
        let hex = digest
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ShipError::invalid(layout.display(), format!("bad digest {digest}")))?;
        Ok(layout.join("blobs").join("sha256").join(hex))
    };
    let index = read_json(layout.join("index.json"))?;
    let manifest = read_json(blob(&index["manifests"][0]["digest"])?)?;
    let config = read_json(blob(&manifest["config"]["digest"])?)?;
    if let Some(schema) = config.pointer("/config/configSchema") {
        return Ok(Some(schema.clone()));
    }
    if let Some(text) = config
        .pointer("/config/Labels")
        .and_then(|labels| labels.get(SCHEMA_LABEL))
        .and_then(serde_json::Value::as_str)
    {
        let schema = serde_json::from_str(text).map_err(|e| {
            ShipError::invalid(
                layout.display(),
                format!("label {SCHEMA_LABEL} is not JSON: {e}"),
            )
        })?;
        return Ok(Some(schema));
    }
    // An image written by another tool: the module's own custom section.
    if manifest["config"]["mediaType"] == WASM_CONFIG_MEDIA_TYPE {
        let path = blob(&manifest["layers"][0]["digest"])?;
        let wasm = std::fs::read(&path).map_err(|e| ShipError::read(&path, e))?;
        return crate::schema::from_module(&path.display().to_string(), &wasm);
    }
    Ok(None)
}
