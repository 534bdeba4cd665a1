//! Foreign functions: `proxy_call_foreign_function`. The harness registers
//! none, so every name answers `NotFound` (as Envoy does for an unknown name).

use super::{Status, memory as mem};
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
         _results_size_ptr: u32|
         -> u32 {
            let found = mem::with_two(
                &mut caller,
                (name_ptr, name_len),
                (args_ptr, args_len),
                |name, _args, state| {
                    let name = String::from_utf8_lossy(name).into_owned();
                    super::warn_once(
                        state,
                        "foreign",
                        &format!("foreign function `{name}` is not available in the harness"),
                    );
                },
            );
            match found {
                None => Status::InvalidMemoryAccess.code(),
                Some(()) => Status::NotFound.code(),
            }
        },
    )?;
    Ok(())
}
