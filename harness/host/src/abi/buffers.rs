//! Buffers: `proxy_get_buffer_bytes`, `proxy_get_buffer_status`,
//! `proxy_set_buffer_bytes`, and ABI 0.1.0's `proxy_get_configuration`.
//!
//! Availability follows Envoy: bodies exist from their own callback on,
//! the plugin configuration only while the root context is being
//! configured, the VM configuration always, the http call response body only
//! inside `proxy_on_http_call_response`. Configuration and call responses
//! are read-only (writes answer `BadArgument`).

use super::{Status, memory as mem};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

const HTTP_REQUEST_BODY: u32 = 0;
const HTTP_RESPONSE_BODY: u32 = 1;
const HTTP_CALL_RESPONSE_BODY: u32 = 4;
const GRPC_RECEIVE_BUFFER: u32 = 5;
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;
/// Highest buffer type (`CallData`).
const MAX_BUFFER_TYPE: u32 = 8;

/// The readable contents of a buffer, `None` when not available now.
fn buffer(state: &HostState, kind: u32) -> Option<&[u8]> {
    match kind {
        HTTP_REQUEST_BODY => state.stream()?.request_body.as_deref(),
        HTTP_RESPONSE_BODY => state.stream()?.response_body.as_deref(),
        HTTP_CALL_RESPONSE_BODY => state.http_call_response.as_ref().map(|r| &r.body[..]),
        GRPC_RECEIVE_BUFFER => state.grpc_receive.as_deref(),
        VM_CONFIGURATION => Some(&state.settings.vm_config),
        PLUGIN_CONFIGURATION if state.in_configure => Some(&state.settings.plugin_config),
        _ => None,
    }
}

/// The writable contents of a buffer.
fn buffer_mut(state: &mut HostState, kind: u32) -> Result<&mut Vec<u8>, Status> {
    if buffer(state, kind).is_none() {
        return Err(Status::NotFound);
    }
    let stream = state.stream_mut();
    match kind {
        HTTP_REQUEST_BODY => stream
            .and_then(|s| s.request_body.as_mut())
            .ok_or(Status::NotFound),
        HTTP_RESPONSE_BODY => stream
            .and_then(|s| s.response_body.as_mut())
            .ok_or(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

/// Envoy's `Buffer::copyFrom`: `start == 0` replaces the first `length`
/// bytes with `data` (prepends when `length == 0`); `start >= size`
/// appends; anything else is `BadArgument`.
pub(crate) fn splice(buf: &mut Vec<u8>, start: u32, length: u32, data: &[u8]) -> Status {
    let (start, length) = (start as usize, length as usize);
    if start == 0 {
        let drained = length.min(buf.len());
        buf.splice(..drained, data.iter().copied());
        Status::Ok
    } else if start >= buf.len() {
        buf.extend_from_slice(data);
        Status::Ok
    } else {
        Status::BadArgument
    }
}

/// Adds the buffer functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         start: u32,
         length: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            if kind > MAX_BUFFER_TYPE {
                return Ok(Status::BadArgument.code());
            }
            let Some(size) = buffer(caller.data(), kind).map(<[u8]>::len) else {
                return Ok(Status::NotFound.code());
            };
            let start = start as usize;
            let end = start.saturating_add(length as usize).min(size);
            let ok = if start >= end {
                mem::write_u32(&mut caller, ptr_ptr, 0) && mem::write_u32(&mut caller, size_ptr, 0)
            } else {
                mem::copy_out_from_state(
                    &mut caller,
                    move |s| {
                        buffer(s, kind)
                            .and_then(|b| b.get(start..end))
                            .unwrap_or(&[])
                    },
                    ptr_ptr,
                    size_ptr,
                )?
            };
            Ok(Status::written(ok).code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Caller<'_, HostState>, kind: u32, length_ptr: u32, flags_ptr: u32| -> u32 {
            if kind > MAX_BUFFER_TYPE {
                return Status::BadArgument.code();
            }
            let Some(size) = buffer(caller.data(), kind).map(<[u8]>::len) else {
                return Status::NotFound.code();
            };
            Status::written(
                mem::write_u32(&mut caller, length_ptr, size as u32)
                    && mem::write_u32(&mut caller, flags_ptr, 0),
            )
            .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         start: u32,
         length: u32,
         data_ptr: u32,
         data_len: u32|
         -> u32 {
            if kind > MAX_BUFFER_TYPE {
                return Status::BadArgument.code();
            }
            if buffer(caller.data(), kind).is_none() {
                return Status::NotFound.code();
            }
            mem::with_bytes(
                &mut caller,
                data_ptr,
                data_len,
                |data, state| match buffer_mut(state, kind) {
                    Ok(buf) => splice(buf, start, length, data),
                    Err(status) => status,
                },
            )
            .unwrap_or(Status::InvalidMemoryAccess)
            .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut caller: Caller<'_, HostState>, ptr_ptr: u32, size_ptr: u32| -> wasmtime::Result<u32> {
            let ok = mem::copy_out_from_state(
                &mut caller,
                |s| &s.settings.plugin_config,
                ptr_ptr,
                size_ptr,
            )?;
            Ok(Status::written(ok).code())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_follows_envoy_rules() {
        let mut b = b"hello world".to_vec();
        assert_eq!(splice(&mut b, 0, 5, b"HOWDY"), Status::Ok);
        assert_eq!(b, b"HOWDY world");
        assert_eq!(splice(&mut b, 0, 0, b">"), Status::Ok, "prepend");
        assert_eq!(b, b">HOWDY world");
        assert_eq!(splice(&mut b, 12, 0, b"!"), Status::Ok, "append at size");
        assert_eq!(b, b">HOWDY world!");
        assert_eq!(splice(&mut b, 100, 3, b"?"), Status::Ok, "append past size");
        assert_eq!(b, b">HOWDY world!?");
        assert_eq!(splice(&mut b, 3, 1, b"x"), Status::BadArgument, "middle");
        assert_eq!(splice(&mut b, 0, 1000, b"all"), Status::Ok, "replace all");
        assert_eq!(b, b"all");
    }
}
