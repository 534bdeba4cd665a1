;; An Envoy cost probe (bench/envoy-probes/README.md): a proxy-wasm 0.2.1 module that exports
;; only the three callbacks every HTTP filter needs (`proxy_on_context_create`, request and
;; response headers) and makes the host calls its plugin configuration lists, one letter each:
;;   g  get an absent header          f  get a present header (`:path` / `:status`: the host
;;   a  add `x-probe-<i>`                then calls `malloc` in the guest for the value)
;;   r  replace `x-probe-<i>`         d  remove an absent header
;;   p  read the whole map (`proxy_get_header_map_pairs`, one `malloc`)
;; lower case on the request headers, upper case on the response headers. The empty
;; configuration is the floor: three guest calls per request and no host call.
(module
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 32, 36: returned pointer and size; 40, 44: the configuration's.
  (data (i32.const 64) "x-probe-0")
  (data (i32.const 80) "1")
  (data (i32.const 96) "x-probe-absent")
  (data (i32.const 112) ":path")
  (data (i32.const 120) ":status")
  (global $heap (mut i32) (i32.const 1024))
  (global $base (mut i32) (i32.const 1024))
  (global $ops (mut i32) (i32.const 0))
  (global $count (mut i32) (i32.const 0))
  ;; A bump allocator, reset at each headers callback (nothing is kept across them).
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (local.get $size)
      (then
        ;; Buffer type 7: the plugin configuration.
        (drop (call $buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 40) (i32.const 44)))
        (global.set $ops (i32.load (i32.const 40)))
        (global.set $count (i32.load (i32.const 44)))
        (global.set $base (global.get $heap))))
    (i32.const 1))
  ;; One host call: letter $c (lower case) on map $map (0 request, 2 response), the $i-th letter.
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
        (then (drop (call $pairs (local.get $map) (i32.const 32) (i32.const 36)))))))
  ;; Runs the configuration's letters of one case: $low 97 ('a') for the request's lower-case
  ;; letters, 65 ('A') for the response's upper-case ones.
  (func $run (param $low i32) (param $map i32)
    (local $i i32)
    (local $c i32)
    (global.set $heap (global.get $base))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (global.get $count)))
        (local.set $c (i32.load8_u (i32.add (global.get $ops) (local.get $i))))
        (if (i32.lt_u (i32.sub (local.get $c) (local.get $low)) (i32.const 26))
          (then (call $op (i32.or (local.get $c) (i32.const 32)) (local.get $map) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $run (i32.const 97) (i32.const 0))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $run (i32.const 65) (i32.const 2))
    (i32.const 0)))
