//! Shared data: `proxy_get_shared_data` and `proxy_set_shared_data`, a
//! key-value store shared by every VM of the same vm_id, with
//! compare-and-swap as in proxy-wasm-cpp-host: a non-zero `cas` that does
//! not match the stored one answers `CasMismatch`; every write gets a new
//! non-zero cas.

use super::{Status, memory as mem};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// Adds the shared data functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_len: u32,
         ptr_ptr: u32,
         size_ptr: u32,
         cas_ptr: u32|
         -> wasmtime::Result<u32> {
            let found = mem::with_bytes(&mut caller, key_ptr, key_len, |key, state| {
                let data = state.shared.data();
                data.map
                    .get(&state.settings.vm_id)
                    .and_then(|m| m.get(key))
                    .cloned()
            });
            let (value, cas) = match found {
                None => return Ok(Status::InvalidMemoryAccess.code()),
                Some(None) => return Ok(Status::NotFound.code()),
                Some(Some(v)) => v,
            };
            let ok = mem::copy_out(&mut caller, &value, ptr_ptr, size_ptr)?
                && mem::write_u32(&mut caller, cas_ptr, cas);
            Ok(Status::written(ok).code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_len: u32,
         value_ptr: u32,
         value_len: u32,
         cas: u32|
         -> u32 {
            mem::with_two(
                &mut caller,
                (key_ptr, key_len),
                (value_ptr, value_len),
                |key, value, state| {
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
                },
            )
            .unwrap_or(Status::InvalidMemoryAccess)
            .code()
        },
    )?;
    Ok(())
}
