//! a. Node 1 pulls from the upstream; the upstream is stopped; nodes 2..4
//! pull the same image through peers. All succeed, the upstream served each
//! blob at most once (to node 1 only), and every blob byte the other nodes
//! got from peers was uploaded by some node's Shoal.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::scenario::{KIB, MIB, Scenario, ensure_within};
use shoal_e2e::{ClusterOptions, ImageSpec};

use crate::support::blob_bytes;

const NODES: usize = 4;
const PEER_PULL_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_the_upstream_serves_once_and_peers_serve_every_other_node() -> Result<()> {
    let mut s = Scenario::start("a", &ClusterOptions::with_shoal(NODES)).await?;
    let image = s.push(&ImageSpec::multi_arch("e2e/a", "v1", &[4 * KIB, MIB, 4 * MIB])).await?;
    let mark = s.upstream_mark()?;
    s.pull(1, &image).await?;
    for node in 2..=NODES {
        s.wait_servable(node, &image).await?;
    }
    s.upstream_served(mark, 1, &image).await?;
    s.stop_upstream()?;
    for node in 2..=NODES {
        let elapsed = s.pull(node, &image).await?;
        ensure_within(elapsed, PEER_PULL_BOUND, &format!("node {node}'s pull through peers"))?;
        s.verify_content(node, &image)?;
    }

    let log = s.upstream_log(mark)?;
    for blob in image.all_blobs() {
        let gets = log.blob_gets_of(&blob.digest);
        ensure!(gets <= 1, "the upstream served {} {gets} times", blob.digest);
    }
    for node in 2..=NODES {
        s.ensure_upstream_served_nothing_to(mark, node)?;
    }
    let needed = image.host_platform()?.blob_bytes() as f64;
    let (mut from_peers, mut uploaded) = (0.0, 0.0);
    for node in 1..=NODES {
        let metrics = s.metrics(node).await?;
        uploaded += metrics.blob_upload_bytes();
        if node > 1 {
            let got = blob_bytes(&metrics, "peer");
            ensure!(got >= needed, "node {node} got {got} blob bytes from peers, its pull needed {needed}");
            ensure!(metrics.requests("miss", "blob") == 0.0, "node {node} missed blobs: {metrics:?}");
            from_peers += got;
        }
    }
    ensure!(uploaded >= from_peers, "peers uploaded {uploaded} blob bytes but nodes received {from_peers}");
    s.finish().await
}
