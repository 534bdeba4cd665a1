//! Tests of the native format: the example file, round trips, chunk
//! boundaries, streaming JSON lines, and errors naming file, entry and field.

use std::path::Path;

use super::super::{Format, Leniency, load, load_with, open};
use super::{
    Lines, exchange_from_value, parse_document, parse_lines, to_value, write_json, write_line,
    write_yaml,
};

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traffic/example.yaml")
}

#[test]
fn the_example_file_loads_with_every_feature() {
    let t = load(&example()).expect("example loads");
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.exchanges.len(), 3);
    let login = &t.exchanges[0];
    assert_eq!(login.id, "login");
    assert_eq!(login.request.scheme, "https");
    assert_eq!(login.details.request_chunks, [26, 21]);
    assert_eq!(
        login.request.body,
        br#"{"user":"ann@example.com","password":"hunter2"}"#
    );
    let resp = login.response.as_ref().expect("response");
    assert_eq!(resp.body, br#"{"ok":true}"#);
    assert_eq!(
        login.details.timing.response_after,
        Some(std::time::Duration::from_micros(12_500))
    );
    assert_eq!(login.details.properties.len(), 2);
    let grpc = &t.exchanges[1];
    assert_eq!(grpc.request.method, "POST");
    assert_eq!(grpc.request.body, [0u8; 5]);
    assert_eq!(
        grpc.details.response_trailers[0],
        ("grpc-status".into(), "0".into())
    );
    let call = &t.exchanges[2];
    assert_eq!(call.request.method, "GET");
    assert_eq!(call.details.callouts[0].cluster, "auth");
    assert_eq!(call.details.callouts[0].response.body, b"allowed");
}

#[test]
fn yaml_and_json_lines_round_trip_exactly() {
    let t = load(&example()).expect("example loads");
    let mut yaml = Vec::new();
    write_yaml(&mut yaml, &t).expect("writes");
    let back = parse_document("back.yaml", &yaml, Leniency::Strict).expect("reads back");
    assert_eq!(back.exchanges, t.exchanges);
    assert!(yaml.starts_with(b"tollgate_traffic: 1\n"));
    let mut json = Vec::new();
    write_json(&mut json, &t).expect("writes");
    assert!(json.starts_with(b"{\n  \"tollgate_traffic\": 1,"));
    let back = parse_document("back.json", &json, Leniency::Strict).expect("reads back");
    assert_eq!(back.exchanges, t.exchanges);
    let mut lines = Vec::new();
    for e in &t.exchanges {
        write_line(&mut lines, e).expect("writes");
    }
    assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 3);
    let back = parse_lines("back.jsonl", &lines, Leniency::Strict).expect("reads back");
    assert_eq!(back.exchanges, t.exchanges);
}

#[test]
fn json_lines_stream_one_at_a_time_and_bad_lines_name_their_line() {
    let t = load(&example()).expect("example loads");
    let mut text = Vec::new();
    write_line(&mut text, &t.exchanges[0]).expect("writes");
    text.extend_from_slice(b"\n{\"request\": {\"authority\": 5}}\n{\"request\": \n");
    write_line(&mut text, &t.exchanges[1]).expect("writes");
    let mut strict = Lines::new("big.jsonl", &text[..], Leniency::Strict);
    assert!(strict.next().expect("first").is_ok());
    let err = strict
        .next()
        .expect("second")
        .expect_err("bad type")
        .to_string();
    assert_eq!(
        err,
        "big.jsonl: entry 1: line 3.request.authority: expected a string, found a number"
    );
    assert!(
        strict.next().is_none(),
        "a strict stream stops at its first error"
    );
    let mut lenient = Lines::new("big.jsonl", &text[..], Leniency::Lenient);
    let ok: Vec<_> = lenient.by_ref().collect::<Result<_, _>>().expect("lenient");
    assert_eq!(ok.len(), 2);
    let w = lenient.take_warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[1].starts_with("big.jsonl: malformed JSON in entry 2"),
        "{}",
        w[1]
    );
}

#[test]
fn open_streams_jsonl_and_loads_other_formats() {
    let dir = std::env::temp_dir().join(format!("tollgate-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let t = load(&example()).expect("example loads");
    let path = dir.join("t.jsonl");
    let mut f = std::fs::File::create(&path).expect("create");
    for e in &t.exchanges {
        write_line(&mut f, e).expect("write");
    }
    drop(f);
    let s = open(&path, Leniency::Strict).expect("opens");
    assert_eq!(s.known_len(), None, "JSON lines are streamed");
    assert_eq!(
        s.collect::<Result<Vec<_>, _>>().expect("reads"),
        t.exchanges
    );
    let s = open(&example(), Leniency::Strict).expect("opens");
    assert_eq!(s.known_len(), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}

fn err(doc: &str) -> String {
    parse_document("t.yaml", doc.as_bytes(), Leniency::Strict)
        .expect_err("must fail")
        .to_string()
}

#[test]
fn errors_name_the_file_entry_and_field() {
    assert_eq!(
        err("exchanges: []"),
        "t.yaml: tollgate_traffic: missing required field (write `tollgate_traffic: 1`)"
    );
    assert!(err("tollgate_traffic: 2\nexchanges: []").contains("unsupported version 2"));
    assert_eq!(
        err("tollgate_traffic: 1\nexchanges:\n - request: {authority: a, body: {base64: '@@'}}"),
        "t.yaml: entry 0: exchanges[0].request.body.base64: bad base64: Invalid symbol 64, offset 0."
    );
    assert!(
        err(
            "tollgate_traffic: 1\nexchanges:\n - request: {authority: a}\n   response: {status: 99}"
        )
        .contains(
            "entry 0: exchanges[0].response.status: expected a status code 100-999, found 99"
        )
    );
    assert!(
        err("tollgate_traffic: 1\nexchanges:\n - request: {authority: a, headers: [[a]]}")
            .contains("exchanges[0].request.headers[0]: expected a [name, value] pair")
    );
    assert!(
        err("tollgate_traffic: 1\nexchanges:\n - request: {authority: a, methd: GET}")
            .contains("exchanges[0].request.methd: unknown field")
    );
    assert!(
        err("tollgate_traffic: 1\nexchanges: [\n")
            .starts_with("t.yaml: (document): malformed YAML")
    );
    assert!(
        err("{\"tollgate_traffic\": 1, \"exchanges\": [").starts_with("t.yaml: malformed JSON")
    );
}

#[test]
fn lenient_documents_skip_bad_entries_with_a_warning() {
    let doc =
        "tollgate_traffic: 1\nexchanges:\n - request: {authority: a}\n - request: {path: /x}\n";
    let t = parse_document("t.yaml", doc.as_bytes(), Leniency::Lenient).expect("lenient");
    assert_eq!(t.exchanges.len(), 1);
    assert_eq!(
        t.warnings,
        ["t.yaml: entry 1: exchanges[1].request.authority: missing required field; entry skipped"]
    );
}

#[test]
fn headers_as_a_mapping_repeat_with_lists_lower_case_and_sort_names() {
    let v = serde_json::json!({
        "request": { "authority": "a", "headers": { "X-A": ["1", "2"], "B": "3" } }
    });
    let e = exchange_from_value("f", 0, "x", &v).expect("ok");
    assert_eq!(
        e.request.headers,
        [
            ("b".into(), "3".into()),
            ("x-a".into(), "1".into()),
            ("x-a".into(), "2".into())
        ],
        "a mapping gives headers in name order"
    );
    assert_eq!(e.id, "entry 0");
    let out = to_value(&e);
    assert!(out.get("response").is_none());
}

#[test]
fn detection_by_extension_and_content() {
    assert_eq!(
        Format::from_extension(Path::new("a.har")),
        Some(Format::Har)
    );
    assert_eq!(
        Format::from_extension(Path::new("a.YML")),
        Some(Format::Native)
    );
    assert_eq!(
        Format::from_extension(Path::new("a.ndjson")),
        Some(Format::NativeLines)
    );
    assert_eq!(Format::from_extension(Path::new("a.json")), None);
    let dir = std::env::temp_dir().join(format!("tollgate-detect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join("doc.json");
    std::fs::write(
        &p,
        r#"{"tollgate_traffic": 1, "exchanges": [{"request": {"authority": "h"}}]}"#,
    )
    .expect("write");
    assert_eq!(load(&p).expect("native json").exchanges.len(), 1);
    std::fs::write(&p, "[1, 2]").expect("write");
    let e = load_with(&p, Leniency::Lenient).expect_err("unknown");
    assert!(e.to_string().contains("unrecognised traffic format"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_truncation_of_a_recording_is_an_error_or_a_warning_never_a_panic() {
    let t = load(&example()).expect("example loads");
    let mut lines = Vec::new();
    for e in &t.exchanges {
        write_line(&mut lines, e).expect("writes");
    }
    let yaml = std::fs::read(example()).expect("example");
    for cut in 0..lines.len() {
        for leniency in [Leniency::Strict, Leniency::Lenient] {
            match parse_lines("cut.jsonl", &lines[..cut], leniency) {
                Ok(back) => assert!(back.exchanges.len() <= 3),
                Err(e) => assert!(e.to_string().starts_with("cut.jsonl: "), "{e}"),
            }
        }
    }
    for cut in 0..yaml.len() {
        if let Err(e) = parse_document("cut.yaml", &yaml[..cut], Leniency::Strict) {
            assert!(e.to_string().starts_with("cut.yaml: "), "{e}");
        }
    }
}

#[test]
fn fast_and_general_agree() {
    // Every line the fast reader takes, it reads as the general reader does;
    // it takes the usual lines (demo.har's, converted) and leaves the rest.
    let a = r#""request":{"authority":"a.example""#;
    let mut lines: Vec<(String, Option<bool>)> = [
        (format!(r#"{{{a}}}}}"#), true),
        (
            format!(r#"{{{a},"headers":[["X-Up","1"]]}},"id":"u"}}"#),
            true,
        ),
        (format!(r#"{{{a},"headers":{{"x-map":"1"}}}}}}"#), false),
        (format!(r#"{{{a},"headers":[["bad name","1"]]}}}}"#), false),
        (format!(r#"{{{a},"headers":[["x","a\r\nb"]]}}}}"#), false),
        (
            format!(r#"{{{a},"headers":null,"body":null}},"response":null}}"#),
            true,
        ),
        (format!(r#"{{{a}}},"truncated":null}}"#), false),
        (format!(r#"{{{a}}},"truncated":true}}"#), true),
        (format!(r#"{{{a}}},"id":null}}"#), false),
        (format!(r#"{{{a},"method":null}}}}"#), false),
        (format!(r#"{{{a},"path":"x"}}}}"#), false),
        (
            format!(r#"{{{a}}},"properties":{{"b":"2","a":"1"}}}}"#),
            true,
        ),
        (format!(r#"{{{a}}},"properties":{{"n":1}}}}"#), false),
        (format!(r#"{{{a}}},"http_version":2}}"#), false),
        (format!(r#"{{{a}}},"http_version":"h2"}}"#), true),
        (format!(r#"{{{a}}},"http_version":"9"}}"#), false),
        (format!(r#"{{{a}}},"response":{{"status":99}}}}"#), false),
        (format!(r#"{{{a}}},"response":{{"status":200.0}}}}"#), false),
        (
            format!(r#"{{{a}}},"response":{{"status":204,"trailers":[["A","b"]]}}}}"#),
            true,
        ),
        (
            format!(r#"{{{a}}},"timing":{{"total_ms":null,"response_after_ms":3}}}}"#),
            true,
        ),
        (format!(r#"{{{a}}},"timing":{{"total_ms":-1}}}}"#), false),
        (format!(r#"{{{a}}},"unknown":1}}"#), false),
        (format!(r#"{{{a},"body":["a","b"]}}}}"#), false),
        (format!(r#"{{{a},"body":{{"base64":"aGk="}}}}}}"#), true),
        (format!(r#"{{{a},"body":{{"base64":"!"}}}}}}"#), false),
        (format!(r#"{{{a},"body":{{"json":1}}}}}}"#), false),
        (
            format!(r#"{{{a},"body":{{"base64":"aGk=","x":1}}}}}}"#),
            false,
        ),
        (format!(r#"{{{a}}},"id":"a","id":"b"}}"#), false),
        (r#"{"request":{}}"#.to_owned(), false),
    ]
    .into_iter()
    .map(|(l, f)| (l, Some(f)))
    .collect();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traffic/demo.har");
    let demo = load(&demo).expect("demo");
    for e in &demo.exchanges {
        let mut l = Vec::new();
        write_line(&mut l, e).expect("writes");
        // Every one of demo.har's exchanges is of the usual shape.
        lines.push((String::from_utf8(l).expect("utf-8"), Some(true)));
    }
    for e in &load(&example()).expect("example").exchanges {
        let mut l = Vec::new();
        write_line(&mut l, e).expect("writes");
        lines.push((String::from_utf8(l).expect("utf-8"), None));
    }
    for (i, (line, expected)) in lines.iter().enumerate() {
        let line = line.trim();
        let fast = super::fast::exchange(line, i);
        let general = serde_json::from_str(line)
            .map_err(|e| e.to_string())
            .and_then(|v| super::exchange_from_owned("f", i, "x", v).map_err(|e| e.to_string()));
        if let Some(f) = &fast {
            assert_eq!(Ok(f), general.as_ref(), "line {i}: {line}");
        }
        if let Some(want) = expected {
            assert_eq!(fast.is_some(), *want, "line {i}: {line}");
        }
    }
}
