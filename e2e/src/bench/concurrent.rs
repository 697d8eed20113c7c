//! Section b, concurrent clients: N clients at once (each with its own
//! connection) fetch blobs from one Shoal node, either all the same blob or
//! one distinct blob each, from local content (node 1) or through a peer
//! (node 2, which has nothing). Reports aggregate throughput, latency
//! percentiles over every request, and the resident memory of both Shoal
//! processes (VmHWM reset before each repetition, VmRSS sampled meanwhile).

use std::time::Instant;

use anyhow::Result;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::client::Fetcher;
use super::fixture::{self, FETCH_TIMEOUT, PULL_TIMEOUT, mib};
use super::procfs::{self, sample_rss_while};
use super::progress::Progress;
use super::stats::{max, mb_per_s, median, percentile};
use crate::image::Descriptor;

const REPOSITORY: &str = "bench/many";

/// What section b measures.
#[derive(Debug, Clone)]
pub struct ConcurrentOptions {
    pub clients: usize,
    pub blob_size: u64,
    pub reps: usize,
}

/// Results of section b.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcurrentResult {
    pub clients: usize,
    pub blob_bytes: u64,
    pub reps: usize,
    pub modes: Vec<ModeResult>,
}

/// One way of loading a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeResult {
    pub name: String,
    /// The node the clients talk to.
    pub serving_node: usize,
    pub aggregate_mb_per_s: f64,
    pub aggregate_mb_per_s_per_rep: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests that did not get their whole blob (e.g. a 404: containerd would go to the upstream).
    pub failed_requests: usize,
    /// The first such failure, if any.
    pub first_failure: Option<String>,
    /// VmHWM of each node's Shoal (node 1, node 2), the largest over the repetitions.
    pub peak_rss_mib: [f64; 2],
    /// The largest VmRSS sampled every 50 ms (node 1, node 2).
    pub max_sampled_rss_mib: [f64; 2],
}

struct Mode {
    name: &'static str,
    node: usize,
    distinct: bool,
}

const MODES: [Mode; 4] = [
    Mode { name: "local, same blob", node: 1, distinct: false },
    Mode { name: "local, distinct blobs", node: 1, distinct: true },
    Mode { name: "peer, same blob", node: 2, distinct: false },
    Mode { name: "peer, distinct blobs", node: 2, distinct: true },
];

pub fn steps(options: &ConcurrentOptions) -> u64 {
    MODES.len() as u64 * options.reps as u64
}

pub async fn run(options: &ConcurrentOptions, progress: &Progress) -> Result<ConcurrentResult> {
    progress.phase("concurrent: starting two nodes and the upstream");
    let mut scenario = fixture::two_nodes("bench-concurrent").await?;
    progress.phase(format!("concurrent: building and pushing {} distinct blobs", options.clients));
    let sizes = vec![options.blob_size; options.clients];
    let image = scenario.push(&fixture::image_spec(REPOSITORY, &sizes, 23)).await?;
    let layers = image.host_platform()?.layers.clone();
    progress.phase("concurrent: node 1 pulls them; node 2 finds them on node 1");
    scenario.cluster.node(1)?.cri().pull(&scenario.reference(&image), PULL_TIMEOUT).await?;
    scenario.wait_servable(2, &image).await?;
    let pids = [fixture::shoal_pid(&mut scenario, 1)?, fixture::shoal_pid(&mut scenario, 2)?];
    let mut modes = Vec::new();
    for mode in &MODES {
        let base = scenario.cluster.node(mode.node)?.mirror_url();
        let mut result = ModeResult {
            name: mode.name.to_owned(),
            serving_node: mode.node,
            aggregate_mb_per_s: 0.0,
            aggregate_mb_per_s_per_rep: Vec::new(),
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            failed_requests: 0,
            first_failure: None,
            peak_rss_mib: [0.0; 2],
            max_sampled_rss_mib: [0.0; 2],
        };
        let mut latencies_ms = Vec::new();
        for rep in 1..=options.reps {
            progress.phase(format!("concurrent: {} x {}, rep {rep}/{}", options.clients, mode.name, options.reps));
            let chosen: Vec<&Descriptor> =
                (0..options.clients).map(|i| &layers[if mode.distinct { i } else { 0 }]).collect();
            let rep_result = one_rep(&base, &chosen, &pids).await?;
            result.aggregate_mb_per_s_per_rep.push(rep_result.aggregate_mb_per_s);
            latencies_ms.extend(rep_result.latencies_ms);
            result.failed_requests += rep_result.failures.len();
            if result.first_failure.is_none() {
                result.first_failure = rep_result.failures.into_iter().next();
            }
            for i in 0..2 {
                result.peak_rss_mib[i] = result.peak_rss_mib[i].max(rep_result.hwm_mib[i]);
                result.max_sampled_rss_mib[i] = result.max_sampled_rss_mib[i].max(rep_result.sampled_mib[i]);
            }
            progress.step();
        }
        result.aggregate_mb_per_s = median(&result.aggregate_mb_per_s_per_rep);
        result.p50_ms = percentile(&latencies_ms, 50.0);
        result.p99_ms = percentile(&latencies_ms, 99.0);
        result.max_ms = max(&latencies_ms);
        modes.push(result);
    }
    scenario.finish().await?;
    Ok(ConcurrentResult { clients: options.clients, blob_bytes: layers[0].size, reps: options.reps, modes })
}

struct RepResult {
    aggregate_mb_per_s: f64,
    latencies_ms: Vec<f64>,
    hwm_mib: [f64; 2],
    sampled_mib: [f64; 2],
    failures: Vec<String>,
}

/// Every client fetches its blob once, all at the same time.
async fn one_rep(base: &str, blobs: &[&Descriptor], pids: &[u32; 2]) -> Result<RepResult> {
    for pid in pids {
        procfs::reset_peak(*pid)?;
    }
    let start = Instant::now();
    let fetches = blobs.iter().map(|blob| {
        let url = fixture::mirror_blob_url(base, REPOSITORY, &blob.digest);
        async move { Fetcher::new(FETCH_TIMEOUT).fetch(&url, blob.size).await }
    });
    let (outcomes, sampled) = sample_rss_while(pids, join_all(fetches)).await;
    let mut fetched = Vec::new();
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(done) => fetched.push(done),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let total: u64 = fetched.iter().map(|f| f.bytes).sum();
    let hwm = [procfs::memory(pids[0])?.hwm_kib, procfs::memory(pids[1])?.hwm_kib];
    Ok(RepResult {
        aggregate_mb_per_s: mb_per_s(total, wall),
        latencies_ms: fetched.iter().map(|f| f.seconds() * 1000.0).collect(),
        hwm_mib: [mib(hwm[0]), mib(hwm[1])],
        sampled_mib: [mib(sampled[0]), mib(sampled[1])],
        failures,
    })
}
