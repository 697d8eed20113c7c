//! A probe on the cluster's DHT: a bare Shoal router (no registry, no
//! content, nothing advertised) in the test process, joined to the cluster
//! like any node. Its lookups find what any node's lookup would find, which
//! lets a test wait for a condition of the DHT itself (a provider record has
//! expired) instead of sleeping for a TTL.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use shoal::oci::Key;
use shoal::routing::Router;
use shoal::routing::p2p::{self, BootstrapPeer, Identity, P2pConfig, P2pRouter};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::shoal::{REGISTRY_PORT, ROUTER_PORT};
use crate::wait::poll_until;

/// Bound on one lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most providers a lookup collects.
const LOOKUP_LIMIT: usize = 20;

/// A joined probe; leaves the DHT when dropped.
pub struct DhtProbe {
    router: P2pRouter,
    token: CancellationToken,
}

impl DhtProbe {
    /// Joins through `bootstrap` (a node's IP) from `ip`, keeping remote
    /// records for `provider_ttl` like the nodes do; waits until connected.
    pub async fn join(ip: Ipv4Addr, bootstrap: Ipv4Addr, provider_ttl: Duration) -> Result<Self> {
        let listen = SocketAddr::from((ip, ROUTER_PORT));
        let mut config = P2pConfig::new(listen, REGISTRY_PORT, Identity::generate());
        config.bootstrap = vec![format!("/ip4/{bootstrap}/tcp/{ROUTER_PORT}").parse::<BootstrapPeer>()?];
        config.provider_ttl = provider_ttl;
        config.resolve_timeout = LOOKUP_TIMEOUT;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router = p2p::start(config, token.clone(), &tracker).await.context("start the DHT probe")?;
        tracker.close();
        let probe = Self { router, token };
        poll_until("the DHT probe to connect to the cluster", JOIN_TIMEOUT, || async {
            Ok((probe.router.connected_peers() > 0).then_some(()))
        })
        .await?;
        Ok(probe)
    }

    /// The registry endpoints the DHT names as providers of `key` now.
    pub async fn providers(&self, key: &Key) -> Vec<SocketAddr> {
        self.router.lookup(key, LOOKUP_LIMIT).map(|peer| peer.endpoint).collect().await
    }
}

impl Drop for DhtProbe {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
