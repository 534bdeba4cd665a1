//! `tollgate record`'s engine against the real Envoy: requests sent through
//! the recording proxy to a real upstream are written to a JSON-lines
//! recording that matches what the upstream received and what the client got
//! back. The recording then replays through the built `headers` filter twice,
//! in the harness and in a real Envoy whose upstream answers each recorded
//! request with its recorded response, and both replays must agree (status,
//! headers by the rules of `tollgate_tests::headers`, body), at the client
//! and at the upstream.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tollgate_envoy::record::{Recorder, RecorderConfig};
use tollgate_replay::{Replay, Report, Verdict};
use tollgate_tests::envoy::{Envoy, EnvoyConfig};
use tollgate_tests::headers::{self, ENVOY_REQUEST_HEADERS, ENVOY_RESPONSE_HEADERS};
use tollgate_tests::http1::header;
use tollgate_tests::{client, paths, upstream::Upstream};
use tollgate_traffic::{self as traffic, Exchange, HttpResponse, Traffic};

/// Hang guard for Envoy writing its tap files (not a speed check).
const RECORD_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn records_through_envoy_and_replays_in_the_harness() -> Result<()> {
    // A different answer per request, so that replaying must pick each one's own.
    let answer = |status: u16, powered_by: &str, body: &[u8]| HttpResponse {
        status,
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("x-origin".into(), "upstream".into()),
            ("x-powered-by".into(), powered_by.into()),
        ],
        body: body.to_vec(),
    };
    let origin = [
        answer(200, "Express", b"page 2 of the items"),
        answer(201, "PHP", b"order 8 created"),
        answer(404, "Django", b"no order 7"),
    ];
    let upstream = Upstream::start(origin[0].clone())?;
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
    for (r, response) in sent.iter().zip(&origin) {
        upstream.set_response(response.clone());
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
    replay_in_envoy_matches_the_harness(&recording, &report)?;
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(())
}

/// The recorded exchange answering a request to `method` `path`.
fn recorded<'a>(recording: &'a Traffic, method: &str, path: &str) -> Option<&'a Exchange> {
    recording
        .exchanges
        .iter()
        .find(|e| e.request.method == method && e.request.path == path)
}

/// Replays `recording` through the `headers` filter in a real Envoy whose
/// upstream answers each request with its recorded response, and compares
/// what the client and the upstream got with the harness's `report`.
fn replay_in_envoy_matches_the_harness(recording: &Traffic, report: &Report) -> Result<()> {
    let answers = recording.clone();
    let upstream = Upstream::start_with(move |r| {
        match recorded(&answers, &r.method, &r.path).and_then(|e| e.response.clone()) {
            // Framing is the server's own; `start_with` sets the length.
            Some(mut response) => {
                response.headers.retain(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "content-length" | "transfer-encoding" | "connection"
                    )
                });
                response
            }
            None => HttpResponse {
                status: 599,
                headers: Vec::new(),
                body: format!("not in the recording: {} {}", r.method, r.path).into_bytes(),
            },
        }
    })?;
    let mut config = EnvoyConfig::load(&paths::envoy_config("headers"))?;
    config
        .use_ephemeral_ports()?
        .route_cluster_to("upstream", upstream.addr())?
        .set_plugin_configuration(&paths::demo_config("headers")?)?;
    config.use_filters_from(&paths::filters_dir()?)?;
    let envoy = Envoy::start(&config, "record-replay")?;
    envoy.explain(compare_replays(&envoy, &upstream, recording, report))
}

fn compare_replays(
    envoy: &Envoy,
    upstream: &Upstream,
    recording: &Traffic,
    report: &Report,
) -> Result<()> {
    ensure!(report.exchanges.len() == recording.exchanges.len());
    for (e, x) in recording.exchanges.iter().zip(&report.exchanges) {
        let what = format!("{} {} {}", x.id, e.request.method, e.request.path);
        let got = client::send(envoy.listener(), &e.request)?;
        let mut received = upstream.take_requests();
        ensure!(
            received.len() == 1,
            "{what}: the replay upstream received {} requests (client got {})",
            received.len(),
            got.status
        );
        let received = received.remove(0);

        // What the client got: Envoy vs the harness.
        let harness = &x.client_response;
        ensure!(
            got.status == harness.status,
            "{what}: status {} in Envoy, {} in the harness",
            got.status,
            harness.status
        );
        ensure!(
            got.body == harness.body,
            "{what}: body {:?} in Envoy, {:?} in the harness",
            String::from_utf8_lossy(&got.body),
            String::from_utf8_lossy(&harness.body)
        );
        headers::assert_same(
            &format!("{what}: headers at the client"),
            &got.headers,
            &harness.headers,
            ENVOY_RESPONSE_HEADERS,
        )?;
        // The filter really ran in both (the recorded answer has x-powered-by).
        ensure!(
            header(&got.headers, "x-powered-by").is_none()
                && header(&got.headers, "x-tollgate") == Some("demo"),
            "{what}: the headers filter did not run in Envoy: {:?}",
            got.headers
        );
        let recorded = e.response.as_ref().context("no recorded response")?;
        ensure!(
            got.status == recorded.status && got.body == recorded.body,
            "{what}: Envoy's replay answered {} instead of the recorded {}",
            got.status,
            recorded.status
        );

        // What reached the upstream: Envoy vs the harness.
        let up = x
            .upstream_request
            .as_ref()
            .with_context(|| format!("{what}: the harness did not forward the request"))?;
        ensure!(
            (&received.method, &received.path, &received.body) == (&up.method, &up.path, &up.body),
            "{what}: the upstream got {} {} ({} body bytes) from Envoy, {} {} ({}) from the harness",
            received.method,
            received.path,
            received.body.len(),
            up.method,
            up.path,
            up.body.len()
        );
        ensure!(
            header(&received.headers, "host") == Some(up.authority.as_str()),
            "{what}: host {:?} from Envoy, authority {:?} from the harness",
            header(&received.headers, "host"),
            up.authority
        );
        headers::assert_same(
            &format!("{what}: headers at the upstream"),
            &received.headers,
            &up.headers,
            ENVOY_REQUEST_HEADERS,
        )?;
    }
    ensure!(
        upstream.errors().is_empty(),
        "replay upstream protocol errors: {:?}",
        upstream.errors()
    );
    Ok(())
}
