//! Several worker VMs per filter: exchanges go to the workers in turn, VM
//! state is per worker, shared data is common to all.

use super::*;
use tollgate_replay::{Replay, StreamInput};

#[test]
fn each_worker_has_its_own_vm_state_and_all_share_shared_data() {
    // Counts requests in a VM global (reported), and in shared data key "n"
    // (read, incremented, written back; the value read is reported + 100).
    let wasm = guest(
        "0_2_1",
        r#"(import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(global $n (mut i32) (i32.const 0))
           (data (i32.const 1100) "n")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (local $v i32)
             (global.set $n (i32.add (global.get $n) (i32.const 1)))
             (call $report (global.get $n))
             (if (i32.eqz (call $get (i32.const 1100) (i32.const 1) (i32.const 512) (i32.const 516) (i32.const 520)))
               (then (local.set $v (i32.load (i32.load (i32.const 512))))))
             (call $report (i32.add (i32.const 100) (local.get $v)))
             (i32.store (i32.const 600) (i32.add (local.get $v) (i32.const 1)))
             (drop (call $set (i32.const 1100) (i32.const 1) (i32.const 600) (i32.const 4) (i32.const 0)))
             (i32.const 0))"#,
    );
    let (mut chain, _) = Replay::module("count.wasm", wasm)
        .workers(2)
        .start()
        .expect("starts");
    assert_eq!(chain.workers(), 2);
    let input = StreamInput::from_exchange(&exchange("GET", "/", &[], b""));
    for _ in 0..4 {
        let (out, _, _) = chain.exchange(&input);
        assert!(out.failure.is_none());
    }
    let w0 = statuses(chain.vm_on(0, 0).expect("worker 0"));
    let w1 = statuses(chain.vm_on(0, 1).expect("worker 1"));
    // VM-local counters: 1, 2 on each worker; shared counter: 0..3 across them.
    assert_eq!(w0, [1, 100, 2, 102]);
    assert_eq!(w1, [1, 101, 2, 103]);
}
