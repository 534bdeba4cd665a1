//! The views a filter gets in its callbacks: [`Request`] and [`Response`] (headers) and [`Body`],
//! each able to answer the client directly with a [`LocalReply`].
//!
//! A view only borrows a [`HeaderMap`] (or a [`BodyBuffer`]): inside the proxy it is the host's,
//! in tests a [`crate::HeaderList`] (or a `Vec<u8>`). A local reply is recorded on the view and sent
//! by the SDK once the callback returns, so tests can look at it with `local_reply()`.

use crate::headers::{HeaderMap, HeaderSnapshot};

/// A response produced by the filter itself instead of the upstream (proxy-wasm's
/// `send_local_response`).
///
/// ```
/// use tollgate_sdk::{HeaderList, Request};
///
/// let mut headers = HeaderList::from([(":path", "/admin")]);
/// let mut req = Request::new(&mut headers);
/// req.send_response(403, &[("content-type", "text/plain")], "forbidden\n");
/// let reply = req.local_reply().cloned();
/// assert_eq!(reply.map(|r| (r.status, r.body)), Some((403, b"forbidden\n".to_vec())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u16,
    /// Headers of the reply.
    pub headers: Vec<(String, String)>,
    /// Body of the reply (may be empty).
    pub body: Vec<u8>,
}

impl LocalReply {
    fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }
}

macro_rules! header_view_methods {
    ($view:ident, $what:literal) => {
        impl<'a> $view<'a> {
            #[doc = concat!("A view of the ", $what, " headers in `headers`.")]
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::new();")]
            #[doc = concat!("let view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// assert!(view.headers().is_empty());
            /// ```
            pub fn new(headers: &'a mut dyn HeaderMap) -> Self {
                Self {
                    headers,
                    reply: None,
                }
            }

            #[doc = concat!("The first value of ", $what, " header `name` (case-insensitive).")]
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::from([(\"x-user\", \"ada\")]);")]
            #[doc = concat!("let view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// assert_eq!(view.header("X-User").as_deref(), Some("ada"));
            /// assert_eq!(view.header("x-other"), None);
            /// ```
            pub fn header(&self, name: &str) -> Option<String> {
                self.headers.get(name)
            }

            #[doc = concat!("Every ", $what, " header as `(name, value)` pairs, pseudo-headers included.")]
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::from([(\"a\", \"1\"), (\"a\", \"2\")]);")]
            #[doc = concat!("let view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// assert_eq!(view.headers().len(), 2);
            /// ```
            pub fn headers(&self) -> Vec<(String, String)> {
                self.headers.pairs()
            }

            /// Replaces every value of `name` with `value` (adds it when absent).
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::from([(\"a\", \"1\"), (\"a\", \"2\")]);")]
            #[doc = concat!("let mut view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// view.set_header("a", "3");
            /// assert_eq!(view.headers(), vec![("a".to_string(), "3".to_string())]);
            /// ```
            pub fn set_header(&mut self, name: &str, value: &str) {
                self.headers.set(name, value);
            }

            /// Appends one more value for `name`, keeping existing ones.
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::from([(\"via\", \"a\")]);")]
            #[doc = concat!("let mut view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// view.add_header("via", "tollgate");
            /// assert_eq!(view.headers().len(), 2);
            /// ```
            pub fn add_header(&mut self, name: &str, value: &str) {
                self.headers.add(name, value);
            }

            /// Removes every value of `name`.
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::from([(\"server\", \"x\")]);")]
            #[doc = concat!("let mut view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// view.remove_header("Server");
            /// assert!(view.headers().is_empty());
            /// ```
            pub fn remove_header(&mut self, name: &str) {
                self.headers.remove(name);
            }

            /// Copies every header, for use after this callback (see [`HeaderSnapshot`]).
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::from([(\"x-user\", \"ada\")]);")]
            #[doc = concat!("let view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// assert!(view.snapshot().contains("x-user"));
            /// ```
            pub fn snapshot(&self) -> HeaderSnapshot {
                HeaderSnapshot::of(&*self.headers)
            }

            /// The underlying header map, for code written against [`HeaderMap`].
            ///
            /// ```
            /// use tollgate_sdk::HeaderMap;
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::new();")]
            #[doc = concat!("let mut view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// view.header_map().add("a", "1");
            /// assert_eq!(view.header("a").as_deref(), Some("1"));
            /// ```
            pub fn header_map(&mut self) -> &mut dyn HeaderMap {
                &mut *self.headers
            }

            /// Answers the client with this response instead of going on; the SDK sends it when
            /// the callback returns and stops the stream there, whatever [`crate::Action`] it returns.
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::new();")]
            #[doc = concat!("let mut view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// view.send_response(429, &[("retry-after", "1")], b"slow down");
            /// assert_eq!(view.local_reply().map(|r| r.status), Some(429));
            /// ```
            pub fn send_response(
                &mut self,
                status: u16,
                headers: &[(&str, &str)],
                body: impl AsRef<[u8]>,
            ) {
                self.reply = Some(LocalReply::new(status, headers, body.as_ref()));
            }

            /// The local reply requested with `send_response`, if any.
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::new();")]
            #[doc = concat!("let view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// assert!(view.local_reply().is_none());
            /// ```
            pub fn local_reply(&self) -> Option<&LocalReply> {
                self.reply.as_ref()
            }

            /// Takes the local reply out of the view (the SDK does this to send it).
            ///
            /// ```
            #[doc = concat!("let mut headers = tollgate_sdk::HeaderList::new();")]
            #[doc = concat!("let mut view = tollgate_sdk::", stringify!($view), "::new(&mut headers);")]
            /// view.send_response(204, &[], "");
            /// assert!(view.take_local_reply().is_some());
            /// assert!(view.local_reply().is_none());
            /// ```
            pub fn take_local_reply(&mut self) -> Option<LocalReply> {
                self.reply.take()
            }
        }
    };
}

/// The request headers, as a filter sees them in
/// [`HttpFilter::on_request_headers`](crate::HttpFilter::on_request_headers).
///
/// ```
/// use tollgate_sdk::{HeaderList, Request};
///
/// let mut headers = HeaderList::from([
///     (":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", "/a?b=1"),
/// ]);
/// let mut req = Request::new(&mut headers);
/// assert_eq!(req.method().as_deref(), Some("GET"));
/// assert_eq!(req.path().as_deref(), Some("/a?b=1"));
/// req.set_header("x-tollgate", "demo");
/// assert_eq!(headers.get_all("x-tollgate"), vec!["demo"]);
/// ```
pub struct Request<'a> {
    headers: &'a mut dyn HeaderMap,
    reply: Option<LocalReply>,
}

header_view_methods!(Request, "request");

impl Request<'_> {
    /// The `:path` pseudo-header: path and query, e.g. `/search?q=1`.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([(":path", "/x")]);
    /// assert_eq!(tollgate_sdk::Request::new(&mut headers).path().as_deref(), Some("/x"));
    /// ```
    pub fn path(&self) -> Option<String> {
        self.headers.get(":path")
    }

    /// The `:method` pseudo-header, e.g. `GET`.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([(":method", "POST")]);
    /// assert_eq!(tollgate_sdk::Request::new(&mut headers).method().as_deref(), Some("POST"));
    /// ```
    pub fn method(&self) -> Option<String> {
        self.headers.get(":method")
    }

    /// The `:authority` pseudo-header (the `Host`), e.g. `example.com:8443`.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([(":authority", "example.com")]);
    /// assert_eq!(tollgate_sdk::Request::new(&mut headers).authority().as_deref(), Some("example.com"));
    /// ```
    pub fn authority(&self) -> Option<String> {
        self.headers.get(":authority")
    }

    /// The `:scheme` pseudo-header, `http` or `https`.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([(":scheme", "https")]);
    /// assert_eq!(tollgate_sdk::Request::new(&mut headers).scheme().as_deref(), Some("https"));
    /// ```
    pub fn scheme(&self) -> Option<String> {
        self.headers.get(":scheme")
    }

    /// Removes every occurrence of query parameter `name` from `:path` (see
    /// [`path_without_param`]), keeping the other parameters in order; true when one was removed.
    /// For credentials that must not reach the upstream.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([(":path", "/a?x=1&token=t&y=2")]);
    /// assert!(tollgate_sdk::Request::new(&mut headers).remove_query_param("token"));
    /// assert_eq!(headers.get_all(":path"), vec!["/a?x=1&y=2"]);
    /// ```
    pub fn remove_query_param(&mut self, name: &str) -> bool {
        let Some(stripped) = self.path().and_then(|path| path_without_param(&path, name)) else {
            return false;
        };
        self.headers.set(":path", &stripped);
        true
    }

    /// Removes cookie `name` from every `cookie` header (see [`cookie_without`]), keeping the
    /// other cookies and dropping a header left empty; true when one was removed.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([("cookie", "a=1; token=t"), ("cookie", "token=u")]);
    /// assert!(tollgate_sdk::Request::new(&mut headers).remove_cookie("token"));
    /// assert_eq!(headers.get_all("cookie"), vec!["a=1"]);
    /// ```
    pub fn remove_cookie(&mut self, name: &str) -> bool {
        // Most requests carry no cookie: one value lookup instead of reading every header.
        if self.headers.get("cookie").is_none() {
            return false;
        }
        let headers = self.headers.pairs();
        self.remove_cookies_in(&headers, &[name])
    }

    /// [`Request::remove_cookie`] for several cookies, from the request's headers as the filter
    /// already read them ([`Request::headers`]): no read of its own, and the `cookie` headers
    /// are rewritten once (in a proxy each read and write is a call across the VM boundary).
    /// `headers` must be the request's headers as they are now; true when a cookie was removed.
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([("cookie", "a=1; s=x; l=y"), ("x-b", "2")]);
    /// let mut req = tollgate_sdk::Request::new(&mut headers);
    /// let read = req.headers();
    /// assert!(req.remove_cookies_in(&read, &["s", "l"]));
    /// assert!(!req.remove_cookies_in(&req.headers(), &["s"]));
    /// assert_eq!(headers.get_all("cookie"), vec!["a=1"]);
    /// ```
    pub fn remove_cookies_in(&mut self, headers: &[(String, String)], names: &[&str]) -> bool {
        let mut changed = false;
        let kept: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .map(|(_, value)| {
                let mut value = value.clone();
                for name in names {
                    if let Some(rest) = cookie_without(&value, name) {
                        changed = true;
                        value = rest;
                    }
                }
                value
            })
            .filter(|c| !c.is_empty())
            .collect();
        if changed {
            self.headers.remove("cookie");
            for cookie in kept {
                self.headers.add("cookie", &cookie);
            }
        }
        changed
    }
}

/// `path` without query parameter `name` (every occurrence; names compared after
/// percent-decoding); `None` when it has none. A query left empty loses its `?`; a fragment is
/// kept.
///
/// ```
/// use tollgate_sdk::http::path_without_param;
/// assert_eq!(path_without_param("/a?x=1&api_key=k&y=2", "api_key").as_deref(), Some("/a?x=1&y=2"));
/// assert_eq!(path_without_param("/a?api%5Fkey=k", "api_key").as_deref(), Some("/a"));
/// assert_eq!(path_without_param("/a?x=1", "api_key"), None);
/// ```
pub fn path_without_param(path: &str, name: &str) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let total = query.split('&').count();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(key).as_deref() != Some(name)
        })
        .collect();
    if kept.len() == total {
        return None;
    }
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// A `cookie` header value without cookie `name` (every occurrence); `None` when unchanged,
/// `Some("")` when it held nothing else.
///
/// ```
/// use tollgate_sdk::http::cookie_without;
/// assert_eq!(cookie_without("a=1; api_key=k; b=2", "api_key").as_deref(), Some("a=1; b=2"));
/// assert_eq!(cookie_without("api_key=k", "api_key").as_deref(), Some(""));
/// assert_eq!(cookie_without("a=1", "api_key"), None);
/// ```
pub fn cookie_without(value: &str, name: &str) -> Option<String> {
    let all: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let kept: Vec<&str> = all
        .iter()
        .copied()
        .filter(|c| c.split_once('=').map_or(*c, |(k, _)| k).trim() != name)
        .collect();
    (kept.len() != all.len()).then(|| kept.join("; "))
}

/// Percent-decodes `text` (`+` stays `+`); `None` when an escape is bad or the result is not
/// UTF-8.
///
/// ```
/// assert_eq!(tollgate_sdk::http::percent_decode("a%20b").as_deref(), Some("a b"));
/// assert_eq!(tollgate_sdk::http::percent_decode("a%2"), None);
/// ```
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The response headers, as a filter sees them in
/// [`HttpFilter::on_response_headers`](crate::HttpFilter::on_response_headers).
///
/// ```
/// use tollgate_sdk::{HeaderList, Response};
///
/// let mut headers = HeaderList::from([(":status", "200"), ("server", "nginx")]);
/// let mut resp = Response::new(&mut headers);
/// assert_eq!(resp.status(), Some(200));
/// resp.remove_header("server");
/// assert_eq!(resp.headers().len(), 1);
/// ```
pub struct Response<'a> {
    headers: &'a mut dyn HeaderMap,
    reply: Option<LocalReply>,
}

header_view_methods!(Response, "response");

impl Response<'_> {
    /// The `:status` pseudo-header as a number (`None` when absent or not a number).
    ///
    /// ```
    /// let mut headers = tollgate_sdk::HeaderList::from([(":status", "404")]);
    /// assert_eq!(tollgate_sdk::Response::new(&mut headers).status(), Some(404));
    /// ```
    pub fn status(&self) -> Option<u16> {
        self.headers.get(":status")?.trim().parse().ok()
    }
}

/// A request or response body buffer as the host holds it (the chunk received so far).
///
/// ```
/// use tollgate_sdk::BodyBuffer;
///
/// let mut buffer = b"hello".to_vec();
/// buffer.replace(b"bye");
/// assert_eq!(buffer.read(), b"bye");
/// ```
pub trait BodyBuffer {
    /// The bytes currently buffered.
    fn read(&self) -> Vec<u8>;
    /// Replaces the buffered bytes with `bytes`.
    fn replace(&mut self, bytes: &[u8]);
    /// How many bytes are buffered, without copying them (the default reads them).
    fn len(&self) -> usize {
        self.read().len()
    }
    /// Whether nothing is buffered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BodyBuffer for Vec<u8> {
    fn read(&self) -> Vec<u8> {
        self.clone()
    }

    fn replace(&mut self, bytes: &[u8]) {
        self.clear();
        self.extend_from_slice(bytes);
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// A body chunk, as a filter sees it in
/// [`HttpFilter::on_request_body`](crate::HttpFilter::on_request_body) and
/// [`HttpFilter::on_response_body`](crate::HttpFilter::on_response_body).
///
/// Returning [`crate::Action::Pause`] from a body callback before `end_of_stream` makes the host
/// buffer the body, so the last call sees all of it.
///
/// ```
/// use tollgate_sdk::Body;
///
/// let mut buffer = b"{\"a\":1}".to_vec();
/// let mut body = Body::new(&mut buffer);
/// assert_eq!(body.bytes(), b"{\"a\":1}");
/// body.replace(b"{}");
/// assert_eq!(buffer, b"{}");
/// ```
pub struct Body<'a> {
    buffer: &'a mut dyn BodyBuffer,
    reply: Option<LocalReply>,
}

impl<'a> Body<'a> {
    /// A view of `buffer`.
    ///
    /// ```
    /// let mut buffer = Vec::new();
    /// assert!(tollgate_sdk::Body::new(&mut buffer).bytes().is_empty());
    /// ```
    pub fn new(buffer: &'a mut dyn BodyBuffer) -> Self {
        Self {
            buffer,
            reply: None,
        }
    }

    /// The bytes received so far.
    ///
    /// ```
    /// let mut buffer = b"abc".to_vec();
    /// assert_eq!(tollgate_sdk::Body::new(&mut buffer).bytes(), b"abc");
    /// ```
    pub fn bytes(&self) -> Vec<u8> {
        self.buffer.read()
    }

    /// How many bytes were received so far, without copying them (a filter that buffers a
    /// body in many chunks checks its size at each one).
    ///
    /// ```
    /// let mut buffer = b"abc".to_vec();
    /// let body = tollgate_sdk::Body::new(&mut buffer);
    /// assert_eq!(body.len(), 3);
    /// assert!(!body.is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether no byte was received so far.
    ///
    /// ```
    /// let mut buffer = Vec::new();
    /// assert!(tollgate_sdk::Body::new(&mut buffer).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Replaces the bytes received so far with `bytes`.
    ///
    /// ```
    /// let mut buffer = b"abc".to_vec();
    /// tollgate_sdk::Body::new(&mut buffer).replace(b"xyz");
    /// assert_eq!(buffer, b"xyz");
    /// ```
    pub fn replace(&mut self, bytes: &[u8]) {
        self.buffer.replace(bytes);
    }

    /// Answers the client with this response instead of going on (see
    /// [`Request::send_response`]).
    ///
    /// ```
    /// let mut buffer = b"too big".to_vec();
    /// let mut body = tollgate_sdk::Body::new(&mut buffer);
    /// body.send_response(413, &[], "");
    /// assert_eq!(body.take_local_reply().map(|r| r.status), Some(413));
    /// ```
    pub fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: impl AsRef<[u8]>) {
        self.reply = Some(LocalReply::new(status, headers, body.as_ref()));
    }

    /// The local reply requested with `send_response`, if any.
    ///
    /// ```
    /// let mut buffer = Vec::new();
    /// assert!(tollgate_sdk::Body::new(&mut buffer).local_reply().is_none());
    /// ```
    pub fn local_reply(&self) -> Option<&LocalReply> {
        self.reply.as_ref()
    }

    /// Takes the local reply out of the view (the SDK does this to send it).
    ///
    /// ```
    /// let mut buffer = Vec::new();
    /// assert!(tollgate_sdk::Body::new(&mut buffer).take_local_reply().is_none());
    /// ```
    pub fn take_local_reply(&mut self) -> Option<LocalReply> {
        self.reply.take()
    }
}
