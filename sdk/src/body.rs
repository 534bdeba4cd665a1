//! Whole-body buffering: a filter that needs the complete request body (to sign it, check it,
//! send it to an authorisation service...) asks for it with
//! [`HttpFilter::request_body_limit`] and gets it, once,
//! in [`HttpFilter::on_request_body_buffered`].
//!
//! Until the last chunk the SDK answers the host with `Pause` (proxy-wasm's
//! `StopIterationAndBuffer` for body callbacks: the host keeps accumulating the chunks and
//! delivers the whole buffer with the next call). Past the limit, the [`BodyLimit`] decides:
//! - [`BodyLimit::refuse_above`]: the SDK answers `413 Payload Too Large` itself and the body
//!   never reaches the upstream (see the Envoy notes below for the headers); a `content-length`
//!   above the limit is refused already at the request headers;
//! - [`BodyLimit::truncate_at`]: as soon as the limit is reached (or the body ends) the filter
//!   gets what is buffered with [`Extent::Truncated`] when there is more than the limit, and
//!   looks at the first `max` bytes (Envoy's `ext_authz` `allow_partial_message`). The body
//!   itself goes on untouched.
//!
//! After the buffered callback, any further chunk goes to
//! [`HttpFilter::on_request_body`].
//!
//! Filters that do not ask for it keep the chunk-by-chunk
//! [`HttpFilter::on_request_body`], where each call may
//! [`Body::replace`](crate::Body::replace) the chunk (a streaming transform).
//!
//! Notes for Envoy:
//! - its own buffer limit (`per_connection_buffer_limit_bytes`, 1 MiB by default) applies too; a
//!   larger `request_body_limit` needs it raised, or Envoy answers 413 first;
//! - Envoy turns a `Pause` from the request *headers* callback into "stop everything" (no body
//!   callbacks until resumed), so the SDK lets the headers go on and holds the body. The router
//!   may therefore open the upstream request with the headers before the body is complete; a
//!   413 sent while buffering then resets that upstream request (the upstream saw headers, never
//!   a body). A `content-length` above the limit is answered at the headers, before anything is
//!   forwarded.
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_sdk::{Action, Body, HttpFilter, body};
//!
//! /// Refuses request bodies that are not JSON objects.
//! struct JsonOnly;
//! impl HttpFilter for JsonOnly {
//!     const NAME: &'static str = "json-only";
//!     type Config = Vec<String>;
//!     fn new(_config: Rc<Vec<String>>) -> Self {
//!         JsonOnly
//!     }
//!     fn request_body_limit(&self) -> Option<body::BodyLimit> {
//!         Some(body::BodyLimit::refuse_above(16))
//!     }
//!     fn on_request_body_buffered(&mut self, body: &mut Body<'_>, _extent: body::Extent) -> Action {
//!         if !body.bytes().starts_with(b"{") {
//!             body.send_response(400, &[], "JSON object expected\n");
//!         }
//!         Action::Continue
//!     }
//! }
//!
//! // Natively, `body::feed_request` plays the host: chunks in, outcome out.
//! let mut filter = JsonOnly::new(Rc::new(vec![]));
//! let ok = body::feed_request(&mut filter, &[b"{\"a\":", b"1}"]);
//! assert_eq!(ok, body::Outcome::Forwarded(b"{\"a\":1}".to_vec()));
//! let big = body::feed_request(&mut filter, &[b"{\"a\": \"0123456789\"}"]);
//! assert_eq!(big, body::Outcome::Answered(413));
//! let bad = body::feed_request(&mut filter, &[b"[]"]);
//! assert_eq!(bad, body::Outcome::Answered(400));
//! ```

use crate::filter::{Action, HttpFilter};
use crate::http::{Body, LocalReply};

/// How much of the request body a filter buffers, and what happens past that.
///
/// ```
/// use tollgate_sdk::body::BodyLimit;
/// assert_eq!(BodyLimit::refuse_above(1024).max(), 1024);
/// assert!(BodyLimit::truncate_at(64).truncates());
/// assert!(!BodyLimit::refuse_above(64).truncates());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    max: usize,
    truncate: bool,
}

impl BodyLimit {
    /// Buffer up to `max` bytes; a longer body is answered 413 by the SDK.
    pub fn refuse_above(max: usize) -> Self {
        Self {
            max,
            truncate: false,
        }
    }

    /// Buffer until `max` bytes (or the end of the body); a longer body is handed over as
    /// [`Extent::Truncated`] once `max` bytes are in, and goes on to the upstream whole.
    pub fn truncate_at(max: usize) -> Self {
        Self {
            max,
            truncate: true,
        }
    }

    /// The most bytes buffered for the filter.
    pub fn max(self) -> usize {
        self.max
    }

    /// Whether a longer body is truncated for the filter (rather than refused).
    pub fn truncates(self) -> bool {
        self.truncate
    }
}

/// Whether the buffered body handed to the filter is all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The whole body (at most the limit).
    Whole,
    /// More than the limit arrived (only with [`BodyLimit::truncate_at`]): the filter should look
    /// at the first [`BodyLimit::max`] bytes of what it is given.
    Truncated,
}

/// What to do with a body callback when the filter buffers the whole body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Past the limit: answer 413.
    TooLarge,
    /// Not complete yet: pause, the host keeps buffering.
    Wait,
    /// Hand what is buffered to the filter.
    Complete(Extent),
}

/// The step for a body of `buffered` bytes so far, `end_of_stream` telling whether it is all.
///
/// ```
/// use tollgate_sdk::body::{BodyLimit, Extent, Step, step};
/// let refuse = BodyLimit::refuse_above(10);
/// assert_eq!(step(refuse, 4, false), Step::Wait);
/// assert_eq!(step(refuse, 10, true), Step::Complete(Extent::Whole));
/// assert_eq!(step(refuse, 11, false), Step::TooLarge);
/// let truncate = BodyLimit::truncate_at(10);
/// assert_eq!(step(truncate, 10, false), Step::Complete(Extent::Whole));
/// assert_eq!(step(truncate, 11, false), Step::Complete(Extent::Truncated));
/// ```
pub fn step(limit: BodyLimit, buffered: usize, end_of_stream: bool) -> Step {
    if buffered > limit.max {
        if limit.truncate {
            Step::Complete(Extent::Truncated)
        } else {
            Step::TooLarge
        }
    } else if end_of_stream || (limit.truncate && buffered == limit.max) {
        Step::Complete(Extent::Whole)
    } else {
        Step::Wait
    }
}

/// Whether a `content-length` header value announces a body above `limit` (unparsable values are
/// left to the buffering check).
///
/// ```
/// assert!(tollgate_sdk::body::announced_too_large(10, Some("11")));
/// assert!(!tollgate_sdk::body::announced_too_large(10, Some(" 10 ")));
/// assert!(!tollgate_sdk::body::announced_too_large(10, None));
/// ```
pub fn announced_too_large(limit: usize, content_length: Option<&str>) -> bool {
    content_length
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
}

/// The 413 the SDK answers with.
///
/// ```
/// assert_eq!(tollgate_sdk::body::too_large_reply(1024).status, 413);
/// ```
pub fn too_large_reply(limit: usize) -> LocalReply {
    LocalReply {
        status: 413,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: format!("request body larger than {limit} bytes\n").into_bytes(),
    }
}

/// What happened to a request body fed with [`feed_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body went on to the upstream, as these bytes.
    Forwarded(Vec<u8>),
    /// The filter (or the SDK) answered with this status.
    Answered(u16),
    /// The filter paused the stream after the last chunk (it resumes later, e.g. after a callout).
    Paused,
}

/// Plays the host natively: delivers `chunks` to `filter`'s body callbacks the way the SDK does
/// inside the proxy (buffering when the filter asks for it), for unit tests.
///
/// A filter that pauses once it has had its buffered body (it waits for a callout) stops the
/// feed there: the outcome is [`Outcome::Paused`].
pub fn feed_request<F: HttpFilter>(filter: &mut F, chunks: &[&[u8]]) -> Outcome {
    let mut forwarded = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut delivered = false;
    let count = chunks.len().max(1);
    for i in 0..count {
        let chunk = chunks.get(i).copied().unwrap_or_default();
        let end_of_stream = i + 1 == count;
        buffer.extend_from_slice(chunk);
        let mut body = Body::new(&mut buffer);
        let action = on_request_body(filter, &mut body, end_of_stream, &mut delivered);
        if let Some(reply) = body.take_local_reply() {
            return Outcome::Answered(reply.status);
        }
        match action {
            Action::Continue => forwarded.append(&mut buffer),
            Action::Pause if end_of_stream || delivered => return Outcome::Paused,
            Action::Pause => {}
        }
    }
    Outcome::Forwarded(forwarded)
}

/// The SDK's request body dispatch (shared by the proxy glue and [`feed_request`]): buffering
/// with the limit when the filter asks for it (until `delivered`), else the chunk callback.
pub(crate) fn on_request_body<F: HttpFilter>(
    filter: &mut F,
    body: &mut Body<'_>,
    end_of_stream: bool,
    delivered: &mut bool,
) -> Action {
    let limit = if *delivered {
        None
    } else {
        filter.request_body_limit()
    };
    let Some(limit) = limit else {
        return filter.on_request_body(body, end_of_stream);
    };
    match step(limit, body.len(), end_of_stream) {
        Step::TooLarge => {
            let reply = too_large_reply(limit.max());
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            body.send_response(reply.status, &headers, &reply.body);
            Action::Pause
        }
        Step::Wait => Action::Pause,
        Step::Complete(extent) => {
            *delivered = true;
            filter.on_request_body_buffered(body, extent)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    /// Uppercases chunk by chunk (no buffering).
    struct Upper;
    impl HttpFilter for Upper {
        const NAME: &'static str = "upper";
        type Config = Vec<String>;
        fn new(_config: Rc<Vec<String>>) -> Self {
            Upper
        }
        fn on_request_body(&mut self, body: &mut Body<'_>, _end_of_stream: bool) -> Action {
            let upper = body.bytes().to_ascii_uppercase();
            body.replace(&upper);
            Action::Continue
        }
    }

    /// Buffers up to 8 bytes and counts the calls.
    struct Whole(usize);
    impl HttpFilter for Whole {
        const NAME: &'static str = "whole";
        type Config = Vec<String>;
        fn new(_config: Rc<Vec<String>>) -> Self {
            Whole(0)
        }
        fn request_body_limit(&self) -> Option<BodyLimit> {
            Some(BodyLimit::refuse_above(8))
        }
        fn on_request_body_buffered(&mut self, _body: &mut Body<'_>, _extent: Extent) -> Action {
            self.0 += 1;
            Action::Continue
        }
    }

    #[test]
    fn chunk_transform_sees_each_chunk() {
        let mut f = Upper;
        assert_eq!(
            feed_request(&mut f, &[b"ab", b"cd"]),
            Outcome::Forwarded(b"ABCD".to_vec())
        );
    }

    #[test]
    fn buffered_filter_sees_the_whole_body_once() {
        let mut f = Whole(0);
        assert_eq!(
            feed_request(&mut f, &[b"12", b"34", b"5678"]),
            Outcome::Forwarded(b"12345678".to_vec())
        );
        assert_eq!(f.0, 1);
    }

    #[test]
    fn past_the_limit_is_413_before_the_filter_sees_it() {
        let mut f = Whole(0);
        assert_eq!(
            feed_request(&mut f, &[b"12345", b"6789"]),
            Outcome::Answered(413)
        );
        assert_eq!(f.0, 0);
        assert_eq!(step(BodyLimit::refuse_above(8), 9, true), Step::TooLarge);
    }

    /// Truncates at 4 bytes, records what it saw, then sees later chunks streamed.
    struct Partial {
        seen: Vec<(Vec<u8>, Extent)>,
        streamed: usize,
    }
    impl HttpFilter for Partial {
        const NAME: &'static str = "partial";
        type Config = Vec<String>;
        fn new(_config: Rc<Vec<String>>) -> Self {
            Partial {
                seen: Vec::new(),
                streamed: 0,
            }
        }
        fn request_body_limit(&self) -> Option<BodyLimit> {
            Some(BodyLimit::truncate_at(4))
        }
        fn on_request_body_buffered(&mut self, body: &mut Body<'_>, extent: Extent) -> Action {
            self.seen.push((body.bytes(), extent));
            Action::Continue
        }
        fn on_request_body(&mut self, _body: &mut Body<'_>, _end_of_stream: bool) -> Action {
            self.streamed += 1;
            Action::Continue
        }
    }

    #[test]
    fn truncating_limit_hands_over_at_the_limit_and_streams_the_rest() {
        let mut f = Partial::new(Rc::new(vec![]));
        assert_eq!(
            feed_request(&mut f, &[b"12", b"345", b"67"]),
            Outcome::Forwarded(b"1234567".to_vec())
        );
        assert_eq!(f.seen, vec![(b"12345".to_vec(), Extent::Truncated)]);
        assert_eq!(f.streamed, 1);
        let mut f = Partial::new(Rc::new(vec![]));
        assert_eq!(
            feed_request(&mut f, &[b"12"]),
            Outcome::Forwarded(b"12".to_vec())
        );
        assert_eq!(f.seen, vec![(b"12".to_vec(), Extent::Whole)]);
    }

    #[test]
    fn empty_body_is_complete() {
        let mut f = Whole(0);
        assert_eq!(feed_request(&mut f, &[]), Outcome::Forwarded(Vec::new()));
        assert_eq!(f.0, 1);
    }

    #[test]
    fn bad_content_length_is_left_to_buffering() {
        assert!(!announced_too_large(8, Some("lots")));
        assert!(!announced_too_large(8, Some("-1")));
        assert!(announced_too_large(8, Some("18446744073709551615")));
    }
}
