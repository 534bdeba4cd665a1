//! # `oidc`: OpenID Connect login at the proxy
//!
//! Browsers without a session are sent to the provider's authorization endpoint (authorization
//! code flow, PKCE `S256`, `state` and `nonce`, all from the host's randomness); the provider
//! sends them back to the callback path, where the filter checks `state` against the sealed
//! login cookie, exchanges the code (with the PKCE verifier) at the token endpoint, verifies the
//! ID token with the issuer's JWKS (`tollgate-jose`, shared with `jwt-auth`) and sets the session
//! in a cookie sealed with XChaCha20-Poly1305 ([`seal`]). Requests with a valid session go
//! upstream with the configured ID token claims in headers (client copies always removed) and
//! without the filter's cookies. Near the access token's expiry the session is refreshed with
//! the refresh token. API clients (`Accept: application/json`, or methods other than GET/HEAD)
//! get 401 instead of a redirect. The provider's metadata (discovery, JWKS) is fetched with
//! callouts and cached in shared data.
//!
//! The configuration reference and the attacks refused are in the crate's README.md.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod config;
pub mod env;
pub mod provider;
pub mod seal;
pub mod sessions;
pub mod url;

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2_next::{Digest, Sha256};
use tollgate_sdk::callout::{CalloutError, CalloutRequest, CalloutResponse, Callouts};
use tollgate_sdk::shared;
use tollgate_sdk::{Action, HttpFilter, Request, Response};

pub use config::Config;
use provider::{Discovery, IdTokenRules, Tokens};
use tollgate_sdk::routes::path_only;
use url::{Url, form_encode, is_local_target, query_param};

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// base64url of `N` random bytes from the host.
fn random_token<const N: usize>() -> Option<String> {
    env::random::<N>().map(|b| URL_SAFE_NO_PAD.encode(b))
}

/// The PKCE `S256` challenge of `verifier` (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A login in progress, sealed in the login cookie between the redirect and the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// Where to send the browser afterwards (a local path).
    pub return_to: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
}

/// A session, sealed in the session cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The ID token's subject.
    pub sub: String,
    /// The ID token claims forwarded upstream.
    pub claims: Map<String, Value>,
    /// Login time, seconds since the epoch (the session ends `session_max_s` later).
    pub login_at: u64,
    /// When the tokens expire (access token `expires_in`, else the ID token's `exp`).
    pub expires_at: u64,
    /// The refresh token, when the provider gave one.
    #[serde(default)]
    pub refresh: Option<String>,
}

/// What a session cookie is worth at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Valid: the request goes on.
    Valid(Session),
    /// Valid but close to expiry (or expired) with a refresh token: refresh first.
    Refresh(Session),
    /// Missing, unreadable, expired or past `session_max_s`.
    None,
}

/// Judges a session at `now`.
pub fn judge_session(config: &Config, session: Session, now: u64) -> SessionState {
    if now >= session.login_at.saturating_add(config.session_max_s) {
        return SessionState::None;
    }
    let refresh_at = session.expires_at.saturating_sub(config.refresh_before_s);
    match (
        &session.refresh,
        now >= refresh_at,
        now >= session.expires_at,
    ) {
        (Some(_), true, _) => SessionState::Refresh(session),
        (None, _, true) => SessionState::None,
        _ => SessionState::Valid(session),
    }
}

/// The value of cookie `name` in the request's `cookie` headers: `None` when absent or present
/// more than once (an injected duplicate is not guessed at).
pub fn cookie(req: &Request<'_>, name: &str) -> Option<String> {
    cookie_in(&req.headers(), name)
}

/// [`cookie`] in headers already read.
pub fn cookie_in(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut found = None;
    for (header, value) in headers {
        if !header.eq_ignore_ascii_case("cookie") {
            continue;
        }
        for pair in value.split(';') {
            if let Some((n, v)) = pair.trim().split_once('=')
                && n == name
            {
                if found.is_some() {
                    return None;
                }
                found = Some(v.trim_matches('"').to_string());
            }
        }
    }
    found
}

/// `Set-Cookie` for `name=value` with the configured attributes; `max_age` 0 deletes it.
pub fn set_cookie(config: &Config, name: &str, value: &str, max_age: u64, lax: bool) -> String {
    let same_site = if lax {
        "Lax"
    } else {
        config.cookie.same_site.as_str()
    };
    let mut out =
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}");
    if config.cookie.secure {
        out.push_str("; Secure");
    }
    if let Some(domain) = &config.cookie.domain {
        out.push_str(&format!("; Domain={domain}"));
    }
    out
}

/// True when the client asked for JSON and not for a page (an API client: 401, no redirect).
pub fn wants_json(req: &Request<'_>) -> bool {
    let accept = req
        .header("accept")
        .unwrap_or_default()
        .to_ascii_lowercase();
    accept.contains("application/json") && !accept.contains("text/html")
}

/// The authorization request URL for `login`.
pub fn authorization_url(config: &Config, doc: &Discovery, login: &Login) -> String {
    let mut scopes: Vec<&str> = vec!["openid"];
    scopes.extend(
        config
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "openid"),
    );
    let sep = if doc.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
        doc.authorization_endpoint,
        form_encode(&config.client_id),
        form_encode(&config.redirect_uri),
        form_encode(&scopes.join(" ")),
        form_encode(&login.state),
        form_encode(&login.nonce),
        pkce_challenge(&login.verifier),
    )
}

/// A back-channel call to `endpoint` (on the issuer's origin) through the configured cluster.
fn back_channel(config: &Config, method: &str, endpoint: &str) -> Option<CalloutRequest> {
    let url = Url::parse(endpoint)?;
    Some(
        CalloutRequest::new(
            method,
            &config.cluster,
            &url.authority,
            &url.path_and_query(),
        )
        .with_scheme(&url.scheme)
        .with_timeout(Duration::from_millis(config.timeout_ms))
        .with_header("accept", "application/json"),
    )
}

/// The token endpoint request with `form` (client_secret_basic).
pub fn token_request(config: &Config, doc: &Discovery, form: &str) -> Option<CalloutRequest> {
    let pair = format!(
        "{}:{}",
        form_encode(&config.client_id),
        form_encode(&config.client_secret)
    );
    Some(
        back_channel(config, "POST", &doc.token_endpoint)?
            .with_header("content-type", "application/x-www-form-urlencoded")
            .with_header("authorization", &format!("Basic {}", STANDARD.encode(pair)))
            .with_body(form.as_bytes().to_vec()),
    )
}

/// The form of the code exchange.
pub fn code_form(config: &Config, code: &str, verifier: &str) -> String {
    format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        form_encode(code),
        form_encode(&config.redirect_uri),
        form_encode(verifier)
    )
}

/// The session made from verified tokens at `now`.
pub fn new_session(
    config: &Config,
    tokens: &Tokens,
    claims: &Map<String, Value>,
    now: u64,
    login_at: u64,
) -> Session {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kept = config
        .claim_headers
        .iter()
        .filter_map(|c| claims.get(&c.claim).map(|v| (c.claim.clone(), v.clone())))
        .collect();
    let id_exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
    let expires_at = match tokens.expires_in {
        Some(secs) => now.saturating_add(secs),
        None => id_exp,
    };
    Session {
        sub,
        claims: kept,
        login_at,
        expires_at,
        refresh: tokens.refresh_token.clone(),
    }
}

/// The request headers carrying `session`'s claims upstream.
pub fn claim_headers(config: &Config, session: &Session) -> Vec<(String, String)> {
    config
        .claim_headers
        .iter()
        .filter_map(|c| {
            let value = session.claims.get(&c.claim)?;
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let clean = !text.bytes().any(|b| b < b' ' && b != b'\t' || b == 0x7f);
            clean.then(|| (c.header.as_str().to_string(), text))
        })
        .collect()
}

/// Marks `state` used in shared data; false when it was already used (a replayed callback).
///
/// 4096 slots picked by the state's digest, each a short list pruned by expiry: bounded.
pub fn first_use_of_state(state: &str, expires_at: u64, now: u64) -> bool {
    const SLOTS: u16 = 4096;
    const PER_SLOT: usize = 16;
    let digest = Sha256::digest(state.as_bytes());
    let slot = u16::from_be_bytes([digest[0], digest[1]]) % SLOTS;
    let id = URL_SAFE_NO_PAD.encode(&digest[..16]);
    let key = format!("tollgate.oidc.states.{slot}");
    let mut replayed = false;
    let result = env::with_store(|store| {
        shared::update(store, &key, 8, |list: Option<Vec<(String, u64)>>| {
            let mut list: Vec<(String, u64)> = list
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, exp)| *exp > now)
                .collect();
            replayed = list.iter().any(|(seen, _)| *seen == id);
            if !replayed {
                list.push((id.clone(), expires_at));
                if list.len() > PER_SLOT {
                    list.remove(0);
                }
            }
            list
        })
    });
    match result {
        Ok(_) => !replayed,
        Err(err) => {
            // Fail closed: without the record a replay could not be told apart.
            log::warn!("login state record: {err}");
            false
        }
    }
}

/// What to do once the provider's metadata is known.
#[derive(Debug, Clone)]
enum Next {
    Login { return_to: String },
    Exchange { code: String, login: Login },
    Refresh { session: Session },
    Logout,
}

/// One request's work.
pub struct Oidc {
    config: Rc<Config>,
    callouts: Callouts<Self>,
    /// `Set-Cookie` values for the upstream's response (a refreshed session).
    response_cookies: Vec<String>,
}

fn discovery_key(config: &Config) -> String {
    format!("tollgate.oidc.discovery.{}", config.issuer)
}

fn jwks_key(config: &Config) -> String {
    format!("tollgate.oidc.jwks.{}", config.issuer)
}

fn now_time(now: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(now)
}

fn body_of(
    result: Result<CalloutResponse, CalloutError>,
    what: &str,
) -> Result<(u16, Vec<u8>), String> {
    match result {
        Ok(resp) => Ok((resp.status, resp.body)),
        Err(err) => Err(format!("{what}: {err}")),
    }
}

impl Oidc {
    fn reply(&self, req: &mut Request<'_>, status: u16, message: &str) -> Action {
        let cleared = set_cookie(&self.config, self.config.login_cookie(), "", 0, true);
        let mut headers = vec![("content-type", "text/plain")];
        if status == 400 {
            headers.push(("set-cookie", cleared.as_str()));
        }
        req.send_response(status, &headers, format!("{message}\n"));
        Action::Pause
    }

    fn unavailable(&self, req: &mut Request<'_>, reason: &str) -> Action {
        log::warn!("oidc: provider unavailable, refusing (fail closed): {reason}");
        self.reply(req, 503, "identity provider unavailable")
    }

    fn unauthenticated(&mut self, req: &mut Request<'_>, clear_session: bool) -> Action {
        let method = req.method().unwrap_or_default();
        if wants_json(req) || !(method == "GET" || method == "HEAD") {
            let cleared = set_cookie(&self.config, &self.config.cookie.name, "", 0, false);
            let mut headers = vec![("content-type", "application/json")];
            if clear_session {
                headers.push(("set-cookie", cleared.as_str()));
            }
            req.send_response(401, &headers, "{\"error\":\"unauthenticated\"}\n");
            return Action::Pause;
        }
        let path = req.path().unwrap_or_default();
        let return_to = if is_local_target(&path) {
            path
        } else {
            "/".into()
        };
        self.with_discovery(req, Next::Login { return_to })
    }

    /// Runs `next` with the discovery document (cached in shared data, else fetched).
    fn with_discovery(&mut self, req: &mut Request<'_>, next: Next) -> Action {
        let now = env::now_s();
        let cached = env::with_store(|s| {
            shared::cache_get::<Discovery>(s, &discovery_key(&self.config), now_time(now))
        });
        if let Ok(Some(doc)) = cached {
            return self.resume(req, doc, next);
        }
        let Some(issuer) = self.config.issuer_url() else {
            return self.unavailable(req, "bad issuer");
        };
        let path = format!(
            "{}/.well-known/openid-configuration",
            issuer.path.trim_end_matches('/')
        );
        let call = CalloutRequest::get(&self.config.cluster, &issuer.authority, &path)
            .with_scheme(&issuer.scheme)
            .with_timeout(Duration::from_millis(self.config.timeout_ms))
            .with_header("accept", "application/json");
        self.callouts
            .dispatch(call, move |f: &mut Self, req, result| {
                let doc = body_of(result, "discovery").and_then(|(status, body)| {
                    if status != 200 {
                        return Err(format!("discovery answered {status}"));
                    }
                    provider::discovery(&f.config.issuer, &body)
                });
                match doc {
                    Ok(doc) => {
                        let ttl = Duration::from_secs(f.config.metadata_ttl_s);
                        let key = discovery_key(&f.config);
                        if let Err(err) = env::with_store(|s| {
                            shared::cache_put(s, &key, &doc, ttl, now_time(env::now_s()))
                        }) {
                            log::warn!("oidc: discovery not cached: {err}");
                        }
                        f.resume(req, doc, next)
                    }
                    Err(reason) => f.unavailable(req, &reason),
                }
            });
        Action::Pause
    }

    fn resume(&mut self, req: &mut Request<'_>, doc: Discovery, next: Next) -> Action {
        match next {
            Next::Login { return_to } => self.redirect_to_login(req, &doc, return_to),
            Next::Exchange { code, login } => {
                let form = code_form(&self.config, &code, &login.verifier);
                self.token_call(req, &doc, &form, Some(login), None)
            }
            Next::Refresh { session } => {
                let Some(refresh) = session.refresh.clone() else {
                    return self.unauthenticated(req, true);
                };
                let form = format!(
                    "grant_type=refresh_token&refresh_token={}",
                    form_encode(&refresh)
                );
                self.token_call(req, &doc, &form, None, Some(session))
            }
            Next::Logout => self.finish_logout(req, Some(&doc)),
        }
    }

    fn redirect_to_login(
        &mut self,
        req: &mut Request<'_>,
        doc: &Discovery,
        return_to: String,
    ) -> Action {
        let (Some(state), Some(nonce), Some(verifier)) = (
            random_token::<32>(),
            random_token::<32>(),
            random_token::<32>(),
        ) else {
            return self.reply(req, 500, "no randomness");
        };
        let now = env::now_s();
        let login = Login {
            state,
            nonce,
            verifier,
            return_to,
            expires_at: now + self.config.login_timeout_s,
        };
        let Some(sealed) = self.seal(self.config.login_cookie(), &login) else {
            return self.reply(req, 500, "could not seal the login");
        };
        let location = authorization_url(&self.config, doc, &login);
        let cookie = set_cookie(
            &self.config,
            self.config.login_cookie(),
            &sealed,
            self.config.login_timeout_s,
            true,
        );
        req.send_response(
            302,
            &[
                ("location", location.as_str()),
                ("set-cookie", cookie.as_str()),
                ("cache-control", "no-store"),
            ],
            "",
        );
        Action::Pause
    }

    fn seal<T: Serialize>(&self, name: &str, value: &T) -> Option<String> {
        let key = self.config.keys().first()?;
        let plain = serde_json::to_vec(value).ok()?;
        let nonce = env::random::<24>()?;
        match seal::seal(key, nonce, name, &plain) {
            Ok(text) => Some(text),
            Err(err) => {
                log::warn!("oidc: {name}: {err}");
                None
            }
        }
    }

    fn open<T: for<'de> Deserialize<'de>>(&self, req: &Request<'_>, name: &str) -> Option<T> {
        self.open_text(name, &cookie(req, name)?)
    }

    /// The session sealed in session cookie `text`: remembered from an earlier request of this
    /// VM, else opened (and remembered when it opens; see [`sessions`]).
    fn open_session(&self, text: &str) -> Option<Session> {
        let cache = self.config.sessions();
        if let Some(hit) = cache.get(text) {
            return Some(Session::clone(&hit));
        }
        let session: Session = self.open_text(&self.config.cookie.name, text)?;
        cache.insert(
            text,
            Rc::new(session.clone()),
            self.config.session_cache_size,
        );
        Some(session)
    }

    fn open_text<T: for<'de> Deserialize<'de>>(&self, name: &str, text: &str) -> Option<T> {
        match seal::open(self.config.keys(), name, text) {
            Ok(plain) => serde_json::from_slice(&plain).ok(),
            Err(err) => {
                log::info!("oidc: cookie {name} refused: {err}");
                None
            }
        }
    }

    fn callback(&mut self, req: &mut Request<'_>, path: &str) -> Action {
        let now = env::now_s();
        let Some(login) = self.open::<Login>(req, self.config.login_cookie()) else {
            return self.reply(req, 400, "no login in progress from this browser");
        };
        if now >= login.expires_at {
            return self.reply(req, 400, "login expired");
        }
        let state = query_param(path, "state").unwrap_or_default();
        if !same(state.as_bytes(), login.state.as_bytes()) {
            return self.reply(req, 400, "state does not match this browser's login");
        }
        // RFC 9207: a provider that names itself in the response must be ours (mix-up defence).
        if let Some(iss) = query_param(path, "iss")
            && iss != self.config.issuer
        {
            return self.reply(req, 400, "the response comes from another issuer");
        }
        if let Some(error) = query_param(path, "error") {
            log::info!("oidc: provider refused the login: {error}");
            return self.reply(req, 401, "login refused by the identity provider");
        }
        let Some(code) = query_param(path, "code").filter(|c| !c.is_empty()) else {
            return self.reply(req, 400, "no code");
        };
        if !first_use_of_state(&login.state, login.expires_at, now) {
            return self.reply(req, 400, "this login was already completed");
        }
        self.with_discovery(req, Next::Exchange { code, login })
    }

    fn token_call(
        &mut self,
        req: &mut Request<'_>,
        doc: &Discovery,
        form: &str,
        login: Option<Login>,
        session: Option<Session>,
    ) -> Action {
        let Some(call) = token_request(&self.config, doc, form) else {
            return self.unavailable(req, "bad token endpoint");
        };
        let doc = doc.clone();
        self.callouts
            .dispatch(call, move |f: &mut Self, req, result| {
                let tokens = body_of(result, "token endpoint")
                    .and_then(|(status, body)| provider::tokens(status, &body));
                let tokens = match (tokens, &session) {
                    (Ok(tokens), _) => tokens,
                    (Err(reason), Some(_)) => {
                        log::info!("oidc: refresh failed, session over: {reason}");
                        return f.unauthenticated(req, true);
                    }
                    (Err(reason), None) => {
                        log::info!("oidc: code exchange failed: {reason}");
                        return f.reply(req, 401, "login failed");
                    }
                };
                if let (None, Some(old)) = (&tokens.id_token, &session) {
                    // A refresh without a new ID token: the claims stay those verified at login.
                    return f.finish_refresh(req, &tokens, None, old, env::now_s());
                }
                f.with_jwks(req, &doc, tokens, login, session, false)
            });
        Action::Pause
    }

    fn with_jwks(
        &mut self,
        req: &mut Request<'_>,
        doc: &Discovery,
        tokens: Tokens,
        login: Option<Login>,
        session: Option<Session>,
        fetched: bool,
    ) -> Action {
        let now = env::now_s();
        if !fetched {
            let cached = env::with_store(|s| {
                shared::cache_get::<Value>(s, &jwks_key(&self.config), now_time(now))
            });
            if let Ok(Some(jwks)) = cached {
                let body = jwks.to_string().into_bytes();
                // A key the cached set lacks (rotation at the provider): fetch once more.
                if let Some(action) =
                    self.verified(req, &body, &tokens, login.as_ref(), session.as_ref(), true)
                {
                    return action;
                }
            }
        }
        let Some(call) = back_channel(&self.config, "GET", &doc.jwks_uri) else {
            return self.unavailable(req, "bad jwks_uri");
        };
        self.callouts
            .dispatch(call, move |f: &mut Self, req, result| {
                let body = match body_of(result, "JWKS") {
                    Ok((200, body)) => body,
                    Ok((status, _)) => {
                        return f.unavailable(req, &format!("JWKS answered {status}"));
                    }
                    Err(reason) => return f.unavailable(req, &reason),
                };
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    let ttl = Duration::from_secs(f.config.metadata_ttl_s);
                    let key = jwks_key(&f.config);
                    if let Err(err) = env::with_store(|s| {
                        shared::cache_put(s, &key, &value, ttl, now_time(env::now_s()))
                    }) {
                        log::warn!("oidc: JWKS not cached: {err}");
                    }
                }
                f.verified(req, &body, &tokens, login.as_ref(), session.as_ref(), false)
                    .unwrap_or(Action::Pause)
            });
        Action::Pause
    }

    /// Verifies the ID token with `jwks` and finishes the login or refresh. With `retry`, an
    /// unknown key gives `None` (the caller fetches the JWKS again).
    fn verified(
        &mut self,
        req: &mut Request<'_>,
        jwks: &[u8],
        tokens: &Tokens,
        login: Option<&Login>,
        session: Option<&Session>,
        retry: bool,
    ) -> Option<Action> {
        let now = env::now_s();
        let keys = match provider::jwks(jwks) {
            Ok(keys) => keys,
            Err(reason) if retry => {
                log::info!("oidc: cached {reason}");
                return None;
            }
            Err(reason) => return Some(self.unavailable(req, &reason)),
        };
        let rules = IdTokenRules {
            issuer: &self.config.issuer,
            client_id: &self.config.client_id,
            nonce: login.map(|l| l.nonce.as_str()),
            now,
            skew: self.config.clock_skew_s,
        };
        let claims = match (&tokens.id_token, session) {
            (Some(id_token), _) => match provider::verify_id_token(id_token, &keys, &rules) {
                Ok(claims) => Some(claims),
                Err(reason) if retry && reason.starts_with("no key fits") => return None,
                Err(reason) => {
                    log::info!("oidc: ID token refused: {reason}");
                    if session.is_some() {
                        return Some(self.unauthenticated(req, true));
                    }
                    return Some(self.reply(req, 401, "login failed: ID token refused"));
                }
            },
            (None, Some(_)) => None,
            (None, None) => return Some(self.reply(req, 401, "login failed: no ID token")),
        };
        Some(match (login, session) {
            (Some(login), _) => {
                self.finish_login(req, tokens, &claims.unwrap_or_default(), login, now)
            }
            (None, Some(old)) => self.finish_refresh(req, tokens, claims.as_ref(), old, now),
            (None, None) => self.reply(req, 500, "nothing to finish"),
        })
    }

    fn finish_login(
        &mut self,
        req: &mut Request<'_>,
        tokens: &Tokens,
        claims: &Map<String, Value>,
        login: &Login,
        now: u64,
    ) -> Action {
        let session = new_session(&self.config, tokens, claims, now, now);
        let Some(sealed) = self.seal(&self.config.cookie.name, &session) else {
            return self.reply(req, 500, "could not seal the session");
        };
        let session_cookie = set_cookie(
            &self.config,
            &self.config.cookie.name,
            &sealed,
            self.config.session_max_s,
            false,
        );
        let cleared = set_cookie(&self.config, self.config.login_cookie(), "", 0, true);
        let target = if is_local_target(&login.return_to) {
            login.return_to.as_str()
        } else {
            "/"
        };
        req.send_response(
            302,
            &[
                ("location", target),
                ("set-cookie", session_cookie.as_str()),
                ("set-cookie", cleared.as_str()),
                ("cache-control", "no-store"),
            ],
            "",
        );
        Action::Pause
    }

    fn finish_refresh(
        &mut self,
        req: &mut Request<'_>,
        tokens: &Tokens,
        claims: Option<&Map<String, Value>>,
        old: &Session,
        now: u64,
    ) -> Action {
        let mut session = match claims {
            Some(claims) => {
                if claims.get("sub").and_then(Value::as_str) != Some(old.sub.as_str()) {
                    log::warn!("oidc: refreshed ID token names another subject");
                    return self.unauthenticated(req, true);
                }
                new_session(&self.config, tokens, claims, now, old.login_at)
            }
            None => Session {
                expires_at: tokens
                    .expires_in
                    .map_or(old.expires_at, |s| now.saturating_add(s)),
                ..old.clone()
            },
        };
        if tokens.refresh_token.is_some() {
            session.refresh = tokens.refresh_token.clone();
        }
        if let Some(sealed) = self.seal(&self.config.cookie.name, &session) {
            let left = old
                .login_at
                .saturating_add(self.config.session_max_s)
                .saturating_sub(now);
            self.response_cookies.push(set_cookie(
                &self.config,
                &self.config.cookie.name,
                &sealed,
                left,
                false,
            ));
        }
        let headers = req.headers();
        self.admit(req, &headers, &session)
    }

    /// Lets a request with a valid session through: its cookies (the session's and a login's)
    /// removed from `headers` (the request's headers as read) and the claims as headers.
    fn admit(
        &mut self,
        req: &mut Request<'_>,
        headers: &[(String, String)],
        session: &Session,
    ) -> Action {
        let names = [self.config.cookie.name.as_str(), self.config.login_cookie()];
        req.remove_cookies_in(headers, &names);
        for (name, value) in claim_headers(&self.config, session) {
            req.set_header(&name, &value);
        }
        Action::Continue
    }

    fn logout(&mut self, req: &mut Request<'_>) -> Action {
        if self.config.post_logout_redirect_uri.is_some() {
            return self.with_discovery(req, Next::Logout);
        }
        self.finish_logout(req, None)
    }

    fn finish_logout(&mut self, req: &mut Request<'_>, doc: Option<&Discovery>) -> Action {
        let cleared = set_cookie(&self.config, &self.config.cookie.name, "", 0, false);
        let location = match (
            doc.and_then(|d| d.end_session_endpoint.as_ref()),
            &self.config.post_logout_redirect_uri,
        ) {
            (Some(end), Some(after)) => {
                let sep = if end.contains('?') { '&' } else { '?' };
                format!(
                    "{end}{sep}client_id={}&post_logout_redirect_uri={}",
                    form_encode(&self.config.client_id),
                    form_encode(after)
                )
            }
            (None, Some(after)) => after.clone(),
            _ => "/".into(),
        };
        req.send_response(
            302,
            &[
                ("location", location.as_str()),
                ("set-cookie", cleared.as_str()),
                ("cache-control", "no-store"),
            ],
            "",
        );
        Action::Pause
    }
}

impl HttpFilter for Oidc {
    const NAME: &'static str = "oidc";
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            callouts: Callouts::new(),
            response_cookies: Vec::new(),
        }
    }

    fn callouts(&mut self) -> Option<&mut Callouts<Self>> {
        Some(&mut self.callouts)
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        // One read of the request headers serves the path, the cookies and the claim headers
        // (each read is a call across the VM boundary in a proxy).
        let headers = req.headers();
        // The upstream learns identity from this filter only.
        for claim in &self.config.claim_headers {
            let name = claim.header.as_str();
            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                req.remove_header(name);
            }
        }
        let path = headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let bare = path_only(&path);
        if self
            .config
            .pass_through
            .iter()
            .any(|p| bare.starts_with(p.as_str()))
        {
            return Action::Continue;
        }
        if bare == self.config.callback_path() {
            return self.callback(req, &path);
        }
        if self.config.logout_path.as_deref() == Some(bare) {
            return self.logout(req);
        }
        if self.config.login_path.as_deref() == Some(bare) {
            let return_to = query_param(&path, "return_to").unwrap_or_else(|| "/".into());
            if !is_local_target(&return_to) {
                return self.reply(req, 400, "return_to must be a path on this site");
            }
            return self.with_discovery(req, Next::Login { return_to });
        }
        let now = env::now_s();
        let name = self.config.cookie.name.as_str();
        let sealed = cookie_in(&headers, name);
        let had_cookie = sealed.is_some();
        let session = sealed.and_then(|text| self.open_session(&text));
        match session.map(|s| judge_session(&self.config, s, now)) {
            Some(SessionState::Valid(session)) => self.admit(req, &headers, &session),
            Some(SessionState::Refresh(session)) => {
                self.with_discovery(req, Next::Refresh { session })
            }
            Some(SessionState::None) | None => self.unauthenticated(req, had_cookie),
        }
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        for cookie in self.response_cookies.drain(..) {
            resp.add_header("set-cookie", &cookie);
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(Oidc, headers_only);

#[cfg(test)]
mod tests;
