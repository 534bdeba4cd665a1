//! Replaying a recording of any size in constant memory: exchanges come from
//! an iterator (e.g. [`super::open`] on a JSON-lines file), each one goes
//! through the filter chain of a [`ReplayBuilder`] and is handed to a
//! callback, and only counts and a fixed-size latency histogram are kept.
//!
//! Verdicts are the in-memory replay's ([`crate::Verdict`], the
//! same judging code): a failed guest call is `failed`; a local reply
//! `answered locally`; a reset, a stall, or a request or response that
//! differs from the recording `modified`; else `passed`.
//!
//! Each exchange is driven as recorded ([`StreamInput::from_recording`]):
//! recorded body chunk sizes, trailers and callout answers.

use std::time::Duration;

use crate::{ReplayBuilder, ReplayError, StreamInput, Verdict};
use tollgate_traffic::{Exchange, TrafficError};

/// What one exchange came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Unchanged.
    Passed,
    /// Request or response changed, or the stream was reset or stalled.
    Modified,
    /// A filter answered with this status.
    AnsweredLocally(u16),
    /// A guest call failed.
    Failed,
}

/// Totals of a streamed replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Exchanges replayed.
    pub requests: usize,
    /// Passed unchanged.
    pub passed: usize,
    /// Modified.
    pub modified: usize,
    /// Answered locally.
    pub answered_locally: usize,
    /// Failed.
    pub failed: usize,
    /// Median guest time per exchange.
    pub p50: Duration,
    /// 99th percentile guest time per exchange.
    pub p99: Duration,
}

/// Why a streamed replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The filter chain could not start.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The recording could not be read (strict reading).
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

/// The driver input for a recorded exchange: its chunk sizes, trailers and
/// callout answers ([`StreamInput::from_recording`]).
pub fn input_for(e: &Exchange) -> StreamInput {
    StreamInput::from_recording(e)
}

impl From<&Verdict> for Outcome {
    fn from(v: &Verdict) -> Self {
        match v {
            Verdict::Passed => Outcome::Passed,
            Verdict::Modified => Outcome::Modified,
            Verdict::AnsweredLocally { status } => Outcome::AnsweredLocally(*status),
            Verdict::Failed { .. } => Outcome::Failed,
        }
    }
}

/// Replays `exchanges` through the chain `builder` describes (its own
/// traffic, if any, is ignored), calling `each(index, exchange, outcome,
/// guest time)` after every exchange. Bad entries stop the replay unless the
/// iterator itself skips them (lenient reading).
pub fn replay<I, F>(
    builder: ReplayBuilder,
    exchanges: I,
    mut each: F,
) -> Result<Totals, StreamingError>
where
    I: IntoIterator<Item = Result<Exchange, TrafficError>>,
    F: FnMut(usize, &Exchange, Outcome, Duration),
{
    replay_verdicts(builder, exchanges, |i, e, v, cost| {
        each(i, e, Outcome::from(v), cost)
    })
}

/// [`replay`], handing `each` the whole verdict: a failure's cause (the
/// callback, the trap) goes with it.
pub fn replay_verdicts<I, F>(
    builder: ReplayBuilder,
    exchanges: I,
    mut each: F,
) -> Result<Totals, StreamingError>
where
    I: IntoIterator<Item = Result<Exchange, TrafficError>>,
    F: FnMut(usize, &Exchange, &Verdict, Duration),
{
    let (mut chain, _) = builder.start()?;
    chain.take_startup_logs();
    let many = chain.filters() > 1;
    let mut totals = Totals::default();
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).ok();
    let mut prev: Option<Exchange> = None;
    for (i, e) in exchanges.into_iter().enumerate() {
        let e = e?;
        if let Some(gap) = prev.as_ref().and_then(|p| crate::recorded_gap(p, &e)) {
            chain.advance(gap);
        }
        // The exchange's messages move into the driver and come back
        // (from the recording or from the outcome that carries them
        // untouched): nothing of it is copied.
        let mut e = e;
        let had_response = e.response.is_some();
        let (out, recorded, cost, logs) = chain.exchange_owned(&mut e);
        let report = crate::judge(
            std::mem::take(&mut e.id),
            recorded.request.as_ref(),
            recorded.response.as_ref(),
            out,
            cost,
            logs,
            many,
        );
        e.id = report.id;
        e.request = match (recorded.request, report.upstream_request) {
            (Some(r), _) | (None, Some(r)) => r,
            (None, None) => e.request,
        };
        if had_response {
            e.response = Some(recorded.response.unwrap_or(report.client_response));
        }
        let verdict = report.verdict;
        let o = Outcome::from(&verdict);
        totals.requests += 1;
        match o {
            Outcome::Passed => totals.passed += 1,
            Outcome::Modified => totals.modified += 1,
            Outcome::AnsweredLocally(_) => totals.answered_locally += 1,
            Outcome::Failed => totals.failed += 1,
        }
        if let Some(h) = hist.as_mut() {
            h.saturating_record(u64::try_from(cost.as_nanos()).unwrap_or(u64::MAX).max(1));
        }
        each(i, &e, &verdict, cost);
        prev = Some(e);
    }
    if let Some(h) = hist.filter(|h| !h.is_empty()) {
        totals.p50 = Duration::from_nanos(h.value_at_quantile(0.5));
        totals.p99 = Duration::from_nanos(h.value_at_quantile(0.99));
    }
    Ok(totals)
}
