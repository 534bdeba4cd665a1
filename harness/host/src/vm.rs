//! A running VM: one `Store` with one instance of a [`Plugin`], its root
//! context started and configured, and typed handles to the module's
//! callbacks (looked up once).
//!
//! Every call into the guest goes through [`Vm::call`], which sets the
//! acting context, starts a new call for the call timeout (a looping guest
//! is stopped after `call_timeout`: an epoch-deadline callback counts the
//! ticks each call sees, so nothing is armed per call), measures wall time
//! when the driver reports cost, and turns a trap into a readable
//! [`CallError`] with the guest backtrace and any panic message the guest
//! logged. The trace (when on), fuel (metered plugins), timing and per-call
//! records are off the fast path when not asked for. After each callback
//! the host delivers what the guest scheduled (http call answers, queue
//! notifications), as Envoy does after a VM call; with nothing scheduled
//! that is two checks.

use crate::abi::GuestHandles;
use crate::abi::memory::HandlesError;
use crate::callouts::CalloutRecord;
use crate::plugin::{AbiVersion, EPOCH_TICK, Plugin};
use crate::state::{
    ExchangeCallouts, HostState, LogLevel, LogLine, SharedRegistry, StreamState, VmSettings,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_abi::Direction;
use wasmtime::{Instance, Store, Trap, TypedFunc, WasmBacktrace, WasmParams, WasmResults};

/// Fuel a metered VM is given before each guest call (far more than any
/// call can use before its timeout).
const FUEL_PER_CALL: u64 = u64::MAX / 4;

/// One guest call, as recorded when [`Vm::record_calls`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// The export called, e.g. `proxy_on_request_headers`.
    pub callback: &'static str,
    /// Wall time inside the guest (host calls included).
    pub wall: Duration,
    /// Wasm instructions executed (wasmtime fuel; 0 unless the plugin is metered).
    pub instructions: u64,
}

/// Why a VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Instantiation failed (e.g. the start function trapped).
    #[error("{name}: instantiating the module failed: {message}")]
    Instantiate {
        /// The filter.
        name: String,
        /// What happened.
        message: String,
    },
    /// An export has the wrong signature.
    #[error("{name}: export `{export}` has the wrong type: {message}")]
    BadExport {
        /// The filter.
        name: String,
        /// The export.
        export: String,
        /// Details.
        message: String,
    },
    /// A guest call trapped while starting.
    #[error("{name}: {source}")]
    Trap {
        /// The filter.
        name: String,
        /// The failed call.
        source: CallError,
    },
    /// `proxy_on_vm_start` returned false.
    #[error(
        "{name}: the module refused to start (proxy_on_vm_start returned false) with the VM configuration of {config_bytes} bytes{}",
        guest_says(guest_log)
    )]
    VmStartRefused {
        /// The filter.
        name: String,
        /// The size of the VM configuration it refused (never its text: it may hold secrets).
        config_bytes: usize,
        /// What the guest logged at warn level or above while refusing (its reason, usually).
        guest_log: Vec<String>,
    },
    /// `proxy_on_configure` returned false.
    #[error(
        "{name}: the module rejected its plugin configuration of {config_bytes} bytes (proxy_on_configure returned false){}",
        guest_says(guest_log)
    )]
    ConfigureRefused {
        /// The filter.
        name: String,
        /// The size of the configuration it refused (never its text: it may hold secrets).
        config_bytes: usize,
        /// What the guest logged at warn level or above while refusing (its reason, usually).
        guest_log: Vec<String>,
    },
}

/// Formats the guest's own explanation for an error message (empty when it logged none).
fn guest_says(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!(": the module logged: {}", lines.join(" | "))
    }
}

/// The most warn-or-worse lines of a refusing guest an error quotes.
const MAX_REASON_LINES: usize = 4;
/// The longest guest line an error quotes, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// The warn-or-worse lines a VM logged so far: a module's reason for refusing to start. A
/// guest's log is its own business: at most [`MAX_REASON_LINES`] lines of at most
/// [`MAX_REASON_BYTES`] each, so the error stays one bounded line whatever the guest logged.
fn refusal_reasons(logs: &[LogLine]) -> Vec<String> {
    let all: Vec<&LogLine> = logs.iter().filter(|l| l.level >= LogLevel::Warn).collect();
    let mut reasons: Vec<String> = all
        .iter()
        .take(MAX_REASON_LINES)
        .map(|l| {
            let line = l.message.trim_end();
            if line.len() <= MAX_REASON_BYTES {
                return line.to_string();
            }
            let mut end = MAX_REASON_BYTES;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes, cut)", &line[..end], line.len())
        })
        .collect();
    if all.len() > MAX_REASON_LINES {
        reasons.push(format!("{} more line(s)", all.len() - MAX_REASON_LINES));
    }
    reasons
}

/// A call into the guest that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{callback} failed: {message}")]
pub struct CallError {
    /// The export that was called, e.g. `proxy_on_request_headers`.
    pub callback: &'static str,
    /// The trap, the backtrace and the guest's panic message if any.
    pub message: String,
}

/// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
pub(crate) type HttpCallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// Headers callbacks differ between ABI 0.1.0 (no end_of_stream) and 0.2.x.
#[derive(Clone)]
enum HeadersFn {
    V1(TypedFunc<(u32, u32), u32>),
    V2(TypedFunc<(u32, u32, u32), u32>),
}

#[derive(Clone, Default)]
pub(crate) struct Callbacks {
    on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    on_configure: Option<TypedFunc<(u32, u32), u32>>,
    on_request_headers: Option<HeadersFn>,
    on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_headers: Option<HeadersFn>,
    on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_delete: Option<TypedFunc<u32, ()>>,
    on_tick: Option<TypedFunc<u32, ()>>,
    pub(crate) on_http_call_response: Option<HttpCallResponseFn>,
    on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    pub(crate) on_grpc_receive: Option<TypedFunc<(u32, u32, u32), ()>>,
    pub(crate) on_grpc_close: Option<TypedFunc<(u32, u32, u32), ()>>,
    pub(crate) on_grpc_receive_initial_metadata: Option<TypedFunc<(u32, u32, u32), ()>>,
    pub(crate) on_grpc_receive_trailing_metadata: Option<TypedFunc<(u32, u32, u32), ()>>,
}

/// A started VM with its root context configured.
pub struct Vm {
    pub(crate) store: Store<HostState>,
    name: String,
    abi: AbiVersion,
    /// The module's callbacks, resolved once at start. Kept apart from
    /// [`Meter`] so a call can borrow a callback and the call machinery at
    /// once (no clone of a `TypedFunc` or of this `Arc` per call).
    pub(crate) cb: Arc<Callbacks>,
    root_id: u32,
    next_context_id: u32,
    next_tick_at: Option<u64>,
    /// Limits, meters and switches of every guest call.
    meter: Meter,
}

/// What every guest call needs besides the store and the callback: the
/// limits armed before it, what is measured around it and the trace switch.
struct Meter {
    /// The call timeout (for the message of a call stopped by it).
    timeout: Duration,
    /// Wall time spent inside guest calls since the last [`Vm::take_cost`],
    /// in [`crate::ticks`] (converted when taken).
    cost: u64,
    /// Record every host->guest call as a `trace` log line, as Envoy's `-l trace`.
    trace: bool,
    /// Fuel metering is on (the plugin is metered).
    metered: bool,
    /// Wasm instructions executed since the VM started (metered VMs).
    instructions: u64,
    /// Per-call records, when recording is on.
    calls: Option<Vec<CallRecord>>,
    /// Time each guest call for the guest cost ([`Vm::take_cost`]). Off
    /// only while a driver that reports no cost runs (the verdict-only
    /// stream driver, the bare lifecycle): two clock reads per call are
    /// most of the host's own per-call cost.
    time_calls: bool,
}

/// Formats call arguments the way Envoy's trace log does: `(2, 8, 1)`.
fn trace_args(debug: String) -> String {
    if debug.starts_with('(') {
        debug.replace(",)", ")")
    } else {
        format!("({debug})")
    }
}

fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    instance: &Instance,
    name: &str,
    export: &str,
) -> Result<Option<TypedFunc<P, R>>, VmError> {
    if instance.get_func(&mut *store, export).is_none() {
        return Ok(None);
    }
    instance
        .get_typed_func::<P, R>(&mut *store, export)
        .map(Some)
        .map_err(|e| VmError::BadExport {
            name: name.into(),
            export: export.into(),
            message: format!("{e}"),
        })
}

/// Describes a failed guest call.
fn describe(err: &wasmtime::Error, timeout: Duration, panic_lines: &[String]) -> String {
    let mut msg = if let Some(trap) = err.downcast_ref::<Trap>() {
        if *trap == Trap::Interrupt {
            format!("the guest ran for more than {timeout:?} and was stopped (endless loop?)")
        } else {
            trap.to_string()
        }
    } else if let Some(exit) = err.downcast_ref::<crate::abi::ProcExit>() {
        exit.to_string()
    } else {
        err.root_cause().to_string()
    };
    for line in panic_lines {
        msg.push_str("\nguest said: ");
        msg.push_str(line);
    }
    if let Some(bt) = err.downcast_ref::<WasmBacktrace>() {
        let text = bt.to_string();
        if !text.trim().is_empty() {
            msg.push('\n');
            msg.push_str(text.trim_end());
        }
    }
    msg
}

impl Vm {
    /// Instantiates `plugin` in a fresh store and starts and configures its
    /// root context (`_initialize`/`_start`, `proxy_on_context_create`,
    /// `proxy_on_vm_start`, `proxy_on_configure`).
    pub fn start(plugin: &Plugin, settings: VmSettings) -> Result<Self, VmError> {
        Self::start_shared(plugin, settings, plugin.shared.clone())
    }

    /// Like [`Vm::start`], with the shared data and queues of `shared`
    /// instead of the plugin's own (VMs given the same registry see the same
    /// shared data per `vm_id`, as Envoy's VMs in one process do).
    pub fn start_shared(
        plugin: &Plugin,
        settings: VmSettings,
        shared: Arc<SharedRegistry>,
    ) -> Result<Self, VmError> {
        Self::start_inner(plugin, settings, shared, false)
    }

    /// Like [`Vm::start_shared`] with the call trace on from the first call,
    /// both ways: callbacks (see [`Vm::set_trace`]), and the guest's host
    /// calls and the host's allocations in the guest, through a per-store
    /// wrapper around every import (`[vm->host] env.proxy_log(1, 1088192, 49)`,
    /// `[vm<-host] env.proxy_log return: 0`; see `harness/docs/trace.md`).
    pub fn start_traced(
        plugin: &Plugin,
        settings: VmSettings,
        shared: Arc<SharedRegistry>,
    ) -> Result<Self, VmError> {
        Self::start_inner(plugin, settings, shared, true)
    }

    fn start_inner(
        plugin: &Plugin,
        settings: VmSettings,
        shared: Arc<SharedRegistry>,
        trace: bool,
    ) -> Result<Self, VmError> {
        let name = plugin.name.clone();
        let settings = Arc::new(settings);
        let timeout = settings.call_timeout;
        let deadline_ticks = (timeout.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1;
        let mut store = Store::new(
            &plugin.engine,
            HostState::new(settings.clone(), shared, plugin.abi),
        );
        // The call timeout, without arming a deadline before every call:
        // the deadline comes one epoch tick ahead, and at each tick that
        // finds guest code running the callback counts the ticks the
        // current call has seen (a new call number starts the count again)
        // and stops the call when it has seen `deadline_ticks` of them.
        // Since the count starts at the first tick, a call runs at least
        // `call_timeout` and at most one tick more before it is stopped.
        let mut seen_call = u64::MAX;
        let mut ticks = 0u64;
        store.epoch_deadline_callback(move |ctx| {
            let call = ctx.data().calls_started;
            if call != seen_call {
                seen_call = call;
                ticks = 0;
            }
            ticks += 1;
            Ok(if ticks >= deadline_ticks {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(1)
            })
        });
        store.set_epoch_deadline(1);
        // Envoy's memory limit (1 GiB by default): growth past it fails as in V8.
        store.limiter(|state| &mut state.memory_limiter);
        if plugin.metered {
            // A start function runs during instantiation: it needs fuel too.
            let _ = store.set_fuel(FUEL_PER_CALL);
        }
        let instance = if plugin.metered || trace {
            // Counting and tracing wrap every import: the plugin's wrapping
            // linker, told by this store what to do.
            store.data_mut().wrap = crate::abi::Wrap {
                count: plugin.metered,
                trace,
            };
            plugin.wrapped_pre.instantiate(&mut store)
        } else {
            plugin.instance_pre.instantiate(&mut store)
        }
        .map_err(|e| VmError::Instantiate {
            name: name.clone(),
            message: match store.data().memory_limiter.explain() {
                Some(why) => format!("{}: {why}", describe(&e, timeout, &[])),
                None => describe(&e, timeout, &[]),
            },
        })?;
        let handles = GuestHandles::from_instance(&mut store, &instance).map_err(|e| {
            let export = match &e {
                HandlesError::NoMemory => "memory",
                HandlesError::NoAllocator => "malloc",
                HandlesError::BadAllocator(n, _) => n.as_str(),
            }
            .to_string();
            VmError::BadExport {
                name: name.clone(),
                export,
                message: e.to_string(),
            }
        })?;
        store.data_mut().guest = Some(Arc::new(if trace { handles.traced() } else { handles }));

        let s = &mut store;
        let i = &instance;
        let n = name.as_str();
        let headers =
            |s: &mut Store<HostState>, export: &str| -> Result<Option<HeadersFn>, VmError> {
                Ok(if plugin.abi == AbiVersion::V0_1_0 {
                    typed(s, i, n, export)?.map(HeadersFn::V1)
                } else {
                    typed(s, i, n, export)?.map(HeadersFn::V2)
                })
            };
        let cb = Callbacks {
            on_context_create: typed(s, i, n, "proxy_on_context_create")?,
            on_vm_start: typed(s, i, n, "proxy_on_vm_start")?,
            on_configure: typed(s, i, n, "proxy_on_configure")?,
            on_request_headers: headers(s, "proxy_on_request_headers")?,
            on_request_body: typed(s, i, n, "proxy_on_request_body")?,
            on_response_headers: headers(s, "proxy_on_response_headers")?,
            on_response_body: typed(s, i, n, "proxy_on_response_body")?,
            on_request_trailers: typed(s, i, n, "proxy_on_request_trailers")?,
            on_response_trailers: typed(s, i, n, "proxy_on_response_trailers")?,
            on_log: typed(s, i, n, "proxy_on_log")?,
            on_done: typed(s, i, n, "proxy_on_done")?,
            on_delete: typed(s, i, n, "proxy_on_delete")?,
            on_tick: typed(s, i, n, "proxy_on_tick")?,
            on_http_call_response: typed(s, i, n, "proxy_on_http_call_response")?,
            on_queue_ready: typed(s, i, n, "proxy_on_queue_ready")?,
            on_grpc_receive: typed(s, i, n, "proxy_on_grpc_receive")?,
            on_grpc_close: typed(s, i, n, "proxy_on_grpc_close")?,
            on_grpc_receive_initial_metadata: typed(
                s,
                i,
                n,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            on_grpc_receive_trailing_metadata: typed(
                s,
                i,
                n,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
        };
        let initialize: Option<TypedFunc<(), ()>> = typed(s, i, n, "_initialize")?;
        let start: Option<TypedFunc<(), ()>> = typed(s, i, n, "_start")?;
        let main: Option<TypedFunc<(u32, u32), u32>> = typed(s, i, n, "main")?;
        let main_void: Option<TypedFunc<(), u32>> = typed(s, i, n, "__main_void")?;

        let mut vm = Self {
            store,
            name: name.clone(),
            abi: plugin.abi,
            cb: Arc::new(cb),
            root_id: 1,
            next_context_id: 2,
            next_tick_at: None,
            meter: Meter {
                timeout,
                cost: 0,
                trace,
                metered: plugin.metered,
                instructions: 0,
                calls: None,
                time_calls: true,
            },
        };
        let trap = |source: CallError| VmError::Trap {
            name: name.clone(),
            source,
        };
        if let Some(f) = initialize {
            vm.call("_initialize", 0, &f, ()).map_err(trap)?;
            if let Some(f) = main {
                vm.call("main", 0, &f, (0, 0)).map_err(trap)?;
            } else if let Some(f) = main_void {
                vm.call("__main_void", 0, &f, ()).map_err(trap)?;
            }
        } else if let Some(f) = start {
            match vm.call("_start", 0, &f, ()) {
                Err(_) if vm.store.data().proc_exit == Some(0) => {}
                r => r.map_err(trap)?,
            }
        }
        let root = vm.root_id;
        vm.store.data_mut().root_context_id = root;
        vm.store.data_mut().live_contexts.insert(root);
        if let Some(f) = vm.cb.on_context_create.clone() {
            vm.store.data_mut().in_configure = true;
            let r = vm.call("proxy_on_context_create", root, &f, (root, 0));
            vm.store.data_mut().in_configure = false;
            r.map_err(trap)?;
        }
        if let Some(f) = vm.cb.on_vm_start.clone() {
            let size = settings.vm_config.len() as u32;
            if vm
                .call("proxy_on_vm_start", root, &f, (root, size))
                .map_err(trap)?
                == 0
            {
                return Err(VmError::VmStartRefused {
                    name,
                    config_bytes: settings.vm_config.len(),
                    guest_log: refusal_reasons(&vm.store.data().logs),
                });
            }
        }
        if let Some(f) = vm.cb.on_configure.clone() {
            let size = settings.plugin_config.len() as u32;
            vm.store.data_mut().in_configure = true;
            let r = vm.call("proxy_on_configure", root, &f, (root, size));
            vm.store.data_mut().in_configure = false;
            if r.map_err(trap)? == 0 {
                return Err(VmError::ConfigureRefused {
                    name,
                    config_bytes: settings.plugin_config.len(),
                    guest_log: refusal_reasons(&vm.store.data().logs),
                });
            }
        }
        vm.drain_async().map_err(|source| VmError::Trap {
            name: vm.name.clone(),
            source,
        })?;
        vm.arm_tick();
        Ok(vm)
    }

    /// Calls a guest export as context `context`, timing it and turning
    /// traps into [`CallError`]s.
    #[inline]
    pub(crate) fn call<P: WasmParams + std::fmt::Debug, R: WasmResults + std::fmt::Debug>(
        &mut self,
        callback: &'static str,
        context: u32,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        self.meter
            .call(&mut self.store, callback, context, f, params)
    }

    /// Turns the call trace of host->guest calls on or off: each callback
    /// (and its return value) becomes a `trace` log line, in the shape Envoy
    /// prints with `-l trace` (`[host->vm] proxy_on_request_headers(2, 8, 1)`).
    /// Guest->host calls and allocations are traced only by a VM started
    /// with [`Vm::start_traced`] (their wrapper is set up at instantiation,
    /// so untraced VMs pay nothing for it).
    pub fn set_trace(&mut self, on: bool) {
        self.meter.trace = on;
    }

    /// Turns the per-call timing behind [`Vm::take_cost`] on or off and
    /// returns what it was (drivers that report no cost turn it off while
    /// they run; per-call records, [`Vm::record_calls`], are timed anyway).
    pub(crate) fn set_call_timing(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.meter.time_calls, on)
    }
}

impl Meter {
    /// One guest call: the trace (when on, out of line), then the call.
    #[inline(always)]
    fn call<P: WasmParams + std::fmt::Debug, R: WasmResults + std::fmt::Debug>(
        &mut self,
        store: &mut Store<HostState>,
        callback: &'static str,
        context: u32,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        if self.trace {
            return self.call_traced(store, callback, context, f, params);
        }
        self.call_untraced(store, callback, context, f, params)
    }

    #[cold]
    #[inline(never)]
    fn call_traced<P: WasmParams + std::fmt::Debug, R: WasmResults + std::fmt::Debug>(
        &mut self,
        store: &mut Store<HostState>,
        callback: &'static str,
        context: u32,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        let line = format!("[host->vm] {callback}{}", trace_args(format!("{params:?}")));
        crate::abi::trace_line(store.data_mut(), line);
        let result = self.call_untraced(store, callback, context, f, params);
        let line = match &result {
            Ok(r) => {
                let r = format!("{r:?}");
                let r = if r == "()" { "void".to_string() } else { r };
                format!("[host<-vm] {callback} return: {r}")
            }
            Err(_) => format!("[host<-vm] {callback} failed"),
        };
        crate::abi::trace_line(store.data_mut(), line);
        result
    }

    #[inline(always)]
    fn call_untraced<P: WasmParams, R: WasmResults>(
        &mut self,
        store: &mut Store<HostState>,
        callback: &'static str,
        context: u32,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        // (The effective context is already 0: every call resets it after.)
        // A new call number restarts the call timeout's tick count (see
        // `Vm::start_inner`).
        let logs_before = {
            let state = store.data_mut();
            state.current_context = context;
            state.calls_started = state.calls_started.wrapping_add(1);
            state.logs.len()
        };
        let result = if self.metered || self.time_calls || self.calls.is_some() {
            self.call_measured(store, callback, f, params)
        } else {
            f.call(&mut *store, params)
        };
        store.data_mut().effective_context = 0;
        match result {
            Ok(r) => Ok(r),
            Err(e) => Err(self.failed(store, callback, logs_before, &e)),
        }
    }

    /// A call with fuel, timing or a per-call record.
    #[inline(never)]
    fn call_measured<P: WasmParams, R: WasmResults>(
        &mut self,
        store: &mut Store<HostState>,
        callback: &'static str,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> wasmtime::Result<R> {
        if self.metered {
            let _ = store.set_fuel(FUEL_PER_CALL);
        }
        if self.calls.is_none() {
            // No per-call record: at most the cost sum, on the cheap clock
            // (converted when taken).
            let started = self.time_calls.then(crate::ticks::now);
            let result = f.call(&mut *store, params);
            if let Some(t) = started {
                self.cost = self.cost.wrapping_add(crate::ticks::now().wrapping_sub(t));
            }
            self.instructions += self.fuel_used(store);
            return result;
        }
        let (started, ticks) = (Instant::now(), crate::ticks::now());
        let result = f.call(&mut *store, params);
        let wall = started.elapsed();
        if self.time_calls {
            self.cost = self
                .cost
                .wrapping_add(crate::ticks::now().wrapping_sub(ticks));
        }
        let instructions = self.fuel_used(store);
        self.instructions += instructions;
        if let Some(calls) = self.calls.as_mut() {
            calls.push(CallRecord {
                callback,
                wall,
                instructions,
            });
        }
        result
    }

    /// Fuel the last call used (metered VMs; 0 otherwise).
    #[inline]
    fn fuel_used(&self, store: &Store<HostState>) -> u64 {
        if self.metered {
            FUEL_PER_CALL.saturating_sub(store.get_fuel().unwrap_or(FUEL_PER_CALL))
        } else {
            0
        }
    }

    /// Turns a failed call into a [`CallError`]: the trap, the backtrace
    /// and what the guest logged at critical level during the call (its
    /// panic message).
    #[cold]
    #[inline(never)]
    fn failed(
        &self,
        store: &Store<HostState>,
        callback: &'static str,
        logs_before: usize,
        e: &wasmtime::Error,
    ) -> CallError {
        let logs = &store.data().logs;
        let panic_lines: Vec<String> = logs[logs_before.min(logs.len())..]
            .iter()
            .filter(|l| l.level == LogLevel::Critical)
            .map(|l| l.message.clone())
            .collect();
        let mut message = describe(e, self.timeout, &panic_lines);
        if let Some(why) = store.data().memory_limiter.explain() {
            message = format!("{why}\n{message}");
        }
        CallError { callback, message }
    }
}

impl Vm {
    /// Delivers http call answers and queue notifications scheduled by the
    /// last callback (repeatedly, since handlers may schedule more; bounded).
    #[inline]
    pub(crate) fn drain_async(&mut self) -> Result<(), CallError> {
        let state = self.store.data();
        if state.pending_queue_ready.is_empty() && state.outstanding.next_due().is_none() {
            // Nothing scheduled (the usual case): no call, no bookkeeping.
            return Ok(());
        }
        self.drain_scheduled()
    }

    #[inline(never)]
    fn drain_scheduled(&mut self) -> Result<(), CallError> {
        for _ in 0..64 {
            // Callout answers due by now (see `crate::callouts`).
            let delivered = self.deliver_due_callouts()?;
            let queues = std::mem::take(&mut self.store.data_mut().pending_queue_ready);
            if !delivered && queues.is_empty() {
                return Ok(());
            }
            for (context, token) in queues {
                if let Some(f) = self.cb.on_queue_ready.clone() {
                    self.call("proxy_on_queue_ready", context, &f, (context, token))?;
                }
            }
        }
        Ok(())
    }

    fn arm_tick(&mut self) {
        let period = u64::from(self.store.data().tick_period_ms);
        self.next_tick_at =
            (period > 0).then(|| self.store.data().clock.monotonic + period * 1_000_000);
    }

    /// Moves the virtual clock forward, firing `proxy_on_tick` on the root
    /// context for every tick period that elapses and delivering the callout
    /// answers that fall due on the way, in time order.
    pub fn advance_clock(&mut self, by: Duration) -> Result<(), CallError> {
        let target = self
            .store
            .data()
            .clock
            .monotonic
            .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
        if self.next_tick_at.is_none() {
            self.arm_tick();
        }
        loop {
            // Ticks and callout answers due on the way, in time order.
            let tick = self.next_tick_at.filter(|&at| at <= target);
            let answer = self.next_callout_due().filter(|&at| at <= target);
            let Some(at) = tick.into_iter().chain(answer).min() else {
                break;
            };
            let now = self.store.data().clock.monotonic;
            self.store
                .data_mut()
                .clock
                .advance(Duration::from_nanos(at.saturating_sub(now)));
            if answer == Some(at) {
                self.drain_async()?;
                continue;
            }
            if let Some(f) = self.cb.on_tick.clone() {
                let root = self.root_id;
                self.call("proxy_on_tick", root, &f, root)?;
                self.drain_async()?;
            }
            self.arm_tick();
            if self.next_tick_at.is_some_and(|next| next <= at) {
                break;
            }
        }
        let now = self.store.data().clock.monotonic;
        self.store
            .data_mut()
            .clock
            .advance(Duration::from_nanos(target.saturating_sub(now)));
        Ok(())
    }

    /// Allocates a new stream context id (never the root's).
    pub(crate) fn new_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id = self.next_context_id.wrapping_add(1).max(2);
        id
    }

    /// The root context's id.
    pub fn root_id(&self) -> u32 {
        self.root_id
    }

    /// The module's ABI version.
    pub fn abi(&self) -> AbiVersion {
        self.abi
    }

    /// Turns per-call recording on or off (see [`Vm::drain_calls`]).
    pub fn record_calls(&mut self, on: bool) {
        self.meter.calls = if on {
            Some(self.meter.calls.take().unwrap_or_default())
        } else {
            None
        };
    }

    /// Per-call records are on (see [`Vm::record_calls`]).
    pub fn recording_calls(&self) -> bool {
        self.meter.calls.is_some()
    }

    /// Moves the calls recorded since the last drain into `out`.
    pub fn drain_calls(&mut self, out: &mut Vec<CallRecord>) {
        if let Some(calls) = self.meter.calls.as_mut() {
            out.append(calls);
        }
    }

    /// Wasm instructions executed since the VM started (wasmtime fuel;
    /// always 0 unless the plugin is metered). Deterministic: the same calls
    /// give the same count on every run and machine.
    pub fn instructions(&self) -> u64 {
        self.meter.instructions
    }

    /// The guest's linear memory size in bytes.
    pub fn memory_size(&self) -> u64 {
        crate::abi::memory::memory_size(&self.store)
    }

    /// Wall time spent in the guest since the last call, reset to zero.
    pub fn take_cost(&mut self) -> Duration {
        crate::ticks::to_duration(std::mem::take(&mut self.meter.cost))
    }

    /// The host state (logs, metrics, clock).
    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    /// Ends the current exchange's recorded callout answers, so that a
    /// timer firing later cannot take them.
    pub fn clear_exchange_callouts(&mut self) {
        self.store.data_mut().exchange_callouts = Default::default();
    }

    /// The log lines the guest wrote since the last call, taken.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().take_logs()
    }

    /// The stream the VM is working on, if any (the filter manager's view).
    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamState> {
        self.store.data_mut().stream.as_mut()
    }

    /// Hands the VM a stream (or none) and the exchange's recorded callout
    /// answers, as the filter manager resumes an exchange.
    pub(crate) fn attach_stream(
        &mut self,
        stream: Option<StreamState>,
        callouts: ExchangeCallouts,
    ) {
        let state = self.store.data_mut();
        state.stream = stream;
        state.exchange_callouts = callouts;
    }

    /// Takes the VM's stream and the exchange's callout answers back, as the
    /// filter manager parks an exchange.
    pub(crate) fn detach_stream(&mut self) -> (Option<StreamState>, ExchangeCallouts) {
        let state = self.store.data_mut();
        (
            state.stream.take(),
            std::mem::take(&mut state.exchange_callouts),
        )
    }

    /// Ends the VM's stream and takes the callouts it made: their
    /// descriptions and their records.
    pub(crate) fn end_stream(&mut self) -> (Vec<String>, Vec<CalloutRecord>) {
        let state = self.store.data_mut();
        state.stream = None;
        (state.take_callouts(), state.take_callout_records())
    }

    /// The host state, mutable: for the VM's own modules (delivery of
    /// callouts, the bare lifecycle); everything else goes through the
    /// semantic methods above.
    pub(crate) fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    // Typed callback access for the stream driver.

    pub(crate) fn call_context_create(&mut self, ctx: u32) -> Result<(), CallError> {
        self.store.data_mut().live_contexts.insert(ctx);
        // The callbacks and the call machinery are separate fields: the
        // callback is borrowed, not cloned, for the call.
        if let Some(f) = &self.cb.on_context_create {
            let root = self.root_id;
            self.meter.call(
                &mut self.store,
                "proxy_on_context_create",
                ctx,
                f,
                (ctx, root),
            )?;
        }
        Ok(())
    }

    /// Calls an optional `u32`-returning stream callback (absent: 0), then
    /// runs whatever asynchronous work it queued.
    #[inline]
    fn call_stream<P: WasmParams + std::fmt::Debug>(
        &mut self,
        name: &'static str,
        ctx: u32,
        f: impl FnOnce(&Callbacks) -> Option<&TypedFunc<P, u32>>,
        params: P,
    ) -> Result<u32, CallError> {
        let r = match f(&self.cb) {
            None => 0,
            Some(f) => self.meter.call(&mut self.store, name, ctx, f, params)?,
        };
        self.drain_async()?;
        Ok(r)
    }

    pub(crate) fn call_headers(
        &mut self,
        dir: Direction,
        ctx: u32,
        n: u32,
        eos: bool,
    ) -> Result<u32, CallError> {
        let (f, name) = if dir.is_response() {
            (&self.cb.on_response_headers, "proxy_on_response_headers")
        } else {
            (&self.cb.on_request_headers, "proxy_on_request_headers")
        };
        let r = match f {
            Some(HeadersFn::V2(f)) => {
                self.meter
                    .call(&mut self.store, name, ctx, f, (ctx, n, u32::from(eos)))?
            }
            Some(HeadersFn::V1(f)) => self.meter.call(&mut self.store, name, ctx, f, (ctx, n))?,
            None => 0,
        };
        self.drain_async()?;
        Ok(r)
    }

    pub(crate) fn call_body(
        &mut self,
        dir: Direction,
        ctx: u32,
        size: u32,
        eos: bool,
    ) -> Result<u32, CallError> {
        let params = (ctx, size, u32::from(eos));
        if dir.is_response() {
            self.call_stream(
                "proxy_on_response_body",
                ctx,
                |cb| cb.on_response_body.as_ref(),
                params,
            )
        } else {
            self.call_stream(
                "proxy_on_request_body",
                ctx,
                |cb| cb.on_request_body.as_ref(),
                params,
            )
        }
    }

    pub(crate) fn call_trailers(
        &mut self,
        dir: Direction,
        ctx: u32,
        n: u32,
    ) -> Result<u32, CallError> {
        if dir.is_response() {
            self.call_stream(
                "proxy_on_response_trailers",
                ctx,
                |cb| cb.on_response_trailers.as_ref(),
                (ctx, n),
            )
        } else {
            self.call_stream(
                "proxy_on_request_trailers",
                ctx,
                |cb| cb.on_request_trailers.as_ref(),
                (ctx, n),
            )
        }
    }

    /// The filter's name (its path or the name it was loaded under).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `proxy_on_log` (Envoy runs every filter's access log first).
    pub(crate) fn call_log(&mut self, ctx: u32) -> Result<(), CallError> {
        if let Some(f) = &self.cb.on_log {
            self.meter
                .call(&mut self.store, "proxy_on_log", ctx, f, ctx)?;
        }
        Ok(())
    }

    /// `proxy_on_done` then `proxy_on_delete` (when Envoy destroys the filters).
    pub(crate) fn call_done_delete(&mut self, ctx: u32) -> Result<(), CallError> {
        let r = self.done_delete(ctx);
        self.store.data_mut().live_contexts.remove(&ctx);
        r
    }

    #[inline]
    fn done_delete(&mut self, ctx: u32) -> Result<(), CallError> {
        if let Some(f) = &self.cb.on_done {
            self.meter
                .call(&mut self.store, "proxy_on_done", ctx, f, ctx)?;
        }
        if let Some(f) = &self.cb.on_delete {
            self.meter
                .call(&mut self.store, "proxy_on_delete", ctx, f, ctx)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::HeaderMap;

    /// A proxy-wasm 0.2.1 module whose request-headers callback spins
    /// `headers * 2^40` loop iterations: none without headers, else far
    /// longer than any call timeout.
    const SPIN_WAT: &str = r#"(module
      (memory (export "memory") 1)
      (func (export "malloc") (param i32) (result i32) (i32.const 1024))
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (local $n i64)
        (local.set $n (i64.shl (i64.extend_i32_u (local.get 1)) (i64.const 40)))
        (block $done
          (loop $spin
            (br_if $done (i64.eqz (local.get $n)))
            (local.set $n (i64.sub (local.get $n) (i64.const 1)))
            (br $spin)))
        (i32.const 0)))"#;

    /// The plugin comes along: its epoch ticker (which the call timeout
    /// counts) runs while it lives.
    fn vm(timeout: Duration) -> (Plugin, Vm) {
        let wasm = wat::parse_str(SPIN_WAT).expect("assembles");
        let plugin = Plugin::from_bytes("spin", &wasm).expect("loads");
        let settings = VmSettings {
            call_timeout: timeout,
            ..VmSettings::default()
        };
        let vm = Vm::start(&plugin, settings).expect("starts");
        (plugin, vm)
    }

    #[test]
    fn the_call_timeout_is_per_call_not_per_vm() {
        // Many quick calls over three times the timeout's wall time: none is
        // stopped (the tick count starts again with every call). The timeout
        // is far above what a busy test machine may deschedule a quick call
        // for, so only a per-VM count could stop one.
        let (_plugin, mut vm) = vm(Duration::from_millis(200));
        let began = Instant::now();
        let mut runs = 0;
        while began.elapsed() < Duration::from_millis(600) || runs < 10 {
            vm.run_bare(HeaderMap::default(), HeaderMap::default())
                .expect("a quick call is not stopped");
            std::thread::sleep(Duration::from_millis(20));
            runs += 1;
        }
    }

    #[test]
    fn a_looping_call_is_stopped_with_its_callback_named() {
        // 1 header: 2^40 iterations, far beyond the timeout.
        let (_plugin, mut vm) = vm(Duration::from_millis(30));
        let request = HeaderMap::from_pairs([(":path", "/")]);
        let err = vm
            .run_bare(request, HeaderMap::default())
            .expect_err("the loop is stopped");
        assert_eq!(err.callback, "proxy_on_request_headers");
        assert!(err.message.contains("was stopped"), "{}", err.message);
        // The VM goes on: the next quick call is not stopped.
        vm.run_bare(HeaderMap::default(), HeaderMap::default())
            .expect("the next call runs");
    }
}
