//! What the harness claims Envoy does with hostile guests, checked in a real
//! Envoy with the same WAT guest: linear memory is capped at 1 GiB (a
//! `memory.grow` past it returns -1), and a VM that trapped is dead: under the
//! default `FAIL_CLOSED` its streams fail at once with 503, the next ones too.

use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use tollgate_replay::Replay;
use tollgate_tests::client;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::launcher::Launcher;
use tollgate_tests::paths;
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::{Exchange, HttpRequest, HttpResponse, Traffic};

/// A guest whose request headers grow its memory (2 pages) by `pages` and
/// trap when `memory.grow` returns -1 (as a Rust guest aborts when an
/// allocation fails).
fn grow_guest(pages: u32) -> Result<Vec<u8>> {
    let src = format!(
        r#"(module
          (memory (export "memory") 2)
          (global $heap (mut i32) (i32.const 65536))
          (func (export "malloc") (param $n i32) (result i32) (local $p i32)
            (local.set $p (global.get $heap))
            (global.set $heap (i32.add (global.get $heap) (local.get $n)))
            (local.get $p))
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "proxy_on_context_create") (param i32 i32))
          (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
          (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))
            (i32.const 0)))"#
    );
    wat::parse_str(&src).context("the test guest does not assemble")
}

fn launch(config: &EnvoyConfig) -> Result<Envoy> {
    // Always the local binary: a missing Envoy is a failure, never a skip.
    match Envoy::launch_with(&Launcher::local()?, config, "hostile-guests")? {
        Launch::Ready(envoy) => Ok(envoy),
        Launch::Exited { status, log } => {
            let lines: Vec<&str> = log.lines().collect();
            bail!(
                "Envoy exited ({status}):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            )
        }
    }
}

/// The statuses Envoy answers `requests` with, the guest loaded as the
/// `headers` filter.
fn through_envoy(label: &str, wasm: &[u8], requests: &[HttpRequest]) -> Result<Vec<u16>> {
    let dir: PathBuf = paths::work_dir()?.join(format!("hostile-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("headers.wasm"), wasm)?;
    let upstream = Upstream::start(tollgate_tests::upstream::text_response(b"ok"))?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?;
    config.use_filters_from(&dir)?;
    config.set_plugin_configuration("{}")?;
    let envoy = launch(&config)?;
    let mut statuses = Vec::new();
    for r in requests {
        let got = envoy.explain(client::send(envoy.listener(), r))?;
        statuses.push(got.status);
    }
    Ok(statuses)
}

/// The statuses the harness's client gets for the same requests.
fn through_harness(wasm: Vec<u8>, requests: &[HttpRequest]) -> Result<Vec<u16>> {
    let report = Replay::module("headers.wasm", wasm)
        .config("{}")
        .traffic(Traffic {
            source: None,
            exchanges: requests
                .iter()
                .enumerate()
                .map(|(i, r)| Exchange {
                    id: format!("request {i}"),
                    request: r.clone(),
                    response: Some(HttpResponse {
                        status: 200,
                        headers: vec![("content-length".into(), "2".into())],
                        body: b"ok".to_vec(),
                    }),
                    details: Default::default(),
                })
                .collect(),
            warnings: Vec::new(),
        })
        .run()?;
    Ok(report
        .exchanges
        .iter()
        .map(|e| e.client_response.status)
        .collect())
}

#[test]
fn the_1_gib_memory_cap_and_dead_vms_match_envoy() -> Result<()> {
    let requests: Vec<HttpRequest> = (0..3)
        .map(|i| client::request("GET", "grow.example.com", &format!("/{i}"), &[], b""))
        .collect();
    // Growing to exactly 1 GiB succeeds once; the second request's growth is
    // refused (-1), the guest traps, and the dead VM fails the third at once.
    // Growing one page past 1 GiB is refused from the first request on.
    for (pages, expected) in [(16_382, [200, 503, 503]), (16_383, [503, 503, 503])] {
        let wasm = grow_guest(pages)?;
        let envoy = through_envoy(&format!("{pages}"), &wasm, &requests)?;
        ensure!(
            envoy == expected,
            "growing by {pages} pages: Envoy answered {envoy:?}, expected {expected:?}"
        );
        let harness = through_harness(wasm, &requests)?;
        ensure!(
            harness == envoy,
            "growing by {pages} pages: Envoy answered {envoy:?}, the harness {harness:?}"
        );
    }
    Ok(())
}
