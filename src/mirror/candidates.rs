//! The providers of one key, as the router streams them in, and which of
//! them this request has already tried. Excluded peers, and peers that
//! recently answered 404 for this key (`stale`), are never handed out. A
//! request that resumes a blob passed straight through takes trusted
//! providers only.
//!
//! When every provider found is excluded or tried, the request waits for
//! the router only a short patience after the latest provider arrived: the
//! router's first answers carry nearly all providers (every record holder
//! stores the same set), so a lookup still running by then is waiting on
//! slow or dead nodes, not about to find a healthy provider.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::select::PeerScores;
use super::stale::StaleRecords;
use crate::oci::Key;
use crate::routing::{Peer, PeerName};

/// What a provider is judged by: its health, and whether it recently
/// answered 404 for the key.
#[derive(Clone)]
pub struct Judges {
    pub scores: Arc<PeerScores>,
    pub stale: Arc<StaleRecords>,
}

/// Hands out untried providers by weighted random choice, waiting for the
/// router only when every provider found so far has been tried.
pub struct Candidates {
    providers: BoxStream<'static, Peer>,
    found: Vec<Peer>,
    tried: HashSet<PeerName>,
    exhausted: bool,
    judges: Judges,
    key: Key,
    patience: Duration,
    /// Hand out only peers trusted after this many verified transfers.
    trusted_after: Option<u32>,
    started: Instant,
    /// When the latest new provider arrived.
    last_found: Option<Instant>,
    /// How long the first provider took to arrive, once it has.
    pub first_found: Option<Duration>,
}

impl Candidates {
    pub fn new(providers: BoxStream<'static, Peer>, judges: Judges, key: Key, patience: Duration) -> Self {
        Self {
            providers,
            found: Vec::new(),
            tried: HashSet::new(),
            exhausted: false,
            judges,
            key,
            patience,
            trusted_after: None,
            started: Instant::now(),
            last_found: None,
            first_found: None,
        }
    }

    /// From now on, hand out only peers trusted after `after` verified transfers.
    pub fn trusted_only(&mut self, after: u32) {
        self.trusted_after = Some(after);
    }

    fn eligible(&self, peer: &Peer) -> bool {
        !self.tried.contains(&peer.name)
            && self.trusted_after.is_none_or(|after| self.judges.scores.is_trusted(&peer.name, after))
    }

    /// The next provider to try, or `None` when no untried one is left.
    pub async fn next(&mut self) -> Option<Peer> {
        loop {
            self.take_ready();
            let untried: Vec<Peer> = self.found.iter().filter(|p| self.eligible(p)).cloned().collect();
            if let Some(i) = self.judges.scores.choose(&untried, &mut rand::rng()) {
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
            self.judges.scores.observe(&peer);
            if self.judges.stale.contains(&peer.name, &self.key, Instant::now()) {
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
    use crate::mirror::health::Outcome;

    const PATIENCE: Duration = Duration::from_millis(300);

    fn peer(i: u8) -> Peer {
        Peer { name: PeerName::new(format!("p{i}")), endpoint: ([127, 0, 0, i], 5000).into() }
    }

    fn key() -> Key {
        Key::Digest(format!("sha256:{}", "ab".repeat(32)).parse().unwrap())
    }

    fn judges() -> Judges {
        Judges { scores: Arc::new(PeerScores::new()), stale: Arc::new(StaleRecords::default()) }
    }

    fn candidates(providers: BoxStream<'static, Peer>, judges: &Judges) -> Candidates {
        Candidates::new(providers, judges.clone(), key(), PATIENCE)
    }

    #[tokio::test]
    async fn every_provider_is_tried_once_then_none() {
        let stream = futures::stream::iter(vec![peer(1), peer(2), peer(1), peer(3)]).boxed();
        let mut candidates = candidates(stream, &judges());
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
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(peer(1)).ok();
        let mut candidates = candidates(rx.boxed(), &judges());
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(1).name));
        tx.unbounded_send(peer(2)).ok();
        drop(tx);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_provider_unusable_the_router_is_waited_for_only_the_patience() {
        let judges = judges();
        judges.scores.record(&peer(1), Outcome::Unreachable);
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(peer(1)).ok();
        let mut candidates = candidates(rx.boxed(), &judges);
        let started = Instant::now();
        assert_eq!(candidates.next().await, None, "the router still searches, but only the excluded peer is known");
        assert_eq!(started.elapsed(), PATIENCE);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_provider_yet_the_router_is_waited_for_however_long_it_takes() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut candidates = candidates(rx.boxed(), &judges());
        let late = async {
            tokio::time::sleep(PATIENCE * 5).await;
            tx.unbounded_send(peer(2)).ok();
        };
        let (next, ()) = tokio::join!(candidates.next(), late);
        assert_eq!(next.map(|p| p.name), Some(peer(2).name));
    }

    #[tokio::test]
    async fn excluded_providers_are_skipped() {
        let judges = judges();
        judges.scores.record(&peer(1), Outcome::Unreachable);
        let stream = futures::stream::iter(vec![peer(1), peer(2)]).boxed();
        let mut candidates = candidates(stream, &judges);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }

    #[tokio::test]
    async fn a_provider_that_just_answered_404_for_the_key_is_skipped() {
        let judges = judges();
        judges.stale.insert(&peer(1).name, &key(), Instant::now());
        let stream = futures::stream::iter(vec![peer(1), peer(2)]).boxed();
        let mut candidates = candidates(stream, &judges);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }
}
