//! Tests of the Envoy tap reader, against real Envoy 1.40 output
//! (`harness/traffic/tests/fixtures/tap`, see its README) and hand-broken variants.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::super::{Leniency, TrafficError, load, load_with};
use super::parse;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tap")
        .join(name)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn buffered_trace_as_string_from_envoy() {
    let t = load(&fixture("buffered_string.json")).expect("loads");
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.exchanges.len(), 1);
    let e = &t.exchanges[0];
    assert_eq!(e.request.method, "GET");
    assert_eq!(e.request.scheme, "http");
    assert_eq!(e.request.authority, "127.0.0.1:18000");
    assert_eq!(e.request.path, "/data.json");
    assert!(e.request.headers.iter().all(|(k, _)| !k.starts_with(':')));
    assert_eq!(header(&e.request.headers, "cookie"), Some("sid=123"));
    assert!(header(&e.request.headers, "x-request-id").is_some());
    let r = e.response.as_ref().expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{\"hello\":\"world\",\"email\":\"a@b.com\"}\n");
    assert_eq!(header(&r.headers, "content-length"), Some("36"));
    assert!(!e.details.truncated);
}

#[test]
fn buffered_trace_as_bytes_with_times_from_envoy() {
    let t = load(&fixture("buffered_bytes.json")).expect("loads");
    let e = &t.exchanges[0];
    assert_eq!(e.request.path, "/data.json?api_key=secret123");
    let r = e.response.as_ref().expect("response");
    assert_eq!(r.body, b"{\"hello\":\"world\",\"email\":\"a@b.com\"}\n");
    assert_eq!(
        e.details.timing.started.as_deref(),
        Some("2026-11-28T03:48:49.854551Z")
    );
    // Response headers arrived at 03:48:49.857145Z.
    assert_eq!(
        e.details.timing.response_after,
        Some(std::time::Duration::from_micros(2594))
    );
}

#[test]
fn truncated_bodies_and_connection_from_envoy() {
    let t = load(&fixture("buffered_truncated.json")).expect("loads");
    let e = &t.exchanges[0];
    assert!(e.details.truncated);
    assert_eq!(e.request.body.len(), 10);
    assert_eq!(&e.request.body[..4], b"\x7fELF");
    assert_eq!(e.response.as_ref().map(|r| r.status), Some(501));
    assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    assert!(
        t.warnings[0].contains("request.body: truncated"),
        "{}",
        t.warnings[0]
    );
    assert!(
        t.warnings[0].contains("buffered_truncated.json"),
        "{}",
        t.warnings[0]
    );
    let props: Vec<&str> = e
        .details
        .properties
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(props, ["source.address", "destination.address"]);
    assert_eq!(e.details.properties[1].1, "127.0.0.1:18000");
}

#[test]
fn streamed_segments_from_envoy_make_one_exchange() {
    let t = load(&fixture("streamed.json")).expect("loads");
    assert_eq!(t.exchanges.len(), 1, "{:?}", t.warnings);
    let e = &t.exchanges[0];
    assert_eq!(e.id, "trace 1369397586718464951");
    assert_eq!(e.request.path, "/data.json?api_key=secret123");
    let r = e.response.as_ref().expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 36);
    assert!(e.details.response_chunks.is_empty(), "one chunk");
}

#[test]
fn a_directory_pairs_segments_by_trace_id_and_keeps_chunks() {
    let whole = load(&fixture("streamed.json")).expect("loads");
    let split = load(&fixture("streamed_split")).expect("loads");
    assert_eq!(split.exchanges.len(), 1, "{:?}", split.warnings);
    let (a, b) = (&whole.exchanges[0], &split.exchanges[0]);
    assert_eq!(a.request, b.request);
    assert_eq!(a.response, b.response);
    assert_eq!(b.details.response_chunks, [10, 26]);
}

#[test]
fn a_directory_of_buffered_traces_loads_every_file() {
    let dir = std::env::temp_dir().join(format!("tollgate-tap-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    for f in [
        "buffered_string.json",
        "buffered_bytes.json",
        "streamed.json",
    ] {
        std::fs::copy(fixture(f), dir.join(f)).expect("copy");
    }
    let t = load(&dir).expect("loads");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(t.exchanges.len(), 3);
}

fn bad(v: &str) -> TrafficError {
    parse("bad.json", v.as_bytes(), Leniency::Strict).expect_err("must fail")
}

fn real() -> Value {
    let text = std::fs::read_to_string(fixture("buffered_string.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn truncated_json_names_file_and_trace() {
    let text = std::fs::read_to_string(fixture("streamed.json")).expect("fixture");
    let cut = &text[..text.len() - 40];
    let e = parse("cut.json", cut.as_bytes(), Leniency::Strict).expect_err("fails");
    let msg = e.to_string();
    assert!(
        msg.starts_with("cut.json: malformed JSON in entry 2"),
        "{msg}"
    );
    // Lenient: the complete segments are kept and the rest is a warning.
    let t = parse("cut.json", cut.as_bytes(), Leniency::Lenient).expect("lenient");
    assert_eq!(t.exchanges.len(), 1);
    assert!(
        t.warnings.iter().any(|w| w.contains("malformed JSON")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn bad_base64_names_the_field() {
    let mut v = real();
    v["http_buffered_trace"]["response"]["body"] = json!({ "as_bytes": "@@@", "truncated": false });
    let msg = bad(&v.to_string()).to_string();
    assert!(
        msg.starts_with(
            "bad.json: entry 0: http_buffered_trace.response.body.as_bytes: bad base64"
        ),
        "{msg}"
    );
}

#[test]
fn wrong_types_name_the_field() {
    let mut v = real();
    v["http_buffered_trace"]["request"]["headers"][1]["value"] = json!(5);
    let msg = bad(&v.to_string()).to_string();
    assert!(
        msg.contains("entry 0: http_buffered_trace.request.headers[1].value: expected a string, found a number"),
        "{msg}"
    );
    let mut v = real();
    v["http_buffered_trace"]["request"]["headers"] = json!("x");
    assert!(
        bad(&v.to_string())
            .to_string()
            .contains("request.headers: expected a list")
    );
    let mut v = real();
    v["http_buffered_trace"]["response"]["body"]["truncated"] = json!("no");
    assert!(
        bad(&v.to_string())
            .to_string()
            .contains("body.truncated: expected a boolean")
    );
}

#[test]
fn unknown_variants_are_errors_or_skipped_when_lenient() {
    let socket = json!({ "socket_buffered_trace": { "trace_id": "1", "events": [] } });
    let two = format!("{}\n{}", real(), socket);
    let msg = parse("s.json", two.as_bytes(), Leniency::Strict)
        .expect_err("fails")
        .to_string();
    assert!(
        msg.contains("s.json: entry 1: socket_buffered_trace: unsupported tap trace variant"),
        "{msg}"
    );
    let t = parse("s.json", two.as_bytes(), Leniency::Lenient).expect("lenient");
    assert_eq!(t.exchanges.len(), 1);
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(t.warnings[0].ends_with("trace skipped"));
    let seg = json!({ "http_streamed_trace_segment": { "trace_id": "9", "request_metadata": {} } });
    assert!(
        bad(&seg.to_string())
            .to_string()
            .contains("request_metadata: unknown segment")
    );
}

#[test]
fn missing_pseudo_headers_and_empty_files_are_errors() {
    let mut v = real();
    let headers = v["http_buffered_trace"]["request"]["headers"]
        .as_array_mut()
        .expect("list");
    headers.retain(|h| h["key"] != ":method");
    assert!(
        bad(&v.to_string())
            .to_string()
            .contains("no `:method` pseudo-header")
    );
    assert!(bad("  ").to_string().contains("holds no tap trace"));
    let e = load_with(Path::new("/nonexistent/tap.json"), Leniency::Lenient).expect_err("no file");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/tap.json: cannot read")
    );
}

#[test]
fn rfc3339_parses_envoy_times() {
    let d = super::rfc3339("1970-01-02T00:00:01.5Z").expect("parses");
    assert_eq!(d, std::time::Duration::from_millis(86_401_500));
    assert!(super::rfc3339("2026-13-01T00:00:00Z").is_none());
    assert!(super::rfc3339("yesterday").is_none());
}

#[test]
fn every_truncation_of_real_output_is_an_error_or_a_warning_never_a_panic() {
    for name in [
        "streamed.json",
        "buffered_truncated.json",
        "buffered_bytes.json",
    ] {
        let bytes = std::fs::read(fixture(name)).expect("fixture");
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            match parse(name, prefix, Leniency::Strict) {
                Ok(t) => assert!(t.exchanges.len() <= 1, "{name}[..{cut}]"),
                Err(e) => assert!(e.to_string().starts_with(name), "{name}[..{cut}]: {e}"),
            }
            if let Ok(t) = parse(name, prefix, Leniency::Lenient) {
                assert!(t.exchanges.len() <= 1, "{name}[..{cut}]");
            }
        }
    }
}
