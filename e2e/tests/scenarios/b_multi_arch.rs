//! b. A multi-arch image (an OCI index over linux/amd64 and linux/arm64),
//! pulled through peers by tag and by digest: node 2 by tag (CRI), node 3 by
//! the index digest (CRI), node 4 by the platform manifest's digest (`ctr`,
//! which fetches in its own process). Only the host platform's blobs move.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_e2e::scenario::{KIB, MIB, PULL_TIMEOUT, Scenario, ensure_within};
use shoal_e2e::{BuiltImage, ClusterOptions, ImageSpec};

use crate::support::blob_bytes;

const PEER_PULL_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_a_multi_arch_image_pulls_through_peers_by_tag_and_by_digest() -> Result<()> {
    let mut s = Scenario::start("b", &ClusterOptions::with_shoal(4)).await?;
    let image = s.push(&ImageSpec::multi_arch("e2e/b", "v1", &[4 * KIB, MIB, 2 * MIB])).await?;
    ensure!(image.top.media_type == shoal_e2e::image::OCI_INDEX, "the test image should be an index");
    let platform = image.host_platform()?.clone();
    let mark = s.upstream_mark()?;
    s.pull(1, &image).await?;
    for node in 2..=4 {
        s.wait_servable(node, &image).await?;
    }
    s.stop_upstream()?;

    let by_tag = s.pull(2, &image).await?;
    ensure_within(by_tag, PEER_PULL_BOUND, "the pull by tag")?;
    let index_ref = s.reference_by_digest(&image, &image.top.digest);
    let by_index = s.pull_reference(3, &index_ref).await?;
    ensure_within(by_index, PEER_PULL_BOUND, "the pull by index digest")?;
    let manifest_ref = s.reference_by_digest(&image, &platform.manifest.digest);
    let node4 = s.cluster.node(4)?;
    let by_manifest = node4.ctr().pull(&manifest_ref, &node4.certs_dir(), PULL_TIMEOUT).await?;
    s.report(&format!("node 4 pulled {manifest_ref} with ctr"), by_manifest);
    ensure_within(by_manifest, PEER_PULL_BOUND, "the ctr pull by manifest digest")?;

    for node in 2..=4 {
        s.ensure_upstream_served_nothing_to(mark, node)?;
        let metrics = s.metrics(node).await?;
        let got = blob_bytes(&metrics, "peer");
        ensure!(got >= platform.blob_bytes() as f64, "node {node} got only {got} blob bytes from peers");
        ensure!(metrics.requests("peer", "manifest") >= 1.0, "node {node} got no manifest from peers");
        ensure_only_host_platform(&s, node, &image).await?;
    }
    s.verify_content(2, &image)?;
    s.verify_content(3, &image)?;
    s.finish().await
}

/// Node `node` holds the host platform's manifest, config and layers, and
/// nothing of the other platform.
async fn ensure_only_host_platform(s: &Scenario, node: usize, image: &BuiltImage) -> Result<()> {
    let content = s.cluster.node(node)?.ctr().content_digests().await?;
    let host = image.host_platform()?;
    for blob in std::iter::once(&host.manifest).chain(host.blobs()) {
        ensure!(content.contains(&blob.digest), "node {node} lacks {}", blob.digest);
    }
    for other in image.platforms.iter().filter(|p| p.arch != host.arch) {
        for blob in std::iter::once(&other.manifest).chain(other.blobs()) {
            ensure!(!content.contains(&blob.digest), "node {node} fetched {:?} blob {}", other.arch, blob.digest);
        }
    }
    Ok(())
}
