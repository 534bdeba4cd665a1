//! A minimal browser for the identity tests: plain `http://<ip>:<port>` URLs, a cookie jar per
//! origin, redirects followed (303/302/301/307 with `Location`, relative or absolute) until a
//! URL a test wants to see itself, and HTML forms posted as
//! `application/x-www-form-urlencoded`. Enough to log in at the real OpenID provider's
//! development login and consent pages.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use tollgate_traffic::HttpResponse;

use crate::client;
use crate::http1;

/// Most redirects followed by one navigation.
const MAX_REDIRECTS: usize = 20;

/// `http://host:port/path?query` split into the socket address, the authority and the target.
pub fn split_url(url: &str) -> Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not an http:// URL"))?;
    let (authority, target) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{url}: the host must be <ip>:<port>"))?;
    Ok((addr, authority.to_string(), target.to_string()))
}

/// Form-encodes `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".into(),
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of query parameter `name` in `url` (percent-decoded for `%XX`).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `action` of the first `<form>` in `html`.
pub fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let action = &form[form.find("action=\"")? + "action=\"".len()..];
    Some(action[..action.find('"')?].replace("&amp;", "&"))
}

/// A browser: cookies per authority.
#[derive(Debug, Default)]
pub struct Browser {
    cookies: BTreeMap<String, BTreeMap<String, String>>,
}

impl Browser {
    /// A browser with no cookies.
    pub fn new() -> Browser {
        Browser::default()
    }

    /// The cookies it holds for `authority`.
    pub fn cookies(&self, authority: &str) -> Vec<(String, String)> {
        self.cookies
            .get(authority)
            .map(|jar| jar.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Sets a cookie as a page's script would.
    pub fn set_cookie(&mut self, authority: &str, name: &str, value: &str) {
        self.cookies
            .entry(authority.to_string())
            .or_default()
            .insert(name.to_string(), value.to_string());
    }

    /// One request, no redirect followed; `Set-Cookie` answers stored (`Max-Age=0` or an empty
    /// value removes the cookie).
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let (addr, authority, target) = split_url(url)?;
        let cookie = self
            .cookies(&authority)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !cookie.is_empty() {
            all.push(("cookie", cookie.as_str()));
        }
        let request = client::request(method, &authority, &target, &all, body);
        let response = client::send(addr, &request)?;
        for value in http1::header_values(&response.headers, "set-cookie") {
            let first = value.split(';').next().unwrap_or_default();
            let Some((name, val)) = first.split_once('=') else {
                continue;
            };
            let expired = value
                .split(';')
                .any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
            let jar = self.cookies.entry(authority.clone()).or_default();
            if expired || val.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), val.trim().to_string());
            }
        }
        Ok(response)
    }

    /// GET `url`, following redirects while `follow(next_url)` says so; the last response and
    /// the URL it came from.
    pub fn navigate(
        &mut self,
        url: &str,
        follow: impl Fn(&str) -> bool,
    ) -> Result<(String, HttpResponse)> {
        let response = self.request("GET", url, &[("accept", "text/html")], b"")?;
        self.follow_redirects(url.to_string(), response, follow)
    }

    /// POSTs `pairs` as a form to `url`, then follows redirects as [`Browser::navigate`].
    pub fn submit(
        &mut self,
        url: &str,
        pairs: &[(&str, &str)],
        follow: impl Fn(&str) -> bool,
    ) -> Result<(String, HttpResponse)> {
        let body = form(pairs);
        let response = self.request(
            "POST",
            url,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "text/html"),
            ],
            body.as_bytes(),
        )?;
        self.follow_redirects(url.to_string(), response, follow)
    }

    fn follow_redirects(
        &mut self,
        mut url: String,
        mut response: HttpResponse,
        follow: impl Fn(&str) -> bool,
    ) -> Result<(String, HttpResponse)> {
        for _ in 0..MAX_REDIRECTS {
            if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
                return Ok((url, response));
            }
            let Some(location) = http1::header(&response.headers, "location") else {
                bail!("{url} answered {} without a location", response.status);
            };
            let next = if location.starts_with("http://") {
                location.to_string()
            } else {
                let (_, authority, _) = split_url(&url)?;
                format!("http://{authority}{location}")
            };
            if !follow(&next) {
                return Ok((next, response));
            }
            url = next;
            response = self.request("GET", &url, &[("accept", "text/html")], b"")?;
        }
        bail!("more than {MAX_REDIRECTS} redirects from {url}")
    }
}
