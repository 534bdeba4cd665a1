//! Traffic tools behind `tollgate traffic`: a summary of a recording
//! ([`Inspection`]), selection ([`Selection`]), anonymization
//! ([`Anonymizer`]) and writing in any supported format ([`write()`], HAR via
//! [`har_value`]).
//!
//! All of them work one exchange at a time, so they run over a streamed
//! recording (see [`super::open`]) without holding it in memory.
//!
//! # Anonymization
//!
//! [`Anonymizer::hashing`] replaces each secret by a token derived with
//! HMAC-SHA-256 under a key: the same secret always gives the same token
//! (so a filter that compares values still sees equal values as equal), a
//! different key gives unrelated tokens, and the secret cannot be read back.
//! [`Anonymizer::removing`] drops secret headers and replaces the other
//! secrets with a fixed `REDACTED`. Secrets are:
//!
//! * headers: `authorization` and `proxy-authorization` (the scheme, e.g.
//!   `Bearer`, is kept), `cookie` (each cookie's value; names kept),
//!   `set-cookie` (the value; names and attributes kept), and any header whose
//!   name mentions a key, token, secret, password, session or signature
//!   (`x-api-key`, `x-auth-token`...);
//! * in URLs anywhere (the request's path, `Referer`, `Location`, `Link`,
//!   `Refresh`, any header value, text bodies, JSON strings): parameters with
//!   such names, or named `code`, `sid`, `otp`, `pin` or `key`, in the query, the
//!   fragment (`#access_token=...`) and path segments (`;jsessionid=...`), at
//!   any depth of URL-encoded nesting (`?next=%2Fcb%3Fcode%3D...`), and user
//!   information (`https://user:password@host/`); `name=value` lists in free
//!   text with secret names (`password=...`);
//! * in JSON bodies (request, response, callout answers), the values of such
//!   members, at any depth;
//! * anywhere in header values, query values and text bodies: JWTs
//!   (`xxx.yyy.zzz` of base64url with a JSON header) and e-mail addresses
//!   (hashed tokens keep an e-mail's shape: `user-<hash>@example.invalid`).
//!
//! Bodies that change get a corrected `content-length` when they had one.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Exchange, Format, HttpRequest, HttpResponse, Traffic, native};

// ---------------------------------------------------------------------------
// Inspect.
// ---------------------------------------------------------------------------

/// Counts over a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    /// Exchanges seen.
    pub exchanges: usize,
    /// Requests per method.
    pub methods: BTreeMap<String, usize>,
    /// Responses per status; exchanges without a response count under `none`.
    pub statuses: BTreeMap<String, usize>,
    /// Requests per `:authority`.
    pub hosts: BTreeMap<String, usize>,
    /// Request body sizes.
    pub request_bodies: Sizes,
    /// Response body sizes.
    pub response_bodies: Sizes,
    /// Exchanges with a body the recording cut short.
    pub truncated: usize,
    /// Exchanges with trailers, either way.
    pub with_trailers: usize,
    /// Exchanges with callout stubs.
    pub with_callouts: usize,
}

/// Body size statistics, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Bodies that are not empty.
    pub count: usize,
    /// Total bytes.
    pub total: u64,
    /// The largest.
    pub max: u64,
}

impl Sizes {
    fn add(&mut self, n: usize) {
        if n > 0 {
            self.count += 1;
            let n = n as u64;
            self.total += n;
            self.max = self.max.max(n);
        }
    }
}

impl Inspection {
    /// Adds one exchange to the counts.
    pub fn add(&mut self, e: &Exchange) {
        self.exchanges += 1;
        *self.methods.entry(e.request.method.clone()).or_default() += 1;
        let status = e
            .response
            .as_ref()
            .map_or_else(|| "none".to_owned(), |r| r.status.to_string());
        *self.statuses.entry(status).or_default() += 1;
        *self.hosts.entry(e.request.authority.clone()).or_default() += 1;
        self.request_bodies.add(e.request.body.len());
        self.response_bodies
            .add(e.response.as_ref().map_or(0, |r| r.body.len()));
        let d = &e.details;
        self.truncated += usize::from(d.truncated);
        self.with_trailers +=
            usize::from(!d.request_trailers.is_empty() || !d.response_trailers.is_empty());
        self.with_callouts += usize::from(!d.callouts.is_empty());
    }

    /// As JSON, for `--format json`.
    pub fn to_json(&self) -> Value {
        let sizes = |s: &Sizes| json!({ "count": s.count, "total": s.total, "max": s.max });
        json!({
            "exchanges": self.exchanges,
            "methods": self.methods,
            "statuses": self.statuses,
            "hosts": self.hosts,
            "request_bodies": sizes(&self.request_bodies),
            "response_bodies": sizes(&self.response_bodies),
            "truncated": self.truncated,
            "with_trailers": self.with_trailers,
            "with_callouts": self.with_callouts,
        })
    }
}

// ---------------------------------------------------------------------------
// Filter.
// ---------------------------------------------------------------------------

/// Which exchanges to keep; every criterion given must match (empty keeps all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Hosts (`:authority` without the port, case-insensitive); `*.example.com`
    /// matches subdomains. Any of them.
    pub hosts: Vec<String>,
    /// Path prefixes (the query is part of the path). Any of them.
    pub path_prefixes: Vec<String>,
    /// Statuses: `404`, or a class such as `5xx`; `none` for no response. Any of them.
    pub statuses: Vec<String>,
    /// Methods, case-insensitive. Any of them.
    pub methods: Vec<String>,
}

impl Selection {
    /// Whether `e` is selected.
    pub fn matches(&self, e: &Exchange) -> bool {
        let host = host_of(&e.request.authority).to_ascii_lowercase();
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|h| {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")) || host == suffix,
                    None => host == h || e.request.authority.eq_ignore_ascii_case(&h),
                }
            });
        let path_ok = self.path_prefixes.is_empty()
            || self
                .path_prefixes
                .iter()
                .any(|p| e.request.path.starts_with(p.as_str()));
        let status_ok = self.statuses.is_empty()
            || self
                .statuses
                .iter()
                .any(|s| status_matches(s, e.response.as_ref()));
        let method_ok = self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&e.request.method));
        host_ok && path_ok && status_ok && method_ok
    }

    /// Checks the status patterns, naming a bad one.
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.statuses {
            let ok = s == "none"
                || s.parse::<u16>().is_ok_and(|n| (100..=999).contains(&n))
                || (s.len() == 3
                    && s.as_bytes()[0].is_ascii_digit()
                    && s.as_bytes()[0] != b'0'
                    && s[1..].eq_ignore_ascii_case("xx"));
            if !ok {
                return Err(format!(
                    "--status {s:?}: expected a code (404), a class (5xx) or `none`"
                ));
            }
        }
        Ok(())
    }
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn status_matches(pattern: &str, response: Option<&HttpResponse>) -> bool {
    match response {
        None => pattern == "none",
        Some(r) => {
            let code = r.status.to_string();
            if pattern.len() == 3 && pattern[1..].eq_ignore_ascii_case("xx") {
                code.as_bytes().first() == pattern.as_bytes().first()
            } else {
                code == pattern
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Anonymize.
// ---------------------------------------------------------------------------

/// Removes or hashes secrets in exchanges (see the module docs).
#[derive(Clone)]
pub struct Anonymizer {
    key: Option<Vec<u8>>,
    /// Secrets replaced so far.
    replaced: usize,
}

impl std::fmt::Debug for Anonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anonymizer")
            .field("hashing", &self.key.is_some())
            .field("replaced", &self.replaced)
            .finish()
    }
}

const REDACTED: &str = "REDACTED";

/// Name fragments that mark a header, query parameter or JSON member as secret.
const SECRET_NAMES: [&str; 21] = [
    "authorization",
    "cookie",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api-key",
    "api_key",
    "session",
    "sessid",
    "signature",
    "credential",
    "private",
    "saml",
    "assertion",
    "jwt",
    "bearer",
    "verifier",
    "ticket",
];

/// Whether a header / parameter / member name marks its value as secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| n.contains(s))
        || matches!(
            n.as_str(),
            "key" | "sig" | "auth" | "x-api-key" | "pass" | "pwd"
        )
}

impl Anonymizer {
    /// Replaces secrets by tokens keyed with `key` (same secret, same token).
    pub fn hashing(key: &[u8]) -> Self {
        Self {
            key: Some(key.to_vec()),
            replaced: 0,
        }
    }

    /// Drops secret headers and replaces other secrets with `REDACTED`.
    pub fn removing() -> Self {
        Self {
            key: None,
            replaced: 0,
        }
    }

    /// How many secrets were replaced or removed so far.
    pub fn replaced(&self) -> usize {
        self.replaced
    }

    /// The token for `secret`: `anon-` and 16 hex digits of HMAC-SHA-256.
    pub fn token(&self, secret: &str) -> String {
        match &self.key {
            Some(key) => format!("anon-{}", &hex(&hmac_sha256(key, secret.as_bytes()))[..16]),
            None => REDACTED.to_owned(),
        }
    }

    fn secret(&mut self, secret: &str) -> String {
        self.replaced += 1;
        self.token(secret)
    }

    fn email(&mut self, email: &str) -> String {
        self.replaced += 1;
        match &self.key {
            Some(key) => format!(
                "user-{}@example.invalid",
                &hex(&hmac_sha256(key, email.to_ascii_lowercase().as_bytes()))[..12]
            ),
            None => "redacted@example.invalid".to_owned(),
        }
    }

    /// Anonymizes one exchange in place.
    pub fn exchange(&mut self, e: &mut Exchange) {
        self.request(&mut e.request);
        if let Some(r) = &mut e.response {
            self.response(r);
        }
        for c in &mut e.details.callouts {
            self.response(&mut c.response);
        }
        let mut trailers = std::mem::take(&mut e.details.request_trailers);
        self.headers(&mut trailers);
        e.details.request_trailers = trailers;
        let mut trailers = std::mem::take(&mut e.details.response_trailers);
        self.headers(&mut trailers);
        e.details.response_trailers = trailers;
        // Chunk boundaries no longer fit a body whose length changed.
        if e.details.request_chunks.iter().sum::<usize>() != e.request.body.len() {
            e.details.request_chunks.clear();
        }
        let len = e.response.as_ref().map_or(0, |r| r.body.len());
        if e.details.response_chunks.iter().sum::<usize>() != len {
            e.details.response_chunks.clear();
        }
    }

    fn request(&mut self, r: &mut HttpRequest) {
        if let Some((userinfo, host)) = r.authority.rsplit_once('@') {
            r.authority = format!("{}@{host}", self.secret(userinfo));
        }
        r.path = self.path(&r.path);
        self.headers(&mut r.headers);
        self.body(&mut r.body, &mut r.headers);
    }

    fn response(&mut self, r: &mut HttpResponse) {
        self.headers(&mut r.headers);
        self.body(&mut r.body, &mut r.headers);
    }

    fn headers(&mut self, headers: &mut Vec<(String, String)>) {
        let old = std::mem::take(headers);
        for (name, value) in old {
            let n = name.as_str();
            let new = if n == "cookie" {
                Some(self.cookie(&value))
            } else if n == "set-cookie" {
                Some(self.set_cookie(&value))
            } else if n == "authorization" || n == "proxy-authorization" {
                if self.key.is_none() {
                    self.replaced += 1;
                    None
                } else {
                    Some(match value.split_once(' ') {
                        Some((scheme, cred)) => format!("{scheme} {}", self.secret(cred.trim())),
                        None => self.secret(&value),
                    })
                }
            } else if is_secret_name(n) {
                if self.key.is_none() {
                    self.replaced += 1;
                    None
                } else {
                    Some(self.secret(&value))
                }
            } else {
                Some(self.text(&value))
            };
            if let Some(v) = new {
                headers.push((name, v));
            }
        }
    }

    fn cookie(&mut self, value: &str) -> String {
        value
            .split(';')
            .map(|c| {
                let c = c.trim();
                match c.split_once('=') {
                    Some((k, v)) => format!("{k}={}", self.secret(v)),
                    None => self.secret(c),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn set_cookie(&mut self, value: &str) -> String {
        let (first, attrs) = value.split_once(';').unwrap_or((value, ""));
        let first = match first.split_once('=') {
            Some((k, v)) => format!("{}={}", k.trim(), self.secret(v.trim())),
            None => self.secret(first.trim()),
        };
        if attrs.is_empty() {
            first
        } else {
            format!("{first};{attrs}")
        }
    }

    fn path(&mut self, path: &str) -> String {
        self.url(path)
    }

    /// Replaces secrets found in free text (a header value, a string in a
    /// JSON body, a text body): in every URL or `name=value` list in it,
    /// secret-named parameters (query, fragment, `;matrix`) and user
    /// information; anywhere, JWTs and e-mail addresses (rules in `tools/urls.rs`).
    pub fn text(&mut self, s: &str) -> String {
        self.free_text(s)
    }

    /// Replaces JWTs and e-mail addresses found in `s`.
    fn words(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while !rest.is_empty() {
            // Find the next token made of word characters, '.', '-', '@', '+', '%'.
            let Some(start) = rest.find(is_word) else {
                out.push_str(rest);
                break;
            };
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let end = tail.find(|c: char| !is_word(c)).unwrap_or(tail.len());
            let word = &tail[..end];
            if is_jwt(word) {
                out.push_str(&self.secret(word));
            } else if let Some((a, b)) = email_span(word) {
                out.push_str(&word[..a]);
                let e = self.email(&word[a..b]);
                out.push_str(&e);
                out.push_str(&word[b..]);
            } else {
                out.push_str(word);
            }
            rest = &tail[end..];
        }
        out
    }

    fn body(&mut self, body: &mut Vec<u8>, headers: &mut [(String, String)]) {
        if body.is_empty() {
            return;
        }
        let before = self.replaced;
        let new = if let Ok(mut v) = serde_json::from_slice::<Value>(body) {
            self.json(&mut v, false);
            if self.replaced == before {
                return;
            }
            serde_json::to_vec(&v).ok()
        } else if let Ok(text) = std::str::from_utf8(body) {
            let is_form = headers.iter().any(|(k, v)| {
                k == "content-type" && v.starts_with("application/x-www-form-urlencoded")
            });
            let t = if is_form {
                self.path(&format!("/?{text}"))
                    .trim_start_matches("/?")
                    .to_owned()
            } else {
                self.text(text)
            };
            (self.replaced != before).then(|| t.into_bytes())
        } else {
            None
        };
        if let Some(new) = new {
            *body = new;
            for (k, v) in headers.iter_mut() {
                if k == "content-length" {
                    *v = body.len().to_string();
                }
            }
        }
    }

    fn json(&mut self, v: &mut Value, secret: bool) {
        match v {
            Value::String(s) => {
                *s = if secret { self.secret(s) } else { self.text(s) };
            }
            Value::Number(n) if secret => *v = Value::String(self.secret(&n.to_string())),
            Value::Array(a) => a.iter_mut().for_each(|x| self.json(x, secret)),
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    let s = secret || is_secret_name(k) || k.eq_ignore_ascii_case("email");
                    self.json(x, s);
                }
            }
            _ => {}
        }
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '+' | '%')
}

/// `xxx.yyy.zzz` in base64url whose first part decodes to a JSON object.
fn is_jwt(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    if parts.len() != 3 || parts[..2].iter().any(|p| p.len() < 4) {
        return false;
    }
    let b64 = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !parts.iter().all(|p| b64(p)) {
        return false;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[0])
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .is_some_and(|v| v.is_object())
}

/// The byte range of an e-mail address within `word`, if any.
fn email_span(word: &str) -> Option<(usize, usize)> {
    let at = word.find('@')?;
    let local_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    let start = word[..at]
        .char_indices()
        .rev()
        .take_while(|(_, c)| local_ok(*c))
        .last()
        .map(|(i, _)| i)?;
    let domain = &word[at + 1..];
    let dlen = domain
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or(domain.len());
    let d = domain[..dlen].trim_end_matches('.');
    let labels: Vec<&str> = d.split('.').collect();
    let tld_ok = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()));
    (start < at && tld_ok).then_some((start, at + 1 + d.len()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hexval = |c: u8| (c as char).to_digit(16);
                match (hexval(b[i + 1]), hexval(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA-256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

// ---------------------------------------------------------------------------
// Convert / write.
// ---------------------------------------------------------------------------

/// Formats the tools can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// HAR 1.2.
    Har,
    /// Native document as YAML.
    NativeYaml,
    /// Native document as JSON.
    NativeJson,
    /// Native JSON lines (streams).
    NativeLines,
}

impl OutputFormat {
    /// The format a file name implies: `.har`, `.yaml`/`.yml`, `.json`, `.jsonl`/`.ndjson`.
    pub fn from_path(path: &std::path::Path) -> Option<OutputFormat> {
        match Format::from_extension(path) {
            Some(Format::Har) => Some(OutputFormat::Har),
            Some(Format::Native) => Some(OutputFormat::NativeYaml),
            Some(Format::NativeLines) => Some(OutputFormat::NativeLines),
            Some(Format::Tap) => None,
            None => path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                .then_some(OutputFormat::NativeJson),
        }
    }
}

/// A writer that takes exchanges one at a time. JSON lines are written as
/// they come; the document formats are gathered and written by [`Sink::finish`].
pub struct Sink<W: Write> {
    out: W,
    format: OutputFormat,
    held: Vec<Exchange>,
}

impl<W: Write> Sink<W> {
    /// A sink writing `format` to `out`.
    pub fn new(out: W, format: OutputFormat) -> Self {
        Self {
            out,
            format,
            held: Vec::new(),
        }
    }

    /// Adds one exchange.
    pub fn push(&mut self, e: Exchange) -> std::io::Result<()> {
        match self.format {
            OutputFormat::NativeLines => native::write_line(&mut self.out, &e),
            _ => {
                self.held.push(e);
                Ok(())
            }
        }
    }

    /// Writes what is held and flushes.
    pub fn finish(mut self) -> std::io::Result<W> {
        let traffic = Traffic {
            source: None,
            exchanges: std::mem::take(&mut self.held),
            warnings: Vec::new(),
        };
        match self.format {
            OutputFormat::NativeLines => {}
            OutputFormat::NativeYaml => native::write_yaml(&mut self.out, &traffic)?,
            OutputFormat::NativeJson => native::write_json(&mut self.out, &traffic)?,
            OutputFormat::Har => {
                serde_json::to_writer_pretty(&mut self.out, &har_value(&traffic.exchanges))?;
                self.out.write_all(b"\n")?;
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole recording in `format`.
pub fn write(out: impl Write, traffic: &Traffic, format: OutputFormat) -> std::io::Result<()> {
    let mut sink = Sink::new(out, format);
    for e in &traffic.exchanges {
        sink.push(e.clone())?;
    }
    sink.finish().map(|_| ())
}

fn har_headers(h: &[(String, String)]) -> Value {
    Value::Array(
        h.iter()
            .map(|(k, v)| json!({ "name": k, "value": v }))
            .collect(),
    )
}

fn har_text(body: &[u8]) -> (Value, Option<&'static str>) {
    match std::str::from_utf8(body) {
        Ok(s) => (json!(s), None),
        Err(_) => (
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
            Some("base64"),
        ),
    }
}

fn header_value<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A HAR 1.2 document for `exchanges`. The request's `:authority` goes into
/// the URL (the HAR reader folds it back); trailers, chunk boundaries,
/// properties and callouts have no HAR field and are left out.
pub fn har_value(exchanges: &[Exchange]) -> Value {
    let entries: Vec<Value> = exchanges
        .iter()
        .map(|e| {
            let r = &e.request;
            let mut request = json!({
                "method": r.method,
                "url": format!("{}://{}{}", r.scheme, r.authority, r.path),
                "httpVersion": "HTTP/1.1",
                "cookies": [],
                "headers": har_headers(&r.headers),
                "queryString": [],
                "headersSize": -1,
                "bodySize": r.body.len(),
            });
            if !r.body.is_empty() {
                let (text, enc) = har_text(&r.body);
                let mut pd = json!({
                    "mimeType": header_value(&r.headers, "content-type").unwrap_or(""),
                    "text": text,
                });
                if let Some(enc) = enc {
                    pd["encoding"] = json!(enc);
                }
                request["postData"] = pd;
            }
            let response = match &e.response {
                Some(resp) => {
                    let (text, enc) = har_text(&resp.body);
                    let mut content = json!({
                        "size": resp.body.len(),
                        "mimeType": header_value(&resp.headers, "content-type").unwrap_or(""),
                        "text": text,
                    });
                    if let Some(enc) = enc {
                        content["encoding"] = json!(enc);
                    }
                    json!({
                        "status": resp.status,
                        "statusText": "",
                        "httpVersion": "HTTP/1.1",
                        "cookies": [],
                        "headers": har_headers(&resp.headers),
                        "content": content,
                        "redirectURL": "",
                        "headersSize": -1,
                        "bodySize": resp.body.len(),
                    })
                }
                // HAR's convention for "no response": status 0.
                None => json!({
                    "status": 0, "statusText": "", "httpVersion": "", "cookies": [],
                    "headers": [], "content": { "size": 0, "mimeType": "" },
                    "redirectURL": "", "headersSize": -1, "bodySize": -1,
                }),
            };
            let t = &e.details.timing;
            let ms = |d: Option<std::time::Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
            json!({
                "startedDateTime": t.started.clone().unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned()),
                "time": ms(t.total).max(0.0),
                "request": request,
                "response": response,
                "cache": {},
                "timings": { "send": 0, "wait": ms(t.response_after), "receive": -1 },
                "comment": e.id,
            })
        })
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "tollgate", "version": env!("CARGO_PKG_VERSION") },
            "entries": entries,
        }
    })
}

mod urls;

#[cfg(test)]
mod tests;
