//! Guest memory access: reading, writing and allocating inside a guest's
//! linear memory. The rest of the harness never sees guest memory.
//!
//! The guest's `memory` export and its allocator (`malloc`, else
//! `proxy_on_memory_allocate`, the order proxy-wasm-cpp-host uses) are looked
//! up once per instance and cached in [`GuestHandles`].

use crate::state::HostState;
use wasmtime::{Caller, Instance, Memory, Store, TypedFunc};

/// The guest's memory and allocator, cached per instance.
#[derive(Clone)]
pub(crate) struct GuestHandles {
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    /// The allocator's export name, for the call trace.
    alloc_name: &'static str,
    /// Log each allocation as Envoy's `-l trace` does
    /// (`[host->vm] proxy_on_memory_allocate(266)`).
    trace: bool,
}

/// Why an instance's memory or allocator could not be found.
#[derive(Debug)]
pub(crate) enum HandlesError {
    /// No exported memory named `memory`.
    NoMemory,
    /// Neither `malloc` nor `proxy_on_memory_allocate` is exported.
    NoAllocator,
    /// The allocator has the wrong type.
    BadAllocator(String, String),
}

impl std::fmt::Display for HandlesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoMemory => write!(f, "the module exports no memory named `memory`"),
            Self::NoAllocator => write!(
                f,
                "the module exports neither `malloc` nor `proxy_on_memory_allocate` (Envoy needs one to pass data to the guest)"
            ),
            Self::BadAllocator(name, e) => {
                write!(f, "export `{name}` is not (i32) -> i32: {e}")
            }
        }
    }
}

impl GuestHandles {
    /// Looks up the memory and allocator of a fresh instance.
    pub(crate) fn from_instance(
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> Result<Self, HandlesError> {
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or(HandlesError::NoMemory)?;
        let name = if instance.get_func(&mut *store, "malloc").is_some() {
            "malloc"
        } else if instance
            .get_func(&mut *store, "proxy_on_memory_allocate")
            .is_some()
        {
            "proxy_on_memory_allocate"
        } else {
            return Err(HandlesError::NoAllocator);
        };
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut *store, name)
            .map_err(|e| HandlesError::BadAllocator(name.to_string(), format!("{e}")))?;
        Ok(Self {
            memory,
            alloc,
            alloc_name: name,
            trace: false,
        })
    }

    /// The same handles, logging every allocation in the call trace.
    pub(crate) fn traced(self) -> Self {
        Self {
            trace: true,
            ..self
        }
    }
}

/// The guest's linear memory size in bytes (0 before the handles are set).
pub(crate) fn memory_size(store: &Store<HostState>) -> u64 {
    store
        .data()
        .guest
        .as_ref()
        .map_or(0, |g| g.memory.data_size(store) as u64)
}

/// The byte range `[ptr, ptr+len)` as a `usize` range, if it does not overflow.
#[inline]
fn range(ptr: u32, len: u32) -> Option<std::ops::Range<usize>> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize)?;
    Some(start..end)
}

/// The instance's memory, if the handles are set.
#[inline]
fn memory(caller: &Caller<'_, HostState>) -> Option<Memory> {
    caller.data().guest.as_ref().map(|g| g.memory)
}

/// Runs `f` with the guest bytes at `[ptr, ptr+len)` and the host state.
/// `None` when the range is outside guest memory.
#[inline]
pub(crate) fn with_bytes<R>(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
    f: impl FnOnce(&[u8], &mut HostState) -> R,
) -> Option<R> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(caller);
    let bytes = data.get(range(ptr, len)?)?;
    state.boundary.read(bytes.len());
    Some(f(bytes, state))
}

/// Runs `f` with two guest byte ranges and the host state.
/// `None` when either range is outside guest memory.
#[inline]
pub(crate) fn with_two<R>(
    caller: &mut Caller<'_, HostState>,
    a: (u32, u32),
    b: (u32, u32),
    f: impl FnOnce(&[u8], &[u8], &mut HostState) -> R,
) -> Option<R> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(caller);
    let data: &[u8] = data;
    let x = data.get(range(a.0, a.1)?)?;
    let y = data.get(range(b.0, b.1)?)?;
    state.boundary.read(x.len() + y.len());
    Some(f(x, y, state))
}

/// Checks that every `(ptr, len)` lies inside guest memory.
pub(crate) fn in_bounds(caller: &Caller<'_, HostState>, ranges: &[(u32, u32)]) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    let size = mem.data_size(caller);
    ranges
        .iter()
        .all(|&(p, l)| range(p, l).is_some_and(|r| r.end <= size))
}

/// Copies the guest bytes at `[ptr, ptr+len)` out. `None` when out of bounds.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: u32, len: u32) -> Option<Vec<u8>> {
    let mem = memory(caller)?;
    let bytes = mem.data(caller).get(range(ptr, len)?)?;
    caller.data().boundary.read(bytes.len());
    Some(bytes.to_vec())
}

/// Writes `bytes` at `ptr`. `false` when out of bounds.
#[inline]
pub(crate) fn write(caller: &mut Caller<'_, HostState>, ptr: u32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    let Some(r) = u32::try_from(bytes.len()).ok().and_then(|l| range(ptr, l)) else {
        return false;
    };
    let (data, state) = mem.data_and_store_mut(caller);
    match data.get_mut(r) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            state.boundary.wrote(bytes.len());
            true
        }
        None => false,
    }
}

/// Writes a little-endian `u32` at `ptr`. `false` when out of bounds.
#[inline]
pub(crate) fn write_u32(caller: &mut Caller<'_, HostState>, ptr: u32, v: u32) -> bool {
    write(caller, ptr, &v.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`. `false` when out of bounds.
pub(crate) fn write_u64(caller: &mut Caller<'_, HostState>, ptr: u32, v: u64) -> bool {
    write(caller, ptr, &v.to_le_bytes())
}

/// Reads a little-endian `u32` at `ptr`.
pub(crate) fn read_u32(caller: &Caller<'_, HostState>, ptr: u32) -> Option<u32> {
    let mem = memory(caller)?;
    let b = mem.data(caller).get(range(ptr, 4)?)?;
    caller.data().boundary.read(4);
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Allocates `size` bytes in the guest through its allocator.
/// `Ok(None)` when the allocator returned null or no allocator is cached;
/// `Err` when the allocator trapped (the trap goes on to the caller).
fn alloc(caller: &mut Caller<'_, HostState>, size: u32) -> wasmtime::Result<Option<u32>> {
    // A reference-count bump: the handles stay in the state while the
    // allocator runs (it may call host functions that need the memory).
    let Some(g) = caller.data().guest.clone() else {
        return Ok(None);
    };
    if g.trace {
        let line = format!("[host->vm] {}({size})", g.alloc_name);
        super::trace_line(caller.data_mut(), line);
    }
    let p = g.alloc.call(&mut *caller, size)?;
    if g.trace {
        let line = format!("[host<-vm] {} return: {p}", g.alloc_name);
        super::trace_line(caller.data_mut(), line);
    }
    Ok((p != 0).then_some(p))
}

/// Allocates a guest buffer holding `bytes` and writes its address and size
/// to `ptr_ptr` / `size_ptr` (proxy-wasm-cpp-host's `copyToPointerSize`):
/// an empty value writes a null pointer and size 0 without allocating.
/// `Ok(false)` means invalid memory access.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<bool> {
    let Ok(size) = u32::try_from(bytes.len()) else {
        return Ok(false);
    };
    let mut addr = 0;
    if size > 0 {
        let Some(p) = alloc(caller, size)? else {
            return Ok(false);
        };
        if !write(caller, p, bytes) {
            return Ok(false);
        }
        addr = p;
    }
    Ok(write_u32(caller, ptr_ptr, addr) && write_u32(caller, size_ptr, size))
}

/// Like [`copy_out`] for bytes that live in the host state: `get` is asked
/// for the length, the guest allocates, then `get` is asked again and the
/// bytes are copied straight from the state (no intermediate copy).
pub(crate) fn copy_out_from_state(
    caller: &mut Caller<'_, HostState>,
    get: impl Fn(&HostState) -> &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> wasmtime::Result<bool> {
    let Ok(size) = u32::try_from(get(caller.data()).len()) else {
        return Ok(false);
    };
    let mut addr = 0;
    if size > 0 {
        let Some(p) = alloc(caller, size)? else {
            return Ok(false);
        };
        let Some(mem) = memory(caller) else {
            return Ok(false);
        };
        let (data, state) = mem.data_and_store_mut(&mut *caller);
        let src = get(state);
        // The allocator ran guest code; should the value have changed size
        // meanwhile, copy no more than was allocated.
        let n = src.len().min(size as usize);
        let Some(dst) = range(p, n as u32).and_then(|r| data.get_mut(r)) else {
            return Ok(false);
        };
        dst.copy_from_slice(&src[..n]);
        state.boundary.wrote(n);
        addr = p;
    }
    Ok(write_u32(caller, ptr_ptr, addr) && write_u32(caller, size_ptr, size))
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn range_rejects_overflow() {
        assert_eq!(range(10, 5), Some(10..15));
        assert!(range(u32::MAX, u32::MAX).is_some()); // fits in 64-bit usize
        assert_eq!(range(0, 0), Some(0..0));
    }
}
