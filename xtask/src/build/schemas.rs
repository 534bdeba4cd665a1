//! The configuration schema of each built filter, stored in its module.
//!
//! Every `filters/<name>/` with an `examples/schema.rs` (feature `schema`, example
//! `<name>-schema`) is built natively in one cargo run; each example prints the JSON Schema
//! its configuration type derives (`tollgate_sdk::schema`), and the schema is appended to
//! `target/filters/<name>.wasm` as the custom section `tollgate.config_schema`. Proxies skip
//! custom sections they do not know; `tollgate schema`, `package` and `validate` read it.

use anyhow::{Context, Result, bail};

use super::BuiltFilter;
use crate::process;

/// The custom section's name (`tollgate_sdk::schema::SECTION`).
pub const SECTION: &str = "tollgate.config_schema";

/// Builds the schema examples of the filters that have one and stores each schema in its module.
pub fn embed(built: &mut [BuiltFilter]) -> Result<()> {
    let root = crate::root();
    let with_schema: Vec<String> = built
        .iter()
        .map(|f| f.name.clone())
        .filter(|name| {
            root.join("filters")
                .join(name)
                .join("examples/schema.rs")
                .is_file()
        })
        .collect();
    for filter in built.iter() {
        if !with_schema.contains(&filter.name) {
            println!(
                "    {}: no configuration schema (filters/{}/examples/schema.rs is missing)",
                filter.name, filter.name
            );
        }
    }
    if with_schema.is_empty() {
        return Ok(());
    }
    crate::step(format!(
        "configuration schemas of {} filter(s) (native, feature `schema`)",
        with_schema.len()
    ));
    let mut command = process::cargo();
    command.args(["build", "--examples"]);
    let mut features = Vec::new();
    for name in &with_schema {
        command.args(["-p", &format!("tollgate-{name}")]);
        features.push(format!("tollgate-{name}/schema"));
    }
    command.args(["--features", &features.join(",")]);
    let artifacts = process::cargo_build(&mut command)
        .context("building the filters' schema examples failed (see the compiler output above)")?;
    for filter in built.iter_mut() {
        if !with_schema.contains(&filter.name) {
            continue;
        }
        let example = format!("{}-schema", filter.name);
        let executable = artifacts
            .iter()
            .filter(|a| a.target.name == example)
            .find_map(|a| a.executable.clone())
            .with_context(|| {
                format!(
                    "cargo built no example {example}: filters/{}/Cargo.toml needs [[example]] name = \"{example}\", path = \"examples/schema.rs\", required-features = [\"schema\"]",
                    filter.name
                )
            })?;
        let output = process::capture(&mut std::process::Command::new(&executable))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                executable.display(),
                output.status,
                process::combined_output(&output)
            );
        }
        let schema: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{} did not print JSON", executable.display()))?;
        let payload = serde_json::to_vec(&schema)?;
        let mut wasm = std::fs::read(&filter.wasm)
            .with_context(|| format!("could not read {}", filter.wasm.display()))?;
        append_custom_section(&mut wasm, SECTION, &payload);
        std::fs::write(&filter.wasm, &wasm)
            .with_context(|| format!("could not write {}", filter.wasm.display()))?;
        filter.bytes = wasm.len() as u64;
        println!(
            "    {:<20} schema: {} bytes in custom section {SECTION}",
            filter.name,
            section_len(SECTION, payload.len())
        );
    }
    Ok(())
}

/// Appends a custom section (id 0: size, name, payload) at the end of a module.
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, payload: &[u8]) {
    let mut body = Vec::new();
    leb128(&mut body, name.len() as u64);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    wasm.push(0);
    leb128(wasm, body.len() as u64);
    wasm.extend_from_slice(&body);
}

/// How many bytes a custom section of this name and payload size takes in the module.
pub fn section_len(name: &str, payload: usize) -> usize {
    let mut body = Vec::new();
    leb128(&mut body, name.len() as u64);
    let body_len = body.len() + name.len() + payload;
    let mut size = Vec::new();
    leb128(&mut size, body_len as u64);
    1 + size.len() + body_len
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::{append_custom_section, section_len};

    #[test]
    fn the_section_is_framed_as_wasm_wants() {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        let payload = vec![b'x'; 200];
        append_custom_section(&mut wasm, "n", &payload);
        // id 0, size 202 as LEB128 (0xca 0x01), name length 1, "n", payload.
        assert_eq!(&wasm[8..13], &[0, 0xca, 0x01, 1, b'n']);
        assert_eq!(wasm.len(), 8 + section_len("n", 200));
    }
}
