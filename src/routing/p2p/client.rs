//! `P2pRouter`: the cheap, cloneable handle through which the rest of Shoal
//! talks to the swarm task.
//!
//! Owns: turning [`Router`] calls into commands on a bounded channel, awaiting
//! their replies with a time limit, and the state the swarm task publishes
//! for synchronous readers (peer count, readiness). Never touches the swarm.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::behaviour::QUERY_TIMEOUT;
use super::bootstrap::Target;
use super::bulk::{self, BATCH_DEADLINE, BOOTSTRAP_WAIT, BulkOutcome, BulkStats, SWEEP_DEADLINE};
use super::known::KnownPeer;
use super::peer_ips::PeerIps;
use super::store::StoreStats;
use crate::oci::Key;
use crate::routing::{Error, Links, Peer, PeerName, Router};

/// Commands queued for the swarm task before senders wait.
pub(super) const COMMAND_CAPACITY: usize = 1024;
/// How long a provide may wait for its query: the query's own limit plus slack.
const PROVIDE_TIMEOUT: Duration = QUERY_TIMEOUT.saturating_add(Duration::from_secs(15));
/// How long a batch may take: the wait for the first bootstrap walk, the
/// routing-table check (a query), a sweep (its deadline, then its last
/// queries) and the announcements' deadline, plus slack.
const PROVIDE_MANY_TIMEOUT: Duration = BOOTSTRAP_WAIT
    .saturating_add(QUERY_TIMEOUT)
    .saturating_add(SWEEP_DEADLINE)
    .saturating_add(QUERY_TIMEOUT)
    .saturating_add(BATCH_DEADLINE)
    .saturating_add(Duration::from_secs(15));
/// Key-by-key provides in flight for one batch when batching is not possible.
const QUERIES_PER_BATCH: usize = 16;
/// Commands that only touch local state answer well within this.
const LOCAL_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the swarm task is asked to do.
pub(super) enum Command {
    Provide {
        key: Key,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// Provide several keys in one batch.
    ProvideMany {
        keys: Vec<Key>,
        reply: bulk::Reply,
    },
    Withdraw {
        key: Key,
        reply: oneshot::Sender<()>,
    },
    Lookup {
        key: Key,
        limit: usize,
        deadline: Instant,
        /// Unbounded, but the swarm task sends at most `limit` distinct peers.
        results: mpsc::UnboundedSender<Peer>,
    },
    /// Dial bootstrap targets (fire and forget: connections show in the peer count).
    Dial {
        targets: Vec<Target>,
    },
    /// List the peers of the routing table.
    KnownPeers {
        reply: oneshot::Sender<Vec<KnownPeer>>,
    },
    /// Seed the routing table with peers known earlier and dial them.
    DialKnown {
        peers: Vec<KnownPeer>,
    },
    /// The mirror found the peer unresponsive: stop routing through it.
    Unresponsive {
        peer: PeerId,
    },
    /// The peer answers again: route through it again.
    Recovered {
        peer: PeerId,
    },
    /// Count the records of the local store and the lookups' queries.
    Stats {
        reply: oneshot::Sender<RouterStats>,
    },
}

/// Counters of one node's router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub store: StoreStats,
    /// Provider-lookup queries that ended.
    pub lookup_queries: u64,
    /// Requests those queries sent to peers (Kademlia's `QueryStats`).
    pub lookup_requests: u64,
    /// The most requests one of those queries sent.
    pub lookup_max_requests: u32,
    pub bulk: BulkStats,
}

impl RouterStats {
    /// A provider-lookup query ended after sending `requests` requests.
    pub(super) fn lookup_ended(&mut self, requests: u32) {
        self.lookup_queries += 1;
        self.lookup_requests += u64::from(requests);
        self.lookup_max_requests = self.lookup_max_requests.max(requests);
    }
}

/// State the swarm task publishes for synchronous readers.
#[derive(Debug, Default)]
pub(super) struct Shared {
    connected: AtomicUsize,
    /// True when there is nobody to connect to: no bootstrap configured, or
    /// bootstrap resolved to this node only.
    alone: AtomicBool,
    closed: AtomicBool,
    /// The addresses this node listens on (a std mutex: never held across an await).
    listen_addrs: Mutex<Vec<SocketAddr>>,
    /// Connection state per peer, fed by the swarm task.
    pub(super) links: Links,
    /// Connected peers' IP addresses (a std mutex: never held across an await).
    pub(super) peer_ips: Mutex<PeerIps>,
}

impl Shared {
    pub(super) fn new(alone: bool) -> Self {
        Self { alone: AtomicBool::new(alone), ..Self::default() }
    }

    pub(super) fn set_connected(&self, peers: usize) {
        self.connected.store(peers, Ordering::Relaxed);
    }

    pub(super) fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    pub(super) fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Ordering::Relaxed);
    }

    pub(super) fn set_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.connected.store(0, Ordering::Relaxed);
    }

    pub(super) fn add_listen_addr(&self, addr: SocketAddr) {
        self.listen_addrs.lock().unwrap_or_else(PoisonError::into_inner).push(addr);
    }

    pub(super) fn is_own_address(&self, addr: SocketAddr) -> bool {
        self.listen_addrs.lock().unwrap_or_else(PoisonError::into_inner).contains(&addr)
    }

    pub(super) fn peer_ips(&self) -> std::sync::MutexGuard<'_, PeerIps> {
        self.peer_ips.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_ready(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && (self.connected() > 0 || self.alone.load(Ordering::Relaxed))
    }
}

/// A handle to the libp2p router. Clones share one swarm task.
#[derive(Clone)]
pub struct P2pRouter {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    local_name: PeerName,
    resolve_timeout: Duration,
}

impl P2pRouter {
    pub(super) fn new(
        commands: mpsc::Sender<Command>,
        shared: Arc<Shared>,
        local_name: PeerName,
        resolve_timeout: Duration,
    ) -> Self {
        Self { commands, shared, local_name, resolve_timeout }
    }

    /// This node's name, as other peers see it in lookups.
    pub fn local_name(&self) -> PeerName {
        self.local_name.clone()
    }

    /// Whether `ip` is an address of a peer connected now: one its
    /// connection comes from, or one it announces. Every connected peer
    /// passed the transport's checks (noise, and the pre-shared key when
    /// the network has one). Cheap: one hash lookup under a short lock.
    pub fn is_connected_ip(&self, ip: IpAddr) -> bool {
        self.shared.peer_ips().contains(ip)
    }

    /// The peers of the routing table with their announced router addresses,
    /// for the peer store.
    pub async fn known_peers(&self) -> Result<Vec<KnownPeer>, Error> {
        self.request(|reply| Command::KnownPeers { reply }, LOCAL_COMMAND_TIMEOUT).await
    }

    /// Dials peers known from an earlier run (alongside any bootstrap) and
    /// adds them to the routing table. Does not wait for the connections.
    pub async fn dial_known(&self, peers: Vec<KnownPeer>) -> Result<(), Error> {
        if peers.is_empty() {
            return Ok(());
        }
        self.send(Command::DialKnown { peers }).await
    }

    /// Sends a health hint without waiting: hints are advisory, so one that
    /// finds the queue full is dropped rather than stalling the caller.
    fn hint(&self, peer: &PeerName, command: impl FnOnce(PeerId) -> Command) {
        let Ok(peer) = peer.as_str().parse::<PeerId>() else {
            return;
        };
        if let Err(error) = self.commands.try_send(command(peer)) {
            tracing::debug!(%peer, %error, "peer health hint dropped");
        }
    }

    /// How many provider records this node's store holds (its own and
    /// others'), and what its lookups' queries cost (for benchmarks and simulations).
    pub async fn stats(&self) -> Result<RouterStats, Error> {
        self.request(|reply| Command::Stats { reply }, LOCAL_COMMAND_TIMEOUT).await
    }

    pub(super) async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).await.map_err(|_| Error::Closed)
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        limit: Duration,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply)).await?;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }
}

#[async_trait]
impl Router for P2pRouter {
    fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    fn lookup(&self, key: &Key, limit: usize) -> BoxStream<'static, Peer> {
        if limit == 0 {
            return stream::empty().boxed();
        }
        let deadline = Instant::now() + self.resolve_timeout;
        let (results, found) = mpsc::unbounded_channel();
        let command = Command::Lookup { key: key.clone(), limit, deadline, results };
        let router = self.clone();
        let started = async move {
            if router.send(command).await.is_err() {
                tracing::debug!("lookup after the router shut down");
            }
            UnboundedReceiverStream::new(found)
        };
        // The swarm task ends the stream at the limit, the deadline or the
        // query's end; the guards here only make that independent of it.
        stream::once(started)
            .flatten()
            .take(limit)
            .take_until(async move { tokio::time::sleep_until(deadline).await })
            .boxed()
    }

    async fn provide(&self, key: &Key) -> Result<(), Error> {
        let key = key.clone();
        self.request(|reply| Command::Provide { key, reply }, PROVIDE_TIMEOUT).await?
    }

    /// One announcement per peer, the keys' closest peers found from the
    /// routing table or by a sweep (see `bulk`); one Kademlia query per key,
    /// a few at a time, where neither can be trusted.
    async fn provide_many(&self, keys: &[Key]) -> Vec<Result<(), Error>> {
        let batch = keys.to_vec();
        match self.request(|reply| Command::ProvideMany { keys: batch, reply }, PROVIDE_MANY_TIMEOUT).await {
            Ok(BulkOutcome::Done(results)) => results,
            Ok(BulkOutcome::NeedQueries) => {
                let one_by_one = stream::iter(keys.to_vec()).map(|key| {
                    let router = self.clone();
                    async move { router.provide(&key).await }
                });
                one_by_one.buffered(QUERIES_PER_BATCH).collect().await
            }
            Err(error) => vec![Err(error); keys.len()],
        }
    }

    async fn withdraw(&self, key: &Key) -> Result<(), Error> {
        let key = key.clone();
        self.request(|reply| Command::Withdraw { key, reply }, LOCAL_COMMAND_TIMEOUT).await
    }

    fn connected_peers(&self) -> usize {
        self.shared.connected()
    }

    fn links(&self) -> Links {
        self.shared.links.clone()
    }

    fn peer_unresponsive(&self, peer: &PeerName) {
        self.hint(peer, |peer| Command::Unresponsive { peer });
    }

    fn peer_recovered(&self, peer: &PeerName) {
        self.hint(peer, |peer| Command::Recovered { peer });
    }
}
