//! The glue between `proxy-wasm` and an [`HttpFilter`]: the root context (parses the
//! configuration in `on_configure`, creates one filter per HTTP stream) and the HTTP context
//! (wraps host header maps and body buffers in the SDK views, sends local replies).
//!
//! Everything here calls the host, so it only does something inside a proxy; the filter logic it
//! drives is tested natively through the views.

use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{self, BufferType, ContextType, MapType};

use crate::callout::{self, Continuation};
use crate::config;
use crate::filter::{Action, HttpFilter};
use crate::headers::HeaderMap;
use crate::http::{Body, BodyBuffer, LocalReply, Request, Response};
use crate::logger;

/// Installs the logger and panic hook and registers `F`'s root context. Called from the
/// `_initialize` export that [`crate::export_filter!`] generates.
pub fn start<F: HttpFilter>() {
    logger::install(F::NAME);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> {
        Box::new(FilterRoot::<F> { config: None })
    });
}

struct FilterRoot<F: HttpFilter> {
    config: Option<Rc<F::Config>>,
}

impl<F: HttpFilter> Context for FilterRoot<F> {}

impl<F: HttpFilter> RootContext for FilterRoot<F> {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        logger::refresh_level();
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        logger::refresh_level();
        let bytes = match hostcalls::get_buffer(
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.config {
            Some(config) => Box::new(FilterStream::<F> {
                filter: F::new(Rc::clone(config)),
                in_flight: Vec::new(),
                body_delivered: false,
            }),
            None => Box::new(Unconfigured::<F>(PhantomData)),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FilterStream<F> {
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

impl<F: HttpFilter> Context for FilterStream<F> {
    fn on_done(&mut self) -> bool {
        self.filter.on_done();
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
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
}

impl<F: HttpFilter> FilterStream<F> {
    /// After a continuation: sends what it queued (or its reply) and resumes the stream when
    /// nothing is left in flight.
    fn after_answer(&mut self, action: Action, reply: Option<LocalReply>, response_phase: bool) {
        let next = self.send_callouts(action, reply, response_phase);
        if next == types::Action::Continue {
            let resumed = if response_phase {
                hostcalls::resume_http_response()
            } else {
                hostcalls::resume_http_request()
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
    ) -> types::Action {
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
                    Ok(token) => self.in_flight.push((
                        token,
                        InFlight {
                            cluster: call.cluster,
                            response_phase,
                            then: Then::Grpc(then),
                        },
                    )),
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
            types::Action::Pause
        }
    }
}

impl<F: HttpFilter> HttpContext for FilterStream<F> {
    fn on_http_request_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> types::Action {
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

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
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

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> types::Action {
        let mut headers = HostHeaders(MapType::HttpResponseHeaders);
        let mut resp = Response::new(&mut headers);
        let action = self.filter.on_response_headers(&mut resp, end_of_stream);
        self.send_callouts(action, resp.take_local_reply(), true)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        let mut buffer = HostBody::new(BufferType::HttpResponseBody, body_size);
        let mut body = Body::new(&mut buffer);
        let action = self.filter.on_response_body(&mut body, end_of_stream);
        self.send_callouts(action, body.take_local_reply(), true)
    }
}

/// Sends the local reply, if any (and then holds the stream), else maps the filter's action.
fn finish<F: HttpFilter>(action: Action, reply: Option<LocalReply>) -> types::Action {
    let Some(reply) = reply else {
        return action.into();
    };
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body))
    {
        log::error!(
            "{}: the host refused the local reply {}: {status:?}",
            F::NAME,
            reply.status
        );
    }
    types::Action::Pause
}

/// Streams created although no configuration was accepted: fail closed.
struct Unconfigured<F>(PhantomData<F>);

impl<F: HttpFilter> Context for Unconfigured<F> {}

impl<F: HttpFilter> HttpContext for Unconfigured<F> {
    fn on_http_request_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> types::Action {
        log::error!("{}: no valid configuration, answering 500", F::NAME);
        let reply = LocalReply {
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: format!("{} filter is not configured\n", F::NAME).into_bytes(),
        };
        finish::<F>(Action::Pause, Some(reply))
    }
}

/// One of the host's header maps.
struct HostHeaders(MapType);

impl HeaderMap for HostHeaders {
    fn get(&self, name: &str) -> Option<String> {
        // The `_bytes` calls: a non-UTF-8 value (legal in HTTP) must not panic.
        match hostcalls::get_map_value_bytes(self.0, name) {
            Ok(value) => value.map(into_string),
            Err(status) => {
                log::warn!("cannot read header {name}: {status:?}");
                None
            }
        }
    }

    fn pairs(&self) -> Vec<(String, String)> {
        match hostcalls::get_map_bytes(self.0) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(n, v)| (n, into_string(v)))
                .collect(),
            Err(status) => {
                log::warn!("cannot read headers: {status:?}");
                Vec::new()
            }
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        if let Err(status) = hostcalls::set_map_value(self.0, name, Some(value)) {
            log::warn!("cannot set header {name}: {status:?}");
        }
    }

    fn add(&mut self, name: &str, value: &str) {
        if let Err(status) = hostcalls::add_map_value(self.0, name, value) {
            log::warn!("cannot add header {name}: {status:?}");
        }
    }

    fn remove(&mut self, name: &str) {
        if let Err(status) = hostcalls::remove_map_value(self.0, name) {
            log::warn!("cannot remove header {name}: {status:?}");
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        // The map as the host serialises it, walked in place: no copy per header (the
        // `proxy-wasm` crate's `get_map_bytes` makes two per header).
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            fn proxy_get_header_map_pairs(
                map_type: u32,
                return_map_data: *mut *mut u8,
                return_map_size: *mut usize,
            ) -> u32;
        }
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: both out-pointers are valid for writes for the duration of the call.
        let status = unsafe { proxy_get_header_map_pairs(self.0 as u32, &mut data, &mut size) };
        if status != 0 {
            log::warn!("cannot read headers: status {status}");
            return;
        }
        if data.is_null() {
            return;
        }
        // SAFETY: the host allocated `size` bytes at `data` through the module's
        // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes from the global
        // allocator) and hands them over: the Vec owns them and frees them with that layout.
        let wire = unsafe { Vec::from_raw_parts(data, size, size) };
        crate::headers::walk_wire_pairs(&wire, f);
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
        hostcalls::get_buffer(self.kind, 0, self.size)
            .unwrap_or_else(|status| {
                log::warn!("cannot read the body: {status:?}");
                None
            })
            .unwrap_or_default()
    }

    fn replace(&mut self, bytes: &[u8]) {
        match hostcalls::set_buffer(self.kind, 0, self.size, bytes) {
            Ok(()) => self.size = bytes.len(),
            Err(status) => log::warn!("cannot replace the body: {status:?}"),
        }
    }

    fn len(&self) -> usize {
        self.size
    }
}
