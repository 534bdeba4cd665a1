//! The filter's configuration and its start-up checks (each refusal names the field).

use base64::Engine;
use serde::Deserialize;
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName};

use crate::url::Url;

/// `SameSite` of the session cookie.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SameSite {
    /// Sent on same-site requests and top-level cross-site navigations (the default).
    Lax,
    /// Sent on same-site requests only.
    Strict,
    /// Sent everywhere (needs `secure`).
    None,
}

impl SameSite {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// The cookies the filter sets.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// Name of the session cookie; the login-in-progress cookie is `<name>_login`.
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// `Secure` attribute (only turn off for plain-HTTP development).
    #[serde(default = "yes")]
    pub secure: bool,
    /// `SameSite` of the session cookie (the login cookie is always `Lax`: it must come back
    /// on the provider's redirect).
    #[serde(default = "default_same_site")]
    pub same_site: SameSite,
    /// `Domain` attribute, when set (host-only by default).
    #[serde(default)]
    pub domain: Option<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: default_cookie_name(),
            secure: true,
            same_site: default_same_site(),
            domain: None,
        }
    }
}

fn default_cookie_name() -> String {
    "tollgate_session".into()
}

fn yes() -> bool {
    true
}

fn default_same_site() -> SameSite {
    SameSite::Lax
}

/// An ID token claim forwarded upstream.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimHeader {
    /// Top-level claim of the ID token (`sub`, `email`, `name`...).
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
    /// The provider's issuer identifier (`iss`); discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Envoy cluster that reaches the issuer (discovery, JWKS and token endpoints).
    pub cluster: String,
    /// The filter's client id.
    pub client_id: String,
    /// Its secret (`client_secret_basic`).
    pub client_secret: String,
    /// Absolute URI the provider redirects back to; its path is the callback path.
    pub redirect_uri: String,
    /// Scopes asked for (`openid` is always included).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The session cookie.
    #[serde(default)]
    pub cookie: CookieConfig,
    /// Session keys, base64 of 32 bytes each: the first encrypts, any decrypts (rotation).
    pub session_keys: Vec<String>,
    /// Longest session, seconds since login, whatever refreshes happen.
    #[serde(default = "default_session_max_s")]
    pub session_max_s: u64,
    /// Refresh the tokens this many seconds before the access token expires (when the
    /// provider gave a refresh token).
    #[serde(default = "default_refresh_before_s")]
    pub refresh_before_s: u64,
    /// How long a login may take (the login cookie's lifetime), seconds.
    #[serde(default = "default_login_timeout_s")]
    pub login_timeout_s: u64,
    /// Path prefixes that skip authentication (`/healthz`, `/public/`).
    #[serde(default)]
    pub pass_through: Vec<String>,
    /// ID token claims forwarded upstream (client copies of these headers are removed).
    #[serde(default)]
    pub claim_headers: Vec<ClaimHeader>,
    /// Path that starts a login explicitly (`?return_to=/relative/path`), when set.
    #[serde(default)]
    pub login_path: Option<String>,
    /// Path that ends the session (local logout, then RP-initiated logout at the provider
    /// when it has an `end_session_endpoint` and `post_logout_redirect_uri` is set).
    #[serde(default)]
    pub logout_path: Option<String>,
    /// Where the provider sends the browser after logout (registered at the provider).
    #[serde(default)]
    pub post_logout_redirect_uri: Option<String>,
    /// Opened session cookies remembered per VM and generation, so a browser's next request
    /// skips decrypting and parsing its cookie (0 turns it off; at most 100,000).
    #[serde(default = "default_session_cache_size")]
    pub session_cache_size: usize,
    /// This VM's opened sessions (see [`crate::sessions`]).
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    sessions: crate::sessions::SessionCache,
    /// Timeout of each callout to the provider, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds of clock difference tolerated on the ID token's `exp`, `nbf`.
    #[serde(default = "default_clock_skew_s")]
    pub clock_skew_s: u64,
    /// How long the discovery document and the JWKS are reused, seconds.
    #[serde(default = "default_metadata_ttl_s")]
    pub metadata_ttl_s: u64,
    /// What every request needs from the fields above, computed on first use by a request (the
    /// filter's instances share it through the `Rc` that freezes the configuration; `validate`
    /// does not fill it, so a configuration edited before use, as tests do, derives from its
    /// final fields): not part of the JSON.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    derived: std::cell::OnceCell<Derived>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_session_max_s() -> u64 {
    8 * 3600
}
fn default_refresh_before_s() -> u64 {
    60
}
fn default_login_timeout_s() -> u64 {
    600
}
fn default_session_cache_size() -> usize {
    512
}

/// Largest `session_cache_size` accepted.
pub const MAX_SESSION_CACHE_SIZE: usize = 100_000;

fn default_timeout_ms() -> u64 {
    2000
}
fn default_clock_skew_s() -> u64 {
    30
}
fn default_metadata_ttl_s() -> u64 {
    600
}

/// Largest clock skew accepted.
pub const MAX_CLOCK_SKEW_S: u64 = 600;

/// A session key decoded from the configuration.
pub type SessionKey = [u8; 32];

/// Decodes one `session_keys` entry (standard or URL-safe base64, padded or not).
pub fn decode_key(text: &str) -> Option<SessionKey> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
}

fn cookie_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn path_field(field: &str, value: &str) -> Result<(), ConfigError> {
    if !value.starts_with('/') || value.contains(['?', '#', ' ']) {
        return Err(ConfigError::at(
            field,
            format!("{value:?} is not a path (`/...`, no query)"),
        ));
    }
    Ok(())
}

/// See [`Config::derived`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Derived {
    keys: Vec<SessionKey>,
    callback_path: String,
    login_cookie: String,
}

impl Config {
    fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| Derived {
            keys: self
                .session_keys
                .iter()
                .filter_map(|k| decode_key(k))
                .collect(),
            callback_path: self.parse_callback_path(),
            login_cookie: format!("{}_login", self.cookie.name),
        })
    }

    /// This VM's opened sessions.
    pub fn sessions(&self) -> &crate::sessions::SessionCache {
        &self.sessions
    }

    /// The issuer parsed (validated at start-up).
    pub fn issuer_url(&self) -> Option<Url> {
        Url::parse(&self.issuer)
    }

    /// The path of `redirect_uri` (`/` when it does not parse, which `validate` refuses).
    fn parse_callback_path(&self) -> String {
        Url::parse(&self.redirect_uri).map_or_else(|| "/".into(), |u| u.path)
    }

    /// The callback path (the path of `redirect_uri`).
    pub fn callback_path(&self) -> &str {
        &self.derived().callback_path
    }

    /// The session keys, decoded.
    pub fn keys(&self) -> &[SessionKey] {
        &self.derived().keys
    }

    /// Name of the login-in-progress cookie.
    pub fn login_cookie(&self) -> &str {
        &self.derived().login_cookie
    }
}

impl FilterConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("cluster", &self.cluster),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::at(field, "must not be empty"));
            }
        }
        match Url::parse(&self.issuer) {
            Some(url) if url.query.is_none() => {}
            _ => {
                return Err(ConfigError::at(
                    "issuer",
                    format!("{:?} is not an http(s) URL without query", self.issuer),
                ));
            }
        }
        if Url::parse(&self.redirect_uri).is_none() {
            return Err(ConfigError::at(
                "redirect_uri",
                format!("{:?} is not an absolute http(s) URI", self.redirect_uri),
            ));
        }
        if let Some(uri) = &self.post_logout_redirect_uri
            && Url::parse(uri).is_none()
        {
            return Err(ConfigError::at(
                "post_logout_redirect_uri",
                format!("{uri:?} is not an absolute http(s) URI"),
            ));
        }
        if self.session_keys.is_empty() || self.session_keys.len() > 2 {
            return Err(ConfigError::at(
                "session_keys",
                "one key, or two while rotating (the first encrypts)",
            ));
        }
        for (i, key) in self.session_keys.iter().enumerate() {
            if decode_key(key).is_none() {
                return Err(ConfigError::at(
                    format!("session_keys[{i}]"),
                    "is not the base64 of 32 bytes",
                ));
            }
        }
        if let [a, b] = &self.session_keys[..]
            && decode_key(a) == decode_key(b)
        {
            return Err(ConfigError::at("session_keys[1]", "is the same key as [0]"));
        }
        if !cookie_token(&self.cookie.name) {
            return Err(ConfigError::at("cookie.name", "is not a cookie name token"));
        }
        if self.cookie.same_site == SameSite::None && !self.cookie.secure {
            return Err(ConfigError::at(
                "cookie.same_site",
                "`None` needs `secure: true` (browsers refuse it otherwise)",
            ));
        }
        if let Some(domain) = &self.cookie.domain
            && (domain.is_empty() || domain.contains([';', ' ', ',']))
        {
            return Err(ConfigError::at("cookie.domain", "is not a domain"));
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            if scope.is_empty() || scope.contains(' ') {
                return Err(ConfigError::at(
                    format!("scopes[{i}]"),
                    "a scope is one non-empty word",
                ));
            }
        }
        for (i, prefix) in self.pass_through.iter().enumerate() {
            path_field(&format!("pass_through[{i}]"), prefix)?;
        }
        let callback = self.parse_callback_path();
        for (field, path) in [
            ("login_path", &self.login_path),
            ("logout_path", &self.logout_path),
        ] {
            if let Some(path) = path {
                path_field(field, path)?;
                if *path == callback {
                    return Err(ConfigError::at(field, "is the callback path"));
                }
            }
        }
        for (i, claim) in self.claim_headers.iter().enumerate() {
            if claim.claim.is_empty() {
                return Err(ConfigError::at(
                    format!("claim_headers[{i}].claim"),
                    "must not be empty",
                ));
            }
            if claim.header.is_pseudo() || claim.header.as_str().eq_ignore_ascii_case("cookie") {
                return Err(ConfigError::at(
                    format!("claim_headers[{i}].header"),
                    "must not be a pseudo-header or `cookie`",
                ));
            }
        }
        if self.timeout_ms == 0 || self.timeout_ms > u64::from(u32::MAX) {
            return Err(ConfigError::at(
                "timeout_ms",
                format!("{} is out of range 1..=4294967295", self.timeout_ms),
            ));
        }
        if self.clock_skew_s > MAX_CLOCK_SKEW_S {
            return Err(ConfigError::at(
                "clock_skew_s",
                format!("{} is above {MAX_CLOCK_SKEW_S}", self.clock_skew_s),
            ));
        }
        if self.session_cache_size > MAX_SESSION_CACHE_SIZE {
            return Err(ConfigError::at(
                "session_cache_size",
                format!(
                    "{} is above {MAX_SESSION_CACHE_SIZE}",
                    self.session_cache_size
                ),
            ));
        }
        for (field, value) in [
            ("session_max_s", self.session_max_s),
            ("login_timeout_s", self.login_timeout_s),
        ] {
            if value == 0 {
                return Err(ConfigError::at(field, "must be above 0"));
            }
        }
        Ok(())
    }
}
