//! Per-route rules: one filter deployment, configured per route.
//!
//! [`Routed<C>`] wraps any configuration type `C` (a whole filter config, or the part of it that
//! varies by route) as
//!
//! ```json
//! {
//!   "default": { ...C... },
//!   "routes": [
//!     { "match": { "route": "admin-route" },                     "config": { ...C... } },
//!     { "match": { "host": "*.internal.example.com" },           "config": { ...C... } },
//!     { "match": { "host": "api.example.com", "path_prefix": "/v2/" }, "config": { ...C... } }
//!   ]
//! }
//! ```
//!
//! [`Routed::select`] picks the config of the **first** rule whose conditions all hold, else
//! `default` (`None` when there is no default: the filter decides what "no rule" means; an
//! authentication filter should fail closed). A rule *selects* a complete `C`; it does not merge
//! with the default, so what a route gets is exactly what its rule says.
//!
//! Conditions (a rule needs at least one):
//! - `route`: the Envoy route's `name` (the `xds.route_name` property), exact;
//! - `host`: the `:authority` without its port, case-insensitive, exact (`api.example.com`) or a
//!   `*.` suffix (`*.example.com` matches `a.example.com` and `a.b.example.com`, not
//!   `example.com`);
//! - `path_prefix`: a prefix of `:path` without its query, case-sensitive, like Envoy's route
//!   `prefix` (so `/admin` also matches `/administrator`; write `/admin/` for the folder).
//!
//! Matching on `route` is the most robust choice: it reuses Envoy's own route match, after its
//! path normalisation. When matching on `path_prefix`, have Envoy normalise paths
//! (`normalize_path: true`, `merge_slashes: true` on the HTTP connection manager), otherwise
//! `//admin` or `/%61dmin` does not start with `/admin`.
//!
//! ```
//! use serde::Deserialize;
//! use tollgate_sdk::routes::{RouteInfo, Routed};
//!
//! #[derive(Debug, Deserialize, PartialEq)]
//! struct Policy {
//!     allow: Vec<String>,
//! }
//! impl tollgate_sdk::FilterConfig for Policy {}
//!
//! let routed: Routed<Policy> = tollgate_sdk::config::parse(br#"{
//!   "default": {"allow": ["alice", "bob"]},
//!   "routes": [{"match": {"path_prefix": "/admin/"}, "config": {"allow": ["alice"]}}]
//! }"#)?;
//! let admin = RouteInfo::new(None, Some("shop.example.com"), Some("/admin/users?page=1"));
//! assert_eq!(routed.select(&admin).map(|p| p.allow.len()), Some(1));
//! let home = RouteInfo::new(None, Some("shop.example.com"), Some("/"));
//! assert_eq!(routed.select(&home).map(|p| p.allow.len()), Some(2));
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```

use std::cell::OnceCell;

use serde::Deserialize;

use crate::config::{ConfigError, FilterConfig};
use crate::http::Request;

/// A configuration `C` chosen per route: see the [module documentation](self).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "C: serde::de::DeserializeOwned")
)]
pub struct Routed<C> {
    /// The config for requests no rule matches.
    #[serde(default)]
    pub default: Option<C>,
    /// The rules, tried in order.
    #[serde(default)]
    pub routes: Vec<RouteRule<C>>,
}

impl<C> Default for Routed<C> {
    fn default() -> Self {
        Self {
            default: None,
            routes: Vec::new(),
        }
    }
}

/// One rule: when `match` holds, `config` applies.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "C: serde::de::DeserializeOwned")
)]
pub struct RouteRule<C> {
    /// The conditions, all of which must hold.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// The config for matching requests.
    pub config: C,
}

/// The conditions of a [`RouteRule`]; every one given must hold.
///
/// ```
/// use tollgate_sdk::routes::{RouteInfo, RouteMatch};
/// let m = RouteMatch { host: Some("*.example.com".into()), ..RouteMatch::default() };
/// assert!(m.matches(&RouteInfo::new(None, Some("API.example.com:443"), Some("/"))));
/// assert!(!m.matches(&RouteInfo::new(None, Some("example.com"), Some("/"))));
/// ```
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// The Envoy route name (`xds.route_name` property), exact.
    #[serde(default)]
    pub route: Option<String>,
    /// `:authority` without port: exact, or `*.suffix`; case-insensitive.
    #[serde(default)]
    pub host: Option<String>,
    /// A prefix of the path (query excluded), case-sensitive.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl RouteMatch {
    /// Whether every condition holds for `info`.
    pub fn matches(&self, info: &RouteInfo) -> bool {
        self.holds(info)
    }

    /// [`RouteMatch::matches`] for the request being filtered: each fact read from the host only
    /// when a condition needs it, and at most once for `route`'s request.
    pub fn holds_for(&self, route: &RequestRoute<'_, '_>) -> bool {
        self.holds(route)
    }

    /// Whether every condition holds; each fact is only asked for when a condition needs it.
    fn holds(&self, facts: &impl RouteFacts) -> bool {
        if let Some(route) = &self.route
            && facts.route_name() != Some(route.as_str())
        {
            return false;
        }
        if let Some(pattern) = &self.host {
            let Some(host) = facts.host() else {
                return false;
            };
            if !host_matches(pattern, host) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let Some(path) = facts.path() else {
                return false;
            };
            if !path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        true
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.route.is_none() && self.host.is_none() && self.path_prefix.is_none() {
            return Err(ConfigError::at(
                at,
                "a rule needs at least one of route, host, path_prefix",
            ));
        }
        if let Some(host) = &self.host {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.is_empty() || bare.contains('*') || bare.contains(':') {
                return Err(ConfigError::at(
                    format!("{at}.host"),
                    format!("{host:?} is not a host name or a *.suffix pattern (no port)"),
                ));
            }
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(ConfigError::at(
                format!("{at}.path_prefix"),
                format!("{prefix:?} must start with /"),
            ));
        }
        Ok(())
    }
}

/// `host` (maybe with a port) against an exact or `*.suffix` pattern, case-insensitively.
fn host_matches(pattern: &str, host: &str) -> bool {
    // ASCII case-insensitive comparisons in place: no lowercased copies per request.
    let host = strip_port(host).as_bytes();
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let suffix = suffix.as_bytes();
            host.len() > suffix.len() + 1
                && host.get(host.len() - suffix.len() - 1) == Some(&b'.')
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        }
        None => host.eq_ignore_ascii_case(pattern.as_bytes()),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// What a rule is matched against: the route name, host and path of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteInfo {
    /// Envoy's route name, when the route has one.
    pub route_name: Option<String>,
    /// The `:authority` header.
    pub host: Option<String>,
    /// The `:path` without its query string.
    pub path: Option<String>,
}

impl RouteInfo {
    /// From parts (the query, if any, is cut from `path`).
    ///
    /// ```
    /// let info = tollgate_sdk::routes::RouteInfo::new(Some("r1"), Some("a.com"), Some("/x?y=1"));
    /// assert_eq!(info.path.as_deref(), Some("/x"));
    /// ```
    pub fn new(route_name: Option<&str>, host: Option<&str>, path: Option<&str>) -> Self {
        Self {
            route_name: route_name.map(str::to_string),
            host: host.map(str::to_string),
            path: path.map(|p| path_only(p).to_string()),
        }
    }

    /// The route of the request being filtered: `:authority` and `:path` from `req`, the route
    /// name from the host's `xds.route_name` property (natively: from [`mock::set_route_name`]).
    ///
    /// ```
    /// use tollgate_sdk::{HeaderList, Request, routes::{RouteInfo, mock}};
    /// mock::set_route_name(Some("api"));
    /// let mut headers = HeaderList::from([(":authority", "a.com"), (":path", "/v1")]);
    /// let info = RouteInfo::of(&Request::new(&mut headers));
    /// assert_eq!(info, RouteInfo::new(Some("api"), Some("a.com"), Some("/v1")));
    /// ```
    pub fn of(req: &Request<'_>) -> Self {
        let route = route_name();
        Self::new(
            route.as_deref(),
            req.authority().as_deref(),
            req.path().as_deref(),
        )
    }
}

/// What conditions are checked against: a [`RouteInfo`], or the request itself, read lazily.
trait RouteFacts {
    fn route_name(&self) -> Option<&str>;
    fn host(&self) -> Option<&str>;
    fn path(&self) -> Option<&str>;
}

impl RouteFacts for RouteInfo {
    fn route_name(&self) -> Option<&str> {
        self.route_name.as_deref()
    }
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
}

/// The route facts of the request being filtered, each read from the host the first time a
/// condition needs it and then kept (the route name is a property read, the host and path header
/// reads): rules that only match on the path never pay for the route name, and a filter that
/// matches several rule sets against one request makes one [`RequestRoute`] and reads each fact
/// once (each value the host returns costs a call into the guest's allocator too:
/// `bench/envoy-probes`). It borrows the request: facts read before a change of `:path` or
/// `:authority` through it are not read again.
///
/// ```
/// use tollgate_sdk::{HeaderList, Request, routes::{RequestRoute, RouteMatch}};
/// let mut headers = HeaderList::from([(":authority", "a.com"), (":path", "/v1/x?y")]);
/// let req = Request::new(&mut headers);
/// let route = RequestRoute::new(&req);
/// let v1 = RouteMatch { path_prefix: Some("/v1/".into()), ..RouteMatch::default() };
/// let other = RouteMatch { host: Some("b.com".into()), ..RouteMatch::default() };
/// assert!(v1.holds_for(&route) && !other.holds_for(&route));
/// assert_eq!(route.path(), Some("/v1/x"));
/// assert_eq!(route.full_path(), Some("/v1/x?y"));
/// ```
pub struct RequestRoute<'r, 'a> {
    req: &'r Request<'a>,
    route_name: OnceCell<Option<String>>,
    host: OnceCell<Option<String>>,
    path: OnceCell<Option<String>>,
}

impl<'r, 'a> RequestRoute<'r, 'a> {
    /// Nothing read yet.
    pub fn new(req: &'r Request<'a>) -> Self {
        Self {
            req,
            route_name: OnceCell::new(),
            host: OnceCell::new(),
            path: OnceCell::new(),
        }
    }

    /// The Envoy route name (`xds.route_name`), read once.
    pub fn route_name(&self) -> Option<&str> {
        RouteFacts::route_name(self)
    }

    /// `:authority`, read once.
    pub fn host(&self) -> Option<&str> {
        RouteFacts::host(self)
    }

    /// `:path` without its query or fragment, read once.
    pub fn path(&self) -> Option<&str> {
        RouteFacts::path(self)
    }

    /// `:path` as the request has it (query and fragment included), read once.
    pub fn full_path(&self) -> Option<&str> {
        self.path.get_or_init(|| self.req.path()).as_deref()
    }
}

impl RouteFacts for RequestRoute<'_, '_> {
    fn route_name(&self) -> Option<&str> {
        self.route_name.get_or_init(route_name).as_deref()
    }
    fn host(&self) -> Option<&str> {
        self.host.get_or_init(|| self.req.authority()).as_deref()
    }
    fn path(&self) -> Option<&str> {
        self.full_path().map(path_only)
    }
}

/// A `:path` without its query or fragment: what route rules and path-keyed labels compare.
///
/// ```
/// assert_eq!(tollgate_sdk::routes::path_only("/a/b?x=1#f"), "/a/b");
/// assert_eq!(tollgate_sdk::routes::path_only("/a#f?x"), "/a");
/// ```
pub fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The facts of a request whose headers were already read in one host call
/// ([`Request::headers`]): the host and path come from those pairs, and only the route name is
/// read from the host (when a rule needs it).
struct PairsRoute<'h> {
    headers: &'h [(String, String)],
    route_name: OnceCell<Option<String>>,
}

impl PairsRoute<'_> {
    fn first(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl RouteFacts for PairsRoute<'_> {
    fn route_name(&self) -> Option<&str> {
        self.route_name.get_or_init(route_name).as_deref()
    }
    fn host(&self) -> Option<&str> {
        self.first(":authority")
    }
    fn path(&self) -> Option<&str> {
        self.first(":path").map(path_only)
    }
}

impl<C> Routed<C> {
    /// The config of the first matching rule, else the default.
    pub fn select(&self, info: &RouteInfo) -> Option<&C> {
        self.select_facts(info)
    }

    /// The config of the first rule whose conditions hold for `facts`, else the default. Each
    /// fact is only asked for when a condition needs it (none when there are no rules).
    fn select_facts(&self, facts: &impl RouteFacts) -> Option<&C> {
        self.routes
            .iter()
            .find(|rule| rule.matcher.holds(facts))
            .map(|rule| &rule.config)
            .or(self.default.as_ref())
    }

    /// [`Routed::select`] for the request being filtered, the same answer as
    /// `select(&RouteInfo::of(req))`, but the route name, host and path are only read when a
    /// rule's condition needs them (and no route is read at all when there are no rules).
    ///
    /// ```
    /// use tollgate_sdk::{HeaderList, Request, routes::Routed};
    /// let routed: Routed<u32> = serde_json::from_str(r#"{
    ///   "default": 1, "routes": [{"match": {"path_prefix": "/admin/"}, "config": 2}]
    /// }"#)?;
    /// let mut headers = HeaderList::from([(":path", "/admin/x?y=1")]);
    /// assert_eq!(routed.select_request(&Request::new(&mut headers)), Some(&2));
    /// let mut headers = HeaderList::from([(":path", "/admin?x=/admin/")]);
    /// assert_eq!(routed.select_request(&Request::new(&mut headers)), Some(&1));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn select_request(&self, req: &Request<'_>) -> Option<&C> {
        self.select_facts(&RequestRoute::new(req))
    }

    /// [`Routed::select_request`] with facts the caller keeps for the request (read at most once
    /// across every rule set it selects from).
    pub fn select_route(&self, route: &RequestRoute<'_, '_>) -> Option<&C> {
        self.select_facts(route)
    }

    /// [`Routed::select_request`] for a request whose headers the filter has already read
    /// (`headers`, from [`Request::headers`]): the same answer, with the host and path taken
    /// from those pairs instead of two more host calls (each value the host returns costs a call
    /// into the guest's allocator too: `bench/envoy-probes`).
    pub fn select_headers(&self, headers: &[(String, String)]) -> Option<&C> {
        self.select_facts(&PairsRoute {
            headers,
            route_name: OnceCell::new(),
        })
    }

    /// Every config (default first), e.g. for cross-checks in a filter's `validate`.
    pub fn configs(&self) -> impl Iterator<Item = (String, &C)> {
        self.default
            .iter()
            .map(|c| ("default".to_string(), c))
            .chain(
                self.routes
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| (format!("routes[{i}].config"), &rule.config)),
            )
    }

    /// Checks the rules' conditions and every config, with errors naming `routes[i]...`; call it
    /// from the `validate` of a config that holds a `Routed` (prefix `at`, e.g. `"rules"`).
    pub fn validate_at(&self, at: &str) -> Result<(), ConfigError>
    where
        C: FilterConfig,
    {
        let join = |rest: &str| {
            if at.is_empty() {
                rest.to_string()
            } else {
                format!("{at}.{rest}")
            }
        };
        for (i, rule) in self.routes.iter().enumerate() {
            rule.matcher
                .validate(&join(&format!("routes[{i}].match")))?;
        }
        for (path, config) in self.configs() {
            config.validate().map_err(|err| {
                let inner = if err.path().is_empty() {
                    join(&path)
                } else {
                    join(&format!("{path}.{}", err.path()))
                };
                ConfigError::at(inner, err.message())
            })?;
        }
        Ok(())
    }
}

impl<C: FilterConfig> FilterConfig for Routed<C> {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("")
    }
}

#[cfg(target_family = "wasm")]
fn route_name() -> Option<String> {
    // `xds.route_name` is the matched route's own name, empty for a route without one: Envoy
    // 1.40 answers it whenever a route matched. Only a host that does not know it (`NotFound`)
    // is asked for `route_name`, the stream info's (which Envoy fills in later anyway).
    match crate::abi::property_found(&["xds", "route_name"]) {
        Ok(Some(name)) => return (!name.is_empty()).then(|| crate::headers::text(&name)),
        Ok(None) => {}
        Err(status) => log::debug!("cannot read the route name: {status:?}"),
    }
    match crate::abi::get_property(&["route_name"]) {
        Ok(name) => name.map(|name| crate::headers::text(&name)),
        Err(status) => {
            log::debug!("cannot read the route name: {status:?}");
            None
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn route_name() -> Option<String> {
    mock::route_name()
}

/// The route name [`RouteInfo::of`] sees outside the proxy (native tests), per thread.
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::RefCell;

    thread_local! {
        static ROUTE_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Sets (or clears) the route name of the "current request".
    pub fn set_route_name(name: Option<&str>) {
        ROUTE_NAME.set(name.map(str::to_string));
    }

    pub(super) fn route_name() -> Option<String> {
        ROUTE_NAME.with_borrow(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        n: u32,
    }
    impl FilterConfig for Cfg {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.n == 0 {
                return Err(ConfigError::at("n", "must not be 0"));
            }
            Ok(())
        }
    }

    fn routed(json: &str) -> Result<Routed<Cfg>, ConfigError> {
        crate::config::parse(json.as_bytes())
    }

    #[test]
    fn first_match_wins_then_default() -> Result<(), ConfigError> {
        let r = routed(
            r#"{"default": {"n": 1}, "routes": [
                {"match": {"route": "r"}, "config": {"n": 2}},
                {"match": {"host": "*.ex.com", "path_prefix": "/a"}, "config": {"n": 3}},
                {"match": {"host": "ex.com"}, "config": {"n": 4}}
            ]}"#,
        )?;
        let n = |route: Option<&str>, host: &str, path: &str| {
            r.select(&RouteInfo::new(route, Some(host), Some(path)))
                .map(|c| c.n)
        };
        assert_eq!(n(Some("r"), "x.ex.com", "/a"), Some(2));
        assert_eq!(n(None, "x.EX.com:8443", "/abc?q"), Some(3));
        assert_eq!(n(None, "x.ex.com", "/b"), Some(1));
        assert_eq!(n(None, "ex.com", "/a"), Some(4));
        assert_eq!(n(None, "ex.com:80", "/"), Some(4));
        assert_eq!(n(None, "notex.com", "/a"), Some(1));
        assert_eq!(n(None, "x.ex.com", "/?/a"), Some(1));
        Ok(())
    }

    #[test]
    fn select_request_and_select_headers_agree_with_select_on_route_info() -> Result<(), ConfigError>
    {
        use crate::{HeaderList, HeaderMap, Request};
        let r = routed(
            r#"{"default": {"n": 1}, "routes": [
                {"match": {"route": "r"}, "config": {"n": 2}},
                {"match": {"host": "*.ex.com", "path_prefix": "/a"}, "config": {"n": 3}},
                {"match": {"host": "Ex.Com"}, "config": {"n": 4}},
                {"match": {"path_prefix": "/p/"}, "config": {"n": 5}}
            ]}"#,
        )?;
        let cases: [(Option<&str>, Option<&str>, Option<&str>); 12] = [
            (Some("r"), Some("x.ex.com"), Some("/a")),
            (None, Some("x.EX.com:8443"), Some("/abc?q")),
            (None, Some("x.ex.com"), Some("/b")),
            (None, Some("EX.COM"), Some("/a")),
            (None, Some("ex.com:80"), Some("/")),
            (None, Some("notex.com"), Some("/a")),
            (None, Some(".ex.com"), Some("/a")),
            (None, Some("x.ex.com"), Some("/?/a")),
            (None, Some("[::1]:80"), Some("/p/x#/a")),
            (None, None, Some("/p/")),
            (None, Some("x.ex.com"), None),
            (Some("other"), None, None),
        ];
        for (route, host, path) in cases {
            mock::set_route_name(route);
            let mut headers = HeaderList::new();
            if let Some(host) = host {
                headers.add(":authority", host);
            }
            if let Some(path) = path {
                headers.add(":path", path);
            }
            let req = Request::new(&mut headers);
            assert_eq!(
                r.select_request(&req).map(|c| c.n),
                r.select(&RouteInfo::of(&req)).map(|c| c.n),
                "{route:?} {host:?} {path:?}"
            );
            assert_eq!(
                r.select_headers(&req.headers()).map(|c| c.n),
                r.select(&RouteInfo::of(&req)).map(|c| c.n),
                "select_headers: {route:?} {host:?} {path:?}"
            );
        }
        mock::set_route_name(None);
        Ok(())
    }

    #[test]
    fn no_default_and_no_match_is_none() -> Result<(), ConfigError> {
        let r = routed(r#"{"routes": [{"match": {"route": "r"}, "config": {"n": 2}}]}"#)?;
        assert_eq!(r.select(&RouteInfo::new(None, Some("a"), Some("/"))), None);
        assert_eq!(r.select(&RouteInfo::default()), None);
        Ok(())
    }

    #[test]
    fn bad_rules_are_refused_with_their_path() {
        let err = |json: &str| match routed(json) {
            Ok(_) => format!("accepted: {json}"),
            Err(err) => err.to_string(),
        };
        assert_eq!(
            err(r#"{"routes": [{"match": {}, "config": {"n": 2}}]}"#),
            "bad configuration at routes[0].match: a rule needs at least one of route, host, path_prefix"
        );
        assert!(
            err(r#"{"routes": [{"match": {"path_prefix": "admin"}, "config": {"n": 2}}]}"#)
                .starts_with("bad configuration at routes[0].match.path_prefix:")
        );
        assert!(
            err(r#"{"routes": [{"match": {"host": "a.com:80"}, "config": {"n": 2}}]}"#)
                .starts_with("bad configuration at routes[0].match.host:")
        );
        assert!(
            err(r#"{"routes": [{"match": {"host": "*"}, "config": {"n": 2}}]}"#)
                .starts_with("bad configuration at routes[0].match.host:")
        );
        assert_eq!(
            err(
                r#"{"default": {"n": 1}, "routes": [{"match": {"route": "r"}, "config": {"n": 0}}]}"#
            ),
            "bad configuration at routes[0].config.n: must not be 0"
        );
        assert!(
            err(r#"{"routes": [{"match": {"route": "r"}, "config": {"n": 1, "x": 1}}]}"#)
                .contains("routes[0].config")
        );
        assert!(err(r#"{"rules": []}"#).contains("unknown field"));
    }

    #[test]
    fn ipv6_authority_keeps_its_brackets() {
        assert!(host_matches("[::1]", "[::1]:8080"));
        assert!(!host_matches("*.com", ".com"));
    }
}
