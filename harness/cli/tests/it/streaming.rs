//! Streamed replay (`traffic::streaming`) of a JSON-lines recording read
//! lazily (`traffic::open`): same verdicts as the in-memory replay, bad lines
//! stop it (strict) or are skipped with a warning (lenient).

use super::*;
use tollgate_replay::streaming::{self, Outcome, StreamingError};
use tollgate_replay::{Replay, Verdict};
use tollgate_traffic::{Leniency, Traffic, native, open};

fn pass_through() -> Vec<u8> {
    guest(
        "0_2_1",
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))"#,
    )
}

fn write_recording(name: &str, n: usize, extra: &str) -> (std::path::PathBuf, Traffic) {
    let dir =
        std::env::temp_dir().join(format!("tollgate-streaming-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.jsonl");
    let mut t = Traffic::default();
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..n {
        let mut e = exchange(
            "POST",
            &format!("/item/{i}"),
            &[("x-i", &i.to_string())],
            b"body",
        );
        e.id = format!("entry {i}");
        native::write_line(&mut f, &e).unwrap();
        t.exchanges.push(e);
    }
    std::io::Write::write_all(&mut f, extra.as_bytes()).unwrap();
    (path, t)
}

#[test]
fn streamed_replay_matches_the_in_memory_replay() {
    let (path, t) = write_recording("same", 40, "");
    let report = Replay::module("noop.wasm", pass_through())
        .traffic(t)
        .run()
        .unwrap();
    let mut seen = Vec::new();
    let stream = open(&path, Leniency::Strict).unwrap();
    assert_eq!(stream.known_len(), None, "JSON lines are read lazily");
    let totals = streaming::replay(
        Replay::module("noop.wasm", pass_through()),
        stream,
        |i, e, o, _| {
            seen.push((i, e.id.clone(), o));
        },
    )
    .unwrap();
    assert_eq!(totals.requests, 40);
    assert_eq!(totals.passed, report.summary().passed);
    assert_eq!(totals.passed, 40);
    for ((i, id, o), r) in seen.iter().zip(&report.exchanges) {
        assert_eq!(id, &r.id);
        assert_eq!(*id, format!("entry {i}"));
        assert_eq!(*o, Outcome::Passed);
        assert_eq!(r.verdict, Verdict::Passed);
    }
}

#[test]
fn a_bad_line_stops_a_strict_stream_and_is_skipped_when_lenient() {
    let (path, _) = write_recording(
        "bad",
        3,
        "{\"request\": {\"authority\": \"h\", \"body\": {\"base64\": \"!!\"}}}\n",
    );
    let strict = open(&path, Leniency::Strict).unwrap();
    let mut n = 0;
    let err = streaming::replay(
        Replay::module("noop.wasm", pass_through()),
        strict,
        |_, _, _, _| n += 1,
    )
    .unwrap_err();
    assert_eq!(n, 3, "the good exchanges before the bad line were replayed");
    let StreamingError::Traffic(e) = err else {
        panic!("expected a traffic error, got {err}")
    };
    let msg = e.to_string();
    assert!(
        msg.contains("big.jsonl: entry 3: line 4.request.body.base64: bad base64"),
        "{msg}"
    );
    let mut lenient = open(&path, Leniency::Lenient).unwrap();
    let totals = streaming::replay(
        Replay::module("noop.wasm", pass_through()),
        lenient.by_ref(),
        |_, _, _, _| {},
    )
    .unwrap();
    assert_eq!(totals.requests, 3);
    let warnings = lenient.take_warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].ends_with("entry skipped"), "{warnings:?}");
}
