//! Properties, shared data, metrics, logging, clocks, WASI and effective
//! contexts.

use super::*;

#[test]
fn properties_are_encoded_like_envoy() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "request\00path")
           (data (i32.const 1120) "plugin_name")
           (data (i32.const 1140) "nope")
           (data (i32.const 1160) "x-path")
           (data (i32.const 1170) "x-plugin")
           (data (i32.const 1180) "source\00port")
           (func (export "proxy_on_configure") (param i32 i32) (result i32)
             (call $report (call $prop (i32.const 1100) (i32.const 12) (i32.const 512) (i32.const 516)))
             (i32.const 1))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $report (call $prop (i32.const 1100) (i32.const 12) (i32.const 512) (i32.const 516)))
             (drop (call $add (i32.const 0) (i32.const 1160) (i32.const 6) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
             (call $report (call $prop (i32.const 1120) (i32.const 11) (i32.const 512) (i32.const 516)))
             (drop (call $add (i32.const 0) (i32.const 1170) (i32.const 8) (i32.load (i32.const 512)) (i32.load (i32.const 516))))
             (call $report (call $prop (i32.const 1140) (i32.const 4) (i32.const 512) (i32.const 516)))
             (call $report (call $prop (i32.const -16) (i32.const 4) (i32.const 512) (i32.const 516)))
             (call $report (call $prop (i32.const 1180) (i32.const 11) (i32.const 512) (i32.const 516)))
             (call $report (i32.load (i32.const 516)))
             (call $report (i32.load (i32.load (i32.const 512))))
             (i32.const 0))"#,
    );
    let (out, statuses, _) = run_one(&wasm, "", &exchange("GET", "/p?q=1", &[], b""));
    assert_eq!(statuses, vec![1, 0, 0, 1, 6, 0, 8, 40000]);
    let up = out.upstream_request.unwrap();
    assert_eq!(header(&up.headers, "x-path"), Some("/p?q=1"));
    assert_eq!(header(&up.headers, "x-plugin"), Some("tollgate"));
}

const SHARED: &str = r#"
  (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
"#;

const SHARED_BODY: &str = r#"
  (data (i32.const 1300) "k")
  (data (i32.const 1310) "v1")
  (data (i32.const 1320) "v2")
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $report (call $get (i32.const 1300) (i32.const 1) (i32.const 512) (i32.const 516) (i32.const 520)))
    (call $report (call $set (i32.const 1300) (i32.const 1) (i32.const 1310) (i32.const 2) (i32.const 0)))
    (call $report (call $get (i32.const 1300) (i32.const 1) (i32.const 512) (i32.const 516) (i32.const 520)))
    (call $report (call $set (i32.const 1300) (i32.const 1) (i32.const 1320) (i32.const 2)
                             (i32.add (i32.load (i32.const 520)) (i32.const 1))))
    (call $report (call $set (i32.const 1300) (i32.const 1) (i32.const 1320) (i32.const 2) (i32.load (i32.const 520))))
    (call $report (call $get (i32.const -16) (i32.const 1) (i32.const 512) (i32.const 516) (i32.const 520)))
    (i32.const 1))
"#;

#[test]
fn shared_data_has_cas_and_is_shared_between_vms_of_a_plugin() {
    let wasm = guest("0_2_1", SHARED, SHARED_BODY);
    let plugin = Plugin::from_bytes("shared.wasm", &wasm).unwrap();
    let first = Vm::start(&plugin, VmSettings::default()).unwrap();
    assert_eq!(
        statuses(&first),
        vec![1, 0, 0, 8, 0, 6],
        "missing, set, get, stale cas, right cas, bad ptr"
    );
    let second = Vm::start(&plugin, VmSettings::default()).unwrap();
    assert_eq!(
        statuses(&second)[0],
        0,
        "the second VM sees the first VM's key"
    );
    let other_vm_id = Vm::start(
        &plugin,
        VmSettings {
            vm_id: "other".into(),
            ..VmSettings::default()
        },
    )
    .unwrap();
    assert_eq!(
        statuses(&other_vm_id)[0],
        1,
        "another vm_id has its own data"
    );
}

#[test]
fn metrics_follow_envoy_rules() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
           (import "env" "proxy_get_metric" (func $getm (param i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "requests")
           (func (export "proxy_on_configure") (param i32 i32) (result i32)
             (call $report (call $define_metric (i32.const 0) (i32.const 1100) (i32.const 8) (i32.const 600)))
             (call $report (call $inc (i32.load (i32.const 600)) (i64.const 5)))
             (call $report (call $inc (i32.load (i32.const 600)) (i64.const -1)))
             (call $report (call $getm (i32.load (i32.const 600)) (i32.const 608)))
             (call $report (i32.load (i32.const 608)))
             (call $report (call $getm (i32.const 999) (i32.const 608)))
             (call $report (call $define_metric (i32.const 7) (i32.const 1100) (i32.const 8) (i32.const 600)))
             (call $report (call $getm (i32.load (i32.const 8)) (i32.const 608)))
             (i32.const 1))"#,
    );
    let plugin = Plugin::from_bytes("metrics.wasm", &wasm).unwrap();
    let vm = Vm::start(&plugin, VmSettings::default()).unwrap();
    // The histogram read (last) is BadArgument; reading an unknown id NotFound.
    assert_eq!(statuses(&vm), vec![0, 0, 2, 0, 5, 1, 2, 2]);
    assert_eq!(
        vm.state().metrics().by_name("requests").map(|m| m.value),
        Some(5)
    );
}

#[test]
fn logging_wasi_output_clock_and_effective_context() {
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
           (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
           (import "wasi_unstable" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))"#,
        r#"(data (i32.const 1400) "hello\n")
           (data (i32.const 1420) "from proxy_log")
           (data (i32.const 1440) "too quiet")
           (data (i32.const 600) "\78\05\00\00\06\00\00\00")
           (func (export "proxy_on_configure") (param $root i32) (param i32) (result i32)
             (call $report (call $fd_write (i32.const 1) (i32.const 600) (i32.const 1) (i32.const 608)))
             (call $report (i32.load (i32.const 608)))
             (call $report (call $fd_write (i32.const 3) (i32.const 600) (i32.const 1) (i32.const 608)))
             (call $report (call $log (i32.const 3) (i32.const 1420) (i32.const 14)))
             (call $report (call $log (i32.const 1) (i32.const 1440) (i32.const 9)))
             (call $report (call $log (i32.const 9) (i32.const 1420) (i32.const 14)))
             (call $report (call $log (i32.const 3) (i32.const -16) (i32.const 14)))
             (call $report (call $level (i32.const 616)))
             (call $report (i32.load (i32.const 616)))
             (call $report (call $now (i32.const 624)))
             (call $report (i32.wrap_i64 (i64.div_u (i64.load (i32.const 624)) (i64.const 1000000000))))
             (call $report (call $clock (i32.const 0) (i64.const 1) (i32.const 632)))
             (call $report (i64.eq (i64.load (i32.const 632)) (i64.load (i32.const 624))))
             (call $report (call $clock (i32.const 7) (i64.const 1) (i32.const 632)))
             (call $report (call $random (i32.const 640) (i32.const 16)))
             (call $report (call $random (i32.const -8) (i32.const 16)))
             (call $report (call $env_sizes (i32.const 660) (i32.const 664)))
             (call $report (i32.load (i32.const 660)))
             (call $report (call $effective (i32.const 999)))
             (call $report (call $effective (local.get $root)))
             (i32.const 1))"#,
    );
    let plugin = Plugin::from_bytes("logs.wasm", &wasm).unwrap();
    let mut vm = Vm::start(&plugin, VmSettings::default()).unwrap();
    assert_eq!(
        statuses(&vm),
        vec![
            0,
            6, // stdout write, 6 bytes
            8, // fd 3: EBADF
            0,
            0, // warn logged; debug dropped below info but still Ok
            2, // level 9
            6, // bad message pointer
            0,
            2, // log level info
            0,
            1_704_067_200, // virtual clock: 2024-01-01T00:00:00Z
            0,
            1,  // WASI realtime == proxy time
            58, // unsupported clock: ENOTSUP
            0,
            21, // random_get; out of bounds: EFAULT
            0,
            0, // no environment
            2,
            0, // unknown context; the root
        ]
    );
    let logs = vm.take_logs();
    let lines: Vec<(String, String)> = logs
        .into_iter()
        .map(|l| (l.level.to_string(), l.message))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("info".to_string(), "hello".to_string()),
            ("warn".into(), "from proxy_log".into()),
        ]
    );
}

#[test]
fn random_bytes_are_reproducible_per_seed() {
    let wasm = guest(
        "0_2_1",
        r#"(import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))"#,
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32)
             (drop (call $random (i32.const 640) (i32.const 4)))
             (call $report (i32.load (i32.const 640)))
             (i32.const 1))"#,
    );
    let plugin = Plugin::from_bytes("rand.wasm", &wasm).unwrap();
    let draw = |seed| {
        statuses(
            &Vm::start(
                &plugin,
                VmSettings {
                    seed,
                    ..VmSettings::default()
                },
            )
            .unwrap(),
        )
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
}
