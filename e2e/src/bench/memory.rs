//! Section e, memory of an idle node: node 1's containerd holds many small
//! images (written by [`super::keys`] and imported without unpacking), both
//! nodes run Shoal, and once node 1 advertises every key its resident memory
//! is sampled over a quiet window. Node 2 (an empty containerd, storing node
//! 1's provider records) is reported beside it. The peak under load comes
//! from section b.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::fixture::{self, mib};
use super::keys;
use super::procfs::{self, sample_rss_while};
use super::progress::Progress;
use crate::cluster::ClusterOptions;
use crate::registry::REGISTRY_ADDR;
use crate::scenario::Scenario;
use crate::wait::poll_until;

const KEYS_PER_IMAGE: usize = 100;
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(300);

/// What section e measures.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Keys node 1 advertises (rounded up to whole images of 100 keys).
    pub keys: usize,
    /// How long the idle node is sampled.
    pub window: Duration,
}

/// Results of section e.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryResult {
    pub method: String,
    pub images: usize,
    pub keys_expected: usize,
    /// `shoal_advertised_keys` of node 1 when sampling started.
    pub keys_advertised: f64,
    pub window_seconds: f64,
    /// Node 1 (advertising): VmRSS at the end, the largest sampled VmRSS, VmHWM since start.
    pub idle_rss_mib: f64,
    pub idle_max_sampled_rss_mib: f64,
    pub idle_hwm_mib: f64,
    /// Node 2 (empty containerd, holds node 1's provider records): VmRSS at the end.
    pub other_node_rss_mib: f64,
    pub idle_target_mib: f64,
    /// Filled from section b when it ran: the largest VmHWM of any Shoal under load.
    pub peak_under_load_mib: Option<f64>,
    pub load_target_mib: f64,
}

pub fn steps(_: &MemoryOptions) -> u64 {
    1
}

pub async fn run(options: &MemoryOptions, progress: &Progress) -> Result<MemoryResult> {
    progress.phase("memory: starting two nodes");
    let options_cluster = ClusterOptions { nodes: 2, registry: false, shoal: false, shoal_args: Vec::new() };
    let mut scenario = Scenario::start("bench-memory", &options_cluster).await?;
    let images = options.keys.div_ceil(KEYS_PER_IMAGE).max(1);
    progress.phase(format!("memory: importing {images} images into node 1's containerd"));
    let dir = tempfile::Builder::new().prefix("shoal-bench-keys-").tempdir()?;
    let archive = dir.path().join("keys.tar");
    keys::write_archive(&archive, &format!("{REGISTRY_ADDR}/bench/keys"), images, KEYS_PER_IMAGE)?;
    let ctr = scenario.cluster.node(1)?.ctr();
    ctr.import_without_unpack(&archive, IMPORT_TIMEOUT).await?;
    let names = ctr.image_names().await?;
    let imported = names.iter().filter(|n| n.contains("/bench/keys-")).count();
    anyhow::ensure!(imported == images, "imported {imported} of {images} images");
    drop(dir);
    progress.phase("memory: starting Shoal; waiting until node 1 advertises every key");
    scenario.cluster.start_shoal_everywhere(&[]).await?;
    let expected = images * KEYS_PER_IMAGE;
    let node = scenario.cluster.node(1)?;
    let advertised = poll_until(&format!("node 1 to advertise {expected} keys"), ADVERTISE_TIMEOUT, || async {
        let keys = node.metrics().await?.value("shoal_advertised_keys").unwrap_or(0.0);
        Ok((keys >= expected as f64).then_some(keys))
    })
    .await?;
    progress.phase(format!("memory: sampling idle RSS for {:?}", options.window));
    let pids = [fixture::shoal_pid(&mut scenario, 1)?, fixture::shoal_pid(&mut scenario, 2)?];
    let ((), sampled) = sample_rss_while(&pids, tokio::time::sleep(options.window)).await;
    let idle = procfs::memory(pids[0]).context("memory of node 1's Shoal")?;
    let other = procfs::memory(pids[1]).context("memory of node 2's Shoal")?;
    progress.step();
    scenario.finish().await?;
    Ok(MemoryResult {
        method: format!(
            "{images} images of {KEYS_PER_IMAGE} keys each (manifest, config, {} tiny layers, tag) written into a real \
             containerd by `ctr images import --no-unpack` of one generated OCI archive",
            KEYS_PER_IMAGE - 3
        ),
        images,
        keys_expected: expected,
        keys_advertised: advertised,
        window_seconds: options.window.as_secs_f64(),
        idle_rss_mib: mib(idle.rss_kib),
        idle_max_sampled_rss_mib: mib(sampled[0]),
        idle_hwm_mib: mib(idle.hwm_kib),
        other_node_rss_mib: mib(other.rss_kib),
        idle_target_mib: 40.0,
        peak_under_load_mib: None,
        load_target_mib: 80.0,
    })
}
