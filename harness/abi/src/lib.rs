//! The proxy-wasm ABI as plain data, shared by the host, the shipping tools
//! and anything else that reasons about modules without running them. No
//! wasmtime here.
//!
//! - [`AbiVersion`]: the ABI versions a module can declare.
//! - [`pairs`]: the header-map serialisation guests and hosts exchange.

pub mod pairs;
mod version;

pub use version::AbiVersion;
