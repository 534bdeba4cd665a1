//! Context lifecycle: `proxy_set_effective_context` and `proxy_done`.

use super::{AbiError, AbiResult, Status, to_guest};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds the lifecycle functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context_id: u32| {
            to_guest(set_effective_context(caller.data_mut(), context_id))
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut caller: Caller<'_, HostState>| {
        to_guest(done(caller.data_mut()))
    })?;
    Ok(())
}

fn set_effective_context(state: &mut HostState, context_id: u32) -> AbiResult {
    if !state.live_contexts.contains(&context_id) {
        return Err(Status::BadArgument.into());
    }
    state.effective_context = context_id;
    Ok(())
}

/// Envoy answers `NotFound`: no deferred close is pending.
fn done(state: &mut HostState) -> AbiResult {
    state.done_called = true;
    Err(AbiError::Status(Status::NotFound))
}
