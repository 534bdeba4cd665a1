//! Typed plugin configuration: JSON parsed with `serde` into the filter's config type, with errors
//! that name the field path (`request.set[0].name`), then an optional semantic
//! [`FilterConfig::validate`] step.
//!
//! The registration macro ([`crate::export_filter!`]) calls [`parse`] in `on_configure`; when it
//! fails, the error is logged through the host and the configuration is refused, so Envoy rejects
//! the filter instead of running it half-configured.
//!
//! An empty configuration (no bytes, or only whitespace) is read as `{}`: a config struct marked
//! `#[serde(default)]` then gets its `Default`, and one with required fields is refused with an
//! error naming the first missing field.
//!
//! A refusal never echoes the configuration's values: configurations hold secrets (inline keys,
//! password hashes) and the error goes to the proxy's log. serde's messages quote the offending
//! value (`invalid type: string "...", expected u16`, `unknown variant `...``); [`ConfigError`]
//! replaces those quotes with the value's kind and length (see [`redact`]), and cuts the field
//! path and the message to [`MAX_PATH_BYTES`] and [`MAX_MESSAGE_BYTES`], so even a configuration of
//! megabytes gives a one-line error of at most about a kilobyte.

use std::fmt;

use serde::de::DeserializeOwned;

/// A filter's configuration type: anything `serde` can build from JSON, plus an optional semantic
/// check run after parsing.
///
/// ```
/// use serde::Deserialize;
/// use tollgate_sdk::{ConfigError, FilterConfig};
///
/// #[derive(Debug, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Limits {
///     max: u32,
///     min: u32,
/// }
///
/// impl FilterConfig for Limits {
///     fn validate(&self) -> Result<(), ConfigError> {
///         if self.min > self.max {
///             return Err(ConfigError::at("min", format!("{} is above max ({})", self.min, self.max)));
///         }
///         Ok(())
///     }
/// }
///
/// let err = tollgate_sdk::config::parse::<Limits>(br#"{"max": 1, "min": 2}"#).unwrap_err();
/// assert_eq!(err.to_string(), "bad configuration at min: 2 is above max (1)");
/// ```
pub trait FilterConfig: DeserializeOwned + 'static {
    /// Checks what types alone cannot (cross-field rules, ranges...). The default accepts all.
    ///
    /// ```
    /// # use tollgate_sdk::FilterConfig;
    /// #[derive(serde::Deserialize)]
    /// struct Anything {}
    /// impl FilterConfig for Anything {}
    /// assert!(Anything {}.validate().is_ok());
    /// ```
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Runs once per VM inside the proxy, when the configuration was parsed and validated in
    /// `on_configure` and before the VM sees any stream: the place to set up what the VM shares
    /// with the other workers' VMs (shared data, queues). An error refuses the configuration.
    /// Not called by [`parse`]; the default does nothing.
    ///
    /// ```
    /// # use tollgate_sdk::FilterConfig;
    /// #[derive(serde::Deserialize)]
    /// struct Anything {}
    /// impl FilterConfig for Anything {}
    /// assert!(Anything {}.on_configured().is_ok());
    /// ```
    fn on_configured(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Reads the plugin configuration: by default JSON through `serde` ([`parse`]'s rules:
    /// empty means `{}`, then [`FilterConfig::validate`]). A type may read its bytes another
    /// way, as [`NoConfig`] does without a JSON parser.
    fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError>
    where
        Self: Sized,
    {
        parse_json(bytes)
    }
}

/// The configuration of a filter that takes none: an empty configuration, `{}` or `null`.
/// Anything else is refused, so a configuration meant for another filter is noticed.
///
/// It is read without a JSON parser, so a filter without configuration carries none in its
/// module (see `bench/README.md`: the SDK's no-op against the raw `proxy-wasm` crate's).
///
/// ```
/// use tollgate_sdk::config::{parse, NoConfig};
/// assert!(parse::<NoConfig>(b"").is_ok());
/// assert!(parse::<NoConfig>(b" { } ").is_ok());
/// assert!(parse::<NoConfig>(b"null").is_ok());
/// let err = parse::<NoConfig>(br#"{"a": 1}"#).unwrap_err();
/// assert_eq!(err.to_string(), "bad configuration: this filter takes no configuration (give it none, or {})");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig;

impl<'de> serde::Deserialize<'de> for NoConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// `{}` and nothing in it.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        Option::<Empty>::deserialize(deserializer).map(|_| NoConfig)
    }
}

impl FilterConfig for NoConfig {
    fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = bytes.trim_ascii();
        let inner = text
            .strip_prefix(b"{")
            .and_then(|t| t.strip_suffix(b"}"))
            .map(<[u8]>::trim_ascii);
        if text.is_empty() || text == b"null" || inner.is_some_and(<[u8]>::is_empty) {
            Ok(NoConfig)
        } else {
            // A fixed message with nothing to redact: built directly, so a filter without
            // configuration carries no redaction code either.
            Err(ConfigError {
                path: String::new(),
                message: "this filter takes no configuration (give it none, or {})".to_string(),
                position: None,
            })
        }
    }
}

/// A refused configuration: where (a field path such as `request.set[0].name`, empty for the
/// document as a whole) and why.
///
/// ```
/// let err = tollgate_sdk::ConfigError::at("rules[2].when", "a rule needs at least one condition");
/// assert_eq!(err.path(), "rules[2].when");
/// assert_eq!(err.to_string(), "bad configuration at rules[2].when: a rule needs at least one condition");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    path: String,
    message: String,
    position: Option<(usize, usize)>,
}

/// The longest field path an error keeps, in bytes (longer ones are cut).
pub const MAX_PATH_BYTES: usize = 256;

/// The longest message an error keeps, in bytes (longer ones are cut).
pub const MAX_MESSAGE_BYTES: usize = 512;

impl ConfigError {
    /// An error about the field at `path` (dotted, with `[i]` for list entries; `""` for the
    /// whole document). Quoted values in `message` are replaced (see [`redact`]) and both parts
    /// are cut to their limits.
    ///
    /// ```
    /// let err = tollgate_sdk::ConfigError::at("", "nothing to do");
    /// assert_eq!(err.to_string(), "bad configuration: nothing to do");
    /// ```
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: cut(path.into(), MAX_PATH_BYTES),
            message: cut(redact(&message.into()), MAX_MESSAGE_BYTES),
            position: None,
        }
    }

    /// The field path the error is about (`""` for the whole document).
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::ConfigError::at("a.b", "x").path(), "a.b");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without the path.
    ///
    /// ```
    /// assert_eq!(tollgate_sdk::ConfigError::at("a", "too big").message(), "too big");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Line and column (1-based) in the JSON text, when the error came from parsing.
    ///
    /// ```
    /// let err = tollgate_sdk::config::parse::<Vec<u8>>(b"[1,\n 300]").unwrap_err();
    /// assert_eq!(err.position(), Some((2, 4)));
    /// ```
    pub fn position(&self) -> Option<(usize, usize)> {
        self.position
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "bad configuration: {}", self.message)?;
        } else {
            write!(f, "bad configuration at {}: {}", self.path, self.message)?;
        }
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl<T: DeserializeOwned + 'static> FilterConfig for Vec<T> {}

/// Parses and validates a plugin configuration (JSON bytes) into `T`.
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Route {
///     name: String,
/// }
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     routes: Vec<Route>,
/// }
/// impl tollgate_sdk::FilterConfig for Config {}
///
/// let err = tollgate_sdk::config::parse::<Config>(br#"{"routes": [{"name": "a"}, {}]}"#).unwrap_err();
/// assert_eq!(err.path(), "routes[1]");
/// assert_eq!(err.message(), "missing field `name`");
/// ```
pub fn parse<T: FilterConfig>(bytes: &[u8]) -> Result<T, ConfigError> {
    T::from_bytes(bytes)
}

/// [`parse`] for JSON configurations: what [`FilterConfig::from_bytes`] does by default.
fn parse_json<T: FilterConfig>(bytes: &[u8]) -> Result<T, ConfigError> {
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    let text: &[u8] = if empty { b"{}" } else { bytes };
    let config: T = deserialize(text).map_err(|mut err| {
        if empty {
            err.message = format!(
                "the configuration is empty and this filter needs one: {}",
                err.message
            );
            err.position = None;
        }
        err
    })?;
    config.validate()?;
    Ok(config)
}

fn deserialize<T: DeserializeOwned>(text: &[u8]) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = T::deserialize(&mut deserializer).map_err(|err| {
        let (path, last_member, on_key) = path_at(text, err.line(), err.column());
        // serde_json places a field's own error (a `try_from`/`deserialize_with` refusal) at
        // the `}` that closes its object; "missing field" and "invalid length" are about the
        // container itself.
        let message = err.to_string();
        let about_container =
            message.starts_with("missing field") || message.starts_with("invalid length");
        let path = match last_member {
            Some(member) if !about_container => member,
            // An enum written `{"variant": ...}` whose variant is unknown: the key is not a
            // field, the error is about the enum value holding it.
            _ if on_key && message.starts_with("unknown variant") => {
                let (path, _, _) = path_at_without_last_key(text, err.line(), err.column());
                path
            }
            _ => path,
        };
        from_json_error(path, &err)
    })?;
    deserializer
        .end()
        .map_err(|err| from_json_error(String::new(), &err))?;
    Ok(value)
}

/// One open JSON container while scanning for an error's field path.
enum Frame {
    /// An object: the member key last read, and whether its `:` was seen.
    Object(Option<String>),
    /// An array: the element index, and whether that element has started.
    Array(usize, bool),
}

/// The field path (`entries[1].name`) of the position serde_json reported for an error: the
/// keys and indexes of the containers open when the parser stopped at `line`/`column`
/// (serde_json counts the column in bytes, after the byte it stopped on). Scanning the text
/// keeps the error path out of the deserialisation code itself, so every config type is
/// deserialised by plain serde_json and the module stays small.
///
/// When the position is the `}` or `]` closing a container, the second value is the path of
/// that container's last member (what the error may be about instead); the third says whether
/// the position is just after an object key (before its `:`).
fn path_at(text: &[u8], line: usize, column: usize) -> (String, Option<String>, bool) {
    scan(text, line, column, false)
}

/// [`path_at`] leaving out an object key read just before the position.
fn path_at_without_last_key(
    text: &[u8],
    line: usize,
    column: usize,
) -> (String, Option<String>, bool) {
    scan(text, line, column, true)
}

fn scan(
    text: &[u8],
    line: usize,
    column: usize,
    drop_trailing_key: bool,
) -> (String, Option<String>, bool) {
    if line == 0 {
        return (String::new(), None, false);
    }
    let mut start_of_line = 0;
    let mut lines_seen = 1;
    for (i, byte) in text.iter().enumerate() {
        if lines_seen == line {
            break;
        }
        if *byte == b'\n' {
            lines_seen += 1;
            start_of_line = i + 1;
        }
    }
    let end = start_of_line.saturating_add(column).min(text.len());
    let text = text.get(..end).unwrap_or(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut last_member = None;
    let mut on_key = false;
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        i += 1;
        if !matches!(byte, b' ' | b'\t' | b'\r' | b'\n') {
            on_key = false;
        }
        match byte {
            b'{' | b'[' => {
                if let Some(Frame::Array(_, started)) = stack.last_mut() {
                    *started = true;
                }
                stack.push(if byte == b'{' {
                    Frame::Object(None)
                } else {
                    Frame::Array(0, false)
                });
            }
            b'}' | b']' => {
                if i == text.len() {
                    last_member = Some(path_of(&stack));
                }
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object(key)) => *key = None,
                Some(Frame::Array(index, started)) => {
                    *index += 1;
                    *started = false;
                }
                None => {}
            },
            b'"' => {
                let begin = i;
                let mut closed = false;
                while let Some(&c) = text.get(i) {
                    i += 1;
                    if c == b'\\' {
                        i += 1;
                    } else if c == b'"' {
                        closed = true;
                        break;
                    }
                }
                match stack.last_mut() {
                    Some(Frame::Object(key)) if key.is_none() && closed => {
                        let raw = text.get(begin..i - 1).unwrap_or_default();
                        *key = Some(String::from_utf8_lossy(raw).into_owned());
                        on_key = true;
                    }
                    Some(Frame::Array(_, started)) => *started = true,
                    _ => {}
                }
            }
            b' ' | b'\t' | b'\r' | b'\n' | b':' => {}
            _ => {
                if let Some(Frame::Array(_, started)) = stack.last_mut() {
                    *started = true;
                }
            }
        }
    }
    if on_key
        && drop_trailing_key
        && let Some(Frame::Object(key)) = stack.last_mut()
    {
        *key = None;
    }
    (path_of(&stack), last_member, on_key)
}

/// `a.b[2].c` for the open containers in `stack`.
fn path_of(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Array(index, started) if *started || *index > 0 => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
            _ => {}
        }
    }
    path
}

fn from_json_error(path: String, err: &serde_json::Error) -> ConfigError {
    let position = (err.line() > 0).then(|| (err.line(), err.column()));
    let mut message = err.to_string();
    // serde_json appends " at line L column C"; keep the position as data instead.
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    if let Some(stripped) = message.strip_suffix(&suffix) {
        message.truncate(stripped.len());
    }
    ConfigError {
        path: cut(path, MAX_PATH_BYTES),
        message: cut(redact(&message), MAX_MESSAGE_BYTES),
        position,
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying how long it was.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("... (");
    text.push_str(&total.to_string());
    text.push_str(" bytes, cut)");
    text
}

/// `message` without the configuration values serde quotes in it: `string "..."` becomes
/// `a string of N bytes` and `unknown variant `...`` names no variant. Other text (field names,
/// numbers, the expected types) is kept; [`ConfigError`] cuts what is too long.
///
/// ```
/// use tollgate_sdk::config::redact;
/// assert_eq!(
///     redact(r#"invalid type: string "hunter2", expected u16"#),
///     "invalid type: a string of 7 bytes, expected u16"
/// );
/// assert_eq!(
///     redact("unknown variant `s3cret`, expected `allow` or `deny`"),
///     "unknown variant (6 bytes, not shown), expected `allow` or `deny`"
/// );
/// ```
pub fn redact(message: &str) -> String {
    const STRING: &str = "string \"";
    const VARIANT: &str = "unknown variant `";
    let mut out = String::new();
    let mut rest = message;
    loop {
        let string = find(rest, STRING);
        let variant = find(rest, VARIANT);
        let (at, is_string) = match (string, variant) {
            (Some(s), Some(v)) if v < s => (v, false),
            (Some(s), _) => (s, true),
            (None, Some(v)) => (v, false),
            (None, None) => {
                out.push_str(rest);
                return out;
            }
        };
        out.push_str(rest.get(..at).unwrap_or_default());
        let quoted = rest
            .get(
                at + if is_string {
                    STRING.len()
                } else {
                    VARIANT.len()
                }..,
            )
            .unwrap_or_default();
        // Where the quoted value ends, and its length in bytes.
        let (end, len) = if is_string {
            // A Rust `{:?}` string: ends at the first `"` not escaped by a backslash.
            let bytes = quoted.as_bytes();
            let (mut i, mut len) = (0, 0);
            while let Some(&b) = bytes.get(i) {
                match b {
                    b'\\' => i += 1,
                    b'"' => break,
                    _ => {}
                }
                i += 1;
                len += 1;
            }
            (i, len)
        } else {
            // serde ends the name with "`, expected ..." or "`, there are no variants": the
            // last such marker is serde's own (the name may contain anything).
            let end = rfind(quoted, "`, expected ")
                .or_else(|| rfind(quoted, "`, there are no "))
                .or_else(|| rfind(quoted, "`"))
                .unwrap_or(quoted.len());
            (end, end)
        };
        if is_string {
            out.push_str("a string of ");
            out.push_str(&len.to_string());
            out.push_str(" bytes");
        } else {
            out.push_str("unknown variant (");
            out.push_str(&len.to_string());
            out.push_str(" bytes, not shown)");
        }
        rest = quoted.get(end + 1..).unwrap_or_default();
    }
}

/// The first byte offset of `needle` in `haystack` (a plain scan: smaller in wasm than `str::find`).
fn find(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

/// The last byte offset of `needle` in `haystack`.
fn rfind(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .rposition(|w| w == needle.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Optional {
        greeting: String,
        entries: Vec<Entry>,
    }
    impl FilterConfig for Optional {}

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        #[serde(default)]
        weight: u8,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Required {
        #[allow(dead_code)]
        upstream: String,
    }
    impl FilterConfig for Required {}

    fn parse_err<T: FilterConfig + std::fmt::Debug>(json: &str) -> ConfigError {
        match parse::<T>(json.as_bytes()) {
            Ok(value) => unreachable_ok(value),
            Err(err) => err,
        }
    }

    fn unreachable_ok<T: std::fmt::Debug>(value: T) -> ConfigError {
        ConfigError::at("<test>", format!("expected an error, parsed {value:?}"))
    }

    #[test]
    fn missing_field_names_the_entry() {
        let err = parse_err::<Optional>(r#"{"entries": [{"name": "a"}, {"weight": 1}]}"#);
        assert_eq!(err.path(), "entries[1]");
        assert_eq!(err.message(), "missing field `name`");
        assert_eq!(
            err.to_string(),
            "bad configuration at entries[1]: missing field `name` (line 1, column 41)"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_err::<Optional>(r#"{"entries": [{"name": "a", "weight": 300}]}"#);
        assert_eq!(err.path(), "entries[0].weight");
        assert!(
            err.message().starts_with("invalid value: integer `300`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let err = parse_err::<Optional>(r#"{"greting": "hi"}"#);
        assert_eq!(err.path(), "greting");
        assert_eq!(
            err.message(),
            "unknown field `greting`, expected `greeting` or `entries`"
        );
    }

    #[test]
    fn empty_configuration_uses_default_when_allowed() {
        assert_eq!(parse::<Optional>(b""), Ok(Optional::default()));
        assert_eq!(parse::<Optional>(b"  \n"), Ok(Optional::default()));
    }

    #[test]
    fn empty_configuration_is_refused_when_fields_are_required() {
        let err = parse_err::<Required>("");
        assert_eq!(
            err.to_string(),
            "bad configuration: the configuration is empty and this filter needs one: missing field `upstream`"
        );
    }

    #[test]
    fn malformed_json_and_trailing_data_are_refused() {
        let err = parse_err::<Optional>(r#"{"greeting": "hi""#);
        assert!(err.message().contains("EOF"), "{err}");
        let err = parse_err::<Optional>(r#"{} {}"#);
        assert_eq!(err.path(), "");
        assert_eq!(err.message(), "trailing characters");
        assert_eq!(err.position(), Some((1, 4)));
    }

    #[test]
    fn nested_paths_follow_keys_and_indexes() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            #[allow(dead_code)]
            inner: Vec<Optional>,
        }
        impl FilterConfig for Outer {}
        let err = parse_err::<Outer>(
            "{\"inner\": [\n  {},\n  {\"entries\": [{\"name\": \"x\"}, {\"name\": \"a\\\"}\", \"weight\": \"heavy\"}]}\n]}",
        );
        assert_eq!(err.path(), "inner[1].entries[1].weight", "{err}");
        let err = parse_err::<Outer>(r#"{"inner": [{"greeting": [1]}]}"#);
        assert_eq!(err.path(), "inner[0].greeting", "{err}");
        let err = parse_err::<Outer>(r#"{"inner": [{}, {"entries": [{"name": "a", "oops": 1}]}]}"#);
        assert_eq!(err.path(), "inner[1].entries[0].oops", "{err}");
        let err = parse_err::<Outer>(r#"{"inner": {}}"#);
        assert_eq!(err.path(), "inner", "{err}");
    }

    #[test]
    fn a_fields_own_refusal_names_the_field() {
        #[derive(Debug, Deserialize)]
        #[serde(try_from = "String")]
        struct Even(#[allow(dead_code)] String);
        impl TryFrom<String> for Even {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                if s.len().is_multiple_of(2) {
                    Ok(Even(s))
                } else {
                    Err(format!("{s:?} has an odd length"))
                }
            }
        }
        #[derive(Debug, Deserialize)]
        struct Holder {
            #[allow(dead_code)]
            items: Vec<Item>,
        }
        #[derive(Debug, Deserialize)]
        struct Item {
            #[allow(dead_code)]
            name: String,
            #[allow(dead_code)]
            code: Even,
        }
        impl FilterConfig for Holder {}
        let err = parse_err::<Holder>(
            r#"{"items": [{"name": "a", "code": "ab"}, {"code": "abc", "name": "b"}]}"#,
        );
        assert_eq!(err.path(), "items[1].code", "{err}");
        assert_eq!(err.message(), "\"abc\" has an odd length");
        // A missing field at the same `}` is about the object.
        let err = parse_err::<Holder>(r#"{"items": [{"name": "a"}]}"#);
        assert_eq!(err.path(), "items[0]", "{err}");
    }

    #[test]
    fn refusals_never_quote_string_values() {
        let err = parse_err::<Optional>(r#"{"entries": [{"name": "a", "weight": "hunter2"}]}"#);
        assert_eq!(err.path(), "entries[0].weight");
        assert_eq!(
            err.message(),
            "invalid type: a string of 7 bytes, expected u8",
            "{err}"
        );
        // Escaped quotes inside the value do not end it early.
        let err = parse_err::<Optional>(r#"{"entries": [{"name": "a", "weight": "a\"b\"c"}]}"#);
        assert_eq!(
            err.message(),
            "invalid type: a string of 5 bytes, expected u8",
            "{err}"
        );

        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Mode {
            Allow,
            Deny,
        }
        #[derive(Debug, Deserialize)]
        struct WithMode {
            #[allow(dead_code)]
            mode: Mode,
        }
        impl FilterConfig for WithMode {}
        let err = parse_err::<WithMode>(r#"{"mode": "s3cret-token"}"#);
        assert_eq!(err.path(), "mode");
        assert_eq!(
            err.message(),
            "unknown variant (12 bytes, not shown), expected `allow` or `deny`"
        );
        // A filter's own message goes through the same filter.
        let err = ConfigError::at("key", r#"invalid type: string "s3cret", expected a map"#);
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn a_huge_configuration_gives_a_bounded_error() {
        let huge = "x".repeat(10 * 1024 * 1024);
        let bound = MAX_PATH_BYTES + MAX_MESSAGE_BYTES + 200;
        // A huge value of the wrong type.
        let err = parse_err::<Optional>(&format!(
            r#"{{"entries": [{{"name": "a", "weight": "{huge}"}}]}}"#
        ));
        assert_eq!(err.path(), "entries[0].weight");
        assert!(
            err.to_string().len() < bound,
            "{} bytes",
            err.to_string().len()
        );
        assert!(err.message().contains("10485760 bytes"), "{err}");
        // A huge unknown key: the path and the name are cut.
        let err = parse_err::<Optional>(&format!(r#"{{"{huge}": 1}}"#));
        let text = err.to_string();
        assert!(text.len() < bound, "{} bytes", text.len());
        assert!(text.contains("unknown field `xxxx"), "{text}");
        // A huge message of a filter's own.
        let err = ConfigError::at(huge.clone(), huge.clone());
        assert!(err.to_string().len() < bound);
        assert!(err.message().ends_with("(10485760 bytes, cut)"), "{err}");
        // Cutting never splits a character.
        let err = ConfigError::at("", "é".repeat(MAX_MESSAGE_BYTES));
        assert!(err.message().starts_with('é'));
    }

    #[test]
    fn validate_runs_after_parsing() {
        #[derive(Debug, Deserialize)]
        struct Positive {
            n: i64,
        }
        impl FilterConfig for Positive {
            fn validate(&self) -> Result<(), ConfigError> {
                if self.n <= 0 {
                    return Err(ConfigError::at("n", "must be positive"));
                }
                Ok(())
            }
        }
        assert_eq!(
            parse_err::<Positive>(r#"{"n": 0}"#).to_string(),
            "bad configuration at n: must be positive"
        );
        assert!(parse::<Positive>(br#"{"n": 3}"#).is_ok_and(|p| p.n == 3));
    }
}
