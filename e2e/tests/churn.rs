//! Needs root. The bounded churn test of issue 5, on real containerd: five
//! nodes with Shoal and the upstream registry. Nodes 1 and 2 hold a few small
//! images; nodes 3-5 run 100 CRI pulls of them, four at a time, removing each
//! image after its pull (containerd's GC drops the blobs, so every pull
//! really fetches). Every ten finished pulls a churn step restarts the holder
//! killed at the previous step and SIGKILLs a holder picked at random (seeded,
//! so a run can be replayed); the upstream keeps running, so every pull has
//! somewhere to succeed. Every pull must succeed within a generous timeout
//! and its content must hash to its digests; the blob bytes the pullers got
//! must cover every pull. Prints the pull count, kills, restarts, p50/p99
//! pull times and the blob bytes that came from peers and from the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::future::try_join_all;
use shoal_e2e::load::{
    FetchedBytes, PullDone, PullTarget, PullerCounters, SplitMix64, fetched_bytes, percentile, pull_verify_remove,
};
use shoal_e2e::scenario::{KIB, MIB, Scenario};
use shoal_e2e::{BuiltImage, Cluster, ClusterOptions, ImageSpec};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const NODES: usize = 5;
/// Nodes seeded with every image; the churn kills and restarts their Shoal.
const HOLDERS: [usize; 2] = [1, 2];
/// Nodes that run the pulls; their Shoal is never touched.
const PULLERS: [usize; 3] = [3, 4, 5];
const PULLS: usize = 100;
/// Concurrent pulls: one lane per image, each lane pulling its own image in turn.
const LANES: usize = 4;
const CHURN_EVERY: usize = 10;
const _: () = assert!(PULLS.is_multiple_of(LANES), "every lane runs the same number of pulls");
const CHURN_SEED: u64 = 0x5eed_c4a2;
/// Generous bound on one pull (a healthy one takes well under a second).
const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Layer sizes of each lane's image: a few hundred KiB to a couple of MiB.
const LAYERS: [&[u64]; LANES] =
    [&[4 * KIB, 256 * KIB, MIB], &[64 * KIB, 512 * KIB], &[16 * KIB, 128 * KIB, 768 * KIB], &[2 * MIB]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_every_pull_succeeds_while_holders_are_killed_and_restarted() -> Result<()> {
    let started = Instant::now();
    let mut s = Scenario::start("churn", &ClusterOptions::with_shoal(NODES)).await?;
    eprintln!("[churn] {NODES} nodes up in {:.2} s", started.elapsed().as_secs_f64());
    let images = seed_images(&s).await?;
    eprintln!("[churn] cluster up and images seeded in {:.2} s", started.elapsed().as_secs_f64());

    let before = PullerCounters::read(&s, &PULLERS).await?;
    let mark = s.upstream_mark()?;
    let pulls_started = Instant::now();
    let (outcome, churn) = run_pulls_under_churn(&mut s, &images).await?;
    let pulls_took = pulls_started.elapsed();

    ensure!(outcome.times.len() == PULLS, "{} of {PULLS} pulls finished", outcome.times.len());
    ensure!(churn.kills >= PULLS / CHURN_EVERY - 1, "only {} kills happened", churn.kills);
    ensure!(churn.restarts == churn.kills, "{} kills but {} restarts", churn.kills, churn.restarts);
    let bytes = fetched_bytes(&s, &PULLERS, &before, mark, outcome.needed_blob_bytes).await?;
    report(&outcome, &churn, &bytes, pulls_took);
    s.finish().await?;
    eprintln!("[churn] whole test in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Pushes one image per lane and places each on both holders (each pulls it
/// from the upstream), then waits until every puller can find each image on
/// its peers. Independent steps run concurrently to keep the setup short.
async fn seed_images(s: &Scenario) -> Result<Vec<BuiltImage>> {
    let phase = Instant::now();
    let specs: Vec<ImageSpec> = LAYERS
        .iter()
        .enumerate()
        .map(|(lane, layers)| ImageSpec {
            seed: 500 + lane as u64,
            ..ImageSpec::multi_arch(&format!("e2e/churn-{lane}"), "v1", layers)
        })
        .collect();
    let images = try_join_all(specs.iter().map(|spec| s.push(spec))).await?;
    eprintln!("[churn] pushed {} images in {:.2} s", images.len(), phase.elapsed().as_secs_f64());

    let phase = Instant::now();
    let images_ref = &images;
    try_join_all(HOLDERS.iter().map(|&node| async move {
        for image in images_ref {
            s.pull(node, image).await?;
        }
        anyhow::Ok(())
    }))
    .await?;
    eprintln!("[churn] seeded nodes {HOLDERS:?} in {:.2} s", phase.elapsed().as_secs_f64());

    let phase = Instant::now();
    let waits = PULLERS.iter().flat_map(|&node| images.iter().map(move |image| s.wait_servable(node, image)));
    try_join_all(waits).await?;
    eprintln!("[churn] every puller finds every image on peers after {:.2} s", phase.elapsed().as_secs_f64());
    Ok(images)
}

/// What the pulls measured.
struct Outcome {
    times: Vec<Duration>,
    needed_blob_bytes: u64,
}

/// Runs the lanes and, in this task, the churn steps driven by their count of finished pulls.
async fn run_pulls_under_churn(s: &mut Scenario, images: &[BuiltImage]) -> Result<(Outcome, Churn)> {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut lanes = JoinSet::new();
    for (index, image) in images.iter().enumerate() {
        let lane = Lane::new(s, index, image.clone())?;
        lanes.spawn(lane.run(done_tx.clone()));
    }
    drop(done_tx);

    let mut churn = Churn::new(CHURN_SEED);
    let mut outcome = Outcome { times: Vec::with_capacity(PULLS), needed_blob_bytes: 0 };
    while let Some(done) = done_rx.recv().await {
        outcome.times.push(done.elapsed);
        outcome.needed_blob_bytes += done.blob_bytes;
        let finished = outcome.times.len();
        if finished.is_multiple_of(CHURN_EVERY) && finished < PULLS {
            churn.step(&mut s.cluster, finished).await?;
        }
    }
    while let Some(joined) = lanes.join_next().await {
        joined.context("a pull lane panicked")??;
    }
    churn.restart_the_down_holder(&mut s.cluster).await?;
    Ok((outcome, churn))
}

/// One concurrent stream of pulls: its own image, on each puller in turn.
struct Lane {
    index: usize,
    image: BuiltImage,
    reference: String,
    pulls: usize,
    pullers: Vec<PullTarget>,
}

impl Lane {
    fn new(s: &Scenario, index: usize, image: BuiltImage) -> Result<Self> {
        let pullers = PULLERS.iter().map(|&node| PullTarget::of(&s.cluster, node)).collect::<Result<Vec<_>>>()?;
        Ok(Self { index, reference: s.reference(&image), image, pulls: PULLS / LANES, pullers })
    }

    /// Pull, verify, remove, report; `pulls` times, rotating over the pullers.
    async fn run(self, done: mpsc::UnboundedSender<PullDone>) -> Result<()> {
        for round in 0..self.pulls {
            let target = &self.pullers[(round + self.index) % self.pullers.len()];
            let what = format!("lane {} pull {round} of {} on node {}", self.index, self.reference, target.node);
            let pulled = pull_verify_remove(target, &self.image, &self.reference, PULL_TIMEOUT).await.context(what)?;
            done.send(pulled).context("the test stopped listening")?;
        }
        Ok(())
    }
}

/// The churn: at most one holder's Shoal is down at a time.
struct Churn {
    rng: SplitMix64,
    down: Option<usize>,
    kills: usize,
    restarts: usize,
    restart_times: Vec<Duration>,
}

impl Churn {
    fn new(seed: u64) -> Self {
        Self { rng: SplitMix64::new(seed), down: None, kills: 0, restarts: 0, restart_times: Vec::new() }
    }

    /// Restarts the holder killed at the last step, then kills a random holder.
    async fn step(&mut self, cluster: &mut Cluster, finished: usize) -> Result<()> {
        self.restart_the_down_holder(cluster).await?;
        let victim = HOLDERS[self.rng.below(HOLDERS.len())];
        cluster.node_mut(victim)?.shoal()?.kill();
        self.down = Some(victim);
        self.kills += 1;
        eprintln!("[churn] after {finished} pulls: killed node {victim}'s Shoal");
        Ok(())
    }

    async fn restart_the_down_holder(&mut self, cluster: &mut Cluster) -> Result<()> {
        let Some(node) = self.down.take() else { return Ok(()) };
        let start = Instant::now();
        cluster.node_mut(node)?.restart_shoal().await?;
        self.restart_times.push(start.elapsed());
        self.restarts += 1;
        eprintln!("[churn] restarted node {node}'s Shoal in {:.2} s", start.elapsed().as_secs_f64());
        Ok(())
    }
}

fn report(outcome: &Outcome, churn: &Churn, bytes: &FetchedBytes, pulls_took: Duration) {
    let mut times = outcome.times.clone();
    times.sort();
    let restart_max = churn.restart_times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "[churn] {} pulls in {:.2} s ({LANES} at a time): p50 {:.3} s, p99 {:.3} s, max {:.3} s",
        times.len(),
        pulls_took.as_secs_f64(),
        percentile(&times, 0.50).as_secs_f64(),
        percentile(&times, 0.99).as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64(),
    );
    eprintln!(
        "[churn] {} kills, {} restarts (slowest restart {:.2} s); failed peer fetches on the pullers: {:?}",
        churn.kills,
        churn.restarts,
        restart_max.as_secs_f64(),
        bytes.peer_fetch_failures,
    );
    let total = (bytes.from_peers + bytes.from_upstream).max(1) as f64;
    eprintln!(
        "[churn] blob bytes: {} needed, {} from peers ({:.0} %), {} from the upstream ({:.0} %)",
        outcome.needed_blob_bytes,
        bytes.from_peers,
        100.0 * bytes.from_peers as f64 / total,
        bytes.from_upstream,
        100.0 * bytes.from_upstream as f64 / total,
    );
}
