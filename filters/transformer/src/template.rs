//! Templates for header and query values, redirect locations and JSON strings:
//! `{{path}}`, `{{query}}`, `{{method}}`, `{{host}}`, `{{consumer}}`, `{{header:NAME}}`,
//! `{{query_param:NAME}}`, `{{segment:N}}`. A template is parsed once, with the configuration;
//! it is rendered against the request as it arrived (before this filter changed it).
//!
//! ```
//! use tollgate_transformer::template::{Facts, Template};
//! let t = Template::parse("{{header:x-user}} on {{segment:1}}")?;
//! let facts = Facts::new("GET", "/v1/orders/7?x=1", "api.example.com",
//!     vec![("x-user".into(), "ada".into())], None);
//! assert_eq!(t.render(&facts), "ada on orders");
//! # Ok::<(), String>(())
//! ```

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Path,
    Query,
    Method,
    Host,
    Consumer,
    Header(String),
    QueryParam(String),
    Segment(usize),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// What templates read: the request as it arrived.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `:method`.
    pub method: String,
    /// The path without its query.
    pub path: String,
    /// The query with its `?`, or empty.
    pub query: String,
    /// `:authority`.
    pub host: String,
    /// Every header (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The consumer (the value of the consumer header), when known.
    pub consumer: Option<String>,
}

impl Facts {
    /// Facts of a request with `method`, `path` (query included), `host`, `headers`.
    pub fn new(
        method: &str,
        path: &str,
        host: &str,
        headers: Vec<(String, String)>,
        consumer: Option<String>,
    ) -> Facts {
        let (path, query) = match path.find('?') {
            Some(i) => (&path[..i], &path[i..]),
            None => (path, ""),
        };
        Facts {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            host: host.to_string(),
            headers,
            consumer,
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    fn query_param(&self, name: &str) -> String {
        let query = self.query.strip_prefix('?').unwrap_or("");
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if tollgate_sdk::http::percent_decode(k).as_deref() == Some(name) {
                return tollgate_sdk::http::percent_decode(&v.replace('+', " "))
                    .unwrap_or_default();
            }
        }
        String::new()
    }

    fn segment(&self, n: usize) -> &str {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .nth(n)
            .unwrap_or("")
    }
}

impl Template {
    /// Parses `text`; an unknown placeholder or an unclosed `{{` is an error naming it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
            let name = after[..end].trim();
            let part = match name.split_once(':') {
                None => match name {
                    "path" => Part::Path,
                    "query" => Part::Query,
                    "method" => Part::Method,
                    "host" => Part::Host,
                    "consumer" => Part::Consumer,
                    _ => return Err(unknown(name)),
                },
                Some(("header", h)) if !h.trim().is_empty() => {
                    Part::Header(h.trim().to_ascii_lowercase())
                }
                Some(("query_param", q)) if !q.trim().is_empty() => {
                    Part::QueryParam(q.trim().to_string())
                }
                Some(("segment", n)) => Part::Segment(n.trim().parse().map_err(|_| unknown(name))?),
                _ => return Err(unknown(name)),
            };
            parts.push(part);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether it has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Whether it names the consumer.
    pub fn uses_consumer(&self) -> bool {
        self.parts.contains(&Part::Consumer)
    }

    /// The text for `facts` (an absent header, parameter or segment is empty).
    pub fn render(&self, facts: &Facts) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Path => out.push_str(&facts.path),
                Part::Query => out.push_str(&facts.query),
                Part::Method => out.push_str(&facts.method),
                Part::Host => out.push_str(&facts.host),
                Part::Consumer => out.push_str(facts.consumer.as_deref().unwrap_or("")),
                Part::Header(h) => out.push_str(facts.header(h)),
                Part::QueryParam(q) => out.push_str(&facts.query_param(q)),
                Part::Segment(n) => out.push_str(facts.segment(*n)),
            }
        }
        out
    }
}

fn unknown(name: &str) -> String {
    format!(
        "unknown placeholder {{{{{name}}}}} (known: path, query, method, host, consumer, header:NAME, query_param:NAME, segment:N)"
    )
}
