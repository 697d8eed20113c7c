//! Needs root. The bounded load and soak test of issue 8, on real containerd:
//! three nodes with Shoal and the upstream registry. Node 1 holds four small
//! images and is the churn victim: SIGKILLed every 15-25 s (seeded) and
//! started again 5 s later. Nodes 2 and 3 pull without pause, four lanes at
//! a time (one image per lane, alternating nodes), each pull verified and the
//! image removed and garbage collected so that the next pull really fetches.
//! Meanwhile bounded bad clients misbehave against all three registry ports
//! (slowloris, garbage, oversized headers, invalid requests, bursts of
//! short-lived connections, unknown digests).
//!
//! Runs for `SHOAL_SOAK_SECS` (default 90, at most 4 h) or [`MAX_PULLS`]
//! pulls. Asserts: no pull failed; each pulled image is the pushed one (CRI's
//! image id is the pushed config, every blob hashes to its pushed digest) and
//! peers plus the upstream account for every blob byte; no Shoal died but the
//! killed ones; each Shoal's resident memory and open descriptors grew by at
//! most [`RSS_GROWTH_MAX`] / [`FD_GROWTH_MAX`] from the first to the last
//! third of its life after warm-up; bad clients got no 5xx and no hung
//! answer. Prints a summary line and writes `target/soak-report.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod churn;
mod monitor;
mod pulls;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::try_join_all;
use shoal_e2e::bad_clients::{self, BadClientConfig, Kind, Tally};
use shoal_e2e::load::{PullTarget, PullerCounters, fetched_bytes};
use shoal_e2e::scenario::{KIB, MIB, Scenario};
use shoal_e2e::shoal::REGISTRY_PORT;
use shoal_e2e::{BuiltImage, ClusterOptions, ImageSpec};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::churn::Churn;
use crate::monitor::Monitor;
use crate::pulls::Lane;
use crate::report::{PullLog, Report, RunFigures};

const NODES: usize = 3;
/// The node that holds every image and is killed and restarted; it never pulls.
const VICTIM: usize = 1;
/// Nodes that pull; their Shoal is never restarted.
const PULLERS: [usize; 2] = [2, 3];
const LANES: usize = 4;
/// Layer sizes of each lane's image: a few hundred KiB to a couple of MiB.
const LAYERS: [&[u64]; LANES] =
    [&[4 * KIB, 256 * KIB, MIB], &[64 * KIB, 512 * KIB], &[16 * KIB, 128 * KIB, 768 * KIB], &[2 * MIB]];
const DEFAULT_SECS: u64 = 90;
const MAX_SECS: u64 = 4 * 3600;
/// Hard cap on pulls, whatever the duration.
pub const MAX_PULLS: usize = 20_000;
const SEED: u64 = 0x50a4_5eed;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Metrics are scraped at every this many samples.
const SCRAPE_EVERY: u64 = 5;
/// Samples of each process left out of the leak check (start-up and warm-up):
/// a third of its samples, at least 10 and at most 45. Under this load a
/// puller's accepted registry connections ramp up for about 30 s (idle
/// keep-alive connections of containerd's clients), then stay level.
pub const WARM_UP_MIN: usize = 10;
pub const WARM_UP_MAX: usize = 45;
/// Fewest samples after warm-up for a process to be checked for leaks.
pub const MIN_SAMPLES: usize = 9;
/// Most a process's resident memory may grow from the first to the last third.
pub const RSS_GROWTH_MAX: i64 = 16 * MIB as i64;
/// Most a process's open descriptors may grow from the first to the last third.
pub const FD_GROWTH_MAX: i64 = 32;
/// Slowloris connections held open against each node at any time.
const SLOWLORIS_PER_TARGET: usize = 8;
/// Pause between two operations of one bad client.
const BAD_CLIENT_PACE: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_pulls_never_fail_and_shoal_does_not_leak_under_churn_and_bad_clients() -> Result<()> {
    let duration = soak_duration()?;
    let started = Instant::now();
    // Popular replication would pull the lanes' images back into the pullers'
    // containerd after the lanes removed them (they are pulled from node 1
    // far more often than its threshold): off, so that every pull fetches.
    let options = ClusterOptions {
        shoal_args: vec!["--popular-replicas".into(), "0".into()],
        ..ClusterOptions::with_shoal(NODES)
    };
    let mut s = Scenario::start("soak", &options).await?;
    let images = seed_images(&s).await?;
    eprintln!("[soak] cluster up and images seeded in {:.1} s", started.elapsed().as_secs_f64());

    let before = PullerCounters::read(&s, &PULLERS).await?;
    let mark = s.upstream_mark()?;
    eprintln!("[soak] soaking for {} s (at most {MAX_PULLS} pulls)", duration.as_secs());
    let figures = run_soak(&mut s, &images, duration).await?;
    let bytes = fetched_bytes(&s, &PULLERS, &before, mark, figures.pulls.blob_bytes).await;
    let report = Report::new(&figures, bytes, SEED);
    report.print();
    let path = report.write_json()?;
    eprintln!("[soak] report written to {}", path.display());
    report.check()?;
    s.finish().await?;
    eprintln!("[soak] whole test in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `SHOAL_SOAK_SECS`, default [`DEFAULT_SECS`], at most [`MAX_SECS`].
fn soak_duration() -> Result<Duration> {
    let secs = match std::env::var("SHOAL_SOAK_SECS") {
        Ok(text) => text.trim().parse::<u64>().with_context(|| format!("SHOAL_SOAK_SECS={text} is not seconds"))?,
        Err(_) => DEFAULT_SECS,
    };
    Ok(Duration::from_secs(secs.clamp(1, MAX_SECS)))
}

/// Pushes one image per lane, pulls each on the victim, and waits until
/// every puller can find each image on its peers.
async fn seed_images(s: &Scenario) -> Result<Vec<BuiltImage>> {
    let specs: Vec<ImageSpec> = LAYERS
        .iter()
        .enumerate()
        .map(|(lane, layers)| ImageSpec {
            seed: 800 + lane as u64,
            ..ImageSpec::multi_arch(&format!("e2e/soak-{lane}"), "v1", layers)
        })
        .collect();
    let images = try_join_all(specs.iter().map(|spec| s.push(spec))).await?;
    for image in &images {
        s.pull(VICTIM, image).await?;
    }
    let waits = PULLERS.iter().flat_map(|&node| images.iter().map(move |image| s.wait_servable(node, image)));
    try_join_all(waits).await?;
    Ok(images)
}

/// Runs the lanes, the bad clients, the churn and the monitor until the
/// deadline or the pull cap; then stops them all and restarts the victim.
async fn run_soak(s: &mut Scenario, images: &[BuiltImage], duration: Duration) -> Result<RunFigures> {
    let token = CancellationToken::new();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let started = Arc::new(AtomicUsize::new(0));
    let mut lanes = JoinSet::new();
    for (index, image) in images.iter().enumerate() {
        let pullers = PULLERS.iter().map(|&n| PullTarget::of(&s.cluster, n)).collect::<Result<Vec<_>>>()?;
        let reference = s.reference(image);
        let lane =
            Lane { index, image: image.clone(), reference, pullers, started: started.clone(), max_pulls: MAX_PULLS };
        lanes.spawn(lane.run(token.clone(), events_tx.clone()));
    }
    drop(events_tx);
    let mut bad = JoinSet::new();
    bad_clients::spawn(&bad_client_config(s, images, duration)?, &token, &mut bad);

    let mut churn = Churn::new(SEED, VICTIM);
    let mut monitor = Monitor::new(NODES);
    let mut pulls = PullLog::default();
    let deadline = Instant::now() + duration;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ticks = 0_u64;
    let watched = async {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return anyhow::Ok(()),
                event = events.recv() => match event {
                    Some(event) => pulls.record(event),
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(churn.next()) => churn.step(&mut s.cluster, monitor.elapsed()).await?,
                _ = tick.tick() => {
                    monitor.sample(&mut s.cluster, ticks.is_multiple_of(SCRAPE_EVERY)).await?;
                    ticks += 1;
                }
            }
        }
    }
    .await;
    let soaked_for = monitor.elapsed();
    token.cancel();
    // Lanes finish the pull they are in (bounded by the pull timeout).
    while let Some(event) = events.recv().await {
        pulls.record(event);
    }
    while let Some(joined) = lanes.join_next().await {
        joined.context("a pull lane panicked")?;
    }
    let mut bad_clients: BTreeMap<Kind, Tally> = BTreeMap::new();
    while let Some(joined) = bad.join_next().await {
        let (kind, tally) = joined.context("a bad client panicked")?;
        bad_clients.entry(kind).or_default().merge(&tally);
    }
    watched?;
    churn.finish(&mut s.cluster).await?;
    monitor.sample(&mut s.cluster, true).await?;
    Ok(RunFigures { soaked_for, pulls, churn, monitor, bad_clients })
}

fn bad_client_config(s: &Scenario, images: &[BuiltImage], duration: Duration) -> Result<BadClientConfig> {
    let image = images.first().context("no image")?;
    let known_blob = image.host_platform()?.layers.first().context("image without layers")?.digest.clone();
    let targets = (1..=NODES).map(|n| Ok(SocketAddr::new(s.ip(n)?, REGISTRY_PORT))).collect::<Result<Vec<_>>>()?;
    let max_ops = 1 + duration.as_millis() as u64 / BAD_CLIENT_PACE.as_millis() as u64;
    Ok(BadClientConfig {
        targets,
        repository: image.spec.repository.clone(),
        known_blob,
        ns: s.cluster.registry_host().to_owned(),
        slowloris_per_target: SLOWLORIS_PER_TARGET,
        max_ops,
        pace: BAD_CLIENT_PACE,
        seed: SEED,
    })
}
