//! `json-mask`: redacts, masks or removes values in JSON request and response bodies, by path
//! (`$.user.ssn`, `$.cards[*].number`), by key name anywhere (`password`), and by what values
//! look like (card numbers passing the Luhn check, e-mail addresses, configured regular
//! expressions such as national ids), inside strings, keys and numbers.
//!
//! Bodies arrive in any number of chunks: the filter buffers a JSON body (up to
//! `max_body_bytes`, with the SDK's bounded body API for requests and the same rule for
//! responses), rewrites it once at its end and replaces it whole. Past the limit the body goes on
//! unchanged or is refused (`oversize`); it is never cut into a broken document. Bodies that are
//! not JSON by their `content-type`, that are compressed (`content-encoding`), or that do not parse
//! pass untouched. Because Envoy never corrects `content-length` after a body changes, the filter
//! removes it from every JSON message it may rewrite (the body then goes chunked on HTTP/1.1).
//!
//! The configuration reference is `filters/json-mask/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_json_mask::{JsonMaskConfig, JsonMaskFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request, body};
//!
//! let config = Rc::new(tollgate_sdk::config::parse::<JsonMaskConfig>(br#"{
//!   "rules": [{"key": "password"}, {"detect": "card", "action": "mask"}]
//! }"#)?);
//! let mut filter = JsonMaskFilter::new(config);
//! let mut headers = HeaderList::from([(":method", "POST"), ("content-type", "application/json")]);
//! filter.on_request_headers(&mut Request::new(&mut headers), false);
//! let out = body::feed_request(&mut filter, &[br#"{"password": "hunter2", "#, br#""card": "4111111111111111"}"#]);
//! assert_eq!(out, body::Outcome::Forwarded(br#"{"password":"[REDACTED]","card":"************1111"}"#.to_vec()));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod json;
pub mod rules;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;
use std::rc::Rc;

use serde::Deserialize;
use tollgate_sdk::body::{BodyLimit, Extent};
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::{Action, Body, ConfigError, FilterConfig, HttpFilter, Request, Response};

use crate::json::Rewrite;
use crate::rules::{Detector, Rules};

/// The largest `max_body_bytes` accepted (Envoy buffers at most 1 MiB per connection by default;
/// raise `per_connection_buffer_limit_bytes` with it).
pub const MAX_BODY_LIMIT: usize = 16 << 20;

/// The metric name: `json_mask_bodies{direction=...,result=...}` in Prometheus.
pub const METRIC: &str = "json_mask_bodies";

/// The whole plugin configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JsonMaskConfig {
    /// The rules. Path rules win over key rules; detectors apply to every string, key and number
    /// no path or key rule replaced.
    pub rules: Vec<Rule>,
    /// Mask request bodies (default true).
    #[serde(default = "yes")]
    pub request: bool,
    /// Mask response bodies (default true).
    #[serde(default = "yes")]
    pub response: bool,
    /// The largest body inspected, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// What happens to a larger body (or one nested deeper than 128 levels).
    #[serde(default)]
    pub oversize: Oversize,
    /// What `redact` puts in place of a value (or of what a detector found in a string).
    #[serde(default = "default_replacement")]
    pub replacement: String,
    #[serde(skip)]
    compiled: OnceCell<Rules>,
}

fn yes() -> bool {
    true
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_replacement() -> String {
    "[REDACTED]".into()
}

/// What happens to a body larger than `max_body_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// It goes on unchanged (default).
    #[default]
    Pass,
    /// A request is answered 413; a response is replaced by a 502 (or reset, when its headers
    /// already went to the client).
    Refuse,
}

/// One rule: exactly one of `path`, `key`, `detect`, `regex`, and what to do.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A path from the root: `$.a.b`, `$.list[0]`, `$.list[*].x`, `$['odd key']`, `$.*`.
    #[serde(default)]
    pub path: Option<String>,
    /// A member name anywhere in the document (ASCII case ignored).
    #[serde(default)]
    pub key: Option<String>,
    /// A built-in value detector.
    #[serde(default)]
    pub detect: Option<Detect>,
    /// A regular expression found in strings, keys and numbers (`regex-lite` syntax).
    #[serde(default)]
    pub regex: Option<String>,
    /// What to do with the value (or what the detector found). Default `redact`.
    #[serde(default)]
    pub action: RuleAction,
    /// With `mask`: how many characters stay visible at the end (default 4; at most a quarter).
    #[serde(default)]
    pub keep_last: Option<usize>,
}

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Detect {
    /// Payment card numbers: 13 to 19 digits (single spaces or dashes between groups), Luhn-valid.
    Card,
    /// E-mail addresses.
    Email,
}

/// What a rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Replace with `replacement` (default).
    #[default]
    Redact,
    /// Replace characters with `*` (all scalars inside an object or array).
    Mask,
    /// Remove the member or element (path and key rules).
    Remove,
}

impl Rule {
    fn compile(&self, into: &mut Rules) -> Result<(), ConfigError> {
        let given: Vec<&str> = [
            ("path", self.path.is_some()),
            ("key", self.key.is_some()),
            ("detect", self.detect.is_some()),
            ("regex", self.regex.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
        if given.len() != 1 {
            return Err(ConfigError::at(
                "",
                "give exactly one of path, key, detect, regex",
            ));
        }
        if self.keep_last.is_some() && self.action != RuleAction::Mask {
            return Err(ConfigError::at(
                "keep_last",
                "only applies to action \"mask\"",
            ));
        }
        let action = match self.action {
            RuleAction::Redact => rules::Action::Redact,
            RuleAction::Mask => rules::Action::Mask {
                keep_last: self.keep_last.unwrap_or(4),
            },
            RuleAction::Remove => rules::Action::Remove,
        };
        if let Some(path) = &self.path {
            let segments = rules::parse_path(path).map_err(|e| ConfigError::at("path", e))?;
            into.add_path(segments, action);
            return Ok(());
        }
        if let Some(key) = &self.key {
            if key.is_empty() {
                return Err(ConfigError::at("key", "must not be empty"));
            }
            into.add_key(key, action);
            return Ok(());
        }
        if action == rules::Action::Remove {
            return Err(ConfigError::at(
                "action",
                "remove applies to path and key rules; detectors redact or mask",
            ));
        }
        let detector = match (self.detect, &self.regex) {
            (Some(Detect::Card), _) => Detector::Card,
            (Some(Detect::Email), _) => Detector::Email,
            (None, Some(source)) => {
                let re = regex_lite::Regex::new(source)
                    .map_err(|e| ConfigError::at("regex", e.to_string()))?;
                if re.is_match("") {
                    return Err(ConfigError::at("regex", "matches the empty string"));
                }
                Detector::Regex(re)
            }
            (None, None) => return Err(ConfigError::at("", "no rule given")),
        };
        into.add_detector(detector, action);
        Ok(())
    }

    /// The compiled rules (after validation).
    fn compiled(config: &JsonMaskConfig) -> Result<Rules, ConfigError> {
        let mut rules = Rules::new(&config.replacement);
        for (i, rule) in config.rules.iter().enumerate() {
            rule.compile(&mut rules).map_err(|err| {
                let at = if err.path().is_empty() {
                    format!("rules[{i}]")
                } else {
                    format!("rules[{i}].{}", err.path())
                };
                ConfigError::at(at, err.message())
            })?;
        }
        Ok(rules)
    }
}

impl FilterConfig for JsonMaskConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::at("rules", "give at least one rule"));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ConfigError::at(
                "max_body_bytes",
                format!("must be between 1 and {MAX_BODY_LIMIT}"),
            ));
        }
        if !self.request && !self.response {
            return Err(ConfigError::at(
                "request",
                "request and response are both false: nothing to mask",
            ));
        }
        let rules = Rule::compiled(self)?;
        // Compiled once, here: `parse` validates once per configuration.
        let _ = self.compiled.set(rules);
        Ok(())
    }
}

impl JsonMaskConfig {
    /// The compiled rules.
    pub fn rules(&self) -> &Rules {
        self.compiled.get_or_init(|| Rules::new(&self.replacement))
    }

    /// The compiled rules, by value (tests, examples).
    #[doc(hidden)]
    pub fn take_rules(mut self) -> Rules {
        self.compiled.take().unwrap_or_default()
    }
}

/// Whether a message with this `content-type` and `content-encoding` is JSON the filter can read.
///
/// ```
/// use tollgate_json_mask::is_json;
/// assert!(is_json(Some("application/json; charset=utf-8"), None));
/// assert!(is_json(Some("application/problem+json"), Some("identity")));
/// assert!(!is_json(Some("application/json"), Some("gzip")));
/// assert!(!is_json(Some("text/plain"), None));
/// assert!(!is_json(None, None));
/// ```
pub fn is_json(content_type: Option<&str>, content_encoding: Option<&str>) -> bool {
    let encoded = content_encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let Some(ct) = content_type else {
        return false;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    !encoded && (media == "application/json" || media.ends_with("+json"))
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    masked: [Counter; 2],
    unchanged: [Counter; 2],
    invalid: [Counter; 2],
    oversize_passed: [Counter; 2],
    oversize_refused: [Counter; 2],
}

thread_local! {
    static METRICS: OnceCell<Metrics> = const { OnceCell::new() };
}

fn metrics() -> Metrics {
    METRICS.with(|m| {
        *m.get_or_init(|| {
            let c = |result: &str| {
                [
                    Counter::define(METRIC, &[("direction", "request"), ("result", result)]),
                    Counter::define(METRIC, &[("direction", "response"), ("result", result)]),
                ]
            };
            Metrics {
                masked: c("masked"),
                unchanged: c("unchanged"),
                invalid: c("invalid"),
                oversize_passed: c("oversize_passed"),
                oversize_refused: c("oversize_refused"),
            }
        })
    })
}

/// Which message a body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request (client to upstream).
    Request,
    /// The response (upstream to client).
    Response,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Request => 0,
            Direction::Response => 1,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// What the filter does with one message's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Not JSON, not configured, or past the limit: the body goes on as it comes.
    #[default]
    Skip,
    /// JSON: buffered and masked at its end.
    Inspect,
}

/// The filter for one HTTP stream.
pub struct JsonMaskFilter {
    config: Rc<JsonMaskConfig>,
    request: Phase,
    response: Phase,
    /// This filter answered the request itself: its own reply is not inspected.
    replied: bool,
}

impl JsonMaskFilter {
    /// Decides, from a message's headers, whether its body is inspected; removes the
    /// `content-length` of a body that may be rewritten. `Err` carries the refusal.
    fn start(
        &self,
        headers: &mut dyn tollgate_sdk::HeaderMap,
        end_of_stream: bool,
        direction: Direction,
    ) -> Result<Phase, ()> {
        let enabled = match direction {
            Direction::Request => self.config.request,
            Direction::Response => self.config.response,
        };
        if !enabled
            || end_of_stream
            || !is_json(
                headers.get("content-type").as_deref(),
                headers.get("content-encoding").as_deref(),
            )
        {
            return Ok(Phase::Skip);
        }
        if tollgate_sdk::body::announced_too_large(
            self.config.max_body_bytes,
            headers.get("content-length").as_deref(),
        ) {
            return match self.config.oversize {
                Oversize::Pass => {
                    metrics().oversize_passed[direction.index()].increment();
                    log::debug!(
                        "json-mask: {} body announced above {} bytes, passed unchanged",
                        direction.name(),
                        self.config.max_body_bytes
                    );
                    Ok(Phase::Skip)
                }
                Oversize::Refuse => Err(()),
            };
        }
        // Envoy does not correct `content-length` after a body rewrite: the body goes chunked.
        headers.remove("content-length");
        Ok(Phase::Inspect)
    }

    /// Masks a complete body in place; `Err` when it must be refused (too deep, with `refuse`).
    fn finish(&self, body: &mut Body<'_>, direction: Direction) -> Result<(), ()> {
        let m = metrics();
        let d = direction.index();
        let bytes = body.bytes();
        match json::rewrite(&bytes, self.config.rules()) {
            Rewrite::Unchanged => m.unchanged[d].increment(),
            Rewrite::Masked(out, changes) => {
                log::debug!(
                    "json-mask: {} body: {changes} value(s) masked",
                    direction.name()
                );
                body.replace(&out);
                m.masked[d].increment();
            }
            Rewrite::Invalid(at) => {
                log::debug!(
                    "json-mask: {} body is not JSON (at byte {at}), passed unchanged",
                    direction.name()
                );
                m.invalid[d].increment();
            }
            Rewrite::TooDeep => return self.oversize(direction),
        }
        Ok(())
    }

    /// A body that cannot be inspected (too large, too deep): pass or refuse.
    fn oversize(&self, direction: Direction) -> Result<(), ()> {
        let m = metrics();
        match self.config.oversize {
            Oversize::Pass => {
                m.oversize_passed[direction.index()].increment();
                log::debug!(
                    "json-mask: {} body not inspected (above {} bytes or too deep), passed unchanged",
                    direction.name(),
                    self.config.max_body_bytes
                );
                Ok(())
            }
            Oversize::Refuse => Err(()),
        }
    }

    fn refusal(&self, direction: Direction) -> (u16, &'static str, String) {
        metrics().oversize_refused[direction.index()].increment();
        log::info!(
            "json-mask: {} body refused: above {} bytes or nested too deep to mask",
            direction.name(),
            self.config.max_body_bytes
        );
        let (status, title) = match direction {
            Direction::Request => (413, "Payload Too Large"),
            Direction::Response => (502, "Bad Gateway"),
        };
        let detail = format!(
            "the {} body could not be masked: above {} bytes or nested too deep",
            direction.name(),
            self.config.max_body_bytes
        );
        let mut body = Vec::new();
        body.extend_from_slice(b"{\"type\":\"about:blank\",\"title\":");
        json::write_json_string(&mut body, title);
        body.extend_from_slice(format!(",\"status\":{status},\"detail\":").as_bytes());
        json::write_json_string(&mut body, &detail);
        body.push(b'}');
        (
            status,
            "application/problem+json",
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

impl HttpFilter for JsonMaskFilter {
    const NAME: &'static str = "json-mask";
    type Config = JsonMaskConfig;

    fn new(config: Rc<JsonMaskConfig>) -> Self {
        Self {
            config,
            request: Phase::Skip,
            response: Phase::Skip,
            replied: false,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, end_of_stream: bool) -> Action {
        match self.start(req.header_map(), end_of_stream, Direction::Request) {
            Ok(phase) => self.request = phase,
            Err(()) => {
                let (status, ct, body) = self.refusal(Direction::Request);
                req.send_response(status, &[("content-type", ct)], body);
                self.replied = true;
            }
        }
        Action::Continue
    }

    fn request_body_limit(&self) -> Option<BodyLimit> {
        // One byte more than the limit: a body of exactly `max_body_bytes` is seen whole, a
        // longer one is handed over as soon as it is known to be longer.
        (self.request == Phase::Inspect)
            .then(|| BodyLimit::truncate_at(self.config.max_body_bytes.saturating_add(1)))
    }

    fn on_request_body_buffered(&mut self, body: &mut Body<'_>, extent: Extent) -> Action {
        self.request = Phase::Skip;
        let result = if extent == Extent::Truncated || body.len() > self.config.max_body_bytes {
            self.oversize(Direction::Request)
        } else {
            self.finish(body, Direction::Request)
        };
        if result.is_err() {
            let (status, ct, text) = self.refusal(Direction::Request);
            body.send_response(status, &[("content-type", ct)], text);
            self.replied = true;
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, end_of_stream: bool) -> Action {
        if self.replied {
            // Envoy runs a filter's own local reply through its response callbacks.
            return Action::Continue;
        }
        match self.start(resp.header_map(), end_of_stream, Direction::Response) {
            Ok(phase) => self.response = phase,
            Err(()) => {
                let (status, ct, body) = self.refusal(Direction::Response);
                resp.send_response(status, &[("content-type", ct)], body);
                self.replied = true;
            }
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body: &mut Body<'_>, end_of_stream: bool) -> Action {
        if self.response == Phase::Skip {
            return Action::Continue;
        }
        let result = if body.len() > self.config.max_body_bytes {
            self.response = Phase::Skip;
            self.oversize(Direction::Response)
        } else if end_of_stream {
            self.response = Phase::Skip;
            self.finish(body, Direction::Response)
        } else {
            // The host keeps the chunks; the last call sees them all.
            return Action::Pause;
        };
        if result.is_err() {
            let (status, ct, text) = self.refusal(Direction::Response);
            body.send_response(status, &[("content-type", ct)], text);
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(JsonMaskFilter);
