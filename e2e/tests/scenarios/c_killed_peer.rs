//! c. A peer holding the image is killed (SIGKILL) before the pull: node 3
//! still gets the image, from the other peer while one holds it, or from
//! the upstream when the killed peer was the only holder, and nothing hangs
//! (a refused connection costs Shoal one attempt, not a timeout).

use std::time::Duration;

use anyhow::Result;
use shoal_e2e::ClusterOptions;
use shoal_e2e::scenario::Scenario;

use crate::support::FaultyPeer;

const BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_a_killed_peer_costs_one_refused_connection() -> Result<()> {
    let mut s = Scenario::start("c", &ClusterOptions::with_shoal(3)).await?;
    let images = FaultyPeer::prepare(&s, 30).await?;
    s.cluster.node_mut(2)?.shoal()?.kill();

    images.pull_shared_from_peers(&mut s, BOUND).await?;
    images.pull_only_from_upstream(&mut s, &["connect"], BOUND).await?;
    s.finish().await
}
