//! The proxy-wasm host functions, one module per area of the ABI.
//!
//! Every module adds its functions to one [`Linker`] through
//! `add_to_linker`; [`link`] lists them all. Host functions validate their
//! arguments the way proxy-wasm-cpp-host (Envoy's host) does: an
//! out-of-bounds pointer answers [`Status::InvalidMemoryAccess`], a bad enum
//! [`Status::BadArgument`], a missing key [`Status::NotFound`]. Those are
//! statuses the guest sees; a trap (an `Err` from a host function) is kept for
//! what Envoy also treats as fatal (`proc_exit`, a trapping guest allocator).
//!
//! Only this module and its children touch guest memory (see [`memory`]).

mod buffers;
mod clocks;
mod envoy_extras;
mod foreign;
mod grpc;
mod headers;
mod http_calls;
mod lifecycle;
mod logging;
pub(crate) mod memory;
mod metrics;
pub(crate) use tollgate_abi::pairs;
mod properties;
mod shared_data;
mod shared_queues;
mod stream_control;
mod wasi;

use crate::state::{HostState, LogLevel, LogLine};
use std::sync::Arc;
use wasmtime::{Caller, Extern, ExternType, Linker, Module, Val};

pub(crate) use headers::{REQUEST_INLINE, RESPONSE_INLINE, fold_inline};
pub(crate) use memory::GuestHandles;
pub use wasi::ProcExit;

pub use tollgate_abi::Status;

/// Why a host function did not succeed: a status the guest receives as the
/// call's return value, or a trap that ends the VM's call (what Envoy also
/// treats as fatal). Host functions return `Result<(), AbiError>` and
/// [`to_guest`] is the one place that turns it into what the guest sees, so
/// "statuses are values, traps are fatal" is a type, not a habit.
#[derive(Debug)]
pub(crate) enum AbiError {
    /// A guest-visible status (never `Ok`).
    Status(Status),
    /// Fatal: the call traps with this error.
    Trap(wasmtime::Error),
}

impl From<Status> for AbiError {
    fn from(s: Status) -> Self {
        AbiError::Status(s)
    }
}

impl From<wasmtime::Error> for AbiError {
    fn from(e: wasmtime::Error) -> Self {
        AbiError::Trap(e)
    }
}

/// What a host function returns.
pub(crate) type AbiResult = Result<(), AbiError>;

/// `Ok` when a write into guest memory succeeded, else `InvalidMemoryAccess`.
pub(crate) fn written(ok: bool) -> AbiResult {
    if ok {
        Ok(())
    } else {
        Err(Status::InvalidMemoryAccess.into())
    }
}

/// A status as a host function's result: `Ok` is success, anything else an error.
pub(crate) fn status(s: Status) -> AbiResult {
    if s == Status::Ok {
        Ok(())
    } else {
        Err(s.into())
    }
}

/// The one mapping from a host function's result to the guest: success and
/// statuses are the call's return value, a trap ends the call.
pub(crate) fn to_guest(result: AbiResult) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok.code()),
        Err(AbiError::Status(s)) => Ok(s.code()),
        Err(AbiError::Trap(e)) => Err(e),
    }
}

/// Adds every host function (proxy-wasm, WASI, Envoy extras) to `linker`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    lifecycle::add_to_linker(linker)?;
    logging::add_to_linker(linker)?;
    clocks::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    headers::add_to_linker(linker)?;
    stream_control::add_to_linker(linker)?;
    http_calls::add_to_linker(linker)?;
    grpc::add_to_linker(linker)?;
    shared_data::add_to_linker(linker)?;
    shared_queues::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    properties::add_to_linker(linker)?;
    foreign::add_to_linker(linker)?;
    wasi::add_to_linker(linker)?;
    envoy_extras::add_to_linker(linker)?;
    Ok(())
}

/// What a per-store wrapper around every host function does (see
/// [`wrapped_linker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Wrap {
    /// Count every guest->host call (`tollgate bench`).
    pub count: bool,
    /// Log every guest->host call and its return value as a `trace` line in
    /// Envoy's shape (`[vm->host] env.proxy_log(1, 1088192, 49)`,
    /// `[vm<-host] env.proxy_log return: 0`).
    pub trace: bool,
}

/// Formats wasm values as Envoy's trace does: integers unsigned, comma-separated.
fn trace_values(values: &[Val]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match v {
            Val::I32(x) => out.push_str(&(*x as u32).to_string()),
            Val::I64(x) => out.push_str(&(*x as u64).to_string()),
            Val::F32(x) => out.push_str(&f32::from_bits(*x).to_string()),
            Val::F64(x) => out.push_str(&f64::from_bits(*x).to_string()),
            other => out.push_str(&format!("{other:?}")),
        }
    }
    out
}

/// Appends one call-trace line to the VM's log.
pub(crate) fn trace_line(state: &mut HostState, message: String) {
    state.logs.push(LogLine {
        level: LogLevel::Trace,
        message,
    });
}

/// The plugin's second linker, built once per plugin next to the plain one:
/// every import of `module` is a wrapper that counts and/or traces the
/// guest->host call, as the store's [`Wrap`] says, around the host function
/// of `base`. Only VMs that ask for it (metered, traced) instantiate through
/// it; the plain path uses `base` and pays nothing.
pub(crate) fn wrapped_linker(
    base: Arc<Linker<HostState>>,
    module: &Module,
) -> wasmtime::Result<Linker<HostState>> {
    let mut wrapped = Linker::new(module.engine());
    for (index, import) in module.imports().enumerate() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let (module_name, field): (Arc<str>, Arc<str>) =
            (import.module().into(), import.name().into());
        let name: Arc<str> = format!("{}.{}", import.module(), import.name()).into();
        let base = Arc::clone(&base);
        wrapped.func_new(
            import.module(),
            import.name(),
            ty,
            move |mut caller: Caller<'_, HostState>, params, results| {
                let wrap = caller.data().wrap;
                if wrap.count {
                    let calls = &caller.data().boundary.host_calls;
                    calls.set(calls.get() + 1);
                }
                let cached = caller.data().wrapped_funcs.get(index).copied().flatten();
                let f = match cached {
                    Some(f) => f,
                    None => {
                        let Ok(Extern::Func(f)) = base.get(&mut caller, &module_name, &field)
                        else {
                            return Err(wasmtime::Error::msg(format!("no host function {name}")));
                        };
                        let funcs = &mut caller.data_mut().wrapped_funcs;
                        if funcs.len() <= index {
                            funcs.resize(index + 1, None);
                        }
                        funcs[index] = Some(f);
                        f
                    }
                };
                if !wrap.trace {
                    return f.call(&mut caller, params, results);
                }
                let line = format!("[vm->host] {name}({})", trace_values(params));
                trace_line(caller.data_mut(), line);
                f.call(&mut caller, params, results)?;
                let returned = if results.is_empty() {
                    "void".to_string()
                } else {
                    trace_values(&results[..1])
                };
                let line = format!("[vm<-host] {name} return: {returned}");
                trace_line(caller.data_mut(), line);
                Ok(())
            },
        )?;
    }
    Ok(wrapped)
}

/// Host functions Envoy offers only to modules of some ABI versions
/// (proxy-wasm-cpp-host registers them per version). The linker has them all;
/// loading checks a module's imports against this table so that a module
/// which would fail to link in Envoy fails here too.
pub(crate) fn abi_specific_import(name: &str) -> Option<&'static [crate::plugin::AbiVersion]> {
    use crate::plugin::AbiVersion::*;
    match name {
        "proxy_get_configuration"
        | "proxy_continue_request"
        | "proxy_continue_response"
        | "proxy_clear_route_cache" => Some(&[V0_1_0]),
        "proxy_continue_stream" | "proxy_close_stream" => Some(&[V0_2_0, V0_2_1]),
        "proxy_get_log_level" => Some(&[V0_2_1]),
        _ => None,
    }
}

/// Logs a warning through the guest log the first time `what` is used in a VM.
pub(crate) fn warn_once(state: &mut HostState, what: &'static str, message: &str) {
    if state.warned.insert(what) {
        state.host_log(crate::state::LogLevel::Warn, message.to_string());
    }
}
