//! Foreign functions: `proxy_call_foreign_function`. The harness registers
//! none, so every name answers `NotFound` (as Envoy does for an unknown name).

use super::{AbiError, AbiResult, Status, memory as mem, to_guest};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds `proxy_call_foreign_function`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut caller: Caller<'_, HostState>,
         name_ptr: u32,
         name_len: u32,
         args_ptr: u32,
         args_len: u32,
         _results_ptr: u32,
         _results_size_ptr: u32| {
            to_guest(call_foreign(
                &mut caller,
                (name_ptr, name_len),
                (args_ptr, args_len),
            ))
        },
    )?;
    Ok(())
}

/// No foreign function exists in the harness: `NotFound`, with a warning once.
fn call_foreign(
    caller: &mut Caller<'_, HostState>,
    name: (u32, u32),
    args: (u32, u32),
) -> AbiResult {
    mem::with_two(caller, name, args, |name, _args, state| {
        let name = String::from_utf8_lossy(name).into_owned();
        super::warn_once(
            state,
            "foreign",
            &format!("foreign function `{name}` is not available in the harness"),
        );
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?;
    Err(Status::NotFound.into())
}
