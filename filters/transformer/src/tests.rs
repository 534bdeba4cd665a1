//! Native tests of the transformer: headers, query, paths, redirects, JSON body edits with every
//! chunking, content-length handling, refusals.

use std::rc::Rc;

use serde_json::{Value, json};
use tollgate_sdk::{Action, Body, ConfigError, HeaderList, HttpFilter, Request, Response};

use crate::{TransformerConfig, TransformerFilter};

const DEMO: &str = include_str!("../demo.json");

fn config(json: &str) -> Result<Rc<TransformerConfig>, ConfigError> {
    tollgate_sdk::config::parse(json.as_bytes()).map(Rc::new)
}

fn filter(json: &str) -> Result<TransformerFilter, ConfigError> {
    Ok(TransformerFilter::new(config(json)?))
}

/// Feeds `body` in `chunks` (sizes, cycled) the way the proxy does: a paused chunk stays in the
/// buffer and the next call sees it with the new bytes. Returns what goes on.
fn feed(
    mut on_chunk: impl FnMut(&mut Body<'_>, bool) -> Action,
    body: &[u8],
    chunks: &[usize],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut i = 0;
    loop {
        let size = chunks[i % chunks.len()].max(1);
        i += 1;
        let end = (at + size).min(body.len());
        buffer.extend_from_slice(&body[at..end]);
        at = end;
        let eos = at == body.len();
        let action = on_chunk(&mut Body::new(&mut buffer), eos);
        if action == Action::Continue {
            out.append(&mut buffer);
        }
        if eos {
            out.append(&mut buffer);
            return out;
        }
    }
}

fn request_headers(
    f: &mut TransformerFilter,
    pairs: &[(&str, &str)],
    eos: bool,
) -> (HeaderList, Option<tollgate_sdk::LocalReply>) {
    let mut list: HeaderList = pairs.iter().copied().collect();
    let mut req = Request::new(&mut list);
    f.on_request_headers(&mut req, eos);
    let reply = req.take_local_reply();
    (list, reply)
}

#[test]
fn request_headers_query_and_prefix_path() -> Result<(), ConfigError> {
    tollgate_sdk::routes::mock::set_route_name(None);
    let mut f = filter(DEMO)?;
    let (h, reply) = request_headers(
        &mut f,
        &[
            (":method", "GET"),
            (":authority", "api.example.com"),
            (":path", "/api/acme/orders?q=shoes&debug=1&source=x&page=2"),
            ("x-debug", "1"),
            ("x-client-version", "7.1"),
            ("x-consumer", "alice"),
        ],
        true,
    );
    assert!(reply.is_none());
    assert_eq!(
        h.get_all(":path"),
        vec!["/v2/acme/orders?search=shoes&source=gateway&page=2"]
    );
    assert!(h.get_all("x-debug").is_empty());
    assert!(h.get_all("x-client-version").is_empty());
    assert_eq!(h.get_all("x-app-version"), vec!["7.1"]);
    assert_eq!(h.get_all("x-forwarded-consumer"), vec!["alice"]);
    assert_eq!(h.get_all("x-original-path"), vec!["/api/acme/orders"]);
    assert_eq!(h.get_all("x-tenant"), vec!["acme"]);
    Ok(())
}

#[test]
fn regex_path_rewrite_and_redirects_per_route() -> Result<(), ConfigError> {
    let mut f = filter(DEMO)?;
    let (h, _) = request_headers(
        &mut f,
        &[(":method", "GET"), (":path", "/users/42/profile?x=1")],
        true,
    );
    assert_eq!(h.get_all(":path"), vec!["/v2/profiles/42?x=1"]);
    let mut f = filter(DEMO)?;
    let (_, reply) = request_headers(
        &mut f,
        &[
            (":method", "GET"),
            (":authority", "shop.example.com"),
            (":path", "/old/catalog/x?a=b"),
        ],
        true,
    );
    let reply = reply.ok_or_else(|| ConfigError::at("", "no redirect"))?;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.headers,
        vec![(
            "location".to_string(),
            "https://shop.example.com/api/catalog?a=b".to_string()
        )]
    );
    Ok(())
}

#[test]
fn response_headers_use_the_request_as_it_arrived() -> Result<(), ConfigError> {
    let mut f = filter(DEMO)?;
    request_headers(&mut f, &[(":method", "GET"), (":path", "/api/x?y=1")], true);
    let mut resp = HeaderList::from([
        (":status", "200"),
        ("server", "nginx"),
        ("x-powered-by", "php"),
    ]);
    f.on_response_headers(&mut Response::new(&mut resp), true);
    assert!(resp.get_all("server").is_empty() && resp.get_all("x-powered-by").is_empty());
    assert_eq!(resp.get_all("x-request-path"), vec!["/api/x"]);
    Ok(())
}

fn request_doc() -> Value {
    json!({"user": {"fullName": "Ada Lovelace", "mail": "ada@example.com", "id": 7},
           "client": {"debug": true, "name": "app"}, "items": [1, 2, 3], "note": "ünïcödé \"q\""})
}

fn request_expected() -> Value {
    json!({"user": {"full_name": "Ada Lovelace", "id": 7}, "contact": {"email": "ada@example.com"},
           "client": {"name": "app"}, "items": [1, 2, 3], "note": "ünïcödé \"q\"", "meta": {"via": "tollgate"}})
}

#[test]
fn request_body_edits_are_the_same_whole_in_one_byte_and_in_random_chunks()
-> Result<(), ConfigError> {
    let body = serde_json::to_vec_pretty(&request_doc()).unwrap_or_default();
    let plans: Vec<Vec<usize>> = vec![
        vec![body.len()],
        vec![1],
        vec![7, 1, 30, 2, 64],
        vec![3, 200, 1],
    ];
    let mut outputs = Vec::new();
    for plan in &plans {
        let mut f = filter(DEMO)?;
        let len = body.len().to_string();
        let (h, _) = request_headers(
            &mut f,
            &[
                (":method", "POST"),
                (":path", "/api/users"),
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", &len),
            ],
            false,
        );
        assert!(
            h.get_all("content-length").is_empty(),
            "content-length removed"
        );
        let out = feed(|b, eos| f.on_request_body(b, eos), &body, plan);
        let doc: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert_eq!(doc, request_expected(), "plan {plan:?}");
        outputs.push(out);
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "the same bytes for every chunking"
    );
    Ok(())
}

#[test]
fn response_body_edits_and_content_length() -> Result<(), ConfigError> {
    let body = br#"{"data": {"id": 1}, "internal": {"host": "10.0.0.1"}}"#;
    for plan in [vec![body.len()], vec![1], vec![5, 2, 9]] {
        let mut f = filter(DEMO)?;
        request_headers(&mut f, &[(":method", "GET"), (":path", "/api/x")], true);
        let mut resp = HeaderList::from([
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "52"),
        ]);
        f.on_response_headers(&mut Response::new(&mut resp), false);
        assert!(resp.get_all("content-length").is_empty());
        let out = feed(|b, eos| f.on_response_body(b, eos), body, &plan);
        assert_eq!(
            out,
            br#"{"result":{"id":1},"api_version":2}"#.to_vec(),
            "{plan:?}"
        );
    }
    Ok(())
}

/// A `POST /` of a JSON body, its `content-length` when given; the headers as they go on.
fn post_json(f: &mut TransformerFilter, length: Option<&str>) -> HeaderList {
    let mut pairs = vec![
        (":method", "POST"),
        (":path", "/"),
        ("content-type", "application/json"),
    ];
    if let Some(length) = length {
        pairs.push(("content-length", length));
    }
    request_headers(f, &pairs, false).0
}

#[test]
fn non_json_and_too_large_bodies_pass_unchanged() -> Result<(), ConfigError> {
    // Not JSON by content type: content-length kept, nothing buffered.
    let mut f = filter(DEMO)?;
    let (h, _) = request_headers(
        &mut f,
        &[
            (":method", "POST"),
            (":path", "/api/x"),
            ("content-type", "text/plain"),
            ("content-length", "5"),
        ],
        false,
    );
    assert_eq!(h.get_all("content-length"), vec!["5"]);
    assert_eq!(
        feed(|b, eos| f.on_request_body(b, eos), b"hello", &[1]),
        b"hello"
    );
    // Says JSON, is not: unchanged bytes.
    let mut f = filter(DEMO)?;
    request_headers(
        &mut f,
        &[
            (":method", "POST"),
            (":path", "/api/x"),
            ("content-type", "application/json"),
        ],
        false,
    );
    assert_eq!(
        feed(|b, eos| f.on_request_body(b, eos), b"{not json", &[2]),
        b"{not json"
    );
    // Larger than max_body_bytes: unchanged.
    let small = r#"{"default": {"request": {"body": {"set": [["a", 1]], "max_body_bytes": 10}}}}"#;
    let mut f = filter(small)?;
    post_json(&mut f, None);
    let big = br#"{"b": "0123456789abcdef"}"#;
    assert_eq!(
        feed(|b, eos| f.on_request_body(b, eos), big, &[4]),
        big.to_vec()
    );
    // Announced larger than max_body_bytes: its content-length kept and nothing buffered, not
    // even the first chunk; the same for a response.
    let mut f = filter(small)?;
    let length = big.len().to_string();
    let h = post_json(&mut f, Some(&length));
    assert_eq!(h.get_all("content-length"), vec![length.as_str()]);
    let mut first = big[..4].to_vec();
    assert_eq!(
        f.on_request_body(&mut Body::new(&mut first), false),
        Action::Continue
    );
    let both = r#"{"default": {"response": {"body": {"set": [["a", 1]], "max_body_bytes": 10}}}}"#;
    let mut f = filter(both)?;
    request_headers(&mut f, &[(":method", "GET"), (":path", "/")], true);
    let mut list: HeaderList = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ]
    .into_iter()
    .collect();
    f.on_response_headers(&mut Response::new(&mut list), false);
    assert_eq!(list.get_all("content-length"), vec![length.as_str()]);
    let mut first = big[..4].to_vec();
    assert_eq!(
        f.on_response_body(&mut Body::new(&mut first), false),
        Action::Continue
    );
    // Announced within the limit: buffered (the first chunk held).
    let mut f = filter(small)?;
    post_json(&mut f, Some("8"));
    let mut first = b"{\"a\"".to_vec();
    assert_eq!(
        f.on_request_body(&mut Body::new(&mut first), false),
        Action::Pause
    );
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    tollgate_sdk::testing::assert_refused_at::<TransformerConfig>(&[
        (
            r#"{"default": {"redirect": {"status": 200, "location": "/x"}}}"#,
            "default.redirect.status",
        ),
        (
            r#"{"default": {"redirect": {"status": 301, "location": "{{nope}}"}}}"#,
            "default.redirect.location",
        ),
        (
            r#"{"default": {"request": {"headers": {"set": [[":path", "/x"]]}}}}"#,
            "default.request.headers.set[0]",
        ),
        (
            r#"{"default": {"request": {"headers": {"remove": ["content-length"]}}}}"#,
            "default.request.headers.remove[0]",
        ),
        (
            r#"{"default": {"request": {"path": {"regex": {"pattern": "(", "substitution": ""}}}}}"#,
            "default.request.path.regex.pattern",
        ),
        (
            r#"{"default": {"request": {"path": {"prefix": {"from": "api", "to": "/"}}}}}"#,
            "default.request.path.prefix.from",
        ),
        (
            r#"{"default": {"request": {"body": {"remove": ["a..b"]}}}}"#,
            "default.request.body.remove[0]",
        ),
        (
            r#"{"default": {"response": {"body": {"max_body_bytes": 0}}}}"#,
            "default.response.body.max_body_bytes",
        ),
        (
            r#"{"routes": [{"match": {"route": "r"}, "config": {"request": {"query": {"set": [["a", "{{segment:x}}"]]}}}}]}"#,
            "routes[0].config.request.query.set[0]",
        ),
    ]);
}

#[test]
fn key_order_survives_edits() -> Result<(), ConfigError> {
    // Keys in no sorted order: only what the operations name changes place.
    let body = br#"{"zeta": 1, "user": {"mail": "a@x.io", "fullName": "Ada", "b": 2, "a": 1}, "client": {"z": 0, "debug": 1, "a": 0}, "alpha": [{"y": 1, "x": 2}]}"#;
    let mut f = filter(DEMO)?;
    request_headers(
        &mut f,
        &[
            (":method", "POST"),
            (":path", "/api/users"),
            ("content-type", "application/json"),
        ],
        false,
    );
    let out = feed(|b, eos| f.on_request_body(b, eos), body, &[body.len()]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        r#"{"zeta":1,"user":{"full_name":"Ada","b":2,"a":1},"client":{"z":0,"a":0},"alpha":[{"y":1,"x":2}],"contact":{"email":"a@x.io"},"meta":{"via":"tollgate"}}"#
    );
    // A configured object value keeps the configuration's order too.
    let set = r#"{"default": {"request": {"body": {"set": [["meta", {"z": 1, "a": 2}]]}}}}"#;
    let mut f = filter(set)?;
    request_headers(
        &mut f,
        &[
            (":method", "POST"),
            (":path", "/x"),
            ("content-type", "application/json"),
        ],
        false,
    );
    let out = feed(
        |b, eos| f.on_request_body(b, eos),
        br#"{"b": 1, "a": 2}"#,
        &[1],
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        r#"{"b":1,"a":2,"meta":{"z":1,"a":2}}"#
    );
    Ok(())
}

#[test]
fn repeated_keys_are_read_last_and_edited_everywhere() -> Result<(), String> {
    use crate::json_edit::{Json, Path, get, remove, rename, set};
    let parse = |s: &str| serde_json::from_str::<Json>(s).map_err(|e| e.to_string());
    let text = |d: &Json| serde_json::to_string(d).unwrap_or_default();
    let p = |s: &str| Path::parse(s);
    // Unedited, a repeated key is kept as sent; readers see the last value.
    let doc = parse(r#"{"a": 1, "b": 2, "a": 3}"#)?;
    assert_eq!(text(&doc), r#"{"a":1,"b":2,"a":3}"#);
    assert_eq!(get(&doc, &p("a")?), Some(&Json::Number(3.into())));
    // Set: the first place, every repeat gone.
    let mut d = doc.clone();
    assert!(set(&mut d, &p("a")?, Json::Bool(true)));
    assert_eq!(text(&d), r#"{"a":true,"b":2}"#);
    // Remove: every member of that name (no stale copy survives).
    let mut d = doc.clone();
    assert_eq!(remove(&mut d, &p("a")?), Some(Json::Number(3.into())));
    assert_eq!(text(&d), r#"{"b":2}"#);
    // Rename in place, over an existing member of the new name.
    let mut d = parse(r#"{"x": 1, "old": 2, "new": 3, "y": 4}"#)?;
    assert!(rename(&mut d, &p("old")?, "new"));
    assert_eq!(text(&d), r#"{"x":1,"new":2,"y":4}"#);
    let mut d = parse(r#"{"new": 3, "x": 1, "old": 2}"#)?;
    assert!(rename(&mut d, &p("old")?, "new"));
    assert_eq!(text(&d), r#"{"x":1,"new":2}"#);
    assert!(!rename(&mut d, &p("missing")?, "z"));
    assert!(rename(&mut d, &p("x")?, "x"));
    assert_eq!(text(&d), r#"{"x":1,"new":2}"#);
    Ok(())
}
