//! Needs root. Real containerd daemons, each with its own Shoal, pulling through CRI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::demo::{self, DemoOptions};
use shoal_e2e::{Cluster, ClusterOptions, ImageSpec, image};

const PULL_TIMEOUT: Duration = Duration::from_secs(60);
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The core feature: no registry at all; node 2 gets the image from node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serves_an_image_imported_on_another_node() -> Result<()> {
    let cluster = Cluster::start(&ClusterOptions { registry: false, ..ClusterOptions::with_shoal(2) }).await?;
    let dir = tempfile::tempdir()?;
    let built = image::build(&ImageSpec::multi_arch("e2e/peer", "v1", &[4 << 10, 1 << 20, 4 << 20]), dir.path())?;
    let name = built.reference(cluster.registry_host());
    cluster.node(1)?.import(&built, &name, PULL_TIMEOUT).await?;

    let node2 = cluster.node(2)?;
    node2.wait_until_servable(&built, DISCOVERY_TIMEOUT).await?;
    let pulled = node2.cri().pull(&name, PULL_TIMEOUT).await?;
    ensure!(node2.cri().has_image(&name).await?, "CRI on node 2 does not list {name}");

    let metrics = node2.metrics().await?;
    let from_peers = metrics.bytes_served("peer");
    let needed = built.host_platform()?.blob_bytes() as f64;
    ensure!(from_peers > 0.0, "node 2 served nothing from peers: {metrics:?}");
    ensure!(from_peers >= needed, "node 2 served {from_peers} bytes from peers, the pull needed {needed}");
    eprintln!("node 2 pulled {name} through its peer in {:?}", pulled.elapsed);
    cluster.shutdown().await?.ensure_clean()
}

/// The demo at small sizes: the upstream serves node 1 once; nodes 2 and 3
/// pull everything through peers after the upstream is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_serves_once_and_peers_serve_the_rest() -> Result<()> {
    let options = DemoOptions { nodes: 3, layer_sizes: vec![4 << 10, 1 << 20, 8 << 20], pull_timeout: PULL_TIMEOUT };
    let report = demo::run(&options).await?;
    eprintln!("{report}");
    let node1 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    ensure!(
        report.upstream_gets.keys().all(|client| *client == node1),
        "the upstream served other nodes: {:?}",
        report.upstream_gets
    );
    ensure!(report.upstream_gets.get(&node1) == Some(&report.pull_blobs), "{:?}", report.upstream_gets);
    for pull in &report.pulls[1..] {
        ensure!(pull.upstream_bytes == 0, "node {} fetched from the upstream", pull.node);
        ensure!(
            pull.peer_bytes >= report.pull_bytes as f64,
            "node {} got {} bytes from peers",
            pull.node,
            pull.peer_bytes
        );
    }
    Ok(())
}
