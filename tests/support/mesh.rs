//! A mesh of real libp2p routers on loopback, for the multi-node tests.
//!
//! Node N listens on 127.0.0.N with a port shared by the whole mesh (found
//! by binding a free one first) and bootstraps from node 1. Every node has
//! its own token and tracker, so one node can be stopped alone; dropping the
//! mesh cancels every node.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use shoal::oci::Key;
use shoal::routing::contract::ContractNode;
use shoal::routing::p2p::{self, BootstrapPeer, Identity, P2pConfig, P2pRouter};
use shoal::routing::{Peer, Router};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The registry port every node announces (nothing needs to listen on it).
pub const REGISTRY_PORT: u16 = 5999;
/// How long a mesh may take to connect, and a condition to settle.
pub const SETTLE: Duration = Duration::from_secs(20);
/// Pause between polls of a condition.
const POLL: Duration = Duration::from_millis(50);

pub struct Node {
    pub peer: Peer,
    pub router: P2pRouter,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Node {
    /// Cancels this node and waits for its tasks to end.
    pub async fn stop(&self) -> Result<()> {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(SETTLE, self.tracker.wait()).await.context("router tasks did not end on cancel")
    }

    pub async fn lookup(&self, key: &Key, limit: usize) -> Vec<Peer> {
        self.router.lookup(key, limit).collect().await
    }
}

pub struct Mesh {
    pub nodes: Vec<Node>,
}

impl Mesh {
    /// Starts `count` nodes (127.0.0.1 ..= 127.0.0.count) and waits until each has a peer.
    pub async fn start(count: u8, provider_ttl: Duration) -> Result<Self> {
        init_tracing();
        ensure!((1..=250).contains(&count), "a mesh has 1 to 250 nodes");
        let port = free_port()?;
        let mut nodes = Vec::new();
        let first = start_node(1, port, provider_ttl, |_| {}).await?;
        let first_name = first.peer.name.clone();
        nodes.push(first);
        for n in 2..=count {
            let node = start_node(n, port, provider_ttl, |config| {
                // Half the nodes know node 1's id, half learn it from the connection.
                let id = if n % 2 == 0 { format!("/p2p/{first_name}") } else { String::new() };
                let peer: BootstrapPeer = format!("/ip4/127.0.0.1/tcp/{port}{id}").parse().unwrap_or_else(|e| {
                    panic!("bootstrap address: {e}");
                });
                config.bootstrap.push(peer);
            })
            .await?;
            nodes.push(node);
        }
        let mesh = Self { nodes };
        eventually("every node has a peer", || async {
            mesh.nodes.iter().all(|n| n.router.is_ready() && n.router.connected_peers() > 0)
        })
        .await?;
        Ok(mesh)
    }

    pub fn contract_nodes(&self) -> Vec<ContractNode<P2pRouter>> {
        self.nodes.iter().map(|n| ContractNode { peer: n.peer.clone(), router: n.router.clone() }).collect()
    }

    /// Node N (1-based, as its address 127.0.0.N).
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.token.cancel();
        }
    }
}

/// Starts node N on 127.0.0.N:`port`, letting `adjust` change its config.
pub async fn start_node(n: u8, port: u16, provider_ttl: Duration, adjust: impl FnOnce(&mut P2pConfig)) -> Result<Node> {
    let listen = SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), port));
    let identity = Identity::generate();
    let mut config = P2pConfig::new(listen, REGISTRY_PORT, identity.clone());
    config.provider_ttl = provider_ttl;
    adjust(&mut config);
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let router = p2p::start(config, token.clone(), &tracker).await?;
    let peer = Peer { name: identity.name(), endpoint: SocketAddr::from((listen.ip(), REGISTRY_PORT)) };
    assert_eq!(router.local_name(), peer.name);
    Ok(Node { peer, router, token, tracker })
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `condition` until it holds, failing after [`SETTLE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !condition().await {
        if Instant::now() >= deadline {
            bail!("{what}: not within {SETTLE:?}");
        }
        sleep(POLL).await;
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
