//! The proxy-wasm ABI 0.2.1 host calls the SDK makes, declared here instead of going through the
//! `proxy-wasm` crate: that crate also exports the ABI callbacks (`proxy_on_*`) behind its own
//! context maps, and a module can export each name once; the SDK exports its own
//! ([`crate::dispatch`]).
//!
//! Each wrapper passes pointers into guest memory, maps the status and takes ownership of what
//! the host allocated through `proxy_on_memory_allocate` ([`allocate`]). Unlike the crate's
//! wrappers, none panics on a status it did not expect: every one comes back as an
//! `Err(Status)` for the caller to log.

// Natively nothing calls the metric and property wrappers (their callers are wasm-only).
#![cfg_attr(not(target_family = "wasm"), allow(dead_code))]

use std::ptr::{null, null_mut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The status a host call returns (`WasmResult` in the ABI). `Debug` names what the SDK logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    Empty,
    CasMismatch,
    InternalFailure,
    Unimplemented,
    /// A code this ABI version does not define.
    Other(u32),
}

impl Status {
    /// `Ok(())` for 0, else the status.
    fn check(raw: u32) -> Result<(), Status> {
        Err(match raw {
            0 => return Ok(()),
            1 => Status::NotFound,
            2 => Status::BadArgument,
            3 => Status::SerializationFailure,
            4 => Status::ParseFailure,
            7 => Status::Empty,
            8 => Status::CasMismatch,
            10 => Status::InternalFailure,
            12 => Status::Unimplemented,
            other => Status::Other(other),
        })
    }
}

/// The host's header maps (`proxy_*_header_map_*`'s `map_type`), named as the ABI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum MapType {
    HttpRequestHeaders = 0,
    HttpResponseHeaders = 2,
    HttpCallResponseHeaders = 6,
}

/// The host's buffers (`proxy_*_buffer_bytes`'s `buffer_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    HttpCallResponseBody = 4,
    GrpcReceiveBuffer = 5,
    PluginConfiguration = 7,
}

/// Metric kinds (`proxy_define_metric`'s `metric_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// What a stream callback tells the host (`FilterHeadersStatus` and friends: 0 continue,
/// 1 stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Continue = 0,
    Pause = 1,
}

impl From<crate::filter::Action> for Action {
    fn from(action: crate::filter::Action) -> Self {
        match action {
            crate::filter::Action::Continue => Action::Continue,
            crate::filter::Action::Pause => Action::Pause,
        }
    }
}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_data: *const u8,
        service_size: usize,
        method_data: *const u8,
        method_size: usize,
        metadata_data: *const u8,
        metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
}

/// The bytes the host wrote at `data` (`size` long), owned; `None` when it returned none.
///
/// # Safety
/// `data` is null or was allocated by the host through [`allocate`] with exactly `size` bytes,
/// and is handed over to the caller.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: per the contract, a block of `size` bytes with alignment 1 from the global
    // allocator (`allocate`), owned by nobody else.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// `proxy_on_memory_allocate`: a block of exactly `size` bytes (alignment 1) from the global
/// allocator, for the host to write into and hand back; [`take`] frees it with that layout.
/// Returns null when the allocator fails (the host reports an allocation failure).
pub fn allocate(size: usize) -> *mut u8 {
    if size == 0 {
        // A zero-length block needs no memory; `Vec::from_raw_parts` with capacity 0 frees
        // nothing.
        return std::ptr::NonNull::<u8>::dangling().as_ptr();
    }
    match std::alloc::Layout::from_size_align(size, 1) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { std::alloc::alloc(layout) },
        Err(_) => null_mut(),
    }
}

/// Reads `max_size` bytes from `start` of buffer `kind`; `None` when it is absent or empty.
pub(crate) fn get_buffer(
    kind: BufferType,
    start: usize,
    max_size: usize,
) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: both out-pointers are valid for writes during the call.
    let raw = unsafe { proxy_get_buffer_bytes(kind as u32, start, max_size, &mut data, &mut size) };
    match Status::check(raw) {
        // SAFETY: on success the host handed over `size` bytes it allocated through `allocate`.
        Ok(()) => Ok(unsafe { take(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Replaces `size` bytes from `start` of buffer `kind` with `bytes`.
pub(crate) fn set_buffer(
    kind: BufferType,
    start: usize,
    size: usize,
    bytes: &[u8],
) -> Result<(), Status> {
    // SAFETY: the pointer and length describe `bytes`; the host only reads them.
    Status::check(unsafe {
        proxy_set_buffer_bytes(kind as u32, start, size, bytes.as_ptr(), bytes.len())
    })
}

/// The map `kind` as the host serialises it (count, then name and value sizes, then each name
/// and value NUL-terminated); `None` when the host returned nothing.
pub(crate) fn get_map_wire(kind: MapType) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: both out-pointers are valid for writes during the call.
    Status::check(unsafe { proxy_get_header_map_pairs(kind as u32, &mut data, &mut size) })?;
    // SAFETY: on success the host handed over `size` bytes it allocated through `allocate`.
    Ok(unsafe { take(data, size) })
}

/// Every pair of map `kind`, values as bytes (a non-UTF-8 name is converted lossily).
pub(crate) fn get_map_bytes(kind: MapType) -> Result<Vec<(String, Vec<u8>)>, Status> {
    let mut pairs = Vec::new();
    if let Some(wire) = get_map_wire(kind)? {
        crate::headers::walk_wire_pairs(&wire, &mut |name: &[u8], value: &[u8]| {
            pairs.push((crate::headers::text(name), value.to_vec()));
        });
    }
    Ok(pairs)
}

/// The first value of `name` in map `kind`, as bytes.
pub(crate) fn get_map_value_bytes(kind: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the key pointer and length describe `name`; both out-pointers are valid for
    // writes during the call.
    let raw = unsafe {
        proxy_get_header_map_value(kind as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match Status::check(raw) {
        // SAFETY: on success the host handed over `size` bytes it allocated through `allocate`.
        Ok(()) => Ok(unsafe { take(data, size) }),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Replaces every value of `name` in map `kind` with `value` (removes it with `None`).
pub(crate) fn set_map_value(kind: MapType, name: &str, value: Option<&str>) -> Result<(), Status> {
    let Some(value) = value else {
        return remove_map_value(kind, name);
    };
    // SAFETY: the pointers and lengths describe `name` and `value`; the host only reads them.
    Status::check(unsafe {
        proxy_replace_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Appends `value` to `name` in map `kind`.
pub(crate) fn add_map_value(kind: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: the pointers and lengths describe `name` and `value`; the host only reads them.
    Status::check(unsafe {
        proxy_add_header_map_value(
            kind as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of `name` from map `kind`.
pub(crate) fn remove_map_value(kind: MapType, name: &str) -> Result<(), Status> {
    // SAFETY: the pointer and length describe `name`; the host only reads it.
    Status::check(unsafe { proxy_remove_header_map_value(kind as u32, name.as_ptr(), name.len()) })
}

use crate::headers::serialize_pairs;

/// Answers the client with a local response (no details, no gRPC status).
pub(crate) fn send_http_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let headers = serialize_pairs(headers);
    // SAFETY: the pointers and lengths describe `body` and `headers`, alive during the call;
    // the host only reads them.
    Status::check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Resumes the paused request (`proxy_continue_stream(0)`).
pub(crate) fn resume_http_request() -> Result<(), Status> {
    // SAFETY: no pointer is passed.
    Status::check(unsafe { proxy_continue_stream(0) })
}

/// Resumes the paused response (`proxy_continue_stream(1)`).
pub(crate) fn resume_http_response() -> Result<(), Status> {
    // SAFETY: no pointer is passed.
    Status::check(unsafe { proxy_continue_stream(1) })
}

/// Sends an HTTP call to cluster `upstream`; returns its token.
pub(crate) fn dispatch_http_call(
    upstream: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    let headers = serialize_pairs(headers);
    let trailers = serialize_pairs::<&str>(&[]);
    let body = body.unwrap_or_default();
    let mut token = 0;
    // SAFETY: every pointer and length describes a live slice the host only reads; the token
    // out-pointer is valid for writes.
    Status::check(unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            &mut token,
        )
    })?;
    Ok(token)
}

/// Sends a unary gRPC call; returns its token.
pub(crate) fn dispatch_grpc_call(
    upstream: &str,
    service: &str,
    method: &str,
    metadata: &[(&str, &[u8])],
    message: &[u8],
    timeout: Duration,
) -> Result<u32, Status> {
    let metadata = serialize_pairs(metadata);
    let mut token = 0;
    // SAFETY: every pointer and length describes a live slice the host only reads; the token
    // out-pointer is valid for writes.
    Status::check(unsafe {
        proxy_grpc_call(
            upstream.as_ptr(),
            upstream.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            &mut token,
        )
    })?;
    Ok(token)
}

/// Defines (or finds) metric `name`; returns its id.
pub(crate) fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: the pointer and length describe `name`; the id out-pointer is valid for writes.
    Status::check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `offset` to metric `id`.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no pointer is passed.
    Status::check(unsafe { proxy_increment_metric(id, offset) })
}

/// Records `value` in metric `id` (sets a gauge, adds a histogram sample).
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointer is passed.
    Status::check(unsafe { proxy_record_metric(id, value) })
}

/// The property at `path` (segments joined with NUL, as the ABI reads a path).
pub(crate) fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    Ok(property_found(path)?.filter(|value| !value.is_empty()))
}

/// Property `path` as the host answered it: `Some` when it knows the property, its value
/// possibly empty (a route without a name); `None` for `NotFound`.
pub(crate) fn property_found(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let joined = path.join("\0");
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the pointer and length describe `joined`; both out-pointers are valid for writes.
    let raw = unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut data, &mut size) };
    match Status::check(raw) {
        // SAFETY: on success the host handed over `size` bytes it allocated through `allocate`
        // (none for an empty value: the pointer is null).
        Ok(()) => Ok(Some(unsafe { take(data, size) }.unwrap_or_default())),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// The shared-data value under `key` and its CAS (`None` for 0), or `(None, None)` when absent.
pub(crate) fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0u32);
    // SAFETY: the pointer and length describe `key`; the out-pointers are valid for writes.
    let raw =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match Status::check(raw) {
        // SAFETY: on success the host handed over `size` bytes it allocated through `allocate`.
        Ok(()) => Ok((unsafe { take(data, size) }, (cas != 0).then_some(cas))),
        Err(Status::NotFound) => Ok((None, None)),
        Err(status) => Err(status),
    }
}

/// Stores `value` under `key` if its CAS still is `cas` (`None`: unconditionally).
pub(crate) fn set_shared_data(
    key: &str,
    value: Option<&[u8]>,
    cas: Option<u32>,
) -> Result<(), Status> {
    let value = value.unwrap_or_default();
    // SAFETY: the pointers and lengths describe `key` and `value`; the host only reads them.
    Status::check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            if value.is_empty() {
                null()
            } else {
                value.as_ptr()
            },
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// The host's wall clock.
pub(crate) fn get_current_time() -> Result<SystemTime, Status> {
    let mut nanos = 0u64;
    // SAFETY: the out-pointer is valid for writes.
    Status::check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Makes `context_id` the context later host calls act on (before answering a callout, which
/// the host delivers on the root context).
pub(crate) fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointer is passed.
    Status::check(unsafe { proxy_set_effective_context(context_id) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_serialise_as_the_host_reads_them() {
        let wire = serialize_pairs(&[("a", "1"), ("bc", "")]);
        assert_eq!(
            wire,
            b"\x02\0\0\0\x01\0\0\0\x01\0\0\0\x02\0\0\0\0\0\0\0a\x001\0bc\0\0".to_vec()
        );
        let mut seen = Vec::new();
        crate::headers::walk_wire_pairs(&wire, &mut |n: &[u8], v: &[u8]| {
            seen.push((n.to_vec(), v.to_vec()))
        });
        assert_eq!(
            seen,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"bc".to_vec(), Vec::new())]
        );
    }

    #[test]
    fn statuses_map_to_their_names() {
        assert_eq!(Status::check(0), Ok(()));
        assert_eq!(Status::check(2), Err(Status::BadArgument));
        assert_eq!(Status::check(8), Err(Status::CasMismatch));
        assert_eq!(Status::check(99), Err(Status::Other(99)));
        assert_eq!(format!("{:?}", Status::InternalFailure), "InternalFailure");
    }

    #[test]
    fn allocate_gives_blocks_take_frees() {
        let block = allocate(5);
        assert!(!block.is_null());
        // SAFETY: `allocate` returned 5 writable bytes with alignment 1.
        unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), block, 5) };
        // SAFETY: the block came from `allocate(5)`.
        assert_eq!(unsafe { take(block, 5) }, Some(b"hello".to_vec()));
        // SAFETY: a zero-length block from `allocate(0)` owns nothing.
        assert_eq!(unsafe { take(allocate(0), 0) }, Some(Vec::new()));
        // SAFETY: null is allowed.
        assert_eq!(unsafe { take(null_mut(), 3) }, None);
    }
}
