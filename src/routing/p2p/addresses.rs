//! Where a peer's registry is reached: the addresses peers announce, and the
//! rule that turns them into a registry endpoint.
//!
//! Owns: the PeerId → announced addresses book (Kademlia's provider results
//! carry PeerIds only) and the choice of endpoint. An endpoint is the IP of an
//! address the peer *announces* (identify listen addresses, provider record
//! addresses) with the cluster-wide registry port; never an address merely
//! observed on a connection, never an unspecified address, and never a
//! loopback address unless this node itself listens on loopback (tests run
//! nodes on 127.0.0.N; a node on 0.0.0.0 must not take 127.0.0.1 for a peer).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Beyond this many peers, addresses from provider records are not kept
/// (addresses from identify, i.e. connected peers, always are).
const MAX_BOOK_ENTRIES: usize = 16_384;

/// Which announced addresses are usable, and at which port the registry listens.
#[derive(Debug, Clone, Copy)]
pub(super) struct EndpointRule {
    registry_port: u16,
    allow_loopback: bool,
}

impl EndpointRule {
    /// `local_listen` is the IP this node listens on: only a loopback listener
    /// accepts loopback addresses from peers.
    pub(super) fn new(local_listen: IpAddr, registry_port: u16) -> Self {
        Self { registry_port, allow_loopback: local_listen.is_loopback() }
    }

    /// Whether `addr` is a TCP address worth dialling or handing out.
    pub(super) fn is_usable(&self, addr: &Multiaddr) -> bool {
        tcp_socket_addr(addr).is_some_and(|s| self.is_usable_ip(s.ip()))
    }

    /// The registry endpoint among `addrs`: the first usable one, preferring
    /// addresses that are not loopback.
    pub(super) fn endpoint<'a>(&self, addrs: impl IntoIterator<Item = &'a Multiaddr>) -> Option<SocketAddr> {
        let ips: Vec<IpAddr> =
            addrs.into_iter().filter_map(tcp_socket_addr).map(|s| s.ip()).filter(|ip| self.is_usable_ip(*ip)).collect();
        let ip = ips.iter().find(|ip| !ip.is_loopback()).or(ips.first())?;
        Some(SocketAddr::new(*ip, self.registry_port))
    }

    fn is_usable_ip(&self, ip: IpAddr) -> bool {
        if ip.is_unspecified() || ip.is_multicast() || (ip.is_loopback() && !self.allow_loopback) {
            return false;
        }
        match ip {
            IpAddr::V4(v4) => !v4.is_broadcast(),
            // A link-local IPv6 address needs a scope id, which an announcement cannot carry.
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        }
    }
}

/// The address of `/ip4|ip6/<ip>/tcp/<port>/...`, if `addr` has that shape.
pub(super) fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// `/ip4|ip6/<ip>/tcp/<port>`.
pub(super) fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty().with(Protocol::from(addr.ip())).with(Protocol::Tcp(addr.port()))
}

/// What peers announced about themselves, filtered by the [`EndpointRule`].
pub(super) struct AddressBook {
    rule: EndpointRule,
    announced: HashMap<PeerId, Vec<Multiaddr>>,
}

impl AddressBook {
    pub(super) fn new(rule: EndpointRule) -> Self {
        Self { rule, announced: HashMap::new() }
    }

    pub(super) fn rule(&self) -> EndpointRule {
        self.rule
    }

    /// Identify is the peer's own, current word: it replaces what was known.
    pub(super) fn learn_from_identify(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let usable = self.usable(addrs);
        if usable.is_empty() {
            return;
        }
        self.announced.insert(peer, usable);
    }

    /// A provider record's addresses fill a gap but never override identify.
    pub(super) fn learn_from_record(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let full = self.announced.len() >= MAX_BOOK_ENTRIES;
        if let Entry::Vacant(entry) = self.announced.entry(peer) {
            let usable: Vec<Multiaddr> = addrs.iter().filter(|a| self.rule.is_usable(a)).cloned().collect();
            if !usable.is_empty() && !full {
                entry.insert(usable);
            }
        }
    }

    /// The registry endpoint of `peer`, if it announced a usable address.
    pub(super) fn endpoint(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.rule.endpoint(self.announced.get(peer)?)
    }

    /// The usable addresses `peer` announced, for dialling it.
    pub(super) fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.announced.get(peer).cloned().unwrap_or_default()
    }

    fn usable(&self, addrs: &[Multiaddr]) -> Vec<Multiaddr> {
        addrs.iter().filter(|a| self.rule.is_usable(a)).cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const REGISTRY: u16 = 5000;

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    fn on_any() -> EndpointRule {
        EndpointRule::new("0.0.0.0".parse().unwrap(), REGISTRY)
    }

    fn on_loopback() -> EndpointRule {
        EndpointRule::new("127.0.0.3".parse().unwrap(), REGISTRY)
    }

    #[test]
    fn endpoint_takes_the_announced_ip_with_the_registry_port() {
        let addrs = [addr("/ip4/10.0.0.5/tcp/5001")];
        assert_eq!(on_any().endpoint(&addrs), Some("10.0.0.5:5000".parse().unwrap()));
    }

    #[test]
    fn a_node_on_all_interfaces_never_picks_loopback_or_unspecified() {
        let addrs = [addr("/ip4/127.0.0.1/tcp/5001"), addr("/ip4/0.0.0.0/tcp/5001"), addr("/ip6/::/tcp/5001")];
        assert_eq!(on_any().endpoint(&addrs), None);
        let with_real = [addrs[0].clone(), addr("/ip6/fd00::7/tcp/5001")];
        assert_eq!(on_any().endpoint(&with_real), Some("[fd00::7]:5000".parse().unwrap()));
    }

    #[test]
    fn a_node_on_loopback_accepts_loopback_but_prefers_other_addresses() {
        let loopback_only = [addr("/ip4/127.0.0.7/tcp/5001")];
        assert_eq!(on_loopback().endpoint(&loopback_only), Some("127.0.0.7:5000".parse().unwrap()));
        let both = [addr("/ip4/127.0.0.1/tcp/5001"), addr("/ip4/10.1.2.3/tcp/5001")];
        assert_eq!(on_loopback().endpoint(&both), Some("10.1.2.3:5000".parse().unwrap()));
        assert_eq!(on_loopback().endpoint(&[addr("/ip4/0.0.0.0/tcp/5001")]), None);
    }

    #[test]
    fn only_tcp_addresses_with_a_routable_ip_are_usable() {
        let rule = on_any();
        assert!(
            rule.is_usable(&addr("/ip4/10.0.0.5/tcp/5001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"))
        );
        assert!(!rule.is_usable(&addr("/ip4/10.0.0.5/udp/5001/quic-v1")));
        assert!(!rule.is_usable(&addr("/dns4/shoal.test/tcp/5001")));
        assert!(!rule.is_usable(&addr("/ip4/224.0.0.1/tcp/5001")));
        assert!(!rule.is_usable(&addr("/ip4/255.255.255.255/tcp/5001")));
        assert!(!rule.is_usable(&addr("/ip6/fe80::1/tcp/5001")));
    }

    #[test]
    fn identify_replaces_record_addresses_and_records_never_override_identify() {
        let peer = PeerId::random();
        let mut book = AddressBook::new(on_any());
        book.learn_from_record(peer, &[addr("/ip4/10.0.0.1/tcp/1")]);
        assert_eq!(book.endpoint(&peer), Some("10.0.0.1:5000".parse().unwrap()));
        book.learn_from_identify(peer, &[addr("/ip4/10.0.0.2/tcp/1")]);
        book.learn_from_record(peer, &[addr("/ip4/10.0.0.3/tcp/1")]);
        assert_eq!(book.endpoint(&peer), Some("10.0.0.2:5000".parse().unwrap()));
    }

    #[test]
    fn unusable_announcements_leave_the_peer_unknown() {
        let peer = PeerId::random();
        let mut book = AddressBook::new(on_any());
        book.learn_from_identify(peer, &[addr("/ip4/127.0.0.1/tcp/1")]);
        book.learn_from_record(peer, &[addr("/ip4/0.0.0.0/tcp/1")]);
        assert_eq!(book.endpoint(&peer), None);
    }

    #[test]
    fn socket_addresses_round_trip_through_multiaddrs() {
        for text in ["127.0.0.9:4001", "[fd00::1]:4001"] {
            let socket: SocketAddr = text.parse().unwrap();
            assert_eq!(tcp_socket_addr(&tcp_multiaddr(socket)), Some(socket));
        }
    }
}
