//! The glue between the host and an [`HttpFilter`]: the SDK's own dispatch of the proxy-wasm
//! ABI callbacks (`proxy_on_*`, exported by [`crate::export_filter!`]) to root contexts (parse
//! the configuration in `on_configure`, create one filter per HTTP stream) and HTTP streams
//! (wrap host header maps and body buffers in the SDK views, send local replies and callouts).
//!
//! Architecture invariant: the streams of a VM live in one [`ContextTable`] keyed by context id,
//! by value, with no trait object and no hashing: a callback costs one masked index and a
//! compare (the `proxy-wasm` crate's dispatcher hashes the id into a map of boxed contexts and
//! tries three maps for `on_done`/`on_delete`; bench/README.md has the numbers).
//!
//! Everything here calls the host, so it only does something inside a proxy; the filter logic it
//! drives is tested natively through the views, the table natively with random sequences.

use std::cell::RefCell;
use std::rc::Rc;

use crate::abi::{self, BufferType, MapType};
use crate::callout::{self, Continuation};
use crate::config;
use crate::filter::{Action, HttpFilter};
use crate::headers::HeaderMap;
use crate::http::{Body, BodyBuffer, LocalReply, Request, Response};
use crate::logger;

/// Installs the logger and panic hook. Called from the `_initialize` export that
/// [`crate::export_filter!`] generates.
pub fn start<F: HttpFilter>() {
    logger::install(F::NAME);
}

/// A map from context id to `T`, open-addressed on the id itself (hosts number contexts
/// consecutively, so ids spread evenly over the slots), linear probing, removal by backward
/// shift (no tombstones). At most half full.
pub struct ContextTable<T> {
    slots: Vec<Option<(u32, T)>>,
    len: usize,
}

impl<T> Default for ContextTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ContextTable<T> {
    /// An empty table (allocates on the first insert).
    pub const fn new() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }

    /// How many contexts it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `id`.
    fn find(&self, id: u32) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut at = id as usize & mask;
        loop {
            match self.slots.get(at)? {
                Some((key, _)) if *key == id => return Some(at),
                Some(_) => at = (at + 1) & mask,
                None => return None,
            }
        }
    }

    /// The value of context `id`.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let at = self.find(id)?;
        self.slots.get_mut(at)?.as_mut().map(|(_, value)| value)
    }

    /// Stores `value` for context `id`; returns the value it replaces.
    pub fn insert(&mut self, id: u32, value: T) -> Option<T> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        // One probe run: it ends at `id` (replaced) or at the first free slot (placed there).
        let mask = self.mask();
        let mut at = id as usize & mask;
        loop {
            match self.slots.get_mut(at) {
                Some(Some((key, old))) if *key == id => return Some(std::mem::replace(old, value)),
                Some(Some(_)) => at = (at + 1) & mask,
                Some(slot @ None) => {
                    *slot = Some((id, value));
                    self.len += 1;
                    return None;
                }
                // Unreachable: the table is never full and `at` is masked.
                None => return None,
            }
        }
    }

    /// Puts `(id, value)` in the first free slot of its probe sequence (`id` is not present).
    fn place(&mut self, id: u32, value: T) {
        let mask = self.mask();
        let mut at = id as usize & mask;
        while let Some(Some(_)) = self.slots.get(at) {
            at = (at + 1) & mask;
        }
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Some((id, value));
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(&mut self.slots, (0..size).map(|_| None).collect());
        for (id, value) in old.into_iter().flatten() {
            self.place(id, value);
        }
    }

    /// Takes context `id` out.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let at = self.find(id)?;
        let (_, value) = self.slots.get_mut(at)?.take()?;
        self.len -= 1;
        // Backward shift: pull later entries of the probe run into the hole when the hole lies
        // on their probe path (between their home slot and where they sit).
        let mask = self.mask();
        let mut hole = at;
        let mut next = (at + 1) & mask;
        while let Some(Some((key, _))) = self.slots.get(next) {
            let home = *key as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                let moved = self.slots.get_mut(next).and_then(Option::take);
                if let Some(slot) = self.slots.get_mut(hole) {
                    *slot = moved;
                }
                hole = next;
            }
            next = (next + 1) & mask;
        }
        Some(value)
    }
}

thread_local! {
    /// Which stream sent each callout in flight (token, context id): the host delivers the
    /// answer on the root context. Not generic, so it lives here, not in the dispatcher.
    static CALLOUT_OWNERS: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

fn register_callout(token: u32, context_id: u32) {
    CALLOUT_OWNERS.with(|owners| {
        if let Ok(mut owners) = owners.try_borrow_mut() {
            owners.push((token, context_id));
        }
    });
}

fn callout_owner(token: u32) -> Option<u32> {
    CALLOUT_OWNERS.with(|owners| {
        let mut owners = owners.try_borrow_mut().ok()?;
        let at = owners.iter().position(|(t, _)| *t == token)?;
        Some(owners.swap_remove(at).1)
    })
}

fn forget_callouts(context_id: u32) {
    CALLOUT_OWNERS.with(|owners| {
        if let Ok(mut owners) = owners.try_borrow_mut()
            && !owners.is_empty()
        {
            owners.retain(|(_, owner)| *owner != context_id);
        }
    });
}

/// The state of one VM for filter `F`: its root contexts (one per plugin configuration sharing
/// the VM) and its HTTP streams. [`crate::export_filter!`] keeps one in a thread-local and
/// forwards each `proxy_on_*` export to the method of the same name.
#[doc(hidden)]
pub struct Dispatcher<F: HttpFilter> {
    roots: RefCell<Vec<(u32, FilterRoot<F>)>>,
    streams: RefCell<ContextTable<Stream<F>>>,
}

impl<F: HttpFilter> Default for Dispatcher<F> {
    fn default() -> Self {
        Self::new()
    }
}

/// A stream's callback could not reach its context (unknown id, or a callback re-entered while
/// another ran): logged, and the stream goes on.
fn lost(what: &str, context_id: u32) {
    log::debug!("{what}: no context {context_id} to deliver to");
}

impl<F: HttpFilter> Dispatcher<F> {
    /// No contexts yet.
    pub const fn new() -> Self {
        Self {
            roots: RefCell::new(Vec::new()),
            streams: RefCell::new(ContextTable::new()),
        }
    }

    /// `proxy_on_context_create`: a root context when `parent` is 0, else an HTTP stream of
    /// root `parent` (fail-closed when that root has no valid configuration).
    pub fn on_context_create(&self, context_id: u32, parent: u32) {
        if parent == 0 {
            if let Ok(mut roots) = self.roots.try_borrow_mut() {
                roots.push((context_id, FilterRoot { config: None }));
            }
            return;
        }
        let config = self.roots.try_borrow().ok().and_then(|roots| {
            roots
                .iter()
                .find(|(id, _)| *id == parent)
                .and_then(|(_, root)| root.config.clone())
        });
        let stream = match config {
            Some(config) => Stream::Configured(FilterStream {
                id: context_id,
                filter: F::new(config),
                in_flight: Vec::new(),
                body_delivered: false,
            }),
            None => Stream::Unconfigured,
        };
        match self.streams.try_borrow_mut() {
            Ok(mut streams) => {
                streams.insert(context_id, stream);
            }
            Err(_) => lost("on_context_create", context_id),
        }
    }

    fn with_root(&self, context_id: u32, f: impl FnOnce(&mut FilterRoot<F>) -> bool) -> bool {
        let Ok(mut roots) = self.roots.try_borrow_mut() else {
            return false;
        };
        match roots.iter_mut().find(|(id, _)| *id == context_id) {
            Some((_, root)) => f(root),
            None => false,
        }
    }

    /// `proxy_on_vm_start`.
    pub fn on_vm_start(&self, _context_id: u32, _size: usize) -> bool {
        logger::refresh_level();
        true
    }

    /// `proxy_on_configure`: parses and checks the configuration; false refuses it.
    pub fn on_configure(&self, context_id: u32, size: usize) -> bool {
        self.with_root(context_id, |root| root.on_configure(size))
    }

    fn with_stream(
        &self,
        what: &str,
        context_id: u32,
        f: impl FnOnce(&mut Stream<F>) -> abi::Action,
    ) -> u32 {
        let Ok(mut streams) = self.streams.try_borrow_mut() else {
            lost(what, context_id);
            return abi::Action::Continue as u32;
        };
        match streams.get_mut(context_id) {
            Some(stream) => f(stream) as u32,
            None => {
                lost(what, context_id);
                abi::Action::Continue as u32
            }
        }
    }

    /// `proxy_on_request_headers`.
    pub fn on_request_headers(&self, context_id: u32, _headers: usize, end_of_stream: bool) -> u32 {
        self.with_stream("on_request_headers", context_id, |stream| match stream {
            Stream::Configured(stream) => stream.on_http_request_headers(end_of_stream),
            Stream::Unconfigured => unconfigured::<F>(),
        })
    }

    /// `proxy_on_request_body`.
    pub fn on_request_body(&self, context_id: u32, size: usize, end_of_stream: bool) -> u32 {
        self.with_stream("on_request_body", context_id, |stream| match stream {
            Stream::Configured(stream) => stream.on_http_request_body(size, end_of_stream),
            Stream::Unconfigured => abi::Action::Continue,
        })
    }

    /// `proxy_on_response_headers`.
    pub fn on_response_headers(
        &self,
        context_id: u32,
        _headers: usize,
        end_of_stream: bool,
    ) -> u32 {
        self.with_stream("on_response_headers", context_id, |stream| match stream {
            Stream::Configured(stream) => stream.on_http_response_headers(end_of_stream),
            Stream::Unconfigured => abi::Action::Continue,
        })
    }

    /// `proxy_on_response_body`.
    pub fn on_response_body(&self, context_id: u32, size: usize, end_of_stream: bool) -> u32 {
        self.with_stream("on_response_body", context_id, |stream| match stream {
            Stream::Configured(stream) => stream.on_http_response_body(size, end_of_stream),
            Stream::Unconfigured => abi::Action::Continue,
        })
    }

    /// `proxy_on_delete`: the stream is over. Runs the filter's [`HttpFilter::on_done`], then
    /// forgets the context (a stream's callouts in flight with it).
    ///
    /// The module exports no `proxy_on_done`: the host then takes every stream as done at once
    /// (proxy-wasm-cpp-host's `onDone` returns true without calling the guest; Envoy calls
    /// `onDone` then `onDelete` as the stream's filters are destroyed, and so does the harness),
    /// which saves one guest call per request. The filter's `on_done` runs here instead, at the
    /// same point of the stream's end.
    pub fn on_delete(&self, context_id: u32) {
        let removed = match self.streams.try_borrow_mut() {
            Ok(mut streams) => streams.remove(context_id),
            Err(_) => None,
        };
        match removed {
            Some(Stream::Configured(mut stream)) => {
                // The table is no longer borrowed: the filter's host calls cannot reach it.
                stream.filter.on_done();
                // Only a stream that sent a callout has owners to forget: every
                // `register_callout` comes with a push to `in_flight`, which then has a
                // capacity (kept by `clear`). Most streams never send one.
                let sent_callouts = stream.in_flight.capacity() != 0;
                drop(stream);
                if sent_callouts {
                    forget_callouts(context_id);
                }
            }
            Some(Stream::Unconfigured) => {}
            None => {
                if let Ok(mut roots) = self.roots.try_borrow_mut() {
                    roots.retain(|(id, _)| *id != context_id);
                }
            }
        }
    }

    /// The stream that sent callout `token`, made the host's effective context.
    fn answered(&self, what: &str, token: u32) -> Option<u32> {
        let Some(owner) = callout_owner(token) else {
            log::debug!("{}: {what} to an unknown callout {token}", F::NAME);
            return None;
        };
        if let Err(status) = abi::set_effective_context(owner) {
            log::debug!("{}: cannot switch to stream {owner}: {status:?}", F::NAME);
            return None;
        }
        Some(owner)
    }

    /// `proxy_on_http_call_response` (delivered on the root context).
    pub fn on_http_call_response(
        &self,
        _context_id: u32,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(owner) = self.answered("answer", token) else {
            return;
        };
        self.with_stream("on_http_call_response", owner, |stream| {
            if let Stream::Configured(stream) = stream {
                stream.on_http_call_response(token, body_size);
            }
            abi::Action::Continue
        });
    }

    /// `proxy_on_grpc_receive`: the message of a unary gRPC call.
    pub fn on_grpc_receive(&self, _context_id: u32, token: u32, size: usize) {
        self.grpc_answer(token, 0, size);
    }

    /// `proxy_on_grpc_close`: a unary gRPC call failed with `status`.
    pub fn on_grpc_close(&self, _context_id: u32, token: u32, status: u32) {
        self.grpc_answer(token, status, 0);
    }

    fn grpc_answer(&self, token: u32, status: u32, size: usize) {
        let Some(owner) = self.answered("gRPC answer", token) else {
            return;
        };
        self.with_stream("on_grpc_call_response", owner, |stream| {
            if let Stream::Configured(stream) = stream {
                stream.on_grpc_call_response(token, status, size);
            }
            abi::Action::Continue
        });
    }
}

/// One HTTP stream: the filter, or the fail-closed stand-in of a root without configuration.
enum Stream<F> {
    Configured(FilterStream<F>),
    Unconfigured,
}

struct FilterRoot<F: HttpFilter> {
    config: Option<Rc<F::Config>>,
}

impl<F: HttpFilter> FilterRoot<F> {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        logger::refresh_level();
        let bytes = match abi::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!(
                    "{}: cannot read the plugin configuration: {status:?}",
                    F::NAME
                );
                return false;
            }
        };
        match config::parse::<F::Config>(&bytes).and_then(|config| {
            config::FilterConfig::on_configured(&config)?;
            Ok(config)
        }) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                log::debug!("{}: configured ({} bytes)", F::NAME, bytes.len());
                true
            }
            Err(err) => {
                log::error!("{}: {err}", F::NAME);
                false
            }
        }
    }
}

struct FilterStream<F> {
    /// The stream's context id (callouts are answered on the root context).
    id: u32,
    filter: F,
    /// Callouts sent and not answered yet, by token (a handful at most: a `Vec` costs nothing
    /// to create for the many streams that never send one, unlike a hashed map).
    in_flight: Vec<(u32, InFlight<F>)>,
    /// The buffered request body was handed to the filter; later chunks stream.
    body_delivered: bool,
}

/// A callout waiting for its answer.
struct InFlight<F> {
    cluster: String,
    /// Dispatched from a response callback: resume the response, not the request.
    response_phase: bool,
    then: Then<F>,
}

/// The continuation of an HTTP callout or of a gRPC call.
enum Then<F> {
    Http(Continuation<F>),
    Grpc(crate::grpc::GrpcContinuation<F>),
}

impl<F: HttpFilter> FilterStream<F> {
    fn on_http_call_response(&mut self, token_id: u32, body_size: usize) {
        // A filter without a callout queue never sent one (`HttpFilter::callouts`); for such a
        // filter this whole method compiles away (module size: bench/README.md).
        if self.filter.callouts().is_none() {
            return;
        }
        let Some(index) = self.in_flight.iter().position(|(t, _)| *t == token_id) else {
            log::debug!("{}: answer to an unknown callout {token_id}", F::NAME);
            return;
        };
        let (_, call) = self.in_flight.swap_remove(index);
        let Then::Http(then) = call.then else {
            log::debug!("{}: http answer to gRPC call {token_id}", F::NAME);
            return;
        };
        let result = callout::read_response(&call.cluster, body_size);
        if let Err(err) = &result {
            // The continuation gets the error and decides what to log.
            log::debug!("{}: {err}", F::NAME);
        }
        let mut headers = HostHeaders(MapType::HttpRequestHeaders);
        let mut req = Request::new(&mut headers);
        let action = then(&mut self.filter, &mut req, result);
        let reply = req.take_local_reply();
        self.after_answer(action, reply, call.response_phase);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.filter.callouts().is_none() {
            return;
        }
        let Some(index) = self.in_flight.iter().position(|(t, _)| *t == token_id) else {
            log::debug!("{}: answer to an unknown gRPC call {token_id}", F::NAME);
            return;
        };
        let (_, call) = self.in_flight.swap_remove(index);
        let Then::Grpc(then) = call.then else {
            log::debug!("{}: gRPC answer to http callout {token_id}", F::NAME);
            return;
        };
        let answer = crate::grpc::read_answer(&call.cluster, status_code, response_size);
        if let Err(err) = &answer {
            log::debug!("{}: {err}", F::NAME);
        }
        let mut headers = HostHeaders(MapType::HttpRequestHeaders);
        let mut req = Request::new(&mut headers);
        let action = then(&mut self.filter, &mut req, answer);
        let reply = req.take_local_reply();
        self.after_answer(action, reply, call.response_phase);
    }

    /// After a continuation: sends what it queued (or its reply) and resumes the stream when
    /// nothing is left in flight.
    fn after_answer(&mut self, action: Action, reply: Option<LocalReply>, response_phase: bool) {
        let next = self.send_callouts(action, reply, response_phase);
        if next == abi::Action::Continue {
            let resumed = if response_phase {
                abi::resume_http_response()
            } else {
                abi::resume_http_request()
            };
            if let Err(status) = resumed {
                log::warn!("{}: cannot resume the stream: {status:?}", F::NAME);
            }
        }
    }

    /// Sends the callouts the filter queued in the callback that just returned (or sends its
    /// local reply); the stream stays paused while any callout is in flight.
    fn send_callouts(
        &mut self,
        mut action: Action,
        reply: Option<LocalReply>,
        response_phase: bool,
    ) -> abi::Action {
        // No queue, nothing in flight (`HttpFilter::callouts`): the common case, and for a
        // filter without callouts the only one.
        if self.filter.callouts().is_none() {
            return finish::<F>(action, reply);
        }
        if reply.is_some() {
            if let Some(queue) = self.filter.callouts() {
                queue.take();
                queue.take_grpc();
            }
            self.in_flight.clear();
            return finish::<F>(action, reply);
        }
        loop {
            let queued = self.filter.callouts().map(|q| q.take()).unwrap_or_default();
            let grpc = self
                .filter
                .callouts()
                .map(|q| q.take_grpc())
                .unwrap_or_default();
            if queued.is_empty() && grpc.is_empty() {
                break;
            }
            for call in grpc {
                let (call, then) = call.into_parts();
                match crate::grpc::send(&call) {
                    Ok(token) => {
                        register_callout(token, self.id);
                        self.in_flight.push((
                            token,
                            InFlight {
                                cluster: call.cluster,
                                response_phase,
                                then: Then::Grpc(then),
                            },
                        ));
                    }
                    Err(err) => {
                        log::debug!("{}: {err}", F::NAME);
                        let mut headers = HostHeaders(MapType::HttpRequestHeaders);
                        let mut req = Request::new(&mut headers);
                        action = then(&mut self.filter, &mut req, Err(err));
                        if let Some(reply) = req.take_local_reply() {
                            self.in_flight.clear();
                            return finish::<F>(Action::Pause, Some(reply));
                        }
                    }
                }
            }
            for call in queued {
                let (request, then) = call.into_parts();
                match callout::send(&request) {
                    Ok(token) => {
                        register_callout(token, self.id);
                        self.in_flight.push((
                            token,
                            InFlight {
                                cluster: request.cluster,
                                response_phase,
                                then: Then::Http(then),
                            },
                        ));
                    }
                    Err(err) => {
                        log::debug!("{}: {err}", F::NAME);
                        let mut headers = HostHeaders(MapType::HttpRequestHeaders);
                        let mut req = Request::new(&mut headers);
                        action = then(&mut self.filter, &mut req, Err(err));
                        if let Some(reply) = req.take_local_reply() {
                            self.in_flight.clear();
                            return finish::<F>(Action::Pause, Some(reply));
                        }
                    }
                }
            }
        }
        if self.in_flight.is_empty() {
            action.into()
        } else {
            abi::Action::Pause
        }
    }

    fn on_http_request_headers(&mut self, end_of_stream: bool) -> abi::Action {
        let mut headers = HostHeaders(MapType::HttpRequestHeaders);
        let mut req = Request::new(&mut headers);
        let action = self.filter.on_request_headers(&mut req, end_of_stream);
        let mut reply = req.take_local_reply();
        if reply.is_none()
            && let Some(limit) = self.filter.request_body_limit()
            && !limit.truncates()
            && crate::body::announced_too_large(
                limit.max(),
                req.header("content-length").as_deref(),
            )
        {
            reply = Some(crate::body::too_large_reply(limit.max()));
        }
        self.send_callouts(action, reply, false)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> abi::Action {
        let mut buffer = HostBody::new(BufferType::HttpRequestBody, body_size);
        let mut body = Body::new(&mut buffer);
        let action = crate::body::on_request_body(
            &mut self.filter,
            &mut body,
            end_of_stream,
            &mut self.body_delivered,
        );
        self.send_callouts(action, body.take_local_reply(), false)
    }

    fn on_http_response_headers(&mut self, end_of_stream: bool) -> abi::Action {
        let mut headers = HostHeaders(MapType::HttpResponseHeaders);
        let mut resp = Response::new(&mut headers);
        let action = self.filter.on_response_headers(&mut resp, end_of_stream);
        self.send_callouts(action, resp.take_local_reply(), true)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> abi::Action {
        let mut buffer = HostBody::new(BufferType::HttpResponseBody, body_size);
        let mut body = Body::new(&mut buffer);
        let action = self.filter.on_response_body(&mut body, end_of_stream);
        self.send_callouts(action, body.take_local_reply(), true)
    }
}

/// Sends the local reply, if any (and then holds the stream), else maps the filter's action.
fn finish<F: HttpFilter>(action: Action, reply: Option<LocalReply>) -> abi::Action {
    let Some(reply) = reply else {
        return action.into();
    };
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(status) = abi::send_http_response(u32::from(reply.status), &headers, &reply.body) {
        log::error!(
            "{}: the host refused the local reply {}: {status:?}",
            F::NAME,
            reply.status
        );
    }
    abi::Action::Pause
}

/// A stream created although no configuration was accepted: fail closed.
fn unconfigured<F: HttpFilter>() -> abi::Action {
    log::error!("{}: no valid configuration, answering 500", F::NAME);
    let reply = LocalReply {
        status: 500,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: format!("{} filter is not configured\n", F::NAME).into_bytes(),
    };
    finish::<F>(Action::Pause, Some(reply))
}

/// One of the host's header maps.
struct HostHeaders(MapType);

impl HeaderMap for HostHeaders {
    fn get(&self, name: &str) -> Option<String> {
        // The `_bytes` calls: a non-UTF-8 value (legal in HTTP) must not panic.
        match abi::get_map_value_bytes(self.0, name) {
            Ok(value) => value.map(into_string),
            Err(status) => {
                log::warn!("cannot read header {name}: {status:?}");
                None
            }
        }
    }

    fn pairs(&self) -> Vec<(String, String)> {
        // Straight from the host's serialised map: one `String` per name and value, no
        // intermediate byte vectors.
        let mut pairs = Vec::new();
        self.for_each_pair(&mut |name, value| {
            pairs.push((crate::headers::text(name), crate::headers::text(value)));
        });
        pairs
    }

    fn set(&mut self, name: &str, value: &str) {
        if let Err(status) = abi::set_map_value(self.0, name, Some(value)) {
            log::warn!("cannot set header {name}: {status:?}");
        }
    }

    fn add(&mut self, name: &str, value: &str) {
        if let Err(status) = abi::add_map_value(self.0, name, value) {
            log::warn!("cannot add header {name}: {status:?}");
        }
    }

    fn remove(&mut self, name: &str) {
        if let Err(status) = abi::remove_map_value(self.0, name) {
            log::warn!("cannot remove header {name}: {status:?}");
        }
    }

    fn contains(&self, name: &str) -> bool {
        // The value the host copies in is dropped as bytes: no UTF-8 check, no `String`.
        match abi::get_map_value_bytes(self.0, name) {
            Ok(value) => value.is_some(),
            Err(status) => {
                log::warn!("cannot read header {name}: {status:?}");
                false
            }
        }
    }

    fn wire_pairs(&self) -> crate::headers::WirePairs {
        match abi::get_map_wire(self.0) {
            Ok(wire) => crate::headers::WirePairs::from_wire(wire.unwrap_or_default()),
            Err(status) => {
                log::warn!("cannot read headers: {status:?}");
                crate::headers::WirePairs::default()
            }
        }
    }

    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        // The map as the host serialises it, walked in place: no copy per header (the
        // `proxy-wasm` crate's `get_map_bytes` makes two per header).
        match abi::get_map_wire(self.0) {
            Ok(Some(wire)) => crate::headers::walk_wire_pairs(&wire, f),
            Ok(None) => {}
            Err(status) => log::warn!("cannot read headers: {status:?}"),
        }
    }
}

/// A header value as text: the bytes themselves when they are UTF-8 (no copy), else a lossy
/// copy (a non-UTF-8 value is legal in HTTP and must not panic).
fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// One of the host's body buffers, `size` bytes long when the callback started.
struct HostBody {
    kind: BufferType,
    size: usize,
}

impl HostBody {
    fn new(kind: BufferType, size: usize) -> Self {
        Self { kind, size }
    }
}

impl BodyBuffer for HostBody {
    fn read(&self) -> Vec<u8> {
        abi::get_buffer(self.kind, 0, self.size)
            .unwrap_or_else(|status| {
                log::warn!("cannot read the body: {status:?}");
                None
            })
            .unwrap_or_default()
    }

    fn replace(&mut self, bytes: &[u8]) {
        match abi::set_buffer(self.kind, 0, self.size, bytes) {
            Ok(()) => self.size = bytes.len(),
            Err(status) => log::warn!("cannot replace the body: {status:?}"),
        }
    }

    fn len(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::ContextTable;
    use std::collections::HashMap;

    #[test]
    fn context_table_matches_a_map_over_random_sequences() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        for round in 0..50 {
            let mut table = ContextTable::new();
            let mut model = HashMap::new();
            // Ids as hosts hand them out (consecutive) in some rounds, scattered in others, so
            // probe runs wrap and collide.
            let mut fresh = 2u32;
            for _ in 0..2_000 {
                let id = if round % 2 == 0 {
                    if next() % 3 == 0 {
                        fresh += 1;
                        fresh
                    } else {
                        fresh.saturating_sub(next() % 64)
                    }
                } else {
                    next() % 200
                };
                match next() % 3 {
                    0 => assert_eq!(table.insert(id, id * 7), model.insert(id, id * 7)),
                    1 => assert_eq!(table.remove(id), model.remove(&id)),
                    _ => assert_eq!(table.get_mut(id).copied(), model.get(&id).copied()),
                }
                assert_eq!(table.len(), model.len());
            }
            for (id, value) in &model {
                assert_eq!(table.get_mut(*id).copied(), Some(*value));
            }
            assert!(table.slots.len() >= 2 * table.len());
        }
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let mut table: ContextTable<u8> = ContextTable::new();
        assert!(table.is_empty());
        assert_eq!(table.get_mut(0), None);
        assert_eq!(table.remove(3), None);
        assert_eq!(table.insert(3, 1), None);
        assert_eq!(table.insert(3, 2), Some(1));
        assert_eq!(table.remove(3), Some(2));
        assert!(table.is_empty());
    }
}
