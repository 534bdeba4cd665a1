//! Native tests of the filter logic: directive parsing, freshness and age, storability, keys and
//! `Vary`, the index's eviction (with a property test over random operation sequences), and
//! whole exchanges through the filter over the SDK's in-memory shared data and clock.

// Test code: a failed expectation panics with the case that failed.
#![allow(clippy::panic)]

use std::rc::Rc;

use tollgate_sdk::shared::{MemoryShared, SharedStore};
use tollgate_sdk::{Action, Body, HeaderList, HttpFilter, LocalReply, Request, Response, env};

use crate::policy::{
    CacheControl, Exchange, Freshness, NotStored, current_age, freshness_lifetime, http_date,
    if_none_match, initial_age, parse_http_date, split_list, storable,
};
use crate::store::{Cache, Entry, Index, Meta, Slot, full_key, hash};
use crate::{KeyConfig, QueryMode, ResponseCacheConfig, ResponseCacheFilter, key_path};

fn config(json: &str) -> Rc<ResponseCacheConfig> {
    match tollgate_sdk::config::parse::<ResponseCacheConfig>(json.as_bytes()) {
        Ok(c) => Rc::new(c),
        Err(e) => panic!("{e}"),
    }
}

fn refusal(json: &str) -> String {
    match tollgate_sdk::config::parse::<ResponseCacheConfig>(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- directives and freshness

#[test]
fn cache_control_directives_are_parsed_case_insensitively_with_quotes_and_lists() {
    let cc = CacheControl::parse([
        "Public, MAX-AGE=60",
        "s-maxage=\"120\", no-cache=\"set-cookie, x\"",
    ]);
    assert_eq!(cc.max_age, Some(60));
    assert_eq!(cc.s_maxage, Some(120));
    assert!(cc.public && cc.no_cache && !cc.no_store && !cc.private);
    // The first value of a repeated directive wins; a bad number means 0 (stale).
    let cc = CacheControl::parse(["max-age=10, max-age=99"]);
    assert_eq!(cc.max_age, Some(10));
    assert_eq!(CacheControl::parse(["max-age=ten"]).max_age, Some(0));
    assert_eq!(CacheControl::parse(["max-age=-1"]).max_age, Some(0));
    // Huge values are capped at 2^31.
    assert_eq!(
        CacheControl::parse(["max-age=99999999999999999999999"]).max_age,
        Some(1 << 31)
    );
    let cc = CacheControl::parse(["private=\"a,b\", no-store, must-revalidate, only-if-cached"]);
    assert!(cc.private && cc.no_store && cc.must_revalidate && cc.only_if_cached);
    assert_eq!(split_list(" a ,, \"b,c\" ,d"), vec!["a", "\"b,c\"", "d"]);
}

#[test]
fn s_maxage_wins_then_max_age_then_expires_then_the_route_default() {
    let date = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(date, Some(784_111_777));
    let cc = |v| CacheControl::parse([v]);
    let expires = Some("Sun, 06 Nov 1994 08:59:37 GMT");
    assert_eq!(
        freshness_lifetime(&cc("max-age=5, s-maxage=7"), expires, date, 200, Some(9)),
        Freshness::Explicit(7)
    );
    assert_eq!(
        freshness_lifetime(&cc("max-age=5"), expires, date, 200, Some(9)),
        Freshness::Explicit(5)
    );
    assert_eq!(
        freshness_lifetime(&cc("public"), expires, date, 200, Some(9)),
        Freshness::Explicit(600)
    );
    // An Expires that does not parse (or `0`) is already expired.
    assert_eq!(
        freshness_lifetime(&cc("public"), Some("0"), date, 200, Some(9)),
        Freshness::Explicit(0)
    );
    assert_eq!(
        freshness_lifetime(&cc(""), None, date, 200, Some(9)),
        Freshness::Default(9)
    );
    // The default applies to heuristically cacheable statuses only.
    assert_eq!(
        freshness_lifetime(&cc(""), None, date, 302, Some(9)),
        Freshness::None
    );
    assert_eq!(
        freshness_lifetime(&cc(""), None, date, 200, None),
        Freshness::None
    );
}

#[test]
fn http_dates_in_the_three_forms_and_back() {
    let t = 784_111_777;
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
    assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(t));
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(parse_http_date("yesterday"), None);
    assert_eq!(parse_http_date("Sun, 32 Nov 1994 08:49:37 GMT"), None);
    // Round trip over many instants (leap years, month ends).
    let mut x: u64 = 0x9e37_79b9;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let secs = x % 8_000_000_000;
        assert_eq!(parse_http_date(&http_date(secs)), Some(secs), "{secs}");
    }
}

#[test]
fn age_follows_rfc_9111_4_2_3() {
    // Date 10 s before arrival, Age header 3, 2 s of delay: apparent 10 wins over 3 + 2.
    assert_eq!(initial_age(Some(3), Some(90), 98, 100), 10);
    // An Age larger than the apparent age wins.
    assert_eq!(initial_age(Some(30), Some(95), 100, 100), 30);
    // A Date in the future counts as 0.
    assert_eq!(initial_age(None, Some(200), 100, 100), 0);
    assert_eq!(current_age(10, 100, 125), 35);
    assert_eq!(current_age(10, 100, 50), 10);
}

#[test]
fn if_none_match_uses_the_weak_comparison() {
    assert!(if_none_match("\"a\"", "\"a\""));
    assert!(if_none_match("W/\"a\"", "\"a\""));
    assert!(if_none_match("\"x\", W/\"a\"", "W/\"a\""));
    assert!(if_none_match("*", "\"a\""));
    assert!(!if_none_match("\"b\"", "\"a\""));
}

fn exchange<'a>(status: u16, cc: &'a CacheControl, vary: &'a [String]) -> Exchange<'a> {
    Exchange {
        status,
        response_cc: cc,
        request_no_store: false,
        vary,
        set_cookie: false,
        store_set_cookie: false,
        authorization: false,
        freshness: Freshness::Explicit(60),
        etag: false,
    }
}

#[test]
fn what_a_shared_cache_stores() {
    let cc = |v| CacheControl::parse([v]);
    let none: Vec<String> = Vec::new();
    let plain = cc("max-age=60");
    assert_eq!(storable(&exchange(200, &plain, &none)), Ok(()));
    for status in [
        200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501,
    ] {
        assert_eq!(
            storable(&exchange(status, &plain, &none)),
            Ok(()),
            "{status}"
        );
    }
    for status in [201, 206, 304, 400, 403, 500, 502, 503] {
        assert_eq!(
            storable(&exchange(status, &plain, &none)),
            Err(NotStored::Status),
            "{status}"
        );
    }
    assert_eq!(
        storable(&exchange(200, &cc("no-store, max-age=60"), &none)),
        Err(NotStored::NoStore)
    );
    assert_eq!(
        storable(&exchange(200, &cc("private, max-age=60"), &none)),
        Err(NotStored::Private)
    );
    assert_eq!(
        storable(&exchange(200, &cc("no-cache, max-age=60"), &none)),
        Ok(())
    );
    let star = vec!["*".to_string()];
    assert_eq!(
        storable(&exchange(200, &plain, &star)),
        Err(NotStored::VaryStar)
    );
    let mut x = exchange(200, &plain, &none);
    x.set_cookie = true;
    assert_eq!(storable(&x), Err(NotStored::SetCookie));
    x.store_set_cookie = true;
    assert_eq!(storable(&x), Ok(()));
    let mut x = exchange(200, &plain, &none);
    x.request_no_store = true;
    assert_eq!(storable(&x), Err(NotStored::NoStore));
    // Authorization: only with public, s-maxage or must-revalidate.
    let mut x = exchange(200, &plain, &none);
    x.authorization = true;
    assert_eq!(storable(&x), Err(NotStored::Authorization));
    let public = cc("public, max-age=60");
    let mut x = exchange(200, &public, &none);
    x.authorization = true;
    assert_eq!(storable(&x), Ok(()));
    // No freshness: only with an ETag (revalidated each time).
    let bare = cc("");
    let mut x = exchange(200, &bare, &none);
    x.freshness = Freshness::None;
    assert_eq!(storable(&x), Err(NotStored::NoFreshness));
    x.etag = true;
    assert_eq!(storable(&x), Ok(()));
    // 302 without explicit freshness is never stored.
    let mut x = exchange(302, &bare, &none);
    x.freshness = Freshness::Default(60);
    assert_eq!(storable(&x), Err(NotStored::Status));
}

// ---------------------------------------------------------------- keys

fn key(query: QueryMode, params: &[&str]) -> KeyConfig {
    KeyConfig {
        query,
        query_params: params.iter().map(|s| s.to_string()).collect(),
        ..KeyConfig::default()
    }
}

#[test]
fn query_modes_shape_the_key() {
    let path = "/a?z=1&b=2&utm=x&a=3#frag";
    assert_eq!(
        key_path(&key(QueryMode::All, &[]), path),
        "/a?z=1&b=2&utm=x&a=3"
    );
    assert_eq!(key_path(&key(QueryMode::None, &[]), path), "/a");
    assert_eq!(
        key_path(&key(QueryMode::Only, &["z", "a"]), path),
        "/a?a=3&z=1"
    );
    assert_eq!(
        key_path(&key(QueryMode::Except, &["utm"]), path),
        "/a?a=3&b=2&z=1"
    );
    assert_eq!(key_path(&key(QueryMode::Only, &["q"]), path), "/a");
}

#[test]
fn vary_values_make_the_secondary_key() {
    let vary = vec!["accept-encoding".to_string(), "x-lang".to_string()];
    let gzip = full_key("P", &vary, &|n| {
        (n == "accept-encoding").then(|| "gzip, br".to_string())
    });
    let gzip2 = full_key("P", &vary, &|n| {
        (n == "accept-encoding").then(|| "gzip,br".to_string())
    });
    let br = full_key("P", &vary, &|n| {
        (n == "accept-encoding").then(|| "br".to_string())
    });
    let empty = full_key("P", &vary, &|n| (n == "accept-encoding").then(String::new));
    let absent = full_key("P", &vary, &|_| None);
    assert_eq!(gzip, gzip2);
    assert_ne!(gzip, br);
    assert_ne!(empty, absent);
    assert_eq!(full_key("P", &[], &|_| None), "P");
}

// ---------------------------------------------------------------- configuration

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    assert!(refusal(r#"{"max_entries": 0}"#).contains("max_entries"));
    assert!(refusal(r#"{"max_entries": 10001}"#).contains("max_entries"));
    assert!(refusal(r#"{"max_body_bytes": 0}"#).contains("max_body_bytes"));
    assert!(refusal(r#"{"max_body_bytes": 99999999}"#).contains("max_body_bytes"));
    assert!(refusal(r#"{"namespace": ""}"#).contains("namespace"));
    assert!(refusal(r#"{"ttl": 1}"#).contains("ttl"));
    let e = refusal(r#"{"policy": {"default": {"default_ttl_s": 60, "max_ttl_s": 10}}}"#);
    assert!(e.contains("policy.default.max_ttl_s"), "{e}");
    let e = refusal(
        r#"{"policy": {"routes": [{"match": {"path_prefix": "/a"}, "config": {"key": {"query": "only"}}}]}}"#,
    );
    assert!(
        e.contains("policy.routes[0].config.key.query_params"),
        "{e}"
    );
    let e = refusal(r#"{"policy": {"default": {"key": {"query_params": ["a"]}}}}"#);
    assert!(e.contains("key.query_params"), "{e}");
    let e = refusal(r#"{"policy": {"default": {"key": {"headers": [":path"]}}}}"#);
    assert!(e.contains("key.headers[0]"), "{e}");
    let e = refusal(r#"{"policy": {"default": {"key": {"query": "some"}}}}"#);
    assert!(e.contains("query"), "{e}");
    config("{}");
}

// ---------------------------------------------------------------- the index and eviction

fn slot(k: u64, s: u64, e: u64) -> Option<Slot> {
    Some(Slot {
        p: k,
        k,
        v: Vec::new(),
        s,
        e,
    })
}

#[test]
fn placement_reuses_the_key_then_empty_then_expired_then_oldest() {
    let mut index = Index::default();
    assert_eq!(index.place(7, 3, 100), 0);
    index.put(0, slot(7, 10, 200));
    assert_eq!(index.place(7, 3, 100), 0);
    assert_eq!(index.place(8, 3, 100), 1);
    index.put(1, slot(8, 5, 200));
    index.put(2, slot(9, 20, 90));
    // Full: the expired one (slot 2) goes first...
    assert_eq!(index.place(10, 3, 100), 2);
    // ...and with none expired, the oldest stored (slot 1).
    index.put(2, slot(9, 20, 300));
    assert_eq!(index.place(10, 3, 100), 1);
    index.put(1, None);
    assert_eq!(index.place(10, 3, 100), 1);
}

#[test]
fn entries_round_trip_and_anything_else_is_no_entry() {
    let entry = Entry {
        meta: Meta {
            key: "k".into(),
            status: 200,
            headers: vec![("etag".into(), "\"1\"".into())],
            response_time: 5,
            initial_age: 1,
            lifetime: 60,
            no_cache: false,
            etag: Some("\"1\"".into()),
        },
        body: vec![0, 1, 2, 255],
    };
    assert_eq!(Entry::decode(entry.encode()), Some(entry.clone()));
    assert_eq!(Entry::decode(Vec::new()), None);
    assert_eq!(Entry::decode(b"RC1\xff\xff\xff\xff{}".to_vec()), None);
    let bytes = entry.encode();
    assert_eq!(Entry::decode(bytes[..10].to_vec()), None);
}

fn entry_for(key: &str, body: &[u8]) -> Entry {
    Entry {
        meta: Meta {
            key: key.into(),
            status: 200,
            headers: Vec::new(),
            response_time: 0,
            initial_age: 0,
            lifetime: 60,
            no_cache: false,
            etag: None,
        },
        body: body.to_vec(),
    }
}

/// Property: whatever the sequence of inserts and invalidations (random keys, times, lifetimes),
/// the index never holds more than `max` entries nor a key twice, the keys written are at most
/// `max + 1`, every key the index lists is read back with its own body, and an insert is always
/// readable right after it.
#[test]
fn property_the_cache_stays_bounded_and_consistent() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..40 {
        let max = 1 + (next() % 8) as usize;
        let cache = Cache::new("t", max);
        let mut store = Counting::default();
        let mut now = 1_000;
        for _ in 0..200 {
            now += next() % 5;
            let key = format!("/k{}", next() % 20);
            if next() % 5 == 0 {
                cache.invalidate(&mut store, &key).ok();
                assert!(
                    cache
                        .lookup(&store, &key, &|_| None)
                        .ok()
                        .flatten()
                        .is_none()
                );
                continue;
            }
            let body = format!("{key}@{now}").into_bytes();
            let expires = now + next() % 10;
            if cache
                .insert(&mut store, &key, &[], &entry_for(&key, &body), now, expires)
                .is_err()
            {
                panic!("round {round}: insert failed");
            }
            let got = cache.lookup(&store, &key, &|_| None).ok().flatten();
            assert_eq!(got.map(|(e, _)| e.body), Some(body), "round {round}: {key}");
            let (index, _) = cache.index(&store).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                index.slots.len() <= max && index.len() <= max,
                "round {round}"
            );
            let mut keys: Vec<u64> = index.slots.iter().flatten().map(|s| s.k).collect();
            let n = keys.len();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n, "round {round}: a key twice");
            for s in index.slots.iter().flatten() {
                let found = (0..20)
                    .map(|i| format!("/k{i}"))
                    .find(|k| hash(k) == s.k)
                    .unwrap_or_else(|| panic!("unknown key"));
                let got = cache.lookup(&store, &found, &|_| None).ok().flatten();
                assert!(
                    got.is_some_and(|(e, _)| e.meta.key == found),
                    "round {round}: {found}"
                );
            }
            assert!(
                store.keys.len() <= max + 1,
                "round {round}: {} keys",
                store.keys.len()
            );
        }
    }
}

/// A store that remembers the keys written.
#[derive(Default)]
struct Counting {
    inner: MemoryShared,
    keys: std::collections::BTreeSet<String>,
}

impl SharedStore for Counting {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, tollgate_sdk::shared::SharedError> {
        self.inner.get(key)
    }
    fn set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), tollgate_sdk::shared::SharedError> {
        self.keys.insert(key.to_string());
        self.inner.set(key, value, cas)
    }
}

#[test]
fn a_stale_index_write_is_retried_and_both_writers_land() {
    // Two VMs: B writes between A's read and A's write; A's CAS fails, it re-reads, both stay.
    let cache = Cache::new("t", 4);
    let mut store = MemoryShared::new();
    cache
        .insert(&mut store, "/a", &[], &entry_for("/a", b"a"), 1, 100)
        .ok();
    struct Racy<'a> {
        inner: &'a mut MemoryShared,
        once: bool,
    }
    impl SharedStore for Racy<'_> {
        fn get(
            &self,
            key: &str,
        ) -> Result<Option<(Vec<u8>, u32)>, tollgate_sdk::shared::SharedError> {
            self.inner.get(key)
        }
        fn set(
            &mut self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), tollgate_sdk::shared::SharedError> {
            if self.once && key.ends_with("/index") {
                self.once = false;
                Cache::new("t", 4)
                    .insert(self.inner, "/b", &[], &entry_for("/b", b"b"), 2, 100)
                    .ok();
            }
            self.inner.set(key, value, cas)
        }
    }
    let mut racy = Racy {
        inner: &mut store,
        once: true,
    };
    cache
        .insert(&mut racy, "/c", &[], &entry_for("/c", b"c"), 3, 100)
        .ok();
    for k in ["/a", "/b", "/c"] {
        let got = cache.lookup(&store, k, &|_| None).ok().flatten();
        assert_eq!(
            got.map(|(e, _)| e.body),
            Some(k.as_bytes()[1..].to_vec()),
            "{k}"
        );
    }
}

// ---------------------------------------------------------------- whole exchanges

const T0: u64 = 1_700_000_000;

fn get(path: &str, extra: &[(&str, &str)]) -> HeaderList {
    let mut h = HeaderList::from([
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "shop.example.com"),
        (":path", path),
    ]);
    for (n, v) in extra {
        tollgate_sdk::HeaderMap::add(&mut h, n, v);
    }
    h
}

/// What happened to one request.
#[derive(Debug)]
enum Outcome {
    /// Answered by the filter.
    Local(LocalReply),
    /// Went to the upstream (with these request headers); the client got these response
    /// headers.
    Upstream(HeaderList, HeaderList),
}

/// Runs one exchange: `request`, and (if it goes on) the upstream's `status`, `headers` and
/// `chunks` of body.
fn exchange_once(
    config: &Rc<ResponseCacheConfig>,
    mut request: HeaderList,
    response: &[(&str, &str)],
    chunks: &[&[u8]],
) -> Outcome {
    let mut filter = ResponseCacheFilter::new(Rc::clone(config));
    let mut view = Request::new(&mut request);
    assert_eq!(filter.on_request_headers(&mut view, true), Action::Continue);
    if let Some(reply) = view.take_local_reply() {
        return Outcome::Local(reply);
    }
    let mut resp = response.iter().copied().collect::<HeaderList>();
    let mut view = Response::new(&mut resp);
    filter.on_response_headers(&mut view, chunks.is_empty());
    if let Some(reply) = view.take_local_reply() {
        return Outcome::Local(reply);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        let mut buffer = chunk.to_vec();
        let mut body = Body::new(&mut buffer);
        assert_eq!(
            filter.on_response_body(&mut body, i + 1 == chunks.len()),
            Action::Continue
        );
        // Never held: the chunk goes on unchanged.
        assert_eq!(buffer, *chunk);
    }
    Outcome::Upstream(request, resp)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Runs `request` through the filter, which must answer it itself (a hit, a 304, a 504); the
/// upstream's `response` is there for a filter that (wrongly) goes on.
fn hit(
    config: &Rc<ResponseCacheConfig>,
    request: HeaderList,
    response: &[(&str, &str)],
) -> LocalReply {
    match exchange_once(config, request, response, &[]) {
        Outcome::Local(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

/// Runs `request` through the filter, which must send it to the upstream; returns the request
/// headers the upstream got and the response headers the client got.
fn miss(
    config: &Rc<ResponseCacheConfig>,
    request: HeaderList,
    response: &[(&str, &str)],
    chunks: &[&[u8]],
) -> (HeaderList, HeaderList) {
    match exchange_once(config, request, response, chunks) {
        Outcome::Upstream(q, r) => (q, r),
        other => panic!("expected the upstream, got {other:?}"),
    }
}

/// An empty shared store, the clock at `T0`, and the filter's configuration from `json`.
fn fresh(json: &str) -> Rc<ResponseCacheConfig> {
    env::mock::reset_store();
    env::mock::set_now_s(T0);
    config(json)
}

#[test]
fn miss_then_hit_with_age_and_the_body_in_any_chunking() {
    let body = b"hello, cached world".to_vec();
    let splits: Vec<Vec<&[u8]>> = vec![
        vec![&body[..]],
        body.chunks(1).collect(),
        vec![&body[..3], &body[3..4], &body[4..]],
    ];
    for chunks in splits {
        let config = fresh("{}");
        let resp = [
            (":status", "200"),
            ("cache-control", "max-age=60"),
            ("content-type", "text/plain"),
            ("content-length", "19"),
        ];
        let (_, r) = miss(&config, get("/p", &[]), &resp, &chunks);
        assert_eq!(r.get_all("x-cache"), vec!["MISS"]);
        env::mock::set_now_s(T0 + 7);
        let reply = hit(&config, get("/p", &[]), &resp);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, body);
        assert_eq!(header(&reply.headers, "age"), Some("7"));
        assert_eq!(header(&reply.headers, "x-cache"), Some("HIT"));
        assert_eq!(header(&reply.headers, "content-type"), Some("text/plain"));
        // content-length is the proxy's to set from the body.
        assert_eq!(header(&reply.headers, "content-length"), None);
        // Expired at 60 s: a miss again.
        env::mock::set_now_s(T0 + 60);
        miss(&config, get("/p", &[]), &resp, &chunks);
    }
}

#[test]
fn head_is_served_from_the_get_entry_and_never_stores() {
    let config = fresh("{}");
    let resp = [(":status", "200"), ("cache-control", "max-age=60")];
    let mut head = get("/h", &[]);
    tollgate_sdk::HeaderMap::set(&mut head, ":method", "HEAD");
    miss(&config, head.clone(), &resp, &[]);
    // The HEAD did not store: the GET misses, then stores.
    miss(&config, get("/h", &[]), &resp, &[b"body"]);
    let reply = hit(&config, head, &resp);
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"body"[..]));
}

#[test]
fn vary_keeps_variants_apart_and_vary_star_is_never_stored() {
    let config = fresh("{}");
    let resp = [
        (":status", "200"),
        ("cache-control", "max-age=60"),
        ("vary", "Accept-Language"),
    ];
    miss(
        &config,
        get("/v", &[("accept-language", "en")]),
        &resp,
        &[b"hello"],
    );
    miss(
        &config,
        get("/v", &[("accept-language", "fr")]),
        &resp,
        &[b"bonjour"],
    );
    let en = hit(&config, get("/v", &[("accept-language", "en")]), &resp);
    let fr = hit(&config, get("/v", &[("accept-language", "fr")]), &resp);
    assert_eq!(
        (en.body.as_slice(), fr.body.as_slice()),
        (&b"hello"[..], &b"bonjour"[..])
    );
    miss(
        &config,
        get("/v", &[("accept-language", "de")]),
        &resp,
        &[b"x"],
    );
    miss(&config, get("/v", &[]), &resp, &[b"x"]);
    let star = [
        (":status", "200"),
        ("cache-control", "max-age=60"),
        ("vary", "*"),
    ];
    miss(&config, get("/s", &[]), &star, &[b"x"]);
    miss(&config, get("/s", &[]), &star, &[b"x"]);
}

#[test]
fn if_none_match_gets_a_304_from_the_cache() {
    let config = fresh("{}");
    let resp = [
        (":status", "200"),
        ("cache-control", "max-age=60"),
        ("etag", "\"v1\""),
        ("content-type", "text/plain"),
    ];
    miss(&config, get("/e", &[]), &resp, &[b"abc"]);
    let reply = hit(
        &config,
        get("/e", &[("if-none-match", "\"v0\", W/\"v1\"")]),
        &resp,
    );
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(header(&reply.headers, "etag"), Some("\"v1\""));
    assert_eq!(header(&reply.headers, "content-type"), None);
    let reply = hit(&config, get("/e", &[("if-none-match", "\"v2\"")]), &resp);
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"abc"[..]));
}

#[test]
fn a_stale_entry_with_an_etag_is_revalidated_and_a_304_refreshes_it() {
    let config = fresh("{}");
    let resp = [
        (":status", "200"),
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("x-version", "1"),
    ];
    miss(&config, get("/r", &[]), &resp, &[b"one"]);
    env::mock::set_now_s(T0 + 30);
    // Stale: forwarded with If-None-Match; the upstream's 304 is turned into the entry.
    let not_modified = [
        (":status", "304"),
        ("cache-control", "max-age=100"),
        ("etag", "\"v1\""),
        ("x-version", "2"),
    ];
    let mut filter = ResponseCacheFilter::new(Rc::clone(&config));
    let mut req = get(
        "/r",
        &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    );
    filter.on_request_headers(&mut Request::new(&mut req), true);
    assert_eq!(req.get_all("if-none-match"), vec!["\"v1\""]);
    assert!(req.get_all("if-modified-since").is_empty());
    let mut r = not_modified.iter().copied().collect::<HeaderList>();
    let mut view = Response::new(&mut r);
    filter.on_response_headers(&mut view, true);
    let reply = view
        .take_local_reply()
        .unwrap_or_else(|| panic!("no reply"));
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"one"[..]));
    assert_eq!(header(&reply.headers, "x-cache"), Some("REVALIDATED"));
    assert_eq!(header(&reply.headers, "x-version"), Some("2"));
    assert_eq!(header(&reply.headers, "age"), Some("0"));
    // Refreshed: fresh for 100 s from now.
    env::mock::set_now_s(T0 + 120);
    let reply = hit(&config, get("/r", &[]), &resp);
    assert_eq!(header(&reply.headers, "age"), Some("90"));
    assert_eq!(header(&reply.headers, "cache-control"), Some("max-age=100"));
    // A changed resource (200) replaces the entry.
    env::mock::set_now_s(T0 + 300);
    let changed = [
        (":status", "200"),
        ("cache-control", "max-age=10"),
        ("etag", "\"v2\""),
    ];
    let (q, r) = miss(&config, get("/r", &[]), &changed, &[b"two"]);
    assert_eq!(q.get_all("if-none-match"), vec!["\"v1\""]);
    assert_eq!(r.get_all("x-cache"), vec!["MISS"]);
    let reply = hit(&config, get("/r", &[]), &resp);
    assert_eq!(reply.body, b"two");
}

#[test]
fn a_revalidation_answered_with_no_store_removes_the_entry() {
    let config = fresh("{}");
    let resp = [
        (":status", "200"),
        ("cache-control", "max-age=1"),
        ("etag", "\"v1\""),
    ];
    miss(&config, get("/n", &[]), &resp, &[b"one"]);
    env::mock::set_now_s(T0 + 5);
    let no_store = [(":status", "200"), ("cache-control", "no-store")];
    let (q, _) = miss(&config, get("/n", &[]), &no_store, &[b"two"]);
    assert_eq!(q.get_all("if-none-match"), vec!["\"v1\""]);
    let (q, _) = miss(&config, get("/n", &[]), &no_store, &[b"two"]);
    assert!(q.get_all("if-none-match").is_empty());
}

#[test]
fn no_store_private_set_cookie_and_no_cache() {
    let config = fresh("{}");
    for cc in ["no-store", "private, max-age=60", "max-age=0"] {
        let resp = [(":status", "200"), ("cache-control", cc)];
        miss(&config, get("/x", &[]), &resp, &[b"x"]);
        miss(&config, get("/x", &[]), &resp, &[b"x"]);
    }
    let cookie = [
        (":status", "200"),
        ("cache-control", "max-age=60"),
        ("set-cookie", "s=1"),
    ];
    miss(&config, get("/c", &[]), &cookie, &[b"x"]);
    miss(&config, get("/c", &[]), &cookie, &[b"x"]);
    // Configured to store them, without the cookie.
    let stores = crate::tests::config(r#"{"policy": {"default": {"store_set_cookie": true}}}"#);
    let (_, r) = miss(&stores, get("/c", &[]), &cookie, &[b"x"]);
    assert_eq!(r.get_all("set-cookie"), vec!["s=1"]);
    let reply = hit(&stores, get("/c", &[]), &cookie);
    assert_eq!(header(&reply.headers, "set-cookie"), None);
    // no-cache: stored, but revalidated before each use.
    let nc = [
        (":status", "200"),
        ("cache-control", "no-cache, max-age=60"),
        ("etag", "\"n\""),
    ];
    miss(&config, get("/nc", &[]), &nc, &[b"x"]);
    let (q, _) = miss(&config, get("/nc", &[]), &nc, &[b"x"]);
    assert_eq!(q.get_all("if-none-match"), vec!["\"n\""]);
}

#[test]
fn request_directives_are_honoured_unless_turned_off() {
    let config = fresh("{}");
    let resp = [(":status", "200"), ("cache-control", "max-age=60")];
    // Request no-store: the response is not stored.
    miss(
        &config,
        get("/q", &[("cache-control", "no-store")]),
        &resp,
        &[b"x"],
    );
    miss(&config, get("/q", &[]), &resp, &[b"x"]);
    hit(&config, get("/q", &[]), &resp);
    // no-cache (and Pragma) go to the upstream; max-age bounds the age accepted.
    miss(
        &config,
        get("/q", &[("cache-control", "no-cache")]),
        &resp,
        &[b"x"],
    );
    miss(
        &config,
        get("/q", &[("pragma", "no-cache")]),
        &resp,
        &[b"x"],
    );
    env::mock::set_now_s(T0 + 20);
    miss(
        &config,
        get("/q", &[("cache-control", "max-age=5")]),
        &resp,
        &[b"x"],
    );
    hit(
        &config,
        get("/q", &[("cache-control", "max-age=30")]),
        &resp,
    );
    // only-if-cached: 504 on a miss.
    let reply = hit(
        &config,
        get("/none", &[("cache-control", "only-if-cached")]),
        &resp,
    );
    assert_eq!(reply.status, 504);
    // Turned off: the client cannot bypass.
    let strict =
        crate::tests::config(r#"{"policy": {"default": {"request_cache_control": false}}}"#);
    miss(&strict, get("/s", &[]), &resp, &[b"x"]);
    hit(&strict, get("/s", &[("cache-control", "no-cache")]), &resp);
}

#[test]
fn bodies_over_the_limit_pass_through_uncached() {
    let config = fresh(r#"{"max_body_bytes": 8}"#);
    let resp = [(":status", "200"), ("cache-control", "max-age=60")];
    // Discovered mid-body, chunk by chunk.
    miss(&config, get("/big", &[]), &resp, &[b"12345", b"6789"]);
    miss(&config, get("/big", &[]), &resp, &[b"12345", b"6789"]);
    // Announced by content-length.
    let announced = [
        (":status", "200"),
        ("cache-control", "max-age=60"),
        ("content-length", "9"),
    ];
    miss(&config, get("/big2", &[]), &announced, &[b"123456789"]);
    miss(&config, get("/big2", &[]), &announced, &[b"123456789"]);
    // Exactly the limit is stored.
    miss(&config, get("/ok", &[]), &resp, &[b"1234", b"5678"]);
    assert_eq!(hit(&config, get("/ok", &[]), &resp).body, b"12345678");
}

#[test]
fn routes_turn_caching_off_and_bring_their_own_ttl() {
    let config = fresh(
        r#"{"policy": {"default": {"default_ttl_s": 30},
            "routes": [{"match": {"path_prefix": "/live/"}, "config": {"enabled": false}},
                       {"match": {"path_prefix": "/short/"}, "config": {"default_ttl_s": 5}}]}}"#,
    );
    let bare = [(":status", "200")];
    let (_, r) = miss(&config, get("/live/x", &[]), &bare, &[b"x"]);
    assert!(r.get_all("x-cache").is_empty());
    miss(&config, get("/live/x", &[]), &bare, &[b"x"]);
    miss(&config, get("/short/x", &[]), &bare, &[b"x"]);
    miss(&config, get("/a", &[]), &bare, &[b"x"]);
    env::mock::set_now_s(T0 + 10);
    miss(&config, get("/short/x", &[]), &bare, &[b"x"]);
    hit(&config, get("/a", &[]), &bare);
}

#[test]
fn the_key_takes_the_configured_query_and_headers() {
    let config = fresh(
        r#"{"policy": {"default": {"key": {"query": "only", "query_params": ["page"], "headers": ["x-tenant"]}}}}"#,
    );
    let resp = [(":status", "200"), ("cache-control", "max-age=60")];
    miss(
        &config,
        get("/l?page=1&utm=a", &[("x-tenant", "a")]),
        &resp,
        &[b"a1"],
    );
    assert_eq!(
        hit(&config, get("/l?utm=b&page=1", &[("x-tenant", "a")]), &resp).body,
        b"a1"
    );
    miss(
        &config,
        get("/l?page=2", &[("x-tenant", "a")]),
        &resp,
        &[b"a2"],
    );
    miss(
        &config,
        get("/l?page=1", &[("x-tenant", "b")]),
        &resp,
        &[b"b1"],
    );
    // Other methods, and ranges, go on untouched.
    let mut post = get("/l?page=1", &[("x-tenant", "a")]);
    tollgate_sdk::HeaderMap::set(&mut post, ":method", "POST");
    let (_, r) = miss(&config, post, &resp, &[b"x"]);
    assert!(r.get_all("x-cache").is_empty());
    let (_, r) = miss(
        &config,
        get("/l?page=1", &[("x-tenant", "a"), ("range", "bytes=0-1")]),
        &resp,
        &[b"x"],
    );
    assert_eq!(r.get_all("x-cache"), vec!["BYPASS"]);
}

#[test]
fn the_cap_evicts_and_keeps_the_number_of_keys_bounded() {
    let config = fresh(r#"{"max_entries": 3}"#);
    let resp = [(":status", "200"), ("cache-control", "max-age=600")];
    for i in 0..10 {
        env::mock::set_now_s(T0 + i);
        miss(&config, get(&format!("/{i}"), &[]), &resp, &[b"x"]);
    }
    // FIFO: the last three stay.
    for i in 7..10 {
        hit(&config, get(&format!("/{i}"), &[]), &resp);
    }
    miss(&config, get("/0", &[]), &resp, &[b"x"]);
    // Index + 3 slots.
    assert_eq!(env::mock::store_len(), 4);
}

#[test]
fn a_successful_unsafe_request_invalidates_every_variant_of_its_url() {
    let config = fresh("{}");
    let resp = [
        (":status", "200"),
        ("cache-control", "max-age=60"),
        ("vary", "accept-language"),
    ];
    for lang in ["en", "fr"] {
        miss(
            &config,
            get("/doc", &[("accept-language", lang)]),
            &resp,
            &[b"x"],
        );
    }
    miss(&config, get("/other", &[]), &resp, &[b"x"]);
    let unsafe_request = |method: &str, status: &str| {
        let mut req = get("/doc", &[]);
        tollgate_sdk::HeaderMap::set(&mut req, ":method", method);
        let answer = [(":status", status)];
        miss(&config, req, &answer, &[]);
    };
    // A failed one changes nothing.
    unsafe_request("DELETE", "403");
    hit(&config, get("/doc", &[("accept-language", "en")]), &resp);
    unsafe_request("PUT", "204");
    for lang in ["en", "fr"] {
        miss(
            &config,
            get("/doc", &[("accept-language", lang)]),
            &resp,
            &[b"y"],
        );
    }
    // Other URLs keep their entries.
    hit(&config, get("/other", &[]), &resp);
}
