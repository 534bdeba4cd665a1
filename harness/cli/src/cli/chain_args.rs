//! `--filter a.wasm --config .. --filter b.wasm --config ..`: pairs each
//! per-filter option with the `--filter` it follows on the command line.

use anyhow::{Result, bail};
use clap::ArgMatches;
use std::path::PathBuf;

/// One `--filter` with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterArg {
    /// The module.
    pub path: PathBuf,
    /// `--config` (raw: inline or @path).
    pub config: Option<String>,
    /// `--vm-config` (raw).
    pub vm_config: Option<String>,
    /// `--failure-policy`.
    pub failure_policy: Option<String>,
}

/// Pairs the options by position: each belongs to the closest `--filter`
/// before it (with a single filter, position does not matter).
pub fn pair(
    m: Option<&ArgMatches>,
    filters: Vec<PathBuf>,
    options: [(&str, Vec<String>); 3],
) -> Result<Vec<FilterArg>> {
    let mut out: Vec<FilterArg> = filters
        .into_iter()
        .map(|path| FilterArg {
            path,
            config: None,
            vm_config: None,
            failure_policy: None,
        })
        .collect();
    let filter_at: Vec<usize> = m
        .and_then(|m| m.indices_of("filter"))
        .map(Iterator::collect)
        .unwrap_or_default();
    for (id, values) in options {
        let at: Vec<usize> = m
            .and_then(|m| m.indices_of(id))
            .map(Iterator::collect)
            .unwrap_or_default();
        let flag = format!("--{}", id.replace('_', "-"));
        for (j, value) in values.into_iter().enumerate() {
            let owner = if out.len() == 1 {
                0
            } else {
                let pos = at.get(j).copied().unwrap_or(usize::MAX);
                match filter_at.iter().rposition(|&f| f < pos) {
                    Some(k) => k,
                    None => bail!("{flag} must follow the --filter it belongs to"),
                }
            };
            let slot = match id {
                "config" => &mut out[owner].config,
                "vm_config" => &mut out[owner].vm_config,
                _ => &mut out[owner].failure_policy,
            };
            if slot.is_some() {
                bail!(
                    "{flag} given twice for --filter {}",
                    out[owner].path.display()
                );
            }
            *slot = Some(value);
        }
    }
    Ok(out)
}
