//! Native tests of the filter logic: rules, the rewriter, content-length handling, limits, and
//! properties over generated documents and chunkings.

// Test code: a failed expectation panics with the case that failed.
#![allow(clippy::panic)]

use std::rc::Rc;

use tollgate_sdk::body::{self, Outcome};
use tollgate_sdk::{Action, Body, HeaderList, HeaderMap, HttpFilter, Request, Response};

use crate::json::{MAX_DEPTH, Rewrite, rewrite};
use crate::rules::{Rules, cards, emails, luhn};
use crate::{JsonMaskConfig, JsonMaskFilter};

fn config(json: &str) -> Rc<JsonMaskConfig> {
    match tollgate_sdk::config::parse::<JsonMaskConfig>(json.as_bytes()) {
        Ok(c) => Rc::new(c),
        Err(e) => panic!("{e}"),
    }
}

fn refusal(json: &str) -> String {
    match tollgate_sdk::config::parse::<JsonMaskConfig>(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

fn masked(rules: &Rules, doc: &str) -> String {
    match rewrite(doc.as_bytes(), rules) {
        Rewrite::Masked(out, _) => String::from_utf8_lossy(&out).into_owned(),
        Rewrite::Unchanged => doc.to_string(),
        other => panic!("{other:?} for {doc}"),
    }
}

#[test]
fn paths_keys_and_actions() {
    let rules = Rules::for_tests(&[
        r#"{"path": "$.user.ssn"}"#,
        r#"{"path": "$.cards[*].number", "action": "mask"}"#,
        r#"{"path": "$.cards[1]", "action": "remove"}"#,
        r#"{"key": "PASSWORD", "action": "remove"}"#,
        r#"{"key": "token", "action": "mask", "keep_last": 2}"#,
        r#"{"path": "$['odd key']"}"#,
    ]);
    let doc = r#"{
      "user": {"name": "ada", "ssn": {"a": 1}, "Password": "x", "token": "abcdefgh"},
      "cards": [{"number": "4000 0000 0000 0002"}, {"number": 1}, {"number": 12345678}],
      "odd key": [1, 2], "n": 1.50e+3, "t": true, "z": null, "s": "\u00e9\n"
    }"#;
    assert_eq!(
        masked(&rules, doc),
        r#"{"user":{"name":"ada","ssn":"[REDACTED]","token":"******gh"},"cards":[{"number":"***************0002"},{"number":"******78"}],"odd key":"[REDACTED]","n":1.50e+3,"t":true,"z":null,"s":"\u00e9\n"}"#
    );
}

#[test]
fn mask_reaches_every_scalar_of_a_container() {
    let rules = Rules::for_tests(&[r#"{"key": "secret", "action": "mask"}"#]);
    assert_eq!(
        masked(
            &rules,
            r#"{"secret": {"a": "abcdefgh", "b": [12345678, true, null]}}"#
        ),
        r#"{"secret":{"a":"******gh","b":["******78","****",null]}}"#
    );
    // A removed or redacted root.
    let rules = Rules::for_tests(&[r#"{"path": "$", "action": "remove"}"#]);
    assert_eq!(masked(&rules, "[1]"), r#""[REDACTED]""#);
}

#[test]
fn detectors_in_strings_keys_and_numbers() {
    let rules = Rules::for_tests(&[
        r#"{"detect": "card", "action": "mask"}"#,
        r#"{"detect": "email"}"#,
        r#"{"regex": "\\b[0-9]{3}-[0-9]{2}-[0-9]{4}\\b", "action": "mask", "keep_last": 0}"#,
    ]);
    assert_eq!(
        masked(
            &rules,
            r#"{"note": "card 4111-1111-1111-1111, mail Ada.L+x@mail.example.org; id 123-45-6789",
                "ada@example.com": 4111111111111111, "n": 4111111111111112,
                "esc": "\u0061da@example.com"}"#
        ),
        r#"{"note":"card ***************1111, mail [REDACTED]; id ***********","[REDACTED]":"************1111","n":4111111111111112,"esc":"[REDACTED]"}"#
    );
}

#[test]
fn card_detection_boundaries() {
    assert!(luhn(b"4242424242424242"));
    assert_eq!(cards("4242424242424242"), vec![0..16]);
    assert_eq!(cards("x4242 4242 4242 4242 2030y"), vec![1..20]);
    // Touching other digits, too short, too long, double separators: not cards.
    assert!(cards("14242424242424242").is_empty());
    assert!(cards("424242424242").is_empty());
    assert!(cards("4242  4242 4242 4242").is_empty());
    assert!(cards("4242424242424243").is_empty());
}

#[test]
fn email_detection_boundaries() {
    let text = "a@b.co, @x.org, x@localhost, first.last@sub.example.com. ok";
    let found: Vec<&str> = emails(text).into_iter().map(|r| &text[r]).collect();
    assert_eq!(found, vec!["a@b.co", "first.last@sub.example.com"]);
}

#[test]
fn unchanged_invalid_and_deep_documents() {
    let rules = Rules::for_tests(&[r#"{"key": "password"}"#]);
    assert_eq!(rewrite(b"{\"a\": [1, 2]}", &rules), Rewrite::Unchanged);
    for bad in [
        &b"{\"a\": 01}"[..],
        b"{\"a\": 1,}",
        b"[1 2]",
        b"\"\\x\"",
        b"{\"a\" 1}",
        b"\"\xff\"",
        b"",
        b"1 2",
        b"{\"password\": [1,}",
        b"nul",
        b"\"tab\there\"",
    ] {
        assert!(
            matches!(rewrite(bad, &rules), Rewrite::Invalid(_)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert_eq!(rewrite(deep.as_bytes(), &rules), Rewrite::TooDeep);
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(rewrite(ok.as_bytes(), &rules), Rewrite::Unchanged);
}

#[test]
fn bad_configurations_name_the_field() {
    assert_eq!(
        refusal(r#"{"rules": []}"#),
        "bad configuration at rules: give at least one rule"
    );
    assert_eq!(
        refusal(r#"{"rules": [{"key": "a", "path": "$.a"}]}"#),
        "bad configuration at rules[0]: give exactly one of path, key, detect, regex"
    );
    assert!(
        refusal(r#"{"rules": [{"path": "a.b"}]}"#)
            .starts_with("bad configuration at rules[0].path: ")
    );
    assert!(refusal(r#"{"rules": [{"path": "$.a[x]"}]}"#).contains("rules[0].path"));
    assert!(
        refusal(r#"{"rules": [{"key": "a"}, {"regex": "("}]}"#)
            .starts_with("bad configuration at rules[1].regex: ")
    );
    assert_eq!(
        refusal(r#"{"rules": [{"regex": "a*"}]}"#),
        "bad configuration at rules[0].regex: matches the empty string"
    );
    assert!(
        refusal(r#"{"rules": [{"detect": "card", "action": "remove"}]}"#)
            .contains("rules[0].action")
    );
    assert!(refusal(r#"{"rules": [{"key": "a", "keep_last": 2}]}"#).contains("rules[0].keep_last"));
    assert!(refusal(r#"{"rules": [{"detect": "iban"}]}"#).contains("rules[0].detect"));
    assert!(
        refusal(r#"{"rules": [{"key": "a"}], "max_body_bytes": 0}"#).contains("max_body_bytes")
    );
    assert!(refusal(r#"{"rules": [{"key": "a"}], "oversize": "truncate"}"#).contains("oversize"));
    assert!(
        refusal(r#"{"rules": [{"key": "a"}], "request": false, "response": false}"#)
            .contains("at request")
    );
}

fn json_request(filter: &mut JsonMaskFilter, extra: &[(&str, &str)]) -> HeaderList {
    let mut headers = HeaderList::from([(":method", "POST"), (":path", "/")]);
    for (n, v) in extra {
        headers.add(n, v);
    }
    let mut req = Request::new(&mut headers);
    filter.on_request_headers(&mut req, false);
    assert!(req.local_reply().is_none());
    headers
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn request_content_length_is_removed_only_when_the_body_may_change() {
    let c = config(r#"{"rules": [{"key": "password"}], "max_body_bytes": 32}"#);
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    let h = json_request(&mut f, &[JSON, ("content-length", "20")]);
    assert!(h.get_all("content-length").is_empty());
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    let h = json_request(
        &mut f,
        &[("content-type", "text/plain"), ("content-length", "20")],
    );
    assert_eq!(h.get_all("content-length"), vec!["20"]);
    assert_eq!(
        body::feed_request(&mut f, &[br#"{"password": 1}"#]),
        Outcome::Forwarded(br#"{"password": 1}"#.to_vec())
    );
    // Announced above the limit: passes, length kept.
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    let h = json_request(&mut f, &[JSON, ("content-length", "33")]);
    assert_eq!(h.get_all("content-length"), vec!["33"]);
    // Compressed JSON is not read.
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    let h = json_request(
        &mut f,
        &[JSON, ("content-encoding", "gzip"), ("content-length", "5")],
    );
    assert_eq!(h.get_all("content-length"), vec!["5"]);
}

#[test]
fn oversize_request_passes_unchanged_or_is_refused() {
    let doc = br#"{"password": "0123456789abcdef0123456789"}"#;
    let pass = config(r#"{"rules": [{"key": "password"}], "max_body_bytes": 16}"#);
    let mut f = JsonMaskFilter::new(pass);
    json_request(&mut f, &[JSON]);
    let chunks: Vec<&[u8]> = doc.chunks(3).collect();
    assert_eq!(
        body::feed_request(&mut f, &chunks),
        Outcome::Forwarded(doc.to_vec())
    );

    let refuse =
        config(r#"{"rules": [{"key": "password"}], "max_body_bytes": 16, "oversize": "refuse"}"#);
    let mut f = JsonMaskFilter::new(Rc::clone(&refuse));
    json_request(&mut f, &[JSON]);
    assert_eq!(body::feed_request(&mut f, &chunks), Outcome::Answered(413));
    // Announced: refused at the headers, with a problem document.
    let mut f = JsonMaskFilter::new(refuse);
    let mut headers = HeaderList::from([(":method", "POST"), JSON, ("content-length", "17")]);
    let mut req = Request::new(&mut headers);
    f.on_request_headers(&mut req, false);
    let reply = req.take_local_reply();
    assert_eq!(reply.as_ref().map(|r| r.status), Some(413));
    let body = reply.map(|r| r.body).unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(parsed["status"], 413);
    // Envoy hands the filter its own reply as the response: it goes out as it is.
    let length = body.len().to_string();
    let (_, refused) = json_response(
        &mut f,
        &[
            ("content-type", "application/problem+json"),
            ("content-length", &length),
        ],
    );
    assert_eq!(refused, None);

    // Exactly the limit is inspected.
    let exact = config(r#"{"rules": [{"key": "p"}], "max_body_bytes": 8}"#);
    let mut f = JsonMaskFilter::new(exact);
    json_request(&mut f, &[JSON]);
    assert_eq!(
        body::feed_request(&mut f, &[b"{\"p\"", b":1} "]),
        Outcome::Forwarded(br#"{"p":"[REDACTED]"}"#.to_vec())
    );
}

/// Plays the host for response bodies: chunks in, what the client gets out (or the status of
/// a local reply).
fn feed_response(filter: &mut JsonMaskFilter, chunks: &[&[u8]]) -> Result<Vec<u8>, u16> {
    let mut forwarded = Vec::new();
    let mut buffer = Vec::new();
    let count = chunks.len().max(1);
    for i in 0..count {
        buffer.extend_from_slice(chunks.get(i).copied().unwrap_or_default());
        let mut body = Body::new(&mut buffer);
        let action = filter.on_response_body(&mut body, i + 1 == count);
        if let Some(reply) = body.take_local_reply() {
            return Err(reply.status);
        }
        if action == Action::Continue {
            forwarded.append(&mut buffer);
        }
    }
    Ok(forwarded)
}

fn json_response(filter: &mut JsonMaskFilter, extra: &[(&str, &str)]) -> (HeaderList, Option<u16>) {
    let mut headers = HeaderList::from([(":status", "200")]);
    for (n, v) in extra {
        headers.add(n, v);
    }
    let mut resp = Response::new(&mut headers);
    filter.on_response_headers(&mut resp, false);
    let status = resp.take_local_reply().map(|r| r.status);
    (headers, status)
}

#[test]
fn responses_are_buffered_masked_and_limited() {
    let c =
        config(r#"{"rules": [{"detect": "email"}], "max_body_bytes": 64, "oversize": "refuse"}"#);
    let doc = br#"{"to": ["ada@example.com", "bob@example.org"]}"#;
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    let (h, refused) = json_response(
        &mut f,
        &[
            ("content-type", "application/hal+json"),
            ("content-length", "47"),
        ],
    );
    assert!(refused.is_none() && h.get_all("content-length").is_empty());
    let chunks: Vec<&[u8]> = doc.chunks(1).collect();
    assert_eq!(
        feed_response(&mut f, &chunks),
        Ok(br#"{"to":["[REDACTED]","[REDACTED]"]}"#.to_vec())
    );
    // Announced too large: 502 at the headers; discovered in the body: refused there.
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    assert_eq!(
        json_response(&mut f, &[JSON, ("content-length", "65")]).1,
        Some(502)
    );
    let mut f = JsonMaskFilter::new(Rc::clone(&c));
    json_response(&mut f, &[JSON]);
    let big = [&b"["[..], &[b' '; 70][..], b"]"];
    assert_eq!(feed_response(&mut f, &big), Err(502));
    // Pass: the body goes on as it came.
    let pass = config(r#"{"rules": [{"detect": "email"}], "max_body_bytes": 64}"#);
    let mut f = JsonMaskFilter::new(pass);
    json_response(&mut f, &[JSON]);
    assert_eq!(feed_response(&mut f, &big), Ok(big.concat()));
    // HEAD-like responses (no body): content-length stays.
    let mut f = JsonMaskFilter::new(c);
    let mut headers = HeaderList::from([(":status", "200"), JSON, ("content-length", "47")]);
    f.on_response_headers(&mut Response::new(&mut headers), true);
    assert_eq!(headers.get_all("content-length"), vec!["47"]);
}

/// A small deterministic generator (xorshift), so failures replay from the seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// A Luhn-valid card number of `len` digits.
fn card(g: &mut Gen, len: usize) -> String {
    let mut digits: Vec<u8> = (0..len - 1).map(|_| b'0' + g.below(10) as u8).collect();
    digits[0] = b'4' + g.below(2) as u8;
    for check in b'0'..=b'9' {
        digits.push(check);
        if luhn(&digits) {
            break;
        }
        digits.pop();
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// A secret of one of the configured kinds, as it appears in a document.
fn secret(g: &mut Gen, kinds: usize) -> (String, String) {
    match g.below(kinds) {
        0 => {
            let len = 13 + g.below(7);
            let number = card(g, len);
            let sep = g.pick(&["", " ", "-"]);
            let shown: Vec<String> = number
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            (shown.join(sep), number)
        }
        1 => {
            let e = format!(
                "{}{}@{}.{}",
                g.pick(&["ada", "bob.smith", "x_y+tag", "Z9"]),
                g.below(1000),
                g.pick(&["example", "mail.example", "a-b"]),
                g.pick(&["com", "org", "io"])
            );
            (e.clone(), e)
        }
        2 => {
            let id = format!("ID-{:06}", g.below(1_000_000));
            (id.clone(), id)
        }
        _ => {
            let s = format!("pw{}", g.next() % 1_000_000_007);
            (s.clone(), s)
        }
    }
}

const KEYS: &[&str] = &[
    "a",
    "name",
    "list",
    "é",
    "with \"quote\"",
    "n",
    "password",
    "x",
];

/// An arbitrary JSON value; `secrets` collects what must not survive.
fn value(g: &mut Gen, depth: usize, secrets: &mut Vec<String>) -> String {
    let kind = if depth > 4 { g.below(5) } else { g.below(8) };
    match kind {
        0 => g
            .pick(&["0", "-1", "1.5e3", "12345678901234567890", "0.0001", "-0"])
            .to_string(),
        1 => g.pick(&["true", "false", "null"]).to_string(),
        2 => {
            let plain = g.pick(&[
                "",
                "plain",
                "tab\\tand\\n",
                "\\u00e9t\\u00e9",
                "\\ud83d\\ude00",
                "1234 5678",
            ]);
            format!("\"{plain}\"")
        }
        3 | 4 => {
            // A string carrying a secret a detector finds, among other text.
            let (shown, raw) = secret(g, 3);
            secrets.push(raw);
            let before = g.pick(&["", "card: ", "to <", "(", "id "]);
            let after = g.pick(&["", ".", ">", ", thanks", " )"]);
            format!("\"{before}{shown}{after}\"")
        }
        5 => {
            // The key rule: whatever is under `password` goes.
            let (shown, raw) = secret(g, 4);
            secrets.push(raw);
            let inner = value(g, depth + 1, secrets);
            format!("{{\"password\": \"{shown}\", \"other\": {inner}}}")
        }
        6 => {
            let n = g.below(4);
            let items: Vec<String> = (0..n).map(|_| value(g, depth + 1, secrets)).collect();
            format!("[{}]", items.join(", "))
        }
        _ => {
            let n = g.below(4);
            let members: Vec<String> = (0..n)
                .map(|_| {
                    let key = g.pick(KEYS).replace('"', "\\\"");
                    format!("\"{key}\" :{}", value(g, depth + 1, secrets))
                })
                .collect();
            format!("{{ {} }}", members.join(",\n"))
        }
    }
}

fn chunking<'a>(g: &mut Gen, doc: &'a [u8]) -> Vec<&'a [u8]> {
    match g.below(3) {
        0 => vec![doc],
        1 => doc.chunks(1).collect(),
        _ => {
            let mut out = Vec::new();
            let mut rest = doc;
            while !rest.is_empty() {
                let n = (1 + g.below(17)).min(rest.len());
                out.push(&rest[..n]);
                rest = &rest[n..];
            }
            out
        }
    }
}

/// Every string and number text in a parsed document.
fn texts(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| texts(i, out)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            texts(v, out);
        }),
        _ => {}
    }
}

#[test]
fn property_output_is_json_without_secrets_whatever_the_chunking() {
    let c = config(
        r#"{"rules": [
          {"key": "password"},
          {"detect": "card", "action": "mask"},
          {"detect": "email", "action": "mask", "keep_last": 3},
          {"regex": "ID-[0-9]{6}"}
        ], "max_body_bytes": 1048576}"#,
    );
    for seed in 1..=1500u64 {
        let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut secrets = Vec::new();
        let doc = value(&mut g, 0, &mut secrets);
        assert!(
            serde_json::from_str::<serde_json::Value>(&doc).is_ok(),
            "seed {seed}: generator made bad JSON {doc}"
        );
        let chunks = chunking(&mut g, doc.as_bytes());
        let response = g.below(2) == 1;
        let mut f = JsonMaskFilter::new(Rc::clone(&c));
        let out = if response {
            json_response(&mut f, &[JSON]);
            feed_response(&mut f, &chunks).unwrap_or_default()
        } else {
            json_request(&mut f, &[JSON]);
            match body::feed_request(&mut f, &chunks) {
                Outcome::Forwarded(out) => out,
                other => panic!("seed {seed}: {other:?}"),
            }
        };
        let parsed: serde_json::Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => panic!(
                "seed {seed}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            ),
        };
        // The same document whatever the chunking.
        let whole = match rewrite(doc.as_bytes(), c.rules()) {
            Rewrite::Masked(m, _) => m,
            Rewrite::Unchanged => doc.clone().into_bytes(),
            other => panic!("seed {seed}: {other:?}"),
        };
        assert_eq!(out, whole, "seed {seed}");
        let mut found = Vec::new();
        texts(&parsed, &mut found);
        let raw = String::from_utf8_lossy(&out);
        for s in &secrets {
            let digits_only: String = s.chars().filter(char::is_ascii_digit).collect();
            for t in found.iter().chain(std::iter::once(&raw.to_string())) {
                let t_digits: String = t.chars().filter(char::is_ascii_digit).collect();
                assert!(
                    !t.contains(s.as_str())
                        && (s.len() < 13
                            || !t_digits.contains(&digits_only)
                            || !s.chars().all(|c| c.is_ascii_digit())),
                    "seed {seed}: secret {s} survived in {t}\ninput: {doc}"
                );
            }
        }
    }
}
