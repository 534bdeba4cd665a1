//! The test upstream and client against each other, so that an Envoy test
//! failure is never a bug in the plumbing.

use std::io::BufReader;
use std::net::TcpStream;

use anyhow::{Context, Result};
use tollgate_tests::client;
use tollgate_tests::http1::{self, BodyFraming};
use tollgate_tests::upstream::Upstream;
use tollgate_traffic::HttpResponse;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn upstream_records_the_request_and_the_client_sees_every_response_header() -> Result<()> {
    let upstream = Upstream::start(HttpResponse {
        status: 201,
        headers: pairs(&[
            ("set-cookie", "a=1"),
            ("x-upstream", "yes"),
            ("set-cookie", "b=2"),
        ]),
        body: b"hello".to_vec(),
    })?;
    let request = client::request(
        "POST",
        "example.test",
        "/echo?x=1",
        &[("x-dup", "one"), ("X-Mixed-Case", "v"), ("x-dup", "two")],
        b"payload",
    );
    let response = client::send(upstream.addr(), &request)?;

    let received = upstream.requests();
    assert_eq!(received.len(), 1, "one request expected, got {received:?}");
    let got = &received[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/echo?x=1");
    assert_eq!(http1::header(&got.headers, "host"), Some("example.test"));
    assert_eq!(http1::header_values(&got.headers, "x-dup"), ["one", "two"]);
    assert_eq!(http1::header(&got.headers, "x-mixed-case"), Some("v"));
    assert_eq!(http1::header(&got.headers, "content-length"), Some("7"));
    assert_eq!(got.body, b"payload");

    assert_eq!(response.status, 201);
    assert_eq!(
        http1::header_values(&response.headers, "set-cookie"),
        ["a=1", "b=2"]
    );
    assert_eq!(http1::header(&response.headers, "x-upstream"), Some("yes"));
    assert_eq!(
        http1::header(&response.headers, "content-length"),
        Some("5")
    );
    assert_eq!(response.body, b"hello");
    // What the upstream reports as sent is what the client received.
    assert_eq!(upstream.response(), response);
    assert!(
        upstream.errors().is_empty(),
        "upstream errors: {:?}",
        upstream.errors()
    );
    Ok(())
}

#[test]
fn upstream_serves_several_requests_on_one_connection_including_chunked_bodies() -> Result<()> {
    let upstream = Upstream::start(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: b"ok".to_vec(),
    })?;
    let stream = TcpStream::connect(upstream.addr()).context("connecting to the upstream")?;
    let mut writer = &stream;
    http1::write_message(
        &mut writer,
        "GET /first HTTP/1.1",
        &pairs(&[("host", "a")]),
        b"",
    )?;
    http1::write_message(
        &mut writer,
        "PUT /second HTTP/1.1",
        &pairs(&[("host", "a"), ("transfer-encoding", "chunked")]),
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    )?;
    let mut reader = BufReader::new(&stream);
    for _ in 0..2 {
        let head = http1::read_head(&mut reader)?.context("the upstream closed the connection")?;
        assert_eq!(head.start_line, "HTTP/1.1 200 OK");
        let body = http1::read_framed_body(&mut reader, &head, BodyFraming::Response)?;
        assert_eq!(body, b"ok");
    }
    let received = upstream.requests();
    let summary: Vec<(&str, &str, &[u8])> = received
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/first", &b""[..]),
            ("PUT", "/second", &b"abcde"[..])
        ]
    );
    Ok(())
}

#[test]
fn set_response_changes_the_following_answers() -> Result<()> {
    let upstream = Upstream::start(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    })?;
    upstream.set_response(HttpResponse {
        status: 404,
        headers: pairs(&[("x-missing", "1")]),
        body: b"nope".to_vec(),
    });
    let response = client::send(upstream.addr(), &client::request("GET", "h", "/", &[], b""))?;
    assert_eq!(response.status, 404);
    assert_eq!(response.body, b"nope");
    assert_eq!(http1::header(&response.headers, "x-missing"), Some("1"));
    assert_eq!(upstream.take_requests().len(), 1);
    assert!(upstream.requests().is_empty());
    Ok(())
}

#[test]
fn header_comparison_folds_repeats_ignores_envoy_headers_and_reports_differences() -> Result<()> {
    use tollgate_tests::headers::{ENVOY_REQUEST_HEADERS, assert_same};
    let envoy = pairs(&[
        ("via", "a,b"),
        ("x-request-id", "generated"),
        ("set-cookie", "1"),
        ("set-cookie", "2"),
        ("accept", "*/*"),
    ]);
    let harness = pairs(&[
        ("Accept", "*/*"),
        ("set-cookie", "1"),
        ("via", "a"),
        ("set-cookie", "2"),
        ("via", "b"),
    ]);
    assert_same("folded", &envoy, &harness, ENVOY_REQUEST_HEADERS)?;

    let reordered = pairs(&[
        ("via", "b"),
        ("via", "a"),
        ("accept", "*/*"),
        ("set-cookie", "1"),
        ("set-cookie", "2"),
    ]);
    let error = assert_same("reordered", &envoy, &reordered, ENVOY_REQUEST_HEADERS)
        .err()
        .context("values of one header in another order must differ")?;
    let message = error.to_string();
    assert!(
        message.contains(r#"via: "a,b""#) && message.contains(r#"via: "b,a""#),
        "{message}"
    );

    let missing = pairs(&[("via", "a,b"), ("set-cookie", "1"), ("set-cookie", "2")]);
    let error = assert_same("missing", &envoy, &missing, ENVOY_REQUEST_HEADERS)
        .err()
        .context("a missing header must differ")?;
    assert!(
        error
            .to_string()
            .contains(r#"only in Envoy:   accept: "*/*""#),
        "{error}"
    );
    Ok(())
}
