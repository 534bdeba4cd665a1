//! The compiled rules: path and key rules (which value is replaced, masked or removed) and value
//! detectors (card numbers with a Luhn check, e-mail addresses, configured regular expressions),
//! which replace what they find inside strings, keys and numbers.
//!
//! Built once per configuration by [`crate::JsonMaskConfig`]'s validation.

use std::ops::Range;

use regex_lite::Regex;

use crate::json::Step;

/// What a rule does to what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace with the configured replacement string.
    Redact,
    /// Replace every character with `*`, except the last `keep_last` (at most a quarter of them).
    Mask {
        /// Characters left visible at the end.
        keep_last: usize,
    },
    /// Remove the member or element (path and key rules only).
    Remove,
}

/// One segment of a path rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object member by name.
    Key(String),
    /// An array element by position.
    Index(usize),
    /// Any member or element (`*`).
    Any,
}

/// A value detector.
#[derive(Debug)]
pub enum Detector {
    /// 13 to 19 digits (single spaces or dashes between them) passing the Luhn check.
    Card,
    /// `local@domain.tld`.
    Email,
    /// A configured regular expression (`regex-lite` syntax), found anywhere.
    Regex(Regex),
}

/// Every rule of a configuration, compiled.
#[derive(Debug, Default)]
pub struct Rules {
    paths: Vec<(Vec<Segment>, Action)>,
    /// Key names, lower-cased (matched ignoring ASCII case).
    keys: Vec<(String, Action)>,
    detectors: Vec<(Detector, Action)>,
    replacement: String,
}

impl Rules {
    /// Rules with this replacement string and nothing else yet.
    pub fn new(replacement: &str) -> Self {
        Self {
            replacement: replacement.to_string(),
            ..Self::default()
        }
    }

    /// Adds a path rule.
    pub fn add_path(&mut self, path: Vec<Segment>, action: Action) {
        self.paths.push((path, action));
    }

    /// Adds a key-name rule.
    pub fn add_key(&mut self, key: &str, action: Action) {
        self.keys.push((key.to_ascii_lowercase(), action));
    }

    /// Adds a detector (its action is never [`Action::Remove`]).
    pub fn add_detector(&mut self, detector: Detector, action: Action) {
        self.detectors.push((detector, action));
    }

    /// Rules from configuration rule objects (JSON), for examples and tests; panics on a bad one.
    #[doc(hidden)]
    #[allow(clippy::expect_used)]
    pub fn for_tests(rules: &[&str]) -> Rules {
        let json = format!(r#"{{"rules": [{}]}}"#, rules.join(","));
        let config: crate::JsonMaskConfig =
            tollgate_sdk::config::parse(json.as_bytes()).expect("test rules");
        config.take_rules()
    }

    /// The replacement string of [`Action::Redact`].
    pub fn replacement(&self) -> &str {
        &self.replacement
    }

    /// Whether any detector is configured.
    pub fn has_detectors(&self) -> bool {
        !self.detectors.is_empty()
    }

    /// What the path rules (first match), else the key rules (first match on the last key),
    /// say about the value at `path`.
    pub fn for_path(&self, path: &[Step]) -> Option<Action> {
        for (segments, action) in &self.paths {
            if segments.len() == path.len()
                && segments
                    .iter()
                    .zip(path)
                    .all(|(s, step)| step.matched_by(s))
            {
                return Some(*action);
            }
        }
        if self.keys.is_empty() {
            return None;
        }
        let Some(Step::Key(key)) = path.last() else {
            return None;
        };
        self.keys
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, a)| *a)
    }

    /// `text` with what the detectors find replaced, or `None` when they find nothing.
    ///
    /// ```
    /// let rules = tollgate_json_mask::rules::Rules::for_tests(&[
    ///     r#"{"detect": "card", "action": "mask"}"#, r#"{"detect": "email"}"#,
    /// ]);
    /// assert_eq!(rules.detect("pay 4111 1111 1111 1111 now").as_deref(), Some("pay ***************1111 now"));
    /// assert_eq!(rules.detect("to ada@example.com.").as_deref(), Some("to [REDACTED]."));
    /// assert_eq!(rules.detect("4111 1111 1111 1112"), None);
    /// ```
    pub fn detect(&self, text: &str) -> Option<String> {
        if self.detectors.is_empty() {
            return None;
        }
        let mut found: Vec<(Range<usize>, Action)> = Vec::new();
        for (detector, action) in &self.detectors {
            let ranges = match detector {
                Detector::Card => cards(text),
                Detector::Email => emails(text),
                Detector::Regex(re) => re
                    .find_iter(text)
                    .filter(|m| !m.is_empty())
                    .map(|m| m.range())
                    .collect(),
            };
            found.extend(ranges.into_iter().map(|r| (r, *action)));
        }
        if found.is_empty() {
            return None;
        }
        found.sort_by_key(|(r, _)| (r.start, usize::MAX - r.end));
        // Overlapping finds merge into one; redaction wins over masking.
        let mut merged: Vec<(Range<usize>, Action)> = Vec::new();
        for (range, action) in found {
            match merged.last_mut() {
                Some((last, last_action)) if range.start < last.end => {
                    last.end = last.end.max(range.end);
                    if action == Action::Redact {
                        *last_action = Action::Redact;
                    }
                }
                _ => merged.push((range, action)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, action) in merged {
            out.push_str(text.get(at..range.start).unwrap_or_default());
            let found = text.get(range.clone()).unwrap_or_default();
            match action {
                Action::Mask { keep_last } => out.push_str(&mask_text(found, keep_last)),
                Action::Redact | Action::Remove => out.push_str(&self.replacement),
            }
            at = range.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Some(out)
    }
}

/// `text` with every character but the last `keep_last` replaced by `*`; at most a quarter of
/// the characters stay visible, so a short secret is masked whole.
///
/// ```
/// use tollgate_json_mask::rules::mask_text;
/// assert_eq!(mask_text("4111111111111111", 4), "************1111");
/// assert_eq!(mask_text("hunter2", 4), "******2");
/// assert_eq!(mask_text("abc", 4), "***");
/// ```
pub fn mask_text(text: &str, keep_last: usize) -> String {
    let count = text.chars().count();
    let keep = keep_last.min(count / 4);
    let mut out = String::with_capacity(count);
    for (i, c) in text.chars().enumerate() {
        out.push(if i + keep < count { '*' } else { c });
    }
    out
}

/// Whether `digits` (ASCII digits) pass the Luhn check.
///
/// ```
/// assert!(tollgate_json_mask::rules::luhn(b"4111111111111111"));
/// assert!(!tollgate_json_mask::rules::luhn(b"4111111111111112"));
/// ```
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if !i.is_multiple_of(2) {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Card numbers in `text`: runs of digit groups separated by one space or dash, not touching
/// other digits; within a run, the longest sequence of whole groups with 13 to 19 digits that
/// passes the Luhn check (so `4111 1111 1111 1111 2030` finds the card before the year).
pub fn cards(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // The run of groups starting here.
        let mut groups: Vec<Range<usize>> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(start..j);
            let separated = matches!(bytes.get(j), Some(b' ' | b'-'))
                && bytes.get(j + 1).is_some_and(u8::is_ascii_digit);
            if !separated {
                break;
            }
            j += 1;
        }
        let mut g = 0;
        while g < groups.len() {
            let mut matched = None;
            for end in (g + 1..=groups.len()).rev() {
                let digits: Vec<u8> = groups[g..end]
                    .iter()
                    .flat_map(|r| bytes[r.clone()].iter().copied())
                    .collect();
                if (13..=19).contains(&digits.len()) && luhn(&digits) {
                    matched = Some(end);
                    break;
                }
            }
            match matched {
                Some(end) => {
                    found.push(groups[g].start..groups[end - 1].end);
                    g = end;
                }
                None => g += 1,
            }
        }
        i = j.max(i + 1);
    }
    found
}

fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// E-mail addresses in `text`: `local@domain` where the local part is made of letters, digits
/// and `._%+-`, and the domain has at least two labels, the last of two letters or more.
pub fn emails(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    let mut at = 0;
    while let Some(offset) = bytes
        .get(at..)
        .and_then(|b| b.iter().position(|&c| c == b'@'))
    {
        let sign = at + offset;
        at = sign + 1;
        let mut start = sign;
        while start > from && local_char(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = sign + 1;
        while end < bytes.len() && domain_char(bytes[end]) {
            end += 1;
        }
        // A domain does not end with a dot or dash (`mail ada@example.com.`).
        while end > sign + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start == sign {
            continue;
        }
        let domain = &text[sign + 1..end];
        let labels: Vec<&str> = domain.split('.').collect();
        let valid = labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty())
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        if valid {
            found.push(start..end);
            from = end;
            at = end;
        }
    }
    found
}

/// Parses a path rule: `$` then `.name`, `['name']`, `["name"]`, `[3]`, `.*` or `[*]` steps.
///
/// ```
/// use tollgate_json_mask::rules::{parse_path, Segment};
/// assert_eq!(parse_path("$.user.cards[*].number"), Ok(vec![
///     Segment::Key("user".into()), Segment::Key("cards".into()), Segment::Any, Segment::Key("number".into()),
/// ]));
/// assert_eq!(parse_path("$['odd.key'][0]"), Ok(vec![Segment::Key("odd.key".into()), Segment::Index(0)]));
/// assert!(parse_path("user.name").is_err());
/// ```
pub fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let Some(mut rest) = path.strip_prefix('$') else {
        return Err(format!("{path:?} does not start with $"));
    };
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() {
                return Err(format!("{path:?}: empty name after a dot"));
            }
            segments.push(if name == "*" {
                Segment::Any
            } else {
                Segment::Key(name.to_string())
            });
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            if let Some(quote) = after.chars().next().filter(|c| *c == '\'' || *c == '"') {
                let body = &after[1..];
                let Some(close) = body.find(quote) else {
                    return Err(format!("{path:?}: unterminated quoted name"));
                };
                let Some(next) = body[close + 1..].strip_prefix(']') else {
                    return Err(format!("{path:?}: expected ] after a quoted name"));
                };
                segments.push(Segment::Key(body[..close].to_string()));
                rest = next;
            } else {
                let Some(close) = after.find(']') else {
                    return Err(format!("{path:?}: unterminated ["));
                };
                let inner = &after[..close];
                segments.push(if inner == "*" {
                    Segment::Any
                } else {
                    Segment::Index(inner.parse().map_err(|_| {
                        format!("{path:?}: [{inner}] is not an index, * or a quoted name")
                    })?)
                });
                rest = &after[close + 1..];
            }
        } else {
            return Err(format!("{path:?}: expected . or [ at {rest:?}"));
        }
    }
    Ok(segments)
}
