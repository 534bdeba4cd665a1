//! Per-cluster callout stubs on the virtual clock: http responses, resets,
//! connection failures and timeouts with delays (a held stream waits, ticks
//! fire in between, in time order); gRPC streams with Envoy's callback
//! order and statuses.

use super::*;
use std::time::Duration;
use tollgate_host::callouts::{
    CONNECT_FAILURE_BODY, GrpcClusterStub, HttpClusterStub, TIMEOUT_BODY,
};
use tollgate_replay::{Replay, ReplayBuilder, StreamInput};

/// `pairs` in the proxy-wasm pairs encoding, as a WAT data string, and its length.
fn pairs_wat(pairs: &[(&str, &str)]) -> (String, usize) {
    let mut bytes = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        bytes.extend((k.len() as u32).to_le_bytes());
        bytes.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        bytes.extend(k.as_bytes());
        bytes.push(0);
        bytes.extend(v.as_bytes());
        bytes.push(0);
    }
    let text = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    (text, bytes.len())
}

/// A guest that ticks every 10 ms (reporting `7000 + now in ms`), calls
/// cluster `cluster` with `headers` and `timeout_ms` from its request
/// headers and pauses. On the answer (on the root context) it reports
/// `1000 + now in ms`, `100 + context`, `200 + token`, `300 + headers`,
/// `400 + body size`, `500 + trailers`, `10000 + :status` (`19000 +` the
/// status of reading it when that fails), `30000 + proxy_get_status` code,
/// `40000 +` the status of reading the header pairs, `50000 +` the status
/// of reading the body, then resumes its stream.
fn http_guest(cluster: &str, headers: &[(&str, &str)], timeout_ms: u32) -> Vec<u8> {
    let (pairs, len) = pairs_wat(headers);
    guest(
        "0_2_1",
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
           (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_status" (func $status (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
           (import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))"#,
        &format!(
            r#"(data (i32.const 1100) "{cluster}")
               (data (i32.const 1200) "{pairs}")
               (data (i32.const 1150) ":status")
               (func $ms (result i32)
                 (drop (call $now (i32.const 944)))
                 (i32.wrap_i64 (i64.div_u (i64.load (i32.const 944)) (i64.const 1000000))))
               (func $digits (param $p i32) (result i32)
                 (i32.add (i32.add
                   (i32.mul (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)) (i32.const 100))
                   (i32.mul (i32.sub (i32.load8_u offset=1 (local.get $p)) (i32.const 48)) (i32.const 10)))
                   (i32.sub (i32.load8_u offset=2 (local.get $p)) (i32.const 48))))
               (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
                 (drop (call $period (i32.const 10)))
                 (i32.const 1))
               (func (export "proxy_on_tick") (param i32)
                 (call $report (i32.add (i32.const 7000) (call $ms))))
               (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
                 (i32.store (i32.const 960) (local.get $ctx))
                 (call $report (call $call (i32.const 1100) (i32.const {cl}) (i32.const 1200) (i32.const {len})
                   (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {timeout_ms}) (i32.const 700)))
                 (i32.const 1))
               (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
                 (call $report (i32.add (i32.const 1000) (call $ms)))
                 (call $report (i32.add (i32.const 100) (local.get $root)))
                 (call $report (i32.add (i32.const 200) (local.get $token)))
                 (call $report (i32.add (i32.const 300) (local.get $nh)))
                 (call $report (i32.add (i32.const 400) (local.get $nb)))
                 (call $report (i32.add (i32.const 500) (local.get $nt)))
                 (if (i32.eqz (call $get (i32.const 6) (i32.const 1150) (i32.const 7) (i32.const 900) (i32.const 904)))
                   (then (call $report (i32.add (i32.const 10000) (call $digits (i32.load (i32.const 900))))))
                   (else (call $report (i32.add (i32.const 19000)
                     (call $get (i32.const 6) (i32.const 1150) (i32.const 7) (i32.const 900) (i32.const 904))))))
                 (drop (call $status (i32.const 910) (i32.const 914) (i32.const 918)))
                 (call $report (i32.add (i32.const 30000) (i32.load (i32.const 910))))
                 (call $report (i32.add (i32.const 40000)
                   (call $pairs (i32.const 6) (i32.const 920) (i32.const 924))))
                 (call $report (i32.add (i32.const 50000)
                   (call $buf (i32.const 4) (i32.const 0) (local.get $nb) (i32.const 928) (i32.const 932))))
                 (drop (call $effective (i32.load (i32.const 960))))
                 (drop (call $continue (i32.const 0))))"#,
            cl = cluster.len(),
        ),
    )
}

const CHECK: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/check"),
    (":authority", "authz.local"),
];

/// Runs one exchange with the virtual wall clock at 0; returns the
/// statuses the guest reported and the outcome.
fn run(
    wasm: Vec<u8>,
    setup: impl FnOnce(ReplayBuilder) -> ReplayBuilder,
) -> (Vec<u64>, StreamOutcome) {
    let (mut chain, _) = setup(Replay::module("callouts.wasm", wasm).clock_unix_nanos(0))
        .start()
        .expect("starts");
    let (out, _, _) = chain.exchange(&StreamInput::from_exchange(&exchange("GET", "/", &[], b"")));
    (chain.vm(0).map(statuses).unwrap_or_default(), out)
}

/// The answer's reports: from the `1000 + ms` marker to the end.
fn answer(reports: &[u64]) -> &[u64] {
    let at = reports
        .iter()
        .position(|&r| (1000..2000).contains(&r))
        .unwrap_or(reports.len());
    &reports[at..]
}

#[test]
fn a_delayed_answer_holds_the_stream_while_ticks_fire_in_time_order() {
    let (r, out) = run(http_guest("authz", CHECK, 0), |b| {
        b.http_cluster(
            HttpClusterStub::respond("authz", 200)
                .header("x-auth-user", "alice")
                .body("allow")
                .trailer("x-t", "1")
                .delay(Duration::from_millis(35)),
        )
    });
    // The request arrives at 1 ms; the answer at 36 ms, after the ticks of 10, 20, 30 ms.
    assert_eq!(
        r,
        [
            0, 7010, 7020, 7030, 1036, 101, 204, 302, 405, 501, 10200, 30000, 40000, 50000
        ],
        "call Ok; ticks; answer at 36 ms on root context 1, token 4, 2 headers, 5 bytes, 1 trailer, :status 200"
    );
    assert!(
        out.upstream_request.is_some(),
        "the stream resumed: {out:?}"
    );
    assert!(
        out.steps[0]
            .steps
            .iter()
            .any(|s| s.to_string().contains("waited 35ms (virtual)")),
        "{:?}",
        out.steps
    );
}

#[test]
fn a_call_to_an_unknown_cluster_is_refused_and_the_stream_stays_held() {
    // Only `other` is stubbed: the call to `authz` is refused and nothing
    // will ever resume the stream.
    let (r, out) = run(http_guest("authz", CHECK, 0), |b| {
        b.http_cluster(HttpClusterStub::respond("other", 200))
    });
    assert_eq!(r, [2], "BadArgument: the cluster is unknown");
    assert!(out.upstream_request.is_none());
    assert!(out.stalled_in.is_some());
}

#[test]
fn a_reset_has_no_headers_and_status_broken_connection() {
    let (r, out) = run(http_guest("authz", CHECK, 0), |b| {
        b.http_cluster(HttpClusterStub::reset("authz").delay(Duration::from_millis(5)))
    });
    assert_eq!(r[0], 0);
    assert_eq!(
        answer(&r),
        [1006, 101, 204, 300, 400, 500, 19002, 30011, 40000, 50001],
        "as Envoy 1.40: 0 headers, 0 body, 0 trailers; a header value is BadArgument, \
         the pairs are empty (Ok), the body NotFound; proxy_get_status BrokenConnection (11)"
    );
    assert!(out.upstream_request.is_some());
}

#[test]
fn a_connection_failure_is_envoys_503_local_reply() {
    let (r, _) = run(http_guest("authz", CHECK, 0), |b| {
        b.http_cluster(HttpClusterStub::connect_failure("authz"))
    });
    let (immediate, _) = run(http_guest("authz", CHECK, 0), |b| {
        b.http_cluster(HttpClusterStub::connect_failure("authz"))
            .answer_timing(tollgate_host::callouts::AnswerTiming::Immediate)
    });
    // Without a delay of its own the answer takes the 1 ms (virtual) an
    // undelayed answer takes (`AnswerTiming::AfterInput`); asked for, at once.
    assert_eq!(answer(&immediate)[0], 1001);
    assert_eq!(answer(&immediate)[1..], answer(&r)[1..]);
    assert_eq!(
        answer(&r),
        [
            1002,
            101,
            204,
            303,
            400 + CONNECT_FAILURE_BODY.len() as u64,
            500,
            10503,
            30000,
            40000,
            50000
        ],
        "1 ms after the call: :status, content-length, content-type"
    );
}

#[test]
fn a_delay_beyond_the_calls_timeout_answers_504_when_the_timeout_expires() {
    let (r, out) = run(http_guest("authz", CHECK, 100), |b| {
        b.http_cluster(HttpClusterStub::respond("authz", 200).delay(Duration::from_millis(300)))
    });
    assert_eq!(
        answer(&r),
        [
            1101,
            101,
            204,
            303,
            400 + TIMEOUT_BODY.len() as u64,
            500,
            10504,
            30000,
            40000,
            50000
        ],
        "504 `upstream request timeout` at 1 + 100 ms"
    );
    let ticks = r.iter().filter(|&&x| (7000..8000).contains(&x)).count();
    assert_eq!(ticks, 10, "ticks up to 100 ms only: {r:?}");
    assert!(out.upstream_request.is_some());
    // Within the timeout the stub answers.
    let (r, _) = run(http_guest("authz", CHECK, 100), |b| {
        b.http_cluster(HttpClusterStub::respond("authz", 200).delay(Duration::from_millis(50)))
    });
    assert_eq!(answer(&r)[0], 1051);
    assert_eq!(answer(&r)[6], 10200);
}

#[test]
fn calls_missing_a_pseudo_header_are_refused() {
    for missing in [":method", ":path", ":authority"] {
        let headers: Vec<(&str, &str)> = CHECK
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (r, out) = run(http_guest("authz", &headers, 0), |b| {
            b.http_cluster(HttpClusterStub::respond("authz", 200))
        });
        assert_eq!(r, [2], "without {missing}: BadArgument, no answer");
        assert!(!out.callout_requests[0].accepted);
    }
}

#[test]
fn the_callout_request_is_recorded_with_its_headers() {
    let headers = [
        (":method", "POST"),
        (":path", "/v1/check"),
        (":authority", "authz.local"),
        ("x-api-key", "k1"),
    ];
    let (_, out) = run(http_guest("authz", &headers, 250), |b| {
        b.http_cluster(HttpClusterStub::respond("authz", 200))
    });
    assert_eq!(out.callouts, ["callouts.wasm: http authz POST /v1/check"]);
    let c = &out.callout_requests[0];
    assert_eq!(
        (
            c.filter.as_str(),
            c.kind,
            c.cluster.as_str(),
            c.timeout_ms,
            c.accepted
        ),
        ("callouts.wasm", "http", "authz", 250, true)
    );
    assert!(c.headers.contains(&("x-api-key".into(), "k1".into())));
}

/// A guest that opens a gRPC stream to `cluster` from its request headers
/// and sends one message, reporting each status (and the token), then
/// `proxy_grpc_send` on an http token and on an unknown stream; it pauses.
/// Callbacks report: initial metadata `100 + count` (and 150 when
/// `x-init` is readable), each message `200 + size`, trailing metadata
/// `300 + count`, close `400 + status` and `500 + message length`, then
/// `600 + proxy_grpc_close` and `700 + proxy_grpc_cancel` of the token,
/// and resume the stream.
pub fn grpc_guest(cluster: &str) -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_grpc_send" (func $send (param i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_grpc_close" (func $close (param i32) (result i32)))
           (import "env" "proxy_grpc_cancel" (func $cancel (param i32) (result i32)))
           (import "env" "proxy_get_status" (func $status (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))"#,
        &format!(
            r#"(data (i32.const 1100) "{cluster}")
               (data (i32.const 1120) "svc.Checker")
               (data (i32.const 1140) "Watch")
               (data (i32.const 1150) "hi")
               (data (i32.const 1160) "x-init")
               (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
                 (i32.store (i32.const 960) (local.get $ctx))
                 (call $report (call $stream (i32.const 1100) (i32.const {cl}) (i32.const 1120) (i32.const 11)
                   (i32.const 1140) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 964)))
                 (call $report (i32.load (i32.const 964)))
                 (call $report (call $send (i32.load (i32.const 964)) (i32.const 1150) (i32.const 2) (i32.const 0)))
                 (call $report (call $send (i32.const 4) (i32.const 1150) (i32.const 2) (i32.const 0)))
                 (call $report (call $send (i32.const 14) (i32.const 1150) (i32.const 2) (i32.const 0)))
                 (i32.const 1))
               (func (export "proxy_on_grpc_receive_initial_metadata") (param i32 i32) (param $n i32)
                 (call $report (i32.add (i32.const 100) (local.get $n)))
                 (if (i32.eqz (call $get (i32.const 4) (i32.const 1160) (i32.const 6) (i32.const 900) (i32.const 904)))
                   (then (call $report (i32.const 150)))))
               (func (export "proxy_on_grpc_receive") (param i32 i32) (param $size i32)
                 (call $report (i32.add (i32.const 200) (local.get $size))))
               (func (export "proxy_on_grpc_receive_trailing_metadata") (param i32 i32) (param $n i32)
                 (call $report (i32.add (i32.const 300) (local.get $n))))
               (func (export "proxy_on_grpc_close") (param i32) (param $token i32) (param $code i32)
                 (call $report (i32.add (i32.const 400) (local.get $code)))
                 (drop (call $status (i32.const 910) (i32.const 914) (i32.const 918)))
                 (call $report (i32.add (i32.const 500) (i32.load (i32.const 918))))
                 (call $report (i32.add (i32.const 600) (call $close (local.get $token))))
                 (call $report (i32.add (i32.const 700) (call $cancel (local.get $token))))
                 (drop (call $effective (i32.load (i32.const 960))))
                 (drop (call $continue (i32.const 0))))"#,
            cl = cluster.len(),
        ),
    )
}

#[test]
fn a_grpc_stream_gets_metadata_messages_trailers_and_close_in_envoys_order() {
    let (r, out) = run(grpc_guest("checker"), |b| {
        b.grpc_cluster(
            GrpcClusterStub::ok("checker")
                .initial("x-init", "1")
                .message(b"ab".to_vec())
                .message(b"cde".to_vec())
                .trailing("x-t", "1")
                .trailing("x-u", "2")
                .delay(Duration::from_millis(20)),
        )
    });
    assert_eq!(
        r,
        [0, 6, 0, 2, 1, 103, 150, 202, 203, 303, 400, 512, 600, 701],
        "stream Ok with token 6; send Ok, BadArgument on an http token, NotFound on an unknown stream; \
         then initial metadata (:status, content-type, x-init readable), 2 messages, 3 trailers \
         (grpc-status and the stub's 2), close OK with the message `via_upstream`; \
         close after the server closed: Ok; cancel then: NotFound"
    );
    assert!(out.upstream_request.is_some(), "resumed from on_grpc_close");
    assert_eq!(
        out.callouts,
        ["callouts.wasm: grpc checker svc.Checker/Watch stream"]
    );
}

#[test]
fn a_failing_grpc_stream_closes_with_its_status_and_no_message() {
    let (r, _) = run(grpc_guest("checker"), |b| {
        b.grpc_cluster(GrpcClusterStub::fail("checker", 7, "denied"))
    });
    assert_eq!(
        &r[5..],
        [100, 304, 407, 520, 600, 701],
        "trailers-only: empty initial metadata, no message, the frame's 4 headers as trailing \
         metadata, PERMISSION_DENIED `denied{{via_upstream}}`"
    );
}

#[test]
fn grpc_streams_to_unknown_clusters_are_refused_and_an_empty_service_traps() {
    let (r, out) = run(grpc_guest("nobody"), |b| {
        b.grpc_cluster(GrpcClusterStub::ok("checker"))
    });
    assert_eq!(&r[..2], [4, 0], "ParseFailure, no token");
    assert!(out.stalled_in.is_some());
    // An empty service crashes Envoy 1.40 (`panic: unset oneof`): a trap here.
    let (r, out) = run(grpc_guest(""), |b| b.grpc_cluster(GrpcClusterStub::ok("")));
    assert!(r.is_empty(), "{r:?}");
    let failure = out.failure.expect("the empty service traps");
    assert!(
        failure
            .message
            .contains("empty service: Envoy 1.40 aborts the process"),
        "{failure}"
    );
}

#[test]
fn tollgate_replay_answers_callouts_from_stub_files() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let wasm = format!("{target}/filters/ext-authz.wasm");
    assert!(
        std::path::Path::new(&wasm).exists(),
        "{wasm} is missing: run `cargo xtask build` first"
    );
    let dir = std::env::temp_dir().join(format!("tollgate-stub-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("user.txt"), "ignored").unwrap();
    let allow = dir.join("allow.yaml");
    std::fs::write(
        &allow,
        "status: 200\nheaders: {x-auth-user: bob}\nbody: {file: user.txt}\ndelay_ms: 20\n",
    )
    .unwrap();
    let run = |stub: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([
                "replay",
                &format!("{root}/traffic/demo.har"),
                "--filter",
                &wasm,
            ])
            .args(["--config", &format!("@{root}/filters/ext-authz/demo.json")])
            .args(["--stub", stub, "--format", "json"])
            .output()
            .expect("tollgate runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&format!("authz={}", allow.display()));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    let exchanges = report["exchanges"].as_array().expect("exchanges");
    assert!(!exchanges.is_empty());
    // The summary `cargo xtask demo` shows (xtask/src/demo.rs reads these fields).
    let summary = &report["summary"];
    assert_eq!(summary["requests"], exchanges.len());
    assert_eq!(summary["modified"], exchanges.len());
    for zero in ["passed", "answered_locally", "failed"] {
        assert_eq!(summary[zero], 0, "{zero}");
    }
    let p50 = summary["p50_ns"].as_u64().expect("p50_ns");
    assert!(summary["p99_ns"].as_u64().expect("p99_ns") >= p50);
    assert!(
        report["filter"]["wasm_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    for e in exchanges {
        assert_eq!(e["verdict"]["kind"], "modified", "{e}");
        assert!(
            e["changes"].as_array().is_some_and(|c| c
                .iter()
                .any(|c| c == "request header x-auth-user: added \"bob\"")),
            "{e}"
        );
    }
    // Unknown cluster name in the stub: the filter's callout is refused (403).
    let (ok, out, err) = run(&format!("other={}", allow.display()));
    assert!(ok, "{err}");
    assert!(out.contains("\"answered_locally\""), "{out}");
    let (ok, _, err) = run("authz");
    assert!(!ok);
    assert!(
        err.contains("--stub: `authz`: expected CLUSTER=FILE"),
        "{err}"
    );
}

#[test]
fn a_unary_grpc_call_slower_than_its_timeout_closes_unavailable_at_the_timeout() {
    // The caller's timeout is 1000 ms.
    let (r, out) = run(super::grpc::caller("authz"), |b| {
        b.grpc_cluster(
            GrpcClusterStub::ok("authz")
                .message(b"\x08\x01".to_vec())
                .delay(Duration::from_millis(2000)),
        )
    });
    assert_eq!(
        r,
        [
            0,
            5,
            2014,
            3014,
            4000 + "upstream request timeout{upstream_response_timeout}".len() as u64
        ],
        "token 5; close 14 `upstream request timeout` with the router's details"
    );
    assert!(TIMEOUT_BODY == "upstream request timeout");
    assert!(
        out.steps[0]
            .steps
            .iter()
            .any(|s| s.to_string().contains("waited 1s")),
        "{:?}",
        out.steps
    );
    // Within the timeout: the message.
    let (r, _) = run(super::grpc::caller("authz"), |b| {
        b.grpc_cluster(
            GrpcClusterStub::ok("authz")
                .message(b"\x08\x01".to_vec())
                .delay(Duration::from_millis(999)),
        )
    });
    assert_eq!(r, [0, 5, 1002, 8]);
}
