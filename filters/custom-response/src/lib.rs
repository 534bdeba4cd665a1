//! `custom-response`: answers chosen requests locally, and replaces upstream error responses.
//!
//! - `local`: a request matching a rule (route, path, methods, headers) is answered by the filter
//!   with the rule's status, headers and body (maintenance mode, fixed JSON errors, retired
//!   endpoints); it never reaches the upstream.
//! - `errors`: an upstream response whose status is in a rule's list (`5xx`, `404`, `500-504`)
//!   is replaced by the rule's document, e.g. every 5xx becomes a JSON error carrying the request
//!   id. The replacement is a local reply sent from the response headers, so the upstream's body
//!   is dropped and `content-length` is the new body's (the proxy computes it).
//!
//! Bodies are templates: `{{request_id}}`, `{{status}}` (the upstream's status; for local
//! answers the rule's), `{{method}}`, `{{path}}`. A `json` body is a JSON document whose strings
//! are templates, so substituted values are always escaped. The reference is
//! `filters/custom-response/README.md`.
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_custom_response::CustomResponseFilter;
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse(br#"{"local": [
//!   {"match": {"path_prefix": "/legacy/"}, "respond": {"status": 410, "json": {"error": "gone", "path": "{{path}}"}}}
//! ]}"#)?);
//! let mut headers = HeaderList::from([(":method", "GET"), (":path", "/legacy/x")]);
//! let mut req = Request::new(&mut headers);
//! CustomResponseFilter::new(config).on_request_headers(&mut req, true);
//! let reply = req.local_reply().map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
//! assert_eq!(reply, Some((410, r#"{"error":"gone","path":"/legacy/x"}"#.to_string())));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod template;
#[cfg(test)]
mod tests;

use std::rc::Rc;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tollgate_sdk::headers::{check_name, check_value};
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::RequestRoute;
use tollgate_sdk::{Action, ConfigError, FilterConfig, HeaderName, HttpFilter, Request, Response};

use crate::template::{Facts, Template};

/// One header condition of a [`RequestMatch`].
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCondition {
    /// The header.
    pub name: HeaderName,
    /// One of its values must equal this exactly; without it, the header must be present.
    #[serde(default)]
    pub value: Option<String>,
    /// `true`: the header must be absent (then `value` is not allowed).
    #[serde(default)]
    pub absent: bool,
}

/// Which requests a rule applies to; every condition given must hold (none: every request).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMatch {
    /// Envoy's route name (`xds.route_name`), exact.
    #[serde(default)]
    pub route: Option<String>,
    /// A prefix of the path (query excluded), case-sensitive.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The path (query excluded), exact.
    #[serde(default)]
    pub path: Option<String>,
    /// One of these methods (upper case).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderCondition>,
}

impl RequestMatch {
    fn validate_at(&self, at: &str) -> Result<(), ConfigError> {
        for (field, p) in [("path_prefix", &self.path_prefix), ("path", &self.path)] {
            if let Some(p) = p
                && !p.starts_with('/')
            {
                return Err(ConfigError::at(
                    format!("{at}.{field}"),
                    format!("{p:?} does not start with /"),
                ));
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
                return Err(ConfigError::at(
                    format!("{at}.methods[{i}]"),
                    format!("{m:?} is not an upper-case method"),
                ));
            }
        }
        for (i, h) in self.headers.iter().enumerate() {
            if h.absent && h.value.is_some() {
                return Err(ConfigError::at(
                    format!("{at}.headers[{i}]"),
                    "give either value or absent, not both",
                ));
            }
        }
        Ok(())
    }

    /// Whether `req` matches.
    pub fn matches(&self, req: &Request<'_>) -> bool {
        let method = req.method().unwrap_or_default();
        self.matches_route(req, &RequestRoute::new(req), &method)
    }

    /// [`RequestMatch::matches`] with the request's route facts and method read once for every rule
    /// (`route` reads each fact from the host at most once).
    pub fn matches_route(
        &self,
        req: &Request<'_>,
        route: &RequestRoute<'_, '_>,
        method: &str,
    ) -> bool {
        if let Some(name) = &self.route
            && route.route_name() != Some(name.as_str())
        {
            return false;
        }
        if let Some(prefix) = &self.path_prefix
            && !route.path().is_some_and(|p| p.starts_with(prefix.as_str()))
        {
            return false;
        }
        if let Some(exact) = &self.path
            && route.path().unwrap_or_default() != exact
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
        self.headers.iter().all(|h| {
            let name = h.name.as_str();
            if h.absent {
                return req.header(name).is_none();
            }
            match &h.value {
                None => req.header(name).is_some(),
                Some(v) => req
                    .headers()
                    .iter()
                    .any(|(n, value)| n.eq_ignore_ascii_case(name) && value == v),
            }
        })
    }
}

/// A status or a range of statuses: `503`, `"503"`, `"5xx"`, `"500-504"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// The lowest status included.
    pub lo: u16,
    /// The highest status included.
    pub hi: u16,
}

impl StatusRange {
    /// Parses `503`, `5xx`, `500-504` (100 to 599).
    pub fn parse(text: &str) -> Result<StatusRange, String> {
        let bad = || format!("{text:?} is not a status (503), a class (5xx) or a range (500-504)");
        let number = |s: &str| -> Result<u16, String> {
            let n: u16 = s.trim().parse().map_err(|_| bad())?;
            if (100..=599).contains(&n) {
                Ok(n)
            } else {
                Err(bad())
            }
        };
        let text = text.trim();
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            let d: u16 = class.parse().map_err(|_| bad())?;
            if !(1..=5).contains(&d) || class.len() != 1 {
                return Err(bad());
            }
            return Ok(StatusRange {
                lo: d * 100,
                hi: d * 100 + 99,
            });
        }
        if let Some((lo, hi)) = text.split_once('-') {
            let (lo, hi) = (number(lo)?, number(hi)?);
            if lo > hi {
                return Err(bad());
            }
            return Ok(StatusRange { lo, hi });
        }
        let n = number(text)?;
        Ok(StatusRange { lo: n, hi: n })
    }

    /// Whether `status` is in it.
    pub fn contains(self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A number or a string (no `untagged` enum: it buffers and costs module size).
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = StatusRange;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status (503), a class (\"5xx\") or a range (\"500-504\")")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<StatusRange, E> {
                StatusRange::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<StatusRange, E> {
                StatusRange::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StatusRange, E> {
                StatusRange::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for StatusRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusRange".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A status (503), a class (\"5xx\") or a range (\"500-504\").",
            "anyOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": "^([1-5]xx|[1-5][0-9]{2}(-[1-5][0-9]{2})?)$"}
            ]
        })
    }
}

/// What the client gets.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The status (required for local answers; for replaced errors the upstream's by default).
    #[serde(default)]
    pub status: Option<u16>,
    /// Headers, `[name, value]` pairs; values are templates.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// A text body (a template).
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON body whose strings are templates (`content-type: application/json` unless a
    /// header says otherwise).
    #[serde(default)]
    pub json: Option<Value>,
}

impl Answer {
    fn validate_at(&self, at: &str, local: bool) -> Result<(), ConfigError> {
        match self.status {
            None if local => {
                return Err(ConfigError::at(
                    format!("{at}.status"),
                    "a local answer needs a status",
                ));
            }
            Some(s) if !(200..=599).contains(&s) => {
                return Err(ConfigError::at(
                    format!("{at}.status"),
                    format!("{s} is not between 200 and 599"),
                ));
            }
            _ => {}
        }
        if self.body.is_some() && self.json.is_some() {
            return Err(ConfigError::at(
                at.to_string(),
                "give either body or json, not both",
            ));
        }
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let field = format!("{at}.headers[{i}]");
            check_name(name).map_err(|e| ConfigError::at(field.clone(), e.to_string()))?;
            if name.starts_with(':') || name.eq_ignore_ascii_case("content-length") {
                return Err(ConfigError::at(
                    field,
                    format!("{name} is set by the proxy"),
                ));
            }
            Template::parse(value).map_err(|e| ConfigError::at(field.clone(), e))?;
            check_value(value).map_err(|e| ConfigError::at(field, e.to_string()))?;
        }
        if let Some(body) = &self.body {
            Template::parse(body).map_err(|e| ConfigError::at(format!("{at}.body"), e))?;
        }
        if let Some(json) = &self.json {
            template::check_json(json).map_err(|e| ConfigError::at(format!("{at}.json"), e))?;
        }
        Ok(())
    }

    /// The status, headers and body for `facts` (`status` when the answer keeps it; a
    /// `facts.status` of 0, for local answers, means the answer's own).
    pub fn render(&self, facts: &Facts<'_>, status: u16) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let status = self.status.unwrap_or(status);
        // `{{status}}` is the upstream's for replaced errors, the answer's for local ones.
        let facts = Facts {
            status: if facts.status == 0 {
                status
            } else {
                facts.status
            },
            ..*facts
        };
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), template::render(v, &facts)))
            .collect();
        let has_type = headers.iter().any(|(n, _)| n == "content-type");
        let body = match (&self.json, &self.body) {
            (Some(json), _) => {
                if !has_type {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                template::render_json(json, &facts).to_string().into_bytes()
            }
            (None, Some(text)) => {
                if !has_type {
                    headers.push(("content-type".into(), "text/plain".into()));
                }
                template::render(text, &facts).into_bytes()
            }
            (None, None) => Vec::new(),
        };
        (status, headers, body)
    }
}

/// A request answered here.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRule {
    /// The `rule` tag of the metric (default `local_<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Which requests.
    #[serde(rename = "match", default)]
    pub matcher: RequestMatch,
    /// The answer.
    pub respond: Answer,
}

/// Upstream responses replaced.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// The `rule` tag of the metric (default `errors_<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// The upstream statuses replaced.
    pub status: Vec<StatusRange>,
    /// Which requests' responses (default: all).
    #[serde(rename = "match", default)]
    pub matcher: RequestMatch,
    /// The replacement.
    pub respond: Answer,
}

/// The whole plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResponseConfig {
    /// Requests answered here, first match wins.
    #[serde(default)]
    pub local: Vec<LocalRule>,
    /// Upstream responses replaced, first match wins.
    #[serde(default)]
    pub errors: Vec<ErrorRule>,
    /// The header `{{request_id}}` reads (default `x-request-id`).
    #[serde(default)]
    pub request_id_header: Option<HeaderName>,
}

impl FilterConfig for CustomResponseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.local.is_empty() && self.errors.is_empty() {
            return Err(ConfigError::at(
                "local",
                "give at least one local or errors rule",
            ));
        }
        for (i, rule) in self.local.iter().enumerate() {
            rule.matcher.validate_at(&format!("local[{i}].match"))?;
            rule.respond
                .validate_at(&format!("local[{i}].respond"), true)?;
        }
        for (i, rule) in self.errors.iter().enumerate() {
            if rule.status.is_empty() {
                return Err(ConfigError::at(
                    format!("errors[{i}].status"),
                    "list at least one status",
                ));
            }
            rule.matcher.validate_at(&format!("errors[{i}].match"))?;
            rule.respond
                .validate_at(&format!("errors[{i}].respond"), false)?;
        }
        Ok(())
    }
}

impl CustomResponseConfig {
    fn request_id_header(&self) -> &str {
        self.request_id_header
            .as_ref()
            .map_or("x-request-id", HeaderName::as_str)
    }
}

/// The metric name: `custom_response_replies{rule=...}`.
pub const METRIC: &str = "custom_response_replies";

thread_local! {
    static COUNTERS: std::cell::RefCell<Vec<(String, Counter)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn count(rule: &str) {
    COUNTERS.with_borrow_mut(|counters| {
        let counter = match counters.iter().find(|(n, _)| n == rule) {
            Some((_, c)) => *c,
            None => {
                let c = Counter::define(METRIC, &[("rule", rule)]);
                counters.push((rule.to_string(), c));
                c
            }
        };
        counter.increment();
    });
}

/// What the response half needs from the request.
#[derive(Debug, Default)]
struct Saved {
    request_id: String,
    method: String,
    path: String,
    /// Indexes of the `errors` rules whose request match held.
    rules: Vec<usize>,
}

/// The filter for one HTTP stream.
pub struct CustomResponseFilter {
    config: Rc<CustomResponseConfig>,
    saved: Option<Saved>,
}

impl HttpFilter for CustomResponseFilter {
    const NAME: &'static str = "custom-response";
    type Config = CustomResponseConfig;

    fn new(config: Rc<CustomResponseConfig>) -> Self {
        Self {
            config,
            saved: None,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let request_id = req.header(config.request_id_header()).unwrap_or_default();
        let method = req.method().unwrap_or_default();
        // Each rule's conditions read the route facts once for all rules.
        let (local, rules, path) = {
            let route = RequestRoute::new(req);
            let path = route.full_path().unwrap_or_default().to_string();
            let local = config
                .local
                .iter()
                .position(|rule| rule.matcher.matches_route(req, &route, &method));
            let rules: Vec<usize> = match local {
                Some(_) => Vec::new(),
                None => config
                    .errors
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| rule.matcher.matches_route(req, &route, &method))
                    .map(|(i, _)| i)
                    .collect(),
            };
            (local, rules, path)
        };
        if let Some(i) = local
            && let Some(rule) = config.local.get(i)
        {
            let facts = Facts {
                request_id: &request_id,
                method: &method,
                path: &path,
                status: 0,
            };
            let (status, headers, body) = rule.respond.render(&facts, 0);
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            req.send_response(status, &pairs, body);
            count(&rule.name.clone().unwrap_or_else(|| format!("local_{i}")));
            return Action::Continue;
        }
        if !rules.is_empty() {
            self.saved = Some(Saved {
                request_id,
                method,
                path,
                rules,
            });
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        // Only once: the replacement's own headers come back through here in some proxies.
        let Some(saved) = self.saved.take() else {
            return Action::Continue;
        };
        let Some(status) = resp.status() else {
            return Action::Continue;
        };
        let config = Rc::clone(&self.config);
        let Some(&i) = saved.rules.iter().find(|&&i| {
            config
                .errors
                .get(i)
                .is_some_and(|r| r.status.iter().any(|s| s.contains(status)))
        }) else {
            return Action::Continue;
        };
        let Some(rule) = config.errors.get(i) else {
            return Action::Continue;
        };
        let facts = Facts {
            request_id: &saved.request_id,
            method: &saved.method,
            path: &saved.path,
            status,
        };
        let (status, headers, body) = rule.respond.render(&facts, status);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        resp.send_response(status, &pairs, body);
        count(&rule.name.clone().unwrap_or_else(|| format!("errors_{i}")));
        Action::Continue
    }
}

tollgate_sdk::export_filter!(CustomResponseFilter, headers_only);
