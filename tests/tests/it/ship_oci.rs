//! `tollgate package`: OCI image layouts of a filter in Istio's two forms,
//! checked against the OCI image-layout spec (oci-layout, index.json,
//! content-addressed blobs), byte-for-byte reproducible, the module
//! recoverable from each form exactly as Istio's fetcher reads it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_ship::oci::{
    COMPAT_FILE, Package, Variant, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, layout_files,
};
use tollgate_tests::paths;

/// A tiny proxy-wasm module (ABI 0.2.1) with some payload, so the layer is not trivial.
fn module() -> Result<Vec<u8>> {
    let data = "tollgate ".repeat(500);
    Ok(wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
             (data (i32.const 0) "{data}")
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_context_create") (param i32 i32)))"#
    ))?)
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&path)?);
            }
        }
    }
    Ok(out)
}

fn json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))
}

/// Checks a layout per the image-layout spec and follows index -> manifest -> blobs,
/// verifying every digest and size. Returns (manifest, config bytes, layer bytes).
fn verify_layout(files: &BTreeMap<String, Vec<u8>>) -> Result<(Value, Vec<u8>, Vec<u8>)> {
    let layout = json(
        files.get("oci-layout").context("no oci-layout file")?,
        "oci-layout",
    )?;
    ensure!(
        layout == serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        "oci-layout: {layout}"
    );
    for (path, bytes) in files {
        if path == "oci-layout" || path == "index.json" {
            continue;
        }
        let Some(digest) = path.strip_prefix("blobs/sha256/") else {
            bail!("unexpected file {path} in the layout");
        };
        ensure!(
            hex(bytes) == digest,
            "blob {path} does not hash to its name"
        );
    }
    let blob = |descriptor: &Value| -> Result<Vec<u8>> {
        let digest = descriptor["digest"]
            .as_str()
            .context("descriptor without digest")?;
        let hexd = digest
            .strip_prefix("sha256:")
            .context("digest is not sha256")?;
        let bytes = files
            .get(&format!("blobs/sha256/{hexd}"))
            .with_context(|| format!("blob {digest} missing"))?
            .clone();
        ensure!(
            descriptor["size"].as_u64() == Some(bytes.len() as u64),
            "size of {digest} is {} in the descriptor, {} on disk",
            descriptor["size"],
            bytes.len()
        );
        Ok(bytes)
    };
    let index = json(
        files.get("index.json").context("no index.json")?,
        "index.json",
    )?;
    ensure!(index["schemaVersion"] == 2, "index.json schemaVersion");
    ensure!(
        index["mediaType"] == "application/vnd.oci.image.index.v1+json",
        "index mediaType"
    );
    let manifests = index["manifests"]
        .as_array()
        .context("index.json has no manifests")?;
    ensure!(manifests.len() == 1, "one manifest expected");
    ensure!(manifests[0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json");
    ensure!(manifests[0]["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0");
    let manifest = json(&blob(&manifests[0])?, "the manifest")?;
    ensure!(manifest["schemaVersion"] == 2);
    let config = blob(&manifest["config"])?;
    let layers = manifest["layers"].as_array().context("no layers")?;
    ensure!(
        layers.len() == 1,
        "one layer expected, got {}",
        layers.len()
    );
    let layer = blob(&layers[0])?;
    Ok((manifest, config, layer))
}

fn untar_single(tar_bytes: &[u8]) -> Result<(String, Vec<u8>, u64)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut found = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mtime = entry.header().mtime()?;
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        found.push((name, data, mtime));
    }
    ensure!(
        found.len() == 1,
        "expected one file in the layer, found {}",
        found.len()
    );
    Ok(found.remove(0))
}

#[test]
fn both_forms_are_valid_layouts_holding_the_module() -> Result<()> {
    let wasm = module()?;
    let package = Package::from_bytes("test.wasm", "headers", wasm.clone())?.tag("0.1.0");
    let out = paths::work_dir()?.join("ship-oci-forms");
    let written = package.write(&out)?;
    assert_eq!(written.len(), 2);

    // Compat: a regular image whose one tar+gzip layer holds plugin.wasm.
    let compat = tree(&out.join("compat"))?;
    let (manifest, config, layer) = verify_layout(&compat)?;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(layer.as_slice()).read_to_end(&mut tar_bytes)?;
    let (name, data, mtime) = untar_single(&tar_bytes)?;
    assert_eq!(name, COMPAT_FILE);
    assert!(data == wasm, "plugin.wasm differs from the module");
    assert_eq!(mtime, 0);
    let config = json(&config, "compat config")?;
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", hex(&tar_bytes))
    );

    // Wasm OCI artifact: module config + the module itself as the layer.
    let artifact = tree(&out.join("wasm"))?;
    let (manifest, config, layer) = verify_layout(&artifact)?;
    assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
    assert!(layer == wasm, "the layer is not the module");
    let config = json(&config, "wasm config")?;
    assert_eq!(
        config,
        serde_json::json!({"type": "envoy_proxy", "abiVersions": ["v0.2.1"], "config": {"rootIds": ["headers"]}})
    );
    assert_eq!(written[1].wasm_sha256, hex(&wasm));
    assert_eq!(
        written[1].manifest_digest,
        format!(
            "sha256:{}",
            hex(&artifact[&format!(
                "blobs/sha256/{}",
                written[1].manifest_digest.trim_start_matches("sha256:")
            )])
        )
    );

    // Each .tar holds exactly the layout folder's files.
    for variant in Variant::ALL {
        let dir_files = tree(&out.join(variant.dir_name()))?;
        let tar_bytes = std::fs::read(out.join(format!("{}.tar", variant.dir_name())))?;
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut from_tar = BTreeMap::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            ensure!(
                entry.header().mtime()? == 0 && entry.header().uid()? == 0,
                "tar metadata not fixed"
            );
            if entry.header().entry_type().is_dir() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            from_tar.insert(name, data);
        }
        ensure!(
            from_tar == dir_files,
            "{}.tar differs from {}/",
            variant.dir_name(),
            variant.dir_name()
        );
    }
    Ok(())
}

#[test]
fn packaging_is_reproducible_byte_for_byte() -> Result<()> {
    let wasm = module()?;
    let base = paths::work_dir()?;
    let (a, b) = (base.join("ship-oci-repro-a"), base.join("ship-oci-repro-b"));
    let first = Package::from_bytes("m.wasm", "m", wasm.clone())?.write(&a)?;
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a different wall-clock second
    let second = Package::from_bytes("m.wasm", "m", wasm.clone())?.write(&b)?;
    for (x, y) in first.iter().zip(&second) {
        assert_eq!(x.manifest_digest, y.manifest_digest);
        ensure!(
            std::fs::read(&x.tar)? == std::fs::read(&y.tar)?,
            "{} differs between runs",
            x.tar.display()
        );
        ensure!(
            tree(&x.dir)? == tree(&y.dir)?,
            "{} differs between runs",
            x.dir.display()
        );
    }
    // A different module gives different digests (the digests depend on the content).
    let mut other = wasm;
    other.extend_from_slice(&[0, 3, 1, b'x', 0]); // a custom section named "x"
    let third = Package::from_bytes("m.wasm", "m", other)?;
    for variant in Variant::ALL {
        let image = third.image(variant)?;
        assert_ne!(
            image.digest(),
            first[if variant == Variant::Compat { 0 } else { 1 }].manifest_digest
        );
        assert_eq!(layout_files(&image)?.len(), 5);
    }
    Ok(())
}

#[test]
fn a_module_without_the_abi_marker_is_refused() -> Result<()> {
    let wasm = wat::parse_str(r#"(module (func (export "hello")))"#)?;
    match Package::from_bytes("plain.wasm", "plain", wasm) {
        Ok(_) => bail!("a non-proxy-wasm module was packaged"),
        Err(e) => {
            let message = e.to_string();
            ensure!(
                message.contains("plain.wasm") && message.contains("proxy_abi_version"),
                "{message}"
            );
        }
    }
    match Package::from_bytes("junk.wasm", "junk", b"not wasm".to_vec()) {
        Ok(_) => bail!("junk was packaged"),
        Err(e) => ensure!(e.to_string().contains("junk.wasm"), "{e}"),
    }
    Ok(())
}
