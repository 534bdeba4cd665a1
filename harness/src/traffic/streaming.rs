//! Replaying a recording of any size in constant memory: exchanges come from
//! an iterator (e.g. [`super::open`] on a JSON-lines file), each one goes
//! through the filter chain of a [`ReplayBuilder`] and is handed to a
//! callback, and only counts and a fixed-size latency histogram are kept.
//!
//! Verdicts follow [`crate::replay::Verdict`]: a failed guest call is
//! `failed`; a local reply `answered locally`; a reset, a stall, or a request
//! or response that differs from the recording `modified`; else `passed`.
//!
//! The exchange's recorded trailers are delivered; recorded chunk boundaries
//! are approximated by the driver's [`ChunkPlan`] (`ChunkSize` of the first
//! chunk when all but the last chunk have that size, else `Chunks(n)`).

use std::time::Duration;

use crate::replay::{ChunkPlan, ReplayBuilder, ReplayError, StreamInput};
use crate::stream::StreamOutcome;
use crate::traffic::{Exchange, HttpResponse, TrafficError};

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

/// The driver input for a recorded exchange, with its trailers and chunking.
pub fn input_for(e: &Exchange) -> StreamInput {
    let mut input = StreamInput::from_exchange(e);
    input.request_trailers = e.details.request_trailers.clone();
    input.response_trailers = e.details.response_trailers.clone();
    input.request_chunks = plan(&e.details.request_chunks);
    input.response_chunks = plan(&e.details.response_chunks);
    input
}

fn plan(chunks: &[usize]) -> ChunkPlan {
    match chunks {
        [] | [_] => ChunkPlan::Whole,
        [first, middle @ .., last] if middle.iter().all(|c| c == first) && last <= first => {
            ChunkPlan::ChunkSize(*first)
        }
        many => ChunkPlan::Chunks(many.len()),
    }
}

/// Judges one outcome against the recording.
pub fn outcome(e: &Exchange, out: &StreamOutcome) -> Outcome {
    if !out.failures.is_empty() || out.failure.is_some() {
        return Outcome::Failed;
    }
    if let Some(l) = &out.local_response {
        return Outcome::AnsweredLocally(u16::try_from(l.status).unwrap_or(u16::MAX));
    }
    let recorded = e.response.clone().unwrap_or(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    });
    let same = out.reset_in.is_none()
        && out.stalled_in.is_none()
        && out.upstream_request.as_ref() == Some(&e.request)
        && out.client_response == recorded;
    if same {
        Outcome::Passed
    } else {
        Outcome::Modified
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
    let (mut chain, _) = builder.start()?;
    chain.take_startup_logs();
    let mut totals = Totals::default();
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).ok();
    for (i, e) in exchanges.into_iter().enumerate() {
        let e = e?;
        let (out, cost, _logs) = chain.exchange(&input_for(&e));
        let o = outcome(&e, &out);
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
        each(i, &e, o, cost);
    }
    if let Some(h) = hist.filter(|h| !h.is_empty()) {
        totals.p50 = Duration::from_nanos(h.value_at_quantile(0.5));
        totals.p99 = Duration::from_nanos(h.value_at_quantile(0.99));
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_boundaries_map_to_the_closest_plan() {
        assert_eq!(plan(&[]), ChunkPlan::Whole);
        assert_eq!(plan(&[5]), ChunkPlan::Whole);
        assert_eq!(plan(&[4, 4, 2]), ChunkPlan::ChunkSize(4));
        assert_eq!(plan(&[26, 21]), ChunkPlan::ChunkSize(26));
        assert_eq!(plan(&[2, 9, 1]), ChunkPlan::Chunks(3));
    }
}
