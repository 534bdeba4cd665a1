//! The `headers` filter's configuration (see `filters/headers/README.md` for the reference).
//!
//! Every type refuses unknown keys, and names and values are checked while parsing, so an error
//! names the exact field (`request.set[0].name: ...`). Semantic checks that span fields live in
//! [`HeadersConfig::validate`](tollgate_sdk::FilterConfig::validate).

use std::cell::OnceCell;
use std::fmt;

use serde::{Deserialize, Deserializer};
use tollgate_sdk::headers::{HeaderError, check_name};
use tollgate_sdk::{ConfigError, FilterConfig, HeaderName, HeaderSnapshot};

use crate::template::{OnMissing, RequestHeaders, Template};

/// The whole configuration. An empty configuration is valid and changes nothing.
///
/// ```
/// let config = tollgate_sdk::config::parse::<tollgate_headers::HeadersConfig>(br#"{
///     "request": {"set": [{"name": "x-tollgate", "value": "demo"}]},
///     "response": {"remove": ["server"]}
/// }"#)?;
/// assert_eq!(config.request.set.len(), 1);
/// # Ok::<(), tollgate_sdk::ConfigError>(())
/// ```
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersConfig {
    /// Applied to every request.
    pub request: Mutations,
    /// Applied to every response.
    pub response: Mutations,
    /// Applied only when their conditions hold, after `request`/`response`, in order.
    pub rules: Vec<Rule>,
    #[serde(skip)]
    reads_request: OnceCell<bool>,
    #[serde(skip)]
    read_names: OnceCell<Vec<HeaderName>>,
    #[serde(skip)]
    prefix_starts: OnceCell<PrefixStarts>,
    #[serde(skip)]
    read_lengths: OnceCell<u64>,
}

/// One bit per header name length (0-62; longer names share bit 63).
#[inline]
pub(crate) fn length_bit(len: usize) -> u64 {
    1u64 << len.min(63)
}

/// The bytes a header name may start with for one of a set of prefixes to match it (both
/// cases of a letter), one bit per byte value ([`HeadersConfig::prefix_starts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStarts([u64; 4]);

impl PrefixStarts {
    /// Whether a prefix may match header `name`: false rules it out, true means
    /// [`NamePrefix::matches_bytes`] decides.
    #[inline]
    pub fn may_match(&self, name: &[u8]) -> bool {
        name.first().is_some_and(|b| {
            self.0
                .get(usize::from(b >> 6))
                .is_some_and(|word| word >> (b & 63) & 1 != 0)
        })
    }
}

impl HeadersConfig {
    /// Whether applying this configuration needs the request headers (conditions or
    /// `%REQ(...)%` references), i.e. whether the filter must take a snapshot of them.
    pub fn reads_request(&self) -> bool {
        *self.reads_request.get_or_init(|| {
            !self.rules.is_empty()
                || self.request.has_references()
                || self.response.has_references()
        })
    }

    /// The request headers that conditions and `%REQ(...)%` references read (computed once).
    ///
    /// ```
    /// let config = tollgate_sdk::config::parse::<tollgate_headers::HeadersConfig>(br#"{
    ///     "response": {"set": [{"name": "x-copy", "value": "%REQ(x-user)%"}]},
    ///     "rules": [{"when": [{"present": "authorization"}], "request": {"remove": ["x-a"]}}]
    /// }"#)?;
    /// let names: Vec<&str> = config.read_names().iter().map(|n| n.as_str()).collect();
    /// assert_eq!(names, ["authorization", "x-user"]);
    /// # Ok::<(), tollgate_sdk::ConfigError>(())
    /// ```
    pub fn read_names(&self) -> &[HeaderName] {
        self.read_names.get_or_init(|| {
            let mut names: Vec<HeaderName> = Vec::new();
            let conditions = self.rules.iter().flat_map(|r| &r.when).map(|c| match c {
                Condition::Present(name) | Condition::Absent(name) => name,
                Condition::Equals { header, .. } => header,
            });
            let mutations = [&self.request, &self.response].into_iter().chain(
                self.rules
                    .iter()
                    .flat_map(|r| [&r.request, &r.response].into_iter()),
            );
            let references = mutations
                .flat_map(|m| m.entries())
                .flat_map(|e| e.value.references());
            for name in conditions.chain(references) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            names
        })
    }

    /// The lengths of [`HeadersConfig::read_names`], one bit each (lengths past 62 share bit
    /// 63; computed once): the walk over the request rules out most names with one test.
    ///
    /// ```
    /// let config = tollgate_sdk::config::parse::<tollgate_headers::HeadersConfig>(br#"{
    ///     "rules": [{"when": [{"present": "authorization"}], "request": {"remove": ["x-a"]}}]
    /// }"#)?;
    /// assert_eq!(config.read_lengths(), 1 << 13);
    /// # Ok::<(), tollgate_sdk::ConfigError>(())
    /// ```
    pub fn read_lengths(&self) -> u64 {
        *self.read_lengths.get_or_init(|| {
            self.read_names()
                .iter()
                .fold(0, |mask, n| mask | length_bit(n.as_str().len()))
        })
    }

    /// The first bytes of the top-level `request.remove_prefix` prefixes (computed once): the
    /// walk over the request rules out most names with one test.
    ///
    /// ```
    /// let config = tollgate_sdk::config::parse::<tollgate_headers::HeadersConfig>(
    ///     br#"{"request": {"remove_prefix": ["x-debug-"]}}"#,
    /// )?;
    /// let starts = config.prefix_starts();
    /// assert!(starts.may_match(b"X-Debug-A") && starts.may_match(b"x-request-id"));
    /// assert!(!starts.may_match(b"accept") && !starts.may_match(b""));
    /// # Ok::<(), tollgate_sdk::ConfigError>(())
    /// ```
    pub fn prefix_starts(&self) -> PrefixStarts {
        *self.prefix_starts.get_or_init(|| {
            let mut starts = PrefixStarts([0; 4]);
            let firsts = self
                .request
                .remove_prefix
                .iter()
                .filter_map(|p| p.0.as_bytes().first().copied());
            for byte in firsts {
                for b in [byte.to_ascii_lowercase(), byte.to_ascii_uppercase()] {
                    if let Some(word) = starts.0.get_mut(usize::from(b >> 6)) {
                        *word |= 1 << (b & 63);
                    }
                }
            }
            starts
        })
    }

    /// What the request phase keeps of the request headers `pairs`: the headers this
    /// configuration reads ([`HeadersConfig::read_names`]), nothing else.
    ///
    /// ```
    /// let config = tollgate_sdk::config::parse::<tollgate_headers::HeadersConfig>(br#"{
    ///     "request": {"set": [{"name": "x-copy", "value": "%REQ(x-user)%"}]}
    /// }"#)?;
    /// let pairs = vec![("x-user".to_string(), "ada".to_string()), ("accept".to_string(), "*/*".to_string())];
    /// let snapshot = config.snapshot_of(&pairs);
    /// assert_eq!(snapshot.get("x-user").as_deref(), Some("ada"));
    /// assert!(!snapshot.contains("accept"));
    /// # Ok::<(), tollgate_sdk::ConfigError>(())
    /// ```
    pub fn snapshot_of(&self, pairs: &[(String, String)]) -> HeaderSnapshot {
        let names = self.read_names();
        pairs
            .iter()
            .filter(|(n, _)| names.iter().any(|x| x.as_str().eq_ignore_ascii_case(n)))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// Indices of the rules whose conditions all hold for `request`.
    pub fn matching_rules<R: RequestHeaders>(&self, request: &R) -> Vec<usize> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.matches(request))
            .map(|(index, _)| index)
            .collect()
    }
}

impl FilterConfig for HeadersConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.request.validate("request")?;
        self.response.validate("response")?;
        for (index, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{index}]");
            if rule.when.is_empty() {
                return Err(ConfigError::at(
                    format!("{at}.when"),
                    "a rule needs at least one condition (put unconditional changes in the top-level `request` and `response`)",
                ));
            }
            if rule.request.is_empty() && rule.response.is_empty() {
                return Err(ConfigError::at(
                    at,
                    "the rule changes nothing: give it `request` or `response` changes",
                ));
            }
            rule.request.validate(&format!("{at}.request"))?;
            rule.response.validate(&format!("{at}.response"))?;
        }
        Ok(())
    }
}

/// Changes to one header map, applied in this order: `remove`, `remove_prefix`, `set`,
/// `append`, `add_if_absent`, `overwrite_if_exists` (each list in its own order).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mutations {
    /// Headers removed by name.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<tollgate_sdk::HeaderName>"))]
    pub remove: Vec<TargetName>,
    /// Headers removed when their name starts with one of these prefixes.
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub remove_prefix: Vec<NamePrefix>,
    /// Replace every value of the header, or add it when absent.
    pub set: Vec<HeaderEntry>,
    /// Add one more value, keeping the existing ones (adds the header when absent).
    pub append: Vec<HeaderEntry>,
    /// Add the header only when it is absent.
    pub add_if_absent: Vec<HeaderEntry>,
    /// Replace the header's values only when it is present.
    pub overwrite_if_exists: Vec<HeaderEntry>,
}

impl Mutations {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.remove_prefix.is_empty() && self.entries().next().is_none()
    }

    fn entries(&self) -> impl Iterator<Item = &HeaderEntry> {
        self.set
            .iter()
            .chain(&self.append)
            .chain(&self.add_if_absent)
            .chain(&self.overwrite_if_exists)
    }

    fn has_references(&self) -> bool {
        self.entries()
            .any(|e| e.value.references().next().is_some())
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        for (index, entry) in self.set.iter().enumerate() {
            if let Some(first) = self.set[..index].iter().position(|e| e.name == entry.name) {
                return Err(ConfigError::at(
                    format!("{at}.set[{index}].name"),
                    format!(
                        "`{}` is already set by {at}.set[{first}]; the second would silently win",
                        entry.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// One header to write: name, value template and what to do when the value references an
/// absent request header.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEntry {
    /// The header written.
    #[cfg_attr(feature = "schema", schemars(with = "tollgate_sdk::HeaderName"))]
    pub name: TargetName,
    /// Its value; may reference request headers with `%REQ(name)%`, `%%` is a literal `%`.
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub value: Template,
    /// When a referenced request header is absent: `skip` (default) or `empty`.
    #[serde(default)]
    pub on_missing: OnMissing,
}

/// A conditional group of changes.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Conditions on the request headers (as they reached the filter); all must hold.
    pub when: Vec<Condition>,
    /// Request changes made when the rule matches.
    #[serde(default)]
    pub request: Mutations,
    /// Response changes made when the rule matched the request.
    #[serde(default)]
    pub response: Mutations,
}

impl Rule {
    /// Whether every condition holds for `request`.
    pub fn matches<R: RequestHeaders>(&self, request: &R) -> bool {
        self.when.iter().all(|c| c.holds(request))
    }
}

/// A condition on the request headers.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// `{"present": "authorization"}`: the header is present (any value, even empty).
    Present(HeaderName),
    /// `{"absent": "x-request-id"}`: the header is absent.
    Absent(HeaderName),
    /// `{"equals": {"header": "x-env", "value": "staging"}}`: one of the header's values is
    /// exactly `value` (case-sensitive).
    Equals {
        /// The header compared; pseudo-headers such as `:method` are allowed.
        header: HeaderName,
        /// The value it must have.
        value: String,
    },
}

impl Condition {
    /// Whether the condition holds for `request`.
    ///
    /// ```
    /// use tollgate_headers::config::Condition;
    /// use tollgate_sdk::{HeaderName, HeaderSnapshot};
    ///
    /// let request: HeaderSnapshot = [(":method", "GET")].into_iter().collect();
    /// let get = Condition::Equals { header: HeaderName::new(":method")?, value: "GET".into() };
    /// assert!(get.holds(&request));
    /// assert!(Condition::Absent(HeaderName::new("authorization")?).holds(&request));
    /// # Ok::<(), tollgate_sdk::headers::HeaderError>(())
    /// ```
    pub fn holds<R: RequestHeaders>(&self, request: &R) -> bool {
        match self {
            Condition::Present(name) => request.contains_name(name.as_str()),
            Condition::Absent(name) => !request.contains_name(name.as_str()),
            Condition::Equals { header, value } => {
                request.values(header.as_str()).any(|v| v == value.as_str())
            }
        }
    }
}

/// Why a header cannot be the target of a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a header name at all.
    #[error(transparent)]
    Invalid(#[from] HeaderError),
    /// A pseudo-header (`:path`, `:authority`...).
    #[error(
        "{0:?} is a pseudo-header, which this filter does not change (rewrite paths and hosts in the route configuration)"
    )]
    Pseudo(String),
    /// `host`, which proxies carry as the `:authority` pseudo-header.
    #[error(
        "\"host\" is carried as the :authority pseudo-header, which this filter does not change"
    )]
    Host,
}

/// A header name that may be changed: a valid, regular (non-pseudo) name other than `host`,
/// lowercased.
///
/// ```
/// use tollgate_headers::config::TargetName;
/// assert_eq!(TargetName::new("X-Tollgate").map(|n| n.to_string()), Ok("x-tollgate".to_string()));
/// assert!(TargetName::new(":path").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetName(HeaderName);

impl TargetName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, TargetError> {
        if name.starts_with(':') {
            return Err(TargetError::Pseudo(name.to_string()));
        }
        let name = HeaderName::new(name)?;
        if name.as_str() == "host" {
            return Err(TargetError::Host);
        }
        Ok(Self(name))
    }

    /// The lowercased name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        TargetName::new(&raw).map_err(serde::de::Error::custom)
    }
}

/// A header name prefix for `remove_prefix`: non-empty, token characters only, lowercased.
///
/// ```
/// use tollgate_headers::config::NamePrefix;
/// assert!(NamePrefix::new("X-Internal-").is_ok_and(|p| p.matches("x-internal-debug")));
/// assert!(NamePrefix::new(":").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePrefix(String);

impl NamePrefix {
    /// Checks `prefix`.
    pub fn new(prefix: &str) -> Result<Self, TargetError> {
        if prefix.starts_with(':') {
            return Err(TargetError::Pseudo(prefix.to_string()));
        }
        check_name(prefix)?;
        Ok(Self(prefix.to_ascii_lowercase()))
    }

    /// [`NamePrefix::matches`] on a name as the host holds it (bytes).
    pub fn matches_bytes(&self, name: &[u8]) -> bool {
        // The prefix is lowercase: compared a word at a time (a walk tests every request
        // header).
        crate::bytes::starts_with_lowercase(name, self.0.as_bytes())
    }

    /// Whether header `name` starts with this prefix (ignoring ASCII case).
    pub fn matches(&self, name: &str) -> bool {
        name.len() >= self.0.len()
            && name.is_char_boundary(self.0.len())
            && name[..self.0.len()].eq_ignore_ascii_case(&self.0)
    }
}

impl fmt::Display for NamePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NamePrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        NamePrefix::new(&raw).map_err(serde::de::Error::custom)
    }
}
