//! The providers of one key, as the router streams them in, and which of
//! them this request has already tried. Excluded peers are never handed
//! out: when every provider found is excluded or tried, the request waits
//! for the router only while it may still find more. A request that resumes
//! a blob passed straight through takes trusted providers only.

use std::collections::HashSet;
use std::sync::Arc;
use tokio::time::Instant;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::select::PeerScores;
use crate::routing::{Peer, PeerName};

/// Hands out untried providers by weighted random choice, waiting for the
/// router only when every provider found so far has been tried.
pub struct Candidates {
    providers: BoxStream<'static, Peer>,
    found: Vec<Peer>,
    tried: HashSet<PeerName>,
    exhausted: bool,
    scores: Arc<PeerScores>,
    /// Hand out only peers trusted after this many verified transfers.
    trusted_after: Option<u32>,
    started: Instant,
    /// How long the first provider took to arrive, once it has.
    pub first_found: Option<std::time::Duration>,
}

impl Candidates {
    pub fn new(providers: BoxStream<'static, Peer>, scores: Arc<PeerScores>) -> Self {
        Self {
            providers,
            found: Vec::new(),
            tried: HashSet::new(),
            exhausted: false,
            scores,
            trusted_after: None,
            started: Instant::now(),
            first_found: None,
        }
    }

    /// From now on, hand out only peers trusted after `after` verified transfers.
    pub fn trusted_only(&mut self, after: u32) {
        self.trusted_after = Some(after);
    }

    fn eligible(&self, peer: &Peer) -> bool {
        !self.tried.contains(&peer.name)
            && self.trusted_after.is_none_or(|after| self.scores.is_trusted(&peer.name, after))
    }

    /// The next provider to try, or `None` when no untried one is left.
    pub async fn next(&mut self) -> Option<Peer> {
        loop {
            self.take_ready();
            let untried: Vec<Peer> = self.found.iter().filter(|p| self.eligible(p)).cloned().collect();
            if let Some(i) = self.scores.choose(&untried, &mut rand::rng()) {
                let peer = untried[i].clone();
                self.tried.insert(peer.name.clone());
                return Some(peer);
            }
            if self.exhausted {
                return None;
            }
            match self.providers.next().await {
                Some(peer) => self.add(peer),
                None => self.exhausted = true,
            }
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
            self.found.push(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> Peer {
        Peer { name: PeerName::new(format!("p{i}")), endpoint: ([127, 0, 0, i], 5000).into() }
    }

    #[tokio::test]
    async fn every_provider_is_tried_once_then_none() {
        let scores = Arc::new(PeerScores::new());
        let stream = futures::stream::iter(vec![peer(1), peer(2), peer(1), peer(3)]).boxed();
        let mut candidates = Candidates::new(stream, scores.clone());
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
        let scores = Arc::new(PeerScores::new());
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(peer(1)).ok();
        let mut candidates = Candidates::new(rx.boxed(), scores.clone());
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(1).name));
        tx.unbounded_send(peer(2)).ok();
        drop(tx);
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }

    #[tokio::test]
    async fn excluded_providers_are_skipped() {
        let scores = Arc::new(PeerScores::new());
        scores.record(&peer(1), crate::mirror::health::Outcome::Unreachable);
        let stream = futures::stream::iter(vec![peer(1), peer(2)]).boxed();
        let mut candidates = Candidates::new(stream, scores.clone());
        assert_eq!(candidates.next().await.map(|p| p.name), Some(peer(2).name));
        assert_eq!(candidates.next().await, None);
    }
}
