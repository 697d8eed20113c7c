//! The providers of one key, as the router streams them in, and which of
//! them this request has already tried. Excluded peers, and peers that
//! recently answered 404 for this key (`stale`), are never handed out. When every provider found is excluded or tried, the request waits
//! for the router only a short patience after the last provider arrived:
//! the router's first answers carry nearly all providers (every record
//! holder stores the same set), so a lookup still running by then is
//! waiting on slow or dead nodes, not about to find a healthy provider.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::select::PeerScores;
use super::stale::StaleRecords;
use crate::oci::Key;
use crate::routing::{Peer, PeerName};

/// What a provider is judged by: its health, and whether it recently
/// answered 404 for the key.
#[derive(Clone, Copy)]
pub struct Judges<'a> {
    pub scores: &'a PeerScores,
    pub stale: &'a StaleRecords,
}

/// Hands out untried providers by weighted random choice, waiting for the
/// router only when every provider found so far has been tried.
pub struct Candidates<'a> {
    providers: BoxStream<'static, Peer>,
    found: Vec<Peer>,
    tried: HashSet<PeerName>,
    exhausted: bool,
    scores: &'a PeerScores,
    stale: &'a StaleRecords,
    key: Key,
    patience: Duration,
    started: Instant,
    /// When the latest new provider arrived.
    last_found: Option<Instant>,
    /// How long the first provider took to arrive, once it has.
    pub first_found: Option<std::time::Duration>,
}

impl<'a> Candidates<'a> {
    pub fn new(providers: BoxStream<'static, Peer>, judges: Judges<'a>, key: Key, patience: Duration) -> Self {
        Self {
            providers,
            found: Vec::new(),
            tried: HashSet::new(),
            exhausted: false,
            scores: judges.scores,
            stale: judges.stale,
            key,
            patience,
            started: Instant::now(),
            last_found: None,
            first_found: None,
        }
    }

    /// The next provider to try, or `None` when no untried one is left.
    pub async fn next(&mut self) -> Option<Peer> {
        loop {
            self.take_ready();
            let untried: Vec<Peer> = self.found.iter().filter(|p| !self.tried.contains(&p.name)).cloned().collect();
            if let Some(i) = self.scores.choose(&untried, &mut rand::rng()) {
                let peer = untried[i].clone();
                self.tried.insert(peer.name.clone());
                return Some(peer);
            }
            if self.exhausted {
                return None;
            }
            match self.wait_for_provider().await {
                Some(peer) => self.add(peer),
                None => self.exhausted = true,
            }
        }
    }

    /// The router's next provider: waited for as long as the router searches
    /// while none is known, and until `patience` after the latest arrival
    /// once some are (and all of them are unusable).
    async fn wait_for_provider(&mut self) -> Option<Peer> {
        match self.last_found {
            None => self.providers.next().await,
            Some(at) => tokio::time::timeout_at(at + self.patience, self.providers.next()).await.ok().flatten(),
        }
    }

    /// Takes every provider that has already arrived, without waiting.
    fn take_ready(&mut self) {
        while !self.exhausted {
            match self.providers.next().now_or_never() {
                Some(Some(peer)) => self.add(peer),
                Some(None) => self.exhausted = true,
                None => break,
            }
        }
    }

    fn add(&mut self, peer: Peer) {
        if self.first_found.is_none() {
            self.first_found = Some(self.started.elapsed());
        }
        if !self.found.iter().any(|p| p.name == peer.name) {
            self.scores.observe(&peer);
            if self.stale.contains(&peer.name, &self.key, Instant::now()) {
                // Counts as tried: it said it lacks the key a moment ago.
                self.tried.insert(peer.name.clone());
            }
            self.found.push(peer);
            self.last_found = Some(Instant::now());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_millis(300);

    fn judges<'a>(scores: &'a PeerScores, stale: &'a StaleRecords) -> Judges<'a> {
        Judges { scores, stale }
    }

    fn key() -> Key {
        Key::Digest(format!("sha256:{}", "ab".repeat(32)).parse().unwrap())
    }

    #[tokio::test]
    async fn a_provider_that_just_answered_404_for_the_key_is_skipped() {
        let scores = PeerScores::new();
        let stale = StaleRecords::default();
        stale.insert(&peer(1).name, &key(), Instant::now());
        let stream = futures::stream::iter(vec![peer(1), peer(2)]).boxed();
        let mut candidates = Candidates::new(stream, judges(&scores, &stale), key(), PATIENCE);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }

    fn peer(i: u8) -> Peer {
        Peer { name: PeerName::new(format!("p{i}")), endpoint: ([127, 0, 0, i], 5000).into() }
    }

    #[tokio::test]
    async fn every_provider_is_tried_once_then_none() {
        let scores = PeerScores::new();
        let stale = StaleRecords::default();
        let stream = futures::stream::iter(vec![peer(1), peer(2), peer(1), peer(3)]).boxed();
        let mut candidates = Candidates::new(stream, judges(&scores, &stale), key(), PATIENCE);
        let mut seen = Vec::new();
        while let Some(p) = candidates.next().await {
            seen.push(p.name.to_string());
        }
        seen.sort();
        assert_eq!(seen, ["p1", "p2", "p3"]);
        assert!(candidates.first_found.is_some());
    }

    #[tokio::test]
    async fn a_late_provider_is_waited_for_only_when_needed() {
        let scores = PeerScores::new();
        let stale = StaleRecords::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(peer(1)).ok();
        let mut candidates = Candidates::new(rx.boxed(), judges(&scores, &stale), key(), PATIENCE);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(1).name));
        tx.unbounded_send(peer(2)).ok();
        drop(tx);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_provider_unusable_the_router_is_waited_for_only_the_patience() {
        let scores = PeerScores::new();
        let stale = StaleRecords::default();
        scores.record(&peer(1), crate::mirror::health::Outcome::Unreachable);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(peer(1)).ok();
        let mut candidates = Candidates::new(rx.boxed(), judges(&scores, &stale), key(), PATIENCE);
        let started = Instant::now();
        assert_eq!(candidates.next().await, None, "the router still searches, but only the excluded peer is known");
        assert_eq!(started.elapsed(), PATIENCE);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_provider_yet_the_router_is_waited_for_however_long_it_takes() {
        let scores = PeerScores::new();
        let stale = StaleRecords::default();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut candidates = Candidates::new(rx.boxed(), judges(&scores, &stale), key(), PATIENCE);
        let late = async {
            tokio::time::sleep(PATIENCE * 5).await;
            tx.unbounded_send(peer(2)).ok();
        };
        let (next, ()) = tokio::join!(candidates.next(), late);
        assert_eq!(next.map(|p| p.name), Some(peer(2).name));
    }

    #[tokio::test]
    async fn excluded_providers_are_skipped() {
        let scores = PeerScores::new();
        let stale = StaleRecords::default();
        scores.record(&peer(1), crate::mirror::health::Outcome::Unreachable);
        let stream = futures::stream::iter(vec![peer(1), peer(2)]).boxed();
        let mut candidates = Candidates::new(stream, judges(&scores, &stale), key(), PATIENCE);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }
}
