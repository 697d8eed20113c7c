//! Restart to first served peer request, with and without persisted state:
//! the real `shoal` binary (release) beside a real containerd holding many
//! images, restarted several times each way; prints the median and worst.
//!
//! A plain `harness = false` binary: `cargo bench -p shoal-e2e --bench restart`.
//! Loopback only (127.0.4.61). Environment: `SHOAL_BENCH_IMAGES`,
//! `SHOAL_BENCH_LAYERS` (per image), `SHOAL_BENCH_ROUNDS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/state/binary.rs"]
mod binary;
#[path = "../tests/state/seed.rs"]
mod seed;
#[allow(dead_code)] // `store` is for the contract tests
#[path = "../tests/content_contract/seeder.rs"]
mod seeder;

use std::time::Duration;

use anyhow::Result;
use binary::{ShoalNode, eventually, free_port_on, ip, until_served};
use seed::{SeededImage, layers, seed_image};
use seeder::seeder;
use shoal_e2e::containerd::Containerd;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Starts the node and returns the time from spawn to the first served peer request.
async fn restart(node: &mut ShoalNode, probe: &SeededImage) -> Result<Duration> {
    let started = node.start(&[])?;
    let served = until_served(node, "app", &probe.layers[0].to_string(), started).await?;
    // The index is persisted once the first rescan is written.
    eventually("the state is written", || async {
        node.metric("shoal_state_write_duration_seconds_count").await.unwrap_or(0.0) >= 1.0 || node.data_dir.is_none()
    })
    .await?;
    anyhow::ensure!(node.terminate().await?.success(), "shoal did not exit cleanly");
    Ok(served)
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    format!("median {median:.1?}, worst {worst:.1?} over {} restarts", times.len())
}

async fn run() -> Result<()> {
    let (images, per_image, rounds) =
        (env_or("SHOAL_BENCH_IMAGES", 100), env_or("SHOAL_BENCH_LAYERS", 20), env_or("SHOAL_BENCH_ROUNDS", 5));
    let dir = tempfile::Builder::new().prefix("shoal-bench-restart-").tempdir()?;
    let containerd = Containerd::start_temporary().await?;
    let seeder = seeder(&containerd, "k8s.io").await?;
    let mut seeded = Vec::new();
    for i in 0..images {
        seeded.push(
            seed_image(&seeder, &format!("registry.test/app-{i}:v1"), &layers(&format!("{i}"), per_image, 512)).await?,
        );
    }
    // The image walked last by a rescan is as good a probe as any: nothing is
    // served before the whole rescan lands, unless the index was persisted.
    let probe = seeded.last().expect("at least one image");
    let blobs = images * (per_image + 2);
    println!("restart to first served peer request; containerd holds {images} images, {blobs} blobs (release build):");

    let mut node = ShoalNode::new(61, free_port_on(&[ip(61)])?, dir.path())?;
    node.containerd = Some((containerd.socket(), containerd.content_dir()));
    let mut cold = Vec::new();
    for _ in 0..rounds {
        cold.push(restart(&mut node, probe).await?);
    }
    println!("  without a data dir (cold):   {}", summary(cold));

    node.data_dir = Some(dir.path().join("data"));
    let first = restart(&mut node, probe).await?;
    println!("  first start with a data dir: {first:.1?}");
    let mut warm = Vec::new();
    for _ in 0..rounds {
        warm.push(restart(&mut node, probe).await?);
    }
    println!("  with persisted state:        {}", summary(warm));
    Ok(())
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}
