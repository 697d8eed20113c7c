//! DHT lookup latency on 50 real P2P routers over TCP on 127.0.8.1 ..= 50:
//! every node advertises 5 base layers (held by all), the shared keys it
//! holds (20 keys, each on 10% of nodes) and 50 unique keys; after a warm-up
//! round, lookups from random nodes, one at a time, are timed to the first
//! provider the `Router::lookup` stream yields. Target: p99 ≤ 10 ms.
//!
//! `cargo bench --bench dht_lookup`. Environment: `SHOAL_BENCH_NODES`
//! (default 50, at most 250), `SHOAL_BENCH_LOOKUPS` (2,000),
//! `SHOAL_BENCH_CONCURRENCY` (lookups at once, 1). Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/sim.rs"]
#[allow(dead_code)]
mod sim;

use anyhow::Result;
use shoal::routing::p2p::TransportKind;
use sim::{Cluster, KeyClass, SimConfig, loadavg};
use tokio::time::Instant;

const TARGET_P99: std::time::Duration = std::time::Duration::from_millis(10);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn run() -> Result<()> {
    let lookups = env_or("SHOAL_BENCH_LOOKUPS", 2000);
    let config = SimConfig {
        transport: TransportKind::Tcp,
        subnet: [0, 8],
        lookups,
        concurrency: env_or("SHOAL_BENCH_CONCURRENCY", 1),
        ..SimConfig::memory(env_or("SHOAL_BENCH_NODES", 50).min(250))
    };
    println!("DHT lookup latency: {} TCP loopback nodes (release build)", config.nodes);
    let cluster = Cluster::start(config).await?;
    let advertised = cluster.advertise().await?;
    println!("  advertised in {advertised:.1?} (load {})", loadavg());

    let classes = [KeyClass::Base, KeyClass::Shared, KeyClass::Unique];
    let warm_up = cluster.plan(300, &classes);
    cluster.run(&warm_up).await;
    let mut probes = cluster.plan(lookups + 300, &classes);
    let probes = probes.split_off(300);
    let started = Instant::now();
    let outcomes = cluster.run(&probes).await;
    println!("  {lookups} lookups in {:.1?} (load {}):", started.elapsed(), loadavg());
    sim::print_latency(&outcomes);
    let stats = cluster.stats().await?;
    sim::print_load(&cluster, &stats, &outcomes);
    let p99 = sim::summarize(&outcomes).first.1;
    let verdict = if p99 <= TARGET_P99 { "met" } else { "missed" };
    println!("  target p99 to the first provider <= {TARGET_P99:?}: {verdict} ({p99:.2?})");
    cluster.stop().await;
    Ok(())
}

fn main() -> Result<()> {
    sim::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}
