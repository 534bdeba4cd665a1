//! gRPC: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`, `proxy_get_status`.
//!
//! Calls and streams go to clusters the VM has a stub for
//! ([`GrpcClusterStub`], or a catch-all [`GrpcCallStub`] whose cluster is
//! empty); the answers and their order are described in
//! [`crate::callouts`]. As Envoy 1.40 (proxy-wasm-cpp-host `exports.cc` and
//! Envoy's `Context`, each status checked with Envoy 1.40): every pointer is
//! checked first (`InvalidMemoryAccess`); an unknown cluster is
//! `ParseFailure` (Envoy fails to parse the name as a `GrpcService` and
//! finds no such cluster); `proxy_grpc_send` on a token that is not a
//! stream's is `BadArgument`, on an unknown stream `NotFound`;
//! `proxy_grpc_close` and `proxy_grpc_cancel` on an http token are
//! `BadArgument`, on an unknown call or stream `NotFound`. An empty service
//! is a trap: Envoy 1.40 aborts the whole process on it (`panic: unset
//! oneof` in its gRPC client manager).
//!
//! [`GrpcCallStub`]: crate::state::GrpcCallStub
//! [`GrpcClusterStub`]: crate::callouts::GrpcClusterStub

use super::{AbiError, AbiResult, Status, memory as mem, pairs, to_guest, written};
use crate::callouts::{CalloutRecord, GrpcClusterStub, TokenError};
use crate::state::HostState;
use wasmtime::{Caller, Linker};

/// The stub answering a call to `cluster`'s `method` (`service/method`);
/// `None`: no such cluster. Stubs for that method win over stubs for any
/// method; several stubs answer the calls in turn (the last one repeats).
fn stub(state: &mut HostState, cluster: &str, method: &str) -> Option<GrpcClusterStub> {
    let settings = state.settings.clone();
    let of = |m: Option<&str>| -> Vec<&GrpcClusterStub> {
        settings
            .grpc_clusters
            .iter()
            .filter(|s| s.cluster == cluster && s.method.as_deref() == m)
            .collect()
    };
    let (key, stubs) = match of(Some(method)) {
        v if !v.is_empty() => (format!("grpc {cluster} {method}"), v),
        _ => (format!("grpc {cluster}"), of(None)),
    };
    if let Some(last) = stubs.len().checked_sub(1) {
        let n = state.answered_calls.entry(key).or_insert(0);
        let s = stubs[(*n).min(last)].clone();
        *n += 1;
        return Some(s);
    }
    state
        .settings
        .grpc_call_stubs
        .iter()
        .find(|s| s.cluster.is_empty() || s.cluster == cluster)
        .map(|s| crate::callouts::grpc_stub_from_call_stub(s, cluster))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn metadata(bytes: &[u8]) -> Vec<(String, String)> {
    pairs::decode(bytes)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (text(k).to_ascii_lowercase(), text(v)))
        .collect()
}

fn token_status(r: Result<(), TokenError>) -> AbiResult {
    r.map_err(|e| {
        AbiError::Status(match e {
            TokenError::WrongKind => Status::BadArgument,
            TokenError::Unknown => Status::NotFound,
        })
    })
}

/// What a gRPC call or stream asked for.
struct Opening {
    cluster: String,
    method: String,
    metadata: Vec<(String, String)>,
    message: Vec<u8>,
    timeout_ms: u32,
}

/// Records the opening and finds its stub; `Err` is the status to return
/// (`Err(Err(..))`: a trap).
/// The cluster, `service/method` and metadata of a call or stream, each read
/// from guest memory at its (pointer, length); no message, no timeout.
/// `None` when one is out of bounds.
fn read_target(
    caller: &Caller<'_, HostState>,
    service: (u32, u32),
    service_name: (u32, u32),
    method: (u32, u32),
    metadata_at: (u32, u32),
) -> Option<Opening> {
    let c = mem::read(caller, service.0, service.1)?;
    let n = mem::read(caller, service_name.0, service_name.1)?;
    let m = mem::read(caller, method.0, method.1)?;
    let md = mem::read(caller, metadata_at.0, metadata_at.1)?;
    Some(Opening {
        cluster: text(&c),
        method: format!("{}/{}", text(&n), text(&m)),
        metadata: metadata(&md),
        message: Vec::new(),
        timeout_ms: 0,
    })
}

fn open(
    state: &mut HostState,
    o: Opening,
    kind: &'static str,
) -> Result<GrpcClusterStub, AbiError> {
    let found = stub(state, &o.cluster, &o.method);
    let suffix = if kind == "grpc-stream" { " stream" } else { "" };
    state
        .callouts
        .push(format!("grpc {} {}{suffix}", o.cluster, o.method));
    state.outstanding.record(CalloutRecord {
        filter: String::new(),
        kind,
        cluster: o.cluster.clone(),
        headers: o.metadata,
        body: o.message,
        method: o.method,
        timeout_ms: o.timeout_ms,
        accepted: found.is_some() && !o.cluster.is_empty(),
    });
    if o.cluster.is_empty() {
        return Err(AbiError::Trap(wasmtime::Error::msg(format!(
            "{kind} call with an empty service: Envoy 1.40 aborts the process on it (panic: unset oneof)"
        ))));
    }
    found.ok_or_else(|| {
        super::warn_once(
            state,
            "grpc",
            &format!(
                "gRPC call to cluster `{}`: the harness knows no such cluster (give it a gRPC stub); answering ParseFailure like Envoy does for an unknown cluster",
                o.cluster
            ),
        );
        AbiError::Status(Status::ParseFailure)
    })
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
         timeout_ms: u32,
         token_ptr: u32| {
            let target = [
                (service_ptr, service_len),
                (service_name_ptr, service_name_len),
                (method_ptr, method_len),
                (metadata_ptr, metadata_len),
            ];
            to_guest(grpc_call(
                &mut caller,
                target,
                (message_ptr, message_len),
                timeout_ms,
                token_ptr,
            ))
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
         token_ptr: u32| {
            let target = [
                (service_ptr, service_len),
                (service_name_ptr, service_name_len),
                (method_ptr, method_len),
                (metadata_ptr, metadata_len),
            ];
            to_guest(grpc_stream(&mut caller, target, token_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut caller: Caller<'_, HostState>, token: u32, ptr: u32, len: u32, end: u32| {
            to_guest(grpc_send(&mut caller, token, (ptr, len), end != 0))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut caller: Caller<'_, HostState>, token: u32| {
            to_guest(token_status(
                caller.data_mut().outstanding.grpc_cancel(token),
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut caller: Caller<'_, HostState>, token: u32| {
            let state = caller.data_mut();
            let now = state.clock.monotonic;
            to_guest(token_status(state.outstanding.grpc_close(now, token)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>, code_ptr: u32, ptr_ptr: u32, size_ptr: u32| {
            to_guest(get_status(&mut caller, code_ptr, ptr_ptr, size_ptr))
        },
    )?;
    Ok(())
}

fn grpc_call(
    caller: &mut Caller<'_, HostState>,
    [service, service_name, method, metadata]: [(u32, u32); 4],
    (message_ptr, message_len): (u32, u32),
    timeout_ms: u32,
    token_ptr: u32,
) -> AbiResult {
    let (Some(target), Some(message)) = (
        read_target(caller, service, service_name, method, metadata),
        mem::read(caller, message_ptr, message_len),
    ) else {
        return Err(Status::InvalidMemoryAccess.into());
    };
    let opening = Opening {
        message,
        timeout_ms,
        ..target
    };
    let state = caller.data_mut();
    let mut stub = open(state, opening, "grpc")?;
    stub.delay = state
        .settings
        .answer_timing
        .delay(stub.delay, state.stream.is_some());
    let now = state.clock.monotonic;
    let token = state.outstanding.grpc_call(now, &stub, timeout_ms);
    written(mem::write_u32(caller, token_ptr, token))
}

fn grpc_stream(
    caller: &mut Caller<'_, HostState>,
    [service, service_name, method, metadata]: [(u32, u32); 4],
    token_ptr: u32,
) -> AbiResult {
    let opening = read_target(caller, service, service_name, method, metadata)
        .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?;
    let state = caller.data_mut();
    let stub = open(state, opening, "grpc-stream")?;
    let now = state.clock.monotonic;
    let token = state.outstanding.grpc_stream(now, stub);
    written(mem::write_u32(caller, token_ptr, token))
}

fn grpc_send(
    caller: &mut Caller<'_, HostState>,
    token: u32,
    (ptr, len): (u32, u32),
    end: bool,
) -> AbiResult {
    if !mem::in_bounds(caller, &[(ptr, len)]) {
        return Err(Status::InvalidMemoryAccess.into());
    }
    let state = caller.data_mut();
    let now = state.clock.monotonic;
    token_status(state.outstanding.grpc_send(now, token, end))
}

fn get_status(
    caller: &mut Caller<'_, HostState>,
    code_ptr: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    let (code, message) = caller.data().grpc_status.clone();
    let ok = mem::write_u32(caller, code_ptr, code)
        && mem::copy_out(caller, message.as_bytes(), ptr_ptr, size_ptr)?;
    written(ok)
}
