//! Logging: `proxy_log` and `proxy_get_log_level`.

use super::{Status, memory as mem};
use crate::state::{HostState, LogLevel};
use wasmtime::{Caller, Linker};

/// Adds the logging functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32| -> u32 {
            let Some(level) = LogLevel::from_u32(level) else {
                return Status::BadArgument.code();
            };
            mem::with_bytes(&mut caller, ptr, len, |msg, state| {
                state.log(level, String::from_utf8_lossy(msg).into_owned());
                Status::Ok
            })
            .unwrap_or(Status::InvalidMemoryAccess)
            .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, out: u32| -> u32 {
            let level = caller.data().settings.log_level as u32;
            Status::written(mem::write_u32(&mut caller, out, level)).code()
        },
    )?;
    Ok(())
}
