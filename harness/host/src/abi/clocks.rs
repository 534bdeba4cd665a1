//! Clocks and timers: `proxy_get_current_time_nanoseconds` (from the VM's
//! virtual clock) and `proxy_set_tick_period_milliseconds`.

use super::{Status, memory as mem};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds the clock and timer functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, out: u32| -> u32 {
            let now = caller.data().clock.realtime;
            Status::written(mem::write_u64(&mut caller, out, now)).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: u32| -> u32 {
            // Envoy keeps one tick period per root context; 0 disables it.
            caller.data_mut().tick_period_ms = period;
            Status::Ok.code()
        },
    )?;
    Ok(())
}
