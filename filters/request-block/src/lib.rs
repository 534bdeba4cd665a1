//! `request-block`: refuses requests whose path, query, header values or body match a rule
//! (substring, prefix, exact or regular expression; case-insensitive unless told otherwise).
//! Paths and queries are percent-decoded (repeatedly) and paths normalised first (see
//! [`normalize`]), so encodings, `//`, `..`, `;params`, mixed case and overlong UTF-8 do not get
//! around a rule. The body is inspected up to `max_body_bytes` with the SDK's bounded body API.
//! A refusal is a 403 (status and body configurable), a log line and a metric naming the rule.
//!
//! The configuration reference is `filters/request-block/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_request_block::{RequestBlockConfig, RequestBlockFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse::<RequestBlockConfig>(br#"{
//!   "rules": [{"name": "admin", "path": {"prefix": "/admin"}}]
//! }"#)?);
//! let status = |path: &str| {
//!     let mut headers = HeaderList::from([(":method", "GET"), (":path", path)]);
//!     let mut req = Request::new(&mut headers);
//!     RequestBlockFilter::new(Rc::clone(&config)).on_request_headers(&mut req, true);
//!     req.local_reply().map_or(200, |r| r.status)
//! };
//! assert_eq!(status("/shop"), 200);
//! assert_eq!(status("/Admin/users"), 403);
//! assert_eq!(status("/shop/%2e%2e/admin"), 403);
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod normalize;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;
use std::rc::Rc;

use regex_lite::Regex;
use serde::Deserialize;
use tollgate_sdk::body::{BodyLimit, Extent};
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::{Action, Body, ConfigError, FilterConfig, HttpFilter, Request};

/// The largest `max_body_bytes` accepted (Envoy buffers at most 1 MiB per connection by default).
pub const MAX_BODY_LIMIT: usize = 1 << 20;

/// The whole plugin configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestBlockConfig {
    /// The rules, tried in order; the first that matches blocks.
    pub rules: Vec<Rule>,
    /// How much of a request body `body` rules look at (the rest goes on unread).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The status of a refusal.
    #[serde(default = "default_status")]
    pub status: u16,
    /// The body of a refusal.
    #[serde(default = "default_body")]
    pub body: String,
    #[serde(skip)]
    counters: OnceCell<Vec<Counter>>,
}

fn default_max_body() -> usize {
    8192
}
fn default_status() -> u16 {
    403
}
fn default_body() -> String {
    "blocked\n".into()
}

/// One rule: a name (in logs and metrics), what it looks at, and the pattern.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Names the rule in the log line and the metric's `rule` tag.
    pub name: String,
    /// The normalised path (and the decoded path before `..` resolution).
    #[serde(default)]
    pub path: Option<Pattern>,
    /// The decoded query string.
    #[serde(default)]
    pub query: Option<Pattern>,
    /// The header whose every value `value` is matched against.
    #[serde(default)]
    pub header: Option<String>,
    /// The pattern for `header`'s values.
    #[serde(default)]
    pub value: Option<Pattern>,
    /// The request body (its first `max_body_bytes`), raw and percent-decoded.
    #[serde(default)]
    pub body: Option<Pattern>,
}

/// A text pattern: exactly one of `contains`, `prefix`, `exact`, `regex`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// A substring.
    #[serde(default)]
    pub contains: Option<String>,
    /// A prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The whole text.
    #[serde(default)]
    pub exact: Option<String>,
    /// A regular expression found anywhere (`^`/`$` to anchor; `regex-lite` syntax).
    #[serde(default)]
    pub regex: Option<String>,
    /// Compare ignoring ASCII case (default) or not.
    #[serde(default = "yes")]
    pub ignore_case: bool,
    #[serde(skip)]
    compiled: OnceCell<Compiled>,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
enum Compiled {
    Contains(String),
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

impl Pattern {
    fn compile(&self) -> Result<Compiled, (String, String)> {
        let lower = |s: &String| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let given: Vec<&str> = [
            ("contains", self.contains.is_some()),
            ("prefix", self.prefix.is_some()),
            ("exact", self.exact.is_some()),
            ("regex", self.regex.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
        if given.len() != 1 {
            return Err((
                String::new(),
                "give exactly one of contains, prefix, exact, regex".into(),
            ));
        }
        if let Some(s) = &self.contains {
            if s.is_empty() {
                return Err(("contains".into(), "must not be empty".into()));
            }
            return Ok(Compiled::Contains(lower(s)));
        }
        if let Some(s) = &self.prefix {
            return Ok(Compiled::Prefix(lower(s)));
        }
        if let Some(s) = &self.exact {
            return Ok(Compiled::Exact(lower(s)));
        }
        let source = self.regex.as_deref().unwrap_or_default();
        let source = if self.ignore_case {
            format!("(?i:{source})")
        } else {
            source.to_string()
        };
        Regex::new(&source)
            .map(Compiled::Regex)
            .map_err(|e| ("regex".into(), e.to_string()))
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let Some(compiled) = self.compiled.get() else {
            return false;
        };
        let folded;
        let text = if self.ignore_case && !matches!(compiled, Compiled::Regex(_)) {
            folded = text.to_ascii_lowercase();
            folded.as_str()
        } else {
            text
        };
        match compiled {
            Compiled::Contains(s) => text.contains(s.as_str()),
            Compiled::Prefix(s) => text.starts_with(s.as_str()),
            Compiled::Exact(s) => text == s,
            Compiled::Regex(r) => r.is_match(text),
        }
    }
}

impl FilterConfig for RequestBlockConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::at("rules", "give at least one rule"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if rule.name.is_empty()
                || !rule
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    "letters, digits, - and _ only (it is a metric tag)",
                ));
            }
            if let Some(dup) = self.rules[..i].iter().position(|r| r.name == rule.name) {
                return Err(ConfigError::at(
                    format!("{at}.name"),
                    format!("{:?} is also rules[{dup}]'s name", rule.name),
                ));
            }
            if rule.header.is_some() != rule.value.is_some() {
                return Err(ConfigError::at(
                    format!(
                        "{at}.{}",
                        if rule.header.is_some() {
                            "value"
                        } else {
                            "header"
                        }
                    ),
                    "`header` and `value` go together",
                ));
            }
            let targets = [
                ("path", rule.path.as_ref()),
                ("query", rule.query.as_ref()),
                ("value", rule.value.as_ref()),
                ("body", rule.body.as_ref()),
            ];
            let set: Vec<_> = targets.iter().filter(|(_, p)| p.is_some()).collect();
            if set.len() != 1 {
                return Err(ConfigError::at(
                    at,
                    "give exactly one of path, query, header with value, body",
                ));
            }
            if let Some(h) = &rule.header
                && (h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase() || b <= b' '))
            {
                return Err(ConfigError::at(
                    format!("{at}.header"),
                    "a header name in lower case",
                ));
            }
            for (field, pattern) in targets {
                if let Some(p) = pattern {
                    let compiled = p.compile().map_err(|(sub, message)| {
                        let path = if sub.is_empty() {
                            format!("{at}.{field}")
                        } else {
                            format!("{at}.{field}.{sub}")
                        };
                        ConfigError::at(path, message)
                    })?;
                    let _ = p.compiled.set(compiled);
                }
            }
        }
        if self.max_body_bytes == 0 && self.has_body_rules() {
            return Err(ConfigError::at(
                "max_body_bytes",
                "must be at least 1 when a rule looks at the body",
            ));
        }
        if self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::at(
                "max_body_bytes",
                format!("at most {MAX_BODY_LIMIT}"),
            ));
        }
        if !(200..=599).contains(&self.status) {
            return Err(ConfigError::at(
                "status",
                "must be an HTTP status from 200 to 599",
            ));
        }
        Ok(())
    }

    fn on_configured(&self) -> Result<(), ConfigError> {
        self.counters();
        Ok(())
    }
}

/// The metric name: `request_block_blocked{rule=...}` in Prometheus.
pub const METRIC: &str = "request_block_blocked";

impl RequestBlockConfig {
    fn counters(&self) -> &[Counter] {
        self.counters.get_or_init(|| {
            self.rules
                .iter()
                .map(|r| Counter::define(METRIC, &[("rule", r.name.as_str())]))
                .collect()
        })
    }

    fn has_body_rules(&self) -> bool {
        self.rules.iter().any(|r| r.body.is_some())
    }

    /// The first rule the request's path, query and headers match (its index).
    pub fn match_headers(&self, raw_path: &str, headers: &[(String, String)]) -> Option<usize> {
        let (path, query) = normalize::split_path(raw_path);
        // Lazily: most requests only need the normalised path.
        let normal = OnceCell::new();
        let decoded = OnceCell::new();
        let decoded_query = OnceCell::new();
        self.rules.iter().position(|rule| {
            if let Some(p) = &rule.path {
                return p.matches(normal.get_or_init(|| normalize::normalize_path(path)))
                    || p.matches(decoded.get_or_init(|| normalize::decode(path)));
            }
            if let Some(p) = &rule.query {
                return p.matches(decoded_query.get_or_init(|| normalize::decode_query(query)));
            }
            if let (Some(name), Some(p)) = (&rule.header, &rule.value) {
                return headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case(name) && p.matches(v));
            }
            false
        })
    }

    /// The first `body` rule the body (raw, or percent-decoded) matches.
    pub fn match_body(&self, body: &[u8]) -> Option<usize> {
        let raw = String::from_utf8_lossy(body);
        let decoded = OnceCell::new();
        self.rules.iter().position(|rule| {
            rule.body.as_ref().is_some_and(|p| {
                p.matches(&raw) || p.matches(decoded.get_or_init(|| normalize::decode_query(&raw)))
            })
        })
    }
}

/// The filter for one HTTP stream.
pub struct RequestBlockFilter {
    config: Rc<RequestBlockConfig>,
    inspect_body: bool,
}

impl RequestBlockFilter {
    fn block(&self, index: usize, what: &str) -> (u16, String) {
        let config = &self.config;
        if let Some(counter) = config.counters().get(index) {
            counter.increment();
        }
        let name = config.rules.get(index).map_or("?", |r| r.name.as_str());
        log::info!("request-block: blocked by rule {name} ({what})");
        (config.status, config.body.clone())
    }
}

impl HttpFilter for RequestBlockFilter {
    const NAME: &'static str = "request-block";
    type Config = RequestBlockConfig;

    fn new(config: Rc<RequestBlockConfig>) -> Self {
        Self {
            config,
            inspect_body: false,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, end_of_stream: bool) -> Action {
        let path = req.path().unwrap_or_default();
        let headers = req.headers();
        if let Some(index) = self.config.match_headers(&path, &headers) {
            let (status, body) = self.block(index, "headers");
            req.send_response(status, &[("content-type", "text/plain")], body.as_bytes());
            return Action::Continue;
        }
        self.inspect_body = !end_of_stream && self.config.has_body_rules();
        Action::Continue
    }

    fn request_body_limit(&self) -> Option<BodyLimit> {
        self.inspect_body
            .then(|| BodyLimit::truncate_at(self.config.max_body_bytes))
    }

    fn on_request_body_buffered(&mut self, body: &mut Body<'_>, _extent: Extent) -> Action {
        let bytes = body.bytes();
        let seen = bytes.get(..self.config.max_body_bytes).unwrap_or(&bytes);
        if let Some(index) = self.config.match_body(seen) {
            let (status, reply) = self.block(index, "body");
            body.send_response(status, &[("content-type", "text/plain")], reply.as_bytes());
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(RequestBlockFilter, [request_body]);
