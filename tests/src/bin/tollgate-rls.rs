//! `tollgate-rls`: a real rate limit service for the tests, speaking Envoy's v3
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` over gRPC (HTTP/2, h2c) on
//! 127.0.0.1, with an in-memory fixed-window engine. The tests start it, point our
//! `global-rate-limit` filter and Envoy's native `ratelimit` filter at it, and stop it.
//!
//! ```text
//! tollgate-rls --config limits.json [--listen 127.0.0.1:0] [--delay-ms N] [--log FILE]
//! ```
//!
//! It prints `listening on <addr>` once it accepts connections. `--delay-ms` answers every call
//! that late (a slow service, for timeouts); `--log` appends one line per call:
//! `domain|hits|k=v,k=v;hits|...` (each descriptor's entries and hits_addend).
//!
//! The configuration (JSON):
//!
//! ```json
//! {"limits": [{"domain": "tollgate", "entries": [["remote_address", "*"]],
//!              "requests_per_unit": 3, "unit": "MINUTE", "name": "per-ip"}],
//!  "response_headers": [["x-rls", "yes"]], "request_headers": [["x-rls-checked", "1"]],
//!  "over_limit_body": "too many\n"}
//! ```
//!
//! A limit applies to a descriptor whose keys are exactly its `entries`' keys, in order, with
//! each value equal (or any value for `*`, counted per value). Windows start when the service
//! starts (so two fresh services see the same windows whatever the wall clock says). A call adds the descriptor's
//! `hits_addend`, else the request's, else 1; a descriptor over its limit is not counted (as
//! Limitador does) and makes the whole answer `OVER_LIMIT`.
//!
//! Messages are decoded with `prost`, independently of the filter's hand-written codec.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use serde::Deserialize;

const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

#[derive(Clone, PartialEq, Message)]
struct RateLimitRequest {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(message, repeated, tag = "2")]
    descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    hits_addend: u32,
}

#[derive(Clone, PartialEq, Message)]
struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<Entry>,
    #[prost(message, optional, tag = "3")]
    hits_addend: Option<UInt64Value>,
}

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct UInt64Value {
    #[prost(uint64, tag = "1")]
    value: u64,
}

#[derive(Clone, PartialEq, Message)]
struct RateLimitResponse {
    #[prost(int32, tag = "1")]
    overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    statuses: Vec<DescriptorStatus>,
    #[prost(message, repeated, tag = "3")]
    response_headers_to_add: Vec<HeaderValue>,
    #[prost(message, repeated, tag = "4")]
    request_headers_to_add: Vec<HeaderValue>,
    #[prost(bytes = "vec", tag = "5")]
    raw_body: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(message, optional, tag = "2")]
    current_limit: Option<CurrentLimit>,
    #[prost(uint32, tag = "3")]
    limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    duration_until_reset: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct CurrentLimit {
    #[prost(uint32, tag = "1")]
    requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    unit: i32,
    #[prost(string, tag = "3")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, Message)]
struct HeaderValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

const OK: i32 = 1;
const OVER_LIMIT: i32 = 2;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    limits: Vec<Limit>,
    #[serde(default)]
    response_headers: Vec<(String, String)>,
    #[serde(default)]
    request_headers: Vec<(String, String)>,
    #[serde(default)]
    over_limit_body: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    domain: String,
    entries: Vec<(String, String)>,
    requests_per_unit: u32,
    unit: Unit,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Unit {
    #[serde(rename = "SECOND")]
    Second,
    #[serde(rename = "MINUTE")]
    Minute,
    #[serde(rename = "HOUR")]
    Hour,
}

impl Unit {
    fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
        }
    }

    fn wire(self) -> i32 {
        match self {
            Self::Second => 1,
            Self::Minute => 2,
            Self::Hour => 3,
        }
    }
}

impl Limit {
    fn applies(&self, domain: &str, entries: &[Entry]) -> bool {
        self.domain == domain
            && self.entries.len() == entries.len()
            && self
                .entries
                .iter()
                .zip(entries)
                .all(|((k, v), e)| *k == e.key && (v == "*" || *v == e.value))
    }
}

/// Hits per (limit, descriptor values, window start).
type Counters = HashMap<(usize, Vec<String>, u64), u64>;

/// The engine.
struct Engine {
    config: Config,
    counters: Mutex<Counters>,
    started: Instant,
    log: Option<Mutex<std::fs::File>>,
}

impl Engine {
    fn decide(&self, req: &RateLimitRequest) -> RateLimitResponse {
        let now = self.started.elapsed().as_secs();
        let mut overall = OK;
        let mut statuses = Vec::new();
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for d in &req.descriptors {
            let hits = d
                .hits_addend
                .as_ref()
                .map(|h| h.value)
                .unwrap_or(if req.hits_addend > 0 {
                    u64::from(req.hits_addend)
                } else {
                    1
                });
            let Some((index, limit)) = self
                .config
                .limits
                .iter()
                .enumerate()
                .find(|(_, l)| l.applies(&req.domain, &d.entries))
            else {
                statuses.push(DescriptorStatus {
                    code: OK,
                    ..Default::default()
                });
                continue;
            };
            let unit = limit.unit.seconds();
            let window = now - now % unit;
            let values = d.entries.iter().map(|e| e.value.clone()).collect();
            let count = counters.entry((index, values, window)).or_insert(0);
            let max = u64::from(limit.requests_per_unit);
            let code = if *count + hits > max {
                overall = OVER_LIMIT;
                OVER_LIMIT
            } else {
                *count += hits;
                OK
            };
            statuses.push(DescriptorStatus {
                code,
                current_limit: Some(CurrentLimit {
                    requests_per_unit: limit.requests_per_unit,
                    unit: limit.unit.wire(),
                    name: limit.name.clone(),
                }),
                limit_remaining: u32::try_from(max.saturating_sub(*count)).unwrap_or(u32::MAX),
                duration_until_reset: Some(ProtoDuration {
                    seconds: (window + unit - now) as i64,
                    nanos: 0,
                }),
            });
        }
        drop(counters);
        let headers = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect()
        };
        RateLimitResponse {
            overall_code: overall,
            statuses,
            response_headers_to_add: headers(&self.config.response_headers),
            request_headers_to_add: if overall == OK {
                headers(&self.config.request_headers)
            } else {
                Vec::new()
            },
            raw_body: if overall == OVER_LIMIT {
                self.config.over_limit_body.clone().into_bytes()
            } else {
                Vec::new()
            },
        }
    }

    fn record(&self, req: &RateLimitRequest) {
        let Some(log) = &self.log else { return };
        let descriptors: Vec<String> = req
            .descriptors
            .iter()
            .map(|d| {
                let entries: Vec<String> = d
                    .entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect();
                let hits = d
                    .hits_addend
                    .as_ref()
                    .map_or(String::new(), |h| h.value.to_string());
                format!("{};{hits}", entries.join(","))
            })
            .collect();
        let line = format!(
            "{}|{}|{}\n",
            req.domain,
            req.hits_addend,
            descriptors.join("|")
        );
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(line.as_bytes());
        let _ = file.flush();
    }
}

/// A gRPC length-prefixed message.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

async fn serve_call(
    engine: Arc<Engine>,
    delay: Duration,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<()> {
    let (parts, mut body) = request.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers_only = |status: &str, message: &str| -> Result<http::Response<()>> {
        Ok(http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", status)
            .header("grpc-message", message)
            .body(())?)
    };
    if parts.uri.path() != PATH {
        respond.send_response(trailers_only("12", "unknown method")?, true)?;
        return Ok(());
    }
    if data.len() < 5 || data[0] != 0 {
        respond.send_response(trailers_only("3", "bad frame")?, true)?;
        return Ok(());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let Ok(req) = RateLimitRequest::decode(data.get(5..5 + len).unwrap_or_default()) else {
        respond.send_response(trailers_only("3", "bad message")?, true)?;
        return Ok(());
    };
    engine.record(&req);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let answer = engine.decide(&req);
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())?;
    let mut stream = respond.send_response(head, false)?;
    stream.send_data(frame(&answer.encode_to_vec()), false)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    stream.send_trailers(trailers)?;
    Ok(())
}

async fn serve_connection(engine: Arc<Engine>, delay: Duration, socket: tokio::net::TcpStream) {
    let Ok(mut conn) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, respond))) = conn.accept().await {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move {
            if let Err(err) = serve_call(engine, delay, request, respond).await {
                eprintln!("tollgate-rls: {err:#}");
            }
        });
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut listen, mut delay, mut log) =
        (None, "127.0.0.1:0".to_string(), Duration::ZERO, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => config = Some(value()?),
            "--listen" => listen = value()?,
            "--delay-ms" => delay = Duration::from_millis(value()?.parse().context("--delay-ms")?),
            "--log" => log = Some(value()?),
            other => bail!("tollgate-rls: unknown argument {other:?}"),
        }
    }
    let path = config.context("tollgate-rls: --config FILE is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let config: Config =
        serde_json::from_str(&text).with_context(|| format!("{path}: bad configuration"))?;
    let log = log
        .map(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .with_context(|| format!("opening {p}"))
        })
        .transpose()?
        .map(Mutex::new);
    let engine = Arc::new(Engine {
        config,
        counters: Mutex::new(HashMap::new()),
        started: Instant::now(),
        log,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr: SocketAddr = listen.parse().context("--listen")?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (socket, _) = listener.accept().await?;
            tokio::spawn(serve_connection(Arc::clone(&engine), delay, socket));
        }
    })
}
