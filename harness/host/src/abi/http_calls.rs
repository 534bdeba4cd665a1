//! HTTP calls: `proxy_http_call`.
//!
//! The harness has no upstream clusters. A call is answered, in this order
//! of precedence, by: the replayed exchange's own recorded answer for the
//! cluster ([`ExchangeCallouts`], taken in order), the VM's per-cluster stub
//! ([`HttpClusterStub`]: a response, a reset or a connection failure, after
//! a delay of virtual time), the catch-all [`HttpCallStub`]. A call to a
//! cluster none of them knows fails with `BadArgument`, as Envoy answers for
//! an unknown cluster (a warning is logged the first time); so does a call
//! without `:method`, `:path` or `:authority` (checked after the cluster,
//! as Envoy does). Tokens, delivery (to the root context, as
//! proxy-wasm-cpp-host does), delays and timeouts are described in
//! [`crate::callouts`].
//!
//! [`HttpCallStub`]: crate::state::HttpCallStub
//! [`HttpClusterStub`]: crate::callouts::HttpClusterStub
//! [`ExchangeCallouts`]: crate::state::ExchangeCallouts

use super::{AbiResult, Status, memory as mem, pairs, to_guest, written};
use crate::callouts::{CalloutRecord, Event, http_event};
use crate::state::{HeaderMap, HostState, HttpCallResponse, HttpCallStub};
use std::time::Duration;
use wasmtime::{Caller, Linker};

/// The longest timeout Envoy 1.40 accepts for an http call, in ms (a larger
/// one is `BadArgument`).
const MAX_TIMEOUT_MS: u32 = i32::MAX as u32;

/// The event answering an [`HttpCallStub`] (its headers as given, `:status`
/// included; a repeated inline header folded, as Envoy's codec does).
fn stub_event(stub: HttpCallStub) -> Event {
    Event::HttpResponse(HttpCallResponse {
        headers: HeaderMap::from_pairs(super::fold_inline(stub.headers, super::RESPONSE_INLINE)),
        body: stub.body,
        trailers: HeaderMap::default(),
    })
}

/// The answer for a call to `cluster`, with its delay; `None`: unknown
/// cluster. Several stubs for one cluster answer its calls in turn (the last
/// one repeats).
fn answer(state: &mut HostState, cluster: &str) -> Option<(Event, Duration)> {
    let timing = state.settings.answer_timing;
    let in_stream = state.stream.is_some();
    let delay = |d: Duration| timing.delay(d, in_stream);
    if let Some(stub) = state.exchange_callouts.take(cluster) {
        return Some((stub_event(stub), delay(Duration::ZERO)));
    }
    let settings = state.settings.clone();
    let stubs: Vec<_> = settings
        .http_clusters
        .iter()
        .filter(|s| s.cluster == cluster)
        .collect();
    if let Some(last) = stubs.len().checked_sub(1) {
        let n = state
            .answered_calls
            .entry(format!("http {cluster}"))
            .or_insert(0);
        let s = stubs[(*n).min(last)];
        *n += 1;
        return Some((http_event(&s.answer), delay(s.delay)));
    }
    let stub = state.settings.http_call_stub.clone()?;
    Some((stub_event(stub), delay(Duration::ZERO)))
}

/// Whether a call to `cluster` would be answered (without taking a recorded answer).
fn known(state: &HostState, cluster: &str) -> bool {
    state.exchange_callouts.has(cluster)
        || state
            .settings
            .http_clusters
            .iter()
            .any(|s| s.cluster == cluster)
        || state.settings.http_call_stub.is_some()
}

/// Adds `proxy_http_call`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         uri_ptr: u32,
         uri_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         body_ptr: u32,
         body_len: u32,
         trailers_ptr: u32,
         trailers_len: u32,
         timeout_ms: u32,
         token_ptr: u32| {
            to_guest(http_call(
                &mut caller,
                (uri_ptr, uri_len),
                (headers_ptr, headers_len),
                (body_ptr, body_len),
                (trailers_ptr, trailers_len),
                timeout_ms,
                token_ptr,
            ))
        },
    )?;
    Ok(())
}

fn http_call(
    caller: &mut Caller<'_, HostState>,
    (uri_ptr, uri_len): (u32, u32),
    (headers_ptr, headers_len): (u32, u32),
    (body_ptr, body_len): (u32, u32),
    (trailers_ptr, trailers_len): (u32, u32),
    timeout_ms: u32,
    token_ptr: u32,
) -> AbiResult {
    if !mem::in_bounds(caller, &[(trailers_ptr, trailers_len)]) {
        return Err(Status::InvalidMemoryAccess.into());
    }
    let (Some(cluster), Some(header_bytes), Some(body)) = (
        mem::read(caller, uri_ptr, uri_len),
        mem::read(caller, headers_ptr, headers_len),
        mem::read(caller, body_ptr, body_len),
    ) else {
        return Err(Status::InvalidMemoryAccess.into());
    };
    // Like Envoy, check the token pointer before starting anything.
    if !mem::write_u32(caller, token_ptr, 0) {
        return Err(Status::InvalidMemoryAccess.into());
    }
    let cluster = String::from_utf8_lossy(&cluster).into_owned();
    let headers: Vec<(String, String)> = pairs::decode(&header_bytes)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).to_ascii_lowercase(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let state = caller.data_mut();
    state.callouts.push(format!(
        "http {cluster} {} {}",
        get(":method").map_or("", String::as_str),
        get(":path").map_or("", String::as_str)
    ));
    // Envoy 1.40 takes `host` for a missing `:authority`, and refuses a
    // timeout past `i32::MAX` ms (both checked by `callout_parity`).
    let well_formed = get(":method").is_some()
        && get(":path").is_some()
        && (get(":authority").is_some() || get("host").is_some())
        && timeout_ms <= MAX_TIMEOUT_MS;
    let accepted = known(state, &cluster) && well_formed;
    state.outstanding.record(CalloutRecord {
        filter: String::new(),
        kind: "http",
        cluster: cluster.clone(),
        headers: headers.clone(),
        body,
        method: String::new(),
        timeout_ms,
        accepted,
    });
    if !known(state, &cluster) {
        super::warn_once(
            state,
            "http_call",
            &format!(
                "proxy_http_call to cluster `{cluster}`: the harness knows no such cluster (give it a stub); answering BadArgument like Envoy does for an unknown cluster"
            ),
        );
        return Err(Status::BadArgument.into());
    }
    if !well_formed {
        return Err(Status::BadArgument.into());
    }
    let Some((event, delay)) = answer(state, &cluster) else {
        return Err(Status::BadArgument.into());
    };
    let now = state.clock.monotonic;
    let token = state
        .outstanding
        .http_call_with(now, event, delay, timeout_ms);
    written(mem::write_u32(caller, token_ptr, token))
}
