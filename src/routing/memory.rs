//! An in-process fake of the peer network, for tests.
//!
//! Owns: a shared provider table (`MemoryNetwork`) and per-peer handles
//! (`MemoryRouter`) that implement [`Router`] with the same observable
//! semantics as the DHT: a lookup never returns the asking node, never
//! repeats a peer and stops after `limit` peers. Unlike the DHT, a withdrawal
//! takes effect at once (there are no remote records to expire).
//!
//! Also offers knobs the DHT cannot turn on demand: a router can be made not
//! ready, or made to refuse provides.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use super::{Error, Peer, PeerName, Router};
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
    ready: bool,
    refuse_provides: bool,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins `peer` to the network (ready, accepting provides) and returns its router.
    pub fn router(&self, peer: Peer) -> MemoryRouter {
        self.lock().members.insert(peer.name.clone(), Member { ready: true, refuse_provides: false });
        MemoryRouter { network: self.clone(), peer }
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
        self.network.lock().members.len().saturating_sub(1)
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
