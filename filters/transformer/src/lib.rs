//! `transformer`: request and response transformation, per route.
//!
//! - headers (request and response): `remove`, `rename`, `set`, `add`, values are templates
//!   ([`template`]) read from the request as it arrived: other headers, path segments, query
//!   parameters, the consumer (the header an authentication filter set);
//! - query parameters: `remove`, `rename`, `set`, `add` (values templated and percent-encoded);
//! - the path: a prefix or a regex rewrite (the query is kept);
//! - redirects: a 3xx with a templated `Location`, answered here;
//! - JSON bodies (both directions): `remove`, `rename`, `move`, `set` by path ([`json_edit`]).
//!   The body is buffered to its end (whatever its chunking), edited, re-serialised, and the
//!   message's `content-length` is removed when its headers pass (Envoy does not fix it), so the
//!   peer reads exactly the bytes sent. A body that is not JSON, or larger than `max_body_bytes`,
//!   passes unchanged.
//!
//! The configuration is a [`Routed`] [`TransformPolicy`]; the reference is
//! `filters/transformer/README.md`.
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_transformer::TransformerFilter;
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse(br#"{"default": {"request": {
//!   "headers": {"set": [["x-user-path", "{{header:x-user}}/{{segment:1}}"]], "remove": ["cookie"]},
//!   "path": {"prefix": {"from": "/api/", "to": "/"}}
//! }}}"#)?);
//! let mut headers = HeaderList::from([
//!     (":method", "GET"), (":path", "/api/orders/7?x=1"), ("x-user", "ada"), ("cookie", "a=1"),
//! ]);
//! TransformerFilter::new(config).on_request_headers(&mut Request::new(&mut headers), true);
//! assert_eq!(headers.get_all(":path"), vec!["/orders/7?x=1"]);
//! assert_eq!(headers.get_all("x-user-path"), vec!["ada/orders"]);
//! assert!(headers.get_all("cookie").is_empty());
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod json_edit;
pub mod query;
pub mod template;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use serde::{Deserialize, Deserializer};
use tollgate_sdk::body::announced_too_large;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{
    Action, Body, ConfigError, FilterConfig, HeaderName, HttpFilter, Request, Response,
};

use crate::json_edit::Path;
use crate::template::{Facts, Template};

/// A template in a configuration (parsed when the configuration is).
#[derive(Debug, Clone)]
pub struct Tmpl(pub Template);

impl<'de> Deserialize<'de> for Tmpl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text)
            .map(Tmpl)
            .map_err(serde::de::Error::custom)
    }
}

/// A JSON path in a configuration.
#[derive(Debug, Clone)]
pub struct JsonPath(pub Path);

impl<'de> Deserialize<'de> for JsonPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Path::parse(&text)
            .map(JsonPath)
            .map_err(serde::de::Error::custom)
    }
}

/// A regular expression in a configuration (compiled when the configuration is parsed).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex_lite::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex_lite::Regex::new(&text)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("bad regex {text:?}: {e}")))
    }
}

#[cfg(feature = "schema")]
mod schema_impls {
    //! The schemas of the types parsed from strings.
    macro_rules! string_schema {
        ($t:ty, $name:literal, $what:literal) => {
            impl schemars::JsonSchema for $t {
                fn schema_name() -> std::borrow::Cow<'static, str> {
                    $name.into()
                }
                fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                    schemars::json_schema!({"type": "string", "description": $what})
                }
            }
        };
    }
    string_schema!(
        super::Tmpl,
        "Template",
        "Text with {{path}}, {{query}}, {{method}}, {{host}}, {{consumer}}, {{header:NAME}}, {{query_param:NAME}}, {{segment:N}}."
    );
    string_schema!(
        super::JsonPath,
        "JsonPath",
        "A dot-separated JSON path (a.b.0.c; \\. for a dot in a key)."
    );
    string_schema!(
        super::Pattern,
        "Regex",
        "A regular expression (regex-lite syntax)."
    );
}

/// Header operations, applied in this order: `remove`, `rename`, `set`, `add`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<HeaderName>,
    /// `[from, to]`: every value of `from` moved to `to` (replacing `to`).
    #[serde(default)]
    pub rename: Vec<(HeaderName, HeaderName)>,
    /// `[name, template]`: replaces every value.
    #[serde(default)]
    pub set: Vec<(HeaderName, Tmpl)>,
    /// `[name, template]`: one more value.
    #[serde(default)]
    pub add: Vec<(HeaderName, Tmpl)>,
}

impl HeaderOps {
    fn validate_at(&self, at: &str) -> Result<(), ConfigError> {
        let names = self
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{at}.remove[{i}]"), n))
            .chain(self.rename.iter().enumerate().flat_map(|(i, (a, b))| {
                [
                    (format!("{at}.rename[{i}]"), a),
                    (format!("{at}.rename[{i}]"), b),
                ]
            }))
            .chain(
                self.set
                    .iter()
                    .enumerate()
                    .map(|(i, (n, _))| (format!("{at}.set[{i}]"), n)),
            )
            .chain(
                self.add
                    .iter()
                    .enumerate()
                    .map(|(i, (n, _))| (format!("{at}.add[{i}]"), n)),
            );
        for (field, name) in names {
            if name.is_pseudo() || name.as_str() == "content-length" {
                return Err(ConfigError::at(
                    field,
                    format!("{name} cannot be changed here (use path, or let the proxy set it)"),
                ));
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }

    fn apply(&self, map: &mut dyn tollgate_sdk::HeaderMap, facts: &Facts) {
        for name in &self.remove {
            map.remove(name.as_str());
        }
        for (from, to) in &self.rename {
            let values: Vec<String> = map
                .pairs()
                .into_iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(from.as_str()))
                .map(|(_, v)| v)
                .collect();
            if values.is_empty() {
                continue;
            }
            map.remove(from.as_str());
            map.remove(to.as_str());
            for v in values {
                map.add(to.as_str(), &v);
            }
        }
        for (name, value) in &self.set {
            map.set(name.as_str(), &value.0.render(facts));
        }
        for (name, value) in &self.add {
            map.add(name.as_str(), &value.0.render(facts));
        }
    }
}

/// Query parameter operations, applied in this order: `remove`, `rename`, `set`, `add`. Names
/// are compared after percent-decoding; values are templates, percent-encoded when written.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryOps {
    /// Parameters removed (every occurrence).
    #[serde(default)]
    pub remove: Vec<String>,
    /// `[from, to]`: renamed (every occurrence; an existing `to` is replaced).
    #[serde(default)]
    pub rename: Vec<(String, String)>,
    /// `[name, template]`: every occurrence replaced by one.
    #[serde(default)]
    pub set: Vec<(String, Tmpl)>,
    /// `[name, template]`: one more occurrence.
    #[serde(default)]
    pub add: Vec<(String, Tmpl)>,
}

impl QueryOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }
}

/// A path rewrite (the query is kept).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathRewrite {
    /// A path starting with `from` gets `to` instead of it.
    Prefix {
        /// The prefix replaced (starts with `/`).
        from: String,
        /// Its replacement.
        to: String,
    },
    /// Every match of `pattern` in the path is replaced by `substitution` (`$1`, `${name}`).
    Regex {
        /// The pattern.
        pattern: Pattern,
        /// The replacement.
        substitution: String,
    },
}

impl PathRewrite {
    /// The rewritten path (without query), `None` when unchanged.
    pub fn rewrite(&self, path: &str) -> Option<String> {
        let out = match self {
            PathRewrite::Prefix { from, to } => {
                let rest = path.strip_prefix(from.as_str())?;
                format!("{to}{rest}")
            }
            PathRewrite::Regex {
                pattern,
                substitution,
            } => pattern
                .0
                .replace_all(path, substitution.as_str())
                .into_owned(),
        };
        let out = if out.starts_with('/') {
            out
        } else {
            format!("/{out}")
        };
        (out != path).then_some(out)
    }
}

/// A redirect answered here.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// The `Location` (a template), e.g. `https://new.example.com{{path}}{{query}}`.
    pub location: Tmpl,
}

/// 960 KiB: below Envoy's default buffer limit (1 MiB per connection) by more than a read's
/// worth, so the filter stops buffering before Envoy would answer 413 (or 500 for a response).
fn default_max_body() -> usize {
    960 * 1024
}

/// JSON body edits, applied in this order: `remove`, `rename`, `move`, `set`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyOps {
    /// Values removed.
    #[serde(default)]
    pub remove: Vec<JsonPath>,
    /// `[path, new_key]`: the key at `path` renamed within its object.
    #[serde(default)]
    pub rename: Vec<(JsonPath, String)>,
    /// `[from, to]`: the value moved (objects on the way to `to` are created).
    #[serde(rename = "move", default)]
    pub move_to: Vec<(JsonPath, JsonPath)>,
    /// `[path, value]`: the value set (objects on the way are created), its object keys in
    /// the configuration's order.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Vec<(JsonPath, serde_json::Value)>")
    )]
    pub set: Vec<(JsonPath, json_edit::Json)>,
    /// Larger bodies pass unchanged (default 960 KiB, under Envoy's default 1 MiB buffer limit).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

impl BodyOps {
    /// `body` edited; `None` when it is not JSON.
    pub fn edit(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut doc: json_edit::Json = serde_json::from_slice(body).ok()?;
        for path in &self.remove {
            json_edit::remove(&mut doc, &path.0);
        }
        for (path, key) in &self.rename {
            json_edit::rename(&mut doc, &path.0, key);
        }
        for (from, to) in &self.move_to {
            json_edit::move_value(&mut doc, &from.0, &to.0);
        }
        for (path, value) in &self.set {
            json_edit::set(&mut doc, &path.0, value.clone());
        }
        serde_json::to_vec(&doc).ok()
    }
}

/// What happens to requests.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOps {
    /// Header operations.
    #[serde(default)]
    pub headers: HeaderOps,
    /// Query parameter operations.
    #[serde(default)]
    pub query: QueryOps,
    /// Path rewrite.
    #[serde(default)]
    pub path: Option<PathRewrite>,
    /// JSON body edits.
    #[serde(default)]
    pub body: Option<BodyOps>,
}

/// What happens to responses.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseOps {
    /// Header operations (templates read the request).
    #[serde(default)]
    pub headers: HeaderOps,
    /// JSON body edits.
    #[serde(default)]
    pub body: Option<BodyOps>,
}

/// A route's transformation.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformPolicy {
    /// Answer with a redirect instead (nothing else applies).
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Request changes.
    #[serde(default)]
    pub request: RequestOps,
    /// Response changes.
    #[serde(default)]
    pub response: ResponseOps,
    /// The header `{{consumer}}` reads (default `x-consumer`, what the credential filters set).
    #[serde(default)]
    pub consumer_header: Option<HeaderName>,
}

impl FilterConfig for TransformPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(r) = &self.redirect
            && !matches!(r.status, 301 | 302 | 303 | 307 | 308)
        {
            return Err(ConfigError::at(
                "redirect.status",
                format!(
                    "{} is not a redirect status (301, 302, 303, 307, 308)",
                    r.status
                ),
            ));
        }
        self.request.headers.validate_at("request.headers")?;
        self.response.headers.validate_at("response.headers")?;
        if let Some(PathRewrite::Prefix { from, to }) = &self.request.path {
            if !from.starts_with('/') {
                return Err(ConfigError::at(
                    "request.path.prefix.from",
                    format!("{from:?} does not start with /"),
                ));
            }
            if !to.starts_with('/') {
                return Err(ConfigError::at(
                    "request.path.prefix.to",
                    format!("{to:?} does not start with /"),
                ));
            }
        }
        for (at, body) in [
            ("request.body", &self.request.body),
            ("response.body", &self.response.body),
        ] {
            if let Some(b) = body
                && b.max_body_bytes == 0
            {
                return Err(ConfigError::at(
                    format!("{at}.max_body_bytes"),
                    "must be above 0",
                ));
            }
        }
        for (i, (name, _)) in self.request.query.rename.iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::at(
                    format!("request.query.rename[{i}]"),
                    "empty name",
                ));
            }
        }
        Ok(())
    }
}

impl TransformPolicy {
    fn consumer_header(&self) -> &str {
        self.consumer_header
            .as_ref()
            .map_or("x-consumer", HeaderName::as_str)
    }
}

/// The whole plugin configuration: a policy per route (`default` and `routes`).
pub type TransformerConfig = Routed<TransformPolicy>;

/// The metric name: `transformer_actions{action=...}`.
pub const METRIC: &str = "transformer_actions";

/// What the `action` tag counts.
#[derive(Debug, Clone, Copy)]
enum Act {
    Redirect = 0,
    RequestBody = 1,
    ResponseBody = 2,
    NotJson = 3,
    TooLarge = 4,
}

thread_local! {
    static METRICS: std::cell::OnceCell<[Counter; 5]> = const { std::cell::OnceCell::new() };
}

fn count(act: Act) {
    METRICS.with(|m| {
        let all = m.get_or_init(|| {
            [
                "redirect",
                "request_body",
                "response_body",
                "body_not_json",
                "body_too_large",
            ]
            .map(|a| Counter::define(METRIC, &[("action", a)]))
        });
        if let Some(c) = all.get(act as usize) {
            c.increment();
        }
    });
}

/// A body being buffered for edits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Not edited (no edits, not JSON, no body, or given up).
    #[default]
    Untouched,
    /// Buffering to the end.
    Buffering,
}

/// Which policy the request got (kept for the response half).
#[derive(Debug, Clone, Copy)]
enum Which {
    Default,
    Route(usize),
}

/// The filter for one HTTP stream.
pub struct TransformerFilter {
    config: Rc<TransformerConfig>,
    which: Option<Which>,
    facts: Option<Facts>,
    request_body: BodyState,
    response_body: BodyState,
}

impl TransformerFilter {
    fn policy(&self) -> Option<&TransformPolicy> {
        match self.which? {
            Which::Default => self.config.default.as_ref(),
            Which::Route(i) => self.config.routes.get(i).map(|r| &r.config),
        }
    }
}

fn is_json(content_type: Option<String>) -> bool {
    content_type.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        let base = t.split(';').next().unwrap_or("").trim().to_string();
        base == "application/json" || base.ends_with("+json")
    })
}

/// Buffers a body to its end and edits it: what both directions do with a chunk.
fn body_chunk(
    state: &mut BodyState,
    ops: Option<&BodyOps>,
    body: &mut Body<'_>,
    end_of_stream: bool,
    act: Act,
) -> Action {
    if *state != BodyState::Buffering {
        return Action::Continue;
    }
    let Some(ops) = ops else {
        *state = BodyState::Untouched;
        return Action::Continue;
    };
    if body.len() > ops.max_body_bytes {
        // Too large to edit: everything buffered so far goes on unchanged, and the rest streams.
        *state = BodyState::Untouched;
        count(Act::TooLarge);
        return Action::Continue;
    }
    if !end_of_stream {
        return Action::Pause;
    }
    *state = BodyState::Untouched;
    match ops.edit(&body.bytes()) {
        Some(edited) => {
            body.replace(&edited);
            count(act);
        }
        None => count(Act::NotJson),
    }
    Action::Continue
}

impl HttpFilter for TransformerFilter {
    const NAME: &'static str = "transformer";
    type Config = TransformerConfig;

    fn new(config: Rc<TransformerConfig>) -> Self {
        Self {
            config,
            which: None,
            facts: None,
            request_body: BodyState::Untouched,
            response_body: BodyState::Untouched,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let Some(policy) = config.select_request(req) else {
            return Action::Continue;
        };
        self.which = Some(
            match config
                .routes
                .iter()
                .position(|r| std::ptr::eq(&r.config, policy))
            {
                Some(i) => Which::Route(i),
                None => Which::Default,
            },
        );
        let path = req.path().unwrap_or_default();
        let consumer = req.header(policy.consumer_header());
        let facts = Facts::new(
            &req.method().unwrap_or_default(),
            &path,
            &req.authority().unwrap_or_default(),
            req.headers(),
            consumer,
        );
        if let Some(redirect) = &policy.redirect {
            let location = redirect.location.0.render(&facts);
            req.send_response(redirect.status, &[("location", location.as_str())], b"");
            count(Act::Redirect);
            return Action::Continue;
        }
        let ops = &policy.request;
        if !ops.headers.is_empty() {
            ops.headers.apply(req.header_map(), &facts);
        }
        if !ops.query.is_empty() || ops.path.is_some() {
            let mut new_path = facts.path.clone();
            if let Some(rewrite) = &ops.path
                && let Some(p) = rewrite.rewrite(&facts.path)
            {
                new_path = p;
            }
            let query = if ops.query.is_empty() {
                facts.query.clone()
            } else {
                query::apply(&ops.query, &facts.query, &facts)
            };
            let full = format!("{new_path}{query}");
            if full != path {
                req.set_header(":path", &full);
            }
        }
        if let Some(body) = &ops.body
            && !end_of_stream
            && is_json(req.header("content-type"))
        {
            if announced_too_large(body.max_body_bytes, req.header("content-length").as_deref()) {
                // Announced too large to edit: it streams as it comes with its length, never
                // buffered (buffering first could cross Envoy's own buffer limit, a 413).
                count(Act::TooLarge);
            } else {
                // The edited body has another length: the upstream must not be told the old one.
                req.remove_header("content-length");
                self.request_body = BodyState::Buffering;
            }
        }
        self.facts = Some(facts);
        Action::Continue
    }

    fn on_request_body(&mut self, body: &mut Body<'_>, end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let ops = self.which.and_then(|w| match w {
            Which::Default => config.default.as_ref(),
            Which::Route(i) => config.routes.get(i).map(|r| &r.config),
        });
        body_chunk(
            &mut self.request_body,
            ops.and_then(|p| p.request.body.as_ref()),
            body,
            end_of_stream,
            Act::RequestBody,
        )
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy() else {
            return Action::Continue;
        };
        let ops = &policy.response;
        let empty = Facts::default();
        let facts = self.facts.as_ref().unwrap_or(&empty);
        if !ops.headers.is_empty() {
            ops.headers.apply(resp.header_map(), facts);
        }
        let mut buffer =
            ops.body.is_some() && !end_of_stream && is_json(resp.header("content-type"));
        if buffer
            && let Some(body) = &ops.body
            && announced_too_large(
                body.max_body_bytes,
                resp.header("content-length").as_deref(),
            )
        {
            // Announced too large to edit: it streams as it comes with its length.
            count(Act::TooLarge);
            buffer = false;
        }
        if buffer {
            resp.remove_header("content-length");
        }
        self.response_body = if buffer {
            BodyState::Buffering
        } else {
            BodyState::Untouched
        };
        Action::Continue
    }

    fn on_response_body(&mut self, body: &mut Body<'_>, end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let ops = self.which.and_then(|w| match w {
            Which::Default => config.default.as_ref(),
            Which::Route(i) => config.routes.get(i).map(|r| &r.config),
        });
        body_chunk(
            &mut self.response_body,
            ops.and_then(|p| p.response.body.as_ref()),
            body,
            end_of_stream,
            Act::ResponseBody,
        )
    }
}

tollgate_sdk::export_filter!(TransformerFilter);
