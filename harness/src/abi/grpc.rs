//! gRPC: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`, `proxy_get_status`.
//!
//! Linked so that modules using gRPC load, but the harness has no gRPC
//! services: calls and streams are validated and then refused with
//! `BadArgument` (Envoy's answer for an unknown service cluster), with a
//! warning logged the first time; tokens are never valid (`NotFound`).

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
            // No gRPC call ever completes here: status 0 with an empty message.
            let ok = mem::write_u32(&mut caller, code_ptr, 0)
                && mem::copy_out(&mut caller, b"", ptr_ptr, size_ptr)?;
            Ok(if ok {
                Status::Ok
            } else {
                Status::InvalidMemoryAccess
            }
            .code())
        },
    )?;
    Ok(())
}
