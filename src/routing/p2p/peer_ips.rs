//! The IP addresses of the peers connected now: the address each open
//! connection comes from, and the addresses the peer announces (identify).
//!
//! Owns: that set, kept by the swarm task and read by the registry's access
//! check on every request (through [`P2pRouter::is_connected_ip`](super::P2pRouter)).
//! A peer's addresses go when its last connection closes. Knows nothing of
//! HTTP; decides nothing about access.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// What one connected peer is reached from.
#[derive(Debug, Default)]
struct PeerAddresses {
    connections: HashMap<ConnectionId, IpAddr>,
    announced: Vec<IpAddr>,
}

impl PeerAddresses {
    fn ips(&self) -> HashSet<IpAddr> {
        self.connections.values().chain(&self.announced).copied().collect()
    }
}

/// Connected peers' addresses, with a count per IP so a lookup is one hash probe.
#[derive(Debug, Default)]
pub(super) struct PeerIps {
    peers: HashMap<PeerId, PeerAddresses>,
    /// How many connected peers use each IP (two pods of one host may share it).
    counts: HashMap<IpAddr, usize>,
}

impl PeerIps {
    /// A connection to `peer` opened, from (or to) `ip`.
    pub(super) fn connected(&mut self, peer: PeerId, connection: ConnectionId, ip: IpAddr) {
        self.change(peer, |addrs| {
            addrs.connections.insert(connection, ip.to_canonical());
        });
    }

    /// A connection closed; the peer is forgotten with its last connection.
    pub(super) fn disconnected(&mut self, peer: PeerId, connection: ConnectionId) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.change(peer, |addrs| {
            addrs.connections.remove(&connection);
        });
    }

    /// The addresses a connected peer announces; ignored for a peer not connected.
    pub(super) fn announced(&mut self, peer: PeerId, ips: impl IntoIterator<Item = IpAddr>) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        let ips: Vec<IpAddr> = ips.into_iter().map(|ip| ip.to_canonical()).collect();
        self.change(peer, |addrs| addrs.announced = ips);
    }

    /// Whether a connected peer uses `ip`.
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        self.counts.contains_key(&ip.to_canonical())
    }

    fn change(&mut self, peer: PeerId, update: impl FnOnce(&mut PeerAddresses)) {
        let addrs = self.peers.entry(peer).or_default();
        let before = addrs.ips();
        update(addrs);
        let after = addrs.ips();
        if addrs.connections.is_empty() {
            self.peers.remove(&peer);
            self.forget(before);
            return;
        }
        self.forget(before.difference(&after).copied().collect());
        for ip in after.difference(&before) {
            *self.counts.entry(*ip).or_default() += 1;
        }
    }

    fn forget(&mut self, ips: HashSet<IpAddr>) {
        for ip in ips {
            if let Some(count) = self.counts.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.counts.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_peer_is_known_by_its_connections_and_announcements_until_it_disconnects() {
        let mut ips = PeerIps::default();
        let (peer, first, second) = (PeerId::random(), ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        ips.announced(peer, [ip("10.0.0.9")]);
        assert!(!ips.contains(ip("10.0.0.9")), "announcements of a peer not connected are ignored");

        ips.connected(peer, first, ip("10.0.0.1"));
        ips.connected(peer, second, ip("::ffff:10.0.0.2"));
        ips.announced(peer, [ip("10.0.0.3"), ip("10.0.0.1")]);
        for known in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert!(ips.contains(ip(known)), "{known}");
        }
        ips.disconnected(peer, second);
        assert!(!ips.contains(ip("10.0.0.2")));
        assert!(ips.contains(ip("10.0.0.3")));
        ips.disconnected(peer, first);
        assert!(ips.peers.is_empty() && ips.counts.is_empty(), "nothing is left behind: {ips:?}");
    }

    #[test]
    fn an_ip_shared_by_two_peers_stays_until_both_leave() {
        let mut ips = PeerIps::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        ips.connected(a, ConnectionId::new_unchecked(1), ip("10.0.0.1"));
        ips.connected(b, ConnectionId::new_unchecked(2), ip("10.0.0.1"));
        ips.disconnected(a, ConnectionId::new_unchecked(1));
        assert!(ips.contains(ip("10.0.0.1")));
        ips.disconnected(b, ConnectionId::new_unchecked(2));
        assert!(!ips.contains(ip("10.0.0.1")));
        ips.disconnected(b, ConnectionId::new_unchecked(2));
        assert!(ips.counts.is_empty());
    }

    #[test]
    fn a_new_announcement_replaces_the_old_one() {
        let mut ips = PeerIps::default();
        let peer = PeerId::random();
        ips.connected(peer, ConnectionId::new_unchecked(1), ip("10.0.0.1"));
        ips.announced(peer, [ip("10.0.0.5")]);
        ips.announced(peer, [ip("10.0.0.6")]);
        assert!(!ips.contains(ip("10.0.0.5")));
        assert!(ips.contains(ip("10.0.0.6")) && ips.contains(ip("10.0.0.1")));
    }
}
