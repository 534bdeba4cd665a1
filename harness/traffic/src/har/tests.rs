//! Unit tests for the HAR reader: the real browser recordings, the mapping
//! rules, every error case and every tolerated deviation.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{load, parse};
use crate::{HttpRequest, HttpResponse, Traffic, TrafficError};

/// A recording from `/work/shared/traffic` (read-only, never copied).
fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/traffic")
        .join(name)
}

/// A minimal valid entry: a GET with a small JSON response.
fn entry() -> Value {
    json!({
        "startedDateTime": "2024-05-01T10:00:00.000Z",
        "time": 12.5,
        "request": {
            "method": "GET",
            "url": "https://api.example.com/v1/items?page=2",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [
                {"name": "Host", "value": "api.example.com"},
                {"name": "Accept", "value": "application/json"}
            ],
            "queryString": [{"name": "page", "value": "2"}],
            "headersSize": -1,
            "bodySize": 0
        },
        "response": {
            "status": 200,
            "statusText": "OK",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [
                {"name": "Content-Type", "value": "application/json"},
                {"name": "Content-Length", "value": "2"}
            ],
            "content": {"size": 2, "mimeType": "application/json", "text": "[]"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": 2
        },
        "cache": {},
        "timings": {"send": 0, "wait": 10, "receive": 2.5}
    })
}

/// A HAR document holding `entries`.
fn har(entries: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "unit test", "version": "1"},
            "entries": entries
        }
    }))
    .expect("a json! value serialises")
}

/// `entry()` with the value at JSON pointer `pointer` replaced (or removed
/// when `value` is `None`).
fn entry_with(pointer: &str, value: Option<Value>) -> Value {
    let mut e = entry();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let target = e
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent exists in entry()");
    match value {
        Some(v) => {
            target.insert(key.to_owned(), v);
        }
        None => {
            target.remove(key);
        }
    }
    e
}

/// Parses a document made of `entries`, expecting success.
fn parse_ok(entries: Vec<Value>) -> Traffic {
    match parse("test.har", &har(entries)) {
        Ok(t) => t,
        Err(e) => panic!("expected the HAR to load, got: {e}"),
    }
}

/// Parses bytes, expecting an error, and returns its message.
fn parse_err(bytes: &[u8]) -> (TrafficError, String) {
    match parse("test.har", bytes) {
        Ok(t) => panic!("expected an error, got {} exchanges", t.exchanges.len()),
        Err(e) => {
            let message = e.to_string();
            (e, message)
        }
    }
}

/// Asserts `entries` fail on entry `index` at `field`, with `needle` in the message.
fn assert_entry_error(entries: Vec<Value>, index: usize, field: &str, needle: &str) {
    let (error, message) = parse_err(&har(entries));
    match &error {
        TrafficError::Entry {
            file,
            index: i,
            field: f,
            ..
        } => {
            assert_eq!(file, "test.har", "{message}");
            assert_eq!(*i, index, "{message}");
            assert_eq!(f, field, "{message}");
        }
        other => panic!("expected an entry error, got {other:?}"),
    }
    assert!(
        message.starts_with(&format!("test.har: entry {index}: {field}: ")),
        "{message}"
    );
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

fn request(t: &Traffic, i: usize) -> &HttpRequest {
    &t.exchanges[i].request
}

fn response(t: &Traffic, i: usize) -> &HttpResponse {
    t.exchanges[i]
        .response
        .as_ref()
        .expect("a recorded response")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn warnings_for(t: &Traffic, index: usize) -> Vec<&str> {
    let prefix = format!("entry {index}: ");
    t.warnings
        .iter()
        .filter(|w| w.starts_with(&prefix))
        .map(String::as_str)
        .collect()
}

// --- Real recordings -------------------------------------------------------

#[test]
fn firefox_recording_loads() {
    let path = shared("firefox.har");
    let t = load(&path).expect("firefox.har loads");
    assert_eq!(t.source.as_deref(), Some(path.as_path()));
    assert_eq!(t.exchanges.len(), 14);
    let ids: Vec<_> = t.exchanges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids[0], "entry 0");
    assert_eq!(ids[13], "entry 13");
    let d = &t.exchanges[0].details;
    assert_eq!(
        d.timing.started.as_deref(),
        Some("2023-03-29T16:58:59.303-07:00")
    );
    assert_eq!(d.timing.total, Some(std::time::Duration::from_millis(23)));
    // blocked 17 + dns 0 + connect 0 + send 0 + wait 6.
    assert_eq!(
        d.timing.response_after,
        Some(std::time::Duration::from_millis(23))
    );
    assert_eq!(
        d.properties,
        [("destination.address".to_owned(), "13.35.121.55".to_owned())]
    );

    let first = request(&t, 0);
    assert_eq!(first.method, "GET");
    assert_eq!(first.scheme, "https");
    assert_eq!(first.authority, "mitmproxy.org");
    assert_eq!(first.path, "/");
    assert!(first.body.is_empty());
    // Host folded into the authority, hop-by-hop dropped, names lower-cased, order kept.
    assert!(header(&first.headers, "host").is_empty());
    assert!(header(&first.headers, "connection").is_empty());
    assert_eq!(first.headers[0].0, "user-agent");
    assert!(first.headers[0].1.contains("Firefox/111.0"));
    assert_eq!(
        header(&first.headers, "referer"),
        ["https://www.google.com/"]
    );
    assert!(
        first
            .headers
            .iter()
            .all(|(n, _)| n.bytes().all(|b| !b.is_ascii_uppercase()))
    );

    // A 304 carries no body even though Firefox stored the cached page.
    let not_modified = response(&t, 0);
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(header(&not_modified.headers, "server"), ["AmazonS3"]);
    assert!(warnings_for(&t, 0).iter().any(|w| w.contains("304")));

    // Query strings are kept; a URL with no path gets `/`.
    let s3 = request(&t, 11);
    assert_eq!(s3.authority, "s3-us-west-2.amazonaws.com");
    assert_eq!(s3.path, "/snapshots.mitmproxy.org?delimiter=/&prefix=");

    // The favicon is base64 in the HAR: an ICO file of the recorded size.
    let icon = response(&t, 13);
    assert_eq!(icon.status, 200);
    assert_eq!(icon.body.len(), 98065);
    assert_eq!(&icon.body[..4], &[0, 0, 1, 0]);
    assert_eq!(header(&icon.headers, "content-length"), ["98065"]);

    // Bodies Firefox did not export are replayed empty, with a warning that
    // passes on Firefox's own note.
    assert!(response(&t, 1).body.is_empty());
    let w = warnings_for(&t, 1);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("Response bodies are not included."), "{w:?}");
    // Text bodies come through as recorded.
    assert!(
        response(&t, 6)
            .body
            .starts_with(b"// https://cdn.jsdelivr.net/npm/promise-polyfill")
    );
    assert_eq!(response(&t, 6).body.len(), 11800);
}

#[test]
fn safari_recording_loads() {
    let t = load(&shared("safari.har")).expect("safari.har loads");
    assert_eq!(t.exchanges.len(), 19);

    // The page was gzip-encoded on the wire; the HAR holds it decoded, so the
    // content-encoding header is dropped.
    let page = response(&t, 0);
    assert_eq!(page.status, 200);
    assert!(page.body.starts_with(b"<!DOCTYPE html>"));
    assert!(header(&page.headers, "content-encoding").is_empty());
    assert_eq!(header(&page.headers, "content-type"), ["text/html"]);

    // PNG bodies are base64 in the HAR and match their content-length.
    for i in [2, 3, 4, 5] {
        let png = response(&t, i);
        assert_eq!(&png.body[..8], b"\x89PNG\r\n\x1a\n", "entry {i}");
        assert_eq!(
            header(&png.headers, "content-length"),
            [png.body.len().to_string()]
        );
    }
    let logo = response(&t, 2);
    assert_eq!(logo.body.len(), 2145);

    // Transfer-Encoding is hop-by-hop.
    let s3 = &t.exchanges[17];
    assert!(header(&response(&t, 17).headers, "transfer-encoding").is_empty());
    assert_eq!(s3.request.authority, "s3-us-west-2.amazonaws.com");
    assert_eq!(
        header(&s3.request.headers, "origin"),
        ["https://mitmproxy.org"]
    );

    // Memory-cache entries recorded `bodySize: -1` without postData.
    assert!(warnings_for(&t, 1).iter().any(|w| w.contains("bodySize")));
    assert!(warnings_for(&t, 0).is_empty(), "{:?}", t.warnings);
}

#[test]
fn bundled_demo_traffic_loads_cleanly_and_covers_the_demo() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traffic/demo.har");
    let t = load(&path).expect("traffic/demo.har loads");
    assert!(
        (50..=80).contains(&t.exchanges.len()),
        "{} entries",
        t.exchanges.len()
    );
    assert!(t.warnings.is_empty(), "{:#?}", t.warnings);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
        assert!(
            t.exchanges.iter().any(|e| e.request.method == method),
            "no {method}"
        );
    }
    let statuses: Vec<u16> = t
        .exchanges
        .iter()
        .filter_map(|e| e.response.as_ref().map(|r| r.status))
        .collect();
    for status in [
        200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 429, 500, 503,
    ] {
        assert!(statuses.contains(&status), "no {status}");
    }
    let authorities: Vec<&str> = t
        .exchanges
        .iter()
        .map(|e| e.request.authority.as_str())
        .collect();
    assert!(authorities.contains(&"shop.example.com"));
    assert!(authorities.contains(&"api.example.com"));
    assert!(t.exchanges.iter().any(|e| {
        e.response
            .as_ref()
            .is_some_and(|r| r.body.starts_with(b"\x89PNG\r\n\x1a\n"))
    }));
    assert!(t.exchanges.iter().any(|e| !e.request.body.is_empty()));
    for name in [
        "authorization",
        "cookie",
        "x-request-id",
        "x-forwarded-for",
        "if-none-match",
        "origin",
    ] {
        assert!(
            t.exchanges
                .iter()
                .any(|e| !header(&e.request.headers, name).is_empty()),
            "no request carries {name}"
        );
    }
}

// --- Mapping rules ---------------------------------------------------------

#[test]
fn minimal_entry_maps_every_field() {
    let t = parse_ok(vec![entry()]);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.source.as_deref(), Some(Path::new("test.har")));
    assert_eq!(
        t.exchanges[0].request,
        HttpRequest {
            method: "GET".into(),
            scheme: "https".into(),
            authority: "api.example.com".into(),
            path: "/v1/items?page=2".into(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        }
    );
    assert_eq!(
        t.exchanges[0].response,
        Some(HttpResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-length".into(), "2".into()),
            ],
            body: b"[]".to_vec(),
        })
    );
}

#[test]
fn headers_are_lowercased_ordered_and_filtered() {
    let e = entry_with(
        "/request/headers",
        Some(json!([
            {"name": ":method", "value": "GET"},
            {"name": ":authority", "value": "API.Example.com:443"},
            {"name": ":scheme", "value": "https"},
            {"name": ":path", "value": "/v1/items?page=2"},
            {"name": "Accept", "value": "  application/json\t"},
            {"name": "Cookie", "value": "sid=abc; theme=dark"},
            {"name": "X-Trace", "value": "1"},
            {"name": "Connection", "value": "keep-alive"},
            {"name": "Keep-Alive", "value": "timeout=5"},
            {"name": "Proxy-Connection", "value": "keep-alive"},
            {"name": "Transfer-Encoding", "value": "chunked"},
            {"name": "Upgrade", "value": "h2c"},
            {"name": "x-trace", "value": "2"},
            {"name": "cookie", "value": "second=1"}
        ])),
    );
    let t = parse_ok(vec![e]);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let r = request(&t, 0);
    assert_eq!(r.authority, "api.example.com");
    assert_eq!(
        r.headers,
        vec![
            ("accept".to_owned(), "application/json".to_owned()),
            ("cookie".to_owned(), "sid=abc; theme=dark".to_owned()),
            ("x-trace".to_owned(), "1".to_owned()),
            ("x-trace".to_owned(), "2".to_owned()),
            ("cookie".to_owned(), "second=1".to_owned()),
        ]
    );
}

#[test]
fn response_pseudo_and_hop_by_hop_headers_are_dropped() {
    let e = entry_with(
        "/response/headers",
        Some(json!([
            {"name": ":status", "value": "200"},
            {"name": "Set-Cookie", "value": "a=1; Path=/"},
            {"name": "Set-Cookie", "value": "b=2; Path=/"},
            {"name": "Transfer-Encoding", "value": "chunked"},
            {"name": "Connection", "value": "close"}
        ])),
    );
    let t = parse_ok(vec![e]);
    assert_eq!(
        response(&t, 0).headers,
        vec![
            ("set-cookie".to_owned(), "a=1; Path=/".to_owned()),
            ("set-cookie".to_owned(), "b=2; Path=/".to_owned()),
        ]
    );
}

#[test]
fn authority_comes_from_host_and_drops_default_ports() {
    let cases = [
        (
            "http://Shop.Example.com:80/a",
            "Shop.Example.com:80",
            "shop.example.com",
            "http",
        ),
        (
            "https://shop.example.com:8443/a#frag",
            "shop.example.com:8443",
            "shop.example.com:8443",
            "https",
        ),
        (
            "https://user:pw@shop.example.com/a",
            "shop.example.com",
            "shop.example.com",
            "https",
        ),
        ("http://[::1]:8080/a", "[::1]:8080", "[::1]:8080", "http"),
        ("https://127.0.0.1:443/a", "127.0.0.1", "127.0.0.1", "https"),
    ];
    for (url, host, authority, scheme) in cases {
        let mut e = entry_with("/request/url", Some(json!(url)));
        e["request"]["headers"][0]["value"] = json!(host);
        let t = parse_ok(vec![e]);
        assert!(t.warnings.is_empty(), "{url}: {:?}", t.warnings);
        let r = request(&t, 0);
        assert_eq!(r.authority, authority, "{url}");
        assert_eq!(r.scheme, scheme, "{url}");
        assert_eq!(r.path, "/a", "{url}");
    }
}

#[test]
fn host_header_that_disagrees_with_the_url_wins_with_a_warning() {
    let mut e = entry();
    e["request"]["headers"][0]["value"] = json!("internal.example.com:8080");
    let t = parse_ok(vec![e]);
    assert_eq!(request(&t, 0).authority, "internal.example.com:8080");
    assert!(header(&request(&t, 0).headers, "host").is_empty());
    let w = warnings_for(&t, 0);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("log.entries[0].request.headers")
            && w[0].contains("internal.example.com:8080")
    );
}

#[test]
fn url_without_path_and_with_raw_bytes() {
    let t = parse_ok(vec![
        entry_with("/request/url", Some(json!("https://api.example.com?x=1"))),
        entry_with("/request/url", Some(json!("https://api.example.com"))),
        entry_with(
            "/request/url",
            Some(json!("https://api.example.com/s?q=caf\u{e9} au lait")),
        ),
    ]);
    assert_eq!(request(&t, 0).path, "/?x=1");
    assert_eq!(request(&t, 1).path, "/");
    assert_eq!(request(&t, 2).path, "/s?q=caf%C3%A9%20au%20lait");
    assert!(
        warnings_for(&t, 2)
            .iter()
            .any(|w| w.contains("percent-encoded"))
    );
    assert!(warnings_for(&t, 0).is_empty());
}

#[test]
fn non_network_entries_are_skipped_and_ids_keep_their_index() {
    let t = parse_ok(vec![
        entry(),
        entry_with(
            "/request/url",
            Some(json!("data:image/png;base64,iVBORw0KGgo=")),
        ),
        entry(),
    ]);
    let ids: Vec<_> = t.exchanges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["entry 0", "entry 2"]);
    assert!(warnings_for(&t, 1).iter().any(|w| w.contains("skipped")));
}

#[test]
fn websocket_urls_map_to_http_schemes() {
    let mut e = entry_with("/request/url", Some(json!("wss://api.example.com/live")));
    e["request"]["headers"] = json!([{"name": "Upgrade", "value": "websocket"}]);
    let t = parse_ok(vec![e]);
    assert_eq!(request(&t, 0).scheme, "https");
    assert!(request(&t, 0).headers.is_empty());
    assert!(warnings_for(&t, 0).iter().any(|w| w.contains("WebSocket")));
}

#[test]
fn request_body_comes_from_post_data_text() {
    let mut e = entry_with(
        "/request/postData",
        Some(json!({"mimeType": "application/json", "text": "{\"sku\":\"A-1\",\"qty\":2}"})),
    );
    e["request"]["method"] = json!("POST");
    e["request"]["headers"] = json!([
        {"name": "Content-Type", "value": "application/json"},
        {"name": "Content-Length", "value": "21"}
    ]);
    let t = parse_ok(vec![e]);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(request(&t, 0).method, "POST");
    assert_eq!(request(&t, 0).body, b"{\"sku\":\"A-1\",\"qty\":2}");
    assert_eq!(header(&request(&t, 0).headers, "content-length"), ["21"]);
}

#[test]
fn request_content_length_is_corrected_with_a_warning() {
    let mut e = entry_with(
        "/request/postData",
        Some(json!({"mimeType": "text/plain", "text": "hello"})),
    );
    e["request"]["headers"] = json!([
        {"name": "Content-Length", "value": "99"},
        {"name": "Content-Length", "value": "99"}
    ]);
    let t = parse_ok(vec![e]);
    assert_eq!(header(&request(&t, 0).headers, "content-length"), ["5"]);
    assert!(
        warnings_for(&t, 0)
            .iter()
            .any(|w| w.contains("content-length \"99\""))
    );
}

#[test]
fn request_body_from_params_is_form_encoded() {
    let e = entry_with(
        "/request/postData",
        Some(json!({
            "mimeType": "application/x-www-form-urlencoded",
            "params": [
                {"name": "email", "value": "ann@example.com"},
                {"name": "note", "value": "two words & more"},
                {"name": "empty"}
            ]
        })),
    );
    let t = parse_ok(vec![e]);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(
        String::from_utf8_lossy(&request(&t, 0).body),
        "email=ann%40example.com&note=two+words+%26+more&empty="
    );
}

#[test]
fn request_body_from_params_is_multipart_when_the_mime_type_says_so() {
    let e = entry_with(
        "/request/postData",
        Some(json!({
            "mimeType": "multipart/form-data; boundary=----b0undary",
            "params": [
                {"name": "title", "value": "Hi"},
                {"name": "file", "value": "abc", "fileName": "a.txt", "contentType": "text/plain"}
            ]
        })),
    );
    let t = parse_ok(vec![e]);
    assert_eq!(
        String::from_utf8_lossy(&request(&t, 0).body),
        "------b0undary\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHi\r\n\
         ------b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nabc\r\n------b0undary--\r\n"
    );
}

#[test]
fn base64_bodies_decode() {
    let mut e = entry_with(
        "/response/content",
        Some(
            json!({"size": 11, "mimeType": "text/plain", "encoding": "base64", "text": "aGVsbG8g\nd29y\r\nbGQ="}),
        ),
    );
    e["request"]["postData"] =
        json!({"mimeType": "application/octet-stream", "encoding": "base64", "text": "AAEC/w"});
    e["request"]["method"] = json!("PUT");
    let t = parse_ok(vec![e]);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(response(&t, 0).body, b"hello world");
    assert_eq!(request(&t, 0).body, [0u8, 1, 2, 255]);
    // The recorded content-length (2) no longer describes the body.
    assert_eq!(header(&response(&t, 0).headers, "content-length"), ["11"]);
}

#[test]
fn decoded_response_drops_content_encoding_and_fixes_content_length() {
    let e = entry_with(
        "/response/headers",
        Some(json!([
            {"name": "Content-Type", "value": "application/json"},
            {"name": "Content-Encoding", "value": "gzip"},
            {"name": "Content-Length", "value": "27"},
            {"name": "Vary", "value": "Accept-Encoding"}
        ])),
    );
    let t = parse_ok(vec![e]);
    assert_eq!(
        response(&t, 0).headers,
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("content-length".to_owned(), "2".to_owned()),
            ("vary".to_owned(), "Accept-Encoding".to_owned()),
        ]
    );
    // Without a content-length in the recording, none is invented.
    let e = entry_with(
        "/response/headers",
        Some(json!([{"name": "Content-Encoding", "value": "br"}])),
    );
    let t = parse_ok(vec![e]);
    assert!(response(&t, 0).headers.is_empty());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
}

#[test]
fn bodiless_responses_keep_their_headers_and_lose_recorded_bodies() {
    let mut head = entry_with(
        "/response/headers",
        Some(json!([
            {"name": "Content-Encoding", "value": "gzip"},
            {"name": "Content-Length", "value": "1234"}
        ])),
    );
    head["request"]["method"] = json!("HEAD");
    let no_content = entry_with("/response/status", Some(json!(204)));
    let t = parse_ok(vec![head, no_content]);
    let r = response(&t, 0);
    assert!(r.body.is_empty());
    assert_eq!(header(&r.headers, "content-length"), ["1234"]);
    assert_eq!(header(&r.headers, "content-encoding"), ["gzip"]);
    assert!(warnings_for(&t, 0).iter().any(|w| w.contains("HEAD")));
    assert!(response(&t, 1).body.is_empty());
    assert!(warnings_for(&t, 1).iter().any(|w| w.contains("204")));
}

#[test]
fn byte_order_mark_is_ignored() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(har(vec![entry()]));
    let t = parse("bom.har", &bytes).expect("a BOM is tolerated");
    assert_eq!(t.exchanges.len(), 1);
}

#[test]
fn mod_load_picks_har_by_extension_and_by_content() {
    let dir = std::env::temp_dir().join(format!("tollgate-har-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let named = dir.join("recording.HAR");
    let unnamed = dir.join("recording.json");
    let other = dir.join("notes.txt");
    std::fs::write(&named, har(vec![entry()])).expect("write");
    std::fs::write(&unnamed, har(vec![entry(), entry()])).expect("write");
    std::fs::write(&other, "GET / HTTP/1.1\r\n").expect("write");

    let t = crate::load(&named).expect("a .har file loads");
    assert_eq!(t.exchanges.len(), 1);
    assert_eq!(t.source.as_deref(), Some(named.as_path()));
    let t = crate::load(&unnamed).expect("HAR content is recognised");
    assert_eq!(t.exchanges.len(), 2);
    let err = crate::load(&other).expect_err("plain text is not traffic");
    assert!(matches!(err, TrafficError::UnknownFormat { .. }));
    assert!(
        err.to_string().starts_with(&other.display().to_string()),
        "{err}"
    );
    let missing = dir.join("missing.har");
    let err = crate::load(&missing).expect_err("no such file");
    assert!(matches!(err, TrafficError::Read { .. }));
    assert!(err.to_string().contains("missing.har"), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

// --- Errors ----------------------------------------------------------------

#[test]
fn malformed_json_names_line_column_and_entry() {
    let mut text = String::from_utf8(har(vec![entry(), entry()])).expect("utf-8");
    // Break the second entry: drop the colon after its "method" key.
    let second = text.rfind("\"method\":").expect("second method");
    text.replace_range(second..second + 9, "\"method\" ");
    let (error, message) = parse_err(text.as_bytes());
    match error {
        TrafficError::Json {
            entry,
            line,
            column,
            ..
        } => {
            assert_eq!(entry, Some(1), "{message}");
            assert_eq!(line, 1);
            assert!(column > second, "{message}");
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
    assert!(
        message.starts_with("test.har: malformed JSON in entry 1: "),
        "{message}"
    );
    assert!(message.contains("line 1, column"), "{message}");

    let (_, message) = parse_err(b"{\n  \"log\": {\n    \"version\": \"1.2\",\n");
    assert!(message.contains("line 4"), "{message}");
    assert!(!message.contains("in entry"), "{message}");
    let (_, message) = parse_err(b"{\"log\": {\"entries\": []}} trailing");
    assert!(message.contains("trailing"), "{message}");
}

#[test]
fn document_structure_errors_name_the_field() {
    let (_, message) = parse_err(b"   ");
    assert!(message.contains("empty"), "{message}");
    let (_, message) = parse_err(b"[1, 2]");
    assert!(message.starts_with("test.har: (document): "), "{message}");
    let (_, message) = parse_err(b"{\"version\": \"1.2\"}");
    assert_eq!(
        message,
        "test.har: log: missing required field (is this a HAR file?)"
    );
    let (_, message) = parse_err(b"{\"log\": {\"version\": \"1.2\"}}");
    assert!(
        message.starts_with("test.har: log.entries: missing required field"),
        "{message}"
    );
    let (_, message) = parse_err(b"{\"log\": {\"entries\": {}}}");
    assert!(
        message.starts_with("test.har: log.entries: invalid type"),
        "{message}"
    );
    let (_, message) = parse_err(b"{\"log\": []}");
    assert!(
        message.starts_with("test.har: log: invalid type"),
        "{message}"
    );
}

#[test]
fn missing_required_fields_are_errors() {
    let cases = [
        ("/request/url", "log.entries[1].request.url"),
        ("/request/method", "log.entries[1].request.method"),
        ("/request/headers", "log.entries[1].request.headers"),
        ("/response/status", "log.entries[1].response.status"),
        ("/response/headers", "log.entries[1].response.headers"),
    ];
    for (pointer, field) in cases {
        assert_entry_error(
            vec![entry(), entry_with(pointer, None)],
            1,
            field,
            "missing required field",
        );
    }
    let mut e = entry();
    e.as_object_mut().expect("object").remove("request");
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].request",
        "missing required field",
    );
    let mut e = entry();
    e["request"]["headers"][1] = json!({"name": "Accept"});
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].request.headers[1].value",
        "missing required field",
    );
    let mut e = entry();
    e["request"]["postData"] = json!({"params": [{"value": "x"}]});
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].request.postData.params[0].name",
        "missing required field",
    );
}

#[test]
fn bad_urls_are_errors() {
    let cases = [
        ("/v1/items", "no scheme"),
        ("ftp://files.example.com/a", "unsupported scheme"),
        ("https:/api.example.com/a", "no `//`"),
        ("https:///a", "no host"),
        ("https://api.example.com:99999/a", "port out of range"),
        ("https://api.example.com:http/a", "not a valid port"),
        ("https://api example.com/a", "not a valid host"),
        ("http://[::1/a", "unclosed"),
    ];
    for (url, needle) in cases {
        assert_entry_error(
            vec![entry_with("/request/url", Some(json!(url)))],
            0,
            "log.entries[0].request.url",
            needle,
        );
    }
}

#[test]
fn wrong_types_are_errors() {
    let cases: [(&str, Value, &str, &str); 11] = [
        (
            "/request/url",
            json!(42),
            "log.entries[2].request.url",
            "expected a string, found a number (42)",
        ),
        (
            "/request/method",
            json!(["GET"]),
            "log.entries[2].request.method",
            "expected a string, found a list",
        ),
        (
            "/request/headers",
            json!({"Accept": "*/*"}),
            "log.entries[2].request.headers",
            "expected a list",
        ),
        (
            "/response/status",
            json!("200"),
            "log.entries[2].response.status",
            "expected a status code, found a string (\"200\")",
        ),
        (
            "/response/status",
            json!(42),
            "log.entries[2].response.status",
            "not an HTTP status code",
        ),
        (
            "/response/status",
            json!(-1),
            "log.entries[2].response.status",
            "expected a status code",
        ),
        (
            "/response/content",
            json!("[]"),
            "log.entries[2].response.content",
            "expected an object",
        ),
        (
            "/request/postData",
            json!({"text": 5}),
            "log.entries[2].request.postData.text",
            "expected a string",
        ),
        (
            "/request",
            json!("GET /"),
            "log.entries[2].request",
            "expected an object",
        ),
        (
            "/request/method",
            json!("GE T"),
            "log.entries[2].request.method",
            "not a valid HTTP method",
        ),
        (
            "/response",
            json!([]),
            "log.entries[2].response",
            "expected an object",
        ),
    ];
    for (pointer, value, field, needle) in cases {
        assert_entry_error(
            vec![entry(), entry(), entry_with(pointer, Some(value))],
            2,
            field,
            needle,
        );
    }
    assert_entry_error(
        vec![entry(), json!("entry")],
        1,
        "log.entries[1]",
        "expected an object, found a string",
    );
    let mut e = entry();
    e["response"]["headers"][0]["value"] = json!(7);
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].response.headers[0].value",
        "found a number (7)",
    );
    let mut e = entry();
    e["request"]["headers"][0]["value"] = json!("a\r\u{0}X-Injected: 1");
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].request.headers[0].value",
        "a line break (CR)",
    );
    let mut e = entry();
    e["request"]["headers"][1]["value"] = json!("a\u{0}b");
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].request.headers[1].value",
        "a NUL byte",
    );
}

#[test]
fn bad_base64_and_unknown_encodings_are_errors() {
    let e = entry_with(
        "/response/content",
        Some(json!({"mimeType": "image/png", "encoding": "base64", "text": "iVBOR*0KGgo="})),
    );
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].response.content.text",
        "invalid base64",
    );
    let e = entry_with(
        "/response/content",
        Some(json!({"mimeType": "text/plain", "encoding": "gzip", "text": "x"})),
    );
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].response.content.encoding",
        "unsupported encoding \"gzip\"",
    );
    let e = entry_with(
        "/request/postData",
        Some(json!({"mimeType": "text/plain", "encoding": "base64", "text": "@@@"})),
    );
    assert_entry_error(
        vec![e],
        0,
        "log.entries[0].request.postData.text",
        "invalid base64",
    );
}

// --- Tolerated deviations --------------------------------------------------

#[test]
fn status_zero_means_no_response() {
    let t = parse_ok(vec![
        entry(),
        entry_with("/response/status", Some(json!(0))),
    ]);
    assert!(t.exchanges[0].response.is_some());
    assert_eq!(t.exchanges[1].response, None);
    let w = warnings_for(&t, 1);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("log.entries[1].response.status") && w[0].contains("aborted"),
        "{w:?}"
    );
    let mut e = entry();
    e.as_object_mut().expect("object").remove("response");
    let t = parse_ok(vec![e]);
    assert_eq!(t.exchanges[0].response, None);
    assert!(warnings_for(&t, 0)[0].contains("log.entries[0].response: missing"));
}

#[test]
fn missing_cookies_and_http_version_are_warnings() {
    let mut e = entry_with("/request/cookies", None);
    e["response"]
        .as_object_mut()
        .expect("object")
        .remove("httpVersion");
    e["response"]["cookies"] = json!("sid=1");
    let t = parse_ok(vec![entry(), e]);
    assert!(warnings_for(&t, 0).is_empty());
    let w = warnings_for(&t, 1);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("log.entries[1].request.cookies: missing")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("log.entries[1].response.httpVersion: missing")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("log.entries[1].response.cookies: expected a list")),
        "{w:?}"
    );
    assert_eq!(t.exchanges[1].request, t.exchanges[0].request);
}

#[test]
fn unknown_body_size_is_a_warning() {
    let mut e = entry_with("/request/bodySize", Some(json!(-1)));
    e["response"]["bodySize"] = json!(-1);
    e["response"]["content"] =
        json!({"mimeType": "image/png", "comment": "Response bodies are not included."});
    let t = parse_ok(vec![e]);
    let w = warnings_for(&t, 0);
    assert!(
        w.iter()
            .any(|w| w.contains("log.entries[0].request.bodySize: is -1")),
        "{w:?}"
    );
    // The recorded content-length (2) says there was a body that is not in the file.
    assert!(
        w.iter()
            .any(|w| w.contains("log.entries[0].response.content.text: missing")),
        "{w:?}"
    );
    assert!(response(&t, 0).body.is_empty());
    assert_eq!(header(&response(&t, 0).headers, "content-length"), ["0"]);

    let mut e = entry_with("/response/bodySize", Some(json!(-1)));
    e["response"]["headers"] = json!([]);
    e["response"]["content"] = json!({"mimeType": "text/plain"});
    let t = parse_ok(vec![e]);
    let w = warnings_for(&t, 0);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("log.entries[0].response.bodySize: is -1"),
        "{w:?}"
    );
}

#[test]
fn non_string_param_values_are_warnings() {
    let e = entry_with(
        "/request/postData",
        Some(json!({
            "mimeType": "application/x-www-form-urlencoded",
            "params": [
                {"name": "qty", "value": 3},
                {"name": "gift", "value": true},
                {"name": "note", "value": null}
            ]
        })),
    );
    let t = parse_ok(vec![e]);
    assert_eq!(request(&t, 0).body, b"qty=3&gift=true&note=");
    let w = warnings_for(&t, 0);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("log.entries[0].request.postData.params[0].value"),
        "{w:?}"
    );
    assert!(
        w[1].contains("log.entries[0].request.postData.params[1].value"),
        "{w:?}"
    );
}

#[test]
fn lenient_reading_skips_bad_entries_with_a_warning_naming_them() {
    let bad = entry_with(
        "/response/content",
        Some(json!({"mimeType": "image/png", "encoding": "base64", "text": "iVBOR*0KGgo="})),
    );
    let doc = har(vec![entry(), bad, entry()]);
    let strict = super::parse_with("test.har", &doc, super::super::Leniency::Strict);
    assert!(strict.is_err());
    let t = super::parse_with("test.har", &doc, super::super::Leniency::Lenient).expect("lenient");
    let ids: Vec<&str> = t.exchanges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["entry 0", "entry 2"]);
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].starts_with("test.har: entry 1: log.entries[1].response.content.text:")
            && t.warnings[0].ends_with("; entry skipped"),
        "{}",
        t.warnings[0]
    );
    // Document-level damage still fails when lenient.
    let cut = &doc[..doc.len() / 2];
    assert!(super::parse_with("test.har", cut, super::super::Leniency::Lenient).is_err());
}

/// Real browser exports: values joined by line breaks (Firefox, WebPageTest),
/// request and status lines or fragments listed as headers, structured
/// `postData.params[].value`, responses without `content.text`. Each loads,
/// strictly, with the entry kept and a warning naming what was changed.
#[test]
fn browser_export_quirks_keep_the_entry_with_a_warning() {
    let mut e = entry();
    e["request"]["headers"] = json!([
        {"name": "GET /v1/items?page=2 HTTP/1.1", "value": ""},
        {"name": "Host", "value": "api.example.com"},
        {"name": "Accept", "value": "application/json"},
        {"name": "Cookie: a", "value": "1"},
        {"name": "", "value": "x"}
    ]);
    e["response"]["headers"] = json!([
        {"name": "HTTP/1.1 200 OK", "value": ""},
        {"name": "Set-Cookie", "value": "a=1; Path=/\nb=2; HttpOnly\r\n\nc=3"},
        {"name": "Content-Type", "value": "application/json"}
    ]);
    e["response"]["content"] = json!({"size": 2, "mimeType": "application/json"});
    e["request"]["method"] = json!("POST");
    e["request"]["postData"] = json!({
        "mimeType": "application/x-www-form-urlencoded",
        "params": [{"name": "o", "value": {"k": [1, 2]}}, {"name": "l", "value": ["x"]}]
    });
    let t = parse_ok(vec![e, entry()]);
    assert_eq!(t.exchanges.len(), 2);
    let r = request(&t, 0);
    assert_eq!(
        r.headers,
        [("accept".to_string(), "application/json".to_string())]
    );
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "o=%7B%22k%22%3A%5B1%2C2%5D%7D&l=%5B%22x%22%5D"
    );
    let cookies: Vec<&str> = response(&t, 0)
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; HttpOnly", "c=3"]);
    let w = warnings_for(&t, 0).join("\n");
    for needle in [
        "request.headers[0].name: \"GET /v1/items?page=2 HTTP/1.1\" is a request or status line",
        "request.headers[3].name: \"Cookie: a\" is not a valid header name; that header is dropped",
        "request.headers[4].name: \"\" is not a valid header name",
        "response.headers[0].name: \"HTTP/1.1 200 OK\" is a request or status line",
        "response.headers[1].value: header \"set-cookie\" holds 3 values on separate lines",
        "postData.params[0].value: expected a string, found an object",
    ] {
        assert!(w.contains(needle), "missing {needle:?} in\n{w}");
    }
}

/// A header no HTTP message can carry fails the entry when strict; when
/// lenient only that header is dropped, with a warning, and the entry kept.
#[test]
fn lenient_reading_drops_only_a_header_that_cannot_be_replayed() {
    let mut e = entry();
    e["request"]["headers"][1]["value"] = json!("a\u{0}b");
    let doc = har(vec![e]);
    assert!(super::parse_with("test.har", &doc, super::super::Leniency::Strict).is_err());
    let t = super::parse_with("test.har", &doc, super::super::Leniency::Lenient).expect("lenient");
    assert_eq!(t.exchanges.len(), 1);
    assert!(
        request(&t, 0).headers.is_empty(),
        "{:?}",
        request(&t, 0).headers
    );
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(
        t.warnings[0].contains("log.entries[0].request.headers[1].value")
            && t.warnings[0].contains("NUL")
            && t.warnings[0].ends_with("; header dropped, entry kept"),
        "{}",
        t.warnings[0]
    );
}

/// Every real browser recording in `../shared/traffic` loads whole, strictly
/// and leniently: no entry dropped (33 entries: Firefox 14, Safari 19).
#[test]
fn every_shared_browser_recording_loads_every_entry() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traffic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|d| d.ok().map(|d| d.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "har"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no HAR in {}", dir.display());
    let mut totals = (0, 0, 0);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let recorded = doc["log"]["entries"].as_array().map_or(0, Vec::len);
        let name = path.display().to_string();
        let strict = super::parse_with(&name, &bytes, super::super::Leniency::Strict)
            .unwrap_or_else(|e| panic!("strict: {e}"));
        let lenient = super::parse_with(&name, &bytes, super::super::Leniency::Lenient)
            .unwrap_or_else(|e| panic!("lenient: {e}"));
        assert_eq!(strict.exchanges.len(), recorded, "{name}: strict");
        assert_eq!(lenient.exchanges.len(), recorded, "{name}: lenient");
        assert!(
            !lenient.warnings.iter().any(|w| w.contains("skipped")),
            "{name}: {:?}",
            lenient.warnings
        );
        totals.0 += recorded;
        totals.1 += strict.exchanges.len();
        totals.2 += lenient.exchanges.len();
    }
    assert_eq!(totals, (33, 33, 33), "entries recorded, strict, lenient");
}
