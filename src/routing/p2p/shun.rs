//! Peers taken out of routing because they stopped answering.
//!
//! Owns: the set of shunned peers and when each shun lapses. A shunned peer
//! leaves the Kademlia routing table and is blocked at the connection level:
//! its connections close, so Kademlia requests waiting on it fail at once
//! and the queries they hold up finish; and dials to it are denied on the
//! spot, so no query stalls on a frozen or blackholed peer that another
//! node still names as a closer peer. A shun ends when the mirror's probe
//! finds the peer answering again, or lapses after `MAX_SHUN` in case no
//! probe ever runs. Knows nothing of why a peer was shunned.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::{PeerId, Swarm};
use tokio::time::Instant;

use super::behaviour::Behaviour;

/// The longest a peer stays shunned without a probe clearing it (the
/// mirror's longest probe backoff).
const MAX_SHUN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(super) struct Shunned {
    until: HashMap<PeerId, Instant>,
}

impl Shunned {
    /// Takes `peer` out of routing and blocks its connections.
    pub(super) fn shun(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, now: Instant) {
        self.until.insert(peer, now + MAX_SHUN);
        let behaviour = swarm.behaviour_mut();
        behaviour.kad.remove_peer(&peer);
        behaviour.blocked.block_peer(peer);
    }

    /// Lifts a shun; returns whether `peer` was shunned.
    pub(super) fn lift(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) -> bool {
        let was = self.until.remove(&peer).is_some();
        if was {
            swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        was
    }

    /// Lifts the shuns that lapsed by `now`.
    pub(super) fn expire(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        for peer in self.lapsed(now) {
            tracing::debug!(%peer, "shun lapsed");
            self.lift(swarm, peer);
        }
    }

    fn lapsed(&self, now: Instant) -> Vec<PeerId> {
        self.until.iter().filter(|(_, until)| **until <= now).map(|(peer, _)| *peer).collect()
    }

    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.until.contains_key(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuns_lapse_after_the_longest_probe_backoff() {
        let now = Instant::now();
        let (early, late) = (PeerId::random(), PeerId::random());
        let mut shunned = Shunned::default();
        shunned.until.insert(early, now + MAX_SHUN);
        shunned.until.insert(late, now + MAX_SHUN * 2);
        assert!(shunned.lapsed(now).is_empty());
        assert_eq!(shunned.lapsed(now + MAX_SHUN), vec![early]);
    }
}
