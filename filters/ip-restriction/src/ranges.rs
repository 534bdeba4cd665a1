//! CIDR lists as sorted, merged address ranges: a lookup is a binary search, O(log n) in the
//! number of ranges, so 10,000 ranges cost a few more comparisons than 10.
//!
//! ```
//! use tollgate_ip_restriction::ranges::{Cidr, RangeSet};
//! let cidrs: Vec<Cidr> = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]
//!     .iter().map(|c| c.parse().unwrap()).collect();
//! let set = RangeSet::new(&cidrs);
//! assert!(set.contains("10.200.3.4".parse().unwrap()));
//! assert!(set.contains("192.168.1.7".parse().unwrap()));
//! assert!(!set.contains("192.168.1.8".parse().unwrap()));
//! assert!(set.contains("2001:db8:ffff::1".parse().unwrap()));
//! // An IPv4 address written as IPv4-mapped IPv6 is the same address.
//! assert!(set.contains("::ffff:10.1.1.1".parse().unwrap()));
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One CIDR block: an address and a prefix length (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            "not an IPv4 or IPv6 address (expected e.g. 10.0.0.0/8 or 2001:db8::/32)".to_string()
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length must be a number from 0 to {max}"))?,
        };
        // An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is the IPv4 block it maps.
        let (addr, prefix) = match addr.to_canonical() {
            IpAddr::V4(v4) if addr.is_ipv6() => {
                if prefix < 96 {
                    return Err("an IPv4-mapped block needs a prefix length of at least 96".into());
                }
                (IpAddr::V4(v4), prefix - 96)
            }
            same => (same, prefix),
        };
        let cidr = Cidr { addr, prefix };
        if cidr.range().0 != cidr.bits() {
            return Err(
                "the address has bits set past the prefix length (write the network address)"
                    .into(),
            );
        }
        Ok(cidr)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// First and last address, as numbers (IPv4 in the low 32 bits).
    fn range(&self) -> (u128, u128) {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        let host_mask: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let start = self.bits() & !host_mask;
        (start, start | host_mask)
    }
}

/// A set of addresses: IPv4 and IPv6 ranges, each sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = out.last_mut() {
            // Overlapping or adjacent: extend.
            if next(last.1).is_none_or(|after| start <= after) {
                if end > last.1 {
                    last.1 = end;
                }
                continue;
            }
        }
        out.push((start, end));
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x.
    let i = ranges.partition_point(|(start, _)| *start <= x);
    i > 0 && ranges.get(i - 1).is_some_and(|(_, end)| x <= *end)
}

impl RangeSet {
    /// The set of every address in `cidrs`.
    pub fn new(cidrs: &[Cidr]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            let (start, end) = cidr.range();
            if cidr.addr.is_ipv4() {
                v4.push((
                    u32::try_from(start).unwrap_or(0),
                    u32::try_from(end).unwrap_or(u32::MAX),
                ));
            } else {
                v6.push((start, end));
            }
        }
        Self {
            v4: merged(v4, |x: u32| x.checked_add(1)),
            v6: merged(v6, |x: u128| x.checked_add(1)),
        }
    }

    /// Whether `ip` is in the set (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// How many merged ranges it holds.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn set(cidrs: &[&str]) -> RangeSet {
        let parsed: Vec<Cidr> = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
        assert_eq!(parsed.len(), cidrs.len(), "{cidrs:?}");
        RangeSet::new(&parsed)
    }

    #[test]
    fn edges_of_ranges() {
        let s = set(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "0.0.0.0/32",
            "255.255.255.255/32",
        ]);
        assert_eq!(s.len(), 3, "adjacent /24s merge");
        for (ip, inside) in [
            ("9.255.255.255", false),
            ("10.0.0.0", true),
            ("10.0.1.255", true),
            ("10.0.2.0", false),
            ("0.0.0.0", true),
            ("0.0.0.1", false),
            ("255.255.255.255", true),
        ] {
            assert_eq!(
                s.contains(ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
                inside,
                "{ip}"
            );
        }
    }

    #[test]
    fn everything_and_nothing() {
        let all = set(&["0.0.0.0/0", "::/0"]);
        assert!(all.contains(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
        assert!(all.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!RangeSet::default().contains(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn families_do_not_mix() {
        let s = set(&["::/96"]);
        // 10.0.0.1 is not ::10.0.0.1 (the deprecated IPv4-compatible form).
        assert!(!s.contains(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        let v4 = set(&["10.0.0.0/8"]);
        assert!(
            v4.contains(
                "::ffff:10.0.0.1"
                    .parse()
                    .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
            )
        );
        // A mapped CIDR is an IPv4 CIDR.
        let mapped = set(&["::ffff:10.0.0.0/104"]);
        assert!(mapped.contains(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))));
    }

    #[test]
    fn bad_cidrs_say_why() {
        for (bad, why) in [
            ("10.0.0.1/8", "bits set past the prefix"),
            ("10.0.0.0/33", "0 to 32"),
            ("2001:db8::/129", "0 to 128"),
            ("10.0.0", "not an IPv4 or IPv6"),
            ("10.0.0.0/", "0 to 32"),
            (" 10.0.0.0/8", "not an IPv4"),
        ] {
            let err = bad.parse::<Cidr>().err().unwrap_or_default();
            assert!(err.contains(why), "{bad}: {err:?}");
        }
    }

    #[test]
    fn ten_thousand_ranges_agree_with_a_linear_scan() {
        let cidrs: Vec<Cidr> = (0..10_000u32)
            .filter_map(|i| {
                let a = Ipv4Addr::from(0x0a00_0000 + i * 512);
                format!("{a}/{}", 23 + (i % 3)).parse().ok()
            })
            .collect();
        assert_eq!(cidrs.len(), 10_000);
        let s = RangeSet::new(&cidrs);
        for probe in (0..6_000_000u32).step_by(997) {
            let ip = Ipv4Addr::from(0x0a00_0000 + probe);
            let linear = cidrs.iter().any(|c| {
                let (lo, hi) = c.range();
                (lo..=hi).contains(&u128::from(u32::from(ip)))
            });
            assert_eq!(s.contains(IpAddr::V4(ip)), linear, "{ip}");
        }
    }
}
