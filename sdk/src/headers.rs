//! Header maps: the [`HeaderMap`] trait every request/response view works on, an in-memory
//! [`HeaderList`] for native tests, an owned [`HeaderSnapshot`] to keep headers for later, and
//! validated [`HeaderName`]s with the checks a configuration needs.
//!
//! Names are case-insensitive (HTTP/2 and Envoy carry them in lowercase), so every lookup here
//! ignores ASCII case and everything this module stores is lowercased.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The pseudo-headers HTTP/2 and Envoy use for the request line and the status.
pub const PSEUDO_HEADERS: [&str; 6] = [
    ":authority",
    ":method",
    ":path",
    ":protocol",
    ":scheme",
    ":status",
];

/// A mutable map of HTTP headers, as the host (or a test) holds them.
///
/// The filter views ([`crate::Request`], [`crate::Response`]) are built over this trait, so the same
/// filter code runs against Envoy's maps inside the proxy and against a [`HeaderList`] in native
/// unit tests.
///
/// ```
/// use tollgate_sdk::{HeaderList, HeaderMap};
///
/// let mut headers = HeaderList::from([("Accept", "text/html")]);
/// headers.add("accept", "application/json");
/// assert_eq!(headers.get("ACCEPT").as_deref(), Some("text/html"));
/// headers.set("accept", "*/*");
/// assert_eq!(headers.pairs(), vec![("accept".to_string(), "*/*".to_string())]);
/// ```
pub trait HeaderMap {
    /// The first value of header `name` (case-insensitive), if present.
    fn get(&self, name: &str) -> Option<String>;
    /// Every `(name, value)` pair in order; a header sent twice appears twice.
    fn pairs(&self) -> Vec<(String, String)>;
    /// Replaces every value of `name` with `value`, adding the header when it is absent.
    fn set(&mut self, name: &str, value: &str);
    /// Adds one more value for `name`, keeping those already present.
    fn add(&mut self, name: &str, value: &str);
    /// Removes every value of `name`; nothing happens when it is absent.
    fn remove(&mut self, name: &str);

    /// Whether header `name` (case-insensitive) is present. In the proxy it is one host call,
    /// as [`HeaderMap::get`] (the ABI has no presence query, so the host still copies the first
    /// value into the guest), but the value is freed unread: no UTF-8 check, no `String`.
    ///
    /// ```
    /// use tollgate_sdk::{HeaderList, HeaderMap};
    /// let headers = HeaderList::from([("X-Request-Id", "abc")]);
    /// assert!(headers.contains("x-request-id"));
    /// assert!(!headers.contains("referrer-policy"));
    /// ```
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Calls `f` with every header's name and value, pseudo-headers included, as bytes (a value
    /// need not be UTF-8). Unlike [`HeaderMap::pairs`] it copies nothing per header: in the
    /// proxy it is one host call and one buffer, where `pairs` makes two `String`s per header
    /// (most of what a filter that reads every header spends; see `bench/README.md`).
    ///
    /// ```
    /// use tollgate_sdk::{HeaderList, HeaderMap};
    /// let headers = HeaderList::from([(":path", "/"), ("x-debug-a", "1")]);
    /// let mut names = Vec::new();
    /// headers.for_each_pair(&mut |name, _value| names.push(String::from_utf8_lossy(name).into_owned()));
    /// assert_eq!(names, [":path", "x-debug-a"]);
    /// ```
    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (name, value) in self.pairs() {
            f(name.as_bytes(), value.as_bytes());
        }
    }

    /// Every header, pseudo-headers included, in the proxy-wasm wire format: in the proxy the
    /// host's own buffer (one host call, nothing copied per header), natively the pairs
    /// serialised. Iterating it ([`WirePairs::iter`]) is plain inlined code, where
    /// [`HeaderMap::for_each_pair`] makes an indirect call per header (a filter that walks
    /// every header of every request: `bench/README.md`).
    ///
    /// ```
    /// use tollgate_sdk::{HeaderList, HeaderMap};
    /// let headers = HeaderList::from([(":path", "/"), ("x-debug-a", "1")]);
    /// let wire = headers.wire_pairs();
    /// let names: Vec<&[u8]> = wire.iter().map(|(name, _value)| name).collect();
    /// assert_eq!(names, [&b":path"[..], b"x-debug-a"]);
    /// ```
    fn wire_pairs(&self) -> WirePairs {
        let pairs = self.pairs();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        WirePairs::from_wire(serialize_pairs(&pairs))
    }
}

/// Serialises pairs in the proxy-wasm wire format (what [`walk_wire_pairs`] reads): a
/// little-endian `u32` count, each name's and value's length as `u32`, then each name and value
/// followed by a NUL.
///
/// ```
/// let wire = tollgate_sdk::headers::serialize_pairs(&[("ab", "c")]);
/// assert_eq!(wire, b"\x01\0\0\0\x02\0\0\0\x01\0\0\0ab\0c\0");
/// ```
pub fn serialize_pairs<V: AsRef<[u8]>>(pairs: &[(&str, V)]) -> Vec<u8> {
    let size = pairs
        .iter()
        .map(|(n, v)| n.len() + v.as_ref().len() + 10)
        .sum::<usize>()
        + 4;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// A header map in the proxy-wasm wire format, owned ([`HeaderMap::wire_pairs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WirePairs {
    bytes: Vec<u8>,
}

impl WirePairs {
    /// Wraps `bytes` (a truncated or malformed buffer iterates up to where it breaks).
    pub fn from_wire(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// The serialised bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each header's `(name, value)`, in order, as bytes.
    pub fn iter(&self) -> WireIter<'_> {
        WireIter::new(&self.bytes)
    }
}

/// The headers of a wire-format buffer ([`WirePairs::iter`]); stops at the first entry the
/// buffer does not hold.
#[derive(Debug, Clone)]
pub struct WireIter<'a> {
    /// The size words not read yet, 8 bytes per header.
    sizes: &'a [u8],
    /// The names and values not read yet.
    data: &'a [u8],
}

impl<'a> WireIter<'a> {
    /// Iterates over `wire`.
    pub fn new(wire: &'a [u8]) -> Self {
        let empty = Self {
            sizes: &[],
            data: &[],
        };
        let Some((count, rest)) = wire.split_first_chunk::<4>() else {
            return empty;
        };
        let count = u32::from_le_bytes(*count) as usize;
        match count.checked_mul(8).filter(|n| *n <= rest.len()) {
            Some(n) => {
                let (sizes, data) = rest.split_at(n);
                Self { sizes, data }
            }
            None => empty,
        }
    }
}

impl<'a> Iterator for WireIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (sizes, rest) = self.sizes.split_first_chunk::<8>()?;
        let name_len = u32::from_le_bytes([sizes[0], sizes[1], sizes[2], sizes[3]]) as usize;
        let value_len = u32::from_le_bytes([sizes[4], sizes[5], sizes[6], sizes[7]]) as usize;
        // name NUL value NUL
        let (name, after) = match self.data.split_at_checked(name_len) {
            Some((name, [_, after @ ..])) => (name, after),
            _ => return self.stop(),
        };
        let Some((value, after)) = after.split_at_checked(value_len) else {
            return self.stop();
        };
        // The last value's NUL may be missing from a truncated buffer: the value is whole.
        let after = after.get(1..).unwrap_or_default();
        self.sizes = rest;
        self.data = after;
        Some((name, value))
    }
}

impl WireIter<'_> {
    #[cold]
    fn stop<T>(&mut self) -> Option<T> {
        self.sizes = &[];
        None
    }
}

/// `bytes` as an owned `String`: ASCII (every header name, nearly every value) checked eight bytes
/// at a time; other UTF-8 kept; anything else converted lossily (legal in HTTP, never a panic).
/// `String::from_utf8_lossy` alone walks its input in chunks, about 20 wasm instructions a byte.
pub(crate) fn text(bytes: &[u8]) -> String {
    match ascii_str(bytes) {
        Some(ascii) => ascii.to_owned(),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// `bytes` as text when every byte is ASCII, as nearly every header value is; `None`
/// otherwise (then `str::from_utf8` decides). Checked eight bytes at a time: cheaper than
/// `str::from_utf8` on short values, which goes byte by byte through a table until it reaches
/// an aligned run of words (in wasm about 10 instructions per byte of a 36-byte request id).
///
/// ```
/// use tollgate_sdk::headers::ascii_str;
/// assert_eq!(ascii_str(b"3f2a-request-id"), Some("3f2a-request-id"));
/// assert_eq!(ascii_str("café".as_bytes()), None);
/// assert_eq!(ascii_str(b""), Some(""));
/// ```
#[inline]
pub fn ascii_str(bytes: &[u8]) -> Option<&str> {
    let word = |at: usize| match bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        Some(word) => u64::from_le_bytes(*word),
        None => 0,
    };
    let half = |at: usize| match bytes.get(at..).and_then(<[u8]>::first_chunk::<4>) {
        Some(half) => u64::from(u32::from_le_bytes(*half)),
        None => 0,
    };
    let len = bytes.len();
    let mut seen = 0u64;
    if len >= 8 {
        // Whole words, then the last eight bytes (overlapping the previous word).
        let mut at = 0;
        while at + 8 < len {
            seen |= word(at);
            at += 8;
        }
        seen |= word(len - 8);
    } else if len >= 4 {
        seen = half(0) | half(len - 4);
    } else {
        for byte in bytes {
            seen |= u64::from(*byte);
        }
    }
    if seen & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    // SAFETY: no byte has its high bit set, so every byte is ASCII, and ASCII is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Walks a header map in the proxy-wasm wire format (a little-endian `u32` count, then a
/// `u32` name length and a `u32` value length per header, then each name and value followed by
/// a NUL), calling `f` for each header. A truncated buffer ends the walk where it breaks.
///
/// ```
/// let wire = b"\x01\0\0\0\x02\0\0\0\x01\0\0\0ab\0c\0";
/// let mut seen = Vec::new();
/// tollgate_sdk::headers::walk_wire_pairs(wire, &mut |n, v| seen.push((n.to_vec(), v.to_vec())));
/// assert_eq!(seen, [(b"ab".to_vec(), b"c".to_vec())]);
/// ```
pub fn walk_wire_pairs(wire: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) {
    for (name, value) in WireIter::new(wire) {
        f(name, value);
    }
}

/// An in-memory, ordered [`HeaderMap`]: what native tests hand to a filter instead of the host.
///
/// ```
/// use tollgate_sdk::{HeaderList, HeaderMap};
///
/// let mut headers: HeaderList = [(":path", "/"), ("x-a", "1"), ("x-a", "2")].into();
/// assert_eq!(headers.get_all("x-a"), vec!["1", "2"]);
/// headers.remove("X-A");
/// assert_eq!(headers.len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    pairs: Vec<(String, String)>,
}

impl HeaderList {
    /// An empty list.
    ///
    /// ```
    /// assert!(tollgate_sdk::HeaderList::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Every value of `name` (case-insensitive), in order.
    ///
    /// ```
    /// let headers = tollgate_sdk::HeaderList::from([("via", "a"), ("Via", "b")]);
    /// assert_eq!(headers.get_all("via"), vec!["a", "b"]);
    /// ```
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Number of `(name, value)` pairs.
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::HeaderList::from([("a", "1"), ("a", "2")]).len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the list holds no header at all.
    ///
    /// ```
    /// assert!(!tollgate_sdk::HeaderList::from([("a", "1")]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Iterates over the `(name, value)` pairs in order.
    ///
    /// ```
    /// let headers = tollgate_sdk::HeaderList::from([("a", "1")]);
    /// assert_eq!(headers.iter().next(), Some(("a", "1")));
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl HeaderMap for HeaderList {
    fn get(&self, name: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn pairs(&self) -> Vec<(String, String)> {
        self.pairs.clone()
    }

    fn set(&mut self, name: &str, value: &str) {
        // Keep the header where it was, drop its other values.
        match self
            .pairs
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                self.pairs[first].1 = value.to_string();
                let mut index = 0;
                self.pairs.retain(|(n, _)| {
                    let keep = index <= first || !n.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
            }
            None => self.add(name, value),
        }
    }

    fn add(&mut self, name: &str, value: &str) {
        self.pairs
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    fn remove(&mut self, name: &str) {
        self.pairs.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

impl<N: AsRef<str>, V: Into<String>, const L: usize> From<[(N, V); L]> for HeaderList {
    fn from(pairs: [(N, V); L]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            pairs: iter
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
        }
    }
}

/// An owned, read-only copy of a header map, indexed by lowercased name.
///
/// Take one in `on_request_headers` (see [`crate::Request::snapshot`]) when the response phase
/// needs to know what the request carried.
///
/// ```
/// use tollgate_sdk::{HeaderList, HeaderSnapshot};
///
/// let snapshot = HeaderSnapshot::of(&HeaderList::from([("X-User", "ada"), ("x-user", "bob")]));
/// assert_eq!(snapshot.get("x-user"), Some("ada,bob".to_string()));
/// assert!(snapshot.contains("X-USER"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderSnapshot {
    /// Lowercased names in order of first arrival, each with its values in arrival order.
    /// A request carries a few dozen headers at most: a linear scan with a case-insensitive
    /// comparison beats hashing (and needs no lowercased copy of the name looked up).
    values: Vec<(String, Vec<String>)>,
}

impl HeaderSnapshot {
    /// Copies every header of `headers`.
    ///
    /// ```
    /// let snapshot = tollgate_sdk::HeaderSnapshot::of(&tollgate_sdk::HeaderList::from([("a", "1")]));
    /// assert!(snapshot.contains("a"));
    /// ```
    pub fn of(headers: &dyn HeaderMap) -> Self {
        headers.pairs().into_iter().collect()
    }

    /// Whether header `name` (case-insensitive) was present.
    ///
    /// ```
    /// assert!(!tollgate_sdk::HeaderSnapshot::default().contains("a"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Every value of `name`, in the order they arrived (empty when absent).
    ///
    /// ```
    /// let snapshot: tollgate_sdk::HeaderSnapshot = [("a", "1"), ("a", "2")].into_iter().collect();
    /// assert_eq!(snapshot.get_all("A"), ["1", "2"]);
    /// ```
    pub fn get_all(&self, name: &str) -> &[String] {
        self.find(name).map_or(&[], Vec::as_slice)
    }

    /// The values of `name` joined with `,` (how HTTP combines a repeated header), if present.
    ///
    /// ```
    /// let snapshot: tollgate_sdk::HeaderSnapshot = [("a", "1"), ("a", "2")].into_iter().collect();
    /// assert_eq!(snapshot.get("a").as_deref(), Some("1,2"));
    /// ```
    pub fn get(&self, name: &str) -> Option<String> {
        let values = self.get_all(name);
        (!values.is_empty()).then(|| values.join(","))
    }

    fn find(&self, name: &str) -> Option<&Vec<String>> {
        self.values
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for HeaderSnapshot {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut values: Vec<(String, Vec<String>)> = Vec::new();
        for (name, value) in iter {
            let name = name.as_ref();
            match values
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((_, existing)) => existing.push(value.into()),
                None => values.push((name.to_ascii_lowercase(), vec![value.into()])),
            }
        }
        Self { values }
    }
}

/// Why a header name or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The name is the empty string.
    #[error("header name is empty")]
    EmptyName,
    /// The name holds a character HTTP does not allow in a field name.
    #[error(
        "header name {name:?} contains {found:?} at byte {index}; names may only use letters, digits and !#$%&'*+-.^_`|~"
    )]
    InvalidNameChar {
        /// The refused name.
        name: String,
        /// The offending character.
        found: char,
        /// Its byte offset in `name`.
        index: usize,
    },
    /// The name starts with `:` but is none of [`PSEUDO_HEADERS`].
    #[error("{name:?} is not a pseudo-header; known ones are {}", PSEUDO_HEADERS.join(", "))]
    UnknownPseudoHeader {
        /// The refused name.
        name: String,
    },
    /// The value holds a character that cannot appear in a header value (CR, LF, NUL...). The
    /// message does not quote the value: configured values may be secrets.
    #[error(
        "header value of {} bytes contains the control character {found:?} at byte {index}",
        value.len()
    )]
    InvalidValueChar {
        /// The refused value.
        value: String,
        /// The offending character.
        found: char,
        /// Its byte offset in `value`.
        index: usize,
    },
}

/// Whether `byte` may appear in a header name (an RFC 9110 `tchar`).
///
/// ```
/// assert!(tollgate_sdk::headers::is_token_byte(b'-'));
/// assert!(!tollgate_sdk::headers::is_token_byte(b' '));
/// ```
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `name` is a pseudo-header such as `:path` (it starts with `:`).
///
/// ```
/// assert!(tollgate_sdk::headers::is_pseudo_header(":authority"));
/// assert!(!tollgate_sdk::headers::is_pseudo_header("host"));
/// ```
pub fn is_pseudo_header(name: &str) -> bool {
    name.starts_with(':')
}

/// Checks that `name` is a regular header name: non-empty, only token characters.
///
/// ```
/// use tollgate_sdk::headers::{check_name, HeaderError};
/// assert!(check_name("x-request-id").is_ok());
/// assert_eq!(check_name(""), Err(HeaderError::EmptyName));
/// assert!(check_name("x request").is_err());
/// assert!(check_name(":path").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), HeaderError> {
    if name.is_empty() {
        return Err(HeaderError::EmptyName);
    }
    match name
        .char_indices()
        .find(|&(_, c)| !c.is_ascii() || !is_token_byte(c as u8))
    {
        Some((index, found)) => Err(HeaderError::InvalidNameChar {
            name: name.to_string(),
            found,
            index,
        }),
        None => Ok(()),
    }
}

/// Checks that `value` can be sent as a header value: no control character other than tab.
///
/// ```
/// use tollgate_sdk::headers::check_value;
/// assert!(check_value("max-age=31536000; includeSubDomains").is_ok());
/// assert!(check_value("a\r\nx-injected: 1").is_err());
/// ```
pub fn check_value(value: &str) -> Result<(), HeaderError> {
    match value
        .char_indices()
        .find(|&(_, c)| (c.is_ascii_control() && c != '\t') || c == '\u{7f}')
    {
        Some((index, found)) => Err(HeaderError::InvalidValueChar {
            value: value.to_string(),
            found,
            index,
        }),
        None => Ok(()),
    }
}

/// A validated, lowercased header name: a regular name (`x-user`) or a known pseudo-header
/// (`:path`). Deserializing one checks it, so a configuration error names the field it came from.
///
/// ```
/// use tollgate_sdk::HeaderName;
///
/// let name = HeaderName::new("X-User")?;
/// assert_eq!(name.as_str(), "x-user");
/// assert!(HeaderName::new(":path")?.is_pseudo());
/// assert!(HeaderName::new("bad name").is_err());
/// # Ok::<(), tollgate_sdk::headers::HeaderError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(String);

impl HeaderName {
    /// Validates and lowercases `name`.
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::HeaderName::new("Server").map(|n| n.to_string()), Ok("server".into()));
    /// ```
    pub fn new(name: &str) -> Result<Self, HeaderError> {
        if is_pseudo_header(name) {
            let lower = name.to_ascii_lowercase();
            return if PSEUDO_HEADERS.contains(&lower.as_str()) {
                Ok(Self(lower))
            } else {
                Err(HeaderError::UnknownPseudoHeader {
                    name: name.to_string(),
                })
            };
        }
        check_name(name)?;
        Ok(Self(name.to_ascii_lowercase()))
    }

    /// The lowercased name.
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::HeaderName::new("A-B")?.as_str(), "a-b");
    /// # Ok::<(), tollgate_sdk::headers::HeaderError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a pseudo-header (`:path`, `:status`...).
    ///
    /// ```
    /// assert!(!tollgate_sdk::HeaderName::new("host")?.is_pseudo());
    /// # Ok::<(), tollgate_sdk::headers::HeaderError>(())
    /// ```
    pub fn is_pseudo(&self) -> bool {
        is_pseudo_header(&self.0)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HeaderName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A header name in a configuration's JSON Schema: an HTTP token (any case) or a pseudo-header.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for HeaderName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HeaderName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An HTTP header name (case-insensitive, stored lower-cased), or one of the pseudo-headers :method, :path, :authority, :scheme, :status.",
            "pattern": "^(:[a-zA-Z]+|[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"
        })
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        HeaderName::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` gives what `String::from_utf8_lossy` gives, for ASCII, other UTF-8 and bytes that
    /// are not UTF-8 at all, in every position of a short value.
    #[test]
    fn text_is_the_lossy_conversion() {
        let base = "x-request-id-0123".as_bytes();
        for len in 0..=base.len() {
            for at in 0..len {
                for insert in [&b"\xc3\xa9"[..], b"\xff", b"\xe2\x82", b"\x7f", b"\x80"] {
                    let mut bytes = base[..at].to_vec();
                    bytes.extend_from_slice(insert);
                    bytes.extend_from_slice(&base[at..len]);
                    assert_eq!(text(&bytes), String::from_utf8_lossy(&bytes), "{bytes:?}");
                }
            }
            assert_eq!(text(&base[..len]), String::from_utf8_lossy(&base[..len]));
        }
    }

    /// Every length up to 24 with one byte of every value in every position: ASCII text comes
    /// back whole, anything else is refused.
    #[test]
    fn ascii_str_accepts_exactly_ascii() {
        let base = b"x-request-id-0123456789ab";
        for len in 0..=24 {
            let text = &base[..len];
            assert_eq!(ascii_str(text), std::str::from_utf8(text).ok());
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = text.to_vec();
                    bytes[at] = byte;
                    let want = byte
                        .is_ascii()
                        .then(|| std::str::from_utf8(&bytes).ok())
                        .flatten();
                    assert_eq!(ascii_str(&bytes), want, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn wire_pairs_round_trip_and_stop_where_a_buffer_breaks() {
        let pairs = [(":path", "/a"), ("x-e", ""), ("via", "1.1 b")];
        let wire = serialize_pairs(&pairs);
        let seen: Vec<(&[u8], &[u8])> = WireIter::new(&wire).collect();
        let want: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(seen, want);
        // Every truncation yields a prefix of the headers, never a panic or a wrong pair.
        for cut in 0..wire.len() {
            let seen: Vec<(&[u8], &[u8])> = WireIter::new(&wire[..cut]).collect();
            assert!(want.starts_with(&seen), "cut at {cut}: {seen:?}");
        }
        // A count larger than the buffer, and lengths past its end.
        assert_eq!(WireIter::new(b"\xff\xff\xff\xff").count(), 0);
        assert_eq!(
            WireIter::new(b"\x01\0\0\0\xff\0\0\0\x01\0\0\0ab\0c\0").count(),
            0
        );
        let list = HeaderList::from(pairs);
        assert_eq!(list.wire_pairs().as_bytes(), wire.as_slice());
    }

    #[test]
    fn set_replaces_all_values_in_place() {
        let mut list = HeaderList::from([("a", "1"), ("x", "1"), ("b", "2"), ("X", "2")]);
        list.set("x", "new");
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("x", "new"), ("b", "2")]
        );
        list.set("y", "added");
        assert_eq!(list.get("Y").as_deref(), Some("added"));
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn names_are_lowercased_and_matched_case_insensitively() {
        let mut list = HeaderList::new();
        list.add("X-Trace", "1");
        assert_eq!(list.pairs(), vec![("x-trace".to_string(), "1".to_string())]);
        assert_eq!(list.get("x-TRACE").as_deref(), Some("1"));
        list.remove("X-TRACE");
        assert!(list.is_empty());
    }

    #[test]
    fn name_checks_report_the_offending_character() {
        assert_eq!(
            check_name("x-a b"),
            Err(HeaderError::InvalidNameChar {
                name: "x-a b".into(),
                found: ' ',
                index: 3
            })
        );
        assert!(check_name("x-ü").is_err());
        assert!(check_name("x_a.b~c!").is_ok());
        assert_eq!(HeaderName::new(""), Err(HeaderError::EmptyName));
        assert_eq!(
            HeaderName::new(":foo"),
            Err(HeaderError::UnknownPseudoHeader {
                name: ":foo".into()
            })
        );
        assert_eq!(
            HeaderName::new(":Path").map(|n| n.to_string()),
            Ok(":path".to_string())
        );
    }

    #[test]
    fn value_checks_refuse_header_injection() {
        assert!(check_value("a\tb").is_ok());
        let err = check_value("ok\r\nx: 1").err();
        assert_eq!(
            err,
            Some(HeaderError::InvalidValueChar {
                value: "ok\r\nx: 1".into(),
                found: '\r',
                index: 2
            })
        );
        assert!(check_value("nul\0").is_err());
    }

    #[test]
    fn snapshot_joins_repeated_headers() {
        let snapshot = HeaderSnapshot::of(&HeaderList::from([("A", "1"), ("b", "x"), ("a", "2")]));
        assert_eq!(snapshot.get("a").as_deref(), Some("1,2"));
        assert_eq!(snapshot.get("c"), None);
        assert!(snapshot.get_all("c").is_empty());
    }

    #[test]
    fn header_name_deserializes_with_validation() {
        let ok: Result<HeaderName, _> = serde_json::from_str("\"X-Ok\"");
        assert_eq!(ok.map(|n| n.to_string()).ok(), Some("x-ok".to_string()));
        let bad: Result<HeaderName, _> = serde_json::from_str("\"x y\"");
        let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("contains ' ' at byte 1"), "{message}");
    }
}
