//! Tests of the traffic tools: inspection counts, selection, anonymization
//! (nothing secret survives, tokens are keyed and stable) and HAR output that
//! the HAR reader reads back.

use std::path::Path;

use super::super::{Exchange, har, load, tap};
use super::{Anonymizer, Inspection, OutputFormat, Selection, har_value, is_secret_name, write};

fn example() -> Vec<Exchange> {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traffic/example.yaml"))
        .expect("example loads")
        .exchanges
}

fn envoy_tap() -> Vec<Exchange> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tap/buffered_bytes.json");
    tap::load(&p, super::super::Leniency::Strict)
        .expect("tap loads")
        .exchanges
}

#[test]
fn inspection_counts_methods_statuses_hosts_and_sizes() {
    let mut i = Inspection::default();
    for e in example().iter().chain(envoy_tap().iter()) {
        i.add(e);
    }
    assert_eq!(i.exchanges, 4);
    assert_eq!(i.methods.get("POST"), Some(&2));
    assert_eq!(i.methods.get("GET"), Some(&2));
    assert_eq!(i.statuses.get("200"), Some(&4));
    assert_eq!(i.hosts.get("api.example.com"), Some(&2));
    assert_eq!(i.hosts.get("127.0.0.1:18000"), Some(&1));
    assert_eq!(i.request_bodies.count, 2);
    assert_eq!(i.request_bodies.total, 47 + 5);
    assert_eq!(i.response_bodies.max, 36);
    assert_eq!((i.with_trailers, i.with_callouts, i.truncated), (1, 1, 0));
    assert_eq!(i.to_json()["statuses"]["200"], 4);
}

#[test]
fn selection_by_host_path_status_and_method() {
    let all = example();
    let pick = |s: &Selection| -> Vec<String> {
        all.iter()
            .filter(|e| s.matches(e))
            .map(|e| e.id.clone())
            .collect()
    };
    let by_host = Selection {
        hosts: vec!["API.example.com".into()],
        ..Default::default()
    };
    assert_eq!(pick(&by_host), ["login", "with-callout"]);
    let wildcard = Selection {
        hosts: vec!["*.example.com".into()],
        ..Default::default()
    };
    assert_eq!(pick(&wildcard).len(), 3);
    let by_path = Selection {
        path_prefixes: vec!["/v1/items".into()],
        ..Default::default()
    };
    assert_eq!(pick(&by_path), ["with-callout"]);
    let by_status = Selection {
        statuses: vec!["2xx".into()],
        methods: vec!["post".into()],
        ..Default::default()
    };
    assert_eq!(pick(&by_status), ["login", "grpc-call"]);
    let none = Selection {
        statuses: vec!["404".into()],
        ..Default::default()
    };
    assert!(pick(&none).is_empty());
    let bad = Selection {
        statuses: vec!["2yy".into()],
        ..Default::default()
    };
    assert!(bad.validate().expect_err("bad").contains("2yy"));
    assert!(by_status.validate().is_ok());
}

/// Every secret in the example and in the Envoy tap, as it appears on the wire.
const SECRETS: [&str; 9] = [
    "k-123456",
    "ann@example.com",
    "hunter2",
    "abc123",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
    "sid=123",
    "secret123",
    "a@b.com",
];

fn all_text(exchanges: &[Exchange]) -> String {
    let mut out = Vec::new();
    write(
        &mut out,
        &super::super::Traffic {
            source: None,
            exchanges: exchanges.to_vec(),
            warnings: vec![],
        },
        OutputFormat::NativeLines,
    )
    .expect("writes");
    String::from_utf8(out).expect("utf8")
}

#[test]
fn hashing_removes_every_secret_and_is_keyed_and_stable() {
    let mut traffic = example();
    traffic.extend(envoy_tap());
    let before = all_text(&traffic);
    for s in SECRETS {
        assert!(before.contains(s), "the fixture holds {s}");
    }
    let mut a = Anonymizer::hashing(b"key one");
    let mut anon = traffic.clone();
    anon.iter_mut().for_each(|e| a.exchange(e));
    let after = all_text(&anon);
    for s in SECRETS {
        assert!(!after.contains(s), "{s} survived:\n{after}");
    }
    assert!(a.replaced() >= SECRETS.len());
    // Shapes and non-secrets are kept.
    let login = &anon[0];
    assert_eq!(
        login.request.headers[0],
        ("content-type".into(), "application/json".into())
    );
    let body: serde_json::Value = serde_json::from_slice(&login.request.body).expect("still JSON");
    let user = body["user"].as_str().expect("string");
    assert!(
        user.starts_with("user-") && user.ends_with("@example.invalid"),
        "{user}"
    );
    let cookie = &login.response.as_ref().expect("resp").headers;
    let sc = cookie
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .expect("set-cookie")
        .1
        .clone();
    assert!(
        sc.starts_with("sid=anon-") && sc.ends_with("; Path=/; HttpOnly"),
        "{sc}"
    );
    let auth = &anon[2].request.headers[0].1;
    assert!(auth.starts_with("Bearer anon-"), "{auth}");
    assert!(
        anon[3].request.path.starts_with("/data.json?api_key=anon-"),
        "{}",
        anon[3].request.path
    );
    // Same key, same tokens; another key, other tokens.
    let mut again = traffic.clone();
    let mut a2 = Anonymizer::hashing(b"key one");
    again.iter_mut().for_each(|e| a2.exchange(e));
    assert_eq!(again, anon);
    let mut other = traffic.clone();
    let mut b = Anonymizer::hashing(b"key two");
    other.iter_mut().for_each(|e| b.exchange(e));
    assert_ne!(other[2].request.headers, anon[2].request.headers);
    // The same secret in two places maps to the same token.
    let a = Anonymizer::hashing(b"k");
    assert_eq!(a.token("x"), a.token("x"));
    assert_ne!(a.token("x"), a.token("y"));
}

#[test]
fn removing_drops_secret_headers_and_fixes_content_length() {
    let mut traffic = envoy_tap();
    let mut a = Anonymizer::removing();
    traffic.iter_mut().for_each(|e| a.exchange(e));
    let e = &traffic[0];
    assert!(e.request.headers.iter().all(|(k, _)| k != "authorization"));
    assert!(
        e.request
            .headers
            .iter()
            .any(|(k, v)| k == "cookie" && v == "sid=REDACTED")
    );
    let r = e.response.as_ref().expect("resp");
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(body["email"], "REDACTED");
    let cl = r
        .headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .expect("cl");
    assert_eq!(cl.1, r.body.len().to_string());
}

#[test]
fn free_text_jwts_and_emails_are_found() {
    let mut a = Anonymizer::hashing(b"k");
    let t = a.text("mail bob.smith+x@mail.example.org, not an@email and 1.2.3 but eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.sig");
    assert!(!t.contains("bob.smith"), "{t}");
    assert!(t.contains("not an@email and 1.2.3 but anon-"), "{t}");
    assert!(
        is_secret_name("X-Api-Key") && is_secret_name("access_token") && !is_secret_name("accept")
    );
}

#[test]
fn har_output_reads_back_as_the_same_requests() {
    let mut traffic = example();
    traffic.extend(envoy_tap());
    let har_text = serde_json::to_vec(&har_value(&traffic)).expect("json");
    let back = har::parse("out.har", &har_text).expect("HAR reader reads our HAR");
    assert_eq!(back.exchanges.len(), traffic.len());
    for (a, b) in traffic.iter().zip(&back.exchanges) {
        assert_eq!(a.request, b.request, "{}", a.id);
        let (ra, rb) = (
            a.response.as_ref().expect("r"),
            b.response.as_ref().expect("r"),
        );
        assert_eq!((ra.status, &ra.body), (rb.status, &rb.body), "{}", a.id);
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn exchange(
    path: &str,
    req: &[(&str, &str)],
    body: &str,
    resp: &[(&str, &str)],
    resp_body: &str,
) -> Exchange {
    Exchange {
        id: "planted".into(),
        request: super::super::HttpRequest {
            method: "POST".into(),
            scheme: "https".into(),
            authority: "shop.example.com".into(),
            path: path.into(),
            headers: h(req),
            body: body.as_bytes().to_vec(),
        },
        response: Some(super::super::HttpResponse {
            status: 302,
            headers: h(resp),
            body: resp_body.as_bytes().to_vec(),
        }),
        details: Default::default(),
    }
}

/// A JWT (`{"alg":"HS256","typ":"JWT"}`, `{"sub":"15"}`) whose signature is `sig`.
fn jwt(sig: &str) -> String {
    format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxNSJ9.{sig}")
}

/// Secrets in every place a recording carries them, each marked so that a
/// survivor is found as a substring, next to data that must stay as it was.
fn planted() -> (Vec<Exchange>, Vec<String>, Vec<&'static str>) {
    let jwt_header = jwt("SIGinHEADER15");
    let jwt_fragment = jwt("SIGinFRAGMENT23");
    let secrets: Vec<String> = [
        "REFQUERYTOKEN01",
        "OAUTHCODE02",
        "FRAGTOKEN03",
        "JSESSION04",
        "CLAPIKEY05",
        "LINKKEY06",
        "REFRESHSESS07",
        "USERINFOPASS08",
        "QUERYPASS09",
        "COOKIESID10",
        "SETCOOKIE11",
        "AUTHBEARER12",
        "UFJPWFlBVVRIMTM",
        "XAPIKEY14",
        "SIGinHEADER15",
        "carol@example.org",
        "NESTEDCODE17",
        "FORMPASS18",
        "JSONSECRET19",
        "TEXTBODY20",
        "RESPREFRESH21",
        "dave%40example.net",
        "SIGinFRAGMENT23",
        "AMZCRED24",
        "AMZSIG25",
        "PHPSESS26",
        "SAMLRESP27",
        "REFUSERPASS28",
        "REFRESH29",
        "MATRIXTOKEN30",
        "ORIGINPASS31",
        "FORMNESTED32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let first = exchange(
        "/shop;jsessionid=JSESSION04/items;v=2;auth_token=MATRIXTOKEN30?item=42&password=QUERYPASS09&q=shoes&lang=en",
        &[
            (
                "referer",
                "https://bob:REFUSERPASS28@shop.example.com/cart?access_token=REFQUERYTOKEN01&page=2",
            ),
            ("origin", "https://admin:ORIGINPASS31@shop.example.com"),
            ("cookie", "sid=COOKIESID10; theme=dark"),
            ("authorization", "Bearer AUTHBEARER12"),
            ("proxy-authorization", "Basic UFJPWFlBVVRIMTM="),
            ("x-api-key", "XAPIKEY14"),
            ("x-debug", &format!("token was {jwt_header} then")),
            ("x-user", "carol@example.org"),
            (
                "x-original-url",
                "https://ops:USERINFOPASS08@internal.example.com/login?PHPSESSID=PHPSESS26&SAMLResponse=SAMLRESP27",
            ),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
            ),
            (
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            ),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "username=alice&password=FORMPASS18&next=%2Fcb%3Fcode%3DFORMNESTED32&remember=yes",
        &[
            (
                "location",
                "https://app.example.com/cb?code=OAUTHCODE02&state=keepstate",
            ),
            (
                "content-location",
                "/orders/7?api_key=CLAPIKEY05&format=json",
            ),
            (
                "link",
                "<https://api.example.com/items?page=3&apikey=LINKKEY06>; rel=\"next\"",
            ),
            (
                "refresh",
                "0; url=https://app.example.com/login?session=REFRESHSESS07",
            ),
            ("set-cookie", "JSESSIONID=SETCOOKIE11; Path=/; Secure"),
            ("content-type", "text/plain; charset=utf-8"),
        ],
        "callback https://x.example.com/cb?id_token=TEXTBODY20 done",
    );
    let second = exchange(
        "/users/dave%40example.net/profile?next=%2Fcallback%3Fcode%3DNESTEDCODE17%26x%3D1&X-Amz-Credential=AMZCRED24%2F20240101&X-Amz-Signature=AMZSIG25",
        &[("content-type", "application/json")],
        r#"{"client_secret":"JSONSECRET19","name":"widget"}"#,
        &[
            (
                "location",
                "https://app.example.com/cb#access_token=FRAGTOKEN03&token_type=bearer&expires_in=3600",
            ),
            (
                "content-location",
                &format!("https://app.example.com/done#{jwt_fragment}"),
            ),
            ("refresh", "5;URL=/x?token=REFRESH29"),
            ("content-type", "application/json"),
        ],
        r#"{"refresh_token":"RESPREFRESH21","scope":"read"}"#,
    );
    let kept = vec![
        "item=42",
        "q=shoes&lang=en",
        "page=2",
        "state=keepstate",
        "expires_in=3600",
        "format=json",
        "rel=\\\"next\\\"",
        "theme=",
        "username=alice",
        "remember=yes",
        "widget",
        "\\\"scope\\\":\\\"read\\\"",
        "shop.example.com",
        "/items;v=2;",
        "/orders/7?",
        "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "text/plain; charset=utf-8",
        "Path=/; Secure",
        "callback https://x.example.com/cb?id_token=",
        "/users/",
        "/profile?next=",
    ];
    (vec![first, second], secrets, kept)
}

#[test]
fn every_planted_secret_form_is_gone_and_the_rest_stays() {
    let (traffic, secrets, kept) = planted();
    assert!(secrets.len() >= 20);
    let before = all_text(&traffic);
    for s in &secrets {
        assert!(before.contains(s.as_str()), "the fixture holds {s}");
    }
    for mut a in [Anonymizer::hashing(b"k"), Anonymizer::removing()] {
        let mut anon = traffic.clone();
        anon.iter_mut().for_each(|e| a.exchange(e));
        let after = all_text(&anon);
        let survivors: Vec<&String> = secrets
            .iter()
            .filter(|s| after.contains(s.as_str()))
            .collect();
        assert!(
            survivors.is_empty(),
            "{survivors:?} survived ({a:?}):\n{after}"
        );
        for k in &kept {
            assert!(after.contains(k), "{k} was lost ({a:?}):\n{after}");
        }
    }
    // The same secret gives the same token wherever it is.
    let mut a = Anonymizer::hashing(b"k");
    let mut anon = traffic.clone();
    anon.iter_mut().for_each(|e| a.exchange(e));
    let location = &anon[0].response.as_ref().expect("response").headers[0].1;
    assert_eq!(
        location,
        &format!(
            "https://app.example.com/cb?code={}&state=keepstate",
            a.token("OAUTHCODE02")
        )
    );
    assert!(
        anon[0]
            .request
            .path
            .starts_with(&format!("/shop;jsessionid={}/", a.token("JSESSION04"))),
        "{}",
        anon[0].request.path
    );
}
