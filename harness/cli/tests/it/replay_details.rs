//! Replaying an exchange as recorded: its body chunk sizes
//! (`ChunkPlan::Sizes`), its trailers, and its own callout answers (before
//! the builder's `http_call_stub`), in the in-memory and streamed replays.

use super::*;
use tollgate_host::state::HttpCallStub;
use tollgate_replay::streaming::{self, Outcome};
use tollgate_replay::{ChunkPlan, Replay, StreamInput, Verdict};
use tollgate_traffic::{Callout, Traffic};

/// Passes everything on; reports request body sizes as is, response body
/// sizes + 1000, request trailer count + 2000 and the length of the request
/// trailer `x-sum` + 3000, response trailer count + 4000.
fn observer() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "x-sum")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
             (call $report (local.get 1))
             (i32.const 0))
           (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
             (call $report (i32.add (i32.const 1000) (local.get 1)))
             (i32.const 0))
           (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
             (call $report (i32.add (i32.const 2000) (local.get 1)))
             (if (i32.eqz (call $get (i32.const 1) (i32.const 1100) (i32.const 5) (i32.const 900) (i32.const 904)))
               (then (call $report (i32.add (i32.const 3000) (i32.load (i32.const 904))))))
             (i32.const 0))
           (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
             (call $report (i32.add (i32.const 4000) (local.get 1)))
             (i32.const 0))"#,
    )
}

/// A POST of `abcdefghijkl` that arrived in chunks of 2, 9 and 1 bytes with
/// a trailer, answered in chunks of 1 and 3 bytes with two trailers.
fn chunked_exchange() -> Exchange {
    let mut e = exchange("POST", "/upload", &[], b"abcdefghijkl");
    if let Some(r) = e.response.as_mut() {
        r.body = b"done".to_vec();
    }
    e.details.request_chunks = vec![2, 9, 1];
    e.details.request_trailers = vec![("x-sum".into(), "c0ffee".into())];
    e.details.response_chunks = vec![1, 3];
    e.details.response_trailers = vec![
        ("grpc-status".into(), "0".into()),
        ("x-end".into(), "1".into()),
    ];
    e
}

fn traffic(exchanges: Vec<Exchange>) -> Traffic {
    Traffic {
        exchanges,
        ..Traffic::default()
    }
}

#[test]
fn recorded_sizes_cut_bodies_at_the_recorded_boundaries() {
    let sizes = ChunkPlan::Sizes(vec![2, 0, 9, 1]);
    assert_eq!(
        sizes.split(b"abcdefghijkl"),
        [b"ab".to_vec(), b"cdefghijk".to_vec(), b"l".to_vec()]
    );
    // Bytes beyond the recorded sizes form a last chunk; sizes beyond the
    // body are cut short.
    assert_eq!(
        ChunkPlan::Sizes(vec![2]).split(b"abcde"),
        [b"ab".to_vec(), b"cde".to_vec()]
    );
    assert_eq!(
        ChunkPlan::Sizes(vec![4, 4]).split(b"abcde"),
        [b"abcd".to_vec(), b"e".to_vec()]
    );
    assert_eq!(ChunkPlan::recorded(&[]), ChunkPlan::Whole);
    assert_eq!(ChunkPlan::recorded(&[12]), ChunkPlan::Whole);
    assert_eq!(ChunkPlan::recorded(&[2, 9, 1]), sizes_of(&[2, 9, 1]));
}

fn sizes_of(s: &[usize]) -> ChunkPlan {
    ChunkPlan::Sizes(s.to_vec())
}

#[test]
fn the_guest_sees_the_recorded_chunks_and_trailers() {
    let e = chunked_exchange();
    let input = StreamInput::from_recording(&e);
    assert_eq!(input.request_chunks, sizes_of(&[2, 9, 1]));
    let (mut chain, _) = Replay::module("observer.wasm", observer()).start().unwrap();
    let (out, _, _) = chain.exchange(&input);
    assert_eq!(
        statuses(chain.vm(0).unwrap()),
        [2, 9, 1, 2001, 3006, 1001, 1003, 4002],
        "request chunks 2, 9, 1, one trailer `x-sum` of 6 bytes, response chunks 1, 3, two trailers"
    );
    assert_eq!(out.upstream_request.as_ref().unwrap().body, b"abcdefghijkl");
    assert_eq!(
        out.upstream_trailers,
        [("x-sum".to_string(), "c0ffee".to_string())]
    );
    assert_eq!(out.client_response.body, b"done");
    assert_eq!(
        out.client_trailers,
        [
            ("grpc-status".to_string(), "0".to_string()),
            ("x-end".to_string(), "1".to_string())
        ]
    );
}

#[test]
fn the_replay_drives_each_exchange_as_recorded() {
    let mut plain = exchange("POST", "/plain", &[], b"abcdefghijkl");
    plain.id = "entry 1".into();
    let report = Replay::module("observer.wasm", observer())
        .trace_calls()
        .traffic(traffic(vec![chunked_exchange(), plain]))
        .run()
        .unwrap();
    let calls = |i: usize| -> Vec<String> {
        report.exchanges[i]
            .logs
            .iter()
            .filter(|l| {
                l.message.starts_with("[host->vm] proxy_on_request_body")
                    || l.message.starts_with("[host->vm] proxy_on_response_body")
                    || l.message.contains("trailers(")
            })
            .map(|l| l.message.clone())
            .collect()
    };
    assert_eq!(
        calls(0),
        [
            "[host->vm] proxy_on_request_body(2, 2, 0)",
            "[host->vm] proxy_on_request_body(2, 9, 0)",
            "[host->vm] proxy_on_request_body(2, 1, 0)",
            "[host->vm] proxy_on_request_trailers(2, 1)",
            "[host->vm] proxy_on_response_body(2, 1, 0)",
            "[host->vm] proxy_on_response_body(2, 3, 0)",
            "[host->vm] proxy_on_response_trailers(2, 2)",
        ]
    );
    assert_eq!(
        calls(1),
        [
            "[host->vm] proxy_on_request_body(3, 12, 0)",
            "[host->vm] proxy_on_request_body(3, 0, 1)",
            "[host->vm] proxy_on_response_body(3, 2, 0)",
            "[host->vm] proxy_on_response_body(3, 0, 1)",
        ],
        "an exchange without details: as Envoy's HTTP/1 codec, the body then an empty end"
    );
    assert_eq!(report.exchanges[0].verdict, Verdict::Passed);
    assert_eq!(report.exchanges[1].verdict, Verdict::Passed);
}

/// The body calls of a replay of `e` with `delivery`.
fn body_calls(
    e: tollgate_traffic::Exchange,
    delivery: tollgate_replay::BodyDelivery,
) -> Vec<String> {
    let report = Replay::module("observer.wasm", observer())
        .trace_calls()
        .body_delivery(delivery)
        .traffic(traffic(vec![e]))
        .run()
        .unwrap();
    report.exchanges[0]
        .logs
        .iter()
        .filter(|l| l.message.starts_with("[host->vm] proxy_on_") && l.message.contains("_body("))
        .map(|l| l.message.clone())
        .collect()
}

#[test]
fn unchunked_bodies_follow_the_recorded_http_version_unless_one_chunk_is_asked() {
    use tollgate_replay::BodyDelivery;
    use tollgate_traffic::HttpVersion;
    let plain = || exchange("POST", "/plain", &[], b"abcdefghijkl");
    let http1 = [
        "[host->vm] proxy_on_request_body(2, 12, 0)",
        "[host->vm] proxy_on_request_body(2, 0, 1)",
        "[host->vm] proxy_on_response_body(2, 2, 0)",
        "[host->vm] proxy_on_response_body(2, 0, 1)",
    ];
    let one = [
        "[host->vm] proxy_on_request_body(2, 12, 1)",
        "[host->vm] proxy_on_response_body(2, 2, 1)",
    ];
    assert_eq!(
        body_calls(plain(), BodyDelivery::Envoy),
        http1,
        "no version: HTTP/1.1"
    );
    let mut h1 = plain();
    h1.details.http_version = Some(HttpVersion::Http1);
    assert_eq!(body_calls(h1, BodyDelivery::Envoy), http1);
    // HTTP/2: the last DATA frame carries END_STREAM, one data callback.
    let mut h2 = plain();
    h2.details.http_version = Some(HttpVersion::Http2);
    assert_eq!(body_calls(h2, BodyDelivery::Envoy), one);
    assert_eq!(body_calls(plain(), BodyDelivery::OneChunk), one);
    // Trailers end an HTTP/1 stream: no empty end-of-stream chunk before them.
    let mut t = plain();
    t.details.request_trailers = vec![("x-sum".into(), "1".into())];
    assert_eq!(
        body_calls(t, BodyDelivery::Envoy)[..2],
        [
            "[host->vm] proxy_on_request_body(2, 12, 0)",
            "[host->vm] proxy_on_response_body(2, 2, 0)",
        ]
    );
}

/// Calls cluster `authz` from the request headers and pauses; on the answer
/// (delivered on the root context, as Envoy does) it acts on its stream
/// through `proxy_set_effective_context`, reports `500 + body size` and `10000 + :status`, then resumes on 200 and
/// answers 403 locally otherwise. Reports the call's status first.
fn authz() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
           (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
           (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "authz")
           (data (i32.const 1200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\05\00\00\00:method\00GET\00:path\00/check\00:authority\00authz\00")
           (data (i32.const 1300) ":status")
           (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
             (i32.store (i32.const 960) (local.get $ctx))
             (call $report (call $call (i32.const 1100) (i32.const 5) (i32.const 1200) (i32.const 70)
               (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 700)))
             (i32.const 1))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           ;; Envoy answers on the root context: act on the stream that called.
           (func (export "proxy_on_http_call_response") (param i32 i32 i32) (param $size i32) (param i32)
             (local $p i32) (local $status i32)
             (drop (call $effective (i32.load (i32.const 960))))
             (call $report (i32.add (i32.const 500) (local.get $size)))
             (drop (call $get (i32.const 6) (i32.const 1300) (i32.const 7) (i32.const 900) (i32.const 904)))
             (local.set $p (i32.load (i32.const 900)))
             (local.set $status
               (i32.add
                 (i32.add
                   (i32.mul (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)) (i32.const 100))
                   (i32.mul (i32.sub (i32.load8_u offset=1 (local.get $p)) (i32.const 48)) (i32.const 10)))
                 (i32.sub (i32.load8_u offset=2 (local.get $p)) (i32.const 48))))
             (call $report (i32.add (i32.const 10000) (local.get $status)))
             (if (i32.eq (local.get $status) (i32.const 200))
               (then (drop (call $continue (i32.const 0))))
               (else (drop (call $local (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0)
                 (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1))))))"#,
    )
}

fn callout(cluster: &str, status: u16, body: &[u8]) -> Callout {
    Callout {
        cluster: cluster.into(),
        response: HttpResponse {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.to_vec(),
        },
    }
}

/// Four exchanges: recorded allow (body 5), recorded deny (body 11), no
/// recorded callout, and a recorded callout for another cluster only.
fn authz_traffic() -> Vec<Exchange> {
    let with = |i: usize, callouts: Vec<Callout>| {
        let mut e = exchange("GET", &format!("/{i}"), &[], b"");
        e.id = format!("entry {i}");
        e.details.callouts = callouts;
        e
    };
    vec![
        with(0, vec![callout("authz", 200, b"allow")]),
        with(1, vec![callout("authz", 403, b"denied-here")]),
        with(2, vec![]),
        with(3, vec![callout("other", 403, b"x")]),
    ]
}

fn builder_stub() -> HttpCallStub {
    HttpCallStub {
        headers: vec![(":status".into(), "200".into())],
        body: b"ok".to_vec(),
    }
}

#[test]
fn each_exchange_answers_its_callouts_with_its_recorded_answers() {
    let report = Replay::module("authz.wasm", authz())
        .http_call_stub(builder_stub())
        .traffic(traffic(authz_traffic()))
        .run()
        .unwrap();
    let verdicts: Vec<&Verdict> = report.exchanges.iter().map(|e| &e.verdict).collect();
    assert_eq!(
        verdicts,
        [
            &Verdict::Passed,
            &Verdict::AnsweredLocally { status: 403 },
            &Verdict::Passed,
            &Verdict::Passed,
        ],
        "recorded 200, recorded 403, then the builder's stub (200) twice"
    );

    // What the guest saw, per exchange.
    let (mut chain, t) = Replay::module("authz.wasm", authz())
        .http_call_stub(builder_stub())
        .traffic(traffic(authz_traffic()))
        .start()
        .unwrap();
    for e in &t.exchanges {
        chain.exchange(&StreamInput::from_recording(e));
    }
    assert_eq!(
        statuses(chain.vm(0).unwrap()),
        [
            0, 505, 10200, // recorded: "allow", 200
            0, 511, 10403, // recorded: "denied-here", 403
            0, 502, 10200, // the builder's stub: "ok", 200
            0, 502, 10200, // `other` does not answer a call to `authz`: the stub
        ]
    );
}

#[test]
fn without_a_stub_only_recorded_callouts_are_answered() {
    let (mut chain, t) = Replay::module("authz.wasm", authz())
        .traffic(traffic(authz_traffic()))
        .start()
        .unwrap();
    let mut outs = Vec::new();
    for e in &t.exchanges {
        outs.push(chain.exchange(&StreamInput::from_recording(e)).0);
    }
    assert_eq!(
        statuses(chain.vm(0).unwrap()),
        [0, 505, 10200, 0, 511, 10403, 2, 2],
        "no answer for exchanges 2 and 3: BadArgument (2), as Envoy for an unknown cluster"
    );
    assert!(outs[0].upstream_request.is_some());
    assert_eq!(outs[1].local_response.as_ref().map(|l| l.status), Some(403));
}

#[test]
fn a_chain_takes_the_recorded_answers_in_order() {
    let mut e = exchange("GET", "/", &[], b"");
    e.details.callouts = vec![
        callout("authz", 200, b"first"),
        callout("", 200, b"second-one"),
    ];
    let (mut chain, _) = Replay::module("a.wasm", authz())
        .module("b.wasm", authz())
        .start()
        .unwrap();
    let (out, _, _) = chain.exchange(&StreamInput::from_recording(&e));
    assert!(out.upstream_request.is_some(), "{:?}", out.failure);
    assert_eq!(statuses(chain.vm(0).unwrap()), [0, 505, 10200]);
    assert_eq!(
        statuses(chain.vm(1).unwrap()),
        [0, 510, 10200],
        "the second filter gets the next answer (empty cluster matches any)"
    );
}

#[test]
fn the_streamed_replay_uses_the_recorded_details_and_the_same_verdicts() {
    let report = Replay::module("authz.wasm", authz())
        .traffic(traffic(authz_traffic()))
        .run()
        .unwrap();
    let mut seen = Vec::new();
    let totals = streaming::replay(
        Replay::module("authz.wasm", authz()),
        authz_traffic().into_iter().map(Ok),
        |_, e, o, _| seen.push((e.id.clone(), o)),
    )
    .unwrap();
    assert_eq!(
        seen.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        [
            Outcome::Passed,
            Outcome::AnsweredLocally(403),
            Outcome::Modified,
            Outcome::Modified,
        ],
        "without a stub, exchanges 2 and 3 stay paused (stalled): modified"
    );
    for ((id, o), r) in seen.iter().zip(&report.exchanges) {
        assert_eq!(id, &r.id);
        assert_eq!(*o, Outcome::from(&r.verdict), "{id}: {:?}", r.changes);
    }
    assert_eq!(
        (totals.passed, totals.answered_locally, totals.modified),
        (1, 1, 2)
    );
}

/// Answers every request locally with the property `source.address` as the body.
fn property_reader() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
           (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "source\00address")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $prop (i32.const 1100) (i32.const 14) (i32.const 900) (i32.const 904)))
             (drop (call $local (i32.const 200) (i32.const 0) (i32.const 0)
                                (i32.load (i32.const 900)) (i32.load (i32.const 904))
                                (i32.const 0) (i32.const 0) (i32.const -1)))
             (i32.const 1))"#,
    )
}

#[test]
fn a_recordings_per_exchange_properties_reach_the_guest_in_replay() {
    let mut with = exchange("GET", "/a", &[], b"");
    with.details.properties = vec![("source.address".into(), "10.0.0.7:51234".into())];
    let without = exchange("GET", "/b", &[], b"");
    let report = Replay::module("props.wasm", property_reader())
        .traffic(traffic(vec![with, without]))
        .run()
        .unwrap();
    assert_eq!(report.exchanges[0].client_response.body, b"10.0.0.7:51234");
    // The next exchange has none of them: the VM's defaults again.
    assert_ne!(report.exchanges[1].client_response.body, b"10.0.0.7:51234");
}

#[test]
fn recorded_integer_properties_are_encoded_as_envoy_does() {
    use tollgate_host::stream::property_value;
    assert_eq!(
        property_value("source.port", "51234"),
        51234i64.to_le_bytes()
    );
    assert_eq!(
        property_value("source.address", "10.0.0.7:1"),
        b"10.0.0.7:1"
    );
    assert_eq!(
        property_value("connection.tls_version", "TLSv1.3"),
        b"TLSv1.3"
    );
}

/// Replaces the whole request body with `HOWDY WORLD` (11 bytes), leaving
/// `content-length` as it was.
fn body_rewriter() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "HOWDY WORLD")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
             (if (local.get 2)
               (then (drop (call $set (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 1100) (i32.const 11)))))
             (i32.const 0))"#,
    )
}

#[test]
fn a_body_rewritten_without_its_content_length_is_a_warning() {
    let e = exchange("POST", "/a", &[("content-length", "5")], b"hello");
    let report = Replay::module("rewrite.wasm", body_rewriter())
        .body_delivery(tollgate_replay::BodyDelivery::OneChunk)
        .traffic(traffic(vec![e]))
        .run()
        .unwrap();
    let changes = &report.exchanges[0].changes;
    assert!(
        changes.iter().any(|c| c.starts_with(
            "warning: the request body is now 11 bytes but its content-length still says 5"
        )),
        "{changes:?}"
    );
}

#[test]
fn a_filter_rewriting_the_last_body_call_appends_under_envoys_http1_delivery() {
    // Envoy's HTTP/1 codec passes `hello` on first (end_of_stream 0, the
    // filter continues), then an empty end-of-stream chunk the filter fills:
    // the upstream reads `helloHOWDY WORLD`.
    let e = exchange("POST", "/a", &[("content-length", "5")], b"hello");
    let report = Replay::module("rewrite.wasm", body_rewriter())
        .traffic(traffic(vec![e]))
        .run()
        .unwrap();
    let x = &report.exchanges[0];
    assert_eq!(
        x.upstream_request.as_ref().unwrap().body,
        b"helloHOWDY WORLD"
    );
    assert!(
        x.changes.iter().any(|c| c.starts_with(
            "warning: the request body is now 16 bytes but its content-length still says 5"
        )),
        "{:?}",
        x.changes
    );
}
