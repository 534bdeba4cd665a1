//! Context lifecycle: `proxy_set_effective_context` and `proxy_done`.

use super::Status;
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds the lifecycle functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context_id: u32| -> u32 {
            let state = caller.data_mut();
            if !state.live_contexts.contains(&context_id) {
                return Status::BadArgument.code();
            }
            state.effective_context = context_id;
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_done",
        |mut caller: Caller<'_, HostState>| -> u32 {
            // Envoy only accepts `proxy_done` from a root context it asked to
            // finish (on_done returned false); the harness never does.
            let state = caller.data_mut();
            state.done_called = true;
            Status::NotFound.code()
        },
    )?;
    Ok(())
}
