//! The few protobuf messages of `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`,
//! encoded and decoded by hand (a protobuf runtime would double the module): the request's
//! domain, descriptors (entries and `hits_addend`), and the response's overall code, descriptor
//! statuses (limit, remaining, reset), headers to add and body. Unknown fields are skipped, as
//! protobuf requires; a truncated or malformed message is an error, never a panic.
//!
//! Field numbers (Envoy's `rls.proto` and `ratelimit.proto`):
//! - `RateLimitRequest`: domain 1, descriptors 2.
//! - `RateLimitDescriptor`: entries 1 (`Entry`: key 1, value 2), hits_addend 3
//!   (`google.protobuf.UInt64Value`: value 1).
//! - `RateLimitResponse`: overall_code 1, statuses 2, response_headers_to_add 3,
//!   request_headers_to_add 4 (`HeaderValue`: key 1, value 2, raw_value 3), raw_body 5.
//! - `DescriptorStatus`: code 1, current_limit 2 (`RateLimit`: requests_per_unit 1, unit 2,
//!   name 3), limit_remaining 3, duration_until_reset 4 (`Duration`: seconds 1, nanos 2).

/// One descriptor: ordered key/value entries, and how many hits it adds (`None`: the service's
/// default, 1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// `(key, value)` entries, in action order.
    pub entries: Vec<(String, String)>,
    /// `hits_addend`, when set.
    pub hits_addend: Option<u64>,
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Code {
    /// 0, or a value this filter does not know.
    #[default]
    Unknown,
    /// 1.
    Ok,
    /// 2.
    OverLimit,
}

impl Code {
    fn from_wire(v: u64) -> Self {
        match v {
            1 => Self::Ok,
            2 => Self::OverLimit,
            _ => Self::Unknown,
        }
    }
}

/// `RateLimitResponse.RateLimit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CurrentLimit {
    /// `requests_per_unit`.
    pub requests_per_unit: u32,
    /// `unit` (0 unknown, 1 second, 2 minute, 3 hour, 4 day, 5 month, 6 year).
    pub unit: u32,
    /// `name`.
    pub name: String,
}

impl CurrentLimit {
    /// The unit in seconds as Envoy's native filter counts it (0 for unknown).
    pub fn window_seconds(&self) -> u64 {
        match self.unit {
            1 => 1,
            2 => 60,
            3 => 3_600,
            4 => 86_400,
            5 => 30 * 86_400,
            6 => 365 * 86_400,
            _ => 0,
        }
    }
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescriptorStatus {
    /// `code`.
    pub code: Code,
    /// `current_limit`, when the service sent one.
    pub current_limit: Option<CurrentLimit>,
    /// `limit_remaining`.
    pub limit_remaining: u32,
    /// `duration_until_reset`, whole seconds.
    pub reset_seconds: i64,
}

/// `RateLimitResponse` (the parts the filter uses).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// `overall_code`.
    pub overall_code: Code,
    /// `statuses`.
    pub statuses: Vec<DescriptorStatus>,
    /// `response_headers_to_add`.
    pub response_headers: Vec<(String, String)>,
    /// `request_headers_to_add`.
    pub request_headers: Vec<(String, String)>,
    /// `raw_body`.
    pub raw_body: Vec<u8>,
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

/// Serialises a `RateLimitRequest`.
///
/// ```
/// use tollgate_global_rate_limit::proto::{Descriptor, encode_request};
/// let d = Descriptor { entries: vec![("k".into(), "v".into())], hits_addend: None };
/// assert_eq!(encode_request("d", &[d]), b"\x0a\x01d\x12\x08\x0a\x06\x0a\x01k\x12\x01v");
/// ```
pub fn encode_request(domain: &str, descriptors: &[Descriptor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_bytes(&mut out, 1, domain.as_bytes());
    let mut d = Vec::new();
    let mut e = Vec::new();
    for descriptor in descriptors {
        d.clear();
        for (key, value) in &descriptor.entries {
            e.clear();
            put_bytes(&mut e, 1, key.as_bytes());
            put_bytes(&mut e, 2, value.as_bytes());
            put_bytes(&mut d, 1, &e);
        }
        if let Some(hits) = descriptor.hits_addend {
            e.clear();
            if hits != 0 {
                put_uint(&mut e, 1, hits);
            }
            put_bytes(&mut d, 3, &e);
        }
        put_bytes(&mut out, 2, &d);
    }
    out
}

/// A message that is not a valid `RateLimitResponse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed RateLimitResponse: {0}")]
pub struct DecodeError(&'static str);

/// One field: its number and value.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// Walks the fields of one message.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .rest
                .split_first()
                .ok_or(DecodeError("truncated varint"))?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError("truncated field"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Option<Result<(u64, Value<'a>), DecodeError>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), DecodeError> {
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Other
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError("length out of range"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Other
            }
            _ => return Err(DecodeError("unsupported wire type")),
        };
        Ok((tag >> 3, value))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn header_value(bytes: &[u8]) -> Result<(String, String), DecodeError> {
    let (mut key, mut value, mut raw) = (String::new(), String::new(), None);
    let mut fields = Fields::new(bytes);
    while let Some(field) = fields.next_field() {
        match field? {
            (1, Value::Bytes(b)) => key = text(b),
            (2, Value::Bytes(b)) => value = text(b),
            (3, Value::Bytes(b)) => raw = Some(text(b)),
            _ => {}
        }
    }
    // Envoy uses `raw_value` when `value` is empty.
    if value.is_empty()
        && let Some(raw) = raw
    {
        value = raw;
    }
    Ok((key, value))
}

fn current_limit(bytes: &[u8]) -> Result<CurrentLimit, DecodeError> {
    let mut limit = CurrentLimit::default();
    let mut fields = Fields::new(bytes);
    while let Some(field) = fields.next_field() {
        match field? {
            (1, Value::Varint(v)) => limit.requests_per_unit = v as u32,
            (2, Value::Varint(v)) => limit.unit = v as u32,
            (3, Value::Bytes(b)) => limit.name = text(b),
            _ => {}
        }
    }
    Ok(limit)
}

fn status(bytes: &[u8]) -> Result<DescriptorStatus, DecodeError> {
    let mut status = DescriptorStatus::default();
    let mut fields = Fields::new(bytes);
    while let Some(field) = fields.next_field() {
        match field? {
            (1, Value::Varint(v)) => status.code = Code::from_wire(v),
            (2, Value::Bytes(b)) => status.current_limit = Some(current_limit(b)?),
            (3, Value::Varint(v)) => status.limit_remaining = v as u32,
            (4, Value::Bytes(b)) => {
                let mut d = Fields::new(b);
                while let Some(field) = d.next_field() {
                    if let (1, Value::Varint(v)) = field? {
                        status.reset_seconds = v as i64;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(status)
}

/// Parses a `RateLimitResponse`.
///
/// ```
/// use tollgate_global_rate_limit::proto::{Code, decode_response};
/// let resp = decode_response(b"\x08\x02\x2a\x04busy").unwrap();
/// assert_eq!((resp.overall_code, resp.raw_body.as_slice()), (Code::OverLimit, &b"busy"[..]));
/// assert!(decode_response(b"\x12\x05ab").is_err());
/// ```
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    let mut resp = Response::default();
    let mut fields = Fields::new(bytes);
    while let Some(field) = fields.next_field() {
        match field? {
            (1, Value::Varint(v)) => resp.overall_code = Code::from_wire(v),
            (2, Value::Bytes(b)) => resp.statuses.push(status(b)?),
            (3, Value::Bytes(b)) => resp.response_headers.push(header_value(b)?),
            (4, Value::Bytes(b)) => resp.request_headers.push(header_value(b)?),
            (5, Value::Bytes(b)) => resp.raw_body = b.to_vec(),
            _ => {}
        }
    }
    Ok(resp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_long_ones_fail() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(Fields::new(&out).varint(), Ok(v));
        }
        assert!(Fields::new(&[0xff; 11]).varint().is_err());
        assert!(Fields::new(&[0x80]).varint().is_err());
    }

    #[test]
    fn hits_addend_is_a_wrapper() {
        let d = Descriptor {
            entries: vec![],
            hits_addend: Some(5),
        };
        // descriptors(2) { hits_addend(3) { value(1): 5 } }
        assert_eq!(
            encode_request("", &[d]),
            b"\x0a\x00\x12\x04\x1a\x02\x08\x05"
        );
    }

    #[test]
    fn unknown_fields_are_skipped_and_statuses_read() {
        let mut status = Vec::new();
        put_uint(&mut status, 1, 2);
        let mut limit = Vec::new();
        put_uint(&mut limit, 1, 10);
        put_uint(&mut limit, 2, 2);
        put_bytes(&mut limit, 3, b"per-ip");
        put_bytes(&mut status, 2, &limit);
        put_uint(&mut status, 3, 0);
        let mut dur = Vec::new();
        put_uint(&mut dur, 1, 42);
        put_bytes(&mut status, 4, &dur);
        let mut msg = Vec::new();
        put_uint(&mut msg, 1, 2);
        // An unknown fixed64 and fixed32 field, then the status.
        msg.extend_from_slice(&[0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x55, 1, 2, 3, 4]);
        put_bytes(&mut msg, 2, &status);
        let mut hv = Vec::new();
        put_bytes(&mut hv, 1, b"x-a");
        put_bytes(&mut hv, 3, b"raw");
        put_bytes(&mut msg, 3, &hv);
        let resp = decode_response(&msg).unwrap();
        assert_eq!(resp.overall_code, Code::OverLimit);
        assert_eq!(
            resp.statuses,
            vec![DescriptorStatus {
                code: Code::OverLimit,
                current_limit: Some(CurrentLimit {
                    requests_per_unit: 10,
                    unit: 2,
                    name: "per-ip".into()
                }),
                limit_remaining: 0,
                reset_seconds: 42,
            }]
        );
        assert_eq!(resp.response_headers, vec![("x-a".into(), "raw".into())]);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(decode_response(b"\x0b").is_err()); // wire type 3
        assert!(decode_response(b"\x12\xff\xff\xff\xff\x0f").is_err());
        assert!(decode_response(b"\x12\x02\x0a").is_err());
        assert!(decode_response(b"").is_ok());
    }
}
