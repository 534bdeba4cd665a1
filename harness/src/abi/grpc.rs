//! gRPC: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`, `proxy_get_status`.
//!
//! Unary calls to a cluster with a [`GrpcCallStub`] get an odd token (as
//! Envoy's call tokens) and are answered after the current callback:
//! status 0 through `proxy_on_grpc_receive` (the message readable as the
//! `GrpcReceiveBuffer`), any other status through `proxy_on_grpc_close`
//! (status and message from `proxy_get_status`). Calls without a stub and
//! streams are validated and refused with `BadArgument` (Envoy's answer for
//! an unknown service cluster), with a warning logged the first time;
//! stream tokens are never valid (`NotFound`).
//!
//! [`GrpcCallStub`]: crate::host::GrpcCallStub

use super::{Status, memory as mem};
use crate::host::HostState;
use wasmtime::{Caller, Linker};

fn refuse(caller: &mut Caller<'_, HostState>, ranges: &[(u32, u32)], token_ptr: u32) -> u32 {
    if !mem::in_bounds(caller, ranges) || !mem::in_bounds(caller, &[(token_ptr, 4)]) {
        return Status::InvalidMemoryAccess.code();
    }
    super::warn_once(
        caller.data_mut(),
        "grpc",
        "gRPC calls are not supported by the harness; answering BadArgument (no such service)",
    );
    Status::BadArgument.code()
}

/// Adds the gRPC functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut caller: Caller<'_, HostState>,
         service_ptr: u32,
         service_len: u32,
         service_name_ptr: u32,
         service_name_len: u32,
         method_ptr: u32,
         method_len: u32,
         metadata_ptr: u32,
         metadata_len: u32,
         message_ptr: u32,
         message_len: u32,
         _timeout_ms: u32,
         token_ptr: u32|
         -> u32 {
            if let (Some(c), Some(n), Some(m)) = (
                mem::read(&caller, service_ptr, service_len),
                mem::read(&caller, service_name_ptr, service_name_len),
                mem::read(&caller, method_ptr, method_len),
            ) {
                let line = format!(
                    "grpc {} {}/{}",
                    String::from_utf8_lossy(&c),
                    String::from_utf8_lossy(&n),
                    String::from_utf8_lossy(&m)
                );
                caller.data_mut().callouts.push(line);
            }
            let stub = mem::read(&caller, service_ptr, service_len).and_then(|service| {
                let cluster = String::from_utf8_lossy(&service).into_owned();
                caller
                    .data()
                    .settings
                    .grpc_call_stubs
                    .iter()
                    .position(|s| s.cluster.is_empty() || s.cluster == cluster)
            });
            if let Some(stub) = stub {
                if !mem::in_bounds(
                    &caller,
                    &[
                        (service_name_ptr, service_name_len),
                        (method_ptr, method_len),
                        (metadata_ptr, metadata_len),
                        (message_ptr, message_len),
                    ],
                ) {
                    return Status::InvalidMemoryAccess.code();
                }
                let state = caller.data_mut();
                let token = state.next_grpc_token;
                state.next_grpc_token = state.next_grpc_token.wrapping_add(2) | 1;
                let context = state.context();
                state.pending_grpc_calls.push((token, context, stub));
                return Status::written(mem::write_u32(&mut caller, token_ptr, token)).code();
            }
            refuse(
                &mut caller,
                &[
                    (service_ptr, service_len),
                    (service_name_ptr, service_name_len),
                    (method_ptr, method_len),
                    (metadata_ptr, metadata_len),
                    (message_ptr, message_len),
                ],
                token_ptr,
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut caller: Caller<'_, HostState>,
         service_ptr: u32,
         service_len: u32,
         service_name_ptr: u32,
         service_name_len: u32,
         method_ptr: u32,
         method_len: u32,
         metadata_ptr: u32,
         metadata_len: u32,
         token_ptr: u32|
         -> u32 {
            refuse(
                &mut caller,
                &[
                    (service_ptr, service_len),
                    (service_name_ptr, service_name_len),
                    (method_ptr, method_len),
                    (metadata_ptr, metadata_len),
                ],
                token_ptr,
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |caller: Caller<'_, HostState>, _token: u32, ptr: u32, len: u32, _end: u32| -> u32 {
            if !mem::in_bounds(&caller, &[(ptr, len)]) {
                return Status::InvalidMemoryAccess.code();
            }
            Status::NotFound.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_caller: Caller<'_, HostState>, _token: u32| -> u32 { Status::NotFound.code() },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |_caller: Caller<'_, HostState>, _token: u32| -> u32 { Status::NotFound.code() },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>,
         code_ptr: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let (code, message) = caller.data().grpc_status.clone();
            let ok = mem::write_u32(&mut caller, code_ptr, code)
                && mem::copy_out(&mut caller, message.as_bytes(), ptr_ptr, size_ptr)?;
            Ok(Status::written(ok).code())
        },
    )?;
    Ok(())
}
