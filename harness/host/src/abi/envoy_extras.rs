//! Functions Envoy provides besides proxy-wasm and WASI, for modules built
//! with Emscripten or with pthread support compiled in.

use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds `emscripten_notify_memory_growth` and `pthread_equal`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        |_caller: Caller<'_, HostState>, _memory_index: u32| {},
    )?;
    linker.func_wrap(
        "env",
        "pthread_equal",
        |_caller: Caller<'_, HostState>, left: u32, right: u32| -> u32 { u32::from(left == right) },
    )?;
    Ok(())
}
