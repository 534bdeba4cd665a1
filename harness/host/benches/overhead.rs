//! What the harness costs on top of wasmtime itself.
//!
//! One run measures, with divan and then with an interleaved head-to-head
//! that prints the ratios:
//! - the no-op lifecycle (context create, request headers, response headers,
//!   log, done, delete) through a minimal raw-wasmtime host written here vs
//!   through the harness ([`Vm::run_bare`]) on the same guest;
//! - header access (three request headers read, one response header added),
//!   raw vs harness;
//! - replay throughput of the no-op filter through the stream driver
//!   (verdict-only and full report), with heap allocations per request;
//! - VM creation from a compiled module, raw vs harness.
//!
//! (a) and (b) are measured twice: with the header lists shared by both
//! sides (the hosts' own costs) and copied per request (as a proxy hands
//! fresh headers to the host for every stream).
//!
//! Targets (issue 4): ratios within 1.5x, replay above 500k requests/s on
//! one core, VM creation under 50 us.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tollgate_host::bare;
use tollgate_host::plugin::Plugin;
use tollgate_host::state::{HeaderMap, VmSettings};
use tollgate_host::stream::{
    self, BodyDelivery, FailurePolicy, Lane, Prepared, Spare, StreamInput,
};
use tollgate_host::verdict::Verdict;
use tollgate_host::vm::Vm;
use tollgate_traffic::{Exchange, har};
use wasmtime::{Caller, Engine, Instance, InstancePre, Linker, Memory, Module, Store, TypedFunc};

/// Counts heap allocations so the head-to-head can print allocations per
/// request (deterministic, unlike time).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// own arguments; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations (and reallocations) per call of `f`, over `n` calls.
fn allocations_per(n: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut sink = 0usize;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        sink = sink.wrapping_add(f());
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    black_box(sink);
    (after - before) as f64 / n as f64
}

fn main() {
    divan::main();
    head_to_head();
}

// ---------------------------------------------------------------------------
// Shared inputs.

fn request_pairs() -> Vec<(String, String)> {
    [
        (":method", "GET"),
        (":path", "/api/v1/items?page=2"),
        (":authority", "shop.example.com"),
        (":scheme", "https"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-request-id", "5f0c6f1e-8a3b-4a63-9a53-0c8b9f1d2e77"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn response_pairs() -> Vec<(String, String)> {
    [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn wasm(which: &str) -> Vec<u8> {
    let r = if which == "noop" {
        bare::noop_module()
    } else {
        bare::headers_module()
    };
    r.unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// The minimal raw-wasmtime host: just the two header imports, memory and
// allocator looked up once, headers as plain vectors.

/// Header lists shared copy-on-write, as the harness's `HeaderMap` is, so
/// that neither side pays for copying the inputs per iteration.
type Pairs = Arc<Vec<(String, String)>>;

#[derive(Default)]
struct RawState {
    request: Pairs,
    response: Pairs,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<u32, u32>>,
}

fn raw_linker(engine: &Engine) -> Linker<RawState> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            "env",
            "proxy_get_header_map_value",
            |mut c: Caller<'_, RawState>,
             _kind: u32,
             kp: u32,
             kl: u32,
             pp: u32,
             sp: u32|
             -> wasmtime::Result<u32> {
                let (Some(mem), Some(alloc)) = (c.data().memory, c.data().alloc.clone()) else {
                    return Ok(10);
                };
                let key = &mem.data(&c)[kp as usize..(kp + kl) as usize];
                let Some(value) = c
                    .data()
                    .request
                    .iter()
                    .find(|(k, _)| k.as_bytes() == key)
                    .map(|(_, v)| v.clone())
                else {
                    return Ok(1);
                };
                let len = value.len() as u32;
                let p = alloc.call(&mut c, len)?;
                let d = mem.data_mut(&mut c);
                d[p as usize..(p + len) as usize].copy_from_slice(value.as_bytes());
                d[pp as usize..pp as usize + 4].copy_from_slice(&p.to_le_bytes());
                d[sp as usize..sp as usize + 4].copy_from_slice(&len.to_le_bytes());
                Ok(0)
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    linker
        .func_wrap(
            "env",
            "proxy_add_header_map_value",
            |mut c: Caller<'_, RawState>, _kind: u32, kp: u32, kl: u32, vp: u32, vl: u32| -> u32 {
                let Some(mem) = c.data().memory else {
                    return 10;
                };
                let (d, state) = mem.data_and_store_mut(&mut c);
                let k = String::from_utf8_lossy(&d[kp as usize..(kp + kl) as usize]).into_owned();
                let v = String::from_utf8_lossy(&d[vp as usize..(vp + vl) as usize]).into_owned();
                Arc::make_mut(&mut state.response).push((k, v));
                0
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    linker
}

struct RawVm {
    store: Store<RawState>,
    create: TypedFunc<(u32, u32), ()>,
    request_headers: TypedFunc<(u32, u32, u32), u32>,
    response_headers: TypedFunc<(u32, u32, u32), u32>,
    log: TypedFunc<u32, ()>,
    done: TypedFunc<u32, u32>,
    delete: TypedFunc<u32, ()>,
    next: u32,
}

fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    store: &mut Store<RawState>,
    instance: &Instance,
    name: &str,
) -> TypedFunc<P, R> {
    instance
        .get_typed_func(&mut *store, name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl RawVm {
    /// Instantiates and starts the root context (create, vm_start, configure).
    fn start(engine: &Engine, pre: &InstancePre<RawState>) -> Self {
        let mut store = Store::new(engine, RawState::default());
        let instance = pre
            .instantiate(&mut store)
            .unwrap_or_else(|e| panic!("{e}"));
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = typed::<u32, u32>(&mut store, &instance, "malloc");
        store.data_mut().memory = memory;
        store.data_mut().alloc = Some(alloc);
        let create = typed(&mut store, &instance, "proxy_on_context_create");
        let vm_start: TypedFunc<(u32, u32), u32> =
            typed(&mut store, &instance, "proxy_on_vm_start");
        let configure: TypedFunc<(u32, u32), u32> =
            typed(&mut store, &instance, "proxy_on_configure");
        let mut vm = Self {
            request_headers: typed(&mut store, &instance, "proxy_on_request_headers"),
            response_headers: typed(&mut store, &instance, "proxy_on_response_headers"),
            log: typed(&mut store, &instance, "proxy_on_log"),
            done: typed(&mut store, &instance, "proxy_on_done"),
            delete: typed(&mut store, &instance, "proxy_on_delete"),
            create,
            store,
            next: 2,
        };
        let ok = (|| -> wasmtime::Result<()> {
            vm.create.call(&mut vm.store, (1, 0))?;
            vm_start.call(&mut vm.store, (1, 0))?;
            configure.call(&mut vm.store, (1, 0))?;
            Ok(())
        })();
        ok.unwrap_or_else(|e| panic!("{e}"));
        vm
    }

    /// The bare lifecycle, as [`Vm::run_bare`] does it.
    fn run(&mut self, request: Pairs, response: Pairs) -> wasmtime::Result<u32> {
        let ctx = self.next;
        self.next += 1;
        let (nq, ns) = (request.len() as u32, response.len() as u32);
        self.store.data_mut().request = request;
        self.store.data_mut().response = response;
        let s = &mut self.store;
        self.create.call(&mut *s, (ctx, 1))?;
        let a = self.request_headers.call(&mut *s, (ctx, nq, 1))?;
        let b = self.response_headers.call(&mut *s, (ctx, ns, 1))?;
        self.log.call(&mut *s, ctx)?;
        self.done.call(&mut *s, ctx)?;
        self.delete.call(&mut *s, ctx)?;
        Ok(a + b + s.data().response.len() as u32)
    }
}

struct RawHost {
    engine: Engine,
    pre: InstancePre<RawState>,
}

impl RawHost {
    fn new(bytes: &[u8]) -> Self {
        let engine = Engine::default();
        let module = Module::new(&engine, bytes).unwrap_or_else(|e| panic!("{e}"));
        let pre = raw_linker(&engine)
            .instantiate_pre(&module)
            .unwrap_or_else(|e| panic!("{e}"));
        Self { engine, pre }
    }

    fn vm(&self) -> RawVm {
        RawVm::start(&self.engine, &self.pre)
    }
}

// ---------------------------------------------------------------------------
// The harness side.

fn plugin(which: &str) -> Plugin {
    Plugin::from_bytes(which, &wasm(which)).unwrap_or_else(|e| panic!("{e}"))
}

fn harness_vm(plugin: &Plugin) -> Vm {
    Vm::start(plugin, VmSettings::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn harness_run(vm: &mut Vm, request: &HeaderMap, response: &HeaderMap) -> usize {
    match vm.run_bare(request.clone(), response.clone()) {
        Ok(o) => o.response_headers.len() + o.request_action as usize,
        Err(e) => panic!("{e}"),
    }
}

fn demo_inputs() -> Vec<StreamInput> {
    demo_exchanges()
        .iter()
        .map(StreamInput::from_recording)
        .collect()
}

/// One exchange through the stream driver with the full outcome (step log,
/// messages as they left the chain), as `tollgate replay` runs it.
fn full_run(vm: &mut Vm, input: &Prepared<'_>) -> usize {
    let mut lanes = [Lane {
        vm: Some(vm),
        name: String::new(),
        policy: FailurePolicy::FailClosed,
    }];
    let out = stream::run_prepared(&mut lanes, input);
    out.client_response.status as usize + out.steps.len()
}

/// [`full_run`] of an exchange prepared for this one run, as the replay
/// drives it ([`stream::run_once`]: what left the chain untouched moves
/// into the outcome).
fn full_run_once(vm: &mut Vm, input: Prepared<'_>) -> usize {
    let mut lanes = [Lane {
        vm: Some(vm),
        name: String::new(),
        policy: FailurePolicy::FailClosed,
    }];
    let out = stream::run_once(&mut lanes, input);
    out.client_response.status as usize + out.steps.len()
}

/// [`full_run`] of an exchange handed over to the driver, as `tollgate
/// replay` hands it ([`Prepared::from_recording_owned`], [`stream::run_owned`]).
fn full_run_owned(vm: &mut Vm, mut exchange: Exchange, spare: &mut Spare) -> usize {
    let mut lanes = [Lane {
        vm: Some(vm),
        name: String::new(),
        policy: FailurePolicy::FailClosed,
    }];
    let input = Prepared::from_recording_owned(&mut exchange, BodyDelivery::Envoy, spare);
    let (out, recorded) = stream::run_owned(&mut lanes, input, spare);
    out.client_response.status as usize + out.steps.len() + usize::from(recorded.request.is_some())
}

/// [`full_run_owned`] that gives the exchange its messages back afterwards
/// (from the recording or from the outcome carrying them untouched), as
/// the streamed replay does, so the same exchanges can go round again.
fn full_run_restored(vm: &mut Vm, exchange: &mut Exchange, spare: &mut Spare) -> usize {
    let mut lanes = [Lane {
        vm: Some(vm),
        name: String::new(),
        policy: FailurePolicy::FailClosed,
    }];
    let had_response = exchange.response.is_some();
    let input = Prepared::from_recording_owned(exchange, BodyDelivery::Envoy, spare);
    let (out, recorded) = stream::run_owned(&mut lanes, input, spare);
    let n = out.client_response.status as usize + out.steps.len();
    if let Some(r) = recorded.request.or(out.upstream_request) {
        exchange.request = r;
    }
    if had_response {
        exchange.response = Some(recorded.response.unwrap_or(out.client_response));
    }
    n
}

/// `exchanges` as a JSON-lines recording (`tollgate traffic convert`'s
/// output), to be read back as `tollgate replay --stream` reads one.
fn demo_lines(exchanges: &[Exchange]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in exchanges {
        tollgate_traffic::native::write_line(&mut out, e).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

/// `total` exchanges read one at a time from `lines` (repeated as needed),
/// as `tollgate replay --stream` reads a JSON-lines file.
fn stream_of(lines: &[u8], total: usize) -> impl Iterator<Item = Exchange> + '_ {
    /// `lines` again and again: a file that long, without the memory.
    struct Cycle<'a> {
        lines: &'a [u8],
        at: usize,
    }
    impl std::io::Read for Cycle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.lines.len() {
                self.at = 0;
            }
            let n = buf.len().min(self.lines.len() - self.at);
            buf[..n].copy_from_slice(&self.lines[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    let reader = std::io::BufReader::new(Cycle { lines, at: 0 });
    tollgate_traffic::native::Lines::new("demo.jsonl", reader, tollgate_traffic::Leniency::Strict)
        .take(total)
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")))
}

/// The resident set size of this process, in bytes (Linux; 0 elsewhere).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// One exchange through the stream driver for its verdict.
fn verdict_run(vm: &mut Vm, input: &Prepared<'_>) -> usize {
    let name = String::new();
    let mut lanes = [Lane {
        vm: Some(vm),
        name,
        policy: FailurePolicy::FailClosed,
    }];
    let v = stream::run_chain_verdict(&mut lanes, input);
    usize::from(v.status) + usize::from(v.verdict == Verdict::Passed)
}

fn demo_exchanges() -> Vec<Exchange> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traffic/demo.har");
    har::load(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .exchanges
}

// ---------------------------------------------------------------------------
// divan benchmarks.

#[divan::bench_group(name = "a_noop_lifecycle")]
mod noop_lifecycle {
    use super::*;

    #[divan::bench]
    fn raw(b: divan::Bencher) {
        let host = RawHost::new(&wasm("noop"));
        let mut vm = host.vm();
        let (q, s) = (Arc::new(request_pairs()), Arc::new(response_pairs()));
        b.bench_local(|| vm.run(black_box(q.clone()), s.clone()));
    }

    #[divan::bench]
    fn harness(b: divan::Bencher) {
        let p = plugin("noop");
        let mut vm = harness_vm(&p);
        let q = HeaderMap::from_pairs(request_pairs());
        let s = HeaderMap::from_pairs(response_pairs());
        b.bench_local(|| harness_run(&mut vm, black_box(&q), &s));
    }
}

#[divan::bench_group(name = "b_header_access")]
mod header_access {
    use super::*;

    #[divan::bench]
    fn raw(b: divan::Bencher) {
        let host = RawHost::new(&wasm("headers"));
        let mut vm = host.vm();
        let (q, s) = (Arc::new(request_pairs()), Arc::new(response_pairs()));
        b.bench_local(|| vm.run(black_box(q.clone()), s.clone()));
    }

    #[divan::bench]
    fn harness(b: divan::Bencher) {
        let p = plugin("headers");
        let mut vm = harness_vm(&p);
        let q = HeaderMap::from_pairs(request_pairs());
        let s = HeaderMap::from_pairs(response_pairs());
        b.bench_local(|| harness_run(&mut vm, black_box(&q), &s));
    }
}

#[divan::bench_group(name = "c_replay_noop")]
mod replay_noop {
    use super::*;

    /// One demo.har exchange through the full stream driver (bodies, change
    /// lists, step log and copies of the messages), cycling through the recording.
    #[divan::bench]
    fn stream_driver(b: divan::Bencher) {
        let p = plugin("noop");
        let mut vm = harness_vm(&p);
        let exchanges = demo_exchanges();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % exchanges.len();
            stream::run(&mut vm, &exchanges[i]).client_response.status
        });
    }

    /// The full outcome again, each exchange prepared as the replay
    /// prepares it (`Prepared::from_recording_with`, borrowing the
    /// recording: maps and chunks built for every request).
    #[divan::bench]
    fn stream_driver_recording(b: divan::Bencher) {
        let p = plugin("noop");
        let mut vm = harness_vm(&p);
        let exchanges = demo_exchanges();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % exchanges.len();
            let input = Prepared::from_recording_with(&exchanges[i], BodyDelivery::Envoy);
            full_run_once(&mut vm, input)
        });
    }

    /// The full outcome as `tollgate replay` drives it: each exchange
    /// handed over and given back (`full_run_restored`), round and round.
    #[divan::bench]
    fn stream_driver_replayed(b: divan::Bencher) {
        let p = plugin("noop");
        let mut vm = harness_vm(&p);
        let mut owned = demo_exchanges();
        let mut spare = Spare::default();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % owned.len();
            full_run_restored(&mut vm, &mut owned[i], &mut spare)
        });
    }

    /// The same through the stream driver's verdict-only mode
    /// ([`stream::run_chain_verdict`]), exchanges prepared once.
    #[divan::bench]
    fn stream_driver_verdict(b: divan::Bencher) {
        let p = plugin("noop");
        let mut vm = harness_vm(&p);
        let inputs = demo_inputs();
        let prepared: Vec<Prepared<'_>> = inputs.iter().map(Prepared::new).collect();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 1) % prepared.len();
            verdict_run(&mut vm, &prepared[i])
        });
    }

    /// The bare lifecycle (no bodies) with the demo's first request headers.
    #[divan::bench]
    fn bare(b: divan::Bencher) {
        let p = plugin("noop");
        let mut vm = harness_vm(&p);
        let q = HeaderMap::from_pairs(request_pairs());
        let s = HeaderMap::from_pairs(response_pairs());
        b.bench_local(|| harness_run(&mut vm, &q, &s));
    }
}

#[divan::bench_group(name = "d_vm_creation")]
mod vm_creation {
    use super::*;

    #[divan::bench]
    fn raw(b: divan::Bencher) {
        let host = RawHost::new(&wasm("noop"));
        b.bench_local(|| host.vm().next);
    }

    #[divan::bench]
    fn harness(b: divan::Bencher) {
        let p = plugin("noop");
        b.bench_local(|| harness_vm(&p).root_id());
    }
}

// ---------------------------------------------------------------------------
// Head-to-head: interleaved batches in this one process, medians, ratios.

/// Median ns per iteration of `a` and `b`, run in alternating batches.
///
/// Batches are kept short (well under a scheduler time slice): on a busy
/// machine a batch long enough to be preempted more often than not would
/// turn the median into "one time slice of someone else" and weigh against
/// the slower side, whose batches last longer. Short batches leave the
/// preempted ones to the tail the median ignores.
fn interleaved(
    batches: usize,
    per_batch: usize,
    mut a: impl FnMut() -> usize,
    mut b: impl FnMut() -> usize,
) -> (f64, f64) {
    let mut ta = Vec::with_capacity(batches);
    let mut tb = Vec::with_capacity(batches);
    let mut sink = 0usize;
    for _ in 0..per_batch {
        sink = sink.wrapping_add(a()).wrapping_add(b());
    }
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..per_batch {
            sink = sink.wrapping_add(a());
        }
        ta.push(t.elapsed());
        let t = Instant::now();
        for _ in 0..per_batch {
            sink = sink.wrapping_add(b());
        }
        tb.push(t.elapsed());
    }
    black_box(sink);
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_nanos() as f64 / per_batch as f64
    };
    (med(&mut ta), med(&mut tb))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn head_to_head() {
    let q = HeaderMap::from_pairs(request_pairs());
    let s = HeaderMap::from_pairs(response_pairs());
    let (rq, rs) = (Arc::new(request_pairs()), Arc::new(response_pairs()));

    println!();
    println!("harness vs raw wasmtime (interleaved batches, median ns/iteration)");
    println!(
        "{:<42} {:>12} {:>12} {:>8} {:>8}  target",
        "measure", "raw", "harness", "ratio", ""
    );
    let row = |name: &str, raw: f64, harness: f64, target: f64| {
        let ratio = harness / raw;
        println!(
            "{name:<42} {raw:>10.0}ns {harness:>10.0}ns {ratio:>7.2}x {:>8}  <= {target}x",
            verdict(ratio <= target)
        );
    };
    for which in ["noop", "headers"] {
        let host = RawHost::new(&wasm(which));
        let mut raw = host.vm();
        let p = plugin(which);
        let mut vm = harness_vm(&p);
        let (r, h) = interleaved(
            1_001,
            400,
            || raw.run(rq.clone(), rs.clone()).map_or(0, |n| n as usize),
            || harness_run(&mut vm, &q, &s),
        );
        let name = if which == "noop" {
            "(a) no-op lifecycle"
        } else {
            "(b) header access"
        };
        row(name, r, h, 1.5);
        // As measured before the maps were shared: each side gets its own
        // copy of the header lists per request (a proxy hands the host
        // fresh headers for every stream).
        let (r, h) = interleaved(
            1_001,
            400,
            || {
                let (q, s) = (Arc::new((*rq).clone()), Arc::new((*rs).clone()));
                raw.run(q, s).map_or(0, |n| n as usize)
            },
            || {
                let copy = |m: &HeaderMap| {
                    HeaderMap::from_pairs(m.entries().iter().map(|(k, v)| (k, v.clone())))
                };
                let (q, s) = (copy(&q), copy(&s));
                harness_run(&mut vm, &q, &s)
            },
        );
        row(&format!("{name}, inputs copied"), r, h, 1.5);
    }
    {
        let host = RawHost::new(&wasm("noop"));
        let p = plugin("noop");
        let (r, h) = interleaved(
            201,
            20,
            || host.vm().next as usize,
            || harness_vm(&p).root_id() as usize,
        );
        row("(d) VM creation", r, h, f64::INFINITY);
        println!(
            "(d) harness VM creation: {:.1} us (target < 50 us): {}",
            h / 1000.0,
            verdict(h < 50_000.0)
        );
    }
    {
        let p = plugin("noop");
        let exchanges = demo_exchanges();
        let inputs = demo_inputs();
        let prepared: Vec<Prepared<'_>> = inputs.iter().map(Prepared::new).collect();
        let mut vm = harness_vm(&p);
        let mut i = 0;
        let mut full = || {
            i = (i + 1) % exchanges.len();
            stream::run(&mut vm, &exchanges[i]).client_response.status as usize
        };
        let full_allocs = allocations_per(exchanges.len() * 20, &mut full);
        let (full_ns, _) = interleaved(301, 140, full, || 0);
        let mut vm = harness_vm(&p);
        let mut j = 0;
        let mut verdict_once = || {
            j = (j + 1) % prepared.len();
            verdict_run(&mut vm, &prepared[j])
        };
        // One pass first: a prepared exchange works out once, when first
        // judged, whether its maps as built judge as the recording.
        allocations_per(prepared.len(), &mut verdict_once);
        let verdict_allocs = allocations_per(prepared.len() * 20, &mut verdict_once);
        let (verdict_ns, _) = interleaved(1_001, 280, verdict_once, || 0);
        // The full outcome as `tollgate replay` drives it: each exchange
        // prepared from the recording for every request, and prepared once.
        let mut vm = harness_vm(&p);
        let mut k = 0;
        let mut recording = || {
            k = (k + 1) % exchanges.len();
            let input = Prepared::from_recording_with(&exchanges[k], BodyDelivery::Envoy);
            full_run_once(&mut vm, input)
        };
        let borrowed_allocs = allocations_per(exchanges.len() * 20, &mut recording);
        let (borrowed_ns, _) = interleaved(301, 140, recording, || 0);
        // As `tollgate replay` drives them: each exchange handed over and
        // given back (the streamed replay's way), round and round.
        let mut owned = demo_exchanges();
        let mut vm = harness_vm(&p);
        let mut spare = Spare::default();
        let mut o = 0;
        let mut restored = || {
            o = (o + 1) % owned.len();
            full_run_restored(&mut vm, &mut owned[o], &mut spare)
        };
        // The first round fills the spare strings.
        allocations_per(70, &mut restored);
        let recording_allocs = allocations_per(70 * 20, &mut restored);
        let (recording_ns, _) = interleaved(301, 140, restored, || 0);
        // The same, each exchange a fresh copy freed after its run (the
        // copies are made before, as reading a recording makes them).
        let copies = |n: usize| -> Vec<Exchange> {
            (0..n)
                .map(|i| exchanges[i % exchanges.len()].clone())
                .collect()
        };
        let mut vm = harness_vm(&p);
        let mut spare = Spare::default();
        let mut pool = copies(exchanges.len() * 20);
        let fresh_allocs = allocations_per(pool.len(), || match pool.pop() {
            Some(e) => full_run_owned(&mut vm, e, &mut spare),
            None => 0,
        });
        let mut pool = copies(102 * 140);
        let (fresh_ns, _) = interleaved(
            101,
            140,
            || match pool.pop() {
                Some(e) => full_run_owned(&mut vm, e, &mut spare),
                None => 0,
            },
            || 0,
        );
        drop(pool);
        let recorded: Vec<Prepared<'_>> = exchanges
            .iter()
            .map(|e| Prepared::from_recording_with(e, BodyDelivery::Envoy))
            .collect();
        let mut vm = harness_vm(&p);
        let mut m = 0;
        let mut prepared_full = || {
            m = (m + 1) % recorded.len();
            full_run(&mut vm, &recorded[m])
        };
        let prepared_allocs = allocations_per(recorded.len() * 20, &mut prepared_full);
        let (prepared_ns, _) = interleaved(301, 140, prepared_full, || 0);
        let mut n = 0;
        let prepare_allocs = allocations_per(exchanges.len() * 20, || {
            n = (n + 1) % exchanges.len();
            let input = Prepared::from_recording_with(&exchanges[n], BodyDelivery::Envoy);
            usize::from(input.recorded_request().method.len() > 3)
        });
        let mut vm = harness_vm(&p);
        let bare_allocs = allocations_per(1000, || harness_run(&mut vm, &q, &s));
        let (bare, _) = interleaved(1_001, 400, || harness_run(&mut vm, &q, &s), || 0);
        println!(
            "(c) replay of demo.har ({} exchanges, bodies included) through the no-op filter:",
            exchanges.len()
        );
        for (name, ns, allocs, target) in [
            ("stream driver, verdict", verdict_ns, verdict_allocs, true),
            (
                "full report, as replayed",
                recording_ns,
                recording_allocs,
                true,
            ),
            ("full report, fresh copies", fresh_ns, fresh_allocs, false),
            (
                "full report, borrowing",
                borrowed_ns,
                borrowed_allocs,
                false,
            ),
            (
                "full report, prepared once",
                prepared_ns,
                prepared_allocs,
                false,
            ),
            ("stream::run (one chunk)", full_ns, full_allocs, false),
            ("bare lifecycle", bare, bare_allocs, false),
        ] {
            let rps = 1e9 / ns;
            let note = if target {
                format!(" (target > 500000): {}", verdict(rps > 500_000.0))
            } else {
                String::new()
            };
            println!(
                "    {name:<28} {ns:>7.0} ns/request = {rps:>8.0} requests/s on one core, \
                 {allocs:>6.1} allocations/request{note}"
            );
        }
        println!(
            "    preparing an exchange (maps, chunks): {prepare_allocs:.1} allocations; \
             full report as replayed: {} allocations/request (target <= 20): {}",
            recording_allocs,
            verdict(recording_allocs <= 20.0)
        );
        // `tollgate replay --stream`'s driving: 100,000 exchanges one at a
        // time (demo.har's, cycled), nothing kept; resident memory must stay
        // flat. Each exchange is read as `--stream` reads a JSON-lines
        // recording (one line parsed into an exchange: what a user pays
        // for instead of the copy of an exchange this line used to make),
        // driven, and its report line written as the command writes it.
        let total = 100_000;
        let lines = demo_lines(&exchanges);
        let started = Instant::now();
        let mut parsed = 0usize;
        for e in stream_of(&lines, total) {
            parsed = parsed.wrapping_add(e.id.len());
        }
        let parse_s = started.elapsed().as_secs_f64();
        black_box(parsed);
        let mut vm = harness_vm(&p);
        let mut spare = Spare::default();
        let mut rss = Vec::new();
        let mut out = std::io::BufWriter::new(std::io::sink());
        let t = Instant::now();
        let mut sink = 0usize;
        for (i, mut e) in stream_of(&lines, total).enumerate() {
            if i % 25_000 == 0 {
                rss.push(resident_bytes());
            }
            sink = sink.wrapping_add(full_run_restored(&mut vm, &mut e, &mut spare));
            let r = &e.request;
            let _ = writeln!(
                out,
                "{}: {} {}{} [passed] guest {:?}",
                e.id,
                r.method,
                r.authority,
                r.path,
                Duration::from_nanos(sink as u64 % 4096)
            );
        }
        let elapsed = t.elapsed();
        rss.push(resident_bytes());
        black_box(sink);
        let mib = |b: &u64| format!("{:.1}", *b as f64 / (1024.0 * 1024.0));
        println!(
            "    {total} exchanges streamed (each read from a JSON line, run, its line written): {:.0} requests/s, resident MiB {}; \
             guest memory {} KiB; reading alone {:.0} exchanges/s ({:.0} ns each)",
            total as f64 / elapsed.as_secs_f64(),
            rss.iter().map(mib).collect::<Vec<_>>().join(" -> "),
            vm.memory_size() / 1024,
            total as f64 / parse_s,
            parse_s * 1e9 / total as f64
        );
        println!(
            "    full report as replayed / verdict: {:.2}x; verdict / bare lifecycle: {:.2}x",
            recording_ns / verdict_ns,
            verdict_ns / bare
        );
    }
}
