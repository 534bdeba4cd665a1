//! The downstream peer: the address the connection came from (Envoy's `source.address`
//! attribute), and the IP in it.
//!
//! Inside the proxy [`source_address`] asks the host; in native tests it returns what
//! [`mock::set_source_address`] set for the current thread.
//!
//! ```
//! use std::net::IpAddr;
//! use tollgate_sdk::peer::ip_of;
//! assert_eq!(ip_of("10.0.0.7:51234"), Some("10.0.0.7".parse::<IpAddr>().unwrap()));
//! assert_eq!(ip_of("[2001:db8::1]:443"), Some("2001:db8::1".parse::<IpAddr>().unwrap()));
//! assert_eq!(ip_of("2001:db8::1"), Some("2001:db8::1".parse::<IpAddr>().unwrap()));
//! assert_eq!(ip_of("not an address"), None);
//! ```

use std::net::IpAddr;

/// The IP of an address written `ip`, `ip:port` or `[ipv6]:port` (Envoy's `source.address`).
pub fn ip_of(address: &str) -> Option<IpAddr> {
    let address = address.trim();
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = address.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok();
    }
    let (ip, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok()
}

/// The downstream peer's address (`source.address`, e.g. `10.0.0.7:51234`), when the host
/// knows it.
#[cfg(target_family = "wasm")]
pub fn source_address() -> Option<String> {
    match crate::abi::get_property(&["source", "address"]) {
        Ok(Some(bytes)) if !bytes.is_empty() => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(_) => None,
        Err(status) => {
            log::debug!("cannot read source.address: {status:?}");
            None
        }
    }
}

/// The downstream peer's address as [`mock::set_source_address`] set it (native tests).
#[cfg(not(target_family = "wasm"))]
pub fn source_address() -> Option<String> {
    mock::source_address()
}

/// The peer [`source_address`] sees outside the proxy (native tests), per thread.
#[cfg(not(target_family = "wasm"))]
pub mod mock {
    use std::cell::RefCell;

    thread_local! {
        static SOURCE: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Sets (or clears) the peer address of the "current request".
    ///
    /// ```
    /// tollgate_sdk::peer::mock::set_source_address(Some("10.1.2.3:4567"));
    /// assert_eq!(tollgate_sdk::peer::source_address().as_deref(), Some("10.1.2.3:4567"));
    /// ```
    pub fn set_source_address(address: Option<&str>) {
        SOURCE.set(address.map(str::to_string));
    }

    pub(super) fn source_address() -> Option<String> {
        SOURCE.with_borrow(Clone::clone)
    }
}
