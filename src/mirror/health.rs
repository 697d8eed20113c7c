//! One peer's health: the rules that turn passive signals (fetch outcomes,
//! time to headers, throughput) and active ones (connection state, ping)
//! into a weight for the weighted random choice, or into exclusion.
//!
//! Pure bookkeeping with explicit `now`, no I/O, so every rule is unit-tested
//! without waiting. `select::PeerScores` holds one [`PeerHealth`] per peer.
//!
//! The rules, in short:
//! - a refused or failed connect, a closed connection, two failed pings in a
//!   row, or three failed attempts in a row exclude the peer from every
//!   request at once;
//! - an excluded peer is probed in the background with exponential backoff;
//!   a good probe, a successful fetch, or (for connection-level exclusions) a
//!   reconnect brings it back, on probation at a reduced weight;
//! - a busy answer (upload limit) is not a failure: the peer is only set aside
//!   for its `Retry-After`;
//! - otherwise, weight = reliability (cut at once by a failure, recovering
//!   with time and successes) times relative speed and relative latency;
//! - trust (for passing blobs straight through, see `mirror::passthrough`)
//!   is earned by blob transfers verified against their digest and lost for
//!   the life of the process by a single corrupt one, which also excludes
//!   the peer at once.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// How fast a failure's penalty fades: half of it is gone after this long.
pub const RECOVERY_HALF_LIFE: Duration = Duration::from_secs(30);
/// What a failure leaves of a peer's reliability.
pub const FAILURE_FACTOR: f64 = 0.2;
/// How much one success moves reliability back towards 1.
const SUCCESS_GAIN: f64 = 0.5;
/// Reliability of a peer just probed back in.
pub const PROBATION_RELIABILITY: f64 = 0.5;
/// Failed attempts in a row that exclude a peer.
pub const FAILURES_TO_EXCLUDE: u32 = 3;
/// Failed pings in a row that exclude a peer.
pub const PING_FAILURES_TO_EXCLUDE: u32 = 2;
/// First wait before probing a peer excluded for failing; doubles per failed probe.
pub const FIRST_PROBE_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two probes of an excluded peer.
pub const MAX_PROBE_BACKOFF: Duration = Duration::from_secs(30);
/// Bounds on how long a busy answer sets a peer aside.
const MIN_BUSY: Duration = Duration::from_millis(100);
const MAX_BUSY: Duration = Duration::from_secs(5);
/// Smoothing for throughput and latency samples.
const EWMA_ALPHA: f64 = 0.3;
/// Transfers smaller than this say more about latency than throughput.
pub const MIN_THROUGHPUT_SAMPLE: u64 = 1 << 20;
/// The lowest weight of an eligible peer.
pub const MIN_WEIGHT: f64 = 0.01;
/// Speed can scale a weight by at most this factor, up or down.
const MAX_SPEED_FACTOR: f64 = 4.0;
/// Latency can scale a weight by at most this factor, up or down.
const MAX_LATENCY_FACTOR: f64 = 2.0;

/// Why a peer is out of selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionReason {
    /// The last connection to it closed.
    Disconnected,
    /// Its pings went unanswered.
    Unresponsive,
    /// A connection to its registry was refused or timed out.
    Unreachable,
    /// It took a request and then sent nothing: no response headers within
    /// the header timeout, or a body that stalled (a frozen process).
    Silent,
    /// Several attempts in a row failed.
    Failing,
}

impl ExclusionReason {
    /// Connection-level reasons end when the connection comes back.
    fn ends_on_reconnect(self) -> bool {
        matches!(self, Self::Disconnected | Self::Unresponsive)
    }

    /// How long after exclusion the first probe goes out: at once for a
    /// closed connection (it may have closed for being idle), after a short
    /// backoff when a request just failed.
    fn first_probe_delay(self) -> Duration {
        match self {
            Self::Disconnected | Self::Unresponsive => Duration::ZERO,
            Self::Unreachable | Self::Silent | Self::Failing => FIRST_PROBE_BACKOFF,
        }
    }
}

/// A peer out of selection, and when it is probed next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exclusion {
    pub reason: ExclusionReason,
    pub since: Instant,
    pub next_probe: Instant,
    pub failed_probes: u32,
    /// A probe is in flight; no other is started.
    pub probing: bool,
}

/// How an attempt against a peer ended, as far as health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer could not be reached at all (refused, connect timeout).
    Unreachable,
    /// The peer took the request and went silent (header or stall timeout).
    Silent,
    /// Any other failure the peer is to blame for (timeouts, stalls,
    /// broken bodies, bad statuses, losing a hedge while silent).
    Failed,
    /// The peer sent bytes that do not match their digest.
    Corrupt,
    /// The peer is healthy but at its upload limit.
    Busy { retry_after: Option<Duration> },
}

/// Everything known about one peer.
#[derive(Debug, Clone)]
pub struct PeerHealth {
    pub endpoint: Option<SocketAddr>,
    /// 1.0 is fully reliable; cut by failures, restored by successes and time.
    reliability: f64,
    reliability_at: Instant,
    /// Smoothed bytes per second of large transfers.
    pub throughput: Option<f64>,
    /// Smoothed time to response headers.
    pub latency: Option<Duration>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    /// Whether the router holds a connection to the peer, once it reported.
    pub connected: Option<bool>,
    pub consecutive_failures: u32,
    /// Blob transfers from the peer verified against their digest.
    pub verified_transfers: u32,
    /// The peer once sent corrupt bytes: never trusted again in this process.
    pub corrupt: bool,
    ping_failures: u32,
    pub busy_until: Option<Instant>,
    pub exclusion: Option<Exclusion>,
    /// Last time anything was recorded (for pruning).
    pub touched: Instant,
}

impl PeerHealth {
    pub fn new(now: Instant) -> Self {
        Self {
            endpoint: None,
            reliability: 1.0,
            reliability_at: now,
            throughput: None,
            latency: None,
            rtt: None,
            connected: None,
            consecutive_failures: 0,
            verified_transfers: 0,
            corrupt: false,
            ping_failures: 0,
            busy_until: None,
            exclusion: None,
            touched: now,
        }
    }

    /// A peer as an earlier run saved it at `saved_at`: its reliability (still
    /// recovering from then on) and its throughput.
    pub fn restored(reliability: f64, throughput: Option<f64>, saved_at: Instant, now: Instant) -> Self {
        let mut health = Self::new(now);
        health.set_reliability(reliability, saved_at);
        health.throughput = throughput;
        health
    }

    /// Reliability with the time-based recovery since the last update applied.
    pub fn reliability(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.reliability_at).as_secs_f64();
        let remaining_penalty = (1.0 - self.reliability) * 0.5f64.powf(elapsed / RECOVERY_HALF_LIFE.as_secs_f64());
        1.0 - remaining_penalty
    }

    fn set_reliability(&mut self, value: f64, now: Instant) {
        self.reliability = value.clamp(0.0, 1.0);
        self.reliability_at = now;
    }

    pub fn is_excluded(&self) -> bool {
        self.exclusion.is_some()
    }

    pub fn is_busy(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|until| now < until)
    }

    /// A transfer finished: `bytes` in `elapsed`, headers after `latency`.
    pub fn record_success(&mut self, bytes: u64, elapsed: Duration, latency: Option<Duration>, now: Instant) {
        let reliability = self.reliability(now);
        self.set_reliability(reliability + (1.0 - reliability) * SUCCESS_GAIN, now);
        self.consecutive_failures = 0;
        self.busy_until = None;
        self.include(now);
        if bytes >= MIN_THROUGHPUT_SAMPLE && !elapsed.is_zero() {
            self.throughput = Some(ewma(self.throughput, bytes as f64 / elapsed.as_secs_f64()));
        }
        if let Some(latency) = latency {
            let smoothed = ewma(self.latency.map(|l| l.as_secs_f64()), latency.as_secs_f64());
            self.latency = Some(Duration::from_secs_f64(smoothed));
        }
        self.touched = now;
    }

    pub fn record(&mut self, outcome: Outcome, now: Instant) {
        self.touched = now;
        match outcome {
            Outcome::Busy { retry_after } => {
                let wait = retry_after.unwrap_or(Duration::from_secs(1)).clamp(MIN_BUSY, MAX_BUSY);
                self.busy_until = Some(now + wait);
            }
            Outcome::Unreachable => {
                self.cut(now);
                self.exclude(ExclusionReason::Unreachable, now);
            }
            Outcome::Silent => {
                self.cut(now);
                self.exclude(ExclusionReason::Silent, now);
            }
            Outcome::Failed => {
                self.cut(now);
                if self.consecutive_failures >= FAILURES_TO_EXCLUDE {
                    self.exclude(ExclusionReason::Failing, now);
                }
            }
            Outcome::Corrupt => {
                self.cut(now);
                self.corrupt = true;
                self.exclude(ExclusionReason::Failing, now);
            }
        }
    }

    /// A blob transfer from the peer matched its digest.
    pub fn record_verified(&mut self, now: Instant) {
        self.verified_transfers = self.verified_transfers.saturating_add(1);
        self.touched = now;
    }

    /// Whether blobs from the peer may pass straight through: at least
    /// `after` verified transfers, never a corrupt one, not excluded.
    pub fn is_trusted(&self, after: u32) -> bool {
        after > 0 && !self.corrupt && !self.is_excluded() && self.verified_transfers >= after
    }

    fn cut(&mut self, now: Instant) {
        let reliability = self.reliability(now);
        self.set_reliability(reliability * FAILURE_FACTOR, now);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }

    /// The connection to the peer opened (again).
    pub fn connected(&mut self, endpoint: Option<SocketAddr>, now: Instant) {
        if endpoint.is_some() {
            self.endpoint = endpoint;
        }
        self.connected = Some(true);
        self.ping_failures = 0;
        if self.exclusion.is_some_and(|e| e.reason.ends_on_reconnect()) {
            self.include_on_probation(now);
        }
        self.touched = now;
    }

    /// The last connection to the peer closed.
    pub fn disconnected(&mut self, now: Instant) {
        self.connected = Some(false);
        self.exclude(ExclusionReason::Disconnected, now);
        self.touched = now;
    }

    pub fn ping(&mut self, rtt: Option<Duration>, now: Instant) {
        match rtt {
            Some(rtt) => {
                self.rtt = Some(rtt);
                self.ping_failures = 0;
                if self.exclusion.is_some_and(|e| e.reason == ExclusionReason::Unresponsive) {
                    self.include_on_probation(now);
                }
            }
            None => {
                self.ping_failures = self.ping_failures.saturating_add(1);
                if self.ping_failures >= PING_FAILURES_TO_EXCLUDE {
                    self.exclude(ExclusionReason::Unresponsive, now);
                }
            }
        }
    }

    /// Takes the peer out of selection; an existing exclusion keeps its
    /// backoff (a peer that keeps failing is not probed more often).
    fn exclude(&mut self, reason: ExclusionReason, now: Instant) {
        match &mut self.exclusion {
            Some(exclusion) => {
                if !exclusion.reason.ends_on_reconnect() || reason.ends_on_reconnect() {
                    return;
                }
                // A connection-level exclusion that now also failed a request
                // is no longer lifted by a mere reconnect.
                exclusion.reason = reason;
            }
            None => {
                self.exclusion = Some(Exclusion {
                    reason,
                    since: now,
                    next_probe: now + reason.first_probe_delay(),
                    failed_probes: 0,
                    probing: false,
                });
            }
        }
    }

    fn include(&mut self, now: Instant) {
        if self.exclusion.take().is_some() {
            self.ping_failures = 0;
        }
        self.touched = now;
    }

    fn include_on_probation(&mut self, now: Instant) {
        self.include(now);
        self.consecutive_failures = 0;
        let reliability = self.reliability(now).min(PROBATION_RELIABILITY);
        self.set_reliability(reliability, now);
    }

    /// Whether a probe is due; marks it in flight if so.
    pub fn start_probe(&mut self, now: Instant) -> bool {
        match &mut self.exclusion {
            Some(exclusion) if !exclusion.probing && now >= exclusion.next_probe && self.endpoint.is_some() => {
                exclusion.probing = true;
                true
            }
            _ => false,
        }
    }

    /// When the next probe is due, if one is waiting.
    pub fn next_probe(&self) -> Option<Instant> {
        self.exclusion.filter(|e| !e.probing && self.endpoint.is_some()).map(|e| e.next_probe)
    }

    pub fn probe_result(&mut self, ok: bool, now: Instant) {
        if ok {
            self.include_on_probation(now);
            return;
        }
        if let Some(exclusion) = &mut self.exclusion {
            exclusion.probing = false;
            exclusion.failed_probes = exclusion.failed_probes.saturating_add(1);
            exclusion.next_probe = now + probe_backoff(exclusion.failed_probes);
        }
        self.touched = now;
    }

    /// The peer's weight, given the median throughput and latency among the
    /// candidates; `None` when it is excluded.
    pub fn weight(
        &self,
        median_throughput: Option<f64>,
        median_latency: Option<Duration>,
        now: Instant,
    ) -> Option<f64> {
        if self.is_excluded() {
            return None;
        }
        if self.is_busy(now) {
            return Some(MIN_WEIGHT);
        }
        let speed = match (self.throughput, median_throughput) {
            (Some(t), Some(m)) if m > 0.0 => (t / m).clamp(1.0 / MAX_SPEED_FACTOR, MAX_SPEED_FACTOR),
            _ => 1.0,
        };
        let latency = match (self.effective_latency(), median_latency) {
            (Some(l), Some(m)) if !l.is_zero() => {
                (m.as_secs_f64() / l.as_secs_f64()).clamp(1.0 / MAX_LATENCY_FACTOR, MAX_LATENCY_FACTOR)
            }
            _ => 1.0,
        };
        Some((self.reliability(now) * speed * latency).max(MIN_WEIGHT))
    }

    /// Time to headers if measured, else the ping round trip.
    pub fn effective_latency(&self) -> Option<Duration> {
        self.latency.or(self.rtt)
    }
}

/// Backoff after `failed` failed probes: 0.5 s, 1 s, 2 s ... up to 30 s.
pub fn probe_backoff(failed: u32) -> Duration {
    let factor = 1u32.checked_shl(failed.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_PROBE_BACKOFF.saturating_mul(factor).min(MAX_PROBE_BACKOFF)
}

fn ewma(previous: Option<f64>, sample: f64) -> f64 {
    previous.map_or(sample, |p| p + EWMA_ALPHA * (sample - p))
}

#[cfg(test)]
#[path = "health/tests.rs"]
mod tests;
