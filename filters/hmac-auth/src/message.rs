//! RFC 9421 on the wire: the `Signature-Input` and `Signature` dictionaries (the subset of
//! RFC 8941 structured fields they use), the components a signature covers, and the signature
//! base rebuilt from a request.
//!
//! Strict by design: anything this filter does not understand (component parameters such as
//! `;sf` or `;req`, derived components it does not implement, duplicate components or
//! parameters, malformed syntax) is an error, never skipped: a verifier that ignores part of
//! what was signed can be made to accept what was not.

use base64::Engine;

/// One signature's metadata: the covered components and the parameters, in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInput {
    /// Covered component names, lowercase (`@method`, `content-digest`).
    pub components: Vec<String>,
    /// Parameters in order (`created`, `keyid`, `nonce`, `alg`, `expires`, `tag`).
    pub params: Vec<(String, Param)>,
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// An integer.
    Integer(i64),
    /// A string.
    String(String),
}

impl SignatureInput {
    /// The string parameter `name`.
    pub fn string(&self, name: &str) -> Option<&str> {
        self.params.iter().find_map(|(n, v)| match v {
            Param::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// The integer parameter `name`.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.params.iter().find_map(|(n, v)| match v {
            Param::Integer(i) if n == name => Some(*i),
            _ => None,
        })
    }

    /// Whether parameter `name` is present (of any type).
    pub fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(n, _)| n == name)
    }

    /// The canonical serialization (RFC 8941 section 4.1.1.1), the `@signature-params` value.
    pub fn serialize(&self) -> String {
        let mut out = String::from("(");
        for (i, component) in self.components.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&quote(component));
        }
        out.push(')');
        for (name, value) in &self.params {
            out.push(';');
            out.push_str(name);
            out.push('=');
            match value {
                Param::Integer(i) => out.push_str(&i.to_string()),
                Param::String(s) => out.push_str(&quote(s)),
            }
        }
        out
    }
}

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A small cursor over a header value.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text: text.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    /// An RFC 8941 key: lcalpha or `*`, then lcalpha, digits, `_-.*`.
    fn key(&mut self) -> Result<String, String> {
        let start = self.at;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.at += 1,
            _ => return Err(format!("expected a key at byte {start}")),
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.at += 1;
        }
        Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    fn string(&mut self) -> Result<String, String> {
        if !self.eat(b'"') {
            return Err(format!("expected a string at byte {}", self.at));
        }
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(char::from(c));
                            self.at += 1;
                        }
                        _ => return Err("bad escape in a string".into()),
                    }
                }
                Some(c @ 0x20..=0x7e) => {
                    out.push(char::from(c));
                    self.at += 1;
                }
                Some(_) => return Err("a string holds a byte outside printable ASCII".into()),
            }
        }
    }

    fn integer(&mut self) -> Result<i64, String> {
        let start = self.at;
        self.eat(b'-');
        let digits = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let len = self.at - digits;
        if len == 0 || len > 15 {
            return Err(format!("bad integer at byte {start}"));
        }
        std::str::from_utf8(&self.text[start..self.at])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad integer at byte {start}"))
    }

    fn byte_sequence(&mut self) -> Result<Vec<u8>, String> {
        if !self.eat(b':') {
            return Err(format!("expected a byte sequence at byte {}", self.at));
        }
        let start = self.at;
        while matches!(
            self.peek(),
            Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=')
        ) {
            self.at += 1;
        }
        let end = self.at;
        if !self.eat(b':') {
            return Err("unterminated byte sequence".into());
        }
        base64::engine::general_purpose::STANDARD
            .decode(&self.text[start..end])
            .map_err(|e| format!("bad base64 in a byte sequence: {e}"))
    }

    /// Parameters `;k=v...` (strings and integers only; a bare key is refused).
    fn params(&mut self) -> Result<Vec<(String, Param)>, String> {
        let mut params: Vec<(String, Param)> = Vec::new();
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            if !self.eat(b'=') {
                return Err(format!("parameter `{key}` has no value"));
            }
            let value = match self.peek() {
                Some(b'"') => Param::String(self.string()?),
                Some(b'-' | b'0'..=b'9') => Param::Integer(self.integer()?),
                _ => {
                    return Err(format!(
                        "parameter `{key}` is neither a string nor an integer"
                    ));
                }
            };
            if params.iter().any(|(k, _)| *k == key) {
                return Err(format!("parameter `{key}` is repeated"));
            }
            params.push((key, value));
        }
        Ok(params)
    }

    /// Dictionary members `key=<member>` separated by commas.
    fn dictionary<T>(
        &mut self,
        mut member: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<(String, T)>, String> {
        let mut out: Vec<(String, T)> = Vec::new();
        self.skip_sp();
        while !self.done() {
            let key = self.key()?;
            if !self.eat(b'=') {
                return Err(format!("member `{key}` has no value"));
            }
            let value = member(self)?;
            // RFC 8941: a repeated key overrides; here it is refused (which one was signed?).
            if out.iter().any(|(k, _)| *k == key) {
                return Err(format!("member `{key}` is repeated"));
            }
            out.push((key, value));
            self.skip_ows();
            if self.done() {
                break;
            }
            if !self.eat(b',') {
                return Err(format!("expected `,` at byte {}", self.at));
            }
            self.skip_ows();
            if self.done() {
                return Err("trailing comma".into());
            }
        }
        Ok(out)
    }
}

/// The `Signature-Input` dictionary: label to its metadata.
pub fn parse_signature_input(value: &str) -> Result<Vec<(String, SignatureInput)>, String> {
    let mut parser = Parser::new(value);
    parser.dictionary(|p| {
        if !p.eat(b'(') {
            return Err(format!("expected an inner list at byte {}", p.at));
        }
        let mut components: Vec<String> = Vec::new();
        loop {
            p.skip_sp();
            if p.eat(b')') {
                break;
            }
            let name = p.string()?;
            if p.peek() == Some(b';') {
                return Err(format!(
                    "component \"{name}\" has parameters, which this verifier does not support"
                ));
            }
            if components.contains(&name) {
                return Err(format!("component \"{name}\" is covered twice"));
            }
            components.push(name);
            if !matches!(p.peek(), Some(b' ' | b')')) {
                return Err(format!("expected ` ` or `)` at byte {}", p.at));
            }
        }
        let params = p.params()?;
        Ok(SignatureInput { components, params })
    })
}

/// The `Signature` dictionary: label to signature bytes.
pub fn parse_signature(value: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut parser = Parser::new(value);
    parser.dictionary(|p| {
        let bytes = p.byte_sequence()?;
        if p.peek() == Some(b';') {
            p.params()?;
        }
        Ok(bytes)
    })
}

/// What the signature base is built from.
pub struct RequestParts<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:authority`.
    pub authority: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// `:path` (with the query).
    pub path: &'a str,
    /// Every header, names in any case.
    pub headers: &'a [(String, String)],
}

/// The value of `component` in the request (RFC 9421 section 2).
pub fn component_value(parts: &RequestParts<'_>, component: &str) -> Result<String, String> {
    let (path, query) = match parts.path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (parts.path, None),
    };
    Ok(match component {
        "@method" => parts.method.to_string(),
        "@authority" => parts.authority.to_ascii_lowercase(),
        "@scheme" => parts.scheme.to_ascii_lowercase(),
        "@path" => {
            if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            }
        }
        "@query" => format!("?{}", query.unwrap_or("")),
        "@target-uri" => format!(
            "{}://{}{}",
            parts.scheme.to_ascii_lowercase(),
            parts.authority.to_ascii_lowercase(),
            parts.path
        ),
        "@request-target" => parts.path.to_string(),
        name if name.starts_with('@') => {
            return Err(format!("derived component \"{name}\" is not supported"));
        }
        name => {
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!("component \"{name}\" must be lowercase"));
            }
            let values: Vec<&str> = parts
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim_matches([' ', '\t']))
                .collect();
            if values.is_empty() {
                return Err(format!("covered header \"{name}\" is not in the request"));
            }
            values.join(", ")
        }
    })
}

/// The signature base (RFC 9421 section 2.5) for `input` over the request.
pub fn signature_base(parts: &RequestParts<'_>, input: &SignatureInput) -> Result<String, String> {
    let mut base = String::new();
    for component in &input.components {
        let value = component_value(parts, component)?;
        if value.contains('\n') || value.contains('\r') {
            return Err(format!("component \"{component}\" holds a line break"));
        }
        base.push_str(&quote(component));
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&input.serialize());
    Ok(base)
}
