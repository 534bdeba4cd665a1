//! A cheap clock for the guest-time sum ([`crate::vm::Vm::take_cost`]).
//!
//! Timing every guest call takes two clock reads, and on this machine class
//! (a virtual machine) `clock_gettime` costs about twice a read of the
//! processor's time-stamp counter: the reads were the largest part of the
//! full report's cost above the verdict-only run (`harness/docs/bench.md`).
//! So calls are timed in raw ticks, summed, and the sum is turned into a
//! [`Duration`] once, when it is taken.
//!
//! Ticks are the time-stamp counter on x86-64 Linux when the kernel uses
//! it as its own clock source (it checked that the counter runs at a
//! constant rate and agrees across cores); anywhere else they are
//! nanoseconds from [`Instant`], and the conversion is the identity. The
//! counter's rate is measured against [`Instant`] over the time since the
//! first read, so it needs no calibration pause and gets more exact as the
//! process runs.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where ticks come from, decided once per process.
struct Source {
    /// Read the time-stamp counter (else [`Instant`] nanoseconds).
    tsc: bool,
    /// When the first read happened, on both clocks.
    epoch: Instant,
    epoch_ticks: u64,
}

fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let tsc = kernel_uses_tsc();
        let epoch = Instant::now();
        let epoch_ticks = if tsc { counter() } else { 0 };
        Source {
            tsc,
            epoch,
            epoch_ticks,
        }
    })
}

/// The kernel keeps time with the time-stamp counter (so it found the
/// counter invariant and synchronised across cores).
fn kernel_uses_tsc() -> bool {
    cfg!(all(target_arch = "x86_64", target_os = "linux"))
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn counter() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter into registers; it
    // touches no memory and every x86-64 processor has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn counter() -> u64 {
    0
}

/// Now, in ticks (only differences mean anything).
#[inline(always)]
pub(crate) fn now() -> u64 {
    let s = source();
    if s.tsc {
        counter()
    } else {
        u64::try_from(s.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// `ticks` (a sum of differences of [`now`]) as a duration.
pub(crate) fn to_duration(ticks: u64) -> Duration {
    let s = source();
    if !s.tsc || ticks == 0 {
        return Duration::from_nanos(ticks);
    }
    let nanos = s.epoch.elapsed().as_nanos() as f64;
    let counted = counter().wrapping_sub(s.epoch_ticks) as f64;
    if counted <= 0.0 || nanos <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((ticks as f64 * nanos / counted) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_the_wall_time_they_span() {
        let _ = now();
        std::thread::sleep(Duration::from_millis(5));
        let (t0, i0) = (now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (t1, i1) = (now(), Instant::now());
        let measured = to_duration(t1 - t0);
        let wall = i1 - i0;
        let off = measured.abs_diff(wall);
        assert!(
            off < wall / 10,
            "ticks say {measured:?}, the wall clock {wall:?}"
        );
    }
}
