//! Needs root. Real containerd daemons and a real registry on loopback, no
//! `shoal run`: every node's hosts.toml (written by `shoal::configure`) points
//! at its own Shoal address, which is down, so containerd falls back to the
//! upstream. Checks pulls through CRI and ctr, the registry's access log per
//! node, image removal, and that teardown leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_e2e::registry::AccessLog;
use shoal_e2e::{BuiltImage, Cluster, ClusterOptions, ImageSpec, image};

const PULL_TIMEOUT: Duration = Duration::from_secs(90);
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

async fn build_and_push(cluster: &Cluster, spec: &ImageSpec) -> Result<(BuiltImage, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let built = image::build(spec, dir.path())?;
    built.push(cluster.registry_host(), PUSH_TIMEOUT).await?;
    Ok((built, dir))
}

/// The access log after `mark`, once it shows at least one GET of every host-platform blob.
async fn log_after_pull(cluster: &Cluster, mark: usize, image: &BuiltImage) -> Result<AccessLog> {
    let wanted: Vec<String> = image.host_platform()?.blobs().iter().map(|d| d.digest.clone()).collect();
    let registry = cluster.registry()?;
    registry.access_log_when(mark, LOG_TIMEOUT, |log| wanted.iter().all(|d| log.blob_gets_of(d) > 0)).await
}

/// Every blob of the host platform was fetched exactly once, by `client` only,
/// and no blob of another platform was fetched.
fn assert_fetched_once_by(log: &AccessLog, image: &BuiltImage, client: IpAddr) -> Result<()> {
    let platform = image.host_platform()?;
    for blob in platform.blobs() {
        let gets = log.blob_gets();
        let by_client = gets.get(&(blob.digest.clone(), client)).copied().unwrap_or(0);
        ensure!(by_client == 1, "{} was fetched {by_client} times by {client}, expected once", blob.digest);
        ensure!(log.blob_gets_of(&blob.digest) == 1, "{} was fetched by other clients too: {gets:?}", blob.digest);
    }
    for other in image.platforms.iter().filter(|p| p.arch != platform.arch) {
        for blob in other.blobs() {
            ensure!(log.blob_gets_of(&blob.digest) == 0, "{:?} blob {} was fetched", other.arch, blob.digest);
        }
    }
    ensure!(log.blob_gets().len() == platform.blobs().len(), "unexpected blob GETs: {:?}", log.blob_gets());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_fall_back_to_the_upstream_when_the_mirror_is_down() -> Result<()> {
    let cluster = Cluster::start(&ClusterOptions::default()).await?;
    let (cri_image, _cri_dir) =
        build_and_push(&cluster, &ImageSpec::multi_arch("e2e/cri", "v1", &[4 * KIB, MIB, 8 * MIB])).await?;
    let ctr_spec = ImageSpec { seed: 7, ..ImageSpec::multi_arch("e2e/ctr", "v1", &[16 * KIB, 2 * MIB]) };
    let (ctr_image, _ctr_dir) = build_and_push(&cluster, &ctr_spec).await?;
    let cri_ref = cri_image.reference(cluster.registry_host());
    let ctr_ref = ctr_image.reference(cluster.registry_host());

    for node in cluster.nodes() {
        let hosts = std::fs::read_to_string(node.certs_dir().join("127.0.0.200:5000/hosts.toml"))?;
        ensure!(hosts.contains(&node.mirror_url()), "hosts.toml does not name the node's mirror:\n{hosts}");

        let mark = cluster.registry()?.access_log()?.entries.len();
        let pulled = node.cri().pull(&cri_ref, PULL_TIMEOUT).await?;
        ensure!(pulled.image_ref.starts_with("sha256:"), "odd image ref {}", pulled.image_ref);
        ensure!(node.cri().has_image(&cri_ref).await?, "CRI does not list {cri_ref} on node {}", node.index);
        let log = log_after_pull(&cluster, mark, &cri_image).await?;
        assert_fetched_once_by(&log, &cri_image, IpAddr::V4(node.ip))
            .with_context(|| format!("CRI pull on node {}", node.index))?;

        let mark = cluster.registry()?.access_log()?.entries.len();
        let elapsed = node.ctr().pull(&ctr_ref, &node.certs_dir(), PULL_TIMEOUT).await?;
        ensure!(node.ctr().image_names().await?.contains(&ctr_ref), "ctr does not list {ctr_ref}");
        let log = log_after_pull(&cluster, mark, &ctr_image).await?;
        assert_fetched_once_by(&log, &ctr_image, IpAddr::V4(node.ip))
            .with_context(|| format!("ctr pull on node {}", node.index))?;
        eprintln!("node {}: CRI pull {:?}, ctr pull {:?}", node.index, pulled.elapsed, elapsed);
    }

    for node in cluster.nodes() {
        node.cri().remove(&cri_ref).await?;
        node.ctr().remove(&[&ctr_ref]).await?;
        ensure!(!node.cri().has_image(&cri_ref).await?, "{cri_ref} still listed on node {}", node.index);
        let names = node.ctr().image_names().await?;
        ensure!(!names.iter().any(|n| n == &ctr_ref || n == &cri_ref), "images left on node {}: {names:?}", node.index);
    }

    let leftovers = cluster.shutdown().await?;
    leftovers.ensure_clean()
}
