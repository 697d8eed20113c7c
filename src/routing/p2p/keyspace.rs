//! A map of the Kademlia keyspace, built from closest-peers queries, that
//! says for which keys this node knows the `K_VALUE` closest peers for sure.
//!
//! Keyspace points are 256-bit hashes (what `kbucket::Key` computes), ordered
//! as big-endian numbers, so every subtree of the keyspace (the points that
//! share a prefix) is one interval. A successful closest-peers query for a
//! target `t` returns the peers within some distance `r` of `t`; every peer of
//! the largest subtree around `t` that lies within `r` is among them, so that
//! subtree is *complete*: the map knows all of its peers. Complete subtrees
//! merge into covered intervals.
//!
//! A key is *placed* when the smallest subtree around it that holds at least
//! `K_VALUE` known peers lies inside one covered interval: every peer of that
//! subtree is closer to the key than any peer outside it, and all of them
//! are known, so the key's closest peers are exactly the closest of them.
//! Nothing else is guessed: a key that is not placed needs its own query.
//!
//! Owns: the peers learnt (each with whatever the caller keeps of it: its
//! id and addresses) and the covered intervals. Pure data: no I/O, no
//! clock. The local node is never one of the peers (queries do not return
//! it), as in a Kademlia provide.

use std::collections::BTreeMap;

/// A point of the keyspace: a SHA-256 hash, compared as a big-endian number.
pub(super) type Point = [u8; 32];

const BITS: usize = 256;

/// The peers learnt (`P`: what is kept of each), and the intervals whose
/// peers are all known.
#[derive(Debug)]
pub(super) struct NetworkMap<P> {
    /// How many closest peers a key is placed on.
    replicas: usize,
    peers: BTreeMap<Point, P>,
    /// Disjoint, non-adjacent inclusive intervals: start → end.
    covered: BTreeMap<Point, Point>,
}

impl<P: Clone> NetworkMap<P> {
    pub(super) fn new(replicas: usize) -> Self {
        Self { replicas: replicas.max(1), peers: BTreeMap::new(), covered: BTreeMap::new() }
    }

    /// Peers this map knows.
    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Learns peers that answered a query, without claiming that they are
    /// all there is (a query that timed out).
    pub(super) fn learn_peers(&mut self, peers: impl IntoIterator<Item = (Point, P)>) {
        self.peers.extend(peers);
    }

    /// Forgets a peer that left (a dial to it failed). The intervals it was
    /// in stay covered: their remaining peers are still all there is.
    pub(super) fn forget(&mut self, point: &Point) {
        self.peers.remove(point);
    }

    /// Learns the result of a closest-peers query for `target` that
    /// completed: `closest` are the peers that answered, and no peer closer
    /// to `target` than the farthest of them exists. A result with fewer
    /// than `replicas` peers covers nothing: a network that small, and a
    /// query that reached only a few peers (a node still joining, peers too
    /// slow to answer), look the same.
    pub(super) fn learn_closest(&mut self, target: &Point, closest: &[(Point, P)]) {
        self.learn_peers(closest.iter().cloned());
        if closest.len() < self.replicas {
            return;
        }
        let Some(farthest) = closest.iter().map(|(p, _)| xor(p, target)).max() else { return };
        let (start, end) = subtree(target, complete_bits(&farthest));
        self.cover(start, end);
    }

    /// The `replicas` closest known peers of `point`, if they are certainly
    /// its closest peers in the network (see the module doc); `None` if
    /// the map cannot tell yet.
    pub(super) fn closest(&self, point: &Point) -> Option<Vec<P>> {
        let (start, end) = self.smallest_full_subtree(point);
        let (covered_start, covered_end) = self.covering(&start)?;
        if covered_start > start || covered_end < end {
            return None;
        }
        let mut candidates: Vec<(Point, &P)> =
            self.peers.range(start..=end).map(|(p, peer)| (xor(p, point), peer)).collect();
        candidates.sort_unstable_by_key(|(distance, _)| *distance);
        candidates.truncate(self.replicas);
        Some(candidates.into_iter().map(|(_, peer)| peer.clone()).collect())
    }

    /// The smallest subtree around `point` with at least `replicas` known
    /// peers (the whole keyspace if no subtree has that many).
    fn smallest_full_subtree(&self, point: &Point) -> (Point, Point) {
        // Known peers in the subtree of `free` free low bits shrink as
        // `free` does: find the least `free` that still holds enough.
        let (mut low, mut high) = (0, BITS);
        while low < high {
            let mid = (low + high) / 2;
            let (start, end) = subtree(point, mid);
            if self.peers.range(start..=end).take(self.replicas).count() >= self.replicas {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        subtree(point, low)
    }

    /// The covered interval holding `point`, if any.
    pub(super) fn covering(&self, point: &Point) -> Option<(Point, Point)> {
        let (start, end) = self.covered.range(..=*point).next_back()?;
        (end >= point).then_some((*start, *end))
    }

    /// Adds `[start, end]` to the covered intervals, merging overlapping
    /// and adjacent ones.
    fn cover(&mut self, mut start: Point, mut end: Point) {
        if let Some((s, e)) = self.covered.range(..=start).next_back().map(|(s, e)| (*s, *e))
            && (e >= start || successor(&e) == Some(start))
        {
            start = s;
            end = end.max(e);
            self.covered.remove(&s);
        }
        loop {
            let after = successor(&end);
            let next = self.covered.range(start..).next().map(|(s, e)| (*s, *e));
            match next {
                Some((s, e)) if s <= end || Some(s) == after => {
                    end = end.max(e);
                    self.covered.remove(&s);
                }
                _ => break,
            }
        }
        self.covered.insert(start, end);
    }
}

/// XOR distance of two points (compared as big-endian numbers).
pub(super) fn xor(a: &Point, b: &Point) -> Point {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// The number of free low bits of the largest subtree around a target whose
/// every point lies within `distance` of it: `m` such that `2^m - 1 <= distance`.
fn complete_bits(distance: &Point) -> usize {
    let Some(first) = distance.iter().position(|b| *b != 0) else { return 0 };
    // Index of the highest set bit, counted from the least significant.
    let highest = (31 - first) * 8 + (7 - distance[first].leading_zeros() as usize);
    if all_low_bits_set(distance, highest + 1) { highest + 1 } else { highest }
}

/// Whether the `bits` low bits of `point` are all ones.
fn all_low_bits_set(point: &Point, bits: usize) -> bool {
    (0..bits).all(|bit| point[31 - bit / 8] & (1 << (bit % 8)) != 0)
}

/// The subtree around `point` with `free` free low bits: `[start, end]`.
fn subtree(point: &Point, free: usize) -> (Point, Point) {
    let mut start = *point;
    let mut end = *point;
    for bit in 0..free.min(BITS) {
        let (byte, mask) = (31 - bit / 8, 1u8 << (bit % 8));
        start[byte] &= !mask;
        end[byte] |= mask;
    }
    (start, end)
}

/// `point + 1`, or `None` past the end of the keyspace.
fn successor(point: &Point) -> Option<Point> {
    let mut next = *point;
    for byte in next.iter_mut().rev() {
        let (value, carry) = byte.overflowing_add(1);
        *byte = value;
        if !carry {
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use libp2p::PeerId;
    use libp2p::kad::KBucketKey;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    const K: usize = 20;

    fn point(peer: &PeerId) -> Point {
        KBucketKey::from(*peer).hashed_bytes().try_into().unwrap()
    }

    fn random_point(rng: &mut StdRng) -> Point {
        std::array::from_fn(|_| rng.random())
    }

    /// A network of `n` peers that answers closest-peers queries exactly.
    struct Network {
        peers: Vec<(Point, PeerId)>,
    }

    impl Network {
        fn new(n: usize) -> Self {
            let peers = (0..n)
                .map(|_| {
                    let peer = PeerId::random();
                    (point(&peer), peer)
                })
                .collect();
            Self { peers }
        }

        fn closest(&self, target: &Point) -> Vec<(Point, PeerId)> {
            let mut all = self.peers.clone();
            all.sort_by_key(|(p, _)| xor(p, target));
            all.truncate(K);
            all
        }

        fn closest_ids(&self, target: &Point) -> Vec<PeerId> {
            self.closest(target).into_iter().map(|(_, peer)| peer).collect()
        }
    }

    /// A network of `peers`, a map that learnt one completed query for a
    /// random target, the target, and the seeded RNG for more points.
    fn one_query(peers: usize, seed: u64) -> (Network, NetworkMap<PeerId>, Point, StdRng) {
        let network = Network::new(peers);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut map = NetworkMap::new(K);
        let target = random_point(&mut rng);
        map.learn_closest(&target, &network.closest(&target));
        (network, map, target, rng)
    }

    #[test]
    fn one_query_covers_its_target_and_places_only_exactly() {
        let (network, map, target, mut rng) = one_query(300, 1);
        assert!(map.covering(&target).is_some(), "the target's own region is complete");
        // Whatever the map places after one query is the true closest.
        for point in (0..200).map(|_| random_point(&mut rng)).chain([target]) {
            if let Some(placed) = map.closest(&point) {
                assert_eq!(placed, network.closest_ids(&point));
            }
        }
    }

    #[test]
    fn every_placement_is_the_true_closest_and_dense_keys_need_few_queries() {
        let network = Network::new(500);
        let mut rng = StdRng::seed_from_u64(2);
        let keys: Vec<Point> = (0..1000).map(|_| random_point(&mut rng)).collect();
        let mut map: NetworkMap<PeerId> = NetworkMap::new(K);
        let mut queries = 0;
        for key in &keys {
            if map.closest(key).is_none() {
                map.learn_closest(key, &network.closest(key));
                queries += 1;
            }
        }
        for key in &keys {
            let placed = map.closest(key).expect("every key is placed after its own query at the latest");
            assert_eq!(placed, network.closest_ids(key));
        }
        assert!(queries < keys.len() / 5, "{queries} queries for {} keys", keys.len());
    }

    #[test]
    fn a_forgotten_peer_is_never_placed_on_and_placements_stay_exact() {
        let (mut network, mut map, target, mut rng) = one_query(300, 5);
        for _ in 0..60 {
            let more = random_point(&mut rng);
            map.learn_closest(&more, &network.closest(&more));
        }
        let (gone, gone_id) = network.closest(&target)[0];
        map.forget(&gone);
        network.peers.retain(|(p, _)| *p != gone);
        let mut placed_any = false;
        for point in (0..500).map(|_| random_point(&mut rng)).chain([target]) {
            if let Some(placed) = map.closest(&point) {
                assert!(!placed.contains(&gone_id));
                assert_eq!(placed, network.closest_ids(&point));
                placed_any = true;
            }
        }
        assert!(placed_any, "the covered region still places keys");
    }

    #[test]
    fn a_short_answer_covers_nothing() {
        let (_, map, target, mut rng) = one_query(7, 3);
        assert_eq!(map.len(), 7);
        assert_eq!(map.closest(&target), None);
        assert_eq!(map.closest(&random_point(&mut rng)), None);
    }

    #[test]
    fn peers_from_a_timed_out_query_cover_nothing() {
        let network = Network::new(200);
        let mut rng = StdRng::seed_from_u64(4);
        let mut map: NetworkMap<PeerId> = NetworkMap::new(K);
        let target = random_point(&mut rng);
        map.learn_peers(network.closest(&target));
        assert_eq!(map.len(), K);
        assert_eq!(map.closest(&target), None);
    }

    #[test]
    fn covered_intervals_merge_when_they_touch() {
        let mut map: NetworkMap<PeerId> = NetworkMap::new(K);
        let at = |last: u8| {
            let mut p = [0u8; 32];
            p[31] = last;
            p
        };
        map.cover(at(0), at(3));
        map.cover(at(8), at(11));
        assert_eq!(map.covered.len(), 2);
        map.cover(at(4), at(7));
        assert_eq!(map.covered.len(), 1);
        assert_eq!(map.covering(&at(5)), Some((at(0), at(11))));
        map.cover(at(2), at(20));
        assert_eq!(map.covering(&at(20)), Some((at(0), at(20))));
        assert_eq!(map.covering(&at(21)), None);
    }

    #[test]
    fn subtree_and_complete_bits_agree_on_small_numbers() {
        let mut d = [0u8; 32];
        d[31] = 0b0111;
        assert_eq!(complete_bits(&d), 3);
        d[31] = 0b0110;
        assert_eq!(complete_bits(&d), 2);
        d[30] = 1;
        d[31] = 0xff;
        assert_eq!(complete_bits(&d), 9);
        assert_eq!(complete_bits(&[u8::MAX; 32]), 256);
        let mut p = [0u8; 32];
        p[31] = 0b1010_1101;
        let (start, end) = subtree(&p, 4);
        assert_eq!((start[31], end[31]), (0b1010_0000, 0b1010_1111));
        assert_eq!(successor(&[u8::MAX; 32]), None);
    }
}
