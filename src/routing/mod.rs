//! Who has what: the DHT behind a trait.
//!
//! Owns: advertising keys, withdrawing them, and finding the peers that
//! provide a key. Speaks `Key` and `Peer`; only `routing::p2p` imports libp2p.

#[cfg(any(test, feature = "test-util"))]
pub mod contract;
pub mod links;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod p2p;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::oci::Key;
pub use links::{Link, LinkEvent, Links};

/// A peer's stable identity (the text of its libp2p PeerId).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(Arc<str>);

impl PeerName {
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A provider of some key: who it is and where its registry listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub name: PeerName,
    /// The peer's registry endpoint: an IP it announces, with the cluster's
    /// registry port. Never an address merely observed on a connection.
    pub endpoint: SocketAddr,
}

/// The router's failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the router has shut down")]
    Closed,
    #[error("advertising {key} failed: {reason}")]
    Provide { key: Key, reason: String },
    #[error("router command timed out")]
    Timeout,
}

/// The I/O boundary to the peer network (libp2p Kademlia, or the in-memory fake).
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Ready once connected to at least one peer, or at once for a single node.
    fn is_ready(&self) -> bool;

    /// Streams the peers that provide `key` as they are found: deduplicated,
    /// never this node, ending after at most `limit` peers or the resolve timeout.
    fn lookup(&self, key: &Key, limit: usize) -> BoxStream<'static, Peer>;

    /// Announces that this node provides `key`; resolves once the record was
    /// stored locally and offered to the closest peers.
    async fn provide(&self, key: &Key) -> Result<(), Error>;

    /// Announces several keys; one result per key, in order. The default
    /// provides them one after the other; a router that can batch does better.
    async fn provide_many(&self, keys: &[Key]) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(self.provide(key).await);
        }
        results
    }

    /// Stops announcing `key`. Remote records expire with their TTL.
    async fn withdraw(&self, key: &Key) -> Result<(), Error>;

    /// Number of peers currently connected.
    fn connected_peers(&self) -> usize;

    /// The state of this node's connections to its peers; observers learn
    /// of a closed connection as it happens.
    fn links(&self) -> Links;

    /// The mirror excluded `peer` (its registry refused, timed out, went
    /// silent or kept failing). The router stops routing queries through it,
    /// so no lookup waits on a peer known to be bad, until it recovers.
    fn peer_unresponsive(&self, _peer: &PeerName) {}

    /// A probe found `peer` answering again: the router may use it again.
    fn peer_recovered(&self, _peer: &PeerName) {}
}
