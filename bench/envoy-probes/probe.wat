;; An Envoy cost probe (bench/envoy-probes/README.md): a proxy-wasm 0.2.1 module that exports
;; only the three callbacks every HTTP filter needs (`proxy_on_context_create`, request and
;; response headers) and makes the host calls its plugin configuration lists, one letter each:
;;   g  get an absent header          f  get a present header (`:path` / `:status`: the host
;;   a  add `x-probe-<i>`                then calls `malloc` in the guest for the value)
;;   r  replace `x-probe-<i>`         d  remove an absent header
;;   p  read the whole map (`proxy_get_header_map_pairs`, one `malloc`)
;;   n  queue a new pair `x-probe-<i>: 1` (no host call)
;;   w  write the map the last `p` of the same callback read back, with the queued pairs after
;;      its own (`proxy_set_header_map_pairs`; Envoy removes every entry, then adds each pair)
;;   x  burn wasm instructions, no host call: a loop of 556 rounds over memory, 10,128
;;      instructions per letter with its dispatch (`tollgate bench` on the probe), to price them
;; lower case on the request headers, upper case on the response headers; `<i>` is the
;; letter's position. `|` separates patterns used in turn, one per stream (`prra|prrra|prrra`:
;; a third of the streams run the first), so a probe can mirror a filter whose calls differ
;; between requests; a stream's response runs the pattern its request ran (the client sends
;; one request at a time). The empty configuration is the floor: three guest calls per
;; request and no host call. `run.sh` also builds the module with the line marked
;; `;;+delete` uncommented: `proxy_on_delete` exported, a fourth guest call per request, as
;; every filter the SDK builds exports it.
(module
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 32, 36: returned pointer and size; 40, 44: the configuration's; 48: the burn loop's hash.
  (data (i32.const 64) "x-probe-0")
  (data (i32.const 80) "1")
  (data (i32.const 96) "x-probe-absent")
  (data (i32.const 112) ":path")
  (data (i32.const 120) ":status")
  ;; 128..: the digits of the queued pairs (`n`).
  (global $heap (mut i32) (i32.const 1024))
  (global $base (mut i32) (i32.const 1024))
  (global $ops (mut i32) (i32.const 0))
  (global $count (mut i32) (i32.const 0))
  ;; The pattern of the current stream: its first letter and length.
  (global $start (mut i32) (i32.const 0))
  (global $len (mut i32) (i32.const 0))
  ;; Patterns in the configuration, streams seen, pairs queued.
  (global $patterns (mut i32) (i32.const 1))
  (global $streams (mut i32) (i32.const 0))
  (global $queued (mut i32) (i32.const 0))
  ;; A bump allocator, reset at each headers callback (nothing is kept across them).
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  ;;+delete (func (export "proxy_on_delete") (param i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (local $i i32)
    (if (local.get $size)
      (then
        ;; Buffer type 7: the plugin configuration.
        (drop (call $buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 40) (i32.const 44)))
        (global.set $ops (i32.load (i32.const 40)))
        (global.set $count (i32.load (i32.const 44)))
        (global.set $base (global.get $heap))
        (block $end
          (loop $next
            (br_if $end (i32.ge_u (local.get $i) (global.get $count)))
            (if (i32.eq (i32.load8_u (i32.add (global.get $ops) (local.get $i))) (i32.const 124))
              (then (global.set $patterns (i32.add (global.get $patterns) (i32.const 1)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next)))))
    (i32.const 1))
  ;; Sets $start and $len to the stream's pattern: the (streams mod patterns)-th.
  (func $pick
    (local $k i32)
    (local $i i32)
    (local.set $k (i32.rem_u (global.get $streams) (global.get $patterns)))
    (global.set $streams (i32.add (global.get $streams) (i32.const 1)))
    (global.set $start (i32.const 0))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (global.get $count)))
        (if (i32.eq (i32.load8_u (i32.add (global.get $ops) (local.get $i))) (i32.const 124))
          (then
            (if (i32.eqz (local.get $k))
              (then (br $end)))
            (local.set $k (i32.sub (local.get $k) (i32.const 1)))
            (global.set $start (i32.add (local.get $i) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $len (i32.sub (local.get $i) (global.get $start))))
  ;; 556 rounds of 18 counted instructions (10,008); with the letter's dispatch 10,128.
  (func $burn
    (local $i i32)
    (local $h i32)
    (local $p i32)
    (local.set $i (i32.const 556))
    (local.set $h (i32.load (i32.const 48)))
    (loop $round
      (local.set $h (i32.mul (i32.xor (local.get $h) (i32.load8_u offset=64 (local.get $p))) (i32.const 16777619)))
      (local.set $p (i32.and (i32.add (local.get $p) (i32.const 1)) (i32.const 15)))
      (br_if $round (local.tee $i (i32.sub (local.get $i) (i32.const 1)))))
    (i32.store (i32.const 48) (local.get $h)))
  ;; Writes the map read last (pointer and size at 32, 36) back to map $map with the queued
  ;; pairs appended: count, the size words, the queued pairs' size words, the names and values,
  ;; the queued pairs' names and values.
  (func $write (param $map i32)
    (local $src i32)
    (local $size i32)
    (local $n i32)
    (local $dst i32)
    (local $q i32)
    (local $j i32)
    (local $data i32)
    (local.set $src (i32.load (i32.const 32)))
    (local.set $size (i32.load (i32.const 36)))
    (local.set $n (i32.load (local.get $src)))
    (local.set $dst (global.get $heap))
    (i32.store (local.get $dst) (i32.add (local.get $n) (global.get $queued)))
    (memory.copy (i32.add (local.get $dst) (i32.const 4)) (i32.add (local.get $src) (i32.const 4))
      (i32.shl (local.get $n) (i32.const 3)))
    (local.set $q (i32.add (local.get $dst) (i32.add (i32.const 4) (i32.shl (local.get $n) (i32.const 3)))))
    (block $sized
      (loop $next
        (br_if $sized (i32.ge_u (local.get $j) (global.get $queued)))
        (i32.store (local.get $q) (i32.const 9))
        (i32.store offset=4 (local.get $q) (i32.const 1))
        (local.set $q (i32.add (local.get $q) (i32.const 8)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $next)))
    (local.set $data (i32.sub (local.get $size) (i32.add (i32.const 4) (i32.shl (local.get $n) (i32.const 3)))))
    (memory.copy (local.get $q) (i32.add (local.get $src) (i32.add (i32.const 4) (i32.shl (local.get $n) (i32.const 3))))
      (local.get $data))
    (local.set $q (i32.add (local.get $q) (local.get $data)))
    (local.set $j (i32.const 0))
    (block $written
      (loop $next
        (br_if $written (i32.ge_u (local.get $j) (global.get $queued)))
        ;; "x-probe-<digit>\0" "1\0"
        (memory.copy (local.get $q) (i32.const 64) (i32.const 8))
        (i32.store8 offset=8 (local.get $q) (i32.load8_u offset=128 (local.get $j)))
        (i32.store8 offset=9 (local.get $q) (i32.const 0))
        (i32.store8 offset=10 (local.get $q) (i32.const 49))
        (i32.store8 offset=11 (local.get $q) (i32.const 0))
        (local.set $q (i32.add (local.get $q) (i32.const 12)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $next)))
    (global.set $heap (local.get $q))
    (drop (call $set_pairs (local.get $map) (local.get $dst) (i32.sub (local.get $q) (local.get $dst))))
    (global.set $queued (i32.const 0)))
  ;; One letter $c (lower case) on map $map (0 request, 2 response), the $i-th of its pattern.
  (func $op (param $c i32) (param $map i32) (param $i i32)
    (i32.store8 (i32.const 72) (i32.add (i32.const 48) (i32.rem_u (local.get $i) (i32.const 10))))
    (block $done
      (if (i32.eq (local.get $c) (i32.const 103)) ;; g
        (then
          (drop (call $get (local.get $map) (i32.const 96) (i32.const 14) (i32.const 32) (i32.const 36)))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 102)) ;; f
        (then
          (if (i32.eqz (local.get $map))
            (then (drop (call $get (i32.const 0) (i32.const 112) (i32.const 5) (i32.const 32) (i32.const 36))))
            (else (drop (call $get (local.get $map) (i32.const 120) (i32.const 7) (i32.const 32) (i32.const 36)))))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 97)) ;; a
        (then
          (drop (call $add (local.get $map) (i32.const 64) (i32.const 9) (i32.const 80) (i32.const 1)))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 114)) ;; r
        (then
          (drop (call $replace (local.get $map) (i32.const 64) (i32.const 9) (i32.const 80) (i32.const 1)))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 100)) ;; d
        (then
          (drop (call $remove (local.get $map) (i32.const 96) (i32.const 14)))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 112)) ;; p
        (then
          (drop (call $pairs (local.get $map) (i32.const 32) (i32.const 36)))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 110)) ;; n
        (then
          (i32.store8 offset=128 (global.get $queued) (i32.load8_u (i32.const 72)))
          (global.set $queued (i32.add (global.get $queued) (i32.const 1)))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 119)) ;; w
        (then
          (call $write (local.get $map))
          (br $done)))
      (if (i32.eq (local.get $c) (i32.const 120)) ;; x
        (then (call $burn)))))
  ;; Runs the letters of the stream's pattern of one case: $low 97 ('a') for the request's
  ;; lower-case letters, 65 ('A') for the response's upper-case ones.
  (func $run (param $low i32) (param $map i32)
    (local $i i32)
    (local $c i32)
    (global.set $heap (global.get $base))
    (global.set $queued (i32.const 0))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (global.get $len)))
        (local.set $c (i32.load8_u (i32.add (global.get $ops) (i32.add (global.get $start) (local.get $i)))))
        (if (i32.lt_u (i32.sub (local.get $c) (local.get $low)) (i32.const 26))
          (then (call $op (i32.or (local.get $c) (i32.const 32)) (local.get $map) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $pick)
    (call $run (i32.const 97) (i32.const 0))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $run (i32.const 65) (i32.const 2))
    (i32.const 0)))
