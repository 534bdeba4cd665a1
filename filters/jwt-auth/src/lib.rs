//! # `jwt-auth`: JSON Web Token authentication
//!
//! Each request must carry a JWT from one of the configured providers (in a header, a query
//! parameter or a cookie). The token's signature is checked against the provider's JWKS (inline,
//! or fetched from a cluster with an HTTP callout and cached in shared data, refreshed when it
//! expires or when a token names an unknown `kid`), then its `iss`, `aud`, `exp` and `nbf`
//! (with clock skew). Accepted: selected claims are copied to request headers (after removing
//! any client-sent copies). Refused: 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
//!
//! The configuration reference is in the crate's README.md.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cache;
mod locate;
pub use tollgate_jose::{ec, keys, rsa_public, token};

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_sdk::callout::{CalloutError, CalloutRequest, CalloutResponse, Callouts};
use tollgate_sdk::shared::{self, HostShared, SharedStore};
use tollgate_sdk::{Action, ConfigError, FilterConfig, HttpFilter, Request};

use keys::Key;
use token::{ClaimRules, Parsed, TokenError};

/// Where a token may be in a header.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token (e.g. `Bearer `), matched case-insensitively.
    #[serde(default)]
    pub value_prefix: String,
}

/// A claim copied to a request header.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Claim name (top-level).
    pub claim: String,
    /// Header set on the request going upstream.
    pub header: String,
}

/// A JWKS fetched over HTTP.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// Envoy cluster serving the JWKS.
    pub cluster: String,
    /// `:authority` of the fetch.
    pub authority: String,
    /// Path of the JWKS document.
    pub path: String,
    /// Fetch timeout, milliseconds.
    #[serde(default = "default_fetch_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a fetched JWKS is used, seconds.
    #[serde(default = "default_cache_seconds")]
    pub cache_duration_seconds: u64,
    /// Least time between two fetches caused by unknown `kid`s, seconds.
    #[serde(default = "default_refetch_seconds")]
    pub refetch_interval_seconds: u64,
    /// Accept symmetric (`oct`, HS256) keys from the fetched document. Off by default: a JWKS
    /// endpoint is public, so a secret published there lets anyone sign tokens.
    #[serde(default)]
    pub allow_symmetric_keys: bool,
}

fn default_fetch_timeout_ms() -> u64 {
    1000
}
fn default_cache_seconds() -> u64 {
    300
}
fn default_refetch_seconds() -> u64 {
    30
}
fn default_skew() -> u64 {
    60
}

/// The largest `clock_skew_seconds` accepted: clocks of a proxy and an identity provider that
/// disagree by more than this are broken, and a larger tolerance keeps expired tokens alive
/// (Envoy's field is a `uint32`, whose top values disable `exp` and `nbf` altogether).
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
fn default_max_token_bytes() -> usize {
    8192
}
fn default_from_headers() -> Vec<FromHeader> {
    vec![FromHeader {
        name: "authorization".into(),
        value_prefix: "Bearer ".into(),
    }]
}

/// One token issuer.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Name (logs, shared-data key).
    pub name: String,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (any when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Inline JWKS document.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// JWKS fetched from a cluster.
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    /// Headers carrying the token.
    #[serde(default = "default_from_headers")]
    pub from_headers: Vec<FromHeader>,
    /// Query parameters carrying the token.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Cookies carrying the token.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Claims copied to request headers.
    #[serde(default)]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Tolerated clock difference for `exp`/`nbf`, seconds.
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Refuse tokens without `exp`.
    #[serde(default)]
    pub require_expiration: bool,
    /// Keep the token header on the request going upstream.
    #[serde(default)]
    pub forward: bool,
    /// Cache verified tokens (per VM; off when absent or `size` is 0): see [`cache`].
    #[serde(default)]
    pub jwt_cache: Option<cache::CacheConfig>,
    /// This VM's verified tokens.
    #[serde(skip)]
    token_cache: RefCell<cache::TokenCache>,
    #[serde(skip)]
    inline_keys: OnceCell<Rc<Vec<Key>>>,
    /// This VM's parse of the shared JWKS, by shared-data CAS token.
    #[serde(skip)]
    remote_keys: RefCell<Option<(u32, Rc<Fetched>)>>,
}

/// The filter's configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The token issuers, tried in order for a token location that matches.
    pub providers: Vec<Provider>,
    /// Let requests without any token through (a present but bad token is still refused).
    #[serde(default)]
    pub allow_missing: bool,
    /// Longest token accepted, bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Where tokens are looked for, worked out on first use.
    #[serde(skip)]
    plan: OnceCell<locate::Plan>,
}

impl Config {
    fn plan(&self) -> &locate::Plan {
        self.plan.get_or_init(|| locate::Plan::of(self))
    }

    /// The place a token was found at (an index of the plan's).
    fn location(&self, place: usize) -> &Location {
        const NOWHERE: &Location = &Location::Header(String::new());
        self.plan().places.get(place).unwrap_or(NOWHERE)
    }
}

fn check_header_name(path: String, name: &str) -> Result<(), ConfigError> {
    tollgate_sdk::headers::check_name(name).map_err(|err| ConfigError::at(path, err.to_string()))
}

impl FilterConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.providers.is_empty() {
            return Err(ConfigError::at(
                "providers",
                "at least one provider is needed",
            ));
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::at("max_token_bytes", "must be at least 1"));
        }
        for (i, p) in self.providers.iter().enumerate() {
            let at = |field: &str| format!("providers[{i}].{field}");
            if p.name.is_empty() {
                return Err(ConfigError::at(at("name"), "must not be empty"));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::at(
                    at("name"),
                    format!("duplicate provider {:?}", p.name),
                ));
            }
            if let Some(c) = p.jwt_cache
                && c.size > cache::MAX_CACHE_SIZE
            {
                return Err(ConfigError::at(
                    at("jwt_cache.size"),
                    format!("{} is more than {} tokens", c.size, cache::MAX_CACHE_SIZE),
                ));
            }
            if p.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
                return Err(ConfigError::at(
                    at("clock_skew_seconds"),
                    format!(
                        "{} is more than {MAX_CLOCK_SKEW_SECONDS} seconds: a tolerance that large keeps expired tokens valid",
                        p.clock_skew_seconds
                    ),
                ));
            }
            match (&p.jwks, &p.remote_jwks) {
                (Some(jwks), None) => {
                    let keys = keys::parse_jwks(jwks)
                        .map_err(|err| ConfigError::at(at("jwks"), err.to_string()))?;
                    if keys.is_empty() {
                        return Err(ConfigError::at(at("jwks"), "no usable signature key"));
                    }
                    let _ = p.inline_keys.set(Rc::new(keys));
                }
                (None, Some(remote)) => {
                    if remote.cluster.is_empty() || remote.authority.is_empty() {
                        return Err(ConfigError::at(
                            at("remote_jwks"),
                            "`cluster` and `authority` must not be empty",
                        ));
                    }
                    if !remote.path.starts_with('/') {
                        return Err(ConfigError::at(
                            at("remote_jwks.path"),
                            "must start with `/`",
                        ));
                    }
                    if remote.timeout_ms == 0 || remote.timeout_ms > u64::from(u32::MAX) {
                        return Err(ConfigError::at(
                            at("remote_jwks.timeout_ms"),
                            "out of range",
                        ));
                    }
                    if remote.cache_duration_seconds == 0 {
                        return Err(ConfigError::at(
                            at("remote_jwks.cache_duration_seconds"),
                            "must be at least 1",
                        ));
                    }
                }
                _ => {
                    return Err(ConfigError::at(
                        at("jwks"),
                        "set exactly one of `jwks` and `remote_jwks`",
                    ));
                }
            }
            if p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
                return Err(ConfigError::at(at("from_headers"), "no token location"));
            }
            for (j, h) in p.from_headers.iter().enumerate() {
                check_header_name(at(&format!("from_headers[{j}].name")), &h.name)?;
            }
            for (j, c) in p.claim_to_headers.iter().enumerate() {
                check_header_name(at(&format!("claim_to_headers[{j}].header")), &c.header)?;
            }
        }
        Ok(())
    }
}

/// A JWKS as fetched, stored in shared data.
#[derive(Debug, Serialize, Deserialize)]
struct StoredJwks {
    fetched_at_ms: u64,
    expires_at_ms: u64,
    jwks: Value,
}

/// A fetched JWKS, parsed.
#[derive(Debug)]
struct Fetched {
    fetched_at_ms: u64,
    expires_at_ms: u64,
    keys: Rc<Vec<Key>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shared-data key of a provider's JWKS.
pub fn jwks_key(provider: &str) -> String {
    format!("tollgate.jwt-auth.jwks.{provider}")
}

/// The keys of a fetched JWKS the provider accepts: symmetric secrets are dropped (with a
/// warning) unless `remote_jwks.allow_symmetric_keys`.
fn fetched_keys(provider: &Provider, keys: Vec<Key>) -> Vec<Key> {
    if provider
        .remote_jwks
        .as_ref()
        .is_some_and(|r| r.allow_symmetric_keys)
    {
        return keys;
    }
    let (public, dropped) = keys::without_secrets(keys);
    if dropped > 0 {
        log::warn!(
            "provider {}: fetched JWKS publishes {dropped} symmetric (oct) key(s), ignored: a JWKS endpoint is public (set remote_jwks.allow_symmetric_keys to accept them)",
            provider.name
        );
    }
    public
}

const BEARER_INVALID: &str = "Bearer error=\"invalid_token\"";

/// One request's authentication.
pub struct JwtAuth {
    config: Rc<Config>,
    callouts: Callouts<Self>,
    store: Box<dyn SharedStore>,
    clock: fn() -> SystemTime,
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In this request header.
    Header(String),
    /// In this query parameter of `:path`.
    Param(String),
    /// In this cookie.
    Cookie(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Header(name) => write!(f, "header {name}"),
            Location::Param(name) => write!(f, "query parameter {name}"),
            Location::Cookie(name) => write!(f, "cookie {name}"),
        }
    }
}

/// The unverified `iss` of a token, to pick its provider (the signature decides later).
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    match serde_json::from_slice::<Value>(&bytes).ok()?.get("iss")? {
        Value::String(iss) => Some(iss.clone()),
        _ => None,
    }
}

/// The claim header values of a verified token, one per `claim_to_headers` of `provider`:
/// strings as they are, other JSON values serialised; absent, null and values that are not valid
/// header values (logged) give `None`.
fn verified_of(provider: &Provider, parsed: &Parsed) -> cache::Verified {
    let claim_values = provider
        .claim_to_headers
        .iter()
        .map(|c| {
            let value = match parsed.claims.get(&c.claim) {
                None | Some(Value::Null) => return None,
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            if tollgate_sdk::headers::check_value(&value).is_err() {
                log::warn!("claim {} is not a valid header value, not copied", c.claim);
                return None;
            }
            Some(value)
        })
        .collect();
    cache::Verified { claim_values }
}

/// When verification accepts a token with these claims (`token::check_claims`): from
/// `nbf - skew` (`now + skew < nbf` is refused) until `exp + skew` (`now >= exp + skew` is
/// refused), in whole seconds.
fn validity_of(provider: &Provider, parsed: &Parsed) -> cache::Validity {
    let skew = provider.clock_skew_seconds as f64;
    let time = |name: &str| parsed.claims.get(name).and_then(Value::as_f64);
    cache::Validity {
        // `as` saturates: a negative bound is 0, a huge one u64::MAX.
        from: time("nbf").map_or(0, |nbf| (nbf - skew).ceil() as u64),
        until: time("exp").map_or(u64::MAX, |exp| (exp + skew).ceil() as u64),
    }
}

impl JwtAuth {
    /// A filter using `store` for shared data and `clock` as the host clock (native tests).
    pub fn with_host(
        config: Rc<Config>,
        store: Box<dyn SharedStore>,
        clock: fn() -> SystemTime,
    ) -> Self {
        Self {
            config,
            callouts: Callouts::new(),
            store,
            clock,
        }
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// What `provider`'s verified-token cache holds for `token` at `now`, when it has a cache.
    pub fn cached(
        provider: &Provider,
        token: impl AsRef<[u8]>,
        now: SystemTime,
    ) -> Option<Rc<cache::Verified>> {
        if provider.jwt_cache.is_none_or(|c| c.size == 0) {
            return None;
        }
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        provider.token_cache.borrow_mut().get(token, now_s)
    }

    /// [`JwtAuth::verify`], then what the request path needs of the token; remembered in the
    /// provider's verified-token cache when it has one.
    pub fn verify_and_remember(
        provider: &Provider,
        token: &str,
        parsed: &Parsed,
        keys: &[Key],
        now: SystemTime,
    ) -> Result<Rc<cache::Verified>, TokenError> {
        Self::verify(provider, parsed, keys, now)?;
        let verified = Rc::new(verified_of(provider, parsed));
        let size = provider.jwt_cache.map_or(0, |c| c.size);
        if size > 0 {
            provider.token_cache.borrow_mut().insert(
                token,
                validity_of(provider, parsed),
                Rc::clone(&verified),
                size,
            );
        }
        Ok(verified)
    }

    /// Verifies `parsed` for `provider` with `keys` at `now`.
    pub fn verify(
        provider: &Provider,
        parsed: &Parsed,
        keys: &[Key],
        now: SystemTime,
    ) -> Result<(), TokenError> {
        parsed.verify_signature(keys)?;
        let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        token::check_claims(
            &parsed.claims,
            &ClaimRules {
                issuer: provider.issuer.as_deref(),
                audiences: &provider.audiences,
                now: now_s,
                skew: provider.clock_skew_seconds,
                require_exp: provider.require_expiration,
            },
        )
    }

    /// The provider's remote JWKS from shared data (parsed once per VM per version).
    fn cached_remote(&self, provider: &Provider) -> Option<Rc<Fetched>> {
        let key = jwks_key(&provider.name);
        let (bytes, cas) = match self.store.get(&key) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(err) => {
                log::warn!("{err}");
                return None;
            }
        };
        if let Some((seen, fetched)) = provider.remote_keys.borrow().as_ref()
            && *seen == cas
        {
            return Some(Rc::clone(fetched));
        }
        let stored: StoredJwks = match serde_json::from_slice(&bytes) {
            Ok(stored) => stored,
            Err(err) => {
                log::warn!("shared data {key}: {err}");
                return None;
            }
        };
        let keys = match keys::parse_jwks(&stored.jwks) {
            Ok(keys) => fetched_keys(provider, keys),
            Err(err) => {
                log::warn!("provider {}: cached JWKS: {err}", provider.name);
                return None;
            }
        };
        let fetched = Rc::new(Fetched {
            fetched_at_ms: stored.fetched_at_ms,
            expires_at_ms: stored.expires_at_ms,
            keys: Rc::new(keys),
        });
        *provider.remote_keys.borrow_mut() = Some((cas, Rc::clone(&fetched)));
        Some(fetched)
    }

    /// Stores a fetched JWKS; returns its keys.
    fn store_fetched(
        &mut self,
        provider: &Provider,
        remote: &RemoteJwks,
        body: &[u8],
    ) -> Result<Rc<Vec<Key>>, String> {
        let jwks: Value =
            serde_json::from_slice(body).map_err(|err| format!("JWKS is not JSON: {err}"))?;
        let keys = fetched_keys(
            provider,
            keys::parse_jwks(&jwks).map_err(|err| err.to_string())?,
        );
        let now = unix_ms(self.now());
        let stored = StoredJwks {
            fetched_at_ms: now,
            expires_at_ms: now.saturating_add(remote.cache_duration_seconds.saturating_mul(1000)),
            jwks,
        };
        let keys = Rc::new(keys);
        let key = jwks_key(&provider.name);
        let bytes = match serde_json::to_vec(&stored) {
            Ok(bytes) => bytes,
            Err(err) => {
                log::warn!("shared data {key}: {err}");
                return Ok(keys);
            }
        };
        if let Err(err) = self.store.set(&key, &bytes, None) {
            log::warn!("{err}");
            return Ok(keys);
        }
        // This VM's parse is the one of the version just stored: remembered with its CAS, so the
        // next request does not parse the JWKS again (nor rebuild its keys' tables). Only when
        // the stored bytes are still ours (another VM may have stored a fetch of its own since).
        if let Ok(Some((now_stored, cas))) = self.store.get(&key)
            && now_stored == bytes
        {
            *provider.remote_keys.borrow_mut() = Some((
                cas,
                Rc::new(Fetched {
                    fetched_at_ms: stored.fetched_at_ms,
                    expires_at_ms: stored.expires_at_ms,
                    keys: Rc::clone(&keys),
                }),
            ));
        }
        Ok(keys)
    }

    fn reject(req: &mut Request<'_>, provider: &str, location: &Location, err: &TokenError) {
        log::info!("provider {provider}: token in {location} refused: {err}");
        req.send_response(
            401,
            &[
                ("www-authenticate", BEARER_INVALID),
                ("content-type", "text/plain"),
            ],
            "Jwt verification fails\n",
        );
    }

    /// Verifies the tokens of `todo` from `next` on, then lets the request through with every
    /// token's claims; stops at the first token refused (401). A provider whose remote JWKS is
    /// not cached (or lacks the token's key) pauses the stream for a fetch, after which the
    /// walk goes on; `fetched` holds the keys fetched for this request, so each provider's
    /// JWKS is fetched at most once per request.
    fn verify_from(
        &mut self,
        req: &mut Request<'_>,
        mut todo: Vec<Token>,
        next: usize,
        mut fetched: Vec<(usize, Rc<Vec<Key>>)>,
    ) -> Action {
        let config = Rc::clone(&self.config);
        for index in next..todo.len() {
            let Some(token) = todo.get(index) else { break };
            let State::Parsed(pending) = &token.state else {
                // Served by the verified-token cache.
                continue;
            };
            let parsed = &pending.parsed;
            let location = config.location(token.place);
            // No provider or no keys cannot happen with a validated configuration; if it did,
            // the token would be unverifiable: refused, never let through.
            let no_key = || TokenError::NoKey {
                kid: parsed.kid.clone(),
                alg: parsed.alg.name(),
            };
            let Some(provider) = config.providers.get(token.provider) else {
                Self::reject(req, "?", location, &no_key());
                return Action::Pause;
            };
            let keys: Rc<Vec<Key>> = if let Some(keys) = provider.inline_keys.get() {
                Rc::clone(keys)
            } else if let Some((_, keys)) = fetched.iter().find(|(p, _)| *p == token.provider) {
                Rc::clone(keys)
            } else {
                let Some(remote) = provider.remote_jwks.clone() else {
                    Self::reject(req, &provider.name, location, &no_key());
                    return Action::Pause;
                };
                match self.usable_cache(provider, &remote, parsed) {
                    Some(keys) => keys,
                    None => return self.fetch_then_verify(todo, index, fetched, remote),
                }
            };
            let verified = match Self::verify_and_remember(
                provider,
                &pending.token,
                parsed,
                &keys,
                self.now(),
            ) {
                Ok(verified) => verified,
                Err(err) => {
                    Self::reject(req, &provider.name, location, &err);
                    return Action::Pause;
                }
            };
            if provider.remote_jwks.is_some() && !fetched.iter().any(|(p, _)| *p == token.provider)
            {
                fetched.push((token.provider, keys));
            }
            if let Some(token) = todo.get_mut(index) {
                token.state = State::Verified(verified);
            }
        }
        self.accept(req, &todo);
        Action::Continue
    }

    /// The provider's cached remote keys when they may verify `parsed`: not expired, and either
    /// holding a key for it or fetched too recently to fetch again.
    fn usable_cache(
        &self,
        provider: &Provider,
        remote: &RemoteJwks,
        parsed: &Parsed,
    ) -> Option<Rc<Vec<Key>>> {
        let now = unix_ms(self.now());
        let cached = self.cached_remote(provider)?;
        if now >= cached.expires_at_ms {
            return None;
        }
        let recently = now.saturating_sub(cached.fetched_at_ms)
            < remote.refetch_interval_seconds.saturating_mul(1000);
        if parsed.has_candidate(&cached.keys) || recently {
            return Some(Rc::clone(&cached.keys));
        }
        log::info!(
            "provider {}: no key for kid {:?}, fetching the JWKS again",
            provider.name,
            parsed.kid
        );
        None
    }

    /// Every token verified: the claims of each go to their headers (each distinct value once),
    /// and each token is removed from where it was found unless its provider forwards it.
    fn accept(&self, req: &mut Request<'_>, verified: &[Token]) {
        let mut set: Vec<(&str, &str)> = Vec::new();
        for token in verified {
            let Some(provider) = self.config.providers.get(token.provider) else {
                continue;
            };
            // Every token is verified here (`verify_from` returns early otherwise).
            let State::Verified(claims) = &token.state else {
                continue;
            };
            for (c, value) in provider.claim_to_headers.iter().zip(&claims.claim_values) {
                let Some(value) = value.as_deref() else {
                    continue;
                };
                if !set
                    .iter()
                    .any(|(h, v)| h.eq_ignore_ascii_case(&c.header) && *v == value)
                {
                    req.add_header(&c.header, value);
                    set.push((&c.header, value));
                }
            }
            if !provider.forward {
                match self.config.location(token.place) {
                    Location::Header(name) => req.remove_header(name),
                    Location::Param(name) => {
                        req.remove_query_param(name);
                    }
                    Location::Cookie(name) => {
                        req.remove_cookie(name);
                    }
                }
            }
        }
    }

    fn fetch_then_verify(
        &mut self,
        todo: Vec<Token>,
        index: usize,
        fetched: Vec<(usize, Rc<Vec<Key>>)>,
        remote: RemoteJwks,
    ) -> Action {
        let call = CalloutRequest::get(&remote.cluster, &remote.authority, &remote.path)
            .with_header("accept", "application/json")
            .with_timeout(Duration::from_millis(remote.timeout_ms));
        self.callouts.dispatch(
            call,
            move |filter: &mut Self,
                  req: &mut Request<'_>,
                  result: Result<CalloutResponse, CalloutError>| {
                let config = Rc::clone(&filter.config);
                let Some(provider) = todo
                    .get(index)
                    .and_then(|t| config.providers.get(t.provider))
                else {
                    // Cannot happen: `index` points into `todo`, its provider exists.
                    req.send_response(
                        401,
                        &[("www-authenticate", BEARER_INVALID)],
                        "Jwt verification fails\n",
                    );
                    return Action::Pause;
                };
                let keys = match result {
                    Ok(resp) if resp.status == 200 => {
                        filter.store_fetched(provider, &remote, &resp.body)
                    }
                    Ok(resp) => Err(format!("JWKS fetch answered {}", resp.status)),
                    Err(err) => Err(err.to_string()),
                };
                match keys {
                    Ok(keys) => {
                        let mut fetched = fetched;
                        if let Some(t) = todo.get(index) {
                            fetched.push((t.provider, keys));
                        }
                        filter.verify_from(req, todo, index, fetched)
                    }
                    Err(err) => {
                        log::warn!("provider {}: {err}", provider.name);
                        req.send_response(
                            401,
                            &[
                                ("www-authenticate", BEARER_INVALID),
                                ("content-type", "text/plain"),
                            ],
                            "Jwks remote fetch is failed\n",
                        );
                        Action::Pause
                    }
                }
            },
        );
        Action::Pause
    }
}

/// A token found in the request, and how far it got.
#[derive(Debug, Clone)]
struct Token {
    /// The provider verifying it.
    provider: usize,
    /// Where it was found ([`Config::location`]); removed before the request goes upstream
    /// unless its provider has `forward`.
    place: usize,
    state: State,
}

/// A token parsed and waiting for its signature check, or verified (now or, from the cache,
/// before).
#[derive(Debug, Clone)]
enum State {
    Parsed(Box<Pending>),
    Verified(Rc<cache::Verified>),
}

/// A token parsed, not verified yet.
#[derive(Debug, Clone)]
struct Pending {
    token: String,
    parsed: Parsed,
}

impl HttpFilter for JwtAuth {
    const NAME: &'static str = "jwt-auth";
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self::with_host(config, Box::new(HostShared), shared::host_now)
    }

    fn callouts(&mut self) -> Option<&mut Callouts<Self>> {
        Some(&mut self.callouts)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let plan = config.plan();
        // One read of the whole map (tokens may be in headers, `:path` and `cookie`), walked
        // in place: the tokens found are slices of it.
        let wire = req.header_map().wire_pairs();
        let (found, claim_headers) = locate::scan(&config, plan, &wire);
        // Claim headers only ever come from a verified token: removed when the client sent
        // any (the scan saw them; most requests carry none, and each removal is a host call).
        if claim_headers {
            for p in &config.providers {
                for c in &p.claim_to_headers {
                    req.remove_header(&c.header);
                }
            }
        }
        if found.is_empty() {
            if config.allow_missing {
                return Action::Continue;
            }
            req.send_response(
                401,
                &[
                    ("www-authenticate", "Bearer"),
                    ("content-type", "text/plain"),
                ],
                "Jwt is missing\n",
            );
            return Action::Pause;
        }
        let mut todo = Vec::with_capacity(found.len());
        // The clock is read once, and only when some provider caches verified tokens.
        let now = plan.caches.then(|| self.now());
        for found in found {
            let provider = config.providers.get(found.provider);
            // A cached token is taken as it was verified: no parse, no signature check, and
            // looked up with the bytes of the header map (no copy, no UTF-8 check).
            if let Some(verified) = now.and_then(|now| Self::cached(provider?, &*found.token, now))
            {
                todo.push(Token {
                    provider: found.provider,
                    place: found.place,
                    state: State::Verified(verified),
                });
                continue;
            }
            let token = found.text();
            match token::parse(&token, config.max_token_bytes) {
                Ok(parsed) => todo.push(Token {
                    provider: found.provider,
                    place: found.place,
                    state: State::Parsed(Box::new(Pending { token, parsed })),
                }),
                Err(err) => {
                    let name = provider.map_or("", |p| p.name.as_str());
                    Self::reject(req, name, config.location(found.place), &err);
                    return Action::Pause;
                }
            }
        }
        self.verify_from(req, todo, 0, Vec::new())
    }
}

tollgate_sdk::export_filter!(JwtAuth, []);

#[cfg(test)]
mod tests;
