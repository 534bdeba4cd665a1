//! # `oauth2-introspection`: bearer tokens checked with the issuer (RFC 7662)
//!
//! Every request must carry `Authorization: Bearer <token>`. The token is sent to the issuer's
//! introspection endpoint (`POST cluster path`, `token=<token>&token_type_hint=access_token`)
//! with the filter's client credentials (`client_secret_basic` or `client_secret_post`). The
//! request goes on only when the answer is `200` with `"active": true`, not expired (`exp`),
//! already valid (`nbf`), for one of the configured `audiences` and with every `required_scopes`
//! entry in its `scope`. Its subject (`sub`, else `client_id`) goes upstream in
//! `consumer_header`, and configured claims in their headers (client-sent copies of those headers
//! are always removed first).
//!
//! Fail closed: a timeout, an unreachable issuer, a non-200 answer or a body that is not an
//! introspection response is answered `status_on_error` (503 by default), never let through.
//!
//! Active answers are cached in shared data (one cache for all workers) until the token's
//! `exp`, at most `cache.max_ttl_s`, in `cache.slots` fixed slots: bounded whatever the traffic.
//!
//! The configuration reference is in the crate's README.md.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cache;
pub mod env;
pub mod verdict;

use std::rc::Rc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tollgate_sdk::callout::{CalloutRequest, Callouts};
use tollgate_sdk::{Action, ConfigError, FilterConfig, HeaderName, HttpFilter, Request};

use crate::verdict::{Refusal, Verdict};

/// How the filter authenticates to the introspection endpoint (RFC 6749, 2.3.1).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// The shared-data cache of active answers.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Number of slots (0 turns the cache off); a token's slot is picked by its digest.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Longest time an answer is reused, whatever the token's `exp`.
    #[serde(default = "default_max_ttl_s")]
    pub max_ttl_s: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            slots: default_slots(),
            max_ttl_s: default_max_ttl_s(),
        }
    }
}

fn default_slots() -> u32 {
    1024
}

fn default_max_ttl_s() -> u64 {
    300
}

/// A claim of the introspection answer forwarded upstream.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeader {
    /// Top-level member of the answer (`scope`, `client_id`, `username`...).
    pub claim: String,
    /// Request header it is set in (strings as they are, other values as JSON).
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub header: HeaderName,
}

/// The filter's configuration (see README.md).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Envoy cluster of the authorization server.
    pub cluster: String,
    /// `:authority` of the introspection request.
    pub authority: String,
    /// Path of the introspection endpoint.
    pub path: String,
    /// The filter's client id at the authorization server.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// How it authenticates.
    #[serde(default = "default_client_auth")]
    pub client_auth: ClientAuth,
    /// How long to wait for the answer, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Scopes the token must all have.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// The token's `aud` must name one of these (not checked when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// Header carrying the token's subject (`sub`, else `client_id`) upstream.
    #[serde(default = "tollgate_sdk::consumers::default_consumer_header")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub consumer_header: Option<HeaderName>,
    /// Other members of the answer forwarded upstream.
    #[serde(default)]
    pub claim_headers: Vec<ClaimHeader>,
    /// Status answered when the server cannot give an answer (fail closed).
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// Realm named in `WWW-Authenticate`.
    #[serde(default = "tollgate_sdk::consumers::default_realm")]
    pub realm: String,
    /// The answers cache.
    #[serde(default)]
    pub cache: CacheConfig,
}

fn default_client_auth() -> ClientAuth {
    ClientAuth::ClientSecretBasic
}

fn default_timeout_ms() -> u64 {
    500
}

fn default_clock_skew_s() -> u64 {
    30
}

fn default_status_on_error() -> u16 {
    503
}

/// Largest `cache.slots`.
pub const MAX_SLOTS: u32 = 1_000_000;

impl FilterConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let required = [
            ("cluster", &self.cluster),
            ("authority", &self.authority),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                return Err(ConfigError::at(field, "must not be empty"));
            }
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::at("path", "must start with `/`"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > u64::from(u32::MAX) {
            return Err(ConfigError::at(
                "timeout_ms",
                format!("{} is out of range 1..=4294967295", self.timeout_ms),
            ));
        }
        if !(500..=599).contains(&self.status_on_error) {
            return Err(ConfigError::at(
                "status_on_error",
                format!(
                    "{} is not a 5xx status: failing closed is answered as a server error",
                    self.status_on_error
                ),
            ));
        }
        for (i, scope) in self.required_scopes.iter().enumerate() {
            if scope.is_empty() || scope.contains(' ') {
                return Err(ConfigError::at(
                    format!("required_scopes[{i}]"),
                    "a scope is one non-empty word",
                ));
            }
        }
        for (i, audience) in self.audiences.iter().enumerate() {
            if audience.is_empty() {
                return Err(ConfigError::at(
                    format!("audiences[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if self.realm.contains('"') || self.realm.contains('\\') {
            return Err(ConfigError::at("realm", "must not contain `\"` or `\\`"));
        }
        for (i, claim) in self.claim_headers.iter().enumerate() {
            if claim.claim.is_empty() {
                return Err(ConfigError::at(
                    format!("claim_headers[{i}].claim"),
                    "must not be empty",
                ));
            }
            if claim.header.is_pseudo() {
                return Err(ConfigError::at(
                    format!("claim_headers[{i}].header"),
                    "must not be a pseudo-header",
                ));
            }
        }
        if self.cache.slots > MAX_SLOTS {
            return Err(ConfigError::at(
                "cache.slots",
                format!("{} is above {MAX_SLOTS}", self.cache.slots),
            ));
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749, appendix B).
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750
/// token68 characters only); `None` for anything else.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches(' ');
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    (!token.is_empty() && token.chars().all(token68)).then_some(token)
}

/// The introspection request for `token`.
pub fn introspection_request(config: &Config, token: &str) -> CalloutRequest {
    let mut form = format!("token={}&token_type_hint=access_token", form_encode(token));
    let mut call = CalloutRequest::new("POST", &config.cluster, &config.authority, &config.path)
        .with_timeout(Duration::from_millis(config.timeout_ms))
        .with_header("content-type", "application/x-www-form-urlencoded")
        .with_header("accept", "application/json");
    match config.client_auth {
        ClientAuth::ClientSecretBasic => {
            let pair = format!(
                "{}:{}",
                form_encode(&config.client_id),
                form_encode(&config.client_secret)
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            call = call.with_header("authorization", &format!("Basic {encoded}"));
        }
        ClientAuth::ClientSecretPost => {
            form.push_str(&format!(
                "&client_id={}&client_secret={}",
                form_encode(&config.client_id),
                form_encode(&config.client_secret)
            ));
        }
    }
    call.with_body(form.into_bytes())
}

/// One request's check.
pub struct Introspection {
    config: Rc<Config>,
    callouts: Callouts<Self>,
    /// The token's cache key, while its introspection is in flight.
    pending: Option<cache::Key>,
}

impl Introspection {
    /// The headers set upstream and the answer to the client for `verdict`.
    fn apply(&self, req: &mut Request<'_>, verdict: Verdict) -> Action {
        match verdict {
            Verdict::Allow(identity) => {
                for (name, value) in identity.headers(&self.config) {
                    req.set_header(&name, &value);
                }
                Action::Continue
            }
            Verdict::Refuse(refusal) => {
                let (status, challenge) = refusal.reply(&self.config);
                let mut headers = vec![("content-type", "text/plain")];
                if let Some(challenge) = &challenge {
                    headers.push(("www-authenticate", challenge.as_str()));
                }
                req.send_response(status, &headers, refusal.body());
                Action::Pause
            }
        }
    }

    fn strip_forwarded(&self, req: &mut Request<'_>) {
        if let Some(header) = &self.config.consumer_header {
            req.remove_header(header.as_str());
        }
        for claim in &self.config.claim_headers {
            req.remove_header(claim.header.as_str());
        }
    }
}

impl HttpFilter for Introspection {
    const NAME: &'static str = "oauth2-introspection";
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            callouts: Callouts::new(),
            pending: None,
        }
    }

    fn callouts(&mut self) -> Option<&mut Callouts<Self>> {
        Some(&mut self.callouts)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        // The upstream learns identity from this filter only.
        self.strip_forwarded(req);
        let headers = req.headers();
        let mut authorizations = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        let token = match (authorizations.next(), authorizations.next()) {
            (Some((_, value)), None) => bearer_token(value).map(str::to_string),
            _ => None,
        };
        let Some(token) = token else {
            return self.apply(req, Verdict::Refuse(Refusal::Missing));
        };
        let now = env::now_s();
        let key = cache::Key::of(&self.config, &token);
        if let Some(answer) = cache::get(&self.config.cache, &key, now) {
            return self.apply(req, verdict::judge(&self.config, &answer, now));
        }
        self.pending = Some(key);
        let call = introspection_request(&self.config, &token);
        self.callouts
            .dispatch(call, |filter: &mut Self, req, result| {
                let now = env::now_s();
                let answer = match verdict::answer(result) {
                    Ok(answer) => answer,
                    Err(reason) => {
                        log::warn!("introspection failed, refusing (fail closed): {reason}");
                        return filter.apply(req, Verdict::Refuse(Refusal::Unavailable));
                    }
                };
                let verdict = verdict::judge(&filter.config, &answer, now);
                if let (Some(key), Verdict::Allow(_)) = (filter.pending.take(), &verdict) {
                    cache::put(&filter.config.cache, &key, &answer, now);
                }
                filter.apply(req, verdict)
            });
        Action::Pause
    }
}

tollgate_sdk::export_filter!(Introspection, []);

#[cfg(test)]
mod tests;
