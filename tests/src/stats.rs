//! Envoy's `/stats/prometheus` in the integration tests: fetching the text from the admin
//! listener and checking the lines a filter's counters must show.

use std::net::SocketAddr;

use anyhow::{Result, ensure};

use crate::client;

/// The text of `/stats/prometheus` from the Envoy whose admin listener is `admin`.
pub fn prometheus(admin: SocketAddr) -> Result<String> {
    let stats = client::send(
        admin,
        &client::request("GET", "127.0.0.1", "/stats/prometheus", &[], b""),
    )?;
    Ok(String::from_utf8_lossy(&stats.body).into_owned())
}

/// Every one of `lines` is a whole line of the `/stats/prometheus` text `stats`; the error
/// shows the lines containing `family` (the filter's metric prefix).
pub fn ensure_lines(stats: &str, family: &str, lines: &[&str]) -> Result<()> {
    for line in lines {
        ensure!(
            stats.lines().any(|l| l == *line),
            "/stats/prometheus has no line {line:?}: {:?}",
            stats
                .lines()
                .filter(|l| l.contains(family))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}
