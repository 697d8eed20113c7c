//! Section c, containerd pull time through a peer against the upstream: for
//! each image (sizes x layer counts), node 1 pulls from the upstream (its
//! Shoal misses, containerd falls back), then node 2 pulls through its Shoal
//! from node 1. The upstream's replies are shaped (see [`super::shaping`]).
//! Between repetitions both nodes remove the image (CRI, which deletes
//! synchronously) and its content is checked gone. The access log proves
//! node 2 got no blob from the upstream.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use super::fixture::{self, PULL_TIMEOUT};
use super::progress::Progress;
use super::shaping::Shaping;
use super::stats::median;
use crate::demo::bytes;
use crate::image::{self, BuiltImage};
use crate::scenario::Scenario;
use crate::shoal::REGISTRY_PORT;
use crate::wait::poll_until;

const REGISTRY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 200);
const PUSH_TIMEOUT: Duration = Duration::from_secs(600);
const GC_TIMEOUT: Duration = Duration::from_secs(60);

/// What section c measures.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Total layer bytes of each image (decimal: 10 MB is 10,000,000 bytes).
    pub sizes: Vec<u64>,
    pub layer_counts: Vec<usize>,
    pub reps: usize,
    /// The upstream's bandwidth as a tc rate, e.g. `1gbit`.
    pub rate: String,
}

/// Results of section c.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullResult {
    pub upstream_rate: String,
    pub reps: usize,
    pub images: Vec<ImagePull>,
}

/// One image's pulls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagePull {
    pub name: String,
    /// Blob bytes one pull fetches (config and layers).
    pub bytes: u64,
    pub layers: usize,
    pub upstream_seconds: Vec<f64>,
    pub peer_seconds: Vec<f64>,
    pub upstream_median_seconds: f64,
    pub peer_median_seconds: f64,
    /// Upstream time over peer time (medians).
    pub speedup: f64,
    /// The speed-up to beat for this size, if one is set.
    pub reference_speedup: Option<f64>,
    /// Blob bytes the upstream sent to node 2 over all repetitions (0 when peers served all).
    pub upstream_bytes_to_peer_node: u64,
}

pub fn steps(options: &PullOptions) -> u64 {
    (options.sizes.len() * options.layer_counts.len() * options.reps * 2) as u64
}

pub async fn run(options: &PullOptions, progress: &Progress) -> Result<PullResult> {
    progress.phase("pull: starting two nodes and the upstream");
    let scenario = fixture::two_nodes("bench-pull").await?;
    let mut images = Vec::new();
    for (i, size) in options.sizes.iter().enumerate() {
        for (j, layers) in options.layer_counts.iter().enumerate() {
            let name = format!("{} in {layers} layer{}", decimal_size(*size), if *layers == 1 { "" } else { "s" });
            progress.phase(format!("pull: building and pushing {name}"));
            let repository = format!("bench/pull-{}-{layers}", decimal_size(*size).replace(' ', "").to_lowercase());
            let spec = fixture::image_spec(&repository, &fixture::split(*size, *layers), 100 + (i * 10 + j) as u64);
            images.push((name, *layers, build_and_push(&scenario, &spec).await?));
        }
    }
    let shaping = Shaping::install(&options.rate, REGISTRY_IP, REGISTRY_PORT)?;
    let mut times: Vec<(Vec<f64>, Vec<f64>, u64)> = vec![(Vec::new(), Vec::new(), 0); images.len()];
    for rep in 1..=options.reps {
        for ((name, _, image), times) in images.iter().zip(&mut times) {
            progress.phase(format!("pull: {name}, node 1 from the upstream ({}), rep {rep}", shaping.rate()));
            let reference = scenario.reference(image);
            times.0.push(scenario.cluster.node(1)?.cri().pull(&reference, PULL_TIMEOUT).await?.elapsed.as_secs_f64());
            progress.step();
            progress.phase(format!("pull: {name}, node 2 through its peer, rep {rep}"));
            scenario.wait_servable(2, image).await?;
            let mark = scenario.upstream_mark()?;
            times.1.push(scenario.cluster.node(2)?.cri().pull(&reference, PULL_TIMEOUT).await?.elapsed.as_secs_f64());
            let to_node_2 = scenario.upstream_log(mark)?.blob_bytes_by_client();
            times.2 += to_node_2.get(&scenario.ip(2)?).copied().unwrap_or(0);
            progress.step();
            remove_everywhere(&scenario, image).await?;
        }
    }
    drop(shaping);
    scenario.finish().await?;
    let images = images
        .into_iter()
        .zip(times)
        .map(|((name, layers, image), (upstream, peer, upstream_bytes))| {
            let (up, down) = (median(&upstream), median(&peer));
            let pulled = image.host_platform().map_or(0, |p| p.blob_bytes());
            ImagePull {
                name,
                bytes: pulled,
                layers,
                reference_speedup: reference_speedup(pulled),
                upstream_median_seconds: up,
                peer_median_seconds: down,
                speedup: if down > 0.0 { up / down } else { 0.0 },
                upstream_seconds: upstream,
                peer_seconds: peer,
                upstream_bytes_to_peer_node: upstream_bytes,
            }
        })
        .collect();
    Ok(PullResult { upstream_rate: options.rate.clone(), reps: options.reps, images })
}

/// Builds in a directory of its own, pushes, and deletes the layout (disk is tight).
async fn build_and_push(scenario: &Scenario, spec: &image::ImageSpec) -> Result<BuiltImage> {
    let dir = tempfile::Builder::new().prefix("shoal-bench-image-").tempdir()?;
    let built = image::build(spec, dir.path())?;
    built.push(scenario.cluster.registry_host(), PUSH_TIMEOUT).await?;
    Ok(built)
}

/// Removes the image on both nodes and waits until their content stores no longer hold its blobs.
async fn remove_everywhere(scenario: &Scenario, image: &BuiltImage) -> Result<()> {
    let reference = scenario.reference(image);
    let digests = image.pulled_digests()?;
    for node in scenario.cluster.nodes() {
        node.cri().remove(&reference).await?;
        let ctr = node.ctr();
        poll_until(&format!("node {} to drop the content of {reference}", node.index), GC_TIMEOUT, || async {
            let held = ctr.content_digests().await?;
            Ok(digests.iter().all(|d| !held.contains(d)).then_some(()))
        })
        .await?;
        ensure!(!node.cri().has_image(&reference).await?, "node {} still lists {reference}", node.index);
    }
    Ok(())
}

/// The speed-up to beat (from the issue), by size class.
fn reference_speedup(bytes: u64) -> Option<f64> {
    match bytes {
        0..=50_000_000 => Some(15.0),
        50_000_001..=500_000_000 => Some(3.9),
        _ => Some(1.3),
    }
}

/// `10 MB`, `100 MB`, `1 GB`, or bytes when not round.
pub fn decimal_size(size: u64) -> String {
    match size {
        s if s >= 1_000_000_000 && s % 1_000_000_000 == 0 => format!("{} GB", s / 1_000_000_000),
        s if s >= 1_000_000 && s % 1_000_000 == 0 => format!("{} MB", s / 1_000_000),
        s => bytes(s as f64),
    }
}
