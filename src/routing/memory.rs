//! An in-process fake of the peer network, for tests.
//!
//! Owns: a shared provider table (`MemoryNetwork`) and per-peer handles
//! (`MemoryRouter`) that implement [`Router`] with the same observable
//! semantics as the DHT: a lookup never returns the asking node, never
//! repeats a peer and stops after `limit` peers. Unlike the DHT, a withdrawal
//! takes effect at once (there are no remote records to expire).
//!
//! Also offers knobs the DHT cannot turn on demand: a router can be made not
//! ready, or made to refuse provides, and a peer's connections can be cut
//! and restored (every other member's [`Links`] sees it at once). Members
//! start connected to each other.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use super::{Error, LinkEvent, Links, Peer, PeerName, Router};
use crate::oci::Key;

/// The shared network: who provides what, and each member's test switches.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    // A std mutex: it is never held across an await.
    state: Arc<Mutex<NetworkState>>,
}

#[derive(Default)]
struct NetworkState {
    members: HashMap<PeerName, Member>,
    /// Providers per key, in the order they advertised.
    providers: HashMap<Key, Vec<Peer>>,
}

struct Member {
    endpoint: std::net::SocketAddr,
    ready: bool,
    refuse_provides: bool,
    connected: bool,
    links: Links,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins `peer` to the network (ready, accepting provides, connected to
    /// every connected member) and returns its router.
    pub fn router(&self, peer: Peer) -> MemoryRouter {
        let links = Links::new();
        let member = Member {
            endpoint: peer.endpoint,
            ready: true,
            refuse_provides: false,
            connected: true,
            links: links.clone(),
        };
        let others: Vec<(PeerName, std::net::SocketAddr, Links)> = {
            let mut state = self.lock();
            state.members.insert(peer.name.clone(), member);
            state
                .members
                .iter()
                .filter(|(name, m)| **name != peer.name && m.connected)
                .map(|(name, m)| (name.clone(), m.endpoint, m.links.clone()))
                .collect()
        };
        for (name, endpoint, their_links) in others {
            links.record(LinkEvent::Up { peer: name, endpoint: Some(endpoint) });
            their_links.record(LinkEvent::Up { peer: peer.name.clone(), endpoint: Some(peer.endpoint) });
        }
        MemoryRouter { network: self.clone(), peer }
    }

    /// Cuts every connection to `peer`, as when its process dies: every other
    /// member's links report it down at once. Its provider records stay, as
    /// a dead node's records stay in the DHT until they expire.
    pub fn disconnect(&self, peer: &PeerName) {
        self.set_connected(peer, false);
    }

    /// Restores `peer`'s connections to every other connected member.
    pub fn reconnect(&self, peer: &PeerName) {
        self.set_connected(peer, true);
    }

    /// Reports a ping result from every other member to `peer`: `Some(rtt)`
    /// for an answer, `None` for a timeout.
    pub fn ping(&self, peer: &PeerName, rtt: Option<std::time::Duration>) {
        let event = match rtt {
            Some(rtt) => LinkEvent::Rtt { peer: peer.clone(), rtt },
            None => LinkEvent::PingFailed { peer: peer.clone() },
        };
        for links in self.others(peer) {
            links.record(event.clone());
        }
    }

    fn set_connected(&self, peer: &PeerName, connected: bool) {
        let (own_links, others) = {
            let mut state = self.lock();
            let Some(member) = state.members.get_mut(peer) else { return };
            if member.connected == connected {
                return;
            }
            member.connected = connected;
            let own = member.links.clone();
            let others: Vec<(PeerName, std::net::SocketAddr, Links)> = state
                .members
                .iter()
                .filter(|(name, m)| *name != peer && m.connected)
                .map(|(name, m)| (name.clone(), m.endpoint, m.links.clone()))
                .collect();
            (own, others)
        };
        let endpoint = self.lock().members.get(peer).map(|m| m.endpoint);
        // Observers run outside the network lock.
        for (name, their_endpoint, their_links) in others {
            if connected {
                their_links.record(LinkEvent::Up { peer: peer.clone(), endpoint });
                own_links.record(LinkEvent::Up { peer: name, endpoint: Some(their_endpoint) });
            } else {
                their_links.record(LinkEvent::Down { peer: peer.clone() });
                own_links.record(LinkEvent::Down { peer: name });
            }
        }
    }

    /// The links of every connected member but `peer`.
    fn others(&self, peer: &PeerName) -> Vec<Links> {
        let state = self.lock();
        state.members.iter().filter(|(name, m)| *name != peer && m.connected).map(|(_, m)| m.links.clone()).collect()
    }

    /// Every peer currently providing `key`, in advertising order.
    pub fn providers(&self, key: &Key) -> Vec<Peer> {
        self.lock().providers.get(key).cloned().unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        // A panic in another test thread must not hide this test's result.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One member's view of the [`MemoryNetwork`].
#[derive(Clone)]
pub struct MemoryRouter {
    network: MemoryNetwork,
    peer: Peer,
}

impl MemoryRouter {
    /// The peer this router speaks for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Makes [`Router::is_ready`] answer `ready`.
    pub fn set_ready(&self, ready: bool) {
        self.with_member(|m| m.ready = ready);
    }

    /// While set, [`Router::provide`] fails as if the local store refused the key.
    pub fn refuse_provides(&self, refuse: bool) {
        self.with_member(|m| m.refuse_provides = refuse);
    }

    /// The keys this router currently provides, sorted.
    pub fn provided_keys(&self) -> Vec<Key> {
        let state = self.network.lock();
        let keys: BTreeSet<&Key> = state
            .providers
            .iter()
            .filter(|(_, peers)| peers.iter().any(|p| p.name == self.peer.name))
            .map(|(key, _)| key)
            .collect();
        keys.into_iter().cloned().collect()
    }

    fn with_member(&self, change: impl FnOnce(&mut Member)) {
        if let Some(member) = self.network.lock().members.get_mut(&self.peer.name) {
            change(member);
        }
    }

    fn member_flag(&self, flag: impl FnOnce(&Member) -> bool) -> bool {
        self.network.lock().members.get(&self.peer.name).is_some_and(flag)
    }
}

#[async_trait]
impl Router for MemoryRouter {
    fn is_ready(&self) -> bool {
        self.member_flag(|m| m.ready)
    }

    fn lookup(&self, key: &Key, limit: usize) -> BoxStream<'static, Peer> {
        let mut seen = HashSet::new();
        let found: Vec<Peer> = self
            .network
            .providers(key)
            .into_iter()
            .filter(|p| p.name != self.peer.name && seen.insert(p.name.clone()))
            .take(limit)
            .collect();
        stream::iter(found).boxed()
    }

    async fn provide(&self, key: &Key) -> Result<(), Error> {
        if self.member_flag(|m| m.refuse_provides) {
            return Err(Error::Provide { key: key.clone(), reason: "refused by the test".into() });
        }
        let mut state = self.network.lock();
        let peers = state.providers.entry(key.clone()).or_default();
        if !peers.iter().any(|p| p.name == self.peer.name) {
            peers.push(self.peer.clone());
        }
        Ok(())
    }

    async fn withdraw(&self, key: &Key) -> Result<(), Error> {
        let mut state = self.network.lock();
        if let Some(peers) = state.providers.get_mut(key) {
            peers.retain(|p| p.name != self.peer.name);
            if peers.is_empty() {
                state.providers.remove(key);
            }
        }
        Ok(())
    }

    fn connected_peers(&self) -> usize {
        self.links().connected().len()
    }

    fn links(&self) -> Links {
        self.network.lock().members.get(&self.peer.name).map(|m| m.links.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::routing::contract::{ContractNode, router_contract};
    use std::time::Duration;

    fn peer(n: u8) -> Peer {
        Peer { name: PeerName::new(format!("peer-{n}")), endpoint: ([127, 0, 0, n], 5000).into() }
    }

    fn nodes(count: u8) -> (MemoryNetwork, Vec<ContractNode<MemoryRouter>>) {
        let network = MemoryNetwork::new();
        let nodes = (1..=count).map(|n| ContractNode { peer: peer(n), router: network.router(peer(n)) }).collect();
        (network, nodes)
    }

    #[tokio::test]
    async fn memory_routers_pass_the_router_contract() {
        for count in [2, 3, 5] {
            let (_network, nodes) = nodes(count);
            router_contract(&nodes, Duration::from_secs(1)).await;
        }
    }

    #[tokio::test]
    async fn readiness_and_refusal_switches_apply_to_one_router_only() {
        let (_network, nodes) = nodes(2);
        let (a, b) = (&nodes[0].router, &nodes[1].router);
        a.set_ready(false);
        assert!(!a.is_ready());
        assert!(b.is_ready());

        let key = Key::Digest(Digest::of(b"refused"));
        b.refuse_provides(true);
        assert!(matches!(b.provide(&key).await, Err(Error::Provide { .. })));
        assert!(b.provided_keys().is_empty());
        a.provide(&key).await.unwrap();
        assert_eq!(a.provided_keys(), vec![key]);
        assert_eq!(a.connected_peers(), 1);
    }

    #[tokio::test]
    async fn a_disconnected_peer_is_down_in_every_other_members_links() {
        let (network, nodes) = nodes(3);
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        assert_eq!(a.router.links().connected(), vec![b.peer.name.clone(), c.peer.name.clone()]);
        assert_eq!(a.router.links().get(&c.peer.name).unwrap().endpoint, Some(c.peer.endpoint));
        network.disconnect(&c.peer.name);
        assert!(!a.router.links().get(&c.peer.name).unwrap().connected);
        assert!(!b.router.links().get(&c.peer.name).unwrap().connected);
        assert_eq!(a.router.connected_peers(), 1);
        network.reconnect(&c.peer.name);
        assert!(b.router.links().get(&c.peer.name).unwrap().connected);
        network.ping(&c.peer.name, None);
        assert_eq!(a.router.links().get(&c.peer.name).unwrap().ping_failures, 1);
    }

    #[tokio::test]
    async fn providing_twice_lists_the_peer_once_and_withdraw_forgets_the_key() {
        let (network, nodes) = nodes(2);
        let key = Key::Digest(Digest::of(b"twice"));
        let a = &nodes[0].router;
        a.provide(&key).await.unwrap();
        a.provide(&key).await.unwrap();
        assert_eq!(network.providers(&key), vec![peer(1)]);
        a.withdraw(&key).await.unwrap();
        assert!(network.providers(&key).is_empty());
        assert!(a.provided_keys().is_empty());
    }
}
