//! Header maps: `proxy_get_header_map_value`, `proxy_get_header_map_pairs`,
//! `proxy_set_header_map_pairs`, `proxy_get_header_map_size`,
//! `proxy_add_header_map_value`, `proxy_replace_header_map_value`,
//! `proxy_remove_header_map_value`.
//!
//! As in Envoy: names are lower-cased; a map that does not exist at this
//! point (response headers during the request, a stream map from the root
//! context, gRPC metadata outside a gRPC callback) answers `BadArgument`; a
//! missing header answers `NotFound` (ABI 0.1.0: an empty value); the size
//! is the map's byte size; an empty map's pairs are a null pointer and size 0.

use super::{Status, memory as mem, pairs};
use crate::host::{HeaderMap, HostState};
use crate::plugin::AbiVersion;
use wasmtime::{Caller, Linker};

const REQUEST_HEADERS: u32 = 0;
const REQUEST_TRAILERS: u32 = 1;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;
const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
/// Highest map type (`HttpCallResponseTrailers`).
const MAX_MAP_TYPE: u32 = 7;

fn map(state: &HostState, kind: u32) -> Option<&HeaderMap> {
    match kind {
        REQUEST_HEADERS => Some(&state.stream()?.request_headers),
        REQUEST_TRAILERS => Some(&state.stream()?.request_trailers),
        RESPONSE_HEADERS => state.stream()?.response_headers.as_ref(),
        RESPONSE_TRAILERS => {
            let s = state.stream()?;
            s.response_headers.as_ref().map(|_| &s.response_trailers)
        }
        HTTP_CALL_RESPONSE_HEADERS => state.http_call_response.as_ref().map(|r| &r.headers),
        HTTP_CALL_RESPONSE_TRAILERS => state.http_call_response.as_ref().map(|r| &r.trailers),
        _ => None,
    }
}

fn map_mut(state: &mut HostState, kind: u32) -> Option<&mut HeaderMap> {
    match kind {
        REQUEST_HEADERS => Some(&mut state.stream_mut()?.request_headers),
        REQUEST_TRAILERS => Some(&mut state.stream_mut()?.request_trailers),
        RESPONSE_HEADERS => state.stream_mut()?.response_headers.as_mut(),
        RESPONSE_TRAILERS => {
            let s = state.stream_mut()?;
            s.response_headers.as_ref()?;
            Some(&mut s.response_trailers)
        }
        // Http call responses are read-only in Envoy too (const maps).
        _ => None,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `proxy_add_header_map_value` / `proxy_replace_header_map_value`: applies
/// `edit` to the writable map `kind` with the guest's key and value.
fn edit_value(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    key: (u32, u32),
    value: (u32, u32),
    edit: fn(&mut HeaderMap, &str, &str),
) -> u32 {
    if kind > MAX_MAP_TYPE {
        return Status::BadArgument.code();
    }
    mem::with_two(caller, key, value, |k, v, state| {
        match map_mut(state, kind) {
            Some(m) => {
                edit(m, &text(k), &text(v));
                Status::Ok
            }
            None => Status::BadArgument,
        }
    })
    .unwrap_or(Status::InvalidMemoryAccess)
    .code()
}

/// Adds the header map functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         key_ptr: u32,
         key_len: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            if kind > MAX_MAP_TYPE {
                return Ok(Status::BadArgument.code());
            }
            let found = mem::with_bytes(&mut caller, key_ptr, key_len, |key, state| {
                let Some(m) = map(state, kind) else {
                    return Err(Status::BadArgument);
                };
                let key = String::from_utf8_lossy(key);
                match m.get(&key) {
                    Some(v) => Ok(v.to_string()),
                    None if state.abi == AbiVersion::V0_1_0 => Ok(String::new()),
                    None => Err(Status::NotFound),
                }
            });
            let value = match found {
                None => return Ok(Status::InvalidMemoryAccess.code()),
                Some(Err(status)) => return Ok(status.code()),
                Some(Ok(v)) => v,
            };
            let ok = mem::copy_out(&mut caller, value.as_bytes(), ptr_ptr, size_ptr)?;
            Ok(Status::written(ok).code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            if kind > MAX_MAP_TYPE {
                return Ok(Status::BadArgument.code());
            }
            let Some(m) = map(caller.data(), kind) else {
                return Ok(Status::BadArgument.code());
            };
            let bytes = if m.is_empty() {
                Vec::new()
            } else {
                pairs::encode(
                    m.entries()
                        .iter()
                        .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
                )
            };
            let ok = mem::copy_out(&mut caller, &bytes, ptr_ptr, size_ptr)?;
            Ok(Status::written(ok).code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, kind: u32, ptr: u32, len: u32| -> u32 {
            if kind > MAX_MAP_TYPE {
                return Status::BadArgument.code();
            }
            mem::with_bytes(&mut caller, ptr, len, |data, state| {
                let Some(m) = map_mut(state, kind) else {
                    return Status::BadArgument;
                };
                let Some(decoded) = pairs::decode(data) else {
                    return Status::BadArgument;
                };
                m.set_all(
                    decoded
                        .into_iter()
                        .map(|(k, v)| (text(k), text(v)))
                        .collect(),
                );
                Status::Ok
            })
            .unwrap_or(Status::InvalidMemoryAccess)
            .code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, kind: u32, out: u32| -> u32 {
            if kind > MAX_MAP_TYPE {
                return Status::BadArgument.code();
            }
            let Some(m) = map(caller.data(), kind) else {
                return Status::BadArgument.code();
            };
            // Envoy answers the map's byte size, not its entry count.
            let size: usize = m.entries().iter().map(|(k, v)| k.len() + v.len()).sum();
            Status::written(mem::write_u32(&mut caller, out, size as u32)).code()
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: u32, kp: u32, kl: u32, vp: u32, vl: u32| -> u32 {
            edit_value(&mut caller, kind, (kp, kl), (vp, vl), HeaderMap::add)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: u32, kp: u32, kl: u32, vp: u32, vl: u32| -> u32 {
            edit_value(&mut caller, kind, (kp, kl), (vp, vl), HeaderMap::replace)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: u32, key_ptr: u32, key_len: u32| -> u32 {
            if kind > MAX_MAP_TYPE {
                return Status::BadArgument.code();
            }
            mem::with_bytes(&mut caller, key_ptr, key_len, |k, state| {
                match map_mut(state, kind) {
                    Some(m) => {
                        m.remove(&String::from_utf8_lossy(k));
                        Status::Ok
                    }
                    None => Status::BadArgument,
                }
            })
            .unwrap_or(Status::InvalidMemoryAccess)
            .code()
        },
    )?;
    Ok(())
}
