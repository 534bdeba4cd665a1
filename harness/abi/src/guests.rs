//! The bundled reference guests, as WAT text and assembled: the no-op module
//! (the harness floor in `tollgate bench`, the no-op wasm baseline of
//! `tollgate envoy --compare`) and a module that reads and adds headers (the
//! overhead benchmarks).

/// The harness floor: a proxy-wasm 0.2.1 module whose callbacks do nothing.
pub const NOOP_WAT: &str = include_str!("wat/noop.wat");

/// A proxy-wasm 0.2.1 module that reads three request headers (`:path`,
/// `user-agent`, `x-request-id`) and adds the response header `x-filter: seen`.
pub const HEADERS_WAT: &str = include_str!("wat/headers.wat");

/// A bundled WAT text could not be assembled (a build defect, reported rather than panicking).
#[derive(Debug, thiserror::Error)]
#[error("bundled module `{name}` does not assemble: {message}")]
pub struct BundledModuleError {
    /// Which module.
    pub name: &'static str,
    /// The assembler's message.
    pub message: String,
}

fn assemble(name: &'static str, text: &str) -> Result<Vec<u8>, BundledModuleError> {
    wat::parse_str(text).map_err(|e| BundledModuleError {
        name,
        message: e.to_string(),
    })
}

/// The no-op module ([`NOOP_WAT`]) as wasm bytes.
pub fn noop_module() -> Result<Vec<u8>, BundledModuleError> {
    assemble("noop.wat", NOOP_WAT)
}

/// The header-access module ([`HEADERS_WAT`]) as wasm bytes.
pub fn headers_module() -> Result<Vec<u8>, BundledModuleError> {
    assemble("headers.wat", HEADERS_WAT)
}
