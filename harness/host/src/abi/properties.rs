//! Properties: `proxy_get_property` and `proxy_set_property`.
//!
//! A path is its segments joined by NUL bytes (`request\0path`). Values are
//! encoded as Envoy encodes them: strings as raw bytes, integers, timestamps
//! and durations as 8-byte little-endian `i64` (nanoseconds for time), booleans
//! as one byte, maps (headers) in the pairs format. Stream attributes
//! (`request.*`, `response.*`, `source.*`, `destination.*`, `connection.*`,
//! `upstream.*`) exist only in a stream context; plugin attributes
//! (`plugin_name`, `plugin_root_id`, `plugin_vm_id`) and the node's
//! `xds.node.id` and `xds.node.cluster` ([`tollgate_abi::NODE`], what
//! `tollgate envoy`'s bootstrap gives Envoy) everywhere, the root context
//! included, as Envoy 1.40 answers them; its other `xds.node` fields and the
//! top-level `node` (`NotFound` in Envoy 1.40) are `NotFound`. Values in
//! [`VmSettings::properties`](crate::state::VmSettings::properties) (a test's
//! `properties:`) take precedence over the built-in ones, and an exchange's
//! own (a recording's `properties:`, `StreamState::properties`) over both. Values the
//! guest stored with `proxy_set_property` are returned for paths that are
//! not built in; anything else is `NotFound`.

use super::{AbiError, AbiResult, Status, memory as mem, pairs, to_guest, written};
use crate::state::{HeaderMap, HostState, Phase};
use wasmtime::{Caller, Linker};

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn port_of(addr: &str) -> Option<i64> {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn map_bytes(m: &HeaderMap) -> Vec<u8> {
    pairs::encode(
        m.entries()
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    )
}

fn headers_attr(m: &HeaderMap, rest: &[&str]) -> Option<Vec<u8>> {
    match rest {
        [] => Some(map_bytes(m)),
        [name] => m.get(name).map(|v| v.as_bytes().to_vec()),
        _ => None,
    }
}

/// Resolves a built-in property.
fn builtin(state: &HostState, path: &[&str]) -> Option<Vec<u8>> {
    let settings = &state.settings;
    match path {
        ["plugin_name"] => return Some(settings.plugin_name.clone().into_bytes()),
        ["plugin_root_id"] => return Some(settings.root_id.clone().into_bytes()),
        ["plugin_vm_id"] => return Some(settings.vm_id.clone().into_bytes()),
        ["xds", "node", "id"] => return Some(tollgate_abi::NODE.id.as_bytes().to_vec()),
        ["xds", "node", "cluster"] => return Some(tollgate_abi::NODE.cluster.as_bytes().to_vec()),
        _ => {}
    }
    let stream = state.stream()?;
    let req = &stream.request_headers;
    let header = |name: &str| req.get(name).map(|v| v.as_bytes().to_vec());
    match path {
        ["request", "path"] => header(":path"),
        ["request", "url_path"] => req
            .get(":path")
            .map(|p| p.split_once('?').map_or(p, |(a, _)| a).as_bytes().to_vec()),
        ["request", "query"] => req
            .get(":path")
            .map(|p| p.split_once('?').map_or("", |(_, q)| q).as_bytes().to_vec()),
        ["request", "host"] => header(":authority"),
        ["request", "scheme"] => header(":scheme"),
        ["request", "method"] => header(":method"),
        ["request", "referer"] => header("referer"),
        ["request", "useragent"] => header("user-agent"),
        ["request", "id"] => header("x-request-id"),
        ["request", "protocol"] => Some(b"HTTP/1.1".to_vec()),
        ["request", "time"] => Some(int(stream.start_unix_nanos as i64)),
        // Envoy knows the duration once the stream is complete: in the access log.
        ["request", "duration"] => (stream.phase == Phase::Finished)
            .then(|| int(state.clock.realtime.saturating_sub(stream.start_unix_nanos) as i64)),
        // Known (0) before any response, as in Envoy.
        ["response", "flags"] => Some(int(0)),
        ["response", "size"] | ["response", "total_size"] => Some(int(stream
            .response_body
            .as_ref()
            .filter(|_| stream.response_headers.is_some())
            .map_or(0, Vec::len)
            as i64)),
        ["request", "size"] | ["request", "total_size"] => Some(int(stream.request_size as i64)),
        ["request", "headers", rest @ ..] => headers_attr(req, rest),
        ["request", "trailers", rest @ ..] => headers_attr(&stream.request_trailers, rest),
        // A stream that ended without a response: the harness's stream was
        // held until the client gave up (Envoy 1.40's details for that).
        ["response", "code_details"]
            if stream.phase == Phase::Finished
                && stream.response_headers.is_none()
                && !stream.closed =>
        {
            Some(b"downstream_remote_disconnect".to_vec())
        }
        ["response", rest @ ..] => {
            let resp = stream.response_headers.as_ref()?;
            match rest {
                ["code"] => resp.get(":status").and_then(|s| s.parse().ok()).map(int),
                ["code_details"] => Some(
                    stream
                        .local_response
                        .as_ref()
                        .map_or("via_upstream", |l| l.details.as_str())
                        .as_bytes()
                        .to_vec(),
                ),
                ["headers", rest @ ..] => headers_attr(resp, rest),
                ["trailers", rest @ ..] => headers_attr(&stream.response_trailers, rest),
                _ => None,
            }
        }
        ["source", "address"] => Some(settings.source_address.clone().into_bytes()),
        ["source", "port"] => port_of(&settings.source_address).map(int),
        ["destination", "address"] => Some(settings.destination_address.clone().into_bytes()),
        ["destination", "port"] => port_of(&settings.destination_address).map(int),
        ["connection", "mtls"] => Some(vec![0]),
        ["connection", "id"] => Some(int(i64::from(stream.id))),
        ["connection", "requested_server_name"] => Some(Vec::new()),
        // The matched route's name: Envoy answers it (empty for an unnamed
        // route) whenever a route matched; the harness has no routes, so an
        // unnamed one unless the settings' properties name it.
        ["xds", "route_name"] => Some(Vec::new()),
        _ => None,
    }
}

/// Adds the property functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_len: u32,
         ptr_ptr: u32,
         size_ptr: u32| {
            to_guest(get_property(
                &mut caller,
                (path_ptr, path_len),
                ptr_ptr,
                size_ptr,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_len: u32,
         value_ptr: u32,
         value_len: u32| {
            to_guest(set_property(
                &mut caller,
                (key_ptr, key_len),
                (value_ptr, value_len),
            ))
        },
    )?;
    Ok(())
}

fn get_property(
    caller: &mut Caller<'_, HostState>,
    (path_ptr, path_len): (u32, u32),
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    let value = mem::with_bytes(caller, path_ptr, path_len, |path, state| {
        let text = String::from_utf8_lossy(path);
        let segments: Vec<&str> = text.split('\0').collect();
        // Values given in the settings win over the built-in ones.
        let dotted = segments.join(".");
        let exchange = state
            .stream()
            .and_then(|s| s.properties.iter().find(|(p, _)| *p == dotted));
        let given =
            exchange.or_else(|| state.settings.properties.iter().find(|(p, _)| *p == dotted));
        given
            .map(|(_, v)| v.clone())
            .or_else(|| builtin(state, &segments))
            .or_else(|| state.properties.get(path).cloned())
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?
    .ok_or(AbiError::Status(Status::NotFound))?;
    written(mem::copy_out(caller, &value, ptr_ptr, size_ptr)?)
}

fn set_property(
    caller: &mut Caller<'_, HostState>,
    key: (u32, u32),
    value: (u32, u32),
) -> AbiResult {
    mem::with_two(caller, key, value, |k, v, state| {
        state.properties.insert(k.to_vec(), v.to_vec());
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))
}
