//! Where the tokens of a request are: every configured location of every provider (headers,
//! query parameters, cookies), found in one walk of the request's header map.
//!
//! Planned once per configuration ([`Plan`]: the distinct places, and which provider reads
//! which), then per request the walk borrows from the map the host handed over: a token found
//! in a header or a cookie is a slice of that buffer, not a copy (only a percent-decoded query
//! parameter is new). A repeated token is then looked up in the verified-token cache with
//! those bytes; nothing is copied, decoded or checked as UTF-8 unless the cache misses.

use std::borrow::Cow;

use tollgate_sdk::headers::WirePairs;
use tollgate_sdk::http::percent_decode;

use crate::{Config, Location};

/// The token locations of a configuration, worked out once ([`Config::plan`]).
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Every distinct place a token is read from; a [`Candidate`] names one by index.
    pub places: Vec<Location>,
    /// Per provider, the place of each of its `from_headers`, `from_params` and
    /// `from_cookies`, in their order.
    headers: Vec<Vec<usize>>,
    params: Vec<Vec<usize>>,
    cookies: Vec<Vec<usize>>,
    /// Every `claim_to_headers` header name: a client-sent one is noted by the walk.
    claim_names: Vec<String>,
    /// The names of every `from_headers` header (each once, case-insensitively).
    token_names: Vec<String>,
    /// Some provider reads query parameters (`:path` is needed) or cookies.
    wants_path: bool,
    wants_cookie: bool,
    /// Some provider caches verified tokens.
    pub caches: bool,
}

impl Plan {
    pub(crate) fn of(config: &Config) -> Self {
        let mut plan = Plan::default();
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
            let headers = p
                .from_headers
                .iter()
                .map(|h| place(&mut plan, Location::Header(h.name.to_ascii_lowercase())))
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
                    .any(|n| n.eq_ignore_ascii_case(&c.header))
                {
                    plan.claim_names.push(c.header.clone());
                }
            }
            for h in &p.from_headers {
                if !plan
                    .token_names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&h.name))
                {
                    plan.token_names.push(h.name.clone());
                }
            }
            plan.wants_path |= !p.from_params.is_empty();
            plan.wants_cookie |= !p.from_cookies.is_empty();
            plan.caches |= p.jwt_cache.is_some_and(|c| c.size > 0);
        }
        plan
    }
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
}

impl Candidate<'_> {
    /// The token as text (a token that is not UTF-8 is refused by the parse: lossy is enough).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.token).into_owned()
    }
}

/// A token and the providers reading its place, while the walk goes on.
struct Seen<'w> {
    place: usize,
    token: Cow<'w, [u8]>,
    first: usize,
    more: Vec<usize>,
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
    let mut kept: Vec<(&'w [u8], &'w [u8])> = Vec::new();
    let mut path: &'w [u8] = &[];
    let mut claim_headers = false;
    for (name, value) in wire.iter() {
        if plan
            .claim_names
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            claim_headers = true;
        } else if name == b":path" {
            if plan.wants_path && path.is_empty() {
                path = value;
            }
        } else if (plan.wants_cookie && name.eq_ignore_ascii_case(b"cookie"))
            || plan
                .token_names
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            kept.push((name, value));
        }
    }
    let mut seen: Vec<Seen<'w>> = Vec::new();
    let mut add = |place: usize, token: Cow<'w, [u8]>, provider: usize| match seen
        .iter_mut()
        .find(|s| s.place == place && *s.token == *token)
    {
        Some(s) => {
            if s.first != provider && !s.more.contains(&provider) {
                s.more.push(provider);
            }
        }
        None => seen.push(Seen {
            place,
            token,
            first: provider,
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
        for (j, h) in p.from_headers.iter().enumerate() {
            for &(name, value) in &kept {
                if !name.eq_ignore_ascii_case(h.name.as_bytes()) {
                    continue;
                }
                if let Some(token) = after_prefix(value, &h.value_prefix) {
                    add(places(&plan.headers, j), token, i);
                }
            }
        }
        for (j, param) in p.from_params.iter().enumerate() {
            for token in query_params(&path, param) {
                add(places(&plan.params, j), Cow::Owned(token.into_bytes()), i);
            }
        }
        for (j, name) in p.from_cookies.iter().enumerate() {
            for &(h, value) in &kept {
                if h.eq_ignore_ascii_case(b"cookie") {
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
    let found = seen
        .into_iter()
        .map(|s| {
            // Several providers read this place: the token's own (unverified) `iss` picks
            // one, so a token of the second issuer is checked with the second's keys.
            let provider = if !s.more.is_empty() && s.token.len() <= config.max_token_bytes {
                let iss = crate::unverified_issuer(&String::from_utf8_lossy(&s.token));
                std::iter::once(s.first)
                    .chain(s.more.iter().copied())
                    .find(|&p| {
                        config.providers.get(p).is_some_and(|p| {
                            p.issuer.is_none() || p.issuer.as_deref() == iss.as_deref()
                        })
                    })
                    .unwrap_or(s.first)
            } else {
                s.first
            };
            Candidate {
                place: s.place,
                token: s.token,
                provider,
            }
        })
        .collect();
    (found, claim_headers)
}

/// Header bytes as text: borrowed when UTF-8 (nearly always), else a lossy copy.
fn text(bytes: &[u8]) -> Cow<'_, str> {
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
pub(crate) fn after_prefix<'w>(value: &'w [u8], prefix: &str) -> Option<Cow<'w, [u8]>> {
    let head = value.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    let mut rest = value.get(prefix.len()..)?;
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
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            // Without an escape the name decodes to itself: no copy to compare it.
            let named = if n.contains('%') {
                percent_decode(n).as_deref() == Some(name)
            } else {
                n == name
            };
            (named && !v.is_empty()).then(|| percent_decode(v).unwrap_or_else(|| v.to_string()))
        })
        .collect()
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
                    after_prefix(value, prefix)
                        .map(|t| String::from_utf8_lossy(&t).into_owned().into_bytes()),
                    by_text(value, prefix),
                    "{:?} after {prefix:?}",
                    String::from_utf8_lossy(value)
                );
            }
        }
    }

    #[test]
    fn query_params_decode_names_only_when_escaped() {
        assert_eq!(
            query_params("/a?access_token=x&b=1&access%5Ftoken=y%2E&access_token=", "access_token"),
            ["x", "y."]
        );
        assert!(query_params("/a", "access_token").is_empty());
        assert_eq!(query_params("/a?t=%zz#frag", "t"), ["%zz"]);
    }
}
