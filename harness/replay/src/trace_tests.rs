//! The harness's ABI call traces through a whole replay (`trace_calls`),
//! read back by [`tollgate_host::trace`].

use tollgate_host::state::VmSettings;
use tollgate_host::trace::{normalise, parse};

const GUEST: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "accept")
  (data (i32.const 1040) "xds\00route_name")
  (data (i32.const 1056) "hello")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.add (local.get $n) (i32.const 8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get (i32.const 0) (i32.const 1024) (i32.const 6) (i32.const 256) (i32.const 260)))
    (drop (call $prop (i32.const 1040) (i32.const 14) (i32.const 256) (i32.const 260)))
    (drop (call $log (i32.const 2) (i32.const 1056) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0)))"#;

fn replay(trace: bool, settings: VmSettings) -> crate::Report {
    use tollgate_traffic::{Exchange, ExchangeDetails, HttpRequest, Traffic};
    let wasm = wat::parse_str(GUEST).unwrap();
    let mut replay = crate::Replay::module("guest.wasm", wasm).settings(settings);
    if trace {
        replay = replay.trace_calls();
    }
    replay
        .traffic(Traffic {
            exchanges: vec![Exchange {
                id: "one".into(),
                request: HttpRequest {
                    method: "POST".into(),
                    scheme: "http".into(),
                    authority: "a.example".into(),
                    path: "/".into(),
                    headers: vec![("accept".into(), "*/*".into())],
                    body: b"12345".to_vec(),
                },
                response: None,
                // The body as Envoy's HTTP/1 codec delivers it: data, then an empty end.
                details: ExchangeDetails {
                    request_chunks: vec![5, 0],
                    ..ExchangeDetails::default()
                },
            }],
            ..Traffic::default()
        })
        .run()
        .unwrap()
}

fn trace_lines(report: &crate::Report) -> Vec<String> {
    report.exchanges[0]
        .logs
        .iter()
        .filter(|l| l.level == "trace")
        .map(|l| l.message.clone())
        .collect()
}

#[test]
fn host_calls_and_allocations_are_traced_in_envoys_shape() {
    let report = replay(true, VmSettings::default());
    let lines = trace_lines(&report);
    let at = lines
        .iter()
        .position(|l| l.starts_with("[host->vm] proxy_on_request_headers(2, 5, 0)"))
        .unwrap();
    let shape: Vec<String> = lines[at..at + 12]
        .iter()
        // Guest addresses are the guest's business: keep the shape.
        .map(|l| l.split(['(', ':']).next().unwrap().to_string())
        .collect();
    assert_eq!(
        shape,
        [
            "[host->vm] proxy_on_request_headers",
            "[vm->host] env.proxy_get_header_map_value",
            "[host->vm] proxy_on_memory_allocate",
            "[host<-vm] proxy_on_memory_allocate return",
            "[vm<-host] env.proxy_get_header_map_value return",
            "[vm->host] env.proxy_get_property",
            "[vm<-host] env.proxy_get_property return",
            "[vm->host] env.proxy_log",
            "[vm<-host] env.proxy_log return",
            "[host<-vm] proxy_on_request_headers return",
            "[host->vm] proxy_on_request_body",
            "[host<-vm] proxy_on_request_body return",
        ]
    );
    assert!(lines.contains(&"[host->vm] proxy_on_memory_allocate(3)".to_string()));
    assert!(lines.contains(&"[vm->host] env.proxy_log(2, 1056, 5)".to_string()));
    // The body arrives as recorded: the data, then an empty end of stream.
    assert!(lines.contains(&"[host->vm] proxy_on_request_body(2, 5, 0)".to_string()));
    assert!(lines.contains(&"[host->vm] proxy_on_request_body(2, 0, 1)".to_string()));
    // The whole trace reads back and normalises.
    let vms = parse(lines.iter().map(String::as_str)).unwrap();
    let n = normalise(&vms[0]);
    assert_eq!(n.streams.len(), 1);
    assert!(
        n.streams[0]
            .iter()
            .any(|s| s.to_string() == "  vm->host env.proxy_get_property(14) -> 0")
    );
}

#[test]
fn an_untraced_replay_logs_no_calls() {
    let report = replay(false, VmSettings::default());
    assert!(trace_lines(&report).is_empty());
    assert!(report.startup_logs.iter().all(|l| l.level != "trace"));
}

#[test]
fn the_route_name_is_empty_unless_the_settings_name_it() {
    // Unnamed: Ok with an empty value, so nothing is allocated (as Envoy).
    let lines = trace_lines(&replay(true, VmSettings::default()));
    let at = lines
        .iter()
        .position(|l| l.starts_with("[vm->host] env.proxy_get_property"))
        .unwrap();
    assert_eq!(lines[at + 1], "[vm<-host] env.proxy_get_property return: 0");
    let named = VmSettings {
        properties: vec![("xds.route_name".into(), b"default".to_vec())],
        ..VmSettings::default()
    };
    let lines = trace_lines(&replay(true, named));
    let at = lines
        .iter()
        .position(|l| l.starts_with("[vm->host] env.proxy_get_property"))
        .unwrap();
    assert_eq!(lines[at + 1], "[host->vm] proxy_on_memory_allocate(7)");
}
