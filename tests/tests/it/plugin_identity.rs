//! A plugin's identity (`name`, `root_id`, `vm_id`) and its VM's environment
//! (`vm_config.environment_variables`), the real Envoy 1.40 next to the
//! harness, through `tollgate envoy`'s library: the generated bootstrap
//! carries what `--plugin-name`, `--root-id`, `--vm-id`, `--env` and
//! `--host-env` give, and the prediction runs under the same identity.
//!
//! The guest (WAT, below) registers the shared queue `q` when configured;
//! in every request it adds `x-identity` to the request: the properties
//! `plugin_name`, `plugin_root_id` and `plugin_vm_id`, the statuses of
//! resolving `q` with an empty vm_id (its own), with the vm_id `probe-vm`
//! and with `nope`, and the bootstrap's node: `node` (Envoy 1.40 has none:
//! `NotFound`), `xds.node.id` and `xds.node.cluster` (the generated
//! bootstrap's `node`), and `xds.node.id` as `proxy_on_configure` read it; and one `x-env-<key>` header per WASI environment
//! variable (one header per key, since Envoy's order is a hash map's). Two
//! copies run as a chain: the first with an identity and an environment
//! given, the second with the generated defaults. Envoy must forward the
//! same headers the harness predicts, and they must say what was given.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use tollgate_envoy::{WasmFilter, bootstrap, diff};
use tollgate_replay::Replay;
use tollgate_tests::{client, guest, paths};
use tollgate_traffic::{Exchange, HttpResponse, Traffic};

const GUEST: &str = r#"(module
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 1024) "plugin_name")     ;; 11
  (data (i32.const 1040) "plugin_root_id")  ;; 14
  (data (i32.const 1056) "plugin_vm_id")    ;; 12
  (data (i32.const 1072) "x-identity")      ;; 10
  (data (i32.const 1088) "q")               ;; 1
  (data (i32.const 1096) "probe-vm")        ;; 8
  (data (i32.const 1112) "nope")            ;; 4
  (data (i32.const 1120) "x-env-")          ;; 6
  (data (i32.const 1136) " root=")          ;; 6
  (data (i32.const 1144) " vm=")            ;; 4
  (data (i32.const 1152) " own=")           ;; 5
  (data (i32.const 1160) " peer=")          ;; 6
  (data (i32.const 1168) " other=")         ;; 7
  (data (i32.const 1176) "name=")           ;; 5
  (data (i32.const 1184) " node=")          ;; 6
  (data (i32.const 1192) "node")            ;; 4
  (data (i32.const 1200) " xds.node=")      ;; 10
  (data (i32.const 1216) "xds\00node\00id")  ;; 11
  (data (i32.const 1232) "xds\00node\00cluster")  ;; 16
  (data (i32.const 1256) " configure=")     ;; 11
  (data (i32.const 1272) "/")               ;; 1
  (global $heap (mut i32) (i32.const 65536))
  (global $cur (mut i32) (i32.const 16384))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $register (i32.const 1088) (i32.const 1) (i32.const 280)))
    ;; the node as the root context reads it: status at 308, value at 300/304
    (i32.store (i32.const 308)
      (call $get_prop (i32.const 1216) (i32.const 11) (i32.const 300) (i32.const 304)))
    (i32.const 1))
  (func (export "proxy_on_queue_ready") (param i32 i32))
  (func $put (param $p i32) (param $n i32)
    (memory.copy (global.get $cur) (local.get $p) (local.get $n))
    (global.set $cur (i32.add (global.get $cur) (local.get $n))))
  (func $putc (param $c i32)
    (i32.store8 (global.get $cur) (local.get $c))
    (global.set $cur (i32.add (global.get $cur) (i32.const 1))))
  (func $num (param $v i32)
    (if (i32.ge_u (local.get $v) (i32.const 10))
      (then (call $num (i32.div_u (local.get $v) (i32.const 10)))))
    (call $putc (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
  ;; the property's value, or `?` and the status
  (func $prop (param $p i32) (param $n i32)
    (local $rc i32)
    (local.set $rc (call $get_prop (local.get $p) (local.get $n) (i32.const 256) (i32.const 260)))
    (if (i32.eqz (local.get $rc))
      (then (call $put (i32.load (i32.const 256)) (i32.load (i32.const 260))))
      (else (call $putc (i32.const 63)) (call $num (local.get $rc)))))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $i i32) (local $count i32) (local $p i32) (local $eq i32) (local $end i32) (local $klen i32)
    (global.set $cur (i32.const 16384))
    (call $put (i32.const 1176) (i32.const 5))
    (call $prop (i32.const 1024) (i32.const 11))
    (call $put (i32.const 1136) (i32.const 6))
    (call $prop (i32.const 1040) (i32.const 14))
    (call $put (i32.const 1144) (i32.const 4))
    (call $prop (i32.const 1056) (i32.const 12))
    (call $put (i32.const 1152) (i32.const 5))
    (call $num (call $resolve (i32.const 0) (i32.const 0) (i32.const 1088) (i32.const 1) (i32.const 264)))
    (call $put (i32.const 1160) (i32.const 6))
    (call $num (call $resolve (i32.const 1096) (i32.const 8) (i32.const 1088) (i32.const 1) (i32.const 264)))
    (call $put (i32.const 1168) (i32.const 7))
    (call $num (call $resolve (i32.const 1112) (i32.const 4) (i32.const 1088) (i32.const 1) (i32.const 264)))
    (call $put (i32.const 1184) (i32.const 6))
    (call $prop (i32.const 1192) (i32.const 4))
    (call $put (i32.const 1200) (i32.const 10))
    (call $prop (i32.const 1216) (i32.const 11))
    (call $put (i32.const 1272) (i32.const 1))
    (call $prop (i32.const 1232) (i32.const 16))
    (call $put (i32.const 1256) (i32.const 11))
    (if (i32.eqz (i32.load (i32.const 308)))
      (then (call $put (i32.load (i32.const 300)) (i32.load (i32.const 304))))
      (else (call $putc (i32.const 63)) (call $num (i32.load (i32.const 308)))))
    (drop (call $add_hdr (i32.const 0) (i32.const 1072) (i32.const 10)
                         (i32.const 16384) (i32.sub (global.get $cur) (i32.const 16384))))
    ;; the environment: one x-env-<key> header per KEY=VALUE
    (drop (call $env_sizes (i32.const 268) (i32.const 272)))
    (drop (call $env_get (i32.const 4096) (i32.const 8192)))
    (local.set $count (i32.load (i32.const 268)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $p (i32.load (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 4)))))
        (local.set $eq (local.get $p))
        (block $found (loop $scan
          (br_if $found (i32.eq (i32.load8_u (local.get $eq)) (i32.const 61)))
          (local.set $eq (i32.add (local.get $eq) (i32.const 1)))
          (br $scan)))
        (local.set $end (local.get $eq))
        (block $nul (loop $scan2
          (br_if $nul (i32.eqz (i32.load8_u (local.get $end))))
          (local.set $end (i32.add (local.get $end) (i32.const 1)))
          (br $scan2)))
        (local.set $klen (i32.sub (local.get $eq) (local.get $p)))
        (global.set $cur (i32.const 12288))
        (call $put (i32.const 1120) (i32.const 6))
        (call $put (local.get $p) (local.get $klen))
        (drop (call $add_hdr (i32.const 0) (i32.const 12288) (i32.add (i32.const 6) (local.get $klen))
                             (i32.add (local.get $eq) (i32.const 1))
                             (i32.sub (i32.sub (local.get $end) (local.get $eq)) (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))
)"#;

/// A variable this test never sets (a `--host-env` key Envoy leaves out).
const UNSET: &str = "TOLLGATE_IDENTITY_TEST_NEVER_SET";

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn plugin_identity_and_vm_environment_reach_the_guest_as_in_envoy() -> Result<()> {
    let wasm = guest::assemble(GUEST, "identity guest")?;
    let dir: PathBuf = paths::work_dir()?.join(format!("identity-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("identity.wasm");
    std::fs::write(&path, &wasm)?;
    let home = std::env::var("HOME").context("HOME is not set")?;
    let mut given = WasmFilter::new(&path);
    given.identity.name = Some("id-probe".into());
    given.identity.root_id = Some("probe-root".into());
    given.identity.vm_id = Some("probe-vm".into());
    given
        .identity
        .push_key_value("TG_A=1")
        .map_err(anyhow::Error::msg)?;
    given
        .identity
        .push_key_value("TG_B=two words, x=y")
        .map_err(anyhow::Error::msg)?;
    given.identity.host_env_keys = vec!["HOME".into(), UNSET.into()];
    let filters = vec![given, WasmFilter::new(&path)];

    let request = client::request("GET", "identity.example.com", "/who", &[], b"");
    let traffic = Traffic {
        source: None,
        exchanges: (0..2)
            .map(|i| Exchange {
                id: format!("identity {i}"),
                request: request.clone(),
                response: Some(HttpResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: b"ok".to_vec(),
                }),
                details: Default::default(),
            })
            .collect(),
        warnings: Vec::new(),
    };
    // The prediction, as `tollgate envoy` makes it: each filter under the
    // identity the generated bootstrap gives it.
    let mut replay = Replay::chain();
    for (i, f) in filters.iter().enumerate() {
        replay = replay
            .filter(&f.path)
            .identity(&bootstrap::identity_of(i, f));
    }
    let predicted: Vec<diff::Prediction> = replay
        .traffic(traffic.clone())
        .run()?
        .exchanges
        .into_iter()
        .map(|e| diff::Prediction {
            upstream_request: e.upstream_request,
            client_response: e.client_response,
        })
        .collect();
    let options = diff::DiffOptions::new(paths::envoy_binary()?, filters);
    let report = diff::run(&options, &traffic, &predicted)?;
    let differences: Vec<String> = report
        .exchanges
        .iter()
        .flat_map(|e| e.differences.iter().map(move |d| format!("{}: {d}", e.id)))
        .collect();
    ensure!(
        differences.is_empty(),
        "Envoy and the harness differ:\n{}",
        differences.join("\n")
    );
    for e in &report.exchanges {
        let seen = e
            .envoy_upstream
            .as_ref()
            .with_context(|| format!("{}: Envoy did not forward the request", e.id))?;
        // Both filters resolve `q` by their own vm_id and by `probe-vm`
        // (Envoy's queues are process-wide, named per vm_id); `nope` has none.
        ensure!(
            header(&seen.headers, "x-identity")
                == [
                    "name=id-probe root=probe-root vm=probe-vm own=0 peer=0 other=1 node=?1 xds.node=tollgate/tollgate configure=tollgate",
                    "name=identity root=identity vm=1-identity own=0 peer=0 other=1 node=?1 xds.node=tollgate/tollgate configure=tollgate",
                ],
            "{}: x-identity {:?}",
            e.id,
            header(&seen.headers, "x-identity")
        );
        ensure!(header(&seen.headers, "x-env-tg_a") == ["1"], "{seen:?}");
        ensure!(
            header(&seen.headers, "x-env-tg_b") == ["two words, x=y"],
            "{seen:?}"
        );
        ensure!(
            header(&seen.headers, "x-env-home") == [home.as_str()],
            "{seen:?}"
        );
        let unset = format!("x-env-{}", UNSET.to_ascii_lowercase());
        ensure!(header(&seen.headers, &unset).is_empty(), "{seen:?}");
        ensure!(
            seen.headers
                .iter()
                .filter(|(k, _)| k.starts_with("x-env-"))
                .count()
                == 3,
            "only the first filter has an environment: {seen:?}"
        );
    }
    Ok(())
}
