//! Native tests of the filter: configuration errors and header mutation over `HeaderList`s.

use std::rc::Rc;

use tollgate_sdk::{ConfigError, HeaderList, HttpFilter, Request, Response};

use crate::{HeadersConfig, HeadersFilter};

fn config(json: &str) -> Result<HeadersConfig, ConfigError> {
    tollgate_sdk::config::parse::<HeadersConfig>(json.as_bytes())
}

fn filter(json: &str) -> Result<HeadersFilter, ConfigError> {
    Ok(HeadersFilter::new(Rc::new(config(json)?)))
}

/// Runs `json` over one exchange and returns the (request, response) headers after it.
fn run(
    json: &str,
    request: &[(&str, &str)],
    response: &[(&str, &str)],
) -> Result<(HeaderList, HeaderList), ConfigError> {
    let mut filter = filter(json)?;
    let mut req: HeaderList = request.iter().copied().collect();
    let mut resp: HeaderList = response.iter().copied().collect();
    let mut view = Request::new(&mut req);
    filter.on_request_headers(&mut view, true);
    assert!(view.local_reply().is_none());
    filter.on_response_headers(&mut Response::new(&mut resp), true);
    Ok((req, resp))
}

fn error(json: &str) -> String {
    match config(json) {
        Ok(parsed) => format!("accepted: {parsed:?}"),
        Err(err) => err.to_string(),
    }
}

fn list(pairs: &[(&str, &str)]) -> HeaderList {
    pairs.iter().copied().collect()
}

#[test]
fn set_replaces_every_value_or_adds() -> Result<(), ConfigError> {
    let json =
        r#"{"request": {"set": [{"name": "X-A", "value": "new"}, {"name": "x-b", "value": "b"}]}}"#;
    let (req, _) = run(json, &[("x-a", "1"), ("x-c", "c"), ("x-a", "2")], &[])?;
    assert_eq!(req, list(&[("x-a", "new"), ("x-c", "c"), ("x-b", "b")]));
    Ok(())
}

#[test]
fn append_keeps_existing_values() -> Result<(), ConfigError> {
    let json = r#"{"response": {"append": [{"name": "vary", "value": "origin"}]}}"#;
    let (_, resp) = run(json, &[], &[("vary", "accept-encoding")])?;
    assert_eq!(resp.get_all("vary"), vec!["accept-encoding", "origin"]);
    let (_, resp) = run(json, &[], &[])?;
    assert_eq!(resp.get_all("vary"), vec!["origin"]);
    Ok(())
}

#[test]
fn add_if_absent_only_adds_missing_headers() -> Result<(), ConfigError> {
    let json =
        r#"{"request": {"add_if_absent": [{"name": "x-request-id", "value": "generated"}]}}"#;
    let (req, _) = run(json, &[("x-request-id", "abc")], &[])?;
    assert_eq!(req.get_all("x-request-id"), vec!["abc"]);
    let (req, _) = run(json, &[], &[])?;
    assert_eq!(req.get_all("x-request-id"), vec!["generated"]);
    Ok(())
}

#[test]
fn overwrite_if_exists_only_changes_present_headers() -> Result<(), ConfigError> {
    let json = r#"{"request": {"overwrite_if_exists": [{"name": "x-forwarded-proto", "value": "https"}]}}"#;
    let (req, _) = run(
        json,
        &[("x-forwarded-proto", "http"), ("x-forwarded-proto", "ws")],
        &[],
    )?;
    assert_eq!(req.get_all("x-forwarded-proto"), vec!["https"]);
    let (req, _) = run(json, &[("accept", "*/*")], &[])?;
    assert_eq!(req, list(&[("accept", "*/*")]));
    Ok(())
}

/// A map that counts the reads a filter makes of single headers (in the proxy each is a host
/// call, and one that finds the header copies its value into the guest).
struct CountingReads {
    headers: HeaderList,
    reads: std::cell::Cell<usize>,
}

impl tollgate_sdk::HeaderMap for CountingReads {
    fn get(&self, name: &str) -> Option<String> {
        self.reads.set(self.reads.get() + 1);
        self.headers.get(name)
    }
    fn pairs(&self) -> Vec<(String, String)> {
        self.headers.pairs()
    }
    fn set(&mut self, name: &str, value: &str) {
        self.headers.set(name, value);
    }
    fn add(&mut self, name: &str, value: &str) {
        self.headers.add(name, value);
    }
    fn remove(&mut self, name: &str) {
        self.headers.remove(name);
    }
    fn contains(&self, name: &str) -> bool {
        self.reads.set(self.reads.get() + 1);
        self.headers.contains(name)
    }
}

/// Header pairs as a test writes them.
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// `add_if_absent` and `overwrite_if_exists` render their value before asking the host whether
/// the header is there: an entry skipped for an absent `%REQ(...)%` makes no host call.
#[test]
fn conditional_entries_ask_for_the_header_only_with_a_value() -> Result<(), ConfigError> {
    let json = r#"{"response": {
        "add_if_absent": [{"name": "x-request-id", "value": "%REQ(x-request-id)%"}],
        "overwrite_if_exists": [{"name": "x-user", "value": "%REQ(x-user)%"}]
    }}"#;
    // (request, response, reads of the response map, response after)
    let cases: [(Pairs, Pairs, usize, Pairs); 3] = [
        // Neither reference renders: no read.
        (
            &[(":path", "/")],
            &[("x-user", "old")],
            0,
            &[("x-user", "old")],
        ),
        // Both render: one read each.
        (
            &[("x-request-id", "r1"), ("x-user", "ada")],
            &[("x-user", "old")],
            2,
            &[("x-user", "ada"), ("x-request-id", "r1")],
        ),
        // The id renders but the response has one: kept; x-user absent from the response.
        (
            &[("x-request-id", "r1"), ("x-user", "ada")],
            &[("x-request-id", "up")],
            2,
            &[("x-request-id", "up")],
        ),
    ];
    for (request, response, reads, expected) in cases {
        let mut filter = filter(json)?;
        let mut req: HeaderList = request.iter().copied().collect();
        filter.on_request_headers(&mut Request::new(&mut req), true);
        let mut map = CountingReads {
            headers: response.iter().copied().collect(),
            reads: std::cell::Cell::new(0),
        };
        filter.on_response_headers(&mut Response::new(&mut map), true);
        assert_eq!(map.reads.get(), reads, "{request:?} -> {response:?}");
        assert_eq!(map.headers, list(expected), "{request:?} -> {response:?}");
    }
    Ok(())
}

#[test]
fn remove_by_name_and_by_prefix_ignores_case() -> Result<(), ConfigError> {
    let json = r#"{"response": {"remove": ["Server"], "remove_prefix": ["X-Internal-", "x-b"]}}"#;
    let (_, resp) = run(
        json,
        &[],
        &[
            (":status", "200"),
            ("server", "nginx"),
            ("X-Internal-Trace", "1"),
            ("x-internal-node", "a"),
            ("x-internal-node", "b"),
            ("x-bar", "1"),
            ("x-internals", "kept"),
            ("content-type", "text/html"),
        ],
    )?;
    assert_eq!(
        resp,
        list(&[
            (":status", "200"),
            ("x-internals", "kept"),
            ("content-type", "text/html")
        ])
    );
    Ok(())
}

#[test]
fn removals_happen_before_additions() -> Result<(), ConfigError> {
    let json = r#"{"response": {
        "set": [{"name": "server", "value": "tollgate"}],
        "remove": ["server"],
        "add_if_absent": [{"name": "x-a", "value": "added"}],
        "remove_prefix": ["x-"]
    }}"#;
    let (_, resp) = run(json, &[], &[("server", "nginx"), ("x-a", "old")])?;
    assert_eq!(resp, list(&[("server", "tollgate"), ("x-a", "added")]));
    Ok(())
}

#[test]
fn req_references_copy_request_headers() -> Result<(), ConfigError> {
    let json = r#"{
        "request": {"set": [{"name": "x-user-copy", "value": "user=%REQ(X-User)% (100%%)"}]},
        "response": {"set": [{"name": "x-echo-host", "value": "%REQ(:authority)%"}]}
    }"#;
    let (req, resp) = run(
        json,
        &[(":authority", "shop.example.com"), ("x-user", "ada")],
        &[(":status", "200")],
    )?;
    assert_eq!(req.get_all("x-user-copy"), vec!["user=ada (100%)"]);
    assert_eq!(resp.get_all("x-echo-host"), vec!["shop.example.com"]);
    Ok(())
}

#[test]
fn references_see_the_request_as_it_arrived() -> Result<(), ConfigError> {
    // `x-a` is removed and `x-b` copies it: the copy reads the original request.
    let json =
        r#"{"request": {"remove": ["x-a"], "set": [{"name": "x-b", "value": "%REQ(x-a)%"}]}}"#;
    let (req, _) = run(json, &[("x-a", "orig")], &[])?;
    assert_eq!(req, list(&[("x-b", "orig")]));
    Ok(())
}

#[test]
fn missing_reference_skips_the_entry_unless_told_empty() -> Result<(), ConfigError> {
    let json = r#"{"request": {"set": [
        {"name": "x-skipped", "value": "u=%REQ(x-user)%"},
        {"name": "x-empty", "value": "u=%REQ(x-user)%", "on_missing": "empty"},
        {"name": "x-existing", "value": "%REQ(x-user)%"}
    ]}}"#;
    let (req, _) = run(json, &[("x-existing", "kept")], &[])?;
    assert_eq!(req, list(&[("x-existing", "kept"), ("x-empty", "u=")]));
    Ok(())
}

#[test]
fn rules_apply_only_when_all_conditions_hold() -> Result<(), ConfigError> {
    let json = r#"{"rules": [
        {"when": [{"present": "authorization"}, {"equals": {"header": ":method", "value": "POST"}}],
         "request": {"set": [{"name": "x-auth-post", "value": "yes"}]},
         "response": {"set": [{"name": "cache-control", "value": "no-store"}]}},
        {"when": [{"absent": "authorization"}],
         "request": {"set": [{"name": "x-anonymous", "value": "yes"}]}}
    ]}"#;
    let (req, resp) = run(
        json,
        &[(":method", "POST"), ("authorization", "Bearer t")],
        &[("cache-control", "max-age=60")],
    )?;
    assert_eq!(req.get_all("x-auth-post"), vec!["yes"]);
    assert!(req.get_all("x-anonymous").is_empty());
    assert_eq!(resp.get_all("cache-control"), vec!["no-store"]);

    let (req, resp) = run(
        json,
        &[(":method", "GET"), ("authorization", "Bearer t")],
        &[("cache-control", "max-age=60")],
    )?;
    assert!(req.get_all("x-auth-post").is_empty());
    assert!(req.get_all("x-anonymous").is_empty());
    assert_eq!(resp.get_all("cache-control"), vec!["max-age=60"]);

    let (req, _) = run(json, &[(":method", "POST")], &[])?;
    assert_eq!(req, list(&[(":method", "POST"), ("x-anonymous", "yes")]));
    Ok(())
}

#[test]
fn equals_matches_any_value_of_a_repeated_header() -> Result<(), ConfigError> {
    let json = r#"{"rules": [{"when": [{"equals": {"header": "x-env", "value": "staging"}}],
        "request": {"append": [{"name": "x-matched", "value": "1"}]}}]}"#;
    let (req, _) = run(json, &[("x-env", "prod"), ("x-env", "staging")], &[])?;
    assert_eq!(req.get_all("x-matched"), vec!["1"]);
    let (req, _) = run(json, &[("x-env", "Staging")], &[])?;
    assert!(req.get_all("x-matched").is_empty());
    Ok(())
}

#[test]
fn conditions_see_the_request_before_this_filters_changes() -> Result<(), ConfigError> {
    let json = r#"{
        "request": {"set": [{"name": "x-flag", "value": "on"}]},
        "rules": [{"when": [{"absent": "x-flag"}], "response": {"set": [{"name": "x-had-flag", "value": "no"}]}}]
    }"#;
    let (req, resp) = run(json, &[], &[])?;
    assert_eq!(req.get_all("x-flag"), vec!["on"]);
    assert_eq!(resp.get_all("x-had-flag"), vec!["no"]);
    Ok(())
}

#[test]
fn rules_run_after_the_top_level_changes_in_order() -> Result<(), ConfigError> {
    let json = r#"{
        "request": {"set": [{"name": "x-order", "value": "top"}]},
        "rules": [
            {"when": [{"present": "x-a"}], "request": {"append": [{"name": "x-order", "value": "rule0"}]}},
            {"when": [{"present": "x-a"}], "request": {"append": [{"name": "x-order", "value": "rule1"}]}}
        ]
    }"#;
    let (req, _) = run(json, &[("x-a", "")], &[])?;
    assert_eq!(req.get_all("x-order"), vec!["top", "rule0", "rule1"]);
    Ok(())
}

#[test]
fn response_without_request_phase_counts_as_a_request_without_headers() -> Result<(), ConfigError> {
    let mut filter = filter(
        r#"{"rules": [{"when": [{"absent": "authorization"}],
            "response": {"set": [{"name": "x-anon", "value": "1"}]}}],
           "response": {"set": [{"name": "x-copy", "value": "%REQ(x-user)%"}]}}"#,
    )?;
    let mut resp = list(&[(":status", "503")]);
    filter.on_response_headers(&mut Response::new(&mut resp), true);
    assert_eq!(resp, list(&[(":status", "503"), ("x-anon", "1")]));
    Ok(())
}

#[test]
fn empty_configuration_changes_nothing() -> Result<(), ConfigError> {
    let request = [(":path", "/"), ("authorization", "x")];
    let response = [(":status", "200"), ("server", "nginx")];
    let (req, resp) = run("", &request, &response)?;
    assert_eq!((req, resp), (list(&request), list(&response)));
    let (req, resp) = run("{}", &request, &response)?;
    assert_eq!((req, resp), (list(&request), list(&response)));
    Ok(())
}

#[test]
fn demo_configuration_on_a_typical_exchange() -> Result<(), ConfigError> {
    let demo = include_str!("../demo.json");
    let (req, resp) = run(
        demo,
        &[
            (":method", "GET"),
            (":authority", "shop.example.com"),
            (":path", "/api/cart"),
            ("authorization", "Bearer abc"),
            ("x-request-id", "req-1"),
            ("x-debug-user", "me"),
        ],
        &[
            (":status", "200"),
            ("server", "nginx/1.25"),
            ("cache-control", "max-age=600"),
            ("x-powered-by", "Express"),
        ],
    )?;
    assert_eq!(req.get_all("x-tollgate"), vec!["demo"]);
    assert_eq!(req.get_all("x-original-host"), vec!["shop.example.com"]);
    assert_eq!(req.get_all("x-tollgate-auth"), vec!["present"]);
    assert_eq!(req.get_all("via"), vec!["1.1 tollgate"]);
    assert!(req.get_all("x-debug-user").is_empty());
    assert_eq!(
        resp,
        list(&[
            (":status", "200"),
            ("cache-control", "private, no-store"),
            (
                "strict-transport-security",
                "max-age=31536000; includeSubDomains"
            ),
            ("x-content-type-options", "nosniff"),
            ("x-tollgate", "demo"),
            ("referrer-policy", "strict-origin-when-cross-origin"),
            ("x-request-id", "req-1"),
        ])
    );

    // Anonymous request without an id: no auth marker, cache-control untouched, no x-request-id.
    let (req, resp) = run(
        demo,
        &[(":path", "/")],
        &[(":status", "200"), ("cache-control", "max-age=600")],
    )?;
    assert!(req.get_all("x-tollgate-auth").is_empty());
    assert!(req.get_all("x-original-host").is_empty());
    assert_eq!(resp.get_all("cache-control"), vec!["max-age=600"]);
    assert!(resp.get_all("x-request-id").is_empty());
    Ok(())
}

#[test]
fn readme_example_is_valid() {
    let readme = include_str!("../README.md");
    let start = readme.find("```json").map(|i| i + "```json".len());
    let example = start.and_then(|s| readme[s..].find("```").map(|e| &readme[s..s + e]));
    let parsed = example.map(config);
    assert!(matches!(parsed, Some(Ok(_))), "{parsed:?}");
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            r#"{"request": {"set": [{"value": "x"}]}}"#,
            "bad configuration at request.set[0]: missing field `name` (line 1, column 35)",
        ),
        (
            r#"{"request": {"set": [{"name": ":path", "value": "/x"}]}}"#,
            "bad configuration at request.set[0].name: \":path\" is a pseudo-header, which this filter does not change (rewrite paths and hosts in the route configuration) (line 1, column 37)",
        ),
        (
            r#"{"response": {"append": [{"name": "x bad", "value": "1"}]}}"#,
            "bad configuration at response.append[0].name: header name \"x bad\" contains ' ' at byte 1; names may only use letters, digits and !#$%&'*+-.^_`|~ (line 1, column 41)",
        ),
        (
            r#"{"request": {"remove": ["x-a", ""]}}"#,
            "bad configuration at request.remove[1]: header name is empty (line 1, column 34)",
        ),
        (
            r#"{"request": {"add": []}}"#,
            "bad configuration at request.add: unknown field `add`, expected one of `remove`, `remove_prefix`, `set`, `append`, `add_if_absent`, `overwrite_if_exists` (line 1, column 18)",
        ),
        (
            r#"{"request": {"set": [{"name": "a", "value": "1", "append": true}]}}"#,
            "bad configuration at request.set[0].append: unknown field `append`, expected one of `name`, `value`, `on_missing` (line 1, column 57)",
        ),
        (
            r#"{"response": {"set": [{"name": "a", "value": "1"}, {"name": "b", "value": "50%"}]}}"#,
            "bad configuration at response.set[1].value: '%' at byte 2 starts no reference: write %% for a literal '%', or %REQ(header-name)% (line 1, column 80)",
        ),
        (
            r#"{"request": {"set": [{"name": "a", "value": "x", "on_missing": "drop"}]}}"#,
            "bad configuration at request.set[0].on_missing: unknown variant (4 bytes, not shown), expected `skip` or `empty` (line 1, column 69)",
        ),
        (
            r#"{"rules": [{"when": [{"exists": "a"}], "request": {}}]}"#,
            "bad configuration at rules[0].when[0]: unknown variant (6 bytes, not shown), expected one of `present`, `absent`, `equals` (line 1, column 30)",
        ),
        (
            r#"{"rules": [{"when": [{"equals": {"header": "a"}}], "request": {"remove": ["b"]}}]}"#,
            "bad configuration at rules[0].when[0].equals: missing field `value` (line 1, column 47)",
        ),
        (
            r#"{"rules": [{"when": [], "request": {"remove": ["b"]}}]}"#,
            "bad configuration at rules[0].when: a rule needs at least one condition (put unconditional changes in the top-level `request` and `response`)",
        ),
        (
            r#"{"rules": [{"when": [{"present": "a"}]}]}"#,
            "bad configuration at rules[0]: the rule changes nothing: give it `request` or `response` changes",
        ),
        (
            r#"{"response": {"set": [{"name": "a", "value": "1"}, {"name": "A", "value": "2"}]}}"#,
            "bad configuration at response.set[1].name: `a` is already set by response.set[0]; the second would silently win",
        ),
        (
            r#"{"request": {"set": [{"name": "Host", "value": "x"}]}}"#,
            "bad configuration at request.set[0].name: \"host\" is carried as the :authority pseudo-header, which this filter does not change (line 1, column 36)",
        ),
        (
            r#"{"request": {"remove_prefix": [":"]}}"#,
            "bad configuration at request.remove_prefix[0]: \":\" is a pseudo-header, which this filter does not change (rewrite paths and hosts in the route configuration) (line 1, column 35)",
        ),
        (
            r#"{"rules": [{"when": [{"present": ":bogus"}], "request": {"remove": ["b"]}}]}"#,
            "bad configuration at rules[0].when[0].present: \":bogus\" is not a pseudo-header; known ones are :authority, :method, :path, :protocol, :scheme, :status (line 1, column 41)",
        ),
        (
            r#"{"request": {"set": [{"name": "a", "value": "%REQ(x y)%"}]}}"#,
            "bad configuration at request.set[0].value: %REQ(x y)%: header name \"x y\" contains ' ' at byte 1; names may only use letters, digits and !#$%&'*+-.^_`|~ (line 1, column 57)",
        ),
        (
            r#""headers""#,
            // The value is never quoted (configurations hold secrets): its kind and size are.
            "bad configuration: invalid type: a string of 7 bytes, expected struct HeadersConfig (line 1, column 9)",
        ),
    ];
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(json, expected)| {
            let actual = error(json);
            (actual != *expected)
                .then(|| format!("{json}\n  expected: {expected}\n  actual:   {actual}"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// `envoy/headers/envoy.yaml` and `wasmplugin.yaml` must carry exactly `demo.json`.
mod deployment_files {
    use serde_json::Value;
    use tollgate_sdk::testing::{BOOTSTRAP_WASM, at, check_bootstrap, check_wasmplugin, json};

    fn demo() -> Result<Value, String> {
        json(include_str!("../demo.json"), "demo.json")
    }

    #[test]
    fn envoy_bootstrap_embeds_the_demo_configuration() -> Result<(), String> {
        let file = "envoy/headers/envoy.yaml";
        let text = include_str!("../../../envoy/headers/envoy.yaml");
        let (bootstrap, embedded) = check_bootstrap("headers", text, &demo()?)?;
        let wasm = at(&bootstrap, BOOTSTRAP_WASM, file)?;
        assert_eq!(
            at(wasm, "/@type", file)?,
            "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
        );
        let configuration = at(wasm, "/config/configuration", file)?;
        assert_eq!(
            at(configuration, "/@type", file)?,
            "type.googleapis.com/google.protobuf.StringValue"
        );
        assert!(super::config(&embedded).is_ok());
        Ok(())
    }

    #[test]
    fn wasmplugin_carries_the_demo_configuration() -> Result<(), String> {
        let config = check_wasmplugin(
            "headers",
            include_str!("../../../envoy/headers/wasmplugin.yaml"),
            &demo()?,
        )?;
        assert!(super::config(&config).is_ok());
        Ok(())
    }
}
