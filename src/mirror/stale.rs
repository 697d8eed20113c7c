//! Provider records known to be stale: a peer answered 404 for a key it is
//! still advertised for (it removed the content; remote records live until
//! their TTL). Requests skip such a peer for that key for a while instead of
//! asking it again on every request.
//!
//! Owns: a bounded map from (peer, key) to when the entry lapses. Pure apart
//! from a short std lock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::oci::Key;
use crate::routing::PeerName;

/// How long a peer's 404 for a key is believed.
pub const STALE_FOR: Duration = Duration::from_secs(20);
/// Entries kept at most; beyond it new 404s are not remembered until old
/// ones lapse (forgetting costs one wasted request, never a wrong answer).
const MAX_ENTRIES: usize = 8192;

#[derive(Debug, Default)]
pub struct StaleRecords {
    until: Mutex<HashMap<(PeerName, Key), Instant>>,
}

impl StaleRecords {
    /// `peer` answered 404 for `key`.
    pub fn insert(&self, peer: &PeerName, key: &Key, now: Instant) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= MAX_ENTRIES {
            until.retain(|_, at| *at > now);
        }
        if until.len() < MAX_ENTRIES {
            until.insert((peer.clone(), key.clone()), now + STALE_FOR);
        }
    }

    /// Whether `peer` recently said it lacks `key`.
    pub fn contains(&self, peer: &PeerName, key: &Key, now: Instant) -> bool {
        let until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        until.get(&(peer.clone(), key.clone())).is_some_and(|at| *at > now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key::Digest(format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap())
    }

    #[test]
    fn a_404_is_believed_for_a_while_and_only_for_that_peer_and_key() {
        let stale = StaleRecords::default();
        let now = Instant::now();
        let (a, b) = (PeerName::new("a"), PeerName::new("b"));
        stale.insert(&a, &key(1), now);
        assert!(stale.contains(&a, &key(1), now));
        assert!(!stale.contains(&b, &key(1), now));
        assert!(!stale.contains(&a, &key(2), now));
        assert!(!stale.contains(&a, &key(1), now + STALE_FOR));
    }

    #[test]
    fn the_map_is_bounded_and_lapsed_entries_make_room() {
        let stale = StaleRecords::default();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES {
            stale.insert(&PeerName::new(format!("p{i}")), &key(1), now);
        }
        let late = PeerName::new("late");
        stale.insert(&late, &key(1), now);
        assert!(!stale.contains(&late, &key(1), now), "full: not remembered");
        stale.insert(&late, &key(1), now + STALE_FOR);
        assert!(stale.contains(&late, &key(1), now + STALE_FOR), "lapsed entries were dropped");
    }
}
