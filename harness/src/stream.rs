//! Driving one HTTP exchange through a VM, callback by callback, as Envoy's
//! HTTP filter does: context creation, request headers (and body), then —
//! unless the filter answered locally, reset or stalled the stream — the
//! upstream response's headers (and body), then `on_done`, `on_log`,
//! `on_delete`. A local response travels back through the filter's own
//! response callbacks, as Envoy's local replies do.

use crate::host::{HeaderMap, LocalResponse, Phase, StreamState};
use crate::traffic::{Exchange, HttpRequest, HttpResponse};
use crate::vm::{CallError, Vm};

/// What happened to one exchange.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The request as it reached the upstream, `None` if it never did.
    pub upstream_request: Option<HttpRequest>,
    /// The response the client received.
    pub client_response: HttpResponse,
    /// The filter's local response, if it sent one.
    pub local_response: Option<LocalResponse>,
    /// The local response was sent while processing the response.
    pub local_in_response: bool,
    /// The filter reset the stream (`proxy_close_stream`) in this callback.
    pub reset_in: Option<&'static str>,
    /// The filter paused in this callback and never resumed.
    pub stalled_in: Option<&'static str>,
    /// A guest call failed (trap, timeout).
    pub failure: Option<CallError>,
}

/// The status of a stalled or reset exchange's client response: none was sent.
pub const NO_RESPONSE: u16 = 0;

fn request_map(req: &HttpRequest) -> HeaderMap {
    let mut pairs: Vec<(String, String)> = vec![
        (":authority".into(), req.authority.clone()),
        (":path".into(), req.path.clone()),
        (":method".into(), req.method.clone()),
        (":scheme".into(), req.scheme.clone()),
    ];
    pairs.extend(req.headers.iter().cloned());
    HeaderMap::from_pairs(pairs)
}

fn response_map(status: u16, headers: &[(String, String)]) -> HeaderMap {
    let mut pairs = vec![(":status".to_string(), status.to_string())];
    pairs.extend(headers.iter().cloned());
    HeaderMap::from_pairs(pairs)
}

fn to_request(map: &HeaderMap, body: Vec<u8>) -> HttpRequest {
    let get = |k: &str| map.get(k).unwrap_or_default().to_string();
    HttpRequest {
        method: get(":method"),
        scheme: get(":scheme"),
        authority: get(":authority"),
        path: get(":path"),
        headers: map
            .entries()
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect(),
        body,
    }
}

fn to_response(map: &HeaderMap, body: Vec<u8>) -> HttpResponse {
    HttpResponse {
        status: map
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(NO_RESPONSE),
        headers: map
            .entries()
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect(),
        body,
    }
}

/// The response Envoy builds for a local reply.
fn local_reply(l: &LocalResponse) -> HttpResponse {
    let mut headers = Vec::new();
    if !l.body.is_empty() {
        headers.push(("content-length".to_string(), l.body.len().to_string()));
        headers.push(("content-type".to_string(), "text/plain".to_string()));
    }
    headers.extend(l.headers.iter().cloned());
    HttpResponse {
        status: u16::try_from(l.status).unwrap_or(NO_RESPONSE),
        headers,
        body: l.body.clone(),
    }
}

fn stream(vm: &mut Vm) -> &mut StreamState {
    vm.state_mut()
        .stream
        .as_mut()
        .expect("the stream state lives for the whole exchange")
}

enum Stop {
    Local,
    Reset(&'static str),
    Stalled(&'static str),
}

fn check(
    vm: &mut Vm,
    callback: &'static str,
    action: u32,
    response: bool,
    last: bool,
) -> Option<Stop> {
    let s = stream(vm);
    if s.local_response.is_some() && !response {
        return Some(Stop::Local);
    }
    if s.closed {
        return Some(Stop::Reset(callback));
    }
    let continued = if response {
        s.continued_response
    } else {
        s.continued_request
    };
    if last && action != 0 && !continued {
        return Some(Stop::Stalled(callback));
    }
    None
}

/// Runs the response half: headers then body through the filter.
/// Returns the stop reason if the filter reset or stalled it.
fn respond(vm: &mut Vm, ctx: u32, resp: &HttpResponse) -> Result<Option<Stop>, CallError> {
    let had_local = stream(vm).local_response.is_some();
    {
        let s = stream(vm);
        s.phase = Phase::ResponseHeaders;
        s.response_headers = Some(response_map(resp.status, &resp.headers));
    }
    let n = stream(vm)
        .response_headers
        .as_ref()
        .map_or(0, HeaderMap::len) as u32;
    let has_body = !resp.body.is_empty();
    let action = vm.call_headers(true, ctx, n, !has_body)?;
    if !had_local && stream(vm).local_response.is_some() {
        return Ok(Some(Stop::Local));
    }
    if let Some(stop) = check(vm, "proxy_on_response_headers", action, true, !has_body) {
        return Ok(Some(stop));
    }
    if has_body {
        {
            let s = stream(vm);
            s.phase = Phase::ResponseBody;
            s.response_body = Some(resp.body.clone());
        }
        let action = vm.call_body(true, ctx, resp.body.len() as u32, true)?;
        if !had_local && stream(vm).local_response.is_some() {
            return Ok(Some(Stop::Local));
        }
        if let Some(stop) = check(vm, "proxy_on_response_body", action, true, true) {
            return Ok(Some(stop));
        }
    }
    Ok(None)
}

fn client_response(vm: &mut Vm) -> HttpResponse {
    let s = stream(vm);
    let body = s.response_body.clone().unwrap_or_default();
    match &s.response_headers {
        Some(m) => to_response(m, body),
        None => HttpResponse {
            status: NO_RESPONSE,
            headers: Vec::new(),
            body: Vec::new(),
        },
    }
}

/// Runs `exchange` through `vm`.
pub fn run(vm: &mut Vm, exchange: &Exchange) -> StreamOutcome {
    let ctx = vm.new_context_id();
    let req = &exchange.request;
    let start = vm.state().clock().realtime;
    vm.state_mut().stream = Some(StreamState {
        id: ctx,
        phase: Phase::RequestHeaders,
        request_headers: request_map(req),
        request_trailers: HeaderMap::default(),
        request_body: None,
        response_headers: None,
        response_trailers: HeaderMap::default(),
        response_body: None,
        local_response: None,
        continued_request: false,
        continued_response: false,
        closed: false,
        start_unix_nanos: start,
        request_size: req.body.len() as u64,
    });
    let mut out = StreamOutcome {
        upstream_request: None,
        client_response: HttpResponse {
            status: NO_RESPONSE,
            headers: Vec::new(),
            body: Vec::new(),
        },
        local_response: None,
        local_in_response: false,
        reset_in: None,
        stalled_in: None,
        failure: None,
    };
    let result = drive(vm, ctx, exchange, &mut out);
    let result = result.and_then(|()| {
        stream(vm).phase = Phase::Finished;
        vm.call_finish(ctx)
    });
    if let Err(e) = result {
        out.failure = Some(e);
    }
    if let Some(s) = vm.state_mut().stream.take() {
        out.local_response = s.local_response;
    }
    out
}

fn drive(
    vm: &mut Vm,
    ctx: u32,
    exchange: &Exchange,
    out: &mut StreamOutcome,
) -> Result<(), CallError> {
    let req = &exchange.request;
    vm.call_context_create(ctx)?;
    let has_body = !req.body.is_empty();
    let n = stream(vm).request_headers.len() as u32;
    let action = vm.call_headers(false, ctx, n, !has_body)?;
    let mut stop = check(vm, "proxy_on_request_headers", action, false, !has_body);
    if stop.is_none() && has_body {
        {
            let s = stream(vm);
            s.phase = Phase::RequestBody;
            s.request_body = Some(req.body.clone());
        }
        let action = vm.call_body(false, ctx, req.body.len() as u32, true)?;
        stop = check(vm, "proxy_on_request_body", action, false, true);
    }
    match stop {
        Some(Stop::Local) => {
            let local = stream(vm).local_response.clone();
            if let Some(l) = local {
                let reply = local_reply(&l);
                // Local replies pass through the filter's response callbacks.
                match respond(vm, ctx, &reply)? {
                    Some(Stop::Reset(cb)) => out.reset_in = Some(cb),
                    Some(Stop::Stalled(cb)) => out.stalled_in = Some(cb),
                    _ => {}
                }
                out.client_response = client_response(vm);
            }
            return Ok(());
        }
        Some(Stop::Reset(cb)) => {
            out.reset_in = Some(cb);
            return Ok(());
        }
        Some(Stop::Stalled(cb)) => {
            out.stalled_in = Some(cb);
            return Ok(());
        }
        None => {}
    }
    {
        let s = stream(vm);
        let body = s.request_body.clone().unwrap_or_else(|| req.body.clone());
        out.upstream_request = Some(to_request(&s.request_headers, body));
    }
    let resp = exchange.response.clone().unwrap_or(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    });
    match respond(vm, ctx, &resp)? {
        Some(Stop::Local) => {
            out.local_in_response = true;
            let local = stream(vm).local_response.clone();
            if let Some(l) = local {
                out.client_response = local_reply(&l);
            }
            return Ok(());
        }
        Some(Stop::Reset(cb)) => {
            out.reset_in = Some(cb);
            return Ok(());
        }
        Some(Stop::Stalled(cb)) => {
            out.stalled_in = Some(cb);
            return Ok(());
        }
        None => {}
    }
    out.client_response = client_response(vm);
    Ok(())
}
