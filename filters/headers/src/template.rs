//! Header value templates: literal text with `%REQ(header-name)%` references to request headers
//! and `%%` for a literal `%`.
//!
//! References are read from the request headers as they reached this filter (before any of its
//! changes). A header sent several times expands to its values joined with `,`. What happens when
//! a referenced header is absent is chosen per entry with [`OnMissing`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};
use tollgate_sdk::headers::{HeaderError, check_value};
use tollgate_sdk::{HeaderName, HeaderSnapshot};

/// What an entry does when its value references a request header that is absent.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Skip the whole entry: the header is not added, set or changed (the default, like
    /// Envoy, which does not add a header whose value comes out empty).
    #[default]
    Skip,
    /// Expand the missing reference to the empty string and apply the entry anyway.
    Empty,
}

/// Why a value template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `%` that starts neither `%%` nor `%REQ(...)%`.
    #[error(
        "'%' at byte {index} starts no reference: write %% for a literal '%', or %REQ(header-name)%"
    )]
    StrayPercent {
        /// Byte offset of the `%`.
        index: usize,
    },
    /// An Envoy command other than `REQ`.
    #[error(
        "%{command}% at byte {index} is not supported: the only reference is %REQ(header-name)% (and %% for '%')"
    )]
    UnsupportedCommand {
        /// The command text between the `%`s.
        command: String,
        /// Byte offset of the opening `%`.
        index: usize,
    },
    /// `%REQ(` without its closing `)%`.
    #[error(
        "%REQ( at byte {index} is not closed with )% (length limits and alternatives are not supported)"
    )]
    Unclosed {
        /// Byte offset of the opening `%`.
        index: usize,
    },
    /// The name inside `%REQ(...)%` is not a header name.
    #[error("%REQ({name})%: {source}")]
    BadReference {
        /// The text inside the parentheses.
        name: String,
        /// What is wrong with it.
        source: HeaderError,
    },
    /// The literal text cannot appear in a header value.
    #[error("{0}")]
    BadValue(HeaderError),
}

/// The request headers a template or a condition reads: [`HeaderSnapshot`] (a copy of every
/// header), or [`Captured`] (only the headers a configuration reads, as the filter keeps them).
pub trait RequestHeaders {
    /// The values of `name` (lowercase) in arrival order, as text (a value that is not UTF-8,
    /// legal in HTTP, comes out converted lossily).
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = Cow<'a, str>>;

    /// Whether `name` (lowercase) was present.
    fn contains_name(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }
}

impl RequestHeaders for HeaderSnapshot {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = Cow<'a, str>> {
        self.get_all(name).iter().map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// Where one captured value lies in the request's wire buffer, with the index of its name in
/// [`crate::HeadersConfig::read_names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    name: usize,
    start: usize,
    len: usize,
}

impl Span {
    /// `value`, a slice of `wire` (as [`tollgate_sdk::headers::WirePairs::iter`] yields them),
    /// as a value of name `name` (an index into the read names). A span that does not lie within
    /// the buffer [`Captured`] reads yields no text (never a panic), though its name still counts
    /// as present.
    #[inline]
    pub fn of(wire: &[u8], name: usize, value: &[u8]) -> Self {
        Self {
            name,
            // Plain address arithmetic: `value` borrows from `wire`, so this is its offset.
            start: (value.as_ptr() as usize).wrapping_sub(wire.as_ptr() as usize),
            len: value.len(),
        }
    }
}

/// The request headers a configuration reads, as the filter captured them in one walk over the
/// request: spans of the host's wire buffer ([`tollgate_sdk::headers::WirePairs`]), each tagged with
/// the index of its name in `names` ([`crate::HeadersConfig::read_names`]). Nothing is copied
/// per value: the filter keeps the buffer to the response, and a value is checked as UTF-8
/// only when a template reads it (a `present` condition never does).
///
/// ```
/// use tollgate_headers::template::{Captured, OnMissing, Span, Template};
/// use tollgate_sdk::{HeaderList, HeaderMap, HeaderName};
///
/// let names = [HeaderName::new("x-user")?];
/// let wire = HeaderList::from([("x-user", "ada"), ("accept", "*/*"), ("x-user", "bob")]).wire_pairs();
/// let spans: Vec<Span> = wire
///     .iter()
///     .filter(|(name, _)| *name == b"x-user")
///     .map(|(_, value)| Span::of(wire.as_bytes(), 0, value))
///     .collect();
/// let template = Template::parse("%REQ(x-user)%").map_err(|e| e.to_string())?;
/// let captured = Captured::new(&names, wire.as_bytes(), &spans);
/// assert_eq!(template.render(&captured, OnMissing::Skip).as_deref(), Some("ada,bob"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Captured<'c> {
    names: &'c [HeaderName],
    wire: &'c [u8],
    spans: &'c [Span],
}

impl<'c> Captured<'c> {
    /// The view of `spans` of `wire` over `names`.
    pub fn new(names: &'c [HeaderName], wire: &'c [u8], spans: &'c [Span]) -> Self {
        Self { names, wire, spans }
    }

    /// The spans of the read name `name`.
    fn spans_of(&self, name: &str) -> impl Iterator<Item = &'c Span> {
        // Names are lowercase on both sides: a byte comparison (mostly a length check), a word
        // at a time (`memcmp` costs ~20 instructions per byte).
        let index = self
            .names
            .iter()
            .position(|n| crate::bytes::same(n.as_str().as_bytes(), name.as_bytes()));
        self.spans.iter().filter(move |s| Some(s.name) == index)
    }
}

impl RequestHeaders for Captured<'_> {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = Cow<'a, str>> {
        let wire = self.wire;
        self.spans_of(name).filter_map(move |s| {
            let bytes = wire.get(s.start..s.start.checked_add(s.len)?)?;
            // ASCII (nearly every value) checked a word at a time; else UTF-8, else lossy.
            Some(match tollgate_sdk::headers::ascii_str(bytes) {
                Some(text) => Cow::Borrowed(text),
                None => String::from_utf8_lossy(bytes),
            })
        })
    }

    fn contains_name(&self, name: &str) -> bool {
        self.spans_of(name).next().is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Request(HeaderName),
}

/// A parsed header value: literal text and `%REQ(name)%` references.
///
/// ```
/// use tollgate_headers::template::{OnMissing, Template};
/// use tollgate_sdk::HeaderSnapshot;
///
/// let template = Template::parse("user=%REQ(x-user)%; 100%%")?;
/// let request: HeaderSnapshot = [("x-user", "ada")].into_iter().collect();
/// assert_eq!(template.render(&request, OnMissing::Skip).as_deref(), Some("user=ada; 100%"));
/// assert_eq!(template.render(&HeaderSnapshot::default(), OnMissing::Skip), None);
/// assert_eq!(template.render(&HeaderSnapshot::default(), OnMissing::Empty).as_deref(), Some("user=; 100%"));
/// # Ok::<(), tollgate_headers::template::TemplateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(pos) = rest.find('%') {
            let index = source.len() - rest.len() + pos;
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(next) = after.strip_prefix('%') {
                literal.push('%');
                rest = next;
            } else if let Some(inner) = after.strip_prefix("REQ(") {
                let end = inner.find(")%").ok_or(TemplateError::Unclosed { index })?;
                let raw = &inner[..end];
                let name = HeaderName::new(raw).map_err(|source| TemplateError::BadReference {
                    name: raw.to_string(),
                    source,
                })?;
                flush(&mut parts, &mut literal)?;
                parts.push(Part::Request(name));
                rest = &inner[end + 2..];
            } else {
                return Err(match after.find('%') {
                    Some(end)
                        if end > 0
                            && after[..end].bytes().all(|b| {
                                b.is_ascii_uppercase() || b"_():".contains(&b) || b.is_ascii_digit()
                            }) =>
                    {
                        TemplateError::UnsupportedCommand {
                            command: after[..end].to_string(),
                            index,
                        }
                    }
                    _ => TemplateError::StrayPercent { index },
                });
            }
        }
        literal.push_str(rest);
        flush(&mut parts, &mut literal)?;
        Ok(Self { parts })
    }

    /// The request headers this template reads.
    ///
    /// ```
    /// let template = tollgate_headers::template::Template::parse("%REQ(a)%-%REQ(b)%")?;
    /// let names: Vec<&str> = template.references().map(|n| n.as_str()).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// # Ok::<(), tollgate_headers::template::TemplateError>(())
    /// ```
    pub fn references(&self) -> impl Iterator<Item = &HeaderName> {
        self.parts.iter().filter_map(|part| match part {
            Part::Request(name) => Some(name),
            Part::Literal(_) => None,
        })
    }

    /// The value for this request; `None` when a reference is absent and `on_missing` is
    /// [`OnMissing::Skip`].
    pub fn render<R: RequestHeaders>(&self, request: &R, on_missing: OnMissing) -> Option<String> {
        self.render_cow(request, on_missing).map(Cow::into_owned)
    }

    /// Whether [`Template::render`] gives a value: with `on_missing` `empty`, or when every
    /// request header the template references was present. Cheaper than rendering: nothing is
    /// converted or copied.
    ///
    /// ```
    /// use tollgate_headers::template::{OnMissing, Template};
    /// use tollgate_sdk::HeaderSnapshot;
    /// let template = Template::parse("%REQ(x-user)%/%REQ(x-team)%")?;
    /// let request: HeaderSnapshot = [("x-user", "ada")].into_iter().collect();
    /// assert!(!template.renders(&request, OnMissing::Skip));
    /// assert!(template.renders(&request, OnMissing::Empty));
    /// let request: HeaderSnapshot = [("x-user", "ada"), ("x-team", "core")].into_iter().collect();
    /// assert!(template.renders(&request, OnMissing::Skip));
    /// # Ok::<(), tollgate_headers::template::TemplateError>(())
    /// ```
    #[inline]
    pub fn renders<R: RequestHeaders>(&self, request: &R, on_missing: OnMissing) -> bool {
        on_missing == OnMissing::Empty
            || self.parts.iter().all(|part| match part {
                Part::Literal(_) => true,
                Part::Request(name) => request.contains_name(name.as_str()),
            })
    }

    /// [`Template::render`], borrowing the text of a template without references instead of
    /// copying it for every request.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use tollgate_headers::template::{OnMissing, Template};
    /// let template = Template::parse("nosniff")?;
    /// let request = tollgate_sdk::HeaderSnapshot::default();
    /// let value = template.render_cow(&request, OnMissing::Skip);
    /// assert!(matches!(value, Some(Cow::Borrowed("nosniff"))));
    /// # Ok::<(), tollgate_headers::template::TemplateError>(())
    /// ```
    pub fn render_cow<'a, R: RequestHeaders>(
        &'a self,
        request: &'a R,
        on_missing: OnMissing,
    ) -> Option<Cow<'a, str>> {
        match self.parts.as_slice() {
            [] => return Some(Cow::Borrowed("")),
            [Part::Literal(text)] => return Some(Cow::Borrowed(text)),
            // A value copied from one request header sent once: borrowed, not copied.
            [Part::Request(name)] => {
                let mut values = request.values(name.as_str());
                match (values.next(), values.next()) {
                    (Some(value), None) => return Some(value),
                    (None, _) => {
                        return match on_missing {
                            OnMissing::Empty => Some(Cow::Borrowed("")),
                            OnMissing::Skip => None,
                        };
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Request(name) => {
                    let mut any = false;
                    for value in request.values(name.as_str()) {
                        if any {
                            out.push(',');
                        }
                        out.push_str(&value);
                        any = true;
                    }
                    if !any && on_missing == OnMissing::Skip {
                        return None;
                    }
                }
            }
        }
        Some(Cow::Owned(out))
    }
}

fn flush(parts: &mut Vec<Part>, literal: &mut String) -> Result<(), TemplateError> {
    if !literal.is_empty() {
        check_value(literal).map_err(TemplateError::BadValue)?;
        parts.push(Part::Literal(std::mem::take(literal)));
    }
    Ok(())
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(&text.replace('%', "%%"))?,
                Part::Request(name) => write!(f, "%REQ({name})%")?,
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Template::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> HeaderSnapshot {
        pairs.iter().copied().collect()
    }

    #[test]
    fn literal_and_escape() -> Result<(), TemplateError> {
        let template = Template::parse("50%% off")?;
        assert_eq!(
            template.render(&request(&[]), OnMissing::Skip).as_deref(),
            Some("50% off")
        );
        assert_eq!(template.references().count(), 0);
        assert_eq!(template.to_string(), "50%% off");
        Ok(())
    }

    #[test]
    fn references_expand_and_join_repeated_headers() -> Result<(), TemplateError> {
        let template = Template::parse("%REQ(X-Forwarded-For)%, %REQ(:authority)%")?;
        let req = request(&[
            ("x-forwarded-for", "1.1.1.1"),
            (":authority", "example.com"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        assert_eq!(
            template.render(&req, OnMissing::Skip).as_deref(),
            Some("1.1.1.1,2.2.2.2, example.com")
        );
        Ok(())
    }

    #[test]
    fn captured_spans_read_the_wire_buffer_lossily_when_not_utf8()
    -> Result<(), Box<dyn std::error::Error>> {
        let names = [
            HeaderName::new("x-user")?,
            HeaderName::new("authorization")?,
        ];
        let wire =
            tollgate_sdk::headers::WirePairs::from_wire(tollgate_sdk::headers::serialize_pairs(&[
                ("x-user", &b"caf\xe9"[..]),
                ("authorization", b"Bearer \xff"),
                ("x-user", b"bob"),
            ]));
        let bytes = wire.as_bytes();
        let spans: Vec<Span> = wire
            .iter()
            .map(|(name, value)| Span::of(bytes, usize::from(name != b"x-user"), value))
            .collect();
        let captured = Captured::new(&names, bytes, &spans);
        let user = Template::parse("%REQ(x-user)%")?;
        assert_eq!(
            user.render(&captured, OnMissing::Skip).as_deref(),
            Some("caf\u{fffd},bob")
        );
        let auth = Template::parse("%REQ(authorization)%")?;
        assert_eq!(
            auth.render(&captured, OnMissing::Skip).as_deref(),
            Some("Bearer \u{fffd}")
        );
        assert!(captured.contains_name("authorization"));
        assert!(!captured.contains_name("x-other"));
        // Spans of another buffer read as absent, never out of bounds.
        let other = Captured::new(&names, &bytes[..4], &spans);
        assert_eq!(other.values("x-user").count(), 0);
        Ok(())
    }

    #[test]
    fn missing_reference_skips_or_expands_empty() -> Result<(), TemplateError> {
        let template = Template::parse("Bearer %REQ(x-token)%")?;
        assert_eq!(template.render(&request(&[]), OnMissing::Skip), None);
        assert_eq!(
            template.render(&request(&[]), OnMissing::Empty).as_deref(),
            Some("Bearer ")
        );
        Ok(())
    }

    #[test]
    fn errors_say_where_and_what() {
        assert_eq!(
            Template::parse("100%"),
            Err(TemplateError::StrayPercent { index: 3 })
        );
        assert_eq!(
            Template::parse("a %START_TIME% b"),
            Err(TemplateError::UnsupportedCommand {
                command: "START_TIME".into(),
                index: 2
            })
        );
        assert_eq!(
            Template::parse("%REQ(x-user"),
            Err(TemplateError::Unclosed { index: 0 })
        );
        assert!(matches!(
            Template::parse("%REQ(x user)%"),
            Err(TemplateError::BadReference { name, .. }) if name == "x user"
        ));
        assert!(matches!(
            Template::parse("%REQ()%"),
            Err(TemplateError::BadReference {
                source: HeaderError::EmptyName,
                ..
            })
        ));
        assert!(matches!(
            Template::parse("a\r\nb"),
            Err(TemplateError::BadValue(HeaderError::InvalidValueChar {
                found: '\r',
                ..
            }))
        ));
        let message = Template::parse("%UPSTREAM_HOST%")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            "%UPSTREAM_HOST% at byte 0 is not supported: the only reference is %REQ(header-name)% (and %% for '%')"
        );
    }
}
