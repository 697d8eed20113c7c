//! When to hedge, and when to give up on a silent peer: the adaptive
//! deadlines drawn from recent times to response headers.
//!
//! Owns: a window of recent times to response headers (every peer, every
//! kind) and two deadlines drawn from it. The hedge deadline is a high
//! percentile, never below a floor (loopback and LAN latencies are tiny, and
//! a hedge doubles the load) and never above the header timeout (by then the
//! attempt has failed anyway). The header timeout is a multiple of the
//! 99th percentile between its own floor and the configured timeout, so a
//! frozen peer costs a fraction of a second where peers answer in
//! milliseconds, and the full timeout only where they are really slow.
//! Pure apart from a short std lock.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Samples kept: enough for a stable p90, few enough to follow change.
const WINDOW: usize = 128;
/// Samples needed before the percentile is trusted over the floor alone.
const MIN_SAMPLES: usize = 8;
/// The header timeout is this many times the 99th percentile of recent
/// times to headers: a peer that far behind its peers is not coming.
const HEADER_TIMEOUT_FACTOR: u32 = 4;
/// The percentile the header timeout is drawn from.
const HEADER_TIMEOUT_QUANTILE: f64 = 0.99;

/// How the hedge deadline is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// The percentile of recent times to headers to wait for (0 < q ≤ 1).
    pub quantile: f64,
    /// The shortest deadline; also the deadline until enough samples exist.
    pub floor: Duration,
    /// Whether hedging is on at all.
    pub enabled: bool,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self { quantile: 0.9, floor: Duration::from_millis(50), enabled: true }
    }
}

/// Recent times to response headers, and the hedge deadline they give.
#[derive(Debug)]
pub struct HedgeTimer {
    policy: HedgePolicy,
    /// The configured header timeout: hedging later than that is pointless,
    /// and the adaptive header timeout never exceeds it.
    ceiling: Duration,
    /// The shortest adaptive header timeout.
    header_floor: Duration,
    /// A std mutex: pushes and reads are short and never cross `.await`.
    samples: Mutex<VecDeque<Duration>>,
}

impl HedgeTimer {
    /// A timer whose header timeout is `ceiling` until [`Self::with_header_floor`]
    /// lets it adapt.
    pub fn new(policy: HedgePolicy, ceiling: Duration) -> Self {
        Self { policy, ceiling, header_floor: ceiling, samples: Mutex::new(VecDeque::with_capacity(WINDOW)) }
    }

    /// Lets the header timeout adapt down to `floor` (at most the ceiling).
    #[must_use]
    pub fn with_header_floor(mut self, floor: Duration) -> Self {
        self.header_floor = floor.min(self.ceiling);
        self
    }

    pub fn record(&self, time_to_headers: Duration) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == WINDOW {
            samples.pop_front();
        }
        samples.push_back(time_to_headers);
    }

    /// How long to wait for headers before hedging; `None` when hedging is off.
    pub fn deadline(&self) -> Option<Duration> {
        if !self.policy.enabled {
            return None;
        }
        let percentile = {
            let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            (samples.len() >= MIN_SAMPLES).then(|| quantile(samples.iter().copied(), self.policy.quantile))
        };
        let deadline = percentile.flatten().unwrap_or(Duration::ZERO).max(self.policy.floor);
        Some(deadline.min(self.ceiling))
    }

    /// How long the next attempt may wait for response headers: the
    /// configured timeout until enough samples exist, then
    /// `HEADER_TIMEOUT_FACTOR` × p99, kept between the floor and the
    /// configured timeout.
    pub fn header_timeout(&self) -> Duration {
        let p99 = {
            let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            if samples.len() < MIN_SAMPLES {
                return self.ceiling;
            }
            quantile(samples.iter().copied(), HEADER_TIMEOUT_QUANTILE)
        };
        let adaptive = p99.unwrap_or(self.ceiling).saturating_mul(HEADER_TIMEOUT_FACTOR);
        adaptive.clamp(self.header_floor, self.ceiling)
    }
}

/// The `q` quantile (nearest rank) of `samples`.
fn quantile(samples: impl Iterator<Item = Duration>, q: f64) -> Option<Duration> {
    let mut sorted: Vec<Duration> = samples.collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort();
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timer() -> HedgeTimer {
        HedgeTimer::new(HedgePolicy::default(), Duration::from_secs(2))
    }

    #[test]
    fn without_history_the_deadline_is_the_floor() {
        let timer = timer();
        assert_eq!(timer.deadline(), Some(MS * 50));
        for _ in 0..MIN_SAMPLES - 1 {
            timer.record(MS * 900);
        }
        assert_eq!(timer.deadline(), Some(MS * 50), "too few samples to trust");
    }

    #[test]
    fn the_deadline_follows_the_90th_percentile_above_the_floor() {
        let timer = timer();
        for i in 1..=100 {
            timer.record(MS * (i * 3));
        }
        assert_eq!(timer.deadline(), Some(MS * 270));
        let fast = self::timer();
        for _ in 0..100 {
            fast.record(MS);
        }
        assert_eq!(fast.deadline(), Some(MS * 50), "never below the floor");
    }

    #[test]
    fn the_deadline_never_passes_the_header_timeout_and_old_samples_leave() {
        let timer = timer();
        for _ in 0..WINDOW {
            timer.record(Duration::from_secs(10));
        }
        assert_eq!(timer.deadline(), Some(Duration::from_secs(2)));
        for _ in 0..WINDOW {
            timer.record(MS * 100);
        }
        assert_eq!(timer.deadline(), Some(MS * 100));
    }

    #[test]
    fn disabled_hedging_has_no_deadline() {
        let timer = HedgeTimer::new(HedgePolicy { enabled: false, ..HedgePolicy::default() }, Duration::from_secs(2));
        assert_eq!(timer.deadline(), None);
    }

    #[test]
    fn the_header_timeout_adapts_between_its_floor_and_the_configured_timeout() {
        let timer = timer().with_header_floor(MS * 250);
        for _ in 0..MIN_SAMPLES - 1 {
            timer.record(MS * 5);
        }
        assert_eq!(timer.header_timeout(), Duration::from_secs(2), "too few samples: the configured timeout");
        timer.record(MS * 5);
        assert_eq!(timer.header_timeout(), MS * 250, "fast peers: the floor");
        for _ in 0..WINDOW {
            timer.record(MS * 200);
        }
        assert_eq!(timer.header_timeout(), MS * 800, "four times the 99th percentile");
        for _ in 0..WINDOW {
            timer.record(Duration::from_secs(1));
        }
        assert_eq!(timer.header_timeout(), Duration::from_secs(2), "never above the configured timeout");
    }

    #[test]
    fn without_a_floor_the_header_timeout_is_the_configured_one() {
        let timer = timer();
        for _ in 0..WINDOW {
            timer.record(MS);
        }
        assert_eq!(timer.header_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let samples = || (1..=10).map(|i| MS * i);
        assert_eq!(quantile(samples(), 0.9), Some(MS * 9));
        assert_eq!(quantile(samples(), 1.0), Some(MS * 10));
        assert_eq!(quantile(samples(), 0.0), Some(MS));
        assert_eq!(quantile(std::iter::empty(), 0.5), None);
    }
}
