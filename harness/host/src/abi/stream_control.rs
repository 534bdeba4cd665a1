//! Stream control: `proxy_continue_stream`, `proxy_close_stream`,
//! `proxy_send_local_response`, and ABI 0.1.0's `proxy_continue_request`,
//! `proxy_continue_response`, `proxy_clear_route_cache`.

use super::{AbiError, AbiResult, Status, memory as mem, pairs, to_guest};
use crate::state::{HostState, LocalResponse, LogLevel};
use wasmtime::{Caller, Linker};

const REQUEST: u32 = 0;
const RESPONSE: u32 = 1;
/// Highest stream type (`Upstream`).
const MAX_STREAM_TYPE: u32 = 3;

fn continue_stream(state: &mut HostState, kind: u32) -> AbiResult {
    if kind > MAX_STREAM_TYPE {
        return Err(Status::BadArgument.into());
    }
    let Some(stream) = state.stream_mut() else {
        // Envoy: a root context has no stream to continue; nothing happens.
        return Ok(());
    };
    match kind {
        REQUEST => stream.continued_request = true,
        RESPONSE => stream.continued_response = true,
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn close_stream(state: &mut HostState, kind: u32) -> AbiResult {
    // Stream types past the response (downstream, upstream) are TCP's.
    if kind > RESPONSE {
        return Err(Status::BadArgument.into());
    }
    if let Some(stream) = state.stream_mut() {
        stream.closed = true;
    }
    Ok(())
}

/// Adds the stream control functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, kind: u32| {
            to_guest(continue_stream(caller.data_mut(), kind))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_request",
        |mut caller: Caller<'_, HostState>| to_guest(continue_stream(caller.data_mut(), REQUEST)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_response",
        |mut caller: Caller<'_, HostState>| to_guest(continue_stream(caller.data_mut(), RESPONSE)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, kind: u32| {
            to_guest(close_stream(caller.data_mut(), kind))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_caller: Caller<'_, HostState>| to_guest(Ok(())),
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
         grpc_status: i32| {
            to_guest(send_local_response(
                &mut caller,
                status,
                (details_ptr, details_len),
                (body_ptr, body_len),
                (headers_ptr, headers_len),
                grpc_status,
            ))
        },
    )?;
    Ok(())
}

fn send_local_response(
    caller: &mut Caller<'_, HostState>,
    status: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers: (u32, u32),
    grpc_status: i32,
) -> AbiResult {
    let (Some(details), Some(body), Some(header_bytes)) = (
        mem::read(caller, details.0, details.1),
        mem::read(caller, body.0, body.1),
        mem::read(caller, headers.0, headers.1),
    ) else {
        return Err(Status::InvalidMemoryAccess.into());
    };
    let headers = pairs::decode(&header_bytes).ok_or(AbiError::Status(Status::BadArgument))?;
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
        return Ok(());
    };
    if stream.local_response.is_some() && !stream.local_response_taken {
        state.host_log(
            LogLevel::Warn,
            "proxy_send_local_response called a second time in one callback; ignored".into(),
        );
        return Ok(());
    }
    stream.local_response_taken = false;
    stream.local_response = Some(LocalResponse {
        status,
        details: String::from_utf8_lossy(&details).into_owned(),
        body,
        headers,
        grpc_status,
    });
    Ok(())
}
