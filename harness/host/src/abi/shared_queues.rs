//! Shared queues: `proxy_register_shared_queue`, `proxy_resolve_shared_queue`,
//! `proxy_enqueue_shared_queue`, `proxy_dequeue_shared_queue`.
//!
//! Queues are shared by VMs of one plugin, named by `(vm_id, name)`; a token
//! is the queue's index plus one. Enqueueing onto a queue registered by this
//! VM schedules `proxy_on_queue_ready` on the registering root context after
//! the current callback (the harness does not notify other VMs).

use super::{Status, memory as mem};
use crate::state::{HostState, Queue};
use wasmtime::{Caller, Linker};

/// Adds the shared queue functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Caller<'_, HostState>, name_ptr: u32, name_len: u32, token_ptr: u32| -> u32 {
            let token = mem::with_bytes(&mut caller, name_ptr, name_len, |name, state| {
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
            });
            let Some(token) = token else {
                return Status::InvalidMemoryAccess.code();
            };
            Status::written(mem::write_u32(&mut caller, token_ptr, token)).code()
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
         token_ptr: u32|
         -> u32 {
            let token = mem::with_two(
                &mut caller,
                (vm_id_ptr, vm_id_len),
                (name_ptr, name_len),
                |vm_id, name, state| {
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
                },
            );
            match token {
                None => Status::InvalidMemoryAccess.code(),
                Some(None) => Status::NotFound.code(),
                Some(Some(t)) => Status::written(mem::write_u32(&mut caller, token_ptr, t)).code(),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut caller: Caller<'_, HostState>, token: u32, ptr: u32, len: u32| -> u32 {
            mem::with_bytes(&mut caller, ptr, len, |data, state| {
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
            .unwrap_or(Status::InvalidMemoryAccess)
            .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Caller<'_, HostState>,
         token: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let item = {
                let mut queues = caller.data().shared.queues();
                match token
                    .checked_sub(1)
                    .and_then(|i| queues.get_mut(i as usize))
                {
                    None => return Ok(Status::NotFound.code()),
                    Some(q) => q.items.pop_front(),
                }
            };
            let Some(item) = item else {
                return Ok(Status::Empty.code());
            };
            let ok = mem::copy_out(&mut caller, &item, ptr_ptr, size_ptr)?;
            Ok(Status::written(ok).code())
        },
    )?;
    Ok(())
}
