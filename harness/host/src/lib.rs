//! Tollgate's host: a native proxy-wasm host on wasmtime. It loads any
//! proxy-wasm module (ABI 0.1.0, 0.2.0, 0.2.1) and runs it the way Envoy does.
//!
//! - [`plugin`]: loading, ABI detection, import checks ([`plugin::Plugin`]).
//! - [`vm`]: a started VM ([`vm::Vm`]) and guest calls.
//! - [`stream`]: Envoy's filter manager: one HTTP exchange through a chain of VMs.
//! - [`verdict`]: what a filter did with an exchange, and the differences that say so.
//! - [`cache`]: the on-disk cache of compiled modules.
//! - [`bare`]: the bare callback lifecycle and the bundled no-op module (the harness floor).
//! - [`callouts`]: per-cluster answers for http and gRPC callouts, delivered on the virtual clock.
//! - [`trace`]: ABI call traces (Envoy's `-l trace` and the harness's), normalised and compared.
//! - [`limits`]: what a VM may use (memory, callouts and wall time per exchange, log).
//! - [`abi`]: the host functions.
//! - [`state`]: the state those functions work on.
//! - `ticks`: the cheap clock that times guest calls for their cost.

pub mod abi;
pub mod bare;
pub mod cache;
pub mod callouts;
pub mod limits;
pub mod plugin;
pub mod state;
pub mod stream;
mod ticks;
pub mod trace;
pub mod verdict;
pub mod vm;
