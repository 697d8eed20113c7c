//! Section a, blob throughput: one large blob fetched whole, side by side
//! from nginx (sendfile, the same file in node 1's containerd content store),
//! Shoal serving local content (node 1), Shoal through one peer hop (node 2
//! has nothing, node 1 holds it) both ways (asked with `Range: bytes=0-`, which
//! always takes the verify-then-send spool; asked whole, which node 1 passes
//! straight through once it trusts node 2: from the second repetition with
//! the default `--stream-after-verified 3`) and the upstream registry. Repetitions are
//! interleaved across targets; every target is fetched once unmeasured first
//! (warm page cache). Also records the time to the first byte and the CPU
//! time both Shoal processes spent per fetch: where the time goes.

use std::net::SocketAddr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::client::Fetcher;
use super::fixture::{self, FETCH_TIMEOUT, PULL_TIMEOUT};
use super::nginx::Nginx;
use super::procfs;
use super::progress::Progress;
use super::stats::{mb_per_s, median};
use crate::demo::bytes;
use crate::scenario::Scenario;

/// Where nginx listens (free in the cluster's 127.0.0.x range).
const NGINX_ADDR: &str = "127.0.0.210:8080";
const REPOSITORY: &str = "bench/blob";

/// What section a measures.
#[derive(Debug, Clone)]
pub struct BlobOptions {
    /// Size of the one layer's file (the blob is a few KiB larger: tar and gzip framing).
    pub size: u64,
    pub reps: usize,
}

/// Results of section a.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobResult {
    pub blob_bytes: u64,
    pub reps: usize,
    pub targets: Vec<TargetResult>,
    /// Blobs node 2 passed straight through during the measured repetitions
    /// (`shoal_peer_blob_passthroughs_total`): one per repetition of `shoal-peer`
    /// when trust was earned in the warm-up.
    #[serde(default)]
    pub peer_passthroughs: f64,
}

/// One server's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub description: String,
    pub seconds: Vec<f64>,
    pub first_byte_seconds: Vec<f64>,
    /// Median over the repetitions.
    pub mb_per_s: f64,
    pub ratio_vs_nginx: f64,
    /// CPU seconds of both Shoal processes during one fetch (median).
    pub shoal_cpu_seconds: f64,
    /// The goal for this target as a ratio to nginx, if any.
    pub target_ratio: Option<f64>,
}

struct Target {
    name: &'static str,
    description: &'static str,
    url: String,
    /// Sent as `Range`; `None`: the blob is asked whole.
    range: Option<&'static str>,
    target_ratio: Option<f64>,
}

/// Measurements section a takes (for the progress bar).
pub fn steps(options: &BlobOptions) -> u64 {
    5 * (options.reps as u64 + 1)
}

pub async fn run(options: &BlobOptions, progress: &Progress) -> Result<BlobResult> {
    progress.phase("blob: starting two nodes and the upstream");
    let mut scenario = fixture::two_nodes("bench-blob").await?;
    progress.phase(format!("blob: building and pushing a {} image", bytes(options.size as f64)));
    let image = scenario.push(&fixture::image_spec(REPOSITORY, &[options.size], 11)).await?;
    let layer = image.host_platform()?.layers[0].clone();
    progress.phase("blob: node 1 pulls it from the upstream; node 2 finds it on node 1");
    scenario.cluster.node(1)?.cri().pull(&scenario.reference(&image), PULL_TIMEOUT).await?;
    scenario.wait_servable(2, &image).await?;
    let addr: SocketAddr = NGINX_ADDR.parse()?;
    let nginx = Nginx::start(&scenario.cluster.node(1)?.content_dir(), addr).await?;
    let node_url = |n: usize| scenario.cluster.node(n).map(|node| node.mirror_url());
    let targets = vec![
        Target {
            name: "nginx",
            description: "nginx, sendfile, the file in node 1's content store",
            url: format!("{}/blobs/sha256/{}", nginx.url(), layer.hex()),
            range: None,
            target_ratio: None,
        },
        Target {
            name: "shoal-local",
            description: "Shoal on node 1, local content",
            url: fixture::mirror_blob_url(&node_url(1)?, REPOSITORY, &layer.digest),
            range: None,
            target_ratio: Some(0.9),
        },
        Target {
            name: "shoal-peer-verified",
            description: "Shoal on node 2, one peer hop to node 1, verified before sending (Range: bytes=0-)",
            url: fixture::mirror_blob_url(&node_url(2)?, REPOSITORY, &layer.digest),
            range: Some("bytes=0-"),
            target_ratio: None,
        },
        Target {
            name: "shoal-peer",
            description: "Shoal on node 2, one peer hop to node 1, passed through from a trusted peer",
            url: fixture::mirror_blob_url(&node_url(2)?, REPOSITORY, &layer.digest),
            range: None,
            target_ratio: Some(0.8),
        },
        Target {
            name: "registry",
            description: "the upstream docker-registry",
            url: fixture::registry_blob_url(&scenario.cluster.registry_url(), REPOSITORY, &layer.digest),
            range: None,
            target_ratio: None,
        },
    ];
    let pids = [fixture::shoal_pid(&mut scenario, 1)?, fixture::shoal_pid(&mut scenario, 2)?];
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); targets.len()];
    let mut passthroughs_before = 0.0;
    for rep in 0..=options.reps {
        if rep == 1 {
            passthroughs_before = passthroughs(&scenario).await?;
        }
        for (target, samples) in targets.iter().zip(&mut samples) {
            let label = if rep == 0 { "warm-up".to_owned() } else { format!("rep {rep}/{}", options.reps) };
            progress.phase(format!("blob: {} ({label})", target.name));
            let cpu_before = cpu_of(&pids);
            let fetched = Fetcher::new(FETCH_TIMEOUT).fetch_with(&target.url, layer.size, target.range).await?;
            let cpu = cpu_of(&pids) - cpu_before;
            if rep > 0 {
                samples.push((fetched.seconds(), fetched.first_byte.as_secs_f64(), cpu));
            }
            progress.step();
        }
    }
    let peer_passthroughs = passthroughs(&scenario).await? - passthroughs_before;
    drop(nginx);
    scenario.finish().await?;
    Ok(BlobResult { peer_passthroughs, ..summarise(&targets, &samples, layer.size, options.reps) })
}

async fn passthroughs(scenario: &Scenario) -> Result<f64> {
    Ok(scenario.metrics(2).await?.sum("shoal_peer_blob_passthroughs_total", &[]))
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|pid| procfs::cpu_seconds(*pid).ok()).sum()
}

fn summarise(targets: &[Target], samples: &[Vec<(f64, f64, f64)>], blob_bytes: u64, reps: usize) -> BlobResult {
    let mut results: Vec<TargetResult> = targets
        .iter()
        .zip(samples)
        .map(|(target, samples)| {
            let seconds: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let rates: Vec<f64> = seconds.iter().map(|s| mb_per_s(blob_bytes, *s)).collect();
            TargetResult {
                name: target.name.to_owned(),
                description: target.description.to_owned(),
                first_byte_seconds: samples.iter().map(|s| s.1).collect(),
                mb_per_s: median(&rates),
                ratio_vs_nginx: 0.0,
                shoal_cpu_seconds: median(&samples.iter().map(|s| s.2).collect::<Vec<_>>()),
                target_ratio: target.target_ratio,
                seconds,
            }
        })
        .collect();
    let nginx = results.iter().find(|t| t.name == "nginx").map_or(0.0, |t| t.mb_per_s);
    for result in &mut results {
        result.ratio_vs_nginx = if nginx > 0.0 { result.mb_per_s / nginx } else { 0.0 };
    }
    BlobResult { blob_bytes, reps, targets: results, peer_passthroughs: 0.0 }
}
