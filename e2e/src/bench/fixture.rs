//! What the sections share: a two-node cluster with the upstream, test
//! images of a given shape (host platform only, stored-gzip layers of seeded
//! random bytes), blob URLs as containerd sends them, and Shoal's PIDs.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::cluster::ClusterOptions;
use crate::image::{Arch, Compression, ImageSpec};
use crate::registry::REGISTRY_ADDR;
use crate::scenario::Scenario;

/// Bound on one CRI pull in the benchmark (1 GB through a shaped upstream included).
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on one blob GET.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Two nodes with Shoal (node 2 bootstraps from node 1) and the upstream registry.
pub async fn two_nodes(name: &'static str) -> Result<Scenario> {
    Scenario::start(name, &ClusterOptions::with_shoal(2)).await
}

/// A one-platform image (this machine's) with one layer per entry of `layer_sizes`.
pub fn image_spec(repository: &str, layer_sizes: &[u64], seed: u64) -> ImageSpec {
    let arch = if cfg!(target_arch = "aarch64") { Arch::Arm64 } else { Arch::Amd64 };
    ImageSpec {
        repository: repository.to_owned(),
        tag: "v1".to_owned(),
        layer_sizes: layer_sizes.to_vec(),
        arches: vec![arch],
        compression: Compression::GzipStored,
        seed,
    }
}

/// `<base>/v2/<repository>/blobs/<digest>?ns=<upstream>`, as containerd asks a mirror.
pub fn mirror_blob_url(base: &str, repository: &str, digest: &str) -> String {
    format!("{base}/v2/{repository}/blobs/{digest}?ns={REGISTRY_ADDR}")
}

/// `<base>/v2/<repository>/blobs/<digest>`, as asked of the registry itself.
pub fn registry_blob_url(base: &str, repository: &str, digest: &str) -> String {
    format!("{base}/v2/{repository}/blobs/{digest}")
}

/// The PID of node `node`'s Shoal.
pub fn shoal_pid(scenario: &mut Scenario, node: usize) -> Result<u32> {
    scenario.cluster.node_mut(node)?.shoal()?.pid().with_context(|| format!("Shoal on node {node} is not running"))
}

/// Splits `total` bytes into `layers` near-equal layer sizes.
pub fn split(total: u64, layers: usize) -> Vec<u64> {
    let layers = layers.max(1) as u64;
    (0..layers).map(|i| total / layers + u64::from(i < total % layers)).collect()
}

/// Mebibytes from KiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_byte() {
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split(10_000_000, 1), vec![10_000_000]);
        assert_eq!(split(7, 0), vec![7]);
    }
}
