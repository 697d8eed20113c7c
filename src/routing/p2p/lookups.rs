//! The provider lookups in flight, and when each one is done.
//!
//! Owns: per lookup, the peers already streamed (no repeats, never this
//! node), the providers whose address is not known yet (waiting for identify
//! after a dial), and the end conditions: `limit` peers sent, the caller gone,
//! the deadline passed, or the query over with nothing left to resolve.
//! Knows nothing of the swarm; `Id` is Kademlia's query id in production.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::addresses::AddressBook;
use crate::routing::{Peer, PeerName};

struct Lookup {
    limit: usize,
    deadline: Instant,
    results: mpsc::UnboundedSender<Peer>,
    sent: HashSet<PeerId>,
    unresolved: HashSet<PeerId>,
    query_done: bool,
}

impl Lookup {
    /// Streams `peer` if its endpoint is known; returns it if it must be dialled first.
    fn offer(&mut self, peer: PeerId, book: &AddressBook) -> Option<PeerId> {
        if self.sent.contains(&peer) || self.sent.len() >= self.limit {
            return None;
        }
        let Some(endpoint) = book.endpoint(&peer) else {
            return self.unresolved.insert(peer).then_some(peer);
        };
        self.unresolved.remove(&peer);
        if self.results.send(Peer { name: PeerName::new(peer.to_string()), endpoint }).is_ok() {
            self.sent.insert(peer);
        }
        None
    }

    fn is_done(&self, now: Instant) -> bool {
        self.sent.len() >= self.limit
            || self.results.is_closed()
            || now >= self.deadline
            || (self.query_done && self.unresolved.is_empty())
    }
}

/// A lookup that just ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Ended<Id> {
    pub(super) id: Id,
    /// Whether its query is still running and should be finished.
    pub(super) query_running: bool,
}

/// Every lookup in flight, by query id.
pub(super) struct Lookups<Id> {
    local: PeerId,
    active: HashMap<Id, Lookup>,
}

impl<Id: Hash + Eq + Copy> Lookups<Id> {
    pub(super) fn new(local: PeerId) -> Self {
        Self { local, active: HashMap::new() }
    }

    pub(super) fn start(&mut self, id: Id, limit: usize, deadline: Instant, results: mpsc::UnboundedSender<Peer>) {
        let lookup =
            Lookup { limit, deadline, results, sent: HashSet::new(), unresolved: HashSet::new(), query_done: false };
        self.active.insert(id, lookup);
    }

    /// Providers reported for lookup `id`. Returns those to dial: their
    /// endpoint is unknown until they are connected and identified.
    pub(super) fn found(
        &mut self,
        id: Id,
        providers: impl IntoIterator<Item = PeerId>,
        book: &AddressBook,
    ) -> Vec<PeerId> {
        let Some(lookup) = self.active.get_mut(&id) else {
            return Vec::new();
        };
        providers.into_iter().filter(|p| *p != self.local).filter_map(|p| lookup.offer(p, book)).collect()
    }

    /// `peer` identified itself: streamed if it announced a usable
    /// address; otherwise no longer waited for.
    pub(super) fn resolved(&mut self, peer: PeerId, book: &AddressBook) {
        for lookup in self.active.values_mut() {
            if !lookup.unresolved.contains(&peer) {
                continue;
            }
            if book.endpoint(&peer).is_some() {
                lookup.offer(peer, book);
            } else {
                lookup.unresolved.remove(&peer);
            }
        }
    }

    /// `peer` could not be reached: stop waiting for its address.
    pub(super) fn unreachable(&mut self, peer: PeerId) {
        for lookup in self.active.values_mut() {
            lookup.unresolved.remove(&peer);
        }
    }

    /// The query behind lookup `id` has ended.
    pub(super) fn query_finished(&mut self, id: Id) {
        if let Some(lookup) = self.active.get_mut(&id) {
            lookup.query_done = true;
        }
    }

    /// Removes the lookups that are done; dropping one ends its caller's stream.
    pub(super) fn take_ended(&mut self, now: Instant) -> Vec<Ended<Id>> {
        let ended: Vec<Ended<Id>> = self
            .active
            .iter()
            .filter(|(_, lookup)| lookup.is_done(now))
            .map(|(id, lookup)| Ended { id: *id, query_running: !lookup.query_done })
            .collect();
        for end in &ended {
            self.active.remove(&end.id);
        }
        ended
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use libp2p::Multiaddr;

    use super::*;
    use crate::routing::p2p::addresses::EndpointRule;

    struct Fixture {
        lookups: Lookups<u32>,
        book: AddressBook,
        local: PeerId,
        now: Instant,
    }

    impl Fixture {
        fn new() -> Self {
            let local = PeerId::random();
            let book = AddressBook::new(EndpointRule::new("127.0.0.1".parse().unwrap(), 5000));
            Self { lookups: Lookups::new(local), book, local, now: Instant::now() }
        }

        fn start(&mut self, id: u32, limit: usize) -> mpsc::UnboundedReceiver<Peer> {
            let (tx, rx) = mpsc::unbounded_channel();
            self.lookups.start(id, limit, self.now + Duration::from_secs(3), tx);
            rx
        }

        fn known_peer(&mut self, n: u8) -> PeerId {
            let peer = PeerId::random();
            self.identify(peer, n);
            peer
        }

        fn identify(&mut self, peer: PeerId, n: u8) {
            let addr: Multiaddr = format!("/ip4/127.0.0.{n}/tcp/4001").parse().unwrap();
            self.book.learn_from_identify(peer, &[addr]);
        }
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Peer>) -> Vec<Peer> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn streams_known_providers_once_and_never_this_node() {
        let mut f = Fixture::new();
        let mut rx = f.start(1, 10);
        let a = f.known_peer(2);
        assert!(f.lookups.found(1, [a, f.local, a], &f.book).is_empty());
        assert!(f.lookups.found(1, [a], &f.book).is_empty());
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].name.as_str(), a.to_string());
        assert_eq!(sent[0].endpoint, "127.0.0.2:5000".parse().unwrap());
    }

    #[test]
    fn ends_at_the_limit_with_the_query_still_running() {
        let mut f = Fixture::new();
        let mut rx = f.start(1, 2);
        let peers = [f.known_peer(2), f.known_peer(3), f.known_peer(4)];
        f.lookups.found(1, peers, &f.book);
        assert_eq!(drain(&mut rx).len(), 2);
        assert_eq!(f.lookups.take_ended(f.now), vec![Ended { id: 1, query_running: true }]);
        assert_eq!(f.lookups.len(), 0);
    }

    #[test]
    fn unknown_providers_are_dialled_and_streamed_once_identified() {
        let mut f = Fixture::new();
        let mut rx = f.start(1, 10);
        let stranger = PeerId::random();
        assert_eq!(f.lookups.found(1, [stranger], &f.book), vec![stranger]);
        assert!(f.lookups.found(1, [stranger], &f.book).is_empty(), "dialled once");
        f.lookups.query_finished(1);
        assert!(f.lookups.take_ended(f.now).is_empty(), "still waiting for the stranger's address");
        f.identify(stranger, 9);
        f.lookups.resolved(stranger, &f.book);
        assert_eq!(drain(&mut rx)[0].endpoint, "127.0.0.9:5000".parse().unwrap());
        assert_eq!(f.lookups.take_ended(f.now), vec![Ended { id: 1, query_running: false }]);
    }

    #[test]
    fn an_unreachable_provider_no_longer_holds_the_lookup_open() {
        let mut f = Fixture::new();
        let _rx = f.start(1, 10);
        let stranger = PeerId::random();
        f.lookups.found(1, [stranger], &f.book);
        f.lookups.query_finished(1);
        f.lookups.unreachable(stranger);
        assert_eq!(f.lookups.take_ended(f.now).len(), 1);
    }

    #[test]
    fn a_provider_identified_without_a_usable_address_no_longer_holds_the_lookup_open() {
        let mut f = Fixture::new();
        let mut rx = f.start(1, 10);
        let stranger = PeerId::random();
        f.lookups.found(1, [stranger], &f.book);
        f.lookups.query_finished(1);
        let unusable: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        f.book.learn_from_identify(stranger, &[unusable]);
        f.lookups.resolved(stranger, &f.book);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(f.lookups.take_ended(f.now), vec![Ended { id: 1, query_running: false }]);
    }

    #[test]
    fn ends_at_the_deadline_or_when_the_caller_is_gone() {
        let mut f = Fixture::new();
        let _kept = f.start(1, 10);
        drop(f.start(2, 10));
        assert_eq!(f.lookups.take_ended(f.now), vec![Ended { id: 2, query_running: true }]);
        assert_eq!(f.lookups.take_ended(f.now + Duration::from_secs(3)), vec![Ended { id: 1, query_running: true }]);
    }
}
