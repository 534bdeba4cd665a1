//! Native tests: allow and deny lists, IPv6 and mapped addresses, `X-Forwarded-For` with and
//! without trusted hops (spoofing), refusals, metrics and configuration errors.

use std::rc::Rc;

use tollgate_sdk::metrics::{mock as metrics, stat_name};
use tollgate_sdk::{ConfigError, HeaderList, HeaderMap, HttpFilter, Request};

use crate::{IpRestrictionConfig, IpRestrictionFilter, METRIC};

const DEMO: &str = include_str!("../demo.json");

fn config(json: &str) -> Result<Rc<IpRestrictionConfig>, ConfigError> {
    tollgate_sdk::config::parse::<IpRestrictionConfig>(json.as_bytes()).map(Rc::new)
}

/// The status a request from `peer` with these `x-forwarded-for` values gets.
fn status(config: &Rc<IpRestrictionConfig>, peer: Option<&str>, xff: &[&str]) -> u16 {
    tollgate_sdk::peer::mock::set_source_address(peer);
    let mut headers = HeaderList::from([(":path", "/")]);
    for v in xff {
        headers.add("x-forwarded-for", v);
    }
    let mut req = Request::new(&mut headers);
    IpRestrictionFilter::new(Rc::clone(config)).on_request_headers(&mut req, true);
    req.local_reply().map_or(200, |r| r.status)
}

fn count(result: &str, reason: &str) -> i64 {
    metrics::value(&stat_name(
        METRIC,
        &[("result", result), ("reason", reason)],
    ))
    .unwrap_or(0)
}

#[test]
fn peer_address_against_allow_and_deny() -> Result<(), ConfigError> {
    let c = config(&DEMO.replace("\"xff_trusted_hops\": 1", "\"xff_trusted_hops\": 0"))?;
    for (peer, expected) in [
        ("10.1.2.3:40000", 200),
        ("10.66.0.1:40000", 403),
        ("192.168.13.37:1", 403),
        ("192.168.13.38:1", 200),
        ("203.0.113.5:1", 403),
        ("[2001:db8::1]:443", 200),
        ("[2001:db8:bad::1]:443", 403),
        ("[2001:db9::1]:443", 403),
        ("[::ffff:10.66.3.3]:1", 403),
        ("[::ffff:10.1.3.3]:1", 200),
        ("[::1]:8080", 200),
        ("127.0.0.1:8080", 200),
    ] {
        assert_eq!(status(&c, Some(peer), &[]), expected, "{peer}");
    }
    assert_eq!(status(&c, None, &[]), 403, "no peer address: refused");
    Ok(())
}

#[test]
fn with_no_trusted_hop_a_spoofed_forwarded_for_changes_nothing() -> Result<(), ConfigError> {
    let c = config(&DEMO.replace("\"xff_trusted_hops\": 1", "\"xff_trusted_hops\": 0"))?;
    let outsider = Some("203.0.113.5:1");
    for xff in [
        vec!["10.1.1.1"],
        vec!["10.1.1.1, 127.0.0.1"],
        vec!["127.0.0.1", "10.1.1.1"],
        vec!["::1"],
    ] {
        assert_eq!(status(&c, outsider, &xff), 403, "{xff:?}");
    }
    // And an insider is not refused because of what it claims.
    assert_eq!(status(&c, Some("10.1.1.1:1"), &["10.66.0.1"]), 200);
    Ok(())
}

#[test]
fn one_trusted_hop_takes_the_entry_it_appended() -> Result<(), ConfigError> {
    let c = config(DEMO)?;
    let lb = Some("10.0.0.2:1"); // our load balancer
    let before = count("denied", "not_allowed");
    // The client's own (forgeable) entries come first; the LB appends the address it saw.
    assert_eq!(status(&c, lb, &["10.1.1.1"]), 200);
    assert_eq!(status(&c, lb, &["203.0.113.9, 10.1.1.1"]), 200);
    assert_eq!(
        status(&c, lb, &["10.1.1.1, 198.51.100.7"]),
        403,
        "forged allowed entry before the real one"
    );
    assert_eq!(
        status(&c, lb, &["10.1.1.1", "198.51.100.7"]),
        403,
        "two headers are one list"
    );
    assert_eq!(status(&c, lb, &["10.1.1.1,198.51.100.7"]), 403);
    assert_eq!(
        status(&c, lb, &["10.66.9.9"]),
        403,
        "denied client behind the LB"
    );
    assert_eq!(count("denied", "not_allowed") - before, 3);
    // No entry: the request did not come through the LB, the peer decides.
    assert_eq!(status(&c, Some("198.51.100.7:1"), &[]), 403);
    assert_eq!(status(&c, Some("10.1.1.1:1"), &[]), 200);
    // An entry that is not an address: refused, not skipped.
    let before = count("denied", "no_address");
    assert_eq!(status(&c, lb, &["10.1.1.1, not-an-ip"]), 403);
    assert_eq!(status(&c, lb, &["10.1.1.1, "]), 403);
    assert_eq!(count("denied", "no_address") - before, 2);
    // IPv6 entries, with or without brackets and ports.
    assert_eq!(status(&c, lb, &["2001:db8::7"]), 200);
    assert_eq!(status(&c, lb, &["[2001:db8:bad::7]:555"]), 403);
    Ok(())
}

#[test]
fn two_trusted_hops() -> Result<(), ConfigError> {
    let c = config(&DEMO.replace("\"xff_trusted_hops\": 1", "\"xff_trusted_hops\": 2"))?;
    let lb = Some("10.0.0.2:1");
    assert_eq!(
        status(&c, lb, &["10.1.1.1, 203.0.113.1"]),
        200,
        "the CDN's entry, then the LB's"
    );
    assert_eq!(status(&c, lb, &["203.0.113.1, 10.1.1.1"]), 403);
    assert_eq!(
        status(&c, lb, &["10.1.1.1"]),
        200,
        "one entry: the peer decides"
    );
    Ok(())
}

#[test]
fn refusal_is_configurable_and_deny_only_lists_admit_the_rest() -> Result<(), ConfigError> {
    let c = config(r#"{"deny": ["198.51.100.0/24"], "status": 451, "body": "no\n"}"#)?;
    assert_eq!(status(&c, Some("198.51.100.7:1"), &[]), 451);
    assert_eq!(status(&c, Some("203.0.113.1:1"), &[]), 200);
    Ok(())
}

#[test]
fn bad_configurations_name_the_field() {
    let err = |json: &str| match tollgate_sdk::config::parse::<IpRestrictionConfig>(json.as_bytes())
    {
        Ok(_) => format!("accepted: {json}"),
        Err(e) => e.to_string(),
    };
    assert!(err(r#"{"allow": ["10.0.0.0/8", "10.0.0.1/8"]}"#).contains("at allow[1]"));
    assert!(err(r#"{"deny": ["300.0.0.0/8"]}"#).contains("at deny[0]"));
    assert!(err(r#"{"deny": ["::/129"]}"#).contains("deny[0]"));
    assert!(err(r#"{}"#).contains("give `allow`, `deny` or both"));
    assert!(err(r#"{"deny": ["::/0"], "xff_trusted_hops": 99}"#).contains("at xff_trusted_hops"));
    assert!(err(r#"{"deny": ["::/0"], "status": 42}"#).contains("at status"));
    assert!(err(r#"{"deny": ["::/0"], "allowed": []}"#).contains("allowed"));
}

#[test]
fn envoy_and_istio_files_carry_demo_json() -> Result<(), String> {
    use tollgate_sdk::testing;
    let demo = testing::json(DEMO, "demo.json")?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/ip-restriction");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).map_err(|e| format!("{f}: {e}"));
    testing::check_bootstrap("ip-restriction", &read("envoy.yaml")?, &demo)?;
    testing::check_wasmplugin("ip-restriction", &read("wasmplugin.yaml")?, &demo)?;
    Ok(())
}
