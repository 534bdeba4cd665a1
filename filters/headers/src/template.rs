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
    /// The values of `name` (lowercase) in arrival order.
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str>;

    /// Whether `name` (lowercase) was present.
    fn contains_name(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }
}

impl RequestHeaders for HeaderSnapshot {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.get_all(name).iter().map(String::as_str)
    }
}

/// The request headers a configuration reads, as the filter captured them in one walk over the
/// request: each value tagged with the index of its name in `names`
/// ([`crate::HeadersConfig::read_names`]). Costs one `String` per captured value and no
/// lowercased name copies, unlike a [`HeaderSnapshot`].
///
/// ```
/// use tollgate_headers::template::{Captured, OnMissing, Template};
/// use tollgate_sdk::HeaderName;
///
/// let names = [HeaderName::new("x-user")?];
/// let values = vec![(0, "ada".to_string()), (0, "bob".to_string())];
/// let template = Template::parse("%REQ(x-user)%").map_err(|e| e.to_string())?;
/// let captured = Captured::new(&names, &values);
/// assert_eq!(template.render(&captured, OnMissing::Skip).as_deref(), Some("ada,bob"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Captured<'c> {
    names: &'c [HeaderName],
    values: &'c [(usize, String)],
}

impl<'c> Captured<'c> {
    /// The view of `values` (name index, value) over `names`.
    pub fn new(names: &'c [HeaderName], values: &'c [(usize, String)]) -> Self {
        Self { names, values }
    }
}

impl RequestHeaders for Captured<'_> {
    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        // Names are lowercase on both sides: a byte comparison (mostly a length check).
        let index = self.names.iter().position(|n| n.as_str() == name);
        self.values
            .iter()
            .filter(move |(i, _)| Some(*i) == index)
            .map(|(_, v)| v.as_str())
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
                    (Some(value), None) => return Some(Cow::Borrowed(value)),
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
                        out.push_str(value);
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
