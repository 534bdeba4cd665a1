//! `request-validation`: validates JSON request bodies against a JSON Schema (draft 2020-12) per
//! route, and optionally the query parameters and headers against declared types (a schema of
//! type `object` whose properties say each parameter's type). A request that fails is answered
//! `400` with an `application/problem+json` body naming every failing path (JSON Pointers, at most
//! ten); a body that is not JSON `400`, a body with another content type `415`, a body above
//! `max_body_bytes` `413`. Schemas are compiled once per configuration ([`schema`]).
//!
//! The body arrives in any number of chunks: it is buffered with the SDK's bounded body API and
//! validated once, whole; it goes on to the upstream unchanged (so `content-length` stays right).
//!
//! The configuration reference is `filters/request-validation/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_request_validation::{ValidationConfig, RequestValidationFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request, body};
//!
//! let config = Rc::new(tollgate_sdk::config::parse::<ValidationConfig>(br#"{"default": {
//!   "body_schema": {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer", "minimum": 1}}}
//! }}"#)?);
//! let check = |body: &[u8]| {
//!     let mut filter = RequestValidationFilter::new(Rc::clone(&config));
//!     let mut headers = HeaderList::from([(":method", "POST"), (":path", "/"), ("content-type", "application/json")]);
//!     filter.on_request_headers(&mut Request::new(&mut headers), false);
//!     body::feed_request(&mut filter, &[body])
//! };
//! assert_eq!(check(br#"{"qty": 2}"#), body::Outcome::Forwarded(br#"{"qty": 2}"#.to_vec()));
//! assert_eq!(check(br#"{"qty": 0}"#), body::Outcome::Answered(400));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod schema;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_sdk::body::{BodyLimit, Extent};
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{Action, Body, ConfigError, FilterConfig, HttpFilter, Request};

use crate::schema::{Failure, Schema};

/// The largest `max_body_bytes` accepted.
pub const MAX_BODY_LIMIT: usize = 16 << 20;

/// The metric name: `request_validation_requests{result=...}` in Prometheus.
pub const METRIC: &str = "request_validation_requests";

/// The whole plugin configuration: a [`Validation`] per route (`default` and `routes`).
pub type ValidationConfig = Routed<Validation>;

/// What one route validates.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// The JSON Schema (draft 2020-12) request bodies must match.
    #[serde(default)]
    pub body_schema: Option<Value>,
    /// The methods whose requests must carry a body matching `body_schema`.
    #[serde(default = "default_methods")]
    pub body_methods: Vec<String>,
    /// A schema for the query parameters, seen as an object (each parameter converted to the
    /// `type` its property declares: integer, number, boolean, array of strings, or string).
    #[serde(default)]
    pub query_schema: Option<Value>,
    /// A schema for the headers, seen as an object with lower-case names (converted the same way).
    #[serde(default)]
    pub headers_schema: Option<Value>,
    /// The largest body validated, in bytes; a larger one is answered 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(skip)]
    compiled: OnceCell<Compiled>,
}

fn default_methods() -> Vec<String> {
    vec!["POST".into(), "PUT".into(), "PATCH".into()]
}
fn default_max_body() -> usize {
    64 * 1024
}

#[derive(Debug, Default)]
struct Compiled {
    body: Option<Schema>,
    query: Option<Schema>,
    headers: Option<Schema>,
}

fn compile(value: &Option<Value>, field: &str) -> Result<Option<Schema>, ConfigError> {
    value
        .as_ref()
        .map(|v| {
            Schema::compile(v).map_err(|e| {
                let at = if e.at.is_empty() {
                    field.to_string()
                } else {
                    format!("{field}.{}", e.at)
                };
                ConfigError::at(at, e.message)
            })
        })
        .transpose()
}

impl FilterConfig for Validation {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::at(
                "max_body_bytes",
                format!("must be between 1 and {MAX_BODY_LIMIT}"),
            ));
        }
        if self.body_schema.is_none()
            && self.query_schema.is_none()
            && self.headers_schema.is_none()
        {
            return Err(ConfigError::at(
                "body_schema",
                "give at least one of body_schema, query_schema, headers_schema",
            ));
        }
        let compiled = Compiled {
            body: compile(&self.body_schema, "body_schema")?,
            query: compile(&self.query_schema, "query_schema")?,
            headers: compile(&self.headers_schema, "headers_schema")?,
        };
        // Compiled once, here: `parse` validates once per configuration.
        let _ = self.compiled.set(compiled);
        Ok(())
    }
}

impl Validation {
    fn compiled(&self) -> Option<&Compiled> {
        self.compiled.get()
    }
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    valid: Counter,
    invalid_body: Counter,
    invalid_query: Counter,
    invalid_headers: Counter,
    not_json: Counter,
}

thread_local! {
    static METRICS: OnceCell<Metrics> = const { OnceCell::new() };
}

fn metrics() -> Metrics {
    METRICS.with(|m| {
        *m.get_or_init(|| {
            let c = |result: &str| Counter::define(METRIC, &[("result", result)]);
            Metrics {
                valid: c("valid"),
                invalid_body: c("invalid_body"),
                invalid_query: c("invalid_query"),
                invalid_headers: c("invalid_headers"),
                not_json: c("not_json"),
            }
        })
    })
}

/// Whether a `content-type` is JSON (`application/json`, `*/*+json`).
///
/// ```
/// assert!(tollgate_request_validation::is_json("application/json; charset=utf-8"));
/// assert!(tollgate_request_validation::is_json("application/merge-patch+json"));
/// assert!(!tollgate_request_validation::is_json("text/plain"));
/// ```
pub fn is_json(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

/// Converts a parameter's text to the type `declared` for it.
fn convert(texts: &[String], declared: Option<&str>) -> Value {
    let first = texts.first().cloned().unwrap_or_default();
    match declared {
        Some("array") => Value::Array(texts.iter().cloned().map(Value::String).collect()),
        Some("integer") => first
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(first)),
        Some("number") => first
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(first)),
        Some("boolean") => match first.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(first),
        },
        _ => Value::String(first),
    }
}

/// The query parameters of `path` as an object for `schema` (names and values percent-decoded,
/// `+` as space; a repeated parameter is an array when the schema says so, else its first value).
///
/// ```
/// use serde_json::json;
/// use tollgate_request_validation::{query_object, schema::Schema};
/// let schema = Schema::compile(&json!({"properties": {"page": {"type": "integer"}, "tag": {"type": "array"}}}))?;
/// assert_eq!(query_object("/a?page=2&tag=x&tag=y%20z&q=a+b", &schema),
///            json!({"page": 2, "tag": ["x", "y z"], "q": "a b"}));
/// # Ok::<(), tollgate_request_validation::schema::CompileError>(())
/// ```
pub fn query_object(path: &str, schema: &Schema) -> Value {
    let query = path
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .unwrap_or_default();
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let spaced = s.replace('+', " ");
            tollgate_sdk::http::percent_decode(&spaced).unwrap_or(spaced)
        };
        let (name, value) = (decode(name), decode(value));
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => params.push((name, vec![value])),
        }
    }
    let mut map = Map::new();
    for (name, values) in params {
        let declared = schema.property_type(&name);
        map.insert(name, convert(&values, declared));
    }
    Value::Object(map)
}

/// The headers as an object for `schema` (lower-case names; pseudo-headers left out; repeated
/// headers as for query parameters).
pub fn headers_object(pairs: &[(String, String)], schema: &Schema) -> Value {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in pairs {
        if name.starts_with(':') {
            continue;
        }
        let name = name.to_ascii_lowercase();
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.clone()),
            None => grouped.push((name, vec![value.clone()])),
        }
    }
    let mut map = Map::new();
    for (name, values) in grouped {
        let declared = schema.property_type(&name);
        map.insert(name, convert(&values, declared));
    }
    Value::Object(map)
}

/// Where a failure was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The JSON body.
    Body,
    /// The query parameters.
    Query,
    /// The headers.
    Headers,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Body => "body",
            Part::Query => "query",
            Part::Headers => "headers",
        }
    }
}

/// The `application/problem+json` document for `failures` in `part`.
///
/// ```
/// use tollgate_request_validation::{problem, Part, schema::Failure};
/// let doc = problem(400, "Bad Request", Part::Body, &[Failure {
///     pointer: "/qty".into(), keyword: "minimum", message: "0 is less than the minimum 1".into(),
/// }]);
/// let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
/// assert_eq!(v["errors"][0]["pointer"], "/qty");
/// assert_eq!(v["detail"], "the request body does not match its schema at /qty: 0 is less than the minimum 1");
/// ```
pub fn problem(status: u16, title: &str, part: Part, failures: &[Failure]) -> String {
    let detail = match failures.first() {
        Some(f) => format!(
            "the request {} does not match its schema at {}: {}",
            part.name(),
            if f.pointer.is_empty() {
                "/"
            } else {
                &f.pointer
            },
            f.message
        ),
        None => format!("the request {} is not acceptable", part.name()),
    };
    let errors: Vec<Value> = failures
        .iter()
        .map(|f| {
            serde_json::json!({
                "in": part.name(),
                "pointer": f.pointer,
                "keyword": f.keyword,
                "message": f.message,
            })
        })
        .collect();
    serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors,
    })
    .to_string()
}

/// What the filter does with the body of this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing to check.
    Skip,
    /// Buffer it and check it against the route's body schema.
    Check,
}

/// The filter for one HTTP stream.
pub struct RequestValidationFilter {
    config: Rc<ValidationConfig>,
    /// The route's validation (an index into the config: `None` for the default).
    route: Option<Option<usize>>,
    phase: Phase,
}

impl RequestValidationFilter {
    fn validation(&self) -> Option<&Validation> {
        match self.route? {
            None => self.config.default.as_ref(),
            Some(i) => self.config.routes.get(i).map(|r| &r.config),
        }
    }

    fn reject(&self, status: u16, title: &str, part: Part, failures: &[Failure]) -> (u16, String) {
        let m = metrics();
        match part {
            Part::Body
                if status == 400 && failures.first().is_some_and(|f| f.keyword == "json") =>
            {
                m.not_json.increment()
            }
            Part::Body => m.invalid_body.increment(),
            Part::Query => m.invalid_query.increment(),
            Part::Headers => m.invalid_headers.increment(),
        }
        if let Some(f) = failures.first() {
            log::info!(
                "request-validation: {status}: {} {} {}: {}",
                part.name(),
                if f.pointer.is_empty() {
                    "/"
                } else {
                    &f.pointer
                },
                f.keyword,
                f.message
            );
        }
        (status, problem(status, title, part, failures))
    }
}

const PROBLEM: (&str, &str) = ("content-type", "application/problem+json");

impl HttpFilter for RequestValidationFilter {
    const NAME: &'static str = "request-validation";
    type Config = ValidationConfig;

    fn new(config: Rc<ValidationConfig>) -> Self {
        Self {
            config,
            route: None,
            phase: Phase::Skip,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let Some(selected) = config.select_request(req) else {
            return Action::Continue;
        };
        self.route = Some(
            config
                .routes
                .iter()
                .position(|r| std::ptr::eq(&r.config, selected)),
        );
        let Some(compiled) = selected.compiled() else {
            return Action::Continue;
        };
        if let Some(schema) = &compiled.query {
            let path = req.path().unwrap_or_default();
            let failures = schema.validate(&query_object(&path, schema));
            if !failures.is_empty() {
                let (status, body) = self.reject(400, "Bad Request", Part::Query, &failures);
                req.send_response(status, &[PROBLEM], body);
                return Action::Continue;
            }
        }
        if let Some(schema) = &compiled.headers {
            let failures = schema.validate(&headers_object(&req.headers(), schema));
            if !failures.is_empty() {
                let (status, body) = self.reject(400, "Bad Request", Part::Headers, &failures);
                req.send_response(status, &[PROBLEM], body);
                return Action::Continue;
            }
        }
        let method = req.method().unwrap_or_default();
        let body_checked = compiled.body.is_some()
            && selected
                .body_methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&method));
        if !body_checked {
            metrics().valid.increment();
            return Action::Continue;
        }
        if end_of_stream {
            let failure = Failure {
                pointer: String::new(),
                keyword: "required",
                message: "a JSON request body is required".into(),
            };
            let (status, body) = self.reject(400, "Bad Request", Part::Body, &[failure]);
            req.send_response(status, &[PROBLEM], body);
            return Action::Continue;
        }
        let content_type = req.header("content-type").unwrap_or_default();
        if !is_json(&content_type) {
            let failure = Failure {
                pointer: String::new(),
                keyword: "contentType",
                message: format!("content-type {content_type:?} is not JSON"),
            };
            let (status, body) = self.reject(415, "Unsupported Media Type", Part::Body, &[failure]);
            req.send_response(status, &[PROBLEM], body);
            return Action::Continue;
        }
        self.phase = Phase::Check;
        Action::Continue
    }

    fn request_body_limit(&self) -> Option<BodyLimit> {
        if self.phase != Phase::Check {
            return None;
        }
        self.validation()
            .map(|v| BodyLimit::refuse_above(v.max_body_bytes))
    }

    fn on_request_body_buffered(&mut self, body: &mut Body<'_>, _extent: Extent) -> Action {
        self.phase = Phase::Skip;
        let Some(schema) = self
            .validation()
            .and_then(Validation::compiled)
            .and_then(|c| c.body.as_ref())
        else {
            return Action::Continue;
        };
        let bytes = body.bytes();
        let failures = match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => schema.validate(&value),
            Err(e) => vec![Failure {
                pointer: String::new(),
                keyword: "json",
                message: format!("not valid JSON: {e}"),
            }],
        };
        if failures.is_empty() {
            metrics().valid.increment();
        } else {
            let (status, text) = self.reject(400, "Bad Request", Part::Body, &failures);
            body.send_response(status, &[PROBLEM], text);
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(RequestValidationFilter, [request_body]);
