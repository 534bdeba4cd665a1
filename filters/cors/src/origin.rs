//! One route's CORS policy: which origins it allows (exact, `*`, `scheme://*.suffix` wildcards,
//! regular expressions) and the headers allowed requests and preflights get.

use std::cell::OnceCell;

use regex_lite::Regex;
use serde::Deserialize;
use tollgate_sdk::{ConfigError, FilterConfig};

/// The CORS policy of a route.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins allowed: `https://app.example.com` (exact, ASCII case-insensitive),
    /// `https://*.example.com` (one or more labels before `.example.com`, same scheme and port),
    /// or `*` (any origin).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Regular expressions an allowed origin matches in full (`regex-lite` syntax).
    #[serde(default)]
    pub allow_origin_regex: Vec<String>,
    /// `Access-Control-Allow-Methods` of preflight replies.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers` of preflight replies.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers` of allowed responses.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` on allowed responses and preflight replies.
    #[serde(default)]
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` (seconds) of preflight replies.
    #[serde(default)]
    pub max_age: Option<u32>,
    #[serde(skip)]
    compiled: OnceCell<Vec<Regex>>,
}

/// The longest `max_age` accepted: one day (browsers cap it lower anyway).
pub const MAX_AGE_LIMIT: u32 = 86_400;

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl FilterConfig for CorsPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.allow_origins.is_empty() && self.allow_origin_regex.is_empty() {
            return Err(ConfigError::at(
                "allow_origins",
                "give `allow_origins`, `allow_origin_regex` or both (with neither, no origin is allowed)",
            ));
        }
        for (i, origin) in self.allow_origins.iter().enumerate() {
            check_origin(origin).map_err(|m| ConfigError::at(format!("allow_origins[{i}]"), m))?;
            if origin == "*" && self.allow_credentials {
                return Err(ConfigError::at(
                    format!("allow_origins[{i}]"),
                    "`*` with `allow_credentials: true` would let every site read credentialed responses; list the origins",
                ));
            }
        }
        let mut compiled = Vec::new();
        for (i, pattern) in self.allow_origin_regex.iter().enumerate() {
            let regex = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| ConfigError::at(format!("allow_origin_regex[{i}]"), e.to_string()))?;
            compiled.push(regex);
        }
        for (field, list) in [
            ("allow_methods", &self.allow_methods),
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for (i, item) in list.iter().enumerate() {
                if !is_token(item) {
                    return Err(ConfigError::at(
                        format!("{field}[{i}]"),
                        format!("{item:?} is not an HTTP token"),
                    ));
                }
            }
        }
        if let Some(age) = self.max_age
            && age > MAX_AGE_LIMIT
        {
            return Err(ConfigError::at(
                "max_age",
                format!("at most {MAX_AGE_LIMIT} seconds"),
            ));
        }
        let _ = self.compiled.set(compiled);
        Ok(())
    }
}

/// `Ok` when `origin` is `*`, `null`, `scheme://host[:port]` or `scheme://*.host[:port]`.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || origin == "null" {
        return Ok(());
    }
    let bad = || {
        format!(
            "{origin:?} is not an origin (`https://app.example.com`, `https://*.example.com`, `*`; no path, no trailing slash)"
        )
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(bad());
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(bad());
    }
    Ok(())
}

/// Whether `origin` matches the `scheme://*.suffix` pattern split as `head` (`scheme://`) and
/// `suffix`: one or more DNS labels, then `.suffix`, ASCII case-insensitively.
fn wildcard_matches(head: &str, suffix: &str, origin: &str) -> bool {
    let (o, h, s) = (origin.as_bytes(), head.as_bytes(), suffix.as_bytes());
    if o.len() < h.len() + s.len() + 2 || !o[..h.len()].eq_ignore_ascii_case(h) {
        return false;
    }
    let (labels, tail) = o[h.len()..].split_at(o.len() - h.len() - s.len());
    tail.eq_ignore_ascii_case(s)
        && labels.ends_with(b".")
        && labels.len() > 1
        && !labels.starts_with(b".")
        && labels
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
}

impl CorsPolicy {
    /// Whether the `Origin` header value `origin` is allowed.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let listed = self.allow_origins.iter().any(|allowed| {
            if allowed == "*" {
                return true;
            }
            match allowed.split_once("://*.") {
                Some((scheme, suffix)) => {
                    wildcard_matches(&allowed[..scheme.len() + 3], suffix, origin)
                }
                None => allowed.eq_ignore_ascii_case(origin),
            }
        });
        listed || self.regexes().iter().any(|r| r.is_match(origin))
    }

    fn regexes(&self) -> &[Regex] {
        // Compiled by `validate`, which every configuration goes through before use.
        self.compiled.get().map_or(&[], Vec::as_slice)
    }

    /// The headers of an allowed (non-preflight) response from `origin`.
    pub fn response_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        let mut out = vec![("access-control-allow-origin", origin.to_string())];
        if self.allow_credentials {
            out.push(("access-control-allow-credentials", "true".into()));
        }
        if !self.expose_headers.is_empty() {
            out.push((
                "access-control-expose-headers",
                self.expose_headers.join(","),
            ));
        }
        out
    }

    /// The headers of the local reply to a preflight from `origin`: those of an allowed
    /// response (native `cors` adds them to its preflight replies too), then the preflight ones.
    pub fn preflight_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        let mut out = self.response_headers(origin);
        if !self.allow_methods.is_empty() {
            out.push(("access-control-allow-methods", self.allow_methods.join(",")));
        }
        if !self.allow_headers.is_empty() {
            out.push(("access-control-allow-headers", self.allow_headers.join(",")));
        }
        if let Some(age) = self.max_age {
            out.push(("access-control-max-age", age.to_string()));
        }
        out.push(("vary", "Origin".into()));
        out
    }
}
