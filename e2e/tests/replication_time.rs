//! Active replication on real nodes: a pinned 100 MB image (one platform,
//! two 50 MB layers) pushed to the upstream reaches all 5 nodes through
//! Shoal's replication rounds (CRI pulls through each node's mirror).
//! Prints the time from Shoal's start to the fifth replica, and how often
//! the upstream served a layer (measurements for docs/performance.md, not
//! asserts). One node seeds the image from the upstream and the others pull
//! it from peers; with a round every second, rounds that pass while the
//! seed is still pulling widen the cut, so a second node may seed too.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use shoal_e2e::image::Arch;
use shoal_e2e::scenario::{KIB, MIB, Scenario};
use shoal_e2e::wait::poll_until;
use shoal_e2e::{ClusterOptions, ImageSpec};

const NODES: usize = 5;
/// Generous: a replication round every second, pulls of 100 MB on loopback.
const BOUND: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_100_mb_image_reaches_every_node() -> Result<()> {
    let mut s = Scenario::start("replication", &ClusterOptions { nodes: NODES, ..ClusterOptions::default() }).await?;
    let spec = ImageSpec {
        arches: vec![Arch::Amd64],
        seed: 4242,
        ..ImageSpec::multi_arch("e2e/pinned", "v1", &[4 * KIB, 50 * MIB, 50 * MIB])
    };
    let image = s.push(&spec).await?;
    let reference = s.reference(&image);
    let mark = s.upstream_mark()?;
    let args: Vec<String> = ["--pin-images", &reference, "--replicas", "5", "--replication-interval", "1s"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let started = Instant::now();
    s.cluster.start_shoal_everywhere(&args).await?;
    poll_until("the pinned image on every node", BOUND, || async {
        let held = (1..=NODES).filter(|&n| s.verify_content(n, &image).is_ok()).count();
        Ok((held == NODES).then_some(()))
    })
    .await?;
    let elapsed = started.elapsed();
    s.report(&format!("the pinned 100 MB image reached {NODES} nodes"), elapsed);

    let log = s.upstream_log(mark)?;
    let layer = &image.host_platform()?.layers[1];
    let fetched = log.blob_gets_of(&layer.digest);
    eprintln!("[scenario replication] the upstream served a 50 MB layer {fetched} time(s) for {NODES} nodes");
    ensure!(fetched >= 1, "the layer reached the nodes without the upstream serving it once");
    s.finish().await
}
