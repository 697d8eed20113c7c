//! One batch advertised in a network larger than the routing table: each key
//! is placed on its `K_VALUE` closest peers through the [`NetworkMap`], and
//! only the keys the map cannot place yet get a closest-peers query of their
//! own. Every query teaches the map a region of the keyspace, so a batch of
//! keys dense in the keyspace (thousands of keys, or the batches after the
//! first) needs far fewer queries than keys; sparse keys cost one query
//! each, as a Kademlia provide does.
//!
//! Owns: which keys are placed and where, which wait for a query, and in
//! what order queries start (shuffled, so the ones in flight fall in
//! different regions and teach the map more). Pure: the swarm task starts
//! the queries and sends the announcements (see `bulk`).

use std::collections::HashMap;

use libp2p::kad::KBucketKey;
use libp2p::{Multiaddr, PeerId};
use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::keyspace::{NetworkMap, Point};
use crate::oci::Key;
use crate::routing::Error;

/// A peer a query returned, with the addresses it gave: most peers a sweep
/// places keys on are in no routing table, and once the query is over only
/// these addresses reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Contact {
    pub(super) peer: PeerId,
    pub(super) addrs: Vec<Multiaddr>,
}

/// The map a sweep places keys by.
pub(super) type Map = NetworkMap<Contact>;

/// Where one key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    /// Not placed yet (queued, or its query is in flight).
    Open,
    Placed(Vec<Contact>),
    /// Its query failed: not announced, and the caller is told.
    Failed,
    /// The local store refused the key (the caller knows): not announced.
    Skipped,
}

/// Closest-peers queries a sweep starts with; each answer lets one more
/// run, up to [`MAX_QUERIES`]: the first answers teach the map the most, and
/// in a small network they place most keys without more queries.
const FIRST_QUERIES: usize = 4;
/// Closest-peers queries one sweep keeps in flight at most.
const MAX_QUERIES: usize = 16;

/// One batch being placed.
pub(super) struct Sweep {
    keys: Vec<Key>,
    points: Vec<Point>,
    placements: Vec<Placement>,
    /// Keys to query, popped from the end.
    queue: Vec<usize>,
    pub(super) in_flight: usize,
    /// Queries that ended, answered or not.
    ended: usize,
    pub(super) deadline: Instant,
}

impl Sweep {
    /// A sweep of `keys`; keys whose `skip` is set (the local store refused
    /// them) are not placed. Places whatever `map` already can.
    pub(super) fn new(keys: Vec<Key>, skip: &[bool], map: &Map, deadline: Instant) -> Self {
        let points: Vec<Point> = keys.iter().map(point_of_key).collect();
        let placements = points
            .iter()
            .zip(skip.iter().chain(std::iter::repeat(&false)))
            .map(|(point, skip)| match (skip, map.closest(point)) {
                (true, _) => Placement::Skipped,
                (false, Some(peers)) => Placement::Placed(peers),
                (false, None) => Placement::Open,
            })
            .collect::<Vec<_>>();
        let mut queue: Vec<usize> = (0..keys.len()).filter(|i| placements[*i] == Placement::Open).collect();
        queue.shuffle(&mut rand::rng());
        Self { keys, points, placements, queue, in_flight: 0, ended: 0, deadline }
    }

    /// The next key that needs a query (placing, on the way, any key the
    /// map has learnt to place since): its index and its key. The caller
    /// starts that query and reports its end to [`Sweep::queried`].
    pub(super) fn next_query(&mut self, map: &Map) -> Option<(usize, Key)> {
        while let Some(i) = self.queue.pop() {
            if self.placements[i] != Placement::Open {
                continue;
            }
            match map.closest(&self.points[i]) {
                Some(peers) => self.placements[i] = Placement::Placed(peers),
                None => {
                    self.in_flight += 1;
                    return Some((i, self.keys[i].clone()));
                }
            }
        }
        None
    }

    /// Whether another query may start: [`FIRST_QUERIES`] at first, one
    /// more for each that ended, never more than [`MAX_QUERIES`].
    pub(super) fn has_room(&self) -> bool {
        self.in_flight < (FIRST_QUERIES + self.ended).min(MAX_QUERIES)
    }

    /// Key `i`'s query ended: `Some(closest)` when it completed (the peers
    /// are the key's closest, whatever the map makes of them), `None` when
    /// it failed.
    pub(super) fn queried(&mut self, i: usize, closest: Option<Vec<Contact>>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.ended += 1;
        if let Some(placement) = self.placements.get_mut(i)
            && *placement == Placement::Open
        {
            *placement = closest.map_or(Placement::Failed, Placement::Placed);
        }
    }

    /// Places every open key within `[start, end]` that the map can place
    /// now (a query only teaches the map the covered interval its target
    /// ended up in).
    pub(super) fn place_known(&mut self, map: &Map, (start, end): (Point, Point)) {
        for (placement, point) in self.placements.iter_mut().zip(&self.points) {
            if *placement == Placement::Open
                && (start..=end).contains(point)
                && let Some(peers) = map.closest(point)
            {
                *placement = Placement::Placed(peers);
            }
        }
    }

    /// Starts no more queries: keys still waiting for one stay unplaced.
    pub(super) fn stop_querying(&mut self) {
        self.queue.clear();
    }

    /// Whether every key is placed or skipped, with no query in flight.
    pub(super) fn is_done(&self) -> bool {
        self.in_flight == 0 && self.queue.iter().all(|i| self.placements[*i] != Placement::Open)
    }

    pub(super) fn key(&self, i: usize) -> Option<&Key> {
        self.keys.get(i)
    }

    pub(super) fn point(&self, i: usize) -> Option<&Point> {
        self.points.get(i)
    }

    /// The keys to announce, grouped by peer (with the peer's addresses),
    /// and the keys that could not be placed (their query failed, or the
    /// batch ran out of time); keys the local store refused are in neither.
    pub(super) fn finish(self) -> (HashMap<PeerId, Announce>, Vec<usize>) {
        let mut per_peer: HashMap<PeerId, Announce> = HashMap::new();
        let mut unplaced = Vec::new();
        for (i, (placement, key)) in self.placements.into_iter().zip(&self.keys).enumerate() {
            match placement {
                Placement::Placed(contacts) => {
                    let text = key.to_string();
                    for Contact { peer, addrs } in contacts {
                        let entry = per_peer.entry(peer).or_insert_with(|| Announce { addrs, keys: Vec::new() });
                        entry.keys.push(text.clone());
                    }
                }
                Placement::Open | Placement::Failed => unplaced.push(i),
                Placement::Skipped => {}
            }
        }
        (per_peer, unplaced)
    }
}

/// What one peer is sent: its keys, and the addresses to dial it at if it
/// is not connected (empty: whatever the swarm knows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Announce {
    pub(super) addrs: Vec<Multiaddr>,
    pub(super) keys: Vec<String>,
}

/// The keyspace point of a key (the hash Kademlia places it by).
pub(super) fn point_of_key(key: &Key) -> Point {
    point_of(KBucketKey::new(super::bulk::record_key(key)).hashed_bytes())
}

/// The keyspace point of a peer.
pub(super) fn point_of_peer(peer: &PeerId) -> Point {
    point_of(KBucketKey::from(*peer).hashed_bytes())
}

/// A SHA-256 hash as a point (`hashed_bytes` is always 32 bytes long).
fn point_of(hash: &[u8]) -> Point {
    std::array::from_fn(|i| hash.get(i).copied().unwrap_or(0))
}

/// Why a key of a swept batch was not advertised.
pub(super) fn unplaced_error(key: &Key) -> Error {
    Error::Provide { key: key.clone(), reason: "its closest peers could not be found in time".into() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    const K: usize = 20;

    fn keys(n: u32) -> Vec<Key> {
        (0..n).map(|i| Key::Digest(Digest::of(&i.to_be_bytes()))).collect()
    }

    fn contact(peer: PeerId) -> Contact {
        Contact { peer, addrs: Vec::new() }
    }

    /// A network of `n` peers: for a point, the true `K` closest of them.
    fn network(n: usize) -> impl Fn(&Point) -> Vec<(Point, Contact)> {
        let peers: Vec<(Point, Contact)> = (0..n)
            .map(|_| {
                let peer = PeerId::random();
                (point_of_peer(&peer), contact(peer))
            })
            .collect();
        move |target: &Point| {
            let mut sorted = peers.clone();
            sorted.sort_by_key(|(p, _)| super::super::keyspace::xor(p, target));
            sorted.truncate(K);
            sorted
        }
    }

    /// Runs a sweep to its end against an exact network, one query at a
    /// time; returns the sweep's placements and how many queries it made.
    fn run(sweep: &mut Sweep, map: &mut Map, closest: &impl Fn(&Point) -> Vec<(Point, Contact)>) -> usize {
        let mut queries = 0;
        while let Some((i, _)) = sweep.next_query(map) {
            queries += 1;
            let point = *sweep.point(i).unwrap();
            let found = closest(&point);
            map.learn_closest(&point, &found);
            sweep.queried(i, Some(found.into_iter().map(|(_, peer)| peer).collect()));
            if let Some(interval) = map.covering(&point) {
                sweep.place_known(map, interval);
            }
        }
        assert!(sweep.is_done());
        queries
    }

    #[test]
    fn every_key_goes_to_its_true_closest_peers_with_fewer_queries_than_keys() {
        let closest = network(400);
        let mut map: Map = NetworkMap::new(K);
        let batch = keys(500);
        let mut sweep = Sweep::new(batch.clone(), &[], &map, Instant::now());
        let queries = run(&mut sweep, &mut map, &closest);
        let (per_peer, unplaced) = sweep.finish();
        assert!(unplaced.is_empty());
        for key in &batch {
            let want: Vec<PeerId> = closest(&point_of_key(key)).into_iter().map(|(_, c)| c.peer).collect();
            let text = key.to_string();
            let got: Vec<PeerId> =
                per_peer.iter().filter(|(_, a)| a.keys.contains(&text)).map(|(peer, _)| *peer).collect();
            assert_eq!(got.len(), K, "{key}");
            assert!(want.iter().all(|p| got.contains(p)), "{key}");
        }
        // About 50: a few queries per 20 peers of the network.
        assert!(queries < batch.len() / 4, "{queries} queries for {} keys", batch.len());

        // The next batch finds the map already built.
        let mut next = Sweep::new(keys(600).split_off(500), &[], &map, Instant::now());
        let again = run(&mut next, &mut map, &closest);
        assert!(again < 10, "{again} queries for the second batch");
    }

    #[test]
    fn a_failed_query_reports_its_key_and_refused_keys_are_skipped() {
        let map: Map = NetworkMap::new(K);
        let batch = keys(3);
        let mut sweep = Sweep::new(batch, &[true, false, false], &map, Instant::now());
        let mut queried = Vec::new();
        while let Some((i, _)) = sweep.next_query(&map) {
            queried.push(i);
        }
        queried.sort_unstable();
        assert_eq!(queried, vec![1, 2], "the refused key is not queried");
        assert!(!sweep.is_done());
        sweep.queried(1, None);
        let addr: Multiaddr = "/ip4/127.0.0.9/tcp/4001".parse().unwrap();
        let peer = PeerId::random();
        sweep.queried(2, Some(vec![Contact { peer, addrs: vec![addr.clone()] }]));
        assert!(sweep.is_done());
        let (per_peer, unplaced) = sweep.finish();
        assert_eq!(per_peer.len(), 1);
        assert_eq!(per_peer[&peer].addrs, vec![addr], "the peer's addresses from its query go with its keys");
        assert_eq!(unplaced, vec![1], "the key whose query failed, and not the refused one");
    }

    #[test]
    fn a_stopped_sweep_waits_for_its_queries_in_flight_and_starts_no_more() {
        let map: Map = NetworkMap::new(K);
        let mut sweep = Sweep::new(keys(5), &[], &map, Instant::now());
        let (first, _) = sweep.next_query(&map).unwrap();
        sweep.stop_querying();
        assert!(sweep.next_query(&map).is_none());
        assert!(!sweep.is_done(), "its query is still in flight");
        sweep.queried(first, Some(vec![contact(PeerId::random())]));
        assert!(sweep.is_done());
        let (per_peer, unplaced) = sweep.finish();
        assert_eq!(per_peer.len(), 1);
        assert_eq!(unplaced.len(), 4);
    }

    #[test]
    fn a_sweep_starts_with_a_few_queries_and_widens_as_they_end() {
        let map: Map = NetworkMap::new(K);
        let mut sweep = Sweep::new(keys(100), &[], &map, Instant::now());
        let mut started = Vec::new();
        while sweep.has_room() {
            started.push(sweep.next_query(&map).unwrap().0);
        }
        assert_eq!(started.len(), FIRST_QUERIES);
        sweep.queried(started[0], None);
        let mut more = 0;
        while sweep.has_room() {
            sweep.next_query(&map).unwrap();
            more += 1;
        }
        assert_eq!(more, 2, "the one that ended is replaced, and one more starts");
        let mut most = 0;
        for _ in 0..30 {
            while sweep.has_room() {
                started.push(sweep.next_query(&map).unwrap().0);
            }
            most = most.max(sweep.in_flight);
            let oldest = started.remove(1);
            sweep.queried(oldest, None);
        }
        assert_eq!(most, MAX_QUERIES, "never more than the most at once");
    }

    #[test]
    fn keys_still_open_at_the_end_are_reported_unplaced() {
        let map: Map = NetworkMap::new(K);
        let mut sweep = Sweep::new(keys(4), &[], &map, Instant::now());
        let first = sweep.next_query(&map).map(|(i, _)| i);
        assert!(first.is_some());
        let (per_peer, unplaced) = sweep.finish();
        assert!(per_peer.is_empty());
        assert_eq!(unplaced.len(), 4);
    }
}
