//! The libp2p implementation of [`Router`](crate::routing::Router): a
//! Kademlia DHT of Shoal nodes over TCP, noise and yamux.
//!
//! Owns: the node's configuration and start-up (binding the listener,
//! spawning the swarm task and the bootstrap task). This is the only module
//! in the crate that imports libp2p; nothing outside it sees a PeerId or a
//! Multiaddr.
//!
//! # Layout
//! - [`identity`]: the ed25519 keypair and the node's name.
//! - `behaviour`: the protocols (Kademlia, announce, identify, ping) and their settings.
//! - `bulk` and `announce`: batched advertisement, one message per peer.
//! - `sweep` and `keyspace`: placing a batch's keys in a network larger
//!   than the routing table, from a map of the keyspace built by queries.
//! - `event_loop`: the one task that owns the swarm.
//! - `client`: [`P2pRouter`], the cloneable handle that sends it commands.
//! - `lookups`: provider lookups in flight and when each ends.
//! - `addresses`: announced addresses and the registry endpoint rule.
//! - `bootstrap`: bootstrap peers, DNS, and the reconnect schedule.
//! - `known`: the routing table's peers for the peer store, and re-dialling them.
//! - `shun`: peers taken out of routing (and blocked) while they do not answer.
//! - [`swarm_key`]: the optional pre-shared key of a private network.
//! - `peer_ips`: the IP addresses of connected peers, for access control.
//! - `store`: the provider records kept per key, and their counts.
//! - `transport`: TCP + noise + yamux, dialling from fresh ports (or the
//!   in-process memory transport, for simulations: [`TransportKind`]).

mod addresses;
mod announce;
mod behaviour;
mod bootstrap;
mod bulk;
mod client;
mod event_loop;
mod identity;
mod keyspace;
mod known;
mod lookups;
mod peer_ips;
mod shun;
mod store;
pub mod swarm_key;
mod sweep;
mod tally;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::Swarm;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bootstrap::{BootstrapPeer, BootstrapPeerError};
pub use bulk::BulkStats;
pub use client::{P2pRouter, RouterStats};
pub use identity::Identity;
pub use known::KnownPeer;
pub use store::StoreStats;
pub use swarm_key::{SwarmKey, SwarmKeyError};

use addresses::{AddressBook, EndpointRule, tcp_multiaddr};
use behaviour::Behaviour;
use bootstrap::BootstrapPlan;
use bulk::Bulk;
use client::{COMMAND_CAPACITY, Shared};
use event_loop::EventLoop;

/// How a node joins and serves the peer network.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// The TCP address the router listens on; its port is also the port
    /// bootstrap DNS records are dialled at.
    pub listen: SocketAddr,
    /// The registry port, the same on every node of the cluster.
    pub registry_port: u16,
    pub bootstrap: Vec<BootstrapPeer>,
    /// A name (e.g. a headless Service) whose every A/AAAA record is a peer.
    pub bootstrap_dns: Option<String>,
    /// How long other nodes keep this node's provider records.
    pub provider_ttl: Duration,
    /// How long a lookup may take before its stream ends.
    pub resolve_timeout: Duration,
    pub identity: Identity,
    /// The private network's pre-shared key: only nodes with the same key
    /// can connect. `None` is an open network (noise still authenticates).
    pub swarm_key: Option<SwarmKey>,
    pub transport: TransportKind,
    pub connections: ConnectionConfig,
    /// How often a bootstrap walk refreshes the routing table (a dozen
    /// closest-peers queries). A simulation of many nodes in one process
    /// lengthens it: there every node's walks share one machine's CPU.
    pub table_refresh: Duration,
    /// Whether a batch may be placed from the routing table when the table
    /// holds the whole network (see `bulk`). Always true on a real node;
    /// tests and simulations turn it off to make every batch a sweep.
    pub place_from_table: bool,
}

/// How connections to peers are watched and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// How often every connected peer is pinged: its round trip and failures
    /// feed peer health (a blackholed or frozen peer keeps its TCP connection
    /// open). A ping unanswered for this long (at most 2 s) has failed.
    pub ping_interval: Duration,
    /// How long a connection without traffic stays open. Each one costs
    /// memory and pings, and a node of a large cluster talks to many peers.
    pub idle_timeout: Duration,
}

impl ConnectionConfig {
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(2);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Pinging more often only costs CPU; a shorter interval is raised to this.
    pub const MIN_PING_INTERVAL: Duration = Duration::from_millis(100);
    /// A connection closed sooner would not outlive the request that opened it.
    pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self { ping_interval: Self::DEFAULT_PING_INTERVAL, idle_timeout: Self::DEFAULT_IDLE_TIMEOUT }
    }
}

/// Which transport carries the node's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP, noise and yamux: every real node.
    #[default]
    Tcp,
    /// libp2p's in-process memory transport (noise and yamux on top), for
    /// simulating many nodes in one process. Addresses keep their TCP shape
    /// (`listen`, bootstrap peers) but only name nodes: no socket is opened.
    Memory,
}

impl P2pConfig {
    pub const DEFAULT_PROVIDER_TTL: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_TABLE_REFRESH: Duration = Duration::from_secs(5 * 60);
    /// A walk takes seconds: refreshing more often than this only adds load.
    pub const MIN_TABLE_REFRESH: Duration = Duration::from_secs(10);

    /// A node with default timings and no bootstrap peers (a single node).
    pub fn new(listen: SocketAddr, registry_port: u16, identity: Identity) -> Self {
        Self {
            listen,
            registry_port,
            bootstrap: Vec::new(),
            bootstrap_dns: None,
            provider_ttl: Self::DEFAULT_PROVIDER_TTL,
            resolve_timeout: Self::DEFAULT_RESOLVE_TIMEOUT,
            identity,
            swarm_key: None,
            transport: TransportKind::Tcp,
            connections: ConnectionConfig::default(),
            table_refresh: Self::DEFAULT_TABLE_REFRESH,
            place_from_table: true,
        }
    }
}

/// Why the p2p router could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for peers on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("cannot set up the p2p transport: {0}")]
    Transport(String),
    #[error("invalid node identity: {0}")]
    Identity(String),
}

/// Binds the listener and spawns the swarm task (and the bootstrap task if
/// any peer is configured) on `tracker`. Both end when `token` is cancelled.
pub async fn start(config: P2pConfig, token: CancellationToken, tracker: &TaskTracker) -> Result<P2pRouter, Error> {
    if config.transport == TransportKind::Tcp {
        ensure_address_free(config.listen)?;
    }
    let mut swarm = build_swarm(&config)?;
    swarm
        .listen_on(tcp_multiaddr(config.listen))
        .map_err(|e| Error::Listen { addr: config.listen, reason: e.to_string() })?;

    let plan = BootstrapPlan {
        peers: config.bootstrap,
        dns: config.bootstrap_dns,
        router_port: config.listen.port(),
        listen: config.listen,
    };
    let shared = Arc::new(Shared::new(plan.is_empty()));
    let (commands, inbox) = mpsc::channel(COMMAND_CAPACITY);
    let router = P2pRouter::new(commands, shared.clone(), config.identity.name(), config.resolve_timeout);
    let book = AddressBook::new(EndpointRule::new(config.listen.ip(), config.registry_port));
    match &config.swarm_key {
        Some(key) => tracing::info!(fingerprint = %key.fingerprint(), "p2p network is private (pre-shared key)"),
        None => tracing::info!("p2p network is open: no pre-shared key"),
    }
    tracing::info!(name = %router.local_name(), listen = %config.listen, "starting p2p router");

    let bulk = Bulk::new(config.provider_ttl, config.place_from_table);
    let event_loop =
        EventLoop::new(swarm, inbox, shared.clone(), book, bulk).connecting_to_providers(config.swarm_key.is_some());
    tracker.spawn(event_loop.run(token.clone()));
    if !plan.is_empty() {
        tracker.spawn(bootstrap::run(plan, router.clone(), shared, token));
    }
    Ok(router)
}

/// libp2p listens with SO_REUSEPORT, so a second node on the same address
/// would silently share the port. A plain bind first turns that into an error.
fn ensure_address_free(addr: SocketAddr) -> Result<(), Error> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| Error::Listen { addr, reason: e.to_string() })
}

fn build_swarm(config: &P2pConfig) -> Result<Swarm<Behaviour>, Error> {
    let provider_ttl = config.provider_ttl;
    let swarm_key = config.swarm_key;
    let kind = config.transport;
    let connections = config.connections;
    let table_refresh = config.table_refresh;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.identity.keypair().clone())
        .with_tokio()
        .with_other_transport(move |keypair| match kind {
            TransportKind::Tcp => transport::build(keypair, swarm_key),
            TransportKind::Memory => transport::build_memory(keypair),
        })
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_behaviour(|key| Behaviour::new(key, provider_ttl, connections.ping_interval, table_refresh))
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(connections.idle_timeout.max(ConnectionConfig::MIN_IDLE_TIMEOUT))
        })
        .build();
    Ok(swarm)
}
