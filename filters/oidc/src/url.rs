//! The small part of URLs the filter needs: absolute `http(s)` URLs split into origin and path,
//! form encoding, query parameters, and the post-login target check (same-origin relative paths
//! only, so the login flow is never an open redirect).

/// An absolute `http`/`https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The path, `/` when empty.
    pub path: String,
    /// The query without `?`, when present.
    pub query: Option<String>,
}

impl Url {
    /// Parses `text`; `None` unless it is `http(s)://authority[/path][?query]` without fragment,
    /// userinfo, spaces or control characters.
    pub fn parse(text: &str) -> Option<Url> {
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) || text.contains('#') {
            return None;
        }
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        if authority.is_empty() || authority.contains(['@', '\\']) {
            return None;
        }
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (rest, None),
        };
        Some(Url {
            scheme,
            authority: authority.to_string(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.to_string()
            },
            query,
        })
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Path and query, as sent in `:path`.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749, appendix B), also
/// valid in a URL query.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Decodes `%XX` and `+`; `None` on a bad escape or bytes that are not UTF-8.
pub fn form_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of query parameter `name` in `path` (`/p?a=1&b=2`): `None` when absent, bad, or
/// given more than once (a repeated `state` or `code` is refused, not guessed at).
pub fn query_param(path: &str, name: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key).as_deref() == Some(name) {
            if found.is_some() {
                return None;
            }
            found = Some(form_decode(value)?);
        }
    }
    found
}

/// True when `target` is a same-origin relative path safe to redirect to after login: it starts
/// with one `/`, is not protocol-relative (`//host`, `/\host`, which browsers read as another
/// origin), and has no control characters, spaces or backslashes.
pub fn is_local_target(target: &str) -> bool {
    let bytes = target.as_bytes();
    !bytes.is_empty()
        && bytes[0] == b'/'
        && bytes.get(1).is_none_or(|&b| b != b'/' && b != b'\\')
        && !bytes.iter().any(|&b| b <= b' ' || b == 0x7f || b == b'\\')
        && target.len() <= 2048
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_refused() {
        let u =
            Url::parse("http://127.0.0.1:8080/oidc/callback?x=1").unwrap_or_else(|| unreachable!());
        assert_eq!(u.origin(), "http://127.0.0.1:8080");
        assert_eq!(u.path_and_query(), "/oidc/callback?x=1");
        assert_eq!(
            Url::parse("https://idp.test").map(|u| u.path),
            Some("/".into())
        );
        for bad in [
            "ftp://x/",
            "http://",
            "http://u@evil/",
            "http://a b/",
            "/relative",
            "http://x/#f",
        ] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_params_decode_and_repeats_are_refused() {
        assert_eq!(
            query_param("/cb?code=a%2Bb&state=s+t", "code"),
            Some("a+b".into())
        );
        assert_eq!(
            query_param("/cb?code=a%2Bb&state=s+t", "state"),
            Some("s t".into())
        );
        assert_eq!(query_param("/cb?state=a&state=b", "state"), None);
        assert_eq!(query_param("/cb?state=%zz", "state"), None);
        assert_eq!(query_param("/cb", "state"), None);
        assert_eq!(form_encode("a b/&é"), "a%20b%2F%26%C3%A9");
        assert_eq!(form_decode(&form_encode("x y=z&ü")), Some("x y=z&ü".into()));
    }

    #[test]
    fn only_same_origin_relative_targets_are_local() {
        for ok in ["/", "/app?x=1", "/a/b#c", "/%2F%2Fevil.test"] {
            assert!(is_local_target(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil.test",
            "/\\evil.test",
            "https://evil.test/",
            "evil.test",
            "/a\\b",
            "/a\r\nSet-Cookie: x",
            "javascript:alert(1)",
            " /x",
        ] {
            assert!(!is_local_target(bad), "{bad:?}");
        }
    }
}
