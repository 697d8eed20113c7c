//! Peer selection: each peer's weight from its measured health and speed,
//! and a weighted random choice among the candidates for one request.
//!
//! Pure bookkeeping, no I/O. Weighted random choice (rather than "always the
//! best") spreads load over every healthy provider while still favouring
//! fast, reliable ones; a failure cuts a peer's weight at once, and the cut
//! fades over time so the peer is tried again later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;

use crate::routing::{Peer, PeerName};

/// How fast a failure's penalty fades: half of it is gone after this long.
const RECOVERY_HALF_LIFE: Duration = Duration::from_secs(30);
/// What a failure leaves of a peer's reliability.
const FAILURE_FACTOR: f64 = 0.2;
/// How much one success moves reliability back towards 1.
const SUCCESS_GAIN: f64 = 0.5;
/// Smoothing for throughput samples.
const THROUGHPUT_ALPHA: f64 = 0.3;
/// Transfers smaller than this say more about latency than throughput.
pub const MIN_THROUGHPUT_SAMPLE: u64 = 1 << 20;
/// The lowest weight: a peer is never excluded for ever by its score alone.
const MIN_WEIGHT: f64 = 0.01;
/// Speed can scale a weight by at most this factor, up or down.
const MAX_SPEED_FACTOR: f64 = 4.0;

#[derive(Debug, Clone, Copy)]
struct PeerStats {
    /// 1.0 is fully reliable; cut by failures, restored by successes and time.
    reliability: f64,
    /// Smoothed bytes per second of large transfers.
    throughput: Option<f64>,
    updated: Instant,
}

impl PeerStats {
    fn new(now: Instant) -> Self {
        Self { reliability: 1.0, throughput: None, updated: now }
    }

    /// Reliability with the time-based recovery since the last update applied.
    fn reliability_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let remaining_penalty = (1.0 - self.reliability) * 0.5f64.powf(elapsed / RECOVERY_HALF_LIFE.as_secs_f64());
        1.0 - remaining_penalty
    }
}

/// A snapshot of one peer's score, for status pages and logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerScore {
    pub peer: String,
    pub reliability: f64,
    pub throughput_bytes_per_second: Option<f64>,
}

/// Health and speed of every peer this node has fetched from.
#[derive(Debug, Default)]
pub struct PeerScores {
    /// A std mutex: every critical section is short and never crosses `.await`.
    stats: Mutex<HashMap<PeerName, PeerStats>>,
}

impl PeerScores {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record_success(&self, peer: &PeerName, bytes: u64, elapsed: Duration) {
        self.record_success_at(peer, bytes, elapsed, Instant::now());
    }

    pub fn record_failure(&self, peer: &PeerName) {
        self.record_failure_at(peer, Instant::now());
    }

    fn record_success_at(&self, peer: &PeerName, bytes: u64, elapsed: Duration, now: Instant) {
        self.update(peer, now, |stats| {
            stats.reliability += (1.0 - stats.reliability) * SUCCESS_GAIN;
            if bytes >= MIN_THROUGHPUT_SAMPLE && !elapsed.is_zero() {
                let sample = bytes as f64 / elapsed.as_secs_f64();
                let smoothed = stats.throughput.map_or(sample, |t| t + THROUGHPUT_ALPHA * (sample - t));
                stats.throughput = Some(smoothed);
            }
        });
    }

    fn record_failure_at(&self, peer: &PeerName, now: Instant) {
        self.update(peer, now, |stats| stats.reliability *= FAILURE_FACTOR);
    }

    fn update(&self, peer: &PeerName, now: Instant, change: impl FnOnce(&mut PeerStats)) {
        let Ok(mut all) = self.stats.lock() else { return };
        let stats = all.entry(peer.clone()).or_insert_with(|| PeerStats::new(now));
        stats.reliability = stats.reliability_at(now);
        stats.updated = now;
        change(stats);
    }

    /// Picks one of `candidates` by weighted random choice; `None` if empty.
    pub fn choose<R: Rng + ?Sized>(&self, candidates: &[Peer], rng: &mut R) -> Option<usize> {
        let weights = self.weights_at(candidates, Instant::now());
        WeightedIndex::new(&weights).ok().map(|dist| dist.sample(rng))
    }

    /// The weight of each candidate: reliability times relative speed.
    fn weights_at(&self, candidates: &[Peer], now: Instant) -> Vec<f64> {
        let Ok(all) = self.stats.lock() else {
            return vec![1.0; candidates.len()];
        };
        let median = median_throughput(candidates.iter().filter_map(|p| all.get(&p.name)?.throughput));
        candidates
            .iter()
            .map(|peer| match all.get(&peer.name) {
                None => 1.0,
                Some(stats) => {
                    let speed = match (stats.throughput, median) {
                        (Some(t), Some(m)) if m > 0.0 => (t / m).clamp(1.0 / MAX_SPEED_FACTOR, MAX_SPEED_FACTOR),
                        _ => 1.0,
                    };
                    (stats.reliability_at(now) * speed).max(MIN_WEIGHT)
                }
            })
            .collect()
    }

    /// Restores scores an earlier run saved `age` ago; penalties keep fading
    /// from when they were saved. Peers scored already keep their score.
    pub fn restore(&self, scores: &[PeerScore], age: Duration) {
        let now = Instant::now();
        let updated = now.checked_sub(age).unwrap_or(now);
        let Ok(mut all) = self.stats.lock() else { return };
        for score in scores {
            let stats = PeerStats {
                reliability: score.reliability.clamp(0.0, 1.0),
                throughput: score.throughput_bytes_per_second,
                updated,
            };
            all.entry(PeerName::new(score.peer.as_str())).or_insert(stats);
        }
    }

    /// Every known peer's score, best first.
    pub fn snapshot(&self) -> Vec<PeerScore> {
        let now = Instant::now();
        let Ok(all) = self.stats.lock() else { return Vec::new() };
        let mut scores: Vec<PeerScore> = all
            .iter()
            .map(|(name, stats)| PeerScore {
                peer: name.to_string(),
                reliability: stats.reliability_at(now),
                throughput_bytes_per_second: stats.throughput,
            })
            .collect();
        scores.sort_by(|a, b| b.reliability.total_cmp(&a.reliability));
        scores
    }
}

fn median_throughput(samples: impl Iterator<Item = f64>) -> Option<f64> {
    let mut samples: Vec<f64> = samples.collect();
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    Some(samples[samples.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn peer(i: u8) -> Peer {
        Peer { name: PeerName::new(format!("peer-{i}")), endpoint: ([127, 0, 0, i], 5000).into() }
    }

    /// Counts how often each candidate is chosen in `draws` seeded draws.
    fn tally(scores: &PeerScores, candidates: &[Peer], draws: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0; candidates.len()];
        for _ in 0..draws {
            if let Some(i) = scores.choose(candidates, &mut rng) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn new_peers_are_chosen_uniformly() {
        let candidates: Vec<Peer> = (1..=4).map(peer).collect();
        let counts = tally(&PeerScores::new(), &candidates, 40_000);
        for count in counts {
            // Expected 10,000 each; a seeded RNG makes this exact run repeatable.
            assert!((9_500..=10_500).contains(&count), "{count}");
        }
    }

    #[test]
    fn a_failure_cuts_a_peer_weight_at_once() {
        let scores = PeerScores::new();
        let candidates = vec![peer(1), peer(2)];
        scores.record_failure(&candidates[0].name);
        let counts = tally(&scores, &candidates, 20_000);
        // Weight 0.2 against 1.0: about 1/6 of the draws.
        let share = counts[0] as f64 / 20_000.0;
        assert!((0.14..0.20).contains(&share), "{share}");
    }

    #[test]
    fn faster_peers_are_chosen_more_often_in_proportion() {
        let scores = PeerScores::new();
        let candidates = vec![peer(1), peer(2), peer(3)];
        let second = Duration::from_secs(1);
        scores.record_success(&candidates[0].name, 100 << 20, second);
        scores.record_success(&candidates[1].name, 200 << 20, second);
        scores.record_success(&candidates[2].name, 400 << 20, second);
        let counts = tally(&scores, &candidates, 70_000);
        // Weights 0.5 : 1 : 2 relative to the median.
        let expected = [10_000.0, 20_000.0, 40_000.0];
        for (count, want) in counts.iter().zip(expected) {
            let ratio = *count as f64 / want;
            assert!((0.95..1.05).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn penalties_fade_with_time_and_successes() {
        let scores = PeerScores::new();
        let name = peer(1).name;
        let start = Instant::now();
        scores.record_failure_at(&name, start);
        let weight = |at| scores.weights_at(&[peer(1)], at)[0];
        assert!((weight(start) - FAILURE_FACTOR).abs() < 1e-9);
        let later = start + RECOVERY_HALF_LIFE;
        assert!((weight(later) - (1.0 - (1.0 - FAILURE_FACTOR) / 2.0)).abs() < 1e-9);
        scores.record_success_at(&name, 10, Duration::from_millis(1), start);
        assert!(weight(start) > FAILURE_FACTOR);
    }

    #[test]
    fn repeated_failures_never_reach_zero() {
        let scores = PeerScores::new();
        let name = peer(1).name;
        for _ in 0..100 {
            scores.record_failure(&name);
        }
        assert!(scores.weights_at(&[peer(1)], Instant::now())[0] >= MIN_WEIGHT);
        assert_eq!(scores.choose(&[], &mut StdRng::seed_from_u64(1)), None);
    }
}
