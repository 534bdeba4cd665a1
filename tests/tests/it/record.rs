//! `tollgate record`'s engine against the real Envoy: requests sent through
//! the recording proxy to a real upstream are written to a JSON-lines
//! recording that matches what the upstream received and what the client got
//! back; the recording then replays in the harness (through the built
//! `headers` filter) with the same answers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tollgate_harness::replay::{Replay, Verdict};
use tollgate_harness::traffic::record::{Recorder, RecorderConfig};
use tollgate_harness::traffic::{self, HttpResponse};
use tollgate_tests::{client, paths, upstream::Upstream};

/// Hang guard for Envoy writing its tap files (not a speed check).
const RECORD_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn records_through_envoy_and_replays_in_the_harness() -> Result<()> {
    let upstream = Upstream::start(HttpResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("x-origin".into(), "upstream".into()),
        ],
        body: b"hello from upstream".to_vec(),
    })?;
    let out_dir = paths::work_dir()?.join(format!("record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut rec = Recorder::start(RecorderConfig {
        envoy: paths::envoy_binary()?,
        upstream: upstream.addr().to_string(),
        listen: "127.0.0.1:0".into(),
        out_dir: out_dir.clone(),
        max_body: 1 << 20,
    })?;
    let sent = [
        client::request(
            "GET",
            "shop.test",
            "/items?page=2",
            &[("x-test", "one")],
            b"",
        ),
        client::request(
            "POST",
            "shop.test",
            "/orders",
            &[("content-type", "application/json")],
            br#"{"sku":"A-1","qty":2}"#,
        ),
        client::request(
            "DELETE",
            "api.test:8443",
            "/orders/7",
            &[("authorization", "Bearer t")],
            b"",
        ),
    ];
    let mut answers = Vec::new();
    for r in &sent {
        answers.push(client::send(rec.listen_addr(), r)?);
    }
    let deadline = Instant::now() + RECORD_DEADLINE;
    while rec.poll()? < sent.len() {
        if Instant::now() > deadline {
            bail!(
                "Envoy wrote {} of {} taps within {RECORD_DEADLINE:?}",
                rec.poll()?,
                sent.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rec.stop()?, sent.len());
    assert!(rec.take_warnings().is_empty());

    let recording = traffic::load(rec.traffic_path())
        .with_context(|| format!("loading {}", rec.traffic_path().display()))?;
    assert!(recording.warnings.is_empty(), "{:?}", recording.warnings);
    assert_eq!(recording.exchanges.len(), sent.len());
    let received = upstream.requests();
    // Envoy may finish streams in any order: match recordings to requests by path.
    for (sent, answer) in sent.iter().zip(&answers) {
        let e = recording
            .exchanges
            .iter()
            .find(|e| e.request.path == sent.path)
            .with_context(|| format!("{} was not recorded", sent.path))?;
        assert_eq!(e.request.method, sent.method);
        assert_eq!(e.request.authority, sent.authority);
        assert_eq!(e.request.body, sent.body);
        for h in &sent.headers {
            assert!(
                e.request.headers.contains(h),
                "{h:?} missing from {:?}",
                e.request.headers
            );
        }
        // The recorded request is what the upstream received (bar `host`,
        // which HTTP/1 carries as the recording's authority).
        let got = received
            .iter()
            .find(|r| r.path == sent.path)
            .context("upstream never saw the request")?;
        let upstream_headers: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(k, _)| k != "host")
            .cloned()
            .collect();
        assert_eq!(e.request.headers, upstream_headers, "{}", sent.path);
        // The recorded response is what the client got.
        let resp = e.response.as_ref().context("no recorded response")?;
        assert_eq!(resp.status, answer.status);
        assert_eq!(resp.body, answer.body);
        assert!(
            resp.headers
                .contains(&("x-origin".into(), "upstream".into()))
        );
        assert!(
            e.details
                .properties
                .iter()
                .any(|(k, _)| k == "source.address")
        );
        assert!(e.details.timing.started.is_some());
    }

    // Replay the recording through the headers filter in the harness.
    let report = Replay::filter(paths::filter_wasm("headers")?)
        .config(paths::demo_config("headers")?)
        .traffic(recording.clone())
        .run()?;
    assert_eq!(report.exchanges.len(), sent.len());
    for (x, e) in report.exchanges.iter().zip(&recording.exchanges) {
        assert!(
            !matches!(x.verdict, Verdict::Failed { .. }),
            "{}: {:?}",
            x.id,
            x.verdict
        );
        let recorded = e.response.as_ref().context("response")?;
        assert_eq!(x.client_response.status, recorded.status, "{}", x.id);
        assert_eq!(x.client_response.body, recorded.body, "{}", x.id);
        let up = x
            .upstream_request
            .as_ref()
            .context("request reached the upstream")?;
        assert_eq!(
            (&up.method, &up.path, &up.body),
            (&e.request.method, &e.request.path, &e.request.body)
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(())
}
