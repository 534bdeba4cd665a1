//! HTTP caching rules for a shared cache (RFC 9111), free of any host: `Cache-Control` parsing,
//! whether a response may be stored, its freshness lifetime, its age, and `ETag` matching.
//!
//! ```
//! use tollgate_response_cache::policy::{CacheControl, Freshness, freshness_lifetime};
//! let cc = CacheControl::parse(["public, max-age=60, s-maxage=300"]);
//! assert_eq!(cc.s_maxage, Some(300));
//! // s-maxage wins in a shared cache.
//! let life = freshness_lifetime(&cc, None, None, 200, None);
//! assert_eq!(life, Freshness::Explicit(300));
//! ```

/// The directives of one or more `Cache-Control` header values (request or response), as a
/// shared cache reads them. Unknown directives are ignored (RFC 9111 5.2.3); a directive given
/// twice keeps its first value; a delta-seconds that is not a number makes the directive count as
/// present with no value (for `max-age`: `Some(0)`, i.e. stale, RFC 9111 4.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N`.
    pub max_age: Option<u64>,
    /// `s-maxage=N` (responses; overrides `max-age` and `Expires` in a shared cache).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (any form: `no-cache="field"` is treated as plain `no-cache`, the safe reading).
    pub no_cache: bool,
    /// `private` (any form: a shared cache does not store it).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `only-if-cached` (requests).
    pub only_if_cached: bool,
}

/// The largest delta-seconds kept (RFC 9111 1.2.2: 2^31 stands for "infinity").
pub const MAX_DELTA: u64 = 1 << 31;

fn delta_seconds(value: Option<&str>) -> u64 {
    let Some(v) = value else { return 0 };
    let v = v.trim().trim_matches('"');
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    // Overflow: as large as it gets.
    v.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA))
}

impl CacheControl {
    /// Parses every value of the header (they combine as one comma-separated list).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut cc = CacheControl::default();
        for value in values {
            for directive in split_list(value) {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim())),
                    None => (directive.trim(), None),
                };
                let name = name.to_ascii_lowercase();
                match name.as_str() {
                    "max-age" if cc.max_age.is_none() => cc.max_age = Some(delta_seconds(arg)),
                    "s-maxage" if cc.s_maxage.is_none() => cc.s_maxage = Some(delta_seconds(arg)),
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Splits a comma-separated header list, keeping commas inside double quotes
/// (`no-cache="a, b"` is one element); empty elements are dropped.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// Statuses a response may be stored with when it carries explicit freshness (RFC 9110's
/// heuristically cacheable ones, less 206 as ranges are not cached, plus 302 and 307).
pub const STORABLE_STATUSES: [u16; 13] = [
    200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501,
];

/// Statuses RFC 9110 15.1 calls heuristically cacheable (less 206): with no explicit freshness
/// they are stored for the route's `default_ttl_s`, if it sets one.
pub const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// How long a response stays fresh, and where that came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From `s-maxage`, `max-age` or `Expires` (seconds).
    Explicit(u64),
    /// From the route's `default_ttl_s` (seconds): no explicit freshness, heuristically cacheable
    /// status.
    Default(u64),
    /// Nothing says how long: not stored (unless it can be revalidated; see [`storable`]).
    None,
}

impl Freshness {
    /// The lifetime in seconds (0 for [`Freshness::None`]).
    pub fn seconds(self) -> u64 {
        match self {
            Freshness::Explicit(s) | Freshness::Default(s) => s,
            Freshness::None => 0,
        }
    }
}

/// The freshness lifetime of a response (RFC 9111 4.2.1): `s-maxage`, else `max-age`, else
/// `Expires` minus `Date` (an `Expires` that does not parse means already expired), else the
/// route's default for a heuristically cacheable status.
pub fn freshness_lifetime(
    cc: &CacheControl,
    expires: Option<&str>,
    date: Option<u64>,
    status: u16,
    default_ttl: Option<u64>,
) -> Freshness {
    if let Some(s) = cc.s_maxage {
        return Freshness::Explicit(s);
    }
    if let Some(s) = cc.max_age {
        return Freshness::Explicit(s);
    }
    if let Some(expires) = expires {
        return match (parse_http_date(expires), date) {
            (Some(e), Some(d)) => Freshness::Explicit(e.saturating_sub(d)),
            // No Date: RFC 9111 says to use the response time; the caller gives it as `date`.
            (Some(_), None) | (None, _) => Freshness::Explicit(0),
        };
    }
    match default_ttl {
        Some(ttl) if ttl > 0 && HEURISTIC_STATUSES.contains(&status) => Freshness::Default(ttl),
        _ => Freshness::None,
    }
}

/// Why a response is not stored (also the `reason` label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The status is not one a cache stores.
    Status,
    /// `Cache-Control: no-store` on the response or the request.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// `Vary: *`.
    VaryStar,
    /// `Set-Cookie`, and the route does not store such responses.
    SetCookie,
    /// The request had `Authorization` and the response did not allow sharing it
    /// (`public`, `s-maxage` or `must-revalidate`).
    Authorization,
    /// No freshness and no validator (`ETag`): nothing to serve it on.
    NoFreshness,
    /// The body is larger than `max_body_bytes`.
    TooLarge,
}

impl NotStored {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no_store",
            NotStored::Private => "private",
            NotStored::VaryStar => "vary_star",
            NotStored::SetCookie => "set_cookie",
            NotStored::Authorization => "authorization",
            NotStored::NoFreshness => "no_freshness",
            NotStored::TooLarge => "too_large",
        }
    }
}

/// What a storability check needs to know about an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The response status.
    pub status: u16,
    /// The response's `Cache-Control`.
    pub response_cc: &'a CacheControl,
    /// The request's `Cache-Control` `no-store` (when the route honours request directives).
    pub request_no_store: bool,
    /// The response's `Vary` names (lower case), `*` included as given.
    pub vary: &'a [String],
    /// The response has `Set-Cookie`.
    pub set_cookie: bool,
    /// The route stores `Set-Cookie` responses (without the cookie).
    pub store_set_cookie: bool,
    /// The request had `Authorization`.
    pub authorization: bool,
    /// The freshness computed with [`freshness_lifetime`].
    pub freshness: Freshness,
    /// The response has an `ETag`.
    pub etag: bool,
}

/// Whether a shared cache may store the response (RFC 9111 3, 3.5), and if not why.
/// A response with `no-cache` is stored (it is revalidated before every use); one with no
/// freshness at all is stored only when it has an `ETag` (always revalidated).
pub fn storable(x: &Exchange<'_>) -> Result<(), NotStored> {
    let explicit = matches!(x.freshness, Freshness::Explicit(_));
    if !STORABLE_STATUSES.contains(&x.status)
        || (!HEURISTIC_STATUSES.contains(&x.status) && !explicit)
    {
        return Err(NotStored::Status);
    }
    if x.response_cc.no_store || x.request_no_store {
        return Err(NotStored::NoStore);
    }
    if x.response_cc.private {
        return Err(NotStored::Private);
    }
    if x.vary.iter().any(|v| v == "*") {
        return Err(NotStored::VaryStar);
    }
    if x.set_cookie && !x.store_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if x.authorization
        && !(x.response_cc.public
            || x.response_cc.s_maxage.is_some()
            || x.response_cc.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if x.freshness == Freshness::None && !x.etag {
        return Err(NotStored::NoFreshness);
    }
    Ok(())
}

/// The age a response had when it arrived (RFC 9111 4.2.3's `corrected_initial_age`, with the
/// response delay taken as `response_time - request_time`).
pub fn initial_age(
    age_header: Option<u64>,
    date: Option<u64>,
    request_time: u64,
    response_time: u64,
) -> u64 {
    let apparent = date.map_or(0, |d| response_time.saturating_sub(d));
    let delay = response_time.saturating_sub(request_time);
    let corrected = age_header.unwrap_or(0).saturating_add(delay);
    apparent.max(corrected)
}

/// The `Age` of a stored response at `now`: its initial age plus the time it has been stored.
pub fn current_age(initial_age: u64, response_time: u64, now: u64) -> u64 {
    initial_age.saturating_add(now.saturating_sub(response_time))
}

/// The `Age` header value: a non-negative integer of seconds.
pub fn parse_age(value: Option<&str>) -> Option<u64> {
    let v = value?.trim();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u64>().unwrap_or(MAX_DELTA))
}

/// Whether an `If-None-Match` value matches `etag` with the weak comparison (RFC 9110 13.1.2):
/// `*`, or any listed tag equal to it once `W/` is ignored.
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let ours = strip(etag);
    split_list(header)
        .into_iter()
        .any(|t| t == "*" || strip(t) == ours)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an HTTP date (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, and the obsolete RFC 850
/// and asctime forms) to seconds since the epoch; `None` when it does not parse (an `Expires` that
/// does not parse means "already expired").
pub fn parse_http_date(value: &str) -> Option<u64> {
    let v = value.trim();
    let parts: Vec<&str> = v.split_whitespace().collect();
    let (day, month, year, time) = match parts.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, m, y, t, "GMT"] => (*d, *m, *y, *t),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            let year: i64 = y.parse().ok()?;
            let year = if year < 70 {
                2000 + year
            } else if year < 100 {
                1900 + year
            } else {
                year
            };
            return to_epoch(d, m, year, t);
        }
        // Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (*d, *m, *y, *t),
        _ => return None,
    };
    to_epoch(day, month, year.parse().ok()?, time)
}

fn to_epoch(day: &str, month: &str, year: i64, time: &str) -> Option<u64> {
    let d: i64 = day.parse().ok()?;
    let m = MONTHS.iter().position(|n| *n == month)? as i64 + 1;
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 || year < 1970 {
        return None;
    }
    let secs = days_from_civil(year, m, d) * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs).ok()
}

/// Formats seconds since the epoch as an IMF-fixdate.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil_from_days
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let month = MONTHS.get((m - 1) as usize).copied().unwrap_or("Jan");
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
