//! Wiring: builds every component from its config, runs them on one
//! `TaskTracker` under one `CancellationToken`, and shuts down on SIGTERM or
//! SIGINT.
//!
//! Start-up: the state file is opened first (identity, peers, index). With
//! persisted state the node recovers: it dials its last-known peers beside
//! the bootstrap, restores selection weights, restores the index (local
//! content is served from the first request) and queues the persisted keys
//! for advertisement, while containerd is rescanned in the background.
//! Shutdown: readiness fails, the peer store is saved, the token is
//! cancelled (advertising stops, listeners close) and in-flight transfers
//! get until the drain deadline to finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::advertiser::{Advertiser, AdvertiserConfig};
use crate::content::{ContainerdConfig, ContainerdStore, ContentIndex, ContentStore};
use crate::health::Health;
use crate::metrics::{Listener, Metrics};
use crate::mirror::select::PeerStatus;
use crate::mirror::{HedgePolicy, Mirror, MirrorConfig, PeerScores, PeerTimeouts};
use crate::registry::response::{Body, text};
use crate::registry::server::{Server, ServerLimits};
use crate::registry::{AccessPolicy, RegistryConfig, RegistryHandler};
use crate::replication::{CriConfig, CriPuller, ReplicationConfig, Replicator};
use crate::routing::Router;
use crate::routing::p2p::{
    self, BootstrapPeer, ConnectionConfig, KnownPeer, P2pConfig, P2pRouter, SwarmKey, TransportKind,
};
use crate::state::{Loaded, PeerRecord, State};

/// Most providers asked for one key: the DHT keeps at most 20 per key.
const LOOKUP_LIMIT: usize = 20;
/// containerd events buffered between the watcher and the advertiser.
const EVENT_BUFFER: usize = 1024;
/// How often the routing table is compared with the saved peer store; a
/// change is saved at once, so even a `kill -9` loses little.
const PEER_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// The peer store (with fresh scores) is saved at least this often, and at shutdown.
const PEER_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// The shutdown save of the peer store may take this long.
const PEER_SAVE_DEADLINE: Duration = Duration::from_secs(2);

/// Everything `shoal run` needs, built by the CLI.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub registry_addr: SocketAddr,
    pub router_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub containerd: ContainerdConfig,
    pub data_dir: Option<PathBuf>,
    pub bootstrap_peers: Vec<BootstrapPeer>,
    pub bootstrap_dns: Option<String>,
    /// The private network's key file; none is an open network.
    pub p2p_psk_file: Option<PathBuf>,
    pub connections: ConnectionConfig,
    /// Registries whose content is never shared with peers.
    pub private_registries: Vec<crate::oci::Registry>,
    pub registry: RegistryConfig,
    pub resolve_timeout: Duration,
    /// How long a request waits for another provider once all found are unusable.
    pub lookup_patience: Duration,
    pub peer_timeouts: PeerTimeouts,
    pub max_peer_attempts: usize,
    /// Verified blob transfers after which a peer's blobs pass straight through (0: never).
    pub stream_after_verified: u32,
    pub hedge: HedgePolicy,
    pub provider_ttl: Duration,
    pub advertiser: AdvertiserConfig,
    pub replication: ReplicationConfig,
    pub replication_pull_timeout: Duration,
    pub drain_timeout: Duration,
    /// Limits of the registry and metrics listeners (each its own counts).
    pub server: ServerLimits,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Router(#[from] p2p::Error),
    #[error(transparent)]
    SwarmKey(#[from] p2p::SwarmKeyError),
    #[error(transparent)]
    State(#[from] crate::state::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot create the spool directory {path}: {source}")]
    Spool { path: PathBuf, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })
}

/// Runs a node until SIGTERM or SIGINT, then drains.
pub async fn run(config: RunConfig) -> Result<(), Error> {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let node = start(config.clone(), token.clone(), tracker.clone()).await?;
    tracker.close();
    tracing::info!(registry = %config.registry_addr, router = %config.router_addr, metrics = %config.metrics_addr, name = %node.name, "shoal is running");
    shutdown_signal().await?;
    tracing::info!(deadline = ?config.drain_timeout, "shutting down: draining in-flight transfers");
    node.health.set_draining();
    if tokio::time::timeout(PEER_SAVE_DEADLINE, node.peer_store.save()).await.is_err() {
        tracing::warn!("saving the peer store took too long; keeping the last saved copy");
    }
    token.cancel();
    if tokio::time::timeout(config.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!("drain deadline passed; abandoning the transfers still in flight");
    }
    Ok(())
}

/// A started node's handles.
pub struct Node {
    pub name: String,
    pub health: Health,
    pub peer_store: PeerStore,
}

/// Binds every listener and spawns every task on `tracker`.
pub async fn start(config: RunConfig, token: CancellationToken, tracker: TaskTracker) -> Result<Node, Error> {
    // Read first: a bad key file stops the node before it binds or touches anything.
    let swarm_key = config.p2p_psk_file.as_deref().map(SwarmKey::from_file).transpose()?;
    let metrics = Metrics::new()?;
    let (state, loaded) = State::open(config.data_dir.as_deref(), &tracker, &metrics)?;
    let Loaded { identity, peers, peers_age, images, mode } = loaded;
    let spool_dir = spool_dir(config.data_dir.as_deref())?;
    let registry_listener = bind(config.registry_addr).await?;
    let metrics_listener = bind(config.metrics_addr).await?;

    let p2p_config = P2pConfig {
        listen: config.router_addr,
        registry_port: config.registry_addr.port(),
        bootstrap: config.bootstrap_peers,
        bootstrap_dns: config.bootstrap_dns,
        provider_ttl: config.provider_ttl,
        resolve_timeout: config.resolve_timeout,
        identity,
        swarm_key,
        transport: TransportKind::Tcp,
        connections: config.connections,
        table_refresh: P2pConfig::DEFAULT_TABLE_REFRESH,
        place_from_table: true,
    };
    let p2p_router = p2p::start(p2p_config, token.clone(), &tracker).await?;
    let name = p2p_router.local_name().to_string();
    let scores = Arc::new(PeerScores::new());
    let peer_store = PeerStore { state: state.clone(), router: p2p_router.clone(), scores: scores.clone() };
    peer_store.recover(&peers, peers_age).await;
    let mut registry_config = config.registry;
    if swarm_key.is_some() {
        let peers = p2p_router.clone();
        registry_config.access = AccessPolicy::peers_only(move |ip| peers.is_connected_ip(ip));
    }
    let router: Arc<dyn Router> = Arc::new(p2p_router);
    let cri = CriConfig {
        socket: config.containerd.socket.clone(),
        namespace: config.containerd.namespace.clone(),
        pull_timeout: config.replication_pull_timeout,
    };
    let store: Arc<dyn ContentStore> = Arc::new(ContainerdStore::new(config.containerd));
    let index = ContentIndex::new(store.clone()).with_private_registries(config.private_registries);
    let health = Health::new(router.clone());
    let mirror_config = MirrorConfig {
        timeouts: config.peer_timeouts,
        max_attempts: config.max_peer_attempts,
        stream_after_verified: config.stream_after_verified,
        lookup_limit: LOOKUP_LIMIT,
        lookup_patience: config.lookup_patience,
        spool_dir,
        hedge: config.hedge,
    };
    let mirror = Mirror::new(router.clone(), scores, metrics.clone(), mirror_config);
    tracker.spawn(mirror.probe_excluded(token.clone()));

    let mut advertiser =
        Advertiser::new(index.clone(), router.clone(), state, metrics.clone(), health.clone(), config.advertiser);
    let recovered_keys = advertiser.recover(images);
    tracing::info!(mode = mode.as_str(), recovered_keys, known_peers = peers.len(), "starting");
    let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
    tracker.spawn(watch_content(store, events_tx, token.clone()));
    tracker.spawn(advertiser.run(events_rx, token.clone()));
    tracker.spawn(peer_store.clone().keep_saved(token.clone()));

    let handler = RegistryHandler::new(index.clone(), mirror.clone(), metrics.clone(), health.clone(), registry_config);
    if config.replication.is_active() {
        let puller = Arc::new(CriPuller::new(cri));
        let me = crate::routing::PeerName::new(name.as_str());
        let replicator = Replicator::new(me, router.clone(), index, puller, metrics.clone(), config.replication);
        tracker.spawn(replicator.run(health.clone(), token.clone()));
    }
    let serve_registry = move |req| {
        let handler = handler.clone();
        async move { handler.handle(req).await }
    };
    let registry_server = Server::new(config.server).with_metrics(metrics.listener(Listener::Registry));
    tracker.spawn(registry_server.serve(registry_listener, serve_registry, token.clone(), tracker.clone()));
    let metrics_server = Server::new(config.server).with_metrics(metrics.listener(Listener::Metrics));
    let status = StatusPages { metrics, router, mirror };
    let serve_status = move |req| {
        let status = status.clone();
        async move { status.handle(&req) }
    };
    tracker.spawn(metrics_server.serve(metrics_listener, serve_status, token, tracker.clone()));
    Ok(Node { name, health, peer_store })
}

/// The peer store: who this node knew and how they served it, saved in the
/// state file and restored at start-up. Cheap to clone.
#[derive(Clone)]
pub struct PeerStore {
    state: State,
    router: P2pRouter,
    scores: Arc<PeerScores>,
}

impl PeerStore {
    /// Dials the peers saved by an earlier run and restores their scores.
    async fn recover(&self, peers: &[PeerRecord], age: Duration) {
        for peer in peers {
            if let Some(reliability) = peer.reliability {
                self.scores.restore(&peer.name, reliability, peer.throughput, age);
            }
        }
        let known: Vec<KnownPeer> = peers
            .iter()
            .filter(|p| !p.addrs.is_empty())
            .map(|p| KnownPeer { name: p.name.clone(), addrs: p.addrs.clone() })
            .collect();
        if let Err(error) = self.router.dial_known(known).await {
            tracing::warn!(%error, "cannot dial the peers known from the last run");
        }
    }

    /// Saves the routing table's peers with their scores, replacing the last copy.
    pub async fn save(&self) {
        match self.router.known_peers().await {
            Ok(known) => self.save_known(known).await,
            Err(error) => tracing::debug!(%error, "cannot list known peers; keeping the last saved copy"),
        }
    }

    async fn save_known(&self, known: Vec<KnownPeer>) {
        if !self.state.is_persistent() {
            return;
        }
        let scores: HashMap<String, PeerStatus> =
            self.scores.snapshot().into_iter().map(|s| (s.peer.clone(), s)).collect();
        let records = known
            .into_iter()
            .map(|peer| {
                let score = scores.get(peer.name.as_str());
                PeerRecord {
                    reliability: score.map(|s| s.reliability),
                    throughput: score.and_then(|s| s.throughput_bytes_per_second),
                    name: peer.name,
                    addrs: peer.addrs,
                }
            })
            .collect();
        let _ = self.state.save_peers(records).await;
    }

    /// Saves the peer store whenever the routing table changes, and at least
    /// every [`PEER_SAVE_INTERVAL`], until cancelled.
    async fn keep_saved(self, token: CancellationToken) {
        if !self.state.is_persistent() {
            return;
        }
        let mut check = tokio::time::interval(PEER_CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut saved, mut saved_at) = (Vec::new(), tokio::time::Instant::now());
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = check.tick() => {}
            }
            let Ok(known) = self.router.known_peers().await else { continue };
            if known != saved || saved_at.elapsed() >= PEER_SAVE_INTERVAL {
                self.save_known(known.clone()).await;
                (saved, saved_at) = (known, tokio::time::Instant::now());
            }
        }
    }
}

async fn watch_content(
    store: Arc<dyn ContentStore>,
    events: mpsc::Sender<crate::content::ContentEvent>,
    token: CancellationToken,
) {
    tokio::select! {
        () = token.cancelled() => {}
        () = store.watch(events) => {}
    }
}

/// Spooled downloads go under the data directory, else the system temp dir.
fn spool_dir(data_dir: Option<&std::path::Path>) -> Result<PathBuf, Error> {
    let path = match data_dir {
        Some(dir) => dir.join("spool"),
        None => std::env::temp_dir().join(format!("shoal-spool-{}", std::process::id())),
    };
    std::fs::create_dir_all(&path).map_err(|source| Error::Spool { path: path.clone(), source })?;
    Ok(path)
}

/// `/metrics` and `/status/peers` on the metrics address.
#[derive(Clone)]
struct StatusPages {
    metrics: Metrics,
    router: Arc<dyn Router>,
    mirror: Mirror,
}

impl StatusPages {
    fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/metrics" => {
                self.metrics.set_connected_peers(self.router.connected_peers());
                match self.metrics.encode() {
                    Ok(body) => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body),
                    Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", error.to_string()),
                }
            }
            "/status/peers" => {
                let body = serde_json::json!({
                    "connected_peers": self.router.connected_peers(),
                    "excluded_peers": self.mirror.scores().excluded_count(),
                    "scores": self.mirror.scores().snapshot(),
                });
                text(StatusCode::OK, "application/json", body.to_string())
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}

async fn shutdown_signal() -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
