//! i. Shoal restarts on a node (SIGTERM, then started again on the same data
//! directory, so with the same identity): it rejoins the DHT and serves again.
//! With the upstream stopped, node 1 pulls an image only node 2 holds (node 2
//! serves after its restart), and node 2 pulls an image only node 3 holds
//! (node 2 finds peers after its restart).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use shoal_e2e::scenario::{KIB, MIB, Scenario, ensure_within};
use shoal_e2e::wait::poll_until;
use shoal_e2e::{ClusterOptions, ImageSpec};

use crate::support::blob_bytes;

const BOUND: Duration = Duration::from_secs(30);
const REJOIN_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_a_restarted_shoal_rejoins_and_serves_again() -> Result<()> {
    let mut s = Scenario::start("i", &ClusterOptions::with_shoal(3)).await?;
    let layers = [4 * KIB, 256 * KIB, MIB];
    let on_node2 = s.push(&ImageSpec { seed: 90, ..ImageSpec::multi_arch("e2e/i-two", "v1", &layers) }).await?;
    let on_node3 = s.push(&ImageSpec { seed: 91, ..ImageSpec::multi_arch("e2e/i-three", "v1", &layers) }).await?;
    s.pull(2, &on_node2).await?;
    s.pull(3, &on_node3).await?;
    s.stop_upstream()?;

    let restart = Instant::now();
    s.cluster.node_mut(2)?.restart_shoal().await?;
    s.report("node 2's Shoal restarted and became ready", restart.elapsed());
    let node2 = s.cluster.node(2)?;
    poll_until("node 2 to be connected to peers again", REJOIN_TIMEOUT, || async {
        let connected = node2.metrics().await?.value("shoal_connected_peers").unwrap_or(0.0);
        Ok((connected >= 1.0).then_some(()))
    })
    .await?;

    s.wait_servable(1, &on_node2).await?;
    let elapsed = s.pull(1, &on_node2).await?;
    ensure_within(elapsed, BOUND, "node 1's pull from the restarted node")?;
    let uploaded = s.metrics(2).await?.blob_upload_bytes();
    let needed = on_node2.host_platform()?.blob_bytes() as f64;
    ensure!(uploaded >= needed, "the restarted node 2 uploaded {uploaded} blob bytes, node 1 needed {needed}");

    s.wait_servable(2, &on_node3).await?;
    let elapsed = s.pull(2, &on_node3).await?;
    ensure_within(elapsed, BOUND, "the restarted node 2's pull through its peers")?;
    let got = blob_bytes(&s.metrics(2).await?, "peer");
    ensure!(got >= on_node3.host_platform()?.blob_bytes() as f64, "node 2 got {got} blob bytes from peers");
    s.verify_content(1, &on_node2)?;
    s.verify_content(2, &on_node3)?;
    s.finish().await
}
