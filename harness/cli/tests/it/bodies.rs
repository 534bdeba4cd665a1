//! Body chunking plans and trailers, with Envoy's buffering per body
//! callback result (Continue, StopIterationAndBuffer, StopIterationNoBuffer)
//! and StopAllIteration from a headers callback.

use super::*;
use tollgate_host::stream::StreamOutcome;
use tollgate_replay::{ChunkPlan, Replay, StreamInput};

/// A filter whose request body callback reports `body_size` and returns `action`
/// (a WAT expression; `$eos` is the end_of_stream flag, `$n` the call number).
fn body_filter(headers_ret: u32, action: &str) -> Vec<u8> {
    guest(
        "0_2_1",
        "",
        &format!(
            r#"(global $calls (mut i32) (i32.const 0))
               (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 (i32.const {headers_ret}))
               (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
                 (local $n i32)
                 (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                 (local.set $n (global.get $calls))
                 (call $report (local.get $size))
                 {action})"#
        ),
    )
}

fn input(body: &[u8], plan: ChunkPlan) -> StreamInput {
    let mut i = StreamInput::from_exchange(&exchange("POST", "/", &[], body));
    i.request_chunks = plan;
    i
}

/// Runs `input` through the filters; returns the outcome and each filter's reports.
fn drive(filters: Vec<Vec<u8>>, input: &StreamInput) -> (StreamOutcome, Vec<Vec<u64>>) {
    let mut b = Replay::module("f0.wasm", filters[0].clone());
    for (i, f) in filters.iter().enumerate().skip(1) {
        b = b.module(format!("f{i}.wasm"), f.clone());
    }
    let (mut chain, _) = b.start().expect("chain starts");
    let (out, _, _) = chain.exchange(input);
    let reports = (0..filters.len())
        .map(|i| chain.vm(i).map(statuses).unwrap_or_default())
        .collect();
    (out, reports)
}

fn upstream_body(out: &StreamOutcome) -> String {
    String::from_utf8_lossy(
        &out.upstream_request
            .as_ref()
            .expect("reached upstream")
            .body,
    )
    .into_owned()
}

const BUFFER_UNTIL_EOS: &str =
    "(if (result i32) (local.get $eos) (then (i32.const 0)) (else (i32.const 1)))";

#[test]
fn continue_sees_each_chunk_alone() {
    let (out, r) = drive(
        vec![body_filter(0, "(i32.const 0)")],
        &input(b"abcdefghi", ChunkPlan::ChunkSize(3)),
    );
    assert_eq!(r[0], [3, 3, 3]);
    assert_eq!(upstream_body(&out), "abcdefghi");
}

#[test]
fn buffering_accumulates_chunks_before_each_callback() {
    let (out, r) = drive(
        vec![body_filter(0, BUFFER_UNTIL_EOS)],
        &input(b"abcdefghi", ChunkPlan::ChunkSize(3)),
    );
    assert_eq!(r[0], [3, 6, 9], "body_size is the total buffered so far");
    assert_eq!(upstream_body(&out), "abcdefghi");
}

#[test]
fn a_number_of_chunks_splits_evenly() {
    let (_, r) = drive(
        vec![body_filter(0, "(i32.const 0)")],
        &input(b"abcdefghi", ChunkPlan::Chunks(2)),
    );
    assert_eq!(r[0], [5, 4]);
}

#[test]
fn stop_iteration_no_buffer_drops_the_chunk() {
    let (out, r) = drive(
        vec![body_filter(
            0,
            "(if (result i32) (i32.eq (local.get $n) (i32.const 1)) (then (i32.const 3)) (else (i32.const 0)))",
        )],
        &input(b"abcdefghi", ChunkPlan::ChunkSize(3)),
    );
    assert_eq!(r[0], [3, 3, 3]);
    assert_eq!(upstream_body(&out), "defghi");
}

#[test]
fn the_next_filter_gets_buffered_data_as_one_chunk() {
    let (out, r) = drive(
        vec![
            body_filter(0, BUFFER_UNTIL_EOS),
            body_filter(0, "(i32.const 0)"),
        ],
        &input(b"abcdefghi", ChunkPlan::ChunkSize(3)),
    );
    assert_eq!(r[0], [3, 6, 9]);
    assert_eq!(r[1], [9]);
    assert_eq!(upstream_body(&out), "abcdefghi");
}

#[test]
fn a_paused_headers_callback_gets_no_body_until_it_continues() {
    let (out, r) = drive(
        vec![body_filter(1, "(i32.const 0)")],
        &input(b"abcdefghi", ChunkPlan::ChunkSize(3)),
    );
    assert!(r[0].is_empty(), "StopAllIteration: no body callback");
    assert!(out.upstream_request.is_none());
    assert_eq!(out.stalled_in, Some("proxy_on_request_headers"));
}

#[test]
fn buffering_at_end_of_stream_without_continue_stalls() {
    let (out, r) = drive(
        vec![body_filter(0, "(i32.const 1)")],
        &input(b"abcdef", ChunkPlan::ChunkSize(3)),
    );
    assert_eq!(r[0], [3, 6]);
    assert_eq!(out.stalled_in, Some("proxy_on_request_body"));
    assert!(out.upstream_request.is_some(), "headers went upstream");
    assert_eq!(out.client_response.status, 0);
}

/// Reports `100 + number of trailers` from `on_request_trailers` and adds
/// `x-added: y`; reports the eos flag (0/1) of each body chunk + 10.
fn trailer_filter() -> Vec<u8> {
    guest(
        "0_2_1",
        r#"(import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1100) "x-added")
           (data (i32.const 1110) "y")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $report (i32.add (i32.const 20) (local.get 2)))
             (i32.const 0))
           (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
             (call $report (i32.add (i32.const 10) (local.get 2)))
             (i32.const 0))
           (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
             (call $report (i32.add (i32.const 100) (local.get 1)))
             (drop (call $add (i32.const 1) (i32.const 1100) (i32.const 7) (i32.const 1110) (i32.const 1)))
             (i32.const 0))"#,
    )
}

#[test]
fn trailers_follow_the_body_and_end_the_stream() {
    let mut i = input(b"abcdef", ChunkPlan::ChunkSize(3));
    i.request_trailers = vec![("x-checksum".into(), "42".into())];
    let (out, r) = drive(vec![trailer_filter()], &i);
    assert_eq!(
        r[0],
        [20, 10, 10, 101],
        "headers and data not end_of_stream, then 1 trailer"
    );
    assert_eq!(
        out.upstream_trailers,
        [
            ("x-checksum".to_string(), "42".to_string()),
            ("x-added".to_string(), "y".to_string())
        ]
    );
    assert_eq!(out.client_response.status, 200);
}

#[test]
fn without_trailers_the_last_chunk_ends_the_stream() {
    let (out, r) = drive(
        vec![trailer_filter()],
        &input(b"abcdef", ChunkPlan::ChunkSize(3)),
    );
    assert_eq!(r[0], [20, 10, 11]);
    assert!(out.upstream_trailers.is_empty());
}

#[test]
fn chunk_plans_cut_bodies() {
    assert_eq!(ChunkPlan::Whole.split(b"abc"), vec![b"abc".to_vec()]);
    assert_eq!(ChunkPlan::ChunkSize(2).split(b"abcde").len(), 3);
    assert_eq!(ChunkPlan::Chunks(4).split(b"abcdefgh").len(), 4);
    assert!(ChunkPlan::Chunks(3).split(b"").is_empty());
}
