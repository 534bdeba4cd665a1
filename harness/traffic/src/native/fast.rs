//! The usual shape of a JSON line read straight into an [`Exchange`], with
//! no `serde_json::Value` tree in between (building and walking that tree
//! was most of what `tollgate replay --stream` spent per exchange).
//!
//! Only what this reads exactly as [`super::exchange_from_owned`] does is
//! taken here: bodies in one chunk (text or base64), `[name, value]` header lists, string
//! properties, no callouts. Anything else, and anything invalid, gives
//! `None`, and the line is read again the general way, which accepts every
//! spelling and words every error. So a line reads the same either way;
//! `fast_and_general_agree` in the tests checks it on every example line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{Exchange, ExchangeDetails, HttpRequest, HttpResponse, HttpVersion, Timing};

/// A field that may be absent but, when present, must not be `null` (the
/// general reader refuses `null` there).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    request: Request,
    #[serde(default)]
    response: Option<Response>,
    #[serde(default, deserialize_with = "present")]
    timing: Option<TimingIn>,
    #[serde(default, deserialize_with = "present")]
    properties: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    truncated: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    http_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default, deserialize_with = "present")]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scheme: Option<String>,
    #[serde(default, deserialize_with = "present")]
    authority: Option<String>,
    #[serde(default, deserialize_with = "present")]
    path: Option<String>,
    #[serde(default)]
    headers: Option<Vec<(String, String)>>,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default)]
    trailers: Option<Vec<(String, String)>>,
}

/// A body in one chunk: text, or `{base64: ...}` decoded.
struct Body(Vec<u8>);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a text or base64 body")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Body, E> {
                Ok(Body(s.as_bytes().to_vec()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Body, E> {
                Ok(Body(s.into_bytes()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Body, A::Error> {
                use serde::de::Error;
                let key = m.next_key::<std::borrow::Cow<'de, str>>()?;
                if key.as_deref() != Some("base64") {
                    return Err(A::Error::custom("not base64"));
                }
                let text = m.next_value::<std::borrow::Cow<'de, str>>()?;
                if m.next_key::<std::borrow::Cow<'de, str>>()?.is_some() {
                    return Err(A::Error::custom("more than base64"));
                }
                super::decode_base64(&text)
                    .map(Body)
                    .map_err(A::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Response {
    status: u64,
    #[serde(default)]
    headers: Option<Vec<(String, String)>>,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default)]
    trailers: Option<Vec<(String, String)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingIn {
    #[serde(default, deserialize_with = "present")]
    started: Option<String>,
    #[serde(default)]
    response_after_ms: Option<f64>,
    #[serde(default)]
    total_ms: Option<f64>,
}

/// Header names lower-cased, as the general reader leaves them; `None`
/// for a list it would refuse.
fn headers(list: Option<Vec<(String, String)>>) -> Option<Vec<(String, String)>> {
    let mut list = list.unwrap_or_default();
    for (k, v) in &mut list {
        if !super::is_header_name(k) {
            return None;
        }
        k.make_ascii_lowercase();
        crate::header_syntax::check(k, v).ok()?;
    }
    Some(list)
}

fn millis(ms: Option<f64>) -> Option<Option<Duration>> {
    match ms {
        None => Some(None),
        Some(m) if (0.0..1e12).contains(&m) => Some(Some(Duration::from_secs_f64(m / 1000.0))),
        Some(_) => None,
    }
}

/// `line` (entry `index`) as [`super::exchange_from_owned`] reads it, when
/// it has the usual shape and is valid; else `None`.
pub(super) fn exchange(line: &str, index: usize) -> Option<Exchange> {
    let l: Line = serde_json::from_str(line).ok()?;
    let r = l.request;
    let path = r.path.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') && path != "*" {
        return None;
    }
    let mut details = ExchangeDetails {
        request_trailers: headers(r.trailers)?,
        ..ExchangeDetails::default()
    };
    let request = HttpRequest {
        method: r.method.unwrap_or_else(|| "GET".to_owned()),
        scheme: r.scheme.unwrap_or_else(|| "http".to_owned()),
        authority: r.authority?,
        path,
        headers: headers(r.headers)?,
        body: r.body.map(|b| b.0).unwrap_or_default(),
    };
    let response = match l.response {
        None => None,
        Some(s) => {
            let status = u16::try_from(s.status)
                .ok()
                .filter(|s| (100..=999).contains(s))?;
            details.response_trailers = headers(s.trailers)?;
            Some(HttpResponse {
                status,
                headers: headers(s.headers)?,
                body: s.body.map(|b| b.0).unwrap_or_default(),
            })
        }
    };
    if let Some(t) = l.timing {
        details.timing = Timing {
            started: t.started,
            response_after: millis(t.response_after_ms)?,
            total: millis(t.total_ms)?,
        };
    }
    details.properties = l.properties.unwrap_or_default().into_iter().collect();
    if let Some(v) = l.http_version {
        details.http_version = Some(HttpVersion::parse(&v)?);
    }
    details.truncated = l.truncated.unwrap_or(false);
    Some(Exchange {
        id: l.id.unwrap_or_else(|| format!("entry {index}")),
        request,
        response,
        details,
    })
}
