//! # `hmac-auth`: HTTP Message Signatures (RFC 9421) with shared keys
//!
//! Each consumer has a key id and a secret. A request is admitted when its `Signature-Input` /
//! `Signature` pair (the label `label`, else the first) carries an `hmac-sha256` signature, by a
//! known key id, over at least the configured `required_components` (by default `@method`,
//! `@authority`, `@path`, `@query` and `content-digest`), `created` within `max_skew_s` of the
//! proxy's clock (and not past `expires`), with a `nonce` never seen before in that window
//! (shared data, all workers). When `content-digest` is covered, the body is buffered (up to
//! `max_body_bytes`) and its SHA-256 must be the header's `sha-256` value (RFC 9530): a signature
//! over one body does not admit another. The consumer's name goes upstream in `consumer_header`.
//!
//! The configuration reference is in the crate's README.md.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod env;
pub mod message;
pub mod replay;

use std::rc::Rc;

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2_next::{Digest, Sha256};
use tollgate_sdk::body::{BodyLimit, Extent};
use tollgate_sdk::{Action, Body, ConfigError, FilterConfig, HeaderName, HttpFilter, Request};

use crate::message::{RequestParts, SignatureInput};
use crate::replay::Seen;

/// One consumer's key.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Name forwarded upstream.
    pub name: String,
    /// The `keyid` its signatures name.
    pub key_id: String,
    /// The shared secret, base64 (standard alphabet), at least 32 bytes once decoded.
    pub secret_base64: String,
}

/// The filter's configuration (see README.md).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The consumers and their keys.
    pub consumers: Vec<Consumer>,
    /// Components every signature must cover.
    #[serde(default = "default_required_components")]
    pub required_components: Vec<String>,
    /// Largest distance between `created` and the proxy's clock, in seconds.
    #[serde(default = "default_max_skew_s")]
    pub max_skew_s: u64,
    /// Refuse signatures without a `nonce` (replay protection).
    #[serde(default = "default_true")]
    pub require_nonce: bool,
    /// Shared-data slots for nonces (each holds 8).
    #[serde(default = "default_nonce_slots")]
    pub nonce_slots: u32,
    /// The signature label to verify; the first one in `Signature-Input` when absent.
    #[serde(default)]
    pub label: Option<String>,
    /// Largest body buffered to check `content-digest` (413 above).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Header carrying the consumer's name upstream.
    #[serde(default = "tollgate_sdk::consumers::default_consumer_header")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub consumer_header: Option<HeaderName>,
}

fn default_required_components() -> Vec<String> {
    ["@method", "@authority", "@path", "@query", "content-digest"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_max_skew_s() -> u64 {
    300
}

fn default_true() -> bool {
    true
}

fn default_nonce_slots() -> u32 {
    4096
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

/// Shortest secret accepted (HMAC-SHA256's output size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Largest `nonce_slots`.
pub const MAX_NONCE_SLOTS: u32 = 1_000_000;

fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(secret)
        .ok()
}

impl FilterConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.consumers.is_empty() {
            return Err(ConfigError::at("consumers", "list at least one consumer"));
        }
        for (i, consumer) in self.consumers.iter().enumerate() {
            if consumer.name.trim().is_empty() {
                return Err(ConfigError::at(
                    format!("consumers[{i}].name"),
                    "must not be empty",
                ));
            }
            if consumer.key_id.is_empty() {
                return Err(ConfigError::at(
                    format!("consumers[{i}].key_id"),
                    "must not be empty",
                ));
            }
            if self.consumers[..i]
                .iter()
                .any(|c| c.key_id == consumer.key_id)
            {
                return Err(ConfigError::at(
                    format!("consumers[{i}].key_id"),
                    format!("{:?} is used by an earlier consumer", consumer.key_id),
                ));
            }
            match decode_secret(&consumer.secret_base64) {
                None => {
                    return Err(ConfigError::at(
                        format!("consumers[{i}].secret_base64"),
                        "is not base64",
                    ));
                }
                Some(bytes) if bytes.len() < MIN_SECRET_BYTES => {
                    return Err(ConfigError::at(
                        format!("consumers[{i}].secret_base64"),
                        format!(
                            "{} bytes; at least {MIN_SECRET_BYTES} are needed",
                            bytes.len()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        for (i, component) in self.required_components.iter().enumerate() {
            let known = [
                "@method",
                "@authority",
                "@scheme",
                "@path",
                "@query",
                "@target-uri",
                "@request-target",
            ];
            let ok = if component.starts_with('@') {
                known.contains(&component.as_str())
            } else {
                tollgate_sdk::headers::check_name(component).is_ok()
                    && !component.bytes().any(|b| b.is_ascii_uppercase())
            };
            if !ok {
                return Err(ConfigError::at(
                    format!("required_components[{i}]"),
                    format!(
                        "{component:?} is not a supported derived component or a lowercase header name"
                    ),
                ));
            }
        }
        if self.max_skew_s == 0 || self.max_skew_s > 3600 {
            return Err(ConfigError::at(
                "max_skew_s",
                format!("{} is out of range 1..=3600", self.max_skew_s),
            ));
        }
        if self.nonce_slots == 0 || self.nonce_slots > MAX_NONCE_SLOTS {
            return Err(ConfigError::at(
                "nonce_slots",
                format!("{} is out of range 1..={MAX_NONCE_SLOTS}", self.nonce_slots),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::at("max_body_bytes", "must be at least 1"));
        }
        Ok(())
    }

    fn on_configured(&self) -> Result<(), ConfigError> {
        // Every nonce slot exists before traffic, so every write to one is compare-and-swap.
        replay::prepare(self.nonce_slots).map_err(|err| {
            ConfigError::at(
                "nonce_slots",
                format!("cannot create the nonce slots: {err}"),
            )
        })
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No usable signature: the reason.
    Unsigned(String),
    /// The signature does not verify (wrong key, altered request).
    BadSignature,
    /// `created` too far from the clock, or past `expires`.
    Stale,
    /// The nonce was used before.
    Replayed,
    /// The body does not match the signed `content-digest`.
    BodyMismatch,
    /// The nonce store is full or unavailable (fail closed).
    Unavailable,
}

impl Refusal {
    /// Status and body.
    pub fn reply(&self) -> (u16, String) {
        match self {
            Refusal::Unsigned(reason) => (401, format!("signature required: {reason}\n")),
            Refusal::BadSignature => (401, "the signature does not verify\n".into()),
            Refusal::Stale => (401, "the signature is too old or too new\n".into()),
            Refusal::Replayed => (401, "the signature was already used\n".into()),
            Refusal::BodyMismatch => (401, "the body does not match its signed digest\n".into()),
            Refusal::Unavailable => (503, "the signature could not be checked\n".into()),
        }
    }
}

/// A verified signature: who signed, and the body digest it covers (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The consumer's name.
    pub consumer: String,
    /// The signed `content-digest`'s SHA-256, when covered.
    pub body_sha256: Option<Vec<u8>>,
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The `sha-256` member of a `Content-Digest` value (RFC 9530).
pub fn content_digest_sha256(value: &str) -> Result<Vec<u8>, String> {
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if let Some(rest) = member.strip_prefix("sha-256=") {
            let bytes = rest
                .strip_prefix(':')
                .and_then(|r| r.strip_suffix(':'))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or("content-digest: sha-256 is not a byte sequence")?;
            if bytes.len() != 32 {
                return Err("content-digest: sha-256 is not 32 bytes".into());
            }
            return Ok(bytes);
        }
    }
    Err("content-digest has no sha-256".into())
}

/// The HMAC-SHA256 of `base` under `secret`, compared in constant time with `signature`.
fn hmac_matches(secret: &[u8], base: &str, signature: &[u8]) -> bool {
    let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(base.as_bytes());
    mac.verify_slice(signature).is_ok()
}

/// Verifies the request's signature at `now` (seconds), recording its nonce.
pub fn verify(config: &Config, parts: &RequestParts<'_>, now: u64) -> Result<Verified, Refusal> {
    let unsigned = |reason: &str| Refusal::Unsigned(reason.to_string());
    let inputs = header_values(parts.headers, "signature-input");
    let signatures = header_values(parts.headers, "signature");
    if inputs.len() != 1 || signatures.len() != 1 {
        return Err(unsigned(
            "exactly one signature-input and one signature header",
        ));
    }
    let inputs = message::parse_signature_input(inputs[0])
        .map_err(|e| Refusal::Unsigned(format!("signature-input: {e}")))?;
    let signatures = message::parse_signature(signatures[0])
        .map_err(|e| Refusal::Unsigned(format!("signature: {e}")))?;
    let (label, input): (&str, &SignatureInput) = match &config.label {
        Some(label) => inputs
            .iter()
            .find(|(l, _)| l == label)
            .map(|(l, i)| (l.as_str(), i))
            .ok_or_else(|| Refusal::Unsigned(format!("no signature labelled {label:?}")))?,
        None => inputs
            .first()
            .map(|(l, i)| (l.as_str(), i))
            .ok_or_else(|| unsigned("signature-input is empty"))?,
    };
    let signature = signatures
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, s)| s)
        .ok_or_else(|| Refusal::Unsigned(format!("no signature for label {label:?}")))?;
    for required in &config.required_components {
        if !input.components.contains(required) {
            return Err(Refusal::Unsigned(format!("\"{required}\" must be covered")));
        }
    }
    if let Some(alg) = input.string("alg")
        && alg != "hmac-sha256"
    {
        return Err(Refusal::Unsigned(format!("alg {alg:?} is not hmac-sha256")));
    }
    if input.has("alg") && input.string("alg").is_none() {
        return Err(unsigned("alg is not a string"));
    }
    let key_id = input.string("keyid").ok_or_else(|| unsigned("no keyid"))?;
    let consumer = config
        .consumers
        .iter()
        .find(|c| c.key_id == key_id)
        .ok_or(Refusal::BadSignature)?;
    let created = input
        .integer("created")
        .ok_or_else(|| unsigned("no created"))?;
    let created = u64::try_from(created).map_err(|_| Refusal::Stale)?;
    if created.abs_diff(now) > config.max_skew_s {
        return Err(Refusal::Stale);
    }
    if input.has("expires") {
        match input.integer("expires").and_then(|e| u64::try_from(e).ok()) {
            Some(expires) if now <= expires => {}
            _ => return Err(Refusal::Stale),
        }
    }
    let nonce = match (input.has("nonce"), input.string("nonce")) {
        (_, Some(nonce)) if !nonce.is_empty() => Some(nonce),
        (true, _) => return Err(unsigned("nonce is not a non-empty string")),
        (false, _) if config.require_nonce => return Err(unsigned("no nonce")),
        (false, _) => None,
    };
    let base = message::signature_base(parts, input).map_err(Refusal::Unsigned)?;
    let secret = decode_secret(&consumer.secret_base64).unwrap_or_default();
    if !hmac_matches(&secret, &base, signature) {
        return Err(Refusal::BadSignature);
    }
    let body_sha256 = if input.components.iter().any(|c| c == "content-digest") {
        let values = header_values(parts.headers, "content-digest");
        Some(content_digest_sha256(&values.join(", ")).map_err(Refusal::Unsigned)?)
    } else {
        None
    };
    // Only a verified signature spends its nonce: an attacker cannot burn a client's nonces.
    if let Some(nonce) = nonce {
        let until = created.saturating_add(config.max_skew_s).saturating_add(1);
        match replay::record(key_id, nonce, until, now, config.nonce_slots) {
            Ok(Seen::New) => {}
            Ok(Seen::Replayed) => return Err(Refusal::Replayed),
            Ok(Seen::Full) => {
                log::warn!("hmac-auth: nonce slot full, refusing (raise nonce_slots)");
                return Err(Refusal::Unavailable);
            }
            Err(err) => {
                log::warn!("hmac-auth: nonce store: {err}");
                return Err(Refusal::Unavailable);
            }
        }
    }
    Ok(Verified {
        consumer: consumer.name.clone(),
        body_sha256,
    })
}

/// One request's check.
pub struct HmacAuth {
    config: Rc<Config>,
    /// The digest the body must have, while it is being buffered.
    expected_body: Option<Vec<u8>>,
}

impl HmacAuth {
    fn refuse(req: &mut Request<'_>, refusal: &Refusal) -> Action {
        let (status, body) = refusal.reply();
        log::info!("hmac-auth: refused: {}", body.trim_end());
        req.send_response(status, &[("content-type", "text/plain")], body);
        Action::Pause
    }
}

impl HttpFilter for HmacAuth {
    const NAME: &'static str = "hmac-auth";
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            expected_body: None,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, end_of_stream: bool) -> Action {
        if let Some(header) = &self.config.consumer_header {
            req.remove_header(header.as_str());
        }
        let headers = req.headers();
        let method = req.method().unwrap_or_default();
        let authority = req.authority().unwrap_or_default();
        let scheme = req.scheme().unwrap_or_else(|| "http".into());
        let path = req.path().unwrap_or_default();
        let parts = RequestParts {
            method: &method,
            authority: &authority,
            scheme: &scheme,
            path: &path,
            headers: &headers,
        };
        let verified = match verify(&self.config, &parts, env::now_s()) {
            Ok(verified) => verified,
            Err(refusal) => return Self::refuse(req, &refusal),
        };
        if let Some(header) = &self.config.consumer_header {
            req.set_header(header.as_str(), &verified.consumer);
        }
        match verified.body_sha256 {
            Some(expected) if end_of_stream => {
                if Sha256::digest(b"").as_slice() == expected.as_slice() {
                    Action::Continue
                } else {
                    Self::refuse(req, &Refusal::BodyMismatch)
                }
            }
            Some(expected) => {
                // The headers go on; the body is held until its digest is checked (a paused
                // header callback would hold the whole stream in Envoy).
                self.expected_body = Some(expected);
                Action::Continue
            }
            None => Action::Continue,
        }
    }

    fn request_body_limit(&self) -> Option<BodyLimit> {
        self.expected_body
            .as_ref()
            .map(|_| BodyLimit::refuse_above(self.config.max_body_bytes))
    }

    fn on_request_body_buffered(&mut self, body: &mut Body<'_>, _extent: Extent) -> Action {
        let Some(expected) = self.expected_body.take() else {
            return Action::Continue;
        };
        if Sha256::digest(body.bytes()).as_slice() == expected.as_slice() {
            Action::Continue
        } else {
            let (status, text) = Refusal::BodyMismatch.reply();
            log::info!("hmac-auth: refused: {}", text.trim_end());
            body.send_response(status, &[("content-type", "text/plain")], text);
            Action::Pause
        }
    }
}

tollgate_sdk::export_filter!(HmacAuth, [request_body]);

#[cfg(test)]
mod tests;
