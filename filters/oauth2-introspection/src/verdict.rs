//! The decision on an introspection answer (RFC 7662 section 2.2), independent of the host.

use serde_json::{Map, Value};
use tollgate_sdk::callout::{CalloutError, CalloutResponse};

use crate::Config;

/// Largest introspection answer body read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An introspection answer: the JSON object the server returned.
pub type Answer = Map<String, Value>;

/// What the filter does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through as this identity.
    Allow(Identity),
    /// Answer it.
    Refuse(Refusal),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token (or several `authorization` headers, or another scheme).
    Missing,
    /// The server says the token is not active.
    Inactive,
    /// `exp` has passed.
    Expired,
    /// `nbf` is still to come.
    NotYetValid,
    /// `aud` names none of the configured audiences.
    WrongAudience,
    /// A required scope is missing: the ones lacking.
    InsufficientScope(Vec<String>),
    /// No answer could be had (fail closed).
    Unavailable,
}

impl Refusal {
    /// The status and `WWW-Authenticate` challenge (RFC 6750, section 3).
    pub fn reply(&self, config: &Config) -> (u16, Option<String>) {
        let realm = &config.realm;
        match self {
            Refusal::Missing => (401, Some(format!("Bearer realm=\"{realm}\""))),
            Refusal::Inactive
            | Refusal::Expired
            | Refusal::NotYetValid
            | Refusal::WrongAudience => (
                401,
                Some(format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")),
            ),
            Refusal::InsufficientScope(_) => (
                403,
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                    config.required_scopes.join(" ")
                )),
            ),
            Refusal::Unavailable => (config.status_on_error, None),
        }
    }

    /// The reply body: the reason, never the token or the server's answer.
    pub fn body(&self) -> &'static str {
        match self {
            Refusal::Missing => "a bearer token is required\n",
            Refusal::Inactive => "the token is not active\n",
            Refusal::Expired => "the token has expired\n",
            Refusal::NotYetValid => "the token is not valid yet\n",
            Refusal::WrongAudience => "the token is not for this audience\n",
            Refusal::InsufficientScope(_) => "the token lacks a required scope\n",
            Refusal::Unavailable => "the token could not be checked\n",
        }
    }
}

/// Who the request is from, and what goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`, else `client_id`.
    pub consumer: Option<String>,
    /// (header, value) of the configured claims present in the answer.
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// The headers set on the request going upstream.
    pub fn headers(&self, config: &Config) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if let (Some(header), Some(consumer)) = (&config.consumer_header, &self.consumer) {
            headers.push((header.as_str().to_string(), consumer.clone()));
        }
        headers.extend(self.claims.iter().cloned());
        headers
    }
}

/// The answer in a callout's result, or why there is none.
pub fn answer(result: Result<CalloutResponse, CalloutError>) -> Result<Answer, String> {
    let response = result.map_err(|error| error.to_string())?;
    if response.status != 200 {
        return Err(format!(
            "the introspection endpoint answered {}",
            response.status
        ));
    }
    if response.body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "the introspection answer has {} bytes, more than {MAX_BODY_BYTES}",
            response.body.len()
        ));
    }
    let answer: Answer = serde_json::from_slice(&response.body)
        .map_err(|error| format!("the introspection answer is not a JSON object: {error}"))?;
    if !answer.get("active").is_some_and(Value::is_boolean) {
        return Err("the introspection answer has no boolean `active`".into());
    }
    Ok(answer)
}

fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    // A value that could split or smuggle a header is dropped.
    (!text.chars().any(|c| c.is_control())).then_some(text)
}

/// The verdict on `answer` at `now` (seconds since the epoch).
pub fn judge(config: &Config, answer: &Answer, now: u64) -> Verdict {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Verdict::Refuse(Refusal::Inactive);
    }
    let skew = config.clock_skew_s;
    if let Some(exp) = answer.get("exp") {
        match exp.as_u64() {
            Some(exp) if now < exp.saturating_add(skew) => {}
            _ => return Verdict::Refuse(Refusal::Expired),
        }
    }
    if let Some(nbf) = answer.get("nbf") {
        match nbf.as_u64() {
            Some(nbf) if nbf <= now.saturating_add(skew) => {}
            _ => return Verdict::Refuse(Refusal::NotYetValid),
        }
    }
    if !config.audiences.is_empty() {
        let named = |aud: &str| config.audiences.iter().any(|a| a == aud);
        let ok = match answer.get("aud") {
            Some(Value::String(aud)) => named(aud),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(named),
            _ => false,
        };
        if !ok {
            return Verdict::Refuse(Refusal::WrongAudience);
        }
    }
    let granted: Vec<&str> = answer
        .get("scope")
        .and_then(Value::as_str)
        .map(|scope| scope.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let missing: Vec<String> = config
        .required_scopes
        .iter()
        .filter(|scope| !granted.contains(&scope.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Verdict::Refuse(Refusal::InsufficientScope(missing));
    }
    let consumer = ["sub", "client_id"]
        .iter()
        .find_map(|claim| answer.get(*claim).and_then(header_value));
    let claims = config
        .claim_headers
        .iter()
        .filter_map(|c| {
            let value = answer.get(&c.claim).and_then(header_value)?;
            Some((c.header.as_str().to_string(), value))
        })
        .collect();
    Verdict::Allow(Identity { consumer, claims })
}
