//! d. A peer is blackholed: iptables drops every packet to its registry and
//! router ports (in the harness's own chain). containerd never dials the
//! blackhole (it only talks to its own Shoal), Shoal gives up on the peer
//! after its 500 ms connect timeout, and every pull completes well before
//! containerd's 30 s dial timeout could have been hit even once.

use std::time::Duration;

use anyhow::Result;
use shoal_e2e::ClusterOptions;
use shoal_e2e::scenario::Scenario;
use shoal_e2e::shoal::{REGISTRY_PORT, ROUTER_PORT};

use crate::support::FaultyPeer;

/// Under containerd's 30 s dial timeout: a pull that hit it would take longer.
const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_blackholed_peer_never_costs_containerd_a_dial_timeout() -> Result<()> {
    let mut s = Scenario::start("d", &ClusterOptions::with_shoal(3)).await?;
    let images = FaultyPeer::prepare(&s, 40).await?;
    let bad = s.cluster.node(2)?.ip;
    for port in [REGISTRY_PORT, ROUTER_PORT] {
        s.cluster.firewall().blackhole(bad, port)?;
    }

    images.pull_shared_from_peers(&mut s, BOUND).await?;
    // A new connection times out on connect; one pooled from before the
    // blackhole times out waiting for response headers.
    images.pull_only_from_upstream(&mut s, &["connect", "header_timeout"], BOUND).await?;
    s.cluster.firewall().clear_faults()?;
    s.finish().await
}
