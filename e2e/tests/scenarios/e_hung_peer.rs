//! e. A peer is hung (its Shoal is stopped with SIGSTOP): the kernel still
//! accepts connections, nothing answers. Shoal abandons the peer after its
//! 2 s response-header timeout, and every pull completes; nothing hangs.

use std::time::Duration;

use anyhow::Result;
use shoal_e2e::ClusterOptions;
use shoal_e2e::scenario::Scenario;

use crate::support::FaultyPeer;

const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_a_hung_peer_costs_a_header_timeout_not_a_hang() -> Result<()> {
    let mut s = Scenario::start("e", &ClusterOptions::with_shoal(3)).await?;
    let images = FaultyPeer::prepare(&s, 50).await?;
    s.cluster.node_mut(2)?.shoal()?.freeze().await?;

    images.pull_shared_from_peers(&mut s, BOUND).await?;
    images.pull_only_from_upstream(&mut s, &["header_timeout"], BOUND).await?;
    s.cluster.node_mut(2)?.shoal()?.resume()?;
    s.finish().await
}
