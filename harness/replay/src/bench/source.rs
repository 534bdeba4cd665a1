//! Where `bench` reads its traffic from, pass after pass: a recording held
//! in memory, or a JSON-lines file re-read for every pass in bounded batches
//! (as `replay --stream` reads it), so memory is bounded by the batch, not by
//! the recording.

use std::path::{Path, PathBuf};
use tollgate_traffic::{Exchange, Leniency, Traffic, TrafficError};

/// Exchanges read (and held) at a time from a streamed file.
pub const BATCH: usize = 1024;

/// The traffic a benchmark runs, pass after pass.
#[derive(Debug, Clone)]
pub enum TrafficSource {
    /// A recording in memory.
    Memory(Traffic),
    /// A JSON-lines recording read in batches of [`BATCH`] exchanges, opened
    /// again for every pass (a regular file: a pipe cannot be read twice).
    Streamed(PathBuf),
}

impl From<Traffic> for TrafficSource {
    fn from(t: Traffic) -> Self {
        TrafficSource::Memory(t)
    }
}

impl TrafficSource {
    /// The source for the recording at `path`: a JSON-lines file is
    /// streamed; other formats (HAR, Envoy tap, a folder), which are parsed
    /// whole anyway, are loaded into memory. A JSON-lines recording must be
    /// a regular file, since every pass reads it again.
    pub fn open(path: &Path) -> Result<(Self, Vec<String>), TrafficError> {
        let mut stream = tollgate_traffic::open(path, Leniency::Strict)?;
        if stream.known_len().is_some() {
            let exchanges = stream.by_ref().collect::<Result<Vec<_>, _>>()?;
            let warnings = stream.take_warnings();
            let traffic = Traffic {
                source: Some(path.to_path_buf()),
                exchanges,
                warnings: warnings.clone(),
            };
            return Ok((TrafficSource::Memory(traffic), warnings));
        }
        let regular = std::fs::metadata(path)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if !regular {
            return Err(TrafficError::Read {
                file: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "bench reads the recording again for every pass, so it must be a regular \
                     file, not a pipe; write it to a file first",
                ),
            });
        }
        Ok((TrafficSource::Streamed(path.to_path_buf()), Vec::new()))
    }

    /// The name reports give the traffic.
    pub fn name(&self) -> String {
        match self {
            TrafficSource::Memory(t) => t
                .source
                .as_ref()
                .map_or_else(|| "(in memory)".to_string(), |p| p.display().to_string()),
            TrafficSource::Streamed(p) => p.display().to_string(),
        }
    }

    pub(super) fn as_ref(&self) -> SourceRef<'_> {
        match self {
            TrafficSource::Memory(t) => SourceRef::Memory(&t.exchanges),
            TrafficSource::Streamed(p) => SourceRef::Streamed(p),
        }
    }
}

/// A [`TrafficSource`] borrowed.
#[derive(Clone, Copy)]
pub(super) enum SourceRef<'a> {
    Memory(&'a [Exchange]),
    Streamed(&'a Path),
}

impl SourceRef<'_> {
    /// One pass over the traffic in order, `f(first index, batch)` for every
    /// batch of at most `batch` exchanges; `f` returns false to stop.
    pub(super) fn each_batch(
        self,
        batch: usize,
        mut f: impl FnMut(usize, &[Exchange]) -> bool,
    ) -> Result<(), TrafficError> {
        let batch = batch.max(1);
        match self {
            SourceRef::Memory(all) => {
                for (k, b) in all.chunks(batch).enumerate() {
                    if !f(k * batch, b) {
                        break;
                    }
                }
            }
            SourceRef::Streamed(path) => {
                let mut stream = tollgate_traffic::open(path, Leniency::Strict)?;
                let mut first = 0;
                let mut held = Vec::with_capacity(batch);
                loop {
                    held.clear();
                    for e in stream.by_ref().take(batch) {
                        held.push(e?);
                    }
                    if held.is_empty() || !f(first, &held) {
                        break;
                    }
                    first += held.len();
                }
            }
        }
        Ok(())
    }

    /// The number of exchanges and the first `head` of them (kept to fill
    /// the last batch of streams in flight), in one pass.
    pub(super) fn scan(self, head: usize) -> Result<(usize, Vec<Exchange>), TrafficError> {
        let mut n = 0;
        let mut first = Vec::new();
        self.each_batch(BATCH, |_, b| {
            n += b.len();
            let want = head.saturating_sub(first.len());
            first.extend(b.iter().take(want).cloned());
            true
        })?;
        Ok((n, first))
    }
}
