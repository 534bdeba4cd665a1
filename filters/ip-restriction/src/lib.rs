//! `ip-restriction`: allow and deny lists of IPv4 and IPv6 CIDRs, matched against the client
//! address: the peer (`source.address`), or, behind `xff_trusted_hops` proxies of your own, the
//! entry of `X-Forwarded-For` those proxies vouch for. Refused requests get a 403 (status and body
//! configurable), a log line and a metric naming the reason.
//!
//! The configuration reference is `filters/ip-restriction/README.md`. In short:
//!
//! ```
//! use std::rc::Rc;
//! use tollgate_ip_restriction::{IpRestrictionConfig, IpRestrictionFilter};
//! use tollgate_sdk::{HeaderList, HttpFilter, Request};
//!
//! let config = Rc::new(tollgate_sdk::config::parse::<IpRestrictionConfig>(br#"{
//!   "allow": ["10.0.0.0/8"], "deny": ["10.66.0.0/16"]
//! }"#)?);
//! let status = |peer: &str| {
//!     tollgate_sdk::peer::mock::set_source_address(Some(peer));
//!     let mut headers = HeaderList::from([(":path", "/")]);
//!     let mut req = Request::new(&mut headers);
//!     IpRestrictionFilter::new(Rc::clone(&config)).on_request_headers(&mut req, true);
//!     req.local_reply().map_or(200, |r| r.status)
//! };
//! assert_eq!(status("10.1.2.3:5000"), 200);
//! assert_eq!(status("10.66.1.1:5000"), 403);
//! assert_eq!(status("192.0.2.1:5000"), 403);
//! # Ok::<(), tollgate_sdk::ConfigError>(())
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod ranges;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;
use std::net::IpAddr;
use std::rc::Rc;

use serde::Deserialize;
use tollgate_sdk::metrics::Counter;
use tollgate_sdk::{Action, ConfigError, FilterConfig, HttpFilter, Request};

use crate::ranges::{Cidr, RangeSet};

/// The most `X-Forwarded-For` hops that can be trusted.
pub const MAX_TRUSTED_HOPS: u32 = 16;

/// The whole plugin configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// When non-empty, only these addresses are admitted.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub allow: Vec<Cidr>,
    /// Never admitted (wins over `allow`).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub deny: Vec<Cidr>,
    /// Proxies of yours in front of this one that append to `X-Forwarded-For`; 0: the peer
    /// address decides and `X-Forwarded-For` is ignored.
    #[serde(default)]
    pub xff_trusted_hops: u32,
    /// The status of a refusal.
    #[serde(default = "default_status")]
    pub status: u16,
    /// The body of a refusal.
    #[serde(default = "default_body")]
    pub body: String,
    #[serde(skip)]
    sets: OnceCell<Sets>,
    #[serde(skip)]
    metrics: OnceCell<Metrics>,
}

fn default_status() -> u16 {
    403
}

fn default_body() -> String {
    "forbidden\n".into()
}

#[derive(Debug)]
struct Sets {
    allow: RangeSet,
    deny: RangeSet,
}

impl FilterConfig for IpRestrictionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(ConfigError::at(
                "",
                "give `allow`, `deny` or both (with neither, the filter would do nothing)",
            ));
        }
        if self.xff_trusted_hops > MAX_TRUSTED_HOPS {
            return Err(ConfigError::at(
                "xff_trusted_hops",
                format!("at most {MAX_TRUSTED_HOPS}"),
            ));
        }
        if !(200..=599).contains(&self.status) {
            return Err(ConfigError::at(
                "status",
                "must be an HTTP status from 200 to 599",
            ));
        }
        Ok(())
    }

    fn on_configured(&self) -> Result<(), ConfigError> {
        self.sets();
        self.metrics();
        Ok(())
    }
}

impl IpRestrictionConfig {
    fn sets(&self) -> &Sets {
        self.sets.get_or_init(|| Sets {
            allow: RangeSet::new(&self.allow),
            deny: RangeSet::new(&self.deny),
        })
    }

    fn metrics(&self) -> &Metrics {
        self.metrics.get_or_init(Metrics::define)
    }

    /// Whether `ip` is admitted, and why not.
    pub fn decide(&self, ip: IpAddr) -> Result<(), Reason> {
        let sets = self.sets();
        if sets.deny.contains(ip) {
            return Err(Reason::DenyList);
        }
        if !sets.allow.is_empty() && !sets.allow.contains(ip) {
            return Err(Reason::NotAllowed);
        }
        Ok(())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The client address is in `deny`.
    DenyList,
    /// `allow` is given and the client address is not in it.
    NotAllowed,
    /// No usable client address (no peer address, or the trusted `X-Forwarded-For` entry is not
    /// an address).
    NoAddress,
}

impl Reason {
    fn tag(self) -> &'static str {
        match self {
            Reason::DenyList => "deny_list",
            Reason::NotAllowed => "not_allowed",
            Reason::NoAddress => "no_address",
        }
    }
}

/// The metric name: `ip_restriction_requests{result=...,reason=...}` in Prometheus.
pub const METRIC: &str = "ip_restriction_requests";

#[derive(Debug, Clone, Copy)]
struct Metrics {
    allowed: Counter,
    deny_list: Counter,
    not_allowed: Counter,
    no_address: Counter,
}

impl Metrics {
    fn define() -> Self {
        let c = |result: &str, reason: &str| {
            Counter::define(METRIC, &[("result", result), ("reason", reason)])
        };
        Self {
            allowed: c("allowed", "ok"),
            deny_list: c("denied", "deny_list"),
            not_allowed: c("denied", "not_allowed"),
            no_address: c("denied", "no_address"),
        }
    }
}

/// The client address `xff_trusted_hops` trusted proxies vouch for: the peer with 0 hops, else
/// the `hops`-th `X-Forwarded-For` entry from the right (every `X-Forwarded-For` header, in
/// order, comma-separated). With fewer entries than hops, the request did not come through all
/// of them: the peer decides. `Err` when the chosen value is not an address.
pub fn client_address(
    peer: Option<&str>,
    forwarded_for: &[String],
    hops: u32,
) -> Result<IpAddr, Reason> {
    let peer_ip = || {
        peer.and_then(tollgate_sdk::peer::ip_of)
            .ok_or(Reason::NoAddress)
    };
    if hops == 0 {
        return peer_ip();
    }
    let entries: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(index) = entries.len().checked_sub(hops as usize) else {
        return peer_ip();
    };
    entries
        .get(index)
        .and_then(|e| tollgate_sdk::peer::ip_of(e))
        .ok_or(Reason::NoAddress)
}

/// The filter for one HTTP stream.
pub struct IpRestrictionFilter {
    config: Rc<IpRestrictionConfig>,
}

impl HttpFilter for IpRestrictionFilter {
    const NAME: &'static str = "ip-restriction";
    type Config = IpRestrictionConfig;

    fn new(config: Rc<IpRestrictionConfig>) -> Self {
        Self { config }
    }

    fn on_request_headers(&mut self, req: &mut Request<'_>, _end_of_stream: bool) -> Action {
        let config = &self.config;
        let peer = tollgate_sdk::peer::source_address();
        let forwarded: Vec<String> = if config.xff_trusted_hops == 0 {
            Vec::new()
        } else {
            req.headers()
                .into_iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|(_, v)| v)
                .collect()
        };
        let decision = client_address(peer.as_deref(), &forwarded, config.xff_trusted_hops)
            .and_then(|ip| config.decide(ip).map(|()| ip));
        let metrics = config.metrics();
        match decision {
            Ok(_) => metrics.allowed.increment(),
            Err(reason) => {
                match reason {
                    Reason::DenyList => metrics.deny_list.increment(),
                    Reason::NotAllowed => metrics.not_allowed.increment(),
                    Reason::NoAddress => metrics.no_address.increment(),
                }
                let shown = client_address(peer.as_deref(), &forwarded, config.xff_trusted_hops)
                    .map_or_else(|_| "-".to_string(), |ip| ip.to_string());
                log::info!("ip-restriction: denied {shown} ({})", reason.tag());
                req.send_response(
                    config.status,
                    &[("content-type", "text/plain")],
                    config.body.as_bytes(),
                );
            }
        }
        Action::Continue
    }
}

tollgate_sdk::export_filter!(IpRestrictionFilter, []);
