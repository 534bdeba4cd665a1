//! Native tests: the validator keyword by keyword, refusals naming the field, the filter's
//! answers, and properties over generated documents and chunkings.

// Test code: a failed expectation panics with the case that failed.
#![allow(clippy::panic)]

use std::rc::Rc;

use serde_json::{Value, json};
use tollgate_sdk::body::{self, Outcome};
use tollgate_sdk::{HeaderList, HttpFilter, Request};

use crate::schema::Schema;
use crate::{RequestValidationFilter, ValidationConfig};

fn schema(v: Value) -> Schema {
    match Schema::compile(&v) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    }
}

/// (pointer, keyword) of each failure.
fn failures(s: &Schema, v: Value) -> Vec<(String, &'static str)> {
    s.validate(&v)
        .into_iter()
        .map(|f| (f.pointer, f.keyword))
        .collect()
}

fn at(pointer: &str, keyword: &'static str) -> Vec<(String, &'static str)> {
    vec![(pointer.to_string(), keyword)]
}

#[test]
fn keywords() {
    let s = schema(json!({
        "type": "object",
        "required": ["id", "items"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "integer", "minimum": 1, "multipleOf": 2},
            "name": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
            "kind": {"enum": ["a", 1, null]},
            "v": {"const": {"x": [1]}},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "items": {"type": "array", "minItems": 1, "maxItems": 2, "uniqueItems": true,
                      "items": {"$ref": "#/$defs/item"}},
            "pair": {"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false},
            "tags": {"contains": {"const": "x"}, "minContains": 2},
            "meta": {"propertyNames": {"pattern": "^[a-z_]+$"}, "minProperties": 1,
                     "patternProperties": {"^n_": {"type": "number"}},
                     "dependentRequired": {"a": ["b"]}},
            "choice": {"oneOf": [{"type": "string"}, {"minLength": 1}]},
            "any": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "nope": {"not": {"type": "string"}},
            "cond": {"if": {"minimum": 10}, "then": {"multipleOf": 10}, "else": {"maximum": 5}}
        },
        "$defs": {"item": {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer", "minimum": 1}}}}
    }));
    let ok = json!({"id": 2, "items": [{"qty": 1}], "name": "ab", "kind": null, "v": {"x": [1.0]},
        "ratio": 0.5, "pair": ["a", 1], "tags": ["x", "y", "x"], "meta": {"n_a": 1, "a": 1, "b": 2},
        "choice": 3, "any": true, "nope": 1, "cond": 20});
    assert_eq!(failures(&s, ok), vec![]);
    let base = json!({"id": 2, "items": [{"qty": 1}]});
    let with = |k: &str, v: Value| {
        let mut doc = base.clone();
        doc[k] = v;
        doc
    };
    assert_eq!(
        failures(&s, json!({"items": [{"qty": 1}]})),
        at("/id", "required")
    );
    assert_eq!(failures(&s, with("id", json!(0))), at("/id", "minimum"));
    assert_eq!(failures(&s, with("id", json!(3))), at("/id", "multipleOf"));
    assert_eq!(failures(&s, with("id", json!(2.0))), vec![]);
    assert_eq!(failures(&s, with("id", json!("2"))), at("/id", "type"));
    assert_eq!(
        failures(&s, with("name", json!("é"))),
        vec![("/name".into(), "minLength"), ("/name".into(), "pattern")]
    );
    assert_eq!(
        failures(&s, with("name", json!("abcd"))),
        at("/name", "maxLength")
    );
    assert_eq!(failures(&s, with("kind", json!("b"))), at("/kind", "enum"));
    assert_eq!(
        failures(&s, with("v", json!({"x": [2]}))),
        at("/v", "const")
    );
    assert_eq!(
        failures(&s, with("ratio", json!(1))),
        at("/ratio", "exclusiveMaximum")
    );
    assert_eq!(
        failures(&s, with("items", json!([]))),
        at("/items", "minItems")
    );
    assert_eq!(
        failures(&s, with("items", json!([{"qty": 1}, {"qty": 1.0}]))),
        at("/items", "uniqueItems")
    );
    assert_eq!(
        failures(&s, with("items", json!([{"qty": 0}]))),
        at("/items/0/qty", "minimum")
    );
    assert_eq!(
        failures(&s, with("items", json!([{}]))),
        at("/items/0/qty", "required")
    );
    assert_eq!(
        failures(&s, with("pair", json!(["a", 1, 2]))),
        at("/pair/2", "false")
    );
    assert_eq!(
        failures(&s, with("tags", json!(["x"]))),
        at("/tags", "contains")
    );
    assert_eq!(
        failures(&s, with("meta", json!({"A": 1}))),
        at("/meta/A", "propertyNames")
    );
    assert_eq!(
        failures(&s, with("meta", json!({"n_x": "1"}))),
        at("/meta/n_x", "type")
    );
    assert_eq!(
        failures(&s, with("meta", json!({"a": 1}))),
        at("/meta/b", "dependentRequired")
    );
    assert_eq!(
        failures(&s, with("meta", json!({}))),
        at("/meta", "minProperties")
    );
    assert_eq!(
        failures(&s, with("choice", json!("x"))),
        at("/choice", "oneOf")
    );
    assert_eq!(failures(&s, with("any", json!(1))), at("/any", "anyOf"));
    assert_eq!(failures(&s, with("nope", json!("s"))), at("/nope", "not"));
    assert_eq!(
        failures(&s, with("cond", json!(15))),
        at("/cond", "multipleOf")
    );
    assert_eq!(failures(&s, with("cond", json!(7))), at("/cond", "maximum"));
    assert_eq!(
        failures(&s, with("extra", json!(1))),
        at("/extra", "additionalProperties")
    );
    assert_eq!(
        failures(&s, with("a/b~c", json!(1))),
        at("/a~1b~0c", "additionalProperties")
    );
}

#[test]
fn recursive_references_and_limits() {
    let tree = schema(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.com/tree",
        "type": "object",
        "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#"}}}
    }));
    assert_eq!(
        failures(&tree, json!({"children": [{"children": [{"value": "x"}]}]})),
        at("/children/0/children/0/value", "type")
    );
    // Deep instances stop with a failure, not a stack overflow.
    let mut deep = json!({});
    for _ in 0..200 {
        deep = json!({"children": [deep]});
    }
    assert!(!tree.validate(&deep).is_empty());
    // At most ten failures.
    let many = schema(json!({"items": {"type": "string"}}));
    assert_eq!(
        many.validate(&json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]))
            .len(),
        10
    );
}

#[test]
fn schemas_are_refused_naming_the_keyword() {
    for (bad, at, message) in [
        (
            json!({"unevaluatedProperties": false}),
            "unevaluatedProperties",
            "not supported",
        ),
        (
            json!({"properties": {"a": {"minimum": "1"}}}),
            "properties.a.minimum",
            "expected a number",
        ),
        (
            json!({"$ref": "other.json#/a"}),
            "$ref",
            "only references inside",
        ),
        (
            json!({"$ref": "#/$defs/missing"}),
            "$ref",
            "not in this schema",
        ),
        (
            json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            "$ref",
            "cycle",
        ),
        (json!({"pattern": "("}), "pattern", ""),
        (json!({"type": "int"}), "type", "type name"),
        (
            json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
            "$schema",
            "2020-12",
        ),
        (json!({"allOf": []}), "allOf", "non-empty"),
        (json!(3), "", "object or a boolean"),
        (json!({"multipleOf": 0}), "multipleOf", "greater than 0"),
    ] {
        match Schema::compile(&bad) {
            Ok(_) => panic!("accepted {bad}"),
            Err(e) => {
                assert_eq!(e.at, at, "{bad}: {e:?}");
                assert!(e.message.contains(message), "{bad}: {e:?}");
            }
        }
    }
}

fn config(json: &str) -> Rc<ValidationConfig> {
    match tollgate_sdk::config::parse::<ValidationConfig>(json.as_bytes()) {
        Ok(c) => Rc::new(c),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn configurations_are_refused_naming_the_field() {
    for (bad, field) in [
        (
            r#"{"default": {"body_schema": {"type": "objekt"}}}"#,
            "default.body_schema.type",
        ),
        (
            r#"{"routes": [{"match": {"path_prefix": "/a"}, "config": {"query_schema": {"properties": {"p": {"maxLength": -1}}}}}]}"#,
            "routes[0].config.query_schema.properties.p.maxLength",
        ),
        (r#"{"default": {}}"#, "default.body_schema"),
        (
            r#"{"default": {"body_schema": true, "max_body_bytes": 0}}"#,
            "default.max_body_bytes",
        ),
    ] {
        match tollgate_sdk::config::parse::<ValidationConfig>(bad.as_bytes()) {
            Ok(_) => panic!("accepted {bad}"),
            Err(e) => assert!(
                e.to_string().contains(&format!("at {field}:")),
                "{bad}: {e}"
            ),
        }
    }
}

const DEMO: &str = r#"{
  "default": {"body_schema": {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer", "minimum": 1}}}},
  "routes": [{"match": {"path_prefix": "/search"}, "config": {
     "query_schema": {"type": "object", "required": ["q"], "properties": {"q": {"type": "string", "minLength": 1}, "page": {"type": "integer", "minimum": 1}}},
     "headers_schema": {"properties": {"x-tenant": {"type": "string", "pattern": "^[a-z]+$"}}}
  }}]
}"#;

/// The status and problem document of one request (200 and the forwarded body when it passes).
fn run(
    c: &Rc<ValidationConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) -> (u16, Value) {
    let mut filter = RequestValidationFilter::new(Rc::clone(c));
    let mut list = HeaderList::from([(":method", method), (":path", path)]);
    for (n, v) in headers {
        tollgate_sdk::HeaderMap::add(&mut list, n, v);
    }
    let mut req = Request::new(&mut list);
    filter.on_request_headers(&mut req, chunks.is_empty());
    if let Some(reply) = req.take_local_reply() {
        return (
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or_default(),
        );
    }
    if chunks.is_empty() {
        return (200, Value::Null);
    }
    match body::feed_request(&mut filter, chunks) {
        Outcome::Forwarded(b) => (200, Value::String(String::from_utf8_lossy(&b).into_owned())),
        Outcome::Answered(status) => {
            // The reply body: run the buffered callback again to read it.
            let mut f = RequestValidationFilter::new(Rc::clone(c));
            let mut list = HeaderList::from([(":method", method), (":path", path)]);
            for (n, v) in headers {
                tollgate_sdk::HeaderMap::add(&mut list, n, v);
            }
            f.on_request_headers(&mut Request::new(&mut list), false);
            let mut buffer = chunks.concat();
            let mut b = tollgate_sdk::Body::new(&mut buffer);
            f.on_request_body_buffered(&mut b, tollgate_sdk::body::Extent::Whole);
            let reply = b.take_local_reply();
            (
                status,
                reply
                    .map(|r| serde_json::from_slice(&r.body).unwrap_or_default())
                    .unwrap_or_default(),
            )
        }
        Outcome::Paused => (0, Value::Null),
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn the_filter_answers_with_problem_documents() {
    let c = config(DEMO);
    assert_eq!(
        run(&c, "POST", "/orders", &[JSON], &[b"{\"qty\"", b": 2}"]).0,
        200
    );
    let (status, problem) = run(&c, "POST", "/orders", &[JSON], &[b"{\"qty\": 0}"]);
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["pointer"], "/qty");
    assert_eq!(problem["errors"][0]["in"], "body");
    assert_eq!(problem["errors"][0]["keyword"], "minimum");
    let (status, problem) = run(&c, "POST", "/orders", &[JSON], &[b"{\"qty\": "]);
    assert_eq!(status, 400);
    assert_eq!(problem["errors"][0]["keyword"], "json");
    assert_eq!(
        run(
            &c,
            "POST",
            "/orders",
            &[("content-type", "text/plain")],
            &[b"qty=1"]
        )
        .0,
        415
    );
    assert_eq!(run(&c, "POST", "/orders", &[JSON], &[]).0, 400);
    // GET carries no body to check.
    assert_eq!(run(&c, "GET", "/orders", &[], &[]).0, 200);
    // Query and headers on the search route, converted to their declared types.
    assert_eq!(
        run(
            &c,
            "GET",
            "/search?q=shoes&page=2",
            &[("x-tenant", "acme")],
            &[]
        )
        .0,
        200
    );
    let (status, problem) = run(&c, "GET", "/search?q=shoes&page=0", &[], &[]);
    assert_eq!(
        (status, problem["errors"][0]["pointer"].clone()),
        (400, json!("/page"))
    );
    assert_eq!(problem["errors"][0]["in"], "query");
    let (status, problem) = run(&c, "GET", "/search?page=x", &[], &[]);
    assert_eq!(status, 400);
    let pointers: Vec<&Value> = problem["errors"]
        .as_array()
        .map(|a| a.iter().map(|e| &e["pointer"]).collect())
        .unwrap_or_default();
    assert_eq!(pointers, vec![&json!("/q"), &json!("/page")]);
    let (status, problem) = run(&c, "GET", "/search?q=a", &[("x-tenant", "ACME")], &[]);
    assert_eq!(
        (status, problem["errors"][0]["in"].clone()),
        (400, json!("headers"))
    );
    // Past the limit: 413 from the SDK.
    let small = config(r#"{"default": {"body_schema": true, "max_body_bytes": 4}}"#);
    assert_eq!(run(&small, "POST", "/", &[JSON], &[b"[1,", b"2,3]"]).0, 413);
}

/// A small deterministic generator (xorshift), so failures replay from the seed.
struct Gen(u64);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n.max(1) as u64) as usize
    }
}

fn value(g: &mut Gen, depth: usize) -> Value {
    match if depth > 3 { g.below(4) } else { g.below(6) } {
        0 => json!(g.below(5) as i64 - 1),
        1 => [json!(null), json!(true), json!(1.5), json!("")][g.below(4)].clone(),
        2 => json!(["ab", "x", "héllo", "1"][g.below(4)]),
        3 => json!(g.below(3)),
        4 => Value::Array((0..g.below(4)).map(|_| value(g, depth + 1)).collect()),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..g.below(4) {
                map.insert(
                    ["qty", "name", "tags", "x"][g.below(4)].into(),
                    value(g, depth + 1),
                );
            }
            Value::Object(map)
        }
    }
}

/// Resolves a JSON Pointer the way RFC 6901 says (for checking the problem's paths).
fn exists_or_parent(doc: &Value, pointer: &str) -> bool {
    doc.pointer(pointer).is_some()
        || pointer
            .rsplit_once('/')
            .is_some_and(|(parent, _)| doc.pointer(parent).is_some_and(Value::is_object))
}

#[test]
fn property_verdicts_do_not_depend_on_chunking_and_name_real_paths() {
    let body_schema = json!({
        "type": "object", "required": ["qty"],
        "properties": {"qty": {"type": "integer", "minimum": 0}, "name": {"type": "string", "maxLength": 3},
                       "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}},
        "additionalProperties": {"type": ["object", "null"]}
    });
    let c = config(&format!(
        r#"{{"default": {{"body_schema": {body_schema}}}}}"#
    ));
    let direct = schema(body_schema);
    let mut invalid = 0;
    for seed in 1..=800u64 {
        let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Mostly objects with a `qty`, members often of the right type: about half are valid.
        let mut doc = json!({});
        if g.below(6) > 0 {
            doc["qty"] = [
                json!(1),
                json!(0),
                json!(7),
                json!(-1),
                json!("1"),
                json!(2.0),
            ][g.below(6)]
            .clone();
        }
        if g.below(2) == 0 {
            doc["name"] = [json!("ab"), json!("abcd"), json!(1)][g.below(3)].clone();
        }
        if g.below(2) == 0 {
            doc["tags"] =
                [json!(["a", "b"]), json!(["a", "a"]), json!([1]), json!([])][g.below(4)].clone();
        }
        if g.below(3) == 0 {
            doc["x"] = value(&mut g, 1);
        }
        if g.below(20) == 0 {
            doc = value(&mut g, 0);
        }
        let text = if g.below(2) == 0 {
            doc.to_string()
        } else {
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        };
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = match g.below(3) {
            0 => vec![bytes],
            1 => bytes.chunks(1).collect(),
            _ => bytes.chunks(1 + g.below(9)).collect(),
        };
        let expected = direct.validate(&doc);
        let (status, problem) = run(&c, "POST", "/", &[JSON], &chunks);
        if expected.is_empty() {
            assert_eq!(status, 200, "seed {seed}: {text}");
            assert_eq!(
                problem,
                Value::String(text.clone()),
                "seed {seed}: body changed"
            );
        } else {
            invalid += 1;
            assert_eq!(status, 400, "seed {seed}: {text}");
            let errors = problem["errors"].as_array().cloned().unwrap_or_default();
            assert_eq!(errors.len(), expected.len(), "seed {seed}");
            for e in &errors {
                let pointer = e["pointer"].as_str().unwrap_or("?");
                assert!(
                    exists_or_parent(&doc, pointer),
                    "seed {seed}: {pointer} not in {text}"
                );
            }
        }
    }
    assert!(
        invalid > 100 && invalid < 700,
        "{invalid} invalid of 800: the generator is lopsided"
    );
}
