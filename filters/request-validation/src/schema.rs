//! A JSON Schema (draft 2020-12) validator, compiled once per configuration into an arena of
//! nodes (so `$ref` cycles are indices, not recursion at compile time).
//!
//! Supported: boolean schemas; `type`, `enum`, `const`; numbers (`multipleOf`, `minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum`); strings (`minLength`, `maxLength` in code
//! points, `pattern` with `regex-lite`); arrays (`items`, `prefixItems`, `contains`,
//! `minContains`, `maxContains`, `minItems`, `maxItems`, `uniqueItems`); objects (`properties`,
//! `patternProperties`, `additionalProperties`, `propertyNames`, `required`,
//! `dependentRequired`, `minProperties`, `maxProperties`); `allOf`, `anyOf`, `oneOf`, `not`,
//! `if`/`then`/`else`; `$ref` to the document's own `#...` JSON pointers (`$defs`,
//! `definitions`); `$schema` (2020-12 only), a root `$id`, and the annotations (`title`,
//! `description`, `default`, `examples`, `$comment`, `deprecated`, `readOnly`, `writeOnly`,
//! `format`: an annotation in 2020-12's default vocabulary, so not asserted).
//!
//! Any other keyword is refused at compile time, naming it: a schema is never half-enforced.
//! Not supported (refused): `unevaluatedProperties`, `unevaluatedItems`, `dependentSchemas`,
//! `$dynamicRef`, `$anchor`, remote `$ref`s, `contentSchema` and friends.

use std::collections::BTreeMap;

use regex_lite::Regex;
use serde_json::{Map, Value};

/// Where a compile error is, as a dotted path inside the schema, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// The dotted path inside the schema (`properties.qty.minimum`); empty for the root.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// JSON Pointer to the failing value in the instance (`/items/0/qty`; empty for the root).
    pub pointer: String,
    /// The keyword that failed (`minimum`).
    pub keyword: &'static str,
    /// A sentence for people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Type {
    fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "null" => Type::Null,
            "boolean" => Type::Boolean,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "string" => Type::String,
            "array" => Type::Array,
            "object" => Type::Object,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Type::Null => "null",
            Type::Boolean => "boolean",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::String => "string",
            Type::Array => "array",
            Type::Object => "object",
        }
    }

    fn holds(self, v: &Value) -> bool {
        match self {
            Type::Null => v.is_null(),
            Type::Boolean => v.is_boolean(),
            Type::Integer => is_integer(v),
            Type::Number => v.is_number(),
            Type::String => v.is_string(),
            Type::Array => v.is_array(),
            Type::Object => v.is_object(),
        }
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64()
                || n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        _ => false,
    }
}

/// A node index in the arena.
type Id = usize;

#[derive(Debug, Default)]
struct Node {
    /// `false` schema (or `not: true`): nothing is valid.
    never: bool,
    types: Option<Vec<Type>>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    multiple_of: Option<f64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<(String, Regex)>,
    items: Option<Id>,
    prefix_items: Vec<Id>,
    contains: Option<Id>,
    min_contains: Option<u64>,
    max_contains: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    properties: Vec<(String, Id)>,
    pattern_properties: Vec<(Regex, Id)>,
    additional_properties: Option<Id>,
    property_names: Option<Id>,
    required: Vec<String>,
    dependent_required: Vec<(String, Vec<String>)>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    all_of: Vec<Id>,
    any_of: Vec<Id>,
    one_of: Vec<Id>,
    not: Option<Id>,
    if_then_else: Option<(Id, Option<Id>, Option<Id>)>,
    reference: Option<Id>,
}

/// A compiled schema.
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<Node>,
}

/// The most failures reported for one instance.
pub const MAX_FAILURES: usize = 10;

/// How deep validation goes (instance nesting plus `$ref` hops) before it stops with a failure:
/// a hostile body or schema cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
    "$defs",
    "definitions",
    "$schema",
    "$id",
    "minContains",
    "maxContains",
    "then",
    "else",
];

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    /// `$ref` targets compiled so far, by JSON pointer.
    refs: BTreeMap<String, Id>,
    /// Refs waiting for their target: (node, pointer, where it was written).
    pending: Vec<(Id, String, String)>,
}

fn err(at: &str, message: impl Into<String>) -> CompileError {
    CompileError {
        at: at.to_string(),
        message: message.into(),
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn non_negative(v: &Value, at: &str) -> Result<u64, CompileError> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
        .ok_or_else(|| err(at, "expected a non-negative integer"))
}

fn number(v: &Value, at: &str) -> Result<f64, CompileError> {
    v.as_f64().ok_or_else(|| err(at, "expected a number"))
}

impl Compiler<'_> {
    fn compile(&mut self, schema: &Value, at: &str, pointer: &str) -> Result<Id, CompileError> {
        if let Some(id) = self.refs.get(pointer) {
            return Ok(*id);
        }
        let id = self.nodes.len();
        self.nodes.push(Node::default());
        self.refs.insert(pointer.to_string(), id);
        let node = match schema {
            Value::Bool(true) => Node::default(),
            Value::Bool(false) => Node {
                never: true,
                ..Node::default()
            },
            Value::Object(map) => self.object(map, at, pointer, id)?,
            _ => return Err(err(at, "a schema is an object or a boolean")),
        };
        self.nodes[id] = node;
        Ok(id)
    }

    fn sub(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        at: &str,
        pointer: &str,
    ) -> Result<Option<Id>, CompileError> {
        match map.get(key) {
            Some(v) => Ok(Some(self.compile(
                v,
                &join(at, key),
                &format!("{pointer}/{}", escape(key)),
            )?)),
            None => Ok(None),
        }
    }

    fn list(
        &mut self,
        map: &Map<String, Value>,
        key: &str,
        at: &str,
        pointer: &str,
    ) -> Result<Vec<Id>, CompileError> {
        let Some(v) = map.get(key) else {
            return Ok(Vec::new());
        };
        let items = v
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| err(&join(at, key), "expected a non-empty array of schemas"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.compile(
                    s,
                    &format!("{}[{i}]", join(at, key)),
                    &format!("{pointer}/{key}/{i}"),
                )
            })
            .collect()
    }

    fn object(
        &mut self,
        map: &Map<String, Value>,
        at: &str,
        pointer: &str,
        id: Id,
    ) -> Result<Node, CompileError> {
        let mut node = Node::default();
        for (key, value) in map {
            let here = join(at, key);
            match key.as_str() {
                "type" => {
                    let names: Vec<&Value> = match value {
                        Value::Array(a) => a.iter().collect(),
                        v => vec![v],
                    };
                    let types = names
                        .iter()
                        .map(|n| n.as_str().and_then(Type::parse))
                        .collect::<Option<Vec<Type>>>()
                        .ok_or_else(|| err(&here, "expected a type name or a list of them"))?;
                    node.types = Some(types);
                }
                "enum" => {
                    node.enumeration = Some(
                        value
                            .as_array()
                            .cloned()
                            .ok_or_else(|| err(&here, "expected an array"))?,
                    );
                }
                "const" => node.constant = Some(value.clone()),
                "multipleOf" => {
                    let m = number(value, &here)?;
                    if m <= 0.0 {
                        return Err(err(&here, "must be greater than 0"));
                    }
                    node.multiple_of = Some(m);
                }
                "minimum" => node.minimum = Some(number(value, &here)?),
                "maximum" => node.maximum = Some(number(value, &here)?),
                "exclusiveMinimum" => node.exclusive_minimum = Some(number(value, &here)?),
                "exclusiveMaximum" => node.exclusive_maximum = Some(number(value, &here)?),
                "minLength" => node.min_length = Some(non_negative(value, &here)?),
                "maxLength" => node.max_length = Some(non_negative(value, &here)?),
                "pattern" => {
                    let source = value
                        .as_str()
                        .ok_or_else(|| err(&here, "expected a string"))?;
                    let re = Regex::new(source).map_err(|e| err(&here, e.to_string()))?;
                    node.pattern = Some((source.to_string(), re));
                }
                "items" => node.items = self.sub(map, key, at, pointer)?,
                "prefixItems" => node.prefix_items = self.list(map, key, at, pointer)?,
                "contains" => node.contains = self.sub(map, key, at, pointer)?,
                "minContains" => node.min_contains = Some(non_negative(value, &here)?),
                "maxContains" => node.max_contains = Some(non_negative(value, &here)?),
                "minItems" => node.min_items = Some(non_negative(value, &here)?),
                "maxItems" => node.max_items = Some(non_negative(value, &here)?),
                "uniqueItems" => {
                    node.unique_items = value
                        .as_bool()
                        .ok_or_else(|| err(&here, "expected a boolean"))?;
                }
                "properties" | "patternProperties" => {
                    let props = value
                        .as_object()
                        .ok_or_else(|| err(&here, "expected an object"))?;
                    for (name, s) in props {
                        let sub = self.compile(
                            s,
                            &join(&here, name),
                            &format!("{pointer}/{key}/{}", escape(name)),
                        )?;
                        if key == "properties" {
                            node.properties.push((name.clone(), sub));
                        } else {
                            let re = Regex::new(name)
                                .map_err(|e| err(&join(&here, name), e.to_string()))?;
                            node.pattern_properties.push((re, sub));
                        }
                    }
                }
                "additionalProperties" => {
                    node.additional_properties = self.sub(map, key, at, pointer)?
                }
                "propertyNames" => node.property_names = self.sub(map, key, at, pointer)?,
                "required" => {
                    node.required = value
                        .as_array()
                        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                        .ok_or_else(|| err(&here, "expected an array of strings"))?;
                }
                "dependentRequired" => {
                    let deps = value
                        .as_object()
                        .ok_or_else(|| err(&here, "expected an object"))?;
                    for (name, list) in deps {
                        let names: Vec<String> = list
                            .as_array()
                            .and_then(|a| {
                                a.iter().map(|v| v.as_str().map(str::to_string)).collect()
                            })
                            .ok_or_else(|| {
                                err(&join(&here, name), "expected an array of strings")
                            })?;
                        node.dependent_required.push((name.clone(), names));
                    }
                }
                "minProperties" => node.min_properties = Some(non_negative(value, &here)?),
                "maxProperties" => node.max_properties = Some(non_negative(value, &here)?),
                "allOf" => node.all_of = self.list(map, key, at, pointer)?,
                "anyOf" => node.any_of = self.list(map, key, at, pointer)?,
                "oneOf" => node.one_of = self.list(map, key, at, pointer)?,
                "not" => node.not = self.sub(map, key, at, pointer)?,
                "if" => {
                    let cond = self.sub(map, "if", at, pointer)?;
                    let then = self.sub(map, "then", at, pointer)?;
                    let otherwise = self.sub(map, "else", at, pointer)?;
                    node.if_then_else = cond.map(|c| (c, then, otherwise));
                }
                "$ref" => {
                    let target = value
                        .as_str()
                        .ok_or_else(|| err(&here, "expected a string"))?;
                    let Some(fragment) = target.strip_prefix('#') else {
                        return Err(err(
                            &here,
                            format!(
                                "only references inside this schema (#...) are supported, not {target:?}"
                            ),
                        ));
                    };
                    self.pending.push((id, fragment.to_string(), here.clone()));
                }
                "$schema" => {
                    let uri = value.as_str().unwrap_or_default();
                    if !uri.contains("2020-12") {
                        return Err(err(
                            &here,
                            format!("only draft 2020-12 is supported, not {uri:?}"),
                        ));
                    }
                }
                "$id" if !pointer.is_empty() => {
                    return Err(err(&here, "only the root schema may have an $id"));
                }
                "$defs" | "definitions" => {
                    let defs = value
                        .as_object()
                        .ok_or_else(|| err(&here, "expected an object"))?;
                    for (name, s) in defs {
                        self.compile(
                            s,
                            &join(&here, name),
                            &format!("{pointer}/{key}/{}", escape(name)),
                        )?;
                    }
                }
                k if ANNOTATIONS.contains(&k) => {}
                other => {
                    return Err(err(
                        &here,
                        format!("keyword {other:?} is not supported (see the README's list)"),
                    ));
                }
            }
        }
        if (node.min_contains.is_some() || node.max_contains.is_some()) && node.contains.is_none() {
            // Without `contains` they have no effect (2020-12).
            node.min_contains = None;
            node.max_contains = None;
        }
        Ok(node)
    }

    /// Resolves `$ref`s (compiling targets no other keyword reached), then refuses reference
    /// cycles that never descend into the instance (they would never end).
    fn link(&mut self) -> Result<(), CompileError> {
        while let Some((id, fragment, at)) = self.pending.pop() {
            let target = match self.refs.get(&fragment) {
                Some(t) => *t,
                None => {
                    let root = self.root;
                    let value = root
                        .pointer(&fragment)
                        .ok_or_else(|| err(&at, format!("#{fragment} is not in this schema")))?;
                    self.compile(value, &at, &fragment)?
                }
            };
            self.nodes[id].reference = Some(target);
        }
        for start in 0..self.nodes.len() {
            let mut seen = vec![start];
            let mut stack = vec![start];
            while let Some(n) = stack.pop() {
                for next in self.in_place(n) {
                    if next == start {
                        return Err(err(
                            "$ref",
                            "a $ref cycle that never descends into the value",
                        ));
                    }
                    if !seen.contains(&next) {
                        seen.push(next);
                        stack.push(next);
                    }
                }
            }
        }
        Ok(())
    }

    /// The nodes that apply to the same value as `n`.
    fn in_place(&self, n: Id) -> Vec<Id> {
        let node = &self.nodes[n];
        let mut out: Vec<Id> = node
            .all_of
            .iter()
            .chain(&node.any_of)
            .chain(&node.one_of)
            .copied()
            .collect();
        out.extend(node.not);
        out.extend(node.reference);
        if let Some((c, t, e)) = node.if_then_else {
            out.push(c);
            out.extend(t);
            out.extend(e);
        }
        out
    }
}

/// Escapes a key for a JSON Pointer.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether two JSON values are equal as JSON Schema says (numbers by value: `1` equals `1.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(37).collect();
        format!("{cut}...")
    } else {
        text
    }
}

struct Run<'a> {
    schema: &'a Schema,
    failures: Vec<Failure>,
}

impl Schema {
    /// Compiles `schema` (a JSON Schema document).
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate_request_validation::schema::Schema;
    /// let schema = Schema::compile(&json!({"type": "object", "required": ["id"],
    ///     "properties": {"id": {"type": "integer", "minimum": 1}}}))?;
    /// assert!(schema.validate(&json!({"id": 3})).is_empty());
    /// let failures = schema.validate(&json!({"id": 0}));
    /// assert_eq!((failures[0].pointer.as_str(), failures[0].keyword), ("/id", "minimum"));
    /// assert!(Schema::compile(&json!({"unevaluatedProperties": false})).is_err());
    /// # Ok::<(), tollgate_request_validation::schema::CompileError>(())
    /// ```
    pub fn compile(schema: &Value) -> Result<Schema, CompileError> {
        let mut compiler = Compiler {
            root: schema,
            nodes: Vec::new(),
            refs: BTreeMap::new(),
            pending: Vec::new(),
        };
        compiler.compile(schema, "", "")?;
        compiler.link()?;
        Ok(Schema {
            nodes: compiler.nodes,
        })
    }

    /// The failures of `instance` (at most [`MAX_FAILURES`]); empty when it is valid.
    pub fn validate(&self, instance: &Value) -> Vec<Failure> {
        let mut run = Run {
            schema: self,
            failures: Vec::new(),
        };
        run.check(0, instance, &mut String::new(), 0);
        run.failures
    }

    /// Whether `instance` is valid (stops at the first failure).
    pub fn is_valid(&self, instance: &Value) -> bool {
        let mut run = Run {
            schema: self,
            failures: Vec::new(),
        };
        run.valid(0, instance, &mut String::new(), 0)
    }

    /// The declared `type` of property `name` of the root schema, when it names exactly one
    /// (query parameters and headers are converted to it before validation).
    pub fn property_type(&self, name: &str) -> Option<&'static str> {
        let root = self.nodes.first()?;
        let (_, id) = root.properties.iter().find(|(n, _)| n == name)?;
        let mut node = self.nodes.get(*id)?;
        if let Some(r) = node.reference {
            node = self.nodes.get(r)?;
        }
        match node.types.as_deref() {
            Some([t]) => Some(t.name()),
            _ => None,
        }
    }
}

impl Run<'_> {
    fn fail(&mut self, pointer: &str, keyword: &'static str, message: String) {
        if self.failures.len() < MAX_FAILURES {
            self.failures.push(Failure {
                pointer: pointer.to_string(),
                keyword,
                message,
            });
        }
    }

    /// Whether `v` is valid against node `id`, recording nothing.
    fn valid(&mut self, id: Id, v: &Value, pointer: &mut String, depth: usize) -> bool {
        let saved = std::mem::take(&mut self.failures);
        self.check(id, v, pointer, depth);
        let ok = self.failures.is_empty();
        self.failures = saved;
        ok
    }

    fn child(&mut self, id: Id, v: &Value, pointer: &mut String, step: &str, depth: usize) {
        let len = pointer.len();
        pointer.push('/');
        pointer.push_str(&escape(step));
        self.check(id, v, pointer, depth + 1);
        pointer.truncate(len);
    }

    fn check(&mut self, id: Id, v: &Value, pointer: &mut String, depth: usize) {
        if self.failures.len() >= MAX_FAILURES {
            return;
        }
        if depth > MAX_DEPTH {
            self.fail(
                pointer,
                "$ref",
                format!("nested deeper than {MAX_DEPTH} levels"),
            );
            return;
        }
        let schema = self.schema;
        let Some(node) = schema.nodes.get(id) else {
            return;
        };
        if node.never {
            self.fail(pointer, "false", "no value is allowed here".into());
            return;
        }
        if let Some(r) = node.reference {
            self.check(r, v, pointer, depth + 1);
        }
        if let Some(types) = &node.types
            && !types.iter().any(|t| t.holds(v))
        {
            let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
            self.fail(
                pointer,
                "type",
                format!("expected {}, got {}", names.join(" or "), short(v)),
            );
            return;
        }
        if let Some(values) = &node.enumeration
            && !values.iter().any(|e| json_eq(e, v))
        {
            self.fail(
                pointer,
                "enum",
                format!("{} is not one of the allowed values", short(v)),
            );
        }
        if let Some(c) = &node.constant
            && !json_eq(c, v)
        {
            self.fail(pointer, "const", format!("expected {}", short(c)));
        }
        match v {
            Value::Number(n) => self.number(node, n, pointer),
            Value::String(s) => self.string(node, s, pointer),
            Value::Array(items) => self.array(node, items, pointer, depth),
            Value::Object(map) => self.object(node, map, pointer, depth),
            _ => {}
        }
        for sub in &node.all_of {
            self.check(*sub, v, pointer, depth + 1);
        }
        if !node.any_of.is_empty()
            && !node
                .any_of
                .iter()
                .any(|s| self.valid(*s, v, pointer, depth + 1))
        {
            self.fail(
                pointer,
                "anyOf",
                "matches none of the allowed schemas".into(),
            );
        }
        if !node.one_of.is_empty() {
            let matched = node
                .one_of
                .iter()
                .filter(|s| self.valid(**s, v, pointer, depth + 1))
                .count();
            if matched != 1 {
                self.fail(
                    pointer,
                    "oneOf",
                    format!("matches {matched} of the schemas, not exactly one"),
                );
            }
        }
        if let Some(not) = node.not
            && self.valid(not, v, pointer, depth + 1)
        {
            self.fail(pointer, "not", "matches a schema it must not match".into());
        }
        if let Some((cond, then, otherwise)) = node.if_then_else {
            let branch = if self.valid(cond, v, pointer, depth + 1) {
                then
            } else {
                otherwise
            };
            if let Some(b) = branch {
                self.check(b, v, pointer, depth + 1);
            }
        }
    }

    fn number(&mut self, node: &Node, n: &serde_json::Number, pointer: &str) {
        let Some(x) = n.as_f64() else { return };
        if let Some(m) = node.multiple_of {
            let ok = match (n.as_i64(), m.fract() == 0.0) {
                (Some(i), true) => i % (m as i64).max(1) == 0,
                _ => {
                    let q = x / m;
                    q.is_finite() && (q - q.round()).abs() < 1e-9
                }
            };
            if !ok {
                self.fail(
                    pointer,
                    "multipleOf",
                    format!("{n} is not a multiple of {m}"),
                );
            }
        }
        if node.minimum.is_some_and(|m| x < m) {
            self.fail(
                pointer,
                "minimum",
                format!(
                    "{n} is less than the minimum {}",
                    node.minimum.unwrap_or_default()
                ),
            );
        }
        if node.maximum.is_some_and(|m| x > m) {
            self.fail(
                pointer,
                "maximum",
                format!(
                    "{n} is more than the maximum {}",
                    node.maximum.unwrap_or_default()
                ),
            );
        }
        if node.exclusive_minimum.is_some_and(|m| x <= m) {
            self.fail(
                pointer,
                "exclusiveMinimum",
                format!(
                    "{n} is not more than {}",
                    node.exclusive_minimum.unwrap_or_default()
                ),
            );
        }
        if node.exclusive_maximum.is_some_and(|m| x >= m) {
            self.fail(
                pointer,
                "exclusiveMaximum",
                format!(
                    "{n} is not less than {}",
                    node.exclusive_maximum.unwrap_or_default()
                ),
            );
        }
    }

    fn string(&mut self, node: &Node, s: &str, pointer: &str) {
        let len = s.chars().count() as u64;
        if let Some(min) = node.min_length
            && len < min
        {
            self.fail(
                pointer,
                "minLength",
                format!("shorter than {min} characters"),
            );
        }
        if let Some(max) = node.max_length
            && len > max
        {
            self.fail(
                pointer,
                "maxLength",
                format!("longer than {max} characters"),
            );
        }
        if let Some((source, re)) = &node.pattern
            && !re.is_match(s)
        {
            self.fail(pointer, "pattern", format!("does not match {source:?}"));
        }
    }

    fn array(&mut self, node: &Node, items: &[Value], pointer: &mut String, depth: usize) {
        let len = items.len() as u64;
        if node.min_items.is_some_and(|m| len < m) {
            self.fail(
                pointer,
                "minItems",
                format!("fewer than {} items", node.min_items.unwrap_or_default()),
            );
        }
        if node.max_items.is_some_and(|m| len > m) {
            self.fail(
                pointer,
                "maxItems",
                format!("more than {} items", node.max_items.unwrap_or_default()),
            );
        }
        if node.unique_items {
            'outer: for (i, a) in items.iter().enumerate() {
                for b in &items[i + 1..] {
                    if json_eq(a, b) {
                        self.fail(
                            pointer,
                            "uniqueItems",
                            format!("{} appears twice", short(a)),
                        );
                        break 'outer;
                    }
                }
            }
        }
        for (i, item) in items.iter().enumerate() {
            let sub = node
                .prefix_items
                .get(i)
                .copied()
                .or(if i >= node.prefix_items.len() {
                    node.items
                } else {
                    None
                });
            if let Some(sub) = sub {
                self.child(sub, item, pointer, &i.to_string(), depth);
            }
        }
        if let Some(contains) = node.contains {
            let count = items
                .iter()
                .enumerate()
                .filter(|(i, item)| {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    let ok = self.valid(contains, item, pointer, depth + 1);
                    pointer.truncate(len);
                    ok
                })
                .count() as u64;
            let min = node.min_contains.unwrap_or(1);
            if count < min {
                self.fail(
                    pointer,
                    "contains",
                    format!("{count} item(s) match, at least {min} must"),
                );
            }
            if let Some(max) = node.max_contains
                && count > max
            {
                self.fail(
                    pointer,
                    "maxContains",
                    format!("{count} items match, at most {max} may"),
                );
            }
        }
    }

    fn object(
        &mut self,
        node: &Node,
        map: &Map<String, Value>,
        pointer: &mut String,
        depth: usize,
    ) {
        let len = map.len() as u64;
        if node.min_properties.is_some_and(|m| len < m) {
            self.fail(
                pointer,
                "minProperties",
                format!(
                    "fewer than {} members",
                    node.min_properties.unwrap_or_default()
                ),
            );
        }
        if node.max_properties.is_some_and(|m| len > m) {
            self.fail(
                pointer,
                "maxProperties",
                format!(
                    "more than {} members",
                    node.max_properties.unwrap_or_default()
                ),
            );
        }
        for name in &node.required {
            if !map.contains_key(name) {
                let at = format!("{pointer}/{}", escape(name));
                self.fail(&at, "required", format!("{name:?} is required"));
            }
        }
        for (name, needs) in &node.dependent_required {
            if map.contains_key(name) {
                for need in needs {
                    if !map.contains_key(need) {
                        let at = format!("{pointer}/{}", escape(need));
                        self.fail(
                            &at,
                            "dependentRequired",
                            format!("{need:?} is required when {name:?} is present"),
                        );
                    }
                }
            }
        }
        for (key, value) in map {
            if let Some(names) = node.property_names {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&escape(key));
                if !self.valid(names, &Value::String(key.clone()), pointer, depth + 1) {
                    self.fail(
                        pointer,
                        "propertyNames",
                        format!("the name {key:?} is not allowed"),
                    );
                }
                pointer.truncate(len);
            }
            let mut matched = false;
            if let Some((_, sub)) = node.properties.iter().find(|(n, _)| n == key) {
                matched = true;
                self.child(*sub, value, pointer, key, depth);
            }
            for (re, sub) in &node.pattern_properties {
                if re.is_match(key) {
                    matched = true;
                    self.child(*sub, value, pointer, key, depth);
                }
            }
            if !matched && let Some(extra) = node.additional_properties {
                if self.schema.nodes.get(extra).is_some_and(|n| n.never) {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&escape(key));
                    self.fail(
                        pointer,
                        "additionalProperties",
                        format!("{key:?} is not allowed"),
                    );
                    pointer.truncate(len);
                } else {
                    self.child(extra, value, pointer, key, depth);
                }
            }
        }
    }
}
