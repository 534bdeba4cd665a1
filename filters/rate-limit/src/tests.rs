//! Native tests of the filter: the demo configuration's routes, several VMs sharing buckets,
//! refill, shadow mode, descriptors, headers, metrics and configuration errors.

use std::rc::Rc;

use tollgate_sdk::metrics::{mock as metrics, stat_name};
use tollgate_sdk::{ConfigError, HeaderList, HttpFilter, LocalReply, Request, Response};

use crate::config::METRIC;
use crate::{RateLimitConfig, RateLimitFilter, env};

const DEMO: &str = include_str!("../demo.json");
const S: u64 = 1_000_000_000;
const T0: u64 = 1_767_225_600 * S;

fn config(json: &str) -> Result<Rc<RateLimitConfig>, ConfigError> {
    tollgate_sdk::config::parse::<RateLimitConfig>(json.as_bytes()).map(Rc::new)
}

fn fresh(now: u64) {
    env::mock::reset_store();
    env::mock::set_now_ns(now);
    tollgate_sdk::peer::mock::set_source_address(Some("10.0.0.7:51234"));
}

/// One request through a new stream of `config` (one "VM" per `Rc<RateLimitConfig>`).
fn send(
    config: &Rc<RateLimitConfig>,
    headers: &[(&str, &str)],
) -> (Option<LocalReply>, HeaderList) {
    let mut list: HeaderList = headers.iter().copied().collect();
    let mut filter = RateLimitFilter::new(Rc::clone(config));
    let mut req = Request::new(&mut list);
    filter.on_request_headers(&mut req, true);
    let reply = req.take_local_reply();
    let mut response = HeaderList::from([(":status", "200")]);
    if reply.is_none() {
        filter.on_response_headers(&mut Response::new(&mut response), true);
    }
    (reply, response)
}

fn status(reply: &Option<LocalReply>) -> u16 {
    reply.as_ref().map_or(200, |r| r.status)
}

fn header<'a>(reply: &'a Option<LocalReply>, name: &str) -> Option<&'a str> {
    reply
        .as_ref()?
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn count(limit: &str, result: &str) -> i64 {
    metrics::value(&stat_name(METRIC, &[("limit", limit), ("result", result)])).unwrap_or(0)
}

#[test]
fn login_allows_three_then_429_with_retry_after_and_ietf_headers() -> Result<(), ConfigError> {
    fresh(T0);
    let c = config(DEMO)?;
    let login = [
        (":method", "POST"),
        (":path", "/login"),
        (":authority", "a"),
    ];
    let statuses: Vec<u16> = (0..5).map(|_| status(&send(&c, &login).0)).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (reply, _) = send(&c, &login);
    // One token every 20 s (3 per minute): the next in 20 s.
    assert_eq!(header(&reply, "retry-after"), Some("20"));
    assert_eq!(
        header(&reply, "ratelimit-policy"),
        Some("\"per-ip\";q=10;w=1, \"login\";q=3;w=60")
    );
    assert_eq!(
        header(&reply, "ratelimit"),
        Some("\"per-ip\";r=14;t=1, \"login\";r=0;t=20")
    );
    assert_eq!(reply.map(|r| r.body), Some(b"rate limited\n".to_vec()));
    // Another client is not affected; the same client 20 s later gets one more.
    tollgate_sdk::peer::mock::set_source_address(Some("10.0.0.8:1"));
    assert_eq!(status(&send(&c, &login).0), 200);
    tollgate_sdk::peer::mock::set_source_address(Some("10.0.0.7:2"));
    env::mock::set_now_ns(T0 + 20 * S);
    assert_eq!(status(&send(&c, &login).0), 200);
    assert_eq!(status(&send(&c, &login).0), 429);
    Ok(())
}

#[test]
fn four_vms_sharing_the_buckets_never_admit_more_than_the_limit() -> Result<(), ConfigError> {
    fresh(T0);
    let json = r#"{"limits": [{"name": "all", "key": [], "max_tokens": 10, "tokens_per_fill": 1, "fill_interval_ms": 100}]}"#;
    // Four VMs: four configurations (each with its own per-VM state), one shared store.
    let vms = (0..4)
        .map(|_| config(json))
        .collect::<Result<Vec<_>, _>>()?;
    let mut admitted = 0;
    for i in 0..100 {
        if status(&send(&vms[i % 4], &[(":path", "/")]).0) == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "the burst, once, across four VMs");
    // 1 s later: 10 tokens came back (one per 100 ms), never more than the burst.
    env::mock::set_now_ns(T0 + S);
    let admitted = (0..100)
        .filter(|i| status(&send(&vms[i % 4], &[(":path", "/")]).0) == 200)
        .count();
    assert_eq!(admitted, 10);
    // 1 ms at a time over 1 s: 10 more, one per 100 ms.
    let mut admitted = 0;
    for ms in 1..=1000u64 {
        env::mock::set_now_ns(T0 + S + ms * 1_000_000);
        if status(&send(&vms[(ms % 4) as usize], &[(":path", "/")]).0) == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    Ok(())
}

#[test]
fn shadow_mode_counts_and_logs_but_never_refuses() -> Result<(), ConfigError> {
    fresh(T0);
    let c = config(DEMO)?;
    let search = [(":method", "GET"), (":path", "/search?q=x")];
    let before_allowed = count("per-ip", "allowed");
    let before_shadow = count("per-ip", "shadow_limited");
    for _ in 0..30 {
        let (reply, response) = send(&c, &search);
        assert_eq!(status(&reply), 200);
        assert!(
            response.get_all("ratelimit").is_empty(),
            "shadow adds nothing"
        );
    }
    assert_eq!(count("per-ip", "allowed") - before_allowed, 20);
    assert_eq!(count("per-ip", "shadow_limited") - before_shadow, 10);
    Ok(())
}

#[test]
fn descriptors_combine_and_missing_parts_skip_the_limit() -> Result<(), ConfigError> {
    fresh(T0);
    let c = config(DEMO)?;
    // per-tenant-method: 5 per tenant and method.
    let get = |tenant: &'static str| {
        [
            (":method", "GET"),
            (":path", "/items"),
            ("x-tenant", tenant),
        ]
    };
    let statuses: Vec<u16> = (0..6).map(|_| status(&send(&c, &get("acme")).0)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_eq!(status(&send(&c, &get("globex")).0), 200, "another tenant");
    let post = [
        (":method", "POST"),
        (":path", "/items"),
        ("x-tenant", "acme"),
    ];
    assert_eq!(status(&send(&c, &post).0), 200, "another method");
    // No x-tenant header: that limit is skipped (counted), the others still apply.
    let skipped = count("per-tenant-method", "skipped");
    for _ in 0..10 {
        assert_eq!(
            status(&send(&c, &[(":method", "GET"), (":path", "/items")]).0),
            200
        );
    }
    assert_eq!(count("per-tenant-method", "skipped") - skipped, 10);
    // per-ip (20) still counts all of them: 6 + 1 + 1 + 10 = 18 spent, 2 left.
    let left: Vec<u16> = (0..3)
        .map(|_| status(&send(&c, &[(":method", "GET"), (":path", "/items")]).0))
        .collect();
    assert_eq!(left, [200, 200, 429]);
    Ok(())
}

#[test]
fn consumers_have_their_own_buckets() -> Result<(), ConfigError> {
    fresh(T0);
    let c = config(
        r#"{"limits": [{"name": "c", "key": ["consumer"], "max_tokens": 2, "fill_interval_ms": 60000}]}"#,
    )?;
    let as_ = |who: &'static str| [(":path", "/"), ("x-consumer", who)];
    let a: Vec<u16> = (0..3).map(|_| status(&send(&c, &as_("ann")).0)).collect();
    assert_eq!(a, [200, 200, 429]);
    assert_eq!(status(&send(&c, &as_("bob")).0), 200);
    Ok(())
}

#[test]
fn admitted_responses_carry_the_remaining_quota() -> Result<(), ConfigError> {
    fresh(T0);
    let c = config(DEMO)?;
    let (reply, response) = send(&c, &[(":method", "GET"), (":path", "/login")]);
    assert_eq!(reply, None);
    assert_eq!(
        response.get_all("ratelimit-policy"),
        vec!["\"per-ip\";q=10;w=1, \"login\";q=3;w=60"]
    );
    assert_eq!(
        response.get_all("ratelimit"),
        vec!["\"per-ip\";r=19;t=1, \"login\";r=2;t=20"]
    );
    let (_, response) = send(&c, &[(":method", "GET"), (":path", "/healthz")]);
    assert!(
        response.get_all("ratelimit").is_empty(),
        "no limit on /healthz"
    );
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    let err = |json: &str| match tollgate_sdk::config::parse::<RateLimitConfig>(json.as_bytes()) {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    };
    let l = |extra: &str| {
        format!(
            r#"{{"limits": [{{"name": "a", "key": [], "max_tokens": 1, "fill_interval_ms": 1000{extra}}}]}}"#
        )
    };
    assert!(err(r#"{"limits": []}"#).contains("at limits:"));
    assert!(err(&l(", \"tokens_per_fill\": 0")).contains("limits[0].tokens_per_fill"));
    assert!(
        err(&l("").replace("\"max_tokens\": 1", "\"max_tokens\": 0"))
            .contains("limits[0].max_tokens")
    );
    assert!(err(&l("").replace("1000", "0")).contains("limits[0].fill_interval_ms"));
    assert!(err(&l("").replace("\"a\"", "\"a b\"")).contains("limits[0].name"));
    assert!(err(&l("").replace("[]", "[\"path\", \"path\"]")).contains("limits[0].key[1]"));
    assert!(err(&l("").replace("[]", "[\"ip\"]")).contains("limits[0].key[0]"));
    assert!(
        err(&l("").replace("[]", "[{\"header\": \"bad header\"}]"))
            .contains("limits[0].key[0].header")
    );
    let two = r#"{"limits": [{"name": "a", "key": [], "max_tokens": 1, "fill_interval_ms": 1}, {"name": "a", "key": [], "max_tokens": 1, "fill_interval_ms": 1}]}"#;
    assert!(err(two).contains("limits[1].name"));
    let unknown = l("").replace(
        "]}",
        r#"], "routes": {"routes": [{"match": {"path_prefix": "/"}, "config": {"limits": ["a", "zz"]}}]}}"#,
    );
    assert!(
        err(&unknown).contains("routes.routes[0].config.limits[1]"),
        "{}",
        err(&unknown)
    );
    assert!(err(&l("").replace("]}", "], \"slots\": 0}")).contains("at slots"));
    assert!(err(&l("").replace("]}", "], \"shadwo\": true}")).contains("shadwo"));
}

#[test]
fn envoy_and_istio_files_carry_demo_json() -> Result<(), String> {
    use tollgate_sdk::testing;
    let demo = testing::json(DEMO, "demo.json")?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/rate-limit");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).map_err(|e| format!("{f}: {e}"));
    testing::check_bootstrap("rate-limit", &read("envoy.yaml")?, &demo)?;
    testing::check_wasmplugin("rate-limit", &read("wasmplugin.yaml")?, &demo)?;
    Ok(())
}
