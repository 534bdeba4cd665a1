//! `tollgate test <suite.yaml>...`: runs declarative test suites, prints a
//! readable report, optionally writes JUnit XML, exits non-zero on failure.

use crate::out::out;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use tollgate_replay::suite::Suite;

/// Arguments of `tollgate test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Suite files (YAML; see harness/docs/suite.md).
    #[arg(required = true)]
    pub suites: Vec<PathBuf>,
    /// Also write a JUnit XML report here (one file; several suites are concatenated as test suites).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    #[command(flatten)]
    pub limits: crate::limit_args::LimitArgs,
}

/// Runs the suites.
pub fn test(args: TestArgs) -> Result<()> {
    let limits = args.limits.apply()?;
    let mut failed = 0;
    let mut junit_suites = Vec::new();
    for path in &args.suites {
        // A file with `chains:` holds several suites.
        for suite in Suite::load_all(path)? {
            let report = suite.limits(limits).run();
            out!("{}", report.text());
            failed += report.failed();
            junit_suites.push(report.junit());
        }
    }
    if let Some(out) = &args.junit {
        let xml = if junit_suites.len() == 1 {
            junit_suites.remove(0)
        } else {
            // Merge: keep each <testsuite> element under one <testsuites>.
            let mut merged =
                String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
            for x in &junit_suites {
                if let (Some(a), Some(b)) = (x.find("  <testsuite "), x.rfind("</testsuites>")) {
                    merged.push_str(&x[a..b]);
                }
            }
            merged.push_str("</testsuites>\n");
            merged
        };
        tollgate_files::write(out, xml)
            .with_context(|| format!("--junit: cannot write {}", out.display()))?;
    }
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    Ok(())
}
