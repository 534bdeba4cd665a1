//! Logging: `proxy_log` and `proxy_get_log_level`.

use super::{AbiError, AbiResult, Status, memory as mem, status, to_guest, written};
use crate::state::{HostState, LogLevel};
use wasmtime::{Caller, Linker};

/// Adds the logging functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32| {
            to_guest(log(&mut caller, level, ptr, len))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, out: u32| to_guest(get_log_level(&mut caller, out)),
    )?;
    Ok(())
}

fn log(caller: &mut Caller<'_, HostState>, level: u32, ptr: u32, len: u32) -> AbiResult {
    let level = LogLevel::try_from(level).map_err(|_| AbiError::Status(Status::BadArgument))?;
    let s = mem::with_bytes(caller, ptr, len, |msg, state| {
        state.log_bytes(level, msg);
        Status::Ok
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}

fn get_log_level(caller: &mut Caller<'_, HostState>, out: u32) -> AbiResult {
    let level = caller.data().settings.log_level as u32;
    written(mem::write_u32(caller, out, level))
}
