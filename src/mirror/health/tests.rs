#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn peer(now: Instant) -> PeerHealth {
    let mut health = PeerHealth::new(now);
    health.endpoint = Some("127.0.5.1:5000".parse().unwrap());
    health
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn an_unreachable_peer_is_excluded_at_once_and_probed_after_a_short_backoff() {
    let now = Instant::now();
    let mut health = peer(now);
    health.record(Outcome::Unreachable, now);
    assert!(health.is_excluded());
    assert_eq!(health.weight(None, None, now), None);
    assert!(!health.start_probe(now), "not before the first backoff");
    assert_eq!(health.next_probe(), Some(now + FIRST_PROBE_BACKOFF));
    assert!(health.start_probe(now + FIRST_PROBE_BACKOFF));
    assert!(!health.start_probe(now + FIRST_PROBE_BACKOFF), "one probe at a time");
    assert_eq!(health.next_probe(), None);
}

#[test]
fn failed_probes_back_off_exponentially_up_to_a_cap() {
    let backoffs: Vec<Duration> = (1..=10).map(probe_backoff).collect();
    assert_eq!(backoffs[0], FIRST_PROBE_BACKOFF);
    assert_eq!(backoffs[1], FIRST_PROBE_BACKOFF * 2);
    assert!(backoffs.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(backoffs[9], MAX_PROBE_BACKOFF);
    assert_eq!(probe_backoff(u32::MAX), MAX_PROBE_BACKOFF);

    let now = Instant::now();
    let mut health = peer(now);
    health.record(Outcome::Unreachable, now);
    let mut at = now + FIRST_PROBE_BACKOFF;
    for failed in 1..=4 {
        assert!(health.start_probe(at));
        health.probe_result(false, at);
        assert_eq!(health.next_probe(), Some(at + probe_backoff(failed)));
        at += probe_backoff(failed);
    }
    assert!(health.is_excluded());
}

#[test]
fn a_good_probe_brings_the_peer_back_on_probation() {
    let now = Instant::now();
    let mut health = peer(now);
    health.record(Outcome::Unreachable, now);
    let later = now + FIRST_PROBE_BACKOFF;
    assert!(health.start_probe(later));
    health.probe_result(true, later);
    assert!(!health.is_excluded());
    let weight = health.weight(None, None, later).unwrap();
    assert!(weight <= PROBATION_RELIABILITY + 1e-9, "{weight}");
    assert_eq!(health.consecutive_failures, 0);
}

#[test]
fn three_failures_in_a_row_exclude_but_a_success_in_between_resets_the_count() {
    let now = Instant::now();
    let mut health = peer(now);
    health.record(Outcome::Failed, now);
    health.record(Outcome::Failed, now);
    health.record_success(10, MS, Some(MS), now);
    health.record(Outcome::Failed, now);
    health.record(Outcome::Failed, now);
    assert!(!health.is_excluded());
    health.record(Outcome::Failed, now);
    assert_eq!(health.exclusion.map(|e| e.reason), Some(ExclusionReason::Failing));
    health.record_success(10, MS, None, now);
    assert!(!health.is_excluded(), "a success through another path lifts the exclusion");
}

#[test]
fn a_closed_connection_excludes_and_a_reconnect_restores() {
    let now = Instant::now();
    let mut health = peer(now);
    health.disconnected(now);
    assert_eq!(health.exclusion.map(|e| (e.reason, e.next_probe)), Some((ExclusionReason::Disconnected, now)));
    health.connected(None, now + MS);
    assert!(!health.is_excluded());
}

#[test]
fn a_reconnect_does_not_lift_an_exclusion_for_failed_requests() {
    let now = Instant::now();
    let mut health = peer(now);
    health.disconnected(now);
    health.record(Outcome::Unreachable, now);
    health.connected(None, now);
    assert_eq!(health.exclusion.map(|e| e.reason), Some(ExclusionReason::Unreachable));

    let mut health = peer(now);
    health.record(Outcome::Unreachable, now);
    health.disconnected(now);
    assert_eq!(health.exclusion.map(|e| e.reason), Some(ExclusionReason::Unreachable));
}

#[test]
fn two_failed_pings_exclude_and_a_good_ping_restores() {
    let now = Instant::now();
    let mut health = peer(now);
    health.ping(None, now);
    assert!(!health.is_excluded());
    health.ping(None, now);
    assert_eq!(health.exclusion.map(|e| e.reason), Some(ExclusionReason::Unresponsive));
    health.ping(Some(MS * 2), now);
    assert!(!health.is_excluded());
    assert_eq!(health.rtt, Some(MS * 2));
}

#[test]
fn busy_is_not_a_failure_and_passes_with_its_retry_after() {
    let now = Instant::now();
    let mut health = peer(now);
    health.record(Outcome::Busy { retry_after: Some(Duration::from_secs(2)) }, now);
    assert!(!health.is_excluded());
    assert_eq!(health.consecutive_failures, 0);
    assert_eq!(health.weight(None, None, now), Some(MIN_WEIGHT));
    let later = now + Duration::from_secs(2);
    assert_eq!(health.weight(None, None, later), Some(1.0));
    health.record(Outcome::Busy { retry_after: Some(Duration::from_secs(3600)) }, now);
    assert!(!health.is_busy(now + Duration::from_secs(6)), "a peer's Retry-After is capped");
}

#[test]
fn penalties_fade_with_time_and_successes() {
    let start = Instant::now();
    let mut health = peer(start);
    health.record(Outcome::Failed, start);
    let weight = |h: &PeerHealth, at| h.weight(None, None, at).unwrap();
    assert!((weight(&health, start) - FAILURE_FACTOR).abs() < 1e-9);
    let later = start + RECOVERY_HALF_LIFE;
    assert!((weight(&health, later) - (1.0 - (1.0 - FAILURE_FACTOR) / 2.0)).abs() < 1e-9);
    health.record_success(10, MS, None, start);
    assert!(weight(&health, start) > FAILURE_FACTOR);
}

#[test]
fn speed_and_latency_scale_the_weight_within_bounds() {
    let now = Instant::now();
    let mut fast = peer(now);
    fast.record_success(400 << 20, Duration::from_secs(1), Some(MS), now);
    let median = Some(100.0 * (1 << 20) as f64);
    assert_eq!(fast.weight(median, Some(MS * 4), now), Some(4.0 * 2.0));
    let mut slow = peer(now);
    slow.record_success(1 << 20, Duration::from_secs(10), Some(MS * 100), now);
    let weight = slow.weight(median, Some(MS), now).unwrap();
    assert!((weight - 0.25 * 0.5).abs() < 1e-9, "{weight}");
}

#[test]
fn ping_rtt_stands_in_for_latency_until_a_fetch_measures_it() {
    let now = Instant::now();
    let mut health = peer(now);
    health.ping(Some(MS * 8), now);
    assert_eq!(health.effective_latency(), Some(MS * 8));
    health.record_success(1, MS, Some(MS * 2), now);
    assert_eq!(health.effective_latency(), Some(MS * 2));
}

#[test]
fn a_peer_without_a_known_endpoint_is_not_probed() {
    let now = Instant::now();
    let mut health = PeerHealth::new(now);
    health.disconnected(now);
    assert!(!health.start_probe(now));
    assert_eq!(health.next_probe(), None);
    health.connected(Some("127.0.5.2:5000".parse().unwrap()), now);
    assert!(!health.is_excluded());
}

#[test]
fn one_silent_attempt_excludes_at_once_until_a_probe_answers() {
    let now = Instant::now();
    let mut health = peer(now);
    health.record(Outcome::Silent, now);
    let exclusion = health.exclusion.expect("excluded after one silent attempt");
    assert_eq!((exclusion.reason, exclusion.next_probe), (ExclusionReason::Silent, now + FIRST_PROBE_BACKOFF));
    health.connected(None, now);
    assert!(health.is_excluded(), "a live connection says nothing about a frozen registry");
    assert!(health.start_probe(now + FIRST_PROBE_BACKOFF));
    health.probe_result(true, now + FIRST_PROBE_BACKOFF);
    assert!(!health.is_excluded());
}

#[test]
fn trust_is_earned_by_verified_transfers_and_lost_for_good_by_one_corrupt_one() {
    let now = Instant::now();
    let mut health = peer(now);
    assert!(!health.is_trusted(2), "a new peer is not trusted");
    health.record_verified(now);
    assert!(!health.is_trusted(2));
    health.record_verified(now);
    assert!(health.is_trusted(2));
    assert!(!health.is_trusted(0), "0 turns trust (pass-through) off");

    health.record(Outcome::Corrupt, now);
    assert!(health.is_excluded(), "a corrupt peer is excluded at once");
    assert!(!health.is_trusted(2));
    health.probe_result(true, now + FIRST_PROBE_BACKOFF);
    for _ in 0..10 {
        health.record_verified(now);
    }
    assert!(!health.is_excluded(), "probed back in");
    assert!(!health.is_trusted(2), "but never trusted again");
}

#[test]
fn an_excluded_peer_is_not_trusted_until_it_is_back() {
    let now = Instant::now();
    let mut health = peer(now);
    health.record_verified(now);
    health.record(Outcome::Unreachable, now);
    assert!(!health.is_trusted(1));
    health.probe_result(true, now + FIRST_PROBE_BACKOFF);
    assert!(health.is_trusted(1), "an honest peer keeps its history");
}
