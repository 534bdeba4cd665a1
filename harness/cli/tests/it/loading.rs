//! Loading: clear errors for non-wasm, non-proxy-wasm, unknown imports,
//! refused configuration, trapping start; ABI version handling.

use super::*;
use tollgate_host::plugin::{AbiVersion, LoadError, inspect};
use tollgate_host::vm::VmError;

const HEADERS_IMPORT: &str = r#"(import "env" "proxy_get_header_map_value" (func $get_hv (param i32 i32 i32 i32 i32) (result i32)))"#;

#[test]
fn bytes_that_are_not_wasm_are_refused_by_name() {
    let err = Plugin::from_bytes("junk.wasm", b"#!/bin/sh\necho hi\n").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("junk.wasm") && msg.contains("not a WebAssembly module"),
        "{msg}"
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let err = Plugin::load("/nonexistent/dir/filter.wasm").unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/dir/filter.wasm"),
        "{err}"
    );
}

#[test]
fn invalid_wasm_is_refused() {
    let mut bytes = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
    bytes.truncate(bytes.len() - 3);
    let err = Plugin::from_bytes("cut.wasm", &bytes).unwrap_err();
    assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("cut.wasm"), "{err}");
}

#[test]
fn wasm_without_an_abi_export_is_not_proxy_wasm() {
    let bytes = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) (i32.const 8)))"#).unwrap();
    let err = Plugin::from_bytes("plain.wasm", &bytes).unwrap_err();
    assert!(matches!(err, LoadError::NotProxyWasm { .. }), "{err:?}");
    assert!(err.to_string().contains("not a proxy-wasm module"), "{err}");
}

#[test]
fn every_unknown_import_is_named() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_frobnicate" (func (param i32) (result i32)))
           (import "wasi_snapshot_preview1" "sock_open" (func (param i32) (result i32)))
           (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))"#,
        "",
    );
    let err = Plugin::from_bytes("imports.wasm", &wasm).unwrap_err();
    let LoadError::MissingImports { missing, .. } = &err else {
        panic!("expected MissingImports, got {err:?}");
    };
    assert_eq!(missing.len(), 2, "{missing:?}");
    let msg = err.to_string();
    assert!(msg.contains("env.proxy_frobnicate"), "{msg}");
    assert!(msg.contains("wasi_snapshot_preview1.sock_open"), "{msg}");
    assert!(!msg.contains("proxy_log"), "{msg}");
}

#[test]
fn an_import_envoy_gives_only_to_another_abi_version_is_refused() {
    let wasm = guest(
        "0_2_0",
        r#"(import "env" "proxy_get_log_level" (func (param i32) (result i32)))"#,
        "",
    );
    let err = Plugin::from_bytes("old.wasm", &wasm).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("env.proxy_get_log_level") && msg.contains("0.2.1"),
        "{msg}"
    );
    let wasm = guest(
        "0_1_0",
        r#"(import "env" "proxy_continue_stream" (func (param i32) (result i32)))"#,
        "",
    );
    let msg = Plugin::from_bytes("v1.wasm", &wasm)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("env.proxy_continue_stream"), "{msg}");
}

#[test]
fn an_import_with_the_wrong_signature_is_a_link_error() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func (param i32) (result i32)))"#,
        "",
    );
    let err = Plugin::from_bytes("sig.wasm", &wasm).unwrap_err();
    // Named before linking, with both signatures (as `inspect` names it).
    assert!(matches!(err, LoadError::MissingImports { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("env.proxy_log (imported as (param i32) (result i32)"),
        "{err}"
    );
}

#[test]
fn inspect_reports_abi_exports_and_unknown_imports() {
    let wasm = guest("0_2_0", r#"(import "env" "nope" (func))"#, "");
    let info = inspect("x.wasm", &wasm).unwrap();
    assert_eq!(info.abi, Some(AbiVersion::V0_2_0));
    assert!(
        info.exports
            .iter()
            .any(|(n, k)| n == "malloc" && *k == "func")
    );
    assert_eq!(
        info.unknown_imports(),
        vec!["env.nope (no such host function)".to_string()]
    );
    assert!(
        info.imports
            .iter()
            .any(|i| i.name == "proxy_define_metric" && i.problem.is_none())
    );
}

#[test]
fn a_module_without_an_allocator_is_refused() {
    let bytes = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap();
    let err = Plugin::from_bytes("noalloc.wasm", &bytes).unwrap_err();
    assert!(matches!(err, LoadError::MissingExport { .. }), "{err:?}");
    assert!(err.to_string().contains("malloc"), "{err}");
}

#[test]
fn a_refused_configuration_names_the_filter_never_the_configuration() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let plugin = Plugin::from_bytes("picky.wasm", &wasm).unwrap();
    // Configurations hold secrets: the error says how big it was, not what it said.
    let settings = VmSettings {
        plugin_config: b"{\"password\":\"hunter2\"}".to_vec(),
        ..VmSettings::default()
    };
    let err = Vm::start(&plugin, settings)
        .err()
        .expect("configure refused");
    assert!(matches!(err, VmError::ConfigureRefused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("picky.wasm") && msg.contains("22 bytes"),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !msg.contains("password"),
        "{msg}"
    );
}

#[test]
fn a_trapping_start_reports_the_call_and_the_trap() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func $init (export "_initialize") unreachable)"#,
    );
    let plugin = Plugin::from_bytes("crash.wasm", &wasm).unwrap();
    let err = Vm::start(&plugin, VmSettings::default())
        .err()
        .expect("start traps");
    let VmError::Trap { source, .. } = &err else {
        panic!("expected Trap, got {err:?}");
    };
    assert_eq!(source.callback, "_initialize");
    assert!(source.message.contains("unreachable"), "{}", source.message);
    assert!(err.to_string().contains("crash.wasm"), "{err}");
}

#[test]
fn abi_0_1_0_headers_callbacks_get_no_end_of_stream() {
    let wasm = guest(
        "0_1_0",
        "",
        r#"(func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
             (call $report (local.get $n)) (i32.const 0))"#,
    );
    let (out, statuses, vm) = run_one(&wasm, "", &exchange("GET", "/", &[("x-a", "1")], b""));
    assert_eq!(vm.abi(), AbiVersion::V0_1_0);
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(statuses, vec![5], "4 pseudo-headers + x-a");
}

#[test]
fn abi_0_1_0_missing_header_reads_as_empty() {
    let wasm = guest(
        "0_1_0",
        HEADERS_IMPORT,
        r#"(data (i32.const 1100) "x-none")
           (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
             (call $report (call $get_hv (i32.const 0) (i32.const 1100) (i32.const 6) (i32.const 512) (i32.const 516)))
             (call $report (i32.load (i32.const 516)))
             (i32.const 0))"#,
    );
    let (_, statuses, _) = run_one(&wasm, "", &exchange("GET", "/", &[], b""));
    assert_eq!(statuses, vec![0, 0]);
}

#[test]
fn headers_callbacks_get_end_of_stream_in_abi_0_2() {
    let wasm = guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32) (param $eos i32) (result i32)
             (call $report (local.get $eos)) (i32.const 0))
           (func (export "proxy_on_request_body") (param i32) (param $size i32) (param $eos i32) (result i32)
             (call $report (i32.add (i32.const 100) (local.get $size))) (call $report (local.get $eos)) (i32.const 0))"#,
    );
    let (_, statuses, _) = run_one(&wasm, "", &exchange("GET", "/", &[], b""));
    assert_eq!(statuses, vec![1], "no body: end of stream at headers");
    let (_, statuses, _) = run_one(&wasm, "", &exchange("POST", "/", &[], b"abc"));
    assert_eq!(statuses, vec![0, 103, 1], "body follows in one chunk");
}
