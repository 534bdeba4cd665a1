//! The `response-cache` filter with its demo configuration (`envoy/response-cache/envoy.yaml`)
//! in a real Envoy, in front of an upstream that counts the requests it gets and writes its
//! bodies whole, one byte at a time or in random pieces:
//! - a cacheable response is stored while it passes: the second request never reaches the
//!   upstream, and the client reads exactly the bytes sent, with a `content-length` equal to
//!   them, on the miss and on the hit (and on a HEAD served from the GET entry, no body);
//! - `Vary` keeps two entries apart; `If-None-Match` gets a 304 from the cache; a DELETE
//!   invalidates; a stale entry with an `ETag` is revalidated and the upstream's 304 serves (and
//!   refreshes) it;
//! - `no-store`, `private`, `Set-Cookie`, bodies over `max_body_bytes` and the `/live/` route
//!   (caching off) always go to the upstream, bodies intact;
//! - with `--concurrency 2`, an entry stored by one worker is served by the other;
//! - refused configurations name the field at start-up;
//! - the same exchanges in the harness (miss, hit, 304, HEAD, Vary, no-store, revalidation):
//!   the same statuses, `x-cache` and bodies.

use anyhow::{Context, Result, bail, ensure};
use tollgate_tests::client::{self, response};
use tollgate_tests::demo;
use tollgate_tests::envoy::{Envoy, EnvoyConfig, Launch};
use tollgate_tests::http1;
use tollgate_tests::launcher::Launcher;
use tollgate_tests::paths;
use tollgate_tests::stats;
use tollgate_tests::trickle::{TrickleUpstream, Writes, random_sizes};
use tollgate_traffic::{Exchange, ExchangeDetails, HttpRequest, HttpResponse};

const FILTER: &str = "response-cache";

/// A case of `what_is_not_cached...`: label, path, response headers, body, expected `x-cache`.
type NotCached<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    Option<&'a str>,
);
/// A harness step: request, the upstream's answer, its chunks, expected status, `x-cache`, body.
type HarnessStep = (
    HttpRequest,
    HttpResponse,
    Vec<usize>,
    u16,
    Option<&'static str>,
    Vec<u8>,
);
/// A probe step: path, request headers, the upstream's answer.
type ProbeStep = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    HttpResponse,
);

fn get(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    client::request("GET", "shop.example.com", path, headers, b"")
}

fn head(path: &str) -> HttpRequest {
    client::request("HEAD", "shop.example.com", path, &[], b"")
}

/// A body of `n` bytes that is not the same everywhere (a shifted piece shows).
fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + seed as usize) % 36])
        .collect()
}

fn x_cache(r: &HttpResponse) -> Option<&str> {
    http1::header(&r.headers, "x-cache")
}

/// The client read exactly `expected`, framed by a `content-length` equal to it (or chunked).
fn read_exactly(label: &str, r: &HttpResponse, expected: &[u8]) -> Result<()> {
    ensure!(
        r.body == expected,
        "{label}: the client read {} bytes, {} sent (first 40: {:?})",
        r.body.len(),
        expected.len(),
        String::from_utf8_lossy(&r.body[..r.body.len().min(40)])
    );
    match http1::header(&r.headers, "content-length") {
        Some(v) => ensure!(
            v.trim() == expected.len().to_string(),
            "{label}: content-length {v} for {} bytes",
            expected.len()
        ),
        None => ensure!(
            http1::header(&r.headers, "transfer-encoding").is_some_and(|t| t.contains("chunked")),
            "{label}: neither content-length nor chunked: {:?}",
            r.headers
        ),
    }
    Ok(())
}

fn start(upstream: &TrickleUpstream, label: &str) -> Result<Envoy> {
    Envoy::start(&EnvoyConfig::for_filter(FILTER, upstream.addr())?, label)
}

#[test]
fn the_second_request_never_reaches_the_upstream_whatever_the_chunking() -> Result<()> {
    let upstream = TrickleUpstream::start(response(200, &[], b""), Writes::Whole)?;
    let envoy = start(&upstream, "response-cache-hit")?;
    envoy.explain((|| {
        let sent = body(3000, 1);
        let chunkings = [
            ("whole", Writes::Whole),
            ("1-byte", Writes::Every(1)),
            ("random", Writes::Sizes(random_sizes(7, sent.len()))),
        ];
        for (label, writes) in chunkings {
            let path = format!("/items/{label}");
            upstream.set_response(
                response(
                    200,
                    &[
                        ("content-type", "text/plain"),
                        ("cache-control", "public, max-age=300"),
                        ("etag", "\"e1\""),
                    ],
                    &sent,
                ),
                writes,
            );
            let miss = client::send(envoy.listener(), &get(&path, &[]))?;
            ensure!(miss.status == 200, "{label}: miss status {}", miss.status);
            ensure!(
                x_cache(&miss) == Some("MISS"),
                "{label}: {:?}",
                miss.headers
            );
            read_exactly(&format!("{label} miss"), &miss, &sent)?;
            ensure!(
                upstream.take_requests().len() == 1,
                "{label}: the miss did not go upstream"
            );

            let hit = client::send(envoy.listener(), &get(&path, &[]))?;
            ensure!(hit.status == 200, "{label}: hit status {}", hit.status);
            ensure!(x_cache(&hit) == Some("HIT"), "{label}: {:?}", hit.headers);
            read_exactly(&format!("{label} hit"), &hit, &sent)?;
            ensure!(
                http1::header(&hit.headers, "age").is_some_and(|a| a.parse::<u64>().is_ok()),
                "{label}: no Age on the hit: {:?}",
                hit.headers
            );
            ensure!(
                http1::header(&hit.headers, "content-type") == Some("text/plain")
                    && http1::header(&hit.headers, "etag") == Some("\"e1\""),
                "{label}: stored headers lost: {:?}",
                hit.headers
            );

            // HEAD from the GET entry: no body, the GET's length.
            let h = client::send(envoy.listener(), &head(&path))?;
            ensure!(
                h.status == 200 && h.body.is_empty(),
                "{label}: HEAD {} {:?}",
                h.status,
                h.body.len()
            );
            ensure!(x_cache(&h) == Some("HIT"), "{label}: HEAD {:?}", h.headers);
            ensure!(
                http1::header(&h.headers, "content-length") == Some(&*sent.len().to_string()),
                "{label}: HEAD content-length {:?}",
                h.headers
            );
            let reached = upstream.take_requests();
            ensure!(
                reached.is_empty(),
                "{label}: {} requests reached the upstream after the miss",
                reached.len()
            );
        }

        // A query the demo key ignores (utm_*) is the same entry.
        let hit = client::send(envoy.listener(), &get("/items/whole?utm_source=mail", &[]))?;
        ensure!(x_cache(&hit) == Some("HIT"), "utm: {:?}", hit.headers);
        ensure!(upstream.take_requests().is_empty());

        let stats = stats::prometheus(envoy.admin())?;
        stats::ensure_lines(
            &stats,
            "response_cache",
            &[
                "response_cache_lookups{result=\"miss\"} 3",
                "response_cache_lookups{result=\"hit\"} 7",
                "response_cache_stores{result=\"stored\"} 3",
            ],
        )?;
        Ok(())
    })())
}

#[test]
fn vary_if_none_match_and_revalidation_in_envoy() -> Result<()> {
    let upstream = TrickleUpstream::start(response(200, &[], b""), Writes::Whole)?;
    let envoy = start(&upstream, "response-cache-vary")?;
    envoy.explain((|| {
        // Vary: two languages, two entries.
        let vary = |text: &[u8]| {
            response(
                200,
                &[
                    ("cache-control", "max-age=300"),
                    ("vary", "Accept-Language"),
                ],
                text,
            )
        };
        upstream.set_response(vary(b"hello"), Writes::Every(2));
        let en = client::send(
            envoy.listener(),
            &get("/greeting", &[("accept-language", "en")]),
        )?;
        upstream.set_response(vary(b"bonjour"), Writes::Every(2));
        let fr = client::send(
            envoy.listener(),
            &get("/greeting", &[("accept-language", "fr")]),
        )?;
        ensure!(
            upstream.take_requests().len() == 2,
            "each language went upstream once"
        );
        ensure!(x_cache(&en) == Some("MISS") && x_cache(&fr) == Some("MISS"));
        let en = client::send(
            envoy.listener(),
            &get("/greeting", &[("accept-language", "en")]),
        )?;
        let fr = client::send(
            envoy.listener(),
            &get("/greeting", &[("accept-language", "fr")]),
        )?;
        ensure!(
            upstream.take_requests().is_empty(),
            "a variant went upstream again"
        );
        ensure!(x_cache(&en) == Some("HIT") && x_cache(&fr) == Some("HIT"));
        read_exactly("en", &en, b"hello")?;
        read_exactly("fr", &fr, b"bonjour")?;
        let de = client::send(
            envoy.listener(),
            &get("/greeting", &[("accept-language", "de")]),
        )?;
        ensure!(x_cache(&de) == Some("MISS") && upstream.take_requests().len() == 1);

        // If-None-Match: a 304 from the cache, no body.
        upstream.set_response(
            response(
                200,
                &[("cache-control", "max-age=300"), ("etag", "\"v7\"")],
                b"version 7",
            ),
            Writes::Whole,
        );
        client::send(envoy.listener(), &get("/doc", &[]))?;
        upstream.take_requests();
        let nm = client::send(
            envoy.listener(),
            &get("/doc", &[("if-none-match", "\"v6\", \"v7\"")]),
        )?;
        ensure!(
            nm.status == 304 && nm.body.is_empty(),
            "INM: {} {:?}",
            nm.status,
            nm.headers
        );
        ensure!(
            x_cache(&nm) == Some("HIT") && http1::header(&nm.headers, "etag") == Some("\"v7\""),
            "INM headers {:?}",
            nm.headers
        );
        let other = client::send(
            envoy.listener(),
            &get("/doc", &[("if-none-match", "\"v6\"")]),
        )?;
        read_exactly("INM other", &other, b"version 7")?;
        ensure!(
            upstream.take_requests().is_empty(),
            "a conditional request went upstream"
        );
        // A successful DELETE of the URL invalidates it: the next GET goes upstream.
        let delete = client::request("DELETE", "shop.example.com", "/doc", &[], b"");
        ensure!(client::send(envoy.listener(), &delete)?.status == 200);
        let after = client::send(envoy.listener(), &get("/doc", &[]))?;
        ensure!(
            x_cache(&after) == Some("MISS"),
            "after DELETE: {:?}",
            after.headers
        );
        ensure!(
            upstream.take_requests().len() == 2,
            "DELETE and the GET after it"
        );

        // A stale entry with an ETag: revalidated; the upstream's 304 serves it.
        upstream.set_response(
            response(
                200,
                &[
                    ("cache-control", "max-age=1"),
                    ("etag", "\"r1\""),
                    ("x-gen", "1"),
                ],
                b"revalidate me",
            ),
            Writes::Every(3),
        );
        client::send(envoy.listener(), &get("/stale", &[]))?;
        upstream.take_requests();
        std::thread::sleep(std::time::Duration::from_millis(2100));
        upstream.set_response(
            response(
                304,
                &[
                    ("cache-control", "max-age=300"),
                    ("etag", "\"r1\""),
                    ("x-gen", "2"),
                ],
                b"",
            ),
            Writes::Whole,
        );
        let revalidated = client::send(envoy.listener(), &get("/stale", &[]))?;
        let seen = upstream.take_requests();
        ensure!(
            seen.len() == 1,
            "revalidation: {} upstream requests",
            seen.len()
        );
        ensure!(
            http1::header(&seen[0].headers, "if-none-match") == Some("\"r1\""),
            "the revalidation carried {:?}",
            seen[0].headers
        );
        ensure!(
            revalidated.status == 200,
            "revalidated status {}",
            revalidated.status
        );
        ensure!(
            x_cache(&revalidated) == Some("REVALIDATED"),
            "{:?}",
            revalidated.headers
        );
        ensure!(
            http1::header(&revalidated.headers, "x-gen") == Some("2"),
            "{:?}",
            revalidated.headers
        );
        read_exactly("revalidated", &revalidated, b"revalidate me")?;
        // Refreshed for 300 s: a hit now.
        let hit = client::send(envoy.listener(), &get("/stale", &[]))?;
        ensure!(x_cache(&hit) == Some("HIT"), "{:?}", hit.headers);
        read_exactly("refreshed", &hit, b"revalidate me")?;
        ensure!(upstream.take_requests().is_empty());
        Ok(())
    })())
}

#[test]
fn what_is_not_cached_always_reaches_the_upstream_intact() -> Result<()> {
    let upstream = TrickleUpstream::start(response(200, &[], b""), Writes::Whole)?;
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.set_plugin_configuration(
        r#"{"max_body_bytes": 1024, "policy": {"default": {},
            "routes": [{"match": {"path_prefix": "/live/"}, "config": {"enabled": false}}]}}"#,
    )?;
    let envoy = Envoy::start(&config, "response-cache-not-cached")?;
    envoy.explain((|| {
        let big = body(5000, 3);
        let cases: [NotCached; 6] = [
            (
                "no-store",
                "/a",
                vec![("cache-control", "no-store")],
                body(200, 1),
                Some("MISS"),
            ),
            (
                "private",
                "/b",
                vec![("cache-control", "private, max-age=60")],
                body(200, 2),
                Some("MISS"),
            ),
            (
                "set-cookie",
                "/c",
                vec![("cache-control", "max-age=60"), ("set-cookie", "s=1")],
                body(200, 4),
                Some("MISS"),
            ),
            (
                "too large",
                "/d",
                vec![("cache-control", "max-age=60")],
                big.clone(),
                Some("MISS"),
            ),
            ("no freshness", "/e", vec![], body(100, 5), Some("MISS")),
            (
                "route off",
                "/live/f",
                vec![("cache-control", "max-age=60")],
                body(100, 6),
                None,
            ),
        ];
        for (label, path, headers, sent, mark) in &cases {
            for writes in [Writes::Sizes(random_sizes(3, sent.len())), Writes::Every(1)] {
                // The upstream announces the length, so "too large" is known at the headers;
                // found mid-body (no length) is in the native tests.
                let r = response(200, headers, sent);
                upstream.set_response(r, writes);
                let got = client::send(envoy.listener(), &get(path, &[]))?;
                ensure!(got.status == 200, "{label}: {}", got.status);
                ensure!(
                    x_cache(&got) == *mark,
                    "{label}: x-cache {:?}",
                    x_cache(&got)
                );
                read_exactly(label, &got, sent)?;
                ensure!(
                    upstream.take_requests().len() == 1,
                    "{label}: not from the upstream"
                );
            }
        }
        Ok(())
    })())
}

/// Connections accepted so far per worker thread on the first listener.
fn connections_per_worker(envoy: &Envoy) -> Result<Vec<u64>> {
    let stats = client::send(
        envoy.admin(),
        &get("/stats?filter=worker_.*downstream_cx_total", &[]),
    )?;
    let text = String::from_utf8_lossy(&stats.body).into_owned();
    let mut per_worker: Vec<(String, u64)> = text
        .lines()
        .filter(|l| l.starts_with("listener.") && !l.contains("admin"))
        .filter_map(|l| {
            let (name, n) = l.rsplit_once(": ")?;
            Some((name.to_string(), n.trim().parse().ok()?))
        })
        .collect();
    per_worker.sort();
    Ok(per_worker.into_iter().map(|(_, n)| n).collect())
}

/// The worker that took the one connection made between two readings, if that is clear (a
/// reading may lag: Envoy's own readiness probe connections are counted late).
fn which_worker(before: &[u64], after: &[u64]) -> Option<usize> {
    let grown: Vec<usize> = (0..after.len())
        .filter(|&i| after.get(i) != before.get(i))
        .collect();
    let added: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>().min(after.iter().sum());
    match grown.as_slice() {
        [i] if added == 1 => Some(*i),
        _ => None,
    }
}

#[test]
fn an_entry_stored_by_one_worker_is_served_by_the_other() -> Result<()> {
    let sent = body(1500, 9);
    let upstream = TrickleUpstream::start(
        response(200, &[("cache-control", "max-age=300")], &sent),
        Writes::Sizes(random_sizes(5, 1500)),
    )?;
    let config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    let launcher = Launcher::from_env()?.with_concurrency(2);
    let envoy = match Envoy::launch_with(&launcher, &config, "response-cache-workers")? {
        Launch::Ready(envoy) => envoy,
        Launch::Exited { status, log } => bail!("Envoy exited ({status}):\n{log}"),
    };
    envoy.explain((|| {
        // Each round stores a new path on one worker, then sends new connections until one
        // lands on the other worker (the kernel spreads them): that one must be a hit.
        for round in 0..8 {
            let path = format!("/shared/{round}");
            let before = connections_per_worker(&envoy)?;
            ensure!(before.len() == 2, "two workers expected: {before:?}");
            let miss = client::send(envoy.listener(), &get(&path, &[]))?;
            ensure!(x_cache(&miss) == Some("MISS"), "{path}: {:?}", miss.headers);
            read_exactly("shared miss", &miss, &sent)?;
            ensure!(upstream.take_requests().len() == 1);
            let mut previous = connections_per_worker(&envoy)?;
            let Some(storer) = which_worker(&before, &previous) else {
                continue;
            };
            for attempt in 0..64 {
                let hit = client::send(envoy.listener(), &get(&path, &[]))?;
                ensure!(x_cache(&hit) == Some("HIT"), "{path} attempt {attempt}: {:?}", hit.headers);
                read_exactly("shared hit", &hit, &sent)?;
                ensure!(upstream.take_requests().is_empty(), "a hit reached the upstream");
                let now = connections_per_worker(&envoy)?;
                let worker = which_worker(&previous, &now);
                previous = now;
                if let Some(worker) = worker.filter(|w| *w != storer) {
                    eprintln!("{path}: stored by worker {storer}, served by worker {worker} (attempt {attempt})");
                    return Ok(());
                }
            }
        }
        bail!("no round showed a hit on the worker that did not store the entry")
    })())
}

#[test]
fn bad_configurations_are_refused_at_start_naming_the_field() -> Result<()> {
    let upstream = TrickleUpstream::start(response(200, &[], b""), Writes::Whole)?;
    Envoy::refusals_name_the_field(
        FILTER,
        upstream.addr(),
        &[
            (r#"{"max_entries": 0}"#, "max_entries"),
            (r#"{"max_body_bytes": 999999999}"#, "max_body_bytes"),
            (
                r#"{"policy": {"routes": [{"match": {"path_prefix": "/a"}, "config": {"key": {"query": "only"}}}]}}"#,
                "policy.routes[0].config.key.query_params",
            ),
            (
                r#"{"policy": {"default": {"default_ttl_s": 60, "max_ttl_s": 5}}}"#,
                "policy.default.max_ttl_s",
            ),
        ],
    )
}

/// The harness, one plugin for a sequence of exchanges (its shared data lives across them):
/// the same statuses, `x-cache` and bodies as Envoy gave above.
#[test]
fn the_harness_serves_the_same_sequence() -> Result<()> {
    let sent = body(3000, 1);
    let cacheable = response(
        200,
        &[
            ("content-type", "text/plain"),
            ("cache-control", "public, max-age=300"),
            ("etag", "\"e1\""),
            ("content-length", "3000"),
        ],
        &sent,
    );
    let vary = |text: &[u8]| {
        response(
            200,
            &[
                ("cache-control", "max-age=300"),
                ("vary", "Accept-Language"),
                ("content-length", &text.len().to_string()),
            ],
            text,
        )
    };
    let no_store = response(
        200,
        &[("cache-control", "no-store"), ("content-length", "2")],
        b"ns",
    );
    // (request, the upstream's answer, chunks, expected status, x-cache, body)
    let steps: Vec<HarnessStep> = vec![
        (
            get("/items", &[]),
            cacheable.clone(),
            random_sizes(7, sent.len()),
            200,
            Some("MISS"),
            sent.clone(),
        ),
        (
            get("/items", &[]),
            cacheable.clone(),
            vec![],
            200,
            Some("HIT"),
            sent.clone(),
        ),
        (
            get("/items", &[("if-none-match", "\"e1\"")]),
            cacheable.clone(),
            vec![],
            304,
            Some("HIT"),
            vec![],
        ),
        (
            head("/items"),
            cacheable.clone(),
            vec![],
            200,
            Some("HIT"),
            vec![],
        ),
        (
            get("/greeting", &[("accept-language", "en")]),
            vary(b"hello"),
            vec![1; 5],
            200,
            Some("MISS"),
            b"hello".to_vec(),
        ),
        (
            get("/greeting", &[("accept-language", "fr")]),
            vary(b"bonjour"),
            vec![1; 7],
            200,
            Some("MISS"),
            b"bonjour".to_vec(),
        ),
        (
            get("/greeting", &[("accept-language", "en")]),
            vary(b"xx"),
            vec![],
            200,
            Some("HIT"),
            b"hello".to_vec(),
        ),
        (
            get("/greeting", &[("accept-language", "fr")]),
            vary(b"xx"),
            vec![],
            200,
            Some("HIT"),
            b"bonjour".to_vec(),
        ),
        (
            get("/ns", &[]),
            no_store.clone(),
            vec![],
            200,
            Some("MISS"),
            b"ns".to_vec(),
        ),
        (
            get("/ns", &[]),
            no_store,
            vec![],
            200,
            Some("MISS"),
            b"ns".to_vec(),
        ),
        // max-age=0 with an ETag: stored, stale at once, so the next GET is revalidated; the
        // upstream's 304 is turned into the stored 200 (a local reply from the response headers).
        (
            get("/rv", &[]),
            response(
                200,
                &[
                    ("cache-control", "max-age=0"),
                    ("etag", "\"r\""),
                    ("content-length", "5"),
                ],
                b"first",
            ),
            vec![2, 3],
            200,
            Some("MISS"),
            b"first".to_vec(),
        ),
        (
            get("/rv", &[]),
            response(
                304,
                &[("cache-control", "max-age=0"), ("etag", "\"r\"")],
                b"",
            ),
            vec![],
            200,
            Some("REVALIDATED"),
            b"first".to_vec(),
        ),
    ];
    let exchanges = steps
        .iter()
        .enumerate()
        .map(|(i, (request, response, chunks, ..))| Exchange {
            id: format!("{i}"),
            request: request.clone(),
            response: Some(response.clone()),
            details: ExchangeDetails {
                response_chunks: chunks.clone(),
                ..ExchangeDetails::default()
            },
        })
        .collect();
    let report = demo::replay(FILTER, exchanges).context("the harness could not replay")?;
    ensure!(report.exchanges.len() == steps.len());
    for (e, (request, _, _, status, mark, expected)) in report.exchanges.iter().zip(&steps) {
        let got = &e.client_response;
        // A HEAD: the GET's length and no body, as Envoy sends a local reply to a HEAD.
        let head = request.method == "HEAD";
        let body_ok = got.body == *expected
            && (!head
                || http1::header(&got.headers, "content-length") == Some(&*sent.len().to_string()));
        ensure!(
            got.status == *status && x_cache(got) == *mark && body_ok,
            "harness {} {} {}: {} {:?} {} bytes {:?}, expected {status} {mark:?} {} bytes",
            e.id,
            request.method,
            request.path,
            got.status,
            x_cache(got),
            got.body.len(),
            got.headers,
            expected.len()
        );
        let reached = e.upstream_request.is_some();
        ensure!(
            reached == matches!(*mark, Some("MISS" | "REVALIDATED")),
            "harness {}: reached the upstream: {reached}",
            e.id
        );
    }
    Ok(())
}

/// One behaviour probe: requests in order (path, extra headers), the upstream's answer to each;
/// what is observed is how many reached the upstream and the last reply's status and `age`.
struct Probe {
    name: &'static str,
    steps: Vec<ProbeStep>,
    /// Sleep before the last request (ms), to let an entry go stale.
    wait_ms: u64,
}

fn probes() -> Vec<Probe> {
    let ok = |cc: &'static str, extra: &[(&'static str, &'static str)]| {
        let mut h = vec![("cache-control", cc)];
        h.extend_from_slice(extra);
        response(200, &h, b"payload")
    };
    let twice =
        |path: &'static str, r: HttpResponse| vec![(path, vec![], r.clone()), (path, vec![], r)];
    vec![
        Probe {
            name: "max-age=300",
            steps: twice("/p1", ok("max-age=300", &[])),
            wait_ms: 0,
        },
        Probe {
            name: "s-maxage=300, max-age=0",
            steps: twice("/p2", ok("s-maxage=300, max-age=0", &[])),
            wait_ms: 0,
        },
        Probe {
            name: "no-store",
            steps: twice("/p3", ok("no-store", &[])),
            wait_ms: 0,
        },
        Probe {
            name: "private, max-age=300",
            steps: twice("/p4", ok("private, max-age=300", &[])),
            wait_ms: 0,
        },
        Probe {
            name: "Set-Cookie, max-age=300",
            steps: twice("/p5", ok("max-age=300", &[("set-cookie", "s=1")])),
            wait_ms: 0,
        },
        Probe {
            name: "Vary: accept-language (en, fr, en)",
            steps: vec![
                (
                    "/p6",
                    vec![("accept-language", "en")],
                    ok("max-age=300", &[("vary", "accept-language")]),
                ),
                (
                    "/p6",
                    vec![("accept-language", "fr")],
                    ok("max-age=300", &[("vary", "accept-language")]),
                ),
                (
                    "/p6",
                    vec![("accept-language", "en")],
                    ok("max-age=300", &[("vary", "accept-language")]),
                ),
            ],
            wait_ms: 0,
        },
        Probe {
            name: "If-None-Match on a stored entry",
            steps: vec![
                ("/p7", vec![], ok("max-age=300", &[("etag", "\"a\"")])),
                (
                    "/p7",
                    vec![("if-none-match", "\"a\"")],
                    ok("max-age=300", &[("etag", "\"a\"")]),
                ),
            ],
            wait_ms: 0,
        },
        Probe {
            name: "stale ETag entry, upstream 304",
            steps: vec![
                ("/p8", vec![], ok("max-age=1", &[("etag", "\"b\"")])),
                (
                    "/p8",
                    vec![],
                    response(
                        304,
                        &[("cache-control", "max-age=300"), ("etag", "\"b\"")],
                        b"",
                    ),
                ),
            ],
            wait_ms: 2100,
        },
        Probe {
            name: "request Authorization, max-age=300",
            steps: vec![
                (
                    "/p9",
                    vec![("authorization", "Bearer x")],
                    ok("max-age=300", &[]),
                ),
                (
                    "/p9",
                    vec![("authorization", "Bearer x")],
                    ok("max-age=300", &[]),
                ),
            ],
            wait_ms: 0,
        },
        Probe {
            name: "request no-cache on a fresh entry",
            steps: vec![
                ("/p10", vec![], ok("max-age=300", &[])),
                (
                    "/p10",
                    vec![("cache-control", "no-cache")],
                    ok("max-age=300", &[]),
                ),
            ],
            wait_ms: 0,
        },
        Probe {
            name: "no freshness, ETag only",
            steps: twice("/p11", response(200, &[("etag", "\"c\"")], b"payload")),
            wait_ms: 0,
        },
    ]
}

/// Runs every probe through `envoy`: per probe, how many requests reached the upstream out of
/// how many were sent, and the last reply's status, `age` and body length.
fn observe(envoy: &Envoy, upstream: &TrickleUpstream) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for probe in probes() {
        upstream.take_requests();
        let n = probe.steps.len();
        let mut last = None;
        for (i, (path, headers, answer)) in probe.steps.iter().enumerate() {
            if i + 1 == n && probe.wait_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(probe.wait_ms));
            }
            // A real origin sends `Date` (Envoy's native cache needs it to compute freshness).
            let mut answer = answer.clone();
            let date = chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            answer.headers.push(("date".into(), date));
            upstream.set_response(answer, Writes::Every(3));
            last = Some(client::send(envoy.listener(), &get(path, headers))?);
        }
        let last = last.context("no step")?;
        rows.push(format!(
            "{}: upstream {}/{n}, last {} age={} body={} dates={}",
            probe.name,
            upstream.take_requests().len(),
            last.status,
            http1::header(&last.headers, "age").unwrap_or("-"),
            last.body.len(),
            http1::header_values(&last.headers, "date").len()
        ));
    }
    Ok(rows)
}

/// The same probes through this filter and through Envoy's native cache (`SimpleHttpCache`,
/// `envoy/response-cache/native.yaml`): the rows are printed for the README's comparison table;
/// where RFC 9111 leaves no choice (max-age, s-maxage, no-store, private, ETag revalidation)
/// both must agree.
#[test]
fn next_to_envoys_native_cache() -> Result<()> {
    let upstream = TrickleUpstream::start(response(200, &[], b""), Writes::Whole)?;
    let envoy = start(&upstream, "response-cache-probes")?;
    let ours = envoy.explain(observe(&envoy, &upstream))?;
    drop(envoy);
    let mut config = EnvoyConfig::for_filter(FILTER, upstream.addr())?;
    config.use_native_alternative(&paths::envoy_config(FILTER).with_file_name("native.yaml"))?;
    let envoy = Envoy::start(&config, "response-cache-probes-native")?;
    let native = envoy.explain(observe(&envoy, &upstream))?;
    for (o, n) in ours.iter().zip(&native) {
        eprintln!("wasm   {o}\nnative {n}");
    }
    for i in [0, 1, 2, 3, 7] {
        ensure!(
            ours[i] == native[i].replace(&native_age(&native[i]), &native_age(&ours[i])),
            "differ: {} / {}",
            ours[i],
            native[i]
        );
    }
    Ok(())
}

/// The `age=` part of a row (ages may differ by a second between two runs).
fn native_age(row: &str) -> String {
    row.split_whitespace()
        .find(|w| w.starts_with("age="))
        .unwrap_or_default()
        .to_string()
}
