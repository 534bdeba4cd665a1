//! Shared data: `proxy_get_shared_data` and `proxy_set_shared_data`, a
//! key-value store shared by every VM of the same vm_id, with
//! compare-and-swap as in proxy-wasm-cpp-host: a non-zero `cas` that does
//! not match the stored one answers `CasMismatch`; every write gets a new
//! non-zero cas.

use super::{AbiError, AbiResult, Status, memory as mem, status, to_guest, written};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds the shared data functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         kp: u32,
         kl: u32,
         ptr_ptr: u32,
         size_ptr: u32,
         cas_ptr: u32| { to_guest(get(&mut caller, (kp, kl), ptr_ptr, size_ptr, cas_ptr)) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32| {
            to_guest(set(&mut caller, (kp, kl), (vp, vl), cas))
        },
    )?;
    Ok(())
}

fn get(
    caller: &mut Caller<'_, HostState>,
    (key_ptr, key_len): (u32, u32),
    ptr_ptr: u32,
    size_ptr: u32,
    cas_ptr: u32,
) -> AbiResult {
    let found = mem::with_bytes(caller, key_ptr, key_len, |key, state| {
        let data = state.shared.data();
        data.map
            .get(&state.settings.vm_id)
            .and_then(|m| m.get(key))
            .cloned()
    });
    let (value, cas) = found
        .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?
        .ok_or(AbiError::Status(Status::NotFound))?;
    let ok =
        mem::copy_out(caller, &value, ptr_ptr, size_ptr)? && mem::write_u32(caller, cas_ptr, cas);
    written(ok)
}

fn set(
    caller: &mut Caller<'_, HostState>,
    key: (u32, u32),
    value: (u32, u32),
    cas: u32,
) -> AbiResult {
    let s = mem::with_two(caller, key, value, |key, value, state| {
        let mut data = state.shared.data();
        data.next_cas = data.next_cas.wrapping_add(1).max(1);
        let new_cas = data.next_cas;
        let map = data.map.entry(state.settings.vm_id.clone()).or_default();
        match map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Status::CasMismatch;
                }
                *entry = (value.to_vec(), new_cas);
            }
            None => {
                map.insert(key.to_vec(), (value.to_vec(), new_cas));
            }
        }
        Status::Ok
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}
