//! A filter's demo configuration (`filters/<name>/demo.json`) in the harness: replaying
//! exchanges through the built filter the way the integration tests compare it with Envoy.

use anyhow::Result;
use tollgate_replay::{Replay, Report};
use tollgate_traffic::{Exchange, Traffic};

use crate::paths;

/// Replays `exchanges` through the built `filter` (`<TOLLGATE_FILTERS_DIR>/<filter>.wasm`) with
/// its demo configuration, one worker, the harness's default clock.
pub fn replay(filter: &str, exchanges: Vec<Exchange>) -> Result<Report> {
    let report = Replay::filter(paths::filter_wasm(filter)?)
        .config(paths::demo_config(filter)?)
        .traffic(Traffic {
            source: None,
            exchanges,
            warnings: Vec::new(),
        })
        .run()?;
    Ok(report)
}
