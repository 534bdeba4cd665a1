//! Where the tokens of a request are: every configured location of every provider (headers,
//! query parameters, cookies), found in one walk of the request's header map.
//!
//! Planned once per configuration ([`Plan`]: the distinct places, and which provider reads
//! which), then per request the walk borrows from the map the host handed over: a token found
//! in a header or a cookie is a slice of that buffer, not a copy (only a percent-decoded query
//! parameter is new). A repeated token is then looked up in the verified-token cache with
//! those bytes; nothing is copied, decoded or checked as UTF-8 unless the cache misses.

use std::borrow::Cow;

use tollgate_sdk::headers::{WirePairs, ascii_str};
use tollgate_sdk::http::percent_decode;

use crate::{Config, Location};

/// The token locations of a configuration, worked out once ([`Config::plan`]).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Every distinct place a token is read from; a [`Candidate`] names one by index.
    pub places: Vec<Location>,
    /// Per provider, each of its `from_headers` (in order): its place, the index of its name
    /// in `token_names` and its value prefix.
    headers: Vec<Vec<(usize, usize, Folded)>>,
    /// Per provider, the place of each of its `from_params` and `from_cookies`.
    params: Vec<Vec<usize>>,
    cookies: Vec<Vec<usize>>,
    /// Every `claim_to_headers` header name: a client-sent one is noted by the walk.
    claim_names: Vec<Folded>,
    /// The names of every `from_headers` header (each once, case-insensitively).
    token_names: Vec<Folded>,
    /// `cookie`, as the walk compares it.
    cookie: Folded,
    /// Bit `n` set: some name the walk looks for is `n` bytes long (names of 64 bytes or more
    /// set bit 63). Most request headers have none of these lengths and are passed over
    /// without a comparison.
    lengths: u64,
    /// Some provider reads query parameters (`:path` is needed) or cookies.
    wants_path: bool,
    wants_cookie: bool,
    /// Some provider caches verified tokens.
    pub caches: bool,
}

impl Plan {
    pub(crate) fn of(config: &Config) -> Self {
        let mut plan = Plan {
            cookie: Folded::new("cookie"),
            ..Plan::default()
        };
        let place = |plan: &mut Plan, location: Location| match plan
            .places
            .iter()
            .position(|p| *p == location)
        {
            Some(at) => at,
            None => {
                plan.places.push(location);
                plan.places.len() - 1
            }
        };
        for p in &config.providers {
            for h in &p.from_headers {
                if !plan
                    .token_names
                    .iter()
                    .any(|n| n.matches(h.name.as_bytes()))
                {
                    plan.token_names.push(Folded::new(&h.name));
                }
            }
            let headers = p
                .from_headers
                .iter()
                .map(|h| {
                    let name = plan
                        .token_names
                        .iter()
                        .position(|n| n.matches(h.name.as_bytes()))
                        .unwrap_or_default();
                    let at = place(&mut plan, Location::Header(h.name.to_ascii_lowercase()));
                    (at, name, Folded::new(&h.value_prefix))
                })
                .collect();
            plan.headers.push(headers);
            let params = p
                .from_params
                .iter()
                .map(|name| place(&mut plan, Location::Param(name.clone())))
                .collect();
            plan.params.push(params);
            let cookies = p
                .from_cookies
                .iter()
                .map(|name| place(&mut plan, Location::Cookie(name.clone())))
                .collect();
            plan.cookies.push(cookies);
            for c in &p.claim_to_headers {
                if !plan
                    .claim_names
                    .iter()
                    .any(|n| n.matches(c.header.as_bytes()))
                {
                    plan.claim_names.push(Folded::new(&c.header));
                }
            }
            plan.wants_path |= !p.from_params.is_empty();
            plan.wants_cookie |= !p.from_cookies.is_empty();
            plan.caches |= p.jwt_cache.is_some_and(|c| c.size > 0);
        }
        let names = plan.claim_names.iter().chain(&plan.token_names);
        for len in names
            .map(Folded::len)
            .chain([plan.cookie.len(), b":path".len()])
        {
            plan.lengths |= length_bit(len);
        }
        plan
    }
}

/// The bit of [`Plan::lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// A token found in the request, not verified yet.
#[derive(Debug)]
pub(crate) struct Candidate<'w> {
    /// Index into [`Plan::places`].
    pub place: usize,
    /// The token's bytes (borrowed from the header map unless percent-decoded or unquoted
    /// from a non-UTF-8 cookie header).
    pub token: Cow<'w, [u8]>,
    /// The provider that verifies it: among the providers reading this place, the first whose
    /// `issuer` is the token's `iss` (or that requires none), else the first.
    pub provider: usize,
    /// The other providers reading this place (while the walk goes on).
    more: Vec<usize>,
}

impl Candidate<'_> {
    /// The token as text (a token that is not UTF-8 is refused by the parse: lossy is enough).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.token).into_owned()
    }
}

/// Every token in the request (each place of each provider, every occurrence; a token read
/// from the same place by several providers once), in provider then location order, and
/// whether the request carries a `claim_to_headers` header (those are not read as token
/// locations: the filter removes them first).
pub(crate) fn scan<'w>(
    config: &Config,
    plan: &Plan,
    wire: &'w WirePairs,
) -> (Vec<Candidate<'w>>, bool) {
    // The headers a provider reads, borrowed: its `from_headers`, `cookie` when it reads
    // cookies; `:path` for parameters.
    // Each kept header with the index of its name in `token_names` (`usize::MAX`: none) and
    // whether it is `cookie` (both when a provider reads cookies and a header named `cookie`).
    let mut kept: Vec<(usize, bool, &'w [u8])> = Vec::new();
    let mut path: &'w [u8] = &[];
    let mut claim_headers = false;
    for (name, value) in wire.iter() {
        if plan.lengths & length_bit(name.len()) == 0 {
            continue;
        }
        if plan.claim_names.iter().any(|n| n.matches(name)) {
            claim_headers = true;
        } else if name == b":path" {
            if plan.wants_path && path.is_empty() {
                path = value;
            }
        } else {
            let cookie = plan.wants_cookie && plan.cookie.matches(name);
            let token = plan
                .token_names
                .iter()
                .position(|n| n.matches(name))
                .unwrap_or(usize::MAX);
            if cookie || token != usize::MAX {
                kept.push((token, cookie, value));
            }
        }
    }
    let mut seen: Vec<Candidate<'w>> = Vec::new();
    let mut add = |place: usize, token: Cow<'w, [u8]>, provider: usize| match seen
        .iter_mut()
        .find(|s| s.place == place && *s.token == *token)
    {
        Some(s) => {
            if s.provider != provider && !s.more.contains(&provider) {
                s.more.push(provider);
            }
        }
        None => seen.push(Candidate {
            place,
            token,
            provider,
            more: Vec::new(),
        }),
    };
    let path = text(path);
    for (i, p) in config.providers.iter().enumerate() {
        let places = |of: &[Vec<usize>], j: usize| {
            of.get(i)
                .and_then(|places| places.get(j))
                .copied()
                .unwrap_or_default()
        };
        for (at, name, prefix) in plan.headers.get(i).into_iter().flatten() {
            for &(token, _, value) in &kept {
                if token != *name {
                    continue;
                }
                if let Some(token) = after_prefix(value, prefix) {
                    add(*at, token, i);
                }
            }
        }
        for (j, param) in p.from_params.iter().enumerate() {
            for token in query_params(&path, param) {
                add(places(&plan.params, j), Cow::Owned(token.into_bytes()), i);
            }
        }
        for (j, name) in p.from_cookies.iter().enumerate() {
            for &(_, cookie, value) in &kept {
                if cookie {
                    match text(value) {
                        Cow::Borrowed(value) => {
                            for token in cookies(value, name) {
                                add(places(&plan.cookies, j), Cow::Borrowed(token.as_bytes()), i);
                            }
                        }
                        Cow::Owned(value) => {
                            for token in cookies(&value, name) {
                                add(
                                    places(&plan.cookies, j),
                                    Cow::Owned(token.as_bytes().to_vec()),
                                    i,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    for s in &mut seen {
        // Several providers read this place: the token's own (unverified) `iss` picks one, so
        // a token of the second issuer is checked with the second's keys.
        if !s.more.is_empty() && s.token.len() <= config.max_token_bytes {
            let iss = crate::unverified_issuer(&String::from_utf8_lossy(&s.token));
            s.provider = std::iter::once(s.provider)
                .chain(s.more.iter().copied())
                .find(|&p| {
                    config.providers.get(p).is_some_and(|p| {
                        p.issuer.is_none() || p.issuer.as_deref() == iss.as_deref()
                    })
                })
                .unwrap_or(s.provider);
        }
    }
    (seen, claim_headers)
}

/// A configured name or prefix compared ASCII-case-insensitively eight bytes at a time:
/// `[u8]::eq_ignore_ascii_case` goes byte by byte (about 40 wasm instructions a byte: the walk
/// of every request header compared each name with every configured one that way). The text
/// is kept lowercased with a mask of `0x20` on its letters: a byte `b` matches the lowercased
/// letter `l` when `b | 0x20 == l` (only `l` and its upper case do), and any other byte only
/// itself, which is exactly `eq_ignore_ascii_case`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Folded {
    /// The text's bytes, ASCII letters lowercased, zero-padded to whole words.
    lower: Box<[u64]>,
    /// `0x20` on each letter's byte.
    mask: Box<[u64]>,
    len: usize,
}

impl Folded {
    pub(crate) fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let words = bytes.len().div_ceil(8);
        let mut lower = vec![0u64; words];
        let mut mask = vec![0u64; words];
        for (i, &b) in bytes.iter().enumerate() {
            let shift = (i % 8) * 8;
            let fold = if b.is_ascii_alphabetic() { 0x20u64 } else { 0 };
            if let (Some(l), Some(m)) = (lower.get_mut(i / 8), mask.get_mut(i / 8)) {
                *l |= u64::from(b.to_ascii_lowercase()) << shift;
                *m |= fold << shift;
            }
        }
        Self {
            lower: lower.into_boxed_slice(),
            mask: mask.into_boxed_slice(),
            len: bytes.len(),
        }
    }

    /// The text's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `bytes` is the text, ignoring ASCII case.
    #[inline]
    pub(crate) fn matches(&self, bytes: &[u8]) -> bool {
        if bytes.len() != self.len {
            return false;
        }
        let mut chunks = bytes.chunks_exact(8);
        let mut words = self.lower.iter().zip(self.mask.iter());
        for chunk in &mut chunks {
            let Some((lower, mask)) = words.next() else {
                return false;
            };
            if (crate::cache::word(chunk) | mask) != *lower {
                return false;
            }
        }
        let tail = chunks.remainder();
        match words.next() {
            Some((lower, mask)) => (crate::cache::word(tail) | mask) == *lower,
            None => tail.is_empty(),
        }
    }
}

/// Header bytes as text: borrowed when UTF-8 (nearly always), else a lossy copy.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    if let Some(text) = ascii_str(bytes) {
        return Cow::Borrowed(text);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Whether `byte` is whitespace `str::trim` removes (the ASCII ones).
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The token in one header value, after `prefix` (case-insensitive) and trimmed as
/// `str::trim` does; `None` when the value does not start with the prefix or nothing follows
/// it. Bytes in, bytes out: ASCII whitespace is trimmed in place; only a value whose token
/// would start or end with a non-ASCII byte goes through text (`str::trim` also removes
/// Unicode spaces, and a value that is not UTF-8 is read lossily, as every header value is).
pub(crate) fn after_prefix<'w>(value: &'w [u8], prefix: &Folded) -> Option<Cow<'w, [u8]>> {
    let (head, mut rest) = value.split_at_checked(prefix.len())?;
    if !prefix.matches(head) {
        return None;
    }
    while let [first, tail @ ..] = rest
        && is_space(*first)
    {
        rest = tail;
    }
    while let [init @ .., last] = rest
        && is_space(*last)
    {
        rest = init;
    }
    match rest {
        [] => None,
        [first, .., last] | [first @ last] if first.is_ascii() && last.is_ascii() => {
            Some(Cow::Borrowed(rest))
        }
        _ => {
            // The slow way, as text: the prefix matched bytes that are its own UTF-8, so a
            // lossy copy of the value keeps it at the same length.
            let value = String::from_utf8_lossy(value);
            let token = value.get(prefix.len()..)?.trim();
            (!token.is_empty()).then(|| Cow::Owned(token.as_bytes().to_vec()))
        }
    }
}

/// Every value of query parameter `name` in `path` (names and values percent-decoded; a value
/// that does not decode is kept as it is, and then refused as a token). Empty values are no token.
pub(crate) fn query_params(path: &str, name: &str) -> Vec<String> {
    // Most paths have no query: found eight bytes at a time.
    let Some(at) = find_byte(path.as_bytes(), b'?') else {
        return Vec::new();
    };
    let query = path.get(at + 1..).unwrap_or_default();
    // Split on the ASCII `#`, `&` and `=` with `find_byte` (a `str` split searches through a
    // call per piece): the cuts fall on character boundaries.
    let query = match find_byte(query.as_bytes(), b'#') {
        Some(end) => query.get(..end).unwrap_or_default(),
        None => query,
    };
    let mut found = Vec::new();
    let mut rest = query;
    loop {
        let (pair, next) = match find_byte(rest.as_bytes(), b'&') {
            Some(end) => (
                rest.get(..end).unwrap_or_default(),
                Some(rest.get(end + 1..).unwrap_or_default()),
            ),
            None => (rest, None),
        };
        let (n, v) = match find_byte(pair.as_bytes(), b'=') {
            Some(eq) => (
                pair.get(..eq).unwrap_or_default(),
                pair.get(eq + 1..).unwrap_or_default(),
            ),
            None => (pair, ""),
        };
        // Without an escape the name decodes to itself: no copy to compare it.
        let named = if find_byte(n.as_bytes(), b'%').is_some() {
            percent_decode(n).as_deref() == Some(name)
        } else {
            n == name
        };
        if named && !v.is_empty() {
            found.push(percent_decode(v).unwrap_or_else(|| v.to_string()));
        }
        match next {
            Some(next) => rest = next,
            None => return found,
        }
    }
}

/// The first index of `byte` in `bytes`, eight bytes at a time (a word has a zero byte where
/// `word ^ byte * 0x01..01` does; the classic test `(x - 0x01..01) & !x & 0x80..80` can flag a
/// false `0x01` byte only above a real zero, so the lowest flag is exact).
fn find_byte(bytes: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = u64::from(byte) * ONES;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let x = crate::cache::word(chunk) ^ pattern;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == byte)
        .map(|i| at + i)
}

/// Every non-empty value of cookie `name` in one `cookie` header (surrounding quotes removed).
pub(crate) fn cookies<'a>(header: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    header.split(';').filter_map(move |pair| {
        let (n, v) = pair.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (n.trim() == name && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The text version `after_prefix` replaced: the bytes version must agree with it.
    fn by_text(value: &[u8], prefix: &str) -> Option<Vec<u8>> {
        let value = String::from_utf8_lossy(value);
        let token = if prefix.is_empty() {
            value.trim()
        } else {
            let head = value.get(..prefix.len())?;
            if !head.eq_ignore_ascii_case(prefix) {
                return None;
            }
            value.get(prefix.len()..)?.trim()
        };
        (!token.is_empty()).then(|| token.as_bytes().to_vec())
    }

    #[test]
    fn after_prefix_agrees_with_str_trim() {
        let values: &[&[u8]] = &[
            b"Bearer abc.def.ghi",
            b"bearer abc",
            b"BEARER  abc \t",
            b"Bearer ",
            b"Bearer",
            b"Bearer \r\n",
            b"Basic abc",
            b"Bear",
            b"",
            b"  abc  ",
            b"Bearer a",
            "Bearer \u{a0}abc\u{a0}".as_bytes(),
            "Bearer \u{3000}".as_bytes(),
            "Bearer abc\u{2003}".as_bytes(),
            "Bearer é".as_bytes(),
            "Bearer aé".as_bytes(),
            b"Bearer \xff\xfe",
            b"Bearer a\xffb",
            b"Bearer \xffb",
            "Béarer abc".as_bytes(),
        ];
        for value in values {
            for prefix in ["Bearer ", "", "Béarer ", "x"] {
                // A token that is not UTF-8 stays bytes here; as text (what is parsed) it is
                // the lossy token the text version finds.
                assert_eq!(
                    after_prefix(value, &Folded::new(prefix))
                        .map(|t| String::from_utf8_lossy(&t).into_owned().into_bytes()),
                    by_text(value, prefix),
                    "{:?} after {prefix:?}",
                    String::from_utf8_lossy(value)
                );
            }
        }
    }

    #[test]
    fn folded_matches_exactly_what_eq_ignore_ascii_case_does() {
        let texts = [
            "",
            "a",
            "A",
            "@",
            "`",
            "[",
            "{",
            "authorization",
            "Authorization",
            "AUTHORIZATION",
            "x-jwt-sub",
            "X-JWT-SUB",
            "x-jwt-sub!",
            "cookie",
            "COOKIE",
            "cookiE",
            "cooki\u{e9}",
            "Bearer ",
            "bearer ",
            "BEARER\t",
            "@`[{^~_-",
            "`@{[~^-_",
            "\u{e9}t\u{e9}",
            "\u{c9}t\u{c9}",
            "abcdefghijklmnopq",
            "ABCDEFGHIJKLMNOPQ",
            "abcdefgh",
            "ABCDEFGh",
        ];
        for a in texts {
            let folded = Folded::new(a);
            assert_eq!(folded.len(), a.len());
            for b in texts {
                assert_eq!(
                    folded.matches(b.as_bytes()),
                    a.as_bytes().eq_ignore_ascii_case(b.as_bytes()),
                    "{a:?} {b:?}"
                );
            }
            // Every single byte in every position: only the byte itself, or its other case
            // for a letter, matches.
            for at in 0..a.len() {
                for byte in 0..=255u8 {
                    let mut other = a.as_bytes().to_vec();
                    other[at] = byte;
                    assert_eq!(
                        folded.matches(&other),
                        a.as_bytes().eq_ignore_ascii_case(&other),
                        "{a:?} with byte {at} = {byte:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn find_byte_finds_the_first() {
        let text = b"/v1/orders/es256/valid?page=2&x=?";
        for len in 0..=text.len() {
            for byte in [b'?', b'/', b'2', b'x', 0, 0xff, b'>', b'@'] {
                let bytes = &text[..len];
                assert_eq!(
                    find_byte(bytes, byte),
                    bytes.iter().position(|&b| b == byte),
                    "{byte} in {len}"
                );
            }
        }
        assert_eq!(find_byte(&[0x3f, 0x40, 0x3e, 0x3f], b'?'), Some(0));
        assert_eq!(find_byte(b"\x01\x00\x01\x00\x01\x01\x01\x00?", 1), Some(0));
        assert_eq!(
            find_byte(b"\x00\x01\x00\x00\x00\x00\x00\x00\x01", 1),
            Some(1)
        );
    }

    /// The `str`-splitting version `query_params` replaced.
    fn query_params_by_str(path: &str, name: &str) -> Vec<String> {
        let Some((_, query)) = path.split_once('?') else {
            return Vec::new();
        };
        let query = query.split('#').next().unwrap_or_default();
        query
            .split('&')
            .filter_map(|pair| {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(n).as_deref() == Some(name) && !v.is_empty())
                    .then(|| percent_decode(v).unwrap_or_else(|| v.to_string()))
            })
            .collect()
    }

    #[test]
    fn query_params_split_as_str_does() {
        let paths = [
            "/",
            "/a",
            "/a?",
            "/a?#",
            "/a?t",
            "/a?t=",
            "/a?t=1",
            "/a?t=1&t=2",
            "/a?&&t=x&",
            "/a?t=x#t=y",
            "/a#?t=x",
            "/a?t=a=b",
            "/a?%74=x",
            "/a?t%=x",
            "/a?t=%41%2",
            "/a?=x&t",
            "/a?t=\u{e9}&\u{e9}=t&t=x?y",
            "/a??t=x",
            "/a?x=1&t=v&t=w#&t=z",
            "/é?t=é",
        ];
        for path in paths {
            for name in ["t", "", "x", "\u{e9}"] {
                assert_eq!(
                    query_params(path, name),
                    query_params_by_str(path, name),
                    "{path:?} {name:?}"
                );
            }
        }
    }

    #[test]
    fn query_params_decode_names_only_when_escaped() {
        assert_eq!(
            query_params(
                "/a?access_token=x&b=1&access%5Ftoken=y%2E&access_token=",
                "access_token"
            ),
            ["x", "y."]
        );
        assert!(query_params("/a", "access_token").is_empty());
        assert_eq!(query_params("/a?t=%zz#frag", "t"), ["%zz"]);
    }
}
