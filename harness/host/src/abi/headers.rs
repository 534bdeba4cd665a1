//! Header maps: `proxy_get_header_map_value`, `proxy_get_header_map_pairs`,
//! `proxy_set_header_map_pairs`, `proxy_get_header_map_size`,
//! `proxy_add_header_map_value`, `proxy_replace_header_map_value`,
//! `proxy_remove_header_map_value`.
//!
//! As in Envoy: names are lower-cased; a map that does not exist at this
//! point (response headers during the request, a stream map from the root
//! context, gRPC metadata outside a gRPC callback, trailers not received,
//! an http call's response outside its callback) answers `BadArgument`,
//! except its pairs, which are an empty map (`Ok`); a missing header answers
//! `NotFound` (ABI 0.1.0: an empty value); the size is the map's byte size
//! (`BadArgument` for an http call's response, which Envoy only reads); an
//! empty map's pairs are a null pointer and size 0. Checked against Envoy
//! 1.40 by `tests/tests/it/callout_parity.rs`.
//!
//! Phases, as Envoy 1.40 (checked by `trace_diff`'s phase guest, every map
//! in every callback, `harness/docs/fidelity.md`): a filter holds a stream's
//! headers until its headers callback returns Continue; after that they
//! do not exist for it (read or write: `BadArgument`) until the access log
//! (`on_log`), which reads the request headers and the response headers and
//! trailers as they ended (a map it has not, no response or the request
//! trailers, is a missing header: `NotFound`) but writes only maps the
//! filter still holds (a request paused for good, trailers). Trailers are
//! created by a write in the last body callback of their direction.
//!
//! Envoy keeps some headers "inline" (a fixed slot per name, listed in its
//! startup log as `request header map: ... bytes: :authority,...`): adding a
//! value to an inline header that is present appends it to the one value,
//! comma-separated, instead of adding an entry. Its HTTP/1 codec adds the
//! headers it receives the same way, so a request with two `authorization`
//! lines reaches the filter (and the upstream) as one `authorization: a,b`,
//! and a filter's `proxy_add_header_map_value("via", ..)` on a request that
//! has `via` extends that value. [`fold_inline`] and the add below do the
//! same, with Envoy 1.40's lists ([`REQUEST_INLINE`], [`RESPONSE_INLINE`],
//! [`RESPONSE_TRAILERS_INLINE`]; request trailers have none).

use super::{AbiError, AbiResult, Status, memory as mem, pairs, status, to_guest, written};
use crate::plugin::AbiVersion;
use crate::state::{HeaderMap, HostState, Phase};
use std::borrow::Cow;
use tollgate_abi::MapType;
use wasmtime::{Caller, Linker};

/// Envoy 1.40's inline request headers (from its startup log).
pub(crate) const REQUEST_INLINE: &[&str] = &[
    ":authority",
    ":method",
    ":path",
    ":protocol",
    ":scheme",
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "access-control-request-private-network",
    "authentication",
    "authorization",
    "cache-control",
    "cdn-loop",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "grpc-accept-encoding",
    "grpc-timeout",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "origin",
    "pragma",
    "proxy-connection",
    "proxy-status",
    "referer",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-is-timeout-retry",
    "x-envoy-max-retries",
    "x-envoy-original-host",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-envoy-retriable-header-names",
    "x-envoy-retriable-status-codes",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-request-id",
];

/// Envoy 1.40's inline response headers (from its startup log).
pub(crate) const RESPONSE_INLINE: &[&str] = &[
    ":status",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "access-control-allow-private-network",
    "access-control-expose-headers",
    "access-control-max-age",
    "age",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "etag",
    "expires",
    "grpc-message",
    "grpc-status",
    "keep-alive",
    "last-modified",
    "location",
    "proxy-connection",
    "proxy-status",
    "server",
    "transfer-encoding",
    "upgrade",
    "vary",
    "via",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-degraded",
    "x-envoy-immediate-health-check-fail",
    "x-envoy-ratelimited",
    "x-envoy-upstream-canary",
    "x-envoy-upstream-healthchecked-cluster",
    "x-envoy-upstream-service-time",
    "x-request-id",
];

/// Envoy 1.40's inline response trailers.
pub(crate) const RESPONSE_TRAILERS_INLINE: &[&str] = &["grpc-message", "grpc-status"];

/// The inline names of map `kind` (empty for maps with none).
fn inline_names(kind: MapType) -> &'static [&'static str] {
    match kind {
        MapType::RequestHeaders => REQUEST_INLINE,
        MapType::ResponseHeaders | MapType::HttpCallResponseHeaders => RESPONSE_INLINE,
        MapType::ResponseTrailers | MapType::HttpCallResponseTrailers => RESPONSE_TRAILERS_INLINE,
        _ => &[],
    }
}

/// Adds `value` to `map` as Envoy's header map does: appended to the value
/// of an inline header already present (`,`-separated), else a new entry.
fn envoy_add(map: &mut HeaderMap, inline: &[&str], name: &str, value: &str) {
    // Names from guests are lower-case already, as a rule: no copy then.
    let lower: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    match map.get(&lower) {
        Some(existing) if inline.contains(&&*lower) => {
            let joined = if existing.is_empty() {
                value.to_string()
            } else if value.is_empty() {
                existing.to_string()
            } else {
                format!("{existing},{value}")
            };
            map.replace(&lower, &joined);
        }
        _ => map.add(&lower, value),
    }
}

/// Folds `pairs` as Envoy's codec builds a map of `inline` names: the values
/// of a repeated inline header joined into its first entry with `,`; other
/// names keep every entry.
pub(crate) fn fold_inline(pairs: Vec<(String, String)>, inline: &[&str]) -> Vec<(String, String)> {
    // Cheap when nothing repeats (the usual case): no allocation, no lookup.
    let repeated = pairs.iter().enumerate().any(|(i, (k, _))| {
        pairs[..i].iter().any(|(p, _)| p.eq_ignore_ascii_case(k))
            && inline.iter().any(|n| n.eq_ignore_ascii_case(k))
    });
    if !repeated {
        return pairs;
    }
    let mut map = HeaderMap::default();
    for (k, v) in &pairs {
        envoy_add(&mut map, inline, k, v);
    }
    map.entries().to_vec()
}

/// The map `kind` as a read finds it now (Envoy's `getConstMap`); `None`
/// when it does not exist at this point.
fn map(state: &HostState, kind: MapType) -> Option<&HeaderMap> {
    let finished = state.stream().is_some_and(|s| s.phase == Phase::Finished);
    match kind {
        // The access log reads the request headers as they ended; before,
        // Envoy holds them only until the headers callback returned Continue.
        MapType::RequestHeaders => {
            let s = state.stream()?;
            (finished || s.request_headers_open).then_some(&s.request_headers)
        }
        // Trailers exist once received (Envoy: a null map before, BadArgument);
        // the access log has no request trailers.
        MapType::RequestTrailers => {
            let s = state.stream()?;
            Some(&s.request_trailers).filter(|m| !finished && !m.is_empty())
        }
        MapType::ResponseHeaders => {
            let s = state.stream()?;
            if finished || s.response_headers_open {
                s.response_headers.as_ref()
            } else {
                None
            }
        }
        MapType::ResponseTrailers => {
            let s = state.stream()?;
            s.response_headers.as_ref()?;
            Some(&s.response_trailers).filter(|m| !m.is_empty())
        }
        MapType::GrpcReceiveInitialMetadata => state.grpc_initial_metadata.as_ref(),
        MapType::GrpcReceiveTrailingMetadata => state.grpc_trailing_metadata.as_ref(),
        MapType::HttpCallResponseHeaders => state.http_call_response.as_ref().map(|r| &r.headers),
        MapType::HttpCallResponseTrailers => state
            .http_call_response
            .as_ref()
            .map(|r| &r.trailers)
            .filter(|m| !m.is_empty()),
    }
}

/// The map `kind` as a write (or `proxy_get_header_map_size`) finds it now
/// (Envoy's `getMap`, which knows no access-log phase: a map still held is
/// writable in `on_log` too).
fn map_mut(state: &mut HostState, kind: MapType) -> Option<&mut HeaderMap> {
    match kind {
        MapType::RequestHeaders => {
            let s = state.stream_mut()?;
            s.request_headers_open.then_some(&mut s.request_headers)
        }
        // Writable once received, or created by a write in the last body
        // callback (the one carrying the end of stream), as Envoy does.
        MapType::RequestTrailers => {
            let s = state.stream_mut()?;
            (!s.request_trailers.is_empty() || (s.phase == Phase::RequestBody && s.end_of_stream))
                .then_some(&mut s.request_trailers)
        }
        MapType::ResponseHeaders => {
            let s = state.stream_mut()?;
            if s.response_headers_open {
                s.response_headers.as_mut()
            } else {
                None
            }
        }
        MapType::ResponseTrailers => {
            let s = state.stream_mut()?;
            s.response_headers.as_ref()?;
            (!s.response_trailers.is_empty() || (s.phase == Phase::ResponseBody && s.end_of_stream))
                .then_some(&mut s.response_trailers)
        }
        // Http call responses are read-only in Envoy too (const maps).
        _ => None,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value of entry `index` of map `kind` (empty when it is gone).
fn value_at(state: &HostState, kind: MapType, index: usize) -> &[u8] {
    map(state, kind)
        .and_then(|m| m.entries().get(index))
        .map_or(&[], |(_, v)| v.as_bytes())
}

/// The map type a call names; `BadArgument` when it names none.
fn map_type(kind: u32) -> Result<MapType, AbiError> {
    MapType::try_from(kind).map_err(|_| AbiError::Status(Status::BadArgument))
}

/// Adds the header map functions.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         kp: u32,
         kl: u32,
         ptr_ptr: u32,
         size_ptr: u32| {
            to_guest(get_value(&mut caller, kind, (kp, kl), ptr_ptr, size_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, kind: u32, ptr_ptr: u32, size_ptr: u32| {
            to_guest(get_pairs(&mut caller, kind, ptr_ptr, size_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, kind: u32, ptr: u32, len: u32| {
            to_guest(set_pairs(&mut caller, kind, ptr, len))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, kind: u32, out: u32| {
            to_guest(get_size(&mut caller, kind, out))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            to_guest(edit_value(&mut caller, kind, (kp, kl), (vp, vl), envoy_add))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            to_guest(edit_value(
                &mut caller,
                kind,
                (kp, kl),
                (vp, vl),
                |m, _, k, v| m.replace(k, v),
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: u32, kp: u32, kl: u32| {
            to_guest(remove_value(&mut caller, kind, (kp, kl)))
        },
    )?;
    Ok(())
}

fn get_value(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    (key_ptr, key_len): (u32, u32),
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    let kind = map_type(kind)?;
    // The entry is found by position (a scan: header maps are small, no
    // hashing), then its value is copied straight from the map into the
    // guest's buffer (no intermediate copy).
    let found = mem::with_bytes(caller, key_ptr, key_len, |key, state| {
        let Some(m) = map(state, kind) else {
            // In the access log Envoy answers a map it has not (no response
            // came, request trailers) as a missing header; before, as a map
            // that does not exist now.
            return match state.stream() {
                Some(s) if s.phase == Phase::Finished => {
                    if state.abi == AbiVersion::V0_1_0 {
                        Ok(None)
                    } else {
                        Err(Status::NotFound)
                    }
                }
                _ => Err(Status::BadArgument),
            };
        };
        let key = String::from_utf8_lossy(key);
        match m
            .entries()
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(&key))
        {
            Some(i) => Ok(Some(i)),
            None if state.abi == AbiVersion::V0_1_0 => Ok(None),
            None => Err(Status::NotFound),
        }
    })
    .ok_or(AbiError::Status(Status::InvalidMemoryAccess))?;
    let ok = match found? {
        Some(i) => mem::copy_out_from_state(caller, |s| value_at(s, kind, i), ptr_ptr, size_ptr)?,
        // ABI 0.1.0: a missing header reads as an empty value.
        None => mem::copy_out(caller, &[], ptr_ptr, size_ptr)?,
    };
    written(ok)
}

fn get_pairs(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    ptr_ptr: u32,
    size_ptr: u32,
) -> AbiResult {
    let kind = map_type(kind)?;
    let Some(m) = map(caller.data(), kind) else {
        // A map that does not exist now (response headers during the
        // request, a reset call's response...): Envoy 1.40 answers an empty
        // map, Ok (its other calls: BadArgument).
        return written(mem::copy_out(caller, &[], ptr_ptr, size_ptr)?);
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
    written(mem::copy_out(caller, &bytes, ptr_ptr, size_ptr)?)
}

fn set_pairs(caller: &mut Caller<'_, HostState>, kind: u32, ptr: u32, len: u32) -> AbiResult {
    let kind = map_type(kind)?;
    let s = mem::with_bytes(caller, ptr, len, |data, state| {
        let Some(m) = map_mut(state, kind) else {
            return Status::BadArgument;
        };
        let Some(decoded) = pairs::decode(data) else {
            return Status::BadArgument;
        };
        // Envoy removes every entry, then adds each pair (folding inline names).
        m.set_all(fold_inline(
            decoded
                .into_iter()
                .map(|(k, v)| (text(k), text(v)))
                .collect(),
            inline_names(kind),
        ));
        Status::Ok
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}

fn get_size(caller: &mut Caller<'_, HostState>, kind: u32, out: u32) -> AbiResult {
    let kind = map_type(kind)?;
    // Envoy looks the map up as writable: an http call's response
    // (read-only) answers BadArgument, even in its callback.
    if matches!(
        kind,
        MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers
    ) {
        return Err(Status::BadArgument.into());
    }
    // Envoy looks the map up as writable: a map no longer held answers
    // BadArgument even where it is still readable (the access log).
    // Envoy answers the map's byte size, not its entry count.
    let Some(size) = map_mut(caller.data_mut(), kind)
        .map(|m| -> usize { m.entries().iter().map(|(k, v)| k.len() + v.len()).sum() })
    else {
        return Err(Status::BadArgument.into());
    };
    written(mem::write_u32(caller, out, size as u32))
}

/// `proxy_add_header_map_value` / `proxy_replace_header_map_value`: applies
/// `edit` to the writable map `kind` with the guest's key and value.
fn edit_value(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    key: (u32, u32),
    value: (u32, u32),
    edit: fn(&mut HeaderMap, &[&str], &str, &str),
) -> AbiResult {
    let kind = map_type(kind)?;
    let s = mem::with_two(caller, key, value, |k, v, state| {
        match map_mut(state, kind) {
            Some(m) => {
                // Borrowed when valid UTF-8 (the usual case): the map makes
                // the only copies it keeps.
                let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v));
                edit(m, inline_names(kind), &k, &v);
                Status::Ok
            }
            None => Status::BadArgument,
        }
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}

fn remove_value(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    (key_ptr, key_len): (u32, u32),
) -> AbiResult {
    let kind = map_type(kind)?;
    let s = mem::with_bytes(caller, key_ptr, key_len, |k, state| {
        match map_mut(state, kind) {
            Some(m) => {
                m.remove(&String::from_utf8_lossy(k));
                Status::Ok
            }
            None => Status::BadArgument,
        }
    })
    .unwrap_or(Status::InvalidMemoryAccess);
    status(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn repeated_inline_headers_fold_as_envoys_codec_does() {
        let folded = fold_inline(
            pairs(&[
                ("authorization", "a"),
                ("x-custom", "1"),
                ("Authorization", "b"),
                ("x-custom", "2"),
                ("via", ""),
                ("via", "v"),
            ]),
            REQUEST_INLINE,
        );
        assert_eq!(
            folded,
            pairs(&[
                ("authorization", "a,b"),
                ("x-custom", "1"),
                ("x-custom", "2"),
                ("via", "v"),
            ])
        );
        // Nothing repeated: the pairs are kept as they are.
        let plain = pairs(&[("Accept", "x")]);
        assert_eq!(fold_inline(plain.clone(), REQUEST_INLINE), plain);
        // `set-cookie` is not inline in responses: every entry is kept.
        let cookies = pairs(&[("set-cookie", "a=1"), ("set-cookie", "b=2")]);
        assert_eq!(fold_inline(cookies.clone(), RESPONSE_INLINE), cookies);
    }

    #[test]
    fn adding_to_a_present_inline_header_extends_its_value() {
        let mut m = HeaderMap::from_pairs(pairs(&[("via", "1.0 corp"), ("x-a", "1")]));
        envoy_add(&mut m, REQUEST_INLINE, "via", "1.1 tollgate");
        envoy_add(&mut m, REQUEST_INLINE, "x-a", "2");
        envoy_add(&mut m, REQUEST_INLINE, "accept", "*/*");
        assert_eq!(
            m.entries(),
            pairs(&[
                ("via", "1.0 corp,1.1 tollgate"),
                ("x-a", "1"),
                ("x-a", "2"),
                ("accept", "*/*"),
            ])
        );
        // Request trailers have no inline names.
        assert!(inline_names(MapType::RequestTrailers).is_empty());
    }
}
