//! Every filter's declarative suite (`filters/<name>/tests/suite.yaml`) run
//! through the harness's suite runner, as `tollgate test` runs it: a filter
//! that misbehaves fails here.

use anyhow::{Result, bail};
use tollgate_replay::suite::Suite;
use tollgate_tests::paths;

#[test]
fn every_filter_suite_passes() -> Result<()> {
    let mut ran = 0;
    let mut failed = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(paths::root().join("filters"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for dir in dirs {
        let suite = dir.join("tests").join("suite.yaml");
        if !suite.is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A clear message when the filter was not built.
        paths::filter_wasm(&name)?;
        let report = Suite::load(&suite)?.run();
        print!("{}", report.text());
        ran += 1;
        if report.failed() > 0 {
            failed.push(format!("{}:\n{}", suite.display(), report.text()));
        }
    }
    if ran == 0 {
        bail!("no filters/*/tests/suite.yaml found");
    }
    if !failed.is_empty() {
        bail!("failing suites:\n{}", failed.join("\n"));
    }
    Ok(())
}
