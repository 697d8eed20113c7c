//! A batch of announcements in flight, and how many of each key's closest
//! peers stored the key.
//!
//! Owns: one batch's results, the announcements it still waits for, and the
//! per-key counts of peers sent to and peers that stored. Knows nothing of
//! the swarm: `bulk` reports what was sent and answered.
//!
//! A key counts as advertised once at least half of the peers it was sent
//! to stored it. An announcement that timed out or failed is not an answer:
//! under load (or with half the closest peers unreachable) a key could
//! otherwise be reported advertised while no lookup can find it; failed,
//! the advertiser tries it again.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::oci::Key;
use crate::routing::Error;

/// A batch of announcements: one result per key, in order.
pub(super) struct Tally {
    results: Vec<Result<(), Error>>,
    keys: Vec<Key>,
    /// Per key: peers it was sent to, and peers that stored it.
    sent: Vec<u32>,
    stored: Vec<u32>,
    /// Announcements neither answered nor failed yet.
    outstanding: usize,
    pub(super) deadline: Instant,
}

impl Tally {
    /// `results` holds one result per key of `keys` (a key whose local
    /// record could not be stored, or that was not placed, has its error).
    pub(super) fn new(keys: Vec<Key>, results: Vec<Result<(), Error>>, deadline: Instant) -> Self {
        let n = keys.len();
        Self { results, keys, sent: vec![0; n], stored: vec![0; n], outstanding: 0, deadline }
    }

    /// An announcement of the keys at `indices` was sent to one peer.
    pub(super) fn sent(&mut self, indices: &[u32]) {
        self.outstanding += 1;
        for &i in indices {
            if let Some(count) = self.sent.get_mut(i as usize) {
                *count += 1;
            }
        }
    }

    /// An announcement ended: `stored` when the peer stored every key of it.
    /// Returns whether the batch waits for nothing more.
    pub(super) fn answered(&mut self, indices: &[u32], stored: bool) -> bool {
        self.outstanding = self.outstanding.saturating_sub(1);
        if stored {
            for &i in indices {
                if let Some(count) = self.stored.get_mut(i as usize) {
                    *count += 1;
                }
            }
        }
        self.outstanding == 0
    }

    /// Each key's position, by the text it is announced as.
    pub(super) fn positions(&self) -> HashMap<String, u32> {
        self.keys.iter().enumerate().filter_map(|(i, key)| Some((key.to_string(), u32::try_from(i).ok()?))).collect()
    }

    pub(super) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// The results, and how many keys failed here: a key sent to peers of
    /// which fewer than half stored it fails. A key sent to no peer (a node
    /// alone) keeps its result.
    pub(super) fn finish(self) -> (Vec<Result<(), Error>>, u64) {
        let Self { mut results, keys, sent, stored, .. } = self;
        let mut understored = 0;
        let counts = keys.iter().zip(sent).zip(stored);
        for (result, ((key, sent), stored)) in results.iter_mut().zip(counts) {
            if result.is_ok() && stored < sent.div_ceil(2) {
                *result = Err(Error::Provide {
                    key: key.clone(),
                    reason: format!("only {stored} of the {sent} closest peers it was sent to stored it"),
                });
                understored += 1;
            }
        }
        (results, understored)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn tally(n: u8) -> Tally {
        let keys: Vec<Key> = (0..n).map(|i| Key::Digest(Digest::of(&[i]))).collect();
        let results = keys.iter().map(|_| Ok(())).collect();
        Tally::new(keys, results, Instant::now())
    }

    #[test]
    fn a_key_needs_half_of_its_peers_to_store_it() {
        let mut batch = tally(3);
        for _ in 0..4 {
            batch.sent(&[0, 1]);
        }
        batch.sent(&[2]);
        // Key 0: 2 of 4 stored; key 1: 1 of 4; key 2: 0 of 1.
        assert!(!batch.answered(&[0, 1], true));
        assert!(!batch.answered(&[0], true));
        assert!(!batch.answered(&[0, 1], false));
        assert!(!batch.answered(&[0, 1], false));
        assert!(batch.answered(&[2], false));
        let (results, understored) = batch.finish();
        assert_eq!(understored, 2);
        assert!(results[0].is_ok());
        let reason = results[1].as_ref().expect_err("one of four").to_string();
        assert!(reason.contains("only 1 of the 4"), "{reason}");
        assert!(results[2].is_err());
    }

    #[test]
    fn a_key_sent_nowhere_and_an_earlier_error_keep_their_results() {
        let keys: Vec<Key> = (0..2u8).map(|i| Key::Digest(Digest::of(&[i]))).collect();
        let refused = Error::Provide { key: keys[1].clone(), reason: "refused".into() };
        let mut batch = Tally::new(keys, vec![Ok(()), Err(refused)], Instant::now());
        batch.sent(&[1]);
        assert_eq!(batch.outstanding(), 1);
        assert!(batch.answered(&[1], true));
        let (results, understored) = batch.finish();
        assert_eq!(understored, 0);
        assert!(results[0].is_ok(), "sent to no peer: nothing to count");
        assert!(results[1].as_ref().is_err_and(|e| e.to_string().contains("refused")));
    }
}
