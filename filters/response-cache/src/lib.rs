//! `response-cache`: caches GET and HEAD responses in the proxy's shared data, so that every
//! worker VM of the plugin (all with the same `vm_id`) serves them, with the rules of a shared
//! cache (RFC 9111).
//!
//! - Key: method class (GET and HEAD share entries: a HEAD is served from a GET's entry without
//!   the body), scheme, authority, path, the query (all of it, none, or chosen parameters) and
//!   chosen request headers; then the values of the response's `Vary` headers (secondary key).
//! - Stored: statuses a cache understands with freshness from `s-maxage` (wins), `max-age`,
//!   `Expires`, or the route's `default_ttl_s`; or with an `ETag` (then revalidated before use).
//!   Never with `no-store`, `private`, `Vary: *`, `Set-Cookie` (unless the route stores them,
//!   without the cookie), or a request `Authorization` the response does not allow sharing.
//! - Served: fresh entries as a local reply with `Age` and `x-cache: HIT` (a matching
//!   `If-None-Match` gets 304); a stale entry (or `no-cache`) with an `ETag` is revalidated by
//!   forwarding the request with `If-None-Match`, and the upstream's 304 refreshes the entry and
//!   serves it (`x-cache: REVALIDATED`); anything else goes on (`x-cache: MISS`) and its response
//!   is copied chunk by chunk while it passes, up to `max_body_bytes` (then the copy is dropped;
//!   the response is never held).
//!
//! The rules are in [`policy`], the shared-data layout and eviction in [`store`]; the reference
//! is `filters/response-cache/README.md`.
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_response_cache::ResponseCacheFilter;
//! use tollgate_sdk::{HeaderList, HttpFilter, Request, Response, env};
//!
//! env::mock::reset_store();
//! env::mock::set_now_s(1_700_000_000);
//! let config = Rc::new(tollgate_sdk::config::parse(br#"{"max_entries": 10}"#)?);
//! let req = || HeaderList::from([(":method", "GET"), (":scheme", "http"), (":authority", "a.example"), (":path", "/x")]);
//!
//! // A miss: the response goes on and is stored.
//! let mut filter = ResponseCacheFilter::new(Rc::clone(&config));
//! let mut headers = req();
//! filter.on_request_headers(&mut Request::new(&mut headers), true);
//! let mut resp = HeaderList::from([(":status", "200"), ("cache-control", "max-age=60")]);
//! filter.on_response_headers(&mut Response::new(&mut resp), true);
//! assert_eq!(resp.get_all("x-cache"), vec!["MISS"]);
//!
//! // Ten seconds later, a hit answered by the filter.
//! env::mock::set_now_s(1_700_000_010);
//! let mut filter = ResponseCacheFilter::new(config);
//! let mut headers = req();
//! let mut view = Request::new(&mut headers);
//! filter.on_request_headers(&mut view, true);
//! let reply = view.local_reply().cloned();
//! assert_eq!(reply.as_ref().map(|r| r.status), Some(200));
//! let age = reply.iter().flat_map(|r| r.headers.iter()).find(|(n, _)| n == "age").map(|(_, v)| v.clone());
//! assert_eq!(age.as_deref(), Some("10"));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod policy;
pub mod store;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::rc::Rc;

use serde::Deserialize;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::routes::Routed;
use tollgate_sdk::{
    Action, Body, ConfigError, FilterConfig, HeaderName, HeaderSnapshot, HttpFilter, Request,
    Response, env,
};

use crate::policy::{CacheControl, Exchange, Freshness, NotStored};
use crate::store::{Cache, Entry, Meta};

/// Which part of the query goes into the key.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryMode {
    /// The whole query, as sent.
    #[default]
    All,
    /// None of it: `/a?x=1` and `/a?x=2` are one entry.
    None,
    /// Only the parameters in `query_params` (sorted by name).
    Only,
    /// Every parameter but those in `query_params` (sorted by name).
    Except,
}

/// What the cache key is made of, besides the method class (GET/HEAD) and the path.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Scheme and authority in the key (default true; false: one entry for every host).
    #[serde(default = "yes")]
    pub host: bool,
    /// Which part of the query.
    #[serde(default)]
    pub query: QueryMode,
    /// The parameters `only` keeps or `except` drops.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// Request headers whose values are part of the key (e.g. `x-tenant`).
    #[serde(default)]
    pub headers: Vec<HeaderName>,
}

impl Default for KeyConfig {
    fn default() -> Self {
        Self {
            host: true,
            query: QueryMode::All,
            query_params: Vec::new(),
            headers: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// How one route caches.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// false: the route is not cached (nothing looked up, nothing stored, no `x-cache`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Freshness, in seconds, of responses without `s-maxage`, `max-age` or `Expires` whose
    /// status is heuristically cacheable (200, 203, 204, 300, 301, 308, 404, 405, 410, 414,
    /// 501). 0 (the default): such responses are stored only with an `ETag`, and revalidated
    /// before each use.
    #[serde(default)]
    pub default_ttl_s: u64,
    /// The longest freshness kept, whatever the response says (none by default).
    #[serde(default)]
    pub max_ttl_s: Option<u64>,
    /// The cache key.
    #[serde(default)]
    pub key: KeyConfig,
    /// Store responses carrying `Set-Cookie`, without the cookie (the client whose request
    /// fetched it still gets it). Default false: such responses are not stored.
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Honour the request's `Cache-Control` (`no-cache`, `max-age`, `no-store`,
    /// `only-if-cached`) and `Pragma: no-cache`, as RFC 9111 asks (default true). false: clients
    /// cannot make the cache go to the upstream.
    #[serde(default = "yes")]
    pub request_cache_control: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            default_ttl_s: 0,
            max_ttl_s: None,
            key: KeyConfig::default(),
            store_set_cookie: false,
            request_cache_control: true,
        }
    }
}

impl FilterConfig for CachePolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(max) = self.max_ttl_s
            && max < self.default_ttl_s
        {
            return Err(ConfigError::at(
                "max_ttl_s",
                format!("{max} is below default_ttl_s ({})", self.default_ttl_s),
            ));
        }
        match self.key.query {
            QueryMode::Only | QueryMode::Except if self.key.query_params.is_empty() => {
                return Err(ConfigError::at(
                    "key.query_params",
                    "list the parameters `only`/`except` applies to",
                ));
            }
            QueryMode::All | QueryMode::None if !self.key.query_params.is_empty() => {
                return Err(ConfigError::at(
                    "key.query_params",
                    "only used with query `only` or `except`",
                ));
            }
            _ => {}
        }
        if let Some(i) = self.key.query_params.iter().position(String::is_empty) {
            return Err(ConfigError::at(
                format!("key.query_params[{i}]"),
                "empty parameter name",
            ));
        }
        if let Some(i) = self.key.headers.iter().position(HeaderName::is_pseudo) {
            return Err(ConfigError::at(
                format!("key.headers[{i}]"),
                "pseudo-headers are already in the key (use key.host and key.query)",
            ));
        }
        Ok(())
    }
}

/// The whole plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheConfig {
    /// The most entries kept (1 to 10000; default 1000). Each is one shared-data key; the index,
    /// read on every lookup, holds about 80 bytes per entry.
    #[serde(default = "default_max_entries")]
    pub max_entries: u32,
    /// The largest body stored, bytes (1 to 16 MiB; default 1 MiB). Larger responses pass
    /// through uncached.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u32,
    /// The prefix of the shared-data keys (default `response-cache`): plugins sharing a
    /// `vm_id` share a cache only with the same namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The caching policy per route (`default` and `routes`, see the SDK's `routes`); without
    /// it every route is cached with the default policy. A request no rule matches and with no
    /// `default` is not cached.
    #[serde(default = "default_policy")]
    pub policy: Routed<CachePolicy>,
}

fn default_max_entries() -> u32 {
    1000
}
fn default_max_body() -> u32 {
    1 << 20
}
fn default_namespace() -> String {
    "response-cache".into()
}
fn default_policy() -> Routed<CachePolicy> {
    Routed {
        default: Some(CachePolicy::default()),
        routes: Vec::new(),
    }
}

/// The largest `max_entries`.
pub const MAX_ENTRIES: u32 = 10_000;
/// The largest `max_body_bytes`.
pub const MAX_BODY: u32 = 16 << 20;

impl FilterConfig for ResponseCacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ENTRIES).contains(&self.max_entries) {
            return Err(ConfigError::at(
                "max_entries",
                format!("{} is not between 1 and {MAX_ENTRIES}", self.max_entries),
            ));
        }
        if !(1..=MAX_BODY).contains(&self.max_body_bytes) {
            return Err(ConfigError::at(
                "max_body_bytes",
                format!("{} is not between 1 and {MAX_BODY}", self.max_body_bytes),
            ));
        }
        if self.namespace.is_empty() || self.namespace.chars().any(char::is_whitespace) {
            return Err(ConfigError::at(
                "namespace",
                "must be non-empty, without spaces",
            ));
        }
        self.policy.validate_at("policy")
    }
}

/// The metric of lookups: `response_cache_lookups{result=hit|miss|revalidated|bypass}`.
pub const LOOKUPS: &str = "response_cache_lookups";
/// The metric of responses seen on a miss: `response_cache_stores{result=stored|<reason>}`.
pub const STORES: &str = "response_cache_stores";

thread_local! {
    static COUNTERS: RefCell<Vec<(String, Counter)>> = const { RefCell::new(Vec::new()) };
}

fn count(metric: &str, result: &str) {
    COUNTERS.with_borrow_mut(|counters| {
        let id = format!("{metric}/{result}");
        let counter = match counters.iter().find(|(n, _)| *n == id) {
            Some((_, c)) => *c,
            None => {
                let c = Counter::define(metric, &[("result", result)]);
                counters.push((id, c));
                c
            }
        };
        counter.increment();
    });
}

/// The response header saying what the cache did.
pub const X_CACHE: &str = "x-cache";

/// Headers never stored: hop-by-hop ones, those recomputed on every reply, and ours.
const NOT_STORED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "age",
    X_CACHE,
    "x-envoy-upstream-service-time",
];

/// The primary key of a request under `key`: `G` (GET and HEAD), scheme and authority, path,
/// the chosen query, the chosen headers' values.
pub fn primary_key(key: &KeyConfig, req: &Request<'_>) -> String {
    let path = req.path().unwrap_or_default();
    let mut out = String::from("G ");
    if key.host {
        out.push_str(&req.scheme().unwrap_or_default());
        out.push_str("://");
        out.push_str(&req.authority().unwrap_or_default().to_ascii_lowercase());
    }
    out.push_str(&key_path(key, &path));
    for name in &key.headers {
        out.push('\n');
        out.push_str(name.as_str());
        match req.header(name.as_str()) {
            Some(v) => {
                out.push('=');
                out.push_str(&v);
            }
            None => out.push('!'),
        }
    }
    out
}

/// The path and the part of the query the key keeps (the fragment never).
pub fn key_path(key: &KeyConfig, path: &str) -> String {
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let (base, query) = match path.split_once('?') {
        Some((b, q)) => (b, q),
        None => (path, ""),
    };
    let name_of = |pair: &str| pair.split_once('=').map_or(pair, |(n, _)| n).to_string();
    let kept: Option<Vec<&str>> = match key.query {
        QueryMode::All => return path.to_string(),
        QueryMode::None => None,
        QueryMode::Only => Some(
            query
                .split('&')
                .filter(|p| !p.is_empty() && key.query_params.contains(&name_of(p)))
                .collect(),
        ),
        QueryMode::Except => Some(
            query
                .split('&')
                .filter(|p| !p.is_empty() && !key.query_params.contains(&name_of(p)))
                .collect(),
        ),
    };
    let mut out = base.to_string();
    if let Some(mut kept) = kept.filter(|k| !k.is_empty()) {
        kept.sort_by_key(|p| name_of(p));
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out
}

/// A reply built from a stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The headers (with `age` and `x-cache`).
    pub headers: Vec<(String, String)>,
    /// The body (empty for a 304).
    pub body: Vec<u8>,
}

/// Headers a 304 from the cache carries (RFC 9110 15.4.5), besides `age` and `x-cache`.
const NOT_MODIFIED_HEADERS: [&str; 6] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
];

/// The reply for `entry` at age `age`: a 304 when the client's `If-None-Match` matches its
/// `ETag` (for a 200), else the stored response.
pub fn reply_for(entry: Entry, age: u64, label: &str, client_inm: Option<&str>) -> Reply {
    let not_modified = entry.meta.status == 200
        && match (client_inm, entry.meta.etag.as_deref()) {
            (Some(inm), Some(etag)) => policy::if_none_match(inm, etag),
            _ => false,
        };
    let mut headers: Vec<(String, String)> = entry
        .meta
        .headers
        .iter()
        .filter(|(n, _)| !not_modified || NOT_MODIFIED_HEADERS.contains(&n.as_str()))
        .cloned()
        .collect();
    headers.push(("age".into(), age.to_string()));
    headers.push((X_CACHE.into(), label.into()));
    if not_modified {
        Reply {
            status: 304,
            headers,
            body: Vec::new(),
        }
    } else {
        Reply {
            status: entry.meta.status,
            headers,
            body: entry.body,
        }
    }
}

/// What a response's headers say, for storing and refreshing.
struct ResponseFacts {
    cc: CacheControl,
    vary: Vec<String>,
    freshness: Freshness,
    initial_age: u64,
    etag: Option<String>,
    set_cookie: bool,
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    header_values(headers, name).next()
}

fn facts(
    headers: &[(String, String)],
    status: u16,
    policy: &CachePolicy,
    request_time: u64,
    now: u64,
) -> ResponseFacts {
    let cc = CacheControl::parse(header_values(headers, "cache-control"));
    let mut vary: Vec<String> = header_values(headers, "vary")
        .flat_map(policy::split_list)
        .map(str::to_ascii_lowercase)
        .collect();
    vary.sort();
    vary.dedup();
    let date = first(headers, "date").and_then(policy::parse_http_date);
    let default_ttl = (policy.default_ttl_s > 0).then_some(policy.default_ttl_s);
    let mut freshness = policy::freshness_lifetime(
        &cc,
        first(headers, "expires"),
        Some(date.unwrap_or(now)),
        status,
        default_ttl,
    );
    if let Some(max) = policy.max_ttl_s {
        freshness = match freshness {
            Freshness::Explicit(s) => Freshness::Explicit(s.min(max)),
            Freshness::Default(s) => Freshness::Default(s.min(max)),
            Freshness::None => Freshness::None,
        };
    }
    let age = policy::parse_age(first(headers, "age"));
    ResponseFacts {
        initial_age: policy::initial_age(age, date, request_time, now),
        etag: first(headers, "etag").map(str::to_string),
        set_cookie: first(headers, "set-cookie").is_some(),
        cc,
        vary,
        freshness,
    }
}

/// The headers of a response as stored.
fn stored_headers(headers: &[(String, String)], drop_cookies: bool) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| {
            let n = n.to_ascii_lowercase();
            !n.starts_with(':')
                && !NOT_STORED.contains(&n.as_str())
                && (!drop_cookies || n != "set-cookie")
        })
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// A request the filter let through, and what its response needs.
struct Pending {
    policy: CachePolicy,
    primary: String,
    request: HeaderSnapshot,
    request_time: u64,
    head: bool,
    request_no_store: bool,
    client_inm: Option<String>,
    /// The stale entry being revalidated, and its slot.
    revalidating: Option<(Entry, usize)>,
}

/// A response being copied as it passes.
struct Collecting {
    primary: String,
    vary: Vec<String>,
    entry: Entry,
    expires: u64,
}

enum State {
    /// Nothing to do for this stream (not cached, or already answered).
    Idle,
    /// Request went on: mark a bypass on the response.
    Bypass,
    /// An unsafe method (POST, PUT, DELETE, PATCH...) on this primary key.
    Unsafe(String),
    /// Request went on: look at the response.
    Pending(Box<Pending>),
    /// Copying the response body.
    Collecting(Box<Collecting>),
}

/// The filter for one HTTP stream.
pub struct ResponseCacheFilter {
    config: Rc<ResponseCacheConfig>,
    cache: Cache,
    state: State,
}

impl ResponseCacheFilter {
    fn max_body(&self) -> usize {
        self.config.max_body_bytes as usize
    }

    fn commit(&self, c: &Collecting, now: u64) {
        let result = env::with_store(|s| {
            self.cache
                .insert(s, &c.primary, &c.vary, &c.entry, now, c.expires)
        });
        match result {
            Ok(slot) => {
                log::debug!("stored {:?} in slot {slot}", c.entry.meta.key);
                count(STORES, "stored");
            }
            Err(err) => {
                log::warn!("cannot store a response: {err}");
                count(STORES, "error");
            }
        }
    }

    fn invalidate(&self, key: &str) {
        if let Err(err) = env::with_store(|s| self.cache.invalidate(s, key)) {
            log::warn!("cannot invalidate an entry: {err}");
        }
    }

    /// A 304 from the upstream for a revalidated entry: merge its headers into the entry,
    /// store it again, and build the reply.
    fn revalidated(
        &self,
        p: &Pending,
        mut entry: Entry,
        slot: usize,
        headers: &[(String, String)],
        now: u64,
    ) -> Reply {
        let update = stored_headers(headers, true);
        entry
            .meta
            .headers
            .retain(|(n, _)| !update.iter().any(|(u, _)| u == n));
        entry.meta.headers.extend(update);
        let f = facts(
            &entry.meta.headers,
            entry.meta.status,
            &p.policy,
            p.request_time,
            now,
        );
        entry.meta.response_time = now;
        entry.meta.initial_age = f.initial_age;
        entry.meta.lifetime = f.freshness.seconds();
        entry.meta.no_cache = f.cc.no_cache || f.freshness == Freshness::None;
        entry.meta.etag = f.etag;
        let expires = now
            .saturating_add(entry.meta.lifetime)
            .saturating_sub(entry.meta.initial_age);
        match env::with_store(|s| self.cache.refresh(s, slot, &entry, now, expires)) {
            Ok(true) => count(STORES, "refreshed"),
            Ok(false) => {}
            Err(err) => log::warn!("cannot refresh an entry: {err}"),
        }
        count(LOOKUPS, "revalidated");
        let age = entry.meta.initial_age;
        reply_for(entry, age, "REVALIDATED", p.client_inm.as_deref())
    }

    fn on_response(&mut self, p: Box<Pending>, resp: &mut Response<'_>, end_of_stream: bool) {
        let now = env::now_s();
        let status = resp.status().unwrap_or(0);
        let headers = resp.headers();
        let mut p = p;
        let revalidating = p.revalidating.take();
        if let Some((entry, slot)) = revalidating.clone()
            && status == 304
        {
            let reply = self.revalidated(&p, entry, slot, &headers, now);
            let pairs: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            resp.send_response(reply.status, &pairs, reply.body);
            return;
        }
        resp.set_header(X_CACHE, "MISS");
        if p.head {
            return;
        }
        let f = facts(&headers, status, &p.policy, p.request_time, now);
        let exchange = Exchange {
            status,
            response_cc: &f.cc,
            request_no_store: p.request_no_store,
            vary: &f.vary,
            set_cookie: f.set_cookie,
            store_set_cookie: p.policy.store_set_cookie,
            authorization: p.request.contains("authorization"),
            freshness: f.freshness,
            etag: f.etag.is_some(),
        };
        let too_large = first(&headers, "content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > self.max_body() as u64);
        let verdict = if too_large {
            Err(NotStored::TooLarge)
        } else {
            policy::storable(&exchange)
        };
        let full = store::full_key(&p.primary, &f.vary, &|n| p.request.get(n));
        if let Err(reason) = verdict {
            count(STORES, reason.label());
            if let Some((entry, _)) = revalidating {
                self.invalidate(&entry.meta.key);
            }
            return;
        }
        let lifetime = f.freshness.seconds();
        let entry = Entry {
            meta: Meta {
                key: full,
                status,
                headers: stored_headers(&headers, p.policy.store_set_cookie),
                response_time: now,
                initial_age: f.initial_age,
                lifetime,
                no_cache: f.cc.no_cache || f.freshness == Freshness::None,
                etag: f.etag,
            },
            body: Vec::new(),
        };
        let collecting = Collecting {
            primary: std::mem::take(&mut p.primary),
            vary: f.vary,
            entry,
            expires: now.saturating_add(lifetime).saturating_sub(f.initial_age),
        };
        if end_of_stream {
            self.commit(&collecting, now);
        } else {
            self.state = State::Collecting(Box::new(collecting));
        }
    }
}

impl HttpFilter for ResponseCacheFilter {
    const NAME: &'static str = "response-cache";
    type Config = ResponseCacheConfig;

    fn new(config: Rc<ResponseCacheConfig>) -> Self {
        let cache = Cache::new(&config.namespace, config.max_entries as usize);
        Self {
            config,
            cache,
            state: State::Idle,
        }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = Rc::clone(&self.config);
        let Some(policy) = config.policy.select_request(req).filter(|p| p.enabled) else {
            return Action::Continue;
        };
        let method = req.method().unwrap_or_default();
        let head = method == "HEAD";
        if method != "GET" && !head {
            // RFC 9111 4.4: a successful unsafe request invalidates the stored responses of
            // its URL (every variant), once its response says it succeeded.
            if !matches!(method.as_str(), "OPTIONS" | "TRACE" | "CONNECT" | "") {
                self.state = State::Unsafe(primary_key(&policy.key, req));
            }
            return Action::Continue;
        }
        if req.header("range").is_some() {
            count(LOOKUPS, "bypass");
            self.state = State::Bypass;
            return Action::Continue;
        }
        let now = env::now_s();
        let request = req.snapshot();
        let cc = if policy.request_cache_control {
            let mut cc =
                CacheControl::parse(request.get_all("cache-control").iter().map(String::as_str));
            if !request.contains("cache-control")
                && request
                    .get("pragma")
                    .is_some_and(|p| p.to_ascii_lowercase().contains("no-cache"))
            {
                cc.no_cache = true;
            }
            cc
        } else {
            CacheControl::default()
        };
        let primary = primary_key(&policy.key, req);
        let found = env::with_store(|s| self.cache.lookup(s, &primary, &|n| request.get(n)))
            .unwrap_or_else(|err| {
                log::warn!("cannot read the cache: {err}");
                None
            });
        let client_inm = request.get("if-none-match");
        let mut revalidating = None;
        if let Some((entry, slot)) = found {
            let age = policy::current_age(entry.meta.initial_age, entry.meta.response_time, now);
            let fresh = !entry.meta.no_cache
                && age < entry.meta.lifetime
                && !cc.no_cache
                && cc.max_age.is_none_or(|max| age <= max);
            if fresh {
                count(LOOKUPS, "hit");
                let reply = reply_for(entry, age, "HIT", client_inm.as_deref());
                let pairs: Vec<(&str, &str)> = reply
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                req.send_response(reply.status, &pairs, reply.body);
                self.state = State::Idle;
                return Action::Continue;
            }
            if let Some(etag) = entry.meta.etag.clone()
                && !cc.only_if_cached
            {
                req.set_header("if-none-match", &etag);
                req.remove_header("if-modified-since");
                revalidating = Some((entry, slot));
            }
        }
        if cc.only_if_cached {
            count(LOOKUPS, "miss");
            req.send_response(504, &[(X_CACHE, "MISS")], "");
            return Action::Continue;
        }
        if revalidating.is_none() {
            count(LOOKUPS, "miss");
        }
        self.state = State::Pending(Box::new(Pending {
            policy: policy.clone(),
            primary,
            request,
            request_time: now,
            head,
            request_no_store: cc.no_store,
            client_inm,
            revalidating,
        }));
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>, end_of_stream: bool) -> Action {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Pending(p) => self.on_response(p, resp, end_of_stream),
            State::Bypass => resp.set_header(X_CACHE, "BYPASS"),
            State::Unsafe(primary) => {
                if resp.status().is_some_and(|s| (200..400).contains(&s)) {
                    match env::with_store(|s| self.cache.invalidate_primary(s, &primary)) {
                        Ok(0) => {}
                        Ok(n) => {
                            log::debug!("{n} entries of {primary:?} invalidated");
                            count(STORES, "invalidated");
                        }
                        Err(err) => log::warn!("cannot invalidate entries: {err}"),
                    }
                }
            }
            State::Idle | State::Collecting(_) => {}
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body: &mut Body<'_>, end_of_stream: bool) -> Action {
        let max = self.max_body();
        if let State::Collecting(c) = &mut self.state {
            if c.entry.body.len() + body.len() > max {
                count(STORES, NotStored::TooLarge.label());
                self.state = State::Idle;
                return Action::Continue;
            }
            c.entry.body.extend_from_slice(&body.bytes());
            if end_of_stream
                && let State::Collecting(c) = std::mem::replace(&mut self.state, State::Idle)
            {
                self.commit(&c, env::now_s());
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(ResponseCacheFilter, [response_headers, response_body]);
