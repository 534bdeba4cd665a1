//! HTTP calls: `proxy_http_call`.
//!
//! The harness has no upstream clusters. With an [`HttpCallStub`]
//! configured, a well-formed call (`:method`, `:path`, `:authority` present)
//! gets a token and is answered with the stub through
//! `proxy_on_http_call_response`, on the context that made the call, right
//! after the current callback returns.
//! A replayed exchange may carry its own recorded answers
//! ([`ExchangeCallouts`]): the first one left for the call's cluster answers
//! it, before the stub. Without either the call fails with `BadArgument`,
//! which is what Envoy answers for an unknown cluster.
//!
//! [`HttpCallStub`]: crate::host::HttpCallStub
//! [`ExchangeCallouts`]: crate::host::ExchangeCallouts

use super::{Status, memory as mem, pairs};
use crate::host::{HostState, PendingHttpCall};
use wasmtime::{Caller, Linker};

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
         _timeout_ms: u32,
         token_ptr: u32|
         -> u32 {
            if !mem::in_bounds(
                &caller,
                &[(body_ptr, body_len), (trailers_ptr, trailers_len)],
            ) {
                return Status::InvalidMemoryAccess.code();
            }
            let (Some(cluster), Some(header_bytes)) = (
                mem::read(&caller, uri_ptr, uri_len),
                mem::read(&caller, headers_ptr, headers_len),
            ) else {
                return Status::InvalidMemoryAccess.code();
            };
            // Like Envoy, check the token pointer before starting anything.
            if !mem::write_u32(&mut caller, token_ptr, 0) {
                return Status::InvalidMemoryAccess.code();
            }
            let cluster = String::from_utf8_lossy(&cluster).into_owned();
            let state = caller.data_mut();
            if let Some(headers) = pairs::decode(&header_bytes) {
                let get = |name: &[u8]| {
                    headers
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                let line = format!("http {cluster} {} {}", get(b":method"), get(b":path"));
                state.callouts.push(line);
            }
            if state.settings.http_call_stub.is_none() && !state.exchange_callouts.has(&cluster) {
                super::warn_once(
                    state,
                    "http_call",
                    &format!(
                        "proxy_http_call to cluster `{cluster}`: the harness has no clusters and no http call stub; answering BadArgument like Envoy does for an unknown cluster"
                    ),
                );
                return Status::BadArgument.code();
            }
            let Some(headers) = pairs::decode(&header_bytes) else {
                return Status::BadArgument.code();
            };
            let has = |name: &[u8]| headers.iter().any(|(k, _)| *k == name);
            if !(has(b":method") && has(b":path") && has(b":authority")) {
                return Status::BadArgument.code();
            }
            // The exchange's recorded answer first, then the VM's stub.
            let stub = state.exchange_callouts.take(&cluster);
            let token = state.next_http_token;
            state.next_http_token = state.next_http_token.wrapping_add(1).max(1);
            // The answer goes to the context that made the call (Envoy keeps
            // the calling context with the request).
            let context = state.context();
            state.pending_http_calls.push(PendingHttpCall {
                token,
                context,
                stub,
            });
            Status::written(mem::write_u32(&mut caller, token_ptr, token)).code()
        },
    )?;
    Ok(())
}
