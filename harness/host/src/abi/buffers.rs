//! Buffers: `proxy_get_buffer_bytes`, `proxy_get_buffer_status`,
//! `proxy_set_buffer_bytes`, and ABI 0.1.0's `proxy_get_configuration`.
//!
//! Availability follows Envoy 1.40: a stream's bodies read in every callback
//! (empty outside their own body callback) and are written only in it,
//! the plugin configuration only while the root context is being
//! configured, the VM configuration always, the http call response body only
//! inside `proxy_on_http_call_response`. Configuration and call responses
//! are read-only (writes answer `BadArgument`).

use super::{AbiError, AbiResult, Status, memory as mem, status, to_guest, written};
use crate::state::{HostState, Phase};
use tollgate_abi::BufferType;
use wasmtime::{Caller, Linker};

/// The readable contents of a buffer, `None` when not available now.
fn buffer(state: &HostState, kind: BufferType) -> Option<&[u8]> {
    match kind {
        // Envoy 1.40 answers a stream's body in every callback: what its own
        // body callback holds then, empty (no allocation) at any other point.
        BufferType::HttpRequestBody => {
            let s = state.stream()?;
            Some(match s.phase {
                Phase::RequestBody => s.request_body.as_deref().unwrap_or(&[]),
                _ => &[],
            })
        }
        BufferType::HttpResponseBody => {
            let s = state.stream()?;
            Some(match s.phase {
                Phase::ResponseBody => s.response_body.as_deref().unwrap_or(&[]),
                _ => &[],
            })
        }
        BufferType::HttpCallResponseBody => state.http_call_response.as_ref().map(|r| &r.body[..]),
        BufferType::GrpcReceiveBuffer => state.grpc_receive.as_deref(),
        BufferType::VmConfiguration => Some(&state.settings.vm_config),
        BufferType::PluginConfiguration if state.in_configure => {
            Some(&state.settings.plugin_config)
        }
        _ => None,
    }
}

/// The writable contents of a buffer.
fn buffer_mut(state: &mut HostState, kind: BufferType) -> Result<&mut Vec<u8>, Status> {
    if buffer(state, kind).is_none() {
        return Err(Status::NotFound);
    }
    let mut stream = state.stream_mut();
    if let Some(s) = stream.as_deref_mut() {
        s.body_written = true;
    }
    // Writable only in its own body callback (Envoy: BadArgument elsewhere).
    match kind {
        BufferType::HttpRequestBody => stream
            .filter(|s| s.phase == Phase::RequestBody)
            .and_then(|s| s.request_body.as_mut())
            .ok_or(Status::BadArgument),
        BufferType::HttpResponseBody => stream
            .filter(|s| s.phase == Phase::ResponseBody)
            .and_then(|s| s.response_body.as_mut())
            .ok_or(Status::BadArgument),
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
         size_ptr: u32| {
            to_guest(get_buffer_bytes(
                &mut caller,
                kind,
                start,
                length,
                ptr_ptr,
                size_ptr,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Caller<'_, HostState>, kind: u32, length_ptr: u32, flags_ptr: u32| {
            to_guest(get_buffer_status(&mut caller, kind, length_ptr, flags_ptr))
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
         data_len: u32| {
            to_guest(set_buffer_bytes(
                &mut caller,
                kind,
                start,
                length,
                data_ptr,
                data_len,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut caller: Caller<'_, HostState>, ptr_ptr: u32, size_ptr: u32| {
            to_guest(get_configuration(&mut caller, ptr_ptr, size_ptr))
        },
    )?;
    Ok(())
}

/// The size of a buffer that exists now; `BadArgument` for an unknown type,
/// `NotFound` for a buffer not available at this point.
fn available(caller: &Caller<'_, HostState>, kind: u32) -> Result<(BufferType, usize), AbiError> {
    let kind = BufferType::try_from(kind).map_err(|_| AbiError::Status(Status::BadArgument))?;
    let size = buffer(caller.data(), kind)
        .map(<[u8]>::len)
        .ok_or(AbiError::Status(Status::NotFound))?;
    Ok((kind, size))
}

fn get_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    start: u32,
    length: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    let (kind, size) = available(caller, kind)?;
    let start = start as usize;
    let end = start.saturating_add(length as usize).min(size);
    let ok = if start >= end {
        mem::write_u32(caller, ptr_ptr, 0) && mem::write_u32(caller, size_ptr, 0)
    } else {
        mem::copy_out_from_state(
            caller,
            move |s| {
                buffer(s, kind)
                    .and_then(|b| b.get(start..end))
                    .unwrap_or(&[])
            },
            ptr_ptr,
            size_ptr,
        )?
    };
    written(ok)
}

fn get_buffer_status(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    length_ptr: u32,
    flags_ptr: u32,
) -> AbiResult {
    let (_, size) = available(caller, kind)?;
    written(mem::write_u32(caller, length_ptr, size as u32) && mem::write_u32(caller, flags_ptr, 0))
}

fn set_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    start: u32,
    length: u32,
    data_ptr: u32,
    data_len: u32,
) -> AbiResult {
    let (kind, _) = available(caller, kind)?;
    let s = mem::with_bytes(caller, data_ptr, data_len, |data, state| {
        match buffer_mut(state, kind) {
            Ok(buf) => splice(buf, start, length, data),
            Err(status) => status,
        }
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}

/// ABI 0.1.0: the plugin configuration, at any time.
fn get_configuration(caller: &mut Caller<'_, HostState>, ptr_ptr: u32, size_ptr: u32) -> AbiResult {
    let ok = mem::copy_out_from_state(caller, |s| &s.settings.plugin_config, ptr_ptr, size_ptr)?;
    written(ok)
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
