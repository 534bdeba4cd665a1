//! The JSON rewriter: one pass over a document (RFC 8259, UTF-8), validating it and writing the
//! masked copy. Scalars keep their original text (numbers are never reformatted, strings keep
//! their escapes) unless a rule changes them; structure is written compactly. The caller keeps
//! the original bytes when nothing changed ([`Rewrite::Unchanged`]), so a document no rule
//! touches goes on byte for byte.
//!
//! Nesting deeper than [`MAX_DEPTH`] is not inspected ([`Rewrite::TooDeep`]): the parser recurses,
//! and a bounded depth keeps a hostile document from exhausting the wasm stack.

use crate::rules::{Action, Rules, Segment};

/// The deepest nesting inspected (objects and arrays).
pub const MAX_DEPTH: usize = 128;

/// What [`rewrite`] made of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// No rule applied: the document goes on as it is.
    Unchanged,
    /// The masked document (valid JSON), and how many values were changed.
    Masked(Vec<u8>, usize),
    /// Not JSON (syntax error at this byte offset, or not UTF-8).
    Invalid(usize),
    /// Nested deeper than [`MAX_DEPTH`]: not inspected.
    TooDeep,
}

/// Masks `input` with `rules`.
///
/// ```
/// use tollgate_json_mask::json::{rewrite, Rewrite};
/// let rules = tollgate_json_mask::rules::Rules::for_tests(&[r#"{"key": "password"}"#]);
/// let out = rewrite(br#"{"user": "ada", "password": "hunter2"}"#, &rules);
/// assert_eq!(out, Rewrite::Masked(br#"{"user":"ada","password":"[REDACTED]"}"#.to_vec(), 1));
/// assert_eq!(rewrite(br#" {"user": "ada"} "#, &rules), Rewrite::Unchanged);
/// assert!(matches!(rewrite(br#"{"user": }"#, &rules), Rewrite::Invalid(9)));
/// ```
pub fn rewrite(input: &[u8], rules: &Rules) -> Rewrite {
    let mut parser = Parser {
        input,
        pos: 0,
        out: Vec::with_capacity(input.len()),
        path: Vec::new(),
        rules,
        changes: 0,
        quiet: false,
        key_buf: Vec::new(),
    };
    match parser.document() {
        Ok(()) if parser.changes == 0 => Rewrite::Unchanged,
        Ok(()) => Rewrite::Masked(parser.out, parser.changes),
        Err(Stop::Syntax(at)) => Rewrite::Invalid(at),
        Err(Stop::Deep) => Rewrite::TooDeep,
    }
}

enum Stop {
    Syntax(usize),
    Deep,
}

/// One step of the path to the current value: an object key (decoded) or an array index.
#[derive(Debug, Clone)]
pub enum Step {
    /// A member of an object.
    Key(String),
    /// An element of an array.
    Index(usize),
}

impl Step {
    /// Whether path segment `segment` matches this step.
    pub fn matched_by(&self, segment: &Segment) -> bool {
        match (segment, self) {
            (Segment::Any, _) => true,
            (Segment::Key(k), Step::Key(key)) => k == key,
            (Segment::Index(i), Step::Index(index)) => i == index,
            _ => false,
        }
    }
}

/// How a value is written.
#[derive(Clone, Copy)]
enum Mode {
    /// Detectors apply to strings (and card numbers); key and path rules to members.
    Inspect,
    /// Every scalar inside is masked (a `mask` rule matched a container).
    Mask { keep_last: usize },
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    path: Vec<Step>,
    rules: &'a Rules,
    changes: usize,
    /// Validating a value that is being replaced: no rule applies, nothing written stays.
    quiet: bool,
    /// The current member's key as it is written.
    key_buf: Vec<u8>,
}

type Parsed<T> = Result<T, Stop>;

impl Parser<'_> {
    fn document(&mut self) -> Parsed<()> {
        self.skip_ws();
        let action = self.action();
        self.value(Mode::Inspect, action)?;
        self.skip_ws();
        if self.pos != self.input.len() {
            return Err(Stop::Syntax(self.pos));
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Parsed<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Stop::Syntax(self.pos))
        }
    }

    /// A value at the current path; `action` is what the path and key rules say about it.
    fn value(&mut self, mode: Mode, action: Option<Action>) -> Parsed<()> {
        let mode = match action {
            // Removal is decided by the container (`object`, `array`); a removed root is redacted.
            Some(Action::Redact | Action::Remove) => {
                self.skip_value()?;
                self.write_replacement();
                return Ok(());
            }
            Some(Action::Mask { keep_last }) => Mode::Mask { keep_last },
            None => mode,
        };
        match self.peek() {
            Some(b'{') => self.object(mode),
            Some(b'[') => self.array(mode),
            Some(b'"') => {
                let start = self.pos;
                let text = self.string()?;
                self.write_string_value(start, &text, mode);
                Ok(())
            }
            Some(_) => {
                let start = self.pos;
                self.scalar()?;
                self.write_scalar(start, mode);
                Ok(())
            }
            None => Err(Stop::Syntax(self.pos)),
        }
    }

    /// The path and key rules' action for the current path (none while skipping).
    fn action(&self) -> Option<Action> {
        if self.quiet {
            None
        } else {
            self.rules.for_path(&self.path)
        }
    }

    fn enter(&self) -> Parsed<()> {
        if self.path.len() >= MAX_DEPTH {
            Err(Stop::Deep)
        } else {
            Ok(())
        }
    }

    fn object(&mut self, mode: Mode) -> Parsed<()> {
        self.enter()?;
        self.pos += 1;
        self.out.push(b'{');
        self.skip_ws();
        let mut written = 0usize;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.out.push(b'}');
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Stop::Syntax(self.pos));
            }
            let key_start = self.pos;
            let key = self.string()?;
            let key_end = self.pos;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            self.write_key_into(key_start, key_end, &key);
            self.path.push(Step::Key(key));
            let action = self.action();
            if action == Some(Action::Remove) {
                self.skip_value()?;
                self.changes += 1;
            } else {
                if written > 0 {
                    self.out.push(b',');
                }
                written += 1;
                self.out.extend_from_slice(&self.key_buf);
                self.out.push(b':');
                self.value(mode, action)?;
            }
            self.path.pop();
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.out.push(b'}');
                    return Ok(());
                }
                _ => return Err(Stop::Syntax(self.pos)),
            }
        }
    }

    fn array(&mut self, mode: Mode) -> Parsed<()> {
        self.enter()?;
        self.pos += 1;
        self.out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.out.push(b']');
            return Ok(());
        }
        let mut index = 0usize;
        let mut written = 0usize;
        loop {
            self.skip_ws();
            self.path.push(Step::Index(index));
            let action = self.action();
            if action == Some(Action::Remove) {
                self.skip_value()?;
                self.changes += 1;
            } else {
                if written > 0 {
                    self.out.push(b',');
                }
                written += 1;
                self.value(mode, action)?;
            }
            self.path.pop();
            index += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.out.push(b']');
                    return Ok(());
                }
                _ => return Err(Stop::Syntax(self.pos)),
            }
        }
    }

    /// Validates a value without writing it (it is being replaced or removed).
    fn skip_value(&mut self) -> Parsed<()> {
        let mark = self.out.len();
        let changes = self.changes;
        let quiet = std::mem::replace(&mut self.quiet, true);
        let result = match self.peek() {
            Some(b'{') => self.object(Mode::Inspect),
            Some(b'[') => self.array(Mode::Inspect),
            Some(b'"') => self.string().map(drop),
            Some(_) => self.scalar(),
            None => Err(Stop::Syntax(self.pos)),
        };
        self.quiet = quiet;
        self.out.truncate(mark);
        self.changes = changes;
        result
    }

    /// A string starting at the current `"`: validated and decoded.
    fn string(&mut self) -> Parsed<String> {
        self.pos += 1;
        let mut text = String::new();
        loop {
            let start = self.pos;
            // A run of plain bytes, copied at once.
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let run = &self.input[start..self.pos];
            match std::str::from_utf8(run) {
                Ok(run) => text.push_str(run),
                Err(err) => return Err(Stop::Syntax(start + err.valid_up_to())),
            }
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(text);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut text)?;
                }
                _ => return Err(Stop::Syntax(self.pos)),
            }
        }
    }

    fn escape(&mut self, text: &mut String) -> Parsed<()> {
        let Some(b) = self.peek() else {
            return Err(Stop::Syntax(self.pos));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                if (0xD800..0xDC00).contains(&first)
                    && self.input.get(self.pos..self.pos + 2) == Some(b"\\u")
                {
                    let save = self.pos;
                    self.pos += 2;
                    let second = self.hex4()?;
                    if (0xDC00..0xE000).contains(&second) {
                        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(code).unwrap_or('\u{FFFD}')
                    } else {
                        // A lone high surrogate, then another escape: read that one next.
                        self.pos = save;
                        '\u{FFFD}'
                    }
                } else {
                    // Lone surrogates are legal JSON text; they stand for U+FFFD when matched.
                    char::from_u32(first).unwrap_or('\u{FFFD}')
                }
            }
            _ => return Err(Stop::Syntax(self.pos - 1)),
        };
        text.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or(Stop::Syntax(self.pos))?;
        let mut value = 0u32;
        for (i, d) in digits.iter().enumerate() {
            let v = (*d as char)
                .to_digit(16)
                .ok_or(Stop::Syntax(self.pos + i))?;
            value = value * 16 + v;
        }
        self.pos += 4;
        Ok(value)
    }

    /// A number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Parsed<()> {
        for word in [&b"true"[..], b"false", b"null"] {
            if self.input[self.pos..].starts_with(word) {
                self.pos += word.len();
                return Ok(());
            }
        }
        self.number()
    }

    fn number(&mut self) -> Parsed<()> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Stop::Syntax(start)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(Stop::Syntax(self.pos));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(Stop::Syntax(self.pos));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn write_replacement(&mut self) {
        let replacement = self.rules.replacement();
        write_json_string(&mut self.out, replacement);
        self.changes += 1;
    }

    /// The key as written (in `key_buf`): detectors apply to keys too.
    fn write_key_into(&mut self, start: usize, end: usize, key: &str) {
        self.key_buf.clear();
        match (!self.quiet).then(|| self.rules.detect(key)).flatten() {
            Some(masked) => {
                write_json_string(&mut self.key_buf, &masked);
                self.changes += 1;
            }
            None => self.key_buf.extend_from_slice(&self.input[start..end]),
        }
    }

    fn write_string_value(&mut self, start: usize, text: &str, mode: Mode) {
        let changed = match mode {
            _ if self.quiet => None,
            Mode::Mask { keep_last } => Some(crate::rules::mask_text(text, keep_last)),
            Mode::Inspect => self.rules.detect(text),
        };
        match changed {
            Some(new) if new != text => {
                write_json_string(&mut self.out, &new);
                self.changes += 1;
            }
            _ => self.out.extend_from_slice(&self.input[start..self.pos]),
        }
    }

    fn write_scalar(&mut self, start: usize, mode: Mode) {
        let raw = &self.input[start..self.pos];
        // Only the grammar's ASCII can be here.
        let lexeme = std::str::from_utf8(raw).unwrap_or_default();
        let changed = match mode {
            _ if self.quiet => None,
            Mode::Mask { .. } if lexeme == "null" => None,
            // A boolean is masked whole (its last letter would tell which).
            Mode::Mask { .. } if lexeme == "true" || lexeme == "false" => {
                Some(crate::rules::mask_text(lexeme, 0))
            }
            Mode::Mask { keep_last } => Some(crate::rules::mask_text(lexeme, keep_last)),
            Mode::Inspect => self.rules.detect(lexeme),
        };
        match changed {
            Some(new) => {
                write_json_string(&mut self.out, &new);
                self.changes += 1;
            }
            None => self.out.extend_from_slice(raw),
        }
    }
}

/// Writes `text` as a JSON string: `"`, `\` and control characters escaped, the rest as UTF-8.
///
/// ```
/// let mut out = Vec::new();
/// tollgate_json_mask::json::write_json_string(&mut out, "a\"b\\c\n\u{1}é");
/// assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\n\u0001é""#);
/// ```
pub fn write_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let v = c as usize;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[v >> 4]);
                out.push(HEX[v & 0xf]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}
