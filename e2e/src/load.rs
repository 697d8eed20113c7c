//! What the load tests (`tests/churn.rs`, `tests/soak.rs`) share: one pull
//! cycle on a node (a CRI pull, its content checked against what was pushed,
//! the image removed and its layers garbage collected so that the next pull
//! really fetches), the accounting of where the pullers' blob bytes came
//! from, a seeded PRNG for replayable choices, and percentiles of timings.
//! It starts no process and decides nothing about the cluster's shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::cluster::Cluster;
use crate::cri::Cri;
use crate::image::BuiltImage;
use crate::scenario::{Scenario, verify_content_in};
use crate::wait::poll_until;

/// Bound on containerd's GC dropping a removed image's blobs.
const GC_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the upstream's access log catching up with the last pulls.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a pull runs: a node's CRI client and its containerd content store.
#[derive(Clone)]
pub struct PullTarget {
    pub node: usize,
    pub cri: Cri,
    pub content_dir: PathBuf,
}

impl PullTarget {
    /// Node `node` of `cluster`.
    pub fn of(cluster: &Cluster, node: usize) -> Result<Self> {
        let n = cluster.node(node)?;
        Ok(Self { node, cri: n.cri().clone(), content_dir: n.content_dir() })
    }
}

/// One finished, verified and removed pull.
#[derive(Debug, Clone, Copy)]
pub struct PullDone {
    pub elapsed: Duration,
    /// Bytes of the config and layers the pull fetched.
    pub blob_bytes: u64,
}

/// Pulls `image` (as `reference`) on `target` through CRI within `timeout`;
/// checks that CRI names the pushed config as the image id and that every
/// blob in the content store hashes to its pushed digest; removes the image
/// and waits until its layers are garbage collected.
pub async fn pull_verify_remove(
    target: &PullTarget,
    image: &BuiltImage,
    reference: &str,
    timeout: Duration,
) -> Result<PullDone> {
    let platform = image.host_platform()?;
    let pulled = target.cri.pull(reference, timeout).await?;
    ensure!(
        pulled.image_ref == platform.config.digest,
        "CRI pulled image {} but the pushed config is {}",
        pulled.image_ref,
        platform.config.digest
    );
    verify_content_in(&target.content_dir, image)?;
    target.cri.remove(&pulled.image_ref).await?;
    wait_layers_gone(&target.content_dir, image).await?;
    Ok(PullDone { elapsed: pulled.elapsed, blob_bytes: platform.blob_bytes() })
}

/// Waits until containerd's GC dropped the image's layers from `content_dir`.
pub async fn wait_layers_gone(content_dir: &Path, image: &BuiltImage) -> Result<()> {
    let dir = content_dir.join("blobs/sha256");
    let layers: Vec<PathBuf> = image
        .host_platform()?
        .layers
        .iter()
        .filter_map(|d| d.digest.strip_prefix("sha256:").map(|hex| dir.join(hex)))
        .collect();
    poll_until("the removed image's layers to be garbage collected", GC_TIMEOUT, || async {
        Ok(layers.iter().all(|path| !path.exists()).then_some(()))
    })
    .await
}

/// Some nodes' Shoal counters; monotonic over a test if those nodes never restart.
pub struct PullerCounters {
    peer_blob_bytes: f64,
    /// `shoal_peer_fetch_failures_total` by reason.
    fetch_failures: BTreeMap<String, f64>,
}

impl PullerCounters {
    pub async fn read(s: &Scenario, nodes: &[usize]) -> Result<Self> {
        let mut counters = Self { peer_blob_bytes: 0.0, fetch_failures: BTreeMap::new() };
        for &node in nodes {
            let metrics = s.metrics(node).await?;
            counters.peer_blob_bytes +=
                metrics.sum("shoal_bytes_served_total", &[("source", "peer"), ("kind", "blob")]);
            let failures = metrics.samples.iter().filter(|m| m.name == "shoal_peer_fetch_failures_total");
            for sample in failures {
                let reason = sample.labels.get("reason").cloned().unwrap_or_default();
                *counters.fetch_failures.entry(reason).or_default() += sample.value;
            }
        }
        Ok(counters)
    }
}

/// Where the pullers' blob bytes came from during the pulls.
#[derive(Debug, Clone)]
pub struct FetchedBytes {
    pub from_peers: u64,
    pub from_upstream: u64,
    /// Failed peer fetches of the pullers during the pulls, by reason.
    pub peer_fetch_failures: BTreeMap<String, f64>,
}

/// Waits (bounded) until peers and the upstream together account for every
/// blob byte (`needed`) the pulls of `pullers` needed since `before` and the
/// access log `mark`: each pull really fetched its image.
pub async fn fetched_bytes(
    s: &Scenario,
    pullers: &[usize],
    before: &PullerCounters,
    mark: usize,
    needed: u64,
) -> Result<FetchedBytes> {
    let after = PullerCounters::read(s, pullers).await?;
    let from_peers = (after.peer_blob_bytes - before.peer_blob_bytes) as u64;
    let peer_fetch_failures = after
        .fetch_failures
        .iter()
        .map(|(reason, n)| (reason.clone(), n - before.fetch_failures.get(reason).copied().unwrap_or_default()))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let puller_ips = pullers.iter().map(|&n| s.ip(n)).collect::<Result<Vec<_>>>()?;
    let upstream_bytes = || -> Result<u64> {
        let by_client = s.upstream_log(mark)?.blob_bytes_by_client();
        Ok(puller_ips.iter().filter_map(|ip| by_client.get(ip)).sum())
    };
    let waited = poll_until("peers and the upstream to account for every pulled blob byte", LOG_TIMEOUT, || async {
        let from_upstream = upstream_bytes()?;
        Ok((from_peers + from_upstream >= needed).then_some(from_upstream))
    })
    .await;
    let from_upstream = match waited {
        Ok(bytes) => bytes,
        Err(err) => {
            let from_upstream = upstream_bytes().context("read the upstream's access log")?;
            return Err(err.context(format!(
                "the pulls needed {needed} blob bytes; peers gave {from_peers}, the upstream {from_upstream}"
            )));
        }
    };
    Ok(FetchedBytes { from_peers, from_upstream, peer_fetch_failures })
}

/// SplitMix64: seeded, replayable choices without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u64() & 0xff) as u8).collect()
    }

    /// A random `sha256:<64 hex>` digest that nothing holds.
    pub fn digest(&mut self) -> String {
        format!("sha256:{}", hex::encode(self.bytes(32)))
    }
}

/// The nearest-rank percentile of sorted `times`.
pub fn percentile(times: &[Duration], p: f64) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len());
    times[rank - 1]
}
