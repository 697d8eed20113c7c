//! The bookkeeping of one request's attempts: which peer next, the cap on
//! attempts (hedges included), and recording each outcome in peer health,
//! the hedge timer and the metrics.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use super::Miss;
use super::candidates::{Candidates, Judges};
use super::client::FetchError;
use super::health::Outcome;
use super::race::{AttemptSource, Winner};
use crate::oci::{Key, PathKind};
use crate::routing::Peer;

pub(super) struct Attempts {
    inner: Arc<Inner>,
    candidates: Candidates,
    key: Key,
    kind: PathKind,
    tried: usize,
    resolve_recorded: bool,
}

impl Attempts {
    pub(super) fn new(inner: Arc<Inner>, key: Key, kind: PathKind) -> Self {
        let providers = inner.router.lookup(&key, inner.config.lookup_limit);
        let judges = Judges { scores: inner.scores.clone(), stale: inner.stale.clone() };
        let candidates = Candidates::new(providers, judges, key.clone(), inner.config.lookup_patience);
        Self { inner, candidates, key, kind, tried: 0, resolve_recorded: false }
    }

    /// From now on, only peers trusted after `after` verified transfers are tried.
    pub(super) fn trusted_only(&mut self, after: u32) {
        self.candidates.trusted_only(after);
    }

    /// The hedge deadline for this request's next race.
    pub(super) fn hedge_after(&self) -> Option<Duration> {
        let deadline = self.inner.hedge.deadline();
        if let Some(deadline) = deadline {
            self.inner.metrics.set_hedge_deadline(deadline);
        }
        deadline
    }

    /// How long each attempt of this request's next race may wait for headers.
    pub(super) fn header_timeout(&self) -> Duration {
        self.inner.hedge.header_timeout()
    }

    /// Headers arrived: feeds the hedge window.
    pub(super) fn won(&self, winner: &Winner) {
        self.inner.hedge.record(winner.latency);
        if winner.hedged {
            self.inner.metrics.hedge_won();
        }
    }

    /// The transfer from the winner completed with `bytes` of body.
    pub(super) fn succeeded(&self, winner: &Winner, bytes: u64) {
        let elapsed = winner.started.elapsed();
        self.inner.scores.record_success(&winner.peer, bytes, elapsed, Some(winner.latency));
        self.inner.metrics.observe_peer_fetch(self.kind, elapsed);
    }

    /// Records `outcome` in peer health; a peer it excludes is also taken
    /// out of routing, so no lookup waits on it either.
    fn record(&self, peer: &Peer, outcome: Outcome) {
        let scores = &self.inner.scores;
        let was_excluded = scores.is_excluded(&peer.name);
        scores.record(peer, outcome);
        if !was_excluded && scores.is_excluded(&peer.name) {
            self.inner.router.peer_unresponsive(&peer.name);
        }
    }

    /// A blob `peer` sent (all of it or a part) matched its digest.
    pub(super) fn verified(&self, peer: &Peer) {
        self.inner.scores.record_verified(&peer.name);
    }

    pub(super) fn miss(&self) -> Miss {
        Miss { key: self.key.clone(), attempts: self.tried }
    }
}

impl AttemptSource for Attempts {
    fn can_start(&self) -> bool {
        self.tried < self.inner.config.max_attempts
    }

    async fn next(&mut self) -> Option<Peer> {
        if !self.can_start() {
            return None;
        }
        let peer = self.candidates.next().await?;
        if !self.resolve_recorded
            && let Some(elapsed) = self.candidates.first_found
        {
            self.inner.metrics.observe_resolve(elapsed);
            self.resolve_recorded = true;
        }
        self.tried += 1;
        Some(peer)
    }

    fn failed(&mut self, peer: &Peer, error: &FetchError) {
        tracing::debug!(peer = %peer.name, endpoint = %peer.endpoint, key = %self.key, %error, "peer attempt failed");
        self.inner.metrics.peer_fetch_failed(error.reason());
        if matches!(error, FetchError::NotFound) {
            self.inner.stale.insert(&peer.name, &self.key, tokio::time::Instant::now());
        }
        if let Some(outcome) = error.health_outcome() {
            self.record(peer, outcome);
        }
    }

    fn hedged(&mut self) {
        self.inner.metrics.hedge_started();
    }

    fn outrun(&mut self, peer: &Peer, silent_for: Duration) {
        tracing::debug!(peer = %peer.name, key = %self.key, ?silent_for, "peer outrun by a hedge");
        self.record(peer, Outcome::Failed);
    }
}
