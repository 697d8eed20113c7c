//! Batched advertisement: many keys announced with one message per peer.
//!
//! A Kademlia provide is an iterative query per key (a dozen or more round
//! trips) followed by one message per replica: thousands of keys cost
//! thousands of queries. Instead, this node works out each key's `K_VALUE`
//! closest peers itself and sends every peer all of its records in one
//! announcement (the idea of IPFS's accelerated client). Receivers store
//! ordinary provider records, so lookups are plain Kademlia and find them.
//!
//! Where the closest peers come from:
//! - **The routing table**, when it holds the whole network: a bootstrap
//!   walk has completed, no bucket is full, and one query for the closest
//!   peers of one of the batch's keys found none the table lacks (the usual
//!   case up to about a hundred nodes).
//! - **A sweep** when the network is larger than the table (a bucket is
//!   full; see `sweep` and `keyspace`): a map of the
//!   keyspace built from closest-peers queries, shared by the batches of
//!   the next minute, places every key it can; the others get a query each.
//!   A large cluster thus costs a few queries per 20 peers of the network
//!   for a whole re-advertisement, instead of one per key. Most peers a
//!   sweep reaches are in no routing table: they are dialled at the
//!   addresses their query returned.
//!
//! Right after start-up, batches wait (up to [`BOOTSTRAP_WAIT`]) for the
//! first bootstrap walk, so that a restarting node re-advertises in batches
//! too. A node that completes none, or whose table (with no full bucket)
//! the check query does not confirm, is told to provide key by key.
//!
//! Owns: the batches in flight (table checks, sweeps and their queries, the
//! network map), the announcement requests they wait for, resending one
//! whose connection closed under it, and storing the records peers announce
//! to this node. A batch ends once every announcement was answered or
//! failed, or at its deadline; a key counts as advertised when at least
//! half of the closest peers it was sent to stored it (`tally`). A key
//! whose closest peers were not found, or too few of them stored it,
//! fails, and the advertiser tries it again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::kad::store::RecordStore;
use libp2p::kad::{
    GetClosestPeersError, GetClosestPeersOk, GetClosestPeersResult, K_VALUE, KBucketKey, ProviderRecord, QueryId,
    RecordKey,
};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::announce::{Announcement, MAX_KEYS_PER_REQUEST, Stored};
use super::behaviour::{Behaviour, KBUCKET_SIZE};
use super::keyspace::NetworkMap;
use super::sweep::{Announce, Contact, Map, Sweep, point_of_peer, unplaced_error};
use super::tally::Tally;
use crate::oci::Key;
use crate::routing::Error;

/// Most addresses a peer may announce with its keys, and a sweep keeps of
/// a peer its query found.
const MAX_ANNOUNCED_ADDRS: usize = 8;
/// How long a batch waits for the first bootstrap walk before falling back
/// to one query per key (a node alone never completes one).
pub(super) const BOOTSTRAP_WAIT: Duration = Duration::from_secs(10);
/// A batch is done after this long even if some announcements are still
/// pending (a blackholed peer may hold a dial for minutes); a key that half
/// of its peers stored by then is advertised.
pub(super) const BATCH_DEADLINE: Duration = Duration::from_secs(15);
/// How long a sweep may start queries; it then waits for those in flight
/// (each ends within `QUERY_TIMEOUT`), and keys still unplaced fail: the
/// advertiser tries them again. A sweep of 256 keys in a 1,000-node
/// network needs about a hundred queries, up to 16 at once: a few seconds.
pub(super) const SWEEP_DEADLINE: Duration = Duration::from_secs(60);
/// How long the network map is trusted: peers come and go, so the first
/// sweep that starts after this starts a fresh map (keys that sweeps
/// already placed stay placed; the rest are placed by the fresh map).
const MAP_TTL: Duration = Duration::from_secs(60);

/// What batched advertisement has done since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkStats {
    /// Batches announced from the routing table.
    pub table_batches: u64,
    /// Batches swept, the keys in them, and the closest-peers queries they
    /// started (fewer than keys where the network map placed them).
    pub sweeps: u64,
    pub keys_swept: u64,
    pub sweep_queries: u64,
    /// Swept keys whose closest peers were not found in time.
    pub keys_unplaced: u64,
    /// Keys that fewer than half of the peers they were sent to stored.
    pub keys_understored: u64,
    /// Batches told to provide key by key.
    pub key_by_key: u64,
}

/// Where a batch's results go: one per key, in order.
pub(super) type Reply = oneshot::Sender<BulkOutcome>;

/// How a batch ended.
#[derive(Debug)]
pub(super) enum BulkOutcome {
    /// One result per key, in order.
    Done(Vec<Result<(), Error>>),
    /// The routing table is not confirmed to hold the whole network, yet
    /// no bucket is full (a small network, or a node still joining it):
    /// provide key by key.
    NeedQueries,
}

struct Batch {
    reply: Reply,
    tally: Tally,
}

/// An announcement in flight: which batch waits for it, and what to resend.
struct Sent {
    batch: u64,
    peer: PeerId,
    /// Where to dial the peer if it is not connected (empty: the swarm knows).
    addrs: Vec<Multiaddr>,
    announcement: Announcement,
    /// The positions in the batch of the announced keys.
    indices: Vec<u32>,
    /// Whether this is already the resend.
    resent: bool,
}

/// A batch whose routing table is being checked against the network.
struct Checking {
    keys: Vec<Key>,
    reply: Reply,
    /// The peers of the table when the batch started.
    known: HashSet<PeerId>,
}

/// A batch placing its keys through the network map (see `sweep`).
struct Swept {
    sweep: Sweep,
    results: Vec<Result<(), Error>>,
    reply: Reply,
}

/// A batch waiting for the first bootstrap walk.
struct Waiting {
    keys: Vec<Key>,
    reply: Reply,
}

/// Whether the routing table can be trusted to hold the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bootstrap {
    /// No walk completed yet; batches wait until `until`.
    Pending {
        until: Instant,
    },
    /// Waited in vain: batches go key by key until a walk completes.
    GaveUp,
    Done,
}

/// Batches in flight, and the settings receivers need.
pub(super) struct Bulk {
    provider_ttl: Duration,
    /// Whether batches may be placed from the routing table (see `P2pConfig`).
    place_from_table: bool,
    bootstrap: Bootstrap,
    waiting: Vec<Waiting>,
    checking: HashMap<QueryId, Checking>,
    batches: HashMap<u64, Batch>,
    requests: HashMap<OutboundRequestId, Sent>,
    next_batch: u64,
    /// The keyspace as queries have shown it, and since when.
    map: Map,
    map_since: Instant,
    sweeps: HashMap<u64, Swept>,
    /// A sweep's query: the batch, and the index of the key it is for.
    sweep_queries: HashMap<QueryId, (u64, usize)>,
    stats: BulkStats,
}

impl Bulk {
    pub(super) fn new(provider_ttl: Duration, place_from_table: bool) -> Self {
        Self {
            provider_ttl,
            place_from_table,
            bootstrap: Bootstrap::Pending { until: Instant::now() + BOOTSTRAP_WAIT },
            waiting: Vec::new(),
            checking: HashMap::new(),
            batches: HashMap::new(),
            requests: HashMap::new(),
            next_batch: 0,
            map: NetworkMap::new(K_VALUE.get()),
            map_since: Instant::now(),
            sweeps: HashMap::new(),
            sweep_queries: HashMap::new(),
            stats: BulkStats::default(),
        }
    }

    pub(super) fn stats(&self) -> BulkStats {
        self.stats
    }

    /// A bootstrap walk completed: the routing table reflects the network.
    /// Batches waiting for it start now.
    pub(super) fn set_bootstrapped(&mut self, swarm: &mut Swarm<Behaviour>) {
        if self.bootstrap != Bootstrap::Done {
            tracing::debug!(waiting = self.waiting.len(), "routing table bootstrapped; batched advertisement enabled");
        }
        self.bootstrap = Bootstrap::Done;
        for Waiting { keys, reply } in std::mem::take(&mut self.waiting) {
            self.start(swarm, keys, reply);
        }
    }

    /// Gives up waiting for the first bootstrap once its time is over, and
    /// ends batches past their deadline.
    pub(super) fn on_tick(&mut self, swarm: &mut Swarm<Behaviour>, now: Instant) {
        if let Bootstrap::Pending { until } = self.bootstrap
            && now >= until
        {
            self.bootstrap = Bootstrap::GaveUp;
            for Waiting { keys, reply } in std::mem::take(&mut self.waiting) {
                self.start(swarm, keys, reply);
            }
        }
        let overdue: Vec<u64> =
            self.batches.iter().filter(|(_, b)| now >= b.tally.deadline).map(|(id, _)| *id).collect();
        for id in overdue {
            if let Some(Batch { reply, tally }) = self.batches.remove(&id) {
                tracing::debug!(unanswered = tally.outstanding(), "batch deadline passed; some peers were not reached");
                self.done(reply, tally);
            }
        }
        let overdue: Vec<u64> =
            self.sweeps.iter().filter(|(_, s)| now >= s.sweep.deadline).map(|(id, _)| *id).collect();
        for id in overdue {
            let Some(swept) = self.sweeps.get_mut(&id) else { continue };
            swept.sweep.stop_querying();
            if swept.sweep.is_done() {
                tracing::debug!("sweep deadline passed; keys not placed yet fail");
                self.finish_sweep(swarm, id);
            }
        }
    }

    /// Advertises `keys` in one batch: from the routing table if it holds
    /// the whole network, after checking that against the network itself
    /// (see [`Bulk::on_checked`]); by a sweep if the network is larger than
    /// the table (a bucket is full). A node that completed no bootstrap
    /// walk is told to provide key by key (unless batches may not come from
    /// the table at all: then every batch is a sweep).
    pub(super) fn start(&mut self, swarm: &mut Swarm<Behaviour>, keys: Vec<Key>, reply: Reply) {
        match self.bootstrap {
            Bootstrap::Pending { .. } => {
                self.waiting.push(Waiting { keys, reply });
                return;
            }
            Bootstrap::GaveUp if self.place_from_table => {
                self.stats.key_by_key += 1;
                let _ = reply.send(BulkOutcome::NeedQueries);
                return;
            }
            Bootstrap::GaveUp | Bootstrap::Done => {}
        }
        let Some(sample) = keys.first() else {
            let _ = reply.send(BulkOutcome::Done(Vec::new()));
            return;
        };
        let table = if self.place_from_table { whole_network(swarm) } else { None };
        let Some(peers) = table else {
            self.sweep(swarm, keys, reply);
            return;
        };
        let known = peers.iter().map(|p| *p.preimage()).collect();
        let query = swarm.behaviour_mut().kad.get_closest_peers(record_key(sample).to_vec());
        self.checking.insert(query, Checking { keys, reply, known });
    }

    /// A table that holds no full bucket may still miss peers: a node that
    /// started early, or under load, has not heard of everyone yet, and
    /// records it placed by that table would sit where no lookup looks.
    /// So each batch first asks the network for the closest peers of one of
    /// its keys: if the table held all of them, the batch is announced from
    /// it; if not, the caller provides key by key (and the table, which the
    /// query just taught, is checked again by the next batch).
    fn on_checked(&mut self, swarm: &mut Swarm<Behaviour>, query: QueryId, outcome: GetClosestPeersResult) {
        let Some(Checking { keys, reply, known }) = self.checking.remove(&query) else { return };
        let (found, complete) = match outcome {
            Ok(GetClosestPeersOk { peers, .. }) => (peers, true),
            // A query that timed out lists the peers that answered: few
            // answers say nothing of what the table lacks.
            Err(GetClosestPeersError::Timeout { peers, .. }) => {
                let enough = peers.len() >= K_VALUE.get().min(known.len());
                (peers, enough)
            }
        };
        let missing = found.iter().filter(|p| !known.contains(&p.peer_id)).count();
        match whole_network(swarm) {
            Some(peers) if complete && missing == 0 => {
                self.stats.table_batches += 1;
                self.announce(swarm, &peers, keys, reply);
            }
            _ => {
                tracing::debug!(missing, complete, known = known.len(), "routing table not confirmed: key by key");
                self.stats.key_by_key += 1;
                let _ = reply.send(BulkOutcome::NeedQueries);
            }
        }
    }

    /// Whether `query` is one of this module's closest-peers queries.
    pub(super) fn owns_query(&self, query: &QueryId) -> bool {
        self.checking.contains_key(query) || self.sweep_queries.contains_key(query)
    }

    /// A closest-peers query of this module ended.
    pub(super) fn on_closest_peers(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        query: QueryId,
        outcome: GetClosestPeersResult,
    ) {
        if self.checking.contains_key(&query) {
            self.on_checked(swarm, query, outcome);
        } else {
            self.on_swept(swarm, query, outcome);
        }
    }

    /// Starts a sweep of `keys`: stores their local records, places what the
    /// network map already can, and queries for the rest.
    fn sweep(&mut self, swarm: &mut Swarm<Behaviour>, keys: Vec<Key>, reply: Reply) {
        if self.map_since.elapsed() >= MAP_TTL {
            self.map = NetworkMap::new(K_VALUE.get());
            self.map_since = Instant::now();
        }
        let results = store_local(swarm, &keys);
        let refused: Vec<bool> = results.iter().map(Result::is_err).collect();
        let sweep = Sweep::new(keys, &refused, &self.map, Instant::now() + SWEEP_DEADLINE);
        let id = self.next_batch;
        self.next_batch += 1;
        self.stats.sweeps += 1;
        self.sweeps.insert(id, Swept { sweep, results, reply });
        self.continue_sweep(swarm, id);
    }

    /// Starts queries for sweep `id` up to its limit, or finishes it.
    fn continue_sweep(&mut self, swarm: &mut Swarm<Behaviour>, id: u64) {
        let Some(swept) = self.sweeps.get_mut(&id) else { return };
        while swept.sweep.has_room() {
            let Some((i, key)) = swept.sweep.next_query(&self.map) else { break };
            let query = swarm.behaviour_mut().kad.get_closest_peers(record_key(&key).to_vec());
            self.stats.sweep_queries += 1;
            self.sweep_queries.insert(query, (id, i));
        }
        if swept.sweep.is_done() {
            self.finish_sweep(swarm, id);
        }
    }

    /// A sweep's query ended: the map learns from it, its key is placed on
    /// the peers found (or fails), and every sweep places what it now can.
    fn on_swept(&mut self, swarm: &mut Swarm<Behaviour>, query: QueryId, outcome: GetClosestPeersResult) {
        let Some((id, i)) = self.sweep_queries.remove(&query) else { return };
        let (peers, complete) = match outcome {
            Ok(GetClosestPeersOk { peers, .. }) => (peers, true),
            Err(GetClosestPeersError::Timeout { peers, .. }) => (peers, false),
        };
        let found: Vec<(_, Contact)> = peers
            .into_iter()
            .map(|p| {
                let addrs = p.addrs.into_iter().take(MAX_ANNOUNCED_ADDRS).collect();
                (point_of_peer(&p.peer_id), Contact { peer: p.peer_id, addrs })
            })
            .collect();
        let target = self.sweeps.get(&id).and_then(|s| s.sweep.point(i)).copied();
        match target {
            Some(target) if complete => self.map.learn_closest(&target, &found),
            _ => self.map.learn_peers(found.iter().cloned()),
        }
        if let Some(swept) = self.sweeps.get_mut(&id) {
            swept.sweep.queried(i, complete.then(|| found.into_iter().map(|(_, contact)| contact).collect()));
        }
        if let Some(interval) = target.and_then(|t| self.map.covering(&t)) {
            for swept in self.sweeps.values_mut() {
                swept.sweep.place_known(&self.map, interval);
            }
        }
        self.continue_sweep(swarm, id);
    }

    /// Ends sweep `id`: keys not placed fail, the rest are announced.
    fn finish_sweep(&mut self, swarm: &mut Swarm<Behaviour>, id: u64) {
        let Some(Swept { sweep, mut results, reply }) = self.sweeps.remove(&id) else { return };
        // Its queries still running serve no one now: stop them.
        let kad = &mut swarm.behaviour_mut().kad;
        self.sweep_queries.retain(|query, (batch, _)| {
            if *batch == id
                && let Some(mut running) = kad.query_mut(query)
            {
                running.finish();
            }
            *batch != id
        });
        let keys: Vec<Key> = (0..results.len()).filter_map(|i| sweep.key(i).cloned()).collect();
        let (per_peer, unplaced) = sweep.finish();
        self.stats.keys_swept += keys.len() as u64;
        self.stats.keys_unplaced += unplaced.len() as u64;
        for i in unplaced {
            if let (Some(result), Some(key)) = (results.get_mut(i), keys.get(i)) {
                *result = Err(unplaced_error(key));
            }
        }
        tracing::debug!(keys = keys.len(), peers = per_peer.len(), map = self.map.len(), "sweep placed its keys");
        self.send_batch(swarm, per_peer, Tally::new(keys, results, Instant::now() + BATCH_DEADLINE), reply);
    }

    /// Stores the local records of `keys` and announces them to their closest peers.
    fn announce(&mut self, swarm: &mut Swarm<Behaviour>, peers: &[KBucketKey<PeerId>], keys: Vec<Key>, reply: Reply) {
        let results = store_local(swarm, &keys);
        let stored = keys.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(k, _)| k);
        let per_peer = closest_peers(peers, stored)
            .into_iter()
            .map(|(peer, keys)| (peer, Announce { addrs: Vec::new(), keys }))
            .collect();
        self.send_batch(swarm, per_peer, Tally::new(keys, results, Instant::now() + BATCH_DEADLINE), reply);
    }

    /// Sends every peer its keys; the batch is done once each announcement
    /// was answered or failed, or at its deadline (see `tally` for which
    /// keys then count as advertised).
    fn send_batch(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        per_peer: HashMap<PeerId, Announce>,
        mut tally: Tally,
        reply: Reply,
    ) {
        let announced_addrs: Vec<String> =
            swarm.external_addresses().take(MAX_ANNOUNCED_ADDRS).map(ToString::to_string).collect();
        let positions = tally.positions();
        let id = self.next_batch;
        self.next_batch += 1;
        for (peer, Announce { addrs, keys }) in per_peer {
            for chunk in keys.chunks(MAX_KEYS_PER_REQUEST) {
                let indices: Vec<u32> = chunk.iter().filter_map(|key| positions.get(key).copied()).collect();
                debug_assert_eq!(indices.len(), chunk.len(), "every announced key is one of the batch's");
                tally.sent(&indices);
                let announcement = Announcement { keys: chunk.to_vec(), addrs: announced_addrs.clone() };
                let addrs = addrs.clone();
                self.send(swarm, Sent { batch: id, peer, addrs, announcement, indices, resent: false });
            }
        }
        if tally.outstanding() == 0 {
            self.done(reply, tally);
        } else {
            self.batches.insert(id, Batch { reply, tally });
        }
    }

    pub(super) fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        event: request_response::Event<Announcement, Stored>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.store_announced(swarm, peer, request, channel);
                }
                request_response::Message::Response { request_id, response } => {
                    tracing::trace!(%peer, stored = response.stored, "announcement stored");
                    if let Some(sent) = self.requests.remove(&request_id) {
                        // A receiver that stored fewer (its store is full)
                        // does not say which: none count.
                        let all = response.stored as usize >= sent.announcement.keys.len();
                        self.answered(&sent, all);
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let closed = matches!(error, request_response::OutboundFailure::ConnectionClosed);
                match self.requests.remove(&request_id) {
                    Some(sent) if closed && !sent.resent && self.batches.contains_key(&sent.batch) => {
                        tracing::debug!(%peer, "connection closed under an announcement; sending it again");
                        self.send(swarm, Sent { resent: true, ..sent });
                    }
                    Some(sent) => {
                        tracing::debug!(%peer, %error, "announcement not delivered");
                        if matches!(error, request_response::OutboundFailure::DialFailure) {
                            // Gone (or unreachable): the next sweeps place its
                            // keys on the peers that remain.
                            self.map.forget(&point_of_peer(&peer));
                        }
                        self.answered(&sent, false);
                    }
                    None => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound announcement failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Sends one announcement. A connection that closes under it (an idle
    /// connection closing just as the request was queued on it, or a peer
    /// restarting) gets it sent once more, over a new connection.
    fn send(&mut self, swarm: &mut Swarm<Behaviour>, sent: Sent) {
        let (announcement, addrs) = (sent.announcement.clone(), sent.addrs.clone());
        let request = swarm.behaviour_mut().announce.send_request_with_addresses(&sent.peer, announcement, addrs);
        self.requests.insert(request, sent);
    }

    /// An announcement was answered (`stored`: every key of it stored) or
    /// failed for good.
    fn answered(&mut self, sent: &Sent, stored: bool) {
        let Some(batch) = self.batches.get_mut(&sent.batch) else { return };
        if batch.tally.answered(&sent.indices, stored)
            && let Some(Batch { reply, tally }) = self.batches.remove(&sent.batch)
        {
            self.done(reply, tally);
        }
    }

    /// Sends a batch's results.
    fn done(&mut self, reply: Reply, tally: Tally) {
        let (results, understored) = tally.finish();
        self.stats.keys_understored += understored;
        let _ = reply.send(BulkOutcome::Done(results));
    }

    /// Stores the records `peer` announced, as a Kademlia ADD_PROVIDER would.
    fn store_announced(
        &self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        announcement: Announcement,
        channel: ResponseChannel<Stored>,
    ) {
        let addrs: Vec<Multiaddr> =
            announcement.addrs.iter().filter_map(|a| a.parse().ok()).take(MAX_ANNOUNCED_ADDRS).collect();
        let expires = std::time::Instant::now() + self.provider_ttl;
        let store = swarm.behaviour_mut().kad.store_mut();
        let mut stored = 0u32;
        for text in &announcement.keys {
            // Only well-formed keys: a peer cannot fill the store with junk.
            let Ok(key) = text.parse::<Key>() else { continue };
            let record = ProviderRecord {
                key: record_key(&key),
                provider: peer,
                expires: Some(expires),
                addresses: addrs.clone(),
            };
            stored += u32::from(store.add_provider(record).is_ok());
        }
        if swarm.behaviour_mut().announce.send_response(channel, Stored { stored }).is_err() {
            tracing::debug!(%peer, "the announcing peer left before the answer");
        }
    }
}

/// Stores this node's own record of each key; one result per key.
fn store_local(swarm: &mut Swarm<Behaviour>, keys: &[Key]) -> Vec<Result<(), Error>> {
    let local = *swarm.local_peer_id();
    let addrs: Vec<Multiaddr> = swarm.external_addresses().cloned().collect();
    let store = swarm.behaviour_mut().kad.store_mut();
    keys.iter()
        .map(|key| {
            let record = ProviderRecord::new(record_key(key), local, addrs.clone());
            store.add_provider(record).map_err(|e| Error::Provide {
                key: key.clone(),
                reason: format!("the local record store refused: {e}"),
            })
        })
        .collect()
}

/// Every peer of the routing table, if the table holds the whole network as
/// far as this node can tell: no bucket full, no candidate waiting for room.
fn whole_network(swarm: &mut Swarm<Behaviour>) -> Option<Vec<KBucketKey<PeerId>>> {
    let mut peers = Vec::new();
    for bucket in swarm.behaviour_mut().kad.kbuckets() {
        if bucket.num_entries() >= KBUCKET_SIZE || bucket.has_pending() {
            return None;
        }
        peers.extend(bucket.iter().map(|entry| *entry.node.key));
    }
    Some(peers)
}

/// For each key, its `K_VALUE` closest peers; grouped by peer.
fn closest_peers<'k>(
    peers: &[KBucketKey<PeerId>],
    keys: impl Iterator<Item = &'k Key>,
) -> HashMap<PeerId, Vec<String>> {
    let mut per_peer: HashMap<PeerId, Vec<String>> = HashMap::new();
    let k = K_VALUE.get();
    let mut by_distance = Vec::with_capacity(peers.len());
    for key in keys {
        let target = KBucketKey::new(record_key(key));
        by_distance.clear();
        by_distance.extend(peers.iter().map(|p| (p.distance(&target), *p.preimage())));
        if by_distance.len() > k {
            by_distance.select_nth_unstable_by_key(k - 1, |(distance, _)| *distance);
            by_distance.truncate(k);
        }
        let text = key.to_string();
        for (_, peer) in &by_distance {
            per_peer.entry(*peer).or_default().push(text.clone());
        }
    }
    per_peer
}

pub(super) fn record_key(key: &Key) -> RecordKey {
    RecordKey::new(&key.to_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    #[test]
    fn each_key_goes_to_its_k_closest_peers() {
        let peers: Vec<KBucketKey<PeerId>> = (0..50).map(|_| KBucketKey::from(PeerId::random())).collect();
        let keys: Vec<Key> = (0..20).map(|i| Key::Digest(Digest::of(&[i]))).collect();
        let per_peer = closest_peers(&peers, keys.iter());
        let total: usize = per_peer.values().map(Vec::len).sum();
        assert_eq!(total, keys.len() * K_VALUE.get());
        for key in &keys {
            let target = KBucketKey::new(record_key(key));
            let mut all: Vec<_> = peers.iter().map(|p| (p.distance(&target), *p.preimage())).collect();
            all.sort();
            let text = key.to_string();
            for (rank, (_, peer)) in all.iter().enumerate() {
                let chosen = per_peer.get(peer).is_some_and(|keys| keys.contains(&text));
                assert_eq!(chosen, rank < K_VALUE.get(), "{key}: peer at rank {rank}");
            }
        }
    }

    #[test]
    fn a_small_network_gets_every_key_everywhere() {
        let peers: Vec<KBucketKey<PeerId>> = (0..5).map(|_| KBucketKey::from(PeerId::random())).collect();
        let keys: Vec<Key> = (0..3).map(|i| Key::Digest(Digest::of(&[i]))).collect();
        let per_peer = closest_peers(&peers, keys.iter());
        assert_eq!(per_peer.len(), 5);
        assert!(per_peer.values().all(|keys| keys.len() == 3));
    }
}
