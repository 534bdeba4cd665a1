//! Templates of answers: `{{request_id}}`, `{{status}}`, `{{method}}`, `{{path}}` in text, and
//! in the strings of a JSON document (so substituted values are always escaped).
//!
//! ```
//! use tollgate_custom_response::template::{Facts, render, Template};
//! assert!(Template::parse("id {{request_id}}").is_ok());
//! assert!(Template::parse("{{nope}}").is_err());
//! let facts = Facts { request_id: "r1", method: "GET", path: "/a", status: 503 };
//! assert_eq!(render("{{status}} for {{request_id}}", &facts), "503 for r1");
//! ```

use serde_json::Value;

/// What a template can name.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The request id header's value (empty when absent).
    pub request_id: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The request path (with its query).
    pub path: &'a str,
    /// The status of the answer's source (the upstream's, or the rule's).
    pub status: u16,
}

/// The placeholders.
pub const NAMES: [&str; 4] = ["request_id", "status", "method", "path"];

/// A checked template (the check runs at configuration time).
#[derive(Debug)]
pub struct Template;

impl Template {
    /// Checks that every `{{...}}` in `text` names a known placeholder.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!("unclosed {{{{ in {text:?}"));
            };
            let name = after[..end].trim();
            if !NAMES.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{{{name}}}}} (known: {})",
                    NAMES.join(", ")
                ));
            }
            rest = &after[end + 2..];
        }
        Ok(Template)
    }
}

/// `text` with its placeholders replaced.
pub fn render(text: &str, facts: &Facts<'_>) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match after[..end].trim() {
            "request_id" => out.push_str(facts.request_id),
            "status" => out.push_str(&facts.status.to_string()),
            "method" => out.push_str(facts.method),
            "path" => out.push_str(facts.path),
            _ => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Checks every string (keys included) of a JSON template.
pub fn check_json(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) => Template::parse(s).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(check_json),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            Template::parse(k)?;
            check_json(v)
        }),
        _ => Ok(()),
    }
}

/// The JSON template with its strings rendered. A string that is exactly `{{status}}` becomes
/// the number.
pub fn render_json(value: &Value, facts: &Facts<'_>) -> Value {
    match value {
        Value::String(s) if s.trim() == "{{status}}" => Value::from(facts.status),
        Value::String(s) => Value::String(render(s, facts)),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_json(v, facts)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (render(k, facts), render_json(v, facts)))
                .collect(),
        ),
        other => other.clone(),
    }
}
