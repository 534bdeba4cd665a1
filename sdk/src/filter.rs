//! The [`HttpFilter`] trait a Tollgate filter implements, and the [`Action`] its callbacks return.

use std::rc::Rc;

use crate::config::FilterConfig;
use crate::http::{Body, Request, Response};

/// What the host does after a callback.
///
/// ```
/// assert_ne!(tollgate_sdk::Action::Continue, tollgate_sdk::Action::Pause);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Action {
    /// Go on with the next filter.
    #[default]
    Continue,
    /// Stop here for now: headers are held (until the filter resumes the stream); body chunks
    /// are buffered and delivered again with the next chunk.
    Pause,
}

/// An HTTP filter: one value per HTTP stream, built from the shared, already validated
/// configuration. Every callback has a default that lets the traffic through unchanged.
///
/// Register it with [`crate::export_filter!`]. The callbacks never touch the host directly, so
/// the same filter runs in native tests over a [`crate::HeaderList`]:
///
/// ```
/// use std::rc::Rc;
/// use serde::Deserialize;
/// use tollgate_sdk::{Action, FilterConfig, HeaderList, HttpFilter, Request};
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     token: String,
/// }
/// impl FilterConfig for Config {}
///
/// struct RequireToken {
///     config: Rc<Config>,
/// }
///
/// impl HttpFilter for RequireToken {
///     const NAME: &'static str = "require-token";
///     type Config = Config;
///
///     fn new(config: Rc<Config>) -> Self {
///         Self { config }
///     }
///
///     fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
///         if req.header("x-token").as_deref() != Some(self.config.token.as_str()) {
///             req.send_response(401, &[], "missing token\n");
///         }
///         Action::Continue
///     }
/// }
///
/// // tollgate_sdk::export_filter!(RequireToken);   // in the filter crate
///
/// let config = Rc::new(tollgate_sdk::config::parse::<Config>(br#"{"token": "s3cret"}"#).unwrap());
/// let mut filter = RequireToken::new(config);
/// let mut headers = HeaderList::from([("x-token", "nope")]);
/// let mut req = Request::new(&mut headers);
/// filter.on_request_headers(&mut req, true);
/// assert_eq!(req.local_reply().map(|r| r.status), Some(401));
/// ```
pub trait HttpFilter: Sized + 'static {
    /// Short name, used as the prefix of every log line the SDK writes for this filter
    /// (`headers: bad configuration at ...`).
    const NAME: &'static str;

    /// The configuration type, parsed from the plugin configuration in `on_configure`.
    type Config: FilterConfig;

    /// Builds the filter for one HTTP stream.
    fn new(config: Rc<Self::Config>) -> Self;

    /// Request headers arrived; `end_of_stream` is true when the request has no body.
    fn on_request_headers(&mut self, _req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// A chunk of the request body arrived.
    fn on_request_body(&mut self, _body: &mut Body<'_>, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// Buffer the request body, up to a limit, and deliver it once to
    /// [`HttpFilter::on_request_body_buffered`] instead of chunk by chunk to
    /// [`HttpFilter::on_request_body`]; past the limit the SDK answers 413 or truncates, as the
    /// [`BodyLimit`](crate::body::BodyLimit) says (see [`crate::body`]). Asked after
    /// [`HttpFilter::on_request_headers`] and at each body chunk until the body is delivered (so
    /// it may depend on the route or the headers); `None` (the default) streams.
    fn request_body_limit(&self) -> Option<crate::body::BodyLimit> {
        None
    }

    /// The buffered request body arrived (only when [`HttpFilter::request_body_limit`] is
    /// `Some`): all of it, or, with [`Extent::Truncated`](crate::body::Extent), more than the
    /// limit, of which the filter looks at the first `max` bytes.
    fn on_request_body_buffered(
        &mut self,
        _body: &mut Body<'_>,
        _extent: crate::body::Extent,
    ) -> Action {
        Action::Continue
    }

    /// Response headers arrived (from the upstream, or a local reply); `end_of_stream` is true
    /// when the response has no body.
    fn on_response_headers(&mut self, _resp: &mut Response<'_>, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// A chunk of the response body arrived.
    fn on_response_body(&mut self, _body: &mut Body<'_>, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    /// The stream is over (completed or reset); last chance to log.
    fn on_done(&mut self) {}

    /// The filter's queue of HTTP callouts (see [`crate::callout`]). A filter that makes
    /// callouts keeps a [`Callouts`](crate::callout::Callouts) and returns it here; after each
    /// callback the SDK sends what was queued, pauses the stream and runs the continuations when
    /// the answers arrive. The default (`None`) makes none. A filter that makes callouts returns
    /// its queue from every call: with `None` the SDK delivers no answer.
    fn callouts(&mut self) -> Option<&mut crate::callout::Callouts<Self>> {
        None
    }
}
