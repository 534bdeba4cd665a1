//! Secrets in URLs and URL-like text, for the [`Anonymizer`].
//!
//! Free text is cut into runs at characters a URL never holds unencoded
//! (white space, quotes, `<>`, parentheses, braces). A run that looks like a
//! URL or a parameter list (it holds `://`, `?`, `#`, `;` or `=`) is taken
//! apart: user information is hashed; in path segments' `;name=value`
//! parameters, the query and the fragment, the value of a secret-named
//! parameter is hashed, and every other value is percent-decoded and scanned
//! again (a URL nested in a parameter is anonymized too). Other runs, and
//! what is left of URLs, are scanned for JWTs and e-mail addresses. What does
//! not change is kept byte for byte.

use super::{Anonymizer, is_secret_name, percent_decode, percent_encode};

/// Names that are secret as URL parameters (query, fragment, matrix) beyond
/// [`is_secret_name`]: OAuth's authorization `code`, session ids, one-time codes.
const URL_SECRET_NAMES: [&str; 6] = ["code", "sid", "otp", "pin", "sessid", "jsessionid"];

fn is_url_secret(name: &str) -> bool {
    is_secret_name(name)
        || URL_SECRET_NAMES
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.trim()))
}

/// Characters that end a run of free text (never unencoded in a URL).
fn ends_run(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '<' | '>' | '"' | '\'' | '`' | '(' | ')' | '{' | '}' | '\\'
        )
}

/// Percent-decoding for path segments (`+` is a plus there).
fn percent_decode_path(s: &str) -> String {
    percent_decode(&s.replace('+', "%2B"))
}

impl Anonymizer {
    /// See the module docs.
    pub(super) fn free_text(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while !rest.is_empty() {
            let start = rest.find(|c: char| !ends_run(c)).unwrap_or(rest.len());
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            let end = tail.find(ends_run).unwrap_or(tail.len());
            let run = &tail[..end];
            if run.contains("://") || run.contains(['?', '#', ';', '=']) {
                let url = self.url(run);
                out.push_str(&url);
            } else {
                let w = self.words(run);
                out.push_str(&w);
            }
            rest = &tail[end..];
        }
        out
    }

    /// A URL (absolute, a path, or a bare `name=value&...` list).
    pub(super) fn url(&mut self, u: &str) -> String {
        let (rest, fragment) = match u.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (u, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if query.is_none() && fragment.is_none() && !rest.contains('/') && rest.contains('=') {
            // `password=...`, `a=1&token=...` in free text: only names that are
            // secret anywhere (not `code`, common in prose).
            return self.params(rest, false);
        }
        let mut out = String::with_capacity(u.len());
        let mut path = rest;
        if let Some(i) = rest.find("://") {
            let after = &rest[i + 3..];
            let end = after.find('/').unwrap_or(after.len());
            let authority = &after[..end];
            out.push_str(&rest[..i + 3]);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let t = self.secret(&percent_decode_path(userinfo));
                    out.push_str(&t);
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            path = &after[end..];
        }
        let p = self.url_path(path);
        out.push_str(&p);
        if let Some(q) = query {
            out.push('?');
            let q = self.params(q, true);
            out.push_str(&q);
        }
        if let Some(f) = fragment {
            out.push('#');
            let f = if f.contains('=') {
                self.params(f, true)
            } else {
                self.segment(f)
            };
            out.push_str(&f);
        }
        out
    }

    /// A path: each segment's text and its `;name=value` parameters.
    fn url_path(&mut self, path: &str) -> String {
        let segments: Vec<String> = path
            .split('/')
            .map(|seg| {
                let mut parts = seg.split(';');
                let first = parts.next().unwrap_or_default();
                let mut s = self.segment(first);
                for param in parts {
                    s.push(';');
                    let p = self.param(param, true, false);
                    s.push_str(&p);
                }
                s
            })
            .collect();
        segments.join("/")
    }

    /// One path segment (or fragment) without parameters: JWTs and e-mail
    /// addresses, also percent-encoded.
    fn segment(&mut self, seg: &str) -> String {
        let decoded = percent_decode_path(seg);
        let replaced = self.words(&decoded);
        if replaced == decoded {
            seg.to_owned()
        } else {
            percent_encode(&replaced)
        }
    }

    /// A `name=value` list separated by `&` (or `;`).
    fn params(&mut self, list: &str, in_url: bool) -> String {
        let mut out = String::with_capacity(list.len());
        let mut rest = list;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let p = self.param(&rest[..end], in_url, true);
            out.push_str(&p);
            if end == rest.len() {
                break;
            }
            out.push_str(&rest[end..end + 1]);
            rest = &rest[end + 1..];
        }
        out
    }

    /// One `name=value` parameter (`form`: `+` is a space in the value).
    fn param(&mut self, pair: &str, in_url: bool, form: bool) -> String {
        let decode = |s: &str| {
            if form {
                percent_decode(s)
            } else {
                percent_decode_path(s)
            }
        };
        let Some((k, v)) = pair.split_once('=') else {
            return self.segment(pair);
        };
        let name = decode(k);
        let secret = if in_url {
            is_url_secret(&name)
        } else {
            is_secret_name(&name)
        };
        if secret {
            if v.is_empty() {
                return pair.to_owned();
            }
            let t = self.secret(&decode(v));
            return format!("{k}={t}");
        }
        let decoded = decode(v);
        // Shorter than `pair`, so the recursion ends.
        let replaced = self.free_text(&decoded);
        if replaced == decoded {
            pair.to_owned()
        } else {
            format!("{k}={}", percent_encode(&replaced))
        }
    }
}
