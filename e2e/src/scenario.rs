//! What the scenario tests (`tests/scenarios/`) share: a cluster, test
//! images pushed to the upstream or imported into a node, timed CRI pulls
//! that are reported on stderr, and the evidence of where bytes came from:
//! the upstream's access log per node address, each node's Shoal metrics,
//! and the content that landed in containerd, hashed again.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use crate::cluster::{Cluster, ClusterOptions};
use crate::image::{self, BuiltImage, ImageSpec};
use crate::metrics::Metrics;
use crate::registry::AccessLog;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
/// Bound on any single pull; each scenario asserts its own, tighter bound.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on a node finding an image on its peers.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);
const PUSH_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the access log catching up with a finished pull.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A running scenario: its cluster and the images it built.
pub struct Scenario {
    pub name: &'static str,
    pub cluster: Cluster,
    images: TempDir,
}

impl Scenario {
    /// Starts the cluster for scenario `name` (waits for the machine-wide cluster lock).
    pub async fn start(name: &'static str, options: &ClusterOptions) -> Result<Self> {
        let cluster = Cluster::start(options).await.with_context(|| format!("start the cluster of scenario {name}"))?;
        let images = tempfile::Builder::new().prefix("shoal-e2e-images-").tempdir()?;
        Ok(Self { name, cluster, images })
    }

    /// Builds `spec` (deterministic: the same spec gives the same digests).
    pub fn build(&self, spec: &ImageSpec) -> Result<BuiltImage> {
        let dir = self.images.path().join(format!("{}-{}", spec.repository.replace('/', "_"), spec.tag));
        image::build(spec, &dir)
    }

    /// Builds `spec` and pushes it to the upstream registry.
    pub async fn push(&self, spec: &ImageSpec) -> Result<BuiltImage> {
        let built = self.build(spec)?;
        built.push(self.cluster.registry_host(), PUSH_TIMEOUT).await?;
        Ok(built)
    }

    /// Imports `image` into node `node`'s containerd, with no registry involved.
    pub async fn import(&self, node: usize, image: &BuiltImage) -> Result<()> {
        self.import_into(&[node], image).await
    }

    /// Imports `image` into each of `nodes`' containerd (one archive for all).
    pub async fn import_into(&self, nodes: &[usize], image: &BuiltImage) -> Result<()> {
        let reference = self.reference(image);
        let archive = self.images.path().join(format!("{}.tar", image.top.hex()));
        image.write_import_archive(&reference, &archive)?;
        for node in nodes {
            let imported = self.cluster.node(*node)?.ctr().import(&archive, &reference, PULL_TIMEOUT).await;
            imported.with_context(|| format!("import {reference} into node {node}"))?;
        }
        std::fs::remove_file(&archive)?;
        Ok(())
    }

    /// `<registry>/<repository>:<tag>`
    pub fn reference(&self, image: &BuiltImage) -> String {
        image.reference(self.cluster.registry_host())
    }

    /// `<registry>/<repository>@<digest>`
    pub fn reference_by_digest(&self, image: &BuiltImage, digest: &str) -> String {
        format!("{}/{}@{digest}", self.cluster.registry_host(), image.spec.repository)
    }

    /// Pulls `image` by tag on `node` through CRI, checks that CRI lists it,
    /// and reports the time taken.
    pub async fn pull(&self, node: usize, image: &BuiltImage) -> Result<Duration> {
        let reference = self.reference(image);
        self.pull_reference(node, &reference).await
    }

    /// Pulls `reference` on `node` through CRI and reports the time taken.
    pub async fn pull_reference(&self, node: usize, reference: &str) -> Result<Duration> {
        let cri = self.cluster.node(node)?.cri();
        let pulled = cri.pull(reference, PULL_TIMEOUT).await.with_context(|| format!("pull on node {node}"))?;
        let listed = cri.list().await?.iter().any(|i| i.id == pulled.image_ref);
        ensure!(listed, "CRI on node {node} does not list {} after pulling {reference}", pulled.image_ref);
        self.report(&format!("node {node} pulled {reference}"), pulled.elapsed);
        Ok(pulled.elapsed)
    }

    /// Prints a measured time, tagged with the scenario: the suite's timing record.
    pub fn report(&self, what: &str, elapsed: Duration) {
        eprintln!("[scenario {}] {what} in {:.2} s", self.name, elapsed.as_secs_f64());
    }

    /// Waits until node `node`'s Shoal can serve `image`'s tag from a peer.
    pub async fn wait_servable(&self, node: usize, image: &BuiltImage) -> Result<()> {
        self.cluster.node(node)?.wait_until_servable(image, DISCOVERY_TIMEOUT).await
    }

    /// Stops the upstream registry: from now on only peers can serve.
    pub fn stop_upstream(&mut self) -> Result<()> {
        self.cluster.registry_mut()?.stop();
        Ok(())
    }

    /// Starts the stopped upstream registry again (its images remain).
    pub async fn restart_upstream(&mut self) -> Result<()> {
        self.cluster.registry_mut()?.restart().await
    }

    /// The number of access log entries so far: a mark to read the log after.
    pub fn upstream_mark(&self) -> Result<usize> {
        Ok(self.cluster.registry()?.access_log()?.entries.len())
    }

    /// The access log after `mark`.
    pub fn upstream_log(&self, mark: usize) -> Result<AccessLog> {
        Ok(self.cluster.registry()?.access_log()?.since(mark))
    }

    /// Waits until the access log after `mark` shows node `node` fetching
    /// every blob of `image`'s host platform, and returns it.
    pub async fn upstream_served(&self, mark: usize, node: usize, image: &BuiltImage) -> Result<AccessLog> {
        let client = self.ip(node)?;
        let wanted: Vec<String> = image.host_platform()?.blobs().iter().map(|d| d.digest.clone()).collect();
        let gets = |log: &AccessLog| {
            let gets = log.blob_gets();
            wanted.iter().all(|d| gets.get(&(d.clone(), client)).is_some_and(|n| *n > 0))
        };
        self.cluster
            .registry()?
            .access_log_when(mark, LOG_TIMEOUT, gets)
            .await
            .with_context(|| format!("the upstream should have served every blob of the image to node {node}"))
    }

    /// Fails if the access log after `mark` shows any blob fetched by `node`.
    pub fn ensure_upstream_served_nothing_to(&self, mark: usize, node: usize) -> Result<()> {
        let gets = self.upstream_log(mark)?.blob_gets_by(self.ip(node)?);
        ensure!(gets == 0, "the upstream served {gets} blobs to node {node}; peers should have");
        Ok(())
    }

    pub fn ip(&self, node: usize) -> Result<IpAddr> {
        Ok(IpAddr::V4(self.cluster.node(node)?.ip))
    }

    /// Scrapes node `node`'s Shoal metrics.
    pub async fn metrics(&self, node: usize) -> Result<Metrics> {
        self.cluster.node(node)?.metrics().await
    }

    /// Every blob of `image` that a pull fetches (index, manifest, config,
    /// layers) is in node `node`'s content store and hashes to its digest:
    /// containerd committed nothing corrupt.
    pub fn verify_content(&self, node: usize, image: &BuiltImage) -> Result<()> {
        let content_dir = self.cluster.node(node)?.content_dir();
        verify_content_in(&content_dir, image).with_context(|| format!("content of node {node}"))
    }

    /// Tears the cluster down and fails if anything was left behind.
    pub async fn finish(self) -> Result<()> {
        self.cluster.shutdown().await?.ensure_clean()
    }
}

/// Fails unless `elapsed` is under `bound`.
pub fn ensure_within(elapsed: Duration, bound: Duration, what: &str) -> Result<()> {
    if elapsed >= bound {
        bail!("{what} took {:.1} s, over the bound of {:.0} s", elapsed.as_secs_f64(), bound.as_secs_f64());
    }
    Ok(())
}

/// Every blob a pull of `image` fetches is in the containerd content store
/// at `content_dir` and hashes to its digest (usable without a [`Scenario`],
/// e.g. from a task that only holds the node's paths).
pub fn verify_content_in(content_dir: &Path, image: &BuiltImage) -> Result<()> {
    let dir = content_dir.join("blobs/sha256");
    for digest in image.pulled_digests()? {
        let hex = digest.strip_prefix("sha256:").context("digest without sha256: prefix")?;
        let actual = sha256_file(&dir.join(hex)).with_context(|| format!("read {digest}"))?;
        ensure!(actual == hex, "{digest} is held with content hashing to sha256:{actual}");
    }
    Ok(())
}

/// Runs `f` and returns its result with the time it took.
pub async fn timed<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = f.await?;
    Ok((value, start.elapsed()))
}

fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}
