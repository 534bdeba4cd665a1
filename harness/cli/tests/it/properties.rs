//! Property tests of the host: guests generated from arbitrary bytes call the
//! host functions in arbitrary sequences with arbitrary arguments (pointers
//! in range, at the edge of memory, past it, huge sizes), driven through the
//! filter manager with arbitrary requests. Invariants: the host never panics,
//! every run ends (with a verdict or a named failure), and memory stays within
//! the limits (guest memory under its cap, the guest log under its bound).
//!
//! CI-sized: a fixed number of seeds (`TOLLGATE_PROPERTY_CASES`, default 64)
//! plus the corpus in `tests/corpus/host-calls/` (each a seed that once found a
//! crash, or a shape worth keeping), so a run takes seconds.

use arbitrary::{Arbitrary, Unstructured};
use std::panic::{AssertUnwindSafe, catch_unwind};
use tollgate_host::limits::Limits;
use tollgate_host::plugin::Plugin;
use tollgate_host::state::{HttpCallStub, VmSettings};
use tollgate_host::stream;
use tollgate_host::vm::Vm;

/// Host functions with their parameter types (`i` i32, `I` i64); all return i32.
const HOST: &[(&str, &str)] = &[
    ("proxy_log", "iii"),
    ("proxy_get_log_level", "i"),
    ("proxy_get_current_time_nanoseconds", "i"),
    ("proxy_set_tick_period_milliseconds", "i"),
    ("proxy_get_buffer_bytes", "iiiii"),
    ("proxy_get_buffer_status", "iii"),
    ("proxy_set_buffer_bytes", "iiiii"),
    ("proxy_get_header_map_pairs", "iii"),
    ("proxy_set_header_map_pairs", "iii"),
    ("proxy_get_header_map_value", "iiiii"),
    ("proxy_add_header_map_value", "iiiii"),
    ("proxy_replace_header_map_value", "iiiii"),
    ("proxy_remove_header_map_value", "iii"),
    ("proxy_get_header_map_size", "ii"),
    ("proxy_continue_stream", "i"),
    ("proxy_close_stream", "i"),
    ("proxy_send_local_response", "iiiiiiii"),
    ("proxy_http_call", "iiiiiiiiii"),
    ("proxy_get_shared_data", "iiiii"),
    ("proxy_set_shared_data", "iiiii"),
    ("proxy_register_shared_queue", "iii"),
    ("proxy_resolve_shared_queue", "iiiii"),
    ("proxy_enqueue_shared_queue", "iii"),
    ("proxy_dequeue_shared_queue", "iii"),
    ("proxy_define_metric", "iiii"),
    ("proxy_increment_metric", "iI"),
    ("proxy_record_metric", "iI"),
    ("proxy_get_metric", "ii"),
    ("proxy_get_property", "iiii"),
    ("proxy_set_property", "iiii"),
    ("proxy_set_effective_context", "i"),
    ("proxy_call_foreign_function", "iiiiii"),
];

/// Linear memory of the generated guests: 2 pages (the edge is at 131072).
const MEMORY_END: u32 = 2 * 65536;

/// An argument: mostly meaningful values (small numbers, pointers into the
/// data, the memory's edge), sometimes anything.
fn arg(u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
    Ok(match u.int_in_range(0..=7)? {
        0 => u.int_in_range(0..=8)?,
        1 => 1024 + u.int_in_range(0..=256)?,
        2 => MEMORY_END - u.int_in_range(0..=16)?,
        3 => MEMORY_END + u.int_in_range(0..=16)?,
        4 => u32::MAX - u.int_in_range(0..=8)?,
        5 => u.int_in_range(0..=64)?,
        6 => 1 << u.int_in_range(0..=31)?,
        _ => u32::arbitrary(u)?,
    })
}

/// One callback's body: `calls` host calls with arbitrary arguments.
fn calls(u: &mut Unstructured<'_>, count: usize) -> arbitrary::Result<String> {
    let mut body = String::new();
    for _ in 0..count {
        let (name, params) = HOST[u.choose_index(HOST.len())?];
        body.push_str(&format!("(drop (call ${name}"));
        for p in params.chars() {
            let v = arg(u)?;
            if p == 'I' {
                body.push_str(&format!(" (i64.const {})", i64::from(v)));
            } else {
                body.push_str(&format!(" (i32.const {})", v as i32));
            }
        }
        body.push_str("))\n");
    }
    Ok(body)
}

/// A guest whose callbacks make arbitrary host calls; with a bump allocator
/// that sometimes returns garbage (a bad allocator is part of the game).
fn guest(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let mut imports = String::new();
    for (name, params) in HOST {
        let ps: String = params
            .chars()
            .map(|p| if p == 'I' { " i64" } else { " i32" })
            .collect();
        imports.push_str(&format!(
            "(import \"env\" \"{name}\" (func ${name} (param{ps}) (result i32)))\n"
        ));
    }
    let data: Vec<u8> = (0..u.int_in_range(0..=256)?)
        .map(|_| u8::arbitrary(u))
        .collect::<arbitrary::Result<_>>()?;
    let data: String = data.iter().map(|b| format!("\\{b:02x}")).collect();
    let bad_malloc = u.ratio(1, 8)?;
    let malloc = if bad_malloc {
        format!("(i32.const {})", arg(u)? as i32)
    } else {
        "(local.set $p (global.get $heap)) (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8)))) (if (i32.gt_u (global.get $heap) (i32.const 131072)) (then (global.set $heap (i32.const 65536)) (local.set $p (i32.const 65536)))) (local.get $p)".to_string()
    };
    let mut callbacks = String::new();
    for (export, params, result) in [
        ("proxy_on_request_headers", 3, true),
        ("proxy_on_request_body", 3, true),
        ("proxy_on_response_headers", 3, true),
        ("proxy_on_response_body", 3, true),
        ("proxy_on_http_call_response", 5, false),
        ("proxy_on_log", 1, false),
    ] {
        let n = u.int_in_range(0..=6)?;
        let body = calls(u, n)?;
        let ps = " i32".repeat(params);
        let ret = if result {
            format!("(i32.const {})", u.int_in_range(0..=2)?)
        } else {
            String::new()
        };
        let result = if result { "(result i32)" } else { "" };
        callbacks.push_str(&format!(
            "(func (export \"{export}\") (param{ps}) {result}\n{body}{ret})\n"
        ));
    }
    Ok(format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{data}")
  (func (export "malloc") (param $n i32) (result i32) (local $p i32) {malloc})
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  {callbacks}
)"#
    ))
}

/// An arbitrary request: method, path, headers (odd names and values
/// included) and body.
fn request(u: &mut Unstructured<'_>) -> arbitrary::Result<tollgate_traffic::Exchange> {
    let method = *u.choose(&["GET", "POST", "PUT", "DELETE", "OPTIONS"])?;
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let name: String = String::arbitrary(u)?
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(20)
            .collect::<String>()
            .to_ascii_lowercase();
        let value: String = String::arbitrary(u)?
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(60)
            .collect();
        if !name.is_empty() {
            headers.push((name, value.trim().to_string()));
        }
    }
    let body: Vec<u8> = Vec::arbitrary(u)?;
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(super::exchange(method, "/p", &h, &body))
}

/// Runs one case from `seed`'s bytes; panics (with the seed) on a broken invariant.
fn case(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    let Ok(src) = guest(&mut u) else { return };
    let Ok(exchange) = request(&mut u) else {
        return;
    };
    let wasm = wat::parse_str(&src).unwrap_or_else(|e| panic!("generated guest: {e}\n{src}"));
    let plugin = Plugin::from_bytes("arbitrary.wasm", &wasm)
        .unwrap_or_else(|e| panic!("the generated guest loads: {e}"));
    let limits = Limits {
        callouts_per_exchange: 500,
        log_bytes_per_exchange: 1 << 20,
        ..Limits::default()
    };
    let settings = VmSettings {
        http_call_stub: Some(HttpCallStub {
            headers: vec![(":status".into(), "200".into())],
            body: b"ok".to_vec(),
        }),
        call_timeout: std::time::Duration::from_secs(5),
        limits,
        ..VmSettings::default()
    };
    let Ok(mut vm) = Vm::start(&plugin, settings) else {
        return;
    };
    for _ in 0..2 {
        let out = stream::run(&mut vm, &exchange);
        // Every failure is a named guest call, never an empty one.
        for f in &out.failures {
            assert!(!f.error.message.is_empty(), "{:?}", f.error);
        }
        assert!(vm.memory_size() <= limits.memory_bytes);
        let logged: usize = vm.take_logs().iter().map(|l| l.message.len()).sum();
        assert!(
            logged <= limits.log_bytes_per_exchange + 4096,
            "{logged} bytes of log kept"
        );
        if out.failure.is_some() {
            break;
        }
    }
}

/// Bytes for seed `n` (xorshift: reproducible, no dependency).
fn seed_bytes(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run_case(label: &str, bytes: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(bytes))) {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{label}: an invariant broke: {msg}");
    }
}

#[test]
fn arbitrary_host_call_sequences_never_panic_the_host_and_stay_bounded() {
    let cases: u64 = std::env::var("TOLLGATE_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/host-calls");
    if let Ok(dir) = std::fs::read_dir(corpus) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some() {
                continue; // README.md
            }
            let bytes = std::fs::read(entry.path()).expect("a corpus file");
            run_case(&entry.path().display().to_string(), &bytes);
        }
    }
    for n in 0..cases {
        run_case(&format!("seed {n}"), &seed_bytes(n, 4096));
    }
}
