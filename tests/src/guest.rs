//! WAT test guests without their boilerplate: [`assemble`] adds the exports every
//! proxy-wasm guest needs and most test guests write the same way, so that a guest's
//! source shows only what it tests.
//!
//! The standard exports, each added only when the guest does not export that name itself:
//! `proxy_abi_version_0_2_1`; `proxy_on_memory_allocate`, a bump allocator on the guest's
//! `$heap` global (8-byte steps; the guest declares `$heap` and where it starts);
//! `proxy_on_context_create`; `proxy_on_vm_start` and `proxy_on_configure` returning 1
//! (success); `proxy_on_done` returning 1 (done); `proxy_on_delete`.

use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::envoy::EnvoyConfig;
use crate::paths;

/// The standard exports: the exported name and its definition.
const STANDARD: [(&str, &str); 7] = [
    (
        "proxy_abi_version_0_2_1",
        r#"(func (export "proxy_abi_version_0_2_1"))"#,
    ),
    (
        "proxy_on_memory_allocate",
        r#"(func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap)
                               (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))"#,
    ),
    (
        "proxy_on_context_create",
        r#"(func (export "proxy_on_context_create") (param i32 i32))"#,
    ),
    (
        "proxy_on_vm_start",
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))"#,
    ),
    (
        "proxy_on_configure",
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))"#,
    ),
    (
        "proxy_on_done",
        r#"(func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))"#,
    ),
    (
        "proxy_on_delete",
        r#"(func (export "proxy_on_delete") (param i32))"#,
    ),
];

/// `module` (a WAT `(module ...)`) with the standard exports it lacks added at its end.
pub fn source(module: &str) -> String {
    let trimmed = module.trim_end();
    let Some(body) = trimmed.strip_suffix(')') else {
        // Not a module: left for the assembler to report.
        return module.to_string();
    };
    let mut out = body.to_string();
    for (name, definition) in STANDARD {
        if !module.contains(&format!("(export \"{name}\")")) {
            out.push_str("\n  ");
            out.push_str(definition);
        }
    }
    out.push_str("\n)");
    out
}

/// The wasm of `module` with the standard exports it lacks; `what` names the guest in an error.
pub fn assemble(module: &str, what: &str) -> Result<Vec<u8>> {
    wat::parse_str(source(module)).with_context(|| format!("the {what} does not assemble"))
}

/// Envoy's `headers` bootstrap running the test guest `wasm` in place of the headers filter:
/// the guest is written as `headers.wasm` in a folder of its own (`<label>-<pid>` in the tests'
/// work folder), the cluster `upstream` is routed to `upstream`, the plugin configuration is `{}`.
pub fn headers_bootstrap(wasm: &[u8], label: &str, upstream: SocketAddr) -> Result<EnvoyConfig> {
    let dir = paths::work_dir()?.join(format!("{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), wasm)?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream)?;
    config.use_filters_from(&dir)?;
    config.set_plugin_configuration("{}")?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::{assemble, source};

    #[test]
    fn only_the_missing_exports_are_added() -> anyhow::Result<()> {
        let own = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 0))
)"#;
        let full = source(own);
        assert_eq!(full.matches("proxy_on_vm_start").count(), 1);
        assert_eq!(full.matches("(export \"proxy_on_").count(), 6);
        let wasm = assemble(own, "test guest")?;
        assert!(wasm.starts_with(b"\0asm"));
        Ok(())
    }

    #[test]
    fn a_broken_guest_is_an_error_naming_it() {
        let result = assemble("(module (func $f (i32.bogus)))", "probe guest");
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.to_string().contains("the probe guest does not assemble")),
            "{result:?}"
        );
    }
}
