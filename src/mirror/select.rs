//! Peer selection: every peer's health in one table, and a weighted random
//! choice among the eligible candidates of one request.
//!
//! Owns: the table of [`PeerHealth`] (bounded), applying fetch outcomes and
//! link events to it, the choice itself, the probe schedule that the prober
//! task follows, and the snapshot shown on `/status/peers`. No I/O.
//!
//! Weighted random choice (rather than "always the best") spreads load over
//! every healthy provider while still favouring fast, reliable ones. An
//! excluded peer has no weight at all: it is skipped by every request until
//! it is probed back in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::health::{ExclusionReason, Outcome, PeerHealth};
use crate::routing::{Link, LinkEvent, Peer, PeerName};

pub use super::health::MIN_THROUGHPUT_SAMPLE;

/// Most peers tracked; beyond it the least recently touched healthy one goes.
const MAX_TRACKED: usize = 4096;

/// One peer's state for the status page and logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerStatus {
    pub peer: String,
    pub endpoint: Option<String>,
    /// `healthy`, `busy` or `excluded`.
    pub state: &'static str,
    /// Whether the router is connected to it (`None` until it reported).
    pub connected: Option<bool>,
    pub reason: Option<ExclusionReason>,
    pub excluded_for_ms: Option<u64>,
    pub next_probe_in_ms: Option<u64>,
    pub failed_probes: u32,
    pub consecutive_failures: u32,
    /// Blob transfers from the peer verified against their digest.
    pub verified_transfers: u32,
    /// Whether it ever sent corrupt bytes (then it is never trusted again).
    pub corrupt: bool,
    pub reliability: f64,
    pub throughput_bytes_per_second: Option<f64>,
    pub latency_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
}

/// Health of every peer this node has fetched from or been connected to.
#[derive(Debug, Default)]
pub struct PeerScores {
    /// A std mutex: every critical section is short and never crosses `.await`.
    peers: Mutex<HashMap<PeerName, PeerHealth>>,
    /// Wakes the prober when an exclusion may have changed the schedule.
    changed: Notify,
}

impl PeerScores {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PeerName, PeerHealth>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, peer: &PeerName, now: Instant, change: impl FnOnce(&mut PeerHealth)) {
        let mut peers = self.lock();
        if !peers.contains_key(peer) {
            make_room(&mut peers);
        }
        change(peers.entry(peer.clone()).or_insert_with(|| PeerHealth::new(now)));
    }

    /// Remembers where `peer` is reached (for probes).
    pub fn observe(&self, peer: &Peer) {
        let mut peers = self.lock();
        if let Some(health) = peers.get_mut(&peer.name) {
            health.endpoint = Some(peer.endpoint);
        }
    }

    pub fn record_success(&self, peer: &Peer, bytes: u64, elapsed: Duration, latency: Option<Duration>) {
        self.update(&peer.name, Instant::now(), |health| {
            health.endpoint = Some(peer.endpoint);
            health.record_success(bytes, elapsed, latency, Instant::now());
        });
    }

    /// A blob transfer from `peer` matched its digest.
    pub fn record_verified(&self, peer: &PeerName) {
        self.update(peer, Instant::now(), |health| health.record_verified(Instant::now()));
    }

    /// Whether blobs from `peer` may pass straight through (see
    /// [`PeerHealth::is_trusted`]); an unknown peer is not trusted.
    pub fn is_trusted(&self, peer: &PeerName, after: u32) -> bool {
        self.lock().get(peer).is_some_and(|health| health.is_trusted(after))
    }

    pub fn record(&self, peer: &Peer, outcome: Outcome) {
        self.update(&peer.name, Instant::now(), |health| {
            health.endpoint = Some(peer.endpoint);
            health.record(outcome, Instant::now());
        });
        if !matches!(outcome, Outcome::Busy { .. }) {
            self.changed.notify_one();
        }
    }

    /// Applies a connection change reported by the router.
    pub fn on_link(&self, event: &LinkEvent, link: &Link) {
        let now = Instant::now();
        self.update(event.peer(), now, |health| {
            if link.endpoint.is_some() && health.endpoint.is_none() {
                health.endpoint = link.endpoint;
            }
            match event {
                LinkEvent::Up { endpoint, .. } => health.connected(*endpoint, now),
                LinkEvent::Down { .. } => health.disconnected(now),
                LinkEvent::Idle { .. } => health.connected = Some(false),
                LinkEvent::Rtt { rtt, .. } => health.ping(Some(*rtt), now),
                LinkEvent::PingFailed { .. } => health.ping(None, now),
            }
        });
        if matches!(event, LinkEvent::Down { .. } | LinkEvent::PingFailed { .. }) {
            self.changed.notify_one();
        }
    }

    pub fn is_excluded(&self, peer: &PeerName) -> bool {
        self.lock().get(peer).is_some_and(PeerHealth::is_excluded)
    }

    /// Picks one of `candidates` by weighted random choice among those not
    /// excluded; `None` if there is none.
    pub fn choose<R: Rng + ?Sized>(&self, candidates: &[Peer], rng: &mut R) -> Option<usize> {
        let weights = self.weights(candidates, Instant::now());
        let eligible: Vec<usize> = (0..candidates.len()).filter(|i| weights[*i].is_some()).collect();
        let dist = WeightedIndex::new(eligible.iter().map(|i| weights[*i].unwrap_or(0.0))).ok()?;
        Some(eligible[dist.sample(rng)])
    }

    /// Each candidate's weight, `None` when excluded.
    fn weights(&self, candidates: &[Peer], now: Instant) -> Vec<Option<f64>> {
        let peers = self.lock();
        let known = || candidates.iter().filter_map(|p| peers.get(&p.name));
        let median_throughput = median(known().filter_map(|h| h.throughput));
        let median_latency =
            median(known().filter_map(|h| h.effective_latency().map(|l| l.as_secs_f64()))).map(Duration::from_secs_f64);
        candidates
            .iter()
            .map(|peer| match peers.get(&peer.name) {
                None => Some(1.0),
                Some(health) => health.weight(median_throughput, median_latency, now),
            })
            .collect()
    }

    /// Excluded peers whose probe is due now, marked as being probed.
    pub fn take_due_probes(&self) -> Vec<(PeerName, SocketAddr)> {
        let now = Instant::now();
        let mut peers = self.lock();
        peers
            .iter_mut()
            .filter_map(|(name, health)| {
                let endpoint = health.endpoint?;
                health.start_probe(now).then(|| (name.clone(), endpoint))
            })
            .collect()
    }

    /// When the earliest waiting probe is due.
    pub fn next_probe_at(&self) -> Option<Instant> {
        self.lock().values().filter_map(PeerHealth::next_probe).min()
    }

    pub fn probe_result(&self, peer: &PeerName, ok: bool) {
        let now = Instant::now();
        if let Some(health) = self.lock().get_mut(peer) {
            health.probe_result(ok, now);
        }
    }

    /// Resolves after the table changed in a way that may move the probe
    /// schedule (a wakeup that arrived while nobody waited is kept).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// How many peers are excluded now.
    pub fn excluded_count(&self) -> usize {
        self.lock().values().filter(|h| h.is_excluded()).count()
    }

    /// Restores what an earlier run saved `age` ago about `peer`: penalties
    /// keep fading from when they were saved. A peer tracked already keeps its state.
    pub fn restore(&self, peer: &PeerName, reliability: f64, throughput: Option<f64>, age: Duration) {
        let now = Instant::now();
        let saved_at = now.checked_sub(age).unwrap_or(now);
        let mut peers = self.lock();
        if !peers.contains_key(peer) {
            make_room(&mut peers);
            peers.insert(peer.clone(), PeerHealth::restored(reliability, throughput, saved_at, now));
        }
    }

    /// Every tracked peer's state: excluded first, then by reliability.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let peers = self.lock();
        let mut statuses: Vec<PeerStatus> = peers.iter().map(|(name, health)| status(name, health, now)).collect();
        statuses.sort_by(|a, b| {
            (b.state == "excluded").cmp(&(a.state == "excluded")).then(b.reliability.total_cmp(&a.reliability))
        });
        statuses
    }
}

fn status(name: &PeerName, health: &PeerHealth, now: Instant) -> PeerStatus {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let as_ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let exclusion = health.exclusion;
    let state = if exclusion.is_some() {
        "excluded"
    } else if health.is_busy(now) {
        "busy"
    } else {
        "healthy"
    };
    PeerStatus {
        peer: name.to_string(),
        endpoint: health.endpoint.map(|e| e.to_string()),
        state,
        connected: health.connected,
        reason: exclusion.map(|e| e.reason),
        excluded_for_ms: exclusion.map(|e| millis(now.saturating_duration_since(e.since))),
        next_probe_in_ms: exclusion.map(|e| millis(e.next_probe.saturating_duration_since(now))),
        failed_probes: exclusion.map_or(0, |e| e.failed_probes),
        consecutive_failures: health.consecutive_failures,
        verified_transfers: health.verified_transfers,
        corrupt: health.corrupt,
        reliability: health.reliability(now),
        throughput_bytes_per_second: health.throughput,
        latency_ms: health.latency.map(as_ms),
        rtt_ms: health.rtt.map(as_ms),
    }
}

/// Drops the least recently touched peer that is not excluded when full.
fn make_room(peers: &mut HashMap<PeerName, PeerHealth>) {
    if peers.len() < MAX_TRACKED {
        return;
    }
    let stale = peers.iter().filter(|(_, h)| !h.is_excluded()).min_by_key(|(_, h)| h.touched);
    if let Some(name) = stale.map(|(name, _)| name.clone()) {
        peers.remove(&name);
    }
}

fn median(samples: impl Iterator<Item = f64>) -> Option<f64> {
    let mut samples: Vec<f64> = samples.collect();
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    Some(samples[samples.len() / 2])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn peer(i: u8) -> Peer {
        Peer { name: PeerName::new(format!("peer-{i}")), endpoint: ([127, 0, 5, i], 5000).into() }
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
        scores.record(&candidates[0], Outcome::Failed);
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
        scores.record_success(&candidates[0], 100 << 20, second, None);
        scores.record_success(&candidates[1], 200 << 20, second, None);
        scores.record_success(&candidates[2], 400 << 20, second, None);
        let counts = tally(&scores, &candidates, 70_000);
        // Weights 0.5 : 1 : 2 relative to the median.
        let expected = [10_000.0, 20_000.0, 40_000.0];
        for (count, want) in counts.iter().zip(expected) {
            let ratio = *count as f64 / want;
            assert!((0.95..1.05).contains(&ratio), "{counts:?}");
        }
    }

    #[test]
    fn an_excluded_peer_is_never_chosen_and_none_is_left_when_all_are() {
        let scores = PeerScores::new();
        let candidates = vec![peer(1), peer(2)];
        scores.record(&candidates[0], Outcome::Unreachable);
        assert_eq!(tally(&scores, &candidates, 1_000), vec![0, 1_000]);
        scores.record(&candidates[1], Outcome::Unreachable);
        assert_eq!(scores.choose(&candidates, &mut StdRng::seed_from_u64(1)), None);
        assert_eq!(scores.choose(&[], &mut StdRng::seed_from_u64(1)), None);
        assert_eq!(scores.excluded_count(), 2);
    }

    #[test]
    fn a_link_going_down_excludes_at_once_with_a_probe_due_now() {
        let scores = PeerScores::new();
        let p = peer(3);
        let link =
            Link { connected: false, since: Instant::now(), rtt: None, ping_failures: 0, endpoint: Some(p.endpoint) };
        scores.on_link(&LinkEvent::Down { peer: p.name.clone() }, &link);
        assert!(scores.is_excluded(&p.name));
        assert_eq!(scores.take_due_probes(), vec![(p.name.clone(), p.endpoint)]);
        assert!(scores.take_due_probes().is_empty(), "a probe in flight is not handed out twice");
        scores.probe_result(&p.name, true);
        assert!(!scores.is_excluded(&p.name));
        let snapshot = scores.snapshot();
        assert_eq!(snapshot[0].state, "healthy");
        assert_eq!(snapshot[0].connected, Some(false), "probed back in, still not connected");
        assert_eq!(snapshot[0].endpoint.as_deref(), Some("127.0.5.3:5000"));
    }

    #[test]
    fn a_connection_closed_for_being_idle_is_not_a_health_signal() {
        let scores = PeerScores::new();
        let p = peer(4);
        let link =
            Link { connected: false, since: Instant::now(), rtt: None, ping_failures: 0, endpoint: Some(p.endpoint) };
        scores.on_link(&LinkEvent::Idle { peer: p.name.clone() }, &link);
        assert!(!scores.is_excluded(&p.name));
        assert!(scores.take_due_probes().is_empty());
    }

    #[test]
    fn the_snapshot_lists_excluded_peers_first_with_their_reason() {
        let scores = PeerScores::new();
        scores.record_success(&peer(1), 10, Duration::from_millis(1), Some(Duration::from_millis(1)));
        scores.record(&peer(2), Outcome::Unreachable);
        let snapshot = scores.snapshot();
        assert_eq!(snapshot[0].peer, "peer-2");
        assert_eq!(snapshot[0].state, "excluded");
        assert_eq!(snapshot[0].reason, Some(ExclusionReason::Unreachable));
        assert!(snapshot[0].next_probe_in_ms.is_some());
        assert_eq!(snapshot[1].state, "healthy");
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json[0]["reason"], "unreachable");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut peers = HashMap::new();
        let start = Instant::now();
        for i in 0..MAX_TRACKED {
            let mut health = PeerHealth::new(start + Duration::from_secs(i as u64));
            if i == 0 {
                health.record(Outcome::Unreachable, start);
            }
            peers.insert(PeerName::new(format!("p{i}")), health);
        }
        make_room(&mut peers);
        assert_eq!(peers.len(), MAX_TRACKED - 1);
        assert!(peers.contains_key(&PeerName::new("p0")), "excluded peers are kept");
        assert!(!peers.contains_key(&PeerName::new("p1")));
    }
}
