//! Tollgate harness: a native proxy-wasm host on wasmtime. It loads any
//! proxy-wasm module (ABI 0.1.0, 0.2.0, 0.2.1), runs it the way Envoy does,
//! replays recorded traffic through it and measures what it costs.
//!
//! - [`plugin`]: loading, ABI detection, import checks ([`plugin::Plugin`]).
//! - [`vm`]: a started VM ([`vm::Vm`]) and guest calls.
//! - [`stream`]: one HTTP exchange through a VM.
//! - [`replay`]: the replay API and its report.
//! - [`bench`]: `tollgate bench`, per-request and per-callback cost.
//! - [`cache`]: the on-disk cache of compiled modules.
//! - [`atomic_write`]: output files written beside their target and renamed into place.
//! - [`bare`]: the bare callback lifecycle and the bundled no-op module (the harness floor).
//! - [`callouts`]: per-cluster answers for http and gRPC callouts, delivered on the virtual clock.
//! - [`suite`]: declarative test suites (`tollgate test`).
//! - [`trace`]: ABI call traces (Envoy's `-l trace` and the harness's), normalised and compared.
//! - [`abi`]: the host functions.
//! - [`header_syntax`]: header names and values as HTTP allows them (stubs are checked on load).
//! - [`host`]: the state those functions work on.
//! - [`traffic`]: recorded traffic.
//! - [`live`]: recorded traffic through the real Envoy, compared with the harness (`tollgate envoy`).
//! - [`ship`]: OCI images, WasmPlugin and Envoy manifests, WasmPlugin validation.

pub mod abi;
pub mod atomic_write;
pub mod bare;
pub mod bench;
pub mod cache;
pub mod callouts;
pub mod header_syntax;
pub mod host;
pub mod live;
pub mod plugin;
pub mod replay;
pub mod ship;
pub mod stream;
pub mod suite;
pub mod trace;
pub mod traffic;
pub mod vm;
