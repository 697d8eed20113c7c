//! The peers this node knows, for the peer store: listing them with their
//! announced addresses, and dialling them again after a restart.
//!
//! Owns: reading Kademlia's routing table and seeding it. Known peers are
//! dialled alongside the configured bootstrap, so a restarted node rejoins
//! its old neighbourhood at once. Speaks [`KnownPeer`] (names and socket
//! addresses) to the rest of the crate; PeerIds and Multiaddrs stay here.

use std::net::SocketAddr;

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};

use super::addresses::{EndpointRule, tcp_multiaddr, tcp_socket_addr};
use super::behaviour::Behaviour;
use crate::routing::PeerName;

/// At most this many peers are listed (a cluster's neighbourhood, not the world).
const MAX_KNOWN_PEERS: usize = 512;
/// At most this many addresses are kept per peer.
const MAX_ADDRS_PER_PEER: usize = 8;

/// A peer of the DHT: its name and the router addresses it announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    pub name: PeerName,
    pub addrs: Vec<SocketAddr>,
}

/// Every peer in the routing table with a usable address, sorted by name.
pub(super) fn list(swarm: &mut Swarm<Behaviour>, rule: EndpointRule) -> Vec<KnownPeer> {
    let mut peers = listed(swarm, rule);
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

fn listed(swarm: &mut Swarm<Behaviour>, rule: EndpointRule) -> Vec<KnownPeer> {
    let mut peers = Vec::new();
    for bucket in swarm.behaviour_mut().kad.kbuckets() {
        for entry in bucket.iter() {
            let mut addrs: Vec<SocketAddr> = entry
                .node
                .value
                .iter()
                .filter(|a| rule.is_usable(a))
                .filter_map(tcp_socket_addr)
                .take(MAX_ADDRS_PER_PEER)
                .collect();
            // Sorted, so that an unchanged table compares equal (the peer store saves on change).
            addrs.sort_unstable();
            addrs.dedup();
            if !addrs.is_empty() {
                peers.push(KnownPeer { name: PeerName::new(entry.node.key.preimage().to_string()), addrs });
            }
            if peers.len() >= MAX_KNOWN_PEERS {
                return peers;
            }
        }
    }
    peers
}

/// Adds `peers` to the routing table and dials each one not yet connected.
pub(super) fn dial(swarm: &mut Swarm<Behaviour>, rule: EndpointRule, peers: Vec<KnownPeer>) {
    for peer in peers.into_iter().take(MAX_KNOWN_PEERS) {
        let Ok(peer_id) = peer.name.as_str().parse::<PeerId>() else {
            tracing::debug!(name = %peer.name, "skipping a known peer with an invalid name");
            continue;
        };
        if peer_id == *swarm.local_peer_id() {
            continue;
        }
        let addrs: Vec<Multiaddr> = peer.addrs.into_iter().map(tcp_multiaddr).filter(|a| rule.is_usable(a)).collect();
        if addrs.is_empty() {
            continue;
        }
        for addr in &addrs {
            swarm.behaviour_mut().kad.add_address(&peer_id, addr.clone());
        }
        let opts =
            DialOpts::peer_id(peer_id).addresses(addrs).condition(PeerCondition::DisconnectedAndNotDialing).build();
        if let Err(error) = swarm.dial(opts) {
            tracing::debug!(peer = %peer_id, %error, "cannot dial a known peer");
        }
    }
}
