//! What to announce next, and when: the advertisement pipeline's bookkeeping.
//!
//! Owns: for every key, what is wanted (advertised or withdrawn), whether it
//! is queued, in flight, or advertised, its failures, and when it is due
//! again. Pure and synchronous (time is passed in); the pipeline drives it.
//!
//! The rules that make the pipeline safe to feed from anywhere:
//! - a key is queued at most once and in flight at most once;
//! - a key already advertised is not announced again until its
//!   re-advertisement is due: nothing is announced twice;
//! - if what is wanted changes while a key is in flight, the key is queued
//!   again when it lands, so a withdrawal is never overtaken by a provide;
//! - changes go to the urgent queue, re-advertisements to the background
//!   queue; batches take urgent keys first, so a long re-advertisement never
//!   delays a new image;
//! - a failed key is retried with exponential backoff; a re-advertised key is
//!   due again after a jittered fraction of the interval, so keys advertised
//!   together drift apart and nodes do not re-advertise in step.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use rand::RngExt;
#[cfg(test)]
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use crate::oci::Key;

/// A re-advertisement is due after `interval × U(1 - REFRESH_JITTER, 1)`.
const REFRESH_JITTER: f64 = 0.25;
/// The first retry waits this long; each failure doubles it, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Keys' room an empty queue keeps.
const DRAINED_QUEUE_ROOM: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Advertised,
    Withdrawn,
}

/// What to do with a key taken from the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Provide,
    Withdraw,
}

/// Which queue a key joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Urgency {
    /// A change: new content, or a retry.
    Urgent,
    /// A re-advertisement (including the persisted keys at recovery).
    Background,
}

#[derive(Debug)]
struct Entry {
    want: Want,
    /// Whether this process has advertised the key (and not withdrawn it since).
    advertised: bool,
    queued: bool,
    in_flight: bool,
    failures: u32,
    /// When the key is due again (a re-advertisement or a retry).
    due: Option<Instant>,
}

impl Entry {
    fn new(want: Want) -> Self {
        Self { want, advertised: false, queued: false, in_flight: false, failures: 0, due: None }
    }
}

/// Counts for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    /// Queued or in flight.
    pub(super) pending: usize,
    /// Advertised and still wanted.
    pub(super) advertised: usize,
    /// Last attempt failed; waiting for a retry.
    pub(super) failed: usize,
}

/// The pipeline's bookkeeping. See the module documentation for its rules.
pub(super) struct Plan {
    interval: Duration,
    entries: HashMap<Key, Entry>,
    urgent: VecDeque<Key>,
    background: VecDeque<Key>,
    /// `(due, key)` for every entry with `due` set.
    timers: BTreeSet<(Instant, Key)>,
    rng: StdRng,
}

impl Plan {
    pub(super) fn new(interval: Duration) -> Self {
        Self::with_rng(interval, rand::make_rng())
    }

    pub(super) fn with_rng(interval: Duration, rng: StdRng) -> Self {
        let (entries, timers) = (HashMap::new(), BTreeSet::new());
        Self { interval, entries, urgent: VecDeque::new(), background: VecDeque::new(), timers, rng }
    }

    #[cfg(test)]
    pub(super) fn seeded(interval: Duration, seed: u64) -> Self {
        Self::with_rng(interval, StdRng::seed_from_u64(seed))
    }

    /// Wants `keys` advertised. Keys already advertised stay on their schedule.
    pub(super) fn advertise(&mut self, keys: impl IntoIterator<Item = Key>, urgency: Urgency) {
        for key in keys {
            let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry::new(Want::Advertised));
            let was = std::mem::replace(&mut entry.want, Want::Advertised);
            let settled = was == Want::Advertised && entry.advertised && entry.failures == 0;
            if entry.in_flight || entry.queued || settled {
                continue;
            }
            self.clear_timer(&key);
            self.enqueue(key, urgency);
        }
    }

    /// Wants `keys` withdrawn. Keys this process never advertised are forgotten.
    pub(super) fn withdraw(&mut self, keys: impl IntoIterator<Item = Key>) {
        for key in keys {
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            entry.want = Want::Withdrawn;
            let (in_flight, advertised, queued) = (entry.in_flight, entry.advertised, entry.queued);
            if in_flight {
                continue;
            }
            self.clear_timer(&key);
            match (advertised, queued) {
                (true, false) => self.enqueue(key, Urgency::Urgent),
                (true, true) => {}
                (false, _) => {
                    self.entries.remove(&key);
                }
            }
        }
    }

    /// Moves every key whose time has come to its queue: retries to the
    /// urgent queue, re-advertisements to the background queue.
    pub(super) fn release_due(&mut self, now: Instant) {
        while let Some((due, key)) = self.timers.first().cloned() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            entry.due = None;
            let urgency = if entry.failures > 0 { Urgency::Urgent } else { Urgency::Background };
            if !entry.queued && !entry.in_flight {
                self.enqueue(key, urgency);
            }
        }
    }

    /// When the next timer fires, if any.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.timers.first().map(|(due, _)| *due)
    }

    /// Takes up to `max` keys to provide, urgent first, marking them in flight.
    /// Keys to withdraw are returned separately (withdrawal is local and cheap).
    pub(super) fn take(&mut self, max: usize) -> (Vec<Key>, Vec<Key>) {
        let (mut provide, mut withdraw) = (Vec::new(), Vec::new());
        while provide.len() < max {
            let Some(key) = self.urgent.pop_front().or_else(|| self.background.pop_front()) else { break };
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            if !entry.queued {
                continue;
            }
            entry.queued = false;
            entry.in_flight = true;
            match entry.want {
                Want::Advertised => provide.push(key),
                Want::Withdrawn => withdraw.push(key),
            }
        }
        // A full scan queues every key at once; once drained, the queues
        // should not keep that room for the rest of the process's life.
        for queue in [&mut self.urgent, &mut self.background] {
            if queue.is_empty() {
                queue.shrink_to(DRAINED_QUEUE_ROOM);
            }
        }
        (provide, withdraw)
    }

    /// Records how an action on `key` ended.
    pub(super) fn finish(&mut self, key: Key, action: Action, succeeded: bool, now: Instant) {
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.in_flight = false;
        match (action, succeeded) {
            (Action::Provide, true) => {
                entry.advertised = true;
                entry.failures = 0;
            }
            (Action::Provide, false) => entry.failures = entry.failures.saturating_add(1),
            // A withdrawal is local: even when the router is gone, nothing is left to withdraw.
            (Action::Withdraw, _) => {
                entry.advertised = false;
                entry.failures = 0;
            }
        }
        let (want, advertised, failures) = (entry.want, entry.advertised, entry.failures);
        match (want, advertised) {
            (Want::Withdrawn, true) => self.enqueue(key, Urgency::Urgent),
            (Want::Withdrawn, false) => {
                self.entries.remove(&key);
            }
            (Want::Advertised, false) if action == Action::Withdraw => self.enqueue(key, Urgency::Urgent),
            (Want::Advertised, _) => {
                let delay = if failures > 0 { self.backoff(failures) } else { self.refresh_delay() };
                self.set_timer(key, now + delay);
            }
        }
    }

    pub(super) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for entry in self.entries.values() {
            counts.pending += usize::from(entry.queued || entry.in_flight);
            counts.advertised += usize::from(entry.want == Want::Advertised && entry.advertised);
            counts.failed += usize::from(entry.want == Want::Advertised && entry.failures > 0 && !entry.in_flight);
        }
        counts
    }

    /// Whether anything is queued.
    pub(super) fn has_queued(&self) -> bool {
        !self.urgent.is_empty() || !self.background.is_empty()
    }

    fn enqueue(&mut self, key: Key, urgency: Urgency) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.queued = true;
            match urgency {
                Urgency::Urgent => self.urgent.push_back(key),
                Urgency::Background => self.background.push_back(key),
            }
        }
    }

    fn set_timer(&mut self, key: Key, due: Instant) {
        self.clear_timer(&key);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.due = Some(due);
            self.timers.insert((due, key));
        }
    }

    fn clear_timer(&mut self, key: &Key) {
        if let Some(due) = self.entries.get_mut(key).and_then(|e| e.due.take()) {
            self.timers.remove(&(due, key.clone()));
        }
    }

    fn refresh_delay(&mut self) -> Duration {
        self.interval.mul_f64(self.rng.random_range((1.0 - REFRESH_JITTER)..=1.0))
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let exponential = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
        exponential.min(MAX_BACKOFF).mul_f64(self.rng.random_range(0.8..=1.2))
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
