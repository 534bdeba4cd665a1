//! Stream control: `proxy_continue_stream`, `proxy_close_stream`,
//! `proxy_send_local_response`, and ABI 0.1.0's `proxy_continue_request`,
//! `proxy_continue_response`, `proxy_clear_route_cache`.

use super::{Status, memory as mem, pairs};
use crate::state::{HostState, LocalResponse, LogLevel};
use wasmtime::{Caller, Linker};

const REQUEST: u32 = 0;
const RESPONSE: u32 = 1;
/// Highest stream type (`Upstream`).
const MAX_STREAM_TYPE: u32 = 3;

fn continue_stream(state: &mut HostState, kind: u32) -> Status {
    if kind > MAX_STREAM_TYPE {
        return Status::BadArgument;
    }
    let Some(stream) = state.stream_mut() else {
        // Envoy: a root context has no stream to continue; nothing happens.
        return Status::Ok;
    };
    match kind {
        REQUEST => stream.continued_request = true,
        RESPONSE => stream.continued_response = true,
        _ => return Status::BadArgument,
    }
    Status::Ok
}

/// Adds the stream control functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, kind: u32| -> u32 {
            continue_stream(caller.data_mut(), kind).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_request",
        |mut caller: Caller<'_, HostState>| -> u32 {
            continue_stream(caller.data_mut(), REQUEST).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_response",
        |mut caller: Caller<'_, HostState>| -> u32 {
            continue_stream(caller.data_mut(), RESPONSE).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, kind: u32| -> u32 {
            if kind > MAX_STREAM_TYPE {
                return Status::BadArgument.code();
            }
            if kind > RESPONSE {
                return Status::BadArgument.code();
            }
            if let Some(stream) = caller.data_mut().stream_mut() {
                stream.closed = true;
            }
            Status::Ok.code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_caller: Caller<'_, HostState>| -> u32 { Status::Ok.code() },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status: u32,
         details_ptr: u32,
         details_len: u32,
         body_ptr: u32,
         body_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         grpc_status: i32|
         -> u32 {
            let (Some(details), Some(body), Some(header_bytes)) = (
                mem::read(&caller, details_ptr, details_len),
                mem::read(&caller, body_ptr, body_len),
                mem::read(&caller, headers_ptr, headers_len),
            ) else {
                return Status::InvalidMemoryAccess.code();
            };
            let Some(headers) = pairs::decode(&header_bytes) else {
                return Status::BadArgument.code();
            };
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8_lossy(k).to_ascii_lowercase(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            let state = caller.data_mut();
            let Some(stream) = state.stream_mut() else {
                state.host_log(
                    LogLevel::Warn,
                    "proxy_send_local_response called outside an HTTP stream; ignored".into(),
                );
                return Status::Ok.code();
            };
            if stream.local_response.is_some() {
                state.host_log(
                    LogLevel::Warn,
                    "proxy_send_local_response called a second time for the same stream; ignored"
                        .into(),
                );
                return Status::Ok.code();
            }
            stream.local_response = Some(LocalResponse {
                status,
                details: String::from_utf8_lossy(&details).into_owned(),
                body,
                headers,
                grpc_status,
            });
            Status::Ok.code()
        },
    )?;
    Ok(())
}
