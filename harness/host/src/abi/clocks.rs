//! Clocks and timers: `proxy_get_current_time_nanoseconds` (from the VM's
//! virtual clock) and `proxy_set_tick_period_milliseconds`.

use super::{AbiResult, memory as mem, to_guest, written};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds the clock and timer functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, out: u32| to_guest(current_time(&mut caller, out)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: u32| {
            to_guest(set_tick_period(caller.data_mut(), period))
        },
    )?;
    Ok(())
}

fn current_time(caller: &mut Caller<'_, HostState>, out: u32) -> AbiResult {
    let now = caller.data().clock.realtime;
    written(mem::write_u64(caller, out, now))
}

fn set_tick_period(state: &mut HostState, period: u32) -> AbiResult {
    state.tick_period_ms = period;
    Ok(())
}
