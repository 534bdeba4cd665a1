//! Shared queues: `proxy_register_shared_queue`, `proxy_resolve_shared_queue`,
//! `proxy_enqueue_shared_queue`, `proxy_dequeue_shared_queue`.
//!
//! Queues are shared by VMs of one plugin, named by `(vm_id, name)`; a token
//! is the queue's index plus one. Enqueueing onto a queue registered by this
//! VM schedules `proxy_on_queue_ready` on the registering root context after
//! the current callback (the harness does not notify other VMs).

use super::{AbiError, AbiResult, Status, memory as mem, status, to_guest, written};
use crate::state::{HostState, Queue};
use wasmtime::{Caller, Linker};

/// Adds the shared queue functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Caller<'_, HostState>, name_ptr: u32, name_len: u32, token_ptr: u32| {
            to_guest(register(&mut caller, (name_ptr, name_len), token_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut caller: Caller<'_, HostState>,
         vm_id_ptr: u32,
         vm_id_len: u32,
         name_ptr: u32,
         name_len: u32,
         token_ptr: u32| {
            to_guest(resolve(
                &mut caller,
                (vm_id_ptr, vm_id_len),
                (name_ptr, name_len),
                token_ptr,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut caller: Caller<'_, HostState>, token: u32, ptr: u32, len: u32| {
            to_guest(enqueue(&mut caller, token, (ptr, len)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Caller<'_, HostState>, token: u32, ptr_ptr: u32, size_ptr: u32| {
            to_guest(dequeue(&mut caller, token, ptr_ptr, size_ptr))
        },
    )?;
    Ok(())
}

fn register(
    caller: &mut Caller<'_, HostState>,
    (name_ptr, name_len): (u32, u32),
    token_ptr: u32,
) -> AbiResult {
    let token = mem::with_bytes(caller, name_ptr, name_len, |name, state| {
        let name = String::from_utf8_lossy(name).into_owned();
        let vm_id = state.settings.vm_id.clone();
        let mut queues = state.shared.queues();
        let index = match queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            Some(i) => i,
            None => {
                queues.push(Queue {
                    vm_id,
                    name,
                    items: Default::default(),
                });
                queues.len() - 1
            }
        };
        drop(queues);
        let token = index as u32 + 1;
        if !state.registered_queues.contains(&token) {
            state.registered_queues.push(token);
        }
        token
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?;
    written(mem::write_u32(caller, token_ptr, token))
}

fn resolve(
    caller: &mut Caller<'_, HostState>,
    vm_id: (u32, u32),
    name: (u32, u32),
    token_ptr: u32,
) -> AbiResult {
    let token = mem::with_two(caller, vm_id, name, |vm_id, name, state| {
        let vm_id = if vm_id.is_empty() {
            state.settings.vm_id.clone()
        } else {
            String::from_utf8_lossy(vm_id).into_owned()
        };
        let name = String::from_utf8_lossy(name);
        state
            .shared
            .queues()
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
            .map(|i| i as u32 + 1)
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?
    .ok_or(AbiError::Status(Status::NotFound))?;
    written(mem::write_u32(caller, token_ptr, token))
}

fn enqueue(caller: &mut Caller<'_, HostState>, token: u32, (ptr, len): (u32, u32)) -> AbiResult {
    let s = mem::with_bytes(caller, ptr, len, |data, state| {
        let mut queues = state.shared.queues();
        let Some(q) = token
            .checked_sub(1)
            .and_then(|i| queues.get_mut(i as usize))
        else {
            return Status::NotFound;
        };
        q.items.push_back(data.to_vec());
        drop(queues);
        if state.registered_queues.contains(&token) {
            let root = state.root_context_id;
            state.pending_queue_ready.push((root, token));
        }
        Status::Ok
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}

fn dequeue(
    caller: &mut Caller<'_, HostState>,
    token: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    let item = {
        let mut queues = caller.data().shared.queues();
        let q = token
            .checked_sub(1)
            .and_then(|i| queues.get_mut(i as usize))
            .ok_or(AbiError::Status(Status::NotFound))?;
        q.items.pop_front()
    };
    let item = item.ok_or(AbiError::Status(Status::Empty))?;
    written(mem::copy_out(caller, &item, ptr_ptr, size_ptr)?)
}
