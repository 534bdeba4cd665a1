//! Integration tests of the harness with small guests written in WAT.
//! One module per area; helpers here.

mod bad_inputs;
mod bench;
mod bench_report;
mod bench_stream;
mod bodies;
mod buffers;
mod callouts;
mod chains;
mod failure_policy;
mod grpc;
mod headers;
mod hostile;
mod http_calls;
mod lifecycle;
mod loading;
mod outputs;
mod properties;
mod replay;
mod replay_details;
mod ship_cli;
mod stream_control;
mod streaming;
mod suite;
mod suite_identity;
mod suite_inputs;
mod trace;
mod traps;
mod workers;

use tollgate_host::plugin::Plugin;
use tollgate_host::state::VmSettings;
use tollgate_host::stream::{self, StreamOutcome};
use tollgate_host::vm::Vm;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse};

/// A proxy-wasm guest: `imports` (WAT import forms), then memory, a bump
/// `malloc`, the ABI marker, `$report` (records a status into the
/// `statuses` histogram) and `body`. Data below address 1024 is reserved
/// for the helpers.
pub fn guest(abi: &str, imports: &str, body: &str) -> Vec<u8> {
    let src = format!(
        r#"(module
  {imports}
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_record_metric" (func $record_metric (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 16) "statuses")
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_{abi}"))
  (func $report (param $s i32)
    (drop (call $define_metric (i32.const 2) (i32.const 16) (i32.const 8) (i32.const 8)))
    (drop (call $record_metric (i32.load (i32.const 8)) (i64.extend_i32_u (local.get $s)))))
  {body}
)"#
    );
    match wat::parse_str(&src) {
        Ok(b) => b,
        Err(e) => panic!("test guest does not assemble: {e}\n{src}"),
    }
}

/// A request with a recorded 200 response carrying `server: upstream` and body `ok`.
pub fn exchange(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Exchange {
    Exchange {
        id: "entry 0".into(),
        request: HttpRequest {
            method: method.into(),
            scheme: "http".into(),
            authority: "example.com".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        },
        response: Some(HttpResponse {
            status: 200,
            headers: vec![("server".into(), "upstream".into())],
            body: b"ok".to_vec(),
        }),
        details: Default::default(),
    }
}

/// Starts `wasm` with `config` and runs one exchange; returns the outcome
/// and the statuses the guest reported.
pub fn run_one(wasm: &[u8], config: &str, ex: &Exchange) -> (StreamOutcome, Vec<u64>, Vm) {
    let plugin = Plugin::from_bytes("test.wasm", wasm).expect("test guest loads");
    let settings = VmSettings {
        plugin_config: config.as_bytes().to_vec(),
        ..VmSettings::default()
    };
    let mut vm = Vm::start(&plugin, settings).expect("test guest starts");
    let out = stream::run(&mut vm, ex);
    let statuses = statuses(&vm);
    (out, statuses, vm)
}

/// The statuses a guest reported with `$report`.
pub fn statuses(vm: &Vm) -> Vec<u64> {
    vm.state()
        .metrics()
        .by_name("statuses")
        .map(|m| m.samples.clone())
        .unwrap_or_default()
}

/// A header value.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
