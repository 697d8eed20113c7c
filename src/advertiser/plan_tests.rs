#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::oci::Digest;

const INTERVAL: Duration = Duration::from_secs(300);

fn key(n: u32) -> Key {
    Key::Digest(Digest::of(format!("key {n}").as_bytes()))
}

fn keys(range: std::ops::Range<u32>) -> Vec<Key> {
    range.map(key).collect()
}

fn plan() -> Plan {
    Plan::seeded(INTERVAL, 7)
}

/// Takes everything queued and lands it with `succeeded`.
fn run_all(plan: &mut Plan, succeeded: bool, now: Instant) -> (Vec<Key>, Vec<Key>) {
    let (provide, withdraw) = plan.take(usize::MAX);
    for key in &provide {
        plan.finish(key.clone(), Action::Provide, succeeded, now);
    }
    for key in &withdraw {
        plan.finish(key.clone(), Action::Withdraw, true, now);
    }
    (provide, withdraw)
}

#[test]
fn batches_take_urgent_keys_before_background_ones() {
    let mut plan = plan();
    plan.advertise(keys(0..5), Urgency::Background);
    plan.advertise(keys(10..12), Urgency::Urgent);
    let (first, _) = plan.take(3);
    assert_eq!(first, vec![key(10), key(11), key(0)]);
    let (rest, _) = plan.take(10);
    assert_eq!(rest, keys(1..5));
    assert!(!plan.has_queued());
    assert_eq!(plan.counts().pending, 7, "all in flight");
}

#[test]
fn an_advertised_key_is_not_announced_again_until_due() {
    let mut plan = plan();
    let now = Instant::now();
    plan.advertise(keys(0..3), Urgency::Background);
    run_all(&mut plan, true, now);
    plan.advertise(keys(0..3), Urgency::Urgent);
    assert!(!plan.has_queued(), "already advertised: nothing announced twice");
    assert_eq!(plan.counts(), Counts { pending: 0, advertised: 3, failed: 0 });

    let due = plan.next_due().unwrap();
    assert!(due >= now + INTERVAL.mul_f64(0.75) && due <= now + INTERVAL, "{:?}", due - now);
    plan.release_due(now + INTERVAL);
    let (again, _) = run_all(&mut plan, true, now + INTERVAL);
    assert_eq!(again.len(), 3, "each key is advertised again once it is due");
}

#[test]
fn re_advertisements_are_spread_over_a_quarter_of_the_interval() {
    let mut plan = plan();
    let now = Instant::now();
    plan.advertise(keys(0..1000), Urgency::Background);
    run_all(&mut plan, true, now);
    let mut released_per_tenth = Vec::new();
    for tenth in 1..=10 {
        let before = plan.counts().pending;
        plan.release_due(now + INTERVAL.mul_f64(f64::from(tenth) / 10.0));
        released_per_tenth.push(plan.counts().pending - before);
        run_all(&mut plan, true, now + INTERVAL * 2);
    }
    assert_eq!(released_per_tenth[..7].iter().sum::<usize>(), 0, "{released_per_tenth:?}");
    assert_eq!(released_per_tenth.iter().sum::<usize>(), 1000);
    // The last quarter of the interval holds them all; no tenth gets more than half.
    assert!(released_per_tenth[7..].iter().all(|n| *n < 500), "{released_per_tenth:?}");
}

#[test]
fn a_withdrawal_waits_for_the_provide_in_flight_and_then_runs() {
    let mut plan = plan();
    let now = Instant::now();
    plan.advertise([key(1)], Urgency::Urgent);
    let (in_flight, _) = plan.take(10);
    assert_eq!(in_flight, vec![key(1)]);
    plan.withdraw([key(1)]);
    assert!(!plan.has_queued(), "nothing runs beside the key in flight");
    plan.finish(key(1), Action::Provide, true, now);
    let (provide, withdraw) = plan.take(10);
    assert!(provide.is_empty());
    assert_eq!(withdraw, vec![key(1)]);
    plan.finish(key(1), Action::Withdraw, true, now);
    assert_eq!(plan.counts(), Counts::default());
    assert_eq!(plan.next_due(), None, "a withdrawn key is never re-advertised");
}

#[test]
fn a_key_never_advertised_is_simply_forgotten_when_withdrawn() {
    let mut plan = plan();
    plan.advertise(keys(0..4), Urgency::Background);
    plan.withdraw(keys(0..2));
    plan.withdraw([key(99)]);
    let (provide, withdraw) = plan.take(10);
    assert_eq!(provide, keys(2..4), "the withdrawn keys left the queue");
    assert!(withdraw.is_empty(), "nothing to withdraw: they were never announced");
}

#[test]
fn a_key_wanted_again_after_its_withdrawal_is_advertised_again() {
    let mut plan = plan();
    let now = Instant::now();
    plan.advertise([key(1)], Urgency::Urgent);
    run_all(&mut plan, true, now);
    plan.withdraw([key(1)]);
    let (_, withdraw) = plan.take(10);
    assert_eq!(withdraw, vec![key(1)]);
    plan.advertise([key(1)], Urgency::Urgent);
    plan.finish(key(1), Action::Withdraw, true, now);
    let (provide, _) = plan.take(10);
    assert_eq!(provide, vec![key(1)]);
}

#[test]
fn failures_are_retried_with_growing_backoff_and_counted() {
    let mut plan = plan();
    let now = Instant::now();
    plan.advertise([key(1)], Urgency::Background);
    let mut delays = Vec::new();
    let mut at = now;
    for _ in 0..10 {
        let (provide, _) = plan.take(10);
        assert_eq!(provide, vec![key(1)]);
        plan.finish(key(1), Action::Provide, false, at);
        assert_eq!(plan.counts().failed, 1);
        let due = plan.next_due().unwrap();
        delays.push(due - at);
        at = due;
        plan.release_due(at);
    }
    assert!(delays[0] <= Duration::from_millis(1200), "{delays:?}");
    assert!(delays[3] >= Duration::from_millis(6400), "{delays:?}");
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(72)), "{delays:?}");
    let (provide, _) = plan.take(10);
    plan.finish(provide[0].clone(), Action::Provide, true, at);
    assert_eq!(plan.counts(), Counts { pending: 0, advertised: 1, failed: 0 });
    assert!(plan.next_due().unwrap() >= at + INTERVAL.mul_f64(0.75), "back on the normal schedule");
}

#[test]
fn a_new_request_for_a_failed_key_retries_it_at_once() {
    let mut plan = plan();
    let now = Instant::now();
    plan.advertise([key(1)], Urgency::Urgent);
    run_all(&mut plan, false, now);
    assert!(!plan.has_queued());
    plan.advertise([key(1)], Urgency::Urgent);
    assert_eq!(plan.take(10).0, vec![key(1)]);
}
