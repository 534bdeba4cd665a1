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
use wasmtime::{Caller, Extern, Func, Instance, Linker, Module, Store, Val};

pub(crate) use headers::{REQUEST_INLINE, RESPONSE_INLINE, fold_inline};
pub(crate) use memory::GuestHandles;
pub use wasi::ProcExit;

/// Status codes returned to the guest (proxy-wasm `WasmResult`, as numbered
/// by proxy-wasm-cpp-host and the ABI spec).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A key (header, property, shared data, queue, metric) was not found.
    NotFound = 1,
    /// An argument was out of range, or the object is not available now.
    BadArgument = 2,
    /// Data could not be serialised.
    SerializationFailure = 3,
    /// Data could not be parsed.
    ParseFailure = 4,
    /// An expression was illegal or unrecognised.
    BadExpression = 5,
    /// A pointer or length the guest passed is outside its memory.
    InvalidMemoryAccess = 6,
    /// A container (queue) was empty.
    Empty = 7,
    /// Compare-and-swap value did not match.
    CasMismatch = 8,
    /// A result was of an unexpected size.
    ResultMismatch = 9,
    /// Something failed inside the host.
    InternalFailure = 10,
    /// The connection or stream was closed.
    BrokenConnection = 11,
    /// The host does not implement this.
    Unimplemented = 12,
}

impl Status {
    /// `Ok` when a write into guest memory succeeded, else `InvalidMemoryAccess`.
    pub(crate) const fn written(ok: bool) -> Self {
        if ok {
            Self::Ok
        } else {
            Self::InvalidMemoryAccess
        }
    }

    /// The raw value the guest receives.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

impl From<Status> for u32 {
    fn from(s: Status) -> u32 {
        s as u32
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
/// [`instantiate_wrapped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        level: LogLevel::Trace.as_str().to_string(),
        message,
    });
}

/// Instantiates `module` through a per-store linker whose every import is
/// wrapped as `wrap` says (counting and/or tracing guest->host calls). Only
/// VMs that ask for it pay for the wrapper: the plain path instantiates
/// through the plugin's shared `InstancePre`.
pub(crate) fn instantiate_wrapped(
    module: &Module,
    store: &mut Store<HostState>,
    wrap: Wrap,
) -> wasmtime::Result<Instance> {
    let mut base = Linker::new(module.engine());
    link(&mut base)?;
    let mut wrapped = Linker::new(module.engine());
    for import in module.imports() {
        let Some(ext) = base.get_by_import(&mut *store, &import) else {
            return Err(wasmtime::Error::msg(format!(
                "no host function {}::{}",
                import.module(),
                import.name()
            )));
        };
        let ext = match ext {
            Extern::Func(f) => {
                let ty = f.ty(&*store);
                let name: std::sync::Arc<str> =
                    format!("{}.{}", import.module(), import.name()).into();
                Extern::Func(Func::new(
                    &mut *store,
                    ty,
                    move |mut caller: Caller<'_, HostState>, params, results| {
                        if wrap.count {
                            let calls = &caller.data().boundary.host_calls;
                            calls.set(calls.get() + 1);
                        }
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
                ))
            }
            other => other,
        };
        wrapped.define(&*store, import.module(), import.name(), ext)?;
    }
    wrapped.instantiate(&mut *store, module)
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
